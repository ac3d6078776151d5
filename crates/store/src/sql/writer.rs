//! The group-commit writer thread of the SQL store.
//!
//! Producers put `(batch, completer)` into a bounded channel (the store's backpressure). The
//! writer takes everything queued, up to `group_batches_max` batches and `group_bytes_max`
//! payload bytes, applies all of them in one database transaction, commits, and only then
//! completes every waiter. Each batch stays atomic because the whole group commits or fails
//! together. One commit (one WAL flush on the server) thus confirms as many batches as arrived
//! while the previous commit was running.
//!
//! The thread owns a dedicated connection and a tokio current-thread runtime. It blocks on the
//! std channel between groups and drives the runtime only while applying one, so it works
//! whatever runtime (if any) the broker's threads run.
//!
//! A failed transaction or commit fails the store for good: after an error we cannot know
//! what the database kept, so HA takes over or an operator restarts the broker. The same holds
//! when the lease row's epoch is no longer ours (the fence).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::group::{self, GroupLimits, GroupWriter, Submitted};
use crate::sql::conn::{Arg, Col, Conn};
use crate::sql::dialect::{placeholders_max, Dialect, Tables};
use crate::sql::Shared;
use crate::{Fence, Op, StoreError};

/// Rows one multi-row statement carries at most. Far below every database's placeholder limit
/// (see [`placeholders_max`]); past a few hundred rows a bigger statement saves nothing.
const ROWS_PER_STATEMENT_MAX: usize = 500;

/// What the writer needs besides its connection.
#[derive(Debug)]
pub(crate) struct WriterConfig {
    pub dialect: Dialect,
    pub tables: Tables,
    pub fence_epoch: Option<i64>,
    pub fence: Option<Arc<dyn Fence>>,
    pub group_batches_max: usize,
    pub group_bytes_max: usize,
    /// Payload bytes one statement carries at most (under MySQL's `max_allowed_packet`).
    pub statement_bytes_max: usize,
    pub group_timeout: Duration,
    /// `SqlConfig::lazy_acks`.
    pub lazy_acks: bool,
}

/// Why a group did not commit.
#[derive(Debug)]
enum GroupError {
    Db(sqlx::Error),
    Fenced {
        db: Option<i64>,
        ours: i64,
    },
    /// The HA fence said no after the commit.
    Fence(String),
    Timeout,
}

impl GroupError {
    fn into_store_error(self) -> StoreError {
        match self {
            GroupError::Db(e) => StoreError::Failed(format!("database write failed: {e}")),
            GroupError::Fenced { db, ours } => {
                let db = db.map_or_else(|| "missing".to_string(), |e| e.to_string());
                StoreError::Failed(format!(
                    "fenced: lock row epoch is {db}, this store's fence epoch is {ours}"
                ))
            }
            GroupError::Fence(reason) => StoreError::Failed(format!("fenced: {reason}")),
            GroupError::Timeout => StoreError::Failed(
                "database write did not finish in time; its outcome is unknown".to_string(),
            ),
        }
    }
}

impl From<sqlx::Error> for GroupError {
    fn from(e: sqlx::Error) -> GroupError {
        GroupError::Db(e)
    }
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rt: Runtime,
    /// `None` once a failure made the connection's state unknown.
    pub conn: Option<Conn>,
    pub cfg: WriterConfig,
    /// The highest seq enqueued to each list since its last purge: mirrors `{prefix}lists`.
    /// An enqueue above it cannot replace a row, so it needs no lookup first.
    pub max_seqs: HashMap<String, i64>,
}

impl Writer {
    /// Runs until every sender is gone, then closes the connection.
    pub(crate) fn run(mut self, rx: Receiver<Submitted>) {
        let limits = GroupLimits {
            bytes_max: self.cfg.group_bytes_max,
            items_max: self.cfg.group_batches_max,
        };
        group::run(&mut self, &rx, limits);
    }

    fn commit_group(&mut self, group: Vec<Submitted>) {
        if let Some(err) = self.shared.failure_if_failed() {
            for job in group {
                job.completer.complete(Err(err.clone()));
            }
            return;
        }
        if let Some(fence) = &self.cfg.fence {
            if let Err(reason) = fence.check() {
                let err = StoreError::Failed(format!("fenced: {reason}"));
                self.fail(group, err);
                return;
            }
        }
        let Some(mut conn) = self.conn.take() else {
            let err = StoreError::Failed("sql writer has no connection".into());
            self.fail(group, err);
            return;
        };
        let timeout = self.cfg.group_timeout;
        let mut max_seqs = std::mem::take(&mut self.max_seqs);
        let started = Instant::now();
        let result = self.rt.block_on(async {
            match tokio::time::timeout(
                timeout,
                apply_group(&mut conn, &self.cfg, &mut max_seqs, &group),
            )
            .await
            {
                Ok(Ok(delta)) => Ok(delta),
                Ok(Err(e)) => {
                    // Best effort: the store fails anyway, but do not leave the server holding
                    // locks until it notices the connection is gone.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), conn.raw("ROLLBACK")).await;
                    Err(e)
                }
                Err(_) => Err(GroupError::Timeout),
            }
        });
        self.max_seqs = max_seqs;
        // Like the journal after its sync: a writer deposed while committing confirms nothing
        // (the rows may be in the database; the new master delivers them, at least once).
        let result = result.and_then(|delta| match &self.cfg.fence {
            Some(fence) => fence.check().map(|()| delta).map_err(GroupError::Fence),
            None => Ok(delta),
        });
        match result {
            Ok(usage_delta) => {
                self.conn = Some(conn);
                let shared = &self.shared;
                if usage_delta >= 0 {
                    shared
                        .usage_bytes
                        .fetch_add(usage_delta.unsigned_abs(), Ordering::AcqRel);
                } else {
                    shared
                        .usage_bytes
                        .fetch_sub(usage_delta.unsigned_abs(), Ordering::AcqRel);
                }
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared
                    .batches
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                // The transaction's commit is this store's sync: timed from its start, as the
                // group's statements are part of what a waiting producer waits for.
                let now = Instant::now();
                shared
                    .commit
                    .sync_ns
                    .record_duration(now.saturating_duration_since(started));
                shared.commit.group_batches.record(group.len() as u64);
                shared.commit.group_messages.record(
                    group
                        .iter()
                        .map(|job| crate::stats::enqueued_messages(&job.ops))
                        .sum(),
                );
                for job in group {
                    // A lazy ack may be committed without a flush: not a wait for durability.
                    if !job.lazy {
                        shared.commit.record_wait(job.submitted_at, now);
                    }
                    job.completer.complete(Ok(()));
                }
            }
            Err(e) => {
                // The connection may be mid-transaction or broken: never use it again.
                drop(conn);
                self.fail(group, e.into_store_error());
            }
        }
    }

    fn fail(&mut self, group: Vec<Submitted>, err: StoreError) {
        self.shared.set_failed(&err);
        for job in group {
            job.completer.complete(Err(err.clone()));
        }
    }
}

/// Applies a group in one transaction and commits it; returns the change of stored payload
/// bytes.
async fn apply_group(
    conn: &mut Conn,
    cfg: &WriterConfig,
    max_seqs: &mut HashMap<String, i64>,
    group: &[Submitted],
) -> Result<i64, GroupError> {
    let d = cfg.dialect;
    conn.raw(d.begin()).await?;
    if cfg.lazy_acks && d == Dialect::Postgres && group.iter().all(|j| j.lazy) {
        // Only acks whose loss means a redelivery: the commit need not wait for the WAL
        // flush. PostgreSQL's WAL is one sequence, so the next synchronous commit (or the WAL
        // writer, within `wal_writer_delay`) makes this one durable too.
        conn.raw("SET LOCAL synchronous_commit TO OFF").await?;
    }
    if let Some(ours) = cfg.fence_epoch {
        let db = conn.fetch_i64(&d.fence_select(&cfg.tables), &[]).await?;
        if db != Some(ours) {
            return Err(GroupError::Fenced { db, ours });
        }
    }
    let mut g = GroupApply {
        conn,
        cfg,
        max_seqs,
        dirty: HashSet::new(),
        usage_delta: 0,
        inserts: Vec::new(),
        inserts_bytes: 0,
        deletes: Vec::new(),
    };
    for job in group {
        for op in &job.ops {
            g.op(op).await?;
        }
    }
    g.flush_inserts().await?;
    g.flush_deletes().await?;
    g.write_lists().await?;
    let usage_delta = g.usage_delta;
    conn.raw("COMMIT").await?;
    Ok(usage_delta)
}

/// The state of one group being applied. Consecutive enqueues become multi-row INSERTs and
/// consecutive dequeues multi-row DELETEs; anything else flushes them first, so the database
/// sees the ops in submission order.
struct GroupApply<'a> {
    conn: &'a mut Conn,
    cfg: &'a WriterConfig,
    max_seqs: &'a mut HashMap<String, i64>,
    /// Lists whose max seq changed (or that were purged) in this group.
    dirty: HashSet<&'a str>,
    usage_delta: i64,
    inserts: Vec<(&'a str, i64, &'a [u8])>,
    /// Payload bytes in `inserts`.
    inserts_bytes: usize,
    deletes: Vec<(&'a str, i64)>,
}

impl<'a> GroupApply<'a> {
    async fn op(&mut self, op: &'a Op) -> Result<(), GroupError> {
        let d = self.cfg.dialect;
        let t = &self.cfg.tables;
        match op {
            Op::Enqueue { list, seq, payload } => {
                self.flush_deletes().await?;
                // `submit` refused seqs above i64::MAX.
                let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
                let known_max = self.max_seqs.get(list.as_str()).copied();
                if known_max.is_some_and(|m| seq <= m) {
                    // May replace a stored message: learn its size to keep usage exact.
                    self.flush_inserts().await?;
                    let len = d.msg_len(t);
                    let old = self
                        .conn
                        .fetch_i64(&len.text, &[Arg::Str(list), Arg::I64(seq)])
                        .await?;
                    let upsert = d.upsert_msg(t);
                    self.conn
                        .execute(
                            &upsert.text,
                            &[Arg::Str(list), Arg::I64(seq), Arg::Bytes(payload)],
                        )
                        .await?;
                    self.usage_delta -= old.unwrap_or(0);
                } else {
                    match self.max_seqs.get_mut(list.as_str()) {
                        Some(max) => *max = seq,
                        None => {
                            self.max_seqs.insert(list.clone(), seq);
                        }
                    }
                    self.dirty.insert(list);
                    if self.inserts_bytes + payload.len() > self.cfg.statement_bytes_max {
                        self.flush_inserts().await?;
                    }
                    self.inserts.push((list, seq, payload));
                    self.inserts_bytes += payload.len();
                }
                self.usage_delta += payload.len() as i64;
            }
            Op::Dequeue { list, seq } => {
                self.flush_inserts().await?;
                let Ok(seq) = i64::try_from(*seq) else {
                    // Never stored (`submit` refuses such enqueues): removing it is a no-op.
                    return Ok(());
                };
                self.deletes.push((list, seq));
            }
            Op::PutSubscription(rec) => {
                self.flush_all().await?;
                let sql = d.upsert_sub(t);
                self.conn
                    .execute(
                        &sql.text,
                        &[
                            Arg::Str(&rec.list),
                            Arg::Str(&rec.client_id),
                            Arg::Str(&rec.name),
                            Arg::Str(&rec.topic),
                            Arg::OptStr(rec.selector.as_deref()),
                            Arg::I64(i64::from(rec.no_local)),
                        ],
                    )
                    .await?;
            }
            Op::DeleteSubscription { list } => {
                self.flush_all().await?;
                let sql = d.delete_container(&t.acks);
                self.conn.execute(&sql.text, &[Arg::Str(list)]).await?;
                self.purge(list).await?;
            }
            Op::Purge { list } => {
                self.flush_all().await?;
                self.purge(list).await?;
            }
        }
        Ok(())
    }

    async fn purge(&mut self, list: &'a str) -> Result<(), GroupError> {
        let d = self.cfg.dialect;
        let t = &self.cfg.tables;
        let sum = d.sum_list(t);
        let bytes = self.conn.fetch_i64(&sum.text, &[Arg::Str(list)]).await?;
        let del = d.delete_container(&t.msgs);
        self.conn.execute(&del.text, &[Arg::Str(list)]).await?;
        self.usage_delta -= bytes.unwrap_or(0);
        // A purged list is forgotten, max seq included, as in the memory store.
        self.max_seqs.remove(list);
        self.dirty.insert(list);
        Ok(())
    }

    fn rows_per_statement(&self, params_per_row: usize) -> usize {
        ROWS_PER_STATEMENT_MAX.min(placeholders_max(self.cfg.dialect) / params_per_row)
    }

    async fn flush_all(&mut self) -> Result<(), GroupError> {
        self.flush_inserts().await?;
        self.flush_deletes().await
    }

    async fn flush_inserts(&mut self) -> Result<(), GroupError> {
        let rows = std::mem::take(&mut self.inserts);
        self.inserts_bytes = 0;
        for chunk in rows.chunks(self.rows_per_statement(3)) {
            let sql = self.cfg.dialect.insert_msgs(&self.cfg.tables, chunk.len());
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for (list, seq, payload) in chunk {
                args.extend([Arg::Str(list), Arg::I64(*seq), Arg::Bytes(payload)]);
            }
            self.conn.execute(&sql.text, &args).await?;
        }
        Ok(())
    }

    async fn flush_deletes(&mut self) -> Result<(), GroupError> {
        let rows = std::mem::take(&mut self.deletes);
        let d = self.cfg.dialect;
        for chunk in rows.chunks(self.rows_per_statement(2)) {
            let mut args = Vec::with_capacity(chunk.len() * 2);
            for (list, seq) in chunk {
                args.extend([Arg::Str(list), Arg::I64(*seq)]);
            }
            let sum = d.sum_keyed(&self.cfg.tables, chunk.len());
            let bytes = self.conn.fetch_i64(&sum.text, &args).await?;
            let del = d.delete_keyed(&self.cfg.tables, chunk.len());
            self.conn.execute(&del.text, &args).await?;
            self.usage_delta -= bytes.unwrap_or(0);
        }
        Ok(())
    }

    /// Brings `{prefix}lists` in line with the group's end state.
    async fn write_lists(&mut self) -> Result<(), GroupError> {
        let d = self.cfg.dialect;
        let mut present: Vec<(&str, i64)> = Vec::new();
        let mut dirty: Vec<&str> = self.dirty.iter().copied().collect();
        // A stable order keeps lock order stable too (fewer deadlocks with other writers).
        dirty.sort_unstable();
        for list in dirty {
            match self.max_seqs.get(list) {
                Some(max) => present.push((list, *max)),
                None => {
                    let del = d.delete_container(&self.cfg.tables.lists);
                    self.conn.execute(&del.text, &[Arg::Str(list)]).await?;
                }
            }
        }
        for chunk in present.chunks(self.rows_per_statement(2)) {
            let sql = d.upsert_lists(&self.cfg.tables, chunk.len());
            let mut args = Vec::with_capacity(chunk.len() * 2);
            for (list, max) in chunk {
                args.extend([Arg::Str(list), Arg::I64(*max)]);
            }
            self.conn.execute(&sql.text, &args).await?;
        }
        Ok(())
    }
}

/// Creates the tables and the two lock rows, tolerating other brokers doing the same at once.
pub(crate) async fn create_tables(
    conn: &mut Conn,
    d: Dialect,
    t: &Tables,
) -> Result<(), sqlx::Error> {
    // Concurrent CREATE TABLE IF NOT EXISTS can still collide (PostgreSQL's catalog unique
    // index, MySQL metadata locks): serialize creators where the database offers a lock, and
    // retry a bounded number of times in any case.
    const ATTEMPTS: usize = 3;
    // Look before creating: with the shared-database row locker, the master's own lock
    // connection holds row 2 FOR UPDATE while this store opens, and on MySQL even an
    // `INSERT IGNORE` of an existing row waits for that lock (and stalls a running master's
    // renewals on row 1). Plain reads take no row locks.
    if tables_ready(conn, d, t).await {
        return Ok(());
    }
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match create_tables_once(conn, d, t).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, "creating sql store tables failed: {e}");
                let _ = conn.raw("ROLLBACK").await;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(sqlx::Error::PoolClosed))
}

/// True when every table exists and both lock rows are there (non-locking reads only).
async fn tables_ready(conn: &mut Conn, d: Dialect, t: &Tables) -> bool {
    let cast = if d == Dialect::MySql {
        "SIGNED"
    } else {
        "BIGINT"
    };
    for table in [&t.msgs, &t.acks, &t.lists] {
        if conn
            .fetch_i64(
                &format!("SELECT CAST(COUNT(*) AS {cast}) FROM {table} WHERE 1 = 0"),
                &[],
            )
            .await
            .is_err()
        {
            return false;
        }
    }
    matches!(
        conn.fetch_i64(
            &format!(
                "SELECT CAST(COUNT(*) AS {cast}) FROM {} WHERE id IN (1, 2)",
                t.lock
            ),
            &[],
        )
        .await,
        Ok(Some(2))
    )
}

/// Key of the PostgreSQL advisory lock held while creating tables ("ferromq" in ASCII).
const PG_SCHEMA_LOCK_KEY: i64 = 0x0066_6572_726f_6d71;

async fn create_tables_once(conn: &mut Conn, d: Dialect, t: &Tables) -> Result<(), sqlx::Error> {
    match d {
        Dialect::Postgres => {
            conn.raw("BEGIN").await?;
            conn.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[Arg::I64(PG_SCHEMA_LOCK_KEY)],
            )
            .await?;
        }
        Dialect::Sqlite => conn.raw("BEGIN IMMEDIATE").await?,
        // MySQL DDL commits implicitly; a named lock serializes creators instead.
        Dialect::MySql => {
            conn.fetch(
                "SELECT CAST(COALESCE(GET_LOCK('ferromq_schema', 30), -1) AS SIGNED)",
                &[],
                &[Col::I64],
            )
            .await?;
        }
    }
    let result = async {
        for stmt in d.create_tables(t) {
            conn.raw(&stmt).await?;
        }
        for id in [1, 2] {
            // Only a missing row is inserted (see `tables_ready`: an existing one may be
            // locked by this broker's own shared-db row locker).
            let present = conn
                .fetch_i64(
                    &format!(
                        "SELECT CAST(COUNT(*) AS {}) FROM {} WHERE id = {id}",
                        if d == Dialect::MySql {
                            "SIGNED"
                        } else {
                            "BIGINT"
                        },
                        t.lock
                    ),
                    &[],
                )
                .await?;
            if present != Some(1) {
                conn.raw(&d.insert_lock_row(t, id)).await?;
            }
        }
        Ok::<(), sqlx::Error>(())
    }
    .await;
    match d {
        Dialect::Postgres | Dialect::Sqlite => {
            result?;
            conn.raw("COMMIT").await?;
        }
        Dialect::MySql => {
            let released = conn
                .fetch(
                    "SELECT CAST(COALESCE(RELEASE_LOCK('ferromq_schema'), -1) AS SIGNED)",
                    &[],
                    &[Col::I64],
                )
                .await;
            result?;
            released?;
        }
    }
    Ok(())
}

impl GroupWriter for Writer {
    type Item = Submitted;

    fn commit(&mut self, group: &mut Vec<Submitted>) {
        self.commit_group(std::mem::take(group));
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
            });
        }
        tracing::debug!("sql store writer stopped");
    }
}
