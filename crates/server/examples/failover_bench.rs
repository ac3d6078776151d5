//! Failover latency of every HA mode — shared-file, shared-db (lease or row locker on
//! PostgreSQL/MariaDB) and replicated (three brokers, ZooKeeper) — measured with real processes
//! on loopback.
//!
//! For each round: a producer sends persistent messages with receipts to the master; the
//! master is killed (SIGKILL, or SIGTERM for a clean shutdown); the time from the signal to
//! (a) the new master accepting STOMP connections and (b) the first receipted message on it is
//! recorded. Prints p50 / p99 / max per kind, as a markdown table.
//!
//! ```text
//! cargo build --release -p ferromq --bin ferromq --example failover_bench
//! target/release/examples/failover_bench target/release/ferromq 20                 # shared-file
//! target/release/examples/failover_bench target/release/ferromq 20 shared-db URL lease 2000
//! target/release/examples/failover_bench target/release/ferromq 20 replicated ZK_ADDRESS 2000
//! ```
// Child processes are reaped by their owners (Drop, or the end of the test); a panic on the
// way ends the test process, which takes its children's zombies with it.
#![allow(clippy::zombie_processes)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferromq_client::{Client, ClientConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Which HA mode the brokers run.
#[derive(Debug, Clone)]
enum Mode {
    SharedFile,
    SharedDb {
        url: String,
        locker: String,
        lease_ms: u64,
        prefix: String,
    },
    Replicated {
        zk: String,
        path: String,
        session_ms: u64,
        /// `ha.master_timeout_ms` (0: the session alone detects a dead master).
        master_timeout_ms: u64,
    },
}

impl Mode {
    fn label(&self) -> String {
        match self {
            Mode::SharedFile => "shared-file".into(),
            Mode::SharedDb {
                url,
                locker,
                lease_ms,
                ..
            } => {
                let db = url.split("://").next().unwrap_or("?");
                format!("shared-db ({db}, {locker}, lease {lease_ms} ms)")
            }
            Mode::Replicated {
                session_ms,
                master_timeout_ms,
                ..
            } => {
                format!("replicated (3 brokers, quorum_disk, zk session {session_ms} ms, master_timeout {master_timeout_ms} ms)")
            }
        }
    }

    /// Brokers in the group.
    fn brokers(&self) -> usize {
        match self {
            Mode::Replicated { .. } => 3,
            _ => 2,
        }
    }

    fn config(&self, shared: &Path, name: &str, port: u16) -> String {
        let transports = format!("[transports]\nstomp = \"127.0.0.1:{port}\"\n");
        match self {
            // Both brokers on the same directory.
            Mode::SharedFile => format!(
                "[broker]\nname = \"bench\"\ndata_dir = \"{}\"\n{transports}\
                 [store]\nbackend = \"journal\"\n[ha]\nmode = \"shared-file\"\nlock_keepalive_ms = 500\n",
                shared.display()
            ),
            // Each broker its own directory; the database is what they share.
            Mode::SharedDb {
                url,
                locker,
                lease_ms,
                prefix,
            } => format!(
                "[broker]\nname = \"bench\"\ndata_dir = \"{}\"\n{transports}\
                 [store]\nbackend = \"sql\"\nurl = \"{url}\"\ntable_prefix = \"{prefix}\"\n\
                 [ha]\nmode = \"shared-db\"\nlocker = \"{locker}\"\nlease_ms = {lease_ms}\n\
                 lock_acquire_sleep_interval_ms = 50\n",
                shared.join(name).display()
            ),
            // Each broker its own journal; ZooKeeper elects, the master replicates.
            Mode::Replicated {
                zk,
                path,
                session_ms,
                master_timeout_ms,
            } => format!(
                "[broker]\nname = \"bench\"\ndata_dir = \"{}\"\n{transports}\
                 [store]\nbackend = \"journal\"\n[ha]\nmode = \"replicated\"\n\
                 zk_address = \"{zk}\"\nzk_path = \"{path}\"\nzk_session_timeout_ms = {session_ms}\n\
                 master_timeout_ms = {master_timeout_ms}\nbind = \"tcp://127.0.0.1:0\"\n",
                shared.join(name).display()
            ),
        }
    }
}

fn start(
    bin: &Path,
    dir: &Path,
    shared: &Path,
    mode: &Mode,
    name: &str,
    port: u16,
) -> anyhow::Result<Child> {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, mode.config(shared, name, port))?;
    // Each broker's info log goes to <logs>/<name>.log (appended per start): the replicated
    // rounds wait on it for a restarted broker to have rejoined, and it shows what a slow or
    // failed round was made of. FERROMQ_BENCH_LOGS=<dir> keeps the logs after the run.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, name))?;
    Ok(Command::new(bin)
        .env("NO_COLOR", "1")
        .args(["--log", "info", "serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(f))
        .spawn()?)
}

fn log_path(dir: &Path, name: &str) -> std::path::PathBuf {
    match std::env::var_os("FERROMQ_BENCH_LOGS") {
        Some(d) => Path::new(&d).join(format!("{name}.log")),
        None => dir.join(format!("{name}.log")),
    }
}

fn log_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(log_path(dir, name)).map_or(0, |m| m.len())
}

/// What a broker logged since `offset`.
fn log_since(dir: &Path, name: &str, offset: u64) -> String {
    let all = std::fs::read(log_path(dir, name)).unwrap_or_default();
    String::from_utf8_lossy(all.get(offset as usize..).unwrap_or_default()).into_owned()
}

/// Waits (bounded) until the restarted replicated broker `name` follows the master `master`:
/// the master logged its connection by member id, streaming — or a full copy, which the
/// restarted broker then logged as applied. A member killed mid-copy holds no position, so
/// killing the master before this would leave the group without a quorum of reports.
async fn wait_rejoined(
    dir: &Path,
    name: &str,
    offset: u64,
    master: &str,
    master_offset: u64,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let mine = log_since(dir, name, offset);
        let id = mine
            .split("member_id=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string);
        if let Some(id) = id {
            let theirs = log_since(dir, master, master_offset);
            let connected = theirs
                .lines()
                .filter(|l| l.contains("slave connected") && l.contains(&id));
            for l in connected {
                if l.contains("streaming") || mine.contains("full copy consistent") {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("{name} did not rejoin {master} within 60 s")
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(100)).is_ok()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "target/release/ferromq".into()),
    );
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mode = match args.get(3).map(String::as_str) {
        None | Some("shared-file") => Mode::SharedFile,
        Some("shared-db") => Mode::SharedDb {
            url: args
                .get(4)
                .cloned()
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5433/ferromq_test".into()),
            locker: args.get(5).cloned().unwrap_or_else(|| "lease".into()),
            lease_ms: args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(2000),
            prefix: format!("bench{}_", std::process::id()),
        },
        Some("replicated") => Mode::Replicated {
            zk: args
                .get(4)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1:2191,127.0.0.1:2192,127.0.0.1:2193".into()),
            path: format!("/ferromq-failover-bench-{}", std::process::id()),
            session_ms: args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(2000),
            master_timeout_ms: args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(500),
        },
        Some(other) => {
            anyhow::bail!("unknown mode {other:?}: shared-file | shared-db | replicated")
        }
    };
    let dir = tempfile::tempdir()?;
    let shared = dir.path().join("shared");
    let n = mode.brokers();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let mut procs: Vec<Child> = Vec::new();
    if matches!(mode, Mode::Replicated { .. }) {
        // A replicated group elects only once a quorum has reported: start them all.
        for (i, port) in ports.iter().enumerate() {
            procs.push(start(
                &bin,
                dir.path(),
                &shared,
                &mode,
                &format!("b{i}"),
                *port,
            )?);
        }
    } else {
        procs.push(start(&bin, dir.path(), &shared, &mode, "b0", ports[0])?);
    }
    let t0 = Instant::now();
    while !ports.iter().any(|p| accepts(*p)) {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "no broker became master"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if !matches!(mode, Mode::Replicated { .. }) {
        procs.push(start(&bin, dir.path(), &shared, &mode, "b1", ports[1])?);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut results: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![
        ("kill -9", Vec::new(), Vec::new()),
        ("SIGTERM", Vec::new(), Vec::new()),
    ];
    for round in 0..rounds * 2 {
        let kind = round % 2;
        let Some(master) = ports.iter().position(|p| accepts(*p)) else {
            anyhow::bail!("round {round}: no master before the signal");
        };
        // Steady load on the master until the signal.
        let c = Client::connect(
            &format!("127.0.0.1:{}", ports[master]),
            ClientConfig::default(),
        )
        .await?;
        for i in 0..50 {
            c.send_with_receipt(
                "/queue/bench",
                format!("r{round}-{i}"),
                &[("persistent", "true")],
            )
            .await?;
        }
        let signal_at = Instant::now();
        if kind == 0 {
            procs[master].kill()?;
        } else {
            Command::new("kill")
                .args(["-TERM", &procs[master].id().to_string()])
                .status()?;
        }
        drop(c);
        let mut accepted = None;
        let mut first_receipt = None;
        let mut slave = usize::MAX;
        while signal_at.elapsed() < Duration::from_secs(60) {
            if accepted.is_none() {
                if let Some(i) = (0..n).find(|&i| i != master && accepts(ports[i])) {
                    slave = i;
                    accepted = Some(signal_at.elapsed());
                }
            }
            if accepted.is_some() {
                if let Ok(c) = Client::connect(
                    &format!("127.0.0.1:{}", ports[slave]),
                    ClientConfig::default(),
                )
                .await
                {
                    if c.send_with_receipt("/queue/bench", "after", &[("persistent", "true")])
                        .await
                        .is_ok()
                    {
                        first_receipt = Some(signal_at.elapsed());
                        let _ = c.disconnect().await;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (Some(a), Some(r)) = (accepted, first_receipt) else {
            anyhow::bail!("round {round}: no takeover within 60 s");
        };
        results[kind].1.push(a);
        results[kind].2.push(r);
        procs[master].wait()?;
        let (offset, master_offset) = (
            log_len(dir.path(), &format!("b{master}")),
            log_len(dir.path(), &format!("b{slave}")),
        );
        procs[master] = start(
            &bin,
            dir.path(),
            &shared,
            &mode,
            &format!("b{master}"),
            ports[master],
        )?;
        // The restarted broker must be a slave again (a replicated one caught up) before the
        // next round kills the master.
        if matches!(mode, Mode::Replicated { .. }) {
            wait_rejoined(
                dir.path(),
                &format!("b{master}"),
                offset,
                &format!("b{slave}"),
                master_offset,
            )
            .await?;
        } else {
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        eprintln!(
            "round {round} ({}): accepting {:.1} ms, first receipt {:.1} ms",
            results[kind].0,
            a.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3
        );
    }
    for p in &mut procs {
        let _ = p.kill();
        let _ = p.wait();
    }
    println!("| mode | trigger | rounds | to accepting p50 / p99 / max (ms) | to first receipt p50 / p99 / max (ms) |");
    println!("|---|---|---|---|---|");
    for (kind, acc, rec) in &mut results {
        let n = acc.len();
        println!(
            "| {} | {kind} | {n} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
            mode.label(),
            pct(acc, 0.5),
            pct(acc, 0.99),
            pct(acc, 1.0),
            pct(rec, 0.5),
            pct(rec, 0.99),
            pct(rec, 1.0)
        );
    }
    Ok(())
}
