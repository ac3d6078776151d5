//! The replication core's messages ([`crate::proto::Msg`]) on the wire: the frames a driver
//! sends between members once the connection's handshake ([`crate::auth`]) is done.
//!
//! The envelope is [`crate::wire`]'s (`len:u32 | type:u8 | body`, little-endian, at most
//! [`MAX_FRAME`] bytes); the types live in their own range (32..) so that a peer of the older
//! protocol reads them as an unknown frame type, never as one of its own. Like every codec of
//! this house it is sans-I/O: [`encode`] appends to a buffer, [`decode`] reads one frame body
//! and checks every length against the bytes present, so a hostile or corrupt peer gets an
//! error — never a panic, and never an allocation larger than the frame it sent.
//!
//! The codec checks structure only. What a message means (an ack beyond what was sent, a
//! history that is not increasing, entries that do not follow `prev`) is the core's to judge:
//! it closes the connection on any of them (`docs/replication.md`, "Messages").
//!
//! ```text
//! Hello        32  version:u32 member:u32 epoch:u64 last:u64 history
//! Welcome      33  epoch:u64 (0 d:u64 = TruncateAfter(d) | 1 = Snapshot)
//! Entries      34  epoch:u64 prev:(epoch:u64 lsn:u64) entries
//! SnapshotChunk 35 data (the rest of the frame: the driver's bytes)
//! SnapshotEnd  36  last:u64 consistent_at:u64 history
//! Ping         37  epoch:u64 sent_ms:u64
//! Pong         38  epoch:u64 sent_ms:u64
//! Ack          39  epoch:u64 received:u64 durable:u64
//! Progress     40  epoch:u64 staged:u64
//! history  = n:u32 (epoch:u64 first_lsn:u64){n}
//! entries  = n:u32 (epoch:u64 lsn:u64 len:u32 payload){n}
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::proto::{Entry, Msg, Start};
use crate::wire::{get_bytes, get_pos, get_u32, get_u64, get_u8, need, WireError, MAX_FRAME};

/// The version a `Hello` carries; a member refuses any other (the layout may differ).
pub const CORE_PROTOCOL_VERSION: u32 = 6;

const T_HELLO: u8 = 32;
const T_WELCOME: u8 = 33;
const T_ENTRIES: u8 = 34;
const T_SNAP_CHUNK: u8 = 35;
const T_SNAP_END: u8 = 36;
const T_PING: u8 = 37;
const T_PONG: u8 = 38;
const T_ACK: u8 = 39;
const T_PROGRESS: u8 = 40;

/// Bytes an entry takes besides its payload: a count of entries larger than the bytes left
/// divided by this is a lie, refused before anything is allocated.
const ENTRY_OVERHEAD: usize = 8 + 8 + 4;
/// Bytes of one history span.
const SPAN_LEN: usize = 16;

/// The encoded size of `msg`'s frame, prefix included (for batching and back-pressure).
pub fn encoded_len(msg: &Msg) -> usize {
    let entries = |es: &[Entry]| {
        4 + es
            .iter()
            .map(|e| ENTRY_OVERHEAD + e.payload.len())
            .sum::<usize>()
    };
    let history = |h: &[(u64, u64)]| 4 + SPAN_LEN * h.len();
    4 + 1
        + match msg {
            Msg::Hello { history: h, .. } => 4 + 4 + 8 + 8 + history(h),
            Msg::Welcome { start, .. } => {
                8 + 1
                    + match start {
                        Start::TruncateAfter(_) => 8,
                        Start::Snapshot => 0,
                    }
            }
            Msg::Entries { entries: es, .. } => 8 + 16 + entries(es),
            Msg::SnapshotChunk { data } => data.len(),
            Msg::SnapshotEnd { history: h, .. } => 16 + history(h),
            Msg::Ping { .. } | Msg::Pong { .. } | Msg::Progress { .. } => 16,
            Msg::Ack { .. } => 24,
        }
}

/// Appends `msg` as one frame (length prefix included). A frame larger than [`MAX_FRAME`] is
/// the caller's bug (the core bounds its batches far below it); the receiver refuses it.
pub fn encode(b: &mut BytesMut, msg: &Msg) {
    let start = b.len();
    b.put_u32_le(0);
    match msg {
        Msg::Hello {
            member,
            epoch,
            last,
            history,
        } => {
            b.put_u8(T_HELLO);
            b.put_u32_le(CORE_PROTOCOL_VERSION);
            b.put_u32_le(*member);
            b.put_u64_le(*epoch);
            b.put_u64_le(*last);
            put_history(b, history);
        }
        Msg::Welcome { epoch, start } => {
            b.put_u8(T_WELCOME);
            b.put_u64_le(*epoch);
            match start {
                Start::TruncateAfter(d) => {
                    b.put_u8(0);
                    b.put_u64_le(*d);
                }
                Start::Snapshot => b.put_u8(1),
            }
        }
        Msg::Entries {
            epoch,
            prev,
            entries,
        } => {
            b.put_u8(T_ENTRIES);
            b.put_u64_le(*epoch);
            b.put_u64_le(prev.epoch);
            b.put_u64_le(prev.lsn);
            put_entries(b, entries);
        }
        Msg::SnapshotChunk { data } => {
            b.put_u8(T_SNAP_CHUNK);
            b.put_slice(data);
        }
        Msg::SnapshotEnd {
            last,
            history,
            consistent_at,
        } => {
            b.put_u8(T_SNAP_END);
            b.put_u64_le(*last);
            b.put_u64_le(*consistent_at);
            put_history(b, history);
        }
        Msg::Ping { epoch, sent_ms } | Msg::Pong { epoch, sent_ms } => {
            b.put_u8(if matches!(msg, Msg::Ping { .. }) {
                T_PING
            } else {
                T_PONG
            });
            b.put_u64_le(*epoch);
            b.put_u64_le(*sent_ms);
        }
        Msg::Progress { epoch, staged } => {
            b.put_u8(T_PROGRESS);
            b.put_u64_le(*epoch);
            b.put_u64_le(*staged);
        }
        Msg::Ack {
            epoch,
            received,
            durable,
        } => {
            b.put_u8(T_ACK);
            b.put_u64_le(*epoch);
            b.put_u64_le(*received);
            b.put_u64_le(*durable);
        }
    }
    // A body over 4 GiB cannot be sent; saturating makes the receiver refuse it as too large.
    let len = u32::try_from(b.len() - start - 4).unwrap_or(u32::MAX);
    b[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_history(b: &mut BytesMut, history: &[(u64, u64)]) {
    b.put_u32_le(u32::try_from(history.len()).unwrap_or(u32::MAX));
    for (epoch, first) in history {
        b.put_u64_le(*epoch);
        b.put_u64_le(*first);
    }
}

/// Appends `entries` as `n:u32 (epoch lsn len payload){n}`: a log's part of a full copy (the
/// simulator's `SnapshotChunk` data), read back by [`decode_entries`].
pub fn encode_entries(b: &mut BytesMut, entries: &[Entry]) {
    put_entries(b, entries);
}

/// Reads what [`encode_entries`] wrote, and nothing more.
pub fn decode_entries(mut data: Bytes) -> Result<Vec<Entry>, WireError> {
    let entries = get_entries(&mut data)?;
    if data.has_remaining() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(entries)
}

fn put_entries(b: &mut BytesMut, entries: &[Entry]) {
    b.put_u32_le(u32::try_from(entries.len()).unwrap_or(u32::MAX));
    for e in entries {
        b.put_u64_le(e.epoch);
        b.put_u64_le(e.lsn);
        b.put_u32_le(u32::try_from(e.payload.len()).unwrap_or(u32::MAX));
        b.put_slice(&e.payload);
    }
}

/// Decodes one frame body (type byte first, length prefix already removed). Payloads are
/// slices of `body`, not copies.
pub fn decode(mut body: Bytes) -> Result<Msg, WireError> {
    let r = &mut body;
    let msg = match get_u8(r)? {
        T_HELLO => {
            let version = get_u32(r)?;
            if version != CORE_PROTOCOL_VERSION {
                return Err(WireError::CoreVersion(version));
            }
            Msg::Hello {
                member: get_u32(r)?,
                epoch: get_u64(r)?,
                last: get_u64(r)?,
                history: get_history(r)?,
            }
        }
        T_WELCOME => Msg::Welcome {
            epoch: get_u64(r)?,
            start: match get_u8(r)? {
                0 => Start::TruncateAfter(get_u64(r)?),
                1 => Start::Snapshot,
                _ => return Err(WireError::Malformed("welcome start")),
            },
        },
        T_ENTRIES => Msg::Entries {
            epoch: get_u64(r)?,
            prev: get_pos(r)?,
            entries: get_entries(r)?,
        },
        T_SNAP_CHUNK => Msg::SnapshotChunk {
            data: r.split_to(r.remaining()),
        },
        T_SNAP_END => {
            let last = get_u64(r)?;
            let consistent_at = get_u64(r)?;
            Msg::SnapshotEnd {
                last,
                history: get_history(r)?,
                consistent_at,
            }
        }
        T_PING => Msg::Ping {
            epoch: get_u64(r)?,
            sent_ms: get_u64(r)?,
        },
        T_PONG => Msg::Pong {
            epoch: get_u64(r)?,
            sent_ms: get_u64(r)?,
        },
        T_PROGRESS => Msg::Progress {
            epoch: get_u64(r)?,
            staged: get_u64(r)?,
        },
        T_ACK => Msg::Ack {
            epoch: get_u64(r)?,
            received: get_u64(r)?,
            durable: get_u64(r)?,
        },
        _ => return Err(WireError::Malformed("frame type")),
    };
    if r.has_remaining() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(msg)
}

fn get_history(r: &mut Bytes) -> Result<Vec<(u64, u64)>, WireError> {
    let n = get_u32(r)? as usize;
    if n > r.remaining() / SPAN_LEN {
        return Err(WireError::Malformed("history length"));
    }
    let mut spans = Vec::with_capacity(n);
    for _ in 0..n {
        spans.push((get_u64(r)?, get_u64(r)?));
    }
    Ok(spans)
}

fn get_entries(r: &mut Bytes) -> Result<Vec<Entry>, WireError> {
    let n = get_u32(r)? as usize;
    if n > r.remaining() / ENTRY_OVERHEAD {
        return Err(WireError::Malformed("entry count"));
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        need(r, ENTRY_OVERHEAD)?;
        entries.push(Entry {
            epoch: get_u64(r)?,
            lsn: get_u64(r)?,
            payload: get_bytes(r)?,
        });
    }
    Ok(entries)
}

/// Incremental framing for a byte stream: feed what the socket gave, take whole messages out.
/// Holds at most one partial frame beyond what was fed (bounded by [`MAX_FRAME`]).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. An error poisons the
    /// stream: the connection must be closed (no resynchronisation is attempted).
    pub fn next_msg(&mut self) -> Result<Option<Msg>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if len == 0 {
            return Err(WireError::Malformed("empty frame"));
        }
        if self.buf.len() < 4 + len {
            // Reserve once for the whole frame instead of growing piecemeal.
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len).freeze();
        decode(body).map(Some)
    }

    /// Bytes held that are not yet a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Position;

    fn entry(epoch: u64, lsn: u64, payload: &[u8]) -> Entry {
        Entry {
            epoch,
            lsn,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn every_kind() -> Vec<Msg> {
        vec![
            Msg::Hello {
                member: 7,
                epoch: 3,
                last: 1_000_001,
                history: vec![(1, 1), (3, 900_000)],
            },
            Msg::Hello {
                member: 1,
                epoch: 0,
                last: 0,
                history: vec![],
            },
            Msg::Welcome {
                epoch: 4,
                start: Start::TruncateAfter(17),
            },
            Msg::Welcome {
                epoch: 4,
                start: Start::Snapshot,
            },
            Msg::Entries {
                epoch: 4,
                prev: Position { epoch: 3, lsn: 9 },
                entries: vec![entry(4, 10, b""), entry(4, 11, b"batch bytes")],
            },
            Msg::Entries {
                epoch: 4,
                prev: Position { epoch: 4, lsn: 11 },
                entries: vec![],
            },
            Msg::SnapshotChunk {
                data: Bytes::from_static(b"opaque part of a copy"),
            },
            Msg::SnapshotChunk { data: Bytes::new() },
            Msg::SnapshotEnd {
                last: 2,
                history: vec![(1, 1), (2, 2)],
                consistent_at: 9,
            },
            Msg::Ping {
                epoch: 5,
                sent_ms: u64::MAX,
            },
            Msg::Pong {
                epoch: 5,
                sent_ms: 12,
            },
            Msg::Ack {
                epoch: 5,
                received: 100,
                durable: 90,
            },
            Msg::Progress {
                epoch: 5,
                staged: 77,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_its_length_is_predicted() {
        for m in every_kind() {
            let mut b = BytesMut::new();
            encode(&mut b, &m);
            assert_eq!(b.len(), encoded_len(&m), "{m:?}");
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            assert_eq!(len + 4, b.len());
            assert_eq!(decode(b.freeze().slice(4..)).unwrap(), m);
        }
    }

    #[test]
    fn entries_round_trip_and_refuse_trailing_bytes() {
        let es = vec![
            entry(1, 1, &[0u8; 300]),
            entry(2, 2, b"x"),
            entry(2, 3, b""),
        ];
        let mut b = BytesMut::new();
        encode_entries(&mut b, &es);
        let bytes = b.freeze();
        assert_eq!(decode_entries(bytes.clone()).unwrap(), es);
        let mut longer = BytesMut::from(&bytes[..]);
        longer.put_u8(1);
        assert!(decode_entries(longer.freeze()).is_err());
        for cut in 0..bytes.len() {
            assert!(decode_entries(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_stream_decoder_reassembles_frames_split_anywhere() {
        let msgs = every_kind();
        let mut wire = BytesMut::new();
        for m in &msgs {
            encode(&mut wire, m);
        }
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(step) {
                d.feed(chunk);
                while let Some(m) = d.next_msg().unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out, msgs, "fed {step} bytes at a time");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn every_truncation_of_every_frame_is_an_error_not_a_panic() {
        for m in every_kind() {
            let mut b = BytesMut::new();
            encode(&mut b, &m);
            let body = b.freeze().slice(4..);
            if matches!(m, Msg::SnapshotChunk { .. }) {
                // Its body is whatever follows the type: only the empty body is malformed.
                assert!(decode(body.slice(..0)).is_err());
                continue;
            }
            for cut in 0..body.len() {
                assert!(decode(body.slice(..cut)).is_err(), "{m:?} cut at {cut}");
            }
            let mut longer = BytesMut::from(&body[..]);
            longer.put_u8(0);
            assert!(matches!(
                decode(longer.freeze()),
                Err(WireError::Malformed("trailing bytes"))
            ));
        }
    }

    #[test]
    fn counts_larger_than_the_frame_are_refused_before_allocating() {
        // An entry count of 4 billion in a short body, and a history of 4 billion spans.
        let mut b = BytesMut::new();
        b.put_u8(T_ENTRIES);
        b.put_slice(&[0u8; 24]);
        b.put_u32_le(u32::MAX);
        assert!(matches!(
            decode(b.freeze()),
            Err(WireError::Malformed("entry count"))
        ));
        let mut b = BytesMut::new();
        b.put_u8(T_SNAP_END);
        b.put_u64_le(1);
        b.put_u64_le(1);
        b.put_u32_le(u32::MAX);
        assert!(matches!(
            decode(b.freeze()),
            Err(WireError::Malformed("history length"))
        ));
        // A payload length beyond the frame.
        let mut b = BytesMut::new();
        b.put_u8(T_ENTRIES);
        b.put_slice(&[0u8; 24]);
        b.put_u32_le(1);
        b.put_u64_le(1);
        b.put_u64_le(1);
        b.put_u32_le(1_000_000);
        assert!(decode(b.freeze()).is_err());
    }

    #[test]
    fn a_frame_announcing_more_than_the_limit_is_refused_before_it_is_buffered() {
        let mut d = Decoder::new();
        d.feed(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(matches!(d.next_msg(), Err(WireError::TooLarge(_))));
        let mut d = Decoder::new();
        d.feed(&0u32.to_le_bytes());
        assert!(d.next_msg().is_err(), "an empty frame has no type");
    }

    #[test]
    fn another_version_and_the_old_protocol_frames_are_refused() {
        let mut b = BytesMut::new();
        encode(
            &mut b,
            &Msg::Hello {
                member: 1,
                epoch: 1,
                last: 0,
                history: vec![],
            },
        );
        b[5..9].copy_from_slice(&5u32.to_le_bytes());
        assert!(matches!(
            decode(b.freeze().slice(4..)),
            Err(WireError::CoreVersion(5))
        ));
        // Every frame type of protocol 5 (1..=13) is unknown here, so a peer of either
        // version never misreads the other's frames.
        for t in 1u8..=13 {
            let mut body = BytesMut::new();
            body.put_u8(t);
            body.put_slice(&[0u8; 64]);
            assert!(matches!(
                decode(body.freeze()),
                Err(WireError::Malformed("frame type"))
            ));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator (xorshift): the fuzz target's idea without the
        // toolchain, run in every `cargo test`.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Bytes> = every_kind()
            .iter()
            .map(|m| {
                let mut b = BytesMut::new();
                encode(&mut b, m);
                b.freeze().slice(4..)
            })
            .collect();
        for i in 0..20_000 {
            let mut body = BytesMut::from(&seeds[i % seeds.len()][..]);
            let flips = 1 + (next() % 4) as usize;
            for _ in 0..flips {
                if body.is_empty() {
                    break;
                }
                let at = (next() as usize) % body.len();
                body[at] = next() as u8;
            }
            let _ = decode(body.freeze());
        }
    }
}
