//! Client failover under repeated kill -9 of the master (shared-file master/slave): the
//! application sends and receives through `failover:` URIs and every message it sent is
//! delivered to it exactly once — no loss, no duplicate — thanks to resend with the same
//! `_AMQ_DUPL_ID`, the broker's persisted duplicate cache and the consumer's ack audit.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferromq_client::{AckMode, ClientConfig, FailoverClient};
use support::*;

const MESSAGES: usize = 400;
const KILLS: usize = 5;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_of_the_master_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let ports = [free_port(), free_port()];
    let base = dir.path().to_path_buf();
    let start = move |i: usize, gen: usize| {
        Proc::start(
            &format!("b{i}-{gen}"),
            &base,
            ports[i],
            &shared_file_config("chaos", &shared, ports[i], ""),
        )
    };
    let procs: Arc<Mutex<Vec<Proc>>> = Arc::new(Mutex::new(vec![start(0, 0)]));
    assert!(procs.lock().unwrap()[0]
        .wait_accepting(Duration::from_secs(30))
        .is_some());
    procs.lock().unwrap().push(start(1, 0));
    let uri = format!(
        "failover:(tcp://127.0.0.1:{},tcp://127.0.0.1:{})?randomize=false&initialReconnectDelay=10&maxReconnectDelay=200",
        ports[0], ports[1]
    );

    let producer = {
        let uri = uri.clone();
        tokio::spawn(async move {
            let p = FailoverClient::connect(&uri, ClientConfig::default())
                .await
                .unwrap();
            let mut blocked = Vec::new();
            for i in 0..MESSAGES {
                let t = Instant::now();
                p.send_with_receipt("/queue/chaos", format!("m-{i}"), &[("persistent", "true")])
                    .await
                    .unwrap();
                blocked.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            p.disconnect().await.unwrap();
            blocked
        })
    };
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let consumer = {
        let uri = uri.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let c = FailoverClient::connect(&uri, ClientConfig::default())
                .await
                .unwrap();
            let mut s = c
                .subscribe(
                    "/queue/chaos",
                    AckMode::ClientIndividual,
                    &[("id", "chaos")],
                )
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let Some(m) = s.next_timeout(Duration::from_millis(500)).await else {
                    if received.lock().unwrap().len() >= MESSAGES {
                        break;
                    }
                    continue;
                };
                let body = String::from_utf8_lossy(m.body()).into_owned();
                *received.lock().unwrap().entry(body).or_default() += 1;
                // The ack may be lost in a failover; the broker then redelivers and the
                // client's audit drops the redelivery.
                let _ = c.ack(&m, None).await;
            }
            let _ = c.disconnect().await;
        })
    };

    // Kill the master KILLS times, restarting each killed broker as the new slave.
    let mut takeovers = Vec::new();
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let procs2 = procs.clone();
        let start = start.clone();
        let took = tokio::task::spawn_blocking(move || {
            let mut ps = procs2.lock().unwrap();
            let master = (0..ps.len()).find(|&i| ps[i].accepts())?;
            let slave = 1 - master;
            ps[master].kill9();
            let took = ps[slave].wait_accepting(Duration::from_secs(30));
            let idx = ports.iter().position(|p| *p == ps[master].port).unwrap();
            ps[master] = start(idx, round + 1);
            took
        })
        .await
        .unwrap();
        let took = took.expect("no slave took over");
        takeovers.push(took);
    }

    let mut blocked = producer.await.unwrap();
    consumer.await.unwrap();
    let received = received.lock().unwrap();
    let missing: Vec<String> = (0..MESSAGES)
        .map(|i| format!("m-{i}"))
        .filter(|b| !received.contains_key(b))
        .collect();
    let dups: Vec<(&String, &usize)> = received.iter().filter(|(_, n)| **n > 1).collect();
    blocked.sort();
    takeovers.sort();
    eprintln!(
        "chaos: {MESSAGES} messages, {KILLS} kills; takeover to accepting p50 {:?} max {:?}; send blocked p50 {:?} p99 {:?} max {:?}",
        percentile(&takeovers, 0.5),
        takeovers.last().unwrap(),
        percentile(&blocked, 0.5),
        percentile(&blocked, 0.99),
        blocked.last().unwrap()
    );
    assert!(
        missing.is_empty(),
        "lost {} messages, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        dups.is_empty(),
        "duplicates delivered to the application: {dups:?}"
    );
    assert_eq!(received.len(), MESSAGES);
}
