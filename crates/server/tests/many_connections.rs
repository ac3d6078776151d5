//! Thousands of concurrent STOMP connections on one broker (issue 16, item 5): every one is
//! served, a queue's messages are spread round-robin over all of them, and idle ones stay
//! open. The 10,000-connection measurement (memory per connection, throughput beside them) is
//! `scripts/bench-scale.sh`; this is its CI-sized check.

mod common;

use std::collections::HashSet;

use common::*;

const CONNECTIONS: usize = 2_000;
const QUEUES: usize = 20;

/// Lets this process open the sockets of both ends (the in-process broker's too).
fn raise_fd_limit(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum;
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft >= want {
        return;
    }
    let new = hard.map_or(want, |h| h.min(want));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(new),
            maximum: hard,
        },
    )
    .expect("raise RLIMIT_NOFILE");
    assert!(
        new >= want,
        "the hard limit on open files ({hard:?}) is below the {want} this test needs"
    );
}

#[tokio::test]
async fn two_thousand_connections_are_served_and_share_queues_round_robin() {
    raise_fd_limit((2 * CONNECTIONS + 256) as u64);
    let server = start(&format!(
        "[stomp]\nmax_connections = {}\n",
        CONNECTIONS + 10
    ))
    .await;
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut c = Raw::connected(&server).await;
        c.send(
            format!(
                "SUBSCRIBE\nid:s\ndestination:/queue/many.{}\nack:client-individual\nreceipt:sub\n\n\0",
                i % QUEUES
            )
            .as_bytes(),
        )
        .await;
        conns.push(c);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let f = c
            .frame()
            .await
            .unwrap_or_else(|| panic!("connection {i}: no receipt"));
        assert_eq!(f.command.as_str(), "RECEIPT", "connection {i}: {f:?}");
    }

    let mut producer = Raw::connected(&server).await;
    let mut sends = Vec::new();
    for n in 0..CONNECTIONS {
        sends.extend_from_slice(
            format!("SEND\ndestination:/queue/many.{}\n\nm{n}\0", n % QUEUES).as_bytes(),
        );
    }
    sends.extend_from_slice(b"SEND\ndestination:/queue/many.marker\nreceipt:all\n\nx\0");
    producer.send(&sends).await;
    let f = producer.frame().await.expect("receipt for the last send");
    assert_eq!(f.command.as_str(), "RECEIPT");

    // Round-robin over 100 consumers per queue: each connection gets exactly one message.
    let mut bodies = HashSet::new();
    for (i, c) in conns.iter_mut().enumerate() {
        let m = c
            .frame()
            .await
            .unwrap_or_else(|| panic!("connection {i}: no message"));
        assert_eq!(m.command.as_str(), "MESSAGE", "connection {i}: {m:?}");
        let body = String::from_utf8(m.body.to_vec()).unwrap();
        assert!(bodies.insert(body.clone()), "{body} delivered twice");
        let ack = m.header("ack").expect("1.2 ack header").to_string();
        c.send(format!("ACK\nid:{ack}\n\n\0").as_bytes()).await;
    }
    assert_eq!(bodies.len(), CONNECTIONS);

    // Every connection is still open and answered, and none got a second message.
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(b"DISCONNECT\nreceipt:bye\n\n\0").await;
        let f = c
            .frame()
            .await
            .unwrap_or_else(|| panic!("connection {i}: no DISCONNECT receipt"));
        assert_eq!(f.command.as_str(), "RECEIPT", "connection {i}: {f:?}");
    }
    let lists: Vec<_> = server
        .broker
        .snapshot()
        .into_iter()
        .filter(|s| s.name.contains("many.") && !s.name.contains("marker"))
        .collect();
    assert_eq!(lists.len(), QUEUES);
    let held: u64 = lists.iter().map(|s| s.pending + s.inflight).sum();
    let acked: u64 = lists.iter().map(|s| s.stats.dequeued).sum();
    assert_eq!(held, 0, "every message was acked");
    assert_eq!(acked, CONNECTIONS as u64);
}
