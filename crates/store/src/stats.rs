//! Group-commit statistics: how many batches each sync made durable, how long the sync took,
//! and how long a batch waited from submission to its confirmation.
//!
//! A store's writer thread records into [`CommitStats`]; the admin endpoint reads a
//! [`CommitStatsSnapshot`] when `/metrics` is scraped. Recording is two relaxed atomic adds per
//! value and never allocates or locks, so it can sit on the group-commit path. Buckets are fixed
//! powers of two (bucket `i` counts values `v` with `2^(i-1) < v <= 2^i`, bucket 0 counts
//! `v <= 1`): a factor of two is coarse, but enough to see whether a sync takes 50 µs or 5 ms
//! and whether groups hold 1 batch or 100, and it costs one `leading_zeros` per value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets of a [`Histogram`]: one per power of two from 2^0 to 2^64.
pub const HISTOGRAM_BUCKETS: usize = 65;

/// A lock-free histogram of `u64` values in log2 buckets.
#[derive(Debug)]
pub struct Histogram {
    /// Values recorded in each bucket (not cumulative).
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    /// Sum of the values recorded (wraps after 2^64, which at nanoseconds is 584 years).
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; HISTOGRAM_BUCKETS],
            sum: AtomicU64::new(0),
        }
    }

    /// The bucket `value` falls in: the smallest `i` with `value <= 2^i`.
    pub fn bucket_of(value: u64) -> usize {
        if value <= 1 {
            0
        } else {
            (u64::BITS - (value - 1).leading_zeros()) as usize
        }
    }

    /// The inclusive upper bound of bucket `i` (`u64::MAX` for the last, which stands for
    /// 2^64).
    pub fn bucket_upper(i: usize) -> u64 {
        debug_assert!(i < HISTOGRAM_BUCKETS);
        1u64.checked_shl(i as u32).unwrap_or(u64::MAX)
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        self.buckets[Histogram::bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration in nanoseconds (saturating at 2^64 - 1 ns).
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The counts now. Buckets are read one by one while writers may be adding: the snapshot
    /// is consistent with itself (its count is the sum of its buckets) but may miss values
    /// recorded during the read, and its sum may include one whose bucket it missed.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = [0u64; HISTOGRAM_BUCKETS];
        for (out, b) in buckets.iter_mut().zip(&self.buckets) {
            *out = b.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Values in each bucket (not cumulative); see [`Histogram::bucket_upper`].
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    /// Sum of the values.
    pub sum: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: [0; HISTOGRAM_BUCKETS],
            sum: 0,
        }
    }
}

impl HistogramSnapshot {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Values `<= 2^i`, for each bucket `i` (Prometheus' cumulative `le` buckets).
    pub fn cumulative(&self) -> [u64; HISTOGRAM_BUCKETS] {
        let mut out = [0u64; HISTOGRAM_BUCKETS];
        let mut total = 0u64;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            total += b;
            *o = total;
        }
        out
    }
}

/// The group-commit statistics a store's writer keeps.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Batches made durable by one sync (a send, a receipted ack or a transaction is one
    /// batch; so is one replicated entry).
    pub group_batches: Histogram,
    /// Messages made durable by one sync: the enqueue operations of those batches (one per
    /// message sent, so a transaction of 50 sends counts 50 here and 1 in `group_batches`;
    /// acks and subscription changes count 0). Recorded for the same syncs as `group_batches`.
    pub group_messages: Histogram,
    /// Duration of one sync in nanoseconds: the `fdatasync` (with io_uring, the linked write
    /// and `fdatasync`), or the SQL store's whole group transaction up to its commit.
    pub sync_ns: Histogram,
    /// Nanoseconds from a batch's submission to its confirmation, for batches confirmed by a
    /// synced group (what a producer waiting for a receipt waits on the store).
    pub commit_wait_ns: Histogram,
}

impl CommitStats {
    /// The counts now.
    pub fn snapshot(&self) -> CommitStatsSnapshot {
        CommitStatsSnapshot {
            group_batches: self.group_batches.snapshot(),
            group_messages: self.group_messages.snapshot(),
            sync_ns: self.sync_ns.snapshot(),
            commit_wait_ns: self.commit_wait_ns.snapshot(),
        }
    }

    /// Records the wait of a batch submitted at `since` and confirmed at `now`.
    pub fn record_wait(&self, since: Instant, now: Instant) {
        self.commit_wait_ns
            .record_duration(now.saturating_duration_since(since));
    }
}

/// [`CommitStats`] at one moment; what [`crate::MessageStore::commit_stats`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStatsSnapshot {
    /// See [`CommitStats::group_batches`].
    pub group_batches: HistogramSnapshot,
    /// See [`CommitStats::group_messages`].
    pub group_messages: HistogramSnapshot,
    /// See [`CommitStats::sync_ns`].
    pub sync_ns: HistogramSnapshot,
    /// See [`CommitStats::commit_wait_ns`].
    pub commit_wait_ns: HistogramSnapshot,
}

/// The messages a batch stores: its enqueue operations (see [`CommitStats::group_messages`]).
pub(crate) fn enqueued_messages(ops: &[crate::Op]) -> u64 {
    ops.iter()
        .filter(|op| matches!(op, crate::Op::Enqueue { .. }))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enqueues_count_as_messages() {
        use crate::Op;
        let ops = vec![
            Op::Enqueue {
                list: "queue://a".into(),
                seq: 1,
                payload: vec![1u8].into(),
            },
            Op::Dequeue {
                list: "queue://a".into(),
                seq: 0,
            },
            Op::Enqueue {
                list: "queue://b".into(),
                seq: 2,
                payload: bytes::Bytes::new(),
            },
            Op::Purge {
                list: "queue://c".into(),
            },
        ];
        assert_eq!(enqueued_messages(&ops), 2);
        assert_eq!(enqueued_messages(&[]), 0);
    }

    #[test]
    fn values_fall_in_the_smallest_power_of_two_at_or_above_them() {
        for (v, bucket) in [
            (0u64, 0usize),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1024, 10),
            (1025, 11),
            (1 << 63, 63),
            ((1 << 63) + 1, 64),
            (u64::MAX, 64),
        ] {
            assert_eq!(Histogram::bucket_of(v), bucket, "value {v}");
            assert!(v <= Histogram::bucket_upper(bucket), "value {v}");
            if bucket > 0 {
                assert!(v > Histogram::bucket_upper(bucket - 1), "value {v}");
            }
        }
        assert_eq!(Histogram::bucket_upper(64), u64::MAX);
    }

    #[test]
    fn a_snapshot_counts_sums_and_accumulates() {
        let h = Histogram::new();
        for v in [1u64, 2, 3, 4, 100] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum, 110);
        let c = s.cumulative();
        assert_eq!(c[0], 1, "le 1");
        assert_eq!(c[1], 2, "le 2");
        assert_eq!(c[2], 4, "le 4");
        assert_eq!(c[6], 4, "le 64");
        assert_eq!(c[7], 5, "le 128");
        assert_eq!(c[HISTOGRAM_BUCKETS - 1], 5);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(i * (t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 40_000);
        let sum: u64 = (1..=4u64).map(|t| t * (0..10_000u64).sum::<u64>()).sum();
        assert_eq!(s.sum, sum);
    }
}
