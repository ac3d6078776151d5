//! TLS on the replication link, without ZooKeeper: a `ReplicatingStore` master serving over
//! mutual TLS and `follow` / `watch_master` slaves on loopback. A slave with a certificate the
//! group's CA signed replicates (stream and watch); a slave with another CA's certificate, a
//! plain-TCP slave, and a slave facing a master with another CA's certificate are refused;
//! the master's name is checked unless `verify_hostname` is off. Certificates are made at
//! test time (rcgen); no key is committed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_ha_zk::liveness::Liveness;
use ferromq_ha_zk::position::read_position;
use ferromq_ha_zk::slave::{follow, watch_master, FollowParams};
use ferromq_ha_zk::{Position, ReplicatingStore, ReplicationTls, SyncMode, SyncPolicy, ZkError};
use ferromq_store::{MemoryStore, MessageStore, Op};
use tokio::net::TcpListener;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(20);

use common::Ca;

fn master() -> ReplicatingStore {
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
        "token".into(),
        Arc::new(AtomicBool::new(true)),
    )
}

async fn serve(rs: &ReplicatingStore, tls: &ReplicationTls) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    rs.serve_with(l, Some(tls));
    addr
}

fn params(addr: &str, tls: Option<ReplicationTls>) -> FollowParams {
    FollowParams {
        addr: addr.into(),
        master_epoch: 1,
        token: "token".into(),
        group: "g".into(),
        member: "m-slave".into(),
        tls,
    }
}

fn write(rs: &ReplicatingStore, seq: u64) -> ferromq_store::Completion {
    rs.submit(vec![Op::Enqueue {
        list: "queue://x".into(),
        seq,
        payload: Bytes::from(format!("m-{seq}")),
    }])
}

struct Slave {
    store: Arc<dyn MessageStore>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Position, Result<(), ZkError>)>,
}

fn start_slave(p: FollowParams) -> Slave {
    let store: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
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

/// Follows until the master ends the connection: the error it stopped with.
async fn refused(p: FollowParams) -> ZkError {
    let s = start_slave(p);
    let (_, r) = tokio::time::timeout(T, s.task).await.unwrap().unwrap();
    r.expect_err("the slave was not refused")
}

/// The error and every cause of it, for messages from deep in rustls.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn bodies(s: &dyn MessageStore) -> Vec<String> {
    s.load("queue://x", None, 1000)
        .unwrap()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_with_a_certificate_of_the_group_ca_replicates_and_watches_over_tls() {
    let ca = Ca::new("group CA");
    let rs = master();
    rs.enable_lease(Liveness::new(Duration::from_millis(300), 3).unwrap());
    let mut serving = rs.serving();
    let addr = serve(&rs, &ca.member(&["127.0.0.1", "localhost"], &ca, true)).await;
    let slave_tls = ca.member(&["slave.example"], &ca, true);

    // The watch (fast failover's heartbeats) runs over TLS too: the master serves only once
    // the slave answers on it.
    let (watcher, heard) =
        common::watch_until_serving(params(&addr, Some(slave_tls.clone())), &mut serving, T).await;
    assert!(heard.load(Ordering::SeqCst) > 0, "no heartbeat over TLS");

    let slave = start_slave(params(&addr, Some(slave_tls)));
    for seq in 1..=50 {
        // quorum_disk with replicas = 3: confirmed only once the slave holds it.
        tokio::time::timeout(T, write(&rs, seq))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(rs.connected_slaves(), 1);
    let _ = slave.stop.send(true);
    let (pos, r) = tokio::time::timeout(T, slave.task).await.unwrap().unwrap();
    r.unwrap();
    assert_eq!(pos, rs.last_position());
    let got = bodies(&*slave.store);
    assert_eq!(got.len(), 50);
    assert_eq!(got[49], "m-50");
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_whose_certificate_another_ca_signed_is_refused_in_the_handshake() {
    let ca = Ca::new("group CA");
    let rogue = Ca::new("rogue CA");
    let rs = master();
    let addr = serve(&rs, &ca.member(&["127.0.0.1"], &ca, true)).await;
    let mut pending = write(&rs, 1);

    // It trusts the group's CA (so it would accept the master) but presents a certificate the
    // group's CA did not sign: the master ends the handshake with an alert.
    let e = refused(params(&addr, Some(rogue.member(&["intruder"], &ca, true)))).await;
    let why = chain(&e);
    assert!(
        why.contains("UnknownCA") || why.contains("BadCertificate"),
        "not a certificate refusal: {why}"
    );
    assert_eq!(rs.connected_slaves(), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut pending)
            .await
            .is_err(),
        "confirmed with only a refused slave"
    );

    // The same master accepts a member of the group: the refusal was the certificate's.
    let good = start_slave(params(&addr, Some(ca.member(&["slave"], &ca, true))));
    tokio::time::timeout(T, pending).await.unwrap().unwrap();
    let _ = good.stop.send(true);
    tokio::time::timeout(T, good.task)
        .await
        .unwrap()
        .unwrap()
        .1
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_slave_and_watch_are_refused_by_a_tls_master() {
    let ca = Ca::new("group CA");
    // No fast failover here: a watch that reached the replication protocol would be refused
    // with "fast failover is off"; refused in the handshake, it never gets that far.
    let rs = master();
    let addr = serve(&rs, &ca.member(&["127.0.0.1"], &ca, true)).await;
    let mut pending = write(&rs, 1);

    // Its hello (with the right token) is not a TLS ClientHello: the master drops it.
    let e = refused(params(&addr, None)).await;
    assert!(
        !matches!(e, ZkError::Replication(ref m) if m.contains("master refused")),
        "the master answered a plain hello: {e}"
    );
    let heard = AtomicU64::new(0);
    let e = watch_master(&params(&addr, None), &heard, T)
        .await
        .expect_err("a plain watch was served");
    assert!(
        !e.to_string().contains("fast failover is off"),
        "the master read a plain watch: {e}"
    );
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "a plain watch got a heartbeat"
    );
    assert_eq!(rs.connected_slaves(), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut pending)
            .await
            .is_err(),
        "confirmed with only a plain-TCP slave"
    );

    let good = start_slave(params(&addr, Some(ca.member(&["slave"], &ca, true))));
    tokio::time::timeout(T, pending).await.unwrap().unwrap();
    let _ = good.stop.send(true);
    tokio::time::timeout(T, good.task)
        .await
        .unwrap()
        .unwrap()
        .1
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_refuses_a_master_the_group_ca_did_not_sign_before_sending_its_token() {
    let ca = Ca::new("group CA");
    let rogue = Ca::new("rogue CA");
    let rs = master();
    // The impostor master would accept the slave (it trusts the group's CA) but presents a
    // certificate of its own CA.
    let addr = serve(&rs, &rogue.member(&["127.0.0.1"], &ca, true)).await;
    let e = refused(params(&addr, Some(ca.member(&["slave"], &ca, true)))).await;
    // Failing in the handshake, on the slave's side, means the hello carrying the token was
    // never written: it is written only after `connect` returns.
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
    assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));
    assert_eq!(rs.connected_slaves(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_certificate_must_name_the_published_host_unless_verification_is_off() {
    let ca = Ca::new("group CA");
    let rs = master();
    // Signed by the group's CA, but for another name than the address slaves dial.
    let addr = serve(&rs, &ca.member(&["replica-a.example"], &ca, true)).await;

    let e = refused(params(&addr, Some(ca.member(&["slave"], &ca, true)))).await;
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
    assert!(chain(&e).contains("not valid for name"), "{}", chain(&e));
    assert_eq!(rs.connected_slaves(), 0);

    // tls_verify_hostname = false: the CA chain alone decides.
    let slave = start_slave(params(&addr, Some(ca.member(&["slave"], &ca, false))));
    tokio::time::timeout(T, write(&rs, 1))
        .await
        .unwrap()
        .unwrap();
    let _ = slave.stop.send(true);
    tokio::time::timeout(T, slave.task)
        .await
        .unwrap()
        .unwrap()
        .1
        .unwrap();

    // Chain-only still refuses a certificate of another CA.
    let rogue = Ca::new("rogue CA");
    let rs2 = master();
    let addr2 = serve(&rs2, &rogue.member(&["127.0.0.1"], &ca, true)).await;
    let e = refused(params(&addr2, Some(ca.member(&["slave"], &ca, false)))).await;
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
}

/// A master published under a DNS name (`ha.hostname`): the slave dials the name and checks it
/// against the certificate's DNS subjectAltNames — a certificate naming only that DNS name (no
/// IP) is accepted, one naming another host is refused, whatever IP the name resolves to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_published_under_a_dns_name_is_checked_against_its_dns_names() {
    let ca = Ca::new("group CA");
    let rs = master();
    let ip_addr = serve(&rs, &ca.member(&["localhost"], &ca, true)).await;
    let port = ip_addr.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}");
    let slave = start_slave(params(&by_name, Some(ca.member(&["slave"], &ca, true))));
    tokio::time::timeout(T, write(&rs, 1))
        .await
        .expect("no confirmation: a slave dialling the master's DNS name was refused")
        .unwrap();
    let _ = slave.stop.send(true);
    tokio::time::timeout(T, slave.task)
        .await
        .unwrap()
        .unwrap()
        .1
        .unwrap();

    // The same master dialled by IP: its certificate names no IP, so the name check refuses.
    let e = refused(params(&ip_addr, Some(ca.member(&["slave"], &ca, true)))).await;
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
    assert!(chain(&e).contains("not valid for name"), "{}", chain(&e));

    // A master whose certificate names another host, dialled by DNS name: refused.
    let rs2 = master();
    let other = serve(&rs2, &ca.member(&["replica-b.example"], &ca, true)).await;
    let other_port = other.rsplit(':').next().unwrap();
    let e = refused(params(
        &format!("localhost:{other_port}"),
        Some(ca.member(&["slave"], &ca, true)),
    ))
    .await;
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
    assert!(chain(&e).contains("not valid for name"), "{}", chain(&e));
    assert_eq!(rs2.connected_slaves(), 0);
}

/// `ReplicationTls::reload` (what the broker's SIGHUP reload of `ha.tls_*` calls): once the
/// master's holder takes a certificate and CA of a new CA, new connections meet them — a slave
/// trusting only the old CA refuses the master's new certificate, one presenting an old-CA
/// certificate is refused by the master — while the slave connected before keeps replicating.
/// A slave's holder reloaded to the new CA then connects and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_and_ca_apply_to_new_replication_connections_only() {
    let old = Ca::new("old CA");
    let new = Ca::new("new CA");
    let rs = master();
    let master_tls = old.member(&["127.0.0.1"], &old, true);
    let addr = serve(&rs, &master_tls).await;
    let before = start_slave(params(&addr, Some(old.member(&["slave-1"], &old, true))));
    // quorum_disk with replicas = 3: confirmed only once the slave holds it.
    tokio::time::timeout(T, write(&rs, 1))
        .await
        .unwrap()
        .unwrap();

    master_tls.reload(&new.member(&["127.0.0.1"], &new, true));

    // The slave's holder: old CA on both counts, like the member it stands for before its own
    // files are rotated.
    let slave_tls = old.member(&["slave-2"], &old, true);
    let e = refused(params(&addr, Some(slave_tls.clone()))).await;
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
    assert!(
        chain(&e).contains("UnknownIssuer"),
        "the master does not present the new certificate: {}",
        chain(&e)
    );
    // Trusting the new CA but presenting an old-CA certificate: the master checks new
    // connections against the new CA.
    let e = refused(params(&addr, Some(old.member(&["slave-3"], &new, true)))).await;
    let why = chain(&e);
    assert!(
        why.contains("UnknownCA") || why.contains("BadCertificate"),
        "the master still accepts the old CA: {why}"
    );

    // The connection made before the reload still replicates.
    tokio::time::timeout(T, write(&rs, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rs.connected_slaves(), 1);
    let _ = before.stop.send(true);
    let (_, r) = tokio::time::timeout(T, before.task).await.unwrap().unwrap();
    r.unwrap();
    assert_eq!(bodies(&*before.store), ["m-1", "m-2"]);

    // The slave's own holder reloaded (its connector reads it at each connection): with the
    // only slave gone, the next write is confirmed once this one holds everything.
    slave_tls.reload(&new.member(&["slave-2"], &new, true));
    let after = start_slave(params(&addr, Some(slave_tls)));
    tokio::time::timeout(T, write(&rs, 3))
        .await
        .expect("no confirmation: the slave with the reloaded certificate was not accepted")
        .unwrap();
    let _ = after.stop.send(true);
    let (pos, r) = tokio::time::timeout(T, after.task).await.unwrap().unwrap();
    r.unwrap();
    assert_eq!(pos, rs.last_position());
    assert_eq!(bodies(&*after.store), ["m-1", "m-2", "m-3"]);
}

/// The fast-failover watch (heartbeat connection) after a reload: a watch whose holder still
/// trusts only the old CA refuses the master's new certificate and hears nothing; reloaded to
/// the new CA, the same holder's next watch is answered, and the master serves on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_and_ca_apply_to_new_watch_connections() {
    let old = Ca::new("old CA");
    let new = Ca::new("new CA");
    let rs = master();
    rs.enable_lease(Liveness::new(Duration::from_millis(300), 3).unwrap());
    let mut serving = rs.serving();
    let master_tls = old.member(&["127.0.0.1"], &old, true);
    let addr = serve(&rs, &master_tls).await;
    master_tls.reload(&new.member(&["127.0.0.1"], &new, true));

    let slave_tls = old.member(&["slave"], &old, true);
    let heard = Arc::new(AtomicU64::new(0));
    // A served watch never returns: bounded, so that a master still presenting the old
    // certificate fails here instead of hanging.
    let e = tokio::time::timeout(
        T,
        watch_master(&params(&addr, Some(slave_tls.clone())), &heard, T),
    )
    .await
    .expect("a watch trusting only the old CA was served")
    .expect_err("a watch trusting only the old CA was served");
    assert!(matches!(e, ZkError::Tls { .. }), "{}", chain(&e));
    assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));
    assert_eq!(heard.load(Ordering::SeqCst), 0);
    assert!(!*serving.borrow_and_update(), "served without a watch");

    slave_tls.reload(&new.member(&["slave"], &new, true));
    // The master serves only once a slave answers its heartbeats.
    let (watcher, heard) =
        common::watch_until_serving(params(&addr, Some(slave_tls)), &mut serving, T).await;
    assert!(
        heard.load(Ordering::SeqCst) > 0,
        "no heartbeat after the reload"
    );
    watcher.abort();
}
