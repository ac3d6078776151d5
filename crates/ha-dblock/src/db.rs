//! Database access for the locker: a small pool for short statements and, for the row locker,
//! dedicated connections. Every statement runs under a deadline: a hung database must never
//! hold a renewal past the lease, and a connection abandoned mid-statement is closed, never
//! reused (its protocol state is unknown).

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use crate::sql::{Dialect, Statements};
use crate::DbLockError;

/// A boxed `Send` future borrowing the locker's state.
pub(crate) type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn db_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> DbLockError {
    move |source| DbLockError::Db { op, source }
}

fn timeout_err(op: &'static str, t: Duration) -> DbLockError {
    DbLockError::Timeout {
        op,
        timeout_ms: u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Runs `$body` (an async block using `$c: &mut Connection`) on a pooled connection, acquiring
/// and running within one deadline. On timeout the connection is closed, not returned.
macro_rules! timed {
    ($pool:expr, $t:expr, $op:expr, |$c:ident| $body:expr) => {{
        let deadline = tokio::time::Instant::now() + $t;
        let mut conn = match tokio::time::timeout_at(deadline, $pool.acquire()).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => return Err(DbLockError::Db { op: $op, source }),
            Err(_) => return Err(timeout_err($op, $t)),
        };
        let r = {
            let $c = &mut *conn;
            tokio::time::timeout_at(deadline, $body).await
        };
        match r {
            Ok(r) => r,
            Err(_) => {
                conn.close_on_drop();
                Err(timeout_err($op, $t))
            }
        }
    }};
}

/// The same body against whichever pool this is.
macro_rules! with_conn {
    ($db:expr, $op:expr, |$c:ident| $body:expr) => {
        match &$db.pool {
            Pool::Pg(p) => timed!(p, $db.timeout, $op, |$c| $body),
            Pool::My(p) => timed!(p, $db.timeout, $op, |$c| $body),
        }
    };
}

macro_rules! on_lock_conn {
    ($lc:expr, |$c:ident| $body:expr) => {
        match $lc {
            LockConn::Pg($c) => $body,
            LockConn::My($c) => $body,
        }
    };
}

#[derive(Debug, Clone)]
enum Pool {
    Pg(PgPool),
    My(MySqlPool),
}

/// Row 1 as a slave sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseView {
    pub holder: Option<String>,
    pub expiry_ms: i64,
    pub epoch: i64,
    pub db_now_ms: i64,
}

impl LeaseView {
    pub(crate) fn is_free(&self) -> bool {
        self.holder.is_none() || self.expiry_ms < self.db_now_ms
    }
}

/// The lock table of one group, reached through a small pool. `Debug` hides the password
/// (the pool's own `Debug` would print its connect options).
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    pub(crate) dialect: Dialect,
    pub(crate) stmts: Statements,
    pub(crate) timeout: Duration,
    url: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dialect", &self.dialect)
            .field("url", &redact(&self.url))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Parses the URL's scheme. SQLite is refused: a shared-db group spans hosts, which SQLite
/// cannot serve (a database file on a network file system has no reliable locking), and it has
/// no `FOR UPDATE`/`FOR SHARE` for the store's fence; on one host, use `shared-file` mode.
pub(crate) fn dialect_of(url: &str) -> Result<Dialect, DbLockError> {
    let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" => Ok(Dialect::Postgres),
        "mysql" | "mariadb" => Ok(Dialect::MySql),
        "sqlite" => Err(DbLockError::Config(
            "shared-db HA does not support SQLite: a master/slave group spans hosts and SQLite \
             has no safe network locking nor row locks for the store's fence; use \
             ha.mode = \"shared-file\" on a single host, or PostgreSQL/MySQL"
                .into(),
        )),
        _ => Err(DbLockError::Config(format!(
            "shared-db URL must start with postgres:// or mysql://, got {:?}",
            redact(url)
        ))),
    }
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl Db {
    /// Builds the pool without connecting (the first statement connects), so a broker starts
    /// and waits as a slave even while the database is down.
    pub(crate) fn new(url: &str, table: &str, timeout: Duration) -> Result<Db, DbLockError> {
        let dialect = dialect_of(url)?;
        // The MySQL driver speaks to MariaDB as well; it only knows the `mysql` scheme.
        let url = &match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => {
                format!("mysql://{rest}")
            }
            _ => url.to_string(),
        };
        let bad_url =
            |e: sqlx::Error| DbLockError::Config(format!("shared-db URL {}: {e}", redact(url)));
        let pool = match dialect {
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(url)
                    .map_err(bad_url)?
                    .application_name("ferromq-ha-dblock")
                    // Renewals and polls run several times a second and the row lock's wait
                    // is slow by design: the locker logs its own state changes instead.
                    .disable_statement_logging()
                    // A server-side backstop to the client-side deadline.
                    .options([("statement_timeout", ms(timeout))]);
                Pool::Pg(
                    PgPoolOptions::new()
                        .max_connections(2)
                        .min_connections(0)
                        .acquire_timeout(timeout)
                        .test_before_acquire(true)
                        .connect_lazy_with(opts),
                )
            }
            Dialect::MySql => {
                let opts = MySqlConnectOptions::from_str(url)
                    .map_err(bad_url)?
                    .disable_statement_logging();
                Pool::My(
                    MySqlPoolOptions::new()
                        .max_connections(2)
                        .min_connections(0)
                        .acquire_timeout(timeout)
                        .test_before_acquire(true)
                        .connect_lazy_with(opts),
                )
            }
        };
        Ok(Db {
            pool,
            dialect,
            stmts: Statements::new(dialect, table),
            timeout,
            url: url.to_string(),
        })
    }

    /// Creates the table and both rows if absent. Safe against concurrent creators: MySQL's
    /// `CREATE TABLE IF NOT EXISTS` is atomic, PostgreSQL's can fail with a duplicate-key error
    /// on its catalog when two sessions race; the caller retries, and the second try sees the
    /// table.
    pub(crate) fn create_schema<'a>(&'a self) -> BoxFut<'a, Result<(), DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            with_conn!(self, "create the lock table", |c| async {
                (&mut *c)
                    .execute(s.create_table.as_str())
                    .await
                    .map_err(db_err("create the lock table"))?;
                (&mut *c)
                    .execute(s.insert_rows.as_str())
                    .await
                    .map_err(db_err("insert the lock rows"))?;
                Ok(())
            })
        })
    }

    /// Checks that both rows exist.
    pub(crate) fn check_schema<'a>(
        &'a self,
        table: &'a str,
    ) -> BoxFut<'a, Result<(), DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            let n: i64 = with_conn!(self, "check the lock table", |c| async {
                sqlx::query_scalar::<_, i64>(&s.count_rows)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(db_err("check the lock table"))
            })?;
            if n == 2 {
                Ok(())
            } else {
                Err(DbLockError::Schema {
                    table: table.to_string(),
                    detail: format!("has {n} of its rows id = 1 and id = 2"),
                })
            }
        })
    }

    /// Reads row 1 without locking it (a consistent read): a polling slave never queues behind
    /// the master's share-locked store transactions, nor makes them queue behind it.
    pub(crate) fn peek<'a>(&'a self) -> BoxFut<'a, Result<LeaseView, DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            with_conn!(self, "read the lease", |c| async {
                let row = sqlx::query(&s.peek)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(db_err("read the lease"))?;
                Ok(LeaseView {
                    holder: row.try_get(0).map_err(db_err("read the lease"))?,
                    expiry_ms: row.try_get(1).map_err(db_err("read the lease"))?,
                    epoch: row.try_get(2).map_err(db_err("read the lease"))?,
                    db_now_ms: row.try_get(3).map_err(db_err("read the lease"))?,
                })
            })
        })
    }

    /// Takes the lease if it is free or expired (by the database's clock), bumping the epoch,
    /// and returns the new epoch; `None` if someone else holds it. The `UPDATE` waits for the
    /// old master's in-flight store transactions (they share-lock row 1), so none of them can
    /// commit after this one.
    pub(crate) fn lease_acquire<'a>(
        &'a self,
        holder: &'a str,
        lease_ms: i64,
    ) -> BoxFut<'a, Result<Option<i64>, DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            with_conn!(self, "acquire the lease", |c| async {
                let e = db_err("acquire the lease");
                let mut tx = c.begin().await.map_err(e)?;
                let n = sqlx::query(&s.lease_acquire)
                    .bind(holder)
                    .bind(lease_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("acquire the lease"))?
                    .rows_affected();
                if n != 1 {
                    tx.rollback().await.map_err(db_err("acquire the lease"))?;
                    return Ok(None);
                }
                let epoch: i64 = sqlx::query_scalar(&s.read_epoch)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err("read the new epoch"))?;
                tx.commit().await.map_err(db_err("commit the new epoch"))?;
                Ok(Some(epoch))
            })
        })
    }

    /// Extends the lease if it is still this holder's at this epoch; returns rows matched
    /// (0: someone else took over, or the row was reset).
    pub(crate) fn lease_renew<'a>(
        &'a self,
        holder: &'a str,
        epoch: i64,
        lease_ms: i64,
    ) -> BoxFut<'a, Result<u64, DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            with_conn!(self, "renew the lease", |c| async {
                Ok(sqlx::query(&s.lease_renew)
                    .bind(lease_ms)
                    .bind(holder)
                    .bind(epoch)
                    .execute(&mut *c)
                    .await
                    .map_err(db_err("renew the lease"))?
                    .rows_affected())
            })
        })
    }

    /// Marks row 1 free if it is still this holder's epoch; returns rows matched.
    pub(crate) fn release<'a>(
        &'a self,
        holder: &'a str,
        epoch: i64,
    ) -> BoxFut<'a, Result<u64, DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            with_conn!(self, "release the lock", |c| async {
                Ok(sqlx::query(&s.release)
                    .bind(holder)
                    .bind(epoch)
                    .execute(&mut *c)
                    .await
                    .map_err(db_err("release the lock"))?
                    .rows_affected())
            })
        })
    }

    /// Row locker: after winning row 2, takes row 1 (bumping the epoch). Returns the new epoch
    /// and the previous holder (`None` when the previous master released cleanly).
    pub(crate) fn row_take_epoch<'a>(
        &'a self,
        holder: &'a str,
    ) -> BoxFut<'a, Result<(i64, Option<String>), DbLockError>> {
        Box::pin(async move {
            let s = &self.stmts;
            with_conn!(self, "take the epoch", |c| async {
                let mut tx = c.begin().await.map_err(db_err("take the epoch"))?;
                let previous: Option<String> = sqlx::query_scalar(&s.row1_for_update)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err("take the epoch"))?;
                sqlx::query(&s.row_take_epoch)
                    .bind(holder)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("take the epoch"))?;
                let epoch: i64 = sqlx::query_scalar(&s.read_epoch)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err("read the new epoch"))?;
                tx.commit().await.map_err(db_err("commit the new epoch"))?;
                Ok((epoch, previous))
            })
        })
    }

    /// Frees row 1 (if it still holds this holder's epoch) from a thread of its own, on a
    /// fresh connection, and waits for the answer — at most the statement timeout. Used when a
    /// `Mastership` is dropped: that is typically just before the process exits and its runtime
    /// with it, so a task spawned on that runtime might never run, and the next master would
    /// wait a whole lease instead of one poll.
    pub(crate) fn release_blocking(&self, holder: &str, epoch: i64) -> Result<u64, DbLockError> {
        let op = "release the lock";
        let (dialect, url, sql, t) = (
            self.dialect,
            self.url.clone(),
            self.stmts.release.clone(),
            self.timeout,
        );
        let holder = holder.to_string();
        let thread = std::thread::Builder::new()
            .name("ferromq-dblock-release".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| DbLockError::Io { op, source })?;
                rt.block_on(async move {
                    let work = async {
                        let mut c = connect_plain(dialect, &url, op).await?;
                        let n = on_lock_conn!(&mut c, |c| {
                            sqlx::query(&sql)
                                .bind(&holder)
                                .bind(epoch)
                                .execute(&mut *c)
                                .await
                                .map_err(db_err(op))?
                                .rows_affected()
                        });
                        c.close(t).await;
                        Ok(n)
                    };
                    tokio::time::timeout(t, work)
                        .await
                        .map_err(|_| timeout_err(op, t))?
                })
            })
            .map_err(|source| DbLockError::Io { op, source })?;
        thread.join().unwrap_or_else(|_| {
            Err(DbLockError::Io {
                op,
                source: std::io::Error::other("the release thread panicked"),
            })
        })
    }

    /// Opens a dedicated connection for the row lock. The database itself ends the session
    /// (releasing the row lock) once it has been idle in its transaction for `idle_kill`:
    /// a stopped or partitioned master cannot keep its slaves waiting forever.
    pub(crate) fn lock_connection<'a>(
        &'a self,
        lock_wait: Duration,
        idle_kill: Duration,
    ) -> BoxFut<'a, Result<LockConn, DbLockError>> {
        Box::pin(async move {
            let op = "open the lock connection";
            let t = self.timeout;
            let fut = async {
                match self.dialect {
                    Dialect::Postgres => {
                        let opts = PgConnectOptions::from_str(&self.url)
                            .map_err(db_err(op))?
                            .application_name("ferromq-ha-dblock-row")
                            .disable_statement_logging()
                            .options([
                                ("lock_timeout", ms(lock_wait)),
                                ("statement_timeout", ms(lock_wait + t)),
                                ("idle_in_transaction_session_timeout", ms(idle_kill)),
                            ]);
                        Ok(LockConn::Pg(opts.connect().await.map_err(db_err(op))?))
                    }
                    Dialect::MySql => {
                        let opts = MySqlConnectOptions::from_str(&self.url)
                            .map_err(db_err(op))?
                            .disable_statement_logging();
                        let mut c = opts.connect().await.map_err(db_err(op))?;
                        let secs = |d: Duration| d.as_secs_f64().ceil().max(1.0) as u64;
                        (&mut c)
                            .execute(&*format!(
                                "SET SESSION innodb_lock_wait_timeout = {}, wait_timeout = {}",
                                secs(lock_wait),
                                secs(idle_kill)
                            ))
                            .await
                            .map_err(db_err(op))?;
                        Ok(LockConn::My(c))
                    }
                }
            };
            tokio::time::timeout(t, fut)
                .await
                .map_err(|_| timeout_err(op, t))?
        })
    }
}

/// A dedicated connection holding (or waiting for) the row lock. Any error or timeout on it
/// means the lock is gone: the caller drops it (closing the session), never reuses it.
#[derive(Debug)]
pub(crate) enum LockConn {
    Pg(PgConnection),
    My(MySqlConnection),
}

/// A dedicated connection with the driver's defaults (no lock settings).
async fn connect_plain(
    dialect: Dialect,
    url: &str,
    op: &'static str,
) -> Result<LockConn, DbLockError> {
    Ok(match dialect {
        Dialect::Postgres => LockConn::Pg(
            PgConnectOptions::from_str(url)
                .map_err(db_err(op))?
                .application_name("ferromq-ha-dblock")
                .disable_statement_logging()
                .connect()
                .await
                .map_err(db_err(op))?,
        ),
        Dialect::MySql => LockConn::My(
            MySqlConnectOptions::from_str(url)
                .map_err(db_err(op))?
                .disable_statement_logging()
                .connect()
                .await
                .map_err(db_err(op))?,
        ),
    })
}

/// What waiting for the row lock came to.
#[derive(Debug)]
pub(crate) enum RowWait {
    Locked,
    /// The lock wait timed out (someone else holds it); the transaction was rolled back.
    Busy,
}

impl LockConn {
    /// `BEGIN; SELECT … WHERE id = 2 FOR UPDATE`, waiting at most the session's lock wait.
    pub(crate) fn lock_row<'a>(
        &'a mut self,
        stmts: &'a Statements,
        limit: Duration,
    ) -> BoxFut<'a, Result<RowWait, DbLockError>> {
        Box::pin(async move {
            let op = "lock the lock row";
            let fut = async {
                on_lock_conn!(self, |c| {
                    (&mut *c).execute("BEGIN").await.map_err(db_err(op))?;
                    match sqlx::query(&stmts.row_lock).fetch_one(&mut *c).await {
                        Ok(_) => Ok(RowWait::Locked),
                        Err(e) if is_lock_wait_timeout(&e) => {
                            (&mut *c).execute("ROLLBACK").await.map_err(db_err(op))?;
                            Ok(RowWait::Busy)
                        }
                        Err(e) => Err(DbLockError::Db { op, source: e }),
                    }
                })
            };
            tokio::time::timeout(limit, fut)
                .await
                .map_err(|_| timeout_err(op, limit))?
        })
    }

    /// A trivial statement on the held connection: proves the session (and so the lock) lives.
    pub(crate) fn keepalive<'a>(
        &'a mut self,
        stmts: &'a Statements,
        t: Duration,
    ) -> BoxFut<'a, Result<(), DbLockError>> {
        Box::pin(async move {
            let op = "keep the lock connection alive";
            let fut = async {
                on_lock_conn!(self, |c| {
                    (&mut *c)
                        .execute(stmts.keepalive.as_str())
                        .await
                        .map_err(db_err(op))?;
                    Ok(())
                })
            };
            tokio::time::timeout(t, fut)
                .await
                .map_err(|_| timeout_err(op, t))?
        })
    }

    /// Rolls back (releasing the row lock) and closes the session, within `t`.
    pub(crate) async fn close(self, t: Duration) {
        let fut = async {
            on_lock_conn!(self, |c| {
                let mut c = c;
                let _ = (&mut c).execute("ROLLBACK").await;
                let _ = c.close().await;
            })
        };
        // On timeout the connection is dropped, which closes its socket: the server then
        // rolls the transaction back by itself.
        let _ = tokio::time::timeout(t, fut).await;
    }
}

/// PostgreSQL `lock_not_available` (55P03) or MySQL `ER_LOCK_WAIT_TIMEOUT` (1205).
fn is_lock_wait_timeout(e: &sqlx::Error) -> bool {
    let Some(d) = e.as_database_error() else {
        return false;
    };
    if d.code().as_deref() == Some("55P03") {
        return true;
    }
    d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|m| m.number() == 1205)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_is_refused_with_a_reason_and_urls_are_redacted() {
        match dialect_of("sqlite:///tmp/x.db") {
            Err(DbLockError::Config(m)) => assert!(m.contains("shared-file"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(dialect_of("postgresql://h/db").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("mariadb://h/db").unwrap(), Dialect::MySql);
        assert_eq!(redact("mysql://u:secret@h:1/db"), "mysql://u@h:1/db");
        assert!(matches!(
            dialect_of("redis://u:secret@h"),
            Err(DbLockError::Config(m)) if !m.contains("secret")
        ));
    }
}
