//! The journal on real files through both write paths (`JournalIo::Portable` and, with the
//! `io-uring` feature, `JournalIo::IoUring`): write/reopen/recover, records larger than a
//! segment, segment rolls, reopen without close, a killed process, and the memory store's
//! answers through GC and reopens. Each test first checks that the path it asked for runs.

mod journal_common;

use std::io::Write;
use std::process::{Command, Stdio};

use ferromq_store::{
    Batch, JournalConfig, JournalIo, JournalStore, MemoryStore, MessageStore, Op, StoreError,
    SyncMode,
};
use journal_common::*;

/// The paths this build can run.
fn paths() -> Vec<JournalIo> {
    let mut paths = vec![JournalIo::Portable];
    if cfg!(feature = "io-uring") {
        paths.push(JournalIo::IoUring);
    }
    paths
}

fn config(io: JournalIo, segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        io,
        ..small_config(segment_bytes)
    }
}

fn open(dir: &tempfile::TempDir, config: &JournalConfig) -> JournalStore {
    let store = JournalStore::open(dir.path(), config.clone()).unwrap();
    assert_eq!(store.io(), config.io, "the requested write path runs");
    store
}

#[test]
fn records_survive_close_and_reopen_on_both_paths() {
    for io in paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(io, 64 * 1024);
        let store = open(&dir, &cfg);
        for seq in 1..=100 {
            store
                .submit(vec![enq("queue://a", seq, body("queue://a", seq, 1024))])
                .wait_blocking()
                .unwrap();
        }
        store
            .submit((1..=50).map(|s| deq("queue://a", s)).collect())
            .wait_blocking()
            .unwrap();
        let stats = store.stats();
        // Sync always: one sync per confirmed group (plus one per roll).
        assert!(stats.syncs >= 101, "{io:?}: {stats:?}");
        let expected = state(&store);
        store.close().unwrap();
        let store = open(&dir, &cfg);
        assert_eq!(state(&store), expected, "{io:?}");
        assert_eq!(store.usage_bytes(), 50 * 1024, "{io:?}");
    }
}

#[test]
fn segments_roll_and_a_record_larger_than_a_segment_gets_its_own_on_both_paths() {
    for io in paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(io, 16 * 1024);
        let store = open(&dir, &cfg);
        for seq in 1..=40 {
            store
                .submit(vec![enq("queue://a", seq, body("queue://a", seq, 3000))])
                .wait_blocking()
                .unwrap();
        }
        let big = body("queue://big", 1, 3 * 1024 * 1024);
        store
            .submit(vec![enq("queue://big", 1, big.clone())])
            .wait_blocking()
            .unwrap();
        store
            .submit(vec![enq("queue://a", 41, body("queue://a", 41, 10))])
            .wait_blocking()
            .unwrap();
        let segments = store.segment_ids();
        assert!(segments.len() >= 8, "{io:?}: rolled {segments:?}");
        let expected = state(&store);
        drop(store);
        let store = open(&dir, &cfg);
        assert_eq!(state(&store), expected, "{io:?}");
        let page = store.load("queue://big", None, 1).unwrap();
        assert!(page[0].payload == big[..], "{io:?}");
    }
}

#[test]
fn concurrent_submitters_are_confirmed_and_recovered_on_both_paths() {
    for io in paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(io, 256 * 1024);
        let store = std::sync::Arc::new(open(&dir, &cfg));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let list = format!("queue://t{t}");
                    for seq in 1..=50 {
                        store
                            .submit(vec![enq(&list, seq, body(&list, seq, 700))])
                            .wait_blocking()
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.batches, 400, "{io:?}");
        let expected = state(store.as_ref());
        drop(store);
        let store = open(&dir, &cfg);
        assert_eq!(state(&store), expected, "{io:?}");
        assert_eq!(store.recover().unwrap().lists.len(), 8);
    }
}

#[test]
fn periodic_and_never_modes_work_on_the_portable_path_and_are_refused_by_the_direct_one() {
    for io in paths() {
        for sync in [SyncMode::Never, SyncMode::Periodic { interval_ms: 20 }] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = JournalConfig {
                sync,
                ..config(io, 64 * 1024)
            };
            if io == JournalIo::IoUring {
                // Every direct write is durable: a weaker sync mode is a configuration error.
                let err = JournalStore::open(dir.path(), cfg).unwrap_err();
                assert!(
                    matches!(&err, StoreError::Config(m) if m.contains("always")),
                    "{err:?}"
                );
                continue;
            }
            let store = open(&dir, &cfg);
            for seq in 1..=30 {
                store
                    .submit(vec![enq("queue://a", seq, vec![7; 500])])
                    .wait_blocking()
                    .unwrap();
            }
            store.close().unwrap();
            let store = open(&dir, &cfg);
            assert_eq!(
                store.recover().unwrap().lists[0].count,
                30,
                "{io:?} {sync:?}"
            );
        }
    }
}

const LISTS: [&str; 3] = ["queue://a", "durable://c:s", "dupids://p"];

fn random_batch(rng: &mut Rng, next_seq: &mut [u64; 3]) -> Batch {
    (0..1 + rng.below(4))
        .map(|_| {
            let l = rng.below(3) as usize;
            let list = LISTS[l];
            match rng.below(100) {
                0..=54 => {
                    let seq = next_seq[l];
                    next_seq[l] += 1;
                    enq(list, seq, body(list, seq, 1 + rng.below(2000) as usize))
                }
                55..=89 => deq(list, 1 + rng.below(next_seq[l])),
                90..=94 => Op::PutSubscription(sub("durable://c:s", "t.>")),
                _ => Op::Purge {
                    list: list.to_string(),
                },
            }
        })
        .collect()
}

#[test]
fn both_paths_match_the_memory_store_through_gc_and_reopens() {
    for io in paths() {
        let mut rng = Rng(7);
        let mut next_seq = [1u64; 3];
        let model = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(io, 16 * 1024);
        let mut store = open(&dir, &cfg);
        for step in 0..300 {
            let batch = random_batch(&mut rng, &mut next_seq);
            model.submit(batch.clone()).wait_blocking().unwrap();
            store.submit(batch).wait_blocking().unwrap();
            if step % 75 == 74 {
                store.gc().unwrap();
                assert_eq!(state(&store), state(&model), "{io:?} step {step}");
                if step % 150 == 74 {
                    drop(store);
                } else {
                    store.close().unwrap();
                }
                store = open(&dir, &cfg);
                assert_eq!(state(&store), state(&model), "{io:?} reopen {step}");
                assert_eq!(store.usage_bytes(), model.usage_bytes());
            }
        }
    }
}

/// Set in the child process: `<path>:<dir>`.
const CHILD_ENV: &str = "FERROMQ_URING_CRASH_CHILD";
const CONFIRMED_BEFORE_KILL: u64 = 120;

fn crash_child(spec: &str) -> ! {
    let (io, dir) = spec.split_once(':').unwrap();
    let io = if io == "uring" {
        JournalIo::IoUring
    } else {
        JournalIo::Portable
    };
    let store = JournalStore::open(dir, config(io, 32 * 1024)).unwrap();
    assert_eq!(store.io(), io);
    let mut out = std::io::stdout();
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = 1u64;
    loop {
        while in_flight.len() < 6 {
            let ops = vec![
                enq("queue://a", next, body("queue://a", next, 900)),
                enq("queue://b", next, body("queue://b", next, 300)),
            ];
            in_flight.push_back((next, store.submit(ops)));
            next += 1;
        }
        let (i, c) = in_flight.pop_front().unwrap();
        c.wait_blocking().unwrap();
        writeln!(out, "confirmed {i}").unwrap();
        out.flush().unwrap();
        if i >= CONFIRMED_BEFORE_KILL {
            // Batches still in flight: die without close, drop or checkpoint.
            std::process::abort();
        }
    }
}

#[test]
fn a_killed_process_keeps_every_confirmed_batch_on_both_paths() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        crash_child(&spec);
    }
    for io in paths() {
        let dir = tempfile::tempdir().unwrap();
        let name = if io == JournalIo::IoUring {
            "uring"
        } else {
            "portable"
        };
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_killed_process_keeps_every_confirmed_batch_on_both_paths",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{name}:{}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{io:?}: the child must have died");
        let confirmed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("confirmed "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .max()
            .unwrap();
        assert_eq!(confirmed, CONFIRMED_BEFORE_KILL, "{io:?}");
        let store = open(&dir, &config(io, 32 * 1024));
        let r = store.recover().unwrap();
        let a = r.lists.iter().find(|l| l.list == "queue://a").unwrap();
        let b = r.lists.iter().find(|l| l.list == "queue://b").unwrap();
        // Every confirmed batch, whole: both halves of each, in order, none missing.
        assert!(a.count >= confirmed, "{io:?}: {a:?}");
        assert_eq!((a.count, a.max_seq), (b.count, b.max_seq), "{io:?}");
        assert_eq!(a.count, a.max_seq, "{io:?}: no gap");
        let page = store.load("queue://b", Some(confirmed - 1), 1).unwrap();
        assert_eq!(page[0].payload, body("queue://b", confirmed, 300), "{io:?}");
    }
}

#[test]
fn forcing_io_uring_on_in_memory_storage_is_a_config_error() {
    let dir = ferromq_store::journal::MemDir::new();
    let err = try_open_mem(&dir, config(JournalIo::IoUring, 64 * 1024)).unwrap_err();
    assert!(
        matches!(err, StoreError::Config(ref m) if m.contains("real files")),
        "{err}"
    );
    // Auto falls back to the portable path there, so the crash tests keep their MemDir.
    let store = open_mem(&dir, config(JournalIo::Auto, 64 * 1024));
    assert_eq!(store.io(), JournalIo::Portable);
}

#[cfg(not(feature = "io-uring"))]
#[test]
fn forcing_io_uring_without_the_feature_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = JournalStore::open(dir.path(), config(JournalIo::IoUring, 64 * 1024)).unwrap_err();
    assert!(
        matches!(err, StoreError::Config(ref m) if m.contains("io-uring feature")),
        "{err}"
    );
    let store = JournalStore::open(dir.path(), config(JournalIo::Auto, 64 * 1024)).unwrap();
    assert_eq!(store.io(), JournalIo::Portable);
}

#[cfg(feature = "io-uring")]
#[test]
fn auto_picks_portable_on_real_files_even_where_io_uring_is_available() {
    let dir = tempfile::tempdir().unwrap();
    // This machine allows io_uring (kernel.io_uring_disabled = 0), and forcing it works...
    let forced = JournalStore::open(dir.path(), config(JournalIo::IoUring, 64 * 1024)).unwrap();
    assert_eq!(forced.io(), JournalIo::IoUring);
    forced.close().unwrap();
    // ...but auto follows its documented rule (`AUTO_RULE`): portable, the faster path here.
    let store = JournalStore::open(dir.path(), config(JournalIo::Auto, 64 * 1024)).unwrap();
    assert_eq!(store.io(), JournalIo::Portable);
}
