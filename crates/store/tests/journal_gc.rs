//! Garbage collection: consumed segments go, pinned ones stay, sparse ones are compacted, and a
//! full replay after GC neither resurrects acked messages nor mistakes released segments for
//! missing ones.

mod journal_common;

use ferromq_store::journal::{MemDir, StorageDir};
use ferromq_store::{MessageStore, Op};
use journal_common::*;

const Q: &str = "queue://q";

#[test]
fn after_consuming_everything_gc_leaves_a_few_segments() {
    let dir = MemDir::new();
    let config = small_config(8 * 1024);
    let store = open_mem(&dir, config.clone());
    for seq in 1..=200u64 {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, 500))])
            .wait_blocking()
            .unwrap();
    }
    assert!(store.segment_ids().len() >= 12, "{:?}", store.segment_ids());
    for seq in 1..=200u64 {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let report = store.gc().unwrap();
    assert!(!report.deleted.is_empty());
    let left = store.segment_ids();
    assert!(left.len() <= 2, "segments left: {left:?}");
    let files = dir.list().unwrap();
    assert!(
        files.iter().filter(|n| n.starts_with("journal-")).count() <= 2,
        "{files:?}"
    );
    assert_eq!(store.usage_bytes(), 0);
    drop(store);

    // A full replay (index gone) knows the deleted segments were released, not lost.
    dir.remove("index.db").unwrap();
    let store = open_mem(&dir, config);
    assert!(store.recovery_report().missing_segments.is_empty());
    assert!(store.recover().unwrap().lists.is_empty());
}

#[test]
fn live_messages_pin_their_segment_until_compaction_moves_them() {
    let dir = MemDir::new();
    let config = small_config(8 * 1024);
    let store = open_mem(&dir, config.clone());
    store
        .submit(vec![Op::PutSubscription(sub("durable://c:s", "t"))])
        .wait_blocking()
        .unwrap();
    for seq in 1..=200u64 {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, 500))])
            .wait_blocking()
            .unwrap();
    }
    // Keep seq 1 (segment 1) and seq 100 (a middle segment); ack the rest.
    for seq in (2..=200u64).filter(|s| *s != 100) {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let expected = state(&store);
    let report = store.gc().unwrap();
    assert!(
        report.compacted.contains(&1),
        "segment 1 holds one live message and the subscription: compacted ({report:?})"
    );
    let left = store.segment_ids();
    assert!(left.len() <= 3, "segments left: {left:?}");
    assert_eq!(state(&store), expected);

    // Neither a checkpointed reopen nor a full replay resurrects an acked message.
    drop(store);
    let store = open_mem(&dir, config.clone());
    assert_eq!(state(&store), expected);
    drop(store);
    dir.remove("index.db").unwrap();
    let store = open_mem(&dir, config);
    assert_eq!(state(&store), expected);
}

#[test]
fn an_ack_segment_is_kept_while_the_segment_it_acks_into_lives() {
    let dir = MemDir::new();
    let config = ferromq_store::JournalConfig {
        compact_live_percent_max: 0,
        ..small_config(8 * 1024)
    };
    let store = open_mem(&dir, config.clone());
    for seq in 1..=20u64 {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, 500))])
            .wait_blocking()
            .unwrap();
    }
    // Segment 1 keeps seq 1 alive; acks of 2..=20 land in later segments.
    for seq in 2..=20u64 {
        store
            .submit(vec![
                deq(Q, seq),
                enq("queue://filler", seq, body(Q, seq, 700)),
            ])
            .wait_blocking()
            .unwrap();
    }
    for seq in 2..=20u64 {
        store
            .submit(vec![deq("queue://filler", seq)])
            .wait_blocking()
            .unwrap();
    }
    let expected = state(&store);
    store.gc().unwrap();
    assert!(store.segment_ids().contains(&1));
    drop(store);
    dir.remove("index.db").unwrap();
    let store = open_mem(&dir, config);
    assert_eq!(state(&store), expected, "no acked message came back");
}

/// Waits for `completion` at most `bound`; `None` when it did not resolve in time.
fn completes_within(
    completion: ferromq_store::Completion,
    bound: std::time::Duration,
) -> Option<Result<(), ferromq_store::StoreError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(completion.wait_blocking());
    });
    rx.recv_timeout(bound).ok()
}

const BOUND: std::time::Duration = std::time::Duration::from_secs(20);

#[test]
fn group_commit_goes_on_while_gc_reads_a_segment_it_compacts() {
    let dir = MemDir::new();
    let store = std::sync::Arc::new(open_mem(&dir, small_config(8 * 1024)));
    for seq in 1..=60u64 {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, 500))])
            .wait_blocking()
            .unwrap();
    }
    for seq in 2..=60u64 {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    // Segment 1 holds one live message: GC compacts it, reading it back. Hold those reads.
    let gate = dir.hold_io("journal-1.log");
    let gc = {
        let store = store.clone();
        std::thread::spawn(move || store.gc())
    };
    assert!(gate.wait_for_waiter(BOUND), "GC reads segment 1");
    let result = completes_within(store.submit(vec![enq(Q, 61, body(Q, 61, 10))]), BOUND);
    gate.open();
    assert!(
        matches!(result, Some(Ok(()))),
        "a batch completes while GC reads: {result:?}"
    );
    let report = gc.join().unwrap().unwrap();
    assert!(report.compacted.contains(&1), "{report:?}");
    let seqs: Vec<u64> = state(store.as_ref()).messages[Q]
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, vec![1, 61]);
}

#[test]
fn group_commit_goes_on_while_a_checkpoint_is_written() {
    let dir = MemDir::new();
    let store = std::sync::Arc::new(open_mem(&dir, small_config(64 * 1024)));
    for seq in 1..=20u64 {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, 500))])
            .wait_blocking()
            .unwrap();
    }
    let gate = dir.hold_io("index.db");
    let checkpoint = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    assert!(
        gate.wait_for_waiter(BOUND),
        "the checkpoint writes index.db.tmp"
    );
    let result = completes_within(store.submit(vec![enq(Q, 21, body(Q, 21, 10))]), BOUND);
    gate.open();
    assert!(
        matches!(result, Some(Ok(()))),
        "a batch completes while a checkpoint is written: {result:?}"
    );
    assert!(checkpoint.join().unwrap().unwrap());
    // The checkpoint covers what was durable when it was taken, and a reopen replays the rest.
    let before = state(store.as_ref());
    drop(store);
    let store = open_mem(&dir, small_config(64 * 1024));
    assert!(store.recovery_report().from_checkpoint);
    assert!(store.recovery_report().replayed_ops >= 1);
    assert_eq!(state(&store), before);
}
