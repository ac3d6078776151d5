//! Shared by the replicated-mode fault tests: broker configs, ZooKeeper addresses, a history
//! of every send, confirmation and delivery of a run, and the checker that judges it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// The standalone ZooKeeper (`scripts/services.sh`).
pub fn zk_standalone() -> String {
    std::env::var("FERROMQ_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

/// Whether the brokers run the replication core (`FERROMQ__HA__ENGINE=core`, which
/// `scripts/test.sh` sets for a second run of these tests) rather than the legacy engine: the
/// two fence a silent master differently (the core: one conditional ZooKeeper takeover by a
/// member of the in-sync set; the legacy: a quorum of durable fences), so a few log lines
/// differ.
#[allow(dead_code)]
pub fn core_engine() -> bool {
    std::env::var("FERROMQ__HA__ENGINE").as_deref() == Ok("core")
}

/// The three-node ensemble (`scripts/services.sh`).
pub fn zk_ensemble() -> String {
    std::env::var("FERROMQ_TEST_ZK_ENSEMBLE")
        .unwrap_or_else(|_| "127.0.0.1:2191,127.0.0.1:2192,127.0.0.1:2193".into())
}

/// A ZooKeeper path no other test (or earlier run) uses.
pub fn unique_zk_path(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/ferromq-test/{name}-{}-{nanos}", std::process::id())
}

/// The config of one member of a replicated group.
pub fn replicated_config(
    group: &str,
    data_dir: &Path,
    port: u16,
    zk: &str,
    zk_path: &str,
    extra: &str,
) -> String {
    replicated_config_with_store(group, data_dir, port, zk, zk_path, "", extra)
}

/// [`replicated_config`] with extra `[store]` lines.
pub fn replicated_config_with_store(
    group: &str,
    data_dir: &Path,
    port: u16,
    zk: &str,
    zk_path: &str,
    store_extra: &str,
    extra: &str,
) -> String {
    // A test may set its own session timeout in `extra` (a TOML key may appear once).
    let session = if extra.contains("zk_session_timeout_ms") {
        ""
    } else {
        "zk_session_timeout_ms = 2000\n"
    };
    format!(
        "[broker]\nname = \"{group}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n[store]\nbackend = \"journal\"\n{store_extra}\n[ha]\nmode = \"replicated\"\nreplicas = 3\nzk_address = \"{zk}\"\nzk_path = \"{zk_path}\"\n{session}bind = \"tcp://127.0.0.1:0\"\nsecurity_token = \"test-token\"\n{extra}",
        data_dir.display()
    )
}

/// An append-only record of a fault run, one `<micros since start> <event> <fields…>` line per
/// event:
///
/// - `send <id>`: a producer's attempt (`id` is the producer's own unique body id);
/// - `confirm <id>`: the broker's RECEIPT for it arrived;
/// - `deliver <id> <message-id> <connection>`: a MESSAGE frame as it came off the wire on that
///   consumer connection, before any client-side duplicate filtering (the wire-level record);
/// - `acked <message-id> <connection>`: the RECEIPT of the ACK of that delivery arrived;
/// - `deliver <id>` (three fields): an application-level delivery (older histories).
pub struct History {
    path: PathBuf,
    start: Instant,
    out: Mutex<BufWriter<std::fs::File>>,
}

impl History {
    pub fn create(path: &Path) -> History {
        History {
            path: path.to_path_buf(),
            start: Instant::now(),
            out: Mutex::new(BufWriter::new(std::fs::File::create(path).unwrap())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self, event: &str, id: &str) {
        self.record_fields(event, &[id]);
    }

    pub fn record_fields(&self, event: &str, fields: &[&str]) {
        let mut out = self.out.lock().unwrap();
        // Timestamped under the lock, so that line order and time order agree.
        let t = self.start.elapsed().as_micros();
        write!(out, "{t} {event}").unwrap();
        for f in fields {
            write!(out, " {f}").unwrap();
        }
        writeln!(out).unwrap();
    }

    pub fn flush(&self) {
        self.out.lock().unwrap().flush().unwrap();
    }
}

/// What a history shows when it is correct.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub sent: usize,
    pub confirmed: usize,
    pub delivered: usize,
    /// Sent, never confirmed, delivered anyway (allowed: the receipt was lost in a failover).
    pub unconfirmed_delivered: usize,
    /// Sent, never confirmed, never delivered (allowed: the send failed).
    pub unconfirmed_lost: usize,
}

/// [`Verdict`] plus what the wire-level records show.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WireVerdict {
    pub verdict: Verdict,
    /// MESSAGE frames received (every `deliver` line).
    pub frames: usize,
    /// Message ids delivered on more than one connection, none after a confirmed ACK
    /// (allowed: at-least-once after a failover; a client audit hides these).
    pub redelivered: usize,
    /// ACKs whose RECEIPT arrived.
    pub acks_confirmed: usize,
}

/// Checks a history: no confirmed message lost, no message delivered that was never sent, no
/// confirmation of a message never sent, and no duplicate. Returns every violation.
pub fn check_history(path: &Path) -> Result<Verdict, Vec<String>> {
    check_wire_history(path).map(|w| w.verdict)
}

/// [`check_history`], with the wire-level duplicate rules. A message delivered twice by the
/// brokers is a violation even when a client's duplicate audit would have hidden it:
///
/// - **stored twice**: one producer message delivered under two message ids (the broker kept
///   a resend as a second message);
/// - **twice on one connection**: one message id delivered twice on the same consumer
///   connection;
/// - **after a confirmed ACK**: a message id delivered again after the delivery whose ACK
///   the broker confirmed (a receipted ACK is durable: nothing may bring the message back).
///
/// A message id delivered again on a *new* connection when no ACK of it was confirmed is
/// allowed (the ACK may have died with the old master) and counted as `redelivered`. Old
/// histories' application-level `deliver <id>` lines count as duplicates whenever repeated.
pub fn check_wire_history(path: &Path) -> Result<WireVerdict, Vec<String>> {
    let f = std::fs::File::open(path).map_err(|e| vec![format!("open history: {e}")])?;
    let mut sent = HashSet::new();
    let mut confirmed = HashSet::new();
    // Body id -> application-level deliveries (old format) and wire-level message ids.
    let mut app_delivered: HashMap<String, usize> = HashMap::new();
    let mut body_mids: HashMap<String, Vec<String>> = HashMap::new();
    // Message id -> (line, connection) of each wire-level delivery, in order.
    let mut mid_deliveries: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    // (line, message id, connection) of each confirmed ACK.
    let mut acks: Vec<(usize, String, String)> = Vec::new();
    let mut frames = 0usize;
    let mut bad = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| vec![format!("read history: {e}")])?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        let malformed = || format!("line {}: malformed {line:?}", n + 1);
        match parts.as_slice() {
            [_, "send", id] => {
                sent.insert(id.to_string());
            }
            [_, "confirm", id] => {
                if !sent.contains(*id) {
                    bad.push(format!("{id} confirmed but never sent"));
                }
                confirmed.insert(id.to_string());
            }
            [_, "deliver", id] => {
                if !sent.contains(*id) {
                    bad.push(format!("{id} delivered but never sent"));
                }
                *app_delivered.entry(id.to_string()).or_default() += 1;
            }
            [_, "deliver", id, mid, conn] => {
                frames += 1;
                if !sent.contains(*id) {
                    bad.push(format!("{id} delivered but never sent"));
                }
                let mids = body_mids.entry(id.to_string()).or_default();
                if !mids.iter().any(|m| m == mid) {
                    mids.push(mid.to_string());
                }
                mid_deliveries
                    .entry(mid.to_string())
                    .or_default()
                    .push((n, conn.to_string()));
            }
            [_, "acked", mid, conn] => acks.push((n, mid.to_string(), conn.to_string())),
            [_, "send" | "confirm" | "deliver" | "acked", ..] => bad.push(malformed()),
            [_, other, ..] => bad.push(format!("line {}: unknown event {other:?}", n + 1)),
            _ => bad.push(malformed()),
        }
    }
    let delivered = |id: &String| app_delivered.contains_key(id) || body_mids.contains_key(id);
    let mut lost: Vec<&String> = confirmed.iter().filter(|id| !delivered(id)).collect();
    lost.sort();
    if !lost.is_empty() {
        bad.push(format!(
            "{} confirmed message(s) never delivered, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    let mut dups: Vec<(&String, &usize)> = app_delivered.iter().filter(|(_, n)| **n > 1).collect();
    dups.sort();
    if !dups.is_empty() {
        bad.push(format!(
            "{} message(s) delivered more than once, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(5)]
        ));
    }
    let mut twice: Vec<(&String, &Vec<String>)> =
        body_mids.iter().filter(|(_, m)| m.len() > 1).collect();
    twice.sort();
    if !twice.is_empty() {
        bad.push(format!(
            "{} message(s) stored twice by the brokers (one producer message under several message ids), e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        ));
    }
    let mut one_conn: Vec<(&String, &String)> = Vec::new();
    for (mid, ds) in &mid_deliveries {
        let mut conns: Vec<&String> = ds.iter().map(|(_, c)| c).collect();
        conns.sort();
        if let Some(w) = conns.windows(2).find(|w| w[0] == w[1]) {
            one_conn.push((mid, w[0]));
        }
    }
    one_conn.sort();
    if !one_conn.is_empty() {
        bad.push(format!(
            "{} message id(s) delivered twice on one connection, e.g. {:?}",
            one_conn.len(),
            &one_conn[..one_conn.len().min(5)]
        ));
    }
    let mut resurrected: Vec<(&String, &String, &String)> = Vec::new();
    let mut acked_mids = HashSet::new();
    for (line, mid, conn) in &acks {
        acked_mids.insert(mid);
        let ds = mid_deliveries.get(mid).map(Vec::as_slice).unwrap_or(&[]);
        // The delivery this ACK settled: the last one of that id on that connection before it.
        let Some(settled) = ds
            .iter()
            .filter(|(l, c)| l < line && c == conn)
            .map(|(l, _)| *l)
            .max()
        else {
            bad.push(format!(
                "ACK of {mid} confirmed on {conn}, which never received it"
            ));
            continue;
        };
        if let Some((_, again)) = ds.iter().find(|(l, _)| *l > settled) {
            resurrected.push((mid, conn, again));
        }
    }
    resurrected.sort();
    resurrected.dedup();
    if !resurrected.is_empty() {
        bad.push(format!(
            "{} message id(s) delivered again after the broker confirmed their ACK, e.g. (id, acked on, delivered again on) {:?}",
            resurrected.len(),
            &resurrected[..resurrected.len().min(5)]
        ));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    let redelivered = mid_deliveries.values().filter(|d| d.len() > 1).count();
    let unconfirmed: Vec<&String> = sent.iter().filter(|id| !confirmed.contains(*id)).collect();
    Ok(WireVerdict {
        verdict: Verdict {
            sent: sent.len(),
            confirmed: confirmed.len(),
            delivered: sent.iter().filter(|id| delivered(id)).count(),
            unconfirmed_delivered: unconfirmed.iter().filter(|id| delivered(id)).count(),
            unconfirmed_lost: unconfirmed.iter().filter(|id| !delivered(id)).count(),
        },
        frames,
        redelivered,
        acks_confirmed: acks.len(),
    })
}

/// The epochs of every `Promoted to master` line of a process log, in order.
pub fn promoted_epochs(log: &[String]) -> Vec<u64> {
    log.iter()
        .filter(|l| l.contains("Promoted to master"))
        .filter_map(|l| {
            let i = l.find("epoch=")? + "epoch=".len();
            l[i..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

mod load;

#[allow(unused_imports)]
pub use load::{quick_client, LoadGen, LoadSpec};

use std::sync::Arc;
use std::time::Duration;

/// A producer and a consumer through the cluster, recording into a [`History`] (the consumer
/// at the wire level, see [`LoadGen`]).
pub struct Load {
    /// Sends the producer makes at most.
    pub max: usize,
    pub confirmed: Arc<std::sync::atomic::AtomicUsize>,
    pub delivered: Arc<std::sync::atomic::AtomicUsize>,
    gen: LoadGen,
}

impl Load {
    /// Sends up to `max` persistent messages with receipts to `/queue/rep`, one at a time and
    /// paced, while a client-individual consumer receives them and acks each with a receipt.
    pub fn start(uri: &str, history: Arc<History>, max: usize) -> Load {
        let spec = LoadSpec {
            producers: 1,
            window: 1,
            consumers: 1,
            msg_bytes: 0,
            destination: "/queue/rep".into(),
            max_per_producer: Some(max),
            // Paced, so that the load is still running when a test's fault hits (a fast
            // machine would otherwise finish `max` sends before the fault).
            pace: Duration::from_millis(20),
            consume_during: true,
        };
        let gen = LoadGen::start(uri, history, spec);
        Load {
            max,
            confirmed: gen.confirmed.clone(),
            delivered: gen.delivered.clone(),
            gen,
        }
    }

    /// Waits (bounded) until at least `n` messages were confirmed.
    pub async fn wait_confirmed(&self, n: usize, timeout: Duration) -> bool {
        self.gen.wait_confirmed(n, timeout).await
    }

    /// Lets the producer finish (or stops it) and waits for the consumer to drain.
    pub async fn finish(self, stop_producing: bool) {
        self.gen
            .finish(
                stop_producing,
                Duration::from_secs(3),
                Duration::from_secs(300),
            )
            .await;
    }
}

/// Three `ferromq serve` processes of one replicated group.
pub struct Cluster {
    pub base: PathBuf,
    pub ports: Vec<u16>,
    pub procs: Vec<Option<crate::support::Proc>>,
    pub zk: String,
    pub zk_path: String,
    pub extra: String,
    /// Extra `[store]` lines.
    pub store_extra: String,
    /// Extra `[transports]` lines.
    pub transports_extra: String,
    /// `broker.name`: the group.
    pub group: String,
    generation: usize,
    dead_logs: Vec<Vec<String>>,
}

impl Cluster {
    pub fn new(base: &Path, zk: &str, name: &str, extra: &str) -> Cluster {
        Cluster::with_members(base, zk, name, extra, 3)
    }

    /// A group of `n` members (`replicas = n`: the quorum is a majority of `n`).
    pub fn with_members(base: &Path, zk: &str, name: &str, extra: &str, n: usize) -> Cluster {
        Cluster {
            base: base.to_path_buf(),
            ports: (0..n).map(|_| crate::support::free_port()).collect(),
            procs: (0..n).map(|_| None).collect(),
            zk: zk.to_string(),
            zk_path: unique_zk_path(name),
            extra: extra.to_string(),
            store_extra: String::new(),
            transports_extra: String::new(),
            group: "rep".into(),
            generation: 0,
            dead_logs: Vec::new(),
        }
    }

    pub fn start(&mut self, i: usize) {
        self.generation += 1;
        let dir = self.base.join(format!("b{i}"));
        let cfg = replicated_config_with_store(
            &self.group,
            &dir,
            self.ports[i],
            &self.zk,
            &self.zk_path,
            &self.store_extra,
            &self.extra,
        )
        // The config template is written for three members.
        .replace(
            "replicas = 3\n",
            &format!("replicas = {}\n", self.ports.len()),
        )
        .replace(
            "[transports]\n",
            &format!("[transports]\n{}", self.transports_extra),
        );
        self.procs[i] = Some(crate::support::Proc::start(
            &format!("b{i}-{}", self.generation),
            &self.base,
            self.ports[i],
            &cfg,
        ));
    }

    pub fn uri(&self) -> String {
        let list: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("tcp://127.0.0.1:{p}"))
            .collect();
        format!(
            "failover:({})?randomize=false&initialReconnectDelay=10&maxReconnectDelay=200",
            list.join(",")
        )
    }

    pub fn proc(&self, i: usize) -> &crate::support::Proc {
        self.procs[i].as_ref().expect("process not running")
    }

    /// The running processes whose STOMP port accepts (a frozen one's may still accept).
    pub fn accepting(&self, except: &[usize]) -> Vec<usize> {
        (0..self.ports.len())
            .filter(|i| !except.contains(i))
            .filter(|i| self.procs[*i].as_ref().is_some_and(|p| p.accepts()))
            .collect()
    }

    /// Waits (bounded) until one process other than `except` accepts clients; returns it and
    /// how long that took.
    pub fn wait_master(&self, except: &[usize], timeout: Duration) -> Option<(usize, Duration)> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(i) = self.accepting(except).first() {
                return Some((*i, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill9();
            // Keep its log for the epoch check.
            self.dead_logs.push(p.log.lock().unwrap().clone());
        }
    }

    /// Every log line of every process this cluster ran.
    pub fn all_logs(&self) -> Vec<Vec<String>> {
        let mut v = self.dead_logs.clone();
        for p in self.procs.iter().flatten() {
            v.push(p.log.lock().unwrap().clone());
        }
        v
    }

    /// Each mastership's epoch appears once in all logs: never two masters of one epoch.
    pub fn assert_epochs_unique(&self) {
        let mut all: Vec<u64> = self
            .all_logs()
            .iter()
            .flat_map(|l| promoted_epochs(l))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "two promotions with the same epoch: {all:?}");
        assert!(n >= 1, "nobody was ever promoted");
    }
}

/// Restarts any ensemble node that is down, whatever happens to the test.
pub struct EnsembleNodeBack;

impl Drop for EnsembleNodeBack {
    fn drop(&mut self) {
        // The checkout under test, read when the test runs: cargo sets CARGO_MANIFEST_DIR for
        // the test process, while the compile-time value names whichever checkout built the
        // binary — another clone sharing the target dir, possibly deleted since.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let script = manifest.join("../../scripts/services.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        // A drop cannot fail the test, but the next test that needs the ensemble would fail
        // for a reason it cannot see: say it here.
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!(
                "could not restart the ZooKeeper ensemble with {}: {status:?}",
                script.display()
            );
        }
    }
}

pub fn ensemble_pidfile(n: usize) -> String {
    let base = std::env::var("FERROMQ_SERVICES_DIR")
        .unwrap_or_else(|_| "/var/tmp/ferromq-services".into());
    format!("{base}/zk/ens{n}/zk.pid")
}

/// Stops node `n` of the ensemble (the test holds an [`EnsembleNodeBack`] to restart it).
pub fn stop_ensemble_node(n: usize) {
    let pidfile = ensemble_pidfile(n);
    let ok = std::process::Command::new("start-stop-daemon")
        .args(["--stop", "--pidfile", &pidfile, "--retry", "TERM/10/KILL/5"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "could not stop ZooKeeper ensemble node {n} ({pidfile})");
}

/// A uid no account uses: the partition test runs one broker under it so that an iptables
/// `owner` rule can cut exactly that process off the (loopback) network.
pub const PARTITION_UID: u32 = 64_917;

impl Cluster {
    /// Starts broker `i` as [`PARTITION_UID`] (same config as [`Cluster::start`]).
    pub fn start_as_partition_uid(&mut self, i: usize) {
        use std::io::BufRead;
        use std::os::unix::fs::PermissionsExt;
        use std::process::{Command, Stdio};
        self.generation += 1;
        let dir = self.base.join(format!("b{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for d in [&self.base, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let cfg = replicated_config_with_store(
            &self.group,
            &dir,
            self.ports[i],
            &self.zk,
            &self.zk_path,
            &self.store_extra,
            &self.extra,
        )
        .replace(
            "[transports]\n",
            &format!("[transports]\n{}", self.transports_extra),
        );
        let name = format!("b{i}-{}", self.generation);
        let cfg_path = self.base.join(format!("{name}.toml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // The build directory may sit under a home only root can enter: run a copy.
        let bin = self.base.join("ferromq-partitioned");
        if !bin.exists() {
            std::fs::copy(crate::support::BIN, &bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let uid = PARTITION_UID.to_string();
        let mut child = Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
            .arg(&bin)
            .args(["--log", "info", "serve", "--config"])
            .arg(&cfg_path)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let tag = name.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("[{tag}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        self.procs[i] = Some(crate::support::Proc {
            name,
            child,
            port: self.ports[i],
            log,
        });
    }
}

/// Drops every packet sent by [`PARTITION_UID`]'s sockets while alive: that broker can
/// neither reach ZooKeeper nor its slaves nor answer clients. Removed on drop, whatever
/// happens to the test.
pub struct Partition {
    rule: Vec<String>,
}

impl Partition {
    pub fn isolate() -> Partition {
        let rule: Vec<String> = [
            "OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            &PARTITION_UID.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Partition::insert(rule)
    }
}

impl Partition {
    /// Like [`Partition::isolate`], but the broker still answers on its client port `port`:
    /// an asymmetric partition, cut off from ZooKeeper and its slaves while its clients stay
    /// connected to it (their packets come from other processes; its answers leave from
    /// `port`).
    pub fn isolate_except_client_port(port: u16) -> Partition {
        let rule: Vec<String> = [
            "OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            &PARTITION_UID.to_string(),
            "-p",
            "tcp",
            "!",
            "--sport",
            &port.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Partition::insert(rule)
    }
}

impl Partition {
    fn insert(rule: Vec<String>) -> Partition {
        let ok = std::process::Command::new("iptables")
            .args(["-w", "-I"])
            .args(&rule)
            .status()
            .unwrap()
            .success();
        assert!(ok, "iptables -I {rule:?} failed");
        Partition { rule }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .args(["-w", "-D"])
            .args(&self.rule)
            .status();
    }
}

/// The timestamp (RFC 3339, as the broker logs it) of the first line containing `needle`.
pub fn first_log_time(log: &[String], needle: &str) -> Option<String> {
    log.iter()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}
