//! Power cuts under every local store backend behind real `ferromq serve` processes.
//!
//! The broker's data dir is on the power-loss filesystem (`ferromq-powerfs`, mounted by this
//! test process, so it outlives the broker): a cut is kill -9 of the broker and the loss of
//! every write and directory change not yet synced (all of them, a seeded random subset of
//! pages, or a torn last page), then a restart on what the "disk" kept. Unlike a plain kill -9
//! (whose page cache survives), a missing or misordered fdatasync shows here as a lost
//! message. Needs root and /dev/fuse (CI has both): without them the tests fail, they do not
//! skip. See docs/testing.md.

mod power_loss_support;
mod support;

use ferromq_powerfs::LossMode;
use power_loss_support::{Ledger, Load, Rig};

/// Receipts each round of load collects before the cut (a debug build on a shared 2-core
/// machine does a few hundred a second on the journal).
const RECEIPTS_PER_ROUND: usize = 400;

/// The seed of the random cuts; `FERROMQ_POWER_SEED` replays (or explores) another.
fn seed() -> u64 {
    std::env::var("FERROMQ_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed)
}

/// How many unsynced pages the first (random) cut waits for: 2 or 3 by the seed, or
/// `FERROMQ_POWER_PAGES` (more pages, more holes; the wait for a group that large is longer).
fn random_cut_pages(seed: u64) -> u64 {
    std::env::var("FERROMQ_POWER_PAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2 + seed % 2)
}

/// Load, cut (random pages) → cut again at the restarted broker's first write, while it
/// recovers → load, cut (torn last page) → load, cut (everything unsynced) → restart: every
/// receipted message is there once, no acked message came back unless its ack was
/// unconfirmed, nothing unknown. Each load cut hits right after a write, before its sync.
async fn cut_recover_cut_during_recovery_write_cut(name: &str, store: &str) {
    let seed = seed();
    eprintln!("[{name}] seed {seed} (FERROMQ_POWER_SEED={seed} replays it)");
    let mut rig = Rig::new(name, store);
    let ledger = Ledger::shared();

    rig.start_first();
    let load = Load::start(&rig.addr(), &ledger, 0);
    load.wait_receipts(&ledger, RECEIPTS_PER_ROUND).await;
    rig.cut_while_writing(
        LossMode::RandomPages { seed },
        random_cut_pages(seed),
        &ledger,
    );
    load.join().await;

    rig.start_and_cut_during_recovery(LossMode::RandomPages { seed: seed + 1 });

    for (round, mode) in [
        (1, LossMode::TornLastPage { seed: seed + 2 }),
        (2, LossMode::DropAll),
    ] {
        rig.start();
        let load = Load::start(&rig.addr(), &ledger, round);
        load.wait_receipts(&ledger, RECEIPTS_PER_ROUND).await;
        rig.cut_while_writing(mode, 1 + (seed + round as u64) % 2, &ledger);
        load.join().await;
    }

    rig.start();
    let verdict = rig.drain_and_check(&ledger).await;
    eprintln!("[{name}] {verdict}");
    verdict.assert_clean();
    rig.stop();
}

/// Declares the power-cut test of one backend.
macro_rules! power_cut_test {
    ($name:ident, $store:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cut_recover_cut_during_recovery_write_cut(stringify!($name), $store).await;
        }
    };
}

power_cut_test!(
    journal_portable_keeps_every_receipted_message_through_power_cuts,
    "backend = \"journal\"\njournal_io = \"portable\"\n"
);
#[cfg(feature = "io-uring")]
power_cut_test!(
    journal_io_uring_keeps_every_receipted_message_through_power_cuts,
    "backend = \"journal\"\njournal_io = \"io-uring\"\n"
);
// The direct path pipelined through the ring: several groups in flight at each cut.
#[cfg(feature = "io-uring")]
power_cut_test!(
    journal_io_uring_pipelined_keeps_every_receipted_message_through_power_cuts,
    "backend = \"journal\"\njournal_io = \"io-uring\"\njournal_io_depth = 4\n"
);
#[cfg(feature = "sql")]
power_cut_test!(
    sql_sqlite_keeps_every_receipted_message_through_power_cuts,
    "backend = \"sql\"\n"
);
#[cfg(feature = "lsm")]
power_cut_test!(
    lsm_keeps_every_receipted_message_through_power_cuts,
    "backend = \"lsm\"\n"
);

/// What acks without a receipt cost (`store.ack_sync_delay_ms`): 100 receipted messages, a
/// consumer acks 50 with receipts and then 50 without, and a barrier (a receipted SUBSCRIBE on
/// the same connection, answered only after the broker wrote those acks) shows they reached
/// the store; nothing else writes before the power cut (the delay and the checkpoint timer are
/// far away). After the cut the 50 unreceipted acks are undone — the messages come back, as
/// redeliveries — and none of the receipted ones: a receipted ack is flushed before its
/// RECEIPT, an unreceipted one rides on a later flush. If every ack were still flushed on its
/// own, nothing would come back and this test would fail.
async fn acks_without_receipt_are_redelivered_after_a_cut_and_receipted_ones_are_not(
    name: &str,
    store: &str,
) {
    use ferromq_client::{AckMode, Client, ClientConfig, Command, Frame};
    let mut rig = Rig::new(name, store);
    rig.start_first();
    let c = Client::connect(&rig.addr(), ClientConfig::default())
        .await
        .unwrap();
    let bodies: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    for b in &bodies {
        c.send_with_receipt(
            power_loss_support::QUEUE,
            b.clone(),
            &[("persistent", "true")],
        )
        .await
        .unwrap();
    }
    let mut sub = c
        .subscribe(power_loss_support::QUEUE, AckMode::ClientIndividual, &[])
        .await
        .unwrap();
    for (i, want) in bodies.iter().enumerate() {
        let m = sub
            .next_timeout(std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("message {i} never came"));
        assert_eq!(String::from_utf8_lossy(m.body()), *want);
        let mut ack = Frame::new(Command::Ack);
        ack.push_header("id", m.ack_id().unwrap());
        if i < 50 {
            c.request(ack).await.unwrap();
        } else {
            c.send_frame(ack).await.unwrap();
        }
    }
    let _barrier = c
        .subscribe("/queue/barrier", AckMode::Auto, &[])
        .await
        .unwrap();
    rig.cut(LossMode::DropAll, &Ledger::shared());
    rig.start();
    let mut got = support::drain(&rig.addr()).await;
    got.sort();
    eprintln!("[{name}] after the cut: {} messages back", got.len());
    assert_eq!(
        got,
        bodies[50..].to_vec(),
        "exactly the messages acked without a receipt must come back"
    );
    rig.stop();
}

/// Declares the unreceipted-ack power-cut test of one backend.
macro_rules! lazy_ack_test {
    ($name:ident, $store:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            acks_without_receipt_are_redelivered_after_a_cut_and_receipted_ones_are_not(
                stringify!($name),
                concat!(
                    $store,
                    "ack_sync_delay_ms = 10000\ncheckpoint_interval_ms = 600000\n",
                    "cleanup_interval_ms = 600000\n"
                ),
            )
            .await;
        }
    };
}

lazy_ack_test!(
    journal_acks_without_receipt_cost_a_redelivery_not_a_flush,
    "backend = \"journal\"\n"
);
#[cfg(feature = "lsm")]
lazy_ack_test!(
    lsm_acks_without_receipt_cost_a_redelivery_not_a_flush,
    "backend = \"lsm\"\n"
);

/// The test of the test: with `sync = "never"` nothing reaches the disk before a cut that
/// loses everything unsynced, so the checker must report receipted messages lost. (A plain
/// kill -9 test passes this configuration: the page cache survives a process death.)
async fn the_checker_reports_loss_when_the_store_never_syncs(name: &str, store: &str) {
    let mut rig = Rig::new(name, store);
    let ledger = Ledger::shared();
    rig.start_first();
    let load = Load::start(&rig.addr(), &ledger, 0);
    load.wait_receipts(&ledger, RECEIPTS_PER_ROUND).await;
    rig.cut(LossMode::DropAll, &ledger);
    load.join().await;
    rig.start();
    let verdict = rig.drain_and_check(&ledger).await;
    eprintln!("[{name}] {verdict}");
    assert!(
        !verdict.lost.is_empty(),
        "sync = \"never\" lost nothing in a power cut: the power-loss filesystem or the checker is blind ({verdict})"
    );
    rig.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_loss_when_the_journal_never_syncs() {
    the_checker_reports_loss_when_the_store_never_syncs(
        "journal_sync_never",
        "backend = \"journal\"\nsync = \"never\"\n",
    )
    .await;
}

#[cfg(feature = "lsm")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_loss_when_lsm_never_syncs() {
    the_checker_reports_loss_when_the_store_never_syncs(
        "lsm_sync_never",
        "backend = \"lsm\"\nsync = \"never\"\n",
    )
    .await;
}

/// Sanity of the rig itself, without a cut: a clean restart loses nothing, so the checks
/// above fail only because of the cuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cut_the_checker_finds_nothing() {
    let mut rig = Rig::new("no_cut", "backend = \"journal\"\nsync = \"never\"\n");
    let ledger = Ledger::shared();
    rig.start();
    let load = Load::start(&rig.addr(), &ledger, 0);
    load.wait_receipts(&ledger, RECEIPTS_PER_ROUND / 4).await;
    load.stop_and_join().await;
    rig.restart_cleanly();
    let verdict = rig.drain_and_check(&ledger).await;
    eprintln!("[no_cut] {verdict}");
    verdict.assert_clean();
    rig.stop();
}

/// The checker's at-least-once rules on a made-up history.
#[test]
fn the_checker_tells_loss_resurrection_duplicates_and_unknowns_from_allowed_outcomes() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    let ledger = Ledger {
        sent: set(&["a", "b", "c", "d", "e", "f", "g"]),
        receipted: set(&["a", "b", "c", "d", "e", "f"]),
        // c: ack in flight (may or may not come back); d, e: acks receipted.
        ack_sent: set(&["c", "d", "e"]),
        ack_receipted: set(&["d", "e"]),
        acks_without_receipt: 0,
        delivered: 3,
    };
    // a: kept; b: lost; c: gone (its ack may have been durable); d: resurrected; e: gone;
    // f: twice; g: sent, never receipted, kept (allowed); x: never sent.
    let drained: Vec<String> = ["a", "d", "f", "f", "g", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v = ledger.check(&drained);
    assert_eq!(v.lost, ["b"]);
    assert_eq!(v.resurrected, ["d"]);
    assert_eq!(v.duplicated, ["f"]);
    assert_eq!(v.unknown, ["x"]);
    assert_eq!(v.acks_in_flight, 1);
    // The ack in flight may equally have been lost: c delivered again is fine.
    let drained: Vec<String> = ["a", "b", "c", "f", "g"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v = ledger.check(&drained);
    v.assert_clean();
}
