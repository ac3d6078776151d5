//! Bounded memory: persistent lists keep only a window of messages in memory and page the rest
//! in from the store as consumers drain them, with every message delivered exactly once and in
//! order — also with a real journal whose confirmations arrive asynchronously, concurrent
//! producers, and across a restart.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use ferromq_broker::{AckScope, Broker, BrokerConfig, Destination, Message};
use ferromq_store::journal::MemDir;
use ferromq_store::{JournalConfig, JournalStore, MemoryStore, MessageStore, SyncMode};

const WINDOW: u64 = 16 * 1024;

fn small_window() -> BrokerConfig {
    BrokerConfig {
        destination_memory_limit_bytes: WINDOW,
        ..BrokerConfig::default()
    }
}

fn persistent(broker: &Broker, dest: &Destination, body: String) -> Message {
    Message {
        id: broker.next_message_id(),
        destination: dest.clone(),
        headers: Vec::new(),
        body: body.into(),
        persistent: true,
        priority: 4,
        timestamp_ms: T0_MS,
        expires_ms: 0,
        producer_connection: 1,
        wire: Default::default(),
    }
}

/// Drains `n` messages with a prefetch-10 individual-ack consumer, acking each; returns bodies
/// in delivery order and the largest resident memory seen while draining.
fn drain(broker: &Arc<Broker>, dest: &Destination, n: usize) -> (Vec<String>, u64) {
    let sink = Collector::new();
    let (h, _) = broker
        .subscribe(dest, individual(10), None, sink.clone())
        .unwrap();
    let mut got = Vec::new();
    let mut peak = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while got.len() < n {
        let batch = sink.take();
        if batch.is_empty() {
            // Producers may still be running (concurrent test); anything else is a stall.
            assert!(
                std::time::Instant::now() < deadline,
                "delivery stalled after {} of {n}",
                got.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        for d in batch {
            got.push(body(&d));
            let (_, c) = broker.ack(&h, AckScope::Individual(d.tag), false).unwrap();
            c.wait_blocking().unwrap();
        }
        let snap = broker.snapshot();
        let q = snap.iter().find(|s| s.name == dest.key()).unwrap();
        peak = peak.max(q.memory_bytes);
    }
    (got, peak)
}

#[tokio::test]
async fn a_deep_queue_holds_only_a_window_in_memory_and_drains_in_order() {
    let store = Arc::new(MemoryStore::new());
    let broker = Broker::open(
        small_window(),
        store.clone(),
        ferromq_broker::system_clock(),
    )
    .unwrap();
    let q = Destination::queue("deep");
    let n = 2000;
    for i in 0..n {
        let c = broker
            .send(persistent(&broker, &q, format!("{i:05}")))
            .await
            .unwrap();
        c.await.unwrap();
    }
    let snap = broker.snapshot();
    let s = snap.iter().find(|s| s.name == "queue://deep").unwrap();
    assert_eq!(
        s.pending, n as u64,
        "every message is counted, resident or not"
    );
    let one = persistent(&broker, &q, "00000".into()).size_bytes();
    assert!(
        s.memory_bytes <= WINDOW + one,
        "resident {} > window {}",
        s.memory_bytes,
        WINDOW
    );
    let (got, peak) = drain(&broker, &q, n);
    let want: Vec<String> = (0..n).map(|i| format!("{i:05}")).collect();
    assert_eq!(got, want);
    // Page-in reads at most one page past half the window.
    assert!(peak <= WINDOW + 500 * one, "peak resident {peak}");
    assert!(
        store.recover().unwrap().lists.is_empty(),
        "everything acked"
    );
}

#[tokio::test]
async fn recovery_does_not_load_the_backlog_until_a_consumer_needs_it() {
    let store = Arc::new(MemoryStore::new());
    let q = Destination::queue("backlog");
    {
        let broker = Broker::open(
            small_window(),
            store.clone(),
            ferromq_broker::system_clock(),
        )
        .unwrap();
        for i in 0..500 {
            broker
                .send(persistent(&broker, &q, format!("{i:04}")))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        store.close().unwrap();
    }
    store.reopen();
    let broker = Broker::open(
        small_window(),
        store.clone(),
        ferromq_broker::system_clock(),
    )
    .unwrap();
    let snap = broker.snapshot();
    let s = snap.iter().find(|s| s.name == "queue://backlog").unwrap();
    assert_eq!((s.pending, s.memory_bytes), (500, 0));
    // New messages go after the recovered ones.
    broker
        .send(persistent(&broker, &q, "new".into()))
        .await
        .unwrap()
        .await
        .unwrap();
    let (got, _) = drain(&broker, &q, 501);
    assert_eq!(got.first().map(String::as_str), Some("0000"));
    assert_eq!(got.last().map(String::as_str), Some("new"));
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_into_a_paging_queue_on_the_journal_lose_and_duplicate_nothing() {
    let cfg = JournalConfig {
        sync: SyncMode::Never,
        checkpoint_interval_ms: 0,
        cleanup_interval_ms: 0,
        ..JournalConfig::default()
    };
    let store: Arc<dyn MessageStore> =
        Arc::new(JournalStore::open_with(Arc::new(MemDir::new()), cfg).unwrap());
    let broker = Broker::open(small_window(), store, ferromq_broker::system_clock()).unwrap();
    let q = Destination::queue("busy");
    let producers = 8;
    let per = 250;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let broker = broker.clone();
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let m = persistent(&broker, &q, format!("p{p}-{i:04}"));
                broker.send(m).await.unwrap().await.unwrap();
            }
        }));
    }
    // Consume while they produce: pages are read while new messages are being paged out.
    let consumer = {
        let broker = broker.clone();
        let q = q.clone();
        tokio::task::spawn_blocking(move || drain(&broker, &q, producers * per))
    };
    for t in tasks {
        t.await.unwrap();
    }
    let (got, _) = consumer.await.unwrap();
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), producers * per, "duplicates delivered");
    // Per-producer order is kept.
    for p in 0..producers {
        let mine: Vec<&String> = got
            .iter()
            .filter(|b| b.starts_with(&format!("p{p}-")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "producer {p} out of order");
    }
}

#[tokio::test]
async fn a_full_store_makes_persistent_producers_wait_then_fail_and_drops_nothing() {
    let store = Arc::new(MemoryStore::new());
    let cfg = BrokerConfig {
        store_usage_limit_bytes: 4 * 1024,
        send_fail_if_no_space_after_timeout_ms: 50,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(cfg, store.clone(), ferromq_broker::system_clock()).unwrap();
    let q = Destination::queue("full");
    let big = |b: &Broker| {
        let mut m = persistent(b, &q, String::new());
        m.body = vec![b'x'; 1024].into();
        m
    };
    let mut accepted = 0;
    let err = loop {
        match broker.send(big(&broker)).await {
            Ok(c) => {
                c.await.unwrap();
                accepted += 1;
            }
            Err(e) => break e,
        }
        assert!(accepted < 100, "the store limit never stopped the producer");
    };
    assert!(
        matches!(err, ferromq_broker::BrokerError::ResourceExhausted(ref m) if m.contains("Store is Full")),
        "{err}"
    );
    assert!(store.usage_bytes() <= 4 * 1024 + 1100);
    // A consumer frees space; a producer waiting (no timeout) then gets through.
    let waiting = {
        let broker = broker.clone();
        let q = q.clone();
        tokio::spawn(async move {
            let mut m = persistent(&broker, &q, "late".into());
            m.body = vec![b'y'; 1024].into();
            broker.send(m).await
        })
    };
    let (got, _) = tokio::task::spawn_blocking({
        let broker = broker.clone();
        let q = q.clone();
        move || drain(&broker, &q, accepted)
    })
    .await
    .unwrap();
    assert_eq!(got.len(), accepted, "nothing accepted was dropped");
    // The waiting send had a 50 ms timeout: it either got in once space was freed, or timed out
    // before; in neither case may it have been stored without being confirmed.
    match waiting.await.unwrap() {
        Ok(c) => {
            c.await.unwrap();
            assert_eq!(store.recover().unwrap().lists.len(), 1);
        }
        Err(e) => {
            assert!(matches!(
                e,
                ferromq_broker::BrokerError::ResourceExhausted(_)
            ));
            assert!(store.recover().unwrap().lists.is_empty());
        }
    }
}
