//! Persistent appends per second through the journal (1 KiB single-message batches, each
//! producer waiting for its confirmation, `sync = always`) with 1, 4 and 16 producer threads,
//! next to a raw `write` + `fdatasync` loop on the same disk as the physical reference.
//!
//! Run: `cargo bench -p ferromq-store --bench journal`. Set `FERROMQ_BENCH_DIR` to choose the
//! disk (default: a temp dir under the current directory, i.e. the workspace disk).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op, SyncMode};

const MESSAGE_BYTES: usize = 1024;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("FERROMQ_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d),
        Err(_) => tempfile::tempdir_in("."),
    }
    .unwrap()
}

fn raw_fdatasync(c: &mut Criterion) {
    let dir = bench_dir();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.path().join("raw.log"))
        .unwrap();
    let block = vec![0x5Au8; MESSAGE_BYTES];
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_write_fdatasync_1KiB", |b| {
        b.iter(|| {
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal");
    for producers in [1usize, 4, 16] {
        let dir = bench_dir();
        let config = JournalConfig {
            sync: SyncMode::Always,
            ..JournalConfig::default()
        };
        let store = Arc::new(JournalStore::open(dir.path(), config).unwrap());
        let seq = Arc::new(AtomicU64::new(0));
        let payload = Bytes::from(vec![0xA5u8; MESSAGE_BYTES]);
        let before = store.stats();
        let started = Instant::now();
        group.throughput(Throughput::Elements(producers as u64));
        group.bench_function(
            format!("append_1KiB_sync_always_{producers}_producers"),
            |b| {
                // One "iteration" = every producer appends one message and waits for it.
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let threads: Vec<_> = (0..producers)
                        .map(|p| {
                            let store = store.clone();
                            let seq = seq.clone();
                            let payload = payload.clone();
                            std::thread::spawn(move || {
                                let list = format!("queue://bench{p}");
                                for _ in 0..iters {
                                    let s = seq.fetch_add(1, Ordering::Relaxed);
                                    store
                                        .submit(vec![Op::Enqueue {
                                            list: list.clone(),
                                            seq: s,
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
                    start.elapsed()
                })
            },
        );
        let after = store.stats();
        let batches = after.batches - before.batches;
        let syncs = (after.syncs - before.syncs).max(1);
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "journal/{producers} producers: {batches} messages, {syncs} fdatasyncs, \
             {:.1} messages per fdatasync, {:.0} messages/s overall (incl. warm-up)",
            batches as f64 / syncs as f64,
            batches as f64 / secs
        );
        store.close().unwrap();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = raw_fdatasync, appends
}
criterion_main!(benches);
