//! The same workloads on every store backend compiled in, side by side:
//!
//! - `enqueue_sync_1KiB/{1,16}_writers`: persistent enqueues of 1 KiB, each writer thread
//!   submitting one-message batches and waiting for each confirmation (a producer with
//!   `receipt` on every SEND); with 16 writers the backend can group their commits;
//! - `dequeue_ack/16_consumers`: 16 threads each reading its queue page by page and acking every
//!   message in its own batch, waiting for each (client-individual acks);
//! - `recover_1M`: open a store holding 1,000,000 messages of 1 KiB in 10 queues, run
//!   `recover()` (what the broker needs before it serves), close.
//!
//! Run: `scripts/bench-backends.sh` (builds every backend feature, starts the databases, writes
//! `bench-results/backends.md` and its chart), or directly
//! `cargo bench -p ferromq-store --all-features --bench backends`.
//! `FERROMQ_BENCH_BACKENDS=journal,lsm` selects backends; `FERROMQ_BENCH_RECOVERY_MESSAGES`
//! changes the recovery size; `FERROMQ_BENCH_IO_DEPTH` the io_uring path's writes in flight; `FERROMQ_BENCH_DIR` chooses the disk (default: the current dir);
//! `FERROMQ_BENCH_SUMMARY` names a JSON file that receives every figure for the report.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use ferromq_store::journal::JournalIo;
use ferromq_store::{JournalConfig, JournalStore, MemoryStore, MessageStore, Op, SyncMode};

const MESSAGE_BYTES: usize = 1024;

/// Opens a backend's store on a directory.
type Opener = Box<dyn Fn(&Path) -> Arc<dyn MessageStore>>;

/// One backend: how to open a store on `dir` (the same storage every time), and whether its
/// data outlives the process (the memory store is measured as a ceiling, never recovered).
struct Backend {
    name: &'static str,
    open: Opener,
    durable: bool,
}

fn backends() -> Vec<Backend> {
    let mut all = vec![
        Backend {
            name: "memory",
            open: Box::new(|_| Arc::new(MemoryStore::new())),
            durable: false,
        },
        Backend {
            // The io_uring path when the build has it (forced: `auto` picks portable), else
            // portable.
            name: "journal",
            open: Box::new(|dir| {
                journal(
                    dir,
                    if cfg!(feature = "io-uring") {
                        JournalIo::IoUring
                    } else {
                        JournalIo::Portable
                    },
                )
            }),
            durable: true,
        },
        Backend {
            name: "journal-portable",
            open: Box::new(|dir| journal(dir, JournalIo::Portable)),
            durable: true,
        },
    ];
    all.extend(extra_backends());
    let wanted = std::env::var("FERROMQ_BENCH_BACKENDS").ok();
    all.retain(|b| {
        wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|n| n.trim() == b.name))
    });
    all
}

fn journal(dir: &Path, io: JournalIo) -> Arc<dyn MessageStore> {
    let io_depth = std::env::var("FERROMQ_BENCH_IO_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(ferromq_store::journal::IO_DEPTH_DEFAULT);
    let config = JournalConfig {
        sync: SyncMode::Always,
        io,
        io_depth,
        ..JournalConfig::default()
    };
    Arc::new(JournalStore::open(dir.join("journal"), config).expect("open journal"))
}

/// Backends behind cargo features.
fn extra_backends() -> Vec<Backend> {
    #[allow(unused_mut)]
    let mut extra: Vec<Backend> = Vec::new();
    #[cfg(feature = "lsm")]
    extra.push(Backend {
        name: "lsm",
        open: Box::new(|dir| {
            let config = ferromq_store::LsmConfig::new(dir.join("lsm"));
            Arc::new(ferromq_store::LsmStore::open(config).expect("open lsm"))
        }),
        durable: true,
    });
    #[cfg(feature = "sql")]
    {
        // Each open of a bench case gets tables of its own (the prefix is derived from the
        // case's temp dir), so cases never see each other's rows.
        fn sql(url: String, dir: &Path) -> Arc<dyn MessageStore> {
            let tag: String = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let mut config = ferromq_store::SqlConfig::new(url);
            config.table_prefix = format!("bench_{}_{tag}_", std::process::id());
            Arc::new(ferromq_store::SqlStore::open(config).expect("open sql store"))
        }
        extra.push(Backend {
            name: "sql-sqlite",
            open: Box::new(|dir| sql(format!("sqlite://{}/store.db", dir.display()), dir)),
            durable: true,
        });
        extra.push(Backend {
            name: "sql-postgres",
            open: Box::new(|dir| {
                let url = std::env::var("FERROMQ_TEST_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/ferromq_test".into());
                sql(url, dir)
            }),
            durable: true,
        });
        extra.push(Backend {
            name: "sql-mariadb",
            open: Box::new(|dir| {
                let url = std::env::var("FERROMQ_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3307/ferromq_test".into());
                sql(url, dir)
            }),
            durable: true,
        });
    }
    extra
}

/// Mean throughput of each (backend, workload), for the report.
static SUMMARY: Mutex<Vec<(String, String, f64)>> = Mutex::new(Vec::new());

fn record(backend: &str, workload: &str, per_second: f64) {
    if let Ok(mut s) = SUMMARY.lock() {
        s.push((backend.to_string(), workload.to_string(), per_second));
    }
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("FERROMQ_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d),
        Err(_) => tempfile::tempdir_in("."),
    }
    .expect("bench dir")
}

fn enqueue(c: &mut Criterion, b: &Backend) {
    let mut group = c.benchmark_group("enqueue_sync_1KiB");
    for writers in [1usize, 16] {
        let dir = bench_dir();
        let store = (b.open)(dir.path());
        let seq = Arc::new(AtomicU64::new(1));
        let payload = Bytes::from(vec![0xA5u8; MESSAGE_BYTES]);
        let (mut msgs, mut spent) = (0u64, Duration::ZERO);
        group.throughput(Throughput::Elements(writers as u64));
        group.bench_function(
            BenchmarkId::new(b.name, format!("{writers}_writers")),
            |bench| {
                // One iteration: every writer enqueues one message and waits for it.
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    let threads: Vec<_> = (0..writers)
                        .map(|w| {
                            let (store, seq, payload) =
                                (store.clone(), seq.clone(), payload.clone());
                            std::thread::spawn(move || {
                                let list = format!("queue://bench.{w}");
                                for _ in 0..iters {
                                    let s = seq.fetch_add(1, Ordering::Relaxed);
                                    store
                                        .submit(vec![Op::Enqueue {
                                            list: list.clone(),
                                            seq: s,
                                            payload: payload.clone(),
                                        }])
                                        .wait_blocking()
                                        .expect("enqueue confirmed");
                                }
                            })
                        })
                        .collect();
                    for t in threads {
                        t.join().expect("writer");
                    }
                    let took = start.elapsed();
                    msgs += iters * writers as u64;
                    spent += took;
                    took
                })
            },
        );
        record(
            b.name,
            &format!("enqueue, {writers} writer(s)"),
            msgs as f64 / spent.as_secs_f64().max(1e-9),
        );
        store.close().expect("close");
    }
    group.finish();
}

fn dequeue_ack(c: &mut Criterion, b: &Backend) {
    const CONSUMERS: usize = 16;
    const PER_QUEUE: u64 = 20_000;
    let mut group = c.benchmark_group("dequeue_ack");
    let dir = bench_dir();
    let store = (b.open)(dir.path());
    let payload = Bytes::from(vec![0x5Au8; MESSAGE_BYTES]);
    // Each consumer's queue is refilled when it runs dry, outside the timed part.
    let next_ack: Vec<Arc<AtomicU64>> = (0..CONSUMERS)
        .map(|_| Arc::new(AtomicU64::new(1)))
        .collect();
    let filled: Vec<Arc<AtomicU64>> = (0..CONSUMERS)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let fill = |q: usize, upto: u64| {
        let list = format!("queue://drain.{q}");
        let from = filled[q].load(Ordering::Relaxed) + 1;
        for chunk in (from..=upto).collect::<Vec<_>>().chunks(500) {
            store
                .submit(
                    chunk
                        .iter()
                        .map(|&s| Op::Enqueue {
                            list: list.clone(),
                            seq: s,
                            payload: payload.clone(),
                        })
                        .collect(),
                )
                .wait_blocking()
                .expect("fill");
        }
        filled[q].store(upto.max(from - 1), Ordering::Relaxed);
    };
    let (mut msgs, mut spent) = (0u64, Duration::ZERO);
    group.throughput(Throughput::Elements(CONSUMERS as u64));
    group.bench_function(
        BenchmarkId::new(b.name, format!("{CONSUMERS}_consumers")),
        |bench| {
            bench.iter_custom(|iters| {
                for (q, next) in next_ack.iter().enumerate() {
                    let need = next.load(Ordering::Relaxed) + iters;
                    if filled[q].load(Ordering::Relaxed) < need {
                        fill(q, need + PER_QUEUE);
                    }
                }
                let start = Instant::now();
                let threads: Vec<_> = (0..CONSUMERS)
                    .map(|q| {
                        let (store, next) = (store.clone(), next_ack[q].clone());
                        std::thread::spawn(move || {
                            let list = format!("queue://drain.{q}");
                            let mut left = iters;
                            while left > 0 {
                                let after = next.load(Ordering::Relaxed) - 1;
                                let page = store
                                    .load(&list, Some(after), left.min(100) as usize)
                                    .expect("load");
                                assert!(!page.is_empty(), "queue ran dry");
                                for m in page {
                                    store
                                        .submit(vec![Op::Dequeue {
                                            list: list.clone(),
                                            seq: m.seq,
                                        }])
                                        .wait_blocking()
                                        .expect("ack confirmed");
                                    next.store(m.seq + 1, Ordering::Relaxed);
                                    left -= 1;
                                }
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().expect("consumer");
                }
                let took = start.elapsed();
                msgs += iters * CONSUMERS as u64;
                spent += took;
                took
            })
        },
    );
    record(
        b.name,
        "load + ack, 16 consumers",
        msgs as f64 / spent.as_secs_f64().max(1e-9),
    );
    store.close().expect("close");
    group.finish();
}

fn recovery(c: &mut Criterion, b: &Backend) {
    if !b.durable {
        return;
    }
    let total: u64 = std::env::var("FERROMQ_BENCH_RECOVERY_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = bench_dir();
    {
        let store = (b.open)(dir.path());
        let payload = Bytes::from(vec![0x3Cu8; MESSAGE_BYTES]);
        let started = Instant::now();
        let mut pending = Vec::new();
        for chunk_start in (1..=total).step_by(1000) {
            let batch = (chunk_start..(chunk_start + 1000).min(total + 1))
                .map(|s| Op::Enqueue {
                    list: format!("queue://recover.{}", s % 10),
                    seq: s,
                    payload: payload.clone(),
                })
                .collect();
            pending.push(store.submit(batch));
            // A few batches in flight keep the writer busy without unbounded memory.
            if pending.len() >= 8 {
                pending.remove(0).wait_blocking().expect("fill");
            }
        }
        for p in pending {
            p.wait_blocking().expect("fill");
        }
        eprintln!(
            "{}: wrote {total} messages for the recovery case in {:.1} s",
            b.name,
            started.elapsed().as_secs_f64()
        );
        store.close().expect("close");
    }
    let mut group = c.benchmark_group("recover");
    group.sample_size(10);
    let (mut runs, mut spent) = (0u64, Duration::ZERO);
    group.bench_function(BenchmarkId::new(b.name, format!("{total}_msgs")), |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let store = (b.open)(dir.path());
                let r = store.recover().expect("recover");
                let count: u64 = r.lists.iter().map(|l| l.count).sum();
                assert_eq!(count, total, "recovered message count");
                store.close().expect("close");
            }
            let took = start.elapsed();
            runs += iters;
            spent += took;
            took
        })
    });
    record(
        b.name,
        &format!("recovery of {total} msgs (recoveries/s)"),
        runs as f64 / spent.as_secs_f64().max(1e-9),
    );
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for b in backends() {
        enqueue(&mut c, &b);
        dequeue_ack(&mut c, &b);
        recovery(&mut c, &b);
    }
    c.final_summary();
    let summary = SUMMARY.lock().map(|s| s.clone()).unwrap_or_default();
    println!("\n| backend | workload | per second |\n|---|---|---|");
    for (backend, workload, rate) in &summary {
        println!("| {backend} | {workload} | {rate:.1} |");
    }
    if let Ok(path) = std::env::var("FERROMQ_BENCH_SUMMARY") {
        let rows: Vec<String> = summary
            .iter()
            .map(|(b, w, r)| {
                format!("{{\"backend\":\"{b}\",\"workload\":\"{w}\",\"per_second\":{r:.3}}}")
            })
            .collect();
        if let Err(e) = std::fs::write(&path, format!("[{}]\n", rows.join(",\n"))) {
            eprintln!("cannot write {path}: {e}");
        }
    }
}
