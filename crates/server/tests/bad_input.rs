//! Malformed and hostile input: each case gets an ERROR frame with a reason and a closed
//! connection, and the broker keeps serving a well-behaved client throughout.

mod common;

use std::time::Duration;

use common::*;
use ferromq_client::AckMode;

/// Proves a well-behaved client still gets service after the bad one was thrown out.
async fn still_serving(server: &ferromq_server::server::Server) {
    let c = connect(server).await;
    let mut sub = c
        .subscribe("/queue/healthy", AckMode::Auto, &[])
        .await
        .unwrap();
    c.send_with_receipt("/queue/healthy", "ok", &[])
        .await
        .unwrap();
    let m = sub
        .next_timeout(Duration::from_secs(5))
        .await
        .expect("message");
    assert_eq!(m.body().as_ref(), b"ok");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn garbage_bytes_get_an_error_and_a_close() {
    let server = start("").await;
    let mut r = Raw::connect(&server).await;
    r.send(b"\x01\x02GARBAGE\n\n\0").await;
    assert_error(r.frame().await, "Unknown STOMP action");
    assert!(r.closed_by_server().await);
    still_serving(&server).await;
}

#[tokio::test]
async fn unknown_command_after_connect_is_refused() {
    let server = start("").await;
    let mut r = Raw::connected(&server).await;
    r.send(b"FROB\n\n\0").await;
    assert_error(r.frame().await, "Unknown STOMP action: FROB");
    assert!(r.closed_by_server().await);
    still_serving(&server).await;
}

#[tokio::test]
async fn frame_before_connect_is_refused() {
    let server = start("").await;
    let mut r = Raw::connect(&server).await;
    r.send(b"SEND\ndestination:/queue/a\n\nhi\0").await;
    assert_error(r.frame().await, "Not connected");
    assert!(r.closed_by_server().await);
}

#[tokio::test]
async fn send_without_destination_is_refused_with_receipt_id() {
    let server = start("").await;
    let mut r = Raw::connected(&server).await;
    r.send(b"SEND\nreceipt:r-7\n\nhi\0").await;
    let f = r.frame().await;
    assert_eq!(f.as_ref().and_then(|f| f.header("receipt-id")), Some("r-7"));
    assert_error(f, "SEND received without a Destination specified!");
    assert!(r.closed_by_server().await);
    still_serving(&server).await;
}

#[tokio::test]
async fn illegal_destination_prefix_is_refused() {
    let server = start("").await;
    let mut r = Raw::connected(&server).await;
    r.send(b"SEND\ndestination:orders\n\nhi\0").await;
    assert_error(r.frame().await, "Illegal destination name");
}

#[tokio::test]
async fn oversized_frame_is_refused() {
    let server = start("[stomp]\nmax_frame_bytes = 65536\n").await;
    let mut r = Raw::connected(&server).await;
    let mut f = b"SEND\ndestination:/queue/big\n\n".to_vec();
    f.extend(std::iter::repeat_n(b'x', 200_000));
    f.push(0);
    r.send(&f).await;
    assert_error(r.frame().await, "exceeds the limit");
    assert!(r.closed_by_server().await);
    still_serving(&server).await;
}

#[tokio::test]
async fn oversized_content_length_is_refused_before_the_body_arrives() {
    let server = start("[stomp]\nmax_frame_bytes = 65536\n").await;
    let mut r = Raw::connected(&server).await;
    r.send(b"SEND\ndestination:/queue/big\ncontent-length:1000000000\n\n")
        .await;
    assert_error(r.frame().await, "exceeds the limit");
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let server = start("[stomp]\nmax_headers = 10\n").await;
    let mut r = Raw::connected(&server).await;
    let mut f = b"SEND\ndestination:/queue/a\n".to_vec();
    for i in 0..50 {
        f.extend(format!("h{i}:v\n").as_bytes());
    }
    f.extend(b"\nbody\0");
    r.send(&f).await;
    assert_error(r.frame().await, "headers");
    still_serving(&server).await;
}

#[tokio::test]
async fn overlong_header_line_is_refused() {
    let server = start("[stomp]\nmax_header_line_bytes = 1024\n").await;
    let mut r = Raw::connected(&server).await;
    let mut f = b"SEND\ndestination:/queue/a\nx:".to_vec();
    f.extend(std::iter::repeat_n(b'y', 5000));
    f.extend(b"\n\n\0");
    r.send(&f).await;
    assert_error(r.frame().await, "header line");
}

#[tokio::test]
async fn ack_of_unknown_id_is_refused() {
    let server = start("").await;
    let mut r = Raw::connected(&server).await;
    r.send(b"ACK\nid:99:12345\n\n\0").await;
    assert_error(r.frame().await, "Unexpected ACK");
    assert!(r.closed_by_server().await);
    let mut r = Raw::connected(&server).await;
    r.send(b"ACK\nid:nonsense\n\n\0").await;
    assert_error(r.frame().await, "Unexpected ACK");
    still_serving(&server).await;
}

#[tokio::test]
async fn invalid_selector_is_refused() {
    let server = start("").await;
    let mut r = Raw::connected(&server).await;
    r.send(b"SUBSCRIBE\nid:1\ndestination:/queue/a\nselector:color = = 'red'\n\n\0")
        .await;
    assert_error(r.frame().await, "Invalid selector");
}

#[tokio::test]
async fn unsupported_version_is_refused_with_supported_list() {
    let server = start("").await;
    let mut r = Raw::connect(&server).await;
    r.send(b"CONNECT\naccept-version:2.0\nhost:x\n\n\0").await;
    let f = r.frame().await;
    assert_eq!(
        f.as_ref().and_then(|f| f.header("version")),
        Some("1.0,1.1,1.2")
    );
    assert_error(f, "Supported protocol versions");
}

#[tokio::test]
async fn connections_over_the_limit_get_an_error() {
    let server = start("[stomp]\nmax_connections = 2\n").await;
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut r = Raw::connect(&server).await;
    assert_error(r.frame().await, "Connection limit of 2");
    assert!(r.closed_by_server().await);
    // Freeing a slot lets the next client in.
    a.disconnect().await.unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(c) =
            ferromq_client::Client::connect(&server.stomp_addr.to_string(), Default::default())
                .await
        {
            c.disconnect().await.unwrap();
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot freed by a disconnect must be reusable");
    b.disconnect().await.unwrap();
}

#[tokio::test]
async fn bad_login_is_refused() {
    let server = start("[security]\nplaintext_passwords = true\n[[security.users]]\nusername = \"app\"\npassword = \"s3cret\"\n").await;
    let mut r = Raw::connect(&server).await;
    r.send(b"CONNECT\naccept-version:1.2\nlogin:app\npasscode:wrong\n\n\0")
        .await;
    assert_error(r.frame().await, "User name [app] or password is invalid.");
    let cfg = ferromq_client::ClientConfig {
        login: Some("app".into()),
        passcode: Some("s3cret".into()),
        ..Default::default()
    };
    let c = connect_with(&server, cfg).await;
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn silent_client_is_disconnected_after_missed_heartbeats() {
    let server = start("[stomp]\nheart_beat_min_ms = 100\n").await;
    let mut r = Raw::connect(&server).await;
    // We promise a heart-beat every 100 ms, then say nothing.
    r.send(b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:100,0\n\n\0")
        .await;
    let f = r.frame().await.unwrap();
    assert_eq!(f.header("heart-beat"), Some("0,100"));
    assert_error(r.frame().await, "no heart-beat");
    assert!(r.closed_by_server().await);
}

#[tokio::test]
async fn client_that_never_reads_is_disconnected_and_its_messages_go_elsewhere() {
    let server = start("[stomp]\nwrite_timeout_ms = 300\n").await;
    let producer = connect(&server).await;
    let body = vec![b'z'; 256 * 1024];
    for _ in 0..40 {
        producer
            .send_with_receipt("/queue/flood", body.clone(), &[])
            .await
            .unwrap();
    }
    // A client that subscribes with a large prefetch and never reads its socket.
    let mut r = Raw::connected(&server).await;
    r.send(
        b"SUBSCRIBE\nid:s\ndestination:/queue/flood\nack:client\nactivemq.prefetchSize:1000\n\n\0",
    )
    .await;
    // Without reading, wait until the server gives up on us: it closes the socket.
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snap = server.broker.snapshot();
        let q = snap.iter().find(|s| s.name == "queue://flood").unwrap();
        if q.consumers == 0 {
            gone = true;
            break;
        }
    }
    assert!(gone, "the broker must drop a consumer that never reads");
    // Every message is still there for a consumer that does read.
    let c = connect(&server).await;
    let mut sub = c
        .subscribe("/queue/flood", AckMode::Auto, &[])
        .await
        .unwrap();
    for i in 0..40 {
        assert!(
            sub.next_timeout(Duration::from_secs(5)).await.is_some(),
            "message {i} lost"
        );
    }
    drop(r);
}
