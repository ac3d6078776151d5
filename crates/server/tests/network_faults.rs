//! A network bridge under load while the brokers at both of its ends are killed (-9): no
//! confirmed message is lost, and none is stored twice on the receiving broker.
//!
//! Two `ferromq serve` processes on the journal (fdatasync per group): producers send receipted
//! persistent messages to a, a consumer on b takes them over a's bridge. Mid-stream b is killed
//! and restarted (the bridge's in-flight sends are unconfirmed: a resends them and b must drop
//! the copies it had already stored), then a is killed and restarted (a forgets which messages
//! it had forwarded but not yet removed: it forwards them again, and b must drop them again).
//!
//! A message stored twice on b would reach the consumer under two different b message ids; a
//! message b delivered twice because the consumer's ack died with b has one id. The check tells
//! the two apart: the second is the consumer's at-least-once, the first would be the bridge's
//! duplicate.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferromq_client::{AckMode, Client, ClientConfig, FailoverClient};
use support::{free_port, Proc};

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 2_500;
const BODY: usize = 1024;

fn config(name: &str, dir: &std::path::Path, port: u16, connectors: &str) -> String {
    format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n{connectors}",
        dir.join(name).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_either_end_of_a_bridge_mid_forward_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let cfg_b = config("b", dir.path(), pb, "");
    let cfg_a = config(
        "a",
        dir.path(),
        pa,
        &format!(
            "[[network_connectors]]\nname = \"to-b\"\nuri = \"static:(tcp://127.0.0.1:{pb})\"\ninitial_reconnect_delay_ms = 20\nmax_reconnect_delay_ms = 200\n"
        ),
    );
    let mut b = Proc::start("b", dir.path(), pb, &cfg_b);
    assert!(b.wait_accepting(Duration::from_secs(30)).is_some());
    let mut a = Proc::start("a", dir.path(), pa, &cfg_a);
    assert!(a.wait_accepting(Duration::from_secs(30)).is_some());

    // The consumer on b: reconnects whenever b goes away; records body -> b message ids.
    let received: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let deliveries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let (received, deliveries, stop) = (received.clone(), deliveries.clone(), stop.clone());
        tokio::spawn(async move {
            let addr = format!("127.0.0.1:{pb}");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(c) = Client::connect(&addr, ClientConfig::default()).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(mut s) = c
                    .subscribe("/queue/net", AckMode::ClientIndividual, &[])
                    .await
                else {
                    continue;
                };
                loop {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let Some(m) = s.next_timeout(Duration::from_millis(200)).await else {
                        if c.is_closed() {
                            break;
                        }
                        continue;
                    };
                    let body = String::from_utf8_lossy(&m.body()[..32.min(m.body().len())])
                        .trim_end_matches('.')
                        .to_string();
                    let id = m.message_id().unwrap_or("").to_string();
                    received.lock().unwrap().entry(body).or_default().insert(id);
                    deliveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if c.ack(&m, None).await.is_err() {
                        break;
                    }
                }
            }
        })
    };

    // Producers on a, through failover: a resend after a's restart carries the same
    // _AMQ_DUPL_ID, which a's duplicate detection drops.
    let confirmed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let confirmed = confirmed.clone();
        producers.push(tokio::spawn(async move {
            let uri = format!(
                "failover:(tcp://127.0.0.1:{pa})?initialReconnectDelay=10&maxReconnectDelay=200"
            );
            let c = FailoverClient::connect(&uri, ClientConfig::default())
                .await
                .unwrap();
            for i in 0..PER_PRODUCER {
                let key = format!("p{p}-{i}");
                let mut body = key.clone().into_bytes();
                body.resize(BODY, b'.');
                c.send_with_receipt("/queue/net", body, &[("persistent", "true")])
                    .await
                    .unwrap();
                confirmed.lock().unwrap().push(key);
            }
            let _ = c.disconnect().await;
        }));
    }

    let wait_for = |n: usize| {
        let deliveries = deliveries.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while deliveries.load(std::sync::atomic::Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "stalled before {n} deliveries");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let total = PRODUCERS * PER_PRODUCER;
    // Kill the receiving end with the bridge busy.
    wait_for(total / 5).await;
    b.kill9();
    let mut b = Proc::start("b2", dir.path(), pb, &cfg_b);
    assert!(b.wait_accepting(Duration::from_secs(30)).is_some());
    // Then the sending end.
    wait_for(total / 2).await;
    a.kill9();
    let a = Proc::start("a2", dir.path(), pa, &cfg_a);
    assert!(a.wait_accepting(Duration::from_secs(30)).is_some());

    for p in producers {
        p.await.unwrap();
    }
    let confirmed: Vec<String> = confirmed.lock().unwrap().clone();
    assert_eq!(confirmed.len(), total);
    // Every confirmed message reaches the consumer (positive event, bounded).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let missing = {
            let r = received.lock().unwrap();
            confirmed.iter().filter(|k| !r.contains_key(*k)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} confirmed messages never arrived on b"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    consumer.await.unwrap();
    let r = received.lock().unwrap();
    let stored_twice: Vec<(&String, &HashSet<String>)> =
        r.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let unknown: Vec<&String> = r.keys().filter(|k| !k.starts_with('p')).collect();
    eprintln!(
        "network faults: {total} confirmed, {} deliveries, {} distinct; stored twice: {}",
        deliveries.load(std::sync::atomic::Ordering::Relaxed),
        r.len(),
        stored_twice.len()
    );
    assert!(unknown.is_empty(), "unexpected bodies: {unknown:?}");
    assert!(
        stored_twice.is_empty(),
        "messages stored twice on b (a bridge duplicate): {:?}",
        &stored_twice[..stored_twice.len().min(5)]
    );
    drop(a);
    b.terminate();
}
