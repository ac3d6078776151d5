//! Fixtures for the shared-db tests: real databases (the shared test servers, or a throwaway
//! PostgreSQL per test for restarts), a per-test lock table, and a TCP proxy that can cut a
//! broker off from the database without closing its connections (a partition, or a stopped
//! process as the database sees it).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferromq_ha_dblock::{DbLockConfig, Locker};
use sqlx::{Connection, Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Logs to the test's output, filtered by `RUST_LOG` (default: warnings and errors).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pg,
    My,
}

pub fn url(kind: Kind) -> String {
    match kind {
        Kind::Pg => std::env::var("FERROMQ_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/ferromq_test".into()),
        Kind::My => std::env::var("FERROMQ_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3307/ferromq_test".into()),
    }
}

/// A table prefix no other test (or test run) uses.
pub fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{}_{}_{:x}_",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Timings short enough for tests, long enough that a loaded CI machine (two cores shared by
/// many builds) does not make a healthy master miss its renewals.
pub fn config(url: &str, prefix: &str, holder: &str, locker: Locker) -> DbLockConfig {
    let mut c = DbLockConfig::new(url, holder);
    c.table_prefix = prefix.into();
    c.locker = locker;
    c.lease = Duration::from_secs(6);
    c.renew_interval = Duration::from_secs(1);
    c.statement_timeout = Duration::from_secs(2);
    c.lock_acquire_sleep_interval = Duration::from_millis(100);
    c
}

/// A direct connection to the test database, for checking what the lockers wrote.
pub enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Conn {
    pub async fn open(kind: Kind, url: &str) -> Conn {
        let r = match kind {
            Kind::Pg => sqlx::PgConnection::connect(url).await.map(Conn::Pg),
            Kind::My => sqlx::MySqlConnection::connect(url).await.map(Conn::My),
        };
        r.unwrap_or_else(|e| panic!("test database {url} unreachable (a failure, not a skip): {e}"))
    }

    pub async fn exec(&mut self, sql: &str) {
        match self {
            Conn::Pg(c) => c.execute(sql).await.map(|_| ()),
            Conn::My(c) => c.execute(sql).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Row 1: (holder, epoch, expiry_ms).
    pub async fn row1(&mut self, table: &str) -> (Option<String>, i64, i64) {
        let sql = format!("SELECT broker_name, epoch, expiry_ms FROM {table} WHERE id = 1");
        match self {
            Conn::Pg(c) => sqlx::query_as(&sql).fetch_one(c).await,
            Conn::My(c) => sqlx::query_as(&sql).fetch_one(c).await,
        }
        .unwrap()
    }

    /// Row 1's `time` (when it last changed, database clock).
    pub async fn row1_time(&mut self, table: &str) -> i64 {
        let sql = format!("SELECT time FROM {table} WHERE id = 1");
        match self {
            Conn::Pg(c) => sqlx::query_scalar(&sql).fetch_one(c).await,
            Conn::My(c) => sqlx::query_scalar(&sql).fetch_one(c).await,
        }
        .unwrap()
    }

    /// The `sql` store's fence read: inside an open transaction, share-lock row 1 and read the
    /// epoch (the caller commits or rolls back with [`Conn::exec`]).
    pub async fn begin_store_tx(&mut self, table: &str) -> i64 {
        match self {
            Conn::Pg(c) => {
                c.execute("BEGIN").await.unwrap();
                sqlx::query_scalar(&format!("SELECT epoch FROM {table} WHERE id = 1 FOR SHARE"))
                    .fetch_one(c)
                    .await
                    .unwrap()
            }
            Conn::My(c) => {
                c.execute("BEGIN").await.unwrap();
                sqlx::query_scalar(&format!(
                    "SELECT epoch FROM {table} WHERE id = 1 LOCK IN SHARE MODE"
                ))
                .fetch_one(c)
                .await
                .unwrap()
            }
        }
    }

    pub async fn drop_table(&mut self, table: &str) {
        self.exec(&format!("DROP TABLE IF EXISTS {table}")).await;
    }

    pub async fn close(self) {
        let _ = match self {
            Conn::Pg(c) => c.close().await,
            Conn::My(c) => c.close().await,
        };
    }
}

/// A TCP proxy in front of the database. `cut(true)` stops forwarding in both directions and
/// stalls new connections, without closing anything: to the broker behind it, the database
/// hangs; to the database, the broker went silent.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    if cut_rx.wait_for(|c| !*c).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pump(cr, sw, cut_rx.clone()));
                    let b = tokio::spawn(pump(sr, cw, cut_rx));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Proxy { addr, cut, task }
    }

    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_via(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (userinfo, after) = match rest.rsplit_once('@') {
            Some((u, a)) => (format!("{u}@"), a),
            None => (String::new(), rest),
        };
        let path = after.find('/').map(|i| &after[i..]).unwrap_or("");
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Hold the bytes while cut: nothing is lost, it just never arrives until healed.
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The database's address from its URL (host:port).
pub fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let after = rest.rsplit_once('@').map(|(_, a)| a).unwrap_or(rest);
    let hostport = after.split('/').next().unwrap();
    hostport.parse().unwrap()
}

/// A PostgreSQL server of this test's own, so the test can stop and restart it.
pub struct ThrowawayPg {
    _parent: tempfile::TempDir,
    dir: PathBuf,
    pub port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(cmd: &str) {
    let out = Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ThrowawayPg {
    pub fn start() -> ThrowawayPg {
        let parent = tempfile::Builder::new()
            .prefix("ferromq-dblock-pg")
            .tempdir()
            .unwrap();
        let dir = parent.path().join("data");
        Command::new("chown")
            .args(["postgres:postgres", parent.path().to_str().unwrap()])
            .status()
            .unwrap();
        as_postgres(&format!(
            "{PG_BIN}/initdb -D {} -A trust -U postgres --no-sync >/dev/null",
            dir.display()
        ));
        let pg = ThrowawayPg {
            _parent: parent,
            dir,
            port: free_port(),
        };
        pg.up();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        as_postgres(&format!(
            "{PG_BIN}/pg_ctl -D {d} -l {d}/log -o '-p {p} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off' -w start >/dev/null",
            d = self.dir().display(),
            p = self.port
        ));
    }

    /// Stops it the way a crash or an operator's fast restart would: sessions are killed,
    /// their transactions (and row locks) rolled back.
    pub fn down(&self) {
        as_postgres(&format!(
            "{PG_BIN}/pg_ctl -D {} -m fast -w stop >/dev/null",
            self.dir().display()
        ));
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args([
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                &format!(
                    "{PG_BIN}/pg_ctl -D {} -m immediate -w stop",
                    self.dir.display()
                ),
            ])
            .output();
    }
}

/// A MariaDB server of this test's own, so the test can stop and restart it.
pub struct ThrowawayMy {
    parent: tempfile::TempDir,
    pub port: u16,
    child: std::sync::Mutex<Option<std::process::Child>>,
}

impl ThrowawayMy {
    pub async fn start() -> ThrowawayMy {
        let parent = tempfile::Builder::new()
            .prefix("ferromq-dblock-my")
            .tempdir()
            .unwrap();
        Command::new("chown")
            .args(["mysql:mysql", parent.path().to_str().unwrap()])
            .status()
            .unwrap();
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=mysql",
                &format!("--datadir={}", parent.path().join("data").display()),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let my = ThrowawayMy {
            parent,
            port: free_port(),
            child: std::sync::Mutex::new(None),
        };
        my.up().await;
        let mut c = Conn::open(
            Kind::My,
            &format!("mysql://root@127.0.0.1:{}/mysql", my.port),
        )
        .await;
        c.exec("CREATE DATABASE IF NOT EXISTS ferromq_test").await;
        c.close().await;
        my
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/ferromq_test", self.port)
    }

    /// Starts the server and waits (bounded) until it accepts connections.
    pub async fn up(&self) {
        let p = self.parent.path();
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=mysql",
                &format!("--datadir={}", p.join("data").display()),
                &format!("--socket={}", p.join("sock").display()),
                &format!("--log-error={}", p.join("log").display()),
                &format!("--pid-file={}", p.join("pid").display()),
                "--bind-address=127.0.0.1",
                &format!("--port={}", self.port),
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        *self.child.lock().unwrap() = Some(child);
        let url = format!("mysql://root@127.0.0.1:{}/mysql", self.port);
        for _ in 0..600 {
            if let Ok(c) = sqlx::MySqlConnection::connect(&url).await {
                let _ = c.close().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("throwaway MariaDB on port {} did not start", self.port);
    }

    /// A clean shutdown (SIGTERM), as an operator's restart: sessions end, their transactions
    /// (and row locks) roll back.
    pub fn down(&self) {
        let child = self.child.lock().unwrap().take();
        if let Some(mut child) = child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            tokio::task::block_in_place(|| {
                let _ = child.wait();
            });
        }
    }
}

impl Drop for ThrowawayMy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A database server a test may stop and restart.
pub enum Throwaway {
    Pg(ThrowawayPg),
    My(ThrowawayMy),
}

impl Throwaway {
    pub async fn start(kind: Kind) -> Throwaway {
        match kind {
            Kind::Pg => Throwaway::Pg(tokio::task::block_in_place(ThrowawayPg::start)),
            Kind::My => Throwaway::My(ThrowawayMy::start().await),
        }
    }
    pub fn url(&self) -> String {
        match self {
            Throwaway::Pg(p) => p.url(),
            Throwaway::My(m) => m.url(),
        }
    }
    pub fn down(&self) {
        match self {
            Throwaway::Pg(p) => tokio::task::block_in_place(|| p.down()),
            Throwaway::My(m) => m.down(),
        }
    }
    pub async fn up(&self) {
        match self {
            Throwaway::Pg(p) => tokio::task::block_in_place(|| p.up()),
            Throwaway::My(m) => m.up().await,
        }
    }
}
