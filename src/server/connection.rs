//! The two tasks beside every session, whatever its front door: the reader and the writer.
//!
//! - The *reader* splits the byte stream into frames with the door's [`SplitFrames`] decoder,
//!   under deadlines: a connection with no verified card must send within
//!   [`Limits::login_idle_timeout`] and must verify one within [`Limits::unverified_deadline`] of
//!   being accepted, whatever it sends; a verified one must send within
//!   [`Limits::verified_idle`]; a frame that has started must be complete within
//!   [`Limits::frame_read_timeout`]. The splitter checks each declared length before anything is
//!   reserved for the body. The door decodes each frame, and the reader reserves the largest
//!   reply it can produce in the connection's reply budget ([`super::budget`]) before it hands
//!   the result to the session. It hands frames over without waiting for the session's turn, up
//!   to [`READ_AHEAD_FRAMES_MAX`] not yet handled (beyond that it waits for each). It reads the
//!   next frame only while the write queue has room for a full window of replies, one more for
//!   each frame not yet handled, and the budget for the reply, so a client that stops reading
//!   its replies stops being read from, and is dropped after [`Limits::write_timeout`].
//! - The *writer* drains the bounded queue of reply frames to the socket, under a deadline, and
//!   gives each frame's bytes back to the budget once written.
//!
//! [`Limits::unverified_deadline`]: super::Limits::unverified_deadline
//! [`Limits::verified_idle`]: super::Limits::verified_idle
//! Both work over any byte stream ([`Transport`]): a plain TCP socket, or TLS over one.
//!
//! [`Limits::login_idle_timeout`]: super::Limits::login_idle_timeout
//! [`Limits::frame_read_timeout`]: super::Limits::frame_read_timeout
//! [`Limits::write_timeout`]: super::Limits::write_timeout

use super::budget::{self, ConnectionBudget};
use super::door::{FrontDoor, Inbound};
use super::Bank;
use crate::codec::{CodecError, SplitFrames};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

/// Bytes the reader and the writer buffer between the socket and the frames. A page holds dozens
/// of the small frames ATMs exchange; with 16 KiB each way, 4 096 connections held 128 MiB of
/// buffers (the login-storm ramp peaked at 926 MiB resident, against 420 MiB with 4 KiB).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

/// The most capacity the reader keeps in its buffer between frames; after a larger frame the
/// buffer is dropped and a small one grown again.
const BUFFER_KEPT_BYTES_MAX: usize = 4 * SOCKET_BUFFER_BYTES;

/// The most frames the reader hands to the session ahead of the session's turn (without waiting
/// for each to be handled). The reader keeps room in the write queue for their replies too, so
/// the queue never holds more than before; beyond this many it waits for the session.
const READ_AHEAD_FRAMES_MAX: usize = 8;

/// A byte stream a connection runs over: a TCP socket, or TLS over one.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for S {}

/// What the reader and the writer hand to the session.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) enum Incoming<C: Send + 'static> {
    /// What the door made of a frame: a frame it answered itself, a request, or a reason to
    /// close; with the reply bytes the reader reserved for it in the connection's budget, which
    /// its reply settles.
    Door(Inbound<C>, usize),
    /// The connection must close, for this reason (a deadline passed, a write failed).
    Close(String),
    /// The peer closed the connection.
    Ended,
    /// The server is shutting down: answer what is in flight, then close.
    Drain,
}

/// A connection's tasks, as the session holds them.
pub(super) struct Connection {
    /// Reply frames on their way to the writer task.
    pub(super) outbox: mpsc::Sender<Bytes>,
    /// The reader task, aborted when the session stops.
    pub(super) reader: JoinHandle<()>,
    /// The connection's reply budget, which every queued frame is charged to.
    pub(super) budget: Arc<ConnectionBudget>,
    /// Frames the reader handed over that the session has not handled yet; the session counts
    /// each [`Incoming::Door`] off as it takes it ([`Connection::took_frame`]).
    pub(super) unhandled: Arc<AtomicUsize>,
}

impl Connection {
    /// Counts off a frame the reader handed over, as the session takes it.
    pub(super) fn took_frame(unhandled: &AtomicUsize) {
        unhandled.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the reader and the writer of `stream` on the current arbiter, talking to `session`;
/// `verified` tells the reader whether the login idle deadline applies.
pub(super) fn start<D: FrontDoor, S: Transport>(
    bank: Arc<Bank>,
    door: Arc<D>,
    stream: S,
    session: Recipient<Incoming<D::Context>>,
    verified: Arc<AtomicBool>,
) -> Connection {
    let (read, write) = tokio::io::split(stream);
    let limits = bank.limits();
    let queue_frames = limits
        .write_queue_frames
        .max(2 * limits.requests_in_flight_max)
        .max(1);
    let (outbox, queue) = mpsc::channel(queue_frames);
    let write_timeout = limits.write_timeout;
    let budget = ConnectionBudget::new(bank.reply_budget());
    let replies_window = limits.requests_in_flight_max.min(queue_frames);
    let unhandled = Arc::new(AtomicUsize::new(0));
    let reader = Reader {
        frames: door.frames(),
        frame_bytes_max: door.frame_bytes_max(),
        budget: budget.clone(),
        unverified_since: Some(Instant::now()),
        unverified_deadline: limits.unverified_deadline,
        verified_idle: limits.verified_idle,
        state: D::State::default(),
        frame_read_timeout: limits.frame_read_timeout,
        login_idle_timeout: limits.login_idle_timeout,
        write_timeout,
        replies_window,
        read_ahead_max: READ_AHEAD_FRAMES_MAX.min(queue_frames - replies_window),
        unhandled: unhandled.clone(),
        room: outbox.clone(),
        session: session.clone(),
        verified,
        door,
        bank,
    };
    let reader = actix::spawn(reader.run(read));
    let writer = Writer {
        queue,
        timeout: write_timeout,
        session,
        budget: budget.clone(),
    };
    actix::spawn(writer.run(write));
    Connection {
        outbox,
        reader,
        budget,
        unhandled,
    }
}

/// The reading side of a connection.
struct Reader<D: FrontDoor> {
    bank: Arc<Bank>,
    door: Arc<D>,
    /// The door's frame splitter for this connection.
    frames: D::Frames,
    /// What the door remembers between this connection's frames.
    state: D::State,
    session: Recipient<Incoming<D::Context>>,
    /// True while a card is verified: then the login idle deadline does not apply.
    verified: Arc<AtomicBool>,
    /// The writer's queue, watched for room before each frame is read.
    room: mpsc::Sender<Bytes>,
    frame_read_timeout: Duration,
    login_idle_timeout: Duration,
    write_timeout: Duration,
    /// Queue slots that must be free before another request is read, beyond one for each frame
    /// handed over and not yet handled.
    replies_window: usize,
    /// The most frames handed to the session ahead of its turn: at most the queue's slots
    /// beyond `replies_window`, so the room kept for their replies always fits in the queue.
    read_ahead_max: usize,
    /// Frames handed to the session and not yet handled (shared with the session).
    unhandled: Arc<AtomicUsize>,
    /// The largest frame body the door accepts (a `Lowercase` reply can take as much).
    frame_bytes_max: usize,
    /// Where the reader reserves each request's largest reply before handing it on.
    budget: Arc<ConnectionBudget>,
    /// Since when the connection has been without a verified card, as the reader last saw it:
    /// its acceptance, or the first frame it read after a logout. `None` while verified.
    unverified_since: Option<Instant>,
    unverified_deadline: Duration,
    verified_idle: Duration,
}

impl<D: FrontDoor> Reader<D> {
    async fn run<R: AsyncRead + Unpin>(mut self, mut read: R) {
        let mut buffer = BytesMut::with_capacity(SOCKET_BUFFER_BYTES);
        loop {
            let bank = self.bank.clone();
            self.watch_login();
            let expired = unverified_expired(
                self.unverified_since
                    .map(|since| since + self.unverified_deadline),
                self.verified.clone(),
            );
            let next = tokio::select! {
                biased;
                _ = bank.shutting_down() => Err(None),
                () = expired => Err(Some(self.unverified_too_long())),
                next = self.next_admitted(&mut read, &mut buffer) => next.map_err(Some),
            };
            let incoming = match next {
                Ok(Some((inbound, reserved))) => Incoming::Door(inbound, reserved),
                Ok(None) => Incoming::Ended,
                Err(Some(reason)) => Incoming::Close(reason),
                Err(None) => Incoming::Drain,
            };
            let last = matches!(
                incoming,
                Incoming::Door(Inbound::Close(_), _)
                    | Incoming::Close(_)
                    | Incoming::Ended
                    | Incoming::Drain
            );
            // A frame is handed over without waiting for the session's turn (one wake-up fewer
            // per frame) while fewer than `read_ahead_max` are waiting for it and its mailbox has
            // room; otherwise the reader waits for the session to handle it, which is
            // backpressure, not a leak.
            if matches!(incoming, Incoming::Door(..)) {
                self.unhandled.fetch_add(1, Ordering::AcqRel);
            }
            let ahead = self.unhandled.load(Ordering::Acquire) <= self.read_ahead_max;
            let delivered = if ahead {
                match self.session.try_send(incoming) {
                    Ok(()) => true,
                    Err(SendError::Full(incoming)) => self.session.send(incoming).await.is_ok(),
                    Err(SendError::Closed(_)) => false,
                }
            } else {
                self.session.send(incoming).await.is_ok()
            };
            if !delivered || last {
                return;
            }
        }
    }

    /// Frames handed to the session and not yet handled, as many as their replies need room for
    /// in the queue (never more than `read_ahead_max`: beyond it the reader waits for each).
    fn frames_ahead(&self) -> usize {
        self.unhandled
            .load(Ordering::Acquire)
            .min(self.read_ahead_max)
    }

    /// True while a card is verified, or the door's state stands in for one (a signed-on link).
    fn is_verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed) || self.door.is_signed_on(&self.state)
    }

    /// Starts or stops the unverified deadline's clock as the login changed since the last frame.
    fn watch_login(&mut self) {
        if self.is_verified() {
            self.unverified_since = None;
        } else if self.unverified_since.is_none() {
            self.unverified_since = Some(Instant::now());
        }
    }

    /// Counts a connection closed for staying unverified, and says why.
    fn unverified_too_long(&self) -> String {
        self.bank.stats().connection_timed_out(false);
        format!(
            "connected for {:?} without a verified card",
            self.unverified_deadline
        )
    }

    /// The next frame, decoded, with its largest reply reserved in the connection's budget;
    /// `None` when the peer closed cleanly between frames. While the reservation does not fit,
    /// nothing more is read.
    async fn next_admitted<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        buffer: &mut BytesMut,
    ) -> Result<Option<(Inbound<D::Context>, usize)>, String> {
        let Some(body) = self.next(read, buffer).await? else {
            return Ok(None);
        };
        let inbound = self.door.decode(&mut self.state, body);
        let reserved =
            budget::reply_bytes_bound(&inbound, self.frame_bytes_max, self.door.reply_bytes_max());
        self.budget.reserve(reserved).await;
        Ok(Some((inbound, reserved)))
    }

    /// The next frame's body; `None` when the peer closed cleanly between frames.
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
        buffer: &mut BytesMut,
    ) -> Result<Option<BytesMut>, String> {
        // Read on only when every reply this request could add has a place in the queue.
        match tokio::time::timeout(
            self.write_timeout,
            self.room
                .reserve_many(self.replies_window + self.frames_ahead()),
        )
        .await
        {
            Ok(Ok(permits)) => drop(permits),
            Ok(Err(_)) => return Ok(None),
            Err(_) => {
                return Err(format!(
                    "the client took none of its replies for {:?}",
                    self.write_timeout
                ))
            }
        }
        // A frame that has started (bytes of it are buffered) must be complete in time.
        let mut frame_deadline = (!buffer.is_empty()).then(|| self.frame_deadline());
        loop {
            if let Some(body) = self.frames.decode(buffer).map_err(refused)? {
                // A large frame leaves a large buffer behind: hand it back rather than keep it
                // for the connection's life (the body holds the memory only until decoded).
                if buffer.is_empty() && buffer.capacity() > BUFFER_KEPT_BYTES_MAX {
                    *buffer = BytesMut::new();
                }
                return Ok(Some(body));
            }
            let read_bytes = match frame_deadline {
                None => self.first_bytes(read, buffer).await?,
                Some(deadline) => tokio::time::timeout_at(deadline, read.read_buf(buffer))
                    .await
                    .map_err(|_| {
                        format!(
                            "a frame took longer than {:?} to arrive",
                            self.frame_read_timeout
                        )
                    })?
                    .map_err(|error| self.cut_short(buffer, &error.to_string()))?,
            };
            if read_bytes == 0 {
                return self.frames.decode_eof(buffer).map_err(refused);
            }
            frame_deadline.get_or_insert_with(|| self.frame_deadline());
        }
    }

    fn frame_deadline(&self) -> Instant {
        Instant::now() + self.frame_read_timeout
    }

    /// Why a frame left unfinished by a read error is refused.
    fn cut_short(&self, buffer: &BytesMut, reason: &str) -> String {
        self.frames.cut_short(buffer.len(), reason).to_string()
    }

    /// Reads the first bytes of a frame. Silence is limited by the login idle deadline while no
    /// card is verified, and by the verified idle time while one is; a verification (or a
    /// logout) may complete while this read waits, so the reader wakes at the shorter of the two
    /// and checks the flag again, measuring the silence from the start of the wait.
    async fn first_bytes<R: AsyncRead + Unpin>(
        &self,
        read: &mut R,
        buffer: &mut BytesMut,
    ) -> Result<usize, String> {
        buffer.reserve(SOCKET_BUFFER_BYTES);
        let silent_since = Instant::now();
        let mut wake = silent_since + self.login_idle_timeout.min(self.verified_idle);
        let read_bytes = loop {
            if let Ok(result) = tokio::time::timeout_at(wake, read.read_buf(buffer)).await {
                break result;
            }
            let verified = self.is_verified();
            let silence_max = if verified {
                self.verified_idle
            } else {
                self.login_idle_timeout
            };
            if Instant::now() < silent_since + silence_max {
                wake = silent_since + silence_max;
                continue;
            }
            if verified {
                self.bank.stats().connection_timed_out(true);
                return Err(format!(
                    "no request for {silence_max:?} with a verified card"
                ));
            }
            return Err(format!(
                "no request for {silence_max:?} without a verified card"
            ));
        };
        read_bytes.map_err(|error| format!("read failed: {error}"))
    }
}

/// The reason a splitter's refusal closes the connection with.
fn refused(error: CodecError) -> String {
    match error {
        CodecError::CutShort { .. } => error.to_string(),
        other => format!("bad frame: {other}"),
    }
}

/// Resolves when the unverified deadline `deadline` has passed and the connection is still
/// without a verified card; never while it has one (or when there is no deadline).
async fn unverified_expired(deadline: Option<Instant>, verified: Arc<AtomicBool>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
        if !verified.load(Ordering::Relaxed) {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// The writing side of a connection.
struct Writer<C: Send + 'static> {
    queue: mpsc::Receiver<Bytes>,
    timeout: Duration,
    session: Recipient<Incoming<C>>,
    /// Each frame's bytes go back to it once written.
    budget: Arc<ConnectionBudget>,
}

impl<C: Send + 'static> Writer<C> {
    /// Sends queued frames, several per system call when they pile up, under a deadline. Ends
    /// when the session drops its end of the queue (after sending what is left).
    async fn run<W: AsyncWrite + Unpin>(mut self, write: W) {
        let timeout = self.timeout;
        let mut write = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write);
        while let Some(frame) = self.queue.recv().await {
            let queue = &mut self.queue;
            let sent = tokio::time::timeout(timeout, async {
                let mut written = frame.len();
                write.write_all(&frame).await?;
                drop(frame);
                while let Ok(frame) = queue.try_recv() {
                    written += frame.len();
                    write.write_all(&frame).await?;
                }
                write.flush().await.map(|()| written)
            })
            .await;
            match sent {
                Ok(Ok(written)) => self.budget.release(written),
                Ok(Err(error)) => {
                    self.session
                        .do_send(Incoming::Close(format!("write failed: {error}")));
                    break;
                }
                Err(_) => {
                    self.session.do_send(Incoming::Close(format!(
                        "the client took no reply for {timeout:?}"
                    )));
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(timeout, write.shutdown()).await;
    }
}
