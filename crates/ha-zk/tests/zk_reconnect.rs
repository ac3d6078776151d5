//! A master must not take its ZooKeeper client's word that the session is back.
//!
//! zookeeper-client 0.11 publishes `SyncConnected` as soon as a server answers the connect
//! request, before the rest of the handshake (its ping) completes; if that connection dies
//! then and every other server refuses, the state stays `SyncConnected` until the session
//! expires (no `Disconnected` is published again). CI met it when a total ZooKeeper outage was
//! a few milliseconds late on the node the master reconnected to: the master resumed
//! confirming for the 2.7 s until its session expired. Here a proxy in front of the real
//! ZooKeeper plays that node: it cuts the master's connection, lets exactly the connect
//! response of the next one through, closes it, and refuses from then on.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha::{Activation, Mastership};
use ferromq_ha_zk::ZkReplication;
use ferromq_store::Op;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::{member_config, opener, unique_path, zk};

const T: Duration = Duration::from_secs(60);

/// What the proxy does with the next connection it accepts.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// Relay both ways.
    Pass,
    /// Relay the client's bytes, and of the server's only the first length-prefixed record
    /// (the connect response); then close, and refuse every later connection.
    HandshakeOnly,
}

struct Proxy {
    addr: SocketAddr,
    phase: watch::Sender<Phase>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (phase, rx) = watch::channel(Phase::Pass);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                if *rx.borrow() == Phase::Pass {
                    tokio::spawn(relay(client, server, rx.clone()));
                } else {
                    tokio::spawn(handshake_only(client, server));
                    // Dropping the listener: every later connection is refused.
                    return;
                }
            }
        });
        Proxy { addr, phase }
    }

    /// Ends the relayed connections; the next connection gets only its connect response.
    fn cut(&self) {
        self.phase.send_replace(Phase::HandshakeOnly);
    }
}

/// Relays until either side closes or the phase leaves `Pass`.
async fn relay(client: TcpStream, server: TcpStream, mut phase: watch::Receiver<Phase>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::io::copy(&mut cr, &mut sw);
    let down = tokio::io::copy(&mut sr, &mut cw);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = phase.wait_for(|p| *p != Phase::Pass) => {}
    }
}

async fn handshake_only(client: TcpStream, server: TcpStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    });
    let mut len = [0u8; 4];
    if sr.read_exact(&mut len).await.is_ok() {
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        if sr.read_exact(&mut body).await.is_ok() {
            let _ = cw.write_all(&len).await;
            let _ = cw.write_all(&body).await;
            let _ = cw.flush().await;
        }
    }
    up.abort();
    // Both halves drop here: the client sees the connection end right after the response.
}

fn member(zk_address: String, path: &str, dir: &std::path::Path, weight: i64) -> ZkReplication {
    let cfg = member_config(zk_address, path, weight);
    ZkReplication::new(cfg, opener(dir.to_path_buf())).unwrap()
}

fn enqueue(seq: u64) -> Vec<Op> {
    vec![Op::Enqueue {
        list: "queue://z".into(),
        seq,
        payload: Bytes::from(format!("w-{seq}")),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stays_suspended_when_its_zookeeper_client_claims_a_session_it_lost_again() {
    let d = tempfile::tempdir().unwrap();
    let path = unique_path("zk-reconnect");
    // Each member reaches ZooKeeper through its own proxy; the master's is the one cut.
    let mut proxies = Vec::new();
    let mut acquiring = Vec::new();
    for (i, weight) in [3, 2, 1].into_iter().enumerate() {
        let proxy = Proxy::start(zk()).await;
        let m = Arc::new(member(
            proxy.addr.to_string(),
            &path,
            &d.path().join(format!("m{i}")),
            weight,
        ));
        proxies.push(proxy);
        acquiring.push(tokio::spawn(async move { m.acquire().await }));
    }
    let (first, waiting) = first_finished(acquiring).await;
    let (master, ma) = first.expect("no member was promoted");
    let mut ma = ma.expect("the first acquisition to end failed");
    let proxy = &proxies[master];
    let store = ma.take_store().unwrap();
    let mut serving = ma.serving();
    // Confirmed with both slaves connected: the group works through the proxy.
    tokio::time::timeout(T, store.submit(enqueue(1)))
        .await
        .expect("no confirmation with every member up")
        .unwrap();
    assert!(
        *serving.borrow_and_update(),
        "a master with its session serves"
    );

    proxy.cut();
    // The positive event: the master notices the lost connection and suspends.
    tokio::time::timeout(T, serving.wait_for(|s| !*s))
        .await
        .expect("the master never noticed that its ZooKeeper connection was cut")
        .unwrap();
    let write = store.submit(enqueue(2));
    // The master's session can only end now (no server answers it any more): wait for its
    // step-down, and record whether it served again in between.
    let resumed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let resumed = resumed.clone();
        let mut serving = serving.clone();
        tokio::spawn(async move {
            while serving.changed().await.is_ok() {
                if *serving.borrow_and_update() {
                    resumed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    let why = tokio::time::timeout(T, ma.lost())
        .await
        .expect("the master never stepped down although its session could not be renewed");
    let outcome = tokio::time::timeout(T, write)
        .await
        .expect("the write made while suspended never resolved");
    watcher.abort();
    assert!(
        outcome.is_err(),
        "a write made after the master lost ZooKeeper was confirmed before the master stepped down ({why})"
    );
    assert!(
        !resumed.load(std::sync::atomic::Ordering::SeqCst),
        "the master served again on its ZooKeeper client's word, with no server answering ({why})"
    );
    // Another member takes over once the master's session has expired on the server.
    let (next, rest) = first_finished(waiting).await;
    let mut m = next
        .expect("no successor elected")
        .1
        .expect("the successor's acquisition failed");
    assert!(
        m.epoch > ma.epoch,
        "the successor's epoch is above the master's"
    );
    if let Some(s) = m.take_store() {
        let _ = s.close();
    }
    for h in rest {
        h.abort();
    }
    drop(m);
}

type Acquiring = tokio::task::JoinHandle<Result<Mastership, ferromq_ha::HaError>>;

/// Which of `handles` ended first (its index among them) and how, waiting at most `T`; the
/// others.
async fn first_finished(
    handles: Vec<Acquiring>,
) -> (Option<(usize, Option<Mastership>)>, Vec<Acquiring>) {
    let deadline = tokio::time::Instant::now() + T;
    let mut handles = handles;
    loop {
        if let Some(i) = handles.iter().position(|h| h.is_finished()) {
            let h = handles.remove(i);
            let m = h.await.ok().and_then(|r| r.ok());
            return (Some((i, m)), handles);
        }
        if tokio::time::Instant::now() >= deadline {
            return (None, handles);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
