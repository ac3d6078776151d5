//! The SQL store: a [`MessageStore`] in SQLite, PostgreSQL or MySQL/MariaDB, the analogue of
//! ActiveMQ's JDBC persistence adapter, and the store of shared-database master/slave.
//!
//! Tables (`{prefix}` is [`SqlConfig::table_prefix`], `activemq_` by default):
//!
//! - `{prefix}msgs (container, seq, msg)`, primary key `(container, seq)`: one row per stored
//!   message (ActiveMQ's `ACTIVEMQ_MSGS`). `container` is the list key (`queue://NAME`,
//!   `durable://CLIENT:NAME`, …), `seq` the broker's sequence number;
//! - `{prefix}acks (container, client_id, sub_name, sub_dest, selector, no_local)`: durable
//!   subscriptions (`ACTIVEMQ_ACKS`);
//! - `{prefix}lists (container, max_seq)`: the highest seq ever enqueued to each list since
//!   its last purge, so that [`crate::ListInfo::max_seq`] survives acks of the newest messages
//!   and restarts exactly as in the memory and journal stores;
//! - `{prefix}lock (id, broker_name, epoch, expiry_ms, time)` with rows 1 (the lease and its
//!   epoch) and 2 (the row-locker's mutex), shared with the shared-database HA locker.
//!
//! Tested against SQLite (bundled), PostgreSQL 15 and MariaDB 10.11. MySQL proper speaks the same
//! SQL here; its 8.0.20+ servers log a deprecation warning for the `VALUES()` upsert form,
//! which MariaDB needs.
//!
//! Writes go through one writer thread that group-commits (see `writer`). Reads (`recover`,
//! `load`) run on a small pool driven by the store's own one-worker runtime; callers wait on a
//! std channel, so the store can be called from inside or outside any tokio runtime.
//!
//! **Fencing.** With [`SqlConfig::fence_epoch`] set, every write transaction first reads the
//! lease row's epoch under a shared row lock (PostgreSQL `FOR SHARE`, MySQL `LOCK IN SHARE
//! MODE`; SQLite's `BEGIN IMMEDIATE` already holds the database's write lock). A new master
//! raises the epoch with an `UPDATE` of that row, which waits for such transactions to end; so
//! once the update committed, no transaction of the deposed master can commit. A transaction
//! that sees another epoch rolls back and fails the store for good.
//!
//! **Limits.** A message payload may be at most 512 MiB on SQLite and PostgreSQL (tests cover
//! 10 MiB); on MySQL and MariaDB it must fit in one packet: `max_allowed_packet` (16 MiB by
//! default on MariaDB, 64 MiB on MySQL 8) less 64 KiB, read from the server at open. Larger
//! enqueues are refused with [`StoreError::Config`] at submit, without failing the store. List
//! keys, client ids, subscription names and topics are at most 250 characters, selectors at
//! most 65,535 bytes, and none may hold a NUL character (PostgreSQL text cannot); such batches
//! are refused the same way.

mod conn;
mod dialect;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

pub use dialect::Dialect;

use crate::group::{payload_bytes, Inbox, Submitted};
use crate::sql::conn::{Arg, Col, Options, Pool, Val};
use crate::sql::dialect::Tables;
use crate::sql::writer::{Writer, WriterConfig};
use crate::{
    Batch, Completion, Fence, ListInfo, MessageStore, Op, Recovery, StoreError, StoredMessage,
    SubscriptionRecord,
};

/// Longest list key (the key columns are `VARCHAR(250)`, as ActiveMQ's `CONTAINER`).
pub const LIST_KEY_CHARS_MAX: usize = 250;
/// Largest payload on SQLite and PostgreSQL (well below both databases' 1 GB value limit).
const PAYLOAD_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Room left in a MySQL packet for the statement around a payload.
const MYSQL_PACKET_OVERHEAD_BYTES: u64 = 64 * 1024;
/// Longest selector (MySQL's TEXT holds 65,535 bytes; the same limit everywhere).
const SELECTOR_BYTES_MAX: usize = 65_535;
/// Longest table prefix (MySQL identifiers are at most 64 characters; `lists` follows it).
const TABLE_PREFIX_CHARS_MAX: usize = 48;

/// Options of the SQL store.
#[derive(Clone)]
pub struct SqlConfig {
    /// `sqlite://PATH` (embedded; WAL, `synchronous=FULL`), `postgres://…` or `mysql://…`.
    pub url: String,
    /// Prepended to every table name (ActiveMQ's `tablePrefix`); `[A-Za-z0-9_]` only.
    pub table_prefix: String,
    /// Create missing tables and lock rows at open (ActiveMQ's `createTablesOnStartup`).
    pub create_tables_on_startup: bool,
    /// The mastership epoch this broker holds (shared-database HA); `None` = no fencing.
    /// When set, the open and every write transaction check the lock row's epoch equals it.
    pub fence_epoch: Option<u64>,
    /// An HA fence asked before every group commit, like the journal writer does.
    pub fence: Option<Arc<dyn Fence>>,
    /// Batches waiting for the writer at most; `submit` blocks beyond (backpressure).
    pub queue_batches_max: usize,
    /// Batches one transaction applies at most.
    pub group_batches_max: usize,
    /// Payload bytes one transaction gathers at most (a larger single batch still goes alone).
    pub group_bytes_max: usize,
    /// Connections the readers' pool opens at most (the writer has one more of its own).
    pub pool_connections_max: u32,
    /// Longest wait to connect at open, and for a pooled connection on each read.
    pub connect_timeout_ms: u64,
    /// Longest a group's transaction may take, commit included; past it the store fails.
    pub group_timeout_ms: u64,
    /// Asks the database to end the writer's session when a transaction of it sits idle this
    /// long (PostgreSQL `idle_in_transaction_session_timeout`, MariaDB
    /// `idle_transaction_timeout`, rounded up to seconds); 0 = never. Shared-database HA sets
    /// it: a master frozen (SIGSTOP, a VM pause) inside a group holds the lock row's share lock,
    /// and the next master's epoch update could never get past it.
    pub idle_in_transaction_timeout_ms: u64,
    /// On PostgreSQL, a group made only of lazy batches (acks without a receipt,
    /// [`MessageStore::submit_lazy`]) commits with `synchronous_commit = off`: the server
    /// flushes it with the next synchronous commit or within its `wal_writer_delay` (3 × at
    /// worst). SQLite and MySQL/MariaDB commit such groups like any other.
    pub lazy_acks: bool,
}

impl std::fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &redact_url(&self.url))
            .field("table_prefix", &self.table_prefix)
            .field("create_tables_on_startup", &self.create_tables_on_startup)
            .field("fence_epoch", &self.fence_epoch)
            .field("fence", &self.fence)
            .field("queue_batches_max", &self.queue_batches_max)
            .field("group_batches_max", &self.group_batches_max)
            .field("group_bytes_max", &self.group_bytes_max)
            .field("pool_connections_max", &self.pool_connections_max)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("group_timeout_ms", &self.group_timeout_ms)
            .field(
                "idle_in_transaction_timeout_ms",
                &self.idle_in_transaction_timeout_ms,
            )
            .field("lazy_acks", &self.lazy_acks)
            .finish()
    }
}

impl Default for SqlConfig {
    fn default() -> SqlConfig {
        SqlConfig {
            url: String::new(),
            table_prefix: "activemq_".to_string(),
            create_tables_on_startup: true,
            fence_epoch: None,
            fence: None,
            queue_batches_max: 10_000,
            group_batches_max: 4096,
            group_bytes_max: 4 * 1024 * 1024,
            pool_connections_max: 4,
            connect_timeout_ms: 30_000,
            group_timeout_ms: 60_000,
            idle_in_transaction_timeout_ms: 0,
            lazy_acks: true,
        }
    }
}

impl SqlConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> SqlConfig {
        SqlConfig {
            url: url.into(),
            ..SqlConfig::default()
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.url.is_empty() {
            return Err(StoreError::Config(
                "sql store url is empty: expected sqlite://PATH, postgres://… or mysql://…".into(),
            ));
        }
        if self.table_prefix.len() > TABLE_PREFIX_CHARS_MAX
            || !self
                .table_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Config(format!(
                "table_prefix {:?} must be at most {TABLE_PREFIX_CHARS_MAX} characters of \
                 [A-Za-z0-9_]",
                self.table_prefix
            )));
        }
        if self.queue_batches_max == 0
            || self.group_batches_max == 0
            || self.group_bytes_max == 0
            || self.pool_connections_max == 0
            || self.connect_timeout_ms == 0
            || self.group_timeout_ms == 0
        {
            return Err(StoreError::Config(
                "queue_batches_max, group_batches_max, group_bytes_max, pool_connections_max, \
                 connect_timeout_ms and group_timeout_ms must be positive"
                    .into(),
            ));
        }
        if self.fence_epoch.is_some_and(|e| i64::try_from(e).is_err()) {
            return Err(StoreError::Config(
                "fence_epoch must fit in a signed 64-bit integer".into(),
            ));
        }
        Ok(())
    }
}

/// Refuses what a key column cannot hold. Caught here, such a value refuses its own batch;
/// caught by the database, it would fail the whole group and so the store.
fn check_key(what: &str, v: &str) -> Result<(), StoreError> {
    let chars = v.chars().count();
    if chars > LIST_KEY_CHARS_MAX {
        return Err(StoreError::Config(format!(
            "{what} of {chars} characters is over {LIST_KEY_CHARS_MAX}"
        )));
    }
    // PostgreSQL text cannot hold NUL.
    if v.contains('\0') {
        return Err(StoreError::Config(format!("{what} holds a NUL character")));
    }
    Ok(())
}

/// `scheme://user:password@host…` without the password, for logs.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Counters of the writer, for tests and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqlStats {
    /// Transactions committed (one per group).
    pub commits: u64,
    /// Batches confirmed.
    pub batches: u64,
}

/// State shared by the store handle and its writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    failed: AtomicBool,
    failure: Mutex<Option<StoreError>>,
    usage_bytes: AtomicU64,
    commits: AtomicU64,
    batches: AtomicU64,
    /// Batches per commit, commit latency, submit-to-confirmation wait.
    pub(crate) commit: crate::CommitStats,
    tx: Inbox<Submitted>,
}

impl Shared {
    /// Marks the store failed; logs the first failure only.
    pub(crate) fn set_failed(&self, err: &StoreError) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!("sql store failed and refuses further writes until reopened: {err}");
            *failure = Some(err.clone());
        }
        self.failed.store(true, Ordering::Release);
    }

    /// The failure, if the store failed.
    pub(crate) fn failure_if_failed(&self) -> Option<StoreError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(match self.failure.lock().as_ref() {
            Some(e @ StoreError::Failed(_)) => e.clone(),
            Some(e) => StoreError::Failed(e.to_string()),
            None => StoreError::Failed("unknown failure".into()),
        })
    }
}

/// The readers: a pool driven by a one-worker runtime the store owns.
#[derive(Debug)]
struct Readers {
    rt: tokio::runtime::Runtime,
    pool: Pool,
}

/// What the writer thread found at open.
#[derive(Debug)]
struct Opened {
    usage_bytes: u64,
    payload_bytes_max: u64,
}

/// The SQL store. Open with [`SqlStore::open`].
#[derive(Debug)]
pub struct SqlStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: RwLock<Option<Readers>>,
    dialect: Dialect,
    tables: Tables,
    payload_bytes_max: u64,
    closed: AtomicBool,
}

impl SqlStore {
    /// Hands a batch to the writer thread; `lazy` = the writer may commit it without a flush of its own (see `SqlConfig::lazy_acks`).
    fn enqueue(&self, batch: Batch, lazy: bool) -> Completion {
        if let Some(err) = self.shared.failure_if_failed() {
            return Completion::ready(Err(err));
        }
        if let Err(e) = self.check_batch(&batch) {
            return Completion::ready(Err(e));
        }
        let bytes = payload_bytes(&batch);
        let (submitted, completion) = Submitted::new(batch, lazy, bytes);
        self.shared.tx.send(submitted);
        completion
    }

    /// Connects, creates the tables if configured, checks the fence epoch, reads the stored
    /// usage, and starts the writer thread. Blocks the calling thread (never its runtime).
    pub fn open(cfg: SqlConfig) -> Result<SqlStore, StoreError> {
        cfg.validate()?;
        let options = Options::parse(&cfg.url)?;
        let dialect = options.dialect();
        let tables = Tables::new(&cfg.table_prefix);
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let (tx, rx) = sync_channel(cfg.queue_batches_max);
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            usage_bytes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            commit: crate::CommitStats::default(),
            tx: Inbox::new(tx),
        });

        let (init_tx, init_rx) = sync_channel::<Result<Opened, StoreError>>(1);
        let writer_shared = shared.clone();
        let writer_options = options.clone();
        let writer_tables = tables.clone();
        let writer_cfg = cfg.clone();
        let handle = std::thread::Builder::new()
            .name("ferromq-sql-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = init_tx.send(Err(StoreError::io("start sql writer runtime", e)));
                        return;
                    }
                };
                let init = rt.block_on(async {
                    tokio::time::timeout(
                        connect_timeout,
                        init_writer(&writer_options, &writer_tables, &writer_cfg),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(db_error(
                            "sql connect",
                            format!("no answer within {} ms", connect_timeout.as_millis()),
                        ))
                    })
                });
                let (conn, max_seqs, opened) = match init {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = init_tx.send(Err(e));
                        return;
                    }
                };
                let fence_epoch = writer_cfg.fence_epoch.and_then(|e| i64::try_from(e).ok());
                let writer = Writer {
                    shared: writer_shared,
                    rt,
                    conn: Some(conn),
                    cfg: WriterConfig {
                        dialect: writer_options.dialect(),
                        tables: writer_tables,
                        fence_epoch,
                        fence: writer_cfg.fence.clone(),
                        group_batches_max: writer_cfg.group_batches_max,
                        group_bytes_max: writer_cfg.group_bytes_max,
                        statement_bytes_max: statement_bytes_max(opened.payload_bytes_max),
                        group_timeout: Duration::from_millis(writer_cfg.group_timeout_ms),
                        lazy_acks: writer_cfg.lazy_acks,
                    },
                    max_seqs,
                };
                let _ = init_tx.send(Ok(opened));
                writer.run(rx);
            })
            .map_err(|e| StoreError::io("spawn sql writer thread", e))?;
        let opened = match init_rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => {
                let _ = handle.join();
                return Err(StoreError::Failed(
                    "sql writer thread ended while opening".into(),
                ));
            }
        };
        shared
            .usage_bytes
            .store(opened.usage_bytes, Ordering::Release);

        let store = SqlStore {
            shared,
            writer: Mutex::new(Some(handle)),
            readers: RwLock::new(None),
            dialect,
            tables,
            payload_bytes_max: opened.payload_bytes_max,
            closed: AtomicBool::new(false),
        };
        // On failure from here, dropping `store` stops the writer thread.
        let readers = open_readers(&options, cfg.pool_connections_max, connect_timeout)?;
        *store.readers.write() = Some(readers);
        Ok(store)
    }

    /// The database in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The largest message payload this store accepts (see the module docs).
    pub fn payload_bytes_max(&self) -> u64 {
        self.payload_bytes_max
    }

    /// The writer's counters.
    pub fn stats(&self) -> SqlStats {
        SqlStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
        }
    }

    /// Refuses a batch the database could not store, without failing the store.
    fn check_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        for op in batch {
            match op {
                Op::Enqueue { list, seq, payload } => {
                    check_key("list key", list)?;
                    if i64::try_from(*seq).is_err() {
                        return Err(StoreError::Config(format!(
                            "seq {seq} of {list} is above the database's BIGINT range"
                        )));
                    }
                    if payload.len() as u64 > self.payload_bytes_max {
                        return Err(StoreError::Config(format!(
                            "a payload of {} bytes is over this database's limit of {} bytes",
                            payload.len(),
                            self.payload_bytes_max
                        )));
                    }
                }
                Op::Dequeue { list, .. } | Op::DeleteSubscription { list } | Op::Purge { list } => {
                    check_key("list key", list)?;
                }
                Op::PutSubscription(rec) => {
                    check_key("list key", &rec.list)?;
                    check_key("client id", &rec.client_id)?;
                    check_key("subscription name", &rec.name)?;
                    check_key("topic", &rec.topic)?;
                    if let Some(selector) = &rec.selector {
                        if selector.len() > SELECTOR_BYTES_MAX || selector.contains('\0') {
                            return Err(StoreError::Config(format!(
                                "selector of {} bytes is over {SELECTOR_BYTES_MAX} bytes or \
                                 holds a NUL character",
                                selector.len()
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `f` on the readers' runtime and waits for it on this thread.
    fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        {
            let readers = self.readers.read();
            let Some(r) = readers.as_ref() else {
                return Err(StoreError::Closed);
            };
            let fut = f(r.pool.clone());
            r.rt.spawn(async move {
                let _ = tx.send(fut.await);
            });
        }
        // A task dropped with the runtime (the store being dropped) drops the sender.
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Ends the writer after it applied what is queued.
    fn stop_writer(&self) {
        // Dropping the last sender ends the writer once it drained the queue.
        self.shared.tx.close();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                self.shared
                    .set_failed(&StoreError::Failed("sql writer thread panicked".into()));
            }
        }
    }

    /// Closes the readers' pool and runtime.
    fn stop_readers(&self) {
        if let Some(readers) = self.readers.write().take() {
            let (tx, rx) = sync_channel(1);
            let pool = readers.pool.clone();
            readers.rt.spawn(async move {
                pool.close().await;
                let _ = tx.send(());
            });
            // Bounded: a pool that cannot say goodbye to its server is dropped anyway.
            let _ = rx.recv_timeout(Duration::from_secs(5));
            // Not a blocking drop: the store may be dropped inside the broker's runtime.
            readers.rt.shutdown_background();
        }
    }
}

fn db_error(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::io(op, std::io::Error::other(e.to_string()))
}

fn sqlx_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::io(op, std::io::Error::other(e))
}

/// Statement payload bound: MySQL must fit a multi-row insert in one packet; elsewhere keep
/// statements to a few MiB so one group does not build a huge parameter buffer twice.
fn statement_bytes_max(payload_bytes_max: u64) -> usize {
    usize::try_from(payload_bytes_max.min(8 * 1024 * 1024)).unwrap_or(8 * 1024 * 1024)
}

type Init = (conn::Conn, HashMap<String, i64>, Opened);

/// The writer's part of the open: connection, schema, fence, usage and max seqs.
async fn init_writer(options: &Options, t: &Tables, cfg: &SqlConfig) -> Result<Init, StoreError> {
    let d = options.dialect();
    let mut conn = options.connect().await.map_err(sqlx_error("sql connect"))?;
    if cfg.idle_in_transaction_timeout_ms > 0 {
        let ms = cfg.idle_in_transaction_timeout_ms;
        let set = match d {
            Dialect::Postgres => Some(format!("SET idle_in_transaction_session_timeout = {ms}")),
            Dialect::MySql => Some(format!(
                "SET SESSION idle_transaction_timeout = {}",
                ms.div_ceil(1000)
            )),
            // One process owns an SQLite file; nothing to free for another.
            Dialect::Sqlite => None,
        };
        if let Some(set) = set {
            if let Err(e) = conn.raw(&set).await {
                // MySQL proper has no such variable (MariaDB has): say so, carry on.
                tracing::warn!(error = %e, "the database cannot end idle transactions ({set})");
            }
        }
    }
    let version = conn
        .fetch(d.version_query(), &[], &[Col::Str])
        .await
        .map_err(sqlx_error("sql server version"))?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .map(Val::into_string)
        .unwrap_or_default();
    let payload_bytes_max = match d {
        Dialect::MySql => {
            let packet = conn
                .fetch_i64("SELECT CAST(@@max_allowed_packet AS SIGNED)", &[])
                .await
                .map_err(sqlx_error("sql max_allowed_packet"))?
                .unwrap_or(0);
            u64::try_from(packet)
                .unwrap_or(0)
                .saturating_sub(MYSQL_PACKET_OVERHEAD_BYTES)
        }
        Dialect::Sqlite | Dialect::Postgres => PAYLOAD_BYTES_MAX,
    };
    tracing::info!(
        database = ?d,
        server_version = %version,
        table_prefix = %cfg.table_prefix,
        url = %redact_url(&cfg.url),
        payload_bytes_max,
        "sql store opening"
    );
    if cfg.create_tables_on_startup {
        writer::create_tables(&mut conn, d, t)
            .await
            .map_err(sqlx_error("sql create tables"))?;
    }
    if let Some(ours) = cfg.fence_epoch {
        let db = conn
            .fetch_i64(&format!("SELECT epoch FROM {} WHERE id = 1", t.lock), &[])
            .await
            .map_err(sqlx_error("sql read lock epoch"))?;
        if db.and_then(|e| u64::try_from(e).ok()) != Some(ours) {
            let db = db.map_or_else(|| "missing".to_string(), |e| e.to_string());
            return Err(StoreError::Failed(format!(
                "fenced: lock row epoch is {db}, this store's fence epoch is {ours}"
            )));
        }
    }
    let mut max_seqs: HashMap<String, i64> = HashMap::new();
    for row in conn
        .fetch(&d.all_lists(t), &[], &[Col::Str, Col::I64])
        .await
        .map_err(sqlx_error("sql read lists"))?
    {
        let mut row = row.into_iter();
        if let (Some(list), Some(max)) = (row.next(), row.next()) {
            max_seqs.insert(list.into_string(), max.i64());
        }
    }
    let mut usage_bytes: u64 = 0;
    for info in fetch_lists_with(&mut conn, d, t).await? {
        usage_bytes += info.bytes;
        // Messages above the remembered max (a table written by another tool) still count.
        let live_max = i64::try_from(info.max_seq).unwrap_or(i64::MAX);
        let max = max_seqs.entry(info.list).or_insert(live_max);
        *max = (*max).max(live_max);
    }
    Ok((
        conn,
        max_seqs,
        Opened {
            usage_bytes,
            payload_bytes_max,
        },
    ))
}

const LIST_COLS: [Col; 5] = [Col::Str, Col::I64, Col::I64, Col::I64, Col::I64];

fn list_info(row: Vec<Val>) -> ListInfo {
    let mut it = row.into_iter();
    let list = it.next().map(Val::into_string).unwrap_or_default();
    let mut num = || it.next().map_or(0, |v| u64::try_from(v.i64()).unwrap_or(0));
    let (count, bytes, live_max, remembered_max) = (num(), num(), num(), num());
    ListInfo {
        list,
        count,
        bytes,
        max_seq: live_max.max(remembered_max),
    }
}

async fn fetch_lists_with(
    conn: &mut conn::Conn,
    d: Dialect,
    t: &Tables,
) -> Result<Vec<ListInfo>, StoreError> {
    let rows = conn
        .fetch(&d.recover_lists(t), &[], &LIST_COLS)
        .await
        .map_err(sqlx_error("sql recover lists"))?;
    Ok(rows.into_iter().map(list_info).collect())
}

fn open_readers(
    options: &Options,
    connections_max: u32,
    connect_timeout: Duration,
) -> Result<Readers, StoreError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ferromq-sql-reader")
        .enable_all()
        .build()
        .map_err(|e| StoreError::io("start sql reader runtime", e))?;
    let (tx, rx) = sync_channel(1);
    let options = options.clone();
    rt.spawn(async move {
        let _ = tx.send(options.pool(connections_max, connect_timeout).await);
    });
    let result = rx.recv();
    match result {
        Ok(Ok(pool)) => Ok(Readers { rt, pool }),
        Ok(Err(e)) => {
            rt.shutdown_background();
            Err(sqlx_error("sql open reader pool")(e))
        }
        Err(_) => {
            rt.shutdown_background();
            Err(StoreError::Failed(
                "sql reader runtime ended while opening".into(),
            ))
        }
    }
}

impl MessageStore for SqlStore {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn submit(&self, batch: Batch) -> Completion {
        self.enqueue(batch, false)
    }

    fn submit_lazy(&self, batch: Batch) -> Completion {
        self.enqueue(batch, true)
    }

    fn recover(&self) -> Result<Recovery, StoreError> {
        let (d, t) = (self.dialect, self.tables.clone());
        self.read(move |pool| async move {
            let rows = pool
                .fetch(&d.recover_lists(&t), &[], &LIST_COLS)
                .await
                .map_err(sqlx_error("sql recover lists"))?;
            let mut lists: Vec<ListInfo> = rows.into_iter().map(list_info).collect();
            lists.sort_by(|a, b| a.list.cmp(&b.list));
            let rows = pool
                .fetch(
                    &d.recover_subs(&t),
                    &[],
                    &[
                        Col::Str,
                        Col::Str,
                        Col::Str,
                        Col::Str,
                        Col::OptStr,
                        Col::I64,
                    ],
                )
                .await
                .map_err(sqlx_error("sql recover subscriptions"))?;
            let mut subscriptions: Vec<SubscriptionRecord> = rows
                .into_iter()
                .map(|row| {
                    let mut it = row.into_iter();
                    let mut s = || it.next().map(Val::into_string).unwrap_or_default();
                    let (list, client_id, name, topic) = (s(), s(), s(), s());
                    let selector = it.next().and_then(Val::into_opt_string);
                    let no_local = it.next().is_some_and(|v| v.i64() != 0);
                    SubscriptionRecord {
                        list,
                        client_id,
                        name,
                        topic,
                        selector,
                        no_local,
                    }
                })
                .collect();
            subscriptions.sort_by(|a, b| a.list.cmp(&b.list));
            Ok(Recovery {
                subscriptions,
                lists,
            })
        })
    }

    fn load(
        &self,
        list: &str,
        after_seq: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let after = match after_seq {
            None => -1,
            Some(s) => match i64::try_from(s) {
                Ok(s) => s,
                // Nothing is stored above i64::MAX.
                Err(_) => return Ok(Vec::new()),
            },
        };
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(max_count).unwrap_or(i64::MAX);
        let sql = self.dialect.load(&self.tables).text;
        let list = list.to_string();
        self.read(move |pool| async move {
            let rows = pool
                .fetch(
                    &sql,
                    &[Arg::Str(&list), Arg::I64(after), Arg::I64(limit)],
                    &[Col::I64, Col::Bytes],
                )
                .await
                .map_err(sqlx_error("sql load"))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let mut it = row.into_iter();
                let seq = it.next().map_or(-1, |v| v.i64());
                let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
                    location: format!("{list} seq {seq}"),
                    reason: "negative sequence number".into(),
                })?;
                let payload = Bytes::from(it.next().map(Val::into_bytes).unwrap_or_default());
                out.push(StoredMessage { seq, payload });
            }
            Ok(out)
        })
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
        // Reads go on working until the store is dropped, as in the memory and journal stores
        // (a broker may still page a queue while shutting down).
        self.stop_writer();
        match self.shared.failure_if_failed() {
            Some(e) => Err(e),
            None => {
                tracing::info!(table_prefix = %self.tables.prefix, "sql store closed");
                Ok(())
            }
        }
    }
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        self.stop_writer();
        self.stop_readers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_url_scheme_is_a_config_error_naming_the_accepted_ones() {
        let err = SqlStore::open(SqlConfig::new("oracle://db/x")).unwrap_err();
        match err {
            StoreError::Config(msg) => {
                assert!(msg.contains("sqlite://"), "{msg}");
                assert!(msg.contains("postgres://"), "{msg}");
                assert!(msg.contains("mysql://"), "{msg}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn table_prefix_outside_identifier_characters_is_refused() {
        let mut cfg = SqlConfig::new("sqlite://x.db");
        cfg.table_prefix = "a; DROP TABLE x; --".into();
        assert!(matches!(SqlStore::open(cfg), Err(StoreError::Config(_))));
    }

    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
