//! Deterministic simulation of the replication protocol (`ferromq_ha_zk::proto`), in the
//! FoundationDB / TigerBeetle VOPR style: every run is a seed; members, ZooKeeper, network and
//! disks are simulated; invariants are checked after every step; a failure prints its seed and
//! the end of its trace.
//!
//! CI runs a fixed budget. A soak run:
//! `FERROMQ_SIM_SEEDS=2000 FERROMQ_SIM_STEPS=200000 cargo test -p ferromq-ha-zk --test sim soak -- --nocapture`
//! (`FERROMQ_SIM_SEED_BASE` moves the seed range).

#[path = "sim/world.rs"]
mod world;

use std::time::Instant;

use ferromq_ha_zk::proto::Faults;
use world::{Params, Violation, World};

/// Runs one seed; on failure, runs it again with the trace on and returns the report.
fn run(seed: u64, p: &Params) -> Result<(u64, [u64; 6]), String> {
    let mut w = World::new(seed, p.clone(), false);
    match w.run() {
        Ok(()) => Ok((w.steps, w.stats())),
        Err(v) => Err(report(seed, p, &v)),
    }
}

fn report(seed: u64, p: &Params, v: &Violation) -> String {
    let mut w = World::new(seed, p.clone(), true);
    let again = w.run().err();
    let mut s = format!(
        "seed {seed} ({} members): {} at step {} ({} ms)\n",
        p.members, v.what, v.step, v.time_ms
    );
    if again.as_ref() != Some(v) {
        s.push_str(&format!("NOT REPRODUCED with trace: {again:?}\n"));
    }
    for l in w.trace_lines().iter().rev().take(40).rev() {
        s.push_str(l);
        s.push('\n');
    }
    s
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

/// Runs `seeds` seeds and fails with the first violation's report.
fn sweep(base: u64, seeds: u64, p: &Params) -> u64 {
    let t = Instant::now();
    let mut steps = 0;
    let mut total = [0u64; 6];
    for seed in base..base + seeds {
        match run(seed, p) {
            Ok((n, st)) => {
                steps += n;
                for (t, s) in total.iter_mut().zip(st) {
                    *t += s;
                }
            }
            Err(r) => panic!("{r}"),
        }
    }
    eprintln!(
        "totals: confirmed writes {}, confirmed lsn {}, epochs {}, crashes {}, full copies {}, truncations {}",
        total[0], total[1], total[2], total[3], total[4], total[5]
    );
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} members: {seeds} seeds, {steps} steps in {secs:.1} s = {:.0} steps/s",
        p.members,
        steps as f64 / secs
    );
    steps
}

#[test]
fn three_members_keep_every_confirmed_write_under_faults() {
    let steps = sweep(1, 60, &Params::new(3, 20_000));
    assert!(steps >= 60 * 20_000);
}

#[test]
fn five_members_keep_every_confirmed_write_under_faults() {
    let steps = sweep(1_000, 40, &Params::new(5, 20_000));
    assert!(steps >= 40 * 20_000);
}

/// A long run: `FERROMQ_SIM_SEEDS` seeds of `FERROMQ_SIM_STEPS` steps (defaults: a short run).
#[test]
fn soak() {
    let seeds = env_u64("FERROMQ_SIM_SEEDS").unwrap_or(4);
    let steps = env_u64("FERROMQ_SIM_STEPS").unwrap_or(20_000);
    let base = env_u64("FERROMQ_SIM_SEED_BASE").unwrap_or(1_000_000);
    for members in [3, 5] {
        sweep(base, seeds, &Params::new(members, steps));
    }
}

/// Searches seeds for one that makes `faults` fail (a development aid for the regression
/// seeds below): `FERROMQ_SIM_HUNT=stale_acks cargo test --test sim hunt -- --nocapture`.
#[test]
fn hunt() {
    let Ok(which) = std::env::var("FERROMQ_SIM_HUNT") else {
        return;
    };
    let (p, _) = knob(&which);
    let seeds = env_u64("FERROMQ_SIM_SEEDS").unwrap_or(200);
    for seed in 1..=seeds {
        let mut w = World::new(seed, p.clone(), false);
        if let Err(v) = w.run() {
            eprintln!("{which}: seed {seed}: {} (step {})", v.what, v.step);
        }
    }
}

/// The parameters a regression seed runs with, and the knob that re-introduces the finding.
fn knob(which: &str) -> (Params, Faults) {
    let mut p = Params::new(3, 20_000);
    let mut f = Faults::default();
    match which {
        "stale_acks" => f.stale_acks = true,
        "elect_outside_isr" => f.elect_outside_isr = true,
        "wipe_before_copy" => {
            f.wipe_before_copy = true;
            p.tail_entries_max = 8;
        }
        "absolute_lag" => {
            f.absolute_lag_entries = Some(50);
        }
        other => panic!("unknown knob {other}"),
    }
    p.faults = f;
    (p, f)
}

/// With the knob on the seed must fail with `expect` in its message; with it off the same seed
/// must pass.
fn regression(which: &str, seed: u64, expect: &str) {
    let (p, _) = knob(which);
    let mut w = World::new(seed, p.clone(), false);
    let v = w
        .run()
        .expect_err("the old behaviour must be caught by this seed");
    assert!(
        v.what.contains(expect),
        "seed {seed} with {which}: expected {expect:?}, found {:?}",
        v.what
    );
    let mut fixed = p;
    fixed.faults = Faults::default();
    if let Err(r) = run(seed, &fixed) {
        panic!("seed {seed} without {which} must pass:\n{r}");
    }
}
