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
//!
//! An id is only as good as the write that stores it. A new id is *pending* until that write
//! settles ([`DupCache::settle`]): a resend arriving meanwhile is not confirmed at once but gets
//! the original write's outcome — a RECEIPT once the original is durable, an ERROR if it failed.
//! A failed write's id is forgotten, so the producer's next resend is stored as new. (The resend
//! that waited fails rather than being stored in its place: the store that failed the original
//! refuses every later write until reopened anyway, and storing it late would put it behind
//! messages its producer sent after it.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use ferromq_store::{Batch, Completer, Completion, Op, StoreError};
use parking_lot::Mutex;

/// The header that names a message's duplicate id (Artemis's name, honoured for every client).
pub const DUPLICATE_ID_HEADER: &str = "_AMQ_DUPL_ID";
/// The store list prefix for persisted id caches.
pub const DUP_LIST_PREFIX: &str = "dupids://";
/// Resends that may wait at once for one original whose write is in flight. A producer resends
/// after a lost receipt, once per failover; more than this is a client in a loop, refused rather
/// than remembered without bound.
pub const DUP_WAITERS_PER_ID_MAX: usize = 64;

/// The write of an original message, as its resends see it while it is in flight.
#[derive(Debug)]
enum WriteState {
    /// In flight: the resends waiting for its outcome.
    Waiting(Vec<Completer>),
    /// Settled. Settling updates the cache entry under the same lock, so no resend should find
    /// this; one that did would still get the original's outcome.
    Done(Result<(), StoreError>),
}

/// Shared between a cache entry and the [`DupToken`] of the write, so that an entry evicted
/// while its write is in flight still answers the resends that wait on it.
#[derive(Debug)]
struct PendingWrite(Mutex<WriteState>);

impl PendingWrite {
    /// A completion carrying this write's outcome. The caller has checked the waiter limit.
    fn wait(&self) -> Completion {
        let mut st = self.0.lock();
        match &mut *st {
            WriteState::Waiting(waiters) => {
                let (completer, completion) = Completion::pair();
                waiters.push(completer);
                completion
            }
            WriteState::Done(r) => Completion::ready(r.clone()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// `Some` until the write that stores the id (with its message) is durable.
    pending: Option<Arc<PendingWrite>>,
}

#[derive(Debug, Default)]
struct DestCache {
    ids: HashMap<String, Entry>,
    order: VecDeque<(u64, String)>,
    next_seq: u64,
}

/// Per-destination caches of recently seen duplicate ids.
#[derive(Debug)]
pub struct DupCache {
    size: usize,
    dests: Mutex<HashMap<String, DestCache>>,
}

/// One id to check: a message's duplicate id on its destination.
#[derive(Debug)]
pub struct DupKey<'a> {
    /// The destination's key (`queue://orders`).
    pub dest_key: String,
    /// The `_AMQ_DUPL_ID` value.
    pub id: &'a str,
    /// Whether the id is persisted with its message (persistent, non-temporary).
    pub persist: bool,
}

/// Ties a newly remembered id to the write that stores its message. The broker hands it back to
/// [`DupCache::settle`] with that write's outcome; until then resends of the id wait.
#[derive(Debug)]
#[must_use = "an unsettled token leaves its id pending and its resends waiting"]
pub struct DupToken {
    dest_key: String,
    id: String,
    seq: u64,
    write: Arc<PendingWrite>,
}

/// What [`DupCache::check`] decided for one id.
#[derive(Debug)]
pub enum DupVerdict {
    /// First time: the id is remembered as pending (and `batch` persists it, if asked). Settle
    /// the token once the write is known durable or failed.
    New(DupToken),
    /// Seen before and durable (or earlier in the same check, which shares the caller's write):
    /// drop the message, acknowledge the producer.
    Duplicate,
    /// The original's write is in flight: drop the message and acknowledge the producer when,
    /// and only if, this completion resolves `Ok` — it carries the original write's outcome.
    InFlight(Completion),
}

/// Too many resends already wait for one original (see [`DUP_WAITERS_PER_ID_MAX`]).
#[derive(Debug)]
pub struct TooManyWaiters {
    /// The duplicate id.
    pub id: String,
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

    /// Checks every id of `keys` and remembers the new ones, all under one lock: either every
    /// verdict is returned or, when a resend would exceed its waiter limit, nothing changed.
    /// Appends to `batch` the ops that persist the new ids marked `persist` (and evict the
    /// oldest), to be submitted atomically with the messages.
    pub fn check(
        &self,
        keys: &[DupKey<'_>],
        batch: &mut Batch,
    ) -> Result<Vec<DupVerdict>, TooManyWaiters> {
        if self.size == 0 {
            return Ok(Vec::new());
        }
        let mut dests = self.dests.lock();
        // First pass, changing nothing: may every resend of an in-flight id wait?
        for k in keys {
            let pending = dests
                .get(&k.dest_key)
                .and_then(|d| d.ids.get(k.id))
                .and_then(|e| e.pending.as_ref());
            if let Some(w) = pending {
                if let WriteState::Waiting(waiters) = &*w.0.lock() {
                    if waiters.len() >= DUP_WAITERS_PER_ID_MAX {
                        return Err(TooManyWaiters {
                            id: k.id.to_string(),
                        });
                    }
                }
            }
        }
        let mut verdicts = Vec::with_capacity(keys.len());
        let mut added: HashSet<(&str, &str)> = HashSet::new();
        for k in keys {
            if added.contains(&(k.dest_key.as_str(), k.id)) {
                verdicts.push(DupVerdict::Duplicate);
                continue;
            }
            // A repeat later in the same check is covered by the verdict of the first.
            added.insert((k.dest_key.as_str(), k.id));
            let d = dests.entry(k.dest_key.clone()).or_default();
            verdicts.push(match d.ids.get(k.id) {
                Some(Entry { pending: None, .. }) => DupVerdict::Duplicate,
                Some(Entry {
                    pending: Some(w), ..
                }) => DupVerdict::InFlight(w.wait()),
                None => DupVerdict::New(self.remember(d, k, batch)),
            });
        }
        Ok(verdicts)
    }

    fn remember(&self, d: &mut DestCache, k: &DupKey<'_>, batch: &mut Batch) -> DupToken {
        d.next_seq += 1;
        let seq = d.next_seq;
        let list = format!("{DUP_LIST_PREFIX}{}", k.dest_key);
        if k.persist {
            batch.push(Op::Enqueue {
                list: list.clone(),
                seq,
                payload: Bytes::copy_from_slice(k.id.as_bytes()),
            });
        }
        let write = Arc::new(PendingWrite(Mutex::new(WriteState::Waiting(Vec::new()))));
        d.ids.insert(
            k.id.to_string(),
            Entry {
                seq,
                pending: Some(write.clone()),
            },
        );
        d.order.push_back((seq, k.id.to_string()));
        while d.order.len() > self.size {
            if let Some((old_seq, old_id)) = d.order.pop_front() {
                // An evicted id whose write is in flight keeps answering its waiters through
                // the token; only the cache forgets it.
                d.ids.remove(&old_id);
                // Dequeuing an id that was never stored (non-persistent) is a no-op.
                batch.push(Op::Dequeue {
                    list: list.clone(),
                    seq: old_seq,
                });
            }
        }
        DupToken {
            dest_key: k.dest_key.clone(),
            id: k.id.to_string(),
            seq,
            write,
        }
    }

    /// The write that stores `token`'s id finished. On success the id becomes an ordinary
    /// duplicate; on failure it is forgotten (nothing was stored, so a resend is new). Either
    /// way the resends that waited get the same outcome as the original.
    pub fn settle(&self, token: DupToken, result: &Result<(), StoreError>) {
        let waiters = {
            let mut dests = self.dests.lock();
            if let Some(d) = dests.get_mut(&token.dest_key) {
                let ours = d.ids.get(&token.id).is_some_and(|e| e.seq == token.seq);
                if ours {
                    if result.is_ok() {
                        if let Some(e) = d.ids.get_mut(&token.id) {
                            e.pending = None;
                        }
                    } else {
                        d.ids.remove(&token.id);
                        d.order.retain(|(s, _)| *s != token.seq);
                    }
                }
            }
            // Under the cache lock, so no resend can start waiting after the outcome is out.
            std::mem::replace(&mut *token.write.0.lock(), WriteState::Done(result.clone()))
        };
        if let WriteState::Waiting(waiters) = waiters {
            for w in waiters {
                w.complete(result.clone());
            }
        }
    }

    /// Recovery: remembers an id read back from the store.
    pub fn restore(&self, dest_key: &str, seq: u64, id: String) {
        let mut dests = self.dests.lock();
        let d = dests.entry(dest_key.to_string()).or_default();
        d.next_seq = d.next_seq.max(seq);
        d.ids.insert(id.clone(), Entry { seq, pending: None });
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

    fn key(dest: &str, id: &'static str, persist: bool) -> DupKey<'static> {
        DupKey {
            dest_key: dest.to_string(),
            id,
            persist,
        }
    }

    /// Checks one id; a new one is settled as durable at once.
    fn check_durable(c: &DupCache, dest: &str, id: &'static str, b: &mut Batch) -> &'static str {
        let mut v = c.check(&[key(dest, id, true)], b).unwrap();
        match v.pop() {
            Some(DupVerdict::New(t)) => {
                c.settle(t, &Ok(()));
                "new"
            }
            Some(DupVerdict::Duplicate) => "duplicate",
            Some(DupVerdict::InFlight(_)) => "in flight",
            None => "disabled",
        }
    }

    #[test]
    fn second_sight_of_an_id_is_a_duplicate_and_eviction_forgets_the_oldest() {
        let c = DupCache::new(2);
        let mut b = Batch::new();
        assert_eq!(check_durable(&c, "queue://q", "a", &mut b), "new");
        assert_eq!(check_durable(&c, "queue://q", "a", &mut b), "duplicate");
        assert_eq!(
            check_durable(&c, "queue://other", "a", &mut b),
            "new",
            "per destination"
        );
        assert_eq!(check_durable(&c, "queue://q", "b", &mut b), "new");
        assert_eq!(check_durable(&c, "queue://q", "c", &mut b), "new");
        // "a" was evicted from queue://q's cache of 2.
        assert_eq!(check_durable(&c, "queue://q", "a", &mut b), "new");
        assert!(b
            .iter()
            .any(|op| matches!(op, Op::Dequeue { list, seq: 1 } if list == "dupids://queue://q")));
    }

    #[test]
    fn disabled_cache_lets_everything_through() {
        let c = DupCache::new(0);
        let mut b = Batch::new();
        assert_eq!(check_durable(&c, "queue://q", "a", &mut b), "disabled");
        assert_eq!(check_durable(&c, "queue://q", "a", &mut b), "disabled");
        assert!(b.is_empty());
    }

    #[test]
    fn restored_ids_are_duplicates() {
        let c = DupCache::new(10);
        c.restore("queue://q", 7, "x".into());
        assert!(c.finish_restore().is_empty());
        let mut b = Batch::new();
        assert_eq!(check_durable(&c, "queue://q", "x", &mut b), "duplicate");
        assert_eq!(check_durable(&c, "queue://q", "y", &mut b), "new");
        assert!(
            matches!(&b[0], Op::Enqueue { seq: 8, .. }),
            "seqs continue after recovery"
        );
    }

    #[test]
    fn a_resend_of_a_pending_id_gets_the_outcome_of_its_original_write() {
        let c = DupCache::new(10);
        let mut b = Batch::new();
        let Ok(mut v) = c.check(&[key("queue://q", "x", true)], &mut b) else {
            panic!("refused")
        };
        let Some(DupVerdict::New(token)) = v.pop() else {
            panic!("not new")
        };
        let Ok(mut v) = c.check(&[key("queue://q", "x", true)], &mut b) else {
            panic!("refused")
        };
        let Some(DupVerdict::InFlight(waiter)) = v.pop() else {
            panic!("a resend of a pending id did not wait")
        };
        c.settle(token, &Err(StoreError::Closed));
        assert!(waiter.wait_blocking().is_err());
        assert_eq!(
            check_durable(&c, "queue://q", "x", &mut b),
            "new",
            "a failed id must be forgotten"
        );
    }

    #[test]
    fn waiters_are_bounded_and_a_refused_check_changes_nothing() {
        let c = DupCache::new(10);
        let mut b = Batch::new();
        let mut v = c.check(&[key("queue://q", "x", true)], &mut b).unwrap();
        let Some(DupVerdict::New(token)) = v.pop() else {
            panic!("not new")
        };
        let mut waiters = Vec::new();
        for _ in 0..DUP_WAITERS_PER_ID_MAX {
            waiters.extend(c.check(&[key("queue://q", "x", true)], &mut b).unwrap());
        }
        let before = b.len();
        let refused = c.check(
            &[key("queue://q", "fresh", true), key("queue://q", "x", true)],
            &mut b,
        );
        assert!(refused.is_err());
        assert_eq!(b.len(), before, "a refused check wrote ops");
        c.settle(token, &Ok(()));
        for w in waiters {
            let DupVerdict::InFlight(w) = w else {
                panic!("not waiting")
            };
            w.wait_blocking().unwrap();
        }
        assert_eq!(
            check_durable(&c, "queue://q", "fresh", &mut b),
            "new",
            "the refused check remembered an id"
        );
    }
}
