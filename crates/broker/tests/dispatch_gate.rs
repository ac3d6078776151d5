//! The dispatch gate (`Broker::set_dispatch_paused`): what a suspended HA master uses so that it
//! hands nothing to its consumers while another broker may be delivering the same messages.

mod common;

use common::*;
use ferromq_broker::{AckScope, Destination};

#[tokio::test]
async fn a_paused_broker_delivers_nothing_and_on_resume_everything_once_in_order() {
    let f = Fixture::new();
    let q = Destination::queue("work");
    let t = Destination::topic("news");
    let (h, sink) = f.subscribe(&q, individual(100));
    let (_th, tsink) = f.subscribe(&t, individual(100));
    f.send(f.pmsg(&q, "before")).await;
    assert_eq!(sink.bodies(), ["before"]);
    // An unacknowledged delivery, rejected while paused: it must come back after resume only.
    let before = sink.take();

    f.broker.set_dispatch_paused(true);
    assert!(f.broker.dispatch_paused());
    for i in 0..5 {
        f.send(f.pmsg(&q, &format!("m{i}"))).await;
        f.send_body(&t, &format!("t{i}")).await;
    }
    f.broker.nack(&h, before[0].tag).unwrap();
    // A consumer subscribing while paused stays subscribed and receives nothing yet either.
    let (_late, late_sink) = f.subscribe(&q, individual(100));
    assert_eq!(sink.len(), 0, "paused: nothing reaches a queue consumer");
    assert_eq!(tsink.len(), 0, "paused: nothing reaches a topic subscriber");
    assert_eq!(late_sink.len(), 0, "paused: nothing reaches a new consumer");
    assert_eq!(
        f.list("queue://work").pending,
        6,
        "paused: messages wait in the queue"
    );

    f.broker.set_dispatch_paused(false);
    assert!(!f.broker.dispatch_paused());
    let mut got = sink.bodies();
    got.extend(late_sink.bodies());
    got.sort();
    assert_eq!(got, ["before", "m0", "m1", "m2", "m3", "m4"], "each once");
    // Per consumer, round-robin keeps the queue's order.
    for s in [&sink, &late_sink] {
        let b = s.bodies();
        let mut sorted = b.clone();
        sorted.sort();
        assert_eq!(b, sorted, "delivered out of order: {b:?}");
    }
    assert_eq!(tsink.bodies(), ["t0", "t1", "t2", "t3", "t4"]);
    // Resuming twice dispatches nothing twice.
    f.broker.set_dispatch_paused(false);
    assert_eq!(sink.len() + late_sink.len(), 6);
    for d in sink.take() {
        let (_, c) = f
            .broker
            .ack(&h, AckScope::Individual(d.tag), false)
            .unwrap();
        c.wait_blocking().unwrap();
    }
}
