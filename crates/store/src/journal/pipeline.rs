//! In-order release of pipelined writes (the journal's direct io_uring path).
//!
//! The direct path keeps several groups' writes in flight; the device may finish them in any
//! order. A group may only be confirmed (applied to the index, its producers answered) once it
//! *and every group before it* are durable: otherwise a power cut could keep a confirmed group
//! while losing an earlier one that recovery needs to reach it (recovery stops at the first
//! gap). [`Pipeline`] is that rule, and nothing else: no I/O, so it is tested on its own with
//! every completion order.
//!
//! Once a write fails, that group and every later one are released as failed, even those whose
//! own write succeeded: the journal has a hole before them. An entry is released only when its
//! own completion arrived, failed or not, because its buffer belongs to the kernel until then.

use std::collections::VecDeque;

use crate::StoreError;

/// One write in flight.
#[derive(Debug)]
struct Entry<T> {
    tag: u64,
    /// `None` until its completion arrives.
    result: Option<Result<(), StoreError>>,
    item: T,
}

/// Writes in journal order, released in that order as they complete.
#[derive(Debug)]
pub(crate) struct Pipeline<T> {
    next_tag: u64,
    entries: VecDeque<Entry<T>>,
    /// The first failure: every entry released after it fails with it.
    failure: Option<StoreError>,
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Pipeline {
            next_tag: 0,
            entries: VecDeque::new(),
            failure: None,
        }
    }
}

impl<T> Pipeline<T> {
    /// Adds the next write in journal order; returns the tag its completion must carry.
    pub(crate) fn push(&mut self, item: T) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.entries.push_back(Entry {
            tag,
            result: None,
            item,
        });
        tag
    }

    /// Writes pushed and not yet released.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight or waiting for an earlier write.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tag of the oldest unreleased write.
    pub(crate) fn first_tag(&self) -> Option<u64> {
        self.entries.front().map(|e| e.tag)
    }

    /// The item of an unreleased write.
    pub(crate) fn get(&self, tag: u64) -> Option<&T> {
        self.entries.iter().find(|e| e.tag == tag).map(|e| &e.item)
    }

    /// Records the completion of write `tag` and returns every write now releasable, in journal
    /// order, each with its outcome: `Ok` only when it and every earlier write succeeded. An
    /// unknown or repeated tag releases nothing.
    pub(crate) fn complete(
        &mut self,
        tag: u64,
        result: Result<(), StoreError>,
    ) -> Vec<(T, Result<(), StoreError>)> {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.tag == tag && e.result.is_none())
        {
            e.result = Some(result);
        }
        let mut released = Vec::new();
        while self.entries.front().is_some_and(|e| e.result.is_some()) {
            let Some(Entry { result, item, .. }) = self.entries.pop_front() else {
                break;
            };
            let outcome = match (&self.failure, result) {
                (Some(first), _) => Err(first.clone()),
                (None, Some(Err(e))) => {
                    self.failure = Some(e.clone());
                    Err(e)
                }
                (None, _) => Ok(()),
            };
            released.push((item, outcome));
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(what: &str) -> StoreError {
        StoreError::Failed(what.to_owned())
    }

    /// A small deterministic generator (xorshift) for completion orders.
    fn shuffle(v: &mut [u64], seed: u64) {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }

    #[test]
    fn a_later_write_is_held_until_every_earlier_one_completes() {
        let mut p = Pipeline::default();
        let a = p.push("a");
        let b = p.push("b");
        let c = p.push("c");
        assert!(p.complete(c, Ok(())).is_empty(), "c waits for a and b");
        assert!(p.complete(b, Ok(())).is_empty(), "b waits for a");
        let released: Vec<_> = p.complete(a, Ok(())).into_iter().map(|r| r.0).collect();
        assert_eq!(released, ["a", "b", "c"]);
        assert!(p.is_empty());
    }

    #[test]
    fn every_completion_order_releases_in_journal_order_exactly_once() {
        for seed in 0..500u64 {
            let mut p = Pipeline::default();
            let n = 1 + seed % 17;
            let mut tags: Vec<u64> = (0..n).map(|i| p.push(i)).collect();
            shuffle(&mut tags, seed);
            let mut released = Vec::new();
            for (k, &t) in tags.iter().enumerate() {
                // Interleave new submissions with completions, as the writer does.
                if k == tags.len() / 2 {
                    let extra = p.push(n);
                    assert!(p.get(extra).is_some());
                    released.extend(p.complete(extra, Ok(())));
                }
                for (item, outcome) in p.complete(t, Ok(())) {
                    assert!(outcome.is_ok());
                    released.push((item, Ok(())));
                }
            }
            let order: Vec<u64> = released.iter().map(|r| r.0).collect();
            assert_eq!(order, (0..=n).collect::<Vec<_>>(), "seed {seed}");
            assert!(p.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn a_failed_write_fails_itself_and_every_later_one_even_if_they_succeeded() {
        for seed in 0..200u64 {
            let mut p = Pipeline::default();
            let n = 2 + seed % 9;
            let failing = seed % n;
            let mut tags: Vec<u64> = (0..n).map(|i| p.push(i)).collect();
            shuffle(&mut tags, seed);
            let mut released = Vec::new();
            for &t in &tags {
                let r = if t == failing {
                    Err(err("disk"))
                } else {
                    Ok(())
                };
                released.extend(p.complete(t, r));
            }
            assert_eq!(released.len() as u64, n, "seed {seed}");
            for (item, outcome) in released {
                assert_eq!(outcome.is_ok(), item < failing, "seed {seed} item {item}");
            }
            // Later writes fail too, whatever their own result.
            let late = p.push(99);
            let r = p.complete(late, Ok(()));
            assert!(r[0].1.is_err());
        }
    }

    #[test]
    fn an_unknown_or_repeated_completion_releases_nothing() {
        let mut p = Pipeline::default();
        let a = p.push(1);
        let b = p.push(2);
        assert!(p.complete(77, Ok(())).is_empty());
        assert!(p.complete(b, Ok(())).is_empty());
        assert!(p.complete(b, Err(err("again"))).is_empty());
        let r = p.complete(a, Ok(()));
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(_, o)| o.is_ok()), "b's repeat did not count");
        assert_eq!(p.len(), 0);
    }
}
