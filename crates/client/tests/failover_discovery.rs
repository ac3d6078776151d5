//! `discovery:(multicast://...)`: the broker list is what brokers advertise on a multicast
//! group (ActiveMQ's `DiscoveryTransport`). Real multicast on the loopback interface, each
//! test on its own random port and group; the brokers are the fake STOMP brokers of
//! `failover_support`.

mod failover_support;

use std::net::UdpSocket;
use std::time::Duration;

use failover_support::{config, Broker};
use ferromq_client::{ClientError, FailoverClient};
use ferromq_discovery::{Advertiser, MulticastConfig};
use ferromq_protocol::stomp::Command;

/// Bound on every wait in these tests.
const BOUND: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the brokers advertise with: alive every 50 ms on the loopback interface.
fn advert_config(port: u16) -> MulticastConfig {
    MulticastConfig::parse(&format!(
        "multicast://239.255.2.3:{port}?group=client-{port}&keepAliveInterval=50&interface=127.0.0.1"
    ))
    .unwrap()
}

/// The client's URI. Its own keepAliveInterval is long, so that nothing expires during a test:
/// a broker leaves the list only by its dead advert.
fn discovery_uri(port: u16, extra: &str) -> String {
    format!(
        "discovery:(multicast://239.255.2.3:{port}?group=client-{port}&interface=127.0.0.1\
         &keepAliveInterval=60000)?randomize=false&initialReconnectDelay=1&maxReconnectDelay=50{extra}"
    )
}

fn addrs(client: &FailoverClient) -> Vec<String> {
    client.brokers().into_iter().map(|b| b.addr).collect()
}

/// Polls `cond` until it holds, within [`BOUND`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(BOUND, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

#[tokio::test]
async fn a_discovery_client_waits_for_an_advertised_broker_and_connects_to_it() {
    let port = free_port();
    let a = Broker::bind().await;
    let a_addr = a.addr.clone();
    // The client starts with an empty list and keeps passing over it.
    let uri = discovery_uri(port, "");
    let connecting = tokio::spawn(async move { FailoverClient::connect(&uri, config()).await });
    let broker = tokio::spawn(async move {
        let (mut peer, connect) = a.accept().await;
        let send = peer.expect(Command::Send).await;
        peer.receipt_for(&send).await;
        (connect, send)
    });
    let advertiser = Advertiser::start(
        &advert_config(port),
        "localhost",
        &format!("tcp://{a_addr}"),
    )
    .unwrap();

    let client = tokio::time::timeout(BOUND, connecting)
        .await
        .expect("the client found no broker in time")
        .unwrap()
        .unwrap();
    assert_eq!(addrs(&client), [a_addr]);
    client
        .send_with_receipt("/queue/found", "hello", &[])
        .await
        .unwrap();
    let (connect, send) = broker.await.unwrap();
    assert_eq!(connect.header("client-id"), Some("cid-1"));
    assert_eq!(send.body.as_ref(), b"hello");
    advertiser.stop().await;
}

#[tokio::test]
async fn a_discovery_client_fails_over_to_an_advertised_broker_and_skips_one_that_said_dead() {
    let port = free_port();
    let adverts = advert_config(port);
    let (a, b, c) = (
        Broker::bind().await,
        Broker::bind().await,
        Broker::bind().await,
    );
    let (a_addr, b_addr, c_addr) = (a.addr.clone(), b.addr.clone(), c.addr.clone());
    // A connect to C would hang for this long (C accepts in the kernel and never answers),
    // longer than every bound here: reaching B in time proves C was not tried.
    let mut cfg = config();
    cfg.client.connect_timeout = Duration::from_secs(120);

    let adv_a = Advertiser::start(&adverts, "localhost", &format!("tcp://{a_addr}")).unwrap();
    let uri = discovery_uri(port, "");
    let connecting = tokio::spawn(async move { FailoverClient::connect(&uri, cfg).await });
    let (peer_a, _) = a.accept().await;
    let client = tokio::time::timeout(BOUND, connecting)
        .await
        .expect("no connection in time")
        .unwrap()
        .unwrap();

    let adv_c = Advertiser::start(&adverts, "localhost", &format!("tcp://{c_addr}")).unwrap();
    until("C is discovered", || addrs(&client).contains(&c_addr)).await;
    let adv_b = Advertiser::start(&adverts, "localhost", &format!("tcp://{b_addr}")).unwrap();
    until("B is discovered", || addrs(&client).contains(&b_addr)).await;
    assert_eq!(
        addrs(&client),
        [a_addr.clone(), c_addr.clone(), b_addr.clone()]
    );

    // C says it is going away: it leaves the list.
    adv_c.stop().await;
    until("C is withdrawn", || !addrs(&client).contains(&c_addr)).await;

    // A dies. The pass order is C, B, then A (the broker that just failed goes last); C is
    // skipped, so B takes over.
    let broker_b = tokio::spawn(async move { b.accept().await });
    drop(peer_a);
    drop(adv_a);
    let (_peer_b, connect) = tokio::time::timeout(BOUND, broker_b)
        .await
        .expect("B was not reached in time")
        .unwrap();
    assert_eq!(connect.command, Command::Connect);
    until("the client is up on B", || {
        client.connection_count() == 2 && client.is_connected()
    })
    .await;
    drop(c);
    adv_b.stop().await;
}

#[tokio::test]
async fn a_discovery_client_with_no_broker_advertised_gives_up_after_its_startup_attempts() {
    let port = free_port();
    let result = tokio::time::timeout(
        BOUND,
        FailoverClient::connect(
            &discovery_uri(port, "&startupMaxReconnectAttempts=2"),
            config(),
        ),
    )
    .await
    .expect("the client did not give up in time");
    match result {
        Err(ClientError::ReconnectFailed {
            attempts,
            last_error,
        }) => {
            assert_eq!(attempts, 2);
            assert!(last_error.contains("no broker known"), "{last_error}");
        }
        other => panic!("expected ReconnectFailed, got {other:?}"),
    }
}

/// Interop with a real ActiveMQ 5.x broker whose STOMP connector has a `discoveryUri`
/// (see docs/discovery.md): run with
/// `FERROMQ_INTEROP_DISCOVERY='discovery:(multicast://...)' cargo test -p ferromq-client
/// --test failover_discovery -- --ignored`.
#[tokio::test]
#[ignore = "needs an ActiveMQ broker advertising on multicast; see docs/discovery.md"]
async fn interop_a_discovery_client_finds_an_activemq_broker_and_sends_to_it() {
    let Ok(uri) = std::env::var("FERROMQ_INTEROP_DISCOVERY") else {
        panic!("set FERROMQ_INTEROP_DISCOVERY to a discovery:(multicast://...) URI");
    };
    let client = tokio::time::timeout(BOUND, FailoverClient::connect(&uri, config()))
        .await
        .expect("no ActiveMQ broker discovered in time")
        .unwrap();
    assert!(!client.brokers().is_empty());
    client
        .send_with_receipt("/queue/ferromq.discovery.interop", "hello", &[])
        .await
        .unwrap();
}
