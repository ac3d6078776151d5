//! Duplicate detection by `_AMQ_DUPL_ID`: a resend is acknowledged but neither stored nor
//! delivered twice — also after the original was consumed, and after a restart (a new master).

mod common;

use common::*;
use ferromq_broker::{
    AckScope, BrokerConfig, BrokerError, Destination, Message, TxWork, DUPLICATE_ID_HEADER,
};
use ferromq_store::StoreError;

fn with_id(mut m: Message, id: &str) -> Message {
    m.headers.push((DUPLICATE_ID_HEADER.into(), id.into()));
    m
}

#[tokio::test]
async fn a_resent_message_is_acknowledged_but_not_stored_or_delivered_twice() {
    let f = Fixture::new();
    let q = Destination::queue("orders");
    f.send(with_id(f.pmsg(&q, "o1"), "p1:1")).await;
    f.send(with_id(f.pmsg(&q, "o1"), "p1:1")).await;
    f.send(with_id(f.pmsg(&q, "o2"), "p1:2")).await;
    assert_eq!(f.stored_bodies("queue://orders"), ["o1", "o2"]);
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert_eq!(sink.bodies(), ["o1", "o2"]);
}

#[tokio::test]
async fn a_resend_after_the_original_was_consumed_and_after_a_restart_is_still_a_duplicate() {
    let f = Fixture::new();
    let q = Destination::queue("pay");
    f.send(with_id(f.pmsg(&q, "x"), "p9:1")).await;
    let (h, sink) = f.subscribe(&q, individual(10));
    let d = sink.take();
    let (_, c) = f
        .broker
        .ack(&h, AckScope::Individual(d[0].tag), false)
        .unwrap();
    c.await.unwrap();
    f.broker.unsubscribe(&h, false).await.unwrap();
    // A new master (restart on the same store) gets the resend whose receipt was lost.
    let f = f.restart();
    f.send(with_id(f.pmsg(&q, "x"), "p9:1")).await;
    assert!(
        f.stored_bodies("queue://pay").is_empty(),
        "the resend was stored again"
    );
    let (_h, sink) = f.subscribe(&q, individual(10));
    assert!(sink.bodies().is_empty(), "the resend was delivered again");
    // A genuinely new message still goes through.
    f.send(with_id(f.pmsg(&q, "y"), "p9:2")).await;
    assert_eq!(sink.bodies(), ["y"]);
}

#[tokio::test]
async fn the_id_cache_is_bounded_per_destination() {
    let f = Fixture::with_config(BrokerConfig {
        id_cache_size: 3,
        ..BrokerConfig::default()
    });
    let q = Destination::queue("b");
    for i in 0..10 {
        f.send(with_id(f.pmsg(&q, &format!("m{i}")), &format!("id{i}")))
            .await;
    }
    let ids = f.stored_lists();
    let cache = ids
        .iter()
        .find(|(l, _)| l == "dupids://queue://b")
        .map(|(_, n)| *n);
    assert_eq!(cache, Some(3), "only the last 3 ids are kept in the store");
    // The oldest id was forgotten: a message with it is accepted again.
    f.send(with_id(f.pmsg(&q, "again"), "id0")).await;
    assert_eq!(f.stored_bodies("queue://b").len(), 11);
}

#[tokio::test]
async fn duplicates_inside_a_transaction_are_dropped_at_commit() {
    let f = Fixture::new();
    let q = Destination::queue("tx");
    f.send(with_id(f.pmsg(&q, "a"), "t:1")).await;
    let tx = TxWork {
        sends: vec![
            with_id(f.pmsg(&q, "a"), "t:1"),
            with_id(f.pmsg(&q, "b"), "t:2"),
        ],
        acks: Vec::new(),
    };
    f.broker.commit(tx).await.unwrap().await.unwrap();
    assert_eq!(f.stored_bodies("queue://tx"), ["a", "b"]);
}

#[tokio::test]
async fn messages_without_an_id_are_never_deduplicated() {
    let f = Fixture::new();
    let q = Destination::queue("plain");
    f.send(f.pmsg(&q, "same")).await;
    f.send(f.pmsg(&q, "same")).await;
    assert_eq!(f.stored_bodies("queue://plain"), ["same", "same"]);
}

// ------------------------------------------- a resend while its original's write is in flight

#[tokio::test]
async fn a_resend_while_the_original_is_in_flight_is_confirmed_only_once_the_original_is_durable() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("inflight");
    let c1 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    assert_eq!(store.held(), 1);
    // The producer failed over before its receipt came and resends.
    let mut c2 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    assert_eq!(store.held(), 1, "the resend must not be written again");
    assert!(
        !resolved_now(&mut c2),
        "the resend was confirmed while its original was not yet stored"
    );
    store.release_next(Ok(()));
    c1.await.unwrap();
    c2.await.unwrap();
    assert_eq!(store.stored_bodies("queue://inflight"), ["o"]);
}

#[tokio::test]
async fn when_the_original_write_fails_its_id_is_forgotten_and_no_resend_is_confirmed() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("failing");
    let sink = Collector::new();
    let (_h, _) = broker
        .subscribe(&q, individual(10), None, sink.clone())
        .unwrap();
    let c1 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    let c2 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    store.release_next(Err(StoreError::Failed("disk full".into())));
    assert!(c1.await.is_err());
    assert!(
        c2.await.is_err(),
        "a resend was confirmed although nothing was stored"
    );
    // The id was forgotten: the producer's next resend is stored and delivered.
    let c3 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    assert_eq!(
        store.held(),
        1,
        "the later resend was dropped as a duplicate"
    );
    store.release_next(Ok(()));
    c3.await.unwrap();
    assert_eq!(store.stored_bodies("queue://failing"), ["o"]);
    assert_eq!(sink.bodies(), ["o"]);
}

#[tokio::test]
async fn a_committed_resend_of_an_in_flight_message_waits_for_the_original() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("txdup");
    let c1 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    let mut c2 = broker
        .commit(TxWork {
            sends: vec![
                with_id(persistent(&broker, &q, "o"), "p:1"),
                with_id(persistent(&broker, &q, "n"), "p:2"),
            ],
            acks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(store.held(), 2);
    // The commit's own batch is durable, but it also confirms the resend of "o".
    store.release_nth(1, Ok(()));
    settle().await;
    assert!(
        !resolved_now(&mut c2),
        "the commit was confirmed while the original of its resend was not yet stored"
    );
    store.release_next(Err(StoreError::Failed("disk full".into())));
    assert!(c1.await.is_err());
    assert!(
        c2.await.is_err(),
        "a commit including a resend of a message that was never stored was confirmed"
    );
}

#[tokio::test]
async fn resends_waiting_on_one_in_flight_original_are_bounded() {
    let (broker, store) = held_broker(BrokerConfig::default());
    let q = Destination::queue("many");
    let c1 = broker
        .send(with_id(persistent(&broker, &q, "o"), "p:1"))
        .await
        .unwrap();
    let mut waiting = Vec::new();
    let refused = loop {
        match broker
            .send(with_id(persistent(&broker, &q, "o"), "p:1"))
            .await
        {
            Ok(c) => waiting.push(c),
            Err(e) => break e,
        }
        assert!(waiting.len() <= 1_000, "resends were never refused");
    };
    assert!(matches!(refused, BrokerError::Limit(_)), "{refused:?}");
    assert!(!waiting.is_empty());
    store.release_next(Ok(()));
    c1.await.unwrap();
    for c in waiting {
        c.await.unwrap();
    }
}
