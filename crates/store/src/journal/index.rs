//! The in-memory index and its checkpoint file (`index.db`).
//!
//! The index maps every live message to where its bytes are in the journal (never the bytes
//! themselves: `load` reads them back), keeps durable subscriptions, and keeps what GC needs to
//! know which segments still matter: live enqueues per segment, and which earlier segments the
//! acks and purges of a segment refer to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::journal::pages::Pager;
use crate::journal::record::{put_str16, Reader};
use crate::journal::seqmap::{Block, SeqMap};
use crate::{ListInfo, Op, Recovery, StoreError, SubscriptionRecord};

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

impl ListIndex {
    fn new(pager: &Option<Arc<Pager>>) -> ListIndex {
        ListIndex {
            messages: SeqMap::with_pager(pager.clone()),
            bytes: 0,
            max_seq: 0,
        }
    }
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
    /// Payload bytes of the live enqueues per segment (what compaction would rewrite).
    pub live_bytes_per_segment: BTreeMap<u32, u64>,
    /// For a segment, the earlier segments whose records its acks, purges and deletes cancel:
    /// it must outlive them, or a full replay would resurrect what it cancelled.
    pub deps: BTreeMap<u32, BTreeSet<u32>>,
    /// Segment id ranges released (deleted) by GC, cumulative.
    pub released: Vec<(u32, u32)>,
    /// The byte after the last record applied.
    pub position: Position,
    /// The page file the lists' blocks are written to and read back from (None: all in
    /// memory, as in unit tests).
    pub(crate) pager: Option<Arc<Pager>>,
}

impl Index {
    /// An empty index whose lists page through `pager`.
    pub(crate) fn with_pager(pager: Option<Arc<Pager>>) -> Index {
        Index {
            pager,
            ..Index::default()
        }
    }

    fn count_live(&mut self, loc: Location) {
        *self.live_per_segment.entry(loc.segment).or_insert(0) += 1;
        *self.live_bytes_per_segment.entry(loc.segment).or_insert(0) += u64::from(loc.len);
    }

    fn uncount_live(&mut self, loc: Location) {
        decrement(&mut self.live_per_segment, loc.segment, 1);
        decrement(
            &mut self.live_bytes_per_segment,
            loc.segment,
            u64::from(loc.len),
        );
    }

    /// Applies an enqueue whose payload sits at `loc`.
    pub fn apply_enqueue(&mut self, list: &str, seq: u64, loc: Location) -> Result<(), StoreError> {
        let pager = &self.pager;
        let l = match self.lists.get_mut(list) {
            Some(l) => l,
            None => self
                .lists
                .entry(list.to_string())
                .or_insert_with(|| ListIndex::new(pager)),
        };
        let replaced = l.messages.insert(seq, loc)?;
        if let Some(old) = replaced {
            // Same seq again (a relocated message): keep byte and segment counts exact.
            l.bytes -= u64::from(old.len);
        }
        l.bytes += u64::from(loc.len);
        l.max_seq = l.max_seq.max(seq);
        if let Some(old) = replaced {
            self.usage_bytes -= u64::from(old.len);
            self.uncount_live(old);
        }
        self.usage_bytes += u64::from(loc.len);
        self.count_live(loc);
        Ok(())
    }

    /// Applies any op but an enqueue, read from (or written to) segment `segment`.
    pub fn apply_other(&mut self, op: Op, segment: u32) -> Result<(), StoreError> {
        match op {
            Op::Enqueue { .. } => {
                debug_assert!(false, "enqueues go through apply_enqueue");
            }
            Op::Dequeue { list, seq } => {
                if let Some(l) = self.lists.get_mut(&list) {
                    if let Some(old) = l.messages.remove(&seq)? {
                        l.bytes -= u64::from(old.len);
                        self.usage_bytes -= u64::from(old.len);
                        self.uncount_live(old);
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
                self.purge(&list, segment)?;
            }
            Op::Purge { list } => self.purge(&list, segment)?,
        }
        Ok(())
    }

    fn purge(&mut self, list: &str, segment: u32) -> Result<(), StoreError> {
        if let Some(l) = self.lists.remove(list) {
            self.usage_bytes -= l.bytes;
            let mut cancelled = BTreeSet::new();
            // Every block is read (a purge of a deep queue reads its pages back once).
            let mut gone = Vec::new();
            l.messages.visit(0, u32::MAX, |_, loc| gone.push(loc))?;
            for loc in gone {
                self.uncount_live(loc);
                if loc.segment != segment {
                    cancelled.insert(loc.segment);
                }
            }
            if !cancelled.is_empty() {
                self.deps.entry(segment).or_default().extend(cancelled);
            }
        }
        Ok(())
    }

    /// Records released segment ranges (cumulative) and forgets what it knew about them.
    pub fn apply_released(&mut self, ranges: &[(u32, u32)]) {
        self.released = merge_ranges(self.released.iter().chain(ranges).copied().collect());
        let released = self.released.clone();
        let gone = |s: &u32| is_released(&released, *s);
        self.deps.retain(|s, _| !gone(s));
        self.live_per_segment.retain(|s, n| !gone(s) || *n > 0);
        self.live_bytes_per_segment
            .retain(|s, n| !gone(s) || *n > 0);
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
        let pager = &self.pager;
        for (list, max_seq) in max_seqs {
            let l = self
                .lists
                .entry(list.clone())
                .or_insert_with(|| ListIndex::new(pager));
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
    pub fn drop_segment(&mut self, segment: u32) -> Result<u64, StoreError> {
        let mut dropped = 0;
        for l in self.lists.values_mut() {
            let before = l.messages.len();
            let mut bytes = 0;
            l.messages.retain(segment, segment, |_, loc| {
                let keep = loc.segment != segment;
                if !keep {
                    bytes += u64::from(loc.len);
                }
                keep
            })?;
            l.bytes -= bytes;
            self.usage_bytes -= bytes;
            dropped += (before - l.messages.len()) as u64;
        }
        self.live_per_segment.remove(&segment);
        self.live_bytes_per_segment.remove(&segment);
        Ok(dropped)
    }

    /// Pages the lists' blocks are written at (all of them after a checkpoint wrote its
    /// snapshot's unwritten blocks).
    pub(crate) fn referenced_pages(&self) -> BTreeSet<u32> {
        self.lists
            .values()
            .flat_map(|l| l.messages.pages().flatten().map(|(p, _)| p))
            .collect()
    }

    /// Turns the bodies a durable checkpoint wrote into page references (see
    /// [`SeqMap::demote`]). Returns how many.
    pub(crate) fn demote(&mut self) -> usize {
        self.lists.values_mut().map(|l| l.messages.demote()).sum()
    }

    /// Reads and checks every page the index refers to (at open: a bad page means the
    /// checkpoint is not used).
    pub(crate) fn verify_pages(&self) -> Result<(), StoreError> {
        self.lists.values().try_for_each(|l| l.messages.verify())
    }

    /// Writes the bodies no page holds yet to pages the last durable root does not name, then
    /// syncs the page file. Returns the bodies it marked written, so that a checkpoint whose
    /// root is not written can unmark them. Lists go in name order: the same index makes the
    /// same pages.
    pub(crate) fn write_pages(&self) -> Result<Vec<Arc<Block>>, StoreError> {
        let Some(pager) = &self.pager else {
            return Ok(Vec::new());
        };
        let committed = pager.committed();
        let mut next = 0u32;
        let mut written = Vec::new();
        let mut names: Vec<&String> = self.lists.keys().collect();
        names.sort();
        for name in names {
            for b in self.lists[name].messages.unwritten() {
                while committed.contains(&next) {
                    next += 1;
                }
                let crc = pager.write(next, b)?;
                b.set_written(Some((next, crc)));
                written.push(b.clone());
                next += 1;
            }
        }
        if !written.is_empty() {
            pager.sync()?;
        }
        Ok(written)
    }

    /// Blocks of all lists, and those whose body is in memory.
    pub fn block_counts(&self) -> (usize, usize) {
        self.lists.values().fold((0, 0), |(a, b), l| {
            (
                a + l.messages.block_count(),
                b + l.messages.resident_blocks(),
            )
        })
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

fn decrement(map: &mut BTreeMap<u32, u64>, segment: u32, by: u64) {
    if let Some(n) = map.get_mut(&segment) {
        debug_assert!(*n >= by, "live count of segment {segment} underflows");
        *n = n.saturating_sub(by);
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

/// Magic of `index.db` whose lists hold their entries inline (read for upgrades only).
pub const INDEX_MAGIC_V1: &[u8; 8] = b"FMQIDX01";
/// Magic of `index.db` whose lists are block directories into `index.pages`.
pub const INDEX_MAGIC: &[u8; 8] = b"FMQIDX02";
/// Bytes of the `index.db` header.
pub const INDEX_HEADER_BYTES: usize = 48;
/// The checkpoint file name.
pub const INDEX_FILE: &str = "index.db";
/// Where a checkpoint is written before it is renamed over [`INDEX_FILE`].
pub const INDEX_TMP_FILE: &str = "index.db.tmp";

fn encode_subscriptions(index: &Index, body: &mut Vec<u8>) {
    body.extend_from_slice(&(index.subscriptions.len() as u32).to_le_bytes());
    for entry in index.subscriptions.values() {
        let r = &entry.record;
        // Names were checked to fit when their op was encoded; a failure here cannot happen,
        // and a checkpoint that lost a field would fail its own read-back check.
        for s in [&r.list, &r.client_id, &r.name, &r.topic] {
            let _ = put_str16(body, s, "field");
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
}

/// Released ranges, subscriptions and the list count; returns the list names in the order
/// their entries must follow.
fn encode_head<'a>(index: &'a Index, body: &mut Vec<u8>) -> Vec<&'a String> {
    body.extend_from_slice(&(index.released.len() as u32).to_le_bytes());
    for (a, b) in &index.released {
        body.extend_from_slice(&a.to_le_bytes());
        body.extend_from_slice(&b.to_le_bytes());
    }
    encode_subscriptions(index, body);
    let mut names: Vec<&String> = index.lists.keys().collect();
    names.sort();
    body.extend_from_slice(&(names.len() as u32).to_le_bytes());
    names
}

fn encode_deps(index: &Index, body: &mut Vec<u8>) {
    body.extend_from_slice(&(index.deps.len() as u32).to_le_bytes());
    for (seg, deps) in &index.deps {
        body.extend_from_slice(&seg.to_le_bytes());
        body.extend_from_slice(&(deps.len() as u32).to_le_bytes());
        for d in deps {
            body.extend_from_slice(&d.to_le_bytes());
        }
    }
}

fn with_header(magic: &[u8; 8], index: &Index, epoch: u64, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + body.len());
    out.extend_from_slice(magic);
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

/// Serializes the index (with its position and the writer's epoch) into the root of a
/// checkpoint: every list as a directory of its blocks, whose bodies must all have been written
/// to the page file (see `gc::write_checkpoint`). Its size is proportional to the number of
/// blocks (40 bytes per 1,024 messages), not to the messages.
pub fn encode_checkpoint(index: &Index, epoch: u64) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::with_capacity(4096);
    let names = encode_head(index, &mut body);
    for name in names {
        let l = &index.lists[name];
        let _ = put_str16(&mut body, name, "list name");
        body.extend_from_slice(&l.max_seq.to_le_bytes());
        body.extend_from_slice(&(l.messages.len() as u64).to_le_bytes());
        body.extend_from_slice(&l.bytes.to_le_bytes());
        l.messages.encode_directory(&mut body)?;
    }
    encode_deps(index, &mut body);
    body.extend_from_slice(&(index.live_per_segment.len() as u32).to_le_bytes());
    for (seg, n) in &index.live_per_segment {
        let bytes = index.live_bytes_per_segment.get(seg).copied().unwrap_or(0);
        body.extend_from_slice(&seg.to_le_bytes());
        body.extend_from_slice(&n.to_le_bytes());
        body.extend_from_slice(&bytes.to_le_bytes());
    }
    Ok(with_header(INDEX_MAGIC, index, epoch, body))
}

/// The v1 root (entries inline), which this version only reads; for upgrade tests.
#[cfg(test)]
pub(crate) fn encode_checkpoint_v1(index: &Index, epoch: u64) -> Vec<u8> {
    let mut body = Vec::new();
    let names = encode_head(index, &mut body);
    for name in names {
        let l = &index.lists[name];
        let _ = put_str16(&mut body, name, "list name");
        body.extend_from_slice(&l.max_seq.to_le_bytes());
        let entries = l.messages.entries().expect("in-memory test index");
        body.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (seq, loc) in entries {
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(&loc.segment.to_le_bytes());
            body.extend_from_slice(&loc.offset.to_le_bytes());
            body.extend_from_slice(&loc.len.to_le_bytes());
        }
    }
    encode_deps(index, &mut body);
    with_header(INDEX_MAGIC_V1, index, epoch, body)
}

fn decode_subscriptions(r: &mut Reader<'_>, index: &mut Index) -> Result<(), String> {
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
    Ok(())
}

/// Reads a v1 list (entries inline) into memory: the first checkpoint writes it as pages.
fn decode_list_v1(r: &mut Reader<'_>, index: &mut Index, name: String) -> Result<(), String> {
    let max_seq = r.u64()?;
    let count = r.u64()?;
    // 20 bytes per entry: a corrupt count cannot make us allocate more than the file holds.
    if count > (r.remaining() / 20) as u64 {
        return Err(format!(
            "list {name}: count {count} over what the file holds"
        ));
    }
    let mut l = ListIndex::new(&index.pager);
    l.max_seq = max_seq;
    for _ in 0..count {
        let seq = r.u64()?;
        let loc = Location {
            segment: r.u32()?,
            offset: r.u32()?,
            len: r.u32()?,
        };
        l.bytes += u64::from(loc.len);
        index.count_live(loc);
        l.messages
            .insert(seq, loc)
            .map_err(|e| format!("list {name}: {e}"))?;
    }
    index.usage_bytes += l.bytes;
    index.lists.insert(name, l);
    Ok(())
}

/// Reads checkpoint bytes back into an index (whose lists page through `pager`) and the epoch
/// of the writer that wrote it; an error says what is wrong. The pages a v2 root names are not
/// read here: [`Index::verify_pages`] checks them.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<(Index, u64), String> {
    decode_checkpoint_with(bytes, None)
}

pub(crate) fn decode_checkpoint_with(
    bytes: &[u8],
    pager: Option<Arc<Pager>>,
) -> Result<(Index, u64), String> {
    if bytes.len() < INDEX_HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    let v1 = match &bytes[0..8] {
        m if m == INDEX_MAGIC => false,
        m if m == INDEX_MAGIC_V1 => true,
        _ => return Err("bad magic".into()),
    };
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
        ..Index::with_pager(pager)
    };
    let mut r = Reader::new(body);
    let n = r.u32()?;
    for _ in 0..n {
        index.released.push((r.u32()?, r.u32()?));
    }
    decode_subscriptions(&mut r, &mut index)?;
    let n = r.u32()?;
    for _ in 0..n {
        let name = r.str16()?;
        if v1 {
            decode_list_v1(&mut r, &mut index, name)?;
            continue;
        }
        let max_seq = r.u64()?;
        let count = r.u64()?;
        let bytes = r.u64()?;
        let messages = SeqMap::decode_directory(&mut r, index.pager.clone())
            .map_err(|e| format!("list {name}: {e}"))?;
        if messages.len() as u64 != count {
            return Err(format!(
                "list {name}: {count} messages, its blocks hold {}",
                messages.len()
            ));
        }
        if !messages.is_empty() && index.pager.is_none() {
            return Err(format!("list {name}: paged blocks without a page file"));
        }
        index.usage_bytes += bytes;
        index.lists.insert(
            name,
            ListIndex {
                messages,
                bytes,
                max_seq,
            },
        );
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
    if !v1 {
        let n = r.u32()?;
        for _ in 0..n {
            let seg = r.u32()?;
            index.live_per_segment.insert(seg, r.u64()?);
            index.live_bytes_per_segment.insert(seg, r.u64()?);
        }
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

    fn sample(ix: &mut Index) {
        ix.apply_enqueue("queue://a", 1, loc(1, 100)).unwrap();
        ix.apply_enqueue("queue://a", 2, loc(2, 100)).unwrap();
        for seq in 3..=5_000 {
            ix.apply_enqueue("queue://b", seq, loc(3, seq as u32))
                .unwrap();
        }
        ix.apply_other(
            Op::Dequeue {
                list: "queue://a".into(),
                seq: 1,
            },
            2,
        )
        .unwrap();
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
        )
        .unwrap();
        ix.apply_released(&[(5, 7)]);
        ix.position = Position {
            segment: 2,
            offset: 999,
        };
    }

    fn paged_index() -> (crate::journal::storage::MemDir, Arc<Pager>, Index) {
        use crate::journal::storage::StorageDir;
        let dir = crate::journal::storage::MemDir::new();
        let file = dir.open(crate::journal::pages::PAGES_FILE, true).unwrap();
        let pager = Arc::new(Pager::new(file, 1 << 20));
        let ix = Index::with_pager(Some(pager.clone()));
        (dir, pager, ix)
    }

    fn entries(ix: &Index) -> Vec<(String, Vec<(u64, Location)>)> {
        let mut v: Vec<_> = ix
            .lists
            .iter()
            .map(|(k, l)| (k.clone(), l.messages.entries().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn checkpoint_round_trips_and_detects_corruption() {
        let (_dir, pager, mut ix) = paged_index();
        sample(&mut ix);
        assert!(
            encode_checkpoint(&ix, 3).is_err(),
            "a root naming unwritten blocks is refused"
        );
        let written = ix.write_pages().unwrap();
        assert_eq!(written.len(), 1 + 5); // queue://a: 1 block, queue://b: 4,998 in 5
        let bytes = encode_checkpoint(&ix, 3).unwrap();
        pager.set_committed(ix.referenced_pages());
        let (back, epoch) = decode_checkpoint_with(&bytes, Some(pager.clone())).unwrap();
        back.verify_pages().unwrap();
        assert_eq!(epoch, 3);
        assert_eq!(back.recovery(), ix.recovery());
        assert_eq!(back.position, ix.position);
        assert_eq!(back.deps, ix.deps);
        assert_eq!(back.released, vec![(5, 7)]);
        assert_eq!(back.usage_bytes, ix.usage_bytes);
        assert_eq!(back.live_per_segment, ix.live_per_segment);
        assert_eq!(back.live_bytes_per_segment, ix.live_bytes_per_segment);
        assert_eq!(entries(&back), entries(&ix));
        for i in [3, 20, 50, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                decode_checkpoint_with(&bad, Some(pager.clone())).is_err(),
                "flip at {i} undetected"
            );
        }
        // A root needs its page file.
        assert!(decode_checkpoint(&bytes).is_err());
    }

    #[test]
    fn a_second_checkpoint_writes_only_changed_blocks_to_pages_the_first_does_not_name() {
        let (_dir, pager, mut ix) = paged_index();
        sample(&mut ix);
        ix.write_pages().unwrap();
        encode_checkpoint(&ix, 1).unwrap();
        let first = ix.referenced_pages();
        pager.set_committed(first.clone());
        assert_eq!(ix.demote(), 6);
        assert_eq!(ix.block_counts(), (6, 0));
        // Consume the front of queue://b, append one message to queue://a.
        for seq in 3..=10 {
            ix.apply_other(
                Op::Dequeue {
                    list: "queue://b".into(),
                    seq,
                },
                4,
            )
            .unwrap();
        }
        ix.apply_enqueue("queue://a", 9_000, loc(4, 1)).unwrap();
        let written = ix.write_pages().unwrap();
        assert_eq!(written.len(), 2, "two blocks changed");
        for b in &written {
            let (page, _) = b.written().unwrap();
            assert!(
                !first.contains(&page),
                "page {page} is named by the durable root"
            );
        }
        let bytes = encode_checkpoint(&ix, 1).unwrap();
        let (back, _) = decode_checkpoint_with(&bytes, Some(pager.clone())).unwrap();
        back.verify_pages().unwrap();
        assert_eq!(entries(&back), entries(&ix));
        assert_eq!(ix.live_per_segment.get(&3), Some(&(4_998 - 8)));
    }

    #[test]
    fn a_version_1_root_is_read_into_memory_and_written_as_pages_by_the_next_checkpoint() {
        let mut mem = Index::default();
        sample(&mut mem);
        let v1 = encode_checkpoint_v1(&mem, 2);
        let (_dir, pager, _) = paged_index();
        let (back, epoch) = decode_checkpoint_with(&v1, Some(pager.clone())).unwrap();
        assert_eq!(epoch, 2);
        assert_eq!(entries(&back), entries(&mem));
        let nonzero = |m: &BTreeMap<u32, u64>| -> Vec<(u32, u64)> {
            m.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| (*s, *n))
                .collect()
        };
        assert_eq!(
            nonzero(&back.live_per_segment),
            nonzero(&mem.live_per_segment)
        );
        assert_eq!(
            nonzero(&back.live_bytes_per_segment),
            nonzero(&mem.live_bytes_per_segment)
        );
        assert_eq!(
            back.block_counts().1,
            back.block_counts().0,
            "all in memory"
        );
        assert_eq!(back.write_pages().unwrap().len(), 6);
        let (again, _) =
            decode_checkpoint_with(&encode_checkpoint(&back, 2).unwrap(), Some(pager)).unwrap();
        again.verify_pages().unwrap();
        assert_eq!(entries(&again), entries(&mem));
    }

    #[test]
    fn a_segment_that_cancels_a_live_segment_is_not_garbage() {
        let mut ix = Index::default();
        ix.apply_enqueue("q", 1, loc(1, 100)).unwrap();
        ix.apply_enqueue("q", 2, loc(1, 200)).unwrap();
        ix.apply_other(
            Op::Dequeue {
                list: "q".into(),
                seq: 1,
            },
            2,
        )
        .unwrap();
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
