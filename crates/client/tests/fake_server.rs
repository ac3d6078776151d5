//! The client against an in-test fake STOMP server that speaks a few scripted frames.
//!
//! Each test spawns the server side as a task that asserts what the client sent, while the test
//! body drives the client; the server task's panics surface through its `JoinHandle`.

use std::time::Duration;

use bytes::BytesMut;
use ferromq_client::{AckMode, Client, ClientConfig, ClientError};
use ferromq_protocol::stomp::{encode, Command, Decoder, Frame, HeartBeat, Item, Limits, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound on any single wait in these tests, so a bug fails fast instead of hanging.
const STEP: Duration = Duration::from_secs(5);

/// The server end of one connection.
struct Peer {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
    version: Version,
}

impl Peer {
    /// The next item, or `None` when the client closed the connection.
    async fn recv_item(&mut self) -> Option<Item> {
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
    async fn recv_frame(&mut self) -> Frame {
        loop {
            match self.recv_item().await {
                Some(Item::Frame(f)) => return f,
                Some(Item::HeartBeat) => continue,
                None => panic!("client closed the connection while a frame was expected"),
            }
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        encode(&frame, self.version, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// Answers `frame`'s `receipt` header with a RECEIPT.
    async fn receipt_for(&mut self, frame: &Frame) {
        let id = frame
            .header("receipt")
            .expect("frame has no receipt header");
        self.send(Frame::new(Command::Receipt).with_header("receipt-id", id))
            .await;
    }

    /// Reads CONNECT, answers CONNECTED with `version` and `heart_beat`, returns the CONNECT.
    async fn handshake(&mut self, version: Version, heart_beat: &str) -> Frame {
        let connect = self.recv_frame().await;
        assert_eq!(connect.command, Command::Connect);
        let connected = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("session", "sess-1")
            .with_header("server", "fake/1.0")
            .with_header("heart-beat", heart_beat);
        self.send(connected).await;
        self.version = version;
        self.decoder.set_version(version);
        connect
    }
}

async fn listen() -> (String, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener.local_addr().unwrap().to_string(), listener)
}

async fn accept(listener: &TcpListener) -> Peer {
    let (stream, _) = tokio::time::timeout(STEP, listener.accept())
        .await
        .expect("no client connected")
        .unwrap();
    Peer {
        stream,
        decoder: Decoder::new(Limits::default()),
        buf: BytesMut::new(),
        version: Version::V1_0,
    }
}

/// Starts a fake server that accepts one connection, handshakes with `version` and no
/// heart-beats, then runs `script`.
fn serve<F, Fut, T>(listener: TcpListener, version: Version, script: F) -> JoinHandle<T>
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.handshake(version, "0,0").await;
        script(peer).await
    })
}

fn quiet_config() -> ClientConfig {
    ClientConfig {
        heart_beat: HeartBeat::default(),
        receipt_timeout: STEP,
        connect_timeout: STEP,
        ..ClientConfig::default()
    }
}

async fn connect(addr: &str) -> Client {
    Client::connect(addr, quiet_config()).await.unwrap()
}

fn message(destination: &str, subscription: &str, id: &str, body: &'static str) -> Frame {
    Frame::new(Command::Message)
        .with_header("destination", destination)
        .with_header("subscription", subscription)
        .with_header("message-id", id)
        .with_header("ack", format!("ack-{id}"))
        .with_body(body)
}

#[tokio::test]
async fn connect_sends_handshake_headers_and_parses_connected() {
    let (addr, listener) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        let connect = peer.handshake(Version::V1_1, "0,0").await;
        assert_eq!(connect.header("accept-version"), Some("1.0,1.1,1.2"));
        assert_eq!(connect.header("host"), Some("vhost-a"));
        assert_eq!(connect.header("heart-beat"), Some("3000,4000"));
        assert_eq!(connect.header("login"), Some("admin"));
        assert_eq!(connect.header("passcode"), Some("pw"));
        assert_eq!(connect.header("client-id"), Some("cid-1"));
        // Keep the socket open until the client is done looking at it.
        peer.recv_item().await;
    });
    let config = ClientConfig {
        host: "vhost-a".into(),
        login: Some("admin".into()),
        passcode: Some("pw".into()),
        client_id: Some("cid-1".into()),
        heart_beat: HeartBeat {
            send_ms: 3000,
            recv_ms: 4000,
        },
        ..quiet_config()
    };
    let client = Client::connect(&format!("tcp://{addr}"), config)
        .await
        .unwrap();
    assert_eq!(client.version(), Version::V1_1);
    assert_eq!(client.session().as_deref(), Some("sess-1"));
    assert_eq!(client.server().as_deref(), Some("fake/1.0"));
    assert!(client
        .connected_headers()
        .contains(&("version".to_owned(), "1.1".to_owned())));
    // The server offered 0,0, so neither side beats.
    assert_eq!(client.heart_beat_ms(), (0, 0));
    assert!(!client.is_closed());
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn connect_fails_with_the_servers_error_frame() {
    let (addr, listener) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.recv_frame().await;
        peer.send(
            Frame::new(Command::Error)
                .with_header("message", "bad credentials")
                .with_body("login refused"),
        )
        .await;
    });
    let err = Client::connect(&addr, quiet_config()).await.unwrap_err();
    match err {
        ClientError::Server { message, body } => {
            assert_eq!(message, "bad credentials");
            assert_eq!(body, "login refused");
        }
        other => panic!("expected Server error, got {other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn connect_times_out_when_the_server_never_answers() {
    let (addr, listener) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.recv_frame().await;
        // Say nothing until the client gives up.
        assert!(peer.recv_item().await.is_none());
    });
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(200),
        ..quiet_config()
    };
    let err = Client::connect(&addr, config).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout("connect")), "{err:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn send_with_receipt_resolves_on_receipt_and_pipelined_receipts_resolve_in_any_order() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let send = peer.recv_frame().await;
        assert_eq!(send.command, Command::Send);
        assert_eq!(send.header("destination"), Some("/queue/a"));
        assert_eq!(send.header("persistent"), Some("true"));
        assert_eq!(&send.body[..], b"hello");
        peer.receipt_for(&send).await;

        let mut sends = Vec::new();
        for _ in 0..3 {
            sends.push(peer.recv_frame().await);
        }
        let bodies: Vec<_> = sends.iter().map(|f| f.body.clone()).collect();
        assert_eq!(bodies, vec!["m0", "m1", "m2"]);
        for send in sends.iter().rev() {
            peer.receipt_for(send).await;
        }
        peer.recv_item().await;
    });
    let client = connect(&addr).await;
    client
        .send_with_receipt("/queue/a", "hello", &[("persistent", "true")])
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.push(
            client
                .send_receipt_handle("/queue/b", format!("m{i}"), &[])
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        tokio::time::timeout(STEP, handle.wait())
            .await
            .unwrap()
            .unwrap();
    }
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn error_frame_fails_its_receipt_and_every_other_waiter_and_closes() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let first = peer.recv_frame().await;
        let second = peer.recv_frame().await;
        assert_eq!(second.header("destination"), Some("/queue/forbidden"));
        peer.send(
            Frame::new(Command::Error)
                .with_header("receipt-id", second.header("receipt").unwrap())
                .with_header("message", "not authorized")
                .with_body("user may not write to /queue/forbidden"),
        )
        .await;
        // The first SEND is never answered: the ERROR must fail it too.
        drop(first);
    });
    let client = connect(&addr).await;
    let pending = client
        .send_receipt_handle("/queue/ok", "x", &[])
        .await
        .unwrap();
    let err = client
        .send_with_receipt("/queue/forbidden", "y", &[])
        .await
        .unwrap_err();
    match &err {
        ClientError::Server { message, body } => {
            assert_eq!(message, "not authorized");
            assert!(body.contains("/queue/forbidden"));
        }
        other => panic!("expected Server error, got {other:?}"),
    }
    let err = pending.wait().await.unwrap_err();
    assert!(matches!(err, ClientError::Server { .. }), "{err:?}");
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(
        matches!(ended, Some(ClientError::Server { ref message, .. }) if message == "not authorized"),
        "{ended:?}"
    );
    assert!(client.is_closed());
    assert!(client.send("/queue/a", "z", &[]).await.is_err());
    server.await.unwrap();
}

#[tokio::test]
async fn subscribe_routes_messages_to_the_subscription_named_in_the_message() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_1, |mut peer| async move {
        let mut ids = Vec::new();
        for (destination, ack) in [("/queue/a", "client"), ("/topic/b", "auto")] {
            let sub = peer.recv_frame().await;
            assert_eq!(sub.command, Command::Subscribe);
            assert_eq!(sub.header("destination"), Some(destination));
            assert_eq!(sub.header("ack"), Some(ack));
            ids.push(sub.header("id").unwrap().to_owned());
            peer.receipt_for(&sub).await;
        }
        assert_ne!(ids[0], ids[1]);
        peer.send(message("/topic/b", &ids[1], "1", "b1")).await;
        peer.send(message("/queue/a", &ids[0], "2", "a1")).await;
        peer.send(message("/topic/b", &ids[1], "3", "b2")).await;
        // A message for an unknown subscription is dropped, not misrouted.
        peer.send(message("/queue/x", "nobody", "4", "x1")).await;
        peer.send(message("/queue/a", &ids[0], "5", "a2")).await;
        peer.recv_item().await;
    });
    let client = connect(&addr).await;
    let mut a = client
        .subscribe("/queue/a", AckMode::Client, &[])
        .await
        .unwrap();
    let mut b = client
        .subscribe("/topic/b", AckMode::Auto, &[])
        .await
        .unwrap();
    let mut got_a = Vec::new();
    for _ in 0..2 {
        let msg = a.next_timeout(STEP).await.unwrap();
        assert_eq!(msg.subscription(), Some(a.id()));
        got_a.push(msg.body().clone());
    }
    let mut got_b = Vec::new();
    for _ in 0..2 {
        let msg = b.next_timeout(STEP).await.unwrap();
        assert_eq!(msg.destination(), Some("/topic/b"));
        got_b.push(msg.body().clone());
    }
    assert_eq!(got_a, vec!["a1", "a2"]);
    assert_eq!(got_b, vec!["b1", "b2"]);
    assert!(a.next_timeout(Duration::from_millis(50)).await.is_none());
    drop((a, b, client));
    server.await.unwrap();
}

/// Runs subscribe → MESSAGE → ack(tx) → nack on `version` and returns the ACK and NACK frames
/// the server saw (NACK is `None` when the client refused to build one).
async fn ack_round_trip(version: Version) -> (Frame, Option<Frame>, Option<ClientError>) {
    let (addr, listener) = listen().await;
    let server = serve(listener, version, |mut peer| async move {
        let sub = peer.recv_frame().await;
        let id = sub.header("id").unwrap().to_owned();
        peer.receipt_for(&sub).await;
        peer.send(message("/queue/a", &id, "ID:m-1", "payload"))
            .await;
        let mut frames = Vec::new();
        while let Some(item) = peer.recv_item().await {
            if let Item::Frame(f) = item {
                frames.push(f);
            }
        }
        frames
    });
    let client = connect(&addr).await;
    let mut sub = client
        .subscribe("/queue/a", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    let msg = sub.next_timeout(STEP).await.unwrap();
    client.ack(&msg, Some("tx-9")).await.unwrap();
    let nack_err = client.nack(&msg, None).await.err();
    drop((sub, client));
    let frames = server.await.unwrap();
    let ack = frames
        .iter()
        .find(|f| f.command == Command::Ack)
        .cloned()
        .expect("no ACK");
    let nack = frames.iter().find(|f| f.command == Command::Nack).cloned();
    (ack, nack, nack_err)
}

fn headers(frame: &Frame) -> Vec<(&str, &str)> {
    frame.headers.iter().collect()
}

#[tokio::test]
async fn ack_frames_take_the_shape_the_negotiated_version_requires() {
    let (ack, nack, err) = ack_round_trip(Version::V1_2).await;
    assert_eq!(
        headers(&ack),
        [("id", "ack-ID:m-1"), ("transaction", "tx-9")]
    );
    assert_eq!(headers(&nack.unwrap()), [("id", "ack-ID:m-1")]);
    assert!(err.is_none());

    let (ack, nack, err) = ack_round_trip(Version::V1_1).await;
    let sub = ack.header("subscription").unwrap().to_owned();
    assert_eq!(
        headers(&ack),
        [
            ("message-id", "ID:m-1"),
            ("subscription", sub.as_str()),
            ("transaction", "tx-9")
        ]
    );
    assert_eq!(
        headers(&nack.unwrap()),
        [("message-id", "ID:m-1"), ("subscription", sub.as_str())]
    );
    assert!(err.is_none());

    let (ack, nack, err) = ack_round_trip(Version::V1_0).await;
    assert_eq!(
        headers(&ack),
        [("message-id", "ID:m-1"), ("transaction", "tx-9")]
    );
    assert!(nack.is_none(), "a NACK reached a 1.0 server");
    assert!(
        matches!(err, Some(ClientError::Unsupported("NACK"))),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_close_fails_pending_receipts_with_closed_and_ends_subscriptions() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let sub = peer.recv_frame().await;
        let id = sub.header("id").unwrap().to_owned();
        peer.receipt_for(&sub).await;
        peer.send(message("/queue/a", &id, "1", "before-close"))
            .await;
        let send = peer.recv_frame().await;
        assert_eq!(send.command, Command::Send);
        // Drop the connection without answering.
    });
    let client = connect(&addr).await;
    let mut sub = client
        .subscribe("/queue/a", AckMode::Auto, &[])
        .await
        .unwrap();
    let pending = client
        .send_receipt_handle("/queue/a", "x", &[])
        .await
        .unwrap();
    let err = tokio::time::timeout(STEP, pending.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    // What arrived before the close is still delivered, then the stream ends.
    assert_eq!(sub.next_timeout(STEP).await.unwrap().body(), "before-close");
    assert!(tokio::time::timeout(STEP, sub.next())
        .await
        .unwrap()
        .is_none());
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(matches!(ended, Some(ClientError::Closed)), "{ended:?}");
    let err = client
        .send_with_receipt("/queue/a", "y", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn unanswered_receipt_times_out_and_the_connection_stays_usable() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let ignored = peer.recv_frame().await;
        let answered = peer.recv_frame().await;
        // A late RECEIPT for the timed-out frame must not confuse anyone.
        peer.receipt_for(&ignored).await;
        peer.receipt_for(&answered).await;
        peer.recv_item().await;
    });
    let config = ClientConfig {
        receipt_timeout: Duration::from_millis(150),
        ..quiet_config()
    };
    let client = Client::connect(&addr, config).await.unwrap();
    let started = std::time::Instant::now();
    let err = client.begin("tx-1").await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout("receipt")), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    client.commit("tx-1").await.unwrap();
    assert!(!client.is_closed());
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn idle_client_sends_heart_beats_at_the_negotiated_rate() {
    let (addr, listener) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        // The server wants to hear from the client every 50 ms and sends nothing itself.
        let connect = peer.handshake(Version::V1_2, "0,50").await;
        assert_eq!(connect.header("heart-beat"), Some("20,0"));
        let started = tokio::time::Instant::now();
        let mut beats = 0;
        while started.elapsed() < Duration::from_millis(400) {
            match peer.recv_item().await {
                Some(Item::HeartBeat) => beats += 1,
                Some(Item::Frame(f)) => panic!("unexpected frame {f:?}"),
                None => break,
            }
        }
        beats
    });
    let config = ClientConfig {
        heart_beat: HeartBeat {
            send_ms: 20,
            recv_ms: 0,
        },
        ..quiet_config()
    };
    let client = Client::connect(&addr, config).await.unwrap();
    assert_eq!(client.heart_beat_ms(), (50, 0));
    let beats = server.await.unwrap();
    // 400 ms at one beat per 50 ms is 8; allow for scheduling jitter but not for silence or
    // for beating at the client's own (faster) 20 ms offer.
    assert!((5..=10).contains(&beats), "{beats} heart-beats in 400 ms");
    drop(client);
}

#[tokio::test]
async fn silent_server_is_declared_dead_after_twice_its_heart_beat() {
    let (addr, listener) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        // The server promises a beat every 50 ms, then never sends one.
        peer.handshake(Version::V1_2, "50,0").await;
        // The client closes its side once it gives up on us.
        while peer.recv_item().await.is_some() {}
    });
    let config = ClientConfig {
        heart_beat: HeartBeat {
            send_ms: 0,
            recv_ms: 50,
        },
        ..quiet_config()
    };
    let client = Client::connect(&addr, config).await.unwrap();
    assert_eq!(client.heart_beat_ms(), (0, 50));
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(
        matches!(ended, Some(ClientError::Timeout("server heart-beat"))),
        "{ended:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn server_heart_beats_keep_the_connection_alive() {
    let (addr, listener) = listen().await;
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        // The contract says a beat every 100 ms (so silence of 200 ms is fatal); beating every
        // 20 ms for 300 ms leaves a wide margin for a loaded test machine.
        peer.handshake(Version::V1_2, "100,0").await;
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            peer.stream.write_all(b"\n").await.unwrap();
        }
        peer
    });
    let config = ClientConfig {
        heart_beat: HeartBeat {
            send_ms: 0,
            recv_ms: 100,
        },
        ..quiet_config()
    };
    let client = Client::connect(&addr, config).await.unwrap();
    assert_eq!(client.heart_beat_ms(), (0, 100));
    let _peer = server.await.unwrap();
    // 300 ms passed, longer than the 200 ms silence limit, yet the beats kept it alive.
    assert!(!client.is_closed());
}

#[tokio::test]
async fn transactions_and_unsubscribe_wait_for_their_receipts() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let mut seen = Vec::new();
        loop {
            let frame = peer.recv_frame().await;
            let command = frame.command;
            seen.push(frame.clone());
            if frame.header("receipt").is_some() {
                peer.receipt_for(&frame).await;
            }
            if command == Command::Disconnect {
                break;
            }
        }
        seen
    });
    let client = connect(&addr).await;
    client.begin("tx-1").await.unwrap();
    client
        .send("/queue/a", "in-tx", &[("transaction", "tx-1")])
        .await
        .unwrap();
    client.abort("tx-1").await.unwrap();
    let sub = client
        .subscribe(
            "/topic/t",
            AckMode::Auto,
            &[("id", "durable-x"), ("activemq.subscriptionName", "dx")],
        )
        .await
        .unwrap();
    assert_eq!(sub.id(), "durable-x");
    sub.unsubscribe_with(&[("activemq.subscriptionName", "dx")])
        .await
        .unwrap();
    client.disconnect().await.unwrap();
    let seen = server.await.unwrap();
    let commands: Vec<_> = seen.iter().map(|f| f.command).collect();
    assert_eq!(
        commands,
        [
            Command::Begin,
            Command::Send,
            Command::Abort,
            Command::Subscribe,
            Command::Unsubscribe,
            Command::Disconnect
        ]
    );
    assert_eq!(seen[0].header("transaction"), Some("tx-1"));
    assert!(seen[0].header("receipt").is_some());
    assert_eq!(seen[1].header("transaction"), Some("tx-1"));
    assert!(seen[1].header("receipt").is_none());
    assert_eq!(seen[3].header("id"), Some("durable-x"));
    assert_eq!(seen[4].header("id"), Some("durable-x"));
    assert_eq!(seen[4].header("activemq.subscriptionName"), Some("dx"));
}

#[tokio::test]
async fn disconnect_is_graceful_and_closes_every_clone() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let frame = peer.recv_frame().await;
        assert_eq!(frame.command, Command::Disconnect);
        peer.receipt_for(&frame).await;
        // The client closes the socket after the receipt.
        assert!(peer.recv_item().await.is_none());
    });
    let client = connect(&addr).await;
    let other = client.clone();
    client.disconnect().await.unwrap();
    assert!(other.is_closed());
    assert!(
        other.closed().await.is_none(),
        "a requested close is not an error"
    );
    assert!(matches!(
        other.send("/queue/a", "late", &[]).await,
        Err(ClientError::Closed)
    ));
    server.await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket_after_flushing_queued_frames() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let mut bodies = Vec::new();
        while let Some(item) = peer.recv_item().await {
            if let Item::Frame(f) = item {
                bodies.push(f.body);
            }
        }
        bodies
    });
    let client = connect(&addr).await;
    for i in 0..100 {
        client.send("/queue/a", format!("{i}"), &[]).await.unwrap();
    }
    drop(client);
    let bodies = server.await.unwrap();
    assert_eq!(bodies.len(), 100);
    assert_eq!(bodies[99], "99");
}

#[tokio::test]
async fn dropped_subscription_unsubscribes_without_a_receipt() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let sub = peer.recv_frame().await;
        peer.receipt_for(&sub).await;
        let unsub = peer.recv_frame().await;
        assert_eq!(unsub.command, Command::Unsubscribe);
        assert_eq!(unsub.header("id"), sub.header("id"));
        assert!(unsub.header("receipt").is_none());
    });
    let client = connect(&addr).await;
    let sub = client
        .subscribe("/queue/a", AckMode::Auto, &[])
        .await
        .unwrap();
    drop(sub);
    server.await.unwrap();
    drop(client);
}

#[tokio::test]
async fn oversized_frame_from_the_server_closes_with_a_decode_error() {
    let (addr, listener) = listen().await;
    let server = serve(listener, Version::V1_2, |mut peer| async move {
        let sub = peer.recv_frame().await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        let big = Frame::new(Command::Message)
            .with_header("subscription", id)
            .with_header("message-id", "big")
            .with_body(vec![b'x'; 64 * 1024]);
        peer.send(big).await;
        while peer.recv_item().await.is_some() {}
    });
    let config = ClientConfig {
        limits: Limits {
            frame_bytes_max: 16 * 1024,
            ..Limits::default()
        },
        ..quiet_config()
    };
    let client = Client::connect(&addr, config).await.unwrap();
    let mut sub = client
        .subscribe("/queue/a", AckMode::Auto, &[])
        .await
        .unwrap();
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(
        matches!(
            ended,
            Some(ClientError::Decode(
                ferromq_protocol::stomp::DecodeError::FrameTooLarge { limit: 16384 }
            ))
        ),
        "{ended:?}"
    );
    assert!(sub.next_timeout(STEP).await.is_none());
    drop((sub, client));
    server.await.unwrap();
}
