//! Replicated mode at load: three `ferromq serve` processes on the ZooKeeper ensemble, 16
//! producers sending receipted persistent messages at full speed through failover clients
//! (a window of receipts outstanding each) and consumers recording every MESSAGE frame off
//! the wire; kill -9 of the master in rounds, and rounds where a killed slave returns under
//! the load and must carry the quorum. The history checker judges the run at the wire level:
//! no receipted message lost, no broker-level duplicate, nothing unknown.
//!
//! The same driver is the soak job: `scripts/soak-replicated.sh` runs this test in a release
//! build with its parameters in `FERROMQ_SOAK_*` variables (see [`Params::from_env`] and
//! docs/testing.md, "Replicated soak"). Without them it runs the short CI version.
#![cfg(feature = "zk")]

mod ha_replicated_support;
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_replicated_support::*;

#[test]
fn the_wire_level_checker_reports_broker_duplicates_a_client_audit_hides() {
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str, lines: &[&str]| {
        let p = d.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    // m1 acked (receipted) on c0.1; after a failover the new master delivers it again. The
    // consumer's failover audit would drop that redelivery: the application never sees it.
    let resurrected = [
        "1 send p0-1",
        "2 confirm p0-1",
        "3 deliver p0-1 ID:m1 c0.1",
        "4 acked ID:m1 c0.1",
        "5 deliver p0-1 ID:m1 c0.2",
    ];
    let mut audit = ferromq_client::failover::audit::AckAudit::new(2048);
    let mut seen_by_app = 0;
    for l in &resurrected {
        let f: Vec<&str> = l.split(' ').collect();
        match f[1] {
            "deliver" if !audit.contains(f[3]) => seen_by_app += 1,
            "acked" => audit.record(f[2]),
            _ => {}
        }
    }
    assert_eq!(seen_by_app, 1, "the audit hides the redelivery");
    let err = check_wire_history(&write("resurrected", &resurrected)).unwrap_err();
    assert!(
        err[0].contains("after the broker confirmed their ACK"),
        "{err:?}"
    );

    // One producer message kept twice (a resend stored as a new message).
    let stored_twice = write(
        "stored-twice",
        &[
            "1 send p0-1",
            "2 confirm p0-1",
            "3 deliver p0-1 ID:m1 c0.1",
            "4 deliver p0-1 ID:m2 c0.2",
        ],
    );
    let err = check_wire_history(&stored_twice).unwrap_err();
    assert!(err[0].contains("stored twice"), "{err:?}");

    // The same delivery twice on one connection (no ACK involved).
    let one_conn = write(
        "one-conn",
        &[
            "1 send p0-1",
            "2 deliver p0-1 ID:m1 c0.1",
            "3 deliver p0-1 ID:m1 c0.1",
        ],
    );
    let err = check_wire_history(&one_conn).unwrap_err();
    assert!(err[0].contains("twice on one connection"), "{err:?}");

    // Allowed: redelivered on a new connection when the ACK was never confirmed; a send
    // without a receipt that was delivered anyway, one that never was.
    let ok = write(
        "ok",
        &[
            "1 send p0-1",
            "2 confirm p0-1",
            "3 deliver p0-1 ID:m1 c0.1",
            "4 send p0-2",
            "5 deliver p0-1 ID:m1 c1.1",
            "6 acked ID:m1 c1.1",
            "7 deliver p0-2 ID:m2 c1.1",
            "8 send p0-3",
        ],
    );
    let v = check_wire_history(&ok).unwrap();
    assert_eq!(
        v,
        WireVerdict {
            verdict: Verdict {
                sent: 3,
                confirmed: 1,
                delivered: 2,
                unconfirmed_delivered: 1,
                unconfirmed_lost: 1,
            },
            frames: 3,
            redelivered: 1,
            acks_confirmed: 1,
        }
    );
    let lost = write("lost", &["1 send p0-1", "2 confirm p0-1"]);
    assert!(check_wire_history(&lost).unwrap_err()[0].contains("never delivered"));
    let unknown = write("unknown", &["1 deliver zz ID:m9 c0.1"]);
    assert!(check_wire_history(&unknown).unwrap_err()[0].contains("never sent"));
}

/// The run's parameters. CI uses [`Params::ci`]; `FERROMQ_SOAK_*` variables override each.
#[derive(Debug, Clone)]
struct Params {
    producers: usize,
    window: usize,
    consumers: usize,
    /// Consume during the rounds (else only in the drain: the store grows with the log).
    consume_during: bool,
    msg_bytes: usize,
    /// Confirmed writes (sends + ACKs, one log entry each at least) before the first kill.
    lsn_target: u64,
    /// kill -9 rounds of the master.
    rounds: usize,
    /// After every this many master rounds, a slave round (0: none).
    slave_every: usize,
    /// Receipts between two rounds (±50 %, drawn from the seed).
    round_confirms: usize,
    /// Bound of the whole run: no round starts after it (the run then drains and checks).
    max_secs: u64,
    /// Any single wait (a master, a receipt, a catch-up).
    wait_secs: u64,
    seed: u64,
    /// Where the brokers' data dirs go (deleted afterwards); a temp dir by default.
    dir: Option<PathBuf>,
    /// Copy the history here at the end.
    keep_history: Option<PathBuf>,
}

impl Params {
    fn ci() -> Params {
        Params {
            producers: 16,
            window: 16,
            consumers: 2,
            consume_during: true,
            msg_bytes: 1024,
            lsn_target: 30_000,
            rounds: 3,
            slave_every: 2,
            round_confirms: 3_000,
            max_secs: 150,
            wait_secs: 60,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
            dir: None,
            keep_history: None,
        }
    }

    fn from_env() -> Params {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
                Err(_) => default,
            }
        }
        let d = Params::ci();
        Params {
            producers: var("FERROMQ_SOAK_PRODUCERS", d.producers),
            window: var("FERROMQ_SOAK_WINDOW", d.window),
            consumers: var("FERROMQ_SOAK_CONSUMERS", d.consumers),
            consume_during: var("FERROMQ_SOAK_CONSUME_DURING", d.consume_during),
            msg_bytes: var("FERROMQ_SOAK_MSG_BYTES", d.msg_bytes),
            lsn_target: var("FERROMQ_SOAK_LSN", d.lsn_target),
            rounds: var("FERROMQ_SOAK_ROUNDS", d.rounds),
            slave_every: var("FERROMQ_SOAK_SLAVE_EVERY", d.slave_every),
            round_confirms: var("FERROMQ_SOAK_ROUND_CONFIRMS", d.round_confirms),
            max_secs: var("FERROMQ_SOAK_MAX_SECS", d.max_secs),
            wait_secs: var("FERROMQ_SOAK_WAIT_SECS", d.wait_secs),
            seed: var("FERROMQ_SOAK_SEED", d.seed),
            dir: std::env::var("FERROMQ_SOAK_DIR").ok().map(PathBuf::from),
            keep_history: std::env::var("FERROMQ_SOAK_HISTORY")
                .ok()
                .map(PathBuf::from),
        }
    }
}

/// SplitMix64: the run's choices (which slave, when to kill) from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` ± 50 %.
    fn around(&mut self, n: usize) -> usize {
        n / 2 + (self.next() % (n as u64 + 1)) as usize
    }
}

/// Disk use of a directory tree (allocated blocks).
fn du_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The `key=value` field of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let i = line.find(&format!("{key}="))? + key.len() + 1;
    line[i..].split_whitespace().next()
}

/// The lsn of an `epoch:lsn` position.
fn lsn_of(pos: &str) -> Option<u64> {
    pos.split(':').nth(1)?.parse().ok()
}

struct Run {
    p: Params,
    c: Cluster,
    gen: LoadGen,
    rng: Rng,
    started: Instant,
    /// Per round: what happened, for the figures.
    rounds: Vec<String>,
    promoted_lsns: Vec<u64>,
    store_peak: [u64; 3],
}

impl Run {
    fn wait(&self) -> Duration {
        Duration::from_secs(self.p.wait_secs)
    }

    /// Writes the brokers confirmed so far, a lower bound of the log's growth: every
    /// receipted SEND and ACK is one store batch at least.
    fn writes(&self) -> u64 {
        (self.gen.confirmed.load(Ordering::SeqCst) + self.gen.acks_confirmed.load(Ordering::SeqCst))
            as u64
    }

    async fn more_receipts(&self, n: usize, what: &str) {
        let now = self.gen.confirmed.load(Ordering::SeqCst);
        assert!(
            self.gen.wait_confirmed(now + n, self.wait()).await,
            "{what}: {n} more receipts did not come within {:?} ({now} so far)",
            self.wait()
        );
    }

    fn master(&self, except: &[usize]) -> (usize, Duration) {
        tokio::task::block_in_place(|| self.c.wait_master(except, self.wait()))
            .unwrap_or_else(|| panic!("no master within {:?} (except {except:?})", self.wait()))
    }

    fn note_store(&mut self) {
        for i in 0..3 {
            let b = du_bytes(&self.c.base.join(format!("b{i}")));
            self.store_peak[i] = self.store_peak[i].max(b);
        }
    }

    /// The tail of every running broker's log, for a failure's report.
    fn dump_logs(&self) {
        for p in self.c.procs.iter().flatten() {
            let log = p.log.lock().unwrap();
            eprintln!("---- {} (last 40 of {} lines) ----", p.name, log.len());
            for l in log.iter().skip(log.len().saturating_sub(40)) {
                eprintln!("{l}");
            }
        }
    }

    /// How many lines each running broker has logged so far.
    fn log_marks(&self) -> Vec<(usize, usize)> {
        (0..3)
            .filter_map(|i| {
                let p = self.c.procs[i].as_ref()?;
                Some((i, p.log.lock().unwrap().len()))
            })
            .collect()
    }

    /// Lines logged after `marks` by those brokers that contain all of `needles`.
    fn count_since(&self, marks: &[(usize, usize)], needles: &[&str]) -> usize {
        marks
            .iter()
            .filter_map(|(i, from)| Some((self.c.procs[*i].as_ref()?, *from)))
            .map(|(p, from)| {
                p.log
                    .lock()
                    .unwrap()
                    .iter()
                    .skip(from)
                    .filter(|l| needles.iter().all(|n| l.contains(n)))
                    .count()
            })
            .sum()
    }

    /// Restarts broker `i` and waits until a master has taken it as a slave and, if it
    /// needed a full copy, the copy is applied: then it can carry the quorum.
    async fn restart_and_sync(&mut self, i: usize) -> (Duration, bool) {
        let t = Instant::now();
        // Only what the others log from now on is about this incarnation of the member.
        let marks = self.log_marks();
        self.c.start(i);
        let deadline = Instant::now() + self.wait();
        let member = loop {
            let id = self
                .c
                .proc(i)
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("joined the replication group"))
                .and_then(|l| field(l, "member_id").map(str::to_string));
            if let Some(id) = id {
                break id;
            }
            assert!(Instant::now() < deadline, "b{i} never joined the group");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let copied = loop {
            if self.count_since(&marks, &["slave connected", &member]) > 0 {
                break self.count_since(&marks, &["needs a full copy", &member]) > 0;
            }
            if Instant::now() >= deadline {
                self.dump_logs();
                panic!("no master took b{i} ({member}) as a slave");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if copied {
            let w = self.wait();
            let ok =
                tokio::task::block_in_place(|| self.c.proc(i).wait_log("full copy consistent", w));
            if !ok {
                self.dump_logs();
                panic!("b{i}'s full copy was not applied within {w:?}");
            }
        }
        (t.elapsed(), copied)
    }

    async fn master_round(&mut self, round: usize) {
        let (m, _) = self.master(&[]);
        self.note_store();
        let writes = self.writes();
        let at_kill = self.gen.confirmed.load(Ordering::SeqCst);
        let t = Instant::now();
        self.c.kill9(m);
        let (next, to_accepting) = self.master(&[m]);
        let accepted = self.gen.confirmed.load(Ordering::SeqCst);
        assert!(
            self.gen.wait_confirmed(accepted + 1, self.wait()).await,
            "round {round}: the new master b{next} confirmed nothing within {:?}",
            self.wait()
        );
        let to_receipt = t.elapsed();
        let promoted = self
            .c
            .proc(next)
            .log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| l.contains("Promoted to master"))
            .and_then(|l| field(l, "position").map(str::to_string))
            .unwrap_or_default();
        if let Some(lsn) = lsn_of(&promoted) {
            self.promoted_lsns.push(lsn);
        }
        let (back, copied) = self.restart_and_sync(m).await;
        let line = format!(
            "round {round}: kill -9 master b{m} (confirmed {at_kill}, writes ≥ {writes}) -> b{next} at {promoted}; accepting {} ms, first receipt {} ms; b{m} back as slave in {} ms ({})",
            to_accepting.as_millis(),
            to_receipt.as_millis(),
            back.as_millis(),
            if copied { "full copy" } else { "streamed" }
        );
        eprintln!("{line}");
        self.rounds.push(line);
    }

    async fn slave_round(&mut self, round: usize) {
        let (m, _) = self.master(&[]);
        let slaves: Vec<usize> = (0..3).filter(|i| *i != m).collect();
        let first = slaves[(self.rng.next() % 2) as usize];
        let other = slaves.iter().copied().find(|i| *i != first).unwrap();
        self.note_store();
        self.c.kill9(first);
        // Master + one slave are a majority of three: writes go on.
        let n = self.rng.around(self.p.round_confirms / 2).max(1);
        self.more_receipts(n, &format!("round {round}: b{first} killed"))
            .await;
        let (back, copied) = self.restart_and_sync(first).await;
        // The other slave goes: only the returned one can make up the quorum now.
        self.c.kill9(other);
        self.more_receipts(n, &format!("round {round}: b{other} killed, b{first} back"))
            .await;
        let (back2, copied2) = self.restart_and_sync(other).await;
        let (m_now, _) = self.master(&[]);
        let line = format!(
            "round {round}: slave b{first} killed and back in {} ms ({}), then carried the quorum with b{other} down; b{other} back in {} ms ({}); master b{m} -> b{m_now}",
            back.as_millis(),
            if copied { "full copy" } else { "streamed" },
            back2.as_millis(),
            if copied2 { "full copy" } else { "streamed" },
        );
        eprintln!("{line}");
        self.rounds.push(line);
    }
}

/// Kills every broker, starts each alone (it cannot be elected alone) and reads the durable
/// position it reports on joining.
fn final_positions(c: &mut Cluster, wait: Duration) -> Vec<String> {
    for i in 0..3 {
        c.kill9(i);
    }
    (0..3)
        .map(|i| {
            c.start(i);
            let ok = c.proc(i).wait_log("joined the replication group", wait);
            let pos = c
                .proc(i)
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("joined the replication group"))
                .and_then(|l| field(l, "position").map(str::to_string));
            c.kill9(i);
            assert!(ok, "b{i} did not restart");
            pos.unwrap_or_default()
        })
        .collect()
}

async fn run(p: Params) {
    eprintln!("replicated load run: {p:?}");
    let tmp = match &p.dir {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    };
    let mut c = Cluster::new(tmp.path(), &zk_ensemble(), "load", "");
    for i in 0..3 {
        c.start(i);
    }
    let t = Duration::from_secs(p.wait_secs);
    let (m0, _) = tokio::task::block_in_place(|| c.wait_master(&[], t)).expect("no master");
    for i in (0..3).filter(|i| *i != m0) {
        assert!(c.proc(i).wait_log("Slave started", t), "b{i} not a slave");
    }
    let history = Arc::new(History::create(&tmp.path().join("history.log")));
    let spec = LoadSpec {
        producers: p.producers,
        window: p.window,
        consumers: p.consumers,
        msg_bytes: p.msg_bytes,
        destination: "/queue/load".into(),
        max_per_producer: None,
        pace: Duration::ZERO,
        consume_during: p.consume_during,
    };
    let gen = LoadGen::start(&c.uri(), history.clone(), spec);
    let mut r = Run {
        rng: Rng(p.seed),
        p: p.clone(),
        c,
        gen,
        started: Instant::now(),
        rounds: Vec::new(),
        promoted_lsns: Vec::new(),
        store_peak: [0; 3],
    };
    // Warm-up: the log grows past the target before the first kill.
    let bound = Duration::from_secs(p.max_secs.max(p.wait_secs));
    let mut last = (Instant::now(), 0usize);
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while r.writes() < p.lsn_target {
        assert!(
            r.started.elapsed() < bound,
            "warm-up: {} of {} writes after {:?}",
            r.writes(),
            p.lsn_target,
            bound
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let conf = r.gen.confirmed.load(Ordering::SeqCst);
        if conf != last.1 {
            last = (Instant::now(), conf);
        }
        assert!(
            last.0.elapsed() < r.wait(),
            "warm-up: no receipt for {:?} ({conf} confirmed)",
            r.wait()
        );
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            eprintln!(
                "warm-up: {} writes confirmed ({conf} sends), {:?}",
                r.writes(),
                r.started.elapsed()
            );
        }
    }
    let warm = r.started.elapsed();
    eprintln!("warm-up: {} writes in {warm:?}", r.writes());
    let mut done = 0;
    let mut slave_rounds = 0;
    for round in 1..=p.rounds {
        if r.started.elapsed() >= Duration::from_secs(p.max_secs) {
            eprintln!("time bound ({} s) reached after {done} rounds", p.max_secs);
            break;
        }
        if round > 1 {
            let n = r.rng.around(p.round_confirms).max(1);
            r.more_receipts(n, &format!("before round {round}")).await;
        }
        r.master_round(round).await;
        done += 1;
        if p.slave_every > 0 && round.is_multiple_of(p.slave_every) {
            r.slave_round(round).await;
            slave_rounds += 1;
        }
    }
    let rounds_secs = r.started.elapsed();
    r.note_store();
    let drain_t = Instant::now();
    let Run {
        gen,
        mut c,
        rounds,
        promoted_lsns,
        store_peak,
        ..
    } = r;
    let send_errors = gen.send_errors.clone();
    let (sent, confirmed, failed, frames, acks, conns) = (
        gen.sent.clone(),
        gen.confirmed.clone(),
        gen.failed.clone(),
        gen.frames.clone(),
        gen.acks_confirmed.clone(),
        gen.connections.clone(),
    );
    gen.finish(
        true,
        Duration::from_secs(3),
        Duration::from_secs(p.wait_secs.max(600)),
    )
    .await;
    let drained = drain_t.elapsed();
    history.flush();
    let verdict = check_wire_history(history.path());
    if let Some(keep) = &p.keep_history {
        let _ = std::fs::copy(history.path(), keep);
    }
    c.assert_epochs_unique();
    let stores_now: Vec<String> = (0..3)
        .map(|i| mib(du_bytes(&c.base.join(format!("b{i}")))))
        .collect();
    let positions = tokio::task::block_in_place(|| final_positions(&mut c, t));
    let final_lsn = positions
        .iter()
        .filter_map(|p| lsn_of(p))
        .max()
        .unwrap_or(0);
    eprintln!("---- replicated load figures (seed {}) ----", p.seed);
    eprintln!(
        "params: {} producers × window {}, {} consumers ({}), {} B messages, log target {}, {} master rounds (+{} slave rounds) done",
        p.producers, p.window, p.consumers, if p.consume_during { "during the load" } else { "after the rounds" }, p.msg_bytes, p.lsn_target, done, slave_rounds
    );
    for l in &rounds {
        eprintln!("{l}");
    }
    eprintln!(
        "sent {}, receipts {}, failed sends {}, MESSAGE frames {}, ACK receipts {}, consumer connections {}",
        sent.load(Ordering::SeqCst),
        confirmed.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        frames.load(Ordering::SeqCst),
        acks.load(Ordering::SeqCst),
        conns.load(Ordering::SeqCst)
    );
    eprintln!("first send failures: {:?}", send_errors.lock().unwrap());
    eprintln!("log positions at promotion: {promoted_lsns:?}; final positions (epoch:lsn) per broker: {positions:?}");
    eprintln!(
        "store per broker: peak {:?}, after the drain {stores_now:?}",
        store_peak.iter().map(|b| mib(*b)).collect::<Vec<_>>()
    );
    eprintln!("time: warm-up {warm:?}, rounds until {rounds_secs:?}, drain {drained:?}");
    let v = verdict.unwrap_or_else(|v| {
        panic!(
            "seed {}: the history ({}) shows violations: {v:#?}",
            p.seed,
            history.path().display()
        )
    });
    eprintln!("verdict: {v:?}");
    assert!(done >= 1, "no round ran");
    assert!(v.verdict.confirmed > 0 && v.acks_confirmed > 0, "{v:?}");
    assert!(
        final_lsn >= p.lsn_target,
        "the log reached {final_lsn}, short of the target {}",
        p.lsn_target
    );
    // A kill -9 answers nothing, so the failover client must resend every send the dead master
    // did not confirm: none may fail (they did, when a receipt failed by the closing connection
    // was taken for a refusal).
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "the failover client gave up on sends: {:?}",
        send_errors.lock().unwrap()
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rounds_of_the_master_and_a_slave_return_under_16_full_speed_producers() {
    run(Params::from_env()).await;
}
