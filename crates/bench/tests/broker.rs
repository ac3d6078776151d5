//! A short `run` against a real `ferromq` broker, when `FERROMQ_BIN` names its binary;
//! otherwise these tests only say that they were skipped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use ferromq_bench::cli::{Cli, Command as BenchCommand};
use ferromq_bench::run::run;

struct Broker {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Option<Broker> {
    start_broker_with("")
}

/// A broker with `config` as its configuration file (data dir and STOMP address come from the
/// environment, so the file need only say what the test is about).
fn start_broker_with(config: &str) -> Option<Broker> {
    let Ok(bin) = std::env::var("FERROMQ_BIN") else {
        eprintln!("FERROMQ_BIN not set: skipping the broker test");
        return None;
    };
    let data = tempfile::tempdir().unwrap();
    let config_path = data.path().join("ferromq.toml");
    std::fs::write(&config_path, config).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("FERROMQ__BROKER__DATA_DIR", data.path().join("data"))
        .env("FERROMQ__TRANSPORTS__STOMP", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let broker = Broker {
        child,
        addr,
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&broker.addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(broker)
}

fn run_against(addr: &str, extra: &[&str]) -> ferromq_bench::report::RunReport {
    let mut argv = vec![
        "ferromq-bench",
        "run",
        "--url",
        addr,
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--timeout",
        "5",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    let BenchCommand::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not run")
    };
    let cfg = args.validate().unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(cfg, false))
        .unwrap()
}

#[test]
fn persistent_queue_with_receipts_delivers_every_message_and_measures_both_latencies() {
    let Some(broker) = start_broker() else { return };
    let r = run_against(
        &broker.addr,
        &[
            "--persistent",
            "--receipt",
            "--window",
            "4",
            "-p",
            "2",
            "--ack",
            "client-individual",
        ],
    );
    assert!(r.sent.messages > 0, "{r:?}");
    assert!(r.delivered.messages > 0, "{r:?}");
    assert_eq!(r.undelivered_after_drain, 0, "{r:?}");
    assert_eq!(r.delivered_total, r.sent_total);
    assert!(r.send_latency.is_some() && r.end_to_end_latency.is_some());
}

#[test]
fn topic_fan_out_at_a_fixed_rate_delivers_a_copy_to_every_subscriber() {
    let Some(broker) = start_broker() else { return };
    let r = run_against(
        &broker.addr,
        &["-d", "/topic/bench", "-c", "3", "--rate", "500"],
    );
    assert_eq!(r.expected_deliveries, 3 * r.sent_total, "{r:?}");
    assert_eq!(r.undelivered_after_drain, 0, "{r:?}");
    assert!(r.send_latency.is_none());
    assert!(r.end_to_end_latency.is_some());
    assert!(r.conditions.latency_method.contains("scheduled"));
}

#[test]
fn produced_on_one_broker_and_consumed_on_another_across_a_bridge() {
    let Some(b) = start_broker_with("[broker]\nname = \"b\"\n") else {
        return;
    };
    let config = format!(
        "[broker]\nname = \"a\"\n[[network_connectors]]\nuri = \"static:(tcp://{})\"\n",
        b.addr
    );
    let Some(a) = start_broker_with(&config) else {
        return;
    };
    let r = run_against(
        &a.addr,
        &[
            "--consume-url",
            &b.addr,
            "--persistent",
            "--receipt",
            "-p",
            "2",
            "--ack",
            "client-individual",
        ],
    );
    assert_eq!(r.conditions.url, a.addr);
    assert_eq!(r.conditions.consume_url, b.addr);
    assert!(r.delivered.messages > 0, "{r:?}");
    assert_eq!(r.undelivered_after_drain, 0, "{r:?}");
    assert_eq!(r.delivered_total, r.sent_total, "{r:?}");
}

#[test]
fn an_unreachable_broker_fails_within_the_timeout() {
    if std::env::var("FERROMQ_BIN").is_err() {
        eprintln!("FERROMQ_BIN not set: skipping");
        return;
    }
    // A port nobody listens on: connection refused, immediately.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let BenchCommand::Run(args) = Cli::try_parse_from([
        "ferromq-bench",
        "run",
        "--url",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "2",
        "--quiet",
    ])
    .unwrap()
    .command
    else {
        panic!("not run")
    };
    let r = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(args.validate().unwrap(), false));
    assert!(r.is_err());
}

/// `--tls-ca` makes the tool speak STOMP over TLS (`stomp+ssl://`), so TLS can be measured
/// beside plain TCP (scripts/bench-tls.sh); a TLS URL without it is refused before any run.
#[test]
fn a_run_over_stomp_ssl_with_the_brokers_ca_delivers_every_message() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let pki = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "bench test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |name: &str, text: &str| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let ca_file = write("ca.pem", &ca.pem());
    let (cert, key) = (
        write("b.pem", &leaf.pem()),
        write("b.key", &key.serialize_pem()),
    );
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(broker) = start_broker_with(&format!(
        "[transports]\nstomp_ssl = \"127.0.0.1:{tls_port}\"\n[tls]\ncert = {cert:?}\nkey = {key:?}\n"
    )) else {
        return;
    };
    let url = format!("stomp+ssl://127.0.0.1:{tls_port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(Instant::now() < deadline, "TLS listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let argv = ["ferromq-bench", "run", "--url", &url];
    let Ok(BenchCommand::Run(args)) = Cli::try_parse_from(argv).map(|c| c.command) else {
        panic!("not run")
    };
    let err = args.validate().unwrap_err().to_string();
    assert!(err.contains("--tls-ca"), "{err}");
    let r = run_against(
        &url,
        &[
            "--tls-ca",
            &ca_file,
            "--persistent",
            "--receipt",
            "--ack",
            "client-individual",
        ],
    );
    assert!(r.sent_total > 0, "nothing was sent over TLS");
    assert_eq!(
        r.delivered_total, r.expected_deliveries,
        "every message delivered"
    );
    assert_eq!(r.undelivered_after_drain, 0);
    drop(broker);
}
