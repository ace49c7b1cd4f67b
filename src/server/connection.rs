//! The two tasks beside every session, whatever its front door: the reader and the writer.
//!
//! - The *reader* splits the byte stream into frames with the door's [`SplitFrames`] decoder,
//!   under deadlines: a connection with no verified card must send within
//!   [`Limits::login_idle_timeout`], and a frame that has started must be complete within
//!   [`Limits::frame_read_timeout`]. The splitter checks each declared length before anything is
//!   reserved for the body. The door decodes each frame, and the reader hands the result to the
//!   session. It reads the next frame only while the write queue has room for a full window of
//!   replies, so a client that stops reading its replies stops being read from, and is dropped
//!   after [`Limits::write_timeout`].
//! - The *writer* drains the bounded queue of reply frames to the socket, under a deadline.
//!
//! Both work over any byte stream ([`Transport`]): a plain TCP socket, or TLS over one.
//!
//! [`Limits::login_idle_timeout`]: super::Limits::login_idle_timeout
//! [`Limits::frame_read_timeout`]: super::Limits::frame_read_timeout
//! [`Limits::write_timeout`]: super::Limits::write_timeout

use super::door::{FrontDoor, Inbound};
use super::Bank;
use crate::codec::{CodecError, SplitFrames};
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A byte stream a connection runs over: a TCP socket, or TLS over one.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for S {}

/// What the reader and the writer hand to the session.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) enum Incoming {
    /// What the door made of a frame: a handshake answer, a request, or a reason to close.
    Door(Inbound),
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
}

/// Starts the reader and the writer of `stream` on the current arbiter, talking to `session`;
/// `verified` tells the reader whether the login idle deadline applies.
pub(super) fn start<D: FrontDoor, S: Transport>(
    bank: Arc<Bank>,
    door: Arc<D>,
    stream: S,
    session: Recipient<Incoming>,
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
    let reader = Reader {
        frames: door.frames(),
        state: D::State::default(),
        frame_read_timeout: limits.frame_read_timeout,
        login_idle_timeout: limits.login_idle_timeout,
        write_timeout,
        replies_window: limits.requests_in_flight_max.min(queue_frames),
        room: outbox.clone(),
        session: session.clone(),
        verified,
        door,
        bank,
    };
    let reader = actix::spawn(reader.run(read));
    actix::spawn(write_frames(write, queue, write_timeout, session));
    Connection { outbox, reader }
}

/// The reading side of a connection.
struct Reader<D: FrontDoor> {
    bank: Arc<Bank>,
    door: Arc<D>,
    /// The door's frame splitter for this connection.
    frames: D::Frames,
    /// What the door remembers between this connection's frames.
    state: D::State,
    session: Recipient<Incoming>,
    /// True while a card is verified: then the login idle deadline does not apply.
    verified: Arc<AtomicBool>,
    /// The writer's queue, watched for room before each frame is read.
    room: mpsc::Sender<Bytes>,
    frame_read_timeout: Duration,
    login_idle_timeout: Duration,
    write_timeout: Duration,
    /// Queue slots that must be free before another request is read.
    replies_window: usize,
}

impl<D: FrontDoor> Reader<D> {
    async fn run<R: AsyncRead + Unpin>(mut self, mut read: R) {
        let mut buffer = BytesMut::with_capacity(SOCKET_BUFFER_BYTES);
        loop {
            let bank = self.bank.clone();
            let next = tokio::select! {
                biased;
                _ = bank.shutting_down() => Err(None),
                next = self.next(&mut read, &mut buffer) => next.map_err(Some),
            };
            let incoming = match next {
                Ok(Some(body)) => Incoming::Door(self.door.decode(&mut self.state, body)),
                Ok(None) => Incoming::Ended,
                Err(Some(reason)) => Incoming::Close(reason),
                Err(None) => Incoming::Drain,
            };
            let last = matches!(
                incoming,
                Incoming::Door(Inbound::Close(_))
                    | Incoming::Close(_)
                    | Incoming::Ended
                    | Incoming::Drain
            );
            // Waiting here when the session's mailbox is full is backpressure, not a leak.
            if self.session.send(incoming).await.is_err() || last {
                return;
            }
        }
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
            self.room.reserve_many(self.replies_window),
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

    /// Reads the first bytes of a frame. The login deadline applies only while no card is
    /// verified; a verification may complete while this read waits, so the flag is checked again
    /// when the deadline passes.
    async fn first_bytes<R: AsyncRead + Unpin>(
        &self,
        read: &mut R,
        buffer: &mut BytesMut,
    ) -> Result<usize, String> {
        buffer.reserve(SOCKET_BUFFER_BYTES);
        let read_bytes = loop {
            if self.verified.load(Ordering::Relaxed) {
                break read.read_buf(buffer).await;
            }
            match tokio::time::timeout(self.login_idle_timeout, read.read_buf(buffer)).await {
                Ok(result) => break result,
                Err(_) if self.verified.load(Ordering::Relaxed) => continue,
                Err(_) => {
                    return Err(format!(
                        "no request for {:?} without a verified card",
                        self.login_idle_timeout
                    ))
                }
            }
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

/// The writing side: sends queued frames, several per system call when they pile up, under a
/// deadline. Ends when the session drops its end of the queue (after sending what is left).
async fn write_frames<W: AsyncWrite + Unpin>(
    write: W,
    mut queue: mpsc::Receiver<Bytes>,
    timeout: Duration,
    session: Recipient<Incoming>,
) {
    let mut write = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write);
    while let Some(frame) = queue.recv().await {
        let sent = tokio::time::timeout(timeout, async {
            write.write_all(&frame).await?;
            while let Ok(frame) = queue.try_recv() {
                write.write_all(&frame).await?;
            }
            write.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                session.do_send(Incoming::Close(format!("write failed: {error}")));
                break;
            }
            Err(_) => {
                session.do_send(Incoming::Close(format!(
                    "the client took no reply for {timeout:?}"
                )));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, write.shutdown()).await;
}
