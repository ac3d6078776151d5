//! What the broker writes to its store, and what a new broker recovers from it after a restart.

mod common;

use common::*;
use ferromq_broker::{AckScope, ConsumerOptions, Destination};
use ferromq_store::MessageStore;

#[tokio::test]
async fn persistent_queue_send_is_stored_and_ack_removes_it() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    f.send(f.pmsg(&q, "p1")).await;
    assert_eq!(f.stored_lists(), [("queue://orders".to_string(), 1)]);
    let stored = f.stored_messages("queue://orders");
    assert_eq!(stored[0].destination, q);
    assert!(stored[0].persistent);

    let (h, sink) = f.subscribe(&q, individual(10));
    let d = sink.take();
    assert_eq!(
        f.stored_bodies("queue://orders"),
        ["p1"],
        "delivery alone removes nothing"
    );
    f.broker
        .ack(&h, AckScope::Individual(d[0].tag), false)
        .unwrap()
        .1
        .wait_blocking()
        .unwrap();
    assert!(f.stored_lists().is_empty());
    assert_eq!(f.store.usage_bytes(), 0);
}

#[tokio::test]
async fn non_persistent_send_writes_nothing_to_the_store() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    f.send_body(&q, "np").await;
    f.send_body(&Destination::topic("t"), "np").await;
    assert!(f.stored_lists().is_empty());
    assert_eq!(f.list("queue://orders").pending, 1);
}

#[tokio::test]
async fn persistent_topic_message_is_stored_only_for_durable_subscriptions() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let (_n, _ns) = f.subscribe(&t, ConsumerOptions::default());
    let (_d, _ds) = f.subscribe_durable(&t, &durable("c1", "sub"), individual(10));
    f.send(f.pmsg(&t, "e1")).await;
    assert_eq!(f.stored_lists(), [("durable://c1:sub".to_string(), 1)]);
}

#[tokio::test]
async fn dead_lettering_moves_the_stored_message_from_its_queue_to_the_dlq() {
    let f = Fixture::new();
    let q = Destination::queue("poison");
    f.send(f.pmsg(&q, "keep")).await;
    let (h, sink) = f.subscribe(&q, individual(1));
    let d = sink.take();
    f.broker
        .ack(&h, AckScope::Individual(d[0].tag), false)
        .unwrap();
    f.send(f.pmsg(&q, "bad")).await;
    f.send(f.pmsg(&q, "next")).await;
    for _ in 0..7 {
        let d = sink.take();
        assert_eq!(bodies(&d), ["bad"]);
        f.broker.nack(&h, d[0].tag).unwrap();
    }
    assert_eq!(sink.bodies(), ["next"]);
    assert_eq!(f.stored_bodies("queue://poison"), ["next"]);
    let dead = f.stored_messages("queue://ActiveMQ.DLQ");
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].body[..], b"bad");
    assert_eq!(dead[0].destination, Destination::queue("ActiveMQ.DLQ"));
    assert_eq!(
        dead[0].header("originalDestination"),
        Some("queue://poison")
    );
    assert!(dead[0].header("dlqDeliveryFailureCause").is_some());
}

#[tokio::test]
async fn message_dead_in_the_dlq_is_dropped_not_looped() {
    let f = Fixture::new();
    let q = Destination::queue("poison");
    let dlq = Destination::queue("ActiveMQ.DLQ");
    let (h, sink) = f.subscribe(&q, individual(1));
    f.send(f.pmsg(&q, "bad")).await;
    for _ in 0..7 {
        let d = sink.take();
        f.broker.nack(&h, d[0].tag).unwrap();
    }
    let (dh, dsink) = f.subscribe(&dlq, individual(1));
    for _ in 0..7 {
        let d = dsink.take();
        assert_eq!(bodies(&d), ["bad"]);
        f.broker.nack(&dh, d[0].tag).unwrap();
    }
    assert_eq!(dsink.len(), 0);
    assert!(f.stored_lists().is_empty(), "{:?}", f.stored_lists());
}

#[tokio::test]
async fn restart_recovers_persistent_queue_messages_in_order_but_not_non_persistent() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    f.send(f.pmsg(&q, "p1")).await;
    f.send_body(&q, "np").await;
    let mut high = f.pmsg(&q, "p-high");
    high.priority = 9;
    f.send(high).await;
    f.send(f.pmsg(&q, "p2")).await;
    // One persistent message is consumed before the restart and must not come back.
    f.send(f.pmsg(&Destination::queue("done"), "acked")).await;
    let (h, sink) = f.subscribe(&Destination::queue("done"), individual(10));
    let d = sink.take();
    f.broker
        .ack(&h, AckScope::Individual(d[0].tag), false)
        .unwrap();

    let f = f.restart();
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.bodies(), ["p-high", "p1", "p2"]);
    let (_h, done) = f.subscribe(&Destination::queue("done"), individual(10));
    assert_eq!(done.len(), 0);
}

#[tokio::test]
async fn restart_recovers_unacked_inflight_messages() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    let (_h, sink) = f.subscribe(&q, individual(10));
    f.send(f.pmsg(&q, "p1")).await;
    assert_eq!(sink.len(), 1);
    let f = f.restart();
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.bodies(), ["p1"]);
}

#[tokio::test]
async fn new_sends_after_restart_are_stored_after_recovered_ones() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    f.send(f.pmsg(&q, "before")).await;
    let f = f.restart();
    f.send(f.pmsg(&q, "after")).await;
    assert_eq!(f.stored_bodies("queue://orders"), ["before", "after"]);
    let f = f.restart();
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.bodies(), ["before", "after"]);
}

#[tokio::test]
async fn restart_recovers_durable_subscription_with_its_persistent_messages_only() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, _sink) = f.subscribe_durable(&t, &name, individual(10));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    f.send(f.pmsg(&t, "p1")).await;
    f.send_body(&t, "np").await;
    f.send(f.pmsg(&t, "p2")).await;

    let f = f.restart();
    // The recovered subscription keeps collecting while nobody is attached.
    f.send(f.pmsg(&t, "p3")).await;
    let (_h, sink) = f.subscribe_durable(&t, &name, individual(10));
    assert_eq!(sink.bodies(), ["p1", "p2", "p3"]);
}

#[tokio::test]
async fn restart_recovers_durable_subscription_selector() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let sel = || with_selector(individual(10), "color = 'red'");
    let (h, _sink) = f.subscribe_durable(&t, &name, sel());
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();

    let f = f.restart();
    for (body, color) in [("red", "red"), ("blue", "blue")] {
        let mut m = f.pmsg(&t, body);
        m.headers = vec![("color".into(), color.into())];
        f.send(m).await;
    }
    let (_h, sink) = f.subscribe_durable(&t, &name, sel());
    assert_eq!(sink.bodies(), ["red"]);
}

#[tokio::test]
async fn destroyed_durable_subscription_is_not_recovered() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, _sink) = f.subscribe_durable(&t, &name, individual(10));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    f.send(f.pmsg(&t, "p1")).await;
    f.broker
        .destroy_durable(&name)
        .unwrap()
        .wait_blocking()
        .unwrap();

    let f = f.restart();
    assert!(f
        .broker
        .snapshot()
        .iter()
        .all(|s| !s.name.starts_with("durable://")));
    let (_h, sink) = f.subscribe_durable(&t, &name, individual(10));
    assert_eq!(sink.len(), 0);
}

#[tokio::test]
async fn restart_recovers_the_dlq() {
    let f = Fixture::new();
    let q = Destination::queue("exp");
    let mut m = f.pmsg(&q, "old");
    m.expires_ms = f.now() + 5;
    f.send(m).await;
    f.advance_ms(5);
    f.broker.expire_sweep();

    let f = f.restart();
    let (_h, sink) = f.subscribe(&Destination::queue("ActiveMQ.DLQ"), individual(10));
    let got = sink.take();
    assert_eq!(bodies(&got), ["old"]);
    assert_eq!(header(&got[0], "originalDestination"), Some("queue://exp"));
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.len(), 0);
}

#[tokio::test]
async fn recovered_durable_no_local_applies_to_the_connection_that_reattaches() {
    let f = Fixture::new();
    let t = Destination::topic("chat");
    let name = durable("c1", "sub");
    let no_local = |connection| ConsumerOptions {
        no_local: true,
        connection,
        ..individual(10)
    };
    let conn = f.broker.next_connection_id();
    let (h, _sink) = f.subscribe_durable(&t, &name, no_local(conn));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();

    let f = f.restart();
    let conn = f.broker.next_connection_id();
    let other = f.broker.next_connection_id();
    let (_h, sink) = f.subscribe_durable(&t, &name, no_local(conn));
    for (body, c) in [("own", conn), ("other", other)] {
        let mut m = f.pmsg(&t, body);
        m.producer_connection = c;
        f.send(m).await;
    }
    assert_eq!(sink.bodies(), ["other"]);
    assert_eq!(f.stored_bodies("durable://c1:sub"), ["other"]);
}
