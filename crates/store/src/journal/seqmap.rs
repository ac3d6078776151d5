//! A compact ordered map from sequence number to [`Location`], for a list's live messages.
//!
//! The index holds one entry per stored message, so its size per entry decides the broker's
//! memory for deep queues: a `BTreeMap<u64, Location>` costs about 45 bytes per entry with its
//! node overhead; this sorted `VecDeque` costs 24. It relies on how lists are used: sequence
//! numbers arrive in increasing order (appends at the back), and queues are mostly consumed from
//! the front (removals at the front). A removal elsewhere leaves a tombstone, swept when it
//! reaches either end or when tombstones outnumber live entries, so every operation stays
//! amortized O(log n) or O(1).

use std::collections::VecDeque;

use crate::journal::index::Location;

/// `Location::len` of a removed entry. Real payloads are far smaller (segments are ≤ 1 GiB).
const TOMBSTONE: u32 = u32::MAX;

/// Tombstones are swept once they are at least this many and outnumber live entries.
const SWEEP_MIN: usize = 1024;

/// Live messages of one list, by sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqMap {
    entries: VecDeque<(u64, Location)>,
    live: usize,
}

fn is_live(e: &(u64, Location)) -> bool {
    e.1.len != TOMBSTONE
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

    fn find(&self, seq: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&seq, |e| e.0)
    }

    /// Inserts or replaces; returns the live location it replaced.
    pub fn insert(&mut self, seq: u64, loc: Location) -> Option<Location> {
        debug_assert!(
            loc.len != TOMBSTONE,
            "a payload of u32::MAX bytes cannot be stored"
        );
        match self.entries.back() {
            None => {}
            Some(last) if last.0 < seq => {}
            Some(_) => {
                return match self.find(seq) {
                    Ok(i) => {
                        let old = std::mem::replace(&mut self.entries[i].1, loc);
                        if old.len == TOMBSTONE {
                            self.live += 1;
                            None
                        } else {
                            Some(old)
                        }
                    }
                    Err(i) => {
                        self.entries.insert(i, (seq, loc));
                        self.live += 1;
                        None
                    }
                };
            }
        }
        self.entries.push_back((seq, loc));
        self.live += 1;
        None
    }

    /// The live location of `seq`.
    pub fn get(&self, seq: u64) -> Option<Location> {
        let i = self.find(seq).ok()?;
        Some(self.entries[i].1).filter(|l| l.len != TOMBSTONE)
    }

    /// Removes; returns the live location removed.
    pub fn remove(&mut self, seq: &u64) -> Option<Location> {
        let i = self.find(*seq).ok()?;
        let old = self.entries[i].1;
        if old.len == TOMBSTONE {
            return None;
        }
        self.entries[i].1.len = TOMBSTONE;
        self.live -= 1;
        self.sweep();
        Some(old)
    }

    fn sweep(&mut self) {
        while self.entries.front().is_some_and(|e| !is_live(e)) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|e| !is_live(e)) {
            self.entries.pop_back();
        }
        let dead = self.entries.len() - self.live;
        if dead >= SWEEP_MIN && dead > self.live {
            self.entries.retain(is_live);
            self.entries.shrink_to_fit();
        }
    }

    /// Live entries in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Location)> + '_ {
        self.entries
            .iter()
            .filter(|e| is_live(e))
            .map(|(s, l)| (s, l))
    }

    /// Live locations in sequence order.
    pub fn values(&self) -> impl Iterator<Item = &Location> + '_ {
        self.iter().map(|(_, l)| l)
    }

    /// Live entries with a sequence greater than `after` (all of them for `None`), in order.
    pub fn after(&self, after: Option<u64>) -> impl Iterator<Item = (&u64, &Location)> + '_ {
        let start = match after {
            Some(s) => self.entries.partition_point(|e| e.0 <= s),
            None => 0,
        };
        self.entries
            .range(start..)
            .filter(|e| is_live(e))
            .map(|(s, l)| (s, l))
    }

    /// Keeps the live entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&u64, &mut Location) -> bool) {
        self.entries
            .retain_mut(|(s, l)| l.len != TOMBSTONE && keep(s, l));
        self.live = self.entries.len();
    }
}

impl<'a> IntoIterator for &'a SeqMap {
    type Item = (&'a u64, &'a Location);
    type IntoIter = Box<dyn Iterator<Item = (&'a u64, &'a Location)> + 'a>;

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
                let a: Vec<_> = m.iter().map(|(s, l)| (*s, *l)).collect();
                let b: Vec<_> = r.iter().map(|(s, l)| (*s, *l)).collect();
                assert_eq!(a, b);
                let cut = next() % (top + 2);
                let a: Vec<u64> = m.after(Some(cut)).map(|(s, _)| *s).take(50).collect();
                let b: Vec<u64> = r.range(cut + 1..).map(|(s, _)| *s).take(50).collect();
                assert_eq!(a, b);
            }
        }
        m.retain(|s, _| s % 2 == 0);
        r.retain(|s, _| s % 2 == 0);
        assert_eq!(m.len(), r.len());
        assert!(m.iter().map(|(s, _)| *s).eq(r.keys().copied()));
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
        assert_eq!(m.entries.len(), 0);
    }
}
