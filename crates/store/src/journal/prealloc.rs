//! Zero-filled segments prepared ahead of the writer (`Preallocation::Zeros`).
//!
//! A sparse segment (`set_len`) has no blocks: every append allocates some, so every
//! `fdatasync` also commits the filesystem's metadata journal — on ext4 a second device write
//! and flush per group. Overwriting blocks that are already written needs no metadata commit:
//! on this project's VM one durable 1 KiB write took 76 µs appending and 59 µs overwriting a
//! zero-filled file (`bench-results/journal.md`). So once the writer has filled half of
//! segment N, a background thread writes segment N+1's zeros into a temporary file and syncs them; the
//! writer's roll stamps the header on it and renames it into place (`segment::adopt_segment`).
//!
//! The zeros are written off the writer thread because syncing 32 MiB would stall group commit
//! for tens of milliseconds. A roll never waits for a preparation: when none is ready (a fast
//! writer, a slow disk, a failed preparation) it creates a sparse segment as before. The
//! temporary file is not part of the journal: recovery removes leftovers
//! ([`is_prepared_name`]), and a prepared file is only ever adopted under a fresh, exclusive
//! claim of the segment's name.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::journal::storage::{StorageDir, StorageFile};

/// How a new segment's space is reserved (KahaDB's `preallocationStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// `set_len` only: no blocks until records land (KahaDB's default `sparse_file`).
    SparseFile,
    /// Every segment after the first of a run is zero-filled and synced ahead of the writer
    /// (KahaDB's `zeros`, prepared asynchronously as with `preallocationScope =
    /// entire_journal_async`).
    Zeros,
}

/// The prefix of a prepared file's name.
const PREPARED_PREFIX: &str = "journal-prepared-";
/// The suffix of a prepared file's name (never a segment name: those end in `.log`).
const PREPARED_SUFFIX: &str = ".tmp";
/// Zeros written per call.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Whether `name` is a prepared (not yet adopted) segment file: recovery removes such files.
pub fn is_prepared_name(name: &str) -> bool {
    name.starts_with(PREPARED_PREFIX) && name.ends_with(PREPARED_SUFFIX)
}

/// A zero-filled, synced file ready to become a segment.
pub(crate) struct Prepared {
    /// Its temporary name in the journal directory.
    pub name: String,
    /// The open file.
    pub file: Arc<dyn StorageFile>,
    /// Its length: the capacity of the segment it becomes.
    pub capacity_bytes: u64,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("name", &self.name)
            .field("capacity_bytes", &self.capacity_bytes)
            .finish_non_exhaustive()
    }
}

/// One preparation under way.
struct Pending {
    thread: JoinHandle<()>,
    result: Receiver<Option<Prepared>>,
}

/// Prepares one segment at a time ahead of the writer, on a thread of its own.
pub(crate) struct Preparer {
    dir: Arc<dyn StorageDir>,
    capacity_bytes: u64,
    pending: Option<Pending>,
    ready: Option<Prepared>,
    /// Set to make a preparation under way stop early (closing the store).
    stop: Arc<AtomicBool>,
    /// Preparations that failed in a row: after a few, the writer stays on sparse segments
    /// (a disk that cannot take 32 MiB of zeros will not take the records either; the writer
    /// reports that, not this thread).
    failures: u32,
}

/// Failed preparations in a row after which no more are tried.
const FAILURES_MAX: u32 = 3;

/// Makes temporary names unique across processes sharing a directory (a deposed master and
/// its successor on shared storage) and across preparations of one process.
static PREPARED_SERIAL: AtomicU64 = AtomicU64::new(0);

impl Preparer {
    pub(crate) fn new(dir: Arc<dyn StorageDir>, capacity_bytes: u64) -> Preparer {
        Preparer {
            dir,
            capacity_bytes,
            pending: None,
            ready: None,
            stop: Arc::new(AtomicBool::new(false)),
            failures: 0,
        }
    }

    /// Starts preparing the next segment unless one is ready or under way.
    pub(crate) fn request(&mut self) {
        self.poll();
        if self.ready.is_some() || self.pending.is_some() || self.failures >= FAILURES_MAX {
            return;
        }
        let name = format!(
            "{PREPARED_PREFIX}{}-{}{PREPARED_SUFFIX}",
            std::process::id(),
            PREPARED_SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = mpsc::sync_channel(1);
        let dir = self.dir.clone();
        let capacity = self.capacity_bytes;
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("ferromq-journal-prealloc".into())
            .spawn(move || {
                let _ = tx.send(prepare(&*dir, name, capacity, &stop));
            });
        match spawned {
            Ok(thread) => {
                self.pending = Some(Pending { thread, result: rx });
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error = %e, "cannot start the journal's segment preparation thread: sparse segments meanwhile");
            }
        }
    }

    /// Collects a finished preparation, if any (never waits).
    fn poll(&mut self) {
        let Some(p) = &self.pending else { return };
        match p.result.try_recv() {
            Err(TryRecvError::Empty) => return,
            Ok(Some(prepared)) => {
                self.failures = 0;
                self.ready = Some(prepared);
            }
            Ok(None) | Err(TryRecvError::Disconnected) => self.failures += 1,
        }
        if let Some(p) = self.pending.take() {
            let _ = p.thread.join();
        }
    }

    /// The prepared file, if one is ready now and can hold `record_bytes` after the header;
    /// never waits.
    pub(crate) fn take_ready(&mut self, header_bytes: u64, record_bytes: u64) -> Option<Prepared> {
        self.poll();
        if self
            .ready
            .as_ref()
            .is_some_and(|p| p.capacity_bytes >= header_bytes + record_bytes)
        {
            self.ready.take()
        } else {
            None
        }
    }

    /// Stops a preparation under way (it ends at its next chunk) and removes every prepared
    /// file: a closing store leaves only its segments behind.
    pub(crate) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.pending.take() {
            let _ = p.thread.join();
            if let Ok(Some(prepared)) = p.result.try_recv() {
                self.ready = Some(prepared);
            }
        }
        if let Some(p) = self.ready.take() {
            let _ = self.dir.remove(&p.name);
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes `capacity` bytes of zeros to a new file `name` and syncs it; `None` (the file
/// removed) when that fails or `stop` is set.
fn prepare(
    dir: &dyn StorageDir,
    name: String,
    capacity: u64,
    stop: &AtomicBool,
) -> Option<Prepared> {
    let file = match dir.create_new(&name) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, file = %name, "journal segment preparation failed: a sparse segment instead");
            return None;
        }
    };
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = 0u64;
    let mut result = Ok(());
    while at < capacity && result.is_ok() {
        if stop.load(Ordering::Relaxed) {
            let _ = dir.remove(&name);
            return None;
        }
        let n = (capacity - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        result = file.write_at(at, &zeros[..n]);
        at += n as u64;
    }
    // The blocks' allocation must be durable before records are written over them; otherwise
    // the first sync after the roll would flush all of it.
    let result = result.and_then(|()| file.sync_data());
    match result {
        Ok(()) => {
            tracing::debug!(file = %name, capacity, "prepared a zero-filled journal segment");
            Some(Prepared {
                name,
                file,
                capacity_bytes: capacity,
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, file = %name, "journal segment preparation failed: a sparse segment instead");
            let _ = dir.remove(&name);
            None
        }
    }
}
