//! Helpers shared by the end-to-end tests: an in-process server on an ephemeral port and raw
//! socket access for malformed-input tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::BytesMut;
use ferromq_client::{Client, ClientConfig};
use ferromq_protocol::stomp::{Decoder, Frame, Item, Limits};
use ferromq_server::config::Config;
use ferromq_server::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A config listening on an ephemeral loopback port, tweaked by `extra` (TOML).
pub fn config(extra: &str) -> Config {
    // Each server gets its own data directory (the default store is the journal), kept for
    // the life of the test process.
    let dir = tempfile::tempdir().unwrap().keep();
    let p = dir.join("ferromq.toml");
    std::fs::write(
        &p,
        format!(
            "[broker]\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:0\"\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    Config::load(Some(&p), Vec::new()).unwrap()
}

pub async fn start(extra: &str) -> Server {
    Server::start(config(extra)).await.unwrap()
}

pub async fn connect(server: &Server) -> Client {
    connect_with(server, ClientConfig::default()).await
}

pub async fn connect_with(server: &Server, cfg: ClientConfig) -> Client {
    Client::connect(&server.stomp_addr.to_string(), cfg)
        .await
        .unwrap()
}

pub fn with_client_id(id: &str) -> ClientConfig {
    ClientConfig {
        client_id: Some(id.to_string()),
        ..ClientConfig::default()
    }
}

pub fn version(v: &str) -> ClientConfig {
    ClientConfig {
        accept_version: v.to_string(),
        ..ClientConfig::default()
    }
}

/// A raw STOMP connection for sending arbitrary bytes and reading frames back.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Raw {
    pub async fn connect(server: &Server) -> Raw {
        Raw::connect_addr(&server.stomp_addr.to_string()).await
    }

    /// A raw connection to `addr` (`host:port`), for a broker in another process.
    pub async fn connect_addr(addr: &str) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            decoder: Decoder::new(Limits::default()),
        }
    }

    /// Connects and completes a STOMP 1.2 handshake.
    pub async fn connected(server: &Server) -> Raw {
        let mut r = Raw::connect(server).await;
        r.send(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
            .await;
        let f = r.frame().await.expect("CONNECTED");
        assert_eq!(f.command.as_str(), "CONNECTED");
        r.decoder
            .set_version(ferromq_protocol::stomp::Version::V1_2);
        r
    }

    /// Decodes what follows as STOMP 1.2 (header escapes), after a handshake sent by hand.
    pub fn use_1_2(&mut self) {
        self.decoder
            .set_version(ferromq_protocol::stomp::Version::V1_2);
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, skipping heart-beats; None when the server closed the connection or
    /// after 10 s without one.
    pub async fn frame(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Item::Frame(f))) => return Some(f),
                Ok(Some(Item::HeartBeat)) => continue,
                Ok(None) => {}
                Err(e) => panic!("server sent a malformed frame: {e}"),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// True when the server closes the connection within 10 s (frames before that are read
    /// and discarded).
    pub async fn closed_by_server(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut scratch = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Asserts the frame is an ERROR whose `message` contains `needle`.
pub fn assert_error(f: Option<Frame>, needle: &str) {
    let f = f.expect("expected an ERROR frame, the connection closed without one");
    assert_eq!(f.command.as_str(), "ERROR", "{f:?}");
    let m = f.header("message").unwrap_or("");
    assert!(
        m.contains(needle),
        "ERROR message {m:?} does not contain {needle:?}"
    );
}
