//! An in-memory [`MessageStore`]: for tests and for brokers that keep nothing across restarts.
//!
//! It applies every batch at once and confirms it immediately. Because the same instance can be
//! handed to a new broker, tests use it to check what a broker "recovers" after a restart.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::{
    Batch, Completion, ListInfo, MessageStore, Op, Recovery, StoreError, StoredMessage,
    SubscriptionRecord,
};

#[derive(Debug, Default)]
struct State {
    lists: HashMap<String, ListState>,
    subscriptions: BTreeMap<String, SubscriptionRecord>,
    usage_bytes: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct ListState {
    messages: BTreeMap<u64, bytes::Bytes>,
    max_seq: u64,
    bytes: u64,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Reopens a closed store (tests use it to simulate a broker restart on the same data).
    pub fn reopen(&self) {
        self.state.lock().closed = false;
    }
}

impl State {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Enqueue { list, seq, payload } => {
                let l = self.lists.entry(list).or_default();
                let len = payload.len() as u64;
                if let Some(old) = l.messages.insert(seq, payload) {
                    // Re-enqueueing the same seq replaces it; keep the byte count exact.
                    l.bytes -= old.len() as u64;
                    self.usage_bytes -= old.len() as u64;
                }
                l.bytes += len;
                l.max_seq = l.max_seq.max(seq);
                self.usage_bytes += len;
            }
            Op::Dequeue { list, seq } => {
                if let Some(l) = self.lists.get_mut(&list) {
                    if let Some(old) = l.messages.remove(&seq) {
                        l.bytes -= old.len() as u64;
                        self.usage_bytes -= old.len() as u64;
                    }
                }
            }
            Op::PutSubscription(rec) => {
                self.subscriptions.insert(rec.list.clone(), rec);
            }
            Op::DeleteSubscription { list } => {
                self.subscriptions.remove(&list);
                self.purge(&list);
            }
            Op::Purge { list } => self.purge(&list),
        }
    }

    fn purge(&mut self, list: &str) {
        if let Some(l) = self.lists.remove(list) {
            self.usage_bytes -= l.bytes;
        }
    }
}

impl MessageStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn submit(&self, batch: Batch) -> Completion {
        let mut state = self.state.lock();
        if state.closed {
            return Completion::ready(Err(StoreError::Closed));
        }
        for op in batch {
            state.apply(op);
        }
        Completion::ready(Ok(()))
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        let state = self.state.lock();
        let mut lists: Vec<ListInfo> = state
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
        Ok(Recovery {
            subscriptions: state.subscriptions.values().cloned().collect(),
            lists,
        })
    }

    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let state = self.state.lock();
        let Some(l) = state.lists.get(list) else {
            return Ok(Vec::new());
        };
        let range = match after_seq {
            Some(s) => l.messages.range(s.saturating_add(1)..),
            None => l.messages.range(..),
        };
        Ok(range
            .take(max_count)
            .map(|(seq, payload)| StoredMessage {
                seq: *seq,
                payload: payload.clone(),
            })
            .collect())
    }

    fn usage_bytes(&self) -> u64 {
        self.state.lock().usage_bytes
    }

    fn close(&self) -> Result<(), StoreError> {
        self.state.lock().closed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enq(list: &str, seq: u64, body: &'static str) -> Op {
        Op::Enqueue {
            list: list.into(),
            seq,
            payload: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn batches_apply_in_order_and_recover_lists() {
        let s = MemoryStore::new();
        s.submit(vec![enq("queue://a", 1, "x"), enq("queue://a", 2, "yy")])
            .wait_blocking()
            .unwrap();
        s.submit(vec![Op::Dequeue {
            list: "queue://a".into(),
            seq: 1,
        }])
        .wait_blocking()
        .unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.lists.len(), 1);
        assert_eq!(r.lists[0].count, 1);
        assert_eq!(r.lists[0].max_seq, 2);
        assert_eq!(s.usage_bytes(), 2);
        let page = s.load("queue://a", None, 10).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, 2);
        assert!(s.load("queue://a", Some(2), 10).unwrap().is_empty());
    }

    #[test]
    fn closed_store_refuses_writes() {
        let s = MemoryStore::new();
        s.close().unwrap();
        assert!(matches!(
            s.submit(vec![enq("queue://a", 1, "x")]).wait_blocking(),
            Err(StoreError::Closed)
        ));
    }
}
