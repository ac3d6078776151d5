//! Reconnecting: to the next broker, with the session, subscriptions and unconfirmed sends
//! restored; and giving up when the options say so.

mod failover_support;

use failover_support::{config, dead_addr, message, uri, Broker, STEP};
use ferromq_client::failover::{
    UriError, DUPLICATE_ID_HEADER, PRODUCER_ID_HEADER, PRODUCER_SEQ_HEADER,
};
use ferromq_client::{AckMode, ClientError, FailoverClient};
use ferromq_protocol::stomp::Command;

#[tokio::test]
async fn reconnects_to_the_second_broker_resubscribes_and_resends_the_unconfirmed_message() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");

    let broker_a = tokio::spawn(async move {
        let (mut peer, connect) = a.accept_once().await;
        assert_eq!(connect.header("client-id"), Some("cid-1"));
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let confirmed = peer.expect(Command::Send).await;
        peer.receipt_for(&confirmed).await;
        // The second SEND is never confirmed: the broker dies with it in flight.
        let unconfirmed = peer.expect(Command::Send).await;
        (sub, confirmed, unconfirmed)
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, connect) = b.accept().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let resent = peer.expect(Command::Send).await;
        peer.receipt_for(&resent).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-b-1", "from-b", false)).await;
        // Then new traffic, after the resend.
        let fresh = peer.expect(Command::Send).await;
        peer.receipt_for(&fresh).await;
        (connect, sub, resent, fresh, peer)
    });

    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    let mut sub = client
        .subscribe(
            "/topic/orders",
            AckMode::ClientIndividual,
            &[
                ("id", "orders"),
                ("activemq.subscriptionName", "durable-orders"),
            ],
        )
        .await
        .unwrap();
    client
        .send_with_receipt("/queue/a", "first", &[("persistent", "true")])
        .await
        .unwrap();
    // Confirmed only after the failover, by broker B.
    client
        .send_with_receipt("/queue/a", "second", &[("persistent", "true")])
        .await
        .unwrap();
    let msg = tokio::time::timeout(STEP, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.body(), "from-b");
    assert_eq!(sub.id(), "orders");
    client
        .send_with_receipt("/queue/a", "third", &[])
        .await
        .unwrap();
    assert_eq!(client.connection_count(), 2);

    let (sub_a, confirmed, unconfirmed) = broker_a.await.unwrap();
    let (connect_b, sub_b, resent, fresh, _peer) = broker_b.await.unwrap();
    // Same session identity and the same subscription, durable name included.
    assert_eq!(connect_b.header("client-id"), Some("cid-1"));
    for name in ["id", "destination", "ack", "activemq.subscriptionName"] {
        assert_eq!(
            sub_b.header(name),
            sub_a.header(name),
            "SUBSCRIBE header {name}"
        );
    }
    assert_eq!(sub_b.header("id"), Some("orders"));
    // The unconfirmed message went again, with the same identity.
    assert_eq!(resent.body, unconfirmed.body);
    assert_eq!(resent.body, "second");
    for name in [
        PRODUCER_ID_HEADER,
        PRODUCER_SEQ_HEADER,
        DUPLICATE_ID_HEADER,
        "persistent",
    ] {
        assert_eq!(
            resent.header(name),
            unconfirmed.header(name),
            "header {name}"
        );
    }
    let producer = client.producer_id().to_owned();
    let seq_of = |f: &ferromq_protocol::stomp::Frame| -> u64 {
        f.header(PRODUCER_SEQ_HEADER).unwrap().parse().unwrap()
    };
    assert_eq!(
        resent.header(DUPLICATE_ID_HEADER),
        Some(format!("{producer}:{}", seq_of(&resent)).as_str())
    );
    assert_eq!(
        confirmed.header(PRODUCER_ID_HEADER),
        Some(producer.as_str())
    );
    assert_eq!(fresh.header(PRODUCER_ID_HEADER), Some(producer.as_str()));
    // Sequence numbers increase across the failover.
    assert!(seq_of(&confirmed) < seq_of(&resent));
    assert!(seq_of(&resent) < seq_of(&fresh));
    drop(sub);
}

#[tokio::test]
async fn gives_up_after_max_reconnect_attempts_and_fails_waiting_sends() {
    let a = Broker::bind().await;
    let dead = dead_addr().await;
    let uri = uri(&[&a.addr, &dead], "maxReconnectAttempts=2");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        // Never confirm; close once the SEND is here.
        peer.expect(Command::Send).await;
    });
    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    let err = client
        .send_with_receipt("/queue/a", "lost-broker", &[])
        .await
        .unwrap_err();
    broker_a.await.unwrap();
    assert!(
        matches!(err, ClientError::ReconnectFailed { attempts: 2, .. }),
        "{err:?}"
    );
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(
        matches!(
            ended,
            Some(ClientError::ReconnectFailed { attempts: 2, .. })
        ),
        "{ended:?}"
    );
    assert!(!client.is_connected());
    let err = client.send("/queue/a", "after", &[]).await.unwrap_err();
    assert!(
        matches!(err, ClientError::ReconnectFailed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn startup_max_reconnect_attempts_bounds_the_first_connect() {
    let uri = uri(
        &[&dead_addr().await, &dead_addr().await],
        "startupMaxReconnectAttempts=3",
    );
    let err = FailoverClient::connect(&uri, config()).await.unwrap_err();
    match err {
        ClientError::ReconnectFailed {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 3);
            assert!(last_error.contains("tcp://"), "{last_error}");
        }
        other => panic!("expected ReconnectFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_send_waiting_for_a_connection_fails_after_timeout() {
    let a = Broker::bind().await;
    let dead = dead_addr().await;
    // Reconnects forever, but sends wait at most 50 ms.
    let uri = uri(&[&a.addr, &dead], "timeout=50");
    let broker_a = tokio::spawn(async move {
        let (peer, _) = a.accept_once().await;
        drop(peer);
    });
    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    broker_a.await.unwrap();
    let err = client
        .send_with_receipt("/queue/a", "nowhere", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout("failover timeout")),
        "{err:?}"
    );
    let err = client.send("/queue/a", "nowhere", &[]).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout("failover timeout")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_plain_tcp_uri_does_not_fail_over() {
    let a = Broker::bind().await;
    let uri = format!("tcp://{}", a.addr);
    let broker_a = tokio::spawn(async move {
        let (peer, _) = a.accept().await;
        drop(peer);
        a
    });
    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(
        matches!(
            ended,
            Some(ClientError::ReconnectFailed { attempts: 0, .. })
        ),
        "{ended:?}"
    );
    // The listener is still there, yet the client does not come back.
    let a = broker_a.await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), a.accept())
            .await
            .is_err(),
        "a plain URI reconnected"
    );
}

#[tokio::test]
async fn unknown_uri_options_fail_connect_with_their_name() {
    let err = FailoverClient::connect(
        "failover:(tcp://127.0.0.1:1)?maxReconectAttempts=1",
        config(),
    )
    .await
    .unwrap_err();
    match err {
        ClientError::InvalidUri(UriError::UnknownOption { name }) => {
            assert_eq!(name, "maxReconectAttempts")
        }
        other => panic!("expected InvalidUri, got {other:?}"),
    }
}

#[tokio::test]
async fn disconnect_ends_the_client_without_reconnecting() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        let disconnect = peer.expect(Command::Disconnect).await;
        peer.receipt_for(&disconnect).await;
        assert!(
            peer.recv_item().await.is_none(),
            "client keeps the socket open"
        );
    });
    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    let other = client.clone();
    client.disconnect().await.unwrap();
    broker_a.await.unwrap();
    assert!(
        other.closed().await.is_none(),
        "a requested close is not an error"
    );
    assert!(matches!(
        other.send("/queue/a", "late", &[]).await,
        Err(ClientError::Closed)
    ));
    // Nobody connected to B.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), b.accept())
            .await
            .is_err()
    );
}
