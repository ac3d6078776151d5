//! Fast failover (`ha.master_timeout_ms`) on real `ferromq serve` processes under load, with a
//! ZooKeeper session timeout (10 s) far longer than the master timeout (500 ms), so that only
//! the heartbeat path can explain a quick takeover:
//!
//! - a master frozen by SIGSTOP (its session alive, its sockets open) is fenced by its slaves,
//!   which elect a new master in the same transaction that replaces the master znode; thawed,
//!   the old master finds itself replaced, steps down and rejoins as a slave;
//! - a master killed with kill -9 is replaced the same way, long before ZooKeeper expires its
//!   session, and the surviving slave catches up from the entries the new master kept while it
//!   was a slave (no full copy);
//! - a slave frozen past the master timeout causes no election and follows again.
//!
//! Judged by the wire-level history checker: every confirmed message delivered, none
//! delivered again after a confirmed ACK, none stored twice; and one master per epoch.
#![cfg(feature = "zk")]

mod ha_replicated_support;
mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ha_replicated_support::*;

const T: Duration = Duration::from_secs(60);
const EXTRA: &str = "zk_session_timeout_ms = 10000\nmaster_timeout_ms = 500\n";

fn spec() -> LoadSpec {
    LoadSpec {
        producers: 4,
        window: 8,
        consumers: 2,
        msg_bytes: 256,
        destination: "/queue/fast".into(),
        max_per_producer: None,
        pace: Duration::ZERO,
        consume_during: true,
    }
}

fn started(name: &str, d: &std::path::Path) -> (Cluster, usize) {
    let mut c = Cluster::new(d, &zk_ensemble(), name, EXTRA);
    for i in 0..3 {
        c.start(i);
    }
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master");
    for i in (0..3).filter(|i| *i != m) {
        assert!(c.proc(i).wait_log("Slave started", T), "b{i} not a slave");
    }
    (c, m)
}

/// The promotion line of a takeover through the fence (it names the fenced epoch; a promotion
/// after a session expiry does not).
fn fenced_promotion(c: &Cluster, i: usize) -> Option<String> {
    c.proc(i)
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("Promoted to master") && l.contains("fenced_epoch"))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_fenced_and_replaced_and_steps_down_when_thawed() {
    let d = tempfile::tempdir().unwrap();
    let (mut c, m) = started("fast-freeze", d.path());
    let history = Arc::new(History::create(&d.path().join("history.log")));
    let gen = LoadGen::start(&c.uri(), history.clone(), spec());
    assert!(gen.wait_confirmed(2_000, T).await, "no load confirmed");

    c.proc(m).signal("STOP");
    let (next, took) = tokio::task::block_in_place(|| c.wait_master(&[m], T))
        .expect("the slaves must elect a new master while the old one is frozen");
    eprintln!("fast failover: b{next} accepted {took:?} after b{m} froze");
    let line = fenced_promotion(&c, next).unwrap_or_else(|| {
        panic!(
            "b{next} was not promoted through the fence (session path?): {:?}",
            c.proc(next).log.lock().unwrap()
        )
    });
    eprintln!("{line}");
    if core_engine() {
        // One conditional takeover by the member that claimed is the fence.
        assert!(
            c.proc(next).log_count("fenced its epoch") >= 1,
            "b{next} did not take over through the fence"
        );
    } else {
        for i in (0..3).filter(|i| *i != m) {
            assert!(
                c.proc(i).log_count("fenced its epoch") >= 1,
                "b{i} did not fence the frozen master"
            );
        }
    }
    let before = gen.confirmed.load(Ordering::SeqCst);
    assert!(
        gen.wait_confirmed(before + 2_000, T).await,
        "the new master must confirm writes while the old one is frozen"
    );

    c.proc(m).signal("CONT");
    assert!(
        c.proc(m).wait_log("another master was elected", T),
        "the thawed master must see it was replaced"
    );
    assert!(
        c.proc(m).wait_log("Slave started", T),
        "the thawed master must rejoin as a slave"
    );
    let before = gen.confirmed.load(Ordering::SeqCst);
    assert!(gen.wait_confirmed(before + 1_000, T).await);
    gen.finish(true, Duration::from_secs(3), Duration::from_secs(300))
        .await;
    history.flush();
    let v = check_wire_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("fast failover (freeze): {v:?}");
    assert!(v.verdict.confirmed >= 5_000, "{v:?}");
    c.assert_epochs_unique();
    c.kill9(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_through_the_fence_before_its_session_expires() {
    let d = tempfile::tempdir().unwrap();
    let (mut c, m) = started("fast-kill", d.path());
    let history = Arc::new(History::create(&d.path().join("history.log")));
    let gen = LoadGen::start(&c.uri(), history.clone(), spec());
    assert!(gen.wait_confirmed(2_000, T).await, "no load confirmed");

    c.kill9(m);
    let (next, took) = tokio::task::block_in_place(|| c.wait_master(&[m], T))
        .expect("the slaves must elect a new master");
    eprintln!("fast failover: b{next} accepted {took:?} after kill -9 of b{m}");
    assert!(
        fenced_promotion(&c, next).is_some(),
        "b{next} was not promoted through the fence: {:?}",
        c.proc(next).log.lock().unwrap()
    );
    let before = gen.confirmed.load(Ordering::SeqCst);
    assert!(gen.wait_confirmed(before + 2_000, T).await);
    // Those confirmations needed the surviving slave's acks (quorum_disk, one of two slaves
    // left): it caught up from the entries the new master kept as a slave, not by a full copy
    // of the store (which would have held every write for the copy's length).
    assert!(
        c.proc(next)
            .log_count("kept the entries received as a slave")
            == 1,
        "the new master kept no entries"
    );
    if !core_engine() {
        assert_eq!(
            c.proc(next).log_count("needs a full copy"),
            0,
            "the surviving slave needed a full copy after the failover"
        );
    }
    // The core elects whichever member of the in-sync set claims first: when the surviving
    // follower had received entries the new master had not (the old master's unconfirmed
    // suffix), its journal cannot cut them and it takes a full copy (docs/ha.md, "Two
    // engines"). It must follow either way, which the confirmations above prove.
    // The old master returns as a slave (its znode and session are long gone or replaced).
    c.start(m);
    assert!(c.proc(m).wait_log("Slave started", T));
    gen.finish(true, Duration::from_secs(3), Duration::from_secs(300))
        .await;
    history.flush();
    let v = check_wire_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("fast failover (kill -9): {v:?}");
    c.assert_epochs_unique();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_frozen_past_the_master_timeout_causes_no_election_and_follows_again() {
    let d = tempfile::tempdir().unwrap();
    let (mut c, m) = started("fast-blip", d.path());
    let history = Arc::new(History::create(&d.path().join("history.log")));
    let gen = LoadGen::start(&c.uri(), history.clone(), spec());
    assert!(gen.wait_confirmed(1_000, T).await, "no load confirmed");

    // One slave frozen for three master timeouts: the other slave keeps hearing the master,
    // so no quorum of fences can form; the master keeps its lease (one slave answers) and
    // serves throughout. Thawed, the slave may find the master silent and fence it alone —
    // then it lifts the fence once it hears the master again — or read the heartbeats queued
    // in its socket first; either way it must follow again, with no election.
    let s = (0..3).find(|i| *i != m).unwrap();
    let o = (0..3).find(|i| *i != m && *i != s).unwrap();
    c.proc(s).signal("STOP");
    let before = gen.confirmed.load(Ordering::SeqCst);
    assert!(
        gen.wait_confirmed(before + 1_000, T).await,
        "the master must keep confirming with one slave frozen"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    c.proc(s).signal("CONT");
    if c.proc(s).log_count("fenced its epoch") > 0 {
        assert!(
            c.proc(s).wait_log("fence lifted", T),
            "the master answers and was not replaced: a lone fence must be lifted"
        );
    }
    // The other slave dies: from now on only the thawed one's acknowledgements can confirm
    // (quorum_disk, 3 replicas: one slave), so confirmations prove it follows again.
    c.kill9(o);
    let before = gen.confirmed.load(Ordering::SeqCst);
    assert!(
        gen.wait_confirmed(before + 1_000, T).await,
        "the thawed slave must follow the master again"
    );
    assert_eq!(
        c.accepting(&[o]),
        vec![m],
        "the master must stay the only one accepting"
    );
    gen.finish(true, Duration::from_secs(3), Duration::from_secs(300))
        .await;
    history.flush();
    let v = check_wire_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("fast failover (slave frozen): {v:?}");
    assert_eq!(
        c.proc(m).log_count("Promoted to master"),
        1,
        "no election may have happened"
    );
    c.assert_epochs_unique();
}
