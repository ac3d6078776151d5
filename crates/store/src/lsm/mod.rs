//! The `lsm` store: a [`MessageStore`] on RocksDB (cargo feature `lsm`), in the spirit of
//! ActiveMQ's LevelDB store.
//!
//! - Column families: `messages` (one key per message, see [`codec`]), `lists` (per-list count,
//!   bytes and max seq, so `recover()` and open are O(lists) rather than O(messages)),
//!   `subscriptions`, and `meta` (the format version).
//! - Writes go through a group-commit writer thread like the journal's (`writer`): `submit`
//!   queues on a bounded channel; the writer turns everything queued into one `WriteBatch` with
//!   one WAL sync, then completes the waiters. A failed write fails the store for good.
//! - Reads (`load`) are prefix scans straight from RocksDB.
//!
//! RocksDB's own WAL replay is the crash recovery: a group is confirmed only after its batch
//! (messages and stats together) is in the synced WAL, so after any crash the stats describe
//! exactly the messages present.

pub(crate) mod codec;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    ReadOptions, WriteOptions, DB,
};

use crate::group::{check_usage, Inbox, Submitted};
use crate::journal::fence;
use crate::lsm::codec::ListStats;
use crate::lsm::writer::Writer;
use crate::{
    Batch, Completion, Fence, ListInfo, MessageStore, Op, Recovery, StoreError, StoredMessage,
    SyncMode,
};

const CF_MESSAGES: &str = "messages";
const CF_LISTS: &str = "lists";
const CF_SUBSCRIPTIONS: &str = "subscriptions";
const CF_META: &str = "meta";
/// Key of the format version in `meta`.
const META_FORMAT_KEY: &[u8] = b"format";
/// The on-disk layout this code reads and writes (see [`codec`]).
const FORMAT_VERSION: u8 = 1;
/// Largest batch (payload and list-name bytes) accepted; like the journal's record limit, it
/// keeps one batch from growing a `WriteBatch` towards RocksDB's 4 GiB ceiling.
pub const LSM_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Log files RocksDB keeps (its info LOG, not the WAL).
const INFO_LOG_FILES_MAX: usize = 4;

/// Options of the lsm store.
#[derive(Debug, Clone)]
pub struct LsmConfig {
    /// The RocksDB directory (created when missing).
    pub path: PathBuf,
    /// When a batch counts as durable, as for the journal: `Always` syncs the WAL once per
    /// group before confirming; `Periodic` confirms after the WAL write and syncs it at least
    /// every `interval_ms`; `Never` confirms after the WAL write and syncs only on close
    /// (the data survives a broker crash but not a power cut).
    pub sync: SyncMode,
    /// With `SyncMode::Always`: the longest time a lazy batch (an ack without a receipt,
    /// [`MessageStore::submit_lazy`]) stays in the WAL unsynced when no other group brings a
    /// sync; 0 = synced like any other batch (as for the journal).
    pub ack_sync_delay_ms: u64,
    /// Batches waiting for the writer at most; `submit` blocks beyond (backpressure).
    pub queue_batches_max: usize,
    /// Bytes the writer gathers into one group (one `WriteBatch`, one sync) at most. The first
    /// batch of a group is always taken, so a larger single batch still goes through.
    pub group_bytes_max: usize,
    /// Batches the writer gathers into one group at most.
    pub group_batches_max: usize,
    /// Refuse enqueues (`StoreError::Full`) that would take the stored message bytes over this;
    /// 0 = no limit.
    pub store_usage_limit: u64,
    /// RocksDB memtable size of the `messages` column family (`write_buffer_size`).
    pub write_buffer_bytes: usize,
    /// RocksDB block cache shared by the column families.
    pub block_cache_bytes: usize,
    /// The HA fence (None = no HA): consulted before each group is written and again before it
    /// is confirmed; a failed check fails the store for good.
    pub fence: Option<Arc<dyn Fence>>,
}

impl LsmConfig {
    /// Defaults for a store in `path`: sync always, 4 MiB groups, 64 MiB memtable.
    pub fn new(path: impl Into<PathBuf>) -> LsmConfig {
        LsmConfig {
            path: path.into(),
            sync: SyncMode::Always,
            ack_sync_delay_ms: crate::journal::ACK_SYNC_DELAY_MS_DEFAULT,
            queue_batches_max: 10_000,
            group_bytes_max: 4 * 1024 * 1024,
            group_batches_max: 4096,
            store_usage_limit: 0,
            write_buffer_bytes: 64 * 1024 * 1024,
            block_cache_bytes: 32 * 1024 * 1024,
            fence: None,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.queue_batches_max == 0 || self.group_bytes_max == 0 || self.group_batches_max == 0 {
            return Err(StoreError::Config(
                "lsm queue_batches_max, group_bytes_max and group_batches_max must be positive"
                    .into(),
            ));
        }
        if let SyncMode::Periodic { interval_ms: 0 } = self.sync {
            return Err(StoreError::Config(
                "periodic sync needs interval_ms > 0".into(),
            ));
        }
        if self.ack_sync_delay_ms > crate::journal::ACK_SYNC_DELAY_MS_MAX {
            return Err(StoreError::Config(format!(
                "ack_sync_delay_ms {} is over {}",
                self.ack_sync_delay_ms,
                crate::journal::ACK_SYNC_DELAY_MS_MAX
            )));
        }
        if self.write_buffer_bytes < 1024 * 1024 {
            return Err(StoreError::Config(format!(
                "lsm write_buffer_bytes {} is below 1 MiB",
                self.write_buffer_bytes
            )));
        }
        Ok(())
    }
}

/// Counters of the writer, for benches and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LsmStats {
    /// `WriteBatch`es written (one per group).
    pub groups: u64,
    /// WAL syncs (one per group with `SyncMode::Always`, plus periodic and close syncs).
    pub syncs: u64,
    /// Batches confirmed.
    pub batches: u64,
    /// Payload bytes of confirmed enqueues.
    pub bytes_written: u64,
}

#[derive(Debug, Default)]
struct Counters {
    groups: AtomicU64,
    syncs: AtomicU64,
    batches: AtomicU64,
    bytes_written: AtomicU64,
}

/// Wraps a RocksDB error; corruption keeps its own variant so operators can tell it apart.
pub(crate) fn rocks_error(op: &'static str, path: &Path, e: rocksdb::Error) -> StoreError {
    if e.kind() == rocksdb::ErrorKind::Corruption {
        StoreError::Corrupt {
            location: path.display().to_string(),
            reason: format!("{op}: {e}"),
        }
    } else {
        StoreError::io(op, std::io::Error::other(e.into_string()))
    }
}

/// State shared by the store handle and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    config: LsmConfig,
    /// `None` once closed: closing drops the DB so its `LOCK` is released for a reopen even
    /// while a stale handle of this store is still referenced.
    db: RwLock<Option<Arc<DB>>>,
    /// Committed per-list stats; the writer is the only one to change them, after a write.
    lists: RwLock<HashMap<String, ListStats>>,
    usage_bytes: AtomicU64,
    failed_flag: AtomicBool,
    failure: Mutex<Option<StoreError>>,
    tx: Inbox<Submitted>,
    stats: Counters,
    /// Group-commit statistics for `/metrics` (see [`crate::CommitStats`]).
    commit: crate::CommitStats,
}

impl Shared {
    pub(crate) fn set_failed(&self, err: &StoreError) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!("lsm store failed and refuses further writes until reopened: {err}");
            *failure = Some(err.clone());
        }
        self.failed_flag.store(true, Ordering::Release);
    }

    pub(crate) fn failed(&self) -> Option<StoreError> {
        if !self.failed_flag.load(Ordering::Acquire) {
            return None;
        }
        let failure = self.failure.lock();
        Some(match failure.as_ref() {
            Some(e @ StoreError::Failed(_)) => e.clone(),
            Some(e) => StoreError::Failed(e.to_string()),
            None => StoreError::Failed("unknown failure".to_string()),
        })
    }

    /// Asks the fence (if any) whether this writer may still write; fails the store for good
    /// when it may not.
    pub(crate) fn check_fence(&self) -> Result<(), StoreError> {
        if let Some(err) = self.failed() {
            return Err(err);
        }
        let Some(fence) = &self.config.fence else {
            return Ok(());
        };
        fence.check().map_err(|reason| {
            let err = fence::fenced(&reason);
            tracing::error!("lsm writer fenced: {reason}");
            self.set_failed(&err);
            err
        })
    }

    fn db(&self) -> Result<Arc<DB>, StoreError> {
        self.db.read().clone().ok_or(StoreError::Closed)
    }
}

/// The RocksDB-backed store. Open with [`LsmStore::open`].
#[derive(Debug)]
pub struct LsmStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

fn db_options(config: &LsmConfig) -> Result<(Options, Vec<ColumnFamilyDescriptor>), StoreError> {
    let cache = Cache::new_lru_cache(config.block_cache_bytes)
        .map_err(|e| rocks_error("create block cache", &config.path, e))?;
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    // Acks and re-enqueues look messages up by key; a bloom filter keeps a lookup of a key
    // that is not in an SST file from reading that file's blocks.
    table.set_bloom_filter(10.0, false);

    let mut db = Options::default();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_keep_log_file_num(INFO_LOG_FILES_MAX);
    // Flushes of the small column families happen with the messages' (atomic_flush), so the
    // WAL never has to be kept for a column family that rarely fills its memtable.
    db.set_atomic_flush(true);

    let mut messages = Options::default();
    messages.set_block_based_table_factory(&table);
    messages.set_write_buffer_size(config.write_buffer_bytes);
    let mut small = Options::default();
    small.set_block_based_table_factory(&table);
    small.set_write_buffer_size(4 * 1024 * 1024);

    let cfs = vec![
        ColumnFamilyDescriptor::new(CF_MESSAGES, messages),
        ColumnFamilyDescriptor::new(CF_LISTS, small.clone()),
        ColumnFamilyDescriptor::new(CF_SUBSCRIPTIONS, small.clone()),
        ColumnFamilyDescriptor::new(CF_META, small),
    ];
    Ok((db, cfs))
}

/// Checks (or, for a new store, writes) the format version.
fn check_format(db: &DB, path: &Path) -> Result<(), StoreError> {
    let meta = cf(db, CF_META)?;
    match db
        .get_pinned_cf(meta, META_FORMAT_KEY)
        .map_err(|e| rocks_error("read format version", path, e))?
    {
        Some(v) if v.as_ref() == [FORMAT_VERSION] => Ok(()),
        Some(v) => Err(StoreError::Config(format!(
            "lsm store at {} has format {:?}, this build reads format {FORMAT_VERSION}",
            path.display(),
            v.as_ref()
        ))),
        None => {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(meta, META_FORMAT_KEY, [FORMAT_VERSION], &wo)
                .map_err(|e| rocks_error("write format version", path, e))
        }
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Config(format!("lsm column family {name} is missing")))
}

/// Reads every list's stats (O(lists)).
fn load_lists(db: &DB, path: &Path) -> Result<HashMap<String, ListStats>, StoreError> {
    let mut lists = HashMap::new();
    for item in db.iterator_cf(cf(db, CF_LISTS)?, IteratorMode::Start) {
        let (key, value) = item.map_err(|e| rocks_error("read list stats", path, e))?;
        let list = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
            location: format!("lsm list stats key {:02x?}", key.as_ref()),
            reason: "list name is not UTF-8".into(),
        })?;
        let stats = ListStats::decode(&list, &value)?;
        lists.insert(list, stats);
    }
    Ok(lists)
}

impl LsmStore {
    /// Hands a batch to the writer thread; `lazy` = written without a WAL sync of its own.
    fn enqueue(&self, batch: Batch, lazy: bool) -> Completion {
        if let Some(err) = self.shared.failed() {
            return Completion::ready(Err(err));
        }
        let usage = self.shared.usage_bytes.load(Ordering::Acquire);
        if let Err(e) = check_usage(self.shared.config.store_usage_limit, usage, &batch) {
            return Completion::ready(Err(e));
        }
        let bytes = batch_bytes(&batch);
        let (submitted, completion) = Submitted::new(batch, lazy, bytes);
        self.shared.tx.send(submitted);
        completion
    }

    /// Opens (creating if needed) the store in `config.path`: RocksDB replays its WAL, the list
    /// stats are read, and the writer thread starts.
    pub fn open(config: LsmConfig) -> Result<LsmStore, StoreError> {
        config.validate()?;
        let started = Instant::now();
        let (db_opts, cfs) = db_options(&config)?;
        let db = DB::open_cf_descriptors(&db_opts, &config.path, cfs)
            .map_err(|e| rocks_error("open", &config.path, e))?;
        check_format(&db, &config.path)?;
        let lists = load_lists(&db, &config.path)?;
        let usage_bytes = lists.values().map(|l| l.bytes).sum();
        tracing::info!(
            path = %config.path.display(),
            lists = lists.len(),
            usage_bytes,
            open_ms = started.elapsed().as_millis() as u64,
            "lsm store opened"
        );
        let db = Arc::new(db);
        let (tx, rx) = sync_channel(config.queue_batches_max);
        let shared = Arc::new(Shared {
            config,
            db: RwLock::new(Some(db.clone())),
            lists: RwLock::new(lists),
            usage_bytes: AtomicU64::new(usage_bytes),
            failed_flag: AtomicBool::new(false),
            failure: Mutex::new(None),
            tx: Inbox::new(tx),
            stats: Counters::default(),
            commit: crate::CommitStats::default(),
        });
        let writer = Writer::new(shared.clone(), db);
        let writer = std::thread::Builder::new()
            .name("ferromq-lsm-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io("spawn lsm writer thread", e))?;
        Ok(LsmStore {
            shared,
            writer: Mutex::new(Some(writer)),
            closed: AtomicBool::new(false),
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> LsmStats {
        let c = &self.shared.stats;
        LsmStats {
            groups: c.groups.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer after it wrote (and synced) everything queued.
    fn stop_writer(&self) {
        // Dropping the last sender ends the writer once it drained the queue.
        self.shared.tx.close();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                self.shared
                    .set_failed(&StoreError::Failed("lsm writer thread panicked".into()));
            }
        }
    }
}

/// Payload and list-name bytes of a batch (what it adds to a `WriteBatch`, roughly).
pub(crate) fn batch_bytes(batch: &Batch) -> usize {
    batch
        .iter()
        .map(|op| match op {
            Op::Enqueue { list, payload, .. } => list.len() + payload.len(),
            Op::Dequeue { list, .. } | Op::DeleteSubscription { list } | Op::Purge { list } => {
                list.len()
            }
            Op::PutSubscription(rec) => {
                rec.list.len()
                    + rec.client_id.len()
                    + rec.name.len()
                    + rec.topic.len()
                    + rec.selector.as_ref().map_or(0, String::len)
            }
        })
        .sum()
}

impl MessageStore for LsmStore {
    fn kind(&self) -> &'static str {
        "lsm"
    }

    fn submit(&self, batch: Batch) -> Completion {
        self.enqueue(batch, false)
    }

    fn submit_lazy(&self, batch: Batch) -> Completion {
        let lazy = self.shared.config.ack_sync_delay_ms > 0;
        self.enqueue(batch, lazy)
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        let db = self.shared.db()?;
        let path = &self.shared.config.path;
        let mut subscriptions = Vec::new();
        for item in db.iterator_cf(cf(&db, CF_SUBSCRIPTIONS)?, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| rocks_error("read subscriptions", path, e))?;
            let list = std::str::from_utf8(&key).map_err(|_| StoreError::Corrupt {
                location: format!("lsm subscription key {:02x?}", key.as_ref()),
                reason: "list name is not UTF-8".into(),
            })?;
            subscriptions.push(codec::decode_subscription(list, &value)?);
        }
        let mut lists: Vec<ListInfo> = self
            .shared
            .lists
            .read()
            .iter()
            .filter(|(_, l)| l.count > 0)
            .map(|(list, l)| ListInfo {
                list: list.clone(),
                count: l.count,
                bytes: l.bytes,
                max_seq: l.max_seq,
            })
            .collect();
        lists.sort_by(|a, b| a.list.cmp(&b.list));
        Ok(Recovery {
            subscriptions,
            lists,
        })
    }

    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let start = match after_seq {
            None => codec::list_prefix(list),
            Some(seq) => match seq.checked_add(1) {
                Some(next) => codec::message_key(list, next),
                None => return Ok(Vec::new()),
            },
        };
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let db = self.shared.db()?;
        let prefix = codec::list_prefix(list);
        let mut ro = ReadOptions::default();
        // The bound lets RocksDB stop at the list's end instead of stepping over the next
        // list's keys (and over tombstones past the end).
        if let Some(end) = codec::prefix_end(&prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let iter = db.iterator_cf_opt(
            cf(&db, CF_MESSAGES)?,
            ro,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::with_capacity(max_count.min(1024));
        for item in iter {
            let (key, value) =
                item.map_err(|e| rocks_error("read messages", &self.shared.config.path, e))?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(StoredMessage {
                seq: codec::message_seq(&prefix, &key)?,
                payload: bytes::Bytes::from(value),
            });
            if out.len() >= max_count {
                break;
            }
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
        self.stop_writer();
        let db = self.shared.db.write().take();
        if let Some(err) = self.shared.failed() {
            return Err(err);
        }
        let Some(db) = db else {
            return Ok(());
        };
        // The writer synced the WAL on its way out; flushing the memtables too makes the next
        // open skip the WAL replay (a quick restart after a clean shutdown).
        for name in [CF_MESSAGES, CF_LISTS, CF_SUBSCRIPTIONS, CF_META] {
            db.flush_cf(cf(&db, name)?)
                .map_err(|e| rocks_error("flush", &self.shared.config.path, e))?;
        }
        tracing::info!(path = %self.shared.config.path.display(), "lsm store closed");
        Ok(())
    }
}

impl Drop for LsmStore {
    fn drop(&mut self) {
        // Without close(): the writer still drains and syncs what is queued, but nothing is
        // flushed; the next open replays the WAL.
        self.stop_writer();
    }
}
