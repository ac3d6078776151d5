//! The consumer side of a failover: subscriptions continue, unacknowledged messages come back,
//! and redeliveries of messages the application already acknowledged are dropped.

mod failover_support;

use failover_support::{config, message, uri, wait_for_connection, Broker, STEP};
use ferromq_client::{AckMode, FailoverClient, FailoverConfig};
use ferromq_protocol::stomp::Command;

#[tokio::test]
async fn redelivery_of_an_acked_message_is_dropped_and_acked_again_unacked_ones_come_back() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-1", "one", false)).await;
        peer.send(message(&id, "m-2", "two", false)).await;
        // The application's ACK of m-1 arrives, but this broker dies before it is stored.
        let ack = peer.expect(Command::Ack).await;
        assert_eq!(ack.header("id"), Some("ack-m-1-1"));
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, _) = b.accept().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        // The new master redelivers both, then a new one.
        peer.send(message(&id, "m-1", "one", true)).await;
        peer.send(message(&id, "m-2", "two", true)).await;
        peer.send(message(&id, "m-3", "three", false)).await;
        let mut acks = Vec::new();
        for _ in 0..3 {
            acks.push(peer.expect(Command::Ack).await);
        }
        acks
    });

    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    let mut sub = client
        .subscribe("/queue/a", AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    let one = sub.next_timeout(STEP).await.unwrap();
    assert_eq!(one.message_id(), Some("m-1"));
    client.ack(&one, None).await.unwrap();
    let two = sub.next_timeout(STEP).await.unwrap();
    assert_eq!(two.message_id(), Some("m-2"));
    // m-2 is not acknowledged before the failover, so it comes again.
    broker_a.await.unwrap();

    let again = sub.next_timeout(STEP).await.unwrap();
    assert_eq!(
        again.message_id(),
        Some("m-2"),
        "m-1 must have been dropped"
    );
    assert!(again.redelivered());
    let three = sub.next_timeout(STEP).await.unwrap();
    assert_eq!(three.message_id(), Some("m-3"));
    // The ACK of the pre-failover delivery of m-2 is not sent: that delivery is gone.
    client.ack(&two, None).await.unwrap();
    client.ack(&again, None).await.unwrap();
    client.ack(&three, None).await.unwrap();
    assert_eq!(client.connection_count(), 2);

    let acks = broker_b.await.unwrap();
    let ids: Vec<_> = acks.iter().map(|f| f.header("id").unwrap()).collect();
    // The dropped duplicate of m-1 was acknowledged on the new connection.
    assert_eq!(ids, ["ack-m-1-2", "ack-m-2-2", "ack-m-3-1"]);
}

#[tokio::test]
async fn duplicates_reach_the_application_when_the_check_is_disabled() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-1", "one", false)).await;
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, _) = b.accept().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-1", "one", true)).await;
        peer
    });
    let config = FailoverConfig {
        check_for_duplicates: false,
        ..config()
    };
    let client = FailoverClient::connect(&uri, config).await.unwrap();
    let mut sub = client
        .subscribe("/queue/a", AckMode::Auto, &[])
        .await
        .unwrap();
    let first = sub.next_timeout(STEP).await.unwrap();
    broker_a.await.unwrap();
    let second = sub.next_timeout(STEP).await.unwrap();
    assert_eq!(first.message_id(), second.message_id());
    assert!(second.redelivered());
    let _peer = broker_b.await.unwrap();
}

#[tokio::test]
async fn auto_ack_subscription_drops_a_redelivery_of_a_message_already_delivered() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(&[&a.addr, &b.addr], "");
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-1", "one", false)).await;
        // Wait for the client to show it consumed m-1 (it sends an unrelated frame).
        peer.expect(Command::Send).await;
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, _) = b.accept().await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-1", "one", true)).await;
        peer.send(message(&id, "m-2", "two", false)).await;
        peer
    });
    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    let mut sub = client
        .subscribe("/queue/a", AckMode::Auto, &[])
        .await
        .unwrap();
    assert_eq!(
        sub.next_timeout(STEP).await.unwrap().message_id(),
        Some("m-1")
    );
    client.send("/queue/b", "consumed", &[]).await.unwrap();
    broker_a.await.unwrap();
    wait_for_connection(&client, 2).await;
    assert_eq!(
        sub.next_timeout(STEP).await.unwrap().message_id(),
        Some("m-2")
    );
    let _peer = broker_b.await.unwrap();
}
