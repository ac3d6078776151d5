//! Duplicate detection (Artemis's duplicate-id cache, the job of ActiveMQ's producer audit).
//!
//! A message that carries `_AMQ_DUPL_ID` (ferromq-client sets it to `<producer-id>:<seq>` on
//! every message; any STOMP client may set it) is remembered per destination, up to
//! `id_cache_size` ids. A second message with a remembered id — typically the resend of a
//! message whose RECEIPT was lost in a failover — is acknowledged to its producer but neither
//! stored nor delivered again.
//!
//! The cache of a persistent message's destination is itself persisted, through the ordinary
//! store seam: each id is an `Enqueue` on the list `dupids://<destination key>` in the same atomic
//! batch as the message, and evicting an id is a `Dequeue`. A new master recovering the store
//! therefore knows every id the old master confirmed — including those of messages already
//! consumed and acknowledged, which is exactly when a resend would otherwise be delivered twice.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use ferromq_store::{Batch, Op};
use parking_lot::Mutex;

/// The header that names a message's duplicate id (Artemis's name, honoured for every client).
pub const DUPLICATE_ID_HEADER: &str = "_AMQ_DUPL_ID";
/// The store list prefix for persisted id caches.
pub const DUP_LIST_PREFIX: &str = "dupids://";

#[derive(Debug, Default)]
struct DestCache {
    ids: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
    next_seq: u64,
}

/// Per-destination caches of recently seen duplicate ids.
#[derive(Debug)]
pub struct DupCache {
    size: usize,
    dests: Mutex<HashMap<String, DestCache>>,
}

/// What [`DupCache::check`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum DupVerdict {
    /// First time: the id is now remembered (and `ops` persist it, if any were added).
    New,
    /// Seen before: drop the message, acknowledge the producer.
    Duplicate,
}

impl DupCache {
    /// Caches of `size` ids per destination; 0 disables duplicate detection.
    pub fn new(size: usize) -> DupCache {
        DupCache {
            size,
            dests: Mutex::new(HashMap::new()),
        }
    }

    /// Whether detection is on.
    pub fn enabled(&self) -> bool {
        self.size > 0
    }

    /// Checks `id` for destination `dest_key` and remembers it. When `persist` is set, appends
    /// to `batch` the ops that store the id (and evict the oldest), to be submitted atomically
    /// with the message.
    pub fn check(&self, dest_key: &str, id: &str, persist: bool, batch: &mut Batch) -> DupVerdict {
        if self.size == 0 {
            return DupVerdict::New;
        }
        let mut dests = self.dests.lock();
        let d = dests.entry(dest_key.to_string()).or_default();
        if d.ids.contains_key(id) {
            return DupVerdict::Duplicate;
        }
        d.next_seq += 1;
        let seq = d.next_seq;
        let list = format!("{DUP_LIST_PREFIX}{dest_key}");
        if persist {
            batch.push(Op::Enqueue {
                list: list.clone(),
                seq,
                payload: Bytes::copy_from_slice(id.as_bytes()),
            });
        }
        d.ids.insert(id.to_string(), seq);
        d.order.push_back((seq, id.to_string()));
        while d.order.len() > self.size {
            if let Some((old_seq, old_id)) = d.order.pop_front() {
                d.ids.remove(&old_id);
                // Dequeuing an id that was never stored (non-persistent) is a no-op.
                batch.push(Op::Dequeue {
                    list: list.clone(),
                    seq: old_seq,
                });
            }
        }
        DupVerdict::New
    }

    /// Recovery: remembers an id read back from the store.
    pub fn restore(&self, dest_key: &str, seq: u64, id: String) {
        let mut dests = self.dests.lock();
        let d = dests.entry(dest_key.to_string()).or_default();
        d.next_seq = d.next_seq.max(seq);
        d.ids.insert(id.clone(), seq);
        d.order.push_back((seq, id));
    }

    /// Recovery: keeps ids in order and trims to the cache size, returning the ops that drop
    /// the trimmed ones from the store.
    pub fn finish_restore(&self) -> Batch {
        let mut batch = Batch::new();
        let mut dests = self.dests.lock();
        for (key, d) in dests.iter_mut() {
            d.order.make_contiguous().sort_by_key(|(s, _)| *s);
            while d.order.len() > self.size.max(1) {
                if let Some((seq, id)) = d.order.pop_front() {
                    d.ids.remove(&id);
                    batch.push(Op::Dequeue {
                        list: format!("{DUP_LIST_PREFIX}{key}"),
                        seq,
                    });
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_sight_of_an_id_is_a_duplicate_and_eviction_forgets_the_oldest() {
        let c = DupCache::new(2);
        let mut b = Batch::new();
        assert_eq!(c.check("queue://q", "a", true, &mut b), DupVerdict::New);
        assert_eq!(
            c.check("queue://q", "a", true, &mut b),
            DupVerdict::Duplicate
        );
        assert_eq!(
            c.check("queue://other", "a", true, &mut b),
            DupVerdict::New,
            "per destination"
        );
        assert_eq!(c.check("queue://q", "b", true, &mut b), DupVerdict::New);
        assert_eq!(c.check("queue://q", "c", true, &mut b), DupVerdict::New);
        // "a" was evicted from queue://q's cache of 2.
        assert_eq!(c.check("queue://q", "a", false, &mut b), DupVerdict::New);
        assert!(b
            .iter()
            .any(|op| matches!(op, Op::Dequeue { list, seq: 1 } if list == "dupids://queue://q")));
    }

    #[test]
    fn disabled_cache_lets_everything_through() {
        let c = DupCache::new(0);
        let mut b = Batch::new();
        assert_eq!(c.check("queue://q", "a", true, &mut b), DupVerdict::New);
        assert_eq!(c.check("queue://q", "a", true, &mut b), DupVerdict::New);
        assert!(b.is_empty());
    }

    #[test]
    fn restored_ids_are_duplicates() {
        let c = DupCache::new(10);
        c.restore("queue://q", 7, "x".into());
        assert!(c.finish_restore().is_empty());
        let mut b = Batch::new();
        assert_eq!(
            c.check("queue://q", "x", true, &mut b),
            DupVerdict::Duplicate
        );
        assert_eq!(c.check("queue://q", "y", true, &mut b), DupVerdict::New);
        assert!(
            matches!(&b[0], Op::Enqueue { seq: 8, .. }),
            "seqs continue after recovery"
        );
    }
}
