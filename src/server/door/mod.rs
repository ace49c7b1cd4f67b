//! Front doors: how one kind of client speaks to the bank.
//!
//! A [`FrontDoor`] is a codec and a mapping, nothing more: it splits a byte stream into frames,
//! turns a frame into a handshake, a [`Command`] for the service, or a reason to close, and turns
//! an [`Answer`] into a reply frame in its own codes. Deadlines, backpressure, the in-flight
//! limit, faults and metrics belong to the connection and the session, shared by every door;
//! what a request does belongs to [`super::service`].

pub mod bincode;
pub mod iso8583;

use super::service::{Answer, Command};
use crate::codec::{CodecError, SplitFrames};
use crate::model::RequestId;
use bytes::{Bytes, BytesMut};

/// What a door made of one frame; `C` is what the door needs from a request to write its reply.
pub enum Inbound<C> {
    /// The door answers the frame itself with this frame (a handshake, a keep-alive, a message
    /// refused before it reaches the service); nothing else happens.
    Answered(Bytes),
    /// A request for the service.
    Request {
        /// The request's id, which its reply carries.
        id: RequestId,
        /// What it asks.
        command: Command,
        /// The name its metrics and logs use.
        name: &'static str,
        /// What the reply needs of the request (the fields an ISO 8583 reply echoes, say).
        context: C,
    },
    /// The connection must close, for this reason (told to the peer in a goodbye).
    Close(String),
}

/// One protocol's codec and mapping. Shared by every connection through its door; what a
/// connection must remember between frames (the handshake) is its [`FrontDoor::State`].
pub trait FrontDoor: Send + Sync + 'static {
    /// Splits the byte stream into frame bodies.
    type Frames: SplitFrames + 'static;
    /// What one connection remembers between frames (for example whether it shook hands).
    type State: Default + 'static;
    /// What a reply needs of its request besides its id, kept while the request is in flight.
    type Context: Send + 'static;

    /// A frame splitter for a new connection, refusing bodies over [`FrontDoor::frame_bytes_max`].
    fn frames(&self) -> Self::Frames;

    /// The largest frame body this door accepts.
    fn frame_bytes_max(&self) -> usize;

    /// The largest reply frame a request other than a `Lowercase` can get, with its header.
    fn reply_bytes_max(&self) -> usize {
        super::budget::SMALL_REPLY_BYTES_MAX
    }

    /// True while the connection's state stands in for a verified card (an ISO 8583 link that
    /// signed on): the deadlines of a verified connection then apply to it.
    fn is_signed_on(&self, _state: &Self::State) -> bool {
        false
    }

    /// Decodes one frame body.
    fn decode(&self, state: &mut Self::State, body: BytesMut) -> Inbound<Self::Context>;

    /// The reply frame answering request `id`, made with what the door kept of it.
    fn encode_answer(
        &self,
        id: RequestId,
        context: Self::Context,
        answer: Answer,
    ) -> Result<Bytes, CodecError>;

    /// The frame that tells the peer why the connection closes (empty when the protocol has
    /// no such message).
    fn encode_goodbye(&self, reason: &str) -> Result<Bytes, CodecError>;
}
