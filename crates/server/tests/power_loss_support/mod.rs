//! The power-cut rig: a `ferromq serve` process on the power-loss filesystem, a receipted load
//! with acks in flight, and the ledger that says after recovery what was lost.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferromq_client::{AckMode, Client, ClientConfig, Command, Frame};
use ferromq_powerfs::{CutReport, LossMode, PowerFs};

use crate::support::{drain, free_port, Proc};

/// The queue of the load (`support::drain` drains it).
pub const QUEUE: &str = "/queue/ha";
const PRODUCERS: usize = 6;
/// Receipted SENDs each producer keeps in flight.
const SEND_WINDOW: usize = 8;
const CONSUMERS: usize = 2;
/// Every `UNACKED_EVERY`-th delivery is left unacknowledged: it must come back.
const UNACKED_EVERY: u64 = 4;
/// Every `NO_RECEIPT_EVERY`-th acknowledgement asks for no receipt, so the broker writes it
/// without a flush of its own (`store.ack_sync_delay_ms`): a cut may bring it back, nothing
/// else; the receipted ones must never come back.
const NO_RECEIPT_EVERY: u64 = 2;
/// Per delivery, so that the consumers fall behind the producers.
const CONSUME_PAUSE: Duration = Duration::from_millis(1);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the clients did and what the broker confirmed, over every round of a test.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every body a producer sent (receipted or not).
    pub sent: HashSet<String>,
    /// Bodies whose SEND got its RECEIPT: the broker promised them.
    pub receipted: HashSet<String>,
    /// Bodies a consumer sent an ACK for (with or without a receipt).
    pub ack_sent: HashSet<String>,
    /// How many of those ACKs asked for no receipt.
    pub acks_without_receipt: u64,
    /// Bodies whose ACK got its RECEIPT: the broker promised they are gone.
    pub ack_receipted: HashSet<String>,
    /// Deliveries seen by the consumers.
    pub delivered: u64,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

impl Ledger {
    pub fn shared() -> SharedLedger {
        Arc::new(Mutex::new(Ledger::default()))
    }

    /// Judges what a drain after the last recovery found against the promises made.
    ///
    /// The at-least-once contract: a receipted message is delivered again unless an ACK of it
    /// was sent (if that ACK was receipted it must not come back; if it was still in flight,
    /// either outcome is allowed); nothing is delivered twice by one drain; nothing is
    /// delivered that no producer sent.
    pub fn check(&self, drained: &[String]) -> Verdict {
        let mut seen: HashMap<&String, usize> = HashMap::new();
        for b in drained {
            *seen.entry(b).or_default() += 1;
        }
        let mut lost: Vec<String> = self
            .receipted
            .iter()
            .filter(|b| !self.ack_sent.contains(*b) && !seen.contains_key(b))
            .cloned()
            .collect();
        let mut resurrected: Vec<String> = self
            .ack_receipted
            .iter()
            .filter(|b| seen.contains_key(b))
            .cloned()
            .collect();
        let mut duplicated: Vec<String> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(b, _)| (*b).clone())
            .collect();
        let mut unknown: Vec<String> = seen
            .keys()
            .filter(|b| !self.sent.contains(**b))
            .map(|b| (*b).clone())
            .collect();
        for v in [&mut lost, &mut resurrected, &mut duplicated, &mut unknown] {
            v.sort();
        }
        Verdict {
            delivered: self.delivered,
            receipted: self.receipted.len(),
            ack_receipted: self.ack_receipted.len(),
            acks_in_flight: self.ack_sent.len()
                - self.ack_sent.intersection(&self.ack_receipted).count(),
            acks_without_receipt: self.acks_without_receipt,
            unreceipted_acked_back: self
                .ack_sent
                .iter()
                .filter(|b| !self.ack_receipted.contains(*b) && seen.contains_key(b))
                .count(),
            drained: drained.len(),
            lost,
            resurrected,
            duplicated,
            unknown,
        }
    }
}

/// The outcome of [`Ledger::check`].
#[derive(Debug)]
pub struct Verdict {
    pub delivered: u64,
    pub receipted: usize,
    pub ack_receipted: usize,
    pub acks_in_flight: usize,
    /// ACKs sent without a receipt (written lazily by the broker).
    pub acks_without_receipt: u64,
    /// Messages acked without a confirmed ACK that came back after recovery (allowed).
    pub unreceipted_acked_back: usize,
    pub drained: usize,
    /// Receipted, never acked, not delivered after recovery.
    pub lost: Vec<String>,
    /// Acked with a receipt, yet delivered after recovery.
    pub resurrected: Vec<String>,
    /// Delivered more than once by the final drain.
    pub duplicated: Vec<String>,
    /// Delivered, never sent.
    pub unknown: Vec<String>,
}

fn first(v: &[String]) -> &[String] {
    &v[..v.len().min(5)]
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} receipted, {} delivered under load, {} acks receipted, {} acks in flight ({} without receipt), {} unconfirmed acks came back, {} drained; lost {} {:?}, resurrected {} {:?}, duplicated {} {:?}, unknown {} {:?}",
            self.receipted,
            self.delivered,
            self.ack_receipted,
            self.acks_in_flight,
            self.acks_without_receipt,
            self.unreceipted_acked_back,
            self.drained,
            self.lost.len(),
            first(&self.lost),
            self.resurrected.len(),
            first(&self.resurrected),
            self.duplicated.len(),
            first(&self.duplicated),
            self.unknown.len(),
            first(&self.unknown),
        )
    }
}

impl Verdict {
    pub fn assert_clean(&self) {
        assert!(
            self.lost.is_empty()
                && self.resurrected.is_empty()
                && self.duplicated.is_empty()
                && self.unknown.is_empty(),
            "the store broke its promises across power cuts: {self}"
        );
    }
}

/// A broker on the power-loss filesystem. Fields drop in order: the broker dies before the
/// filesystem is unmounted, and that before its mount point is removed.
pub struct Rig {
    broker: Option<Proc>,
    fs: PowerFs,
    name: String,
    store: String,
    mount: PathBuf,
    dir: tempfile::TempDir,
    /// What each cut lost.
    pub cuts: Vec<CutReport>,
    /// Serve OpenWire too (on a fresh port each start).
    pub openwire: bool,
    openwire_port: Option<u16>,
}

impl Rig {
    /// Mounts the power-loss filesystem in a fresh temp dir; fails (never skips) without FUSE.
    pub fn new(name: &str, store: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let fs = PowerFs::mount(&mount).unwrap_or_else(|e| {
            panic!("power-loss tests need root and /dev/fuse (CI has both): {e}")
        });
        Rig {
            broker: None,
            fs,
            name: name.to_owned(),
            store: store.to_owned(),
            mount,
            dir,
            cuts: Vec::new(),
            openwire: false,
            openwire_port: None,
        }
    }

    fn spawn(&mut self) {
        assert!(self.broker.is_none(), "a broker is already running");
        let port = free_port();
        self.openwire_port = self.openwire.then(free_port);
        let openwire = match self.openwire_port {
            Some(p) => format!("openwire = \"127.0.0.1:{p}\"\n"),
            None => String::new(),
        };
        let config = format!(
            "[broker]\nname = \"{}\"\ndata_dir = \"{}\"\n[transports]\nstomp = \"127.0.0.1:{port}\"\n{openwire}[store]\n{}",
            self.name,
            self.mount.join("data").display(),
            self.store
        );
        self.broker = Some(Proc::start(&self.name, self.dir.path(), port, &config));
    }

    fn broker(&self) -> &Proc {
        self.broker.as_ref().expect("a running broker")
    }

    fn log_tail(&self) -> String {
        let log = self.broker().log.lock().unwrap();
        log[log.len().saturating_sub(20)..].join("\n")
    }

    /// Starts the broker on what the disk holds and waits until it accepts: the store must
    /// always restart.
    pub fn start(&mut self) {
        self.spawn();
        let started = Instant::now();
        let up = self.broker().wait_accepting(START_TIMEOUT).is_some();
        assert!(
            up,
            "[{}] the broker did not restart on the store after a power cut:\n{}",
            self.name,
            self.log_tail()
        );
        if let Some(port) = self.openwire_port {
            // The OpenWire listener may bind a moment after the STOMP one: a load started in
            // between found nothing to connect to (seen once in CI: 0 responses in 60 s).
            let until = Instant::now() + START_TIMEOUT;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < until,
                    "[{}] the broker never listened for OpenWire:\n{}",
                    self.name,
                    self.log_tail()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        eprintln!(
            "[{}] broker up in {} ms",
            self.name,
            started.elapsed().as_millis()
        );
    }

    /// The first start on an empty filesystem. Nothing is synced on the broker's behalf: the
    /// stores must make their own new directories durable (a cut here once lost the whole
    /// store, because `data_dir` and the store's directory were created without an fsync of
    /// their parents).
    pub fn start_first(&mut self) {
        self.start();
        eprintln!("[{}] first start: {:?}", self.name, self.fs.usage());
    }

    pub fn addr(&self) -> String {
        self.broker().addr()
    }

    /// The OpenWire address of the running broker (with `openwire` set).
    pub fn openwire_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.openwire_port.expect("the rig serves OpenWire")
        )
    }

    /// kill -9 of the broker, then the loss of what `mode` says.
    pub fn cut(&mut self, mode: LossMode, ledger: &SharedLedger) -> CutReport {
        let mut broker = self.broker.take().expect("a running broker");
        broker.kill9();
        drop(broker);
        let before = self.fs.usage();
        let report = self
            .fs
            .cut_power(mode)
            .unwrap_or_else(|e| panic!("cutting the power: {e}"));
        let receipted = ledger.lock().unwrap().receipted.len();
        eprintln!(
            "[{}] cut {mode:?} after {receipted} receipts: store {} files {} KiB ({} KiB durable), \
             {} pages unsynced ({} lost, {} torn), {} dirs unsynced ({} lost); {} KiB after",
            self.name,
            before.files,
            before.bytes / 1024,
            before.bytes_durable / 1024,
            report.pages_unsynced,
            report.pages_lost,
            report.pages_torn,
            report.dirs_unsynced,
            report.dirs_lost,
            report.bytes_after / 1024,
        );
        self.cuts.push(report.clone());
        report
    }

    /// Cuts the power right after a write of the store, before its sync: the filesystem
    /// turns the power off at the first write that leaves `pages_min` pages unsynced (every
    /// later change fails), then the broker is killed and the unsynced layer lost per `mode`.
    pub fn cut_while_writing(
        &mut self,
        mode: LossMode,
        pages_min: u64,
        ledger: &SharedLedger,
    ) -> CutReport {
        self.fs.arm_freeze(pages_min);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.fs.is_frozen() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!(
            "[{}] power off at a write leaving {pages_min} pages unsynced: {}",
            self.name,
            self.fs.is_frozen()
        );
        assert!(self.fs.is_frozen(), "the store stopped writing under load");
        self.cut(mode, ledger)
    }

    /// Starts the broker and cuts the power at its first write (while it recovers), or as
    /// soon as it accepts clients if recovery wrote nothing.
    pub fn start_and_cut_during_recovery(&mut self, mode: LossMode) {
        self.fs.arm_freeze(1);
        self.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.fs.is_frozen() && !self.broker().accepts() {
            let exited = self.broker.as_mut().is_some_and(|b| b.exited());
            assert!(
                !exited && Instant::now() < deadline,
                "[{}] the broker did not restart on the store after a power cut:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let during_recovery = self.fs.is_frozen();
        self.cut(mode, &Ledger::shared());
        eprintln!(
            "[{}] that cut hit the broker at its first write while it recovered: {during_recovery}",
            self.name
        );
    }

    /// SIGTERM (a clean shutdown) and a start.
    pub fn restart_cleanly(&mut self) {
        let mut b = self.broker.take().expect("a running broker");
        assert!(b.terminate(), "clean shutdown exits 0");
        drop(b);
        self.start();
    }

    /// Drains the queue (acking everything) and judges it against the ledger.
    pub async fn drain_and_check(&self, ledger: &SharedLedger) -> Verdict {
        let got = drain(&self.addr()).await;
        let verdict = ledger.lock().unwrap().check(&got);
        let usage = self.fs.usage();
        eprintln!(
            "[{}] after recovery: {} files, {} KiB",
            self.name,
            usage.files,
            usage.bytes / 1024
        );
        verdict
    }

    pub fn stop(mut self) {
        if let Some(mut b) = self.broker.take() {
            assert!(b.terminate(), "clean shutdown exits 0");
        }
    }
}

/// Producers sending receipted persistent messages and consumers acking (with receipts) most
/// of what they get, until the broker dies or [`Load::stop_and_join`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    receipted_at_start: usize,
}

impl Load {
    pub fn start(addr: &str, ledger: &SharedLedger, round: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let (addr, ledger, stop) = (addr.to_owned(), ledger.clone(), stop.clone());
            tasks.push(tokio::spawn(produce(addr, ledger, stop, round, p)));
        }
        for _ in 0..CONSUMERS {
            let (addr, ledger, stop) = (addr.to_owned(), ledger.clone(), stop.clone());
            tasks.push(tokio::spawn(consume(addr, ledger, stop)));
        }
        Load {
            stop,
            tasks,
            receipted_at_start: ledger.lock().unwrap().receipted.len(),
        }
    }

    /// Waits (bounded) until this round has `n` more receipts; the load must get going.
    pub async fn wait_receipts(&self, ledger: &SharedLedger, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = 0;
        while Instant::now() < deadline {
            got = ledger.lock().unwrap().receipted.len() - self.receipted_at_start;
            if got >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(got >= n / 8, "the load never got going: {got} receipts");
    }

    /// Waits for every client task (after a kill they fail on their own).
    pub async fn join(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a client task did not end after the broker died")
                .unwrap();
        }
    }

    pub async fn stop_and_join(self) {
        self.join().await;
    }
}

/// Sends `r<round>-p<p>-<i>` with receipts, `SEND_WINDOW` of them in flight, so the store's
/// writer always has a batch going (and unsynced pages exist when the power goes).
async fn produce(
    addr: String,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
    round: usize,
    p: usize,
) {
    let Ok(c) = Client::connect(&addr, ClientConfig::default()).await else {
        return;
    };
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = format!("r{round}-p{p}-{i}");
        ledger.lock().unwrap().sent.insert(body.clone());
        match c
            .send_receipt_handle(QUEUE, body.clone(), &[("persistent", "true")])
            .await
        {
            Ok(h) => in_flight.push_back((body, h)),
            Err(_) => return,
        }
        while in_flight.len() >= SEND_WINDOW
            || (stop.load(Ordering::Relaxed) && !in_flight.is_empty())
        {
            let Some((body, h)) = in_flight.pop_front() else {
                break;
            };
            match h.wait().await {
                Ok(()) => {
                    ledger.lock().unwrap().receipted.insert(body);
                }
                Err(_) => return,
            }
        }
    }
    let _ = c.disconnect().await;
}

async fn consume(addr: String, ledger: SharedLedger, stop: Arc<AtomicBool>) {
    let Ok(c) = Client::connect(&addr, ClientConfig::default()).await else {
        return;
    };
    let Ok(mut sub) = c.subscribe(QUEUE, AckMode::ClientIndividual, &[]).await else {
        return;
    };
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && !c.is_closed() {
        let Some(m) = sub.next_timeout(Duration::from_millis(50)).await else {
            continue;
        };
        n += 1;
        let body = String::from_utf8_lossy(m.body()).into_owned();
        ledger.lock().unwrap().delivered += 1;
        // A slower consumer than the producers: a backlog builds up, whose receipted
        // messages must all survive.
        tokio::time::sleep(CONSUME_PAUSE).await;
        if n.is_multiple_of(UNACKED_EVERY) {
            continue;
        }
        let Some(ack_id) = m.ack_id() else { continue };
        let mut frame = Frame::new(Command::Ack);
        frame.push_header("id", ack_id);
        ledger.lock().unwrap().ack_sent.insert(body.clone());
        if n.is_multiple_of(NO_RECEIPT_EVERY) {
            ledger.lock().unwrap().acks_without_receipt += 1;
            if c.send_frame(frame).await.is_err() {
                return;
            }
            continue;
        }
        // Not awaited here: acks stay in flight while the load goes on.
        let (c, ledger) = (c.clone(), ledger.clone());
        tokio::spawn(async move {
            if c.request(frame).await.is_ok() {
                ledger.lock().unwrap().ack_receipted.insert(body);
            }
        });
    }
}
