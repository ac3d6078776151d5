//! The admin HTTP API and `/metrics` of a real `ferromq serve` process, checked against what
//! STOMP clients see: depth and counters after STOMP sends, browse, a send through the API
//! consumed over STOMP, a purge that leaves the queue empty for STOMP, the auth rules, a
//! parse of every `/metrics` line, and what a slave answers.

mod support;

use std::time::Duration;

use base64::Engine;
use ferromq_client::{AckMode, Client, ClientConfig};
use serde_json::Value;
use support::{free_port, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

const USERS: &str = r#"
[security]
plaintext_passwords = true

[[security.users]]
username = "ops"
password = "ops-secret"
groups = ["admins"]

[[security.users]]
username = "viewer"
password = "look"
"#;

type Auth = Option<(&'static str, &'static str)>;
const OPS: Auth = Some(("ops", "ops-secret"));
const VIEWER: Auth = Some(("viewer", "look"));

/// One HTTP/1.1 request on its own connection; the status code, the head and the body.
async fn http(
    admin: &str,
    method: &str,
    path: &str,
    auth: Auth,
    json: Option<&str>,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full HTTP answer");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "this little client reads whole bodies only: {head}"
    );
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, head.to_string(), body.to_string())
}

/// Waits until `/status` says the broker is master: the STOMP port accepts a moment before the
/// admin endpoint learns the role (it answers "slave" in between).
fn wait_master(admin: &str) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(admin) {
            let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            if text.contains("\"role\":\"master\"") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{admin}: the broker never said it was master");
}

/// A request that must answer `want`, returning the body as JSON.
async fn json_ok(
    admin: &str,
    method: &str,
    path: &str,
    auth: Auth,
    body: Option<&str>,
    want: u16,
) -> Value {
    let (code, head, text) = http(admin, method, path, auth, body).await;
    assert_eq!(code, want, "{method} {path}: {head}\n{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

async fn stomp(port: u16) -> Client {
    stomp_as(port, "adm-test").await
}

async fn stomp_as(port: u16, client_id: &str) -> Client {
    let cfg = ClientConfig {
        login: Some("viewer".into()),
        passcode: Some("look".into()),
        client_id: Some(client_id.into()),
        ..ClientConfig::default()
    };
    Client::connect(&format!("127.0.0.1:{port}"), cfg)
        .await
        .unwrap()
}

/// One parsed sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Every line of a scrape is a `# HELP`/`# TYPE` comment or a valid sample; returns the
/// samples as (name, labels, value).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let ty = rest.split_whitespace().nth(1).unwrap_or("");
            assert!(
                ["counter", "gauge", "histogram"].contains(&ty),
                "bad TYPE line {line:?}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, ""),
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}")),
            ),
        };
        assert!(
            name.starts_with("ferromq_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let mut parsed = Vec::new();
        // The test's destination names need no escapes; a quote inside a value would break
        // this split and fail the test loudly.
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label in {line:?}"));
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
            parsed.push((k.to_string(), v.to_string()));
        }
        out.push((name.to_string(), parsed, value));
    }
    out
}

fn sample(samples: &[Sample], name: &str, label: (&str, &str)) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.iter().any(|(k, v)| k == label.0 && v == label.1))
        .unwrap_or_else(|| panic!("no sample {name}{{{}={:?}}}", label.0, label.1))
        .2
}

#[tokio::test]
async fn api_and_metrics_match_what_stomp_clients_see() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let cfg = format!(
        "[broker]\nname = \"adm\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\n[store]\nbackend = \"journal\"\n{USERS}",
        dir.path().join("data").display()
    );
    let broker = Proc::start("adm", dir.path(), port, &cfg);
    assert!(
        broker.wait_accepting(WAIT).is_some(),
        "broker did not start"
    );
    wait_master(&admin);

    // `ferromq status` sends no credentials: /status stays open, and unchanged.
    let status = json_ok(&admin, "GET", "/status", None, None, 200).await;
    assert_eq!(status["role"], "master", "{status}");
    assert_eq!(status["broker"], "adm");
    let out = std::process::Command::new(support::BIN)
        .args(["status", "--admin", &admin])
        .output()
        .unwrap();
    assert!(out.status.success(), "ferromq status: {out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["role"], "master", "{printed}");
    // Everything else needs a login.
    let (code, head, _) = http(&admin, "GET", "/api/v1/broker", None, None).await;
    assert_eq!(code, 401, "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic") || head.contains("www-authenticate: Basic"),
        "{head}"
    );
    let (code, _, _) = http(&admin, "GET", "/metrics", Some(("viewer", "wrong")), None).await;
    assert_eq!(code, 401);

    let info = json_ok(&admin, "GET", "/api/v1/broker", VIEWER, None, 200).await;
    assert_eq!(info["name"], "adm");
    assert_eq!(info["role"], "master");
    assert_eq!(info["ha_mode"], "none");
    assert_eq!(info["store"]["kind"], "journal");

    // Three persistent messages over STOMP, confirmed by receipts.
    let c = stomp(port).await;
    for i in 0..3 {
        c.send_with_receipt(
            "/queue/orders",
            format!("m{i}"),
            &[("persistent", "true"), ("x-n", &i.to_string())],
        )
        .await
        .unwrap();
    }
    let q = json_ok(&admin, "GET", "/api/v1/queues/orders", VIEWER, None, 200).await;
    assert_eq!(q["depth"], 3, "{q}");
    assert_eq!(q["enqueued"], 3, "{q}");
    assert_eq!(q["dequeued"], 0, "{q}");
    let all = json_ok(&admin, "GET", "/api/v1/queues", VIEWER, None, 200).await;
    assert!(
        all["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "orders" && q["depth"] == 3),
        "{all}"
    );
    json_ok(
        &admin,
        "GET",
        "/api/v1/queues/no-such-queue",
        VIEWER,
        None,
        404,
    )
    .await;
    let conns = json_ok(&admin, "GET", "/api/v1/connections", VIEWER, None, 200).await;
    assert!(
        conns["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["protocol"] == "stomp"
                && c["login"] == "viewer"
                && c["client_id"] == "adm-test"),
        "{conns}"
    );

    // Browse: in order, bounded, and it consumes nothing.
    let b = json_ok(
        &admin,
        "GET",
        "/api/v1/queues/orders/messages?limit=2",
        VIEWER,
        None,
        200,
    )
    .await;
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{b}");
    assert_eq!(msgs[0]["body"], "m0");
    assert_eq!(msgs[1]["body"], "m1");
    assert_eq!(msgs[1]["headers"]["x-n"], "1");
    assert_eq!(msgs[0]["persistent"], true);
    let e = json_ok(
        &admin,
        "GET",
        "/api/v1/queues/orders/messages?limit=1000000",
        VIEWER,
        None,
        400,
    )
    .await;
    assert!(
        e["error"].as_str().unwrap().contains("browse_limit_max"),
        "{e}"
    );
    assert_eq!(
        json_ok(&admin, "GET", "/api/v1/queues/orders", VIEWER, None, 200).await["depth"],
        3
    );

    // Metrics: every line parses, and the queue's depth is right.
    let (code, head, text) = http(&admin, "GET", "/metrics", VIEWER, None).await;
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let samples = parse_metrics(&text);
    assert_eq!(
        sample(&samples, "ferromq_queue_depth", ("destination", "orders")),
        3.0
    );
    assert_eq!(
        sample(
            &samples,
            "ferromq_queue_enqueued_total",
            ("destination", "orders")
        ),
        3.0
    );
    // At least the test's client: the start-up probes' connections may not have ended yet.
    assert!(sample(&samples, "ferromq_connections", ("protocol", "stomp")) >= 1.0);
    assert_eq!(sample(&samples, "ferromq_role", ("role", "master")), 1.0);
    assert!(samples
        .iter()
        .any(|(n, _, v)| n == "ferromq_master" && *v == 1.0));

    // A send through the API, consumed over STOMP. A reader may not send; a browser-style
    // form post (no JSON content type) is refused even to an admin.
    let send = r#"{"body":"from-api","headers":{"x-k":"v"}}"#;
    json_ok(
        &admin,
        "POST",
        "/api/v1/queues/api-in/messages",
        VIEWER,
        Some(send),
        403,
    )
    .await;
    let (code, _, _) = http(&admin, "POST", "/api/v1/queues/api-in/messages", OPS, None).await;
    assert_eq!(code, 415);
    json_ok(
        &admin,
        "POST",
        "/api/v1/queues/api-in/messages",
        OPS,
        Some("{\"body\": 3}"),
        400,
    )
    .await;
    let sent = json_ok(
        &admin,
        "POST",
        "/api/v1/queues/api-in/messages",
        OPS,
        Some(send),
        201,
    )
    .await;
    assert_eq!(sent["persistent"], true);
    let mut sub = c
        .subscribe("/queue/api-in", AckMode::Auto, &[])
        .await
        .unwrap();
    let m = sub
        .next_timeout(WAIT)
        .await
        .expect("the API's message over STOMP");
    assert_eq!(m.body().as_ref(), b"from-api");
    assert_eq!(m.header("x-k"), Some("v"));
    assert_eq!(m.message_id(), sent["id"].as_str());

    // Topics: a subscription shows up under its topic.
    let _prices = c
        .subscribe("/topic/prices", AckMode::Auto, &[])
        .await
        .unwrap();
    let t = json_ok(&admin, "GET", "/api/v1/topics", VIEWER, None, 200).await;
    assert!(
        t["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "prices" && t["subscriptions"] == 1),
        "{t}"
    );

    // Purge: readers may not, admins may; then STOMP finds the queue empty.
    json_ok(
        &admin,
        "POST",
        "/api/v1/queues/orders/purge",
        VIEWER,
        Some("{}"),
        403,
    )
    .await;
    json_ok(
        &admin,
        "POST",
        "/api/v1/queues/nope/purge",
        OPS,
        Some("{}"),
        404,
    )
    .await;
    let p = json_ok(
        &admin,
        "POST",
        "/api/v1/queues/orders/purge",
        OPS,
        Some("{}"),
        200,
    )
    .await;
    assert_eq!(p["purged"], 3, "{p}");
    assert_eq!(
        json_ok(&admin, "GET", "/api/v1/queues/orders", VIEWER, None, 200).await["depth"],
        0
    );
    // The scrape follows: the depth is gone, the enqueue count stays.
    let (_, _, text) = http(&admin, "GET", "/metrics", VIEWER, None).await;
    let samples = parse_metrics(&text);
    assert_eq!(
        sample(&samples, "ferromq_queue_depth", ("destination", "orders")),
        0.0
    );
    assert_eq!(
        sample(
            &samples,
            "ferromq_queue_enqueued_total",
            ("destination", "orders")
        ),
        3.0
    );
    assert_eq!(
        sample(
            &samples,
            "ferromq_topic_subscriptions",
            ("destination", "prices")
        ),
        1.0
    );
    // Queues are FIFO: if anything had survived the purge it would arrive before this marker.
    c.send_with_receipt("/queue/orders", "marker", &[])
        .await
        .unwrap();
    let mut orders = c
        .subscribe("/queue/orders", AckMode::Auto, &[])
        .await
        .unwrap();
    let first = orders.next_timeout(WAIT).await.expect("the marker");
    assert_eq!(first.body().as_ref(), b"marker");

    // A queue with a consumer attached is not removed behind it.
    let e = json_ok(
        &admin,
        "DELETE",
        "/api/v1/queues/orders",
        OPS,
        Some("{}"),
        409,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("consumer"), "{e}");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_slave_answers_what_it_is_and_refuses_operations() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = |name: &str, port: u16, admin: &str| {
        format!(
            "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\n[store]\nbackend = \"journal\"\n[ha]\nmode = \"shared-file\"\nlock_keepalive_ms = 100\n",
            shared.display()
        )
    };
    let master = Proc::start("m", dir.path(), p1, &config("grp", p1, &a1));
    assert!(
        master.wait_accepting(WAIT).is_some(),
        "master did not start"
    );
    let slave = Proc::start("s", dir.path(), p2, &config("grp", p2, &a2));
    assert!(
        slave.wait_log("competing for mastership", WAIT),
        "slave did not start"
    );
    // The slave's admin endpoint binds before it competes; its role is published right after.
    let deadline = std::time::Instant::now() + WAIT;
    let mut info = json_ok(&a2, "GET", "/api/v1/broker", None, None, 200).await;
    while info["role"] != "slave" && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        info = json_ok(&a2, "GET", "/api/v1/broker", None, None, 200).await;
    }
    assert_eq!(info["role"], "slave", "{info}");
    assert_eq!(info["ha_mode"], "shared-file");
    assert!(
        info.get("store").is_none(),
        "a slave reports no store: {info}"
    );
    let e = json_ok(&a2, "GET", "/api/v1/queues", None, None, 503).await;
    assert!(e["error"].as_str().unwrap().contains("slave"), "{e}");
    // The HA view answers on a slave too, and says what it is.
    let ha = json_ok(&a2, "GET", "/api/v1/ha", None, None, 200).await;
    assert_eq!(ha["role"], "slave", "{ha}");
    assert_eq!(ha["mode"], "shared-file", "{ha}");
    assert!(ha["replication"].is_null(), "{ha}");
    let ha = json_ok(&a1, "GET", "/api/v1/ha", None, None, 200).await;
    assert_eq!(ha["role"], "master", "{ha}");
    assert!(
        ha["epoch"].as_u64().unwrap() >= 1,
        "a shared-file master has an epoch: {ha}"
    );
    assert!(
        ha["replication"].is_null(),
        "shared-file does not replicate: {ha}"
    );
    json_ok(&a2, "POST", "/api/v1/queues/q/purge", None, Some("{}"), 503).await;
    let (code, _, text) = http(&a2, "GET", "/metrics", None, None).await;
    assert_eq!(code, 200);
    let samples = parse_metrics(&text);
    assert_eq!(sample(&samples, "ferromq_role", ("role", "slave")), 1.0);
    assert!(samples
        .iter()
        .any(|(n, _, v)| n == "ferromq_master" && *v == 0.0));
    // The master, meanwhile, serves.
    assert_eq!(
        json_ok(&a1, "GET", "/api/v1/broker", None, None, 200).await["role"],
        "master"
    );
}

/// `ferromq dstat`, `browse` and `purge` over the admin API of a real broker with users:
/// what they print matches what STOMP put there, a reader may look but not purge, an admin
/// may purge, and the queue is then empty.
#[tokio::test]
async fn the_admin_cli_shows_browses_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "[broker]\nname = \"cli\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\n{USERS}",
        dir.path().join("data").display()
    );
    let broker = Proc::start("cli", dir.path(), port, &cfg);
    assert!(
        broker.wait_accepting(WAIT).is_some(),
        "broker did not start"
    );
    wait_master(&admin);
    let c = stomp(port).await;
    for n in 0..3 {
        c.send_with_receipt(
            "/queue/cli.q",
            format!("order {n}"),
            &[("persistent", "true")],
        )
        .await
        .unwrap();
    }
    let cli = |args: &[&str], user: &str, password: &str| {
        let mut all = args.to_vec();
        all.extend(["--admin", &admin, "--admin-user", user]);
        std::process::Command::new(support::BIN)
            .args(&all)
            .env("FERROMQ_ADMIN_PASSWORD", password)
            .output()
            .unwrap()
    };
    let out = cli(&["dstat", "queues"], "viewer", "look");
    assert!(out.status.success(), "dstat: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("queue://cli.q "))
        .unwrap_or_else(|| panic!("no row for the queue:\n{text}"))
        .split_whitespace()
        .collect();
    // Name, Queue Size, Producer #, Consumer #, Enqueue #, ...
    assert_eq!(row[1], "3", "{text}");
    assert_eq!(row[4], "3", "{text}");

    let out = cli(&["browse", "cli.q"], "viewer", "look");
    assert!(out.status.success(), "browse: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for n in 0..3 {
        assert!(text.contains(&format!("order {n}")), "{text}");
    }
    assert_eq!(text.lines().count(), 4, "header + 3 messages:\n{text}");

    let out = cli(&["purge", "cli.q"], "viewer", "look");
    assert!(!out.status.success(), "a reader must not purge");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
    let out = cli(&["purge", "cli.q"], "ops", "ops-secret");
    assert!(out.status.success(), "purge: {out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["purged"], 3, "{answer}");

    let out = cli(&["dstat", "--json"], "viewer", "look");
    assert!(out.status.success(), "dstat --json: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = v["queues"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "cli.q")
        .cloned()
        .unwrap();
    assert_eq!(q["depth"], 0, "{v}");
    c.disconnect().await.unwrap();
}

/// A broker on the journal store with the test users, `maximum_redeliveries = 0` (a NACK
/// dead-letters at once) and its data in `dir`; the same `cfg` restarts it on the same data.
fn journal_broker(dir: &std::path::Path, name: &str) -> (Proc, u16, String, String) {
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\n[store]\nbackend = \"journal\"\n[policy]\nmaximum_redeliveries = 0\n{USERS}",
        dir.join("data").display()
    );
    let broker = Proc::start(name, dir, port, &cfg);
    assert!(
        broker.wait_accepting(WAIT).is_some(),
        "broker did not start"
    );
    wait_master(&admin);
    (broker, port, admin, cfg)
}

/// The value of the one sample named `name` with exactly `labels`.
fn sample_exact(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
        .2
}

/// Checks one histogram family of a scrape: its `_bucket` samples never decrease with `le`,
/// the `+Inf` bucket equals `_count`; returns (`_count`, `_sum`).
fn histogram(samples: &[Sample], name: &str) -> (f64, f64) {
    let bucket = format!("{name}_bucket");
    let mut last = (f64::NEG_INFINITY, 0.0);
    let mut seen = 0;
    for (_, labels, v) in samples.iter().filter(|(n, _, _)| *n == bucket) {
        let le = &labels
            .iter()
            .find(|(k, _)| k == "le")
            .expect("an le label")
            .1;
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or_else(|_| panic!("{bucket}: le {le:?}"))
        };
        assert!(le > last.0, "{bucket}: le not increasing at {le}");
        assert!(*v >= last.1, "{bucket}: count falls at le {le}");
        last = (le, *v);
        seen += 1;
    }
    assert!(seen > 1, "{bucket}: no buckets");
    assert_eq!(last.0, f64::INFINITY, "{bucket}: the last bucket is +Inf");
    let count = sample_exact(samples, &format!("{name}_count"), &[]);
    assert_eq!(last.1, count, "{name}: +Inf bucket and _count differ");
    (count, sample_exact(samples, &format!("{name}_sum"), &[]))
}

/// The journal's group-commit statistics on `/metrics`, from a real broker: after N persistent
/// sends with receipts, the groups' sizes sum to at least N (each send is a batch made durable
/// by some sync), at least one sync was timed, and each send's wait for durability was counted.
#[tokio::test]
async fn metrics_count_the_journals_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port, admin, _) = journal_broker(dir.path(), "commits");
    const N: u64 = 25;
    let c = stomp_as(port, "commits-a").await;
    for i in 0..N {
        c.send_with_receipt("/queue/commits", format!("m{i}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    let (code, head, text) = http(&admin, "GET", "/metrics", VIEWER, None).await;
    assert_eq!(code, 200, "{head}");
    let samples = parse_metrics(&text);
    let (groups, batches) = histogram(&samples, "ferromq_store_group_commit_size");
    assert!(groups >= 1.0, "no group counted:\n{text}");
    assert!(
        batches >= N as f64,
        "{batches} batches in groups for {N} sends"
    );
    // Messages are counted over the same syncs: one per send here (each send is one batch of
    // one message).
    let (message_groups, messages) = histogram(&samples, "ferromq_store_group_commit_messages");
    assert!(message_groups >= 1.0, "no group counted in messages");
    assert!(
        messages >= N as f64,
        "{messages} messages in groups for {N} sends"
    );
    let (syncs, sync_seconds) = histogram(&samples, "ferromq_store_sync_seconds");
    assert!(syncs >= 1.0, "no sync timed");
    assert!(sync_seconds >= 0.0);
    let (waits, wait_seconds) = histogram(&samples, "ferromq_store_commit_wait_seconds");
    assert!(waits >= N as f64, "{waits} waits for {N} receipted sends");
    assert!(wait_seconds > 0.0, "the sends waited no time at all");
    c.disconnect().await.unwrap();
}

/// `GET /api/v1/ha` of a broker without HA: mode `none`, master, epoch 0, no replication, and
/// no replication series on `/metrics`.
#[tokio::test]
async fn the_ha_view_of_a_standalone_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, _port, admin, _) = journal_broker(dir.path(), "solo");
    let ha = json_ok(&admin, "GET", "/api/v1/ha", VIEWER, None, 200).await;
    assert_eq!(ha["mode"], "none", "{ha}");
    assert_eq!(ha["role"], "master", "{ha}");
    assert_eq!(ha["epoch"], 0, "{ha}");
    assert!(ha["replication"].is_null(), "{ha}");
    assert!(
        ha.get("sync").is_none(),
        "sync is for the replicated mode: {ha}"
    );
    let (_, _, text) = http(&admin, "GET", "/metrics", VIEWER, None).await;
    assert!(!text.contains("ferromq_replication_"), "{text}");
    let b = json_ok(&admin, "GET", "/api/v1/bridges", VIEWER, None, 200).await;
    assert_eq!(b["bridges"], serde_json::json!([]), "{b}");
}

/// Polls `GET /api/v1/bridges` until `pred` holds for the one bridge listed (bounded).
async fn wait_bridge(admin: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = json_ok(admin, "GET", "/api/v1/bridges", None, None, 200).await;
        let list = v["bridges"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{v}");
        if pred(&list[0]) {
            return list[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bridge never {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/v1/bridges` and the bridge series of `/metrics` on a broker with a static network
/// connector: `connecting` while the remote is down, `connected` with the remote's name once
/// it is up, and the messages a consumer on the remote received counted as forwarded.
#[tokio::test]
async fn bridges_are_listed_with_their_state_and_forwarded_count() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let a_cfg = format!(
        "[broker]\nname = \"net-a\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{pa}\"\nadmin = \"{admin}\"\n[[network_connectors]]\nname = \"to-b\"\nuri = \"static:(tcp://127.0.0.1:{pb})\"\ninitial_reconnect_delay_ms = 50\nmax_reconnect_delay_ms = 200\n",
        dir.path().join("a").display()
    );
    let a = Proc::start("net-a", dir.path(), pa, &a_cfg);
    assert!(a.wait_accepting(WAIT).is_some(), "a did not start");
    wait_master(&admin);
    let bridge = wait_bridge(&admin, "listed", |_| true).await;
    assert_eq!(bridge["name"], "to-b", "{bridge}");
    let addrs = bridge["addrs"].as_array().unwrap();
    assert!(
        addrs.len() == 1 && addrs[0].as_str().unwrap().ends_with(&format!(":{pb}")),
        "{bridge}"
    );
    assert_eq!(bridge["state"], "connecting", "b is not up yet: {bridge}");
    assert_eq!(bridge["forwarded"], 0, "{bridge}");

    let b_cfg = format!(
        "[broker]\nname = \"net-b\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{pb}\"\n",
        dir.path().join("b").display()
    );
    let b = Proc::start("net-b", dir.path(), pb, &b_cfg);
    assert!(b.wait_accepting(WAIT).is_some(), "b did not start");
    let bridge = wait_bridge(&admin, "connected", |v| v["state"] == "connected").await;
    assert!(bridge["connects"].as_u64().unwrap() >= 1, "{bridge}");

    // A consumer on b makes demand; what is produced on a goes over the bridge.
    let cb = Client::connect(&format!("127.0.0.1:{pb}"), ClientConfig::default())
        .await
        .unwrap();
    let mut sub = cb
        .subscribe("/queue/over", AckMode::Auto, &[])
        .await
        .unwrap();
    wait_bridge(&admin, "given the consumer", |v| {
        v["network_consumers"] == 1
    })
    .await;
    let ca = Client::connect(&format!("127.0.0.1:{pa}"), ClientConfig::default())
        .await
        .unwrap();
    for i in 0..3 {
        ca.send_with_receipt("/queue/over", format!("m{i}"), &[])
            .await
            .unwrap();
    }
    for _ in 0..3 {
        sub.next_timeout(WAIT)
            .await
            .expect("a message over the bridge");
    }
    let bridge = wait_bridge(&admin, "counting 3 forwarded", |v| v["forwarded"] == 3).await;
    assert_eq!(bridge["remote"], "net-b", "{bridge}");
    let (_, _, text) = http(&admin, "GET", "/metrics", None, None).await;
    let samples = parse_metrics(&text);
    assert_eq!(
        sample(
            &samples,
            "ferromq_bridge_forwarded_total",
            ("bridge", "to-b")
        ),
        3.0
    );
    assert_eq!(
        sample(&samples, "ferromq_bridge_connected", ("bridge", "to-b")),
        1.0
    );
    ca.disconnect().await.unwrap();
    cb.disconnect().await.unwrap();
}

/// The ids of the messages waiting in `queue`, in order, with their bodies (browse).
async fn browse_ids(admin: &str, queue: &str) -> Vec<(String, String)> {
    let b = json_ok(
        admin,
        "GET",
        &format!("/api/v1/queues/{queue}/messages"),
        VIEWER,
        None,
        200,
    )
    .await;
    b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["message_id"], m["id"], "browse names message_id: {m}");
            (
                m["message_id"].as_str().unwrap().to_string(),
                m["body"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Everything a queue holds, consumed over STOMP in order: a marker is sent last, and queues
/// being FIFO, whatever arrives before it is what the queue held (no waiting for silence).
async fn drain_queue(c: &Client, queue: &str) -> Vec<ferromq_client::ReceivedMessage> {
    let dest = format!("/queue/{queue}");
    c.send_with_receipt(&dest, "marker", &[]).await.unwrap();
    let mut sub = c.subscribe(&dest, AckMode::Auto, &[]).await.unwrap();
    let mut out = Vec::new();
    loop {
        let m = sub
            .next_timeout(WAIT)
            .await
            .unwrap_or_else(|| panic!("{queue}: no marker; got {} before", out.len()));
        if m.body().as_ref() == b"marker" {
            break;
        }
        out.push(m);
    }
    sub.unsubscribe().await.unwrap();
    out
}

fn bodies(msgs: &[ferromq_client::ReceivedMessage]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(m.body()).into_owned())
        .collect()
}

/// Remove, move, copy, retry and delete-queue over the API: each checked against what the
/// broker then holds, the 400/403/404/409 answers, and a kill -9 and restart on the journal
/// store showing every answered change persisted (nothing removed comes back, nothing moved
/// is lost or doubled).
#[tokio::test]
async fn message_and_queue_operations_persist_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port, admin, cfg) = journal_broker(dir.path(), "ops");
    let c = stomp_as(port, "ops-a").await;
    for i in 0..5 {
        c.send_with_receipt("/queue/src", format!("m{i}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    let ids = browse_ids(&admin, "src").await;
    assert_eq!(
        ids.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2", "m3", "m4"]
    );
    let id = |i: usize| ids[i].0.clone();
    let msg_path = |q: &str, id: &str| format!("/api/v1/queues/{q}/messages/{id}");

    // Remove one: readers may not; then it is gone, and a second removal is a 404.
    json_ok(
        &admin,
        "DELETE",
        &msg_path("src", &id(0)),
        VIEWER,
        Some("{}"),
        403,
    )
    .await;
    let r = json_ok(
        &admin,
        "DELETE",
        &msg_path("src", &id(0)),
        OPS,
        Some("{}"),
        200,
    )
    .await;
    assert_eq!(r["removed"], id(0).as_str(), "{r}");
    let e = json_ok(
        &admin,
        "DELETE",
        &msg_path("src", &id(0)),
        OPS,
        Some("{}"),
        404,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("no message"), "{e}");
    json_ok(
        &admin,
        "DELETE",
        &msg_path("nope", &id(1)),
        OPS,
        Some("{}"),
        404,
    )
    .await;

    // Move one to dst, copy another: bad bodies are 400, a missing message 404.
    let mv = format!("{}/move", msg_path("src", &id(1)));
    json_ok(&admin, "POST", &mv, VIEWER, Some(r#"{"to":"dst"}"#), 403).await;
    json_ok(&admin, "POST", &mv, OPS, Some(r#"{"too":"dst"}"#), 400).await;
    json_ok(&admin, "POST", &mv, OPS, Some(r#"{"to":"src"}"#), 400).await;
    json_ok(&admin, "POST", &mv, OPS, Some(r#"{"to":""}"#), 400).await;
    let m = json_ok(&admin, "POST", &mv, OPS, Some(r#"{"to":"dst"}"#), 200).await;
    assert_eq!(
        (&m["moved"], &m["to"]),
        (&Value::from(id(1)), &Value::from("dst")),
        "{m}"
    );
    assert_eq!(m["id"], id(1).as_str(), "a moved message keeps its id: {m}");
    json_ok(&admin, "POST", &mv, OPS, Some(r#"{"to":"dst"}"#), 404).await;
    let cp = format!("{}/copy", msg_path("src", &id(2)));
    let copied = json_ok(&admin, "POST", &cp, OPS, Some(r#"{"to":"dst"}"#), 200).await;
    assert_eq!(copied["copied"], id(2).as_str(), "{copied}");
    assert_ne!(
        copied["id"],
        id(2).as_str(),
        "a copy has its own id: {copied}"
    );
    assert_eq!(
        browse_ids(&admin, "src")
            .await
            .iter()
            .map(|(_, b)| b.as_str())
            .collect::<Vec<_>>(),
        ["m2", "m3", "m4"]
    );
    let dst = browse_ids(&admin, "dst").await;
    assert_eq!(
        dst.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["m1", "m2"]
    );

    // A message in flight to a consumer is refused (409), and so is removing its queue.
    c.send_with_receipt("/queue/busy", "held", &[("persistent", "true")])
        .await
        .unwrap();
    let held_id = browse_ids(&admin, "busy").await[0].0.clone();
    let holder = stomp_as(port, "ops-holder").await;
    let mut hsub = holder
        .subscribe("/queue/busy", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    let got = hsub.next_timeout(WAIT).await.expect("the held message");
    assert_eq!(got.message_id(), Some(held_id.as_str()));
    let e = json_ok(
        &admin,
        "DELETE",
        &msg_path("busy", &held_id),
        OPS,
        Some("{}"),
        409,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("in flight"), "{e}");
    let e = json_ok(
        &admin,
        "DELETE",
        "/api/v1/queues/busy",
        OPS,
        Some("{}"),
        409,
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("consumer"), "{e}");

    // Dead-letter two messages of `work` (maximum_redeliveries = 0: one NACK), then retry
    // one by id and the rest in bulk: back in `work`, without the DLQ headers.
    for i in 0..2 {
        c.send_with_receipt("/queue/work", format!("w{i}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    let mut wsub = c
        .subscribe("/queue/work", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    for _ in 0..2 {
        let m = wsub.next_timeout(WAIT).await.expect("a work message");
        c.nack(&m, None).await.unwrap();
    }
    wsub.unsubscribe().await.unwrap();
    let dlq = loop {
        let d = browse_ids(&admin, "ActiveMQ.DLQ").await;
        if d.len() == 2 {
            break d;
        }
        tokio::task::yield_now().await;
    };
    let retry_one = format!("{}/retry", msg_path("ActiveMQ.DLQ", &dlq[0].0));
    json_ok(&admin, "POST", &retry_one, VIEWER, Some("{}"), 403).await;
    let r = json_ok(&admin, "POST", &retry_one, OPS, Some("{}"), 200).await;
    assert_eq!(
        (&r["retried"], &r["to"]),
        (&Value::from(1), &Value::from("work")),
        "{r}"
    );
    json_ok(&admin, "POST", &retry_one, OPS, Some("{}"), 404).await;
    // A message that was never dead-lettered cannot be retried.
    let not_dead = format!("{}/retry", msg_path("src", &id(3)));
    let e = json_ok(&admin, "POST", &not_dead, OPS, Some("{}"), 400).await;
    assert!(
        e["error"].as_str().unwrap().contains("originalDestination"),
        "{e}"
    );
    let r = json_ok(
        &admin,
        "POST",
        "/api/v1/queues/ActiveMQ.DLQ/retry",
        OPS,
        Some("{}"),
        200,
    )
    .await;
    assert_eq!(
        (&r["retried"], &r["remaining"]),
        (&Value::from(1), &Value::from(0)),
        "{r}"
    );
    json_ok(
        &admin,
        "POST",
        "/api/v1/queues/nope/retry",
        OPS,
        Some("{}"),
        404,
    )
    .await;

    // Remove a whole queue with its messages.
    for i in 0..2 {
        c.send_with_receipt("/queue/gone", format!("g{i}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    json_ok(
        &admin,
        "DELETE",
        "/api/v1/queues/gone",
        VIEWER,
        Some("{}"),
        403,
    )
    .await;
    let d = json_ok(
        &admin,
        "DELETE",
        "/api/v1/queues/gone",
        OPS,
        Some("{}"),
        200,
    )
    .await;
    assert_eq!(
        (&d["deleted"], &d["messages"]),
        (&Value::from("gone"), &Value::from(2)),
        "{d}"
    );
    json_ok(&admin, "GET", "/api/v1/queues/gone", VIEWER, None, 404).await;
    json_ok(
        &admin,
        "DELETE",
        "/api/v1/queues/gone",
        OPS,
        Some("{}"),
        404,
    )
    .await;

    // Crash and restart on the same journal: every answer above was durable.
    drop(hsub);
    broker.kill9();
    drop((c, holder));
    let broker = Proc::start("ops", dir.path(), port, &cfg);
    assert!(
        broker.wait_accepting(WAIT).is_some(),
        "broker did not restart"
    );
    wait_master(&admin);
    let c = stomp_as(port, "ops-b").await;
    // Paged out after the restart, read back by the browse.
    let src = browse_ids(&admin, "src").await;
    assert_eq!(
        src.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["m2", "m3", "m4"]
    );
    assert_eq!(bodies(&drain_queue(&c, "src").await), ["m2", "m3", "m4"]);
    let d = drain_queue(&c, "dst").await;
    assert_eq!(bodies(&d), ["m1", "m2"]);
    assert_eq!(d[0].message_id(), Some(id(1).as_str()));
    let w = drain_queue(&c, "work").await;
    let mut wb = bodies(&w);
    wb.sort();
    assert_eq!(wb, ["w0", "w1"]);
    for m in &w {
        assert_eq!(
            m.header("originalDestination"),
            None,
            "retried: DLQ headers go"
        );
        assert!(!m.redelivered(), "retried: the delivery count starts again");
    }
    assert_eq!(
        bodies(&drain_queue(&c, "ActiveMQ.DLQ").await),
        Vec::<String>::new()
    );
    // The held message was never acked: it is still in `busy`.
    assert_eq!(bodies(&drain_queue(&c, "busy").await), ["held"]);
    json_ok(&admin, "GET", "/api/v1/queues/gone", VIEWER, None, 404).await;
    c.disconnect().await.unwrap();
}

/// Durable subscriptions are listed with their state, destroyed only when inactive (and not
/// back after a restart); a topic with a durable subscription is not removed, and says which.
#[tokio::test]
async fn durable_subscriptions_are_listed_and_destroyed_only_when_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port, admin, cfg) = journal_broker(dir.path(), "subs");
    let sub_client = stomp_as(port, "sub-client").await;
    let sub = sub_client
        .subscribe(
            "/topic/news",
            AckMode::Client,
            &[("activemq.subscriptionName", "s1"), ("selector", "x = 'a'")],
        )
        .await
        .unwrap();
    let subs = json_ok(&admin, "GET", "/api/v1/subscriptions", VIEWER, None, 200).await;
    let s = &subs["subscriptions"][0];
    assert_eq!(
        (
            &s["client_id"],
            &s["name"],
            &s["topic"],
            &s["selector"],
            &s["active"]
        ),
        (
            &Value::from("sub-client"),
            &Value::from("s1"),
            &Value::from("news"),
            &Value::from("x = 'a'"),
            &Value::from(true)
        ),
        "{subs}"
    );
    let path = "/api/v1/subscriptions/sub-client/s1";
    let e = json_ok(&admin, "DELETE", path, OPS, Some("{}"), 409).await;
    assert!(e["error"].as_str().unwrap().contains("in use"), "{e}");
    let e = json_ok(
        &admin,
        "DELETE",
        "/api/v1/topics/news",
        OPS,
        Some("{}"),
        409,
    )
    .await;
    assert!(
        e["error"].as_str().unwrap().contains("sub-client/s1"),
        "{e}"
    );
    drop(sub);
    sub_client.disconnect().await.unwrap();
    let p = stomp_as(port, "pub").await;
    for i in 0..2 {
        p.send_with_receipt(
            "/topic/news",
            format!("n{i}"),
            &[("persistent", "true"), ("x", "a")],
        )
        .await
        .unwrap();
    }
    let subs = json_ok(&admin, "GET", "/api/v1/subscriptions", VIEWER, None, 200).await;
    let s = &subs["subscriptions"][0];
    assert_eq!(
        (&s["active"], &s["pending"]),
        (&Value::from(false), &Value::from(2)),
        "{subs}"
    );
    json_ok(&admin, "DELETE", path, VIEWER, Some("{}"), 403).await;
    json_ok(&admin, "DELETE", path, OPS, Some("{}"), 200).await;
    json_ok(&admin, "DELETE", path, OPS, Some("{}"), 404).await;
    let subs = json_ok(&admin, "GET", "/api/v1/subscriptions", VIEWER, None, 200).await;
    assert_eq!(subs["subscriptions"], Value::Array(vec![]), "{subs}");
    json_ok(
        &admin,
        "DELETE",
        "/api/v1/topics/news",
        OPS,
        Some("{}"),
        404,
    )
    .await;
    p.disconnect().await.unwrap();
    broker.kill9();
    let _broker = Proc::start("subs", dir.path(), port, &cfg);
    assert!(
        _broker.wait_accepting(WAIT).is_some(),
        "broker did not restart"
    );
    wait_master(&admin);
    let subs = json_ok(&admin, "GET", "/api/v1/subscriptions", VIEWER, None, 200).await;
    assert_eq!(
        subs["subscriptions"],
        Value::Array(vec![]),
        "destroyed for good: {subs}"
    );
}

/// `DELETE /api/v1/connections/{id}`: the STOMP client gets an ERROR frame saying why, then
/// the connection ends and leaves the listing.
#[tokio::test]
async fn an_administrator_closes_a_stomp_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port, admin, _) = journal_broker(dir.path(), "conns");
    let c = stomp_as(port, "to-close").await;
    let conns = json_ok(&admin, "GET", "/api/v1/connections", VIEWER, None, 200).await;
    let id = conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "to-close")
        .unwrap_or_else(|| panic!("{conns}"))["id"]
        .as_u64()
        .unwrap();
    let path = format!("/api/v1/connections/{id}");
    json_ok(&admin, "DELETE", &path, VIEWER, Some("{}"), 403).await;
    json_ok(
        &admin,
        "DELETE",
        "/api/v1/connections/999999",
        OPS,
        Some("{}"),
        404,
    )
    .await;
    json_ok(
        &admin,
        "DELETE",
        "/api/v1/connections/x",
        OPS,
        Some("{}"),
        400,
    )
    .await;
    let r = json_ok(&admin, "DELETE", &path, OPS, Some("{}"), 200).await;
    assert_eq!(r["closed"], id, "{r}");
    let why = tokio::time::timeout(WAIT, c.closed())
        .await
        .expect("the connection ends");
    let why = why.expect("ended by the server").to_string();
    assert!(why.contains("closed by an administrator"), "{why}");
    loop {
        let conns = json_ok(&admin, "GET", "/api/v1/connections", VIEWER, None, 200).await;
        if !conns["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id)
        {
            break;
        }
        tokio::task::yield_now().await;
    }
}

/// `ferromq query`, `move`, `retry` and `delete-queue` against a real broker with users: a
/// reader may query but not move; an admin moves a whole queue, retries the DLQ and deletes a
/// queue, each checked through the API afterwards.
#[tokio::test]
async fn the_admin_cli_queries_moves_retries_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port, admin, _) = journal_broker(dir.path(), "cli2");
    let c = stomp_as(port, "cli2").await;
    for n in 0..3 {
        c.send_with_receipt("/queue/cli.src", format!("o{n}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    let cli = |args: &[&str], user: &str, password: &str| {
        let mut all = args.to_vec();
        all.extend(["--admin", &admin, "--admin-user", user]);
        std::process::Command::new(support::BIN)
            .args(&all)
            .env("FERROMQ_ADMIN_PASSWORD", password)
            .output()
            .unwrap()
    };
    let out = cli(&["query", "-q", "cli.*"], "viewer", "look");
    assert!(out.status.success(), "query: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Name = cli.src\nQueueSize = 3\n"), "{text}");

    let out = cli(
        &["move", "--from", "cli.src", "--to", "cli.dst", "--all"],
        "viewer",
        "look",
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["moved"], &v["failed"]),
        (&Value::from(0), &Value::from(3)),
        "{v}"
    );
    assert!(v["last_error"].as_str().unwrap().contains("403"), "{v}");
    let out = cli(
        &["move", "--from", "cli.src", "--to", "cli.dst", "--all"],
        "ops",
        "ops-secret",
    );
    assert!(out.status.success(), "move: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["moved"], 3, "{v}");
    let out = cli(&["query", "-q", "cli.dst", "--json"], "viewer", "look");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["queues"][0]["depth"], 3, "{v}");
    assert_eq!(
        json_ok(&admin, "GET", "/api/v1/queues/cli.src", VIEWER, None, 200).await["depth"],
        0
    );

    c.send_with_receipt("/queue/cli.work", "poison", &[("persistent", "true")])
        .await
        .unwrap();
    let mut w = c
        .subscribe("/queue/cli.work", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    let m = w.next_timeout(WAIT).await.expect("the work message");
    c.nack(&m, None).await.unwrap();
    w.unsubscribe().await.unwrap();
    while browse_ids(&admin, "ActiveMQ.DLQ").await.is_empty() {
        tokio::task::yield_now().await;
    }
    let out = cli(&["retry", "--queue", "ActiveMQ.DLQ"], "ops", "ops-secret");
    assert!(out.status.success(), "retry: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["retried"], &v["remaining"]),
        (&Value::from(1), &Value::from(0)),
        "{v}"
    );
    assert_eq!(browse_ids(&admin, "cli.work").await.len(), 1);

    let out = cli(&["delete-queue", "cli.dst"], "viewer", "look");
    assert!(!out.status.success(), "a reader must not delete");
    let out = cli(&["delete-queue", "cli.dst"], "ops", "ops-secret");
    assert!(out.status.success(), "delete-queue: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["deleted"], &v["messages"]),
        (&Value::from("cli.dst"), &Value::from(3)),
        "{v}"
    );
    json_ok(&admin, "GET", "/api/v1/queues/cli.dst", VIEWER, None, 404).await;
    c.disconnect().await.unwrap();
}

/// `DELETE /api/v1/connections/{id}` on an OpenWire connection: the client gets a
/// ConnectionError saying why, then the end of the connection.
#[tokio::test]
async fn an_administrator_closes_an_openwire_connection() {
    use ferromq_protocol::openwire::{self as ow, map::encode_map, Command, PrimitiveMap};
    let dir = tempfile::tempdir().unwrap();
    let (port, ow_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "[broker]\nname = \"owc\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nopenwire = \"127.0.0.1:{ow_port}\"\nadmin = \"{admin}\"\n{USERS}",
        dir.path().join("data").display()
    );
    let _broker = Proc::start("owc", dir.path(), port, &cfg);
    assert!(
        _broker.wait_accepting(WAIT).is_some(),
        "broker did not start"
    );
    wait_master(&admin);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", ow_port))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut decoder = ow::Decoder::new(ow::DEFAULT_MAX_FRAME_SIZE);
    // The next command, or None at the end of the connection.
    async fn next(
        s: &mut tokio::net::TcpStream,
        buf: &mut bytes::BytesMut,
        decoder: &mut ow::Decoder,
    ) -> Option<Command> {
        loop {
            if let Some(f) = decoder.decode(buf).unwrap() {
                return Some(ow::decode_command(&f, 12).unwrap());
            }
            let n = tokio::time::timeout(WAIT, s.read_buf(buf))
                .await
                .expect("an answer or the close in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
    let mut p = PrimitiveMap::new();
    p.insert("MaxInactivityDuration", ow::PrimitiveValue::Long(30_000));
    let wf = Command::WireFormatInfo(ow::WireFormatInfo {
        magic: ow::MAGIC,
        version: 12,
        marshalled_properties: Some(encode_map(Some(&p)).unwrap()),
    });
    let info = Command::ConnectionInfo(ow::ConnectionInfo {
        header: ow::CommandHeader {
            command_id: 1,
            response_required: true,
        },
        connection_id: Some(ow::ConnectionId {
            value: "ID:test-ow-close".into(),
        }),
        client_id: Some("ow-close".into()),
        user_name: Some("viewer".into()),
        password: Some("look".into()),
        ..Default::default()
    });
    for cmd in [wf, info] {
        s.write_all(&ow::encode_command(&cmd, 12).unwrap())
            .await
            .unwrap();
    }
    loop {
        match next(&mut s, &mut buf, &mut decoder).await {
            Some(Command::Response(_)) => break,
            Some(Command::ExceptionResponse(e)) => panic!("refused: {e:?}"),
            Some(_) => continue,
            None => panic!("closed before connecting"),
        }
    }
    let conns = json_ok(&admin, "GET", "/api/v1/connections", VIEWER, None, 200).await;
    let c = conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "ow-close")
        .unwrap_or_else(|| panic!("{conns}"))
        .clone();
    assert_eq!(c["protocol"], "openwire", "{c}");
    let path = format!("/api/v1/connections/{}", c["id"]);
    let r = json_ok(&admin, "DELETE", &path, OPS, Some("{}"), 200).await;
    assert_eq!(
        (&r["closed"], &r["protocol"]),
        (&c["id"], &Value::from("openwire")),
        "{r}"
    );
    let reason = loop {
        match next(&mut s, &mut buf, &mut decoder).await {
            Some(Command::ConnectionError(e)) => {
                break e.exception.and_then(|x| x.message).unwrap_or_default()
            }
            Some(_) => continue,
            None => panic!("closed without a ConnectionError"),
        }
    };
    assert!(reason.contains("closed by an administrator"), "{reason}");
    assert!(
        next(&mut s, &mut buf, &mut decoder).await.is_none(),
        "then the end"
    );
}

/// The failover history of `/api/v1/ha` and `/metrics` after a real failover: a shared-file
/// master is killed (`kill -9`), and its slave, once it serves, says it became master once,
/// because it acquired the lock the dead master held, at a time after the kill, with how long
/// the takeover took; the first master says it found the lock free.
#[tokio::test]
async fn the_new_master_tells_when_and_why_it_took_over() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = |port: u16, admin: &str| {
        format!(
            "[broker]\nname = \"grp\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\n[store]\nbackend = \"journal\"\n[ha]\nmode = \"shared-file\"\nlock_keepalive_ms = 100\n",
            shared.display()
        )
    };
    let mut master = Proc::start("m", dir.path(), p1, &config(p1, &a1));
    assert!(
        master.wait_accepting(WAIT).is_some(),
        "master did not start"
    );
    let slave = Proc::start("s", dir.path(), p2, &config(p2, &a2));
    assert!(
        slave.wait_log("competing for mastership", WAIT),
        "slave did not start"
    );
    let ha = json_ok(&a1, "GET", "/api/v1/ha", None, None, 200).await;
    let f = &ha["failover"];
    assert_eq!(f["masterships"], 1, "{ha}");
    assert!(
        f["last_became_master"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("acquired the lock") && r.ends_with("it was free")),
        "{ha}"
    );
    let ha = json_ok(&a2, "GET", "/api/v1/ha", None, None, 200).await;
    assert_eq!(ha["failover"]["masterships"], 0, "{ha}");
    assert!(ha["failover"]["last_became_master"].is_null(), "{ha}");

    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    master.kill9();
    assert!(
        slave.wait_accepting(WAIT).is_some(),
        "the slave did not take over"
    );
    // The history is published right after the connectors are up; poll briefly for it.
    let deadline = std::time::Instant::now() + WAIT;
    let ha = loop {
        let ha = json_ok(&a2, "GET", "/api/v1/ha", None, None, 200).await;
        if ha["failover"]["masterships"] == 1 || std::time::Instant::now() >= deadline {
            break ha;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ha["role"], "master", "{ha}");
    let f = &ha["failover"];
    assert_eq!(f["masterships"], 1, "{ha}");
    let b = &f["last_became_master"];
    assert_eq!(b["epoch"], ha["epoch"], "{ha}");
    assert!(ha["epoch"].as_u64().unwrap() >= 2, "{ha}");
    let reason = b["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("acquired the lock")
            && reason.contains("previous master released it or its process ended"),
        "{ha}"
    );
    let at_ms = b["at_unix_ms"].as_u64().expect("at_unix_ms");
    assert!(
        at_ms >= killed_ms,
        "became master at {at_ms}, before the kill at {killed_ms}: {ha}"
    );
    let at = b["at"].as_str().expect("at");
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "RFC 3339: {at}"
    );
    assert!(
        b["takeover_ms"].is_u64(),
        "a lock grant is a known start: {ha}"
    );
    assert_eq!(f["lost_masterships"], 0, "{ha}");
    assert!(f["last_lost_mastership"].is_null(), "{ha}");
    // The recent history lists that takeover, the same event as `last_became_master`.
    let history = f["history"].as_array().expect("a history list");
    assert_eq!(history.len(), 1, "{ha}");
    assert_eq!(history[0]["kind"], "became_master", "{ha}");
    assert_eq!(history[0]["at_unix_ms"], b["at_unix_ms"], "{ha}");
    assert_eq!(history[0]["epoch"], b["epoch"], "{ha}");
    assert_eq!(history[0]["reason"], b["reason"], "{ha}");

    let (code, _, text) = http(&a2, "GET", "/metrics", None, None).await;
    assert_eq!(code, 200);
    let samples = parse_metrics(&text);
    let get = |name: &str| {
        samples
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .2
    };
    assert_eq!(get("ferromq_ha_became_master_total"), 1.0);
    assert_eq!(get("ferromq_ha_lost_mastership_total"), 0.0);
    assert_eq!(
        get("ferromq_ha_last_became_master_timestamp_seconds"),
        at_ms as f64 / 1000.0
    );
    assert!(get("ferromq_ha_last_takeover_seconds") >= 0.0);
}

/// A master that loses its lock (the lock file is replaced and another broker takes the new
/// one) and waits as a slave again (`restart_allowed`, the default) says in `/api/v1/ha` and
/// `/metrics` that it lost mastership, of which epoch, when, and why.
#[tokio::test]
async fn a_deposed_master_tells_when_and_why_it_lost_mastership() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (p1, p2) = (free_port(), free_port());
    let (a1, a2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = |port: u16, admin: &str| {
        format!(
            "[broker]\nname = \"grp\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\nadmin = \"{admin}\"\n[store]\nbackend = \"journal\"\n[ha]\nmode = \"shared-file\"\nlock_keepalive_ms = 100\n",
            shared.display()
        )
    };
    let first = Proc::start("m", dir.path(), p1, &config(p1, &a1));
    assert!(first.wait_accepting(WAIT).is_some(), "master did not start");
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::fs::remove_file(shared.join("lock")).unwrap();
    let second = Proc::start("s", dir.path(), p2, &config(p2, &a2));
    assert!(
        second.wait_accepting(WAIT).is_some(),
        "the second broker did not take the new lock"
    );
    assert!(
        first.wait_log("lost mastership", WAIT),
        "the first master did not notice"
    );
    let deadline = std::time::Instant::now() + WAIT;
    let ha = loop {
        let ha = json_ok(&a1, "GET", "/api/v1/ha", None, None, 200).await;
        if ha["failover"]["lost_masterships"] == 1 || std::time::Instant::now() >= deadline {
            break ha;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let f = &ha["failover"];
    assert_eq!(f["lost_masterships"], 1, "{ha}");
    assert_eq!(f["masterships"], 1, "{ha}");
    let lost = &f["last_lost_mastership"];
    assert_eq!(lost["epoch"], 1, "{ha}");
    assert!(
        lost["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{ha}"
    );
    assert!(lost["at_unix_ms"].as_u64().unwrap() >= before_ms, "{ha}");
    assert_ne!(ha["role"], "master", "{ha}");
    let (_, _, text) = http(&a1, "GET", "/metrics", None, None).await;
    let samples = parse_metrics(&text);
    assert!(
        samples
            .iter()
            .any(|(n, _, v)| n == "ferromq_ha_lost_mastership_total" && *v == 1.0),
        "{text}"
    );
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "ferromq_ha_last_lost_mastership_timestamp_seconds"),
        "{text}"
    );
}

/// Polls `GET /api/v1/ha` until `pred` holds (bounded by [`WAIT`]); returns the last answer.
async fn wait_ha(admin: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ha = json_ok(admin, "GET", "/api/v1/ha", VIEWER, None, 200).await;
        if pred(&ha) || std::time::Instant::now() >= deadline {
            return ha;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the history file, once it records `masterships` (bounded by [`WAIT`]).
async fn wait_history_file(path: &std::path::Path, masterships: u64) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        match v {
            Some(v) if v["masterships"] == masterships => return v,
            _ if std::time::Instant::now() >= deadline => {
                panic!(
                    "{} never recorded {masterships} masterships",
                    path.display()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The failover history survives a restart (clean or kill -9) on the same data directory:
/// `/api/v1/ha` and `/metrics` count the earlier runs' masterships, say since when the history
/// goes and when this process started; a corrupt history file is said at WARN, ignored, and
/// the broker starts anyway with a new history.
#[tokio::test]
async fn the_failover_history_survives_a_restart_and_a_corrupt_file_does_not_stop_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data").join("ha-history.json");
    let (mut broker, port, admin, cfg) = journal_broker(dir.path(), "hist");
    let first = wait_ha(&admin, |h| h["failover"]["masterships"] == 1).await;
    let f = &first["failover"];
    assert_eq!(f["masterships"], 1, "{first}");
    assert_eq!(f["suspensions"], 0, "{first}");
    assert_eq!(f["suspended_now"], false, "{first}");
    assert_eq!(f["suspended_ms_total"], 0, "{first}");
    assert!(f["last_suspension"].is_null(), "{first}");
    let since = f["since_unix_ms"].as_u64().expect("since_unix_ms");
    assert_eq!(f["process_started_unix_ms"], since, "a first run: {first}");
    let first_at = f["last_became_master"]["at_unix_ms"].clone();
    assert!(first_at.as_u64().unwrap() >= since, "{first}");
    wait_history_file(&file, 1).await;
    assert!(broker.terminate(), "the broker did not stop on SIGTERM");
    drop(broker);

    // Second run, after a clean stop.
    let broker = Proc::start("hist", dir.path(), port, &cfg);
    assert!(broker.wait_accepting(WAIT).is_some(), "no restart");
    let second = wait_ha(&admin, |h| h["failover"]["masterships"] == 2).await;
    let f = &second["failover"];
    assert_eq!(
        f["masterships"], 2,
        "the first run's mastership is counted: {second}"
    );
    assert_eq!(
        f["since_unix_ms"], since,
        "the history keeps its beginning: {second}"
    );
    let started = f["process_started_unix_ms"].as_u64().unwrap();
    assert!(started > since, "{second}");
    assert!(
        f["last_became_master"]["at_unix_ms"].as_u64().unwrap() >= started,
        "{second}"
    );
    assert_ne!(f["last_became_master"]["at_unix_ms"], first_at, "{second}");
    assert!(
        broker.wait_log("failover history of earlier runs loaded", WAIT),
        "the start-up says it continued a history"
    );
    let (_, _, text) = http(&admin, "GET", "/metrics", VIEWER, None).await;
    let samples = parse_metrics(&text);
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .2
    };
    assert_eq!(value("ferromq_ha_became_master_total"), 2.0);
    assert_eq!(value("ferromq_ha_suspensions_total"), 0.0);
    assert_eq!(value("ferromq_ha_suspended"), 0.0);
    assert_eq!(value("ferromq_ha_suspended_seconds_total"), 0.0);
    // The file is written as the mastership begins, so a kill -9 keeps it too.
    wait_history_file(&file, 2).await;
    let mut broker = broker;
    broker.kill9();
    drop(broker);

    let broker = Proc::start("hist", dir.path(), port, &cfg);
    assert!(
        broker.wait_accepting(WAIT).is_some(),
        "no restart after kill -9"
    );
    let third = wait_ha(&admin, |h| h["failover"]["masterships"] == 3).await;
    assert_eq!(third["failover"]["masterships"], 3, "{third}");
    assert_eq!(third["failover"]["since_unix_ms"], since, "{third}");
    wait_history_file(&file, 3).await;
    let mut broker = broker;
    assert!(broker.terminate());
    drop(broker);
    // No temporary file is left behind by the writes.
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ha-history") && e.path() != file)
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A corrupt file: the broker starts, says so, and begins a new history.
    std::fs::write(&file, b"{\"version\":1,\"masterships\":").unwrap();
    let broker = Proc::start("hist", dir.path(), port, &cfg);
    assert!(
        broker.wait_accepting(WAIT).is_some(),
        "a corrupt history file stopped the start"
    );
    assert!(
        broker.wait_log("failover history ignored", WAIT),
        "the corrupt file is reported"
    );
    assert!(
        broker
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("failover history ignored")),
        "at WARN"
    );
    let fourth = wait_ha(&admin, |h| h["failover"]["masterships"] == 1).await;
    let f = &fourth["failover"];
    assert_eq!(f["masterships"], 1, "{fourth}");
    assert!(
        f["since_unix_ms"].as_u64().unwrap() > since,
        "a new history: {fourth}"
    );
    // …and replaces the corrupt file with it.
    wait_history_file(&file, 1).await;
}
