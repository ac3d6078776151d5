//! End-to-end over real sockets with ferromq-client: what an ActiveMQ STOMP application does.

mod common;

use std::time::Duration;

use common::*;
use ferromq_client::AckMode;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_stomp_version_negotiates_and_round_trips() {
    let server = start("").await;
    for v in ["1.0", "1.1", "1.2"] {
        let c = connect_with(&server, version(v)).await;
        assert_eq!(c.version().as_str(), v);
        let q = format!("/queue/v{v}");
        let mut sub = c
            .subscribe(&q, AckMode::ClientIndividual, &[("id", "s")])
            .await
            .unwrap();
        c.send_with_receipt(&q, "body\0with nul", &[("x-key", "a:b\nc")])
            .await
            .unwrap();
        let m = sub.next_timeout(WAIT).await.expect("delivery");
        assert_eq!(m.body().as_ref(), b"body\0with nul");
        if v != "1.0" {
            assert_eq!(
                m.header("x-key"),
                Some("a:b\nc"),
                "escaped header round trip"
            );
        }
        assert_eq!(m.header("redelivered"), Some("false"));
        assert!(m.message_id().unwrap().starts_with("ID:"));
        c.ack(&m, None).await.unwrap();
        c.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn persistent_send_gets_receipt_and_message_carries_jms_headers() {
    let server = start("").await;
    let c = connect(&server).await;
    c.send_with_receipt(
        "/queue/orders",
        "o1",
        &[
            ("persistent", "true"),
            ("priority", "7"),
            ("correlation-id", "corr-1"),
            ("type", "order"),
            ("reply-to", "/queue/replies"),
        ],
    )
    .await
    .unwrap();
    let mut sub = c
        .subscribe("/queue/orders", AckMode::Auto, &[])
        .await
        .unwrap();
    let m = sub.next_timeout(WAIT).await.unwrap();
    assert_eq!(m.header("persistent"), Some("true"));
    assert_eq!(m.header("priority"), Some("7"));
    assert_eq!(m.header("correlation-id"), Some("corr-1"));
    assert_eq!(m.header("type"), Some("order"));
    assert_eq!(m.header("reply-to"), Some("/queue/replies"));
    assert_eq!(m.destination(), Some("/queue/orders"));
    assert!(m.header("timestamp").unwrap().parse::<u64>().unwrap() > 0);
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn nack_redelivers_then_dead_letters_with_cause() {
    let server = start("[policy]\nmaximum_redeliveries = 2\n").await;
    let c = connect(&server).await;
    c.send_with_receipt("/queue/poison", "bad", &[("persistent", "true")])
        .await
        .unwrap();
    let mut sub = c
        .subscribe("/queue/poison", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    for i in 0..3 {
        let m = sub.next_timeout(WAIT).await.expect("delivery");
        assert_eq!(m.redelivered(), i > 0, "delivery {i}");
        c.nack(&m, None).await.unwrap();
    }
    let mut dlq = c
        .subscribe("/queue/ActiveMQ.DLQ", AckMode::Auto, &[])
        .await
        .unwrap();
    let d = dlq.next_timeout(WAIT).await.expect("dead-lettered message");
    assert_eq!(d.body().as_ref(), b"bad");
    assert_eq!(d.header("originalDestination"), Some("queue://poison"));
    assert!(d
        .header("dlqDeliveryFailureCause")
        .unwrap()
        .contains("maximumRedeliveries=2"));
    assert!(sub.next_timeout(Duration::from_millis(200)).await.is_none());
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn disconnect_without_ack_redelivers_to_the_next_consumer() {
    let server = start("").await;
    let a = connect(&server).await;
    a.send_with_receipt("/queue/w", "job", &[]).await.unwrap();
    let mut sa = a.subscribe("/queue/w", AckMode::Client, &[]).await.unwrap();
    let m = sa.next_timeout(WAIT).await.unwrap();
    assert!(!m.redelivered());
    a.disconnect().await.unwrap();
    let b = connect(&server).await;
    let mut sb = b.subscribe("/queue/w", AckMode::Client, &[]).await.unwrap();
    let m = sb.next_timeout(WAIT).await.expect("redelivery");
    assert!(m.redelivered());
    assert_eq!(m.body().as_ref(), b"job");
    b.ack(&m, None).await.unwrap();
    b.disconnect().await.unwrap();
}

#[tokio::test]
async fn client_ack_is_cumulative_and_prefetch_is_honoured() {
    let server = start("").await;
    let c = connect(&server).await;
    for i in 0..5 {
        c.send_with_receipt("/queue/cum", format!("{i}"), &[])
            .await
            .unwrap();
    }
    let mut sub = c
        .subscribe(
            "/queue/cum",
            AckMode::Client,
            &[("activemq.prefetchSize", "3")],
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.next_timeout(WAIT).await.unwrap());
    }
    assert!(
        sub.next_timeout(Duration::from_millis(200)).await.is_none(),
        "prefetch 3 exceeded"
    );
    // Acking the third acknowledges all three, which frees the window for the last two.
    c.ack(&got[2], None).await.unwrap();
    let m4 = sub.next_timeout(WAIT).await.unwrap();
    let m5 = sub.next_timeout(WAIT).await.unwrap();
    assert_eq!(
        (m4.body().as_ref(), m5.body().as_ref()),
        (&b"3"[..], &b"4"[..])
    );
    // Acking the first again is an error: it is gone.
    c.ack(&got[0], None).await.unwrap();
    assert!(
        c.closed().await.is_some(),
        "ACK of an acknowledged message must be refused"
    );
}

#[tokio::test]
async fn transactions_cover_sends_and_acks() {
    let server = start("").await;
    let c = connect(&server).await;
    let mut sub = c
        .subscribe("/queue/tx", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    c.begin("t1").await.unwrap();
    c.send("/queue/tx", "a", &[("transaction", "t1")])
        .await
        .unwrap();
    c.send("/queue/tx", "b", &[("transaction", "t1")])
        .await
        .unwrap();
    assert!(
        sub.next_timeout(Duration::from_millis(200)).await.is_none(),
        "visible before commit"
    );
    c.commit("t1").await.unwrap();
    let a = sub.next_timeout(WAIT).await.unwrap();
    let b = sub.next_timeout(WAIT).await.unwrap();
    // Ack both in a transaction, abort: both come back redelivered.
    c.begin("t2").await.unwrap();
    c.ack(&a, Some("t2")).await.unwrap();
    c.ack(&b, Some("t2")).await.unwrap();
    c.abort("t2").await.unwrap();
    let a2 = sub.next_timeout(WAIT).await.unwrap();
    let b2 = sub.next_timeout(WAIT).await.unwrap();
    assert!(a2.redelivered() && b2.redelivered());
    assert_eq!(a2.body().as_ref(), b"a");
    // Abort of sends discards them.
    c.begin("t3").await.unwrap();
    c.send("/queue/tx", "never", &[("transaction", "t3")])
        .await
        .unwrap();
    c.abort("t3").await.unwrap();
    c.ack(&a2, None).await.unwrap();
    c.ack(&b2, None).await.unwrap();
    assert!(sub.next_timeout(Duration::from_millis(200)).await.is_none());
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn topics_fan_out_with_wildcards_and_selectors() {
    let server = start("").await;
    let c = connect(&server).await;
    let mut all = c
        .subscribe("/topic/PRICE.>", AckMode::Auto, &[])
        .await
        .unwrap();
    let mut one = c
        .subscribe("/topic/PRICE.STOCK.*", AckMode::Auto, &[])
        .await
        .unwrap();
    let mut exact = c
        .subscribe("/topic/PRICE.STOCK.ORCL", AckMode::Auto, &[])
        .await
        .unwrap();
    let mut cheap = c
        .subscribe(
            "/topic/PRICE.STOCK.ORCL",
            AckMode::Auto,
            &[("selector", "price < 10 AND venue IN ('NYSE','LSE')")],
        )
        .await
        .unwrap();
    c.send_with_receipt(
        "/topic/PRICE.STOCK.ORCL",
        "p1",
        &[("price", "15"), ("venue", "NYSE")],
    )
    .await
    .unwrap();
    c.send_with_receipt(
        "/topic/PRICE.STOCK.ORCL",
        "p2",
        &[("price", "5"), ("venue", "LSE")],
    )
    .await
    .unwrap();
    c.send_with_receipt("/topic/PRICE.BOND.X", "b1", &[])
        .await
        .unwrap();
    let bodies = |v: Vec<ferromq_client::ReceivedMessage>| -> Vec<String> {
        v.iter()
            .map(|m| String::from_utf8_lossy(m.body()).into_owned())
            .collect()
    };
    let mut take = Vec::new();
    for _ in 0..3 {
        take.push(all.next_timeout(WAIT).await.unwrap());
    }
    assert_eq!(bodies(take), ["p1", "p2", "b1"]);
    let v = vec![
        one.next_timeout(WAIT).await.unwrap(),
        one.next_timeout(WAIT).await.unwrap(),
    ];
    assert_eq!(bodies(v), ["p1", "p2"]);
    let v = vec![
        exact.next_timeout(WAIT).await.unwrap(),
        exact.next_timeout(WAIT).await.unwrap(),
    ];
    assert_eq!(bodies(v), ["p1", "p2"]);
    assert_eq!(
        bodies(vec![cheap.next_timeout(WAIT).await.unwrap()]),
        ["p2"]
    );
    assert!(one.next_timeout(Duration::from_millis(200)).await.is_none());
    assert!(cheap
        .next_timeout(Duration::from_millis(100))
        .await
        .is_none());
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn durable_subscription_keeps_messages_while_away() {
    let server = start("").await;
    let sub_hdrs = [("id", "d1"), ("activemq.subscriptionName", "audit")];
    let c = connect_with(&server, with_client_id("app-1")).await;
    let s = c
        .subscribe("/topic/events", AckMode::Client, &sub_hdrs)
        .await
        .unwrap();
    // A second connection with the same client id is refused while the first is up.
    let dup =
        ferromq_client::Client::connect(&server.stomp_addr.to_string(), with_client_id("app-1"))
            .await;
    assert!(
        matches!(dup, Err(ferromq_client::ClientError::Server { ref message, .. }) if message.contains("already connected")),
        "{dup:?}"
    );
    drop(s);
    c.disconnect().await.unwrap();

    let p = connect(&server).await;
    for i in 0..3 {
        p.send_with_receipt("/topic/events", format!("e{i}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    let c = connect_with(&server, with_client_id("app-1")).await;
    let mut s = c
        .subscribe("/topic/events", AckMode::Client, &sub_hdrs)
        .await
        .unwrap();
    let mut last = None;
    for i in 0..3 {
        let m = s.next_timeout(WAIT).await.expect("kept while away");
        assert_eq!(m.body().as_ref(), format!("e{i}").as_bytes());
        last = Some(m);
    }
    c.ack(&last.unwrap(), None).await.unwrap();
    // Removing the durable subscription: later messages are not kept for it.
    s.unsubscribe_with(&[("activemq.subscriptionName", "audit")])
        .await
        .unwrap();
    p.send_with_receipt("/topic/events", "after", &[("persistent", "true")])
        .await
        .unwrap();
    let mut s = c
        .subscribe("/topic/events", AckMode::Client, &sub_hdrs)
        .await
        .unwrap();
    assert!(s.next_timeout(Duration::from_millis(200)).await.is_none());
    c.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
}

#[tokio::test]
async fn temp_queue_request_reply() {
    let server = start("").await;
    let requester = connect(&server).await;
    let responder = connect(&server).await;
    let mut replies = requester
        .subscribe("/temp-queue/replies", AckMode::Auto, &[])
        .await
        .unwrap();
    let mut requests = responder
        .subscribe("/queue/service", AckMode::Auto, &[])
        .await
        .unwrap();
    requester
        .send_with_receipt(
            "/queue/service",
            "ping",
            &[
                ("reply-to", "/temp-queue/replies"),
                ("correlation-id", "42"),
            ],
        )
        .await
        .unwrap();
    let req = requests.next_timeout(WAIT).await.unwrap();
    let reply_to = req.header("reply-to").unwrap().to_string();
    assert!(reply_to.starts_with("/remote-temp-queue/ID:"), "{reply_to}");
    responder
        .send_with_receipt(&reply_to, "pong", &[("correlation-id", "42")])
        .await
        .unwrap();
    let rep = replies.next_timeout(WAIT).await.unwrap();
    assert_eq!(rep.body().as_ref(), b"pong");
    assert_eq!(rep.destination(), Some("/temp-queue/replies"));
    requester.disconnect().await.unwrap();
    // The temporary queue dies with its connection (the broker finishes closing the
    // connection just after the DISCONNECT receipt, so allow it a moment).
    let mut deleted = false;
    for _ in 0..50 {
        if server
            .broker
            .snapshot()
            .iter()
            .all(|s| !s.name.contains("temp-queue://"))
        {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        deleted,
        "temporary queue must be deleted when its connection closes"
    );
    let late = responder.send_with_receipt(&reply_to, "late", &[]).await;
    assert!(
        late.is_err(),
        "sending to a deleted temporary queue must fail"
    );
}

#[tokio::test]
async fn priority_is_honoured_and_expired_messages_are_not_delivered() {
    let server = start("").await;
    let c = connect(&server).await;
    c.send_with_receipt("/queue/p", "low", &[("priority", "1")])
        .await
        .unwrap();
    c.send_with_receipt(
        "/queue/p",
        "expired",
        &[("expires", "1"), ("persistent", "true")],
    )
    .await
    .unwrap();
    c.send_with_receipt("/queue/p", "high", &[("priority", "9")])
        .await
        .unwrap();
    let mut s = c.subscribe("/queue/p", AckMode::Auto, &[]).await.unwrap();
    assert_eq!(s.next_timeout(WAIT).await.unwrap().body().as_ref(), b"high");
    assert_eq!(s.next_timeout(WAIT).await.unwrap().body().as_ref(), b"low");
    assert!(s.next_timeout(Duration::from_millis(200)).await.is_none());
    let mut dlq = c
        .subscribe("/queue/ActiveMQ.DLQ", AckMode::Auto, &[])
        .await
        .unwrap();
    let d = dlq.next_timeout(WAIT).await.unwrap();
    assert_eq!(d.body().as_ref(), b"expired");
    assert_eq!(d.header("dlqDeliveryFailureCause"), Some("expired"));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn exclusive_consumer_takes_everything_until_it_leaves() {
    let server = start("").await;
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut sa = a
        .subscribe(
            "/queue/ex",
            AckMode::Auto,
            &[("activemq.exclusive", "true")],
        )
        .await
        .unwrap();
    let mut sb = b.subscribe("/queue/ex", AckMode::Auto, &[]).await.unwrap();
    for i in 0..4 {
        a.send_with_receipt("/queue/ex", format!("{i}"), &[])
            .await
            .unwrap();
    }
    for _ in 0..4 {
        sa.next_timeout(WAIT).await.unwrap();
    }
    assert!(sb.next_timeout(Duration::from_millis(200)).await.is_none());
    a.disconnect().await.unwrap();
    b.send_with_receipt("/queue/ex", "after", &[])
        .await
        .unwrap();
    assert_eq!(
        sb.next_timeout(WAIT).await.unwrap().body().as_ref(),
        b"after"
    );
    b.disconnect().await.unwrap();
}

#[tokio::test]
async fn heartbeating_client_stays_connected_while_idle() {
    // Twelve intervals of idleness. The interval is 250 ms rather than the minimum so that a
    // test runner starved of CPU by parallel tests (the broker closes after 1.5 intervals of
    // silence) does not make an idle-but-alive client look dead.
    let server = start("[stomp]\nheart_beat_min_ms = 50\n").await;
    let cfg = ferromq_client::ClientConfig {
        heart_beat: ferromq_protocol::stomp::HeartBeat {
            send_ms: 250,
            recv_ms: 250,
        },
        ..Default::default()
    };
    let c = connect_with(&server, cfg).await;
    assert_eq!(c.heart_beat_ms(), (250, 250));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        !c.is_closed(),
        "heart-beats must keep an idle connection open"
    );
    c.send_with_receipt("/queue/hb", "x", &[]).await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn competing_consumers_share_a_queue_exactly_once() {
    let server = start("").await;
    let p = connect(&server).await;
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut sa = a
        .subscribe(
            "/queue/rr",
            AckMode::Auto,
            &[("activemq.prefetchSize", "1")],
        )
        .await
        .unwrap();
    let mut sb = b
        .subscribe(
            "/queue/rr",
            AckMode::Auto,
            &[("activemq.prefetchSize", "1")],
        )
        .await
        .unwrap();
    let n = 200;
    for i in 0..n {
        p.send("/queue/rr", format!("{i}"), &[]).await.unwrap();
    }
    p.send_with_receipt("/queue/rr", "end", &[]).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut na, mut nb) = (0, 0);
    while seen.len() < n + 1 {
        tokio::select! {
            Some(m) = sa.next() => { na += 1; assert!(seen.insert(m.body().clone()), "duplicate"); }
            Some(m) = sb.next() => { nb += 1; assert!(seen.insert(m.body().clone()), "duplicate"); }
            _ = tokio::time::sleep(WAIT) => panic!("only {} of {} delivered", seen.len(), n + 1),
        }
    }
    assert!(na > 0 && nb > 0, "both consumers must get work: {na}/{nb}");
}

/// A topic message's headers are encoded once per protocol variant and shared by its
/// subscribers (`Message::wire`): each subscriber must still see its own `subscription` and
/// `ack` headers, its version's escaping, and a temporary `reply-to` under the name its own
/// connection knows it by.
#[tokio::test]
async fn topic_fan_out_shares_the_encoding_but_not_the_per_subscriber_headers() {
    let server = start("").await;
    let mut subs = Vec::new();
    for (i, v) in ["1.0", "1.1", "1.2", "1.2", "1.1", "1.0"]
        .iter()
        .enumerate()
    {
        let c = connect_with(&server, version(v)).await;
        let id = format!("sub-{i}");
        let s = c
            .subscribe("/topic/shared", AckMode::ClientIndividual, &[("id", &id)])
            .await
            .unwrap();
        subs.push((v.to_string(), id, c, s));
    }
    let producer = connect(&server).await;
    let mut replies = producer
        .subscribe("/temp-queue/answers", AckMode::Auto, &[])
        .await
        .unwrap();
    // The temporary queue's owner subscribes too (same version as others): it must see its
    // own name for it, the others the global one.
    let mut own = producer
        .subscribe("/topic/shared", AckMode::Auto, &[("id", "own")])
        .await
        .unwrap();
    for n in 0..3 {
        producer
            .send_with_receipt(
                "/topic/shared",
                format!("body {n}"),
                &[("x-key", "a:b\\c"), ("x-n", &n.to_string())],
            )
            .await
            .unwrap();
    }
    producer
        .send_with_receipt(
            "/topic/shared",
            "ask",
            &[("reply-to", "/temp-queue/answers")],
        )
        .await
        .unwrap();
    let mut acks_seen = std::collections::HashSet::new();
    for (v, id, c, s) in &mut subs {
        for n in 0..3 {
            let m = s.next_timeout(WAIT).await.expect("delivery");
            assert_eq!(m.body().as_ref(), format!("body {n}").as_bytes());
            assert_eq!(m.header("subscription"), Some(id.as_str()), "{v}");
            assert_eq!(m.header("destination"), Some("/topic/shared"));
            assert_eq!(m.header("x-n"), Some(n.to_string().as_str()));
            assert_eq!(m.header("x-key"), Some("a:b\\c"), "{v} escaping");
            if v == "1.2" {
                let ack = m.header("ack").expect("1.2 ack header").to_string();
                assert!(acks_seen.insert(ack), "every delivery has its own ack id");
            } else {
                assert_eq!(m.header("ack"), None, "{v} has no ack header");
            }
            c.ack(&m, None).await.unwrap();
        }
        let ask = s.next_timeout(WAIT).await.expect("the question");
        let reply_to = ask.header("reply-to").expect("reply-to").to_string();
        assert!(reply_to.starts_with("/remote-temp-queue/ID:"), "{reply_to}");
        c.send_with_receipt(&reply_to, format!("answer from {id}"), &[])
            .await
            .unwrap();
        c.ack(&ask, None).await.unwrap();
    }
    for _ in 0..3 {
        own.next_timeout(WAIT).await.expect("own delivery");
    }
    let ask = own.next_timeout(WAIT).await.expect("own question");
    assert_eq!(ask.header("reply-to"), Some("/temp-queue/answers"));
    // The owner sees its temporary queue by its own name, and every answer arrived.
    let mut answers = Vec::new();
    for _ in 0..subs.len() {
        let a = replies.next_timeout(WAIT).await.expect("an answer");
        assert_eq!(a.destination(), Some("/temp-queue/answers"));
        answers.push(String::from_utf8_lossy(a.body()).to_string());
    }
    answers.sort();
    let mut expected: Vec<String> = (0..subs.len())
        .map(|i| format!("answer from sub-{i}"))
        .collect();
    expected.sort();
    assert_eq!(answers, expected);
}

/// What an auto-ack consumer took, and what is left on the queue: every message must be in
/// exactly one of the two, and none may have been dead-lettered (with `maximumRedeliveries = 0`
/// one miscounted delivery is enough to send a message to the DLQ).
async fn check_auto_ack_accounting(
    server: &ferromq_server::server::Server,
    queue: &str,
    n: usize,
    got: Vec<String>,
) {
    let list = server
        .broker
        .snapshot()
        .into_iter()
        .find(|l| l.name.ends_with(queue))
        .expect("the queue exists");
    assert_eq!(
        list.stats.poisoned, 0,
        "messages were dead-lettered although no consumer ever gave one back after seeing it"
    );
    let c = connect(server).await;
    let mut sub = c
        .subscribe(&format!("/queue/{queue}"), AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    let mut rest = Vec::new();
    while rest.len() + got.len() < n {
        let m = sub.next_timeout(WAIT).await.unwrap_or_else(|| {
            panic!(
                "{} taken + {} left of {n}: messages are missing",
                got.len(),
                rest.len()
            )
        });
        c.ack(&m, None).await.unwrap();
        rest.push(String::from_utf8_lossy(&m.body()[..7]).into_owned());
    }
    let mut all: Vec<String> = got.into_iter().chain(rest).collect();
    all.sort();
    let len = all.len();
    all.dedup();
    assert_eq!(
        all.len(),
        len,
        "a message was both taken by the auto-ack consumer and left on the queue"
    );
    assert_eq!(len, n);
    // The ACKs went without receipts; the DISCONNECT's receipt comes after all of them.
    c.disconnect().await.unwrap();
    let list = server
        .broker
        .snapshot()
        .into_iter()
        .find(|l| l.name.ends_with(queue))
        .unwrap();
    assert_eq!(
        list.pending + list.inflight,
        0,
        "more messages than were sent"
    );
}

async fn fill(server: &ferromq_server::server::Server, queue: &str, n: usize) {
    let p = connect(server).await;
    for i in 0..n {
        let receipt = i + 1 == n;
        // Large enough that the prefetch does not fit in the socket buffers: the writer is
        // blocked in a write when the client's next frame arrives.
        let body = format!("m{i:06}{}", ".".repeat(8 * 1024));
        if receipt {
            p.send_with_receipt(&format!("/queue/{queue}"), body, &[("persistent", "true")])
                .await
                .unwrap();
        } else {
            p.send(&format!("/queue/{queue}"), body, &[("persistent", "true")])
                .await
                .unwrap();
        }
    }
    p.disconnect().await.unwrap();
}

/// Fills `queue` with `n` messages, subscribes a raw `ack:auto` consumer with a prefetch of
/// 1000 and waits for its first MESSAGE: the broker is then writing the rest of the prefetch.
async fn fill_and_take_one(
    server: &ferromq_server::server::Server,
    queue: &str,
    n: usize,
) -> (Raw, Vec<String>) {
    fill(server, queue, n).await;
    let mut raw = Raw::connected(server).await;
    raw.send(
        format!("SUBSCRIBE\nid:s\ndestination:/queue/{queue}\nack:auto\nactivemq.prefetchSize:1000\n\n\0")
            .as_bytes(),
    )
    .await;
    let first = raw.frame().await.expect("a first MESSAGE");
    assert_eq!(first.command.as_str(), "MESSAGE", "{first:?}");
    let got = vec![String::from_utf8_lossy(&first.body[..7]).into_owned()];
    (raw, got)
}

/// An auto-ack consumer that unsubscribes right after its first message: what the broker wrote
/// to it before the RECEIPT is consumed, the rest stays on the queue uncounted, and nothing
/// arrives for the subscription after the RECEIPT. (Found under load: the unsubscribe overtook
/// the writer's acknowledgement of what it had just written, so those messages were both
/// delivered and put back as redelivered — and with `maximumRedeliveries = 0` dead-lettered.)
#[tokio::test]
async fn auto_ack_unsubscribe_consumes_exactly_what_was_written() {
    const N: usize = 3000;
    let server = start("[policy]\nmaximum_redeliveries = 0\n").await;
    for round in 0..3 {
        let queue = format!("auto-unsub-{round}");
        let (mut raw, mut got) = fill_and_take_one(&server, &queue, N).await;
        raw.send(b"UNSUBSCRIBE\nid:s\nreceipt:u\n\n\0").await;
        loop {
            let f = raw.frame().await.expect("the UNSUBSCRIBE's RECEIPT");
            match f.command.as_str() {
                "MESSAGE" => got.push(String::from_utf8_lossy(&f.body[..7]).into_owned()),
                "RECEIPT" => {
                    assert_eq!(f.header("receipt-id"), Some("u"));
                    break;
                }
                other => panic!("unexpected {other}: {f:?}"),
            }
        }
        raw.send(b"DISCONNECT\nreceipt:d\n\n\0").await;
        let f = raw.frame().await.expect("the DISCONNECT's RECEIPT");
        assert_eq!(
            f.command.as_str(),
            "RECEIPT",
            "a frame arrived for a subscription after its UNSUBSCRIBE was receipted: {f:?}"
        );
        check_auto_ack_accounting(&server, &queue, N, got).await;
    }
}

/// The same when the consumer disconnects instead: deliveries queued for the connection but
/// never written go back without counting as a delivery.
#[tokio::test]
async fn auto_ack_disconnect_returns_unwritten_deliveries_uncounted() {
    const N: usize = 3000;
    let server = start("[policy]\nmaximum_redeliveries = 0\n").await;
    for round in 0..3 {
        let queue = format!("auto-disc-{round}");
        let (mut raw, mut got) = fill_and_take_one(&server, &queue, N).await;
        raw.send(b"DISCONNECT\nreceipt:d\n\n\0").await;
        loop {
            let f = raw.frame().await.expect("the DISCONNECT's RECEIPT");
            match f.command.as_str() {
                "MESSAGE" => got.push(String::from_utf8_lossy(&f.body[..7]).into_owned()),
                "RECEIPT" => break,
                other => panic!("unexpected {other}: {f:?}"),
            }
        }
        // Everything written before the connection closed was acknowledged by the writer; read
        // it all (the server closes the connection after the RECEIPT).
        while let Some(f) = raw.frame().await {
            assert_eq!(f.command.as_str(), "MESSAGE", "{f:?}");
            got.push(String::from_utf8_lossy(&f.body[..7]).into_owned());
        }
        check_auto_ack_accounting(&server, &queue, N, got).await;
    }
}
