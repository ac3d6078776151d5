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
    let cfg = ClientConfig {
        login: Some("viewer".into()),
        passcode: Some("look".into()),
        client_id: Some("adm-test".into()),
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
            assert!(["counter", "gauge"].contains(&ty), "bad TYPE line {line:?}");
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

    // `ferromq status` sends no credentials: /status stays open, and unchanged.
    let status = json_ok(&admin, "GET", "/status", None, None, 200).await;
    assert_eq!(status["role"], "master");
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

    // Deleting a queue is not built: it says so instead of pretending.
    json_ok(
        &admin,
        "DELETE",
        "/api/v1/queues/orders",
        OPS,
        Some("{}"),
        501,
    )
    .await;
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
