//! Helpers shared by the journal tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ferromq_store::journal::{MemDir, StorageDir};
use ferromq_store::{
    JournalConfig, JournalStore, MessageStore, Op, Recovery, StoredMessage, SubscriptionRecord,
};

/// Small segments, no timers: tests drive checkpoints and GC themselves. Sparse segments: a
/// segment prepared ahead is written by a thread of its own, whose I/O calls would make the
/// seeded power cuts (counted in I/O calls) land at different points from run to run; the
/// tests of zero-filled segments ask for them.
pub fn small_config(segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        journal_max_file_length: segment_bytes,
        checkpoint_interval_ms: 0,
        cleanup_interval_ms: 0,
        preallocation: ferromq_store::journal::Preallocation::SparseFile,
        ..JournalConfig::default()
    }
}

pub fn open_mem(dir: &MemDir, config: JournalConfig) -> JournalStore {
    JournalStore::open_with(Arc::new(dir.clone()) as Arc<dyn StorageDir>, config).unwrap()
}

pub fn try_open_mem(
    dir: &MemDir,
    config: JournalConfig,
) -> Result<JournalStore, ferromq_store::StoreError> {
    JournalStore::open_with(Arc::new(dir.clone()) as Arc<dyn StorageDir>, config)
}

pub fn enq(list: &str, seq: u64, payload: Vec<u8>) -> Op {
    Op::Enqueue {
        list: list.to_string(),
        seq,
        payload: Bytes::from(payload),
    }
}

pub fn deq(list: &str, seq: u64) -> Op {
    Op::Dequeue {
        list: list.to_string(),
        seq,
    }
}

pub fn sub(list: &str, topic: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        list: list.to_string(),
        client_id: "client".into(),
        name: list.to_string(),
        topic: topic.to_string(),
        selector: Some("prio > 3".into()),
        no_local: false,
    }
}

/// A payload that names its list and seq, so a wrong or corrupt one is visible.
pub fn body(list: &str, seq: u64, len: usize) -> Vec<u8> {
    let tag = format!("{list}#{seq}|");
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

/// Everything a store holds: `recover()` plus every message of every list, paged by `load`.
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    pub recovery: Recovery,
    pub messages: BTreeMap<String, Vec<StoredMessage>>,
}

pub fn state(store: &dyn MessageStore) -> State {
    let recovery = store.recover().unwrap();
    let mut messages = BTreeMap::new();
    for l in &recovery.lists {
        let mut all: Vec<StoredMessage> = Vec::new();
        loop {
            let after = all.last().map(|m| m.seq);
            let page = store.load(&l.list, after, 7).unwrap();
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        assert_eq!(
            all.len() as u64,
            l.count,
            "load agrees with recover for {}",
            l.list
        );
        messages.insert(l.list.clone(), all);
    }
    State { recovery, messages }
}

/// splitmix64: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
