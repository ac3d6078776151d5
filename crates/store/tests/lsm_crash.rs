//! A process killed with batches in flight (SIGABRT: no destructor, no close, no flush) loses no
//! confirmed batch, and what it kept is a prefix of whole batches.
#![cfg(feature = "lsm")]

mod journal_common;

use std::io::Write;
use std::process::{Command, Stdio};

use ferromq_store::{Batch, LsmConfig, LsmStore, MemoryStore, MessageStore, Op};
use journal_common::*;

/// Set in the child process: the directory to write to.
const CHILD_DIR_ENV: &str = "FERROMQ_LSM_CRASH_CHILD_DIR";
/// Batches the child confirms before it kills itself.
const CONFIRMED_BEFORE_KILL: u64 = 150;
/// Batches the child keeps in flight (submitted, not yet confirmed) at any time.
const IN_FLIGHT: usize = 8;

/// Batch `i`: a message to two queues (must land together), acks of older ones, and now and
/// then a subscription.
fn batch(i: u64) -> Batch {
    let mut ops = vec![
        enq(
            "queue://a",
            i,
            body("queue://a", i, 64 + (i as usize % 7) * 100),
        ),
        enq("dupids://p", i, format!("ID:p:{i}").into_bytes()),
    ];
    if i > 4 {
        ops.push(deq("queue://a", i - 4));
    }
    if i % 10 == 9 {
        ops.push(Op::PutSubscription(sub(&format!("durable://c:s{i}"), "t")));
    }
    ops
}

fn child(dir: &str) -> ! {
    let store = LsmStore::open(LsmConfig::new(dir)).unwrap();
    let mut stdout = std::io::stdout();
    let mut in_flight = std::collections::VecDeque::new();
    let mut next = 1u64;
    let mut confirmed = 0u64;
    loop {
        while in_flight.len() < IN_FLIGHT {
            in_flight.push_back((next, store.submit(batch(next))));
            next += 1;
        }
        if confirmed >= CONFIRMED_BEFORE_KILL {
            // Batches still in flight: die without close(), drop or flush.
            writeln!(stdout, "submitted {}", next - 1).unwrap();
            stdout.flush().unwrap();
            std::process::abort();
        }
        if let Some((i, c)) = in_flight.pop_front() {
            c.wait_blocking().unwrap();
            confirmed = i;
            writeln!(stdout, "confirmed {i}").unwrap();
            stdout.flush().unwrap();
        }
    }
}

#[test]
fn a_killed_process_keeps_every_confirmed_batch_whole() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_process_keeps_every_confirmed_batch_whole",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must have been killed");
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |prefix: &str| -> Option<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|n| n.trim().parse().ok())
            .max()
    };
    let confirmed = number("confirmed ").unwrap();
    let submitted = number("submitted ").unwrap();
    assert_eq!(confirmed, CONFIRMED_BEFORE_KILL);
    assert!(submitted > confirmed);

    let store = LsmStore::open(LsmConfig::new(dir.path())).unwrap();
    let found = state(&store);
    // The store holds batches 1..=k for one k between the last confirmed and the last
    // submitted: every confirmed batch, and no partial one.
    let model = MemoryStore::new();
    for i in 1..=submitted {
        model.submit(batch(i)).wait_blocking().unwrap();
        if i >= confirmed && state(&model) == found {
            assert_eq!(store.usage_bytes(), model.usage_bytes());
            return;
        }
    }
    panic!(
        "recovered state is no prefix of batches {confirmed}..={submitted}: {:?}",
        found.recovery
    );
}
