//! Sans-I/O protocol codecs for ferromq.
//!
//! Bytes in, frames out, typed errors. Nothing here touches a socket, a clock or a runtime, so
//! every codec is deterministic, unit-testable and fuzzable. The tokio glue lives in the
//! `ferromq` server and in `ferromq-client`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod openwire;
pub mod stomp;

/// Frames shorter than this are copied out of the read buffer into an allocation of their own;
/// longer ones are split off it (zero-copy).
///
/// A slice of the read buffer keeps the buffer's whole allocation alive: a 1 KiB SEND read into
/// a fresh 16 KiB chunk and left on a queue without consumers held 16 KiB (52,792 queued
/// 1 KiB messages, 54 MB of bodies, kept 922 MB resident). A copy of a small frame costs
/// less than its parse; a frame this long had the buffer grown for it, so its slice holds at
/// most about twice its size.
pub const FRAME_COPY_BELOW_BYTES: usize = 64 * 1024;

/// The first `len` bytes of `buf`, taken out of it: copied into an exact allocation when short
/// (see [`FRAME_COPY_BELOW_BYTES`]), split off when long.
pub fn own_allocation(buf: &mut bytes::BytesMut, len: usize) -> bytes::Bytes {
    if len < FRAME_COPY_BELOW_BYTES {
        let frame = bytes::Bytes::copy_from_slice(&buf[..len]);
        bytes::Buf::advance(buf, len);
        frame
    } else {
        buf.split_to(len).freeze()
    }
}
