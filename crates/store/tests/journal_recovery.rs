//! Recovery from damaged journals: torn tails, flipped bits, deleted or corrupt index, missing
//! segments, failed fsync, failed write, full disk. Each ends with a clear error or a repaired
//! store, never a panic, and no confirmed message is lost where its bytes are still on disk.

mod journal_common;

use std::sync::Arc;

use ferromq_store::journal::{MemDir, PowerLoss, StorageDir};
use ferromq_store::{JournalConfig, MessageStore, StoreError, SyncMode};
use journal_common::*;

const Q: &str = "queue://q";

/// Writes `n` single-enqueue batches of `len` bytes, each confirmed.
fn fill(store: &dyn MessageStore, seqs: std::ops::RangeInclusive<u64>, len: usize) {
    for seq in seqs {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, len))])
            .wait_blocking()
            .unwrap();
    }
}

fn seqs(store: &dyn MessageStore) -> Vec<u64> {
    state(store)
        .messages
        .get(Q)
        .map(|m| m.iter().map(|m| m.seq).collect())
        .unwrap_or_default()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern present")
}

#[test]
fn torn_tail_is_truncated_and_every_confirmed_message_is_kept() {
    let dir = MemDir::new();
    let config = small_config(1 << 20);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=10, 100);
    store
        .submit(vec![enq(Q, 11, vec![0xAB; 500])])
        .wait_blocking()
        .unwrap();
    drop(store);
    // Tear the last record: zero the second half of its payload, as a half-done write leaves it.
    let mut bytes = dir.file_bytes("journal-1.log").unwrap();
    let start = find(&bytes, &[0xAB; 500]);
    bytes[start + 250..start + 500].fill(0);
    dir.put_file_bytes("journal-1.log", bytes);

    let store = open_mem(&dir, config.clone());
    let torn = store
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(torn.0, "journal-1.log");
    assert!(
        torn.1 < start as u64,
        "truncated at the record start, before its payload"
    );
    assert_eq!(seqs(&store), (1..=10).collect::<Vec<_>>());
    // Appending after the repair, then reopening, works and keeps everything.
    fill(&store, 12..=13, 100);
    drop(store);
    let store = open_mem(&dir, config);
    assert!(store.recovery_report().torn_tail.is_none());
    assert_eq!(seqs(&store).len(), 12);
}

#[test]
fn flipped_bit_in_a_middle_record_stops_recovery_by_default_and_is_skipped_when_asked() {
    let dir = MemDir::new();
    let config = small_config(1 << 20);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=20, 300);
    drop(store);
    let mut bytes = dir.file_bytes("journal-1.log").unwrap();
    let at = find(&bytes, format!("{Q}#5|").as_bytes()) + 40;
    bytes[at] ^= 0x01;
    dir.put_file_bytes("journal-1.log", bytes);

    match try_open_mem(&dir, config.clone()) {
        Err(StoreError::Corrupt { location, reason }) => {
            assert!(location.starts_with("journal-1.log:"), "{location}");
            assert!(
                reason.contains("check_for_corrupt_journal_files"),
                "{reason}"
            );
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    let skipping = JournalConfig {
        check_for_corrupt_journal_files: true,
        ..config
    };
    let store = open_mem(&dir, skipping);
    assert_eq!(store.recovery_report().corrupt_records_skipped, 1);
    let expected: Vec<u64> = (1..=20).filter(|s| *s != 5).collect();
    assert_eq!(seqs(&store), expected);
}

#[test]
fn flipped_bit_in_a_checkpointed_message_is_reported_by_load() {
    let dir = MemDir::new();
    let config = small_config(1 << 20);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=5, 300);
    store.close().unwrap();
    let mut bytes = dir.file_bytes("journal-1.log").unwrap();
    let at = find(&bytes, format!("{Q}#3|").as_bytes()) + 40;
    bytes[at] ^= 0x80;
    dir.put_file_bytes("journal-1.log", bytes);
    let store = open_mem(&dir, config);
    assert!(store.recovery_report().from_checkpoint);
    assert_eq!(store.load(Q, None, 2).unwrap().len(), 2);
    match store.load(Q, Some(2), 1) {
        Err(StoreError::Corrupt { location, .. }) => {
            assert!(location.starts_with("journal-1.log:"))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn deleted_or_corrupt_index_is_rebuilt_from_the_whole_journal() {
    let dir = MemDir::new();
    let config = small_config(8 * 1024);
    let store = open_mem(&dir, config.clone());
    store
        .submit(vec![ferromq_store::Op::PutSubscription(sub(
            "durable://c:s",
            "t",
        ))])
        .wait_blocking()
        .unwrap();
    fill(&store, 1..=60, 400);
    for seq in (1..=60).step_by(3) {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let expected = state(&store);
    store.close().unwrap();

    dir.remove("index.db").unwrap();
    let store = open_mem(&dir, config.clone());
    assert!(!store.recovery_report().from_checkpoint);
    assert!(store.recovery_report().replayed_ops > 60);
    assert_eq!(state(&store), expected);
    store.close().unwrap();

    let mut index = dir.file_bytes("index.db").unwrap();
    let mid = index.len() / 2;
    index[mid] ^= 0xFF;
    dir.put_file_bytes("index.db", index);
    let store = open_mem(&dir, config);
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(state(&store), expected);
}

#[test]
fn missing_segment_stops_recovery_unless_ignored() {
    let dir = MemDir::new();
    let config = small_config(8 * 1024);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=60, 400);
    drop(store);
    assert!(
        dir.file_bytes("journal-4.log").is_some(),
        "several segments"
    );
    let lost = dir.file_bytes("journal-2.log").unwrap();
    dir.remove("journal-2.log").unwrap();

    match try_open_mem(&dir, config.clone()) {
        Err(StoreError::Corrupt { location, reason }) => {
            assert!(location.contains("journal-2.log"), "{location}");
            assert!(reason.contains("ignore_missing_journal_files"), "{reason}");
        }
        other => panic!("expected a missing-file error, got {other:?}"),
    }
    let ignoring = JournalConfig {
        ignore_missing_journal_files: true,
        ..config
    };
    let store = open_mem(&dir, ignoring);
    assert_eq!(store.recovery_report().missing_segments, vec![2]);
    let got = seqs(&store);
    // Exactly the messages whose bytes were in segment 2 are gone.
    let in_lost: Vec<u64> = (1..=60)
        .filter(|s| {
            let tag = format!("{Q}#{s}|");
            lost.windows(tag.len()).any(|w| w == tag.as_bytes())
        })
        .collect();
    assert!(!in_lost.is_empty());
    let expected: Vec<u64> = (1..=60).filter(|s| !in_lost.contains(s)).collect();
    assert_eq!(got, expected);
}

#[test]
fn failed_fsync_fails_the_store_for_good_and_confirmed_data_survives() {
    let dir = MemDir::new();
    let config = small_config(1 << 20);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=5, 100);
    dir.fail_sync(1);
    let err = store
        .submit(vec![enq(Q, 6, body(Q, 6, 100))])
        .wait_blocking()
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );
    // Never retried: later writes are refused with the reason.
    let later = store
        .submit(vec![enq(Q, 7, body(Q, 7, 100))])
        .wait_blocking()
        .unwrap_err();
    match later {
        StoreError::Failed(why) => assert!(why.contains("fdatasync"), "{why}"),
        other => panic!("expected Failed, got {other}"),
    }
    assert!(store.close().is_err(), "close reports the failure");
    let image = dir.power_loss(PowerLoss::DropUnsynced);
    let store = open_mem(&image, config);
    assert_eq!(seqs(&store), vec![1, 2, 3, 4, 5]);
}

#[test]
fn failed_write_fails_the_store_and_reopen_recovers() {
    let dir = MemDir::new();
    let config = small_config(1 << 20);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=3, 100);
    dir.fail_write(1);
    assert!(store
        .submit(vec![enq(Q, 4, body(Q, 4, 100))])
        .wait_blocking()
        .is_err());
    assert!(matches!(
        store.submit(vec![deq(Q, 1)]).wait_blocking(),
        Err(StoreError::Failed(_))
    ));
    drop(store);
    let store = open_mem(&dir.power_loss(PowerLoss::DropUnsynced), config);
    assert_eq!(seqs(&store), vec![1, 2, 3]);
}

#[test]
fn full_disk_fails_with_enospc_and_no_confirmed_message_is_lost() {
    let dir = MemDir::new();
    let config = small_config(16 * 1024);
    let store = open_mem(&dir, config.clone());
    dir.set_capacity(Some(40 * 1024));
    let mut confirmed = Vec::new();
    let mut error = None;
    for seq in 1..=200u64 {
        match store
            .submit(vec![enq(Q, seq, body(Q, seq, 1000))])
            .wait_blocking()
        {
            Ok(()) => confirmed.push(seq),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.expect("the disk filled up");
    assert!(
        error.to_string().contains("No space left on device")
            || error.to_string().contains("os error 28"),
        "{error}"
    );
    assert!(confirmed.len() > 10);
    assert!(store.submit(vec![deq(Q, 1)]).wait_blocking().is_err());
    drop(store);
    let image = dir.power_loss(PowerLoss::KeepRandomPrefix { seed: 7 });
    let store = open_mem(&image, config);
    assert_eq!(seqs(&store), confirmed);
}

#[test]
fn checkpoint_makes_reopen_replay_only_the_tail() {
    let dir = MemDir::new();
    let config = small_config(64 * 1024);
    let store = open_mem(&dir, config.clone());
    fill(&store, 1..=50, 200);
    assert!(store.checkpoint().unwrap());
    assert!(!store.checkpoint().unwrap(), "nothing new: no checkpoint");
    for seq in 51..=57u64 {
        store
            .submit(vec![enq(Q, seq, body(Q, seq, 200)), deq(Q, seq - 50)])
            .wait_blocking()
            .unwrap();
    }
    let expected = state(&store);
    drop(store); // no close: no final checkpoint
    let store = open_mem(&dir, config.clone());
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint);
    assert_eq!(report.replayed_ops, 14);
    assert_eq!(report.replayed_records, 7);
    assert_eq!(state(&store), expected);
    store.close().unwrap();
    let store = open_mem(&dir, config);
    assert_eq!(store.recovery_report().replayed_ops, 0);
    assert_eq!(state(&store), expected);
}

#[test]
fn ten_mib_messages_get_oversized_segments_and_read_back_intact() {
    let dir = MemDir::new();
    let config = small_config(1 << 20);
    let store = open_mem(&dir, config.clone());
    let big = body(Q, 1, 10 * 1024 * 1024);
    store
        .submit(vec![enq(Q, 1, big.clone())])
        .wait_blocking()
        .unwrap();
    fill(&store, 2..=3, 100);
    drop(store);
    let store = open_mem(&dir, config);
    let got = store.load(Q, None, 10).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(&got[0].payload[..], &big[..]);
    assert!(store.segment_ids().len() >= 2);
}

#[test]
fn usage_limit_refuses_enqueues_with_full_but_accepts_acks() {
    let dir = MemDir::new();
    let config = JournalConfig {
        store_usage_limit: 1000,
        ..small_config(64 * 1024)
    };
    let store = open_mem(&dir, config);
    fill(&store, 1..=1, 600);
    assert_eq!(store.usage_bytes(), 600);
    let full = store
        .submit(vec![enq(Q, 2, body(Q, 2, 600))])
        .wait_blocking();
    assert!(matches!(full, Err(StoreError::Full(_))), "{full:?}");
    store.submit(vec![deq(Q, 1)]).wait_blocking().unwrap();
    assert_eq!(store.usage_bytes(), 0);
    fill(&store, 2..=2, 600);
}

#[test]
fn periodic_and_never_sync_modes_confirm_and_persist_on_close() {
    for sync in [SyncMode::Periodic { interval_ms: 5 }, SyncMode::Never] {
        let dir = MemDir::new();
        let config = JournalConfig {
            sync,
            ..small_config(64 * 1024)
        };
        let store = open_mem(&dir, config.clone());
        fill(&store, 1..=20, 100);
        store.close().unwrap();
        assert!(matches!(
            store.submit(vec![deq(Q, 1)]).wait_blocking(),
            Err(StoreError::Closed)
        ));
        let store = open_mem(&dir.power_loss(PowerLoss::DropUnsynced), config);
        assert_eq!(seqs(&store).len(), 20, "{sync:?}");
    }
}

#[test]
fn real_files_in_a_tempdir_survive_close_and_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(64 * 1024);
    let store = ferromq_store::JournalStore::open(tmp.path(), config.clone()).unwrap();
    fill(&store, 1..=100, 1024);
    for seq in 1..=50 {
        store.submit(vec![deq(Q, seq)]).wait_blocking().unwrap();
    }
    let expected = state(&store);
    store.close().unwrap();
    let store = ferromq_store::JournalStore::open(tmp.path(), config.clone()).unwrap();
    assert_eq!(state(&store), expected);
    fill(&store, 101..=110, 1024);
    let expected = state(&store);
    drop(store);
    let store = ferromq_store::JournalStore::open(tmp.path(), config).unwrap();
    assert_eq!(store.recovery_report().replayed_records, 10);
    assert_eq!(state(&store), expected);
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|n| n == "index.db"), "{names:?}");
    let _ = Arc::new(MemDir::new()) as Arc<dyn StorageDir>;
}

/// Record boundaries of a segment image, from the first record to the first non-record.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    use ferromq_store::journal::record::{parse_frame, SEGMENT_HEADER_BYTES};
    let mut at = SEGMENT_HEADER_BYTES;
    let mut offsets = vec![at];
    while let Ok(frame) = parse_frame(&bytes[at..]) {
        at += frame.total_bytes();
        offsets.push(at);
    }
    offsets
}

/// Bytes of a one-enqueue batch record on `Q` carrying `payload_bytes`.
fn enqueue_record_bytes(payload_bytes: usize) -> usize {
    24 + 4 + 1 + 2 + Q.len() + 8 + 8 + payload_bytes
}

/// The bytes before a power cut: `#1` synced, then the group `enqueue #2 (9000 bytes) |
/// dequeue #1 | enqueue #3` written (one write, one sync unit) but not synced. Returns them with
/// the end of `#1`, the start of the page holding the dequeue, and the start of the dequeue.
/// Page write-back being unordered, a cut can keep that page and lose earlier ones.
fn image_of_an_unsynced_group() -> (Vec<u8>, usize, usize, usize) {
    use ferromq_store::journal::record::{
        begin_record, encode_batch, finish_record, mark_unit_start, RecordType,
    };
    const PAGE: usize = 4096;
    let dir = MemDir::new();
    let store = open_mem(&dir, small_config(64 * 1024));
    fill(&store, 1..=1, 100);
    drop(store);
    let mut bytes = dir.file_bytes("journal-1.log").unwrap();
    let end_of_1 = record_offsets(&bytes)[1];
    // The group as the writer encodes it: one write, the first record starts the sync unit.
    let mut group = Vec::new();
    let batches = [
        vec![enq(Q, 2, body(Q, 2, 9000))],
        vec![deq(Q, 1)],
        vec![enq(Q, 3, body(Q, 3, 100))],
    ];
    for (i, ops) in batches.iter().enumerate() {
        let start = begin_record(&mut group);
        encode_batch(&mut group, ops).unwrap();
        finish_record(&mut group, start, RecordType::Batch, 0);
        if i == 0 {
            mark_unit_start(&mut group[start..]);
        }
    }
    bytes[end_of_1..end_of_1 + group.len()].copy_from_slice(&group);
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 5, "four records");
    let dequeue_at = offsets[2];
    // The lost pages: from the end of the synced record to the page that holds the dequeue.
    let lost_until = dequeue_at / PAGE * PAGE;
    assert!(lost_until > end_of_1, "the hole must cover the head of #2");
    (bytes, end_of_1, lost_until, dequeue_at)
}

/// A directory holding `bytes` as `journal-1.log`, durably.
fn image_of(bytes: Vec<u8>) -> MemDir {
    let image = MemDir::new();
    image.put_file_bytes("journal-1.log", bytes);
    image
}

/// The group's first pages lost, from the end of `#1`: zeros where `#2`'s header was.
fn image_with_a_hole_before_stale_records() -> (MemDir, usize, usize) {
    let (mut bytes, end_of_1, lost_until, dequeue_at) = image_of_an_unsynced_group();
    bytes[end_of_1..lost_until].fill(0);
    (image_of(bytes), end_of_1, dequeue_at)
}

#[test]
fn a_lost_page_inside_the_last_unsynced_group_is_a_torn_tail_not_corruption() {
    // The page with #2's header survived, the next one did not, the one after did: #2 fails its
    // CRC and valid records of the same (never confirmed) group follow it.
    let (mut bytes, end_of_1, lost_until, _) = image_of_an_unsynced_group();
    let header_page_end = end_of_1 / 4096 * 4096 + 4096;
    assert!(header_page_end < lost_until);
    bytes[header_page_end..lost_until].fill(0);
    for config in [
        small_config(64 * 1024),
        JournalConfig {
            check_for_corrupt_journal_files: true,
            ..small_config(64 * 1024)
        },
    ] {
        let image = image_of(bytes.clone());
        let store = try_open_mem(&image, config.clone()).unwrap_or_else(|e| {
            panic!(
                "the store must restart (skip corrupt: {}): {e}",
                config.check_for_corrupt_journal_files
            )
        });
        assert_eq!(
            store.recovery_report().torn_tail,
            Some(("journal-1.log".to_string(), end_of_1 as u64))
        );
        assert_eq!(seqs(&store), vec![1], "nothing of the unconfirmed group");
        assert_eq!(store.recovery_report().corrupt_records_skipped, 0);
    }
}

/// The hole, then a new writer appends `#2` again (the broker reuses the seq of a message that was
/// never confirmed) with `payload_bytes`, then a clean restart, with `config`.
fn reopen_after_append_over_hole(
    payload_bytes: usize,
    config: JournalConfig,
) -> Result<State, StoreError> {
    let (image, end_of_1, _) = image_with_a_hole_before_stale_records();
    let store = open_mem(&image, config.clone());
    assert_eq!(seqs(&store), vec![1], "recovery stops at the hole");
    store
        .submit(vec![enq(Q, 2, vec![b'N'; payload_bytes])])
        .wait_blocking()
        .unwrap();
    drop(store);
    let offsets = record_offsets(&image.file_bytes("journal-1.log").unwrap());
    assert_eq!(
        offsets[1], end_of_1,
        "the new record went where the hole began"
    );
    let store = try_open_mem(&image, config)?;
    Ok(state(&store))
}

/// Why `got` is not exactly the confirmed messages (`#1`, and the new `#2`), if it is not.
fn not_only_confirmed(got: Result<State, StoreError>, what: &str) -> Option<String> {
    let got = match got {
        Ok(got) => got,
        Err(e) => return Some(format!("{what}: the store must restart: {e}")),
    };
    let q = &got.messages[Q];
    let seqs: Vec<u64> = q.iter().map(|m| m.seq).collect();
    if seqs != vec![1, 2] {
        return Some(format!(
            "{what}: want confirmed #1 and the new #2, got {seqs:?}"
        ));
    }
    if !q[1].payload.iter().all(|b| *b == b'N') {
        return Some(format!("{what}: #2 is the stale one"));
    }
    None
}

#[test]
fn stale_records_after_a_hole_are_never_replayed_once_the_writer_appended_before_them() {
    let (_, end_of_1, dequeue_at) = image_with_a_hole_before_stale_records();
    let default = small_config(64 * 1024);
    let skipping = JournalConfig {
        check_for_corrupt_journal_files: true,
        ..default.clone()
    };
    // The new record ends inside the old bytes of the lost #2 (garbage, then valid stale
    // records), or exactly where the stale dequeue of #1 begins.
    let into_garbage = 8192 + 100 - end_of_1 - enqueue_record_bytes(0);
    assert!(end_of_1 + enqueue_record_bytes(into_garbage) < dequeue_at);
    let exact = dequeue_at - end_of_1 - enqueue_record_bytes(0);
    let cases = [
        (into_garbage, &default, "ends in garbage, default config"),
        (
            into_garbage,
            &skipping,
            "ends in garbage, check_for_corrupt_journal_files",
        ),
        (exact, &default, "ends at the stale dequeue, default config"),
        (
            exact,
            &skipping,
            "ends at the stale dequeue, check_for_corrupt_journal_files",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(bytes, config, what)| {
            not_only_confirmed(
                reopen_after_append_over_hole(*bytes, (*config).clone()),
                what,
            )
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn segment_and_checkpoint_names_are_durable_once_created() {
    let dir = MemDir::new();
    let config = small_config(8 * 1024);
    let store = open_mem(&dir, config.clone());
    assert!(dir.name_is_durable("journal-1.log"), "created at open");
    fill(&store, 1..=40, 500);
    let segments = store.segment_ids();
    assert!(segments.len() > 2, "{segments:?}");
    for s in &segments {
        let name = format!("journal-{s}.log");
        assert!(dir.name_is_durable(&name), "{name}: created by a roll");
    }
    assert!(store.checkpoint().unwrap());
    assert!(dir.name_is_durable("index.db"), "renamed into place");
    assert!(!dir.name_is_durable("index.db.tmp"));
    // Nothing unsynced is needed: dropping every unsynced byte and name keeps it all.
    let image = dir.power_loss(PowerLoss::DropUnsynced);
    let reopened = open_mem(&image, config);
    assert!(reopened.recovery_report().from_checkpoint);
    assert_eq!(seqs(&reopened), (1..=40).collect::<Vec<_>>());
}

#[test]
fn writes_a_killed_process_left_in_the_page_cache_are_synced_before_new_appends() {
    for seed in 0..64 {
        let dir = MemDir::new();
        let never = JournalConfig {
            sync: SyncMode::Never,
            ..small_config(64 * 1024)
        };
        // Confirmed without a sync, then the process dies (kill -9): the bytes stay in the page
        // cache, not on disk.
        let killed = open_mem(&dir, never);
        fill(&killed, 1..=3, 3000);
        std::mem::forget(killed);
        // The next process appends one record; the power goes before its sync.
        let next = open_mem(&dir, small_config(64 * 1024));
        assert_eq!(seqs(&next), vec![1, 2, 3]);
        dir.arm_power_cut(1, PowerLoss::RandomPages { seed });
        let _ = next
            .submit(vec![enq(Q, 4, body(Q, 4, 3000))])
            .wait_blocking();
        assert!(dir.power_is_cut(), "seed {seed}");
        let image = dir.power_loss(PowerLoss::DropUnsynced);
        let store = try_open_mem(&image, small_config(64 * 1024))
            .unwrap_or_else(|e| panic!("seed {seed}: the store must restart: {e}"));
        let got = seqs(&store);
        assert!(
            got == vec![1, 2, 3] || got == vec![1, 2, 3, 4],
            "seed {seed}: what the second process saw is durable: {got:?}"
        );
    }
}
