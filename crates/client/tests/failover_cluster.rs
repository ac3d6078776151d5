//! Broker-pushed cluster membership: a broker lists its group in the CONNECTED header
//! `ferromq.cluster` (ActiveMQ's `updateClusterClients`), and a client configured with one
//! broker finds the others through it (`updateURIsSupported`, on by default).

mod failover_support;

use std::time::Duration;

use failover_support::{config, dead_addr, message, uri, wait_for_connection, Broker, STEP};
use ferromq_client::failover::{CLUSTER_HEADER, PRODUCER_SEQ_HEADER};
use ferromq_client::{AckMode, ClientError, FailoverClient};
use ferromq_protocol::stomp::Command;

fn addrs(client: &FailoverClient) -> Vec<String> {
    client.brokers().into_iter().map(|b| b.addr).collect()
}

#[tokio::test]
async fn a_client_configured_with_one_broker_fails_over_to_a_broker_it_learned_from_it() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let c = dead_addr().await;
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    // Only A is configured; a single failed pass over the list would end the client.
    let uri = uri(&[&a.addr], "maxReconnectAttempts=1");
    let a_cluster = format!("tcp://{a_addr},tcp://{b_addr}");
    // B knows one more member, which A did not list.
    let b_cluster = format!("tcp://{a_addr},tcp://{b_addr},tcp://{c}");

    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once_with(&[(CLUSTER_HEADER, &a_cluster)]).await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        // Never confirmed: A dies with it in flight.
        let unconfirmed = peer.expect(Command::Send).await;
        (sub, unconfirmed)
    });
    let broker_b = tokio::spawn(async move {
        let (mut peer, connect) = b.accept_with(&[(CLUSTER_HEADER, &b_cluster)]).await;
        let sub = peer.expect(Command::Subscribe).await;
        peer.receipt_for(&sub).await;
        let resent = peer.expect(Command::Send).await;
        peer.receipt_for(&resent).await;
        let id = sub.header("id").unwrap().to_owned();
        peer.send(message(&id, "m-b-1", "from-b", false)).await;
        (connect, sub, resent, peer)
    });

    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    assert_eq!(addrs(&client), [a_addr.clone(), b_addr.clone()]);
    let mut sub = client
        .subscribe(
            "/queue/orders",
            AckMode::ClientIndividual,
            &[("id", "orders")],
        )
        .await
        .unwrap();
    // Confirmed only by B, after the failover.
    client
        .send_with_receipt("/queue/a", "in-flight", &[("persistent", "true")])
        .await
        .unwrap();
    let msg = tokio::time::timeout(STEP, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.body(), "from-b");
    wait_for_connection(&client, 2).await;
    // What B advertised was merged too: configured first, then learned, each once.
    assert_eq!(addrs(&client), [a_addr, b_addr, c]);

    let (sub_a, unconfirmed) = broker_a.await.unwrap();
    let (connect_b, sub_b, resent, _peer) = broker_b.await.unwrap();
    assert_eq!(connect_b.header("client-id"), Some("cid-1"));
    assert_eq!(sub_b.header("id"), Some("orders"));
    assert_eq!(sub_b.header("destination"), sub_a.header("destination"));
    assert_eq!(resent.body, "in-flight");
    assert_eq!(
        resent.header(PRODUCER_SEQ_HEADER),
        unconfirmed.header(PRODUCER_SEQ_HEADER)
    );
    drop(sub);
}

#[tokio::test]
async fn with_update_uris_supported_false_the_advertised_brokers_are_ignored() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let uri = uri(
        &[&a.addr],
        "maxReconnectAttempts=1&updateURIsSupported=false",
    );
    let a_cluster = format!("tcp://{},tcp://{}", a.addr, b.addr);
    let a_addr = a.addr.clone();
    let broker_a = tokio::spawn(async move {
        let (mut peer, _) = a.accept_once_with(&[(CLUSTER_HEADER, &a_cluster)]).await;
        peer.expect(Command::Send).await;
    });

    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    assert_eq!(addrs(&client), [a_addr]);
    let err = client
        .send_with_receipt("/queue/a", "stranded", &[])
        .await
        .unwrap_err();
    broker_a.await.unwrap();
    assert!(
        matches!(err, ClientError::ReconnectFailed { attempts: 1, .. }),
        "{err:?}"
    );
    let ended = tokio::time::timeout(STEP, client.closed()).await.unwrap();
    assert!(
        matches!(
            ended,
            Some(ClientError::ReconnectFailed { attempts: 1, .. })
        ),
        "{ended:?}"
    );
    // B was up all along, and never tried.
    assert!(!b.was_connected_within(Duration::from_millis(20)).await);
}

#[tokio::test]
async fn malformed_and_repeated_entries_are_ignored_and_randomize_covers_learned_brokers() {
    let a = Broker::bind().await;
    let b = Broker::bind().await;
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    // randomize=true (the default): the learned broker is shuffled like a configured one,
    // and A, whose connection failed, goes last either way.
    let uri = format!(
        "failover:(tcp://{a_addr})?initialReconnectDelay=1&maxReconnectDelay=5\
         &maxReconnectAttempts=1"
    );
    let a_cluster = format!(
        "garbage, tcp://{b_addr} ,tcp://host:99999,,udp://x:1,tcp://:5,tcp://{a_addr},\
         stomp://{b_addr}"
    );
    let broker_a = tokio::spawn(async move {
        // Closes right after the handshake.
        a.accept_once_with(&[(CLUSTER_HEADER, &a_cluster)]).await;
    });
    // B advertises nothing: the list stays as it is.
    let broker_b = tokio::spawn(async move { b.accept().await });

    let client = FailoverClient::connect(&uri, config()).await.unwrap();
    assert_eq!(addrs(&client), [a_addr.clone(), b_addr.clone()]);
    broker_a.await.unwrap();
    let (_peer, _) = broker_b.await.unwrap();
    wait_for_connection(&client, 2).await;
    assert_eq!(addrs(&client), [a_addr, b_addr]);
}

#[tokio::test]
async fn a_plain_tcp_uri_learns_nothing() {
    let a = Broker::bind().await;
    let a_addr = a.addr.clone();
    let a_cluster = format!("tcp://{a_addr},tcp://{}", dead_addr().await);
    let broker_a =
        tokio::spawn(async move { a.accept_once_with(&[(CLUSTER_HEADER, &a_cluster)]).await });
    let client = FailoverClient::connect(&format!("tcp://{a_addr}"), config())
        .await
        .unwrap();
    let _peer = broker_a.await.unwrap();
    // A plain URI never reconnects, so there is nothing to learn for.
    assert_eq!(addrs(&client), [a_addr]);
}
