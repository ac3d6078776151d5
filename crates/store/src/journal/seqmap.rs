//! A compact ordered map from sequence number to [`Location`], for a list's live messages,
//! whose blocks may live in the page file instead of memory.
//!
//! The index holds one entry per stored message, so its size per entry decides the broker's
//! memory for deep queues. Entries live in **blocks** of up to [`BLOCK_MAX`] slots of 16 bytes
//! (the sequence as an offset from the block's base, segment, offset, length). The map keeps,
//! per block, a small [`BlockRef`] (base, last sequence, counts, the range of segments its
//! slots point into) and the block's body either in memory (`Arc<Block>`) or as a page of the
//! page file (`index.pages`, see [`crate::journal::pages`]):
//!
//! - a checkpoint writes the bodies changed since the last one to free pages and marks them
//!   written; once the checkpoint's root (`index.db`) is durable, the maintenance thread turns
//!   written bodies into page references ([`SeqMap::demote`]) and hands them to the page
//!   cache, which keeps at most `index_cache_bytes` of them. What stays in memory per message
//!   is thus the changed blocks plus the cache, not the depth of the queue: about 40 bytes per
//!   block of 1024 messages;
//! - cloning the map (a snapshot) copies one reference per block, and the writer copies a body
//!   only when it changes one that a snapshot or the cache still holds (`Arc::make_mut`), so a
//!   snapshot of ten million messages costs about ten thousand reference copies;
//! - a change to a body in the page file reads it back (through the cache) first; reads that
//!   miss the cache are one positional read of the page, checked against the CRC the map kept.
//!
//! It relies on how lists are used: sequence numbers arrive in increasing order (appends to the
//! last block), and queues are mostly consumed from the front (removals at the front of the first
//! block). A removal elsewhere leaves a tombstone, compacted within its block when tombstones
//! outnumber its live slots; an emptied block is dropped. Every operation is O(log n) plus
//! O(`BLOCK_MAX`) at worst, plus one page read when the block is neither changed nor cached.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::journal::index::Location;
use crate::journal::pages::Pager;
use crate::journal::record::Reader;
use crate::StoreError;

/// Slots per block before a new block is started at the back (an out-of-order insert may grow
/// a block to twice this; then it is split).
pub(crate) const BLOCK_MAX: usize = 1024;

/// Bytes of a full block's slots (what one changed block costs in memory, roughly).
pub(crate) const BLOCK_BYTES_FULL: u64 = (BLOCK_MAX * 16) as u64;

/// Most slots a block holds (a split happens above this).
pub(crate) const BLOCK_SLOTS_MAX: usize = 2 * BLOCK_MAX;

/// `Slot::len` of a removed entry. Real payloads are far smaller (segments are ≤ 1 GiB).
pub(crate) const TOMBSTONE: u32 = u32::MAX;

/// A block's tombstones are compacted once they are at least this many and outnumber its live
/// slots.
const SWEEP_MIN: usize = 64;

/// `Block::written` of a body not (or no longer) in the page file as it is.
const UNWRITTEN: u64 = u64::MAX;

/// Bytes of one block's entry in a checkpoint's directory.
pub(crate) const DIRECTORY_ENTRY_BYTES: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Sequence minus the block's base.
    pub(crate) delta: u32,
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

impl Slot {
    fn new(delta: u32, loc: Location) -> Slot {
        Slot {
            delta,
            segment: loc.segment,
            offset: loc.offset,
            len: loc.len,
        }
    }

    pub(crate) fn live(&self) -> bool {
        self.len != TOMBSTONE
    }

    fn location(&self) -> Location {
        Location {
            segment: self.segment,
            offset: self.offset,
            len: self.len,
        }
    }
}

/// Slots of sequences in `base..base + 2^32`, sorted; the blocks' ranges do not overlap.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) base: u64,
    pub(crate) slots: Vec<Slot>,
    pub(crate) live: usize,
    /// Where exactly this content is in the page file (`page << 32 | crc`), or [`UNWRITTEN`].
    /// Set by the checkpoint that wrote it; a copy (the writer changing a shared body) starts
    /// unwritten, and so does a body the writer changes in place.
    written: AtomicU64,
}

impl Clone for Block {
    fn clone(&self) -> Block {
        Block {
            base: self.base,
            slots: self.slots.clone(),
            live: self.live,
            written: AtomicU64::new(UNWRITTEN),
        }
    }
}

impl Block {
    pub(crate) fn new(base: u64) -> Block {
        Block::with_slots(base, Vec::new())
    }

    /// A block of these slots (sorted by delta); counts the live ones.
    pub(crate) fn with_slots(base: u64, slots: Vec<Slot>) -> Block {
        let live = slots.iter().filter(|s| s.live()).count();
        Block {
            base,
            slots,
            live,
            written: AtomicU64::new(UNWRITTEN),
        }
    }

    fn seq(&self, s: &Slot) -> u64 {
        self.base + u64::from(s.delta)
    }

    fn find(&self, seq: u64) -> Result<usize, usize> {
        match seq.checked_sub(self.base).map(u32::try_from) {
            Some(Ok(d)) => self.slots.binary_search_by_key(&d, |s| s.delta),
            Some(Err(_)) => Err(self.slots.len()),
            None => Err(0),
        }
    }

    /// The page and CRC this content was written to, if it was.
    pub(crate) fn written(&self) -> Option<(u32, u32)> {
        let w = self.written.load(Ordering::Acquire);
        (w != UNWRITTEN).then_some(((w >> 32) as u32, w as u32))
    }

    /// Records that this content is now at `page` with `crc` (or, with `None`, no longer is).
    pub(crate) fn set_written(&self, at: Option<(u32, u32)>) {
        let w = at.map_or(UNWRITTEN, |(page, crc)| {
            (u64::from(page) << 32) | u64::from(crc)
        });
        self.written.store(w, Ordering::Release);
    }

    /// Memory the body takes, for the page cache's budget.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Block>() + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Drops tombstones at both ends, and all of them once they outnumber the live slots.
    fn sweep(&mut self) {
        let lead = self.slots.iter().take_while(|s| !s.live()).count();
        if lead > 0 {
            self.slots.drain(..lead);
        }
        while self.slots.last().is_some_and(|s| !s.live()) {
            self.slots.pop();
        }
        let dead = self.slots.len() - self.live;
        if dead >= SWEEP_MIN && dead > self.live {
            self.slots.retain(Slot::live);
            self.slots.shrink_to_fit();
        }
    }

    /// The segments its live slots lie in, as `(lowest, highest)`; `EMPTY_RANGE` if none.
    fn segment_range(&self) -> (u32, u32) {
        self.slots
            .iter()
            .filter(|s| s.live())
            .fold(EMPTY_RANGE, |(lo, hi), s| {
                (lo.min(s.segment), hi.max(s.segment))
            })
    }
}

/// A segment range that contains nothing (and widens to anything).
const EMPTY_RANGE: (u32, u32) = (u32::MAX, 0);

/// Where a block's body is.
#[derive(Debug, Clone)]
enum Body {
    /// In memory: changed since the last checkpoint, or not yet handed to the cache.
    Mem(Arc<Block>),
    /// In the page file, with the CRC it was written with.
    Paged { page: u32, crc: u32 },
}

/// What the map knows of a block without its body.
#[derive(Debug, Clone)]
struct BlockRef {
    base: u64,
    /// Sequence of the last slot (live or not); blocks are never empty.
    top: u64,
    /// Slots, tombstones included.
    slots: u32,
    live: u32,
    /// The segments its live slots may lie in (a removal does not narrow it; a rewrite does).
    seg_lo: u32,
    seg_hi: u32,
    body: Body,
}

impl BlockRef {
    fn mem(block: Block) -> BlockRef {
        let (seg_lo, seg_hi) = block.segment_range();
        let mut r = BlockRef {
            base: block.base,
            top: block.base,
            slots: 0,
            live: 0,
            seg_lo,
            seg_hi,
            body: Body::Mem(Arc::new(block)),
        };
        r.refresh();
        r
    }

    /// Takes base, top and counts from an in-memory body.
    fn refresh(&mut self) {
        if let Body::Mem(b) = &self.body {
            self.base = b.base;
            self.top = b.slots.last().map_or(b.base, |s| b.seq(s));
            self.slots = b.slots.len() as u32;
            self.live = b.live as u32;
        }
    }

    fn widen(&mut self, segment: u32) {
        self.seg_lo = self.seg_lo.min(segment);
        self.seg_hi = self.seg_hi.max(segment);
    }

    /// Whether its live slots may point into a segment of `lo..=hi`.
    fn may_touch(&self, lo: u32, hi: u32) -> bool {
        self.seg_lo <= hi && lo <= self.seg_hi
    }
}

/// Live messages of one list, by sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqMap {
    blocks: VecDeque<BlockRef>,
    live: usize,
    /// Where paged bodies are read from (None: every body stays in memory, as in unit tests).
    pager: Option<Arc<Pager>>,
}

/// A page reference in the map without a page file to read it from.
fn no_pager() -> StoreError {
    StoreError::Failed("the index refers to a page but has no page file".into())
}

impl SeqMap {
    /// An empty map whose written blocks may move to `pager`'s file.
    pub(crate) fn with_pager(pager: Option<Arc<Pager>>) -> SeqMap {
        SeqMap {
            blocks: VecDeque::new(),
            live: 0,
            pager,
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No live entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Blocks (in memory or paged).
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks whose body is in memory (changed since the last checkpoint, or not yet demoted).
    pub fn resident_blocks(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| matches!(b.body, Body::Mem(_)))
            .count()
    }

    /// The block whose range holds `seq`: the last one with `base <= seq`.
    fn block_of(&self, seq: u64) -> Option<usize> {
        self.blocks
            .partition_point(|b| b.base <= seq)
            .checked_sub(1)
    }

    /// The body of block `i` (read through the page cache when paged).
    fn body(&self, i: usize) -> Result<Arc<Block>, StoreError> {
        let r = &self.blocks[i];
        match &r.body {
            Body::Mem(b) => Ok(b.clone()),
            Body::Paged { page, crc } => {
                let pager = self.pager.as_ref().ok_or_else(no_pager)?;
                pager.read(*page, *crc, r.slots as usize)
            }
        }
    }

    /// The body of block `i`, to change: brought into memory, copied if shared, and marked
    /// unwritten (the page file no longer has this content).
    fn body_mut(&mut self, i: usize) -> Result<&mut Block, StoreError> {
        if matches!(self.blocks[i].body, Body::Paged { .. }) {
            let b = self.body(i)?;
            self.blocks[i].body = Body::Mem(b);
        }
        match &mut self.blocks[i].body {
            Body::Mem(arc) => {
                let b = Arc::make_mut(arc);
                *b.written.get_mut() = UNWRITTEN;
                Ok(b)
            }
            Body::Paged { .. } => Err(no_pager()),
        }
    }

    /// Inserts or replaces; returns the live location it replaced.
    pub fn insert(&mut self, seq: u64, loc: Location) -> Result<Option<Location>, StoreError> {
        debug_assert!(
            loc.len != TOMBSTONE,
            "a payload of u32::MAX bytes cannot be stored"
        );
        let newest = self.blocks.back().map(|b| b.top);
        if newest.is_none_or(|n| n < seq) {
            // The common case: a new highest sequence, appended to the last block or, when it
            // is full or out of its range, to a new one.
            let room = self.blocks.back().and_then(|b| {
                let d = u32::try_from(seq - b.base).ok()?;
                ((b.slots as usize) < BLOCK_MAX).then_some(d)
            });
            match room {
                Some(d) => {
                    let i = self.blocks.len() - 1;
                    let b = self.body_mut(i)?;
                    b.slots.push(Slot::new(d, loc));
                    b.live += 1;
                    self.blocks[i].refresh();
                    self.blocks[i].widen(loc.segment);
                }
                None => {
                    let mut b = Block::new(seq);
                    b.slots.push(Slot::new(0, loc));
                    b.live = 1;
                    self.blocks.push_back(BlockRef::mem(b));
                }
            }
            self.live += 1;
            return Ok(None);
        }
        let i = match self.block_of(seq) {
            Some(i) => i,
            None => {
                self.blocks.push_front(BlockRef::mem(Block::new(seq)));
                0
            }
        };
        let Ok(delta) = u32::try_from(seq - self.blocks[i].base) else {
            // Beyond the block's range (every slot of it is below `seq`): a block of its own,
            // still below the next block's base.
            let mut b = Block::new(seq);
            b.slots.push(Slot::new(0, loc));
            b.live = 1;
            self.blocks.insert(i + 1, BlockRef::mem(b));
            self.live += 1;
            return Ok(None);
        };
        let b = self.body_mut(i)?;
        let (replaced, oversized) = match b.find(seq) {
            Ok(k) => {
                let old = std::mem::replace(&mut b.slots[k], Slot::new(delta, loc));
                if !old.live() {
                    b.live += 1;
                }
                (old.live().then(|| old.location()), false)
            }
            Err(k) => {
                b.slots.insert(k, Slot::new(delta, loc));
                b.live += 1;
                (None, b.slots.len() > BLOCK_SLOTS_MAX)
            }
        };
        self.blocks[i].refresh();
        self.blocks[i].widen(loc.segment);
        if oversized {
            self.split(i)?;
        }
        if replaced.is_none() {
            self.live += 1;
        }
        Ok(replaced)
    }

    /// Splits an oversized block in two halves.
    fn split(&mut self, i: usize) -> Result<(), StoreError> {
        let b = self.body_mut(i)?;
        let mid = b.slots.len() / 2;
        let upper: Vec<Slot> = b.slots.drain(mid..).collect();
        b.live = b.slots.iter().filter(|s| s.live()).count();
        let range = b.segment_range();
        let first = upper[0].delta;
        let base = b.base + u64::from(first);
        let upper = upper
            .into_iter()
            .map(|s| Slot {
                delta: s.delta - first,
                ..s
            })
            .collect();
        self.blocks[i].refresh();
        (self.blocks[i].seg_lo, self.blocks[i].seg_hi) = range;
        self.blocks
            .insert(i + 1, BlockRef::mem(Block::with_slots(base, upper)));
        Ok(())
    }

    /// The live location of `seq`.
    pub fn get(&self, seq: u64) -> Result<Option<Location>, StoreError> {
        let Some(i) = self.block_of(seq) else {
            return Ok(None);
        };
        if seq > self.blocks[i].top {
            return Ok(None);
        }
        let b = self.body(i)?;
        let Ok(k) = b.find(seq) else {
            return Ok(None);
        };
        let s = b.slots[k];
        Ok(s.live().then(|| s.location()))
    }

    /// Removes; returns the live location removed.
    pub fn remove(&mut self, seq: &u64) -> Result<Option<Location>, StoreError> {
        let seq = *seq;
        let Some(i) = self.block_of(seq) else {
            return Ok(None);
        };
        if seq > self.blocks[i].top {
            return Ok(None);
        }
        // Look before changing: a miss must not copy (or dirty) the body.
        let k = {
            let b = self.body(i)?;
            match b.find(seq) {
                Ok(k) if b.slots[k].live() => k,
                _ => return Ok(None),
            }
        };
        let b = self.body_mut(i)?;
        let old = b.slots[k].location();
        b.slots[k].len = TOMBSTONE;
        b.live -= 1;
        b.sweep();
        let empty = b.slots.is_empty();
        if empty {
            self.blocks.remove(i);
        } else {
            self.blocks[i].refresh();
        }
        self.live -= 1;
        Ok(Some(old))
    }

    /// Up to `max` live entries with a sequence greater than `after` (all of them for `None`),
    /// in order.
    pub fn after(
        &self,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, Location)>, StoreError> {
        let first = after.and_then(|s| self.block_of(s)).unwrap_or(0);
        let mut out = Vec::with_capacity(max.min(self.live).min(4096));
        for i in first..self.blocks.len() {
            if out.len() >= max {
                break;
            }
            if after.is_some_and(|s| self.blocks[i].top <= s) {
                continue;
            }
            let b = self.body(i)?;
            let from = match after {
                Some(s) if i == first => b.slots.partition_point(|x| b.seq(x) <= s),
                _ => 0,
            };
            for s in b.slots[from..].iter().filter(|s| s.live()) {
                if out.len() >= max {
                    break;
                }
                out.push((b.seq(s), s.location()));
            }
        }
        Ok(out)
    }

    /// Every live entry, in order (reads every paged block: for tests and small maps).
    pub fn entries(&self) -> Result<Vec<(u64, Location)>, StoreError> {
        self.after(None, usize::MAX)
    }

    /// Calls `f` with every live entry of the blocks whose slots may point into a segment of
    /// `lo..=hi`, in order (blocks outside the range are not read).
    pub fn visit(
        &self,
        lo: u32,
        hi: u32,
        mut f: impl FnMut(u64, Location),
    ) -> Result<(), StoreError> {
        for i in 0..self.blocks.len() {
            if !self.blocks[i].may_touch(lo, hi) {
                continue;
            }
            let b = self.body(i)?;
            for s in b.slots.iter().filter(|s| s.live()) {
                f(b.seq(s), s.location());
            }
        }
        Ok(())
    }

    /// Keeps the live entries for which `keep` is true (it may change their location), among
    /// the blocks whose slots may point into a segment of `lo..=hi`; other blocks are kept
    /// unread.
    pub fn retain(
        &mut self,
        lo: u32,
        hi: u32,
        mut keep: impl FnMut(&u64, &mut Location) -> bool,
    ) -> Result<(), StoreError> {
        for i in 0..self.blocks.len() {
            if !self.blocks[i].may_touch(lo, hi) {
                continue;
            }
            let b = self.body_mut(i)?;
            let base = b.base;
            b.slots.retain_mut(|s| {
                if !s.live() {
                    return false;
                }
                let mut loc = s.location();
                let kept = keep(&(base + u64::from(s.delta)), &mut loc);
                *s = Slot::new(s.delta, loc);
                kept
            });
            b.live = b.slots.len();
            let range = b.segment_range();
            self.blocks[i].refresh();
            (self.blocks[i].seg_lo, self.blocks[i].seg_hi) = range;
        }
        self.blocks.retain(|b| b.slots > 0);
        self.live = self.blocks.iter().map(|b| b.live as usize).sum();
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Checkpoints.

    /// Bodies in memory that the page file does not have as they are.
    pub(crate) fn unwritten(&self) -> impl Iterator<Item = &Arc<Block>> + '_ {
        self.blocks.iter().filter_map(|r| match &r.body {
            Body::Mem(b) if b.written().is_none() => Some(b),
            _ => None,
        })
    }

    /// The page (and CRC) of every block, `None` for a body not written yet.
    pub(crate) fn pages(&self) -> impl Iterator<Item = Option<(u32, u32)>> + '_ {
        self.blocks.iter().map(|r| match &r.body {
            Body::Mem(b) => b.written(),
            Body::Paged { page, crc } => Some((*page, *crc)),
        })
    }

    /// Turns written bodies into page references, handing the bodies to the page cache.
    /// Returns how many it turned.
    pub(crate) fn demote(&mut self) -> usize {
        let Some(pager) = self.pager.clone() else {
            return 0;
        };
        let mut n = 0;
        for r in self.blocks.iter_mut() {
            let Body::Mem(b) = &r.body else { continue };
            let Some((page, crc)) = b.written() else {
                continue;
            };
            pager.cache_insert(page, crc, b.clone());
            r.body = Body::Paged { page, crc };
            n += 1;
        }
        n
    }

    /// Appends the block directory (every body must have been written).
    pub(crate) fn encode_directory(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for (r, at) in self.blocks.iter().zip(self.pages()) {
            let (page, crc) = at.ok_or_else(|| {
                StoreError::Failed("checkpoint of a block that was not written".into())
            })?;
            out.extend_from_slice(&r.base.to_le_bytes());
            out.extend_from_slice(&r.top.to_le_bytes());
            out.extend_from_slice(&r.slots.to_le_bytes());
            out.extend_from_slice(&r.live.to_le_bytes());
            out.extend_from_slice(&r.seg_lo.to_le_bytes());
            out.extend_from_slice(&r.seg_hi.to_le_bytes());
            out.extend_from_slice(&page.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Ok(())
    }

    /// Reads a block directory back: every block paged. The bodies are checked separately
    /// ([`SeqMap::verify`]).
    pub(crate) fn decode_directory(
        r: &mut Reader<'_>,
        pager: Option<Arc<Pager>>,
    ) -> Result<SeqMap, String> {
        let n = r.u32()? as usize;
        if n > r.remaining() / DIRECTORY_ENTRY_BYTES {
            return Err(format!("{n} blocks, over what the file holds"));
        }
        let mut m = SeqMap::with_pager(pager);
        let mut prev_top: Option<u64> = None;
        for _ in 0..n {
            let base = r.u64()?;
            let top = r.u64()?;
            let slots = r.u32()?;
            let live = r.u32()?;
            let seg_lo = r.u32()?;
            let seg_hi = r.u32()?;
            let page = r.u32()?;
            let crc = r.u32()?;
            if slots == 0
                || slots as usize > BLOCK_SLOTS_MAX
                || live > slots
                || top < base
                || top - base > u64::from(u32::MAX)
                || prev_top.is_some_and(|p| p >= base)
            {
                return Err(format!("block at seq {base}: inconsistent directory entry"));
            }
            prev_top = Some(top);
            m.live += live as usize;
            m.blocks.push_back(BlockRef {
                base,
                top,
                slots,
                live,
                seg_lo,
                seg_hi,
                body: Body::Paged { page, crc },
            });
        }
        Ok(m)
    }

    /// Reads every paged block (bypassing the cache) and checks it against the directory.
    pub(crate) fn verify(&self) -> Result<(), StoreError> {
        let Some(pager) = &self.pager else {
            return Ok(());
        };
        for r in &self.blocks {
            let Body::Paged { page, crc } = r.body else {
                continue;
            };
            let b = pager.read_uncached(page, crc, r.slots as usize)?;
            let top = b.slots.last().map_or(b.base, |s| b.seq(s));
            if b.base != r.base || top != r.top || b.live != r.live as usize {
                return Err(StoreError::Corrupt {
                    location: format!("{} page {page}", crate::journal::pages::PAGES_FILE),
                    reason: "the block does not match its directory entry".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::pages::{Pager, PAGES_FILE};
    use crate::journal::storage::{MemDir, StorageDir};
    use std::collections::BTreeMap;

    fn loc(n: u32) -> Location {
        Location {
            segment: n,
            offset: n,
            len: n,
        }
    }

    fn xorshift() -> impl FnMut() -> u64 {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Writes every unwritten body to fresh pages and demotes them, as a checkpoint would.
    fn checkpoint(m: &mut SeqMap, pager: &Pager, next_page: &mut u32) {
        let bodies: Vec<Arc<Block>> = m.unwritten().cloned().collect();
        for b in bodies {
            let crc = pager.write(*next_page, &b).unwrap();
            b.set_written(Some((*next_page, crc)));
            *next_page += 1;
        }
        m.demote();
    }

    fn random_ops(m: &mut SeqMap, mut on_step: impl FnMut(u32, &mut SeqMap)) {
        let mut next = xorshift();
        let mut r: BTreeMap<u64, Location> = BTreeMap::new();
        let mut top = 0u64;
        for step in 0..200_000u32 {
            match next() % 10 {
                0..=4 => {
                    top += 1 + next() % 3;
                    assert_eq!(m.insert(top, loc(step)).unwrap(), r.insert(top, loc(step)));
                }
                5 => {
                    let s = next() % (top + 2);
                    assert_eq!(m.insert(s, loc(step)).unwrap(), r.insert(s, loc(step)));
                }
                6..=7 => {
                    let s = r.keys().next().copied().unwrap_or(0);
                    assert_eq!(m.remove(&s).unwrap(), r.remove(&s));
                }
                _ => {
                    let s = next() % (top + 2);
                    assert_eq!(m.remove(&s).unwrap(), r.remove(&s));
                }
            }
            assert_eq!(m.len(), r.len());
            if step % 997 == 0 {
                same(m, &r);
                let cut = next() % (top + 2);
                let a: Vec<u64> = m
                    .after(Some(cut), 50)
                    .unwrap()
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
                let b: Vec<u64> = r.range(cut + 1..).map(|(s, _)| *s).take(50).collect();
                assert_eq!(a, b);
                let s = next() % (top + 2);
                assert_eq!(m.get(s).unwrap(), r.get(&s).copied());
            }
            on_step(step, m);
        }
        m.retain(0, u32::MAX, |s, _| s % 2 == 0).unwrap();
        r.retain(|s, _| s % 2 == 0);
        same(m, &r);
    }

    #[test]
    fn behaves_like_a_btreemap_under_random_operations() {
        // A deterministic xorshift drives a mix of appends, out-of-order inserts, removals at
        // the front and in the middle, and replacements; the map must agree with a BTreeMap.
        random_ops(&mut SeqMap::default(), |_, _| {});
    }

    #[test]
    fn behaves_like_a_btreemap_when_its_blocks_are_paged_out_and_back() {
        // The same operations, with a checkpoint-and-demote every 5,000 steps through a cache
        // of two blocks: most blocks are read back from the page file when touched.
        let dir = MemDir::new();
        let pager = Arc::new(Pager::new(dir.open(PAGES_FILE, true).unwrap(), 80_000));
        let mut m = SeqMap::with_pager(Some(pager.clone()));
        let mut next_page = 0;
        let p = pager.clone();
        random_ops(&mut m, |step, m| {
            if step % 5_000 == 4_999 {
                checkpoint(m, &p, &mut next_page);
                assert!(m.resident_blocks() == 0, "every written body was demoted");
            }
        });
        assert!(pager.counters.page_reads.load(Ordering::Relaxed) > 100);
        assert!(pager.cache_bytes() <= 80_000);
    }

    #[test]
    fn consuming_from_the_front_keeps_no_tombstones() {
        let mut m = SeqMap::default();
        for s in 1..=1000 {
            m.insert(s, loc(1)).unwrap();
        }
        for s in 1..=1000 {
            assert!(m.remove(&s).unwrap().is_some());
        }
        assert!(m.is_empty());
        assert_eq!(m.blocks.len(), 0);
    }

    fn same(m: &SeqMap, r: &BTreeMap<u64, Location>) {
        assert_eq!(m.len(), r.len());
        assert_eq!(
            m.entries().unwrap(),
            r.iter().map(|(s, l)| (*s, *l)).collect::<Vec<_>>()
        );
        let live: usize = m.blocks.iter().map(|b| b.live as usize).sum();
        assert_eq!(live, m.len(), "block counts agree");
        for w in m.blocks.iter().collect::<Vec<_>>().windows(2) {
            assert!(w[0].top < w[1].base, "block ranges are disjoint");
        }
        for (i, b) in m.blocks.iter().enumerate() {
            let body = m.body(i).unwrap();
            assert_eq!(b.live as usize, body.live);
            for s in body.slots.iter().filter(|s| s.live()) {
                assert!(
                    b.may_touch(s.segment, s.segment),
                    "segment range covers slots"
                );
            }
        }
    }

    #[test]
    fn sequence_gaps_beyond_a_blocks_range_and_inserts_below_the_first_block() {
        let mut m = SeqMap::default();
        let mut r = BTreeMap::new();
        let big = 1u64 << 33;
        for (i, seq) in [10, big, 5, (1 << 32) + 7, 3, big + 1, 11, (1 << 32) + 10, 1]
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                m.insert(seq, loc(i as u32)).unwrap(),
                r.insert(seq, loc(i as u32))
            );
            same(&m, &r);
        }
        for cut in [0, 4, 10, 11, 1 << 32, big] {
            let a: Vec<u64> = m
                .after(Some(cut), usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            let b: Vec<u64> = r.range(cut + 1..).map(|(s, _)| *s).collect();
            assert_eq!(a, b, "after {cut}");
        }
        for seq in [big, 5, 1, 7] {
            assert_eq!(m.remove(&seq).unwrap(), r.remove(&seq));
            assert_eq!(m.get(seq).unwrap(), None);
            same(&m, &r);
        }
    }

    #[test]
    fn out_of_order_inserts_split_a_block_and_keep_the_order() {
        let mut m = SeqMap::default();
        let mut r = BTreeMap::new();
        for seq in (0..6_000u64).map(|s| s * 2) {
            m.insert(seq, loc(1)).unwrap();
            r.insert(seq, loc(1));
        }
        for seq in (0..6_000u64).rev().map(|s| s * 2 + 1) {
            assert_eq!(m.insert(seq, loc(2)).unwrap(), r.insert(seq, loc(2)));
        }
        same(&m, &r);
        assert!(m.blocks.iter().all(|b| b.slots as usize <= BLOCK_SLOTS_MAX));
        assert_eq!(m.get(4_001).unwrap(), Some(loc(2)));
    }

    #[test]
    fn a_clone_is_a_snapshot_the_original_does_not_change() {
        let mut m = SeqMap::default();
        for seq in 1..=5_000 {
            m.insert(seq, loc(seq as u32)).unwrap();
        }
        let snap = m.clone();
        let before = snap.entries().unwrap();
        for seq in 1..=1_500 {
            m.remove(&seq).unwrap();
        }
        m.insert(2_500, loc(7)).unwrap();
        for seq in 5_001..=6_000 {
            m.insert(seq, loc(9)).unwrap();
        }
        m.retain(0, u32::MAX, |s, _| s % 3 != 0).unwrap();
        assert_eq!(snap.entries().unwrap(), before, "the snapshot is unchanged");
        assert_eq!(snap.len(), 5_000);
        assert_eq!(m.get(2_500).unwrap(), Some(loc(7)));
        // Untouched blocks are still shared, not copied.
        let mut m2 = snap.clone();
        m2.insert(6_000, loc(1)).unwrap();
        let shared = snap
            .blocks
            .iter()
            .zip(m2.blocks.iter())
            .filter(|(a, b)| match (&a.body, &b.body) {
                (Body::Mem(a), Body::Mem(b)) => Arc::ptr_eq(a, b),
                _ => false,
            })
            .count();
        assert_eq!(
            shared,
            snap.blocks.len() - 1,
            "only the last block was copied"
        );
    }

    #[test]
    fn a_change_after_a_checkpoint_unmarks_the_body_and_only_changed_blocks_are_rewritten() {
        let dir = MemDir::new();
        let pager = Arc::new(Pager::new(dir.open(PAGES_FILE, true).unwrap(), 1 << 20));
        let mut m = SeqMap::with_pager(Some(pager.clone()));
        for seq in 1..=10 * BLOCK_MAX as u64 {
            m.insert(seq, loc(1 + (seq / 3000) as u32)).unwrap();
        }
        let mut next_page = 0;
        checkpoint(&mut m, &pager, &mut next_page);
        assert_eq!(next_page, 10);
        assert_eq!(m.unwritten().count(), 0);
        // Consume from the front and append at the back: two blocks change.
        for seq in 1..=100 {
            m.remove(&seq).unwrap();
        }
        m.insert(10 * BLOCK_MAX as u64 + 1, loc(9)).unwrap();
        assert_eq!(m.unwritten().count(), 2);
        checkpoint(&mut m, &pager, &mut next_page);
        assert_eq!(next_page, 12, "two pages written, not eleven");
        // The directory round-trips and every page verifies.
        let mut dirbytes = Vec::new();
        m.encode_directory(&mut dirbytes).unwrap();
        let back =
            SeqMap::decode_directory(&mut Reader::new(&dirbytes), Some(pager.clone())).unwrap();
        back.verify().unwrap();
        assert_eq!(back.entries().unwrap(), m.entries().unwrap());
        // A block visit reads only the blocks whose segment range may match.
        let reads = pager.counters.page_reads.load(Ordering::Relaxed);
        pager.reset();
        let mut n = 0;
        back.visit(9, 9, |_, l| {
            assert_eq!(l.segment, 9);
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            pager.counters.page_reads.load(Ordering::Relaxed),
            reads + 1,
            "one page read for segment 9"
        );
    }
}
