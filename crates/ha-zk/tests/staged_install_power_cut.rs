//! A staged full copy under power cuts: the live journal, or the staged copy once it was
//! marked complete, comes back whole — never a mix, never a copy missing a file.
//!
//! The copy's journal files, its directory, the install mark and the renames each need their
//! own fsync; a kill -9 keeps the page cache and cannot see one missing. Here the slave's data
//! directory lives on the FUSE power-loss filesystem (`ferromq-powerfs`), which keeps only what
//! was synced (or a seeded part of the rest) when the power is cut, at three points of an
//! install: copy written but not marked, marked but not renamed, installed. A member that
//! acknowledged entries of a marked copy must find exactly that copy after the cut.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ferromq_ha_zk::staging::{finish_journal_install, CopyStaging, JournalStaging};
use ferromq_powerfs::{LossMode, PowerFs};
use ferromq_store::{JournalConfig, JournalStore, MessageStore, Op};

/// Small segments, so that the copy spans several files (each a directory entry to lose).
fn config() -> JournalConfig {
    JournalConfig {
        journal_max_file_length: 512 * 1024,
        ..JournalConfig::default()
    }
}

const OLD: &str = "queue://old";
const NEW: &str = "queue://new";
const OLD_MESSAGES: u64 = 300;
/// About 3 MiB: six segments of the copy.
const NEW_MESSAGES: u64 = 3_000;

/// Writes `n` 1 KiB messages to `list`, 50 per batch, each batch confirmed (synced).
async fn fill(store: &dyn MessageStore, list: &str, n: u64) {
    for first in (1..=n).step_by(50) {
        let ops = (first..(first + 50).min(n + 1))
            .map(|seq| Op::Enqueue {
                list: list.into(),
                seq,
                payload: Bytes::from(format!("{list}-{seq:>1020}")),
            })
            .collect();
        store.submit(ops).await.unwrap();
    }
}

/// A list's stored messages, as (seq, body).
type Messages = Vec<(u64, Bytes)>;

/// Every stored message of `list`.
fn contents(dir: &Path, list: &str) -> Messages {
    let s = JournalStore::open(dir, config()).unwrap();
    let got = s
        .load(list, None, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.payload))
        .collect();
    s.close().unwrap();
    got
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CutAt {
    /// The copy is written and closed, not marked: the live journal must come back.
    CopyWritten,
    /// Marked complete, nothing renamed: the copy must come back, installed at the next start.
    Marked,
    /// `install` returned: the copy.
    Installed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_staged_install_leaves_the_old_journal_or_the_whole_copy() {
    let mount = tempfile::tempdir().unwrap();
    let mut fs = PowerFs::mount(mount.path()).unwrap_or_else(|e| panic!("{e}"));
    let modes = [
        LossMode::DropAll,
        LossMode::RandomPages { seed: 1 },
        LossMode::RandomPages { seed: 2 },
        LossMode::RandomPages { seed: 3 },
        LossMode::TornLastPage { seed: 4 },
    ];
    let mut expected: Option<(Messages, Messages)> = None;
    let mut cuts = 0;
    for at in [CutAt::CopyWritten, CutAt::Marked, CutAt::Installed] {
        for (k, mode) in modes.iter().enumerate() {
            let live = fs.mount_point().join(format!("{at:?}-{k}")).join("journal");
            {
                let old: Arc<dyn MessageStore> =
                    Arc::new(JournalStore::open(&live, config()).unwrap());
                fill(&*old, OLD, OLD_MESSAGES).await;
                old.close().unwrap();
            }
            let staging = JournalStaging::new(live.clone(), config());
            {
                let staged = staging.open_staged().unwrap();
                fill(&*staged, NEW, NEW_MESSAGES).await;
                staged.close().unwrap();
            }
            match at {
                CutAt::CopyWritten => {}
                CutAt::Marked => staging.mark_complete().unwrap(),
                CutAt::Installed => staging.install().unwrap(),
            }
            let report = fs.cut_power(*mode).unwrap();
            cuts += 1;
            // What the next start does before opening the journal.
            finish_journal_install(&live)
                .unwrap_or_else(|e| panic!("{at:?}, {mode:?} ({report:?}): {e}"));
            let got = (contents(&live, OLD), contents(&live, NEW));
            let want = match at {
                CutAt::CopyWritten => (OLD_MESSAGES as usize, 0),
                CutAt::Marked | CutAt::Installed => (0, NEW_MESSAGES as usize),
            };
            assert_eq!(
                (got.0.len(), got.1.len()),
                want,
                "{at:?}, {mode:?}: messages of the old journal and of the copy after the cut ({report:?})"
            );
            // Not only the counts: the same bodies as every other cut at this point.
            if at != CutAt::CopyWritten {
                match &expected {
                    None => expected = Some(got),
                    Some(e) => assert!(*e == got, "{at:?}, {mode:?}: the copy came back altered"),
                }
            }
            assert!(
                !live.with_extension("copy").exists() || at == CutAt::CopyWritten,
                "{at:?}, {mode:?}: a marked copy was left beside the live journal"
            );
        }
    }
    assert_eq!(cuts, 15);
}
