//! HA fencing of the journal: a deposed master ("zombie") confirms nothing, checkpoints and
//! deletes nothing, and nothing it writes after a newer master took over is ever replayed.
//!
//! Two stores on one shared `MemDir` play the old and the new master; a test fence plays the HA
//! locker, and can pass a chosen number of further checks before failing (the check-then-act
//! window of a master deposed between its check and its write).

mod journal_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferromq_store::journal::record::{
    begin_record, encode_batch, finish_record, parse_frame, EpochStart, RecordType,
    RECORD_HEADER_BYTES, RECORD_MAGIC, SEGMENT_HEADER_BYTES,
};
use ferromq_store::journal::{MemDir, StorageDir};
use ferromq_store::{Fence, JournalConfig, JournalStore, MessageStore, StoreError};
use journal_common::*;

const Q: &str = "queue://q";

/// A fence that passes `passes_left` more checks, then fails every one (`u64::MAX` = forever).
#[derive(Debug)]
struct TestFence {
    passes_left: AtomicU64,
    checks: AtomicU64,
}

impl TestFence {
    fn holding() -> Arc<TestFence> {
        Arc::new(TestFence {
            passes_left: AtomicU64::new(u64::MAX),
            checks: AtomicU64::new(0),
        })
    }

    /// Deposed, but the next `n` checks still pass (0 = the very next check fails).
    fn depose_after(&self, n: u64) {
        self.passes_left.store(n, Ordering::SeqCst);
    }

    fn checks(&self) -> u64 {
        self.checks.load(Ordering::SeqCst)
    }
}

impl Fence for TestFence {
    fn check(&self) -> Result<(), String> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let mut n = self.passes_left.load(Ordering::SeqCst);
        loop {
            match n {
                0 => return Err("the lock file no longer holds our epoch".into()),
                u64::MAX => return Ok(()),
                _ => match self.passes_left.compare_exchange(
                    n,
                    n - 1,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return Ok(()),
                    Err(now) => n = now,
                },
            }
        }
    }
}

fn ha_config(epoch: u64, fence: &Arc<TestFence>) -> JournalConfig {
    JournalConfig {
        epoch,
        fence: Some(fence.clone() as Arc<dyn Fence>),
        ..small_config(8 * 1024)
    }
}

fn put(store: &JournalStore, seq: u64) -> Result<(), StoreError> {
    store
        .submit(vec![enq(Q, seq, body(Q, seq, 3000))])
        .wait_blocking()
}

fn seqs(store: &dyn MessageStore) -> Vec<u64> {
    state(store)
        .messages
        .get(Q)
        .map(|m| m.iter().map(|m| m.seq).collect())
        .unwrap_or_default()
}

fn assert_fenced(result: Result<(), StoreError>) {
    match result {
        Err(e) => assert!(e.to_string().contains("fenced"), "not a fence error: {e}"),
        Ok(()) => panic!("a deposed master got a batch confirmed"),
    }
}

fn segment_files(dir: &MemDir) -> Vec<String> {
    let mut v: Vec<String> = dir
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("journal-"))
        .collect();
    v.sort();
    v
}

/// End of the records of a segment file (first position where no valid record starts).
fn records_end(bytes: &[u8]) -> usize {
    let mut at = SEGMENT_HEADER_BYTES;
    while let Ok(frame) = parse_frame(&bytes[at..]) {
        at += frame.total_bytes();
    }
    at
}

#[test]
fn a_fenced_store_confirms_nothing_more_and_neither_checkpoints_nor_deletes() {
    let dir = MemDir::new();
    let fence = TestFence::holding();
    let store = open_mem(&dir, ha_config(1, &fence));
    for seq in 1..=10 {
        put(&store, seq).unwrap();
    }
    for seq in 1..=8 {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let segments_before = segment_files(&dir);
    assert!(segments_before.len() >= 4, "{segments_before:?}");

    fence.depose_after(0);
    assert_fenced(put(&store, 11));
    // Permanently failed: later batches fail too, even with no further check.
    let checks = fence.checks();
    assert_fenced(put(&store, 12));
    assert_fenced(store.submit(vec![deq(Q, 9)]).wait_blocking());
    assert!(fence.checks() <= checks + 2);
    assert!(store.checkpoint().is_err(), "a fenced store checkpointed");
    assert!(store.gc().is_err(), "a fenced store ran GC");
    assert!(store.close().is_err());
    drop(store);
    assert!(
        !dir.list().unwrap().iter().any(|n| n == "index.db"),
        "a checkpoint was written after the fence failed"
    );
    assert_eq!(
        segment_files(&dir),
        segments_before,
        "a segment was deleted"
    );

    // What was confirmed before is all there is; the refused batches never reached the disk.
    let fence = TestFence::holding();
    let reopened = open_mem(&dir, ha_config(1, &fence));
    assert_eq!(seqs(&reopened), vec![9, 10]);
    // The segments the fenced GC kept were garbage: a master that holds the lock deletes them.
    assert!(!reopened.gc().unwrap().deleted.is_empty());
}

#[test]
fn gc_stops_at_the_first_failed_check_before_a_segment_deletion() {
    let dir = MemDir::new();
    let fence = TestFence::holding();
    let store = open_mem(&dir, ha_config(1, &fence));
    for seq in 1..=10 {
        put(&store, seq).unwrap();
    }
    for seq in 1..=8 {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let segments_before = segment_files(&dir);
    // Checkpoint file: a check before writing and one before the rename; the segments-released
    // record: one before its write, one after its sync. The next check is the first deletion's.
    fence.depose_after(4);
    let err = store.gc().unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    assert_eq!(
        segment_files(&dir),
        segments_before,
        "a segment was deleted"
    );
    assert_fenced(put(&store, 11));
}

#[test]
fn a_zombie_append_after_the_takeover_is_sealed_away() {
    let dir = MemDir::new();

    // A, master of epoch 1, confirms two messages.
    let fence_a = TestFence::holding();
    let a = open_mem(&dir, ha_config(1, &fence_a));
    assert_eq!(
        a.recovery_report().epoch_start.as_ref().map(|s| s.epoch),
        Some(1)
    );
    put(&a, 1).unwrap();
    put(&a, 2).unwrap();
    let a_head = *a.segment_ids().last().unwrap();

    // B takes over with epoch 2 while A is still alive (stopped, say): it recovers A's
    // confirmed messages, seals A's head and writes in a segment of its own.
    let fence_b = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence_b));
    let report = b.recovery_report().clone();
    let a_head_name = format!("journal-{a_head}.log");
    let sealed_len = records_end(&dir.file_bytes(&a_head_name).unwrap()) as u64;
    assert_eq!(
        report.epoch_start,
        Some(EpochStart {
            epoch: 2,
            sealed: vec![(a_head, sealed_len)],
        })
    );
    let b_first = *b.segment_ids().last().unwrap();
    assert_eq!(b_first, a_head + 1, "B starts a fresh segment");
    assert_eq!(seqs(&b), vec![1, 2]);
    put(&b, 3).unwrap();
    b.submit(vec![deq(Q, 1)]).wait_blocking().unwrap();

    // A wakes up. Its fence passes once more (it checked just before being deposed), so its
    // write reaches the disk; the check after the sync fails, so nothing is confirmed.
    fence_a.depose_after(1);
    assert_fenced(a.submit(vec![enq(Q, 99, body(Q, 99, 100))]).wait_blocking());
    assert_fenced(put(&a, 100));
    let a_bytes = dir.file_bytes(&a_head_name).unwrap();
    let at = sealed_len as usize;
    assert_eq!(
        a_bytes[at..at + 4],
        RECORD_MAGIC.to_le_bytes(),
        "the zombie's record is on disk, well-formed, past the seal"
    );
    assert!(parse_frame(&a_bytes[at..]).is_ok());

    // Both go away without a checkpoint: the next open replays the whole journal.
    drop(a);
    drop(b);
    assert!(!dir.list().unwrap().iter().any(|n| n == "index.db"));
    let fence_c = TestFence::holding();
    let c = open_mem(&dir, ha_config(3, &fence_c));
    let report = c.recovery_report().clone();
    assert!(!report.from_checkpoint);
    assert_eq!(report.ignored_past_seal, vec![(a_head_name, sealed_len)]);
    // A's confirmed data and B's, each exactly once; A's post-takeover record is not there.
    assert_eq!(seqs(&c), vec![2, 3]);
    let st = state(&c);
    assert_eq!(st.recovery.lists[0].max_seq, 3, "seq 99 left no trace");
}

#[test]
fn a_stale_checkpoint_written_by_a_zombie_is_ignored() {
    let dir = MemDir::new();
    let fence_a = TestFence::holding();
    let a = open_mem(&dir, ha_config(1, &fence_a));
    put(&a, 1).unwrap();

    let fence_b = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence_b));
    put(&b, 2).unwrap();
    b.close().unwrap();
    assert!(dir.list().unwrap().iter().any(|n| n == "index.db"));

    // A's fence lags (it has not noticed yet): A appends and confirms a record in its sealed
    // head, then checkpoints an index that includes it, with epoch 1, over B's checkpoint.
    put(&a, 99).unwrap();
    assert!(a.checkpoint().unwrap(), "the zombie wrote its checkpoint");
    drop(a);

    let fence_c = TestFence::holding();
    let c = open_mem(&dir, ha_config(3, &fence_c));
    let report = c.recovery_report().clone();
    // The zombie's checkpoint reaches past the seal of its head segment, so it is refused.
    assert!(!report.from_checkpoint);
    assert_eq!(seqs(&c), vec![1, 2]);
}

#[test]
fn a_takeover_uses_the_deposed_masters_last_legitimate_checkpoint() {
    let dir = MemDir::new();
    let fence_a = TestFence::holding();
    let a = open_mem(&dir, ha_config(1, &fence_a));
    put(&a, 1).unwrap();
    assert!(a.checkpoint().unwrap());
    put(&a, 2).unwrap();
    drop(a);
    // B takes over and dies before its first checkpoint.
    let fence_b = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence_b));
    put(&b, 3).unwrap();
    drop(b);
    assert!(dir.list().unwrap().iter().any(|n| n == "index.db"));
    // C replays what follows A's checkpoint (an older epoch, but written before B's
    // epoch-start), not the whole journal.
    let fence_c = TestFence::holding();
    let c = open_mem(&dir, ha_config(3, &fence_c));
    let report = c.recovery_report().clone();
    assert!(
        report.from_checkpoint,
        "a takeover must not need a full replay"
    );
    assert!(!report.stale_checkpoint_ignored);
    assert_eq!(seqs(&c), vec![1, 2, 3]);
}

#[test]
fn records_of_an_older_epoch_after_an_epoch_start_are_ignored() {
    let dir = MemDir::new();
    let fence = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence));
    put(&b, 1).unwrap();
    let head = *b.segment_ids().last().unwrap();
    drop(b);

    // A well-formed record of epoch 1 right after B's records in B's own segment.
    let name = format!("journal-{head}.log");
    let mut bytes = dir.file_bytes(&name).unwrap();
    let end = records_end(&bytes);
    let mut record = Vec::new();
    let start = begin_record(&mut record);
    encode_batch(&mut record, &[enq(Q, 7, body(Q, 7, 100))]).unwrap();
    finish_record(&mut record, start, RecordType::Batch, 1);
    assert!(record.len() > RECORD_HEADER_BYTES);
    bytes[end..end + record.len()].copy_from_slice(&record);
    dir.put_file_bytes(&name, bytes);

    let c = open_mem(&dir, ha_config(3, &fence));
    assert_eq!(c.recovery_report().stale_epoch_records_ignored, 1);
    assert_eq!(seqs(&c), vec![1]);
}

#[test]
fn a_master_with_an_older_epoch_than_the_journal_is_refused() {
    let dir = MemDir::new();
    let fence = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence));
    put(&b, 1).unwrap();
    b.close().unwrap();
    let err = try_open_mem(&dir, ha_config(1, &fence)).unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");

    // Without HA nobody else writes: the store adopts the journal's epoch, so what it writes is
    // not mistaken for a deposed master's records by the next open.
    let standalone = open_mem(&dir, small_config(8 * 1024));
    assert_eq!(standalone.recovery_report().epoch, 2);
    put(&standalone, 2).unwrap();
    drop(standalone);
    let again = open_mem(&dir, small_config(8 * 1024));
    assert_eq!(seqs(&again), vec![1, 2]);
}

#[test]
fn gc_keeps_an_epoch_start_while_the_segment_it_seals_exists() {
    let dir = MemDir::new();
    let fence_a = TestFence::holding();
    let a = open_mem(&dir, ha_config(1, &fence_a));
    put(&a, 1).unwrap();
    let a_head = *a.segment_ids().last().unwrap();
    drop(a);

    let fence_b = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence_b));
    let b_first = *b.segment_ids().last().unwrap();
    // Fill and consume several segments; message 1 keeps A's head alive.
    for seq in 2..=12 {
        put(&b, seq).unwrap();
    }
    for seq in 2..=12 {
        b.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let report = b.gc().unwrap();
    assert!(!report.deleted.is_empty(), "{report:?}");
    let left = b.segment_ids();
    assert!(left.contains(&a_head), "{left:?}");
    assert!(
        left.contains(&b_first),
        "the seal of {a_head} went while {a_head} exists: {left:?}"
    );

    // Once the sealed segment is consumed and gone, the seal may go too.
    b.submit(vec![deq(Q, 1)]).wait_blocking().unwrap();
    b.gc().unwrap();
    b.gc().unwrap();
    let left = b.segment_ids();
    assert!(!left.contains(&a_head), "{left:?}");
    assert!(!left.contains(&b_first), "{left:?}");
}

#[test]
fn a_zombie_rolling_to_a_new_segment_cannot_write_into_the_new_masters() {
    let dir = MemDir::new();
    let fence_a = TestFence::holding();
    let a = open_mem(&dir, ha_config(1, &fence_a));
    put(&a, 1).unwrap();
    put(&a, 2).unwrap();
    let fence_b = TestFence::holding();
    let b = open_mem(&dir, ha_config(2, &fence_b));
    put(&b, 3).unwrap();
    let b_segment = *b.segment_ids().last().unwrap();
    let b_bytes = dir.file_bytes(&format!("journal-{b_segment}.log")).unwrap();

    // A's head is full: its next record rolls to the id B already uses. Its fence has not
    // noticed yet (the window), but segment creation is exclusive: A fails instead of sharing
    // B's file.
    let err = put(&a, 99).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(put(&a, 100).is_err(), "the store failed for good");
    assert_eq!(
        dir.file_bytes(&format!("journal-{b_segment}.log")).unwrap(),
        b_bytes,
        "the zombie touched the new master's segment"
    );
    drop(a);
    drop(b);
    let c = open_mem(&dir, ha_config(3, &TestFence::holding()));
    assert_eq!(seqs(&c), vec![1, 2, 3]);
}
