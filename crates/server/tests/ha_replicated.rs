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

/// One `GET` on an admin endpoint (plain HTTP/1.1, `Connection: close`): the body.
fn admin_get(admin: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_string()
}

fn admin_json(admin: &str, path: &str) -> serde_json::Value {
    let body = admin_get(admin, path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `GET /api/v1/ha` and the replication series of `/metrics` in a replicated group of three:
/// the master lists both slaves with the positions they acknowledged, their lag reaches 0 once
/// they hold everything sent (and each then acknowledged exactly the master's last position),
/// and a slave answers with its role and no replication state. After a failover, the new
/// master's only slave is frozen: the master is suspended, and `failover` says so while it lasts
/// and records the suspension, with its end, once it is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ha_api_shows_the_masters_slaves_and_their_lag() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(d.path(), &zk_standalone(), "ha-api", "");
    let admins: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", support::free_port()))
        .collect();
    for (i, admin) in admins.iter().enumerate() {
        c.transports_extra = format!("admin = \"{admin}\"\n");
        c.start(i);
    }
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master elected");
    let client = ferromq_client::Client::connect(
        &format!("127.0.0.1:{}", c.ports[m]),
        ferromq_client::ClientConfig::default(),
    )
    .await
    .unwrap();
    for i in 0..20 {
        client
            .send_with_receipt("/queue/ha-api", format!("m{i}"), &[("persistent", "true")])
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + T;
    let ha = loop {
        let ha = tokio::task::block_in_place(|| admin_json(&admins[m], "/api/v1/ha"));
        let caught_up = ha["replication"]["slaves"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["lag_entries"] == 0));
        if ha["role"] == "master" && caught_up {
            break ha;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slaves never caught up: {ha}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ha["mode"], "replicated", "{ha}");
    assert!(ha["epoch"].as_u64().unwrap() >= 1, "{ha}");
    // The failover history: elected once, by the replicated mode's election.
    let became = &ha["failover"]["last_became_master"];
    assert_eq!(ha["failover"]["masterships"], 1, "{ha}");
    assert_eq!(became["epoch"], ha["epoch"], "{ha}");
    assert!(
        became["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("elected")),
        "{ha}"
    );
    assert!(became["takeover_ms"].is_u64(), "{ha}");
    assert_eq!(ha["sync"], "quorum_disk", "{ha}");
    assert_eq!(ha["replicas"], 3, "{ha}");
    let r = &ha["replication"];
    let last = r["last_lsn"].as_u64().unwrap();
    assert!(
        last >= 20,
        "20 receipted sends are 20 entries at least: {ha}"
    );
    assert_eq!(r["slave_acks_required"], 1, "{ha}");
    assert_eq!(r["slave_acks_durable"], true, "{ha}");
    let members: Vec<String> = r["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["acked_lsn"], last, "{ha}");
            assert_eq!(s["durable_lsn"], last, "{ha}");
            s["member"].as_str().unwrap().to_string()
        })
        .collect();
    assert_ne!(members[0], members[1], "{ha}");
    let text = tokio::task::block_in_place(|| admin_get(&admins[m], "/metrics"));
    assert!(text.contains("ferromq_replication_slaves 2\n"), "{text}");
    for member in &members {
        // The lag of a slave that caught up stays 0 while nothing is sent.
        let line = format!("ferromq_replication_lag_entries{{slave=\"{member}\"}} 0\n");
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }
    client.disconnect().await.unwrap();

    let slave = (0..3).find(|i| *i != m).unwrap();
    let ha = tokio::task::block_in_place(|| admin_json(&admins[slave], "/api/v1/ha"));
    assert_eq!(ha["role"], "slave", "{ha}");
    assert_eq!(ha["mode"], "replicated", "{ha}");
    assert!(
        ha["replication"].is_null(),
        "a slave reports no replication: {ha}"
    );
    let text = tokio::task::block_in_place(|| admin_get(&admins[slave], "/metrics"));
    assert!(!text.contains("ferromq_replication_"), "{text}");
    assert!(
        ha["failover"]["last_became_master"].is_null(),
        "a slave that never was master has no history: {ha}"
    );

    // A failover: the master dies; the one elected after it says it became master once,
    // after the kill, because the old master left ZooKeeper (or, with fast failover,
    // through the fence).
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    c.kill9(m);
    let (now, _) =
        tokio::task::block_in_place(|| c.wait_master(&[m], T)).expect("no master after the kill");
    let deadline = std::time::Instant::now() + T;
    let ha = loop {
        let ha = tokio::task::block_in_place(|| admin_json(&admins[now], "/api/v1/ha"));
        if ha["failover"]["masterships"] == 1 {
            break ha;
        }
        assert!(std::time::Instant::now() < deadline, "no history: {ha}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let became = &ha["failover"]["last_became_master"];
    let reason = became["reason"].as_str().expect("a reason");
    eprintln!(
        "elected after the kill: {reason}; takeover {} ms",
        became["takeover_ms"]
    );
    assert!(
        reason.contains("previous master left ZooKeeper")
            || reason.starts_with("elected through the fence"),
        "{ha}"
    );
    assert!(became["at_unix_ms"].as_u64().unwrap() >= killed_ms, "{ha}");
    assert!(became["takeover_ms"].is_u64(), "{ha}");
    assert_eq!(ha["failover"]["suspensions"], 0, "{ha}");

    // A suspension: the new master's one remaining slave is frozen, so no heartbeat is
    // answered and the master's lease (master_timeout_ms / 2) runs out: it is suspended, and
    // `/api/v1/ha` says so while it lasts. Thawed, the slave answers again and the master
    // serves again (or, had the freeze outlasted its patience, steps down): either way the
    // suspension is over, with a known end, and kept in the history file.
    let s = (0..3).find(|i| *i != m && *i != now).unwrap();
    c.proc(s).signal("STOP");
    let deadline = std::time::Instant::now() + T;
    let ha = loop {
        let ha = tokio::task::block_in_place(|| admin_json(&admins[now], "/api/v1/ha"));
        if ha["failover"]["suspended_now"] == true {
            break ha;
        }
        if std::time::Instant::now() >= deadline {
            c.proc(s).signal("CONT");
            panic!("the master was never suspended with its only slave frozen: {ha}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = tokio::task::block_in_place(|| admin_get(&admins[now], "/metrics"));
    c.proc(s).signal("CONT");
    let f = &ha["failover"];
    assert_eq!(f["suspensions"], 1, "{ha}");
    let from = f["suspended_since_unix_ms"].as_u64().expect("since when");
    assert_eq!(f["last_suspension"]["from_unix_ms"], from, "{ha}");
    assert!(f["last_suspension"]["to_unix_ms"].is_null(), "{ha}");
    assert!(text.contains("ferromq_ha_suspended 1\n"), "{text}");
    assert!(text.contains("ferromq_ha_suspensions_total 1\n"), "{text}");
    let deadline = std::time::Instant::now() + T;
    let ha = loop {
        let ha = tokio::task::block_in_place(|| admin_json(&admins[now], "/api/v1/ha"));
        if ha["failover"]["suspended_now"] == false {
            break ha;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the suspension never ended: {ha}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "suspension: {}; role now {}",
        ha["failover"]["last_suspension"], ha["role"]
    );
    let f = &ha["failover"];
    assert_eq!(f["suspensions"], 1, "{ha}");
    assert!(f["suspended_since_unix_ms"].is_null(), "{ha}");
    let last = &f["last_suspension"];
    let to = last["to_unix_ms"].as_u64().expect("a known end");
    assert!(to >= from, "{ha}");
    assert_eq!(last["duration_ms"], to - from, "{ha}");
    assert_eq!(f["suspended_ms_total"], to - from, "{ha}");
    let file = c.base.join(format!("b{now}")).join("ha-history.json");
    let deadline = std::time::Instant::now() + T;
    loop {
        let kept = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if kept
            .as_ref()
            .is_some_and(|k| k["suspensions"] == 1 && k["last_suspension"]["to_unix_ms"] == to)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} does not hold the suspension: {kept:?}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Without fast failover (`master_timeout_ms = 0`, ActiveMQ's behaviour) a killed master is
/// replaced once ZooKeeper expires its session: the next master's `/api/v1/ha` says it was
/// elected because the previous master left ZooKeeper, at a time after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_master_says_the_previous_one_left_zookeeper() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(
        d.path(),
        &zk_standalone(),
        "ha-left",
        "master_timeout_ms = 0\n",
    );
    let admins: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", support::free_port()))
        .collect();
    for (i, admin) in admins.iter().enumerate() {
        c.transports_extra = format!("admin = \"{admin}\"\n");
        c.start(i);
    }
    let (m, _) = tokio::task::block_in_place(|| c.wait_master(&[], T)).expect("no master elected");
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    c.kill9(m);
    let (now, _) =
        tokio::task::block_in_place(|| c.wait_master(&[m], T)).expect("no master after the kill");
    let deadline = std::time::Instant::now() + T;
    let ha = loop {
        let ha = tokio::task::block_in_place(|| admin_json(&admins[now], "/api/v1/ha"));
        if ha["failover"]["masterships"] == 1 {
            break ha;
        }
        assert!(std::time::Instant::now() < deadline, "no history: {ha}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let became = &ha["failover"]["last_became_master"];
    let reason = became["reason"].as_str().expect("a reason");
    eprintln!(
        "elected after the kill: {reason}; takeover {} ms",
        became["takeover_ms"]
    );
    assert!(
        reason.starts_with("elected: the previous master left ZooKeeper"),
        "{ha}"
    );
    assert_eq!(became["epoch"], ha["epoch"], "{ha}");
    assert!(became["at_unix_ms"].as_u64().unwrap() >= killed_ms, "{ha}");
    assert!(became["takeover_ms"].is_u64(), "{ha}");
}
