//! Running `ferromq serve` as a separate process: start with a config, read its log, kill it
//! (-9, -STOP/-CONT, TERM), check whether its STOMP port accepts.
// Child processes are reaped by their owners (Drop, or the end of the test); a panic on the
// way ends the test process, which takes its children's zombies with it.
#![allow(clippy::zombie_processes)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferromq");

/// A loopback port for a broker this test starts, never handed out twice by this process.
///
/// Not an ephemeral port (`bind(0)`): the port is released before the broker binds it, and in
/// between the kernel may give the same ephemeral port to another test's outgoing connection
/// (the tests of a file run in parallel and open thousands) or to the next `bind(0)`. These
/// come from below the ephemeral range (32768+), at an offset per process, and each one is
/// checked free when handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(397) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `ferromq serve` with `config` (TOML) written next to `dir`.
    pub fn start(name: &str, dir: &Path, port: u16, config: &str) -> Proc {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["--log", "info", "serve", "--config"])
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("[{tag}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Proc {
            name: name.to_string(),
            child,
            port,
            log,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// True when its STOMP port accepts a connection now.
    pub fn accepts(&self) -> bool {
        TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    /// Waits (bounded) until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until the port accepts; returns how long it took.
    pub fn wait_accepting(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.accepts() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait; returns whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.success();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config of one member of a shared-file group.
pub fn shared_file_config(name: &str, shared: &Path, port: u16, extra: &str) -> String {
    format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n[store]\nbackend = \"journal\"\n[ha]\nmode = \"shared-file\"\nlock_keepalive_ms = 100\n{extra}",
        shared.display()
    )
}

/// The PostgreSQL of `scripts/services.sh` (`FERROMQ_TEST_PG_URL`).
pub fn pg_url() -> String {
    std::env::var("FERROMQ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/ferromq_test".into())
}

/// The MariaDB of `scripts/services.sh` (`FERROMQ_TEST_MYSQL_URL`).
pub fn mysql_url() -> String {
    std::env::var("FERROMQ_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3307/ferromq_test".into())
}

/// A table prefix no other test uses, so tests share the database servers in parallel.
pub fn unique_table_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{}_",
        std::process::id(),
        nanos % 1_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, a free loopback port), for
/// tests that restart or stop the database under the brokers without disturbing other tests.
pub struct ThrowawayPg {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl ThrowawayPg {
    fn bin(name: &str) -> String {
        let base = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (scripts/services.sh installs them)")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .max()
            .expect("a PostgreSQL version under /usr/lib/postgresql");
        base.join("bin").join(name).display().to_string()
    }

    fn as_postgres(cmd: &str) -> bool {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", cmd])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn start() -> ThrowawayPg {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("chown")
            .args(["postgres:postgres", &dir.path().display().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown of the throwaway PostgreSQL dir");
        let data = dir.path().join("data");
        assert!(
            Self::as_postgres(&format!(
                "{} -D {} -A trust -U postgres --no-sync",
                Self::bin("initdb"),
                data.display()
            )),
            "initdb"
        );
        let pg = ThrowawayPg {
            dir,
            port: free_port(),
        };
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&self) {
        assert!(
            Self::as_postgres(&format!(
                "{} -D {} -l {}/log -w -t 30 -o '-p {} -k {} -c listen_addresses=127.0.0.1' start",
                Self::bin("pg_ctl"),
                self.data(),
                self.dir.path().display(),
                self.port,
                self.dir.path().display()
            )),
            "pg_ctl start"
        );
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn down(&self) {
        assert!(
            Self::as_postgres(&format!(
                "{} -D {} -m fast -w stop",
                Self::bin("pg_ctl"),
                self.data()
            )),
            "pg_ctl stop"
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        Self::as_postgres(&format!(
            "{} -D {} -m immediate -w stop",
            Self::bin("pg_ctl"),
            self.data()
        ));
    }
}

/// Sends `n` persistent messages `<prefix>-<i>` to `/queue/ha`, each with a receipt; returns
/// their bodies.
pub async fn send_receipted(addr: &str, prefix: &str, n: usize) -> Vec<String> {
    use ferromq_client::{Client, ClientConfig};
    let c = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        c.send_with_receipt("/queue/ha", body.clone(), &[("persistent", "true")])
            .await
            .unwrap();
        sent.push(body);
    }
    c.disconnect().await.unwrap();
    sent
}

/// Consumes `/queue/ha` (client-individual acks) until it stays quiet for 2 s.
pub async fn drain(addr: &str) -> Vec<String> {
    use ferromq_client::{AckMode, Client, ClientConfig};
    let c = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let mut s = c
        .subscribe("/queue/ha", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = s.next_timeout(Duration::from_secs(2)).await {
        got.push(String::from_utf8_lossy(m.body()).into_owned());
        c.ack(&m, None).await.unwrap();
    }
    c.disconnect().await.unwrap();
    got
}

/// The group a broker's CONNECTED lists (`ha.update_cluster_clients`), as sent.
pub fn cluster_header(c: &ferromq_client::Client) -> String {
    c.connected_headers()
        .into_iter()
        .find(|(n, _)| n == "ferromq.cluster")
        .map(|(_, v)| v)
        .expect("CONNECTED must list the group")
}
