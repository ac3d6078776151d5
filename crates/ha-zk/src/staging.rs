//! Staged full copies: a slave receives a full copy into a fresh store beside its live one and
//! installs it in one step once it is consistent, so that until then the live store — and the
//! position the member reports to elections — stays whole. Without staging a copy wipes the
//! live store first (marked, so the member reports no position): if the master died then, the
//! member would have nothing to offer an election. See docs/ha.md, "Full copies".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferromq_store::{JournalConfig, JournalStore, MessageStore, StoreError};

/// Where a full copy is staged, and how it replaces the live store.
pub trait CopyStaging: Send + Sync {
    /// Opens a fresh, empty store beside the live one (discarding any earlier staged copy).
    fn open_staged(&self) -> Result<Arc<dyn MessageStore>, StoreError>;

    /// Makes the staged store (closed by the caller, complete) the live store; the caller has
    /// closed the live store too. A crash at any point leaves, for the next start (see
    /// [`finish_journal_install`]), either the old live store or the new one — never a mix.
    fn install(&self) -> Result<(), StoreError>;
}

/// The file that says a staged journal is complete and must replace the live one.
const INSTALL_MARK: &str = "INSTALL";

/// Staging for the journal store: `<live>.copy` beside the live directory, installed by two
/// renames (`<live>` → `<live>.old`, `<live>.copy` → `<live>`) under an install mark.
#[derive(Debug, Clone)]
pub struct JournalStaging {
    live: PathBuf,
    config: JournalConfig,
}

impl JournalStaging {
    /// Staging beside the journal directory `live`, opened with `config`.
    pub fn new(live: PathBuf, config: JournalConfig) -> JournalStaging {
        JournalStaging { live, config }
    }

    fn staged(&self) -> PathBuf {
        with_suffix(&self.live, ".copy")
    }

    /// The first half of [`CopyStaging::install`]: durably marks the staged copy (closed,
    /// complete) as the one to install. From here on a start installs it
    /// ([`finish_journal_install`]) whatever else a crash or a power cut left.
    pub fn mark_complete(&self) -> Result<(), StoreError> {
        let staged = self.staged();
        let mark = staged.join(INSTALL_MARK);
        std::fs::File::create(&mark)
            .and_then(|f| f.sync_all())
            .map_err(io("marking the staged copy complete", &mark))?;
        sync_dir(&staged)
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io<'a>(what: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::Io {
        op: what,
        source: Arc::new(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", p.display()),
        )),
    }
}

fn sync_dir(p: &Path) -> Result<(), StoreError> {
    std::fs::File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the directory", p))
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

impl CopyStaging for JournalStaging {
    fn open_staged(&self) -> Result<Arc<dyn MessageStore>, StoreError> {
        let staged = self.staged();
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(io("removing an old staged copy", &staged))?;
        }
        Ok(Arc::new(JournalStore::open(&staged, self.config.clone())?))
    }

    fn install(&self) -> Result<(), StoreError> {
        self.mark_complete()?;
        finish_journal_install(&self.live)
    }
}

/// Completes or discards a staged journal copy left beside `live` (call before opening the
/// live journal): a staged copy marked complete replaces the live journal; one without the
/// mark was interrupted and is removed; a leftover `<live>.old` is removed.
pub fn finish_journal_install(live: &Path) -> Result<(), StoreError> {
    let staged = with_suffix(live, ".copy");
    let old = with_suffix(live, ".old");
    let dir = parent(live);
    if staged.join(INSTALL_MARK).exists() {
        if old.exists() {
            // From an earlier install whose clean-up was cut short: never the data we keep.
            std::fs::remove_dir_all(&old).map_err(io("removing", &old))?;
        }
        if live.exists() {
            std::fs::rename(live, &old).map_err(io("setting aside the replaced journal", live))?;
        }
        std::fs::rename(&staged, live).map_err(io("installing the staged copy", &staged))?;
        sync_dir(dir)?;
        std::fs::remove_file(live.join(INSTALL_MARK))
            .map_err(io("removing the install mark in", live))?;
        tracing::info!(journal = %live.display(), "installed a staged full copy");
    } else if staged.exists() {
        std::fs::remove_dir_all(&staged)
            .map_err(io("removing an interrupted staged copy", &staged))?;
    }
    if live.join(INSTALL_MARK).exists() {
        // Installed, then cut short before the mark was removed.
        std::fs::remove_file(live.join(INSTALL_MARK))
            .map_err(io("removing the install mark in", live))?;
    }
    if old.exists() && live.exists() {
        std::fs::remove_dir_all(&old).map_err(io("removing", &old))?;
    }
    Ok(())
}
