//! Shared-database master/slave with real processes and real databases (the PostgreSQL and
//! MariaDB of `scripts/services.sh`, and a throwaway PostgreSQL for restarts): the slave opens
//! no port and takes over within the lease after a kill -9, a clean shutdown hands over at
//! once, a master stopped past its lease is fenced (it confirms nothing after waking), a
//! database restart never yields two masters, and every receipted message is delivered exactly
//! once after each failover.
#![cfg(feature = "sql")]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ferromq_client::{Client, ClientConfig};
use support::*;

const T: Duration = Duration::from_secs(30);
const LEASE_MS: u64 = 2000;

/// The config of one member of a shared-database group on `url`, tables `prefix*`.
fn shared_db_config(
    name: &str,
    dir: &std::path::Path,
    port: u16,
    url: &str,
    prefix: &str,
    locker: &str,
    extra: &str,
) -> String {
    format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n\
         [store]\nbackend = \"sql\"\nurl = \"{url}\"\ntable_prefix = \"{prefix}\"\n\
         [ha]\nmode = \"shared-db\"\nlocker = \"{locker}\"\nlease_ms = {LEASE_MS}\n\
         lock_acquire_sleep_interval_ms = 50\n{extra}",
        dir.join(name).display()
    )
}

struct Group {
    dir: tempfile::TempDir,
    url: String,
    prefix: String,
    locker: &'static str,
}

impl Group {
    fn new(url: String, locker: &'static str) -> Group {
        Group {
            dir: tempfile::tempdir().unwrap(),
            url,
            prefix: unique_table_prefix(),
            locker,
        }
    }

    fn start(&self, name: &str, extra: &str) -> Proc {
        self.restart(name, free_port(), extra)
    }

    /// [`Group::start`] with the admin API on `admin`.
    fn start_with_admin(&self, name: &str, admin: &str) -> Proc {
        let port = free_port();
        let config = self
            .config(name, port, "")
            .replace("\n[store]", &format!("\nadmin = \"{admin}\"\n[store]"));
        Proc::start(name, self.dir.path(), port, &config)
    }

    fn config(&self, name: &str, port: u16, extra: &str) -> String {
        shared_db_config(
            name,
            self.dir.path(),
            port,
            &self.url,
            &self.prefix,
            self.locker,
            extra,
        )
    }

    fn restart(&self, name: &str, port: u16, extra: &str) -> Proc {
        Proc::start(name, self.dir.path(), port, &self.config(name, port, extra))
    }
}

/// Every receipted message exactly once.
fn assert_exactly_once(got: &[String], receipted: &[String]) {
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a message was delivered twice");
    let missing: Vec<&String> = receipted.iter().filter(|m| !unique.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "{} receipted messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// `GET path` on an admin listener (HTTP/1.1, one request, `Connection: close`): the JSON body.
fn admin_get(addr: &str, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("admin listener");
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// kill -9 of the master: the slave serves within the lease + 1 s (lease locker) or at once
/// (row locker), nothing receipted is lost, and the old master returns as a slave. The new
/// master's `/api/v1/ha` says why it took over, in the locker's words, with the takeover's
/// length; the first master's says it found the lock free.
async fn kill_9_takeover(url: String, locker: &'static str) {
    let g = Group::new(url, locker);
    let (admin_a, admin_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut a = g.start_with_admin("a", &admin_a);
    assert!(
        a.wait_accepting(T).is_some(),
        "first broker must become master"
    );
    let first = admin_get(&admin_a, "/api/v1/ha");
    let reason = first["failover"]["last_became_master"]["reason"]
        .as_str()
        .unwrap_or_default();
    match locker {
        "lease" => assert_eq!(
            reason, "acquired the database lock (lease locker): the lease was free",
            "{first}"
        ),
        _ => assert_eq!(reason, "acquired the database lock (row locker)", "{first}"),
    }
    let b = g.start_with_admin("b", &admin_b);
    assert!(
        b.wait_log("slave mode", T),
        "second broker must say it waits as a slave"
    );
    assert!(!b.accepts(), "a slave opens no client port");
    let sent = send_receipted(&a.addr(), "before", 50).await;
    let killed = Instant::now();
    a.kill9();
    b.wait_accepting(T)
        .expect("the slave must take over when the master dies");
    let took = killed.elapsed();
    eprintln!(
        "{locker} locker: kill -9 → slave accepting in {} ms",
        took.as_millis()
    );
    // The history is published right after the connectors are up: wait for it.
    let deadline = Instant::now() + T;
    let ha = loop {
        let ha = admin_get(&admin_b, "/api/v1/ha");
        if ha["failover"]["masterships"] == 1 || Instant::now() >= deadline {
            break ha;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let became = &ha["failover"]["last_became_master"];
    let reason = became["reason"].as_str().unwrap_or_default();
    match locker {
        // The dead master's lease ran out; the reason names its holder id.
        "lease" => assert!(
            reason.starts_with("acquired the database lock (lease locker): the lease of ")
                && reason.ends_with(" expired"),
            "{ha}"
        ),
        // Its lock connection died with the process: the database released the row lock.
        _ => assert_eq!(
            reason,
            "acquired the database lock (row locker): the previous master's lock connection \
             died without releasing it",
            "{ha}"
        ),
    }
    assert!(became["takeover_ms"].is_u64(), "{ha}");
    assert_eq!(became["epoch"], ha["epoch"], "{ha}");
    // Not a timing threshold on the machine's speed: the lease is the protocol's bound, and a
    // slave that waited several leases would be a stuck slave (ActiveMQ's AMQ-5568 family).
    assert!(
        took < Duration::from_millis(LEASE_MS * 3 + 5000),
        "takeover took {took:?}, far beyond the {LEASE_MS} ms lease"
    );
    let a2 = g.restart("a", a.port, "");
    assert!(
        a2.wait_log("slave mode", T),
        "the old master must return as a slave"
    );
    assert!(!a2.accepts());
    let more = send_receipted(&b.addr(), "after", 20).await;
    let got = drain(&b.addr()).await;
    let all: Vec<String> = sent.into_iter().chain(more).collect();
    assert_exactly_once(&got, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_kill_9_takeover() {
    kill_9_takeover(pg_url(), "lease").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_kill_9_takeover() {
    kill_9_takeover(pg_url(), "row").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_lease_kill_9_takeover() {
    kill_9_takeover(mysql_url(), "lease").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_row_kill_9_takeover() {
    kill_9_takeover(mysql_url(), "row").await;
}

/// A clean shutdown releases the lock: the slave takes over within the acquire interval, not
/// the lease.
async fn clean_shutdown_hands_over(url: String, locker: &'static str) {
    let g = Group::new(url, locker);
    let mut a = g.start("a", "");
    assert!(a.wait_accepting(T).is_some());
    let b = g.start("b", "");
    assert!(b.wait_log("slave mode", T));
    let sent = send_receipted(&a.addr(), "m", 30).await;
    assert!(a.terminate(), "clean shutdown exits 0");
    assert!(
        b.wait_accepting(T).is_some(),
        "the slave must take over after a clean shutdown"
    );
    let got = drain(&b.addr()).await;
    assert_eq!(got, sent, "every message, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clean_shutdown_hands_over() {
    clean_shutdown_hands_over(pg_url(), "lease").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_clean_shutdown_hands_over() {
    clean_shutdown_hands_over(mysql_url(), "lease").await;
}

/// SIGSTOP of the master past its lease: the slave takes over; after SIGCONT the old master
/// must step down and confirm nothing more (its epoch is fenced in the database), and every
/// message it did receipt is delivered once by the new master.
async fn stopped_master_is_fenced(url: String) {
    let g = Group::new(url, "lease");
    let a = g.start("a", "");
    assert!(a.wait_accepting(T).is_some());
    let b = g.start("b", "");
    assert!(b.wait_log("slave mode", T));
    let addr = a.addr();
    // A producer that keeps sending with receipts to the master until it refuses.
    let producer = tokio::spawn(async move {
        let mut receipted = Vec::new();
        let Ok(c) = Client::connect(&addr, ClientConfig::default()).await else {
            return receipted;
        };
        for i in 0..1_000_000 {
            let body = format!("p-{i}");
            let sent = tokio::time::timeout(
                Duration::from_secs(30),
                c.send_with_receipt("/queue/ha", body.clone(), &[("persistent", "true")]),
            )
            .await;
            match sent {
                Ok(Ok(())) => receipted.push(body),
                _ => break,
            }
        }
        receipted
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("STOP");
    b.wait_accepting(T)
        .expect("the slave must take over from a master stopped past its lease");
    // The new master writes, under its epoch.
    let on_b = send_receipted(&b.addr(), "b", 10).await;
    a.signal("CONT");
    assert!(
        a.wait_log("lost mastership", T),
        "the woken master must see it lost mastership"
    );
    let receipted = tokio::time::timeout(T, producer)
        .await
        .expect("the producer on the old master must stop")
        .unwrap();
    assert!(
        !receipted.is_empty(),
        "the load never got going before the stop"
    );
    // A new client on the old master gets no confirmation (the port is closed, or the send
    // fails): it never confirms again.
    if let Ok(Ok(c)) = tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect(&a.addr(), ClientConfig::default()),
    )
    .await
    {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.send_with_receipt("/queue/ha", "zombie", &[("persistent", "true")]),
        )
        .await;
        assert!(
            !matches!(r, Ok(Ok(()))),
            "a fenced master confirmed a message"
        );
    }
    let got = drain(&b.addr()).await;
    let all: Vec<String> = receipted.into_iter().chain(on_b).collect();
    assert_exactly_once(&got, &all);
    assert!(!got.iter().any(|m| m == "zombie"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_master_is_fenced() {
    stopped_master_is_fenced(pg_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_stopped_master_is_fenced() {
    stopped_master_is_fenced(mysql_url()).await;
}

/// The database restarts under a serving group: at no sampled moment do two brokers accept
/// clients, exactly one serves once the database is back, and nothing receipted is lost.
async fn database_restart(locker: &'static str) {
    let pg = ThrowawayPg::start();
    let g = Group::new(pg.url(), locker);
    let a = g.start("a", "");
    assert!(a.wait_accepting(T).is_some());
    let b = g.start("b", "");
    assert!(b.wait_log("slave mode", T));
    let sent = send_receipted(&a.addr(), "before", 30).await;
    pg.down();
    // Down for longer than the lease: the master cannot renew and must stop serving.
    let down_until = Instant::now() + Duration::from_millis(LEASE_MS + 1500);
    while Instant::now() < down_until {
        assert!(
            !(a.accepts() && b.accepts()),
            "two brokers serving while the database is down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pg.up();
    let deadline = Instant::now() + T;
    let master = loop {
        let (ua, ub) = (a.accepts(), b.accepts());
        assert!(
            !(ua && ub),
            "two brokers serving after the database restart"
        );
        if ua {
            break &a;
        }
        if ub {
            break &b;
        }
        assert!(
            Instant::now() < deadline,
            "no broker serves after the database came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Stay watchful for a little while: the other one must not start serving as well.
    for _ in 0..20 {
        assert!(
            !(a.accepts() && b.accepts()),
            "two masters after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let more = send_receipted(&master.addr(), "after", 10).await;
    let got = drain(&master.addr()).await;
    let all: Vec<String> = sent.into_iter().chain(more).collect();
    assert_exactly_once(&got, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_lease_locker() {
    database_restart("lease").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_row_locker() {
    database_restart("row").await;
}
