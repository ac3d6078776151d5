//! What the admin API and metrics read from the broker: one queue's snapshot, and every topic
//! subscription with the topic it is bound to.

mod common;

use common::*;
use ferromq_broker::{Destination, DurableName};

#[tokio::test]
async fn a_queue_snapshot_counts_what_was_sent_and_unknown_queues_are_none() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    assert!(f.broker.queue_snapshot(&q).is_none());
    f.send(f.pmsg(&q, "a")).await;
    f.send(f.pmsg(&q, "b")).await;
    let s = f
        .broker
        .queue_snapshot(&q)
        .expect("the queue exists once used");
    assert_eq!(s.name, "queue://orders");
    assert_eq!(s.pending, 2);
    assert_eq!(s.stats.enqueued, 2);
    assert!(f
        .broker
        .queue_snapshot(&Destination::queue("other"))
        .is_none());
}

#[tokio::test]
async fn topic_subscriptions_name_their_topic_and_say_which_are_durable() {
    let f = Fixture::new();
    let t = Destination::topic("prices.eu");
    let (_plain, _s1) = f.subscribe(&t, individual(10));
    let (_wild, _s2) = f.subscribe(&Destination::topic("prices.>"), individual(10));
    let name = DurableName {
        client_id: "c1".into(),
        name: "keep".into(),
    };
    let (_durable, _s3) = f.subscribe_durable(&t, &name, individual(10));
    f.send_body(&t, "p1").await;
    let subs = f.broker.topic_subscriptions();
    assert_eq!(subs.len(), 3, "{subs:?}");
    let topics: Vec<(&str, bool)> = subs.iter().map(|s| (s.topic.as_str(), s.durable)).collect();
    assert_eq!(
        topics.iter().filter(|(t, _)| *t == "prices.eu").count(),
        2,
        "{topics:?}"
    );
    assert!(topics.contains(&("prices.>", false)), "{topics:?}");
    assert_eq!(subs.iter().filter(|s| s.durable).count(), 1, "{topics:?}");
    // Every subscription got the message.
    assert!(subs.iter().all(|s| s.list.stats.enqueued == 1), "{subs:?}");
}

#[tokio::test]
async fn producers_are_counted_on_queues_and_never_below_zero() {
    let f = Fixture::new();
    let q = Destination::queue("made-by-a-producer");
    f.broker.producer_opened(&q);
    f.broker.producer_opened(&q);
    // A producer creates its queue, as in ActiveMQ.
    assert_eq!(f.broker.queue_snapshot(&q).map(|s| s.producers), Some(2));
    f.broker.producer_closed(&q);
    f.broker.producer_closed(&q);
    f.broker.producer_closed(&q);
    assert_eq!(f.broker.queue_snapshot(&q).map(|s| s.producers), Some(0));
    // Topics keep no per-topic state: nothing is created or counted.
    f.broker.producer_opened(&Destination::topic("t"));
    assert!(f.broker.topic_subscriptions().is_empty());
}
