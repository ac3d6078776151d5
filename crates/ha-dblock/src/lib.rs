//! Shared-database master/slave (`ha.mode = "shared-db"`): ActiveMQ's JDBC lockers, without
//! their two-master and dying-on-restart bugs.
//!
//! Every broker of the group points at one PostgreSQL or MySQL/MariaDB database and competes
//! for the `<prefix>lock` table (schema shared with the `sql` store backend):
//!
//! ```text
//! id = 1: broker_name (holder, NULL when free), epoch (only grows), expiry_ms (lease end,
//!         database clock; 0 = free), time (last change, database clock)
//! id = 2: the row locker's mutex row (only ever locked, never changed)
//! ```
//!
//! - **Lease locker** (default, ActiveMQ's `lease-database-locker`): a slave takes row 1 when
//!   its lease has expired by the database's clock, bumping the epoch in the same committed
//!   `UPDATE`. The master renews every `renew_interval`. It stops serving — its fence fails and
//!   `lost` fires — once `lease - renew_interval` has passed since it *sent* its last successful
//!   renewal: the database stamped that lease no earlier than the send, so the master steps down
//!   at least one renew interval before anyone else can take over, however long a statement
//!   hangs, and even if its whole process was stopped (the fence reads the clock itself).
//! - **Row locker** (`database-locker`): the master holds `SELECT … WHERE id = 2 FOR UPDATE`
//!   in an open transaction on a dedicated connection and pings it every `renew_interval`; any
//!   failure means the database dropped the session and with it the lock, and the master steps
//!   down at once. After winning row 2 a new master bumps row 1's epoch; if the previous holder
//!   did not release cleanly, it waits one keep-alive period plus timeout before serving, by
//!   which time the previous master's fence has failed.
//!
//! The epoch bump is what makes the `sql` store safe: each of its write transactions
//! share-locks row 1 and checks the epoch, so the bump waits for the old master's in-flight
//! writes and every later one fails. For the journal store, the local deadline above is the
//! fence.
//!
//! Slaves and masters that lose the database never exit: a master steps down (and waits as a
//! slave), a slave keeps retrying with a bounded backoff, logging each change of state once.
//!
//! Operating notes:
//!
//! - **Clocks.** Lease times are the database's clock only (so ActiveMQ's
//!   `maxAllowableDiffFromDBTime` is not needed); a broker measures its own lease on
//!   `CLOCK_BOOTTIME`, which keeps counting while the machine is suspended (see [`LeaseClock`]). A
//!   forward *step* of the database's wall clock larger than `renew_interval` (the margin) can
//!   expire a live master's lease early — run the database with a slewing NTP client.
//! - **Load.** A lease slave polls with one non-locking primary-key `SELECT` every
//!   `lock_acquire_sleep_interval` (5/s by default) and only `UPDATE`s when the lease looks
//!   free; the master writes row 1 once per `renew_interval`. A row-lock slave sits in a lock
//!   wait, retried every second.
//! - **Row locker caveats.** It holds a transaction open for the whole mastership (DBAs may
//!   object), and after an unclean handover the new master waits `renew_interval +
//!   statement_timeout` before serving. The database ends a silent master's session after
//!   `2 × renew_interval + statement_timeout` idle (PostgreSQL
//!   `idle_in_transaction_session_timeout`, MySQL `wait_timeout`), so a stopped master cannot
//!   block its slaves forever.
//! - **Do not mix lockers in one group.** A row-lock master marks row 1 as never expiring, so
//!   a lease locker never takes over from it; after switching a group from `row` to `lease`
//!   with all brokers stopped, run `UPDATE <prefix>lock SET broker_name = NULL, expiry_ms = 0
//!   WHERE id = 1`.
//! - **Holder ids** must be unique per broker *and per run* ([`unique_holder_id`]). A lease is
//!   never re-taken just because it bears this holder's name: a restarted broker waits for its
//!   previous incarnation's lease to expire (at most `lease`), because that incarnation may
//!   still be alive (stopped, partitioned) and its local fence would still pass.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod db;
mod fence;
mod keeper;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use ferromq_ha::{Activation, BoxFuture, HaError, Mastership};
use tokio::sync::OnceCell;

pub use config::{unique_holder_id, DbLockConfig, Locker};
pub use fence::{DbFence, LeaseClock, SystemLeaseClock};

/// Why the shared-db locker failed.
#[derive(Debug, thiserror::Error)]
pub enum DbLockError {
    /// The configuration cannot work.
    #[error("shared-db HA configuration: {0}")]
    Config(String),
    /// A database statement failed.
    #[error("{op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database did not answer in time.
    #[error("{op}: no answer from the database within {timeout_ms} ms")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The limit.
        timeout_ms: u64,
    },
    /// A local resource (a thread, a runtime) could not be set up.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The lock table is missing rows (and `create_tables_on_startup` is off).
    #[error("lock table {table} {detail}")]
    Schema {
        /// The table.
        table: String,
        /// What is wrong.
        detail: String,
    },
}

impl From<DbLockError> for HaError {
    fn from(e: DbLockError) -> HaError {
        match e {
            DbLockError::Config(m) => HaError::Config(m),
            other => HaError::Io {
                op: "shared-db lock".into(),
                source: std::io::Error::other(other),
            },
        }
    }
}

/// The shared-database activation.
#[derive(Debug)]
pub struct DbLock {
    config: Arc<DbLockConfig>,
    db: OnceCell<db::Db>,
}

impl DbLock {
    /// Validates `config`; connects lazily, on the first [`Activation::acquire`].
    pub fn new(config: DbLockConfig) -> Result<DbLock, DbLockError> {
        config.validate()?;
        db::dialect_of(&config.url)?;
        Ok(DbLock {
            config: Arc::new(config),
            db: OnceCell::new(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DbLockConfig {
        &self.config
    }

    async fn db(&self) -> Result<&db::Db, DbLockError> {
        self.db
            .get_or_try_init(|| async {
                db::Db::new(
                    &self.config.url,
                    &self.config.table(),
                    self.config.statement_timeout,
                )
            })
            .await
    }

    async fn acquire_inner(&self) -> Result<Mastership, DbLockError> {
        let db = self.db().await?.clone();
        keeper::acquire(db, self.config.clone()).await
    }
}

impl Activation for DbLock {
    fn mode(&self) -> &'static str {
        "shared-db"
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Mastership, HaError>> {
        Box::pin(async { self.acquire_inner().await.map_err(HaError::from) })
    }
}

/// Converts a database epoch (≥ 1 once acquired) for [`Mastership::epoch`].
fn epoch_u64(e: i64) -> Result<u64, DbLockError> {
    u64::try_from(e)
        .ok()
        .filter(|&e| e > 0)
        .ok_or_else(|| DbLockError::Schema {
            table: "lock".into(),
            detail: format!("row 1 holds an impossible epoch {e}"),
        })
}

/// Lease length in milliseconds, for SQL (validated to fit).
fn lease_ms(c: &DbLockConfig) -> i64 {
    i64::try_from(c.lease.as_millis()).unwrap_or(i64::MAX)
}

/// Doubles `d` up to `max` (a slave's backoff while the database is unreachable).
fn backoff(d: Duration, max: Duration) -> Duration {
    (d * 2).min(max)
}
