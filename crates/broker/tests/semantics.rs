//! Broker semantics through the public API: queues, acks, redelivery, dead-lettering, expiry,
//! topics, selectors, durable subscriptions, transactions, temporary destinations, client ids,
//! flow control and slow-subscriber discard. Every test is deterministic: time comes from an
//! injected clock and deliveries are collected synchronously.

mod common;

use common::*;
use ferromq_broker::{
    AckMode, AckScope, BrokerConfig, BrokerError, ConsumerOptions, Destination, DestinationKind,
    TxWork,
};
use ferromq_store::MessageStore;

fn ack(f: &Fixture, h: &ferromq_broker::ConsumerHandle, scope: AckScope) -> Vec<u64> {
    let (tags, c) = f.broker.ack(h, scope, false).unwrap();
    c.wait_blocking().unwrap();
    tags
}

// ---------------------------------------------------------------- queues

#[tokio::test]
async fn queue_round_robins_between_competing_consumers() {
    let f = Fixture::new();
    let q = Destination::queue("work");
    let (_a, sa) = f.subscribe(&q, individual(100));
    let (_b, sb) = f.subscribe(&q, individual(100));
    for i in 0..6 {
        f.send_body(&q, &format!("m{i}")).await;
    }
    assert_eq!(sa.bodies(), ["m0", "m2", "m4"]);
    assert_eq!(sb.bodies(), ["m1", "m3", "m5"]);
}

#[tokio::test]
async fn queue_consumer_with_prefetch_two_gets_two_until_it_acks() {
    let f = Fixture::new();
    let q = Destination::queue("work");
    let (h, sink) = f.subscribe(&q, individual(2));
    for i in 0..5 {
        f.send_body(&q, &format!("m{i}")).await;
    }
    assert_eq!(sink.bodies(), ["m0", "m1"]);
    assert_eq!(f.list("queue://work").pending, 3);

    let first = sink.take();
    ack(&f, &h, AckScope::Individual(first[0].tag));
    assert_eq!(
        sink.bodies(),
        ["m2"],
        "one ack frees exactly one prefetch slot"
    );
    ack(&f, &h, AckScope::Individual(first[1].tag));
    assert_eq!(sink.bodies(), ["m2", "m3"]);
}

#[tokio::test]
async fn queue_preserves_send_order_for_one_producer_and_one_consumer() {
    let f = Fixture::new();
    let q = Destination::queue("ordered");
    let (h, sink) = f.subscribe(&q, individual(7));
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let mut got = Vec::new();
    for b in &expected {
        f.send_body(&q, b).await;
        // Ack as we go so the prefetch window keeps moving.
        for d in sink.take() {
            got.push(body(&d));
            ack(&f, &h, AckScope::Individual(d.tag));
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn queue_delivers_higher_priority_first_and_fifo_within_a_priority() {
    let f = Fixture::new();
    let q = Destination::queue("prio");
    for (body, priority) in [
        ("low", 1),
        ("high-a", 9),
        ("mid", 4),
        ("high-b", 9),
        ("low-b", 1),
    ] {
        let mut m = f.msg(&q, body);
        m.priority = priority;
        f.send(m).await;
    }
    let (_h, sink) = f.subscribe(&q, individual(100));
    assert_eq!(sink.bodies(), ["high-a", "high-b", "mid", "low", "low-b"]);
}

#[tokio::test]
async fn exclusive_consumer_gets_every_message_and_another_takes_over_when_it_leaves() {
    let f = Fixture::new();
    let q = Destination::queue("excl");
    let (_plain, plain_sink) = f.subscribe(&q, individual(100));
    let exclusive = ConsumerOptions {
        exclusive: true,
        ..individual(100)
    };
    let (ex, ex_sink) = f.subscribe(&q, exclusive);
    for i in 0..4 {
        f.send_body(&q, &format!("m{i}")).await;
    }
    assert_eq!(ex_sink.bodies(), ["m0", "m1", "m2", "m3"]);
    assert_eq!(plain_sink.len(), 0);

    // The exclusive consumer leaves without acking: the other consumer takes over, gets the
    // unacked messages again (redelivered), then new ones.
    f.broker.unsubscribe(&ex, false).wait_blocking().unwrap();
    f.send_body(&q, "m4").await;
    let got = plain_sink.take();
    assert_eq!(bodies(&got), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(got[..4]
        .iter()
        .all(|d| d.redelivered && d.delivery_count == 2));
    assert!(!got[4].redelivered);
}

// ---------------------------------------------------------------- acks

#[tokio::test]
async fn individual_ack_frees_exactly_one_delivery() {
    let f = Fixture::new();
    let q = Destination::queue("acks");
    let (h, sink) = f.subscribe(&q, individual(10));
    for i in 0..3 {
        f.send_body(&q, &format!("m{i}")).await;
    }
    let ds = sink.take();
    let tags = ack(&f, &h, AckScope::Individual(ds[1].tag));
    assert_eq!(tags, [ds[1].tag]);
    let snap = f.list("queue://acks");
    assert_eq!(snap.inflight, 2);
    assert_eq!(snap.stats.dequeued, 1);
    // The other two are still outstanding and can be acked.
    ack(&f, &h, AckScope::Individual(ds[0].tag));
    ack(&f, &h, AckScope::Individual(ds[2].tag));
    assert_eq!(f.list("queue://acks").inflight, 0);
}

#[tokio::test]
async fn cumulative_ack_frees_earlier_deliveries_of_that_consumer_only() {
    let f = Fixture::new();
    let q = Destination::queue("cumulative");
    let (a, sa) = f.subscribe(&q, opts(AckMode::Client, 10));
    let (b, sb) = f.subscribe(&q, opts(AckMode::Client, 10));
    for i in 0..8 {
        f.send_body(&q, &format!("m{i}")).await;
    }
    let da = sa.take();
    let db = sb.take();
    assert_eq!(da.len(), 4);
    assert_eq!(db.len(), 4);
    // Ack up to A's third delivery: A's first three go, A's fourth and all of B's stay.
    let tags = ack(&f, &a, AckScope::Cumulative(da[2].tag));
    assert_eq!(tags, [da[0].tag, da[1].tag, da[2].tag]);
    assert_eq!(f.list("queue://cumulative").inflight, 5);
    assert!(matches!(
        f.broker.ack(&a, AckScope::Individual(da[0].tag), false),
        Err(BrokerError::UnknownDelivery(_))
    ));
    // B's deliveries are untouched: acking B's last still covers all four of them.
    let tags = ack(&f, &b, AckScope::Cumulative(db[3].tag));
    assert_eq!(tags.len(), 4);
    assert_eq!(f.list("queue://cumulative").inflight, 1);
}

#[tokio::test]
async fn ack_of_unknown_tag_is_unknown_delivery() {
    let f = Fixture::new();
    let q = Destination::queue("acks");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send_body(&q, "m").await;
    let tag = sink.take()[0].tag;
    for scope in [
        AckScope::Individual(tag + 1000),
        AckScope::Cumulative(tag + 1000),
    ] {
        assert!(matches!(
            f.broker.ack(&h, scope, false),
            Err(BrokerError::UnknownDelivery(_))
        ));
    }
    assert!(matches!(
        f.broker.nack(&h, tag + 1000),
        Err(BrokerError::UnknownDelivery(_))
    ));
    // The real delivery is unaffected.
    assert_eq!(f.list("queue://acks").inflight, 1);
}

#[tokio::test]
async fn ack_of_another_consumers_tag_is_unknown_delivery() {
    let f = Fixture::new();
    let q = Destination::queue("acks");
    let (a, _sa) = f.subscribe(&q, individual(10));
    let (_b, sb) = f.subscribe(&q, individual(10));
    f.send_body(&q, "m0").await;
    f.send_body(&q, "m1").await;
    let b_tag = sb.take()[0].tag;
    assert!(matches!(
        f.broker.ack(&a, AckScope::Individual(b_tag), false),
        Err(BrokerError::UnknownDelivery(_))
    ));
    assert_eq!(f.list("queue://acks").inflight, 2);
}

#[tokio::test]
async fn second_ack_of_the_same_tag_is_unknown_delivery() {
    let f = Fixture::new();
    let q = Destination::queue("acks");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send_body(&q, "m").await;
    let tag = sink.take()[0].tag;
    ack(&f, &h, AckScope::Individual(tag));
    assert!(matches!(
        f.broker.ack(&h, AckScope::Individual(tag), false),
        Err(BrokerError::UnknownDelivery(_))
    ));
    assert_eq!(f.list("queue://acks").stats.dequeued, 1);
}

// ---------------------------------------------------------------- redelivery and the DLQ

#[tokio::test]
async fn nack_redelivers_with_redelivered_flag_and_delivery_count_two() {
    let f = Fixture::new();
    let q = Destination::queue("nack");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send_body(&q, "m").await;
    let first = sink.take();
    assert!(!first[0].redelivered);
    assert_eq!(first[0].delivery_count, 1);
    f.broker.nack(&h, first[0].tag).unwrap();
    let again = sink.take();
    assert_eq!(bodies(&again), ["m"]);
    assert!(again[0].redelivered);
    assert_eq!(again[0].delivery_count, 2);
    assert_ne!(again[0].tag, first[0].tag, "a redelivery has a new tag");
    assert_eq!(again[0].message.id, first[0].message.id);
}

#[tokio::test]
async fn nacked_message_goes_to_dlq_after_seven_deliveries_with_cause_and_origin() {
    let f = Fixture::new();
    let q = Destination::queue("poison");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send(f.pmsg(&q, "bad")).await;
    // maximumRedeliveries = 6: delivered 7 times, the 7th NACK dead-letters it.
    for n in 1..=7u32 {
        let d = sink.take();
        assert_eq!(d.len(), 1, "delivery {n}");
        assert_eq!(d[0].delivery_count, n);
        assert_eq!(d[0].redelivered, n > 1);
        f.broker.nack(&h, d[0].tag).unwrap();
    }
    assert_eq!(sink.len(), 0, "no eighth delivery");
    assert_eq!(f.list("queue://poison").stats.poisoned, 1);

    let dlq = Destination::queue("ActiveMQ.DLQ");
    let (_d, dlq_sink) = f.subscribe(&dlq, individual(10));
    let dead = dlq_sink.take();
    assert_eq!(bodies(&dead), ["bad"]);
    let cause = header(&dead[0], "dlqDeliveryFailureCause").unwrap();
    assert!(cause.contains("maximumRedeliveries=6"), "{cause}");
    assert_eq!(
        header(&dead[0], "originalDestination"),
        Some("queue://poison")
    );
    assert_eq!(dead[0].message.destination, dlq);
}

#[tokio::test]
async fn maximum_redeliveries_and_dlq_name_are_configurable() {
    let f = Fixture::with_config(BrokerConfig {
        maximum_redeliveries: 1,
        dead_letter_queue: "MY.DLQ".into(),
        ..BrokerConfig::default()
    });
    let q = Destination::queue("poison");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send(f.pmsg(&q, "bad")).await;
    for _ in 0..2 {
        let d = sink.take();
        assert_eq!(d.len(), 1);
        f.broker.nack(&h, d[0].tag).unwrap();
    }
    assert_eq!(sink.len(), 0);
    assert_eq!(f.broker.browse(&Destination::queue("MY.DLQ"), 10).len(), 1);
    assert!(f
        .broker
        .browse(&Destination::queue("ActiveMQ.DLQ"), 10)
        .is_empty());
}

#[tokio::test]
async fn non_persistent_poison_message_is_dropped_by_default() {
    let f = Fixture::new();
    let q = Destination::queue("poison");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send_body(&q, "bad").await;
    for _ in 0..7 {
        let d = sink.take();
        f.broker.nack(&h, d[0].tag).unwrap();
    }
    assert_eq!(sink.len(), 0);
    assert_eq!(f.list("queue://poison").stats.poisoned, 1);
    assert_eq!(f.list("queue://poison").memory_bytes, 0);
    assert!(f
        .broker
        .browse(&Destination::queue("ActiveMQ.DLQ"), 10)
        .is_empty());
}

#[tokio::test]
async fn non_persistent_poison_message_is_dead_lettered_with_process_non_persistent() {
    let f = Fixture::with_config(BrokerConfig {
        process_non_persistent: true,
        ..BrokerConfig::default()
    });
    let q = Destination::queue("poison");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send_body(&q, "bad").await;
    for _ in 0..7 {
        let d = sink.take();
        f.broker.nack(&h, d[0].tag).unwrap();
    }
    let dead = f.broker.browse(&Destination::queue("ActiveMQ.DLQ"), 10);
    assert_eq!(dead.len(), 1);
    assert!(!dead[0].persistent);
    // A non-persistent message in the DLQ is not written to the store.
    assert!(f.stored_lists().is_empty());
}

#[tokio::test]
async fn removing_a_consumer_redelivers_its_unacked_messages_to_another_consumer() {
    let f = Fixture::new();
    let q = Destination::queue("failover");
    let (a, sa) = f.subscribe(&q, individual(10));
    for i in 0..3 {
        f.send_body(&q, &format!("m{i}")).await;
    }
    let got_a = sa.take();
    assert_eq!(got_a.len(), 3);
    ack(&f, &a, AckScope::Individual(got_a[1].tag));

    let (_b, sb) = f.subscribe(&q, individual(10));
    assert_eq!(sb.len(), 0, "nothing pending while A holds them");
    f.broker.unsubscribe(&a, false).wait_blocking().unwrap();
    let got_b = sb.take();
    assert_eq!(
        bodies(&got_b),
        ["m0", "m2"],
        "the acked one is not redelivered"
    );
    assert!(got_b.iter().all(|d| d.redelivered && d.delivery_count == 2));
}

// ---------------------------------------------------------------- expiry

#[tokio::test]
async fn message_already_expired_is_never_delivered() {
    let f = Fixture::new();
    let q = Destination::queue("exp");
    let (_h, sink) = f.subscribe(&q, individual(10));
    let mut m = f.msg(&q, "stale");
    m.expires_ms = f.now() - 1;
    f.send(m).await;
    f.send_body(&q, "fresh").await;
    assert_eq!(sink.bodies(), ["fresh"]);
    assert_eq!(f.list("queue://exp").stats.expired, 1);
}

#[tokio::test]
async fn message_that_expires_while_pending_is_not_delivered_to_a_late_consumer() {
    let f = Fixture::new();
    let q = Destination::queue("exp");
    let mut m = f.msg(&q, "short-lived");
    m.expires_ms = f.now() + 100;
    f.send(m).await;
    let mut m = f.msg(&q, "long-lived");
    m.expires_ms = f.now() + 10_000;
    f.send(m).await;
    f.advance_ms(100);
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.bodies(), ["long-lived"]);
}

#[tokio::test]
async fn expire_sweep_moves_persistent_expired_message_to_dlq() {
    let f = Fixture::new();
    let q = Destination::queue("exp");
    let mut m = f.pmsg(&q, "old");
    m.expires_ms = f.now() + 50;
    f.send(m).await;
    f.send(f.pmsg(&q, "keeper")).await;
    f.broker.expire_sweep();
    assert_eq!(f.list("queue://exp").pending, 2, "not yet expired");
    f.advance_ms(50);
    f.broker.expire_sweep();
    assert_eq!(f.list("queue://exp").pending, 1);
    assert_eq!(f.list("queue://exp").stats.expired, 1);

    let dead = f.broker.browse(&Destination::queue("ActiveMQ.DLQ"), 10);
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].body[..], b"old");
    assert_eq!(dead[0].expires_ms, 0, "must not expire again in the DLQ");
    assert_eq!(dead[0].header("originalDestination"), Some("queue://exp"));
    assert!(dead[0].header("dlqDeliveryFailureCause").is_some());
    assert_eq!(f.stored_bodies("queue://exp"), ["keeper"]);
    assert_eq!(f.stored_bodies("queue://ActiveMQ.DLQ"), ["old"]);
}

#[tokio::test]
async fn persistent_message_expired_at_dispatch_goes_to_dlq() {
    let f = Fixture::new();
    let q = Destination::queue("exp");
    let mut m = f.pmsg(&q, "old");
    m.expires_ms = f.now() + 10;
    f.send(m).await;
    f.advance_ms(10);
    // No sweep: the consumer's arrival triggers dispatch, which must catch the expiry.
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.len(), 0);
    assert_eq!(
        f.broker
            .browse(&Destination::queue("ActiveMQ.DLQ"), 10)
            .len(),
        1
    );
    assert!(f.stored_bodies("queue://exp").is_empty());
    assert_eq!(f.stored_bodies("queue://ActiveMQ.DLQ"), ["old"]);
}

#[tokio::test]
async fn non_persistent_expired_message_is_dropped() {
    let f = Fixture::new();
    let q = Destination::queue("exp");
    let mut m = f.msg(&q, "old");
    m.expires_ms = f.now() + 10;
    f.send(m).await;
    f.advance_ms(10);
    f.broker.expire_sweep();
    assert_eq!(f.list("queue://exp").pending, 0);
    assert_eq!(f.list("queue://exp").stats.expired, 1);
    assert!(f
        .broker
        .browse(&Destination::queue("ActiveMQ.DLQ"), 10)
        .is_empty());
}

#[tokio::test]
async fn persistent_expired_message_is_dropped_when_process_expired_is_off() {
    let f = Fixture::with_config(BrokerConfig {
        process_expired: false,
        ..BrokerConfig::default()
    });
    let q = Destination::queue("exp");
    let mut m = f.pmsg(&q, "old");
    m.expires_ms = f.now() + 10;
    f.send(m).await;
    f.advance_ms(10);
    f.broker.expire_sweep();
    assert!(f
        .broker
        .browse(&Destination::queue("ActiveMQ.DLQ"), 10)
        .is_empty());
    assert!(f.stored_lists().is_empty(), "{:?}", f.stored_lists());
}

// ---------------------------------------------------------------- topics

#[tokio::test]
async fn topic_fans_out_to_every_subscriber() {
    let f = Fixture::new();
    let t = Destination::topic("news");
    let sinks: Vec<_> = (0..3)
        .map(|_| f.subscribe(&t, ConsumerOptions::default()))
        .collect();
    f.send_body(&t, "a").await;
    f.send_body(&t, "b").await;
    for (_, s) in &sinks {
        assert_eq!(s.bodies(), ["a", "b"]);
    }
}

#[tokio::test]
async fn topic_wildcards_gt_matches_descendants_and_star_matches_one_element() {
    let f = Fixture::new();
    let (_all, all) = f.subscribe(&Destination::topic("PRICE.>"), ConsumerOptions::default());
    let (_star, star) = f.subscribe(
        &Destination::topic("PRICE.STOCK.*"),
        ConsumerOptions::default(),
    );
    let (_mid, mid) = f.subscribe(
        &Destination::topic("PRICE.*.NYSE"),
        ConsumerOptions::default(),
    );
    for name in [
        "PRICE.STOCK.NYSE",
        "PRICE.STOCK.NASDAQ.ORCL",
        "PRICE.BOND.NYSE",
        "PRICE",
        "OTHER.STOCK.NYSE",
    ] {
        f.send_body(&Destination::topic(name), name).await;
    }
    assert_eq!(
        all.bodies(),
        [
            "PRICE.STOCK.NYSE",
            "PRICE.STOCK.NASDAQ.ORCL",
            "PRICE.BOND.NYSE"
        ]
    );
    assert_eq!(star.bodies(), ["PRICE.STOCK.NYSE"]);
    assert_eq!(mid.bodies(), ["PRICE.STOCK.NYSE", "PRICE.BOND.NYSE"]);
}

#[tokio::test]
async fn publishing_to_a_wildcard_topic_is_invalid() {
    let f = Fixture::new();
    let err = f
        .broker
        .send(f.msg(&Destination::topic("a.>"), "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidDestination(_)));
}

#[tokio::test]
async fn topic_subscriber_gets_nothing_published_before_it_joined() {
    let f = Fixture::new();
    let t = Destination::topic("news");
    let (_early, early) = f.subscribe(&t, ConsumerOptions::default());
    f.send_body(&t, "before").await;
    let (_late, late) = f.subscribe(&t, ConsumerOptions::default());
    f.send_body(&t, "after").await;
    assert_eq!(early.bodies(), ["before", "after"]);
    assert_eq!(late.bodies(), ["after"]);
}

#[tokio::test]
async fn topic_selector_filters_on_string_and_numeric_string_headers() {
    let f = Fixture::new();
    let t = Destination::topic("shop");
    let (_red, red) = f.subscribe(
        &t,
        with_selector(ConsumerOptions::default(), "color = 'red'"),
    );
    let (_dear, dear) = f.subscribe(&t, with_selector(ConsumerOptions::default(), "price > 5"));
    let (_all, all) = f.subscribe(&t, ConsumerOptions::default());
    for (body, color, price) in [
        ("red-10", "red", "10"),
        ("blue-10", "blue", "10"),
        ("red-3", "red", "3"),
    ] {
        let mut m = f.msg(&t, body);
        m.headers = vec![
            ("color".into(), color.into()),
            ("price".into(), price.into()),
        ];
        f.send(m).await;
    }
    let mut m = f.msg(&t, "no-headers");
    m.headers.clear();
    f.send(m).await;
    assert_eq!(red.bodies(), ["red-10", "red-3"]);
    assert_eq!(dear.bodies(), ["red-10", "blue-10"]);
    assert_eq!(all.len(), 4);
}

#[tokio::test]
async fn queue_selector_consumer_gets_only_matches_and_leaves_the_rest_for_others() {
    let f = Fixture::new();
    let q = Destination::queue("shop");
    let (_red, red) = f.subscribe(&q, with_selector(individual(10), "color = 'red'"));
    for (body, color) in [("r1", "red"), ("b1", "blue"), ("r2", "red")] {
        let mut m = f.msg(&q, body);
        m.headers = vec![("color".into(), color.into())];
        f.send(m).await;
    }
    assert_eq!(red.bodies(), ["r1", "r2"]);
    assert_eq!(f.list("queue://shop").pending, 1);
    let (_any, any) = f.subscribe(&q, individual(10));
    assert_eq!(any.bodies(), ["b1"]);
}

#[tokio::test]
async fn no_local_topic_subscriber_skips_messages_from_its_own_connection() {
    let f = Fixture::new();
    let t = Destination::topic("chat");
    let mine = f.broker.next_connection_id();
    let other = f.broker.next_connection_id();
    let (_h, sink) = f.subscribe(
        &t,
        ConsumerOptions {
            no_local: true,
            connection: mine,
            ..ConsumerOptions::default()
        },
    );
    let (_h2, plain) = f.subscribe(
        &t,
        ConsumerOptions {
            connection: mine,
            ..ConsumerOptions::default()
        },
    );
    for (body, conn) in [("own", mine), ("theirs", other)] {
        let mut m = f.msg(&t, body);
        m.producer_connection = conn;
        f.send(m).await;
    }
    assert_eq!(sink.bodies(), ["theirs"]);
    assert_eq!(plain.bodies(), ["own", "theirs"]);
}

// ---------------------------------------------------------------- durable subscriptions

#[tokio::test]
async fn durable_subscription_keeps_messages_while_its_subscriber_is_away() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, sink) = f.subscribe_durable(&t, &name, individual(10));
    f.send_body(&t, "while-here").await;
    let d = sink.take();
    ack(&f, &h, AckScope::Individual(d[0].tag));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();

    f.send_body(&t, "away-1").await;
    f.send(f.pmsg(&t, "away-2")).await;
    assert_eq!(sink.len(), 0);

    let (_h2, sink2) = f.subscribe_durable(&t, &name, individual(10));
    let got = sink2.take();
    assert_eq!(bodies(&got), ["away-1", "away-2"]);
    assert!(got.iter().all(|d| !d.redelivered));
}

#[tokio::test]
async fn unacked_durable_messages_are_redelivered_on_reattach() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, sink) = f.subscribe_durable(&t, &name, individual(10));
    f.send(f.pmsg(&t, "m")).await;
    assert_eq!(sink.take().len(), 1);
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    let (_h2, sink2) = f.subscribe_durable(&t, &name, individual(10));
    let got = sink2.take();
    assert_eq!(bodies(&got), ["m"]);
    assert!(got[0].redelivered);
}

#[tokio::test]
async fn second_active_consumer_on_a_durable_name_is_in_use() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, _sink) = f.subscribe_durable(&t, &name, individual(10));
    let err = f
        .broker
        .subscribe(&t, individual(10), Some(name.clone()), Collector::new())
        .unwrap_err();
    assert!(matches!(err, BrokerError::InUse(_)));
    assert!(matches!(
        f.broker.destroy_durable(&name),
        Err(BrokerError::InUse(_))
    ));
    // Once detached the name is free again.
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    f.subscribe_durable(&t, &name, individual(10));
}

#[tokio::test]
async fn unsubscribe_with_destroy_durable_deletes_subscription_and_its_messages() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, sink) = f.subscribe_durable(&t, &name, individual(10));
    f.send(f.pmsg(&t, "held")).await;
    assert_eq!(sink.len(), 1);
    assert_eq!(f.store.recover().unwrap().subscriptions.len(), 1);
    f.broker.unsubscribe(&h, true).wait_blocking().unwrap();

    let rec = f.store.recover().unwrap();
    assert!(rec.subscriptions.is_empty());
    assert!(rec.lists.is_empty(), "{:?}", rec.lists);
    // Publishing now reaches nobody, and a new subscription under the name starts empty.
    f.send(f.pmsg(&t, "after")).await;
    let (_h2, sink2) = f.subscribe_durable(&t, &name, individual(10));
    assert_eq!(sink2.len(), 0);
    f.send(f.pmsg(&t, "new")).await;
    assert_eq!(sink2.bodies(), ["new"]);
}

#[tokio::test]
async fn durable_selector_change_replaces_the_subscription() {
    let f = Fixture::new();
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, _sink) = f.subscribe_durable(&t, &name, individual(10));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    f.send_body(&t, "old").await;
    let (_h2, sink2) =
        f.subscribe_durable(&t, &name, with_selector(individual(10), "color = 'red'"));
    assert_eq!(
        sink2.len(),
        0,
        "messages of the replaced subscription are dropped"
    );
    let mut m = f.msg(&t, "red");
    m.headers = vec![("color".into(), "red".into())];
    f.send(m).await;
    f.send_body(&t, "plain").await;
    assert_eq!(sink2.bodies(), ["red"]);
}

#[tokio::test]
async fn durable_no_local_follows_the_connection_that_reattaches() {
    let f = Fixture::new();
    let t = Destination::topic("chat");
    let name = durable("c1", "sub");
    let first_conn = f.broker.next_connection_id();
    let no_local = |connection| ConsumerOptions {
        no_local: true,
        connection,
        ..individual(10)
    };
    let (h, _sink) = f.subscribe_durable(&t, &name, no_local(first_conn));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();

    // The client reconnects on a new connection and reattaches.
    let second_conn = f.broker.next_connection_id();
    let other = f.broker.next_connection_id();
    let (_h2, sink2) = f.subscribe_durable(&t, &name, no_local(second_conn));
    for (body, conn) in [
        ("own", second_conn),
        ("old-conn", first_conn),
        ("other", other),
    ] {
        let mut m = f.msg(&t, body);
        m.producer_connection = conn;
        f.send(m).await;
    }
    assert_eq!(sink2.bodies(), ["old-conn", "other"]);
    // Nothing is left stranded in the subscription: its own messages were never kept.
    assert_eq!(f.list("durable://c1:sub").pending, 0);
}

// ---------------------------------------------------------------- transactions

#[tokio::test]
async fn transactional_sends_are_invisible_until_commit() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    let t = Destination::topic("tx");
    let (_hq, sq) = f.subscribe(&q, individual(10));
    let (_ht, st) = f.subscribe(&t, individual(10));
    let tx = TxWork {
        sends: vec![f.pmsg(&q, "q1"), f.msg(&t, "t1"), f.pmsg(&q, "q2")],
        acks: Vec::new(),
    };
    // Buffered in the session: nothing visible, nothing stored.
    assert_eq!(sq.len() + st.len(), 0);
    assert!(f.stored_lists().is_empty());
    // A later non-transactional send is not held up by the open transaction.
    f.send_body(&q, "plain").await;
    assert_eq!(sq.bodies(), ["plain"]);

    f.broker.commit(tx).await.unwrap().wait_blocking().unwrap();
    assert_eq!(sq.bodies(), ["plain", "q1", "q2"]);
    assert_eq!(st.bodies(), ["t1"]);
    assert_eq!(f.stored_bodies("queue://tx"), ["q1", "q2"]);
}

#[tokio::test]
async fn rollback_discards_transactional_sends() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    let (_h, sink) = f.subscribe(&q, individual(10));
    let tx = TxWork {
        sends: vec![f.pmsg(&q, "q1"), f.pmsg(&q, "q2")],
        acks: Vec::new(),
    };
    f.broker.rollback(tx);
    assert_eq!(sink.len(), 0);
    assert_eq!(f.list("queue://tx").stats.enqueued, 0);
    assert!(f.stored_lists().is_empty());
}

#[tokio::test]
async fn rollback_redelivers_transactionally_acked_messages() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    let (h, sink) = f.subscribe(&q, individual(10));
    f.send(f.pmsg(&q, "m0")).await;
    f.send(f.pmsg(&q, "m1")).await;
    let ds = sink.take();
    let (tags, _) = f
        .broker
        .ack(&h, AckScope::Individual(ds[0].tag), true)
        .unwrap();
    let (tags2, _) = f
        .broker
        .ack(&h, AckScope::Individual(ds[1].tag), true)
        .unwrap();
    // Acking twice in the same transaction is an error.
    assert!(matches!(
        f.broker.ack(&h, AckScope::Individual(ds[0].tag), true),
        Err(BrokerError::UnknownDelivery(_))
    ));
    assert_eq!(
        f.stored_bodies("queue://tx"),
        ["m0", "m1"],
        "not removed before commit"
    );

    f.broker.rollback(TxWork {
        sends: Vec::new(),
        acks: vec![(h.clone(), [tags, tags2].concat())],
    });
    let again = sink.take();
    assert_eq!(bodies(&again), ["m0", "m1"]);
    assert!(again.iter().all(|d| d.redelivered && d.delivery_count == 2));
    assert_eq!(f.stored_bodies("queue://tx"), ["m0", "m1"]);
}

#[tokio::test]
async fn commit_removes_transactionally_acked_messages_with_the_sends_in_one_batch() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    let out = Destination::queue("out");
    let (h, sink) = f.subscribe(&q, opts(AckMode::Client, 10));
    for i in 0..3 {
        f.send(f.pmsg(&q, &format!("m{i}"))).await;
    }
    let ds = sink.take();
    let (tags, _) = f
        .broker
        .ack(&h, AckScope::Cumulative(ds[1].tag), true)
        .unwrap();
    assert_eq!(tags, [ds[0].tag, ds[1].tag]);
    f.broker
        .commit(TxWork {
            sends: vec![f.pmsg(&out, "reply")],
            acks: vec![(h.clone(), tags)],
        })
        .await
        .unwrap()
        .wait_blocking()
        .unwrap();
    assert_eq!(f.stored_bodies("queue://tx"), ["m2"]);
    assert_eq!(f.stored_bodies("queue://out"), ["reply"]);
    let snap = f.list("queue://tx");
    assert_eq!(snap.inflight, 1);
    assert_eq!(snap.stats.dequeued, 2);
    // The committed tags are gone for good.
    assert!(matches!(
        f.broker.ack(&h, AckScope::Individual(ds[0].tag), false),
        Err(BrokerError::UnknownDelivery(_))
    ));
}

#[tokio::test]
async fn transactional_ack_frees_prefetch_capacity() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    let (h, sink) = f.subscribe(&q, individual(1));
    f.send_body(&q, "m0").await;
    f.send_body(&q, "m1").await;
    let first = sink.take();
    assert_eq!(bodies(&first), ["m0"]);
    let (tags, _) = f
        .broker
        .ack(&h, AckScope::Individual(first[0].tag), true)
        .unwrap();
    assert_eq!(
        sink.bodies(),
        ["m1"],
        "an uncommitted ack still frees the prefetch slot"
    );
    f.broker.rollback(TxWork {
        sends: Vec::new(),
        acks: vec![(h.clone(), tags)],
    });
    // m0 is back in the queue, behind m1 which holds the only slot.
    assert_eq!(f.list("queue://tx").pending, 1);
}

#[tokio::test]
async fn failed_commit_applies_none_of_its_acks() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    let conn = f.broker.next_connection_id();
    let temp = f
        .broker
        .create_temp(DestinationKind::TempQueue, conn, "reply");
    f.broker.connection_closed(conn, None);

    let (h, sink) = f.subscribe(&q, individual(10));
    f.send(f.pmsg(&q, "m0")).await;
    let d = sink.take();
    let (tags, _) = f
        .broker
        .ack(&h, AckScope::Individual(d[0].tag), true)
        .unwrap();
    let err = f
        .broker
        .commit(TxWork {
            sends: vec![f.pmsg(&temp, "reply")],
            acks: vec![(h.clone(), tags.clone())],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::NoSuchDestination(_)));
    // The commit failed as a whole: the ack did not happen, the message is still stored and
    // the session can still roll the transaction back to get it redelivered.
    assert_eq!(f.stored_bodies("queue://tx"), ["m0"]);
    f.broker.rollback(TxWork {
        sends: Vec::new(),
        acks: vec![(h.clone(), tags)],
    });
    let again = sink.take();
    assert_eq!(bodies(&again), ["m0"]);
    assert!(again[0].redelivered);
}

// ---------------------------------------------------------------- temporary destinations

#[tokio::test]
async fn temp_queue_exists_until_its_connection_closes() {
    let f = Fixture::new();
    let conn = f.broker.next_connection_id();
    let temp = f.broker.create_temp(DestinationKind::TempQueue, conn, "r1");
    assert_eq!(temp.kind, DestinationKind::TempQueue);
    assert!(f.broker.temp_exists(&temp));
    let (_h, sink) = f.subscribe(&temp, individual(10));
    f.send(f.pmsg(&temp, "reply")).await;
    assert_eq!(sink.bodies(), ["reply"]);
    assert!(
        f.stored_lists().is_empty(),
        "temporary queues are never stored"
    );

    f.broker.connection_closed(conn, None);
    assert!(!f.broker.temp_exists(&temp));
    let err = f.broker.send(f.msg(&temp, "late")).await.unwrap_err();
    assert!(matches!(err, BrokerError::NoSuchDestination(_)));
    assert!(matches!(
        f.broker
            .subscribe(&temp, individual(10), None, Collector::new()),
        Err(BrokerError::NoSuchDestination(_))
    ));
}

#[tokio::test]
async fn temp_topic_is_deleted_when_its_connection_closes() {
    let f = Fixture::new();
    let conn = f.broker.next_connection_id();
    let other_conn = f.broker.next_connection_id();
    let temp = f.broker.create_temp(DestinationKind::TempTopic, conn, "t1");
    let keep = f
        .broker
        .create_temp(DestinationKind::TempTopic, other_conn, "t1");
    let (_h, sink) = f.subscribe(&temp, ConsumerOptions::default());
    f.send_body(&temp, "x").await;
    assert_eq!(sink.bodies(), ["x"]);
    f.broker.connection_closed(conn, None);
    let err = f.broker.send(f.msg(&temp, "late")).await.unwrap_err();
    assert!(matches!(err, BrokerError::NoSuchDestination(_)));
    assert!(
        f.broker.temp_exists(&keep),
        "other connections' temps survive"
    );
}

// ---------------------------------------------------------------- client ids

#[tokio::test]
async fn duplicate_client_id_is_refused_until_its_connection_closes() {
    let f = Fixture::new();
    f.broker.register_client_id("app").unwrap();
    assert!(matches!(
        f.broker.register_client_id("app"),
        Err(BrokerError::InUse(_))
    ));
    f.broker.register_client_id("other").unwrap();
    f.broker.connection_closed(1, Some("app"));
    f.broker.register_client_id("app").unwrap();
}

// ---------------------------------------------------------------- producer flow control

fn tiny_memory(timeout_ms: u64) -> BrokerConfig {
    BrokerConfig {
        destination_memory_limit_bytes: 1,
        send_fail_if_no_space_after_timeout_ms: timeout_ms,
        ..BrokerConfig::default()
    }
}

#[tokio::test]
async fn send_to_full_queue_without_consumer_fails_with_resource_exhausted() {
    let f = Fixture::with_config(tiny_memory(50));
    let q = Destination::queue("full");
    f.send_body(&q, "fills-it").await;
    let err = f.broker.send(f.msg(&q, "no-room")).await.unwrap_err();
    assert!(matches!(err, BrokerError::ResourceExhausted(_)), "{err}");
    assert_eq!(f.list("queue://full").pending, 1);
}

#[tokio::test]
async fn blocked_send_completes_once_a_consumer_acks() {
    // Wait as long as it takes (0): the send can only finish because the ack made room.
    let f = Fixture::with_config(tiny_memory(0));
    let q = Destination::queue("full");
    let (h, sink) = f.subscribe(&q, individual(1));
    f.send_body(&q, "first").await;
    let first = sink.take();
    assert_eq!(bodies(&first), ["first"]);

    let broker = f.broker.clone();
    let blocked = f.msg(&q, "second");
    let send = tokio::spawn(async move { broker.send(blocked).await.map(|_| ()) });
    // Let the spawned send run until it parks on the full queue.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!send.is_finished(), "the send must wait for space");
    assert_eq!(f.list("queue://full").stats.enqueued, 1);

    ack(&f, &h, AckScope::Individual(first[0].tag));
    send.await.unwrap().unwrap();
    assert_eq!(sink.bodies(), ["second"]);
}

// ---------------------------------------------------------------- slow non-durable subscriber

#[tokio::test]
async fn slow_topic_subscriber_discards_oldest_pending_without_blocking_publisher() {
    // Fixed-length ids so every message has the same footprint.
    let sized = |f: &Fixture, i: u32| {
        let mut m = f.msg(&Destination::topic("fast"), &format!("m{i:02}"));
        m.id = format!("ID:test-{i:04}").into();
        m
    };
    let probe = Fixture::new();
    let one_msg_bytes = sized(&probe, 0).size_bytes();
    let f = Fixture::with_config(BrokerConfig {
        // Room for the one in flight plus three pending.
        topic_subscriber_memory_limit_bytes: one_msg_bytes * 4,
        // Queues would block forever: proves the topic path never waits.
        send_fail_if_no_space_after_timeout_ms: 0,
        ..BrokerConfig::default()
    });
    let t = Destination::topic("fast");
    let (slow, slow_sink) = f.subscribe(&t, individual(1));
    let (_fast, fast_sink) = f.subscribe(&t, ConsumerOptions::default());
    for i in 0..10 {
        f.send(sized(&f, i)).await;
    }
    assert_eq!(fast_sink.len(), 10, "other subscribers are unaffected");
    let first = slow_sink.take();
    assert_eq!(bodies(&first), ["m00"]);
    let snap = f.list(slow.list_name());
    assert_eq!(snap.stats.discarded, 6);
    assert_eq!(snap.pending, 3);
    // What is left is the newest.
    ack(&f, &slow, AckScope::Individual(first[0].tag));
    let mut rest = Vec::new();
    while let Some(d) = slow_sink.take().pop() {
        rest.push(body(&d));
        ack(&f, &slow, AckScope::Individual(d.tag));
    }
    assert_eq!(rest, ["m07", "m08", "m09"]);
}

// ---------------------------------------------------------------- more edges

#[tokio::test]
async fn auto_ack_of_a_delivery_frees_its_slot_and_its_stored_copy() {
    let f = Fixture::new();
    let q = Destination::queue("auto");
    let (h, sink) = f.subscribe(&q, opts(AckMode::Auto, 1));
    f.send(f.pmsg(&q, "m0")).await;
    f.send(f.pmsg(&q, "m1")).await;
    let first = sink.take();
    assert_eq!(bodies(&first), ["m0"]);
    f.broker.ack_delivery(&first[0]).wait_blocking().unwrap();
    assert_eq!(sink.bodies(), ["m1"]);
    assert_eq!(f.stored_bodies("queue://auto"), ["m1"]);
    // A delivery whose consumer has gone is ignored: it was already returned to the queue.
    let second = sink.take();
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    f.broker.ack_delivery(&second[0]).wait_blocking().unwrap();
    assert_eq!(f.stored_bodies("queue://auto"), ["m1"]);
    assert_eq!(f.list("queue://auto").pending, 1);
}

/// The deliveries of one socket write, acknowledged together: every one leaves its list and
/// the store (across destinations), and those whose consumer has gone are skipped.
#[tokio::test]
async fn auto_acks_of_one_write_go_to_the_store_together() {
    let f = Fixture::new();
    let (a, b, c) = (
        Destination::queue("auto-a"),
        Destination::queue("auto-b"),
        Destination::queue("auto-c"),
    );
    let (_ha, sink_a) = f.subscribe(&a, opts(AckMode::Auto, 10));
    let (_hb, sink_b) = f.subscribe(&b, opts(AckMode::Auto, 10));
    let (hc, sink_c) = f.subscribe(&c, opts(AckMode::Auto, 10));
    for i in 0..3 {
        for d in [&a, &b, &c] {
            f.send(f.pmsg(d, &format!("{}{i}", &d.name[5..]))).await;
        }
    }
    let mut write = sink_a.take();
    write.extend(sink_b.take());
    let from_c = sink_c.take();
    assert_eq!(bodies(&write), ["a0", "a1", "a2", "b0", "b1", "b2"]);
    assert_eq!(bodies(&from_c), ["c0", "c1", "c2"]);
    // c's consumer goes before the write is acknowledged: its deliveries were returned.
    f.broker.unsubscribe(&hc, false).wait_blocking().unwrap();
    write.extend(from_c);
    f.broker.ack_deliveries(&write).wait_blocking().unwrap();
    for q in ["queue://auto-a", "queue://auto-b"] {
        assert!(f.stored_bodies(q).is_empty(), "{q}");
        let l = f.list(q);
        assert_eq!(l.pending + l.inflight, 0, "{q}");
    }
    assert_eq!(f.stored_bodies("queue://auto-c"), ["c0", "c1", "c2"]);
    assert_eq!(f.list("queue://auto-c").pending, 3);
}

#[tokio::test]
async fn expired_topic_message_is_never_delivered_to_subscribers() {
    let f = Fixture::new();
    let t = Destination::topic("news");
    let (_h, sink) = f.subscribe(&t, ConsumerOptions::default());
    let mut m = f.msg(&t, "stale");
    m.expires_ms = f.now();
    f.send(m).await;
    f.send_body(&t, "fresh").await;
    assert_eq!(sink.bodies(), ["fresh"]);
}

#[tokio::test]
async fn full_inactive_durable_subscription_pages_persistent_and_refuses_non_persistent() {
    let f = Fixture::with_config(tiny_memory(50));
    let t = Destination::topic("events");
    let name = durable("c1", "sub");
    let (h, _sink) = f.subscribe_durable(&t, &name, individual(10));
    f.broker.unsubscribe(&h, false).wait_blocking().unwrap();
    f.send(f.pmsg(&t, "fills-it")).await;
    // Past the memory window a persistent message is paged to the store, not refused.
    f.send(f.pmsg(&t, "paged")).await;
    assert_eq!(f.stored_bodies("durable://c1:sub"), ["fills-it", "paged"]);
    // A non-persistent one has nowhere to go: producer flow control times out.
    let err = f.broker.send(f.msg(&t, "no-room")).await.unwrap_err();
    assert!(matches!(err, BrokerError::ResourceExhausted(_)), "{err}");
    // The subscriber comes back and gets both persistent messages, in order.
    let (_h, sink) = f.subscribe_durable(&t, &name, individual(10));
    assert_eq!(sink.bodies(), ["fills-it", "paged"]);
}

#[tokio::test]
async fn purge_removes_pending_messages_from_memory_and_store() {
    let f = Fixture::new();
    let q = Destination::queue("purge");
    for i in 0..3 {
        f.send(f.pmsg(&q, &format!("m{i}"))).await;
    }
    assert_eq!(f.broker.browse(&q, 2).len(), 2);
    let (n, c) = f.broker.purge(&q).unwrap();
    c.wait_blocking().unwrap();
    assert_eq!(n, 3);
    assert!(f.broker.browse(&q, 10).is_empty());
    assert!(f.stored_lists().is_empty());
    assert_eq!(f.list("queue://purge").memory_bytes, 0);
}

#[tokio::test]
async fn destination_limit_refuses_new_queues_and_topic_subscriptions() {
    let f = Fixture::with_config(BrokerConfig {
        max_destinations: 1,
        ..BrokerConfig::default()
    });
    f.send_body(&Destination::queue("one"), "x").await;
    f.send_body(&Destination::queue("one"), "y").await;
    let err = f
        .broker
        .send(f.msg(&Destination::queue("two"), "z"))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Limit(_)));
    assert!(matches!(
        f.broker.subscribe(
            &Destination::topic("t"),
            ConsumerOptions::default(),
            None,
            Collector::new()
        ),
        Err(BrokerError::Limit(_))
    ));
}

/// A local consumer acking each message.
fn local_opts() -> ConsumerOptions {
    ConsumerOptions {
        ack_mode: AckMode::ClientIndividual,
        ..ConsumerOptions::default()
    }
}

fn network_opts(target: &str, pin_ms: u64) -> ConsumerOptions {
    ConsumerOptions {
        ack_mode: AckMode::ClientIndividual,
        prefetch: 100,
        priority: ferromq_broker::NETWORK_CONSUMER_PRIORITY_BASE,
        network: Some(std::sync::Arc::new(ferromq_broker::NetworkRoute {
            target: target.into(),
            demand_path: vec![target.into()],
            message_ttl: 1,
            max_replays: 0,
            pin_ms,
        })),
        ..ConsumerOptions::default()
    }
}

/// A bridge that goes away with messages in flight may have had them stored by its target:
/// they wait for a network consumer to that target (the target's next master), neither going
/// to another broker's bridge nor to a local consumer, until the pin lapses.
#[tokio::test]
async fn messages_in_flight_on_a_lost_bridge_wait_for_its_target_until_the_pin_lapses() {
    let f = Fixture::new();
    let q = Destination::queue("pinned");
    let (to_b, b_sink) = f.subscribe(&q, network_opts("b", 1_000));
    for i in 0..3 {
        f.send(f.pmsg(&q, &format!("m{i}"))).await;
    }
    assert_eq!(b_sink.len(), 3);
    // Another broker's bridge and a local consumer are here when b's bridge goes.
    let (_to_c, c_sink) = f.subscribe(&q, network_opts("c", 1_000));
    let (_local, local_sink) = f.subscribe(&q, local_opts());
    f.broker.unsubscribe(&to_b, false).wait_blocking().unwrap();
    f.send(f.pmsg(&q, "fresh")).await;
    assert_eq!(
        local_sink.bodies(),
        ["fresh"],
        "unpinned messages flow as usual"
    );
    assert!(c_sink.bodies().is_empty(), "{:?}", c_sink.bodies());
    assert_eq!(f.list("queue://pinned").pending, 3);
    // b's bridge comes back (to b's new master): the pinned messages go to it, in order.
    let (_to_b2, b2_sink) = f.subscribe(&q, network_opts("b", 1_000));
    assert_eq!(b2_sink.bodies(), ["m0", "m1", "m2"]);
    assert!(b2_sink.take().iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn a_pinned_message_goes_elsewhere_once_its_pin_lapses_without_other_traffic() {
    let f = Fixture::new();
    let q = Destination::queue("lapse");
    let (to_b, b_sink) = f.subscribe(&q, network_opts("b", 1_000));
    f.send(f.pmsg(&q, "m")).await;
    assert_eq!(b_sink.len(), 1);
    let (_local, local_sink) = f.subscribe(&q, local_opts());
    f.broker.unsubscribe(&to_b, false).wait_blocking().unwrap();
    f.advance_ms(999);
    f.broker.expire_sweep();
    assert!(local_sink.bodies().is_empty(), "still pinned");
    f.advance_ms(1);
    f.broker.expire_sweep();
    assert_eq!(
        local_sink.bodies(),
        ["m"],
        "the sweep dispatches a lapsed pin"
    );
}

#[tokio::test]
async fn without_a_pin_a_lost_bridge_returns_its_messages_to_everyone() {
    let f = Fixture::new();
    let q = Destination::queue("nopin");
    let (to_b, b_sink) = f.subscribe(&q, network_opts("b", 0));
    f.send(f.pmsg(&q, "m")).await;
    assert_eq!(b_sink.len(), 1);
    let (_to_c, c_sink) = f.subscribe(&q, network_opts("c", 0));
    f.broker.unsubscribe(&to_b, false).wait_blocking().unwrap();
    assert_eq!(c_sink.bodies(), ["m"]);
}

/// A bridge whose remote demand went stops taking messages but keeps (and may still
/// acknowledge) what it holds, so nothing it may have sent comes back to go out again.
#[tokio::test]
async fn a_quiesced_consumer_takes_nothing_more_and_keeps_what_it_holds() {
    let f = Fixture::new();
    let q = Destination::queue("quiesce");
    let (to_b, b_sink) = f.subscribe(&q, network_opts("b", 1_000));
    f.send(f.pmsg(&q, "held")).await;
    assert_eq!(b_sink.len(), 1);
    assert_eq!(f.broker.inflight(&to_b), 1);
    f.broker.quiesce(&to_b);
    assert!(
        !f.broker.demand().iter().any(|d| d.destination == q),
        "no longer demand"
    );
    let (_to_c, c_sink) = f.subscribe(&q, network_opts("c", 1_000));
    f.send(f.pmsg(&q, "next")).await;
    assert_eq!(c_sink.bodies(), ["next"], "the others get what comes");
    assert_eq!(b_sink.len(), 1, "the quiesced consumer gets nothing more");
    let held = b_sink.take().remove(0);
    f.broker.ack_delivery(&held).wait_blocking().unwrap();
    assert_eq!(f.broker.inflight(&to_b), 0);
    f.broker.unsubscribe(&to_b, false).wait_blocking().unwrap();
    assert_eq!(c_sink.len(), 1, "the acknowledged message never comes back");
    assert_eq!(f.list("queue://quiesce").pending, 0);
}
