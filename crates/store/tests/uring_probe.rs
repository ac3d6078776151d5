//! A throughput probe, not a test: 1 KiB messages, sync always, 1 and 16 producers, portable
//! vs io_uring in the same run, rounds interleaved so load from other processes hits both.
//! Run: `cargo test --release -p ferromq-store --features io-uring --test uring_probe -- \
//! --ignored --nocapture`.
#![cfg(feature = "io-uring")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq_store::{JournalConfig, JournalIo, JournalStore, MessageStore, Op, SyncMode};

const MESSAGE_BYTES: usize = 1024;
const ROUNDS: usize = 5;

fn run(io: JournalIo, producers: usize, per_producer: u64) -> (Duration, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        io,
        sync: SyncMode::Always,
        checkpoint_interval_ms: 0,
        cleanup_interval_ms: 0,
        ..JournalConfig::default()
    };
    let store = Arc::new(JournalStore::open(dir.path(), config).unwrap());
    assert_eq!(store.io(), io);
    let payload = Bytes::from(vec![0xA5u8; MESSAGE_BYTES]);
    let seq = Arc::new(AtomicU64::new(1));
    // Warm-up: the segment's first blocks, the ring, the threads.
    for _ in 0..50 {
        store
            .submit(vec![Op::Enqueue {
                list: "queue://warm".into(),
                seq: seq.fetch_add(1, Ordering::Relaxed),
                payload: payload.clone(),
            }])
            .wait_blocking()
            .unwrap();
    }
    let before = store.stats();
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let store = store.clone();
            let payload = payload.clone();
            let seq = seq.clone();
            std::thread::spawn(move || {
                let list = format!("queue://p{p}");
                for _ in 0..per_producer {
                    store
                        .submit(vec![Op::Enqueue {
                            list: list.clone(),
                            seq: seq.fetch_add(1, Ordering::Relaxed),
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
    let after = store.stats();
    (
        elapsed,
        after.batches - before.batches,
        after.syncs - before.syncs,
    )
}

#[test]
#[ignore = "a measurement; run by hand in release"]
fn probe_portable_vs_io_uring_1kib_sync_always() {
    for (producers, per_producer) in [(1usize, 2000u64), (16, 500)] {
        let mut rates: Vec<(JournalIo, Vec<f64>, u64, u64)> = vec![
            (JournalIo::Portable, Vec::new(), 0, 0),
            (JournalIo::IoUring, Vec::new(), 0, 0),
        ];
        for _ in 0..ROUNDS {
            for entry in rates.iter_mut() {
                let (elapsed, batches, syncs) = run(entry.0, producers, per_producer);
                entry.1.push(batches as f64 / elapsed.as_secs_f64());
                entry.2 += batches;
                entry.3 += syncs;
            }
        }
        for (io, mut r, batches, syncs) in rates {
            r.sort_by(|a, b| a.total_cmp(b));
            println!(
                "producers={producers:2} io={io:?}: median {:.0} msg/s (min {:.0}, max {:.0}), \
                 {:.1} messages per sync, rounds {ROUNDS}",
                r[r.len() / 2],
                r[0],
                r[r.len() - 1],
                batches as f64 / syncs.max(1) as f64
            );
        }
    }
}

/// One producer, two stores (one per path) open side by side, messages alternating between
/// them: both paths see the same background load, so their latency percentiles compare even
/// on a busy machine.
#[test]
#[ignore = "a measurement; run by hand in release"]
fn probe_interleaved_latency_1kib_sync_always() {
    const MESSAGES: usize = 3000;
    let open = |io: JournalIo| {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            io,
            sync: SyncMode::Always,
            checkpoint_interval_ms: 0,
            cleanup_interval_ms: 0,
            ..JournalConfig::default()
        };
        let store = JournalStore::open(dir.path(), config).unwrap();
        assert_eq!(store.io(), io);
        (dir, store)
    };
    let stores = [open(JournalIo::Portable), open(JournalIo::IoUring)];
    let payload = Bytes::from(vec![0xA5u8; MESSAGE_BYTES]);
    let mut latencies_us: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..MESSAGES * 2 {
        let which = i % 2;
        let started = Instant::now();
        stores[which]
            .1
            .submit(vec![Op::Enqueue {
                list: "queue://lat".into(),
                seq: i as u64 + 1,
                payload: payload.clone(),
            }])
            .wait_blocking()
            .unwrap();
        // The first 100 of each warm up.
        if i >= 200 {
            latencies_us[which].push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    for (which, name) in ["Portable", "IoUring"].iter().enumerate() {
        let l = &mut latencies_us[which];
        l.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| l[((l.len() - 1) as f64 * q) as usize];
        println!(
            "interleaved io={name}: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us ({} messages)",
            at(0.5),
            at(0.9),
            at(0.99),
            l.len()
        );
    }
}
