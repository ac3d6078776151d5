//! Shared-file master/slave with real processes on one shared directory: the slave opens no
//! port, takes over the moment the master dies, no receipted message is lost, a restarted old
//! master comes back as a slave, a master whose lock file is replaced stops serving, and a
//! clean shutdown hands over at once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use ferromq_client::{Client, ClientConfig};
use support::*;

const SLAVE_LINE: &str =
    "is locked by another server. This broker is now in slave mode waiting a lock to be acquired";
const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_takes_over_on_kill_9_and_old_master_returns_as_slave() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (pa, pb) = (free_port(), free_port());
    let mut a = Proc::start(
        "a",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, ""),
    );
    assert!(
        a.wait_accepting(T).is_some(),
        "first broker must become master"
    );
    let b = Proc::start(
        "b",
        dir.path(),
        pb,
        &shared_file_config("b", &shared, pb, ""),
    );
    assert!(
        b.wait_log(SLAVE_LINE, T),
        "second broker must log ActiveMQ's slave line"
    );
    assert!(!b.accepts(), "a slave opens no client port");

    let sent = send_receipted(&a.addr(), "before", 50).await;
    a.kill9();
    let took = b
        .wait_accepting(T)
        .expect("slave must take over when the master dies");
    eprintln!(
        "takeover after kill -9: {} ms to accepting",
        took.as_millis()
    );
    assert!(b.wait_log("Master started", T));

    // The old master comes back: as a slave.
    let a2 = Proc::start(
        "a2",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, ""),
    );
    assert!(
        a2.wait_log(SLAVE_LINE, T),
        "a restarted old master must come back as a slave"
    );
    assert!(!a2.accepts());

    let more = send_receipted(&b.addr(), "after", 20).await;
    let got = drain(&b.addr()).await;
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "duplicates after failover");
    for m in sent.iter().chain(&more) {
        assert!(unique.contains(m), "receipted message {m} lost in failover");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_hands_over_to_the_slave_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (pa, pb) = (free_port(), free_port());
    let mut a = Proc::start(
        "a",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, ""),
    );
    assert!(a.wait_accepting(T).is_some());
    let b = Proc::start(
        "b",
        dir.path(),
        pb,
        &shared_file_config("b", &shared, pb, ""),
    );
    assert!(b.wait_log(SLAVE_LINE, T));
    let sent = send_receipted(&a.addr(), "m", 30).await;
    assert!(a.terminate(), "clean shutdown exits 0");
    assert!(
        b.wait_accepting(T).is_some(),
        "slave must take over after a clean shutdown"
    );
    let got = drain(&b.addr()).await;
    assert_eq!(got, sent, "every message, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_whose_lock_file_is_replaced_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let pa = free_port();
    // restart_allowed = false: a deposed master exits, so the test can see it stop.
    let mut a = Proc::start(
        "a",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, "restart_allowed = false\n"),
    );
    assert!(a.wait_accepting(T).is_some());
    let sent = send_receipted(&a.addr(), "m", 10).await;
    std::fs::remove_file(shared.join("lock")).unwrap();
    // Someone else takes the (new) lock file: the old master must notice and stop.
    let pb = free_port();
    let b = Proc::start(
        "b",
        dir.path(),
        pb,
        &shared_file_config("b", &shared, pb, ""),
    );
    assert!(b.wait_accepting(T).is_some());
    assert!(
        a.wait_log("lost mastership", T),
        "the old master must notice it lost its lock"
    );
    let deadline = std::time::Instant::now() + T;
    while !a.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "deposed master still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!a.accepts(), "a deposed master serves no one");
    let got = drain(&b.addr()).await;
    let unique: HashSet<&String> = got.iter().collect();
    for m in &sent {
        assert!(unique.contains(m), "{m} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_keeps_its_lock_and_no_second_master_appears() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (pa, pb) = (free_port(), free_port());
    let a = Proc::start(
        "a",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, ""),
    );
    assert!(a.wait_accepting(T).is_some());
    let b = Proc::start(
        "b",
        dir.path(),
        pb,
        &shared_file_config("b", &shared, pb, ""),
    );
    assert!(b.wait_log(SLAVE_LINE, T));
    let sent = send_receipted(&a.addr(), "m", 10).await;
    // SIGSTOP far past the keep-alive: the kernel keeps the flock for the stopped process, so
    // the slave must not take over (that would be two masters on one journal)...
    a.signal("STOP");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !b.accepts(),
        "the slave took over while the master still held the lock"
    );
    a.signal("CONT");
    // ...and the master carries on where it was.
    let more = send_receipted(&a.addr(), "n", 10).await;
    let got = drain(&a.addr()).await;
    assert_eq!(got.len(), sent.len() + more.len());
    assert!(!b.accepts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_tells_clients_the_group_when_update_cluster_clients_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (pa, pb) = (free_port(), free_port());
    let extra = "update_cluster_clients = true\n";
    let a = Proc::start(
        "a",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, extra),
    );
    assert!(a.wait_accepting(T).is_some());
    let b = Proc::start(
        "b",
        dir.path(),
        pb,
        &shared_file_config("b", &shared, pb, extra),
    );
    assert!(b.wait_log(SLAVE_LINE, T));
    let c = Client::connect(&a.addr(), ClientConfig::default())
        .await
        .unwrap();
    let cluster = support::cluster_header(&c);
    let members: Vec<&str> = cluster.split(',').collect();
    assert_eq!(
        members[0],
        format!("tcp://127.0.0.1:{pa}"),
        "the master first"
    );
    assert!(
        members.contains(&format!("tcp://127.0.0.1:{pb}").as_str()),
        "{cluster}"
    );
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_knows_only_the_master_finds_the_slave_after_failover() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (pa, pb) = (free_port(), free_port());
    let extra = "update_cluster_clients = true\n";
    let mut a = Proc::start(
        "a",
        dir.path(),
        pa,
        &shared_file_config("a", &shared, pa, extra),
    );
    assert!(a.wait_accepting(T).is_some());
    let b = Proc::start(
        "b",
        dir.path(),
        pb,
        &shared_file_config("b", &shared, pb, extra),
    );
    assert!(b.wait_log(SLAVE_LINE, T));
    let uri =
        format!("failover:(tcp://127.0.0.1:{pa})?initialReconnectDelay=10&maxReconnectDelay=100");
    let c = ferromq_client::FailoverClient::connect(&uri, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(
        c.brokers().len(),
        2,
        "learned the slave from CONNECTED: {:?}",
        c.brokers()
    );
    c.send_with_receipt("/queue/ha", "one", &[("persistent", "true")])
        .await
        .unwrap();
    a.kill9();
    c.send_with_receipt("/queue/ha", "two", &[("persistent", "true")])
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(drain(&b.addr()).await, ["one", "two"]);
}

fn status(admin: u16) -> String {
    let out = std::process::Command::new(BIN)
        .args(["status", "--admin", &format!("127.0.0.1:{admin}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferromq_status_shows_each_brokers_role_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let (pa, pb, aa, ab) = (free_port(), free_port(), free_port(), free_port());
    let cfg = |name: &str, port: u16, admin: u16| {
        shared_file_config(name, &shared, port, "").replace(
            "[transports]\n",
            &format!("[transports]\nadmin = \"127.0.0.1:{admin}\"\n"),
        )
    };
    let mut a = Proc::start("a", dir.path(), pa, &cfg("a", pa, aa));
    assert!(a.wait_accepting(T).is_some());
    let b = Proc::start("b", dir.path(), pb, &cfg("b", pb, ab));
    assert!(b.wait_log(SLAVE_LINE, T));
    let sa = status(aa);
    assert!(sa.contains(r#""role":"master","epoch":1"#), "{sa}");
    let sb = status(ab);
    assert!(
        sb.contains(r#""role":"slave""#),
        "a slave answers status without a client port: {sb}"
    );
    a.kill9();
    assert!(b.wait_accepting(T).is_some());
    let sb = status(ab);
    assert!(sb.contains(r#""role":"master","epoch":2"#), "{sb}");
}
