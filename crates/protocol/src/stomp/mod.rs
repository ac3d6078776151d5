//! STOMP 1.0, 1.1 and 1.2 (<https://stomp.github.io/stomp-specification-1.2.html>).
//!
//! - [`Frame`], [`Command`] and [`Version`] are the vocabulary.
//! - [`Decoder`] turns bytes accumulated in a `BytesMut` into [`Item`]s, incrementally: an
//!   incomplete frame is not an error, it simply yields `Ok(None)` until more bytes arrive.
//! - [`encode`] appends the wire form of a frame to a `BytesMut`.
//! - [`negotiate_version`] and [`HeartBeat`] implement the CONNECT handshake rules.

mod decode;
mod encode;
mod frame;
mod handshake;

pub use decode::{DecodeError, Decoder, Item, Limits};
pub use encode::{encode, encode_heartbeat, FrameEncoder, HeaderWriter};
pub use frame::{Command, Frame, HeaderIter, Headers, Version};
pub use handshake::{negotiate_version, HeartBeat, HeartBeatError};
