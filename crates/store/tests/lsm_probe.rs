//! A measurement, not a test: how long opening and `recover()` take on an lsm store holding a
//! million 1 KiB messages (after a clean close and after a drop without close), and the group
//! commit throughput on the way. Run: `cargo test --release -p ferromq-store --features lsm
//! --test lsm_probe -- --ignored --nocapture`.
#![cfg(feature = "lsm")]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferromq_store::{LsmConfig, LsmStore, MessageStore, Op};

const MESSAGES: u64 = 1_000_000;
const PER_BATCH: u64 = 100;
const LISTS: u64 = 10;

#[test]
#[ignore = "a measurement; run by hand in release"]
fn probe_million_message_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LsmStore::open(LsmConfig::new(dir.path())).unwrap());
    let payload = Bytes::from(vec![0x5Au8; 1024]);
    let started = Instant::now();
    // 4 producers, batches of 100 messages, several batches in flight each.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let payload = payload.clone();
            std::thread::spawn(move || {
                let mut pending = std::collections::VecDeque::new();
                let mut seq = 0u64;
                while seq < MESSAGES / 4 {
                    let batch = (0..PER_BATCH)
                        .map(|i| Op::Enqueue {
                            list: format!("queue://q{}", (t * 4 + i) % LISTS),
                            seq: t * MESSAGES + seq + i,
                            payload: payload.clone(),
                        })
                        .collect();
                    seq += PER_BATCH;
                    pending.push_back(store.submit(batch));
                    if pending.len() >= 8 {
                        pending.pop_front().unwrap().wait_blocking().unwrap();
                    }
                }
                for c in pending {
                    c.wait_blocking().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fill = started.elapsed();
    let stats = store.stats();
    println!(
        "fill: {MESSAGES} x 1 KiB in {fill:?} ({:.0} msg/s), {} groups, {} syncs, {:.1} batches per group",
        MESSAGES as f64 / fill.as_secs_f64(),
        stats.groups,
        stats.syncs,
        stats.batches as f64 / stats.groups as f64
    );
    let store = Arc::try_unwrap(store).unwrap();
    let closing = Instant::now();
    store.close().unwrap();
    println!("close (flush memtables): {:?}", closing.elapsed());
    drop(store);
    let opening = Instant::now();
    let store = LsmStore::open(LsmConfig::new(dir.path())).unwrap();
    let opened = opening.elapsed();
    report("after close", &store, opened, MESSAGES);
    // Then ~50 MiB more and a drop without close: the next open replays that much WAL.
    let extra = 50_000u64;
    for chunk in 0..extra / PER_BATCH {
        let batch = (0..PER_BATCH)
            .map(|i| Op::Enqueue {
                list: "queue://extra".into(),
                seq: chunk * PER_BATCH + i + 1,
                payload: payload.clone(),
            })
            .collect();
        store.submit(batch).wait_blocking().unwrap();
    }
    drop(store);
    let opening = Instant::now();
    let store = LsmStore::open(LsmConfig::new(dir.path())).unwrap();
    let opened = opening.elapsed();
    report("after drop without close", &store, opened, MESSAGES + extra);
}

fn report(round: &str, store: &LsmStore, opened: std::time::Duration, expected: u64) {
    let recovering = Instant::now();
    let r = store.recover().unwrap();
    let recovered = recovering.elapsed();
    let count: u64 = r.lists.iter().map(|l| l.count).sum();
    assert_eq!(count, expected);
    let loading = Instant::now();
    let page = store.load("queue://q3", None, 1000).unwrap();
    assert_eq!(page.len(), 1000);
    println!(
        "{round}: open {opened:?}, recover() {recovered:?} ({} lists, {count} messages), \
         first page of 1000 {:?}",
        r.lists.len(),
        loading.elapsed()
    );
}

/// 1 KiB messages, sync always, 1 and 16 producers each waiting for its message: the figure
/// to put next to the journal's (`uring_probe`).
#[test]
#[ignore = "a measurement; run by hand in release"]
fn probe_1kib_sync_always_producers() {
    for (producers, per_producer) in [(1u64, 2000u64), (16, 500)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LsmStore::open(LsmConfig::new(dir.path())).unwrap());
        let payload = Bytes::from(vec![0xA5u8; 1024]);
        let started = Instant::now();
        let threads: Vec<_> = (0..producers)
            .map(|p| {
                let store = store.clone();
                let payload = payload.clone();
                std::thread::spawn(move || {
                    let list = format!("queue://p{p}");
                    for seq in 1..=per_producer {
                        store
                            .submit(vec![Op::Enqueue {
                                list: list.clone(),
                                seq,
                                payload: payload.clone(),
                            }])
                            .wait_blocking()
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let elapsed = started.elapsed();
        let stats = store.stats();
        println!(
            "lsm producers={producers:2}: {:.0} msg/s, {:.1} messages per sync",
            (producers * per_producer) as f64 / elapsed.as_secs_f64(),
            stats.batches as f64 / stats.syncs.max(1) as f64
        );
    }
}

/// The LSM weak spot: a list whose first 200 000 messages were acked keeps their tombstones
/// until compaction, and `load(list, None, ..)` steps over them.
#[test]
#[ignore = "a measurement; run by hand in release"]
fn probe_load_from_the_start_after_many_acks() {
    let dir = tempfile::tempdir().unwrap();
    let store = LsmStore::open(LsmConfig::new(dir.path())).unwrap();
    let payload = Bytes::from(vec![0xA5u8; 1024]);
    let total = 200_010u64;
    for chunk in 0..total / 10 {
        let batch = (1..=10)
            .map(|i| Op::Enqueue {
                list: "queue://a".into(),
                seq: chunk * 10 + i,
                payload: payload.clone(),
            })
            .collect();
        store.submit(batch).wait_blocking().unwrap();
        if chunk > 0 && chunk < total / 10 {
            let acks = (1..=10)
                .map(|i| Op::Dequeue {
                    list: "queue://a".into(),
                    seq: (chunk - 1) * 10 + i,
                })
                .collect();
            store.submit(acks).wait_blocking().unwrap();
        }
    }
    for round in 0..3 {
        let started = Instant::now();
        let page = store.load("queue://a", None, 10).unwrap();
        println!(
            "load(None, 10) over ~200k acked messages, round {round}: {:?}, first seq {}",
            started.elapsed(),
            page[0].seq
        );
    }
    let started = Instant::now();
    let page = store.load("queue://a", Some(total - 11), 10).unwrap();
    println!(
        "load(Some(last acked), 10): {:?}, {} messages",
        started.elapsed(),
        page.len()
    );
}
