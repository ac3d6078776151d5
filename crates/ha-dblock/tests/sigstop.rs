//! A master (lease or row lock) whose whole process is stopped (SIGSTOP: a pause, a suspended VM) while a
//! slave takes over must, when it resumes, refuse at its very first fence check and never
//! believe it is master again. The master runs in a child process (this test binary re-run
//! with `FERROMQ_DBLOCK_CHILD` set), reporting on stdout.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{config, unique_prefix, url, Conn, Kind};
use ferromq_ha::Activation;
use ferromq_ha_dblock::{DbLock, Locker};
use tokio::sync::mpsc;

const CHILD_ENV: &str = "FERROMQ_DBLOCK_CHILD";
const EVENTUALLY: Duration = Duration::from_secs(60);

/// The child's side: a no-op unless run by the parent test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_lease_master() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (db_url, prefix, locker) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let locker = if locker == "row" {
        Locker::Row
    } else {
        Locker::Lease
    };
    fn say(line: String) {
        let mut out = std::io::stdout().lock();
        // A marker: libtest may print its own text on the same line before ours.
        writeln!(out, "@@{line}").unwrap();
        out.flush().unwrap();
    }
    let l = Arc::new(DbLock::new(config(db_url, prefix, "child", locker)).unwrap());
    let mut m = l.acquire().await.unwrap();
    let fence = m.fence.clone().unwrap();
    say(format!("MASTER {}", m.epoch));
    // Fence checks on a plain thread, so nothing of the runtime (the keeper's timers) runs
    // between the process resuming and the first check. A gap far longer than the 5 ms sleep
    // means the process was stopped: report that first check separately.
    let watcher = std::thread::spawn(move || {
        let mut fence_ok = None;
        let mut last = std::time::Instant::now();
        for _ in 0..(120_000 / 5) {
            let resumed = last.elapsed() > Duration::from_secs(2);
            let ok = fence.check().is_ok();
            last = std::time::Instant::now();
            if resumed {
                say(format!(
                    "RESUMED {}",
                    if ok { "FENCE_OK" } else { "FENCE_ERR" }
                ));
            }
            if fence_ok != Some(ok) {
                fence_ok = Some(ok);
                say(if ok {
                    "FENCE_OK".into()
                } else {
                    "FENCE_ERR".into()
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let reason = m.lost().await;
    say(format!("LOST {reason}"));
    // Compete again, as the server's serve loop would: it must only ever wait.
    let m2 = l.acquire().await.unwrap();
    say(format!("MASTER_AGAIN {}", m2.epoch));
    drop(m2);
    drop(watcher);
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn next_line(rx: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(EVENTUALLY, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("child never reported {what}"))
        .unwrap_or_else(|| panic!("child exited before reporting {what}"))
}

async fn stopped_master_resumes_fenced(kind: Kind, locker: Locker) {
    common::init_logs();
    let db_url = url(kind);
    let prefix = unique_prefix();
    let table = format!("{prefix}lock");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_lease_master",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{db_url}|{prefix}|{}",
                if locker == Locker::Row {
                    "row"
                } else {
                    "lease"
                }
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest's own lines (and text before our marker) are not ours.
            if let Some(i) = line.find("@@") {
                if tx.send(line[i + 2..].to_string()).is_err() {
                    return;
                }
            }
        }
    });
    let master = next_line(&mut rx, "mastership").await;
    let child_epoch: u64 = master.strip_prefix("MASTER ").unwrap().parse().unwrap();
    assert_eq!(next_line(&mut rx, "its fence").await, "FENCE_OK");

    signal(pid, "-STOP");
    // Lease: b waits for the lease to expire. Row: the database ends the silent session
    // (idle in transaction too long), b locks the row and waits out the child's fence.
    let b = DbLock::new(config(&db_url, &prefix, "b", locker)).unwrap();
    let mb = tokio::time::timeout(EVENTUALLY, b.acquire())
        .await
        .expect("the stopped master's lease never expired")
        .unwrap();
    assert!(mb.epoch > child_epoch);
    signal(pid, "-CONT");

    // The very first fence check of the resumed child refuses, and it learns it lost.
    let mut resumed = None;
    let mut lost = false;
    while resumed.is_none() || !lost {
        let line = next_line(&mut rx, "its state after resuming").await;
        if let Some(r) = line.strip_prefix("RESUMED ") {
            resumed = Some(r.to_string());
        } else if line.starts_with("LOST") {
            lost = true;
        } else {
            assert_eq!(line, "FENCE_ERR", "the deposed master reported {line:?}");
        }
    }
    assert_eq!(
        resumed.as_deref(),
        Some("FENCE_ERR"),
        "a resumed deposed master passed its first fence check"
    );
    // And it never passes its fence nor becomes master again while b holds the lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(line) = rx.try_recv() {
        assert_eq!(line, "FENCE_ERR", "the deposed master reported {line:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
    mb.release();
    let mut c = Conn::open(kind, &db_url).await;
    c.drop_table(&table).await;
    c.close().await;
}

macro_rules! stopped_master {
    ($name:ident, $kind:expr, $locker:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if std::env::var(CHILD_ENV).is_ok() {
                return;
            }
            stopped_master_resumes_fenced($kind, $locker).await;
        }
    };
}

stopped_master!(
    postgres_a_stopped_lease_master_resumes_fenced_and_never_master_again,
    Kind::Pg,
    Locker::Lease
);
stopped_master!(
    mariadb_a_stopped_lease_master_resumes_fenced_and_never_master_again,
    Kind::My,
    Locker::Lease
);
stopped_master!(
    postgres_a_stopped_row_master_resumes_fenced_and_never_master_again,
    Kind::Pg,
    Locker::Row
);
stopped_master!(
    mariadb_a_stopped_row_master_resumes_fenced_and_never_master_again,
    Kind::My,
    Locker::Row
);
