//! Replicated master/slave (`ha.mode = "replicated"`) with three real `ferromq serve`
//! processes and real ZooKeeper: election log lines, kill -9 of the master under load, clean
//! hand-over. Every fault run records a history that the checker judges: no confirmed message
//! lost, none delivered that was never sent, none delivered twice.
#![cfg(feature = "zk")]

mod ha_replicated_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use ha_replicated_support::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn the_history_checker_catches_loss_phantoms_and_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str, lines: &[&str]| {
        let p = d.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let good = write(
        "good",
        &[
            "1 send a",
            "2 confirm a",
            "3 send b",
            "4 deliver a",
            "5 deliver b",
            "6 send c",
        ],
    );
    let v = check_history(&good).unwrap();
    assert_eq!(
        v,
        Verdict {
            sent: 3,
            confirmed: 1,
            delivered: 2,
            unconfirmed_delivered: 1,
            unconfirmed_lost: 1,
        }
    );
    let lost = write("lost", &["1 send a", "2 confirm a"]);
    assert!(check_history(&lost).unwrap_err()[0].contains("never delivered"));
    let phantom = write("phantom", &["1 deliver z"]);
    assert!(check_history(&phantom).unwrap_err()[0].contains("never sent"));
    let dup = write("dup", &["1 send a", "2 deliver a", "3 deliver a"]);
    assert!(check_history(&dup).unwrap_err()[0].contains("more than once"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_under_load_loses_and_duplicates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(d.path(), &zk_ensemble(), "kill9", "");
    c.start(0);
    assert!(
        c.proc(0)
            .wait_log("Not enough cluster members connected to elect a master.", T),
        "one broker of three must not elect itself"
    );
    assert!(!c.proc(0).accepts());
    c.start(1);
    c.start(2);
    let (m0, _) = c.wait_master(&[], T).expect("no master elected");
    assert!(c.proc(m0).wait_log("Promoted to master", T));
    assert!(c.proc(m0).wait_log("Master started: tcp://", T));
    for i in (0..3).filter(|i| *i != m0) {
        assert!(
            c.proc(i).wait_log("Slave started", T),
            "b{i} must be a slave"
        );
        assert!(!c.proc(i).accepts(), "a slave opens no client port");
    }

    let history = Arc::new(History::create(&d.path().join("history.log")));
    let load = Load::start(&c.uri(), history.clone(), 900);
    let mut failovers = Vec::new();
    let mut master = m0;
    for round in 1..=2usize {
        assert!(
            load.wait_confirmed(round * 250, T).await,
            "load stalled before kill {round}"
        );
        c.kill9(master);
        let (next, took) = tokio::task::block_in_place(|| c.wait_master(&[master], T))
            .expect("no slave took over after kill -9");
        failovers.push(took);
        // The killed broker returns and must rejoin as a slave (its unconfirmed suffix, if
        // any, discarded by a full copy).
        c.start(master);
        assert!(c.proc(master).wait_log("Slave started", T));
        master = next;
    }
    load.finish(false).await;
    history.flush();
    let verdict = check_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("replicated kill -9: {verdict:?}; failover to accepting: {failovers:?}");
    assert!(verdict.confirmed >= 500, "{verdict:?}");
    c.assert_epochs_unique();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_of_the_master_hands_over_at_once() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(d.path(), &zk_ensemble(), "clean", "");
    // No periodic checkpoint: only a clean close leaves one (checked at the end).
    c.store_extra = "checkpoint_interval_ms = 3600000".into();
    for i in 0..3 {
        c.start(i);
    }
    let (m, _) = c.wait_master(&[], T).expect("no master elected");
    let history = Arc::new(History::create(&d.path().join("history.log")));
    let load = Load::start(&c.uri(), history.clone(), 300);
    assert!(load.wait_confirmed(100, T).await);
    let t = std::time::Instant::now();
    assert!(
        c.procs[m].as_mut().unwrap().terminate(),
        "the master exits cleanly"
    );
    let stopped = t.elapsed();
    let (_, took) = tokio::task::block_in_place(|| c.wait_master(&[m], T))
        .expect("no slave took over after a clean shutdown");
    eprintln!(
        "replicated clean shutdown: master exited in {stopped:?}, a slave accepted {took:?} later"
    );
    load.finish(false).await;
    history.flush();
    let verdict = check_history(history.path()).unwrap_or_else(|v| panic!("{v:#?}"));
    eprintln!("replicated clean shutdown: {verdict:?}");
    c.assert_epochs_unique();

    // A slave stopped cleanly (its local store closed when the process exits) comes back
    // from a checkpoint covering its whole journal, not by replaying it.
    c.start(m);
    assert!(c.proc(m).wait_log("Slave started", T));
    let (now, _) = c.wait_master(&[m], T).unwrap();
    let slave = (0..3).find(|i| *i != m && *i != now).unwrap();
    assert!(c.procs[slave].as_mut().unwrap().terminate());
    c.start(slave);
    assert!(c.proc(slave).wait_log("Slave started", T));
    assert_eq!(
        c.proc(slave).log_count("Recovery replayed 0 operations"),
        1,
        "a cleanly stopped slave must restart from a checkpoint that covers its whole journal"
    );
}
