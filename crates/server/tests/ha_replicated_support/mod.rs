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
    format!(
        "[broker]\nname = \"{group}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n[store]\nbackend = \"journal\"\n{store_extra}\n[ha]\nmode = \"replicated\"\nreplicas = 3\nzk_address = \"{zk}\"\nzk_path = \"{zk_path}\"\nzk_session_timeout_ms = 2000\nbind = \"tcp://127.0.0.1:0\"\nsecurity_token = \"test-token\"\n{extra}",
        data_dir.display()
    )
}

/// An append-only record of a fault run: `<micros since start> <event> <message id>` lines,
/// with `send` (an attempt), `confirm` (the broker's RECEIPT arrived) and `deliver` (the
/// application received it).
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
        let t = self.start.elapsed().as_micros();
        let mut out = self.out.lock().unwrap();
        writeln!(out, "{t} {event} {id}").unwrap();
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

/// Checks a history: no confirmed message lost, no message delivered that was never sent, no
/// message delivered twice, no confirmation of a message never sent. Returns every violation.
pub fn check_history(path: &Path) -> Result<Verdict, Vec<String>> {
    let f = std::fs::File::open(path).map_err(|e| vec![format!("open history: {e}")])?;
    let mut sent = HashSet::new();
    let mut confirmed = HashSet::new();
    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut bad = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| vec![format!("read history: {e}")])?;
        let mut parts = line.split_whitespace();
        let (Some(_t), Some(ev), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bad.push(format!("line {}: malformed {line:?}", n + 1));
            continue;
        };
        match ev {
            "send" => {
                sent.insert(id.to_string());
            }
            "confirm" => {
                if !sent.contains(id) {
                    bad.push(format!("{id} confirmed but never sent"));
                }
                confirmed.insert(id.to_string());
            }
            "deliver" => {
                if !sent.contains(id) {
                    bad.push(format!("{id} delivered but never sent"));
                }
                *delivered.entry(id.to_string()).or_default() += 1;
            }
            other => bad.push(format!("line {}: unknown event {other:?}", n + 1)),
        }
    }
    let mut lost: Vec<&String> = confirmed
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    lost.sort();
    if !lost.is_empty() {
        bad.push(format!(
            "{} confirmed message(s) never delivered, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    let mut dups: Vec<(&String, &usize)> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    dups.sort();
    if !dups.is_empty() {
        bad.push(format!(
            "{} message(s) delivered more than once, e.g. {:?}",
            dups.len(),
            &dups[..dups.len().min(5)]
        ));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    let unconfirmed: Vec<&String> = sent.iter().filter(|id| !confirmed.contains(*id)).collect();
    Ok(Verdict {
        sent: sent.len(),
        confirmed: confirmed.len(),
        delivered: delivered.len(),
        unconfirmed_delivered: unconfirmed
            .iter()
            .filter(|id| delivered.contains_key(**id))
            .count(),
        unconfirmed_lost: unconfirmed
            .iter()
            .filter(|id| !delivered.contains_key(**id))
            .count(),
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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferromq_client::{AckMode, ClientConfig, FailoverClient};

/// A client config that notices a frozen broker within a couple of seconds.
pub fn quick_client() -> ClientConfig {
    let mut c = ClientConfig::default();
    c.heart_beat.send_ms = 1000;
    c.heart_beat.recv_ms = 1000;
    c.receipt_timeout = Duration::from_secs(60);
    c
}

/// A producer and a consumer through `failover:` URIs, recording into a [`History`].
pub struct Load {
    /// Sends the producer makes at most.
    pub max: usize,
    pub confirmed: Arc<AtomicUsize>,
    pub delivered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    producer: tokio::task::JoinHandle<()>,
    consumer: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Sends up to `max` persistent messages with receipts to `/queue/rep`, one every 5 ms,
    /// while a client-individual consumer receives and acks them.
    pub fn start(uri: &str, history: Arc<History>, max: usize) -> Load {
        let confirmed = Arc::new(AtomicUsize::new(0));
        let delivered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicBool::new(false));
        let producer = {
            let (uri, h, confirmed, stop, produced) = (
                uri.to_string(),
                history.clone(),
                confirmed.clone(),
                stop.clone(),
                produced.clone(),
            );
            tokio::spawn(async move {
                let p = FailoverClient::connect(&uri, quick_client()).await.unwrap();
                for i in 0..max {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("m-{i}");
                    h.record("send", &id);
                    let r = tokio::time::timeout(
                        Duration::from_secs(90),
                        p.send_with_receipt("/queue/rep", id.clone(), &[("persistent", "true")]),
                    )
                    .await;
                    if let Ok(Ok(())) = r {
                        h.record("confirm", &id);
                        confirmed.fetch_add(1, Ordering::SeqCst);
                    }
                    // Paced, so that the load is still running when a test's fault hits (a
                    // fast machine would otherwise finish `max` sends before the fault).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                produced.store(true, Ordering::SeqCst);
                let _ = p.disconnect().await;
            })
        };
        let consumer = {
            let (uri, h, confirmed, delivered) = (
                uri.to_string(),
                history,
                confirmed.clone(),
                delivered.clone(),
            );
            tokio::spawn(async move {
                let c = FailoverClient::connect(&uri, quick_client()).await.unwrap();
                let mut s = c
                    .subscribe("/queue/rep", AckMode::ClientIndividual, &[("id", "rep")])
                    .await
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(240);
                let mut idle_since: Option<Instant> = None;
                while Instant::now() < deadline {
                    let Some(m) = s.next_timeout(Duration::from_millis(250)).await else {
                        // Done once the producer is, everything confirmed arrived, and a
                        // quiet spell let late redeliveries (duplicates) show themselves.
                        if produced.load(Ordering::SeqCst)
                            && delivered.load(Ordering::SeqCst) >= confirmed.load(Ordering::SeqCst)
                        {
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= Duration::from_secs(3) {
                                break;
                            }
                        }
                        continue;
                    };
                    idle_since = None;
                    let body = String::from_utf8_lossy(m.body()).into_owned();
                    h.record("deliver", &body);
                    delivered.fetch_add(1, Ordering::SeqCst);
                    // A lost ack means a redelivery, which the client's audit drops.
                    let _ = c.ack(&m, None).await;
                }
                let _ = c.disconnect().await;
            })
        };
        Load {
            max,
            confirmed,
            delivered,
            stop,
            producer,
            consumer,
        }
    }

    /// Waits (bounded) until at least `n` messages were confirmed.
    pub async fn wait_confirmed(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.confirmed.load(Ordering::SeqCst) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Lets the producer finish (or stops it) and waits for the consumer to drain.
    pub async fn finish(self, stop_producing: bool) {
        if stop_producing {
            self.stop.store(true, Ordering::SeqCst);
        }
        tokio::time::timeout(Duration::from_secs(300), self.producer)
            .await
            .expect("producer stuck")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(300), self.consumer)
            .await
            .expect("consumer stuck")
            .unwrap();
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
    generation: usize,
    dead_logs: Vec<Vec<String>>,
}

impl Cluster {
    pub fn new(base: &Path, zk: &str, name: &str, extra: &str) -> Cluster {
        Cluster {
            base: base.to_path_buf(),
            ports: (0..3).map(|_| crate::support::free_port()).collect(),
            procs: (0..3).map(|_| None).collect(),
            zk: zk.to_string(),
            zk_path: unique_zk_path(name),
            extra: extra.to_string(),
            store_extra: String::new(),
            generation: 0,
            dead_logs: Vec::new(),
        }
    }

    pub fn start(&mut self, i: usize) {
        self.generation += 1;
        let dir = self.base.join(format!("b{i}"));
        let cfg = replicated_config(
            "rep",
            &dir,
            self.ports[i],
            &self.zk,
            &self.zk_path,
            &self.extra,
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
        (0..3)
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
        let cfg = replicated_config(
            "rep",
            &dir,
            self.ports[i],
            &self.zk,
            &self.zk_path,
            &self.extra,
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
