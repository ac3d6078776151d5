//! Security beyond logins and rules (issue 18): `ferromq serve` reloads `[security]` and the
//! TLS certificate on SIGHUP without dropping connections (run as a process: the signal handler
//! is the binary's), a bad file keeps the running configuration, `security.max_connections_per_ip`
//! refuses and releases, and client certificates log in as `[[security.certificate_users]]`.
//! Certificates are made at test time (rcgen); no key is committed.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferromq_client::{AckMode, Client, ClientConfig, ClientError};
use ferromq_server::server::Server;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use support::{free_port, Proc};

const RELOADED: &str = "configuration reloaded (SIGHUP)";
const RELOAD_FAILED: &str =
    "configuration reload (SIGHUP) failed, keeping the running configuration:";
const WAIT: Duration = Duration::from_secs(20);

/// Users alice (writers), bob (writers) and ada (admins); admins may do anything to any queue,
/// and `orders.>` may be written by `orders_writers`.
fn security(orders_writers: &str) -> String {
    format!(
        r#"
[security]
plaintext_passwords = true

[[security.users]]
username = "alice"
password = "a"
groups = ["writers"]

[[security.users]]
username = "bob"
password = "b"
groups = ["writers"]

[[security.users]]
username = "ada"
password = "d"
groups = ["admins"]

[[security.authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"

[[security.authorization]]
queue = "orders.>"
read = "admins"
write = "{orders_writers}"
admin = "writers,admins"

[[security.authorization]]
queue = "audit.>"
read = "admins"
write = "writers,admins"
admin = "writers,admins"
"#
    )
}

fn login(user: &str, pass: &str) -> ClientConfig {
    ClientConfig {
        login: Some(user.into()),
        passcode: Some(pass.into()),
        ..ClientConfig::default()
    }
}

/// The ERROR message a refused operation got.
fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Server { message, .. }) => message,
        other => panic!("expected an ERROR frame, got {other:?}"),
    }
}

/// A `ferromq serve` process with its config file, which a test rewrites before a SIGHUP.
struct Served {
    proc: Proc,
    dir: tempfile::TempDir,
    /// `[transports]` lines beyond `stomp` (kept across rewrites).
    transports: String,
}

impl Served {
    fn start(transports: &str, rest: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let transports = transports.to_string();
        let text = Served::text(dir.path(), port, &transports, rest);
        let proc = Proc::start("sec", dir.path(), port, &text);
        // Logged once every listener is bound. (No probe connection: it would count against
        // max_connections_per_ip until the broker saw it close.)
        assert!(
            proc.wait_log("ferromq started", WAIT),
            "the broker did not start"
        );
        Served {
            proc,
            dir,
            transports,
        }
    }

    fn text(dir: &Path, port: u16, transports: &str, rest: &str) -> String {
        format!(
            "[broker]\nname = \"sec\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n{transports}\n{rest}",
            dir.join("data").display()
        )
    }

    /// Rewrites the config file and sends SIGHUP; returns once the broker logged the outcome
    /// (`want` is the line expected, `RELOADED` or `RELOAD_FAILED`), asserting it is that one.
    fn reload(&self, rest: &str, want: &str) {
        let text = Served::text(self.dir.path(), self.proc.port, &self.transports, rest);
        self.reload_text(&text, want);
    }

    fn reload_text(&self, text: &str, want: &str) {
        let before_ok = self.proc.log_count(RELOADED);
        let before_failed = self.proc.log_count(RELOAD_FAILED);
        std::fs::write(self.dir.path().join("sec.toml"), text).unwrap();
        self.proc.signal("HUP");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let ok = self.proc.log_count(RELOADED) - before_ok;
            let failed = self.proc.log_count(RELOAD_FAILED) - before_failed;
            if ok + failed > 0 {
                let (want_ok, want_failed) = if want == RELOADED { (1, 0) } else { (0, 1) };
                assert_eq!(
                    (ok, failed),
                    (want_ok, want_failed),
                    "one reload, one line: {:?}",
                    self.proc.log.lock().unwrap()
                );
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no reload outcome logged"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn addr(&self) -> String {
        self.proc.addr()
    }
}

/// Reads one queue as ada (admins): the bodies, up to and including `last`.
async fn bodies_until(addr: &str, queue: &str, last: &str) -> Vec<String> {
    let c = Client::connect(addr, login("ada", "d")).await.unwrap();
    let mut sub = c.subscribe(queue, AckMode::Auto, &[]).await.unwrap();
    let mut got = Vec::new();
    loop {
        let m = sub
            .next_timeout(WAIT)
            .await
            .expect("the marker message arrives");
        let body = String::from_utf8_lossy(m.body()).to_string();
        got.push(body.clone());
        if body == last {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_on_sighup_refuses_the_next_send_of_an_open_connection_and_stores_nothing() {
    let b = Served::start("", &security("writers"));
    let alice = Client::connect(&b.addr(), login("alice", "a"))
        .await
        .unwrap();
    let bob = Client::connect(&b.addr(), login("bob", "b")).await.unwrap();
    alice
        .send_with_receipt("/queue/orders.eu", "before".to_string(), &[])
        .await
        .expect("writers may send to orders.> before the reload");

    // Only admins may write to orders.> now.
    b.reload(&security("admins"), RELOADED);
    assert!(
        !b.proc
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("restart_needed")),
        "only reloadable settings changed"
    );

    let refused = alice
        .send_with_receipt("/queue/orders.eu", "after".to_string(), &[])
        .await;
    let message = refusal(refused);
    assert!(
        message.contains("queue://orders.eu") && message.contains("alice"),
        "the ERROR names the destination and the user: {message}"
    );
    // Bob's connection, open since before the reload, was not dropped: it sends where the
    // new rules still let writers send.
    bob.send_with_receipt("/queue/audit.log", "still here".to_string(), &[])
        .await
        .expect("a connection open before the reload keeps working");
    assert!(!bob.is_closed());
    // Nothing of the refused send was stored: ada reads "before", then her own marker.
    let ada = Client::connect(&b.addr(), login("ada", "d")).await.unwrap();
    ada.send_with_receipt("/queue/orders.eu", "marker".to_string(), &[])
        .await
        .unwrap();
    assert_eq!(
        bodies_until(&b.addr(), "/queue/orders.eu", "marker").await,
        ["before", "marker"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_on_sighup_keeps_the_running_users_and_rules() {
    let b = Served::start("", &security("writers"));
    let before = Client::connect(&b.addr(), login("alice", "a"))
        .await
        .unwrap();
    // Not TOML at all.
    b.reload("[security\nusers = ", RELOAD_FAILED);
    // TOML, but a rule naming both a queue and a topic; and a user dropped.
    let bad_rule = security("admins").replace(
        "queue = \"orders.>\"",
        "queue = \"orders.>\"\ntopic = \"x\"",
    );
    let bad_rule = bad_rule.replace("username = \"alice\"", "username = \"alicia\"");
    b.reload(&bad_rule, RELOAD_FAILED);
    let logged = b.proc.log.lock().unwrap().join("\n");
    assert!(
        logged.contains("exactly one of `queue`, `topic` or `temp = true`"),
        "the failure says why: {logged}"
    );
    // The old rules still apply: alice (still a user) may write to orders.>, on her open
    // connection and on a new one.
    before
        .send_with_receipt("/queue/orders.a", "1".to_string(), &[])
        .await
        .expect("the open connection keeps the old rules");
    let again = Client::connect(&b.addr(), login("alice", "a"))
        .await
        .unwrap();
    again
        .send_with_receipt("/queue/orders.a", "2".to_string(), &[])
        .await
        .expect("a new connection gets the old users and rules");
    // A good file afterwards is taken; a setting that needs a restart is named in its line.
    b.reload(
        &(security("admins") + "\n[stomp]\nmax_subscriptions = 10\n"),
        RELOADED,
    );
    let line = b
        .proc
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains(RELOADED))
        .cloned()
        .unwrap();
    assert!(
        line.contains("restart_needed") && line.contains("[stomp]"),
        "{line}"
    );
    let message = refusal(
        again
            .send_with_receipt("/queue/orders.a", "3".to_string(), &[])
            .await,
    );
    assert!(message.contains("queue://orders.a"), "{message}");
}

/// The status line of `GET path` on the admin endpoint at `addr` with basic auth.
async fn admin_get(addr: &str, path: &str, user: &str, pass: &str) -> String {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the admin endpoint answers")
        .unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_who_may_log_in_without_closing_open_connections() {
    let admin = format!("127.0.0.1:{}", free_port());
    let b = Served::start(&format!("admin = \"{admin}\""), &security("writers"));
    assert!(admin_get(&admin, "/api/v1/broker", "carol", "c")
        .await
        .contains("401"));
    let alice = Client::connect(&b.addr(), login("alice", "a"))
        .await
        .unwrap();
    // alice's password changes; carol appears.
    let next = security("writers").replace("password = \"a\"", "password = \"a2\"")
        + "\n[[security.users]]\nusername = \"carol\"\npassword = \"c\"\ngroups = [\"writers\"]\n";
    b.reload(&next, RELOADED);
    let old = refusal(Client::connect(&b.addr(), login("alice", "a")).await);
    assert!(old.contains("is invalid"), "{old}");
    Client::connect(&b.addr(), login("alice", "a2"))
        .await
        .expect("the new password");
    Client::connect(&b.addr(), login("carol", "c"))
        .await
        .expect("a user added by the reload");
    // The admin API checks the reloaded users too.
    let ok = admin_get(&admin, "/api/v1/broker", "carol", "c").await;
    assert!(ok.contains("200"), "{ok}");
    let old = admin_get(&admin, "/api/v1/broker", "alice", "a").await;
    assert!(old.contains("401"), "{old}");
    alice
        .send_with_receipt("/queue/orders.x", "open".to_string(), &[])
        .await
        .expect("the connection made with the old password stays open");
}

// ---- TLS ----

/// A CA and what it signs, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: (rcgen::Certificate, KeyPair),
    ca_file: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "ferromq test CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Pki {
            dir,
            ca: (cert, key),
            ca_file,
        }
    }

    /// A leaf certificate with subject `dn` (most general first, as DER orders it) and `sans`,
    /// written as `<name>.pem` and `<name>.key`.
    fn leaf(
        &self,
        name: &str,
        dn: &[(DnType, &str)],
        sans: &[&str],
        purpose: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        // rcgen starts with a CN of its own: begin empty, so the order is ours.
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.extended_key_usages = vec![purpose];
        let cert = p.signed_by(&key, &self.ca.0, &self.ca.1).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn server(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.leaf(
            name,
            &[(DnType::CommonName, cn)],
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, name: &str, dn: &[(DnType, &str)]) -> (PathBuf, PathBuf) {
        self.leaf(name, dn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn client_config(&self, cert: Option<&(PathBuf, PathBuf)>) -> ClientConfig {
        ClientConfig {
            tls: Some(
                ferromq_client::tls::client_config(
                    &self.ca_file,
                    cert.map(|(c, k)| (c.as_path(), k.as_path())),
                )
                .unwrap(),
            ),
            ..ClientConfig::default()
        }
    }
}

/// The DER of the certificate a TLS listener presents to a new handshake now.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let cfg = ferromq_client::tls::client_config(ca, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &Path) -> Vec<u8> {
    ferromq_server::tls::load_certs("test", pem).unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_to_new_handshakes_and_keeps_open_tls_connections() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "broker-2025");
    let first = der_of(&cert);
    let ssl_port = free_port();
    let ssl: SocketAddr = format!("127.0.0.1:{ssl_port}").parse().unwrap();
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let b = Served::start(&format!("stomp_ssl = \"{ssl}\""), &tls);
    assert_eq!(served_certificate(ssl, &pki.ca_file).await, first);
    let open = Client::connect(&format!("ssl://{ssl}"), pki.client_config(None))
        .await
        .unwrap();

    // The operator renews the certificate in place (same file names) and sends SIGHUP.
    let (renewed, renewed_key) = pki.server("renewed", "broker-2026");
    std::fs::copy(&renewed, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    b.reload(&tls, RELOADED);
    let second = der_of(&renewed);
    assert_ne!(first, second);
    assert_eq!(
        served_certificate(ssl, &pki.ca_file).await,
        second,
        "a handshake after the reload gets the renewed certificate"
    );
    open.send_with_receipt("/queue/tls.open", "kept".to_string(), &[])
        .await
        .expect("the TLS connection made before the reload stays open");

    // A key that does not belong to the certificate: refused, the renewed pair stays.
    let (_, stray_key) = pki.server("stray", "stray");
    std::fs::copy(&stray_key, &key).unwrap();
    b.reload(&tls, RELOAD_FAILED);
    assert_eq!(served_certificate(ssl, &pki.ca_file).await, second);
    let c = Client::connect(&format!("ssl://{ssl}"), pki.client_config(None))
        .await
        .expect("new TLS clients still get in");
    c.send_with_receipt("/queue/tls.open", "new".to_string(), &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_takes_a_new_tls_ca_bundle_for_the_client_certificates_of_new_handshakes() {
    let pki = Pki::new();
    let new_pki = Pki::new();
    let (cert, key) = pki.server("server", "broker");
    let old_client = pki.client("old-client", &[(DnType::CommonName, "old-client")]);
    let new_client = new_pki.client("new-client", &[(DnType::CommonName, "new-client")]);
    // The bundle that signs client certificates, replaced in place as an operator would.
    let bundle = pki.dir.path().join("client-cas.pem");
    std::fs::copy(&pki.ca_file, &bundle).unwrap();
    let ssl_port = free_port();
    let ssl = format!("ssl://127.0.0.1:{ssl_port}");
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nneed_client_auth = true\n",
        cert.display(),
        key.display(),
        bundle.display()
    );
    let b = Served::start(&format!("stomp_ssl = \"127.0.0.1:{ssl_port}\""), &tls);
    // Each client trusts the broker's certificate (`pki`'s CA) and presents its own.
    let presenting = |c: &(PathBuf, PathBuf)| pki.client_config(Some(c));
    assert!(
        Client::connect(&ssl, presenting(&new_client))
            .await
            .is_err(),
        "a certificate of a CA not in the bundle is refused"
    );
    let open = Client::connect(&ssl, presenting(&old_client))
        .await
        .expect("a certificate of the old CA gets in before the reload");

    std::fs::copy(&new_pki.ca_file, &bundle).unwrap();
    b.reload(&tls, RELOADED);
    let c = Client::connect(&ssl, presenting(&new_client))
        .await
        .expect("a certificate of the new CA gets in after the reload");
    c.send_with_receipt("/queue/ca.new", "new CA".to_string(), &[])
        .await
        .unwrap();
    assert!(
        Client::connect(&ssl, presenting(&old_client))
            .await
            .is_err(),
        "the old CA, no longer in the bundle, admits no new handshake"
    );
    open.send_with_receipt("/queue/ca.old", "kept".to_string(), &[])
        .await
        .expect("a connection verified before the reload stays open");

    // A bundle that is no PEM: refused, the new CA stays in force.
    std::fs::write(&bundle, "not a certificate").unwrap();
    b.reload(&tls, RELOAD_FAILED);
    Client::connect(&ssl, presenting(&new_client))
        .await
        .expect("the CA in force before the bad reload still admits its clients");
}

// ---- max_connections_per_ip ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_limit_are_refused_until_one_closes() {
    let s =
        common::start("openwire = \"127.0.0.1:0\"\n[security]\nmax_connections_per_ip = 2\n").await;
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let first = common::connect(&s).await;
    // The limit counts every listener: an OpenWire socket takes the second place.
    let openwire = tokio::net::TcpStream::connect(s.openwire_addr.unwrap())
        .await
        .unwrap();
    wait_until(|| s.connections.open_from(ip) == 2).await;
    // Refused at once, before any CONNECT: read the ERROR without sending anything.
    let mut refused = common::Raw::connect(&s).await;
    common::assert_error(
        refused.frame().await,
        "Connection limit of 2 per client address reached (max_connections_per_ip)",
    );
    assert!(refused.closed_by_server().await);
    assert_eq!(
        s.connections.open_from(ip),
        2,
        "the refused one is not counted"
    );
    // Closing one frees its place.
    drop(openwire);
    wait_until(|| s.connections.open_from(ip) == 1).await;
    let second = Client::connect(&s.stomp_addr.to_string(), ClientConfig::default())
        .await
        .expect("a place is free again");
    second
        .send_with_receipt("/queue/ip", "x".to_string(), &[])
        .await
        .unwrap();
    first.disconnect().await.unwrap();
    second.disconnect().await.unwrap();
    wait_until(|| s.connections.open_from(ip) == 0).await;
    s.shutdown().await.unwrap();
}

/// Waits (bounded, 20 s) until `cond` holds.
async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_logged_with_its_address_and_the_limit_reloads() {
    let b = Served::start("", "[security]\nmax_connections_per_ip = 1\n");
    let _one = Client::connect(&b.addr(), ClientConfig::default())
        .await
        .unwrap();
    let mut refused = common::Raw::connect_addr(&b.addr()).await;
    common::assert_error(refused.frame().await, "max_connections_per_ip");
    assert!(b.proc.wait_log(
        "security.max_connections_per_ip reached for 127.0.0.1",
        WAIT
    ));
    // The limit is part of [security]: a reload raises it for the next connection.
    b.reload("[security]\nmax_connections_per_ip = 2\n", RELOADED);
    Client::connect(&b.addr(), ClientConfig::default())
        .await
        .expect("the raised limit applies");
}

// ---- certificate users ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_client_certificate_logs_in_without_a_password_and_an_unknown_one_does_not() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "broker");
    let app = pki.client(
        "app",
        &[
            (DnType::CountryName, "DE"),
            (DnType::OrganizationName, "Acme, Inc."),
            (DnType::CommonName, "orders-app"),
        ],
    );
    let stranger = pki.client("stranger", &[(DnType::CommonName, "stranger")]);
    let s = common::start(&format!(
        r#"stomp_ssl = "127.0.0.1:0"
[tls]
cert = "{}"
key = "{}"
ca = "{}"
need_client_auth = true

[security]
plaintext_passwords = true

[[security.users]]
username = "ops"
password = "o"
groups = ["admins"]

[[security.certificate_users]]
username = "orders-app"
subject = "CN=orders-app, O=Acme\\, Inc., C=DE"
groups = ["writers"]

[[security.authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"

[[security.authorization]]
queue = "orders.>"
read = "writers"
write = "writers"
admin = "writers"
"#,
        cert.display(),
        key.display(),
        pki.ca_file.display()
    ))
    .await;
    let url = format!("ssl://{}", s.stomp_ssl_addr.unwrap());

    // The mapped certificate, no login: it is orders-app, with orders-app's groups.
    let c = Client::connect(&url, pki.client_config(Some(&app)))
        .await
        .expect("a certificate user needs no password");
    c.send_with_receipt("/queue/orders.1", "by certificate".to_string(), &[])
        .await
        .expect("writers may send to orders.>");
    assert!(
        s.connections
            .snapshot()
            .iter()
            .any(|i| i.login.as_deref() == Some("orders-app")),
        "the connection is listed under the certificate's user"
    );
    // (An ERROR closes the connection.)
    let message = refusal(
        c.send_with_receipt("/queue/payroll", "no".to_string(), &[])
            .await,
    );
    assert!(
        message.contains("User orders-app is not authorized") && message.contains("payroll"),
        "{message}"
    );

    // An unknown (but trusted) certificate without a password is refused.
    let message = refusal(Client::connect(&url, pki.client_config(Some(&stranger))).await);
    assert!(message.contains("is invalid"), "{message}");
    // A mapped certificate naming another user without that user's password: refused too.
    let mut as_ops = pki.client_config(Some(&app));
    as_ops.login = Some("ops".into());
    let message = refusal(Client::connect(&url, as_ops).await);
    assert!(message.contains("[ops]"), "{message}");
    // A password still logs in over TLS, whatever the certificate.
    let mut with_password = pki.client_config(Some(&stranger));
    with_password.login = Some("ops".into());
    with_password.passcode = Some("o".into());
    let ops = Client::connect(&url, with_password)
        .await
        .expect("password login with an unmapped certificate");
    ops.send_with_receipt("/queue/payroll", "ops".to_string(), &[])
        .await
        .unwrap();
    // The plain listener has no certificate to offer: no password, no entry.
    let message =
        refusal(Client::connect(&s.stomp_addr.to_string(), ClientConfig::default()).await);
    assert!(message.contains("is invalid"), "{message}");
    s.shutdown().await.unwrap();
}

/// One admin API request over HTTPS presenting `cert` (or none) with basic auth `user` (or
/// none): the status and the body. Every request but a GET is a JSON POST (the CSRF rule).
async fn admin_https(
    admin: &str,
    pki: &Pki,
    cert: Option<&(PathBuf, PathBuf)>,
    user: Option<(&str, &str)>,
    method: &str,
    path: &str,
) -> (u16, serde_json::Value) {
    let tls = ferromq_client::tls::client_config(
        &pki.ca_file,
        cert.map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap();
    let auth = user.map(|(u, p)| ferromq_server::admin::cli::Credentials {
        user: u.into(),
        password: p.into(),
    });
    let body = (method != "GET").then_some("{}");
    let (status, body) = ferromq_server::admin::cli::request(
        &format!("https://{admin}"),
        method,
        path,
        auth.as_ref(),
        body,
        Some(&tls),
    )
    .await
    .unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// The admin endpoint over HTTPS (a real `ferromq serve`): a verified client certificate
/// mapped by `[[security.certificate_users]]` logs a request in as its user, as on the STOMP
/// and OpenWire listeners; the `admins` rule for state changes holds; an unmapped certificate
/// and a request with neither certificate nor basic auth are refused with the usual JSON
/// error; basic auth still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_logs_in_a_mapped_client_certificate_and_still_takes_basic_auth() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "broker");
    let ops = pki.client("ops", &[(DnType::CommonName, "ops-cert")]);
    let viewer = pki.client("viewer", &[(DnType::CommonName, "viewer-cert")]);
    let stranger = pki.client("stranger", &[(DnType::CommonName, "stranger")]);
    let admin = format!("127.0.0.1:{}", free_port());
    // want_client_auth: a certificate is checked when sent, and basic auth without one works.
    let rest = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nwant_client_auth = true\n{}\n\
         [[security.certificate_users]]\nusername = \"ops-by-cert\"\nsubject = \"CN=ops-cert\"\n\
         groups = [\"admins\"]\n\n\
         [[security.certificate_users]]\nusername = \"viewer-by-cert\"\n\
         subject = \"CN=viewer-cert\"\ngroups = [\"writers\"]\n",
        cert.display(),
        key.display(),
        pki.ca_file.display(),
        security("writers"),
    );
    let b = Served::start(&format!("admin = \"{admin}\"\nadmin_tls = true"), &rest);
    assert!(b.proc.wait_log("admin endpoint: https://", WAIT));
    let ada = Client::connect(&b.addr(), login("ada", "d")).await.unwrap();
    let fill = |n: usize| {
        let ada = &ada;
        async move {
            for i in 0..n {
                ada.send_with_receipt("/queue/admin.cert", format!("m{i}"), &[])
                    .await
                    .unwrap();
            }
        }
    };
    fill(2).await;
    const PURGE: &str = "/api/v1/queues/admin.cert/purge";
    const QUEUES: &str = "/api/v1/queues";

    // A certificate mapped to an admin purges, with no password.
    let (status, body) = admin_https(&admin, &pki, Some(&ops), None, "POST", PURGE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], 2, "{body}");

    // A certificate mapped to a user outside admins reads but may not purge.
    fill(1).await;
    let (status, body) = admin_https(&admin, &pki, Some(&viewer), None, "GET", QUEUES).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_https(&admin, &pki, Some(&viewer), None, "POST", PURGE).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("admins"),
        "{body}"
    );

    // A trusted certificate nobody is mapped to, and no certificate at all: 401.
    for (what, c) in [
        ("an unmapped certificate", Some(&stranger)),
        ("nothing", None),
    ] {
        let (status, body) = admin_https(&admin, &pki, c, None, "GET", QUEUES).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("authentication required"),
            "{what}: {body}"
        );
    }

    // Basic auth still works, with or without a certificate; a wrong password is not rescued
    // by an admin's certificate.
    let (status, body) = admin_https(&admin, &pki, None, Some(("ada", "d")), "POST", PURGE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], 1, "{body}");
    let (status, body) = admin_https(
        &admin,
        &pki,
        Some(&stranger),
        Some(("alice", "a")),
        "GET",
        QUEUES,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_https(&admin, &pki, None, Some(("alice", "a")), "POST", PURGE).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = admin_https(
        &admin,
        &pki,
        Some(&ops),
        Some(("ada", "wrong")),
        "GET",
        QUEUES,
    )
    .await;
    assert_eq!(status, 401, "{body}");
}

#[test]
fn certificate_users_need_client_certificates_and_a_valid_subject() {
    let err = config_error;
    let e = err("[[security.certificate_users]]\nusername = \"a\"\nsubject = \"CN=a\"\n");
    assert!(e.contains("need_client_auth"), "{e}");
    let e = err(
        "[tls]\nwant_client_auth = true\n[[security.certificate_users]]\nusername = \"a\"\nsubject = \"=a\"\n",
    );
    assert!(e.contains("certificate_users[0].subject"), "{e}");
}

// ---- network bridges over TLS, logged in ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_logs_in_to_a_remote_over_tls_and_forwards() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", "remote");
    // The remote: clients must log in; the bridge may only reach its TLS port's session.
    let mut remote_cfg = common::config(&format!(
        r#"stomp_ssl = "127.0.0.1:0"
[tls]
cert = "{}"
key = "{}"

[security]
plaintext_passwords = true

[[security.users]]
username = "bridge"
password = "bp"
groups = ["bridges"]

[[security.users]]
username = "app"
password = "ap"
groups = ["apps"]
"#,
        cert.display(),
        key.display()
    ));
    remote_cfg.broker.name = "remote".into();
    let remote = Server::start(remote_cfg).await.unwrap();
    let ssl = remote.stomp_ssl_addr.unwrap();
    let app = Client::connect(&remote.stomp_addr.to_string(), login("app", "ap"))
        .await
        .unwrap();
    let mut sub = app
        .subscribe("/queue/bridged", AckMode::Auto, &[])
        .await
        .unwrap();

    let mut local_cfg = common::config(&format!(
        r#"
[[network_connectors]]
name = "to-remote"
uri = "static:(ssl://{ssl})"
tls_ca = "{}"
user_name = "bridge"
password = "bp"
"#,
        pki.ca_file.display()
    ));
    local_cfg.broker.name = "local".into();
    let local = Server::start(local_cfg).await.unwrap();
    let producer = common::connect(&local).await;
    producer
        .send_with_receipt("/queue/bridged", "over TLS".to_string(), &[])
        .await
        .unwrap();
    let m = sub
        .next_timeout(WAIT)
        .await
        .expect("the bridge forwards to the remote's consumer");
    assert_eq!(m.body().as_ref(), b"over TLS");
    assert!(
        remote
            .connections
            .snapshot()
            .iter()
            .any(|c| c.login.as_deref() == Some("bridge")),
        "the bridge is connected to the remote as its user"
    );
    local.shutdown().await.unwrap();
    remote.shutdown().await.unwrap();
}

#[test]
fn bridge_tls_and_login_options_are_checked_at_start() {
    let err = |connector: &str| -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, format!("[[network_connectors]]\n{connector}")).unwrap();
        format!(
            "{:#}",
            ferromq_server::config::Config::load(Some(&p), Vec::new()).unwrap_err()
        )
    };
    let e = err("uri = \"static:(ssl://127.0.0.1:61612)\"\n");
    assert!(e.contains("tls_ca"), "{e}");
    let e = err("uri = \"static:(tcp://127.0.0.1:61613)\"\ntls_ca = \"/ca.pem\"\n");
    assert!(e.contains("no address of uri is ssl://"), "{e}");
    let e = err("uri = \"static:(ssl://127.0.0.1:61612)\"\ntls_ca = \"/nonexistent/ca.pem\"\n");
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    let e = err("uri = \"static:(tcp://127.0.0.1:61613)\"\npassword = \"x\"\n");
    assert!(e.contains("password without user_name"), "{e}");
}

// ---- bridges to brokers found by discovery, over TLS ----

/// A multicast group of this test's own (random port, `tag`), on loopback, with fast adverts.
fn multicast_group(tag: &str) -> String {
    format!(
        "multicast://239.255.2.4:{}?group={tag}{}&interface=127.0.0.1&keepAliveInterval=100",
        free_port(),
        std::process::id()
    )
}

/// A broker named `name` serving STOMP over TLS with the certificate `cert` and advertising
/// that listener (`stomp+ssl://`) on `group`; `tls_extra` goes into `[tls]` (client
/// certificate settings), `rest` after it (`[security]`).
async fn tls_advertising_broker(
    name: &str,
    cert: &(PathBuf, PathBuf),
    group: &str,
    tls_extra: &str,
    rest: &str,
) -> Server {
    let mut cfg = common::config(&format!(
        r#"stomp_ssl = "127.0.0.1:0"
discovery = "{group}"
discovery_transport = "stomp+ssl"
[tls]
cert = "{}"
key = "{}"
{tls_extra}
{rest}
"#,
        cert.0.display(),
        cert.1.display(),
    ));
    cfg.broker.name = name.into();
    Server::start(cfg).await.unwrap()
}

/// A broker named `local` with a discovery connector on `group` that trusts `ca` and presents
/// `client` (a certificate of `ca`'s).
async fn discovering_tls_broker(group: &str, ca: &Path, client: &(PathBuf, PathBuf)) -> Server {
    let mut cfg = common::config(&format!(
        r#"
[[network_connectors]]
name = "found"
uri = "{group}"
tls_ca = "{}"
tls_cert = "{}"
tls_key = "{}"
initial_reconnect_delay_ms = 50
max_reconnect_delay_ms = 200
"#,
        ca.display(),
        client.0.display(),
        client.1.display(),
    ));
    cfg.broker.name = "local".into();
    Server::start(cfg).await.unwrap()
}

/// User `app` (password `ap`) and the certificate user `bridge` (`CN=bridge`): the only way
/// to log in as `bridge` is its client certificate over TLS, so a connection listed as
/// `bridge` proves both.
const BRIDGE_CERT_USER: &str = r#"
[security]
plaintext_passwords = true

[[security.users]]
username = "app"
password = "ap"
groups = ["apps"]

[[security.certificate_users]]
username = "bridge"
subject = "CN=bridge"
groups = ["bridges"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_to_a_broker_found_by_discovery_uses_tls_and_logs_in_by_its_certificate() {
    let pki = Pki::new();
    let group = multicast_group("tlsfound");
    let remote = tls_advertising_broker(
        "remote",
        &pki.server("remote", "remote"),
        &group,
        &format!(
            "ca = \"{}\"\nneed_client_auth = true\n",
            pki.ca_file.display()
        ),
        BRIDGE_CERT_USER,
    )
    .await;
    let app = Client::connect(&remote.stomp_addr.to_string(), login("app", "ap"))
        .await
        .unwrap();
    let mut sub = app
        .subscribe("/queue/found", AckMode::Auto, &[])
        .await
        .unwrap();

    let bridge_cert = pki.client("bridge", &[(DnType::CommonName, "bridge")]);
    let local = discovering_tls_broker(&group, &pki.ca_file, &bridge_cert).await;
    let producer = common::connect(&local).await;
    producer
        .send_with_receipt("/queue/found", "found, over TLS".to_string(), &[])
        .await
        .unwrap();
    let m = sub
        .next_timeout(WAIT)
        .await
        .expect("the discovered bridge forwards to the remote's consumer");
    assert_eq!(m.body().as_ref(), b"found, over TLS");

    let ssl = remote.stomp_ssl_addr.unwrap();
    let bridges = local.bridges.snapshot();
    assert_eq!(bridges.len(), 1);
    assert_eq!(
        bridges[0].addrs,
        vec![format!("ssl://{ssl}")],
        "the bridge dials the advertised TLS listener"
    );
    assert!(
        remote
            .connections
            .snapshot()
            .iter()
            .any(|c| c.login.as_deref() == Some("bridge")),
        "the bridge is logged in by its client certificate, which only TLS carries"
    );
    local.shutdown().await.unwrap();
    remote.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_broker_with_an_untrusted_certificate_is_refused_and_a_trusted_one_is_not() {
    let pki = Pki::new();
    let rogue_pki = Pki::new();
    let group = multicast_group("tlsrogue");
    let trusted = tls_advertising_broker(
        "trusted",
        &pki.server("trusted", "trusted"),
        &group,
        &format!(
            "ca = \"{}\"\nneed_client_auth = true\n",
            pki.ca_file.display()
        ),
        BRIDGE_CERT_USER,
    )
    .await;
    // Same group, a certificate of another CA, and no users (anyone may connect): a bridge
    // that did not verify the remote's certificate would connect to it.
    let rogue =
        tls_advertising_broker("rogue", &rogue_pki.server("rogue", "rogue"), &group, "", "").await;
    let mut subs = Vec::new();
    for (s, cfg) in [
        (&trusted, login("app", "ap")),
        (&rogue, ClientConfig::default()),
    ] {
        let app = Client::connect(&s.stomp_addr.to_string(), cfg)
            .await
            .unwrap();
        let sub = app
            .subscribe("/queue/found", AckMode::Auto, &[])
            .await
            .unwrap();
        subs.push((app, sub));
    }

    let bridge_cert = pki.client("bridge", &[(DnType::CommonName, "bridge")]);
    let local = discovering_tls_broker(&group, &pki.ca_file, &bridge_cert).await;
    // Both are discovered: a bridge each.
    wait_until(|| local.bridges.snapshot().len() == 2).await;
    let producer = common::connect(&local).await;
    producer
        .send_with_receipt("/queue/found", "for the trusted".to_string(), &[])
        .await
        .unwrap();
    let m = subs[0]
        .1
        .next_timeout(WAIT)
        .await
        .expect("the trusted broker's bridge forwards");
    assert_eq!(m.body().as_ref(), b"for the trusted");

    // The rogue's bridge retries every 50..200 ms; a second gives it several handshakes, each
    // of which must fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rogue_ssl = format!("ssl://{}", rogue.stomp_ssl_addr.unwrap());
    let bridges = local.bridges.snapshot();
    let to_rogue = bridges
        .iter()
        .find(|b| b.addrs == vec![rogue_ssl.clone()])
        .expect("the rogue was discovered");
    assert_eq!(
        to_rogue
            .stats
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no connection to a broker whose certificate the bridge's CA did not sign"
    );
    let enqueued_at_rogue = rogue
        .broker
        .snapshot()
        .into_iter()
        .find(|d| d.name == "queue://found")
        .map_or(0, |d| d.stats.enqueued);
    assert_eq!(enqueued_at_rogue, 0, "nothing reached the rogue");
    local.shutdown().await.unwrap();
    trusted.shutdown().await.unwrap();
    rogue.shutdown().await.unwrap();
}

#[test]
fn discovery_transport_options_are_checked_at_start() {
    let err = config_error;
    let e = err("[transports]\ndiscovery_transport = \"stomp+ssl\"\n");
    assert!(e.contains("transports.stomp_ssl is not set"), "{e}");
    let e = err("[transports]\ndiscovery_transport = \"ssl\"\n");
    assert!(e.contains("discovery_transport"), "{e}");
    let e = err("[transports]\nstomp_ssl_advertise = \"tcp://h:1\"\n");
    assert!(e.contains("stomp_ssl_advertise"), "{e}");
}

// ---- certificate users over OpenWire ----

/// An OpenWire connection over TLS presenting `cert`, negotiated up to its ConnectionInfo
/// (sent without user name or password); returns the broker's answer to it and the connection
/// (open as long as the caller keeps it).
async fn openwire_connect_with_certificate(
    addr: SocketAddr,
    pki: &Pki,
    cert: &(PathBuf, PathBuf),
) -> (
    ferromq_protocol::openwire::Command,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    use bytes::BytesMut;
    use ferromq_protocol::openwire::{self as ow, Command, CommandHeader};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cfg = ferromq_client::tls::client_config(&pki.ca_file, Some((&cert.0, &cert.1))).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let mut decoder = ow::Decoder::new(ow::DEFAULT_MAX_FRAME_SIZE);
    let mut answers = Vec::new();
    let mut props = ow::PrimitiveMap::new();
    props.insert("MaxInactivityDuration", ow::PrimitiveValue::Long(30_000));
    let hello = Command::WireFormatInfo(ow::WireFormatInfo {
        magic: ow::MAGIC,
        version: 12,
        marshalled_properties: Some(ow::map::encode_map(Some(&props)).unwrap()),
    });
    let info = Command::ConnectionInfo(ow::ConnectionInfo {
        header: CommandHeader {
            command_id: 1,
            response_required: true,
        },
        connection_id: Some(ow::ConnectionId {
            value: format!("ID:{}", cert.0.display()),
        }),
        ..Default::default()
    });
    for cmd in [hello, info] {
        stream
            .write_all(&ow::encode_command(&cmd, 12).unwrap())
            .await
            .unwrap();
    }
    // Skip the broker's WireFormatInfo, BrokerInfo and keep-alives: the answer to
    // ConnectionInfo is a Response or an ExceptionResponse.
    loop {
        while let Some(f) = decoder.decode(&mut buf).unwrap() {
            match ow::decode_command(&f, 12).unwrap() {
                c @ (Command::Response(_) | Command::ExceptionResponse(_)) => return (c, stream),
                other => answers.push(other),
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
            .await
            .expect("the broker answers")
            .unwrap();
        assert!(n > 0, "closed before answering ConnectionInfo: {answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openwire_client_logs_in_by_its_certificate_too() {
    use ferromq_protocol::openwire::Command;

    let pki = Pki::new();
    let (cert, key) = pki.server("server", "broker");
    let app = pki.client("app", &[(DnType::CommonName, "jms-app")]);
    let stranger = pki.client("stranger", &[(DnType::CommonName, "stranger")]);
    let s = common::start(&format!(
        r#"openwire_ssl = "127.0.0.1:0"
[tls]
cert = "{}"
key = "{}"
ca = "{}"
need_client_auth = true

[[security.certificate_users]]
username = "jms-app"
subject = "cn=jms-app"
groups = ["apps"]
"#,
        cert.display(),
        key.display(),
        pki.ca_file.display()
    ))
    .await;
    let addr = s.openwire_ssl_addr.unwrap();
    let (Command::Response(_), _open) = openwire_connect_with_certificate(addr, &pki, &app).await
    else {
        panic!("the mapped certificate logs in without a password");
    };
    assert!(s
        .connections
        .snapshot()
        .iter()
        .any(|c| c.protocol == "openwire" && c.login.as_deref() == Some("jms-app")));
    let (Command::ExceptionResponse(e), _) =
        openwire_connect_with_certificate(addr, &pki, &stranger).await
    else {
        panic!("an unknown certificate without a password is refused");
    };
    let ex = e.exception.unwrap();
    assert_eq!(
        ex.class_name.as_deref(),
        Some("java.lang.SecurityException")
    );
    s.shutdown().await.unwrap();
}

/// The error (with its causes) of loading `text` as a configuration file.
fn config_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.toml");
    std::fs::write(&p, text).unwrap();
    format!(
        "{:#}",
        ferromq_server::config::Config::load(Some(&p), Vec::new()).unwrap_err()
    )
}
