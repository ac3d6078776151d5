//! Networks of brokers: brokers in one test process, joined by `[[network_connectors]]` over
//! loopback STOMP, as an operator configures them. Every wait is bounded and waits for a
//! positive event (a message arriving, a count reached); "nothing arrived" is shown by finding
//! the messages where they must be instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferromq_client::{AckMode, Client, ClientConfig, Subscription};
use ferromq_server::config::Config;
use ferromq_server::server::Server;

mod support;
use support::{free_port, BIN};

const WAIT: Duration = Duration::from_secs(20);

/// Runs `ferromq serve` with `config`; it must exit (an error), returning its stderr.
fn serve_fails(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve accepted:\n{config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const BASE: &str =
    "[broker]\nname = \"net-test\"\n[transports]\nstomp = \"127.0.0.1:0\"\n[store]\nbackend = \"memory\"\n";

#[test]
fn a_bad_discovery_uri_is_named() {
    let err = serve_fails(&format!(
        "{BASE}[[network_connectors]]\nname = \"to-b\"\nuri = \"multicast://default?noSuchOption=1\"\n"
    ));
    assert!(
        err.contains("to-b") && err.contains("noSuchOption"),
        "{err}"
    );
    let err = serve_fails(
        "[broker]\nname = \"x\"\n[transports]\nstomp = \"127.0.0.1:0\"\ndiscovery = \"zookeeper://\"\n[store]\nbackend = \"memory\"\n",
    );
    assert!(err.contains("transports.discovery"), "{err}");
}

#[test]
fn unsupported_activemq_options_are_named() {
    let err = serve_fails(&format!(
        "{BASE}[[network_connectors]]\nuri = \"static:(tcp://127.0.0.1:1)\"\nbridge_temp_destinations = false\n"
    ));
    assert!(
        err.contains("bridge_temp_destinations") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn a_bad_uri_is_named() {
    let err = serve_fails(&format!(
        "{BASE}[[network_connectors]]\nuri = \"static:(tcp://127.0.0.1)\"\n"
    ));
    assert!(err.contains("tcp://127.0.0.1"), "{err}");
}

/// Brokers of one test, by name, each with a fixed port and data directory (so a broker can be
/// restarted where it was).
struct Net {
    ports: HashMap<String, u16>,
    dirs: HashMap<String, PathBuf>,
    servers: HashMap<String, Server>,
    _root: tempfile::TempDir,
}

impl Net {
    fn new(names: &[&str]) -> Net {
        let root = tempfile::tempdir().unwrap();
        let mut ports = HashMap::new();
        let mut dirs = HashMap::new();
        for n in names {
            ports.insert(n.to_string(), free_port());
            dirs.insert(n.to_string(), root.path().join(n));
        }
        Net {
            ports,
            dirs,
            servers: HashMap::new(),
            _root: root,
        }
    }

    fn addr(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.ports[name])
    }

    /// A connector table from `name` to `to` (`extra`: more options).
    fn connector(&self, to: &[&str], extra: &str) -> String {
        let uris: Vec<String> = to
            .iter()
            .map(|t| format!("tcp://{}", self.addr(t)))
            .collect();
        format!(
            "[[network_connectors]]\nname = \"to-{}\"\nuri = \"static:({})\"\ninitial_reconnect_delay_ms = 50\nmax_reconnect_delay_ms = 500\n{extra}\n",
            to.join("-"),
            uris.join(",")
        )
    }

    /// Starts broker `name` with `connectors` (TOML tables).
    async fn start(&mut self, name: &str, connectors: &str) {
        self.start_with(name, "", connectors).await
    }

    /// Starts broker `name` with more `[transports]` keys and `connectors`.
    async fn start_with(&mut self, name: &str, transports: &str, connectors: &str) {
        let dir = &self.dirs[name];
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("ferromq.toml");
        std::fs::write(
            &p,
            format!(
                "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"{}\"\n{transports}{connectors}",
                dir.join("data").display(),
                self.addr(name)
            ),
        )
        .unwrap();
        let cfg = Config::load(Some(&p), Vec::new()).unwrap();
        let server = Server::start(cfg).await.unwrap();
        self.servers.insert(name.to_string(), server);
    }

    async fn stop(&mut self, name: &str) {
        let s = self.servers.remove(name).unwrap();
        s.shutdown().await.unwrap();
    }

    async fn client(&self, name: &str) -> Client {
        Client::connect(&self.addr(name), ClientConfig::default())
            .await
            .unwrap()
    }

    /// A queue's depth (pending + in flight), messages ever enqueued and consumers attached
    /// on one broker (zeros if it does not exist).
    fn queue(&self, broker: &str, queue: &str) -> (u64, u64, u64) {
        let key = format!("queue://{queue}");
        self.servers[broker]
            .broker
            .snapshot()
            .into_iter()
            .find(|s| s.name == key)
            .map_or((0, 0, 0), |s| {
                (s.pending + s.inflight, s.stats.enqueued, s.consumers)
            })
    }

    /// Waits until `broker`'s bridges hold `n` network consumers in all.
    async fn wait_network_consumers(&self, broker: &str, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let have: u64 = self.servers[broker]
                .bridges
                .snapshot()
                .iter()
                .map(|b| b.stats.consumers.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            if have == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{broker}: {have} network consumers, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `broker` runs `n` bridges.
    async fn wait_bridges(&self, broker: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let have = self.servers[broker].bridges.snapshot().len();
            if have == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{broker}: {have} bridges, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a queue on `broker` holds `n` messages.
    async fn wait_depth(&self, broker: &str, queue: &str, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (depth, _, _) = self.queue(broker, queue);
            if depth == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{broker} {queue}: depth {depth}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn send_n(c: &Client, dest: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut handles = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        handles.push(
            c.send_receipt_handle(dest, body.clone(), &[("persistent", "true")])
                .await
                .unwrap(),
        );
        bodies.push(body);
    }
    for h in handles {
        h.wait().await.unwrap();
    }
    bodies
}

/// Receives (and acks) exactly `n` messages, failing after [`WAIT`] without one.
async fn recv_n(c: &Client, sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = sub
            .next_timeout(WAIT)
            .await
            .unwrap_or_else(|| panic!("received {} of {n}", got.len()));
        got.push(String::from_utf8_lossy(m.body()).into_owned());
        c.ack(&m, None).await.unwrap();
    }
    got
}

async fn subscribe(c: &Client, dest: &str) -> Subscription {
    c.subscribe(dest, AckMode::ClientIndividual, &[])
        .await
        .unwrap()
}

fn assert_exactly_once(got: &[String], sent: &[String]) {
    let mut g = got.to_vec();
    g.sort();
    let before = g.len();
    g.dedup();
    assert_eq!(before, g.len(), "duplicates delivered");
    let mut s = sent.to_vec();
    s.sort();
    assert_eq!(g, s, "not the messages sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_b_drains_a_queue_produced_on_a() {
    let mut net = Net::new(&["a", "b"]);
    net.start("b", "").await;
    let to_b = net.connector(&["b"], "");
    net.start("a", &to_b).await;
    let pa = net.client("a").await;
    // Produced before anyone consumes anywhere: held on a.
    let sent = send_n(&pa, "/queue/orders", "m", 300).await;
    let cb = net.client("b").await;
    let mut sub = subscribe(&cb, "/queue/orders").await;
    let got = recv_n(&cb, &mut sub, 300).await;
    assert_exactly_once(&got, &sent);
    // One bridge keeps the producer's order.
    assert_eq!(got, sent);
    // Forwarded messages leave a once b confirmed them.
    net.wait_depth("a", "orders", 0).await;
    assert_eq!(net.queue("a", "orders").1, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_moves_without_demand_and_local_consumers_win() {
    let mut net = Net::new(&["a", "b"]);
    net.start("b", "").await;
    let to_b = net.connector(&["b"], "");
    net.start("a", &to_b).await;
    let pa = net.client("a").await;
    let cb = net.client("b").await;
    // The bridge works: a probe reaches b's consumer.
    let mut probe = subscribe(&cb, "/queue/probe").await;
    net.wait_network_consumers("a", 1).await;
    send_n(&pa, "/queue/probe", "p", 1).await;
    recv_n(&cb, &mut probe, 1).await;
    // No consumer of /queue/idle anywhere: its messages stay on a.
    let idle = send_n(&pa, "/queue/idle", "i", 50).await;
    // A later probe went through the same bridge, so the bridge has seen everything before it.
    send_n(&pa, "/queue/probe", "p2", 1).await;
    recv_n(&cb, &mut probe, 1).await;
    assert_eq!(net.queue("b", "idle").1, 0);
    let ca = net.client("a").await;
    let mut s = subscribe(&ca, "/queue/idle").await;
    assert_exactly_once(&recv_n(&ca, &mut s, 50).await, &idle);

    // Consumers on both brokers: the local one (with room) gets everything.
    let mut local = subscribe(&ca, "/queue/work").await;
    let mut remote = subscribe(&cb, "/queue/work").await;
    net.wait_network_consumers("a", 2).await;
    let work = send_n(&pa, "/queue/work", "w", 100).await;
    assert_exactly_once(&recv_n(&ca, &mut local, 100).await, &work);
    assert_eq!(net.queue("b", "work").1, 0);
    // Once the local consumer leaves, the remote one is served.
    local.unsubscribe().await.unwrap();
    let more = send_n(&pa, "/queue/work", "x", 20).await;
    assert_exactly_once(&recv_n(&cb, &mut remote, 20).await, &more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_fan_out_across_a_full_mesh_once_each() {
    let mut net = Net::new(&["a", "b", "c"]);
    let ab = net.connector(&["b", "c"], "");
    let ba = net.connector(&["a", "c"], "");
    let ca = net.connector(&["a", "b"], "");
    net.start("a", &ab).await;
    net.start("b", &ba).await;
    net.start("c", &ca).await;
    let mut clients = Vec::new();
    for n in ["a", "b", "c"] {
        let c = net.client(n).await;
        let s = subscribe(&c, "/topic/news").await;
        clients.push((n, c, s));
    }
    // Each broker forwards the topic to the two others (conduit: one consumer per bridge).
    for n in ["a", "b", "c"] {
        net.wait_network_consumers(n, 2).await;
    }
    let pa = net.client("a").await;
    let pb = net.client("b").await;
    let mut sent = send_n(&pa, "/topic/news", "from-a", 40).await;
    sent.extend(send_n(&pb, "/topic/news", "from-b", 40).await);
    // An end marker from each producer: on each path it comes after that producer's messages.
    send_n(&pa, "/topic/news", "end-a", 1).await;
    send_n(&pb, "/topic/news", "end-b", 1).await;
    for (n, c, s) in &mut clients {
        let mut got = Vec::new();
        let mut ends = 0;
        while ends < 2 {
            let m = s
                .next_timeout(WAIT)
                .await
                .unwrap_or_else(|| panic!("{n}: received {}", got.len()));
            let body = String::from_utf8_lossy(m.body()).into_owned();
            c.ack(&m, None).await.unwrap();
            if body.starts_with("end-") {
                ends += 1;
            } else {
                got.push(body);
            }
        }
        assert_exactly_once(&got, &sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ttl_bounds_hops_and_demand_never_loops_in_a_ring() {
    for ttl in [1, 2] {
        // A one-way ring a -> b -> c -> a.
        let mut net = Net::new(&["a", "b", "c"]);
        let extra = format!("network_ttl = {ttl}");
        let to_b = net.connector(&["b"], &extra);
        let to_c = net.connector(&["c"], &extra);
        let to_a = net.connector(&["a"], &extra);
        net.start("a", &to_b).await;
        net.start("b", &to_c).await;
        net.start("c", &to_a).await;
        let cc = net.client("c").await;
        let mut sub = subscribe(&cc, "/queue/q").await;
        // b forwards to c's consumer; a hears of it through b only with ttl 2; c never
        // re-learns its own demand through a (the path names c).
        net.wait_network_consumers("b", 1).await;
        net.wait_network_consumers("a", u64::from(ttl == 2)).await;
        net.wait_network_consumers("c", 0).await;
        let pa = net.client("a").await;
        let sent = send_n(&pa, "/queue/q", "m", 30).await;
        if ttl == 2 {
            assert_exactly_once(&recv_n(&cc, &mut sub, 30).await, &sent);
        } else {
            // Out of reach with one hop: the messages are on a.
            net.wait_depth("a", "q", 30).await;
            let ca = net.client("a").await;
            let mut s = subscribe(&ca, "/queue/q").await;
            assert_exactly_once(&recv_n(&ca, &mut s, 30).await, &sent);
        }
        for n in ["a", "b", "c"] {
            net.stop(n).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_messages_move_on_when_their_consumers_leave() {
    let mut net = Net::new(&["a", "b"]);
    let to_b = net.connector(&["b"], "");
    let to_a = net.connector(&["a"], "");
    net.start("a", &to_b).await;
    net.start("b", &to_a).await;
    let cb = net.client("b").await;
    let mut sub = subscribe(&cb, "/queue/jobs").await;
    net.wait_network_consumers("a", 1).await;
    let pa = net.client("a").await;
    let sent = send_n(&pa, "/queue/jobs", "j", 100).await;
    // Everything went to b, where the consumer takes 10 and leaves.
    net.wait_depth("a", "jobs", 0).await;
    let mut got = recv_n(&cb, &mut sub, 10).await;
    sub.unsubscribe().await.unwrap();
    net.wait_depth("b", "jobs", 90).await;
    // A consumer appears back on a: the 90 stranded on b move on to it.
    let ca = net.client("a").await;
    let mut back = subscribe(&ca, "/queue/jobs").await;
    got.extend(recv_n(&ca, &mut back, 90).await);
    assert_exactly_once(&got, &sent);
    net.wait_depth("b", "jobs", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_destinations_stay_and_static_ones_go_without_demand() {
    let mut net = Net::new(&["a", "b"]);
    net.start("b", "").await;
    let to_b = net.connector(
        &["b"],
        "excluded_destinations = [\"/queue/secret.>\"]\nstatically_included_destinations = [\"queue://static\"]",
    );
    net.start("a", &to_b).await;
    let pa = net.client("a").await;
    let cb = net.client("b").await;
    let mut open = subscribe(&cb, "/queue/open").await;
    let _secret = subscribe(&cb, "/queue/secret.x").await;
    // The static destination plus /queue/open; /queue/secret.x is excluded.
    net.wait_network_consumers("a", 2).await;
    let secret = send_n(&pa, "/queue/secret.x", "s", 20).await;
    let opened = send_n(&pa, "/queue/open", "o", 20).await;
    assert_exactly_once(&recv_n(&cb, &mut open, 20).await, &opened);
    // No consumer of /queue/static anywhere, yet it goes to b.
    let statics = send_n(&pa, "/queue/static", "st", 20).await;
    net.wait_depth("b", "static", 20).await;
    let mut st = subscribe(&cb, "/queue/static").await;
    assert_exactly_once(&recv_n(&cb, &mut st, 20).await, &statics);
    // The excluded messages are still on a.
    assert_eq!(net.queue("a", "secret.x").0, 20);
    let ca = net.client("a").await;
    let mut s = subscribe(&ca, "/queue/secret.x").await;
    assert_exactly_once(&recv_n(&ca, &mut s, 20).await, &secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_reconnects_after_the_remote_restarts() {
    let mut net = Net::new(&["a", "b"]);
    net.start("b", "").await;
    let to_b = net.connector(&["b"], "");
    net.start("a", &to_b).await;
    let pa = net.client("a").await;
    {
        let cb = net.client("b").await;
        let mut sub = subscribe(&cb, "/queue/r").await;
        let first = send_n(&pa, "/queue/r", "first", 10).await;
        assert_exactly_once(&recv_n(&cb, &mut sub, 10).await, &first);
        // DISCONNECT waits for its receipt, so the acks before it are done.
        drop(sub);
        cb.disconnect().await.unwrap();
    }
    net.stop("b").await;
    // b is down: the messages wait on a.
    let during = send_n(&pa, "/queue/r", "during", 30).await;
    net.wait_depth("a", "r", 30).await;
    net.start("b", "").await;
    let cb = net.client("b").await;
    let mut sub = subscribe(&cb, "/queue/r").await;
    assert_exactly_once(&recv_n(&cb, &mut sub, 30).await, &during);
    let connects = net.servers["a"].bridges.snapshot()[0]
        .stats
        .connects
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(connects >= 2, "{connects} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplex_connector_carries_both_directions() {
    let mut net = Net::new(&["a", "b"]);
    // Only a is configured; b learns nothing and runs no bridge of its own.
    net.start("b", "").await;
    let to_b = net.connector(&["b"], "duplex = true");
    net.start("a", &to_b).await;
    let (ca, cb) = (net.client("a").await, net.client("b").await);
    let mut on_a = subscribe(&ca, "/queue/to-a").await;
    let mut on_b = subscribe(&cb, "/queue/to-b").await;
    let mut topic_a = subscribe(&ca, "/topic/t").await;
    let mut topic_b = subscribe(&cb, "/topic/t").await;
    // a pushes /queue/to-b and /topic/t; it pulls /queue/to-a and /topic/t from b.
    net.wait_network_consumers("a", 2).await;
    assert!(net.servers["b"].bridges.snapshot().is_empty());
    let deadline = Instant::now() + WAIT;
    while net.queue("b", "to-a").2 == 0 {
        assert!(Instant::now() < deadline, "a never subscribed on b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = send_n(&cb, "/queue/to-a", "ba", 50).await;
    let there = send_n(&ca, "/queue/to-b", "ab", 50).await;
    assert_exactly_once(&recv_n(&ca, &mut on_a, 50).await, &back);
    assert_exactly_once(&recv_n(&cb, &mut on_b, 50).await, &there);
    // Messages pulled to a leave b once a stored them.
    net.wait_depth("b", "to-a", 0).await;
    // A topic published on either side reaches both subscribers once.
    let mut t = send_n(&ca, "/topic/t", "ta", 10).await;
    t.extend(send_n(&cb, "/topic/t", "tb", 10).await);
    assert_exactly_once(&recv_n(&ca, &mut topic_a, 20).await, &t);
    assert_exactly_once(&recv_n(&cb, &mut topic_b, 20).await, &t);
}

/// Brokers that advertise on `discovery` and bridge to what `discovery` reports.
fn discovering(uri: &str) -> String {
    format!(
        "[[network_connectors]]\nname = \"mesh\"\nuri = \"{uri}\"\ninitial_reconnect_delay_ms = 50\nmax_reconnect_delay_ms = 500\n"
    )
}

async fn discovery_forms_and_reforms_bridges(uri: &str) {
    let mut net = Net::new(&["a", "b", "c"]);
    // transports.discovery must be in [transports]: each broker's config is written whole.
    for n in ["a", "b"] {
        net.start_with(n, &format!("discovery = \"{uri}\"\n"), &discovering(uri))
            .await;
    }
    // a and b find each other: one bridge each.
    net.wait_bridges("a", 1).await;
    net.wait_bridges("b", 1).await;
    let cb = net.client("b").await;
    let mut sub = subscribe(&cb, "/queue/found").await;
    net.wait_network_consumers("a", 1).await;
    let pa = net.client("a").await;
    let sent = send_n(&pa, "/queue/found", "f", 20).await;
    assert_exactly_once(&recv_n(&cb, &mut sub, 20).await, &sent);
    // b leaves cleanly: a drops its bridge; c arrives: a bridges to it.
    drop(sub);
    cb.disconnect().await.unwrap();
    net.stop("b").await;
    net.wait_bridges("a", 0).await;
    net.start_with("c", &format!("discovery = \"{uri}\"\n"), &discovering(uri))
        .await;
    net.wait_bridges("a", 1).await;
    let cc = net.client("c").await;
    let mut sub = subscribe(&cc, "/queue/found").await;
    let sent = send_n(&pa, "/queue/found", "g", 20).await;
    assert_exactly_once(&recv_n(&cc, &mut sub, 20).await, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_discovery_forms_and_reforms_bridges() {
    // A group of this test's own (random port), on loopback.
    let uri = format!(
        "multicast://239.255.2.3:{}?group=t{}&interface=127.0.0.1&keepAliveInterval=100",
        free_port(),
        std::process::id()
    );
    discovery_forms_and_reforms_bridges(&uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_discovery_forms_and_reforms_bridges() {
    let zk = std::env::var("FERROMQ_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let uri = format!(
        "zookeeper://{zk}/ferromq-test/net-{}-{nanos}",
        std::process::id()
    );
    discovery_forms_and_reforms_bridges(&uri).await;
}
