//! A persistent message reaches consumers only once the store has confirmed it (and never if
//! the write fails), in its producer's order — while the producer's connection is not held up.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use ferromq_broker::{Broker, BrokerConfig, Destination, Message};
use ferromq_store::{
    Batch, Completer, Completion, MemoryStore, MessageStore, Recovery, StoreError, StoredMessage,
};

/// A store that applies batches at once but confirms them only when the test says so.
#[derive(Debug, Default)]
struct GatedStore {
    inner: MemoryStore,
    held: Mutex<Vec<Completer>>,
}

impl GatedStore {
    fn release(&self, result: Result<(), StoreError>) -> usize {
        let held: Vec<Completer> = std::mem::take(&mut *self.held.lock().unwrap());
        let n = held.len();
        for c in held {
            c.complete(result.clone());
        }
        n
    }
}

impl MessageStore for GatedStore {
    fn kind(&self) -> &'static str {
        "gated"
    }
    fn submit(&self, batch: Batch) -> Completion {
        self.inner.submit(batch);
        let (completer, completion) = Completion::pair();
        self.held.lock().unwrap().push(completer);
        completion
    }
    fn recover(&self) -> Result<Recovery, StoreError> {
        self.inner.recover()
    }
    fn load(&self, l: &str, a: Option<u64>, m: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load(l, a, m)
    }
    fn usage_bytes(&self) -> u64 {
        self.inner.usage_bytes()
    }
    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

fn msg(b: &Broker, dest: &Destination, body: &str, persistent: bool) -> Message {
    Message {
        id: b.next_message_id(),
        destination: dest.clone(),
        headers: Vec::new(),
        body: body.to_string().into(),
        persistent,
        priority: 4,
        timestamp_ms: T0_MS,
        expires_ms: 0,
        producer_connection: 1,
        wire: Default::default(),
    }
}

async fn settle() {
    // Let the confirmation tasks run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn persistent_messages_are_dispatched_only_after_the_store_confirms_them_in_order() {
    let store = Arc::new(GatedStore::default());
    let broker = Broker::open(
        BrokerConfig::default(),
        store.clone(),
        ferromq_broker::system_clock(),
    )
    .unwrap();
    let q = Destination::queue("gated");
    let sink = Collector::new();
    let (_h, _) = broker
        .subscribe(&q, individual(100), None, sink.clone())
        .unwrap();
    // send() returns without waiting for the disk; the receipts (completions) wait.
    let c1 = broker.send(msg(&broker, &q, "p1", true)).await.unwrap();
    let c2 = broker.send(msg(&broker, &q, "p2", true)).await.unwrap();
    settle().await;
    assert!(
        sink.bodies().is_empty(),
        "dispatched before the store confirmed"
    );
    assert_eq!(store.release(Ok(())), 2);
    c1.await.unwrap();
    c2.await.unwrap();
    settle().await;
    assert_eq!(sink.bodies(), ["p1", "p2"]);
}

#[tokio::test]
async fn a_message_whose_write_fails_is_never_delivered_and_its_producer_is_told() {
    let store = Arc::new(GatedStore::default());
    let broker = Broker::open(
        BrokerConfig::default(),
        store.clone(),
        ferromq_broker::system_clock(),
    )
    .unwrap();
    let q = Destination::queue("failing");
    let sink = Collector::new();
    let (_h, _) = broker
        .subscribe(&q, individual(100), None, sink.clone())
        .unwrap();
    let c = broker.send(msg(&broker, &q, "lost", true)).await.unwrap();
    store.release(Err(StoreError::Failed("disk on fire".into())));
    assert!(
        c.await.is_err(),
        "the producer must learn the message was not stored"
    );
    settle().await;
    assert!(
        sink.bodies().is_empty(),
        "a message the store refused was delivered"
    );
    // The list is not wedged: a non-persistent message still flows.
    let c = broker.send(msg(&broker, &q, "np", false)).await.unwrap();
    c.await.unwrap();
    assert_eq!(sink.bodies(), ["np"]);
}
