//! Zero-filled segments prepared ahead of the writer (`Preallocation::Zeros`) on real files:
//! the writer rolls onto fully allocated segments (so a sync overwrites blocks instead of
//! allocating them), nothing of the preparation is left behind, and the journal reads back
//! the same as with sparse segments.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;
use ferromq_store::journal::Preallocation;
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

const SEGMENT_BYTES: u64 = 256 * 1024;
/// Rolls the writer may make before the test gives up on seeing prepared segments adopted
/// (each roll is ~250 KiB of 1 KiB messages; the preparation of the next one runs meanwhile).
const ROLLS_MAX: u64 = 200;

fn config(preallocation: Preallocation) -> JournalConfig {
    JournalConfig {
        journal_max_file_length: SEGMENT_BYTES,
        checkpoint_interval_ms: 0,
        cleanup_interval_ms: 0,
        preallocation,
        ..JournalConfig::default()
    }
}

/// The segment files (`journal-N.log`) in id order.
fn segments(dir: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("journal-") && n.ends_with(".log")
        })
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap(),
            )
        })
        .collect();
    v.sort_by_key(|(n, _)| {
        n.trim_start_matches("journal-")
            .trim_end_matches(".log")
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    v
}

/// Files of the journal directory that are neither segments nor the index.
fn others(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            let segment = n.starts_with("journal-") && n.ends_with(".log");
            !(segment || n.starts_with("index"))
        })
        .collect()
}

/// Writes 1 KiB messages, 16 per batch, until `until` holds for the store's stats or the
/// writer made `ROLLS_MAX` rolls; returns the messages written.
fn write_until(store: &JournalStore, until: impl Fn(&JournalStore) -> bool) -> u64 {
    let mut seq = 0u64;
    loop {
        let s = store.stats();
        if until(store) || s.segments_zero_filled + s.segments_sparse >= ROLLS_MAX {
            return seq;
        }
        let ops = (0..16)
            .map(|_| {
                seq += 1;
                Op::Enqueue {
                    list: "queue://p".into(),
                    seq,
                    payload: Bytes::from(format!("{seq:>1024}")),
                }
            })
            .collect();
        store.submit(ops).wait_blocking().unwrap();
    }
}

#[test]
fn the_writer_rolls_onto_zero_filled_segments_and_leaves_no_preparation_behind() {
    let d = tempfile::tempdir().unwrap();
    let store = JournalStore::open(d.path(), config(Preallocation::Zeros)).unwrap();
    // The positive event: two rolls onto prepared segments (each prepared while the previous
    // one filled). Bounded by a number of rolls, not by time.
    let written = write_until(&store, |s| s.stats().segments_zero_filled >= 2);
    let stats = store.stats();
    assert!(
        stats.segments_zero_filled >= 2,
        "no prepared segment was adopted in {} rolls ({stats:?})",
        stats.segments_sparse
    );
    // The head was adopted just now: allocated to its end though records fill only its start.
    let segs = segments(d.path());
    let (head, meta) = segs.last().unwrap();
    assert_eq!(meta.len(), SEGMENT_BYTES, "{head}");
    assert!(
        meta.blocks() * 512 >= SEGMENT_BYTES,
        "{head} was adopted but is sparse: {} bytes allocated of {SEGMENT_BYTES}",
        meta.blocks() * 512
    );
    store.close().unwrap();
    drop(store);
    let left = others(d.path());
    assert!(left.is_empty(), "left behind by a clean close: {left:?}");
    // Everything reads back.
    let again = JournalStore::open(d.path(), config(Preallocation::Zeros)).unwrap();
    let got = again.load("queue://p", None, 1_000_000).unwrap();
    assert_eq!(got.len() as u64, written);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| m.seq == i as u64 + 1 && m.payload.len() == 1024));
    again.close().unwrap();
}

#[test]
fn sparse_segments_stay_sparse() {
    let d = tempfile::tempdir().unwrap();
    let store = JournalStore::open(d.path(), config(Preallocation::SparseFile)).unwrap();
    write_until(&store, |s| s.stats().segments_sparse >= 3);
    let stats = store.stats();
    assert_eq!(stats.segments_zero_filled, 0, "{stats:?}");
    // The head holds at most one batch since its roll: far fewer blocks than its length.
    let segs = segments(d.path());
    let (head, meta) = segs.last().unwrap();
    assert!(
        meta.blocks() * 512 < SEGMENT_BYTES / 2,
        "{head}: {} bytes allocated of {SEGMENT_BYTES}",
        meta.blocks() * 512
    );
    store.close().unwrap();
    let left = others(d.path());
    assert!(
        left.is_empty(),
        "a sparse journal has only segments: {left:?}"
    );
}

#[test]
fn a_prepared_segment_left_by_a_crash_is_removed_at_open() {
    let d = tempfile::tempdir().unwrap();
    {
        let store = JournalStore::open(d.path(), config(Preallocation::Zeros)).unwrap();
        write_until(&store, |s| s.stats().segments_zero_filled >= 1);
        store.close().unwrap();
    }
    // What a kill -9 during a preparation leaves.
    let stale = d.path().join("journal-prepared-1-0.tmp");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let store = JournalStore::open(d.path(), config(Preallocation::Zeros)).unwrap();
    assert!(
        !stale.exists(),
        "a stale prepared segment survived the open"
    );
    store.close().unwrap();
}
