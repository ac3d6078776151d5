//! Fake STOMP brokers for the failover tests: each test scripts what every broker does with
//! the one connection it accepts, and closes sockets or listeners to simulate failures.

#![allow(dead_code)]

use std::time::Duration;

use bytes::BytesMut;
use ferromq_client::{ClientConfig, FailoverClient, FailoverConfig, HeartBeat};
use ferromq_protocol::stomp::{encode, Command, Decoder, Frame, Item, Limits, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound on any single wait, so a bug fails fast instead of hanging.
pub const STEP: Duration = Duration::from_secs(5);

/// The broker end of one connection.
pub struct Peer {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
    version: Version,
}

impl Peer {
    /// The next item, or `None` when the client closed the connection.
    pub async fn recv_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(item);
            }
            self.buf.reserve(4096);
            let n = tokio::time::timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .expect("client sent nothing in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// The next frame, skipping heart-beats.
    pub async fn recv_frame(&mut self) -> Frame {
        loop {
            match self.recv_item().await {
                Some(Item::Frame(f)) => return f,
                Some(Item::HeartBeat) => continue,
                None => panic!("client closed the connection while a frame was expected"),
            }
        }
    }

    /// The next frame, which must be a `command`.
    pub async fn expect(&mut self, command: Command) -> Frame {
        let frame = self.recv_frame().await;
        assert_eq!(frame.command, command, "unexpected frame {frame:?}");
        frame
    }

    pub async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        encode(&frame, self.version, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Answers `frame`'s `receipt` header with a RECEIPT.
    pub async fn receipt_for(&mut self, frame: &Frame) {
        let id = frame
            .header("receipt")
            .expect("frame has no receipt header");
        self.send(Frame::new(Command::Receipt).with_header("receipt-id", id))
            .await;
    }

    /// Reads CONNECT, answers CONNECTED (STOMP 1.2, no heart-beats), returns the CONNECT.
    pub async fn handshake(&mut self) -> Frame {
        self.handshake_with(&[]).await
    }

    /// [`Peer::handshake`] with `extra` headers on the CONNECTED frame.
    pub async fn handshake_with(&mut self, extra: &[(&str, &str)]) -> Frame {
        let connect = self.expect(Command::Connect).await;
        let mut connected = Frame::new(Command::Connected)
            .with_header("version", "1.2")
            .with_header("heart-beat", "0,0");
        for (name, value) in extra {
            connected.push_header(*name, *value);
        }
        self.send(connected).await;
        self.version = Version::V1_2;
        self.decoder.set_version(Version::V1_2);
        connect
    }
}

/// A listening fake broker.
pub struct Broker {
    pub addr: String,
    listener: TcpListener,
}

impl Broker {
    pub async fn bind() -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Broker {
            addr: listener.local_addr().unwrap().to_string(),
            listener,
        }
    }

    /// Accepts one connection and handshakes; the listener stays open.
    pub async fn accept(&self) -> (Peer, Frame) {
        self.accept_with(&[]).await
    }

    /// [`Broker::accept`] with `extra` headers on the CONNECTED frame.
    pub async fn accept_with(&self, extra: &[(&str, &str)]) -> (Peer, Frame) {
        let (stream, _) = tokio::time::timeout(STEP, self.listener.accept())
            .await
            .expect("no client connected")
            .unwrap();
        let mut peer = Peer {
            stream,
            decoder: Decoder::new(Limits::default()),
            buf: BytesMut::new(),
            version: Version::V1_0,
        };
        let connect = peer.handshake_with(extra).await;
        (peer, connect)
    }

    /// True if a client connected within `within` (the connection is then dropped unanswered).
    pub async fn was_connected_within(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.listener.accept())
            .await
            .is_ok()
    }

    /// Accepts one connection and stops listening, so that later connects are refused.
    pub async fn accept_once(self) -> (Peer, Frame) {
        self.accept().await
    }

    /// [`Broker::accept_once`] with `extra` headers on the CONNECTED frame.
    pub async fn accept_once_with(self, extra: &[(&str, &str)]) -> (Peer, Frame) {
        self.accept_with(extra).await
    }
}

/// An address nothing listens on: connects to it are refused.
pub async fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

pub fn config() -> FailoverConfig {
    FailoverConfig {
        client: ClientConfig {
            client_id: Some("cid-1".into()),
            heart_beat: HeartBeat::default(),
            connect_timeout: STEP,
            receipt_timeout: STEP,
            ..ClientConfig::default()
        },
        seed: Some(7),
        ..FailoverConfig::default()
    }
}

/// `failover:(tcp://a,tcp://b,...)` in order, with 1 ms back-off steps and `extra` options.
pub fn uri(addrs: &[&str], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("tcp://{a}")).collect();
    let mut uri = format!(
        "failover:({})?randomize=false&initialReconnectDelay=1&maxReconnectDelay=5",
        list.join(",")
    );
    if !extra.is_empty() {
        uri.push('&');
        uri.push_str(extra);
    }
    uri
}

/// Waits until the client has made `n` connections (it reconnected `n - 1` times).
pub async fn wait_for_connection(client: &FailoverClient, n: u64) {
    tokio::time::timeout(STEP, async {
        while !(client.connection_count() == n && client.is_connected()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("client did not reconnect in time");
}

pub fn message(subscription: &str, id: &str, body: &'static str, redelivered: bool) -> Frame {
    let mut frame = Frame::new(Command::Message)
        .with_header("destination", "/queue/a")
        .with_header("subscription", subscription)
        .with_header("message-id", id)
        .with_header(
            "ack",
            format!("ack-{id}-{}", if redelivered { "2" } else { "1" }),
        )
        .with_body(body);
    if redelivered {
        frame.push_header("redelivered", "true");
    }
    frame
}
