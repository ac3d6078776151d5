//! The in-memory index and its checkpoint file (`index.db`).
//!
//! The index maps every live message to where its bytes are in the journal (never the bytes
//! themselves: `load` reads them back), keeps durable subscriptions, and keeps what GC needs to
//! know which segments still matter: live enqueues per segment, and which earlier segments the
//! acks and purges of a segment refer to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::journal::record::{put_str16, Reader};
use crate::journal::seqmap::SeqMap;
use crate::{ListInfo, Op, Recovery, SubscriptionRecord};

/// Where a message's bytes are: the payload (after its 8-byte CRC and length prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Segment id.
    pub segment: u32,
    /// Byte offset of the payload within the segment file.
    pub offset: u32,
    /// Payload bytes.
    pub len: u32,
}

/// A journal position: the byte after the last record applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Segment id (0 = nothing written yet).
    pub segment: u32,
    /// Byte offset within the segment.
    pub offset: u64,
}

/// One list's live messages.
#[derive(Debug, Default, Clone)]
pub struct ListIndex {
    /// Live messages by seq.
    pub messages: SeqMap,
    /// Their payload bytes.
    pub bytes: u64,
    /// The highest seq ever enqueued.
    pub max_seq: u64,
}

/// A durable subscription and the segments holding its `PutSubscription` records.
#[derive(Debug, Clone)]
pub struct SubscriptionEntry {
    /// The record.
    pub record: SubscriptionRecord,
    /// Segments holding a put record of it; the highest is the live one.
    pub segments: BTreeSet<u32>,
}

/// The whole index.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// Lists by name (kept after they empty, so `max_seq` survives, as the memory store does).
    pub lists: HashMap<String, ListIndex>,
    /// Durable subscriptions by list.
    pub subscriptions: BTreeMap<String, SubscriptionEntry>,
    /// Payload bytes of every live message.
    pub usage_bytes: u64,
    /// Live enqueues per segment.
    pub live_per_segment: BTreeMap<u32, u64>,
    /// For a segment, the earlier segments whose records its acks, purges and deletes cancel:
    /// it must outlive them, or a full replay would resurrect what it cancelled.
    pub deps: BTreeMap<u32, BTreeSet<u32>>,
    /// Segment id ranges released (deleted) by GC, cumulative.
    pub released: Vec<(u32, u32)>,
    /// The byte after the last record applied.
    pub position: Position,
}

impl Index {
    /// Applies an enqueue whose payload sits at `loc`.
    pub fn apply_enqueue(&mut self, list: &str, seq: u64, loc: Location) {
        let l = match self.lists.get_mut(list) {
            Some(l) => l,
            None => self.lists.entry(list.to_string()).or_default(),
        };
        if let Some(old) = l.messages.insert(seq, loc) {
            // Same seq again (a relocated message): keep byte and segment counts exact.
            l.bytes -= u64::from(old.len);
            self.usage_bytes -= u64::from(old.len);
            decrement(&mut self.live_per_segment, old.segment);
        }
        l.bytes += u64::from(loc.len);
        l.max_seq = l.max_seq.max(seq);
        self.usage_bytes += u64::from(loc.len);
        *self.live_per_segment.entry(loc.segment).or_insert(0) += 1;
    }

    /// Applies any op but an enqueue, read from (or written to) segment `segment`.
    pub fn apply_other(&mut self, op: Op, segment: u32) {
        match op {
            Op::Enqueue { .. } => {
                debug_assert!(false, "enqueues go through apply_enqueue");
            }
            Op::Dequeue { list, seq } => {
                if let Some(l) = self.lists.get_mut(&list) {
                    if let Some(old) = l.messages.remove(&seq) {
                        l.bytes -= u64::from(old.len);
                        self.usage_bytes -= u64::from(old.len);
                        decrement(&mut self.live_per_segment, old.segment);
                        if old.segment != segment {
                            self.deps.entry(segment).or_default().insert(old.segment);
                        }
                    }
                }
            }
            Op::PutSubscription(record) => {
                let entry = self
                    .subscriptions
                    .entry(record.list.clone())
                    .or_insert_with(|| SubscriptionEntry {
                        record: record.clone(),
                        segments: BTreeSet::new(),
                    });
                entry.record = record;
                entry.segments.insert(segment);
            }
            Op::DeleteSubscription { list } => {
                if let Some(entry) = self.subscriptions.remove(&list) {
                    let deps = self.deps.entry(segment).or_default();
                    deps.extend(entry.segments.iter().filter(|s| **s != segment));
                }
                self.purge(&list, segment);
            }
            Op::Purge { list } => self.purge(&list, segment),
        }
    }

    fn purge(&mut self, list: &str, segment: u32) {
        if let Some(l) = self.lists.remove(list) {
            self.usage_bytes -= l.bytes;
            let mut cancelled = BTreeSet::new();
            for loc in l.messages.values() {
                decrement(&mut self.live_per_segment, loc.segment);
                if loc.segment != segment {
                    cancelled.insert(loc.segment);
                }
            }
            if !cancelled.is_empty() {
                self.deps.entry(segment).or_default().extend(cancelled);
            }
        }
    }

    /// Records released segment ranges (cumulative) and forgets what it knew about them.
    pub fn apply_released(&mut self, ranges: &[(u32, u32)]) {
        self.released = merge_ranges(self.released.iter().chain(ranges).copied().collect());
        let released = self.released.clone();
        let gone = |s: &u32| is_released(&released, *s);
        self.deps.retain(|s, _| !gone(s));
        self.live_per_segment.retain(|s, n| !gone(s) || *n > 0);
        for entry in self.subscriptions.values_mut() {
            entry.segments.retain(|s| !gone(s));
        }
    }

    /// Applies an epoch-start record in `segment` that seals `sealed`: the segment holding the
    /// seal must outlive every segment it seals, or a deposed master's bytes past the seal would
    /// be replayed after GC deleted the seal. The existing deps rule does exactly that.
    pub fn apply_epoch_start(&mut self, segment: u32, sealed: &[(u32, u64)]) {
        let earlier: BTreeSet<u32> = sealed
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| *s < segment && !is_released(&self.released, *s))
            .collect();
        if !earlier.is_empty() {
            self.deps.entry(segment).or_default().extend(earlier);
        }
    }

    /// Raises the highest seq of lists (from a segments-released record).
    pub fn apply_max_seqs(&mut self, max_seqs: &[(String, u64)]) {
        for (list, max_seq) in max_seqs {
            let l = self.lists.entry(list.clone()).or_default();
            l.max_seq = l.max_seq.max(*max_seq);
        }
    }

    /// The highest seq of every list, sorted by list.
    pub fn max_seqs(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .lists
            .iter()
            .map(|(k, l)| (k.clone(), l.max_seq))
            .collect();
        v.sort();
        v
    }

    /// Whether GC may delete `segment`, given the segments that still exist: no live message,
    /// not the live record of a subscription, and every segment it cancels already gone.
    pub fn segment_is_garbage(&self, segment: u32, existing: &BTreeSet<u32>) -> bool {
        if self.live_per_segment.get(&segment).copied().unwrap_or(0) > 0 {
            return false;
        }
        if self
            .subscriptions
            .values()
            .any(|e| e.segments.last() == Some(&segment))
        {
            return false;
        }
        match self.deps.get(&segment) {
            Some(deps) => deps.iter().all(|d| !existing.contains(d)),
            None => true,
        }
    }

    /// Segments the index needs to read from: live messages and live subscription records.
    pub fn referenced_segments(&self) -> BTreeSet<u32> {
        let mut s: BTreeSet<u32> = self
            .live_per_segment
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, _)| *s)
            .collect();
        s.extend(
            self.subscriptions
                .values()
                .filter_map(|e| e.segments.last().copied()),
        );
        s
    }

    /// Forgets every message stored in `segment` (a missing segment, with
    /// `ignore_missing_journal_files`). Returns how many messages were dropped.
    pub fn drop_segment(&mut self, segment: u32) -> u64 {
        let mut dropped = 0;
        for l in self.lists.values_mut() {
            let before = l.messages.len();
            let mut bytes = 0;
            l.messages.retain(|_, loc| {
                let keep = loc.segment != segment;
                if !keep {
                    bytes += u64::from(loc.len);
                }
                keep
            });
            l.bytes -= bytes;
            self.usage_bytes -= bytes;
            dropped += (before - l.messages.len()) as u64;
        }
        self.live_per_segment.remove(&segment);
        dropped
    }

    /// What `recover()` returns.
    pub fn recovery(&self) -> Recovery {
        let mut lists: Vec<ListInfo> = self
            .lists
            .iter()
            .filter(|(_, l)| !l.messages.is_empty())
            .map(|(k, l)| ListInfo {
                list: k.clone(),
                count: l.messages.len() as u64,
                bytes: l.bytes,
                max_seq: l.max_seq,
            })
            .collect();
        lists.sort_by(|a, b| a.list.cmp(&b.list));
        Recovery {
            subscriptions: self
                .subscriptions
                .values()
                .map(|e| e.record.clone())
                .collect(),
            lists,
        }
    }
}

fn decrement(map: &mut BTreeMap<u32, u64>, segment: u32) {
    if let Some(n) = map.get_mut(&segment) {
        debug_assert!(*n > 0, "live count of segment {segment} underflows");
        *n = n.saturating_sub(1);
    }
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn merge_ranges(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether `segment` lies in one of `ranges`.
pub fn is_released(ranges: &[(u32, u32)], segment: u32) -> bool {
    ranges.iter().any(|(a, b)| *a <= segment && segment <= *b)
}

// ---------------------------------------------------------------------------------------------
// The checkpoint file.

/// Magic of `index.db`.
pub const INDEX_MAGIC: &[u8; 8] = b"FMQIDX01";
/// Bytes of the `index.db` header.
pub const INDEX_HEADER_BYTES: usize = 48;
/// The checkpoint file name.
pub const INDEX_FILE: &str = "index.db";
/// Where a checkpoint is written before it is renamed over [`INDEX_FILE`].
pub const INDEX_TMP_FILE: &str = "index.db.tmp";

/// Serializes the index (with its position and the writer's epoch) into checkpoint bytes.
pub fn encode_checkpoint(index: &Index, epoch: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + index.usage_bytes.min(1 << 20) as usize);
    body.extend_from_slice(&(index.released.len() as u32).to_le_bytes());
    for (a, b) in &index.released {
        body.extend_from_slice(&a.to_le_bytes());
        body.extend_from_slice(&b.to_le_bytes());
    }
    body.extend_from_slice(&(index.subscriptions.len() as u32).to_le_bytes());
    for entry in index.subscriptions.values() {
        let r = &entry.record;
        // Names were checked to fit when their op was encoded; a failure here cannot happen,
        // and a checkpoint that lost a field would fail its own read-back check.
        for s in [&r.list, &r.client_id, &r.name, &r.topic] {
            let _ = put_str16(&mut body, s, "field");
        }
        match &r.selector {
            None => body.push(0),
            Some(s) => {
                body.push(1);
                body.extend_from_slice(&(s.len() as u32).to_le_bytes());
                body.extend_from_slice(s.as_bytes());
            }
        }
        body.push(u8::from(r.no_local));
        body.extend_from_slice(&(entry.segments.len() as u32).to_le_bytes());
        for s in &entry.segments {
            body.extend_from_slice(&s.to_le_bytes());
        }
    }
    let mut names: Vec<&String> = index.lists.keys().collect();
    names.sort();
    body.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for name in names {
        let l = &index.lists[name];
        let _ = put_str16(&mut body, name, "list name");
        body.extend_from_slice(&l.max_seq.to_le_bytes());
        body.extend_from_slice(&(l.messages.len() as u64).to_le_bytes());
        for (seq, loc) in &l.messages {
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(&loc.segment.to_le_bytes());
            body.extend_from_slice(&loc.offset.to_le_bytes());
            body.extend_from_slice(&loc.len.to_le_bytes());
        }
    }
    body.extend_from_slice(&(index.deps.len() as u32).to_le_bytes());
    for (seg, deps) in &index.deps {
        body.extend_from_slice(&seg.to_le_bytes());
        body.extend_from_slice(&(deps.len() as u32).to_le_bytes());
        for d in deps {
            body.extend_from_slice(&d.to_le_bytes());
        }
    }

    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + body.len());
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&index.position.segment.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&index.position.offset.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..44]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(out.len(), INDEX_HEADER_BYTES);
    out.extend_from_slice(&body);
    out
}

/// Reads checkpoint bytes back into an index and the epoch of the writer that wrote it; an
/// error says what is wrong.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<(Index, u64), String> {
    if bytes.len() < INDEX_HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    if &bytes[0..8] != INDEX_MAGIC {
        return Err("bad magic".into());
    }
    let mut h = Reader::new(&bytes[..INDEX_HEADER_BYTES]);
    h.take(8)?;
    let epoch = h.u64()?;
    let segment = h.u32()?;
    let _reserved = h.u32()?;
    let offset = h.u64()?;
    let body_len = h.u64()?;
    let body_crc = h.u32()?;
    let header_crc = h.u32()?;
    if crc32c::crc32c(&bytes[..44]) != header_crc {
        return Err("header CRC32C mismatch".into());
    }
    if body_len != (bytes.len() - INDEX_HEADER_BYTES) as u64 {
        return Err(format!(
            "body is {} bytes, header says {body_len}",
            bytes.len() - INDEX_HEADER_BYTES
        ));
    }
    let body = &bytes[INDEX_HEADER_BYTES..];
    if crc32c::crc32c(body) != body_crc {
        return Err("body CRC32C mismatch".into());
    }

    let mut index = Index {
        position: Position { segment, offset },
        ..Index::default()
    };
    let mut r = Reader::new(body);
    let n = r.u32()?;
    for _ in 0..n {
        index.released.push((r.u32()?, r.u32()?));
    }
    let n = r.u32()?;
    for _ in 0..n {
        let list = r.str16()?;
        let client_id = r.str16()?;
        let name = r.str16()?;
        let topic = r.str16()?;
        let selector = match r.u8()? {
            0 => None,
            _ => {
                let len = r.u32()? as usize;
                let s = r.take(len)?;
                Some(String::from_utf8(s.to_vec()).map_err(|_| "selector not UTF-8")?)
            }
        };
        let no_local = r.u8()? != 0;
        let m = r.u32()?;
        let mut segments = BTreeSet::new();
        for _ in 0..m {
            segments.insert(r.u32()?);
        }
        let record = SubscriptionRecord {
            list: list.clone(),
            client_id,
            name,
            topic,
            selector,
            no_local,
        };
        index
            .subscriptions
            .insert(list, SubscriptionEntry { record, segments });
    }
    let n = r.u32()?;
    for _ in 0..n {
        let name = r.str16()?;
        let max_seq = r.u64()?;
        let count = r.u64()?;
        // 20 bytes per entry: a corrupt count cannot make us allocate more than the file holds.
        if count > (r.remaining() / 20) as u64 {
            return Err(format!(
                "list {name}: count {count} over what the file holds"
            ));
        }
        let mut l = ListIndex {
            max_seq,
            ..ListIndex::default()
        };
        for _ in 0..count {
            let seq = r.u64()?;
            let loc = Location {
                segment: r.u32()?,
                offset: r.u32()?,
                len: r.u32()?,
            };
            l.bytes += u64::from(loc.len);
            *index.live_per_segment.entry(loc.segment).or_insert(0) += 1;
            l.messages.insert(seq, loc);
        }
        index.usage_bytes += l.bytes;
        index.lists.insert(name, l);
    }
    let n = r.u32()?;
    for _ in 0..n {
        let seg = r.u32()?;
        let m = r.u32()?;
        let mut set = BTreeSet::new();
        for _ in 0..m {
            set.insert(r.u32()?);
        }
        index.deps.insert(seg, set);
    }
    if r.remaining() != 0 {
        return Err(format!("{} trailing bytes", r.remaining()));
    }
    Ok((index, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 10,
        }
    }

    #[test]
    fn checkpoint_round_trips_and_detects_corruption() {
        let mut ix = Index::default();
        ix.apply_enqueue("queue://a", 1, loc(1, 100));
        ix.apply_enqueue("queue://a", 2, loc(2, 100));
        ix.apply_other(
            Op::Dequeue {
                list: "queue://a".into(),
                seq: 1,
            },
            2,
        );
        ix.apply_other(
            Op::PutSubscription(SubscriptionRecord {
                list: "durable://c:s".into(),
                client_id: "c".into(),
                name: "s".into(),
                topic: "t".into(),
                selector: None,
                no_local: false,
            }),
            2,
        );
        ix.apply_released(&[(5, 7)]);
        ix.position = Position {
            segment: 2,
            offset: 999,
        };
        let bytes = encode_checkpoint(&ix, 3);
        let (back, epoch) = decode_checkpoint(&bytes).unwrap();
        assert_eq!(epoch, 3);
        assert_eq!(back.recovery(), ix.recovery());
        assert_eq!(back.position, ix.position);
        assert_eq!(back.deps, ix.deps);
        assert_eq!(back.released, vec![(5, 7)]);
        assert_eq!(back.usage_bytes, 10);
        for i in [3, 20, 50, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_checkpoint(&bad).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn a_segment_that_cancels_a_live_segment_is_not_garbage() {
        let mut ix = Index::default();
        ix.apply_enqueue("q", 1, loc(1, 100));
        ix.apply_enqueue("q", 2, loc(1, 200));
        ix.apply_other(
            Op::Dequeue {
                list: "q".into(),
                seq: 1,
            },
            2,
        );
        let existing: BTreeSet<u32> = [1, 2, 3].into();
        assert!(
            !ix.segment_is_garbage(1, &existing),
            "1 holds a live message"
        );
        assert!(
            !ix.segment_is_garbage(2, &existing),
            "2 acks a message of 1"
        );
        let without_1: BTreeSet<u32> = [2, 3].into();
        assert!(ix.segment_is_garbage(2, &without_1));
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge_ranges(vec![(5, 6), (1, 2), (3, 4), (9, 9)]),
            vec![(1, 6), (9, 9)]
        );
        assert!(is_released(&[(1, 6)], 4));
        assert!(!is_released(&[(1, 6)], 7));
    }
}
