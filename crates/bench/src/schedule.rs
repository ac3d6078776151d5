//! The open-loop send schedule.
//!
//! At a fixed rate every message has a *scheduled* send time, computed from its index alone
//! (no accumulated drift). A producer that falls behind — because the broker is slow or its
//! receipt window is full — sends the overdue messages back to back and never skips one, and
//! latency is measured from the scheduled time. That is the coordinated-omission correction:
//! a stall shows up in the latency of every message that should have been sent during it,
//! not only in the one message that waited.
//!
//! Pure: the caller passes the current time in nanoseconds since the run's start, so tests
//! use a simulated clock.

/// One producer's schedule: message `k` is due at `start_ns + (k + phase) / rate`.
#[derive(Debug, Clone)]
pub struct OpenLoopSchedule {
    start_ns: u64,
    end_ns: u64,
    rate_per_s: f64,
    phase: f64,
    next: u64,
}

impl OpenLoopSchedule {
    /// A schedule of `rate_per_s` messages per second from `start_ns` until (excluding)
    /// `end_ns`. `phase` in [0, 1) shifts the ticks by a fraction of one interval, so that N
    /// producers sharing a total rate interleave instead of sending in bursts.
    pub fn new(start_ns: u64, end_ns: u64, rate_per_s: f64, phase: f64) -> Self {
        assert!(
            rate_per_s.is_finite() && rate_per_s > 0.0,
            "rate must be positive"
        );
        assert!((0.0..1.0).contains(&phase), "phase must be in [0, 1)");
        OpenLoopSchedule {
            start_ns,
            end_ns,
            rate_per_s,
            phase,
            next: 0,
        }
    }

    /// The per-producer schedules that share `total_rate_per_s` among `producers`.
    pub fn split(start_ns: u64, end_ns: u64, total_rate_per_s: f64, producers: u32) -> Vec<Self> {
        let n = f64::from(producers.max(1));
        (0..producers)
            .map(|i| Self::new(start_ns, end_ns, total_rate_per_s / n, f64::from(i) / n))
            .collect()
    }

    /// The scheduled time of message `k`.
    pub fn due_ns(&self, k: u64) -> u64 {
        // f64 is exact to 2^53 ns (104 days), far beyond the longest allowed run.
        let offset = (k as f64 + self.phase) * 1e9 / self.rate_per_s;
        self.start_ns.saturating_add(offset as u64)
    }

    /// The scheduled time of the next message, or `None` once the schedule has ended.
    pub fn peek(&self) -> Option<u64> {
        let due = self.due_ns(self.next);
        (due < self.end_ns).then_some(due)
    }

    /// Takes the next message if it is due at `now_ns`: returns its scheduled time. Returns
    /// `None` if it is not due yet or the schedule has ended.
    pub fn take_due(&mut self, now_ns: u64) -> Option<u64> {
        let due = self.peek()?;
        if due > now_ns {
            return None;
        }
        self.next += 1;
        Some(due)
    }

    /// Messages taken so far.
    pub fn taken(&self) -> u64 {
        self.next
    }

    /// Messages scheduled in total, taken or not.
    pub fn total(&self) -> u64 {
        if self.end_ns <= self.start_ns {
            return 0;
        }
        // Message k is in the schedule when (k + phase) / rate < span, i.e. k < span * rate - phase.
        let span_s = (self.end_ns - self.start_ns) as f64 / 1e9;
        let mut n = (span_s * self.rate_per_s - self.phase).ceil().max(0.0) as u64;
        // Correct the float estimate at the boundary against `due_ns` itself.
        while n > 0 && self.due_ns(n - 1) >= self.end_ns {
            n -= 1;
        }
        while self.due_ns(n) < self.end_ns {
            n += 1;
        }
        n
    }

    /// Messages scheduled but not taken yet.
    pub fn remaining(&self) -> u64 {
        self.total().saturating_sub(self.next)
    }
}
