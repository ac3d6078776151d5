//! TLS on the replication link (`ha.tls_cert`, `ha.tls_key`, `ha.tls_ca`) with real
//! `ferromq serve` processes and real ZooKeeper: a group on mutual TLS elects, replicates and
//! fails over without losing a confirmed message; a member without TLS and a member with a
//! certificate of another CA never become slaves of a TLS master (which logs the refusal),
//! while a member with the group's certificate does; a SIGHUP reload of the `ha.tls_*` files
//! applies to new connections; half a configuration or an unreadable file stops the start. Certificates are made at test time (rcgen); no key is committed.
#![cfg(feature = "zk")]

mod ha_replicated_support;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferromq_server::config::Config;
use ha_replicated_support::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

const T: Duration = Duration::from_secs(60);

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

/// PEM files of a member: a certificate for 127.0.0.1 (the address members publish here),
/// usable as server and client, that `issuer` signed; and `trusted` as its CA bundle.
struct Member {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Member {
    fn new(
        dir: &Path,
        name: &str,
        issuer: &(rcgen::Certificate, KeyPair),
        trusted: &rcgen::Certificate,
    ) -> Member {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
        let m = Member {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.crt")),
        };
        std::fs::write(&m.cert, cert.pem()).unwrap();
        std::fs::write(&m.key, key.serialize_pem()).unwrap();
        std::fs::write(&m.ca, trusted.pem()).unwrap();
        m
    }

    /// Its `[ha]` lines.
    fn ha(&self) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }
}

/// A group on mutual TLS: elected, replicating (the slaves say so, and quorum_disk confirms
/// only what a slave holds), then kill -9 of the master under load: a slave takes over and
/// no confirmed message is lost; the killed member rejoins as a slave over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_mutual_tls_replicates_and_fails_over() {
    let d = tempfile::tempdir().unwrap();
    let group_ca = ca("group CA");
    let m = Member::new(d.path(), "member", &group_ca, &group_ca.0);
    let mut c = Cluster::new(d.path(), &zk_standalone(), "tls-failover", &m.ha());
    for i in 0..3 {
        c.start(i);
    }
    let (m0, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master");
    for i in (0..3).filter(|i| *i != m0) {
        assert!(
            c.proc(i).wait_log("replicating from the master", T),
            "b{i} never followed"
        );
    }
    for i in 0..3 {
        assert_eq!(
            c.proc(i).log_count("the replication link is plain TCP"),
            0,
            "b{i} runs the link in clear"
        );
    }
    let history = Arc::new(History::create(&d.path().join("history.log")));
    let load = Load::start(&c.uri(), history.clone(), 400);
    assert!(load.wait_confirmed(100, T).await, "no write confirmed");
    c.kill9(m0);
    let (m1, took) = tokio::task::block_in_place(|| c.wait_master(&[m0], T)).expect("no failover");
    c.start(m0);
    assert!(
        c.proc(m0).wait_log("replicating from the master", T),
        "the old master never rejoined over TLS"
    );
    load.finish(false).await;
    history.flush();
    let verdict = check_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("replicated over TLS: {verdict:?}; b{m1} accepted {took:?} after the kill");
    assert!(verdict.confirmed >= 100, "{verdict:?}");
    c.assert_epochs_unique();
}

/// Two members with the group's certificates elect a master; the third is first configured
/// without TLS, then with a certificate of another CA: each time the master logs the refused
/// handshake and the member never starts as a slave, while the master keeps exactly one slave.
/// With the group's certificate, the same member follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_tls_or_with_another_cas_certificate_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let group_ca = ca("group CA");
    let rogue_ca = ca("rogue CA");
    let good = Member::new(d.path(), "member", &group_ca, &group_ca.0);
    // Trusts the group's CA (so it would accept the master) but presents a certificate of
    // another CA.
    let rogue = Member::new(d.path(), "rogue", &rogue_ca, &group_ca.0);
    let mut c = Cluster::new(d.path(), &zk_standalone(), "tls-refused", "");
    let admin = format!("127.0.0.1:{}", support::free_port());
    // b0 and b1 are the TLS pair; b0 is preferred (weight) and shows its slaves on /api/v1/ha.
    c.extra = format!("{}weight = 10\n", good.ha());
    c.transports_extra = format!("admin = \"{admin}\"\n");
    c.start(0);
    c.transports_extra = String::new();
    c.extra = format!("{}weight = 5\n", good.ha());
    c.start(1);
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master");
    assert_eq!(m, 0, "the heavier member is master");
    assert!(c.proc(1).wait_log("replicating from the master", T));

    for (what, extra) in [
        ("a plain-TCP member", "weight = 0\n".to_string()),
        (
            "a member with a rogue certificate",
            format!("{}weight = 0\n", rogue.ha()),
        ),
    ] {
        let refusals = c.proc(0).log_count("refusing a replication connection");
        c.extra = extra;
        c.start(2);
        let deadline = std::time::Instant::now() + T;
        while c.proc(0).log_count("refusing a replication connection") <= refusals {
            assert!(
                std::time::Instant::now() < deadline,
                "the master never refused {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            c.proc(2).wait_log("stopped following the master", T),
            "{what} did not fail to follow"
        );
        // Logged once the master welcomed it (the election's "Slave started" comes before
        // connecting).
        assert_eq!(
            c.proc(2).log_count("replicating from the master"),
            0,
            "{what} followed"
        );
        let ha = tokio::task::block_in_place(|| admin_json(&admin, "/api/v1/ha"));
        assert_eq!(
            ha["replication"]["slaves"].as_array().map(Vec::len),
            Some(1),
            "{what} is counted as a slave: {ha}"
        );
        assert!(c.procs[2].as_mut().unwrap().terminate());
    }

    // The same member with the group's certificate follows: the refusals were the TLS's.
    c.extra = format!("{}weight = 0\n", good.ha());
    c.start(2);
    assert!(c.proc(2).wait_log("replicating from the master", T));
}

/// `ha.tls_cert`, `ha.tls_key` and `ha.tls_ca` reloaded on SIGHUP: the master's files are
/// replaced by a certificate and CA bundle of a new CA and the master is sent SIGHUP. A member
/// of the old CA is then refused on its new connection, a member of the new CA becomes a slave,
/// and the slave connected before the reload keeps its connection (the master counts two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_replication_certificate_and_ca_for_new_connections() {
    let d = tempfile::tempdir().unwrap();
    let old_ca = ca("old CA");
    let new_ca = ca("new CA");
    let master_files = Member::new(d.path(), "b0", &old_ca, &old_ca.0);
    let old = Member::new(d.path(), "old", &old_ca, &old_ca.0);
    let new = Member::new(d.path(), "new", &new_ca, &new_ca.0);
    let mut c = Cluster::new(d.path(), &zk_standalone(), "tls-reload", "");
    let admin = format!("127.0.0.1:{}", support::free_port());
    c.extra = format!("{}weight = 10\n", master_files.ha());
    c.transports_extra = format!("admin = \"{admin}\"\n");
    c.start(0);
    c.transports_extra = String::new();
    c.extra = format!("{}weight = 5\n", old.ha());
    c.start(1);
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master");
    assert_eq!(m, 0, "the heavier member is master");
    assert!(c.proc(1).wait_log("replicating from the master", T));

    // A bundle without a certificate: the reload is refused whole, saying which file.
    std::fs::write(&master_files.ca, "not a certificate").unwrap();
    c.proc(0).signal("HUP");
    assert!(
        c.proc(0).wait_log(
            "configuration reload (SIGHUP) failed, keeping the running configuration: ha.tls_ca",
            T
        ),
        "a bad ha.tls_ca was not refused: {:?}",
        c.proc(0).log.lock().unwrap()
    );

    // The operator rotates the master's files in place and sends SIGHUP.
    let rotated = Member::new(d.path(), "b0-rotated", &new_ca, &new_ca.0);
    std::fs::copy(&rotated.cert, &master_files.cert).unwrap();
    std::fs::copy(&rotated.key, &master_files.key).unwrap();
    std::fs::copy(&rotated.ca, &master_files.ca).unwrap();
    c.proc(0).signal("HUP");
    assert!(
        c.proc(0).wait_log("configuration reloaded (SIGHUP)", T),
        "no reload logged: {:?}",
        c.proc(0).log.lock().unwrap()
    );
    assert_eq!(c.proc(0).log_count("restart_needed"), 0);

    // A member of the old CA: refused on a new connection.
    let refusals = c.proc(0).log_count("refusing a replication connection");
    c.extra = format!("{}weight = 0\n", old.ha());
    c.start(2);
    assert!(
        c.proc(2).wait_log("stopped following the master", T),
        "a member of the old CA did not fail to follow"
    );
    let deadline = std::time::Instant::now() + T;
    while c.proc(0).log_count("refusing a replication connection") <= refusals {
        assert!(
            std::time::Instant::now() < deadline,
            "the master never logged the refused handshake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.proc(2).log_count("replicating from the master"), 0);
    assert!(c.procs[2].as_mut().unwrap().terminate());

    // A member of the new CA follows.
    c.extra = format!("{}weight = 0\n", new.ha());
    c.start(2);
    assert!(
        c.proc(2).wait_log("replicating from the master", T),
        "a member of the new CA was not accepted after the reload"
    );
    // b1's connection, made before the reload with the old CA, is still counted: had it been
    // cut, its reconnection (old CA) would have been refused.
    let deadline = std::time::Instant::now() + T;
    loop {
        let ha = tokio::task::block_in_place(|| admin_json(&admin, "/api/v1/ha"));
        if ha["replication"]["slaves"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not two slaves: {ha}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.proc(1).log_count("stopped following the master"), 0);
}

fn admin_json(admin: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn load_err(env: &[(&str, &str)]) -> String {
    let mut vars = vec![("FERROMQ__HA__MODE".to_string(), "replicated".to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    format!("{:#}", Config::load(None, vars).unwrap_err())
}

#[test]
fn half_a_tls_configuration_or_an_unreadable_file_stops_the_start() {
    let d = tempfile::tempdir().unwrap();
    let group_ca = ca("group CA");
    let m = Member::new(d.path(), "member", &group_ca, &group_ca.0);
    let (cert, key, cafile) = (
        m.cert.to_str().unwrap(),
        m.key.to_str().unwrap(),
        m.ca.to_str().unwrap(),
    );

    let err = load_err(&[
        ("FERROMQ__HA__TLS_CERT", cert),
        ("FERROMQ__HA__TLS_KEY", key),
    ]);
    assert!(
        err.contains("ha.tls_ca") && err.contains("missing"),
        "{err}"
    );

    let missing = d.path().join("nope.pem");
    let err = load_err(&[
        ("FERROMQ__HA__TLS_CERT", cert),
        ("FERROMQ__HA__TLS_KEY", key),
        ("FERROMQ__HA__TLS_CA", missing.to_str().unwrap()),
    ]);
    assert!(
        err.contains("ha.tls_ca") && err.contains("nope.pem"),
        "{err}"
    );

    // A certificate where the key should be.
    let err = load_err(&[
        ("FERROMQ__HA__TLS_CERT", cert),
        ("FERROMQ__HA__TLS_KEY", cert),
        ("FERROMQ__HA__TLS_CA", cafile),
    ]);
    assert!(err.contains("ha.tls_key"), "{err}");

    // Outside replicated mode the keys would do nothing: refused rather than ignored.
    let vars = vec![("FERROMQ__HA__TLS_CERT".to_string(), cert.to_string())];
    let err = format!("{:#}", Config::load(None, vars).unwrap_err());
    assert!(err.contains("replicated"), "{err}");

    let vars = [
        ("FERROMQ__HA__MODE", "replicated"),
        ("FERROMQ__HA__TLS_CERT", cert),
        ("FERROMQ__HA__TLS_KEY", key),
        ("FERROMQ__HA__TLS_CA", cafile),
    ];
    Config::load(
        None,
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap();
}
