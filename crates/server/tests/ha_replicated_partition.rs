//! A network partition that isolates the replicated master from ZooKeeper, its slaves and its
//! clients (an iptables `owner` rule on the loopback traffic of the one broker process run
//! under a dedicated uid). The isolated master must stop confirming before a new master is
//! promoted, the others must elect a new master and serve, the healed old master must rejoin
//! as a slave, and the history must show no confirmed message lost and none duplicated.
//!
//! The asymmetric case keeps the master's clients connected to it: only its traffic to
//! ZooKeeper and its slaves is cut (the rule spares what it sends from its client port).
#![cfg(feature = "zk")]

mod ha_replicated_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use ha_replicated_support::*;

const T: Duration = Duration::from_secs(60);

/// Both tests cut the traffic of the same uid: they must not run at the same time.
static PARTITION_UID_USERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three brokers, b0 (run under the partition uid, so it can be cut off) the master: it joins
/// first, and at equal positions and weights the oldest member wins.
fn group_with_b0_master(dir: &std::path::Path, name: &str) -> Cluster {
    let mut c = Cluster::new(dir, &zk_ensemble(), name, "");
    c.start_as_partition_uid(0);
    assert!(c
        .proc(0)
        .wait_log("Not enough cluster members connected to elect a master.", T));
    c.start(1);
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master");
    assert_eq!(m, 0, "the oldest member must win a tie");
    c.start(2);
    assert!(c.proc(2).wait_log("Slave started", T));
    c
}

/// Never two masters confirming: the cut-off b0 stopped confirming before b`next` was promoted
/// — on losing its heartbeat lease (fast failover: its slaves hear nothing and fence it after
/// `master_timeout_ms`) or its ZooKeeper connection, whichever first.
fn assert_b0_stopped_confirming_before(c: &Cluster, next: usize) {
    let log0 = c.proc(0).log.lock().unwrap().clone();
    let suspended = [
        first_log_time(&log0, "heartbeat lease lost"),
        first_log_time(&log0, "ZooKeeper connection lost: confirming"),
    ]
    .into_iter()
    .flatten()
    .min()
    .expect("the cut-off master never noticed");
    let promoted = first_log_time(&c.proc(next).log.lock().unwrap(), "Promoted to master")
        .expect("no promotion line");
    assert!(
        suspended < promoted,
        "the old master confirmed until {suspended}, the new one was promoted at {promoted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_isolating_the_master_fails_over_without_two_masters() {
    let _alone = PARTITION_UID_USERS.lock().await;
    let d = tempfile::tempdir().unwrap();
    let c = group_with_b0_master(d.path(), "partition");

    let history = Arc::new(History::create(&d.path().join("history.log")));
    let load = Load::start(&c.uri(), history.clone(), 700);
    assert!(load.wait_confirmed(150, T).await);

    let partition = Partition::isolate();
    let (next, took) = tokio::task::block_in_place(|| c.wait_master(&[0], T))
        .expect("the majority side must elect a new master");
    eprintln!("partition: b{next} accepted {took:?} after the master was isolated");
    assert!(
        c.proc(0).wait_log("steps down", T),
        "the isolated master must step down"
    );
    assert_b0_stopped_confirming_before(&c, next);
    let before = load.confirmed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        load.wait_confirmed(before + 100, T).await,
        "the new master must confirm writes during the partition"
    );
    drop(partition);
    assert!(
        c.proc(0).wait_log("Slave started", T),
        "the healed old master must rejoin as a slave"
    );
    load.finish(false).await;
    history.flush();
    let v = check_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("partition: {v:?}");
    assert!(v.confirmed + 5 >= 700, "{v:?}");
    c.assert_epochs_unique();
}

/// An asymmetric partition: the master loses ZooKeeper and its slaves but not its clients, who
/// stay connected to it and keep sending and consuming. It must stop confirming and
/// dispatching before the majority promotes a new master, step down (closing its client
/// connections, so the failover clients move), and the wire-level history must show no
/// confirmed message lost and no message delivered by both masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_partition_with_clients_on_the_old_master_loses_and_duplicates_nothing() {
    let _alone = PARTITION_UID_USERS.lock().await;
    let d = tempfile::tempdir().unwrap();
    let c = group_with_b0_master(d.path(), "asym-partition");

    let history = Arc::new(History::create(&d.path().join("history.log")));
    let gen = LoadGen::start(
        &c.uri(),
        history.clone(),
        LoadSpec {
            producers: 6,
            window: 8,
            consumers: 2,
            msg_bytes: 512,
            destination: "/queue/asym".into(),
            max_per_producer: None,
            pace: Duration::ZERO,
            consume_during: true,
        },
    );
    let confirmed = || gen.confirmed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(gen.wait_confirmed(1_000, T).await, "warm-up");
    let client_port = c.proc(0).port;
    let partition = Partition::isolate_except_client_port(client_port);
    let (next, took) = tokio::task::block_in_place(|| c.wait_master(&[0], T))
        .expect("the majority side must elect a new master");
    eprintln!("asymmetric partition: b{next} accepted {took:?} after the master was cut off");
    assert_b0_stopped_confirming_before(&c, next);
    // Its clients are still on it: it must let them go (step down, close), and they must reach
    // the new master and be confirmed there.
    assert!(
        c.proc(0).wait_log("steps down", T),
        "the cut-off master must step down"
    );
    let before = confirmed();
    assert!(
        gen.wait_confirmed(before + 1_000, T).await,
        "the clients never reached the new master ({before} confirmed)"
    );
    drop(partition);
    assert!(
        c.proc(0).wait_log("Slave started", T),
        "the healed old master must rejoin as a slave"
    );
    let failed = gen.failed.clone();
    let errors = gen.send_errors.clone();
    gen.finish(true, Duration::from_secs(2), Duration::from_secs(180))
        .await;
    history.flush();
    c.assert_epochs_unique();
    let v = check_wire_history(history.path())
        .unwrap_or_else(|v| panic!("asymmetric partition: the history shows violations: {v:#?}"));
    eprintln!("asymmetric partition: {v:?}");
    assert!(v.verdict.confirmed > 1_000, "{v:?}");
    // The old master refuses sends it can no longer take once it steps down ("no longer
    // master"); the failover client does not resend a refused send. Any other failure is a bug.
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("no longer master") || e.contains("not the master any more")),
        "{} sends failed: {errors:?}",
        failed.load(std::sync::atomic::Ordering::SeqCst)
    );
}
