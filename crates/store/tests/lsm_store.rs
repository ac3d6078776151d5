//! The lsm store's behaviour through the `MessageStore` seam: the same answers as the memory
//! store, across clean reopens, reopens without close, and a killed process.
#![cfg(feature = "lsm")]

mod journal_common;

use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use ferromq_store::{
    Batch, Fence, LsmConfig, LsmStore, MemoryStore, MessageStore, Op, StoreError, SyncMode,
};
use journal_common::*;
use parking_lot::Mutex;

fn open(dir: &tempfile::TempDir) -> LsmStore {
    LsmStore::open(LsmConfig::new(dir.path())).unwrap()
}

fn seqs(store: &dyn MessageStore, list: &str, after: Option<u64>, max: usize) -> Vec<u64> {
    store
        .load(list, after, max)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect()
}

#[test]
fn load_returns_messages_in_seq_order_across_batches_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    assert_eq!(s.kind(), "lsm");
    // Seqs that sort wrongly as little-endian or as text (9 < 10 < 256 < 257).
    for seq in [1u64, 9, 10, 256, 257, 70_000] {
        s.submit(vec![enq("queue://a", seq, body("queue://a", seq, 10))])
            .wait_blocking()
            .unwrap();
    }
    assert_eq!(
        seqs(&s, "queue://a", None, 100),
        [1, 9, 10, 256, 257, 70_000]
    );
    assert_eq!(seqs(&s, "queue://a", Some(9), 2), [10, 256]);
    assert_eq!(seqs(&s, "queue://a", Some(70_000), 10), Vec::<u64>::new());
    assert_eq!(seqs(&s, "queue://a", Some(u64::MAX), 10), Vec::<u64>::new());
    assert!(s.load("queue://a", None, 0).unwrap().is_empty());
    assert!(s.load("queue://none", None, 10).unwrap().is_empty());
    let page = s.load("queue://a", Some(256), 1).unwrap();
    assert_eq!(page[0].payload, Bytes::from(body("queue://a", 257, 10)));
}

#[test]
fn lists_whose_names_share_a_prefix_or_hold_nul_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.submit(vec![
        enq("queue://a", 1, b"a".to_vec()),
        enq("queue://ab", 1, b"ab".to_vec()),
        enq("queue://a\0", 2, b"nul".to_vec()),
    ])
    .wait_blocking()
    .unwrap();
    assert_eq!(seqs(&s, "queue://a", None, 10), [1]);
    assert_eq!(seqs(&s, "queue://a\0", None, 10), [2]);
    s.submit(vec![Op::Purge {
        list: "queue://a".into(),
    }])
    .wait_blocking()
    .unwrap();
    assert_eq!(seqs(&s, "queue://ab", None, 10), [1]);
    assert_eq!(seqs(&s, "queue://a\0", None, 10), [2]);
    assert_eq!(s.usage_bytes(), 5);
}

#[test]
fn acks_remove_messages_and_acking_an_absent_message_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.submit((1..=4).map(|i| enq("queue://a", i, vec![0; 100])).collect())
        .wait_blocking()
        .unwrap();
    s.submit(vec![
        deq("queue://a", 2),
        deq("queue://a", 2),
        deq("queue://a", 99),
    ])
    .wait_blocking()
    .unwrap();
    s.submit(vec![deq("queue://nowhere", 1)])
        .wait_blocking()
        .unwrap();
    assert_eq!(seqs(&s, "queue://a", None, 10), [1, 3, 4]);
    assert_eq!(s.usage_bytes(), 300);
    let r = s.recover().unwrap();
    assert_eq!(r.lists.len(), 1);
    assert_eq!(
        (r.lists[0].count, r.lists[0].bytes, r.lists[0].max_seq),
        (3, 300, 4)
    );
    // Acking everything leaves no list to recover.
    s.submit(vec![
        deq("queue://a", 1),
        deq("queue://a", 3),
        deq("queue://a", 4),
    ])
    .wait_blocking()
    .unwrap();
    assert!(s.recover().unwrap().lists.is_empty());
    assert_eq!(s.usage_bytes(), 0);
}

#[test]
fn re_enqueueing_a_seq_replaces_it_and_keeps_bytes_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.submit(vec![
        enq("queue://a", 1, vec![1; 10]),
        enq("queue://a", 2, vec![2; 5]),
    ])
    .wait_blocking()
    .unwrap();
    // Once in a later group (read from RocksDB) and once within the same batch (read from the
    // group's overlay).
    s.submit(vec![enq("queue://a", 1, vec![3; 7])])
        .wait_blocking()
        .unwrap();
    s.submit(vec![
        enq("queue://a", 3, vec![4; 1]),
        enq("queue://a", 3, vec![5; 4]),
    ])
    .wait_blocking()
    .unwrap();
    assert_eq!(s.usage_bytes(), 7 + 5 + 4);
    let page = s.load("queue://a", None, 10).unwrap();
    assert_eq!(page[0].payload, Bytes::from(vec![3; 7]));
    assert_eq!(page[2].payload, Bytes::from(vec![5; 4]));
    assert_eq!(s.recover().unwrap().lists[0].count, 3);
}

#[test]
fn durable_subscriptions_are_stored_replaced_and_deleted_with_their_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let mut a = sub("durable://c:a", "t.>");
    let b = sub("durable://c:b", "t.x");
    s.submit(vec![
        Op::PutSubscription(a.clone()),
        Op::PutSubscription(b.clone()),
        enq("durable://c:a", 1, b"x".to_vec()),
        enq("durable://c:b", 1, b"y".to_vec()),
    ])
    .wait_blocking()
    .unwrap();
    a.selector = None;
    a.no_local = true;
    s.submit(vec![Op::PutSubscription(a.clone())])
        .wait_blocking()
        .unwrap();
    assert_eq!(s.recover().unwrap().subscriptions, [a.clone(), b.clone()]);
    s.submit(vec![Op::DeleteSubscription {
        list: "durable://c:b".into(),
    }])
    .wait_blocking()
    .unwrap();
    let r = s.recover().unwrap();
    assert_eq!(r.subscriptions, [a]);
    assert_eq!(r.lists.len(), 1);
    assert_eq!(r.lists[0].list, "durable://c:a");
    assert!(s.load("durable://c:b", None, 10).unwrap().is_empty());
    assert_eq!(s.usage_bytes(), 1);
}

#[test]
fn purge_removes_earlier_messages_of_the_batch_and_keeps_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.submit(vec![enq("queue://a", 1, vec![0; 10])])
        .wait_blocking()
        .unwrap();
    s.submit(vec![
        enq("queue://a", 2, vec![0; 10]),
        Op::Purge {
            list: "queue://a".into(),
        },
        enq("queue://a", 3, vec![0; 3]),
        deq("queue://a", 2),
    ])
    .wait_blocking()
    .unwrap();
    assert_eq!(seqs(&s, "queue://a", None, 10), [3]);
    assert_eq!(s.usage_bytes(), 3);
    let r = s.recover().unwrap();
    // The purge forgot the list, so max_seq restarts from what came after it (as in memory).
    assert_eq!(
        (r.lists[0].count, r.lists[0].bytes, r.lists[0].max_seq),
        (1, 3, 3)
    );
    s.submit(vec![Op::Purge {
        list: "queue://a".into(),
    }])
    .wait_blocking()
    .unwrap();
    assert!(s.recover().unwrap().lists.is_empty());
    assert_eq!(s.usage_bytes(), 0);
}

#[test]
fn a_multi_list_batch_is_applied_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.submit(vec![enq("queue://in", 1, b"m".to_vec())])
        .wait_blocking()
        .unwrap();
    // A transaction: consume from one queue, send to two others, register a subscription.
    s.submit(vec![
        deq("queue://in", 1),
        enq("queue://out1", 1, b"a".to_vec()),
        enq("queue://out2", 1, b"bb".to_vec()),
        Op::PutSubscription(sub("durable://c:s", "t")),
    ])
    .wait_blocking()
    .unwrap();
    drop(s);
    let s = open(&dir);
    let r = s.recover().unwrap();
    let names: Vec<&str> = r.lists.iter().map(|l| l.list.as_str()).collect();
    assert_eq!(names, ["queue://out1", "queue://out2"]);
    assert_eq!(r.subscriptions.len(), 1);
    assert_eq!(s.usage_bytes(), 3);
}

#[test]
fn reopen_recovers_counts_bytes_max_seq_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.submit(vec![
        Op::PutSubscription(sub("durable://c:s", "t.>")),
        enq("durable://c:s", 5, vec![1; 50]),
        enq("queue://a", 1, vec![1; 10]),
        enq("queue://a", 2, vec![1; 20]),
        enq("queue://a", 3, vec![1; 30]),
        enq("dupids://producer-1", 7, b"ID:1".to_vec()),
    ])
    .wait_blocking()
    .unwrap();
    s.submit(vec![deq("queue://a", 3)]).wait_blocking().unwrap();
    let before = state(&s);
    let usage = s.usage_bytes();
    s.close().unwrap();
    assert!(matches!(
        s.submit(vec![enq("queue://a", 9, vec![0])]).wait_blocking(),
        Err(StoreError::Closed)
    ));
    // close() released the RocksDB lock although `s` is still alive.
    let s2 = open(&dir);
    assert_eq!(state(&s2), before);
    assert_eq!(s2.usage_bytes(), usage);
    let a = before
        .recovery
        .lists
        .iter()
        .find(|l| l.list == "queue://a")
        .unwrap();
    assert_eq!((a.count, a.bytes, a.max_seq), (2, 30, 3));
    let dup = &before.messages["dupids://producer-1"];
    assert_eq!((dup[0].seq, &dup[0].payload[..]), (7, &b"ID:1"[..]));
    drop(s);
    // Without close(): the WAL replays.
    s2.submit(vec![enq("queue://a", 4, vec![1; 40])])
        .wait_blocking()
        .unwrap();
    let before = state(&s2);
    drop(s2);
    let s3 = open(&dir);
    assert_eq!(state(&s3), before);
    assert_eq!(s3.usage_bytes(), 30 + 40 + 50 + 4);
}

#[test]
fn a_ten_mib_message_round_trips_through_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let big = body("queue://big", 1, 10 * 1024 * 1024);
    s.submit(vec![enq("queue://big", 1, big.clone())])
        .wait_blocking()
        .unwrap();
    s.submit(vec![enq("queue://big", 2, b"small".to_vec())])
        .wait_blocking()
        .unwrap();
    drop(s);
    let s = open(&dir);
    let page = s.load("queue://big", None, 10).unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].payload.len(), big.len());
    assert!(page[0].payload == big[..]);
    assert_eq!(s.usage_bytes(), big.len() as u64 + 5);
}

#[test]
fn five_hundred_lists_recover_with_their_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let names: Vec<String> = (0..500).map(|i| format!("queue://q{i}")).collect();
    for chunk in names.chunks(50) {
        let batch: Batch = chunk
            .iter()
            .flat_map(|n| (1..=3).map(move |seq| enq(n, seq, body(n, seq, 16))))
            .collect();
        s.submit(batch).wait_blocking().unwrap();
    }
    s.submit(names.iter().map(|n| deq(n, 2)).collect())
        .wait_blocking()
        .unwrap();
    s.close().unwrap();
    drop(s);
    let s = open(&dir);
    let r = s.recover().unwrap();
    assert_eq!(r.lists.len(), 500);
    for l in &r.lists {
        assert_eq!((l.count, l.max_seq), (2, 3), "{}", l.list);
        let page = s.load(&l.list, None, 10).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(page[1].payload, Bytes::from(body(&l.list, 3, 16)));
    }
    assert_eq!(s.usage_bytes(), 500 * 2 * 16);
}

#[test]
fn store_usage_limit_refuses_enqueues_but_not_acks() {
    let dir = tempfile::tempdir().unwrap();
    let s = LsmStore::open(LsmConfig {
        store_usage_limit: 100,
        ..LsmConfig::new(dir.path())
    })
    .unwrap();
    s.submit(vec![enq("queue://a", 1, vec![0; 80])])
        .wait_blocking()
        .unwrap();
    assert!(matches!(
        s.submit(vec![enq("queue://a", 2, vec![0; 30])])
            .wait_blocking(),
        Err(StoreError::Full(_))
    ));
    s.submit(vec![deq("queue://a", 1)]).wait_blocking().unwrap();
    s.submit(vec![enq("queue://a", 2, vec![0; 30])])
        .wait_blocking()
        .unwrap();
}

/// A fence that blocks its first check until released, so a test knows exactly which batches
/// are queued while the writer is busy with a group; it can also be told to say "no".
#[derive(Debug)]
struct GateFence {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
    deposed: std::sync::atomic::AtomicBool,
}

impl Fence for GateFence {
    fn check(&self) -> Result<(), String> {
        if let Some(entered) = self.entered.lock().take() {
            let _ = entered.send(());
            if let Some(release) = self.release.lock().take() {
                let _ = release.recv();
            }
        }
        if self.deposed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("another broker took the lock".into());
        }
        Ok(())
    }
}

fn gate() -> (Arc<GateFence>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let fence = Arc::new(GateFence {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
        deposed: Default::default(),
    });
    (fence, entered_rx, release_tx)
}

#[test]
fn sixteen_concurrent_submitters_share_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (fence, entered, release) = gate();
    let s = Arc::new(
        LsmStore::open(LsmConfig {
            fence: Some(fence),
            ..LsmConfig::new(dir.path())
        })
        .unwrap(),
    );
    // The first batch makes the writer stop in the fence check of its group.
    let first = s.submit(vec![enq("queue://a", 1, vec![0; 1024])]);
    entered.recv().unwrap();
    // 16 producers queue their batches meanwhile (submit returns once queued).
    let completions: Vec<_> = (0..16u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let list = format!("queue://p{t}");
                s.submit(vec![enq(&list, 1, vec![0; 1024])])
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    release.send(()).unwrap();
    first.wait_blocking().unwrap();
    for c in completions {
        c.wait_blocking().unwrap();
    }
    let stats = s.stats();
    assert_eq!(stats.batches, 17);
    // One group (and one sync) for the first batch, one for the 16 queued behind it.
    assert_eq!((stats.groups, stats.syncs), (2, 2));
    assert_eq!(stats.bytes_written, 17 * 1024);
    assert_eq!(s.recover().unwrap().lists.len(), 17);
}

#[test]
fn a_deposed_writer_confirms_nothing_and_fails_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let (fence, entered, release) = gate();
    let s = LsmStore::open(LsmConfig {
        fence: Some(fence.clone()),
        ..LsmConfig::new(dir.path())
    })
    .unwrap();
    let c = s.submit(vec![enq("queue://a", 1, vec![0; 10])]);
    entered.recv().unwrap();
    fence
        .deposed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    release.send(()).unwrap();
    assert!(matches!(c.wait_blocking(), Err(StoreError::Failed(r)) if r.contains("fenced")));
    assert!(matches!(
        s.submit(vec![enq("queue://a", 2, vec![0; 10])])
            .wait_blocking(),
        Err(StoreError::Failed(_))
    ));
    assert!(s.close().is_err());
    drop(s);
    let s = open(&dir);
    assert!(s.recover().unwrap().lists.is_empty());
}

#[test]
fn periodic_and_never_sync_modes_confirm_and_persist_through_close() {
    for sync in [SyncMode::Never, SyncMode::Periodic { interval_ms: 50 }] {
        let dir = tempfile::tempdir().unwrap();
        let s = LsmStore::open(LsmConfig {
            sync,
            ..LsmConfig::new(dir.path())
        })
        .unwrap();
        for seq in 1..=20 {
            s.submit(vec![enq("queue://a", seq, vec![0; 100])])
                .wait_blocking()
                .unwrap();
        }
        s.close().unwrap();
        assert!(s.stats().syncs >= 1, "{sync:?}: close syncs the WAL");
        drop(s);
        let s = open(&dir);
        assert_eq!(s.recover().unwrap().lists[0].count, 20, "{sync:?}");
    }
}

#[test]
fn bad_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in [
        LsmConfig {
            queue_batches_max: 0,
            ..LsmConfig::new(dir.path())
        },
        LsmConfig {
            sync: SyncMode::Periodic { interval_ms: 0 },
            ..LsmConfig::new(dir.path())
        },
        LsmConfig {
            write_buffer_bytes: 1,
            ..LsmConfig::new(dir.path())
        },
    ] {
        assert!(matches!(LsmStore::open(cfg), Err(StoreError::Config(_))));
    }
    // A second open of a directory in use fails cleanly (RocksDB's LOCK).
    let s = open(&dir);
    assert!(LsmStore::open(LsmConfig::new(dir.path())).is_err());
    drop(s);
}

const LISTS: [&str; 5] = [
    "queue://a",
    "queue://b",
    "durable://c:s1",
    "durable://c:s2",
    "dupids://p1",
];

fn random_batch(rng: &mut Rng, next_seq: &mut [u64; 5]) -> Batch {
    (0..1 + rng.below(5))
        .map(|_| {
            let l = rng.below(5) as usize;
            let list = LISTS[l];
            match rng.below(100) {
                0..=49 => {
                    let seq = next_seq[l];
                    next_seq[l] += 1;
                    enq(list, seq, body(list, seq, 1 + rng.below(900) as usize))
                }
                50..=54 => {
                    // Re-enqueue of a seq that may exist.
                    let seq = 1 + rng.below(next_seq[l]);
                    enq(list, seq, body(list, seq, 1 + rng.below(50) as usize))
                }
                55..=87 => deq(list, 1 + rng.below(next_seq[l])),
                88..=92 => Op::PutSubscription(sub(LISTS[2 + rng.below(2) as usize], "t.>")),
                93..=95 => Op::DeleteSubscription {
                    list: LISTS[2 + rng.below(2) as usize].to_string(),
                },
                _ => Op::Purge {
                    list: list.to_string(),
                },
            }
        })
        .collect()
}

#[test]
fn lsm_matches_memory_store_through_reopens() {
    for seed in 0..4u64 {
        let mut rng = Rng(seed);
        let mut next_seq = [1u64; 5];
        let model = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let mut lsm = open(&dir);
        for step in 0..400 {
            let batch = random_batch(&mut rng, &mut next_seq);
            model.submit(batch.clone()).wait_blocking().unwrap();
            // Several batches in flight at once, so groups hold more than one batch.
            let pending = lsm.submit(batch);
            if step % 4 == 3 {
                pending.wait_blocking().unwrap();
            }
            if step % 100 == 99 {
                pending_sync(&lsm);
                assert_eq!(state(&lsm), state(&model), "seed {seed} step {step}");
                assert_eq!(lsm.usage_bytes(), model.usage_bytes());
                if step % 200 == 99 {
                    drop(lsm);
                } else {
                    lsm.close().unwrap();
                    drop(lsm);
                }
                lsm = open(&dir);
                assert_eq!(state(&lsm), state(&model), "seed {seed} reopen {step}");
                assert_eq!(lsm.usage_bytes(), model.usage_bytes());
            }
        }
    }
}

/// Waits until everything submitted so far is applied (an empty batch queues behind it).
fn pending_sync(store: &dyn MessageStore) {
    store.submit(Vec::new()).wait_blocking().unwrap();
}

fn open_with_delay(dir: &tempfile::TempDir, ack_sync_delay_ms: u64) -> LsmStore {
    LsmStore::open(LsmConfig {
        ack_sync_delay_ms,
        ..LsmConfig::new(dir.path())
    })
    .unwrap()
}

#[test]
fn a_lazy_ack_skips_the_wal_sync_until_the_next_synced_group() {
    let dir = tempfile::tempdir().unwrap();
    // A delay far beyond the test: only a later synced group may sync the WAL.
    let s = open_with_delay(&dir, 10_000);
    for seq in 1..=3 {
        s.submit(vec![enq("queue://a", seq, body("queue://a", seq, 10))])
            .wait_blocking()
            .unwrap();
    }
    let syncs = s.stats().syncs;
    s.submit_lazy(vec![deq("queue://a", 2)])
        .wait_blocking()
        .unwrap();
    assert_eq!(s.stats().syncs, syncs, "a lazy ack must not sync the WAL");
    assert_eq!(seqs(&s, "queue://a", None, 10), [1, 3], "applied at once");
    s.submit(vec![enq("queue://a", 4, body("queue://a", 4, 10))])
        .wait_blocking()
        .unwrap();
    assert_eq!(s.stats().syncs, syncs + 1);
}

#[test]
fn a_lazy_ack_is_synced_by_the_timer_or_at_once_with_a_zero_delay() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_with_delay(&dir, 20);
    s.submit(vec![enq("queue://a", 1, b"x".to_vec())])
        .wait_blocking()
        .unwrap();
    let syncs = s.stats().syncs;
    s.submit_lazy(vec![deq("queue://a", 1)])
        .wait_blocking()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.stats().syncs == syncs && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(s.stats().syncs > syncs, "the timer never synced the WAL");
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let s = open_with_delay(&dir, 0);
    s.submit(vec![enq("queue://a", 1, b"x".to_vec())])
        .wait_blocking()
        .unwrap();
    let syncs = s.stats().syncs;
    s.submit_lazy(vec![deq("queue://a", 1)])
        .wait_blocking()
        .unwrap();
    assert_eq!(s.stats().syncs, syncs + 1);
}
