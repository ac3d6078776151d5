//! The open-loop scheduler on a simulated clock (no sleeps).

use ferromq_bench::schedule::OpenLoopSchedule;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

#[test]
fn messages_are_due_at_fixed_intervals_from_the_start() {
    let s = OpenLoopSchedule::new(5 * MS, S, 1000.0, 0.0);
    assert_eq!(s.due_ns(0), 5 * MS);
    assert_eq!(s.due_ns(1), 6 * MS);
    assert_eq!(s.due_ns(999), 1004 * MS);
    // No drift: the millionth tick is exactly where the rate says.
    assert_eq!(s.due_ns(1_000_000), 5 * MS + 1000 * S);
}

#[test]
fn nothing_is_taken_before_it_is_due() {
    let mut s = OpenLoopSchedule::new(0, S, 1000.0, 0.5);
    assert_eq!(s.peek(), Some(MS / 2));
    assert_eq!(s.take_due(MS / 2 - 1), None);
    assert_eq!(s.take_due(MS / 2), Some(MS / 2));
    assert_eq!(s.take_due(MS), None);
    assert_eq!(s.taken(), 1);
}

#[test]
fn a_stalled_producer_catches_up_with_the_scheduled_times_not_the_current_time() {
    // Coordinated-omission correction: after a 10 ms stall every overdue message is still
    // sent, and each keeps its own scheduled time, so the stall shows up in all of them.
    let mut s = OpenLoopSchedule::new(0, S, 1000.0, 0.0);
    let now = 10 * MS;
    let mut due = Vec::new();
    while let Some(t) = s.take_due(now) {
        due.push(t);
    }
    assert_eq!(due, (0..=10).map(|k| k * MS).collect::<Vec<_>>());
    let latencies_ms: Vec<u64> = due.iter().map(|t| (now - t) / MS).collect();
    assert_eq!(latencies_ms, (0..=10).rev().collect::<Vec<_>>());
}

#[test]
fn the_schedule_ends_before_the_end_time_and_counts_what_it_holds() {
    let mut s = OpenLoopSchedule::new(0, 10 * MS, 1000.0, 0.0);
    assert_eq!(s.total(), 10);
    let mut n = 0;
    while s.take_due(u64::MAX).is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(s.peek(), None);
    assert_eq!(s.remaining(), 0);
    let empty = OpenLoopSchedule::new(S, S, 1000.0, 0.0);
    assert_eq!(empty.total(), 0);
    assert_eq!(empty.peek(), None);
}

#[test]
fn producers_sharing_a_rate_interleave_and_sum_to_it() {
    let schedules = OpenLoopSchedule::split(0, S, 4000.0, 4);
    assert_eq!(schedules.len(), 4);
    let total: u64 = schedules.iter().map(OpenLoopSchedule::total).sum();
    assert_eq!(total, 4000);
    // Each producer runs at 1000/s; their first ticks are a quarter interval apart.
    let firsts: Vec<u64> = schedules.iter().map(|s| s.due_ns(0)).collect();
    assert_eq!(firsts, [0, 250_000, 500_000, 750_000]);
    let mut all: Vec<u64> = schedules
        .iter()
        .flat_map(|s| (0..4).map(move |k| s.due_ns(k)))
        .collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|w| w[1] - w[0] == 250_000), "{all:?}");
}

#[test]
fn fractional_rates_keep_their_average() {
    let s = OpenLoopSchedule::new(0, 10 * S, 0.5, 0.0);
    assert_eq!(s.total(), 5);
    assert_eq!(s.due_ns(1), 2 * S);
    let odd = OpenLoopSchedule::new(0, S, 3.0, 0.0);
    assert_eq!(odd.total(), 3);
}
