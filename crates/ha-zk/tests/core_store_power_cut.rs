//! The replication core's log in a message store (`core_store`) under power cuts: after a cut,
//! the recovered position, epoch history and data agree — the position names exactly the
//! entries whose data is present, the history describes exactly them, and every entry whose
//! batch was confirmed (synced) is there.
//!
//! A kill -9 keeps the page cache and cannot see a missing fsync or a batch applied in two
//! writes; here the journal lives on the FUSE power-loss filesystem (`ferromq-powerfs`), which
//! keeps only what was synced (or a seeded part of the rest) when the power is cut, while
//! batches are still being written.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use ferromq_ha_zk::core_store::{entry_payload, recover, LogRecords};
use ferromq_ha_zk::proto::{Entry, EpochHistory, Recovered, StoreWrite};
use ferromq_powerfs::{LossMode, PowerFs};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

const Q: &str = "queue://replicated";
/// Entries confirmed before the cut (each batch awaited), about 6 MiB.
const CONFIRMED: u64 = 6_000;
/// Entries still being written when the power goes.
const IN_FLIGHT: u64 = 1_500;

/// Small segments, so that the log spans several files (each a directory entry to lose).
fn config() -> JournalConfig {
    JournalConfig {
        journal_max_file_length: 512 * 1024,
        ..JournalConfig::default()
    }
}

/// The epoch of entry `lsn`: a new master every 1,000 entries, epochs skipping numbers (as
/// after failed claims).
fn epoch_of(lsn: u64) -> u64 {
    1 + 3 * ((lsn - 1) / 1_000)
}

/// Entry `lsn` enqueues message `lsn` (1 KiB) and, every third entry, consumes message
/// `lsn - 2`: state, not a log — what a broker's batches do.
fn entry(lsn: u64) -> Entry {
    let mut ops = vec![Op::Enqueue {
        list: Q.into(),
        seq: lsn,
        payload: Bytes::from(format!("{lsn:>1024}")),
    }];
    if lsn.is_multiple_of(3) {
        ops.push(Op::Dequeue {
            list: Q.into(),
            seq: lsn - 2,
        });
    }
    Entry {
        epoch: epoch_of(lsn),
        lsn,
        payload: entry_payload(&ops).unwrap(),
    }
}

/// The messages present after entries `1..=last`.
fn expected(last: u64) -> BTreeSet<u64> {
    (1..=last)
        .filter(|s| !((s + 2) <= last && (s + 2).is_multiple_of(3)))
        .collect()
}

fn history(last: u64) -> EpochHistory {
    let mut h = EpochHistory::default();
    for lsn in 1..=last {
        h.append(epoch_of(lsn), lsn);
    }
    h
}

/// Batches of 1..=24 entries, as a follower's appends come.
fn batches(from: u64, to: u64) -> Vec<Vec<Entry>> {
    let mut out = Vec::new();
    let mut lsn = from;
    let mut k = 0u64;
    while lsn <= to {
        let n = 1 + (k * 7) % 24;
        let end = (lsn + n - 1).min(to);
        out.push((lsn..=end).map(entry).collect());
        lsn = end + 1;
        k += 1;
    }
    out
}

fn recovered(dir: &Path) -> (Recovered, BTreeSet<u64>) {
    let s = JournalStore::open(dir, config()).unwrap();
    let rec = recover(&s).unwrap();
    let present = s
        .load(Q, None, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|m| {
            assert_eq!(m.payload, Bytes::from(format!("{:>1024}", m.seq)));
            m.seq
        })
        .collect();
    s.close().unwrap();
    (rec, present)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_cut_the_position_history_and_data_agree_and_nothing_confirmed_is_lost() {
    let mount = tempfile::tempdir().unwrap();
    let mut fs = PowerFs::mount(mount.path()).unwrap_or_else(|e| panic!("{e}"));
    let modes = [
        LossMode::DropAll,
        LossMode::RandomPages { seed: 1 },
        LossMode::RandomPages { seed: 2 },
        LossMode::TornLastPage { seed: 3 },
    ];
    let mut beyond_confirmed = 0;
    for (k, mode) in modes.iter().enumerate() {
        let dir = fs.mount_point().join(format!("m{k}")).join("journal");
        let store = JournalStore::open(&dir, config()).unwrap();
        let start = recover(&store).unwrap();
        assert_eq!(start.last, 0, "a new store holds an empty log");
        let mut log = LogRecords::new(&start);
        for b in batches(1, CONFIRMED) {
            let batch = log.batch(&StoreWrite::Append(b)).unwrap().unwrap();
            store.submit(batch).await.unwrap();
        }
        // The power goes at the first write that leaves a few pages unsynced — while these
        // batches, submitted without waiting, are being written (every later change fails,
        // so the store fails them: a failed write is never retried).
        fs.arm_freeze(4);
        let mut pending = Vec::new();
        for b in batches(CONFIRMED + 1, CONFIRMED + IN_FLIGHT) {
            let batch = log.batch(&StoreWrite::Append(b)).unwrap().unwrap();
            pending.push(store.submit(batch));
        }
        let mut failed = 0;
        for p in pending {
            failed += usize::from(p.await.is_err());
        }
        assert!(
            fs.is_frozen(),
            "{mode:?}: the power did not go while writing"
        );
        assert!(
            failed > 0,
            "{mode:?}: writes after the power went must fail"
        );
        // Every file closed before the cut (the filesystem is unmounted).
        let _ = store.close();
        drop(store);
        let report = fs.cut_power(*mode).unwrap();

        let (rec, present) = recovered(&dir);
        let last = rec.last;
        assert!(
            (CONFIRMED..=CONFIRMED + IN_FLIGHT).contains(&last),
            "{mode:?}: recovered log end {last}: a confirmed entry is missing or an entry appeared ({report:?})"
        );
        assert_eq!(
            rec.history,
            history(last),
            "{mode:?}: history of 1..={last}"
        );
        assert!(rec.tail.is_empty(), "a message store keeps no entries");
        assert!(
            present == expected(last),
            "{mode:?}: the data is not exactly that of entries 1..={last}: {} messages, {} expected ({report:?})",
            present.len(),
            expected(last).len()
        );
        beyond_confirmed += last - CONFIRMED;
        // The log continues from what was recovered.
        let store = JournalStore::open(&dir, config()).unwrap();
        let mut log = LogRecords::new(&recover(&store).unwrap());
        let next = log
            .batch(&StoreWrite::Append(vec![entry(last + 1)]))
            .unwrap()
            .unwrap();
        store.submit(next).await.unwrap();
        assert_eq!(recover(&store).unwrap().last, last + 1);
        store.close().unwrap();
    }
    eprintln!("entries kept beyond the confirmed ones, over all cuts: {beyond_confirmed}");
}
