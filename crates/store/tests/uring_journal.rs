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

/// Every path this build can run, with the direct one both synchronous (depth 1, its default)
/// and pipelined through io_uring (depth 4).
fn configs(segment_bytes: u64) -> Vec<JournalConfig> {
    let mut all: Vec<JournalConfig> = paths()
        .into_iter()
        .map(|io| config(io, segment_bytes))
        .collect();
    if cfg!(feature = "io-uring") {
        all.push(JournalConfig {
            io_depth: 4,
            ..config(JournalIo::IoUring, segment_bytes)
        });
    }
    all
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
    for cfg in configs(256 * 1024) {
        let io = (cfg.io, cfg.io_depth);
        let dir = tempfile::tempdir().unwrap();
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
    for cfg in configs(16 * 1024) {
        let io = (cfg.io, cfg.io_depth);
        let mut rng = Rng(7);
        let mut next_seq = [1u64; 3];
        let model = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
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
fn auto_picks_portable_on_real_files_even_where_the_direct_path_runs() {
    let dir = tempfile::tempdir().unwrap();
    // This machine allows io_uring (kernel.io_uring_disabled = 0) and ext4 takes O_DIRECT, so
    // forcing the direct path works...
    let forced = JournalStore::open(dir.path(), config(JournalIo::IoUring, 64 * 1024)).unwrap();
    assert_eq!(forced.io(), JournalIo::IoUring);
    forced.close().unwrap();
    // ...but auto follows its documented rule (`AUTO_RULE`): portable, never far behind.
    let store = JournalStore::open(dir.path(), config(JournalIo::Auto, 64 * 1024)).unwrap();
    assert_eq!(store.io(), JournalIo::Portable);
    store.close().unwrap();
}

/// The direct path's power-cut model: a write completes only when its blocks are on the device
/// (O_DSYNC), and several groups are in flight at once, so at a cut any subset of the blocks of
/// the writes in flight may be on disk, each 4 KiB block whole, missing (zeros: the segment is
/// zero-filled ahead of the writer) or torn at a 512-byte sector. A group is confirmed only when
/// it and every earlier group are durable, so every block up to the end of the last confirmed
/// group was on disk.
///
/// Sixteen producers run at full speed, each waiting for every confirmation; while they run the
/// journal's files are copied several times (the copy sees writes half done too), each copy
/// then loses blocks after its last confirmed group in several random patterns and is recovered.
/// Every recovery must open without a corruption error (a later group written while an earlier
/// one was not is a torn tail, never corruption: only a group submitted with nothing in flight
/// starts a sync unit), hold every batch confirmed before the copy, whole, and be a prefix of
/// each producer's batches. `FERROMQ_SOAK_BATCHES` raises the batches per producer.
#[cfg(feature = "io-uring")]
#[test]
fn a_power_cut_with_direct_writes_in_flight_loses_no_confirmed_batch() {
    use ferromq_store::journal::record::{
        decode_batch, parse_frame, DecodedOp, RecordType, SEGMENT_HEADER_BYTES,
    };
    use ferromq_store::journal::segment::parse_segment_name;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const PRODUCERS: usize = 16;
    const SNAPSHOTS: u64 = 4;
    const PATTERNS: u64 = 3;
    const BLOCK: usize = 4096;
    const SECTOR: usize = 512;
    let per_producer: u64 = std::env::var("FERROMQ_SOAK_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        io_depth: 8,
        ..config(JournalIo::IoUring, 4 * 1024 * 1024)
    };
    let store = Arc::new(open(&dir, &cfg));
    let confirmed: Arc<Vec<AtomicU64>> =
        Arc::new((0..PRODUCERS).map(|_| AtomicU64::new(0)).collect());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (store, confirmed) = (store.clone(), confirmed.clone());
            std::thread::spawn(move || {
                let (a, b) = (format!("queue://p{p}"), format!("queue://q{p}"));
                for seq in 1..=per_producer {
                    let size = 200 + (seq as usize * 37 + p * 101) % 900;
                    store
                        .submit(vec![
                            enq(&a, seq, body(&a, seq, size)),
                            enq(&b, seq, body(&b, seq, 64)),
                        ])
                        .wait_blocking()
                        .unwrap();
                    confirmed[p].store(seq, Ordering::Release);
                }
            })
        })
        .collect();

    let total = per_producer * PRODUCERS as u64;
    let mut copies = Vec::new();
    for k in 1..=SNAPSHOTS {
        // Wait for a positive event: the producers have confirmed k/(SNAPSHOTS+1) of the run.
        let goal = total * k / (SNAPSHOTS + 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while confirmed
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum::<u64>()
            < goal
        {
            assert!(std::time::Instant::now() < deadline, "producers stalled");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // What was confirmed before the copy starts is durable, hence in the copy.
        let seen: Vec<u64> = confirmed
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .collect();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // Newest segment first, each read from its end backwards: a group found in the copy
        // then implies that every group completed before it was submitted is found too (they
        // completed before it did, and their bytes are read later), as at a real cut.
        names.sort_by_key(|n| std::cmp::Reverse(parse_segment_name(n)));
        let mut files = Vec::new();
        for name in names {
            match read_backwards(&dir.path().join(&name)) {
                Ok(bytes) => files.push((name, bytes)),
                // A prepared segment renamed meanwhile: never holds confirmed data.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("{e}"),
            }
        }
        copies.push((seen, files));
    }
    for t in producers {
        t.join().unwrap();
    }
    let stats = store.stats();
    // The run must have kept several groups in flight, or it tests nothing of the pipeline.
    assert!(stats.batches > stats.syncs, "{stats:?}");
    drop(store);

    let mut rng = Rng(19);
    let mut most_groups_in_a_unit = 0;
    for (k, (seen, files)) in copies.iter().enumerate() {
        let last = files
            .iter()
            .filter_map(|(n, _)| parse_segment_name(n))
            .max()
            .unwrap();
        let (_, head) = files
            .iter()
            .find(|(n, _)| parse_segment_name(n) == Some(last))
            .unwrap();
        // Where the last confirmed group ends: blocks before it were durable at the cut.
        let is_confirmed = |list: &str, seq: u64| {
            let p: usize = list[9..].parse().unwrap();
            seq <= seen[p]
        };
        // What was durable at the cut: every group up to the last confirmed one (a group is
        // confirmed after every earlier one is durable; its own bytes run to its padding), and
        // every group before the last sync-unit start (one is flagged only when nothing is in
        // flight). Only the groups after both may have been in flight.
        let mut at = SEGMENT_HEADER_BYTES;
        let (mut durable_end, mut last_unit_start) = (at, at);
        let mut paddings_after_unit_start = 0;
        while let Ok(frame) = parse_frame(&head[at..]) {
            let end = at + frame.total_bytes();
            let confirmed_here = frame.kind == RecordType::Batch
                && decode_batch(frame.payload)
                    .unwrap()
                    .iter()
                    .any(|op| match op {
                        DecodedOp::Enqueue { list, seq, .. } => is_confirmed(list, *seq),
                        DecodedOp::Other(_) => false,
                    });
            if confirmed_here {
                durable_end = end.div_ceil(BLOCK) * BLOCK;
            }
            if frame.unit_start {
                last_unit_start = at;
                paddings_after_unit_start = 0;
            }
            if frame.kind == RecordType::Padding {
                paddings_after_unit_start += 1;
            }
            at = end;
        }
        let in_flight_from = durable_end.max(last_unit_start);
        most_groups_in_a_unit = most_groups_in_a_unit.max(paddings_after_unit_start);
        for pattern in 0..PATTERNS {
            let cut = tempfile::tempdir().unwrap();
            let mut lost_blocks = 0;
            for (name, bytes) in files {
                let mut bytes = bytes.clone();
                if parse_segment_name(name) == Some(last) {
                    let mut block = in_flight_from;
                    while block < bytes.len() {
                        let end = (block + BLOCK).min(bytes.len());
                        if bytes[block..end].iter().any(|b| *b != 0) {
                            match rng.below(10) {
                                0..=3 => {}
                                4..=7 => {
                                    bytes[block..end].fill(0);
                                    lost_blocks += 1;
                                }
                                _ => {
                                    let keep = SECTOR * rng.below((BLOCK / SECTOR) as u64) as usize;
                                    bytes[(block + keep).min(end)..end].fill(0);
                                    lost_blocks += 1;
                                }
                            }
                        }
                        block = end;
                    }
                }
                std::fs::write(cut.path().join(name), bytes).unwrap();
            }
            let store = JournalStore::open(cut.path(), cfg.clone()).unwrap_or_else(|e| {
                panic!("copy {k} pattern {pattern} ({lost_blocks} blocks lost): {e}")
            });
            let r = store.recover().unwrap();
            for (p, &at_least) in seen.iter().enumerate() {
                let count = |name: &str| {
                    r.lists
                        .iter()
                        .find(|l| l.list == name)
                        .map_or((0, 0), |l| (l.count, l.max_seq))
                };
                let (a, b) = (
                    count(&format!("queue://p{p}")),
                    count(&format!("queue://q{p}")),
                );
                assert_eq!(
                    a, b,
                    "copy {k} pattern {pattern}: producer {p}'s batches whole"
                );
                assert_eq!(
                    a.0, a.1,
                    "copy {k} pattern {pattern}: producer {p} has a gap"
                );
                assert!(
                    a.0 >= at_least,
                    "copy {k} pattern {pattern}: producer {p} lost confirmed batches: \
                     {} < {at_least}",
                    a.0
                );
            }
            // The journal goes on after the truncated tail, and that survives a reopen.
            store
                .submit(vec![enq("queue://after", 1, body("queue://after", 1, 100))])
                .wait_blocking()
                .unwrap();
            store.close().unwrap();
            let store = JournalStore::open(cut.path(), cfg.clone()).unwrap();
            let r = store.recover().unwrap();
            assert!(r
                .lists
                .iter()
                .any(|l| l.list == "queue://after" && l.count == 1));
        }
    }
    // Groups written while others were in flight share their unit: had every group been
    // flagged a unit start, each copy would have only its last group at risk.
    assert!(
        most_groups_in_a_unit >= 3,
        "the last sync unit of every copy held {most_groups_in_a_unit} groups at most"
    );
}

/// Reads a file from its end backwards in 64 KiB pieces.
#[cfg(feature = "io-uring")]
fn read_backwards(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    const PIECE: u64 = 64 * 1024;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut bytes = vec![0u8; len as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(PIECE);
        file.read_exact_at(&mut bytes[start as usize..end as usize], start)?;
        end = start;
    }
    Ok(bytes)
}
