//! The paged index (`index.pages` + the root `index.db`): memory bounded by the page cache, not
//! by the depth of the queues; checkpoints that write what changed; a power cut at any I/O call
//! of a checkpoint that leaves a usable checkpoint behind; a bad page file rebuilt from the
//! journal; GC and compaction over blocks that live in the page file.

mod journal_common;

use ferromq_store::journal::{MemDir, PowerLoss, StorageDir};
use ferromq_store::{JournalConfig, JournalStore, MessageStore};
use journal_common::*;

const Q1: &str = "queue://deep";
const Q2: &str = "queue://other";

fn config(cache_bytes: u64) -> JournalConfig {
    JournalConfig {
        index_cache_bytes: cache_bytes,
        ..small_config(256 * 1024)
    }
}

fn fill(store: &JournalStore, list: &str, seqs: std::ops::RangeInclusive<u64>, len: usize) {
    let seqs: Vec<u64> = seqs.collect();
    for chunk in seqs.chunks(500) {
        let ops = chunk
            .iter()
            .map(|s| enq(list, *s, body(list, *s, len)))
            .collect();
        store.submit(ops).wait_blocking().unwrap();
    }
}

fn ack(store: &JournalStore, list: &str, seqs: impl Iterator<Item = u64>) {
    let seqs: Vec<u64> = seqs.collect();
    for chunk in seqs.chunks(500) {
        let ops = chunk.iter().map(|s| deq(list, *s)).collect();
        store.submit(ops).wait_blocking().unwrap();
    }
}

#[test]
fn the_index_keeps_only_changed_blocks_and_its_cache_in_memory_however_deep_the_queue() {
    let dir = MemDir::new();
    let budget = 128 * 1024;
    let store = open_mem(&dir, config(budget));
    fill(&store, Q1, 1..=100_000, 16);
    let before = store.stats();
    assert!(before.index_blocks >= 97, "{before:?}");
    assert_eq!(
        before.index_resident_blocks, before.index_blocks,
        "before a checkpoint every block is in memory"
    );
    assert!(store.checkpoint().unwrap());
    let after = store.stats();
    assert_eq!(after.index_resident_blocks, 0, "{after:?}");
    assert!(after.index_cache_bytes <= budget, "{after:?}");
    let first = after.index_bytes_written;
    assert!(
        first > 97 * 16 * 1024,
        "every block was written once: {first}"
    );

    // Traffic at the ends of the queue changes two blocks: the next checkpoint writes those
    // and the root, not the queue.
    fill(&store, Q1, 100_001..=101_000, 16);
    ack(&store, Q1, 1..=1_000);
    assert!(store.checkpoint().unwrap());
    let second = store.stats().index_bytes_written - first;
    assert!(
        second * 10 < first,
        "a checkpoint after 2,000 changes wrote {second} bytes, the first {first}"
    );

    // Drain through the page file: the cache stays within its budget.
    let mut after_seq = Some(1_000);
    let mut seen = 0u64;
    loop {
        let page = store.load(Q1, after_seq, 1_000).unwrap();
        let Some(last) = page.last() else { break };
        for m in &page {
            assert_eq!(&m.payload[..], &body(Q1, m.seq, 16)[..]);
        }
        seen += page.len() as u64;
        after_seq = Some(last.seq);
        assert!(store.stats().index_cache_bytes <= budget);
    }
    assert_eq!(seen, 100_000);
    assert!(store.stats().index_page_reads >= 97, "{:?}", store.stats());
    let expected = state(&store);
    store.close().unwrap();
    let store = open_mem(&dir, config(budget));
    assert!(store.recovery_report().from_checkpoint);
    assert_eq!(store.recovery_report().replayed_ops, 0);
    assert_eq!(state(&store), expected);
}

/// Builds the store the power-cut test starts from: a committed checkpoint, then changes at
/// both ends and in the middle of two queues that only the journal holds.
fn before_the_cut() -> MemDir {
    let dir = MemDir::new();
    let store = open_mem(&dir, config(64 * 1024));
    fill(&store, Q1, 1..=20_000, 24);
    fill(&store, Q2, 1..=6_000, 24);
    assert!(store.checkpoint().unwrap());
    ack(&store, Q1, 1..=3_000);
    fill(&store, Q2, 6_001..=9_000, 24);
    ack(&store, Q2, (1..=9_000).filter(|s| s % 7 == 0));
    drop(store);
    dir.power_loss(PowerLoss::DropUnsynced)
}

fn reopened_after(dir: &MemDir, loss: PowerLoss) -> JournalStore {
    let image = dir.power_loss(loss);
    let store = open_mem(&image, config(64 * 1024));
    assert!(
        store.recovery_report().from_checkpoint,
        "a cut during a checkpoint must leave a usable checkpoint (the old or the new): {:?}",
        store.recovery_report()
    );
    store
}

#[test]
fn a_power_cut_at_any_io_call_of_a_checkpoint_leaves_the_previous_or_the_new_one_usable() {
    let base = before_the_cut();
    let expected = {
        let store = open_mem(&base.power_loss(PowerLoss::DropUnsynced), config(64 * 1024));
        state(&store)
    };
    let losses = |k: u64| {
        [
            PowerLoss::DropUnsynced,
            PowerLoss::KeepRandomPrefix { seed: k },
            PowerLoss::RandomPages { seed: k * 31 + 7 },
        ]
    };
    // Second checkpoint (pages never used before), then a third one that reuses the pages the
    // second one freed: a cut there must not touch a page the durable root names.
    for third in [false, true] {
        let mut completed = false;
        for k in 1..=200u64 {
            for loss in losses(k) {
                let dir = base.power_loss(PowerLoss::DropUnsynced);
                let store = open_mem(&dir, config(64 * 1024));
                if third {
                    assert!(store.checkpoint().unwrap());
                    ack(&store, Q1, 3_001..=4_500);
                    ack(&store, Q2, (1..=9_000).filter(|s| s % 7 == 3));
                }
                dir.arm_power_cut(k, loss);
                let result = store.checkpoint();
                let cut = dir.power_is_cut();
                drop(store);
                let store = reopened_after(&dir, loss);
                let got = state(&store);
                if third {
                    let mut want = expected.messages.clone();
                    want.get_mut(Q1).unwrap().retain(|m| m.seq > 4_500);
                    want.get_mut(Q2).unwrap().retain(|m| m.seq % 7 != 3);
                    assert_eq!(got.messages, want, "cut at I/O call {k} ({loss:?}), third");
                } else {
                    assert_eq!(got, expected, "cut at I/O call {k} ({loss:?})");
                }
                if !cut {
                    result.unwrap();
                    completed = true;
                }
            }
            if completed {
                break;
            }
        }
        assert!(completed, "the checkpoint completed within the sweep");
    }
}

#[test]
fn a_corrupt_or_missing_page_file_is_rebuilt_from_the_journal() {
    let dir = MemDir::new();
    let store = open_mem(&dir, config(64 * 1024));
    fill(&store, Q1, 1..=5_000, 40);
    ack(&store, Q1, (1..=5_000).filter(|s| s % 3 == 0));
    let expected = state(&store);
    store.close().unwrap();

    let mut pages = dir.file_bytes("index.pages").unwrap();
    let at = 40 * 1024 + 100; // inside the second page
    pages[at] ^= 0x20;
    dir.put_file_bytes("index.pages", pages);
    let store = open_mem(&dir, config(64 * 1024));
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(state(&store), expected);
    store.close().unwrap();

    let store = open_mem(&dir, config(64 * 1024));
    assert!(
        store.recovery_report().from_checkpoint,
        "the rebuilt index was checkpointed"
    );
    drop(store);
    dir.remove("index.pages").unwrap();
    let store = open_mem(&dir, config(64 * 1024));
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(state(&store), expected);
}

#[test]
fn gc_and_compaction_work_on_blocks_that_live_in_the_page_file() {
    let dir = MemDir::new();
    let cfg = JournalConfig {
        index_cache_bytes: 16 * 1024,
        ..small_config(16 * 1024)
    };
    let store = open_mem(&dir, cfg.clone());
    fill(&store, Q1, 1..=6_000, 100);
    assert!(store.checkpoint().unwrap());
    assert_eq!(store.stats().index_resident_blocks, 0);
    let segments_before = store.segment_ids().len();
    // Keep every 250th message: each old segment holds at most one live message.
    ack(&store, Q1, (1..=6_000).filter(|s| s % 250 != 0));
    let expected = state(&store);
    let report = store.gc().unwrap();
    assert!(
        report.compacted.len() >= 10 && report.deleted.len() > segments_before / 2,
        "{report:?} of {segments_before} segments"
    );
    assert_eq!(state(&store), expected);
    store.close().unwrap();
    let store = open_mem(&dir, cfg.clone());
    assert_eq!(state(&store), expected);
    drop(store);
    dir.remove("index.db").unwrap();
    let store = open_mem(&dir, cfg);
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(state(&store), expected, "a full replay agrees");
}

#[test]
fn producers_consumers_checkpoints_and_gc_at_once_through_a_tiny_page_cache_lose_nothing() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = MemDir::new();
    let cfg = JournalConfig {
        index_cache_bytes: 48 * 1024,
        ..small_config(64 * 1024)
    };
    let store = Arc::new(open_mem(&dir, cfg.clone()));
    const LISTS: usize = 4;
    const PER_LIST: u64 = 12_000;
    // What consumers acked (confirmed), per list.
    let acked: Arc<Mutex<Vec<BTreeSet<u64>>>> = Arc::new(Mutex::new(vec![BTreeSet::new(); LISTS]));
    let producing = Arc::new(AtomicBool::new(true));
    let name = |i: usize| format!("queue://c{i}");
    std::thread::scope(|s| {
        let mut producers = Vec::new();
        for i in 0..LISTS {
            let store = store.clone();
            producers.push(s.spawn(move || {
                for chunk in (1..=PER_LIST).collect::<Vec<_>>().chunks(100) {
                    let ops = chunk
                        .iter()
                        .map(|q| enq(&name(i), *q, body(&name(i), *q, 20)))
                        .collect();
                    store.submit(ops).wait_blocking().unwrap();
                }
            }));
        }
        for i in 0..LISTS {
            let (store, acked, producing) = (store.clone(), acked.clone(), producing.clone());
            s.spawn(move || {
                // Acks every third message it reads, front first, paging through the list.
                let mut after = None;
                loop {
                    let page = store.load(&name(i), after, 200).unwrap();
                    if page.is_empty() {
                        if !producing.load(Ordering::Acquire) {
                            break;
                        }
                        after = None;
                        std::thread::yield_now();
                        continue;
                    }
                    for m in &page {
                        assert_eq!(&m.payload[..], &body(&name(i), m.seq, 20)[..]);
                    }
                    after = page.last().map(|m| m.seq);
                    let seqs: Vec<u64> =
                        page.iter().map(|m| m.seq).filter(|q| q % 3 == 0).collect();
                    let ops = seqs.iter().map(|q| deq(&name(i), *q)).collect();
                    store.submit(ops).wait_blocking().unwrap();
                    acked.lock().unwrap()[i].extend(seqs);
                }
            });
        }
        {
            let (store, producing) = (store.clone(), producing.clone());
            s.spawn(move || {
                let mut passes = 0;
                while producing.load(Ordering::Acquire) || passes < 3 {
                    store.checkpoint().unwrap();
                    store.gc().unwrap();
                    passes += 1;
                }
            });
        }
        for p in producers {
            p.join().unwrap();
        }
        producing.store(false, Ordering::Release);
    });
    let acked = acked.lock().unwrap().clone();
    let check = |store: &JournalStore, what: &str| {
        let got = state(store);
        for (i, acked) in acked.iter().enumerate() {
            let want: Vec<u64> = (1..=PER_LIST).filter(|q| !acked.contains(q)).collect();
            let have: Vec<u64> = got
                .messages
                .get(&name(i))
                .map(|v| v.iter().map(|m| m.seq).collect())
                .unwrap_or_default();
            assert_eq!(have, want, "{what}: list {i}");
        }
    };
    assert!(acked.iter().all(|a| a.len() as u64 == PER_LIST / 3));
    check(&store, "live");
    assert!(store.stats().index_page_reads > 0, "{:?}", store.stats());
    let store = Arc::into_inner(store).unwrap();
    store.close().unwrap();
    check(&open_mem(&dir, cfg.clone()), "after a clean close");
    let image = dir.power_loss(PowerLoss::RandomPages { seed: 5 });
    check(&open_mem(&image, cfg), "after a power cut");
}

#[test]
fn changed_blocks_past_the_cache_size_bring_a_checkpoint_before_the_timer() {
    use std::time::{Duration, Instant};
    let dir = MemDir::new();
    let budget = 256 * 1024;
    let cfg = JournalConfig {
        index_cache_bytes: budget,
        // The timer is ten minutes away: only the amount of changed blocks can start one.
        checkpoint_interval_ms: 600_000,
        ..config(budget)
    };
    let store = open_mem(&dir, cfg);
    fill(&store, Q1, 1..=100_000, 16); // 98 blocks, 1.6 MB of changed blocks
    let deadline = Instant::now() + Duration::from_secs(30);
    // The positive event: a checkpoint wrote pages, and its blocks left memory.
    loop {
        let s = store.stats();
        if s.index_bytes_written > 0 && s.index_resident_blocks * 16 * 1024 <= budget {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint started by the changed blocks: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// At production scale: 1.2 million messages in two queues (about 1,200 pages), a committed
/// checkpoint, then acks at the front and sends at the back; power cuts (random 4 KiB pages
/// lost, a torn one) at points spread over the next checkpoint's I/O calls. Each reopened
/// store must use a checkpoint and hold exactly the confirmed counts, bytes and ends of both
/// queues.
#[test]
fn a_power_cut_during_a_checkpoint_of_a_million_messages_keeps_a_usable_checkpoint() {
    let cfg = JournalConfig {
        index_cache_bytes: 1024 * 1024,
        ..small_config(8 * 1024 * 1024)
    };
    let base = MemDir::new();
    {
        let store = open_mem(&base, cfg.clone());
        let big = |list: &str, seqs: std::ops::RangeInclusive<u64>| {
            let seqs: Vec<u64> = seqs.collect();
            for chunk in seqs.chunks(4_000) {
                let ops = chunk
                    .iter()
                    .map(|s| enq(list, *s, body(list, *s, 8)))
                    .collect();
                store.submit(ops).wait_blocking().unwrap();
            }
        };
        big(Q1, 1..=800_000);
        big(Q2, 1..=400_000);
        assert!(store.checkpoint().unwrap());
        ack(&store, Q1, 1..=100_000);
        big(Q2, 400_001..=450_000);
        ack(&store, Q2, (1..=450_000).filter(|s| s % 1_000 == 0));
    }
    let base = base.power_loss(PowerLoss::DropUnsynced);
    let open = |dir: &MemDir| open_mem(dir, cfg.clone());
    let expected = open(&base.power_loss(PowerLoss::DropUnsynced))
        .recover()
        .unwrap();
    // How many I/O calls the checkpoint makes, on a copy.
    let calls = {
        let dir = base.power_loss(PowerLoss::DropUnsynced);
        let store = open(&dir);
        let before = dir.io_calls();
        assert!(store.checkpoint().unwrap());
        dir.io_calls() - before
    };
    assert!(calls > 20, "the checkpoint writes pages: {calls} I/O calls");
    for k in [1, calls / 4, calls / 2, calls * 3 / 4, calls - 3, calls - 1] {
        let dir = base.power_loss(PowerLoss::DropUnsynced);
        let store = open(&dir);
        let loss = PowerLoss::RandomPages { seed: k };
        dir.arm_power_cut(k.max(1), loss);
        let _ = store.checkpoint();
        drop(store);
        let store = open(&dir.power_loss(loss));
        assert!(
            store.recovery_report().from_checkpoint,
            "cut at I/O call {k} of {calls}: {:?}",
            store.recovery_report()
        );
        assert_eq!(
            store.recover().unwrap(),
            expected,
            "cut at I/O call {k} of {calls}"
        );
        for (list, first, last) in [(Q1, 100_001, 800_000), (Q2, 1, 450_000 - 1)] {
            let head = store.load(list, None, 1).unwrap();
            let tail = store.load(list, Some(last - 1), 1).unwrap();
            assert_eq!(head[0].seq, first, "cut at {k}: {list} starts");
            assert_eq!(tail[0].seq, last, "cut at {k}: {list} ends");
            assert_eq!(&tail[0].payload[..], &body(list, last, 8)[..]);
        }
    }
}
