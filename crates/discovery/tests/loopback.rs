//! Real multicast over the loopback interface: advertisers and listeners in one process, each
//! test on its own random port and group so that parallel tests do not hear each other.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use ferromq_discovery::{
    encode_alive, Advertiser, DiscoveryError, DiscoveryEvent, Listener, MulticastConfig,
    DATAGRAM_BYTES_MAX,
};
use tokio::sync::mpsc;

/// Bound on every wait: a broken implementation fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(20);

/// A port free on this host now (the kernel's choice), so each test has its own.
fn free_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// A loopback config on a fresh port, with its own group name.
fn config(port: u16, keep_alive_ms: u64) -> MulticastConfig {
    MulticastConfig::parse(&format!(
        "multicast://239.255.2.3:{port}?group=test-{port}&keepAliveInterval={keep_alive_ms}\
         &interface=127.0.0.1"
    ))
    .unwrap()
}

fn up(uri: &str) -> DiscoveryEvent {
    DiscoveryEvent::Up {
        broker_name: "localhost".into(),
        service_uri: uri.into(),
    }
}

fn down(uri: &str) -> DiscoveryEvent {
    DiscoveryEvent::Down {
        broker_name: "localhost".into(),
        service_uri: uri.into(),
    }
}

/// Receives until every event of `want` has been seen (in any order), within [`BOUND`];
/// returns everything received.
async fn wait_for_all(
    rx: &mut mpsc::Receiver<DiscoveryEvent>,
    want: &[DiscoveryEvent],
) -> Vec<DiscoveryEvent> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(BOUND, async {
        while !want.iter().all(|w| seen.contains(w)) {
            match rx.recv().await {
                Some(event) => seen.push(event),
                None => break,
            }
        }
    })
    .await;
    assert!(
        result.is_ok() && want.iter().all(|w| seen.contains(w)),
        "waited for {want:?}, got {seen:?}"
    );
    seen
}

#[tokio::test]
async fn two_listeners_see_two_advertisers_up_then_a_stopped_one_down_by_its_dead_advert() {
    let port = free_port();
    let adverts = config(port, 50);
    // The listeners' expiry is 10 x 10 minutes: a Down within the test can only come from the
    // dead advert, not from silence.
    let listening = MulticastConfig {
        keep_alive_interval_ms: 600_000,
        ..adverts.clone()
    };
    let (l1, mut rx1) = Listener::start(&listening, None).unwrap();
    let (l2, mut rx2) = Listener::start(&listening, None).unwrap();
    let a = Advertiser::start(&adverts, "localhost", "tcp://127.0.0.1:1001").unwrap();
    let b = Advertiser::start(&adverts, "localhost", "tcp://127.0.0.1:1002").unwrap();

    let both_up = [up("tcp://127.0.0.1:1001"), up("tcp://127.0.0.1:1002")];
    for rx in [&mut rx1, &mut rx2] {
        let seen = wait_for_all(rx, &both_up).await;
        // Repeated alive adverts are not repeated events.
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    a.stop().await;
    for rx in [&mut rx1, &mut rx2] {
        let seen = wait_for_all(rx, &[down("tcp://127.0.0.1:1001")]).await;
        assert_eq!(seen, [down("tcp://127.0.0.1:1001")]);
    }

    b.stop().await;
    for rx in [&mut rx1, &mut rx2] {
        wait_for_all(rx, &[down("tcp://127.0.0.1:1002")]).await;
    }
    l1.stop().await;
    l2.stop().await;
    // A stopped listener closes its channel.
    assert_eq!(rx1.recv().await, None);
}

#[tokio::test]
async fn an_advertiser_dropped_without_stop_is_declared_down_after_missed_keep_alives() {
    let port = free_port();
    let cfg = config(port, 50);
    let (l1, mut rx1) = Listener::start(&cfg, None).unwrap();
    let (_l2, mut rx2) = Listener::start(&cfg, None).unwrap();
    let crashed = Advertiser::start(&cfg, "localhost", "tcp://127.0.0.1:2001").unwrap();
    let steady = Advertiser::start(&cfg, "localhost", "tcp://127.0.0.1:2002").unwrap();
    for rx in [&mut rx1, &mut rx2] {
        wait_for_all(
            rx,
            &[up("tcp://127.0.0.1:2001"), up("tcp://127.0.0.1:2002")],
        )
        .await;
    }

    // No dead advert: only the silence tells.
    drop(crashed);
    for rx in [&mut rx1, &mut rx2] {
        wait_for_all(rx, &[down("tcp://127.0.0.1:2001")]).await;
    }
    steady.stop().await;
    l1.stop().await;
}

#[tokio::test]
async fn the_listener_ignores_other_groups_its_own_service_junk_and_oversized_datagrams() {
    let port = free_port();
    let cfg = config(port, 600_000);
    let (listener, mut rx) = Listener::start(&cfg, Some("tcp://127.0.0.1:3000".into())).unwrap();

    // All from one socket, so loopback delivers them in this order: the good advert last.
    let sender = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sender.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    let sender = UdpSocket::from(sender);
    let to = SocketAddrV4::new(cfg.group_addr, port);
    let mut oversized = encode_alive(&cfg.group, "localhost", "tcp://127.0.0.1:3003").unwrap();
    oversized.resize(DATAGRAM_BYTES_MAX + 1, b'0');
    let datagrams: Vec<Vec<u8>> = vec![
        encode_alive("another-group", "localhost", "tcp://127.0.0.1:3001").unwrap(),
        encode_alive(&cfg.group, "localhost", "tcp://127.0.0.1:3000").unwrap(),
        b"not a discovery datagram".to_vec(),
        vec![0xff; 64],
        oversized,
        encode_alive(&cfg.group, "localhost", "tcp://127.0.0.1:3002").unwrap(),
    ];
    for datagram in &datagrams {
        sender.send_to(datagram, to).unwrap();
    }
    let first = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
    assert_eq!(first, Some(up("tcp://127.0.0.1:3002")));
    listener.stop().await;
}

#[tokio::test]
async fn an_activemq_style_broker_name_is_passed_through() {
    let port = free_port();
    let cfg = config(port, 50);
    let (listener, mut rx) = Listener::start(&cfg, None).unwrap();
    let a = Advertiser::start(&cfg, "broker-7", "stomp://127.0.0.1:4001").unwrap();
    let want = DiscoveryEvent::Up {
        broker_name: "broker-7".into(),
        service_uri: "stomp://127.0.0.1:4001".into(),
    };
    wait_for_all(&mut rx, &[want]).await;
    a.stop().await;
    listener.stop().await;
}

#[test]
fn starting_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let cfg = config(free_port(), 50);
    assert!(matches!(
        Listener::start(&cfg, None),
        Err(DiscoveryError::NoRuntime)
    ));
    assert!(matches!(
        Advertiser::start(&cfg, "b", "tcp://h:1"),
        Err(DiscoveryError::NoRuntime)
    ));
}

#[tokio::test]
async fn an_unencodable_service_is_refused_at_start() {
    let cfg = config(free_port(), 50);
    assert!(matches!(
        Advertiser::start(&cfg, "a%b", "tcp://h:1"),
        Err(DiscoveryError::Encode(_))
    ));
}
