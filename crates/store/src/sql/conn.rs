//! One connection or pool of whichever database the URL names, behind a small untyped API.
//!
//! sqlx types every connection by its database. The store picks the database at run time, so
//! these enums hold one of three, and `execute`/`fetch` bind [`Arg`]s and decode [`Val`]s for
//! each. The macros expand the same code once per database, where sqlx's types are concrete.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

use crate::sql::dialect::Dialect;
use crate::StoreError;

/// Parsed connection options.
#[derive(Debug, Clone)]
pub(crate) enum Options {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

/// How long an embedded SQLite writer waits for another process's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Options {
    /// Parses `url`; the scheme picks the database.
    pub(crate) fn parse(url: &str) -> Result<Options, StoreError> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        let bad = |e: sqlx::Error| StoreError::Config(format!("bad database url: {e}"));
        match scheme {
            "sqlite" => {
                let o = SqliteConnectOptions::from_str(url).map_err(bad)?;
                // WAL lets readers run beside the writer; FULL syncs the WAL at every commit,
                // so a committed group is on disk before its waiters hear about it.
                Ok(Options::Sqlite(
                    o.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Full)
                        .busy_timeout(SQLITE_BUSY_TIMEOUT),
                ))
            }
            "postgres" | "postgresql" => Ok(Options::Postgres(
                PgConnectOptions::from_str(url).map_err(bad)?,
            )),
            "mysql" | "mariadb" => {
                // sqlx only knows the `mysql` scheme; MariaDB speaks the same protocol.
                let url = match url.strip_prefix("mariadb:") {
                    Some(rest) => format!("mysql:{rest}"),
                    None => url.to_string(),
                };
                Ok(Options::MySql(
                    MySqlConnectOptions::from_str(&url).map_err(bad)?,
                ))
            }
            other => Err(StoreError::Config(format!(
                "unknown database url scheme {other:?}: expected sqlite://PATH, \
                 postgres://… (or postgresql://…), or mysql://… (or mariadb://…)"
            ))),
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Options::Sqlite(_) => Dialect::Sqlite,
            Options::Postgres(_) => Dialect::Postgres,
            Options::MySql(_) => Dialect::MySql,
        }
    }

    /// Opens one dedicated connection (the writer's).
    pub(crate) async fn connect(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Options::Sqlite(o) => Conn::Sqlite(sqlite_connect(o).await?),
            Options::Postgres(o) => Conn::Postgres(o.connect().await?),
            Options::MySql(o) => Conn::MySql(o.connect().await?),
        })
    }

    /// Opens the readers' pool.
    pub(crate) async fn pool(
        &self,
        connections_max: u32,
        acquire_timeout: Duration,
    ) -> Result<Pool, sqlx::Error> {
        Ok(match self {
            Options::Sqlite(o) => Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(connections_max)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(o.clone())
                    .await?,
            ),
            Options::Postgres(o) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(connections_max)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(o.clone())
                    .await?,
            ),
            Options::MySql(o) => Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(connections_max)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(o.clone())
                    .await?,
            ),
        })
    }
}

/// Connects to SQLite, retrying while another connection holds the lock. Setting WAL mode at
/// connect takes the database's exclusive lock, and SQLite answers a second connection doing
/// the same at that moment with SQLITE_BUSY at once (without the busy handler, which could
/// deadlock there): two brokers opening one file together failed about one time in eight.
/// Bounded by [`SQLITE_BUSY_TIMEOUT`].
async fn sqlite_connect(o: &SqliteConnectOptions) -> Result<SqliteConnection, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match o.connect().await {
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("5") | Some("6"))
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// A dedicated connection.
#[derive(Debug)]
pub(crate) enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

/// The readers' pool.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// A bound parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    I64(i64),
    Str(&'a str),
    OptStr(Option<&'a str>),
    Bytes(&'a [u8]),
}

/// The type a result column is decoded as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    I64,
    Str,
    OptStr,
    Bytes,
}

/// A decoded result value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    I64(i64),
    Str(String),
    OptStr(Option<String>),
    Bytes(Vec<u8>),
}

impl Val {
    pub(crate) fn i64(&self) -> i64 {
        match self {
            Val::I64(v) => *v,
            _ => 0,
        }
    }

    pub(crate) fn into_string(self) -> String {
        match self {
            Val::Str(s) => s,
            Val::OptStr(s) => s.unwrap_or_default(),
            _ => String::new(),
        }
    }

    pub(crate) fn into_opt_string(self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s),
            Val::OptStr(s) => s,
            _ => None,
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        match self {
            Val::Bytes(b) => b,
            _ => Vec::new(),
        }
    }
}

macro_rules! bound {
    ($db:ty, $sql:expr, $args:expr) => {{
        let mut q = sqlx::query::<$db>($sql);
        for a in $args.iter() {
            q = match *a {
                Arg::I64(v) => q.bind(v),
                Arg::Str(s) => q.bind(s),
                Arg::OptStr(s) => q.bind(s),
                Arg::Bytes(b) => q.bind(b),
            };
        }
        q
    }};
}

// MySQL flags columns of a `_bin` collation (our keys) as BINARY, and sqlx then refuses to
// decode them as strings: there, text is read as bytes and checked to be UTF-8 here.
macro_rules! decode_rows {
    ($rows:expr, $cols:expr, $text_as_bytes:expr) => {{
        let mut out = Vec::with_capacity($rows.len());
        for row in &$rows {
            let mut vals = Vec::with_capacity($cols.len());
            for (i, col) in $cols.iter().enumerate() {
                vals.push(match col {
                    Col::I64 => Val::I64(row.try_get::<i64, _>(i)?),
                    Col::Str if $text_as_bytes => Val::Str(utf8(i, row.try_get::<Vec<u8>, _>(i)?)?),
                    Col::Str => Val::Str(row.try_get::<String, _>(i)?),
                    Col::OptStr if $text_as_bytes => Val::OptStr(
                        row.try_get::<Option<Vec<u8>>, _>(i)?
                            .map(|b| utf8(i, b))
                            .transpose()?,
                    ),
                    Col::OptStr => Val::OptStr(row.try_get::<Option<String>, _>(i)?),
                    Col::Bytes => Val::Bytes(row.try_get::<Vec<u8>, _>(i)?),
                });
            }
            out.push(vals);
        }
        out
    }};
}

fn utf8(column: usize, bytes: Vec<u8>) -> Result<String, sqlx::Error> {
    String::from_utf8(bytes).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(e),
    })
}

impl Conn {
    /// Runs a statement without parameters through the simple protocol (`BEGIN`, DDL).
    pub(crate) async fn raw(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Conn::Sqlite(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(|_| ()),
            Conn::Postgres(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(|_| ()),
            Conn::MySql(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(|_| ()),
        }
    }

    /// Runs a statement; returns the rows it affected.
    pub(crate) async fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => bound!(sqlx::Sqlite, sql, args)
                .execute(&mut *c)
                .await?
                .rows_affected(),
            Conn::Postgres(c) => bound!(sqlx::Postgres, sql, args)
                .execute(&mut *c)
                .await?
                .rows_affected(),
            Conn::MySql(c) => bound!(sqlx::MySql, sql, args)
                .execute(&mut *c)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query and decodes every row as `cols`.
    pub(crate) async fn fetch(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        cols: &[Col],
    ) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => {
                let rows = bound!(sqlx::Sqlite, sql, args).fetch_all(&mut *c).await?;
                decode_rows!(rows, cols, false)
            }
            Conn::Postgres(c) => {
                let rows = bound!(sqlx::Postgres, sql, args).fetch_all(&mut *c).await?;
                decode_rows!(rows, cols, false)
            }
            Conn::MySql(c) => {
                let rows = bound!(sqlx::MySql, sql, args).fetch_all(&mut *c).await?;
                decode_rows!(rows, cols, true)
            }
        })
    }

    /// The single `i64` of a one-row, one-column query (`None` without a row).
    pub(crate) async fn fetch_i64(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<i64>, sqlx::Error> {
        let rows = self.fetch(sql, args, &[Col::I64]).await?;
        Ok(rows.first().and_then(|r| r.first()).map(Val::i64))
    }

    /// Closes the connection politely (a failed close only means it is already gone).
    pub(crate) async fn close(self) {
        let _ = match self {
            Conn::Sqlite(c) => c.close().await,
            Conn::Postgres(c) => c.close().await,
            Conn::MySql(c) => c.close().await,
        };
    }
}

impl Pool {
    /// Runs a query on a pooled connection and decodes every row as `cols`.
    pub(crate) async fn fetch(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        cols: &[Col],
    ) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => {
                let rows = bound!(sqlx::Sqlite, sql, args).fetch_all(p).await?;
                decode_rows!(rows, cols, false)
            }
            Pool::Postgres(p) => {
                let rows = bound!(sqlx::Postgres, sql, args).fetch_all(p).await?;
                decode_rows!(rows, cols, false)
            }
            Pool::MySql(p) => {
                let rows = bound!(sqlx::MySql, sql, args).fetch_all(p).await?;
                decode_rows!(rows, cols, true)
            }
        })
    }

    /// Closes every pooled connection.
    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
            Pool::MySql(p) => p.close().await,
        }
    }
}
