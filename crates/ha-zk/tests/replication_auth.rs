//! Authentication of the replication link without TLS, on loopback: a `ReplicatingStore`
//! master and `follow` / `watch_master` slaves. Both ends prove they know the security token
//! by a challenge-response, so the token itself never crosses the wire (checked by a relay
//! that records every byte between a real slave and master); a slave with a wrong token is
//! refused while the master keeps confirming writes with the good slave; a "master" that
//! does not know the token is not followed, and the slave's store is left untouched.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::auth;
use ferromq_ha_zk::liveness::Liveness;
use ferromq_ha_zk::position::read_position;
use ferromq_ha_zk::slave::{follow, watch_master, FollowParams};
use ferromq_ha_zk::wire::{self, Frame};
use ferromq_ha_zk::{Position, ReplicatingStore, SyncMode, SyncPolicy, ZkError};
use ferromq_store::{MemoryStore, MessageStore, Op};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::{capture_logs, logged};

const T: Duration = Duration::from_secs(20);

/// Distinctive, so that finding it in a capture cannot be a coincidence.
const TOKEN: &str = "tok-7f3c19a2-must-never-cross-the-wire";

fn master(token: &str) -> ReplicatingStore {
    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
    let start = read_position(&*store).unwrap();
    ReplicatingStore::new(
        store,
        start,
        1,
        // One slave must hold a write before it is confirmed: a confirmation proves a slave
        // is connected and replicating.
        SyncPolicy::new(SyncMode::QuorumDisk, 3),
        "g".into(),
        token.into(),
        Arc::new(AtomicBool::new(true)),
    )
}

async fn serve(rs: &ReplicatingStore) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    rs.serve(l);
    addr
}

fn params(addr: &str, token: &str, member: &str) -> FollowParams {
    FollowParams {
        addr: addr.into(),
        master_epoch: 1,
        token: token.into(),
        group: "g".into(),
        member: member.into(),
        tls: None,
    }
}

fn write(rs: &ReplicatingStore, seq: u64) -> ferromq_store::Completion {
    rs.submit(vec![Op::Enqueue {
        list: "queue://x".into(),
        seq,
        payload: Bytes::from(format!("m-{seq}")),
    }])
}

fn bodies(s: &dyn MessageStore) -> Vec<String> {
    s.load("queue://x", None, 1000)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

struct Slave {
    store: Arc<dyn MessageStore>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Position, Result<(), ZkError>)>,
}

fn start_slave_on(store: Arc<dyn MessageStore>, p: FollowParams) -> Slave {
    let (stop, mut rx) = watch::channel(false);
    let task = {
        let store = store.clone();
        tokio::spawn(async move {
            let start = read_position(&*store).unwrap();
            follow(&store, start, &p, &mut rx).await
        })
    };
    Slave { store, stop, task }
}

fn start_slave(p: FollowParams) -> Slave {
    start_slave_on(Arc::new(MemoryStore::new()), p)
}

/// Every byte that went through the relay, per direction.
#[derive(Default)]
struct Capture {
    to_master: Mutex<Vec<u8>>,
    to_slave: Mutex<Vec<u8>>,
}

/// A TCP relay in front of `target`: every connection to the returned address is forwarded
/// to `target`, and the bytes of both directions are recorded in the capture.
async fn relay(target: String) -> (String, Arc<Capture>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cap = Arc::new(Capture::default());
    let c = cap.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let Ok(up) = TcpStream::connect(&target).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            let (c1, c2) = (c.clone(), c.clone());
            tokio::spawn(pump(dr, uw, move |b| {
                c1.to_master.lock().extend_from_slice(b)
            }));
            tokio::spawn(pump(ur, dw, move |b| {
                c2.to_slave.lock().extend_from_slice(b)
            }));
        }
    });
    (addr, cap)
}

/// Copies `r` to `w`, showing every chunk to `record` first, until either side closes.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    record: impl Fn(&[u8]),
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                record(&buf[..n]);
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts `member`'s heartbeat watch of the master at `addr` and waits until the master, whose
/// lease needs it, serves. Returns the watch task and its count of heartbeats heard.
async fn watch_until_serving(
    addr: &str,
    member: &str,
    serving: &mut watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<Result<(), ZkError>>, Arc<AtomicU64>) {
    common::watch_until_serving(params(addr, TOKEN, member), serving, T).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_crosses_a_plain_tcp_link_while_replication_works() {
    let rs = master(TOKEN);
    rs.enable_lease(Liveness::new(Duration::from_millis(300), 3).unwrap());
    let mut serving = rs.serving();
    let (addr, cap) = relay(serve(&rs).await).await;

    // The watch (fast failover's heartbeats) through the relay: the master serves only once
    // the slave answers on it.
    let (watcher, heard) = watch_until_serving(&addr, "m-slave", &mut serving).await;
    assert!(
        heard.load(Ordering::SeqCst) > 0,
        "no heartbeat through the relay"
    );

    // The stream through the relay: quorum_disk with 3 replicas confirms a write only once
    // the slave holds it.
    let slave = start_slave(params(&addr, TOKEN, "m-slave"));
    for seq in 1..=20 {
        tokio::time::timeout(T, write(&rs, seq))
            .await
            .unwrap()
            .unwrap();
    }
    let _ = slave.stop.send(true);
    let (pos, r) = tokio::time::timeout(T, slave.task).await.unwrap().unwrap();
    r.unwrap();
    assert_eq!(pos, rs.last_position());
    let got = bodies(&*slave.store);
    assert_eq!(got.len(), 20);
    assert_eq!(got[19], "m-20");
    watcher.abort();

    let to_master = cap.to_master.lock().clone();
    let to_slave = cap.to_slave.lock().clone();
    // The capture is real: the messages themselves went through it (in clear, without TLS).
    assert!(
        contains(&to_slave, b"m-20"),
        "the relay saw no replicated message"
    );
    assert!(!to_master.is_empty());
    assert!(
        !contains(&to_master, TOKEN.as_bytes()),
        "the slave sent the security token in clear"
    );
    assert!(
        !contains(&to_slave, TOKEN.as_bytes()),
        "the master sent the security token in clear"
    );
}

/// A slave driven by hand over TCP: connects, says hello, and answers the master's challenge
/// with a proof of `token`. Returns its local address (what the master logs) and the master's
/// answer.
async fn raw_hello(addr: &str, token: &str) -> (std::net::SocketAddr, Frame) {
    let s = TcpStream::connect(addr).await.unwrap();
    let me = s.local_addr().unwrap();
    let (mut rd, mut wr) = s.into_split();
    let o = auth::Opening {
        channel: auth::Channel::Stream,
        group: "g",
        member: "rogue",
        master_epoch: 1,
        last: Some(Position::default()),
    };
    let (hello, slave_nonce) = auth::opening_frame(&o).unwrap();
    wire::write_frame(&mut wr, &hello).await.unwrap();
    let Frame::Challenge { nonce, .. } = wire::read_frame(&mut rd).await.unwrap() else {
        panic!("the master did not open with a challenge");
    };
    let proof = auth::slave_proof(token, &o, &nonce, &slave_nonce).unwrap();
    wire::write_frame(&mut wr, &Frame::Proof { proof })
        .await
        .unwrap();
    let answer = tokio::time::timeout(T, wire::read_frame(&mut rd))
        .await
        .unwrap()
        .unwrap();
    (me, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_with_a_wrong_token_is_refused_and_logged_while_the_master_keeps_confirming() {
    capture_logs();
    let rs = master(TOKEN);
    rs.enable_lease(Liveness::new(Duration::from_millis(300), 3).unwrap());
    let mut serving = rs.serving();
    let addr = serve(&rs).await;
    let (watcher, _heard) = watch_until_serving(&addr, "m-good", &mut serving).await;
    let good = start_slave(params(&addr, TOKEN, "m-good"));
    tokio::time::timeout(T, write(&rs, 1))
        .await
        .unwrap()
        .unwrap();

    // Through the real slave code: refused, and told why.
    let rogue = start_slave(params(&addr, "not-the-token", "m-rogue"));
    let (_, r) = tokio::time::timeout(T, rogue.task).await.unwrap().unwrap();
    let e = r
        .expect_err("a slave with the wrong token was accepted")
        .to_string();
    assert!(
        e.contains("refused") && e.contains("authentication failed"),
        "{e}"
    );
    assert!(bodies(&*rogue.store).is_empty(), "the rogue got messages");
    // Its watch too: no heartbeat reaches it.
    let rogue_heard = AtomicU64::new(0);
    let e = watch_master(&params(&addr, "not-the-token", "m-rogue"), &rogue_heard, T)
        .await
        .expect_err("a watch with the wrong token was served")
        .to_string();
    assert!(e.contains("authentication failed"), "{e}");
    assert_eq!(rogue_heard.load(Ordering::SeqCst), 0);

    // By hand, to know its address: the master's refusal names it.
    let (me, answer) = raw_hello(&addr, "not-the-token").await;
    assert!(
        matches!(&answer, Frame::Reject { reason } if reason.contains("authentication failed")),
        "{answer:?}"
    );
    let line = logged(&[
        "WARN",
        "refusing a replication slave",
        &format!("peer={me}"),
        "authentication failed",
    ])
    .await;
    assert!(!line.contains(TOKEN), "the log shows the token: {line}");

    // The group keeps serving: the good slave still confirms every write, and is the only
    // one connected.
    for seq in 2..=20 {
        tokio::time::timeout(T, write(&rs, seq))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(rs.connected_slaves(), 1);
    let _ = good.stop.send(true);
    let (pos, r) = tokio::time::timeout(T, good.task).await.unwrap().unwrap();
    r.unwrap();
    assert_eq!(pos, rs.last_position());
    assert_eq!(bodies(&*good.store).len(), 20);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_of_an_older_protocol_is_refused_by_name() {
    capture_logs();
    let rs = master(TOKEN);
    let addr = serve(&rs).await;
    // What a version 4 slave sends the moment it connects: its hello, token in clear.
    let mut body = vec![1u8];
    body.extend_from_slice(&4u32.to_le_bytes());
    for s in ["old-token", "g"] {
        body.extend_from_slice(&(s.len() as u32).to_le_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&[0u8; 16]);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(b'm');
    let mut framed = (body.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&body);
    let s = TcpStream::connect(&addr).await.unwrap();
    let me = s.local_addr().unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(&framed).await.unwrap();
    let challenge = wire::read_frame(&mut rd).await.unwrap();
    assert!(
        matches!(challenge, Frame::Challenge { .. }),
        "{challenge:?}"
    );
    let answer = tokio::time::timeout(T, wire::read_frame(&mut rd))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&answer, Frame::Reject { reason } if reason.contains("protocol version 4")),
        "{answer:?}"
    );
    logged(&[
        "WARN",
        "refusing a replication slave",
        &format!("peer={me}"),
        "protocol version 4",
    ])
    .await;
    assert_eq!(rs.connected_slaves(), 0);
}

/// How a listener posing as the master answers the slave's hello.
#[derive(Clone, Copy, Debug)]
enum Impostor {
    /// Proves a token that is not the group's.
    WrongToken,
    /// Sends the slave's own proof back as its own (reflection).
    Reflect,
    /// Sends no proof at all (zeros).
    Zeros,
}

/// A "master" that does not know the token: challenges the slave that connects, reads its
/// hello (or watch) and proof, then answers with a welcome proving the wrong thing, and — were the
/// slave to follow — a full copy (wiping its store) or heartbeats. Returns the hello seen.
async fn impostor(l: TcpListener, how: Impostor) -> Frame {
    let (sock, _) = l.accept().await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let nonce = auth::nonce().unwrap();
    wire::write_frame(
        &mut wr,
        &Frame::Challenge {
            version: wire::PROTOCOL_VERSION,
            nonce,
        },
    )
    .await
    .unwrap();
    let hello = wire::read_frame(&mut rd).await.unwrap();
    let Frame::Proof { proof: slave_proof } = wire::read_frame(&mut rd).await.unwrap() else {
        panic!("the slave sent no proof");
    };
    let (o, slave_nonce) = auth::Opening::of(&hello).unwrap();
    let proof = match how {
        Impostor::WrongToken => auth::master_proof("guess", &o, &nonce, slave_nonce, 1).unwrap(),
        Impostor::Reflect => slave_proof,
        Impostor::Zeros => [0u8; 32],
    };
    let cut = Position { epoch: 1, lsn: 9 };
    let mut frames = vec![Frame::Welcome { epoch: 1, proof }];
    if matches!(hello, Frame::Watch { .. }) {
        frames.push(Frame::Heartbeat { seq: 1 });
    } else {
        frames.extend([
            Frame::SnapshotBegin {
                pos: cut,
                total_bytes: 5,
            },
            Frame::SnapshotChunk {
                batch: vec![Op::Enqueue {
                    list: "queue://x".into(),
                    seq: 1,
                    payload: Bytes::from_static(b"rogue"),
                }],
            },
            Frame::SnapshotEnd {
                pos: cut,
                consistent_at: cut,
            },
        ]);
    }
    for f in frames {
        // The slave may hang up at any point of this: that is what it should do.
        if wire::write_frame(&mut wr, &f).await.is_err() {
            break;
        }
    }
    // Held open until the slave hangs up: the slave must decide on the proof, not on the
    // connection ending.
    let mut rest = Vec::new();
    let _ = rd.read_to_end(&mut rest).await;
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_does_not_know_the_token_is_not_followed() {
    use ferromq_ha_zk::position::{copy_in_progress, position_ops};
    capture_logs();
    for how in [Impostor::WrongToken, Impostor::Reflect, Impostor::Zeros] {
        // The slave holds two messages at 1:2.
        let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
        let held = Position { epoch: 1, lsn: 2 };
        let mut b: Vec<Op> = ["keep-1", "keep-2"]
            .iter()
            .enumerate()
            .map(|(i, m)| Op::Enqueue {
                list: "queue://x".into(),
                seq: i as u64 + 1,
                payload: Bytes::from(m.to_string()),
            })
            .collect();
        b.extend(position_ops(None, held));
        store.submit(b).await.unwrap();

        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let rogue = tokio::spawn(impostor(l, how));
        let slave = start_slave_on(store.clone(), params(&addr, TOKEN, "m-slave"));
        let (pos, r) = tokio::time::timeout(T, slave.task).await.unwrap().unwrap();
        let e = r.expect_err("the slave followed an impostor").to_string();
        assert!(e.contains("did not prove"), "{how:?}: {e}");
        // Nothing wiped, nothing installed: the store is as it was.
        assert_eq!(pos, held, "{how:?}");
        assert_eq!(read_position(&*store).unwrap(), held, "{how:?}");
        assert!(!copy_in_progress(&*store).unwrap(), "{how:?}");
        assert_eq!(bodies(&*store), ["keep-1", "keep-2"], "{how:?}");
        let hello = tokio::time::timeout(T, rogue).await.unwrap().unwrap();
        assert!(matches!(hello, Frame::Hello { .. }), "{hello:?}");
        logged(&[
            "WARN",
            "did not prove it knows the security token",
            &format!("master={addr}"),
            "stream",
        ])
        .await;

        // The watch: no heartbeat of an impostor counts (it would keep the slave from
        // fencing a master that is really gone).
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let rogue = tokio::spawn(impostor(l, how));
        let heard = AtomicU64::new(0);
        let e = watch_master(&params(&addr, TOKEN, "m-slave"), &heard, T)
            .await
            .expect_err("the slave's watch accepted an impostor")
            .to_string();
        assert!(e.contains("did not prove"), "{how:?}: {e}");
        assert_eq!(heard.load(Ordering::SeqCst), 0, "{how:?}");
        let hello = tokio::time::timeout(T, rogue).await.unwrap().unwrap();
        assert!(matches!(hello, Frame::Watch { .. }), "{hello:?}");
    }
}
