//! The administrator's operations (remove, move, copy, retry, remove a queue, destroy a durable
//! subscription): what the broker then holds in memory, what the store holds (checked across a
//! restart), and that a store write that fails leaves the message where it was.

mod common;

use common::*;
use ferromq_broker::{AckMode, BrokerConfig, BrokerError, Destination};
use ferromq_store::StoreError;

#[tokio::test]
async fn remove_move_and_copy_change_memory_and_store_alike() {
    let f = Fixture::new();
    let (q1, q2) = (Destination::queue("q1"), Destination::queue("q2"));
    for b in ["a", "b", "c", "d"] {
        f.send(f.pmsg(&q1, b)).await;
    }
    let ids: Vec<String> = f
        .broker
        .browse(&q1, 10)
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    f.broker.remove_message(&q1, &ids[0]).await.unwrap();
    assert!(matches!(
        f.broker.remove_message(&q1, &ids[0]).await,
        Err(BrokerError::NotFound(_))
    ));
    let moved = f
        .broker
        .move_message(&q1, &ids[1], &q2, false)
        .await
        .unwrap();
    assert_eq!(&*moved, ids[1].as_str(), "a move keeps the id");
    let copied = f
        .broker
        .move_message(&q1, &ids[2], &q2, true)
        .await
        .unwrap();
    assert_ne!(&*copied, ids[2].as_str(), "a copy gets its own id");
    assert!(matches!(
        f.broker.move_message(&q1, &ids[3], &q1, false).await,
        Err(BrokerError::InvalidDestination(_))
    ));
    assert_eq!(f.stored_bodies("queue://q1"), ["c", "d"]);
    assert_eq!(f.stored_bodies("queue://q2"), ["b", "c"]);
    let moved_msg = &f.stored_messages("queue://q2")[0];
    assert_eq!(
        moved_msg.destination, q2,
        "the copy has the target as destination"
    );
    let f = f.restart();
    assert_eq!(f.list("queue://q1").pending, 2);
    assert_eq!(f.list("queue://q2").pending, 2);
    // After a restart every message is paged out: a browse reads them back, and the
    // operations reach what it shows.
    let after: Vec<String> = f
        .broker
        .browse(&q1, 10)
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(after, [ids[2].clone(), ids[3].clone()]);
    f.broker.remove_message(&q1, &ids[3]).await.unwrap();
    assert_eq!(f.stored_bodies("queue://q1"), ["c"]);
    let (_h, sink) = f.subscribe(&Destination::queue("q2"), opts(AckMode::Auto, 10));
    assert_eq!(sink.bodies(), ["b", "c"]);
}

#[tokio::test]
async fn a_message_in_flight_is_refused_and_stays_with_its_consumer() {
    let f = Fixture::new();
    let q = Destination::queue("q");
    f.send(f.pmsg(&q, "held")).await;
    let id = f.broker.browse(&q, 1)[0].id.to_string();
    let (h, sink) = f.subscribe(&q, individual(1));
    assert_eq!(sink.len(), 1);
    let e = f.broker.remove_message(&q, &id).await.unwrap_err();
    assert!(
        matches!(e, BrokerError::InUse(ref m) if m.contains("in flight")),
        "{e}"
    );
    let e = f
        .broker
        .move_message(&q, &id, &Destination::queue("q2"), false)
        .await
        .unwrap_err();
    assert!(matches!(e, BrokerError::InUse(_)), "{e}");
    assert!(matches!(
        f.broker.remove_queue(&q).await,
        Err(BrokerError::InUse(_))
    ));
    f.broker.unsubscribe(&h, false).await.unwrap();
    assert_eq!(f.broker.remove_queue(&q).await.unwrap(), 1);
    assert!(f.broker.queue_snapshot(&q).is_none());
    assert!(
        f.stored_bodies("queue://q").is_empty(),
        "gone from the store too"
    );
    let f = f.restart();
    assert!(
        f.broker.queue_snapshot(&q).is_none(),
        "and not back after a restart"
    );
}

#[tokio::test]
async fn a_failed_move_leaves_the_message_in_its_source() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let (q1, q2) = (Destination::queue("q1"), Destination::queue("q2"));
    let c = broker.send(persistent(&broker, &q1, "m")).await.unwrap();
    store.release_all();
    c.await.unwrap();
    let id = broker.browse(&q1, 1)[0].id.to_string();
    let b = broker.clone();
    let (from, to, mid) = (q1.clone(), q2.clone(), id.clone());
    let task = tokio::spawn(async move { b.move_message(&from, &mid, &to, false).await });
    while store.held() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.held(), 1, "the enqueue and the dequeue are one batch");
    assert!(
        broker.browse(&q1, 1).is_empty(),
        "not dispatchable while moving"
    );
    store.release_next(Err(StoreError::Failed("disk gone".into())));
    assert!(task.await.unwrap().is_err());
    assert_eq!(
        broker.browse(&q1, 1)[0].id.to_string(),
        id,
        "back in its source"
    );
    assert!(broker.browse(&q2, 1).is_empty());
    assert_eq!(store.stored_bodies("queue://q1"), ["m"]);
    assert!(store.stored_bodies("queue://q2").is_empty());
}

#[tokio::test]
async fn dead_letters_are_retried_to_their_original_queue_with_a_fresh_count() {
    let f = Fixture::with_config(BrokerConfig {
        maximum_redeliveries: 0,
        ..BrokerConfig::default()
    });
    let (work, dlq) = (
        Destination::queue("work"),
        Destination::queue("ActiveMQ.DLQ"),
    );
    for b in ["x", "y", "z"] {
        f.send(f.pmsg(&work, b)).await;
    }
    let (h, sink) = f.subscribe(&work, individual(10));
    for d in sink.take() {
        f.broker.nack(&h, d.tag).unwrap();
    }
    f.broker.unsubscribe(&h, false).await.unwrap();
    let dead = f.broker.browse(&dlq, 10);
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0].header("originalDestination"), Some("queue://work"));
    let to = f.broker.retry_message(&dlq, &dead[0].id).await.unwrap();
    assert_eq!(to, work);
    let out = f.broker.retry_all(&dlq, 1).await.unwrap();
    assert_eq!((out.retried, out.remaining), (1, 1), "bounded per call");
    let out = f.broker.retry_all(&dlq, 10).await.unwrap();
    assert_eq!((out.retried, out.remaining), (1, 0));
    assert!(f.stored_bodies("queue://ActiveMQ.DLQ").is_empty());
    for m in f.stored_messages("queue://work") {
        assert_eq!(m.header("originalDestination"), None);
        assert_eq!(m.header("dlqDeliveryFailureCause"), None);
    }
    let (_h, sink) = f.subscribe(&work, individual(10));
    let got = sink.take();
    assert_eq!(bodies(&got).len(), 3);
    assert!(
        got.iter().all(|d| !d.redelivered),
        "the delivery count starts again"
    );
    // A message that was never dead-lettered cannot be retried.
    f.send(f.pmsg(&dlq, "plain")).await;
    let plain = f.broker.browse(&dlq, 1)[0].id.to_string();
    assert!(matches!(
        f.broker.retry_message(&dlq, &plain).await,
        Err(BrokerError::InvalidDestination(_))
    ));
    assert_eq!(f.broker.retry_all(&dlq, 10).await.unwrap().retried, 0);
}

#[tokio::test]
async fn durable_subscriptions_are_listed_and_destroyed_only_when_inactive() {
    let f = Fixture::new();
    let topic = Destination::topic("news");
    let name = durable("c1", "s1");
    let (h, _sink) = f.subscribe_durable(&topic, &name, individual(10));
    let subs = f.broker.durable_subscriptions();
    assert_eq!(subs.len(), 1);
    assert!(subs[0].active);
    assert!(matches!(
        f.broker.destroy_subscription(&name).await,
        Err(BrokerError::InUse(_))
    ));
    assert!(
        matches!(f.broker.remove_topic("news"), Err(BrokerError::InUse(ref m)) if m.contains("c1/s1"))
    );
    f.broker.unsubscribe(&h, false).await.unwrap();
    f.send(f.pmsg(&topic, "n")).await;
    let subs = f.broker.durable_subscriptions();
    assert_eq!((subs[0].active, subs[0].pending), (false, 1));
    f.broker.destroy_subscription(&name).await.unwrap();
    assert!(matches!(
        f.broker.destroy_subscription(&name).await,
        Err(BrokerError::NotFound(_))
    ));
    assert!(matches!(
        f.broker.remove_topic("news"),
        Err(BrokerError::NotFound(_))
    ));
    let f = f.restart();
    assert!(f.broker.durable_subscriptions().is_empty());
}

#[tokio::test]
async fn a_message_dead_lettered_from_a_topic_subscription_is_not_retried() {
    let f = Fixture::with_config(BrokerConfig {
        maximum_redeliveries: 0,
        ..BrokerConfig::default()
    });
    let (topic, dlq) = (
        Destination::topic("news"),
        Destination::queue("ActiveMQ.DLQ"),
    );
    let (h, sink) = f.subscribe_durable(&topic, &durable("c1", "s1"), individual(10));
    f.send(f.pmsg(&topic, "n")).await;
    let d = sink.take().pop().expect("delivered");
    f.broker.nack(&h, d.tag).unwrap();
    let dead = f.broker.browse(&dlq, 10);
    assert_eq!(dead[0].header("originalDestination"), Some("topic://news"));
    let e = f.broker.retry_message(&dlq, &dead[0].id).await.unwrap_err();
    assert!(
        matches!(e, BrokerError::InvalidDestination(ref m) if m.contains("topic")),
        "{e}"
    );
    let out = f.broker.retry_all(&dlq, 10).await.unwrap();
    assert_eq!((out.retried, out.remaining), (0, 1), "it stays in the DLQ");
    assert_eq!(f.stored_bodies("queue://ActiveMQ.DLQ"), ["n"]);
}
