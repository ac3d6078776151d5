//! A compact ordered map from sequence number to [`Location`], for a list's live messages.
//!
//! The index holds one entry per stored message, so its size per entry decides the broker's
//! memory for deep queues, and the checkpoint and GC take a snapshot of it every few seconds on
//! the writer thread. Entries live in **blocks** of up to [`BLOCK_MAX`] slots of 16 bytes (the
//! sequence as an offset from the block's base, segment, offset, length), each behind an `Arc`:
//!
//! - memory is 16 bytes per message plus one partly filled block per list — no doubling of a
//!   whole list's buffer (the sorted `VecDeque` of 24-byte entries this replaces held up to 48
//!   bytes per message after a growth step);
//! - cloning the map (a snapshot) copies one pointer per block, and the writer copies a block
//!   only when it changes one that a snapshot still holds (`Arc::make_mut`): a snapshot of ten
//!   million messages costs about ten thousand pointer copies, not a 240 MB copy.
//!
//! It relies on how lists are used: sequence numbers arrive in increasing order (appends to the
//! last block), and queues are mostly consumed from the front (removals at the front of the first
//! block). A removal elsewhere leaves a tombstone, compacted within its block when tombstones
//! outnumber its live slots; an emptied block is dropped. Every operation is O(log n) plus
//! O(`BLOCK_MAX`) at worst.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::journal::index::Location;

/// Slots per block before a new block is started at the back (an out-of-order insert may grow
/// a block to twice this; then it is split).
const BLOCK_MAX: usize = 1024;

/// `Slot::len` of a removed entry. Real payloads are far smaller (segments are ≤ 1 GiB).
const TOMBSTONE: u32 = u32::MAX;

/// A block's tombstones are compacted once they are at least this many and outnumber its live
/// slots.
const SWEEP_MIN: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Sequence minus the block's base.
    delta: u32,
    segment: u32,
    offset: u32,
    len: u32,
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

    fn live(&self) -> bool {
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
#[derive(Debug, Clone)]
struct Block {
    base: u64,
    slots: Vec<Slot>,
    live: usize,
}

impl Block {
    fn new(base: u64) -> Block {
        Block {
            base,
            slots: Vec::new(),
            live: 0,
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
}

/// Live messages of one list, by sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqMap {
    blocks: VecDeque<Arc<Block>>,
    live: usize,
}

impl SeqMap {
    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No live entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The block whose range holds `seq`: the last one with `base <= seq`.
    fn block_of(&self, seq: u64) -> Option<usize> {
        self.blocks
            .partition_point(|b| b.base <= seq)
            .checked_sub(1)
    }

    /// Inserts or replaces; returns the live location it replaced.
    pub fn insert(&mut self, seq: u64, loc: Location) -> Option<Location> {
        debug_assert!(
            loc.len != TOMBSTONE,
            "a payload of u32::MAX bytes cannot be stored"
        );
        let newest = self
            .blocks
            .back()
            .and_then(|b| b.slots.last().map(|s| b.seq(s)));
        if newest.is_none_or(|n| n < seq) {
            // The common case: a new highest sequence, appended to the last block or, when it
            // is full or out of its range, to a new one.
            let room = self.blocks.back().and_then(|b| {
                let d = u32::try_from(seq - b.base).ok()?;
                (b.slots.len() < BLOCK_MAX).then_some(d)
            });
            match (room, self.blocks.back_mut()) {
                (Some(d), Some(last)) => {
                    let b = Arc::make_mut(last);
                    b.slots.push(Slot::new(d, loc));
                    b.live += 1;
                }
                _ => {
                    let mut b = Block::new(seq);
                    b.slots.push(Slot::new(0, loc));
                    b.live = 1;
                    self.blocks.push_back(Arc::new(b));
                }
            }
            self.live += 1;
            return None;
        }
        let i = match self.block_of(seq) {
            Some(i) => i,
            None => {
                self.blocks.push_front(Arc::new(Block::new(seq)));
                0
            }
        };
        let pos = self.blocks[i].find(seq);
        let Ok(delta) = u32::try_from(seq - self.blocks[i].base) else {
            // Beyond the block's range (every slot of it is below `seq`): a block of its own,
            // still below the next block's base.
            let mut b = Block::new(seq);
            b.slots.push(Slot::new(0, loc));
            b.live = 1;
            self.blocks.insert(i + 1, Arc::new(b));
            self.live += 1;
            return None;
        };
        let b = Arc::make_mut(&mut self.blocks[i]);
        match pos {
            Ok(k) => {
                let old = std::mem::replace(&mut b.slots[k], Slot::new(delta, loc));
                if old.live() {
                    return Some(old.location());
                }
                b.live += 1;
            }
            Err(k) => {
                b.slots.insert(k, Slot::new(delta, loc));
                b.live += 1;
                if b.slots.len() > 2 * BLOCK_MAX {
                    self.split(i);
                }
            }
        }
        self.live += 1;
        None
    }

    /// Splits an oversized block in two halves.
    fn split(&mut self, i: usize) {
        let b = Arc::make_mut(&mut self.blocks[i]);
        let mid = b.slots.len() / 2;
        let upper: Vec<Slot> = b.slots.drain(mid..).collect();
        let first = upper[0].delta;
        let mut nb = Block::new(b.base + u64::from(first));
        for s in upper {
            if s.live() {
                b.live -= 1;
                nb.live += 1;
            }
            nb.slots.push(Slot {
                delta: s.delta - first,
                ..s
            });
        }
        self.blocks.insert(i + 1, Arc::new(nb));
    }

    /// The live location of `seq`.
    pub fn get(&self, seq: u64) -> Option<Location> {
        let b = &self.blocks[self.block_of(seq)?];
        let s = b.slots[b.find(seq).ok()?];
        s.live().then(|| s.location())
    }

    /// Removes; returns the live location removed.
    pub fn remove(&mut self, seq: &u64) -> Option<Location> {
        let i = self.block_of(*seq)?;
        let k = self.blocks[i].find(*seq).ok()?;
        if !self.blocks[i].slots[k].live() {
            return None;
        }
        let b = Arc::make_mut(&mut self.blocks[i]);
        let old = b.slots[k].location();
        b.slots[k].len = TOMBSTONE;
        b.live -= 1;
        b.sweep();
        if b.slots.is_empty() {
            self.blocks.remove(i);
        }
        self.live -= 1;
        Some(old)
    }

    /// Live entries in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Location)> + '_ {
        self.after(None)
    }

    /// Live locations in sequence order.
    pub fn values(&self) -> impl Iterator<Item = Location> + '_ {
        self.iter().map(|(_, l)| l)
    }

    /// Live entries with a sequence greater than `after` (all of them for `None`), in order.
    pub fn after(&self, after: Option<u64>) -> impl Iterator<Item = (u64, Location)> + '_ {
        let (first, skip) = match after.and_then(|s| Some((s, self.block_of(s)?))) {
            None => (0, 0),
            Some((s, i)) => {
                let b = &self.blocks[i];
                (i, b.slots.partition_point(|x| b.seq(x) <= s))
            }
        };
        self.blocks
            .range(first..)
            .enumerate()
            .flat_map(move |(n, b)| {
                let from = if n == 0 { skip } else { 0 };
                b.slots[from..]
                    .iter()
                    .filter(|s| s.live())
                    .map(move |s| (b.seq(s), s.location()))
            })
    }

    /// Keeps the live entries for which `keep` is true (it may change their location).
    pub fn retain(&mut self, mut keep: impl FnMut(&u64, &mut Location) -> bool) {
        let mut live = 0;
        for block in self.blocks.iter_mut() {
            let b = Arc::make_mut(block);
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
            live += b.live;
        }
        self.blocks.retain(|b| !b.slots.is_empty());
        self.live = live;
    }
}

impl<'a> IntoIterator for &'a SeqMap {
    type Item = (u64, Location);
    type IntoIter = Box<dyn Iterator<Item = (u64, Location)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn loc(n: u32) -> Location {
        Location {
            segment: n,
            offset: n,
            len: n,
        }
    }

    #[test]
    fn behaves_like_a_btreemap_under_random_operations() {
        // A deterministic xorshift drives a mix of appends, out-of-order inserts, removals at
        // the front and in the middle, and replacements; the map must agree with a BTreeMap.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut m = SeqMap::default();
        let mut r: BTreeMap<u64, Location> = BTreeMap::new();
        let mut top = 0u64;
        for step in 0..200_000u32 {
            match next() % 10 {
                0..=4 => {
                    top += 1 + next() % 3;
                    assert_eq!(m.insert(top, loc(step)), r.insert(top, loc(step)));
                }
                5 => {
                    let s = next() % (top + 2);
                    assert_eq!(m.insert(s, loc(step)), r.insert(s, loc(step)));
                }
                6..=7 => {
                    let s = r.keys().next().copied().unwrap_or(0);
                    assert_eq!(m.remove(&s), r.remove(&s));
                }
                _ => {
                    let s = next() % (top + 2);
                    assert_eq!(m.remove(&s), r.remove(&s));
                }
            }
            assert_eq!(m.len(), r.len());
            if step % 997 == 0 {
                let a: Vec<_> = m.iter().collect();
                let b: Vec<_> = r.iter().map(|(s, l)| (*s, *l)).collect();
                assert_eq!(a, b);
                let cut = next() % (top + 2);
                let a: Vec<u64> = m.after(Some(cut)).map(|(s, _)| s).take(50).collect();
                let b: Vec<u64> = r.range(cut + 1..).map(|(s, _)| *s).take(50).collect();
                assert_eq!(a, b);
            }
        }
        m.retain(|s, _| s % 2 == 0);
        r.retain(|s, _| s % 2 == 0);
        assert_eq!(m.len(), r.len());
        assert!(m.iter().map(|(s, _)| s).eq(r.keys().copied()));
    }

    #[test]
    fn consuming_from_the_front_keeps_no_tombstones() {
        let mut m = SeqMap::default();
        for s in 1..=1000 {
            m.insert(s, loc(1));
        }
        for s in 1..=1000 {
            assert!(m.remove(&s).is_some());
        }
        assert!(m.is_empty());
        assert_eq!(m.blocks.len(), 0);
    }

    fn same(m: &SeqMap, r: &BTreeMap<u64, Location>) {
        assert_eq!(m.len(), r.len());
        assert!(m.iter().eq(r.iter().map(|(s, l)| (*s, *l))));
        let live: usize = m.blocks.iter().map(|b| b.live).sum();
        assert_eq!(live, m.len(), "block counts agree");
        for w in m.blocks.iter().collect::<Vec<_>>().windows(2) {
            let top = w[0].slots.last().map(|s| w[0].seq(s));
            assert!(
                top.is_some_and(|t| t < w[1].base),
                "block ranges are disjoint"
            );
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
            assert_eq!(m.insert(seq, loc(i as u32)), r.insert(seq, loc(i as u32)));
            same(&m, &r);
        }
        for cut in [0, 4, 10, 11, 1 << 32, big] {
            let a: Vec<u64> = m.after(Some(cut)).map(|(s, _)| s).collect();
            let b: Vec<u64> = r.range(cut + 1..).map(|(s, _)| *s).collect();
            assert_eq!(a, b, "after {cut}");
        }
        for seq in [big, 5, 1, 7] {
            assert_eq!(m.remove(&seq), r.remove(&seq));
            assert_eq!(m.get(seq), None);
            same(&m, &r);
        }
    }

    #[test]
    fn out_of_order_inserts_split_a_block_and_keep_the_order() {
        let mut m = SeqMap::default();
        let mut r = BTreeMap::new();
        for seq in (0..6_000u64).map(|s| s * 2) {
            m.insert(seq, loc(1));
            r.insert(seq, loc(1));
        }
        for seq in (0..6_000u64).rev().map(|s| s * 2 + 1) {
            assert_eq!(m.insert(seq, loc(2)), r.insert(seq, loc(2)));
        }
        same(&m, &r);
        assert!(m.blocks.iter().all(|b| b.slots.len() <= 2 * BLOCK_MAX));
        assert_eq!(m.get(4_001), Some(loc(2)));
    }

    #[test]
    fn a_clone_is_a_snapshot_the_original_does_not_change() {
        let mut m = SeqMap::default();
        for seq in 1..=5_000 {
            m.insert(seq, loc(seq as u32));
        }
        let snap = m.clone();
        let before: Vec<(u64, Location)> = snap.iter().collect();
        for seq in 1..=1_500 {
            m.remove(&seq);
        }
        m.insert(2_500, loc(7));
        for seq in 5_001..=6_000 {
            m.insert(seq, loc(9));
        }
        m.retain(|s, _| s % 3 != 0);
        assert!(
            snap.iter().eq(before.into_iter()),
            "the snapshot is unchanged"
        );
        assert_eq!(snap.len(), 5_000);
        assert_eq!(m.get(2_500), Some(loc(7)));
        // Untouched blocks are still shared, not copied.
        let mut m2 = snap.clone();
        m2.insert(6_000, loc(1));
        let shared = snap
            .blocks
            .iter()
            .zip(m2.blocks.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(
            shared,
            snap.blocks.len() - 1,
            "only the last block was copied"
        );
    }
}
