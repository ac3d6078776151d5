//! The journal store: the default, embedded, KahaDB-style persistent [`MessageStore`].
//!
//! - [`record`]: record framing (CRC32C, little-endian) and the op encoding;
//! - [`segment`]: segment files `journal-<id>.log`, preallocated;
//! - [`storage`]: the storage seam ([`StorageDir`], [`StorageFile`]) with real files and an
//!   in-memory implementation that models unsynced bytes and power loss;
//! - `writer`: the group-commit writer thread;
//! - `uring`: the writer's io_uring path (feature `io-uring`, chosen by [`JournalIo`]);
//! - [`index`]: the in-memory index (list -> seq -> location) and its checkpoint file;
//! - [`recovery`]: checkpoint load, replay, torn-tail repair;
//! - [`gc`]: checkpoints, segment GC and compaction, on the maintenance thread;
//! - [`fence`]: the HA fence the writer and the maintenance thread consult before acting.
//!
//! The byte-level format is in `docs/journal-format.md`.

pub mod fence;
pub mod gc;
pub mod index;
pub mod pages;
#[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
mod pipeline;
pub mod prealloc;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod seqmap;
pub mod storage;
mod uring;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

pub use fence::Fence;
pub use gc::GcReport;
pub use prealloc::Preallocation;
pub use recovery::RecoveryReport;
pub use storage::{create_dir_all_durably, FileDir, MemDir, PowerLoss, StorageDir, StorageFile};

use crate::group::{check_usage, Inbox, Submitted};
use crate::journal::index::{Index, Position};
use crate::journal::segment::segment_name;
use crate::journal::writer::{batch_group_bytes, read_payload, Cmd, Writer};
use crate::{Batch, Completion, MessageStore, Recovery, StoreError, StoredMessage};

/// When a batch counts as durable (`store.sync`, KahaDB's `journalDiskSyncStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` every group before confirming it (the default).
    Always,
    /// Confirm after the write; `fdatasync` at least every `interval_ms`.
    Periodic {
        /// Longest time written bytes stay unsynced (KahaDB `journalDiskSyncInterval`, 1000).
        interval_ms: u64,
    },
    /// Confirm after the write; sync only on segment roll, checkpoint and close.
    Never,
}

/// Which system calls the writer uses for a group's write and sync ([`JournalConfig::io`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JournalIo {
    /// Let the store choose by the rule in [`AUTO_RULE`]: today portable everywhere (the
    /// direct path wins some workloads and loses others). The choice and its reason are logged
    /// at open.
    Auto,
    /// `pwrite` then `fdatasync`, one group at a time (the library's default: it runs
    /// everywhere, including the in-memory storage of the crash tests).
    #[default]
    Portable,
    /// The direct path: each group one `O_DIRECT | O_DSYNC` write padded to 4 KiB, written
    /// synchronously by the writer (depth 1, the default) or with up to
    /// [`JournalConfig::io_depth`] groups in flight through io_uring, confirmed in journal order
    /// (module `uring`). Opening fails with `StoreError::Config` when it is not available (no
    /// io_uring, a filesystem without `O_DIRECT`, or a sync mode other than `always`).
    IoUring,
}

/// What [`JournalIo::Auto`] does, and why; said in the log line at open.
///
/// Measured on this project's machines (ext4 on a virtio disk without FUA; 1 KiB messages;
/// bench-results/io-uring.md), the direct path at its default depth of 1 made 1.04–1.39× the
/// confirmations of `pwrite` + `fdatasync` for receipted producers (1–16 of them, CPUs idle
/// or busy: small groups, where the flush decides), but 0.79× for a bulk load in batches of
/// 1,000 (bandwidth decides) and 0.65× for draining a 1 GB backlog (its writes bypass the page
/// cache, so the backlog is read back from the disk). The store cannot know which workload is
/// coming, so `auto` stays on the path that is never far behind.
pub const AUTO_RULE: &str = "auto picks portable: the direct path (journal_io = \"io-uring\") measured 1.04-1.39x of portable for receipted producers but 0.79x for bulk loads and 0.65x for draining a backlog (bench-results/io-uring.md); choose it explicitly for flush-bound workloads";

/// The path [`select_io`] takes for a configured [`JournalIo`], before any ring is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoChoice {
    /// The portable path, for the reason given.
    Portable(&'static str),
    /// Set up a ring and the direct descriptor; failing to is an error (only ever chosen when
    /// configured explicitly).
    IoUring,
}

/// The rule behind [`JournalIo`]: a pure function of the configuration and the storage, so
/// that what `auto` means is testable without a kernel.
fn choose_io(wanted: JournalIo, real_files: bool, sync: SyncMode) -> Result<IoChoice, String> {
    let always = sync == SyncMode::Always;
    match wanted {
        JournalIo::Portable => Ok(IoChoice::Portable("configured")),
        JournalIo::Auto => Ok(IoChoice::Portable(AUTO_RULE)),
        JournalIo::IoUring if !real_files => {
            Err("journal io = io_uring needs real files".to_owned())
        }
        JournalIo::IoUring if !always => Err(
            "journal io = io_uring writes every group durably (O_DSYNC) and needs sync = \"always\""
                .to_owned(),
        ),
        JournalIo::IoUring => Ok(IoChoice::IoUring),
    }
}

/// Options of the journal store. Defaults follow KahaDB's.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Preallocated size of a segment (`journalMaxFileLength`, 32 MiB). A record larger than
    /// a segment gets an oversized segment of its own.
    pub journal_max_file_length: u64,
    /// Bytes the writer gathers into one write and one sync at most
    /// (`journalMaxWriteBatchSize`, 4 MiB).
    pub batch_bytes_max: usize,
    /// Batches waiting for the writer at most; `submit` blocks beyond (backpressure).
    pub queue_batches_max: usize,
    /// The sync policy.
    pub sync: SyncMode,
    /// With `SyncMode::Always`: the longest time a batch submitted with
    /// [`MessageStore::submit_lazy`] (an acknowledgement without a receipt) stays written but
    /// unsynced when no other batch brings a sync; 0 = such batches are synced like any other.
    pub ack_sync_delay_ms: u64,
    /// The writer's HA epoch, stamped on every record and checkpoint (for fencing). Opening with
    /// an epoch newer than the journal's starts a fresh segment with an `EpochStart` record that
    /// seals the previous head (see `docs/journal-format.md`). Without a fence, an epoch older
    /// than the journal's is raised to it; with a fence, the open is refused.
    pub epoch: u64,
    /// The HA fence (None = no HA): consulted before and after each group commit, before each
    /// checkpoint, segment creation and segment deletion; a failed check fails the store for good.
    pub fence: Option<Arc<dyn Fence>>,
    /// Checkpoint period (`checkpointInterval`, 5000 ms); 0 disables the timer.
    pub checkpoint_interval_ms: u64,
    /// GC period (`cleanupInterval`, 30000 ms); 0 disables the timer.
    pub cleanup_interval_ms: u64,
    /// Skip corrupt records (logging each) instead of refusing to open
    /// (`checkForCorruptJournalFiles`, false).
    pub check_for_corrupt_journal_files: bool,
    /// Start even when segments are missing, forgetting their messages
    /// (`ignoreMissingJournalfiles`, false).
    pub ignore_missing_journal_files: bool,
    /// Refuse enqueues (`StoreError::Full`) that would take the stored message bytes over this;
    /// 0 = no limit (`store_usage_limit`).
    pub store_usage_limit: u64,
    /// GC rewrites the live messages of an old segment at the head when they take at most this
    /// percentage of a segment (so the segment can go); 0 disables compaction.
    pub compact_live_percent_max: u8,
    /// The write path of the writer thread.
    pub io: JournalIo,
    /// Writes in flight at most on the direct path (`journal_io_depth`, 1; 1..=64). 1: each
    /// group is written synchronously on the writer thread (`pwrite` to the `O_DIRECT |
    /// O_DSYNC` descriptor, no ring); above 1, groups are pipelined through io_uring, which
    /// hands each `O_DSYNC` write to a kernel worker and measured far slower under CPU
    /// contention (bench-results/io-uring.md).
    /// The portable path has one group at a time.
    pub io_depth: usize,
    /// How segments' space is reserved (`preallocationStrategy`): zero-filled ahead of the
    /// writer by default, so that a group's `fdatasync` commits no filesystem metadata.
    pub preallocation: Preallocation,
    /// Bytes of index blocks the page cache keeps (`index_cache_bytes`, 32 MiB). With the
    /// blocks changed since the last checkpoint, this bounds the index's memory whatever the
    /// depth of the queues (see [`pages`]).
    pub index_cache_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            journal_max_file_length: 32 * 1024 * 1024,
            batch_bytes_max: 4 * 1024 * 1024,
            queue_batches_max: 10_000,
            sync: SyncMode::Always,
            ack_sync_delay_ms: ACK_SYNC_DELAY_MS_DEFAULT,
            epoch: 0,
            fence: None,
            checkpoint_interval_ms: 5_000,
            cleanup_interval_ms: 30_000,
            check_for_corrupt_journal_files: false,
            ignore_missing_journal_files: false,
            store_usage_limit: 0,
            compact_live_percent_max: 25,
            io: JournalIo::Portable,
            io_depth: IO_DEPTH_DEFAULT,
            preallocation: Preallocation::Zeros,
            index_cache_bytes: pages::INDEX_CACHE_BYTES_DEFAULT,
        }
    }
}

/// Default of [`JournalConfig::io_depth`]: synchronous direct writes, the shape that measured
/// at least as fast as portable with the CPUs idle and busy alike.
pub const IO_DEPTH_DEFAULT: usize = 1;

/// The largest [`JournalConfig::io_depth`].
pub const IO_DEPTH_MAX: usize = uring::DEPTH_MAX;

/// Default of [`JournalConfig::ack_sync_delay_ms`].
pub const ACK_SYNC_DELAY_MS_DEFAULT: u64 = 100;
/// Largest `ack_sync_delay_ms` accepted (the bound on how much acknowledging a crash may undo).
pub const ACK_SYNC_DELAY_MS_MAX: u64 = 10_000;

/// Largest segment length accepted: locations hold 32-bit offsets.
const JOURNAL_MAX_FILE_LENGTH_MAX: u64 = 1 << 30;
/// Smallest segment length accepted.
const JOURNAL_MAX_FILE_LENGTH_MIN: u64 = 4096;

impl JournalConfig {
    fn validate(&self) -> Result<(), StoreError> {
        if !(JOURNAL_MAX_FILE_LENGTH_MIN..=JOURNAL_MAX_FILE_LENGTH_MAX)
            .contains(&self.journal_max_file_length)
        {
            return Err(StoreError::Config(format!(
                "journal_max_file_length {} is outside {JOURNAL_MAX_FILE_LENGTH_MIN}..={}",
                self.journal_max_file_length, JOURNAL_MAX_FILE_LENGTH_MAX
            )));
        }
        if self.queue_batches_max == 0 || self.batch_bytes_max == 0 {
            return Err(StoreError::Config(
                "queue_batches_max and batch_bytes_max must be positive".into(),
            ));
        }
        if let SyncMode::Periodic { interval_ms: 0 } = self.sync {
            return Err(StoreError::Config(
                "periodic sync needs interval_ms > 0".into(),
            ));
        }
        if self.ack_sync_delay_ms > ACK_SYNC_DELAY_MS_MAX {
            return Err(StoreError::Config(format!(
                "ack_sync_delay_ms {} is over {ACK_SYNC_DELAY_MS_MAX}",
                self.ack_sync_delay_ms
            )));
        }
        if !(1..=uring::DEPTH_MAX).contains(&self.io_depth) {
            return Err(StoreError::Config(format!(
                "io_depth {} is outside 1..={}",
                self.io_depth,
                uring::DEPTH_MAX
            )));
        }
        if self.compact_live_percent_max > 100 {
            return Err(StoreError::Config(
                "compact_live_percent_max is a percentage".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of the writer, for benches and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    syncs: AtomicU64,
    writes: AtomicU64,
    batches: AtomicU64,
    bytes_written: AtomicU64,
    segments_zero_filled: AtomicU64,
    segments_sparse: AtomicU64,
    /// Bytes checkpoints wrote (pages and roots).
    index_bytes_written: AtomicU64,
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// `fdatasync` calls on segments.
    pub syncs: u64,
    /// Write calls on segments.
    pub writes: u64,
    /// Batches confirmed.
    pub batches: u64,
    /// Bytes written to segments.
    pub bytes_written: u64,
    /// Segments the writer rolled to that were zero-filled ahead (`Preallocation::Zeros`).
    pub segments_zero_filled: u64,
    /// Segments the writer rolled to that were created sparse (`SparseFile`, or no prepared
    /// one was ready).
    pub segments_sparse: u64,
    /// Bytes checkpoints wrote: changed index pages plus roots.
    pub index_bytes_written: u64,
    /// Index pages read back from `index.pages` (page-cache misses, and the check at open).
    pub index_page_reads: u64,
    /// Index blocks found in the page cache.
    pub index_cache_hits: u64,
    /// Bytes the page cache holds now.
    pub index_cache_bytes: u64,
    /// Blocks of the index, and of them those whose body is in memory (changed since the last
    /// checkpoint, or not yet handed to the cache).
    pub index_blocks: u64,
    /// See [`JournalStats::index_blocks`].
    pub index_resident_blocks: u64,
}

/// State shared by the store handle, the writer and the maintenance thread.
#[derive(Debug)]
pub(crate) struct Shared {
    config: JournalConfig,
    /// The epoch stamped on records and checkpoints: `config.epoch`, raised to the journal's
    /// newest epoch when opened without a fence (see [`JournalConfig::epoch`]).
    epoch: u64,
    dir: Arc<dyn StorageDir>,
    index: RwLock<Index>,
    /// Open segment files by id, for `load`.
    segments: RwLock<BTreeMap<u32, Arc<dyn StorageFile>>>,
    failed_flag: AtomicBool,
    failure: Mutex<Option<StoreError>>,
    tx: Inbox<Cmd>,
    usage_bytes: AtomicU64,
    stats: Counters,
    /// Batches per sync, sync latency, submit-to-confirmation wait.
    commit: crate::CommitStats,
    last_checkpoint: Mutex<Option<Position>>,
    /// One checkpoint or GC pass at a time.
    maintenance: Mutex<()>,
}

impl Shared {
    fn set_failed(&self, err: &StoreError) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!(
                "journal store failed and refuses further writes until reopened: {err}"
            );
            *failure = Some(err.clone());
        }
        self.failed_flag.store(true, Ordering::Release);
    }

    /// Asks the fence (if any) whether this writer may still act; fails the store for good when
    /// it may not. Also refuses once the store has failed for any reason.
    pub(crate) fn check_fence(&self) -> Result<(), StoreError> {
        if self.failed_flag.load(Ordering::Acquire) {
            return Err(self.failure());
        }
        let Some(fence) = &self.config.fence else {
            return Ok(());
        };
        fence.check().map_err(|reason| {
            let err = fence::fenced(&reason);
            tracing::error!(epoch = self.epoch, "journal writer fenced: {reason}");
            self.set_failed(&err);
            err
        })
    }

    /// The error later operations get once the store failed.
    fn failure(&self) -> StoreError {
        let failure = self.failure.lock();
        match failure.as_ref() {
            // Already says the store failed (a fence, a thread panic): keep it as it is.
            Some(e @ StoreError::Failed(_)) => e.clone(),
            Some(e) => StoreError::Failed(e.to_string()),
            None => StoreError::Failed("unknown failure".to_string()),
        }
    }
}

/// The journal store. Open with [`JournalStore::open`] (a directory) or
/// [`JournalStore::open_with`] (any [`StorageDir`], e.g. a [`MemDir`] in tests).
#[derive(Debug)]
pub struct JournalStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    maintenance: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    closed: AtomicBool,
    recovery: RecoveryReport,
    io: JournalIo,
}

/// Chooses the writer's path (see [`JournalIo`], [`choose_io`]) and says in one log line which
/// and why. For the direct path it sets up the ring and checks that the head's filesystem takes
/// `O_DIRECT`; its handler is set once the store's shared state exists.
fn select_io(
    config: &JournalConfig,
    head: &dyn StorageFile,
    dir: &str,
) -> Result<Option<uring::Direct<writer::Group>>, StoreError> {
    let fd = head.raw_fd();
    let choice = choose_io(config.io, fd.is_some(), config.sync)
        .map_err(|why| StoreError::Config(format!("{why} ({dir})")))?;
    match (choice, fd) {
        (IoChoice::Portable(why), _) => {
            tracing::info!(
                dir,
                "journal write path: portable (pwrite + fdatasync): {why}"
            );
            Ok(None)
        }
        (IoChoice::IoUring, Some(fd)) => {
            let direct = uring::Direct::new(config.io_depth).map_err(|e| {
                StoreError::Config(format!(
                    "journal io = io_uring is not available: {}",
                    uring::setup_error(&e)
                ))
            })?;
            uring::check_direct(fd).map_err(|e| {
                StoreError::Config(format!(
                    "journal io = io_uring needs O_DIRECT, which {dir} refuses: {e}"
                ))
            })?;
            if config.io_depth == 1 {
                tracing::info!(
                    dir,
                    "journal write path: direct (O_DIRECT|O_DSYNC, one write at a time): configured"
                );
            } else {
                tracing::info!(
                    dir,
                    depth = config.io_depth,
                    "journal write path: direct via io_uring (O_DIRECT|O_DSYNC, {} in flight at most): configured",
                    config.io_depth
                );
            }
            Ok(Some(direct))
        }
        (IoChoice::IoUring, None) => Err(StoreError::Config(format!(
            "journal io = io_uring needs real files ({dir})"
        ))),
    }
}

impl JournalStore {
    /// Hands a batch to the writer thread; `lazy` = written without a sync of its own.
    fn enqueue(&self, batch: Batch, lazy: bool) -> Completion {
        if self.shared.failed_flag.load(Ordering::Acquire) {
            return Completion::ready(Err(self.shared.failure()));
        }
        let usage = self.shared.usage_bytes.load(Ordering::Acquire);
        if let Err(e) = check_usage(self.shared.config.store_usage_limit, usage, &batch) {
            return Completion::ready(Err(e));
        }
        let bytes = batch_group_bytes(&batch);
        let (submitted, completion) = Submitted::new(batch, lazy, bytes);
        self.shared.tx.send(Cmd::Batch(submitted));
        completion
    }

    /// Opens (creating if needed) the journal in directory `path`.
    pub fn open(path: impl AsRef<Path>, config: JournalConfig) -> Result<JournalStore, StoreError> {
        let dir = FileDir::new(path.as_ref()).map_err(|e| StoreError::io("create directory", e))?;
        JournalStore::open_with(Arc::new(dir), config)
    }

    /// Opens (creating if needed) the journal in `dir`: recovery, then the writer and
    /// maintenance threads start.
    pub fn open_with(
        dir: Arc<dyn StorageDir>,
        config: JournalConfig,
    ) -> Result<JournalStore, StoreError> {
        config.validate()?;
        let recovered = recovery::recover(dir.as_ref(), &config)?;
        let mut direct = select_io(&config, recovered.head.file.as_ref(), &dir.describe())?;
        let mut recovered = recovered;
        if direct.is_some() {
            writer::align_head(&mut recovered.head, recovered.epoch)?;
        }
        let io = if direct.is_some() {
            JournalIo::IoUring
        } else {
            JournalIo::Portable
        };
        let (tx, rx) = sync_channel(config.queue_batches_max);
        let usage_bytes = recovered.index.usage_bytes;
        let last_checkpoint = recovered
            .report
            .from_checkpoint
            .then_some(recovered.report.start)
            .filter(|p| *p == recovered.index.position);
        let shared = Arc::new(Shared {
            epoch: recovered.epoch,
            config,
            dir,
            index: RwLock::new(recovered.index),
            segments: RwLock::new(recovered.segments),
            failed_flag: AtomicBool::new(false),
            failure: Mutex::new(None),
            tx: Inbox::new(tx),
            usage_bytes: AtomicU64::new(usage_bytes),
            stats: Counters::default(),
            commit: crate::CommitStats::default(),
            last_checkpoint: Mutex::new(last_checkpoint),
            maintenance: Mutex::new(()),
        });
        if let Some(d) = direct.as_mut() {
            d.set_handler(writer::direct_handler(shared.clone()));
            shared.tx.set_wake(d.doorbell());
        }
        let writer = Writer::new(shared.clone(), recovered.head, direct);
        let writer = std::thread::Builder::new()
            .name("ferromq-journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("spawn journal writer thread", e))?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let maint_shared = shared.clone();
        let maintenance = std::thread::Builder::new()
            .name("ferromq-journal-maintenance".into())
            .spawn(move || gc::run_maintenance(maint_shared, stop_rx))
            .map_err(|e| StoreError::io("spawn journal maintenance thread", e))?;
        Ok(JournalStore {
            shared,
            writer: Mutex::new(Some(writer)),
            maintenance: Mutex::new(Some((stop_tx, maintenance))),
            closed: AtomicBool::new(false),
            recovery: recovered.report,
            io,
        })
    }

    /// The write path the writer runs: [`JournalIo::Portable`] or [`JournalIo::IoUring`].
    pub fn io(&self) -> JournalIo {
        self.io
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Checkpoints the index now (if it changed). Returns whether a checkpoint was written.
    pub fn checkpoint(&self) -> Result<bool, StoreError> {
        gc::checkpoint(&self.shared)
    }

    /// Runs one GC pass now (checkpoint, delete garbage segments, compact sparse ones).
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        gc::collect(&self.shared)
    }

    /// Ids of the segment files the store has open, ascending.
    pub fn segment_ids(&self) -> Vec<u32> {
        self.shared.segments.read().keys().copied().collect()
    }

    /// The writer's counters.
    pub fn stats(&self) -> JournalStats {
        let c = &self.shared.stats;
        let (index_blocks, index_resident_blocks, pager) = {
            let index = self.shared.index.read();
            let (all, resident) = index.block_counts();
            (all as u64, resident as u64, index.pager.clone())
        };
        let (reads, hits, cached) = pager.map_or((0, 0, 0), |p| {
            (
                p.counters.page_reads.load(Ordering::Relaxed),
                p.counters.cache_hits.load(Ordering::Relaxed),
                p.cache_bytes() as u64,
            )
        });
        JournalStats {
            index_bytes_written: c.index_bytes_written.load(Ordering::Relaxed),
            index_page_reads: reads,
            index_cache_hits: hits,
            index_cache_bytes: cached,
            index_blocks,
            index_resident_blocks,
            syncs: c.syncs.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            segments_zero_filled: c.segments_zero_filled.load(Ordering::Relaxed),
            segments_sparse: c.segments_sparse.load(Ordering::Relaxed),
        }
    }

    /// Stops the threads; the writer writes (and syncs) what is queued first.
    fn stop_threads(&self) {
        if let Some((stop, handle)) = self.maintenance.lock().take() {
            drop(stop);
            let _ = handle.join();
        }
        // Dropping the last sender ends the writer once it drained the queue.
        self.shared.tx.close();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                self.shared
                    .set_failed(&StoreError::Failed("journal writer thread panicked".into()));
            }
        }
    }
}

impl MessageStore for JournalStore {
    fn kind(&self) -> &'static str {
        "journal"
    }

    fn submit(&self, batch: Batch) -> Completion {
        self.enqueue(batch, false)
    }

    fn submit_lazy(&self, batch: Batch) -> Completion {
        let lazy = self.shared.config.ack_sync_delay_ms > 0;
        self.enqueue(batch, lazy)
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        Ok(self.shared.index.read().recovery())
    }

    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Take the locations (and the files) under the locks, read without them.
        type Wanted = (u64, index::Location, Option<Arc<dyn StorageFile>>);
        let wanted: Vec<Wanted> = {
            let index = self.shared.index.read();
            let Some(l) = index.lists.get(list) else {
                return Ok(Vec::new());
            };
            let files = self.shared.segments.read();
            l.messages
                .after(after_seq, max_count)?
                .into_iter()
                .map(|(seq, loc)| (seq, loc, files.get(&loc.segment).cloned()))
                .collect()
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (seq, loc, file) in wanted {
            let file = file.ok_or_else(|| StoreError::Corrupt {
                location: segment_name(loc.segment),
                reason: format!("segment of message {list}#{seq} is not open"),
            })?;
            let payload = read_payload(file.as_ref(), loc)?;
            out.push(StoredMessage { seq, payload });
        }
        Ok(out)
    }

    fn usage_bytes(&self) -> u64 {
        self.shared.usage_bytes.load(Ordering::Acquire)
    }

    fn commit_stats(&self) -> Option<crate::CommitStatsSnapshot> {
        Some(self.shared.commit.snapshot())
    }

    fn close(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_threads();
        if self.shared.failed_flag.load(Ordering::Acquire) {
            // Never checkpoint an index that may describe data the disk lost.
            return Err(self.shared.failure());
        }
        // The writer is gone and synced everything: the index is final and durable.
        let index = self.shared.index.read().clone();
        gc::write_checkpoint(&self.shared, &index)?;
        let position = self.shared.index.read().position;
        tracing::info!(
            "journal closed at {}:{}",
            segment_name(position.segment),
            position.offset
        );
        Ok(())
    }
}

impl Drop for JournalStore {
    fn drop(&mut self) {
        // Without close(): stop the threads, no checkpoint (a later open replays).
        self.stop_threads();
    }
}

#[cfg(test)]
mod tests {
    use super::{choose_io, IoChoice, JournalConfig, JournalIo, SyncMode, AUTO_RULE};

    const ALWAYS: SyncMode = SyncMode::Always;

    #[test]
    fn auto_resolves_to_portable_by_the_documented_rule() {
        for real_files in [true, false] {
            assert_eq!(
                choose_io(JournalIo::Auto, real_files, ALWAYS),
                Ok(IoChoice::Portable(AUTO_RULE))
            );
        }
        // The log line names the measurement and how to choose the direct path.
        assert!(AUTO_RULE.contains("io-uring.md") && AUTO_RULE.contains("io-uring"));
    }

    #[test]
    fn only_an_explicit_io_uring_sets_up_a_ring_and_it_needs_real_files_and_sync_always() {
        assert_eq!(
            choose_io(JournalIo::IoUring, true, ALWAYS),
            Ok(IoChoice::IoUring)
        );
        assert!(choose_io(JournalIo::IoUring, false, ALWAYS).is_err());
        let periodic = SyncMode::Periodic { interval_ms: 100 };
        assert!(choose_io(JournalIo::IoUring, true, periodic).is_err_and(|e| e.contains("always")));
        assert_eq!(
            choose_io(JournalIo::Portable, true, ALWAYS),
            Ok(IoChoice::Portable("configured"))
        );
    }

    #[test]
    fn the_library_default_write_path_is_portable() {
        assert_eq!(JournalIo::default(), JournalIo::Portable);
        assert_eq!(JournalConfig::default().io, JournalIo::Portable);
    }

    /// A ring that cannot be set up (io_uring disabled by sysctl or seccomp, as in some
    /// containers): forcing the path is a startup error that says so; the store opens once the
    /// ring can be set up.
    #[cfg(feature = "io-uring")]
    #[test]
    fn a_ring_that_cannot_be_set_up_fails_a_forced_io_uring_with_a_reason() {
        use super::uring::FAIL_SETUP;
        use super::JournalStore;
        use crate::MessageStore;
        FAIL_SETUP.with(|f| f.set(true));
        let dir = tempfile::tempdir().unwrap();
        let cfg = |io| JournalConfig {
            io,
            ..JournalConfig::default()
        };
        let err = JournalStore::open(dir.path(), cfg(JournalIo::IoUring)).unwrap_err();
        assert!(
            matches!(&err, crate::StoreError::Config(m) if m.contains("not available")),
            "{err:?}"
        );
        FAIL_SETUP.with(|f| f.set(false));
        let store = JournalStore::open(dir.path(), cfg(JournalIo::IoUring)).unwrap();
        assert_eq!(store.io(), JournalIo::IoUring);
        store.close().unwrap();
    }
}
