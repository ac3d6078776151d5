//! ActiveMQ's own JMS client on a `failover:(…)` URI while the master is killed: every message
//! whose `send()` returned is delivered, and none is delivered again once its `acknowledge()`
//! returned (issue 15, item 5).
//!
//! The load is `tests/jms-chaos/JmsChaos.java` (persistent sends, CLIENT_ACKNOWLEDGE
//! consumers, full speed); faults are timed on its progress lines (confirmed sends), never on
//! sleeps.

mod ha_replicated_support;
mod jms_support;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{free_port, Proc};

/// One member of a shared-file pair, with OpenWire on `ow_port`.
fn shared_file_member(
    name: &str,
    dir: &Path,
    shared: &Path,
    port: u16,
    ow_port: u16,
    ha_extra: &str,
) -> Proc {
    let cfg = format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nopenwire = \"tcp://127.0.0.1:{ow_port}\"\n[store]\nbackend = \"journal\"\n[ha]\nmode = \"shared-file\"\nlock_keepalive_ms = 100\n{ha_extra}",
        shared.display()
    );
    Proc::start(name, dir, port, &cfg)
}

/// Waits (bounded) until `counter` reaches `target`; panics with `what` otherwise.
fn wait_for(counter: &AtomicUsize, target: usize, timeout: Duration, what: &str) {
    let start = Instant::now();
    while counter.load(Ordering::Acquire) < target {
        assert!(
            start.elapsed() < timeout,
            "{what}: {} of {target} after {timeout:?}",
            counter.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the chaos run's records show.
#[derive(Debug, Default)]
struct Verdict {
    /// Confirmed sends never received.
    missing: Vec<String>,
    /// Received again after an acknowledge() that returned: a real duplicate.
    after_ack: Vec<String>,
    /// Those of `after_ack` whose acknowledge() overlapped an interruption of the consumer's
    /// connection (JmsChaos's "raced" field): the ActiveMQ client can report such an ack as
    /// done without having sent it, so these point at the client, the others at the broker.
    after_ack_raced: Vec<String>,
    /// Acknowledge() calls that returned while overlapping an interruption (reported only).
    acks_raced: usize,
    /// Received again without the JMSRedelivered flag (reported only).
    unflagged: Vec<String>,
    /// Received more than once, each earlier ack having failed (JMS's at-least-once).
    redelivered: usize,
}

/// Judges `received` ("seq body redelivered ackOk raced" lines) against the confirmed bodies.
fn judge(confirmed: &[String], received: &str) -> Verdict {
    let mut events: Vec<(u64, &str, bool, bool, bool)> = received
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((
                f.next()?.parse().ok()?,
                f.next()?,
                f.next()? == "1",
                f.next()? == "1",
                f.next() == Some("1"),
            ))
        })
        .collect();
    events.sort_by_key(|e| e.0);
    let mut v = Verdict::default();
    // Per body: whether its last receive was acknowledged, and whether that ack raced an
    // interruption of its connection.
    let mut seen: std::collections::HashMap<&str, (bool, bool)> = std::collections::HashMap::new();
    for (_, body, redelivered, acked, raced) in events {
        if acked && raced {
            v.acks_raced += 1;
        }
        match seen.get(body).copied() {
            None => {
                seen.insert(body, (acked, raced));
            }
            Some((true, ack_raced)) => {
                v.after_ack.push(body.to_string());
                if ack_raced {
                    v.after_ack_raced.push(body.to_string());
                }
            }
            Some((false, _)) => {
                v.redelivered += 1;
                if !redelivered {
                    v.unflagged.push(body.to_string());
                }
                seen.insert(body, (acked, raced));
            }
        }
    }
    v.missing = confirmed
        .iter()
        .filter(|c| !seen.contains_key(c.as_str()))
        .cloned()
        .collect();
    v
}

/// A group of brokers the chaos run can kill and restart.
trait Group {
    /// The failover URI over every member's OpenWire port.
    fn url(&self) -> String;
    /// The member serving now (waits, bounded).
    fn master(&self) -> usize;
    /// kill -9 of member `i`, then waits until another member serves.
    fn kill_and_wait_takeover(&mut self, i: usize);
    /// Starts member `i` again (it joins as a slave).
    fn restart(&mut self, i: usize);
}

/// Runs JmsChaos against `group`, killing its master `kills` times, each once another fifth of
/// the sends was confirmed, and judges the records.
fn run_chaos(group: &mut dyn Group, name: &str, kills: usize) {
    let cp = jms_support::compile("tests/jms-chaos", name);
    let dir = tempfile::tempdir().unwrap();
    let producers = 4;
    let per_producer = 4000;
    let out = dir.path().join("out");
    let mut java = jms_support::java(&cp, "JmsChaos")
        .args(["--url", &group.url(), "--queue", &format!("chaos.{name}")])
        .args(["--producers", &producers.to_string()])
        .args(["--consumers", "2"])
        .args(["--messages", &per_producer.to_string()])
        .args(["--max-ms", "240000", "--quiet-ms", "5000"])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("java");
    let confirmed = Arc::new(AtomicUsize::new(0));
    let summary = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let stdout = java.stdout.take().unwrap();
        let confirmed = confirmed.clone();
        let summary = summary.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("progress confirmed=") {
                    if let Some(n) = rest.split(' ').next().and_then(|n| n.parse().ok()) {
                        confirmed.store(n, Ordering::Release);
                    }
                } else {
                    eprintln!("[jms] {line}");
                    if line.starts_with("summary") {
                        *summary.lock().unwrap() = line;
                    }
                }
            }
        })
    };
    let total = producers * per_producer;
    for round in 0..kills {
        let target = (round + 1) * total / (kills + 2);
        wait_for(
            &confirmed,
            target,
            Duration::from_secs(120),
            "confirmed sends before the kill",
        );
        let m = group.master();
        group.kill_and_wait_takeover(m);
        group.restart(m);
    }
    let status = java.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "JmsChaos failed: {status}");
    let confirmed: Vec<String> = std::fs::read_to_string(out.join("confirmed.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let verdict = judge(
        &confirmed,
        &std::fs::read_to_string(out.join("received.txt")).unwrap(),
    );
    eprintln!("{}", summary.lock().unwrap());
    eprintln!(
        "{} messages redelivered after a failed acknowledge (at-least-once, as in ActiveMQ)",
        verdict.redelivered
    );
    eprintln!(
        "{} acknowledge() calls returned across an interruption of their connection",
        verdict.acks_raced
    );
    assert!(
        confirmed.len() >= total * 9 / 10,
        "too few confirmed sends to judge: {} of {total}",
        confirmed.len()
    );
    assert!(
        verdict.missing.is_empty(),
        "{} confirmed messages never delivered, e.g. {:?}",
        verdict.missing.len(),
        &verdict.missing[..verdict.missing.len().min(10)]
    );
    // An acknowledge() that overlapped an interruption of its connection may have returned
    // without its ack reaching any broker: ActiveMQ's FailoverTransport answers a MessageAck
    // itself while disconnected, and a CLIENT_ACKNOWLEDGE consumer drops its delivered list on
    // an interruption, so its next acknowledge() sends nothing. No broker can refuse an ack it
    // never got; such a redelivery is the client's at-least-once, and ActiveMQ's broker gives
    // the same. An ack made and answered on one uninterrupted connection reached the broker
    // that delivered the message, and a redelivery after it is the broker's fault.
    let broker_duplicates: Vec<&String> = verdict
        .after_ack
        .iter()
        .filter(|b| !verdict.after_ack_raced.contains(b))
        .collect();
    eprintln!(
        "{} messages delivered again after an acknowledge() that raced an interruption of its \
         connection (the client may not have sent it), e.g. {:?}",
        verdict.after_ack_raced.len(),
        &verdict.after_ack_raced[..verdict.after_ack_raced.len().min(10)]
    );
    assert!(
        broker_duplicates.is_empty(),
        "{} messages delivered again after an acknowledge() that returned on an uninterrupted \
         connection, e.g. {:?}",
        broker_duplicates.len(),
        &broker_duplicates[..broker_duplicates.len().min(10)]
    );
    // A new master knows nothing of its predecessor's deliveries (delivery counts are not
    // stored, as in ActiveMQ without persistJMSRedelivered), so a message redelivered after a
    // failover may lack JMSRedelivered: reported, not judged.
    eprintln!(
        "{} second deliveries without JMSRedelivered (after a failover)",
        verdict.unflagged.len()
    );
}

/// Two brokers on one shared data directory (`ha.mode = "shared-file"`).
struct SharedFilePair {
    /// Clients are given only the first member and learn the second from it
    /// (`update_cluster_clients`).
    learn: bool,
    dir: tempfile::TempDir,
    shared: std::path::PathBuf,
    ports: [(u16, u16); 2],
    procs: [Option<Proc>; 2],
}

impl SharedFilePair {
    fn start(learn: bool) -> SharedFilePair {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let ports = [(free_port(), free_port()), (free_port(), free_port())];
        let mut pair = SharedFilePair {
            learn,
            dir,
            shared,
            ports,
            procs: [None, None],
        };
        pair.restart(0);
        pair.procs[0]
            .as_ref()
            .unwrap()
            .wait_accepting(Duration::from_secs(30))
            .expect("the first member becomes master");
        pair.restart(1);
        pair
    }
}

impl Group for SharedFilePair {
    fn url(&self) -> String {
        if self.learn {
            return format!(
                "failover:(tcp://127.0.0.1:{})?randomize=false&initialReconnectDelay=20&maxReconnectDelay=200",
                self.ports[0].1
            );
        }
        format!(
            "failover:(tcp://127.0.0.1:{},tcp://127.0.0.1:{})?randomize=false&initialReconnectDelay=20&maxReconnectDelay=200",
            self.ports[0].1, self.ports[1].1
        )
    }

    fn master(&self) -> usize {
        let start = Instant::now();
        loop {
            for i in 0..2 {
                if self.procs[i].as_ref().is_some_and(|p| p.accepts()) {
                    return i;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no master");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_and_wait_takeover(&mut self, i: usize) {
        self.procs[i].as_mut().unwrap().kill9();
        self.procs[1 - i]
            .as_ref()
            .unwrap()
            .wait_accepting(Duration::from_secs(30))
            .expect("the slave takes over");
    }

    fn restart(&mut self, i: usize) {
        let name = if i == 0 { "a" } else { "b" };
        self.procs[i] = Some(shared_file_member(
            name,
            self.dir.path(),
            &self.shared,
            self.ports[i].0,
            self.ports[i].1,
            if self.learn {
                "update_cluster_clients = true\n"
            } else {
                ""
            },
        ));
    }
}

/// Three brokers replicating through ZooKeeper (`ha.mode = "replicated"`, `quorum_disk`).
struct ReplicatedGroup {
    dir: tempfile::TempDir,
    zk_path: String,
    ports: Vec<(u16, u16)>,
    procs: Vec<Option<Proc>>,
    generation: usize,
}

impl ReplicatedGroup {
    fn start() -> ReplicatedGroup {
        let mut g = ReplicatedGroup {
            dir: tempfile::tempdir().unwrap(),
            zk_path: ha_replicated_support::unique_zk_path("openwire-chaos"),
            ports: (0..3).map(|_| (free_port(), free_port())).collect(),
            procs: vec![None, None, None],
            generation: 0,
        };
        for i in 0..3 {
            g.restart(i);
        }
        g.master();
        g
    }
}

impl Group for ReplicatedGroup {
    fn url(&self) -> String {
        let list: Vec<String> = self
            .ports
            .iter()
            .map(|(_, o)| format!("tcp://127.0.0.1:{o}"))
            .collect();
        format!(
            "failover:({})?randomize=false&initialReconnectDelay=20&maxReconnectDelay=200",
            list.join(",")
        )
    }

    fn master(&self) -> usize {
        let start = Instant::now();
        loop {
            for (i, p) in self.procs.iter().enumerate() {
                if p.as_ref().is_some_and(|p| p.accepts()) {
                    return i;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no master");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_and_wait_takeover(&mut self, i: usize) {
        self.procs[i].as_mut().unwrap().kill9();
        self.procs[i] = None;
        self.master();
    }

    fn restart(&mut self, i: usize) {
        self.generation += 1;
        let (port, ow) = self.ports[i];
        let cfg = ha_replicated_support::replicated_config(
            "owrep",
            &self.dir.path().join(format!("b{i}")),
            port,
            &ha_replicated_support::zk_standalone(),
            &self.zk_path,
            "",
        )
        .replace(
            "[transports]\n",
            &format!("[transports]\nopenwire = \"tcp://127.0.0.1:{ow}\"\n"),
        );
        self.procs[i] = Some(Proc::start(
            &format!("b{i}-{}", self.generation),
            self.dir.path(),
            port,
            &cfg,
        ));
    }
}

#[test]
fn jms_clients_on_a_failover_uri_lose_nothing_when_the_shared_file_master_is_killed() {
    let mut pair = SharedFilePair::start(false);
    run_chaos(&mut pair, "shared-file", 3);
}

/// The client is given only the first broker; it learns the second from the ConnectionControl
/// the master sends (`update_cluster_clients`), and must find it when the first is killed.
#[test]
fn a_jms_client_given_one_broker_learns_the_group_and_fails_over() {
    let mut pair = SharedFilePair::start(true);
    run_chaos(&mut pair, "learn", 1);
}

#[test]
fn jms_clients_on_a_failover_uri_lose_nothing_when_the_replicated_master_is_killed() {
    let mut group = ReplicatedGroup::start();
    run_chaos(&mut group, "replicated", 3);
}

#[test]
fn the_judge_tells_duplicates_after_an_ack_that_raced_a_failover_from_the_others() {
    let confirmed: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    // a: acked, then again (ack raced an interruption); b: acked, then again (no race);
    // c: ack failed, then redelivered; d: once. Old four-field lines still parse.
    let received = "1 a 0 1 1\n2 b 0 1 0\n3 c 0 0 1\n4 a 1 1 0\n5 b 1 1\n6 c 1 1 0\n7 d 0 1 0\n";
    let v = judge(&confirmed, received);
    assert_eq!(v.after_ack, ["a", "b"]);
    assert_eq!(v.after_ack_raced, ["a"]);
    assert_eq!(v.redelivered, 1);
    assert_eq!(v.acks_raced, 1, "a's first receive; c's ack failed");
    assert!(v.missing.is_empty() && v.unflagged.is_empty());
}
