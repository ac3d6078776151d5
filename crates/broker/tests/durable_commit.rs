//! A transaction's acks take effect only once its commit batch is durable: until then the
//! acked messages stay held, and a commit the store refuses leaves them to be redelivered.

mod common;

use common::*;
use ferromq_broker::{AckScope, BrokerConfig, Destination, TxWork};
use ferromq_store::StoreError;

#[tokio::test]
async fn a_commit_whose_store_batch_fails_leaves_its_acked_messages_to_be_redelivered() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("txfail");
    let sink = Collector::new();
    let (h, _) = broker
        .subscribe(&q, individual(10), None, sink.clone())
        .unwrap();
    for body in ["a", "b"] {
        let c = broker.send(persistent(&broker, &q, body)).await.unwrap();
        store.release_next(Ok(()));
        c.await.unwrap();
    }
    let first = sink.take();
    assert_eq!(bodies(&first), ["a", "b"]);
    let mut tags = Vec::new();
    for d in &first {
        let (t, c) = broker.ack(&h, AckScope::Individual(d.tag), true).unwrap();
        c.await.unwrap();
        tags.extend(t);
    }
    let c = broker
        .commit(TxWork {
            sends: Vec::new(),
            acks: vec![(h.clone(), tags)],
        })
        .await
        .unwrap();
    assert_eq!(store.held(), 1);
    let snap = broker.snapshot();
    let snap = snap.iter().find(|s| s.name == "queue://txfail").unwrap();
    assert_eq!(
        (snap.inflight, snap.stats.dequeued),
        (2, 0),
        "acked messages left memory before their commit was durable"
    );
    store.release_next(Err(StoreError::Failed("disk full".into())));
    assert!(c.await.is_err(), "the failed commit was confirmed");
    // The store still holds both; the broker must offer them again.
    assert_eq!(store.stored_bodies("queue://txfail"), ["a", "b"]);
    let again = sink.take();
    assert_eq!(
        bodies(&again),
        ["a", "b"],
        "acked messages of a failed commit were lost"
    );
    assert!(again.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn a_durable_commit_removes_its_acked_messages_and_a_consumer_gone_meanwhile_changes_nothing()
{
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("txok");
    let sink = Collector::new();
    let (h, _) = broker
        .subscribe(&q, individual(10), None, sink.clone())
        .unwrap();
    let c = broker.send(persistent(&broker, &q, "a")).await.unwrap();
    store.release_next(Ok(()));
    c.await.unwrap();
    let d = sink.take();
    let (tags, _) = broker
        .ack(&h, AckScope::Individual(d[0].tag), true)
        .unwrap();
    let c = broker
        .commit(TxWork {
            sends: Vec::new(),
            acks: vec![(h.clone(), tags)],
        })
        .await
        .unwrap();
    // The connection closes while the commit is in flight: the message must not go back to
    // the queue (its removal may already be durable), nor be lost if the commit fails.
    broker.unsubscribe(&h, false).await.unwrap();
    let other = Collector::new();
    let (_h2, _) = broker
        .subscribe(&q, individual(10), None, other.clone())
        .unwrap();
    assert!(
        other.bodies().is_empty(),
        "a message whose ack was being committed was redelivered"
    );
    store.release_next(Ok(()));
    c.await.unwrap();
    assert!(store.stored_bodies("queue://txok").is_empty());
    let snap = broker.snapshot();
    let snap = snap.iter().find(|s| s.name == "queue://txok").unwrap();
    assert_eq!(
        (snap.pending, snap.inflight, snap.stats.dequeued),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn a_failed_commit_whose_consumer_has_gone_returns_its_messages_to_the_queue() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("txgone");
    let sink = Collector::new();
    let (h, _) = broker
        .subscribe(&q, individual(10), None, sink.clone())
        .unwrap();
    let c = broker.send(persistent(&broker, &q, "a")).await.unwrap();
    store.release_next(Ok(()));
    c.await.unwrap();
    let d = sink.take();
    let (tags, _) = broker
        .ack(&h, AckScope::Individual(d[0].tag), true)
        .unwrap();
    let c = broker
        .commit(TxWork {
            sends: Vec::new(),
            acks: vec![(h.clone(), tags)],
        })
        .await
        .unwrap();
    broker.unsubscribe(&h, false).await.unwrap();
    let other = Collector::new();
    let (_h2, _) = broker
        .subscribe(&q, individual(10), None, other.clone())
        .unwrap();
    store.release_next(Err(StoreError::Failed("disk full".into())));
    assert!(c.await.is_err());
    let again = other.take();
    assert_eq!(bodies(&again), ["a"]);
    assert!(again[0].redelivered);
}
