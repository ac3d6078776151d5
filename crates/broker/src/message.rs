//! The protocol-neutral message and its store encoding.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::destination::{Destination, DestinationKind};

/// JMS default priority.
pub const DEFAULT_PRIORITY: u8 = 4;
/// Highest JMS priority.
pub const MAX_PRIORITY: u8 = 9;

/// A message as the broker sees it, whatever protocol carried it in.
///
/// Immutable once sent: deliveries share it through an `Arc`, and per-delivery state (delivery
/// count, redelivered flag) lives with the queue entry, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Broker-assigned id (`message-id`), unique across restarts.
    pub id: Arc<str>,
    /// Where the producer sent it.
    pub destination: Destination,
    /// Application headers (`correlation-id`, `reply-to`, `type`, user properties, …), in the
    /// order the producer sent them, first occurrence only.
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub body: Bytes,
    /// Persistent messages are stored before they are confirmed.
    pub persistent: bool,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// When the broker accepted it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Absolute expiry in milliseconds since the Unix epoch; 0 means never.
    pub expires_ms: u64,
    /// The connection that produced it (for `noLocal` subscriptions); 0 after a restart.
    pub producer_connection: u64,
    /// Protocol encodings of the part of a delivery that is the same for every subscriber,
    /// made by the first delivery that needs one and reused by the others (a topic's fan-out
    /// encodes the headers once, not once per subscriber). Not part of the message's value.
    pub wire: WireCache,
}

/// How many encodings a [`WireCache`] holds (a connector numbers its variants below this).
pub const WIRE_CACHE_SLOTS: usize = 6;

/// Encodings of a message's delivery-invariant part, one slot per protocol variant (the
/// connector decides what a slot means). Filled at most once per slot, shared through the
/// message's `Arc`; equal to every other cache and empty in a clone, so a modified copy of a
/// message never reuses the original's encoding.
#[derive(Default)]
pub struct WireCache {
    slots: [std::sync::OnceLock<Bytes>; WIRE_CACHE_SLOTS],
}

impl WireCache {
    /// The encoding in `slot`, made by `encode` if it is not there yet; `None` when `slot` is
    /// out of range.
    pub fn get_or_encode(&self, slot: usize, encode: impl FnOnce() -> Bytes) -> Option<&Bytes> {
        self.slots.get(slot).map(|s| s.get_or_init(encode))
    }
}

impl Clone for WireCache {
    fn clone(&self) -> WireCache {
        WireCache::default()
    }
}

impl PartialEq for WireCache {
    fn eq(&self, _other: &WireCache) -> bool {
        true
    }
}

impl Eq for WireCache {}

impl std::fmt::Debug for WireCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = self.slots.iter().filter(|s| s.get().is_some()).count();
        write!(f, "WireCache({filled} filled)")
    }
}

impl Message {
    /// The value of an application header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when the message has an expiry that is at or before `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }

    /// Approximate memory the message takes while a list holds it, used for memory limits
    /// (`memory_limit_bytes`, producer flow control, paging). It counts what is allocated, not
    /// only what was sent: the `Arc`'d struct (with its wire cache slots), the header table and
    /// each header's two strings, the id, the body, one allocator rounding per allocation, and
    /// a list entry. An earlier estimate (payload bytes plus 96) counted a 100-byte message
    /// with a few headers as ~400 bytes where the process grew by ~1.7 KB per message held, so
    /// a 64 MiB limit let a queue take ~265 MiB (`bench-results/journal.md`). ActiveMQ likewise
    /// counts at least 1 KiB per message (`DEFAULT_MINIMUM_MESSAGE_SIZE`).
    pub fn size_bytes(&self) -> u64 {
        // Per allocation: the allocator's rounding up to its size class (mimalloc in the
        // server binary; glibc's 8-byte header and 16-byte alignment elsewhere).
        const ALLOC: usize = 16;
        // A list's entry for it: a share of a B-tree node (seq, entry, pointers), its
        // delivery bookkeeping and the dispatch queues' references.
        const LIST_ENTRY: usize = 128;
        let headers: usize = self.headers.capacity() * std::mem::size_of::<(String, String)>()
            + ALLOC
            + self
                .headers
                .iter()
                .map(|(n, v)| n.capacity() + v.capacity() + 2 * ALLOC)
                .sum::<usize>();
        let own = std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>() + ALLOC;
        let id = self.id.len() + 2 * std::mem::size_of::<usize>() + ALLOC;
        // The body's bytes and the `Bytes` storage header of its own allocation.
        let body = self.body.len() + 32 + ALLOC;
        (own + headers + id + body + LIST_ENTRY) as u64
    }

    /// Encodes the message for the store (format version 1, little-endian).
    ///
    /// ```text
    /// u8 version=1 | u8 flags (bit0 persistent) | u8 priority | u8 kind
    /// u64 timestamp_ms | u64 expires_ms
    /// str id | str destination name | u32 header count | (str name, str value)* | bytes body
    /// str = u32 len + UTF-8; bytes = u32 len + raw
    /// ```
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.size_bytes() as usize);
        b.put_u8(1);
        b.put_u8(u8::from(self.persistent));
        b.put_u8(self.priority);
        b.put_u8(match self.destination.kind {
            DestinationKind::Queue => 0,
            DestinationKind::Topic => 1,
            DestinationKind::TempQueue => 2,
            DestinationKind::TempTopic => 3,
        });
        b.put_u64_le(self.timestamp_ms);
        b.put_u64_le(self.expires_ms);
        put_str(&mut b, &self.id);
        put_str(&mut b, &self.destination.name);
        b.put_u32_le(self.headers.len() as u32);
        for (n, v) in &self.headers {
            put_str(&mut b, n);
            put_str(&mut b, v);
        }
        b.put_u32_le(self.body.len() as u32);
        b.extend_from_slice(&self.body);
        b.freeze()
    }

    /// Decodes what [`Message::encode`] produced. Every length is checked against the input.
    pub fn decode(payload: &Bytes) -> Result<Message, DecodeMessageError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let version = r.u8()?;
        if version != 1 {
            return Err(DecodeMessageError::Version(version));
        }
        let flags = r.u8()?;
        let priority = r.u8()?.min(MAX_PRIORITY);
        let kind = match r.u8()? {
            0 => DestinationKind::Queue,
            1 => DestinationKind::Topic,
            2 => DestinationKind::TempQueue,
            3 => DestinationKind::TempTopic,
            k => return Err(DecodeMessageError::Kind(k)),
        };
        let timestamp_ms = r.u64()?;
        let expires_ms = r.u64()?;
        let id: Arc<str> = r.str()?.into();
        let name: Arc<str> = r.str()?.into();
        let count = r.u32()? as usize;
        // Each header needs at least 8 bytes; bound the allocation by what the input can hold.
        let mut headers = Vec::with_capacity(count.min(r.remaining() / 8));
        for _ in 0..count {
            let n = r.str()?;
            let v = r.str()?;
            headers.push((n, v));
        }
        let body_len = r.u32()? as usize;
        let body = r.bytes(body_len)?;
        Ok(Message {
            id,
            destination: Destination { kind, name },
            headers,
            body,
            persistent: flags & 1 == 1,
            priority,
            timestamp_ms,
            expires_ms,
            producer_connection: 0,
            wire: Default::default(),
        })
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.extend_from_slice(s.as_bytes());
}

/// A stored message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeMessageError {
    /// The payload ends before a field does.
    #[error("stored message truncated at byte {0}")]
    Truncated(usize),
    /// An unknown format version.
    #[error("unknown stored message format version {0}")]
    Version(u8),
    /// An unknown destination kind.
    #[error("unknown destination kind {0}")]
    Kind(u8),
    /// A string field that is not UTF-8.
    #[error("stored message has a non-UTF-8 string at byte {0}")]
    Utf8(usize),
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeMessageError> {
        if self.remaining() < n {
            return Err(DecodeMessageError::Truncated(self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeMessageError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeMessageError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, DecodeMessageError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<String, DecodeMessageError> {
        let len = self.u32()? as usize;
        let at = self.pos;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeMessageError::Utf8(at))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeMessageError> {
        if self.remaining() < n {
            return Err(DecodeMessageError::Truncated(self.pos));
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Message {
        Message {
            id: "ID:b-1:7".into(),
            destination: Destination::queue("orders"),
            headers: vec![
                ("correlation-id".into(), "c1".into()),
                ("x".into(), "é".into()),
            ],
            body: Bytes::from_static(b"hello\0world"),
            persistent: true,
            priority: 7,
            timestamp_ms: 1_700_000_000_000,
            expires_ms: 0,
            producer_connection: 0,
            wire: Default::default(),
        }
    }

    #[test]
    fn encoding_round_trips() {
        let m = sample();
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics() {
        let enc = sample().encode();
        for cut in 0..enc.len() {
            assert!(Message::decode(&enc.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&Bytes::from(data));
        }
    }
}
