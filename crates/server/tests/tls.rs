//! TLS on the broker's listeners: STOMP and OpenWire over TLS share the plain listeners'
//! sessions (receipts, persistence across a restart), clients that do not trust the broker's CA
//! or lack a trusted client certificate (`tls.need_client_auth`) are refused during the
//! handshake without disturbing anyone else, a silent client is closed after the handshake
//! timeout, the admin endpoint answers over HTTPS, and bad `[tls]` settings stop the start with
//! the key at fault. Certificates are made at test time (rcgen); no key is committed.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferromq_client::{AckMode, Client, ClientConfig, ClientError};
use ferromq_protocol::openwire::{self as ow, Command, CommandHeader};
use ferromq_server::config::Config;
use ferromq_server::server::Server;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA with a server certificate (localhost, 127.0.0.1) and a client certificate, plus an
/// unrelated CA, as PEM files in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate signed by the unrelated CA.
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
    other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    (cert, key)
}

fn leaf(
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    issuer: &(rcgen::Certificate, KeyPair),
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![purpose];
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_pair = ca("ferromq test CA");
        let other = ca("some other CA");
        let (server_cert, server_key) = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca_pair,
        );
        let (client_cert, client_key) =
            leaf(&["app"], ExtendedKeyUsagePurpose::ClientAuth, &ca_pair);
        let (rogue_cert, rogue_key) = leaf(&["rogue"], ExtendedKeyUsagePurpose::ClientAuth, &other);
        Pki {
            ca: write("ca.pem", &ca_pair.0.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            rogue_cert: write("rogue.pem", &rogue_cert),
            rogue_key: write("rogue.key", &rogue_key),
            other_ca: write("other-ca.pem", &other.0.pem()),
            _dir: dir,
        }
    }

    /// The `[tls]` section with the server certificate, and `extra` lines.
    fn section(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            self.server_cert.display(),
            self.server_key.display()
        )
    }

    /// A config with STOMP and OpenWire over TLS on ephemeral ports.
    fn config(&self, tls_extra: &str) -> Config {
        common::config(&format!(
            "stomp_ssl = \"127.0.0.1:0\"\nopenwire_ssl = \"127.0.0.1:0\"\n{}",
            self.section(tls_extra)
        ))
    }

    fn client(&self, ca: &Path, cert: Option<(&Path, &Path)>) -> ClientConfig {
        ClientConfig {
            tls: Some(ferromq_client::tls::client_config(ca, cert).unwrap()),
            ..ClientConfig::default()
        }
    }

    fn trusting(&self) -> ClientConfig {
        self.client(&self.ca, None)
    }
}

fn ssl_url(s: &Server) -> String {
    format!("ssl://127.0.0.1:{}", s.stomp_ssl_addr.unwrap().port())
}

/// Sends one message with a receipt and reads it back on a subscription, over `client`.
async fn round_trip(client: &Client, queue: &str, body: &str) {
    let mut sub = client.subscribe(queue, AckMode::Client, &[]).await.unwrap();
    client
        .send_with_receipt(queue, body.to_string(), &[])
        .await
        .unwrap();
    let m = sub
        .next_timeout(Duration::from_secs(10))
        .await
        .expect("the message comes back");
    assert_eq!(m.body().as_ref(), body.as_bytes());
    client.ack(&m, None).await.unwrap();
}

#[tokio::test]
async fn stomp_over_tls_sends_subscribes_receives_and_acknowledges_with_receipts() {
    let pki = Pki::new();
    let s = Server::start(pki.config("")).await.unwrap();
    let c = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    round_trip(&c, "/queue/tls.roundtrip", "over TLS").await;
    // The plain listener still speaks plain STOMP, next to the TLS one.
    let plain = common::connect(&s).await;
    round_trip(&plain, "/queue/plain.roundtrip", "in the clear").await;
    c.disconnect().await.unwrap();
    plain.disconnect().await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_large_message_crosses_tls_intact_in_both_directions() {
    let pki = Pki::new();
    let s = Server::start(pki.config("")).await.unwrap();
    let c = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    // Several TLS records (16 KiB each) for one frame, each way.
    let body: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    round_trip(&c, "/queue/tls.large", &body).await;
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_persistent_message_sent_over_tls_survives_a_restart() {
    let pki = Pki::new();
    let cfg = pki.config("");
    let s = Server::start(cfg.clone()).await.unwrap();
    let c = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    c.send_with_receipt("/queue/tls.durable", "kept", &[("persistent", "true")])
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    s.shutdown().await.unwrap();

    let s = Server::start(cfg).await.unwrap();
    let c = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    let mut sub = c
        .subscribe("/queue/tls.durable", AckMode::Auto, &[])
        .await
        .unwrap();
    let m = sub
        .next_timeout(Duration::from_secs(10))
        .await
        .expect("the message survived the restart");
    assert_eq!(m.body().as_ref(), b"kept");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_the_handshake_and_the_broker_keeps_serving() {
    let pki = Pki::new();
    let s = Server::start(pki.config("")).await.unwrap();
    let err = Client::connect(&ssl_url(&s), pki.client(&pki.other_ca, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Plain STOMP at the TLS port: the handshake fails there too.
    let mut raw = TcpStream::connect(s.stomp_ssl_addr.unwrap()).await.unwrap();
    raw.write_all(b"CONNECT\naccept-version:1.2\n\n\0")
        .await
        .unwrap();
    let mut scratch = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut scratch)).await;
    assert!(
        read.is_ok(),
        "the broker closes a connection that does not speak TLS"
    );
    assert!(
        !scratch.starts_with(b"CONNECTED"),
        "no STOMP answer in the clear"
    );
    let good = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    round_trip(&good, "/queue/tls.after_bad", "still serving").await;
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_silent_after_connecting_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new();
    let s = Server::start(pki.config("handshake_timeout_ms = 300\n"))
        .await
        .unwrap();
    let mut silent = TcpStream::connect(s.stomp_ssl_addr.unwrap()).await.unwrap();
    let mut byte = [0u8; 1];
    // The positive event awaited is the broker closing the socket (the 20 s bound only keeps a
    // broken broker from hanging the test).
    let n = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut byte))
        .await
        .expect("the broker closes a silent TLS connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte: nothing was negotiated");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_trusted_certificate_and_accepts_one_with() {
    let pki = Pki::new();
    let s = Server::start(pki.config(&format!(
        "ca = \"{}\"\nneed_client_auth = true\n",
        pki.ca.display()
    )))
    .await
    .unwrap();
    // No certificate: refused. Under TLS 1.3 the client finishes its side before the server
    // checks it, so the refusal may surface as the alert read where CONNECTED was expected.
    let none = Client::connect(&ssl_url(&s), pki.trusting()).await;
    assert!(none.is_err(), "a client without a certificate is refused");
    // A certificate from an untrusted CA: refused too.
    let rogue = Client::connect(
        &ssl_url(&s),
        pki.client(&pki.ca, Some((&pki.rogue_cert, &pki.rogue_key))),
    )
    .await;
    assert!(
        rogue.is_err(),
        "a client certificate from another CA is refused"
    );
    let ok = Client::connect(
        &ssl_url(&s),
        pki.client(&pki.ca, Some((&pki.client_cert, &pki.client_key))),
    )
    .await
    .unwrap();
    round_trip(&ok, "/queue/tls.mutual", "with a certificate").await;
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn want_client_auth_accepts_clients_with_or_without_a_trusted_certificate() {
    let pki = Pki::new();
    let s = Server::start(pki.config(&format!(
        "ca = \"{}\"\nwant_client_auth = true\n",
        pki.ca.display()
    )))
    .await
    .unwrap();
    let without = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    round_trip(&without, "/queue/tls.want1", "no certificate").await;
    let with = Client::connect(
        &ssl_url(&s),
        pki.client(&pki.ca, Some((&pki.client_cert, &pki.client_key))),
    )
    .await
    .unwrap();
    round_trip(&with, "/queue/tls.want2", "a certificate").await;
    let rogue = Client::connect(
        &ssl_url(&s),
        pki.client(&pki.ca, Some((&pki.rogue_cert, &pki.rogue_key))),
    )
    .await;
    assert!(rogue.is_err(), "a certificate that is sent must be trusted");
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn authentication_applies_over_tls_as_over_tcp() {
    let pki = Pki::new();
    let cfg = common::config(&format!(
        "stomp_ssl = \"127.0.0.1:0\"\n[security]\nplaintext_passwords = true\n\
         [[security.users]]\nusername = \"app\"\npassword = \"secret\"\n{}",
        pki.section("")
    ));
    let s = Server::start(cfg).await.unwrap();
    let err = Client::connect(&ssl_url(&s), pki.trusting())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Server { .. }), "{err:?}");
    let c = Client::connect(
        &ssl_url(&s),
        ClientConfig {
            login: Some("app".into()),
            passcode: Some("secret".into()),
            ..pki.trusting()
        },
    )
    .await
    .unwrap();
    round_trip(&c, "/queue/tls.auth", "logged in").await;
    s.shutdown().await.unwrap();
}

/// A TLS client stream to `addr` trusting `ca`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let cfg = ferromq_client::tls::client_config(ca, None).unwrap();
    let mut cfg = (*cfg).clone();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// OpenWire commands over a TLS client stream, with the sans-I/O codec.
struct OwTls {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
    decoder: ow::Decoder,
}

impl OwTls {
    async fn send(&mut self, cmd: Command) {
        let bytes = ow::encode_command(&cmd, 12).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next command other than a keep-alive (bounded wait; the server must not close).
    async fn next(&mut self) -> Command {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                match ow::decode_command(&f, 12).unwrap() {
                    Command::KeepAliveInfo(_) => continue,
                    cmd => return cmd,
                }
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("the server answers within 20 s")
                    .unwrap();
            assert!(n > 0, "the server closed the connection");
        }
    }
}

#[tokio::test]
async fn openwire_over_tls_negotiates_and_opens_a_connection_and_a_session() {
    let pki = Pki::new();
    let s = Server::start(pki.config("")).await.unwrap();
    let mut w = OwTls {
        stream: tls_connect(s.openwire_ssl_addr.unwrap(), &pki.ca, &[]).await,
        buf: BytesMut::new(),
        decoder: ow::Decoder::new(ow::DEFAULT_MAX_FRAME_SIZE),
    };
    let Command::WireFormatInfo(info) = w.next().await else {
        panic!("the server speaks first, with its WireFormatInfo");
    };
    assert_eq!(info.magic, ow::MAGIC);
    let mut props = ow::PrimitiveMap::new();
    props.insert("MaxInactivityDuration", ow::PrimitiveValue::Long(30_000));
    w.send(Command::WireFormatInfo(ow::WireFormatInfo {
        magic: ow::MAGIC,
        version: 12,
        marshalled_properties: Some(ow::map::encode_map(Some(&props)).unwrap()),
    }))
    .await;
    let Command::BrokerInfo(_) = w.next().await else {
        panic!("BrokerInfo after negotiation");
    };
    let header = |id| CommandHeader {
        command_id: id,
        response_required: true,
    };
    let connection_id = "ID:tls-test".to_string();
    w.send(Command::ConnectionInfo(ow::ConnectionInfo {
        header: header(1),
        connection_id: Some(ow::ConnectionId {
            value: connection_id.clone(),
        }),
        client_id: Some("tls-test".into()),
        ..Default::default()
    }))
    .await;
    let Command::Response(r) = w.next().await else {
        panic!("ConnectionInfo is answered");
    };
    assert_eq!(r.correlation_id, 1);
    w.send(Command::SessionInfo(ow::SessionInfo {
        header: header(2),
        session_id: Some(ow::SessionId {
            connection_id,
            value: 1,
        }),
    }))
    .await;
    let Command::Response(r) = w.next().await else {
        panic!("SessionInfo is answered with a Response");
    };
    assert_eq!(r.correlation_id, 2);
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_admin_endpoint_answers_status_over_https() {
    let pki = Pki::new();
    let cfg = common::config(&format!(
        "admin = \"127.0.0.1:0\"\nadmin_tls = true\n{}",
        pki.section("")
    ));
    let (listener, addr) = ferromq_server::admin::bind("127.0.0.1:0").await.unwrap();
    let (_status_tx, status_rx) = tokio::sync::watch::channel(ferromq_server::admin::Status {
        broker: "tls-admin".into(),
        role: "master".into(),
        ..Default::default()
    });
    let acceptor = ferromq_server::tls::acceptor(&cfg.tls, &[b"http/1.1"]).unwrap();
    let served = tokio::spawn(ferromq_server::admin::serve(
        listener,
        status_rx,
        Arc::new(cfg),
        Some(acceptor),
    ));
    let mut stream = tls_connect(addr, &pki.ca, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server ends the TLS session with close_notify; read until then.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the admin endpoint answers within 10 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"broker\":\"tls-admin\""), "{text}");
    // Plain HTTP at the HTTPS port gets no answer in the clear.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut scratch = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut scratch)).await;
    assert!(
        !scratch.starts_with(b"HTTP/1.1 200"),
        "no status in the clear"
    );
    served.abort();
}

fn load_err(extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.toml");
    std::fs::write(&p, extra).unwrap();
    format!("{:#}", Config::load(Some(&p), Vec::new()).unwrap_err())
}

#[test]
fn a_tls_listener_without_cert_and_key_is_an_error_naming_the_keys() {
    let err = load_err("[transports]\nstomp_ssl = \"127.0.0.1:61612\"\n");
    assert!(
        err.contains("transports.stomp_ssl") && err.contains("tls.cert") && err.contains("tls.key"),
        "{err}"
    );
    let err = load_err("[transports]\nopenwire_ssl = \"ssl://127.0.0.1:61617\"\n");
    assert!(err.contains("transports.openwire_ssl"), "{err}");
    let err = load_err("[transports]\nadmin_tls = true\n");
    assert!(err.contains("transports.admin"), "{err}");
}

#[test]
fn unreadable_or_invalid_pem_is_an_error_naming_the_file() {
    let pki = Pki::new();
    let missing = load_err(&format!(
        "[transports]\nstomp_ssl = \"127.0.0.1:0\"\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"{}\"\n",
        pki.server_key.display()
    ));
    assert!(
        missing.contains("tls.cert") && missing.contains("/nonexistent/cert.pem"),
        "{missing}"
    );
    // A certificate where the key should be.
    let swapped = load_err(&format!(
        "[transports]\nstomp_ssl = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.server_cert.display(),
        pki.server_cert.display()
    ));
    assert!(swapped.contains("tls.key"), "{swapped}");
    // A key that does not belong to the certificate.
    let mismatched = load_err(&format!(
        "[transports]\nstomp_ssl = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.server_cert.display(),
        pki.client_key.display()
    ));
    assert!(mismatched.contains("tls.cert and tls.key"), "{mismatched}");
    let garbage = pki.ca.with_file_name("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = load_err(&format!(
        "[transports]\nstomp_ssl = \"127.0.0.1:0\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        garbage.display(),
        pki.server_key.display()
    ));
    assert!(
        err.contains("tls.cert") && err.contains("garbage.pem"),
        "{err}"
    );
}

#[test]
fn client_auth_needs_a_ca_and_a_ca_needs_client_auth() {
    let pki = Pki::new();
    let base = format!(
        "[transports]\nstomp_ssl = \"127.0.0.1:0\"\n{}",
        pki.section("")
    );
    let err = load_err(&format!("{base}need_client_auth = true\n"));
    assert!(err.contains("tls.ca"), "{err}");
    let err = load_err(&format!("{base}ca = \"{}\"\n", pki.ca.display()));
    assert!(err.contains("need_client_auth"), "{err}");
}

#[test]
fn the_default_configuration_has_no_tls_listener() {
    let c = Config::load(None, Vec::new()).unwrap();
    assert!(c.stomp_ssl_listen_addr().is_none());
    assert!(c.openwire_ssl_listen_addr().is_none());
    assert!(!c.transports.admin_tls);
}

/// Runs the `ferromq` binary with `args`; returns (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(support::BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_produces_consumes_and_reads_status_over_mutual_tls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (port, ssl_port, admin_port) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let config = format!(
        "[broker]\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n\
         stomp_ssl = \"127.0.0.1:{ssl_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\
         admin_tls = true\n{}",
        dir.path().join("data").display(),
        pki.section(&format!(
            "ca = \"{}\"\nneed_client_auth = true\n",
            pki.ca.display()
        ))
    );
    let mut broker = support::Proc::start("tls-cli", dir.path(), port, &config);
    assert!(
        broker.wait_accepting(Duration::from_secs(60)).is_some(),
        "ferromq did not start"
    );
    assert!(broker.wait_log("admin endpoint: https://", Duration::from_secs(30)));
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let url = format!("ssl://127.0.0.1:{ssl_port}");
    let tls = ["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key];
    let mut produce = vec!["produce", "--url", &url, "-d", "/queue/cli.tls", "-n", "2"];
    produce.extend(tls);
    let (ok, _, err) = cli(&produce);
    assert!(ok, "produce over TLS: {err}");
    let mut consume = vec!["consume", "--url", &url, "-d", "/queue/cli.tls", "-n", "2"];
    consume.extend(tls);
    let (ok, out, err) = cli(&consume);
    assert!(ok, "consume over TLS: {err}");
    assert!(
        out.contains("message 1") && out.contains("message 2"),
        "{out}"
    );
    let admin = format!("https://127.0.0.1:{admin_port}");
    let mut status = vec!["status", "--admin", &admin];
    status.extend(tls);
    let (ok, out, err) = cli(&status);
    assert!(ok, "status over HTTPS: {err}");
    assert!(out.contains("\"role\":\"master\""), "{out}");
    // Without the CA the tools refuse, saying what is missing.
    let (ok, _, err) = cli(&["produce", "--url", &url, "-d", "/queue/cli.tls"]);
    assert!(!ok && err.contains("--tls-ca"), "{err}");
    let (ok, _, err) = cli(&["status", "--admin", &admin]);
    assert!(!ok && err.contains("--tls-ca"), "{err}");
    assert!(broker.terminate(), "clean shutdown exits 0");
}

#[tokio::test]
async fn the_tls_listener_keeps_its_connection_limit() {
    let pki = Pki::new();
    let cfg = common::config(&format!(
        "stomp_ssl = \"127.0.0.1:0\"\n[stomp]\nmax_connections = 1\n{}",
        pki.section("")
    ));
    let s = Server::start(cfg).await.unwrap();
    let first = Client::connect(&ssl_url(&s), pki.trusting()).await.unwrap();
    // The second is closed before any handshake: the listener's one permit is taken.
    let second = Client::connect(&ssl_url(&s), pki.trusting()).await;
    assert!(
        second.is_err(),
        "a connection over stomp.max_connections is refused"
    );
    round_trip(&first, "/queue/tls.limit", "the first still works").await;
    first.disconnect().await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tls_address_without_tls_settings_is_refused_by_the_client_before_dialling() {
    let err = Client::connect("ssl://127.0.0.1:1", ClientConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("ClientConfig::tls"), "{err}");
}
