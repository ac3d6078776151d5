//! Byte encodings of the lsm store's keys and values.
//!
//! - message key: `u64 BE length of the list name ‖ list name ‖ u64 BE seq`. The length prefix
//!   (rather than a separator byte) keeps list prefixes unambiguous for any name, including names
//!   that contain NUL; big-endian seqs make RocksDB's bytewise order the seq order, so a prefix
//!   scan returns a list's messages in order. The value is the payload as submitted.
//! - list stats (`lists` column family, key = list name): `count ‖ bytes ‖ max_seq`, each
//!   `u64 LE`. They are rewritten in the same `WriteBatch` as the messages they describe, so they
//!   are exactly as durable as the messages and recovery never has to read a message.
//! - subscription (`subscriptions` column family, key = list name): a version byte, then the
//!   fields, strings as `u64 LE length ‖ UTF-8 bytes`.

use crate::{StoreError, SubscriptionRecord};

/// Bytes of the big-endian sequence number at the end of a message key.
const SEQ_BYTES: usize = 8;
/// Bytes of an encoded [`ListStats`].
const LIST_STATS_BYTES: usize = 24;
/// Version byte of the subscription encoding.
const SUBSCRIPTION_VERSION: u8 = 1;

/// The key prefix every message of `list` shares.
pub(crate) fn list_prefix(list: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + list.len() + SEQ_BYTES);
    key.extend_from_slice(&(list.len() as u64).to_be_bytes());
    key.extend_from_slice(list.as_bytes());
    key
}

/// The key of message `seq` of `list`.
pub(crate) fn message_key(list: &str, seq: u64) -> Vec<u8> {
    let mut key = list_prefix(list);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The smallest key greater than every key that starts with `prefix` (an exclusive upper bound
/// for a prefix scan), or `None` when no such key exists (a prefix of only `0xFF` bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The seq of a message key found under `prefix`.
pub(crate) fn message_seq(prefix: &[u8], key: &[u8]) -> Result<u64, StoreError> {
    let seq_bytes: [u8; SEQ_BYTES] = key
        .strip_prefix(prefix)
        .and_then(|rest| rest.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            location: format!("lsm message key {key:02x?}"),
            reason: format!(
                "expected the list prefix ({} bytes) and an {SEQ_BYTES}-byte seq",
                prefix.len()
            ),
        })?;
    Ok(u64::from_be_bytes(seq_bytes))
}

/// What the store keeps per list, so recovery is O(lists) and not O(messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ListStats {
    /// Messages held.
    pub count: u64,
    /// Payload bytes held.
    pub bytes: u64,
    /// Highest seq enqueued since the list was created or last purged.
    pub max_seq: u64,
}

impl ListStats {
    pub(crate) fn encode(&self) -> [u8; LIST_STATS_BYTES] {
        let mut out = [0u8; LIST_STATS_BYTES];
        out[0..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.max_seq.to_le_bytes());
        out
    }

    pub(crate) fn decode(list: &str, bytes: &[u8]) -> Result<ListStats, StoreError> {
        let corrupt = || StoreError::Corrupt {
            location: format!("lsm list stats of {list}"),
            reason: format!("{} bytes, expected {LIST_STATS_BYTES}", bytes.len()),
        };
        if bytes.len() != LIST_STATS_BYTES {
            return Err(corrupt());
        }
        let word = |i: usize| -> Result<u64, StoreError> {
            let b: [u8; 8] = bytes[i..i + 8].try_into().map_err(|_| corrupt())?;
            Ok(u64::from_le_bytes(b))
        };
        Ok(ListStats {
            count: word(0)?,
            bytes: word(8)?,
            max_seq: word(16)?,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a subscription record.
pub(crate) fn encode_subscription(rec: &SubscriptionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + rec.list.len() + rec.topic.len());
    out.push(SUBSCRIPTION_VERSION);
    put_str(&mut out, &rec.list);
    put_str(&mut out, &rec.client_id);
    put_str(&mut out, &rec.name);
    put_str(&mut out, &rec.topic);
    match &rec.selector {
        Some(s) => {
            out.push(1);
            put_str(&mut out, s);
        }
        None => out.push(0),
    }
    out.push(u8::from(rec.no_local));
    out
}

/// A cursor over an encoded value that reports where it ran short.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'a str,
}

impl Reader<'_> {
    fn corrupt(&self, reason: &str) -> StoreError {
        StoreError::Corrupt {
            location: format!("{} at byte {}", self.what, self.at),
            reason: reason.to_string(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], StoreError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.corrupt("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let len_bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| self.corrupt("truncated length"))?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes))
            .map_err(|_| self.corrupt("length out of range"))?;
        let raw = self.take(len)?.to_vec();
        String::from_utf8(raw).map_err(|_| self.corrupt("not UTF-8"))
    }
}

/// Decodes a subscription record stored under key `list`.
pub(crate) fn decode_subscription(
    list: &str,
    bytes: &[u8],
) -> Result<SubscriptionRecord, StoreError> {
    let what = format!("lsm subscription {list}");
    let mut r = Reader {
        bytes,
        at: 0,
        what: &what,
    };
    let version = r.byte()?;
    if version != SUBSCRIPTION_VERSION {
        return Err(r.corrupt(&format!("unknown version {version}")));
    }
    let rec = SubscriptionRecord {
        list: r.string()?,
        client_id: r.string()?,
        name: r.string()?,
        topic: r.string()?,
        selector: match r.byte()? {
            0 => None,
            1 => Some(r.string()?),
            other => return Err(r.corrupt(&format!("selector flag {other}"))),
        },
        no_local: match r.byte()? {
            0 => false,
            1 => true,
            other => return Err(r.corrupt(&format!("no_local flag {other}"))),
        },
    };
    if r.at != bytes.len() {
        return Err(r.corrupt("trailing bytes"));
    }
    if rec.list != list {
        return Err(r.corrupt(&format!("record names list {}", rec.list)));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_list_then_seq_even_across_byte_boundaries() {
        let mut keys = [
            message_key("q", 256),
            message_key("q", 1),
            message_key("q", 255),
            message_key("q\0x", 0),
            message_key("p", u64::MAX),
        ];
        keys.sort();
        let prefix = list_prefix("q");
        let seqs: Vec<u64> = keys
            .iter()
            .filter(|k| k.starts_with(&prefix))
            .map(|k| message_seq(&prefix, k).unwrap())
            .collect();
        // "q\0x" has a different length prefix, so it is not mistaken for a message of "q".
        assert_eq!(seqs, [1, 255, 256]);
    }

    #[test]
    fn prefix_end_bounds_every_key_of_the_prefix_and_nothing_else() {
        let prefix = list_prefix("queue://a");
        let end = prefix_end(&prefix).unwrap();
        assert!(message_key("queue://a", u64::MAX) < end);
        assert!(message_key("queue://b", 0) >= end);
        assert_eq!(prefix_end(&[0x01, 0xFF]), Some(vec![0x02]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn subscription_round_trips_and_rejects_damage() {
        let rec = SubscriptionRecord {
            list: "durable://c:s".into(),
            client_id: "c".into(),
            name: "s".into(),
            topic: "t.>".into(),
            selector: Some("a > 1".into()),
            no_local: true,
        };
        let bytes = encode_subscription(&rec);
        assert_eq!(decode_subscription(&rec.list, &bytes).unwrap(), rec);
        assert!(decode_subscription(&rec.list, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode_subscription("durable://other", &bytes).is_err());
        let stats = ListStats {
            count: 3,
            bytes: 9,
            max_seq: 7,
        };
        assert_eq!(ListStats::decode("l", &stats.encode()).unwrap(), stats);
        assert!(ListStats::decode("l", &[0; 23]).is_err());
    }
}
