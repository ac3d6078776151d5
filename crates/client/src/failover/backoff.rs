//! The reconnect schedule: when to try again, in which broker order, and when to give up.
//!
//! A pure state machine that returns durations instead of sleeping, so it is tested with a
//! simulated clock. It follows ActiveMQ's `FailoverTransport.doReconnect`:
//!
//! - an *attempt* is one pass over the broker list;
//! - after a lost connection the first pass waits `initialReconnectDelay`;
//! - after each failed pass the failure count grows, the pass limit is checked
//!   (`startupMaxReconnectAttempts` before the first successful connect when it is not -1,
//!   `maxReconnectAttempts` otherwise; -1 is no limit, and a limit of 0 still allows one pass),
//!   and the next pass waits the current delay, which is then multiplied by
//!   `reconnectDelayExponent` up to `maxReconnectDelay`;
//! - a successful connect resets the delay and the failure count.

use std::time::Duration;

use super::uri::FailoverOptions;

/// What to do after a pass over the broker list failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Wait `delay`, then make another pass. `warn` is set every
    /// `warnAfterReconnectAttempts` failures, when ActiveMQ logs a warning.
    Retry {
        /// How long to wait before the next pass.
        delay: Duration,
        /// Whether this failure deserves a warning in the log.
        warn: bool,
    },
    /// The pass limit is reached: fail.
    GiveUp {
        /// Failed passes so far.
        attempts: u32,
    },
}

/// Reconnect back-off state for one failover connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_delay_ms: u64,
    max_delay_ms: u64,
    exponential: bool,
    multiplier: f64,
    max_attempts: i32,
    startup_max_attempts: i32,
    warn_after: i32,
    /// ActiveMQ's `reconnectDelay`: the next wait.
    delay_ms: u64,
    /// ActiveMQ's `connectFailures`: failed passes since the last successful connect.
    failures: u32,
    /// True until the first successful connect.
    first_connection: bool,
}

impl Backoff {
    /// A schedule for `options`, before the first connect.
    pub fn new(options: &FailoverOptions) -> Backoff {
        Backoff {
            initial_delay_ms: options.initial_reconnect_delay_ms,
            max_delay_ms: options.max_reconnect_delay_ms,
            exponential: options.use_exponential_back_off,
            multiplier: options.reconnect_delay_exponent,
            max_attempts: options.max_reconnect_attempts,
            startup_max_attempts: options.startup_max_reconnect_attempts,
            warn_after: options.warn_after_reconnect_attempts,
            delay_ms: options.initial_reconnect_delay_ms,
            failures: 0,
            first_connection: true,
        }
    }

    /// How long to wait before the first pass after an established connection was lost.
    pub fn on_connection_lost(&mut self) -> Duration {
        debug_assert!(!self.first_connection, "lost a connection never made");
        self.failures = 0;
        if self.initial_delay_ms == 0 {
            return Duration::ZERO;
        }
        self.take_delay()
    }

    /// Records a failed pass over every broker and says whether to try again.
    pub fn on_pass_failed(&mut self) -> AfterFailure {
        self.failures = self.failures.saturating_add(1);
        let limit = self.attempt_limit();
        if let Ok(limit) = u32::try_from(limit) {
            if self.failures >= limit {
                return AfterFailure::GiveUp {
                    attempts: self.failures,
                };
            }
        }
        let warn = u32::try_from(self.warn_after)
            .ok()
            .filter(|n| *n > 0)
            .is_some_and(|n| self.failures.checked_rem(n) == Some(0));
        AfterFailure::Retry {
            delay: self.take_delay(),
            warn,
        }
    }

    /// Records a successful connect: the delay and failure count start over.
    pub fn on_connected(&mut self) {
        self.first_connection = false;
        self.failures = 0;
        self.delay_ms = self.initial_delay_ms;
    }

    /// Failed passes since the last successful connect.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The pass limit in force now; -1 is none.
    fn attempt_limit(&self) -> i32 {
        if self.first_connection && self.startup_max_attempts != -1 {
            self.startup_max_attempts
        } else {
            self.max_attempts
        }
    }

    /// Returns the current delay and advances it (ActiveMQ's `doDelay`).
    fn take_delay(&mut self) -> Duration {
        let delay = Duration::from_millis(self.delay_ms);
        if self.exponential {
            // Like ActiveMQ's `long *= double`: truncated, and capped.
            let next = (self.delay_ms as f64 * self.multiplier).min(self.max_delay_ms as f64);
            self.delay_ms = next as u64;
        }
        delay
    }
}

/// The order in which one pass tries the brokers: the given order, shuffled when `randomize`,
/// with the broker whose connection last failed moved to the end (ActiveMQ's `getConnectList`).
pub fn connect_order(
    brokers: usize,
    randomize: bool,
    last_failed: Option<usize>,
    rng: &mut XorShift64,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..brokers).filter(|i| Some(*i) != last_failed).collect();
    if randomize {
        // Fisher-Yates.
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
    }
    if let Some(failed) = last_failed.filter(|f| *f < brokers) {
        order.push(failed);
    }
    order
}

/// A tiny xorshift64* generator: enough to shuffle brokers and mint producer ids without a
/// dependency, and seedable so tests are deterministic. Not for cryptography.
#[derive(Debug, Clone)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A generator from `seed` (0 is replaced, since xorshift would stay at 0 forever).
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64 {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// A generator seeded from the clock, the process id and an address.
    pub fn from_entropy() -> XorShift64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        let mut rng = XorShift64::new(nanos ^ (u64::from(std::process::id()) << 32) ^ addr);
        // Mix the low-entropy seed before use.
        for _ in 0..4 {
            rng.next_u64();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated clock: time moves only when the schedule says to wait.
    #[derive(Default)]
    struct SimClock {
        now_ms: u64,
    }

    impl SimClock {
        fn sleep(&mut self, d: Duration) {
            self.now_ms += d.as_millis() as u64;
        }
    }

    fn options(f: impl FnOnce(&mut FailoverOptions)) -> FailoverOptions {
        let mut o = FailoverOptions::default();
        f(&mut o);
        o
    }

    /// Runs "connection lost, then every pass fails" and returns the simulated times at which
    /// the passes start, and how the schedule ended (None if it was still retrying).
    fn passes_after_loss(
        backoff: &mut Backoff,
        passes_max: usize,
    ) -> (Vec<u64>, Option<AfterFailure>) {
        let mut clock = SimClock::default();
        clock.sleep(backoff.on_connection_lost());
        let mut starts = Vec::new();
        for _ in 0..passes_max {
            starts.push(clock.now_ms);
            match backoff.on_pass_failed() {
                AfterFailure::Retry { delay, .. } => clock.sleep(delay),
                give_up => return (starts, Some(give_up)),
            }
        }
        (starts, None)
    }

    fn connected(o: &FailoverOptions) -> Backoff {
        let mut b = Backoff::new(o);
        b.on_connected();
        b
    }

    #[test]
    fn default_schedule_doubles_from_10_ms_and_caps_at_max_reconnect_delay() {
        let mut b = connected(&FailoverOptions::default());
        let (starts, end) = passes_after_loss(&mut b, 16);
        assert_eq!(end, None, "-1 never gives up");
        // Waits of 10, 20, 40, ... 20480, then 30000 (capped) between pass starts.
        assert_eq!(
            &starts[..6],
            &[10, 30, 70, 150, 310, 630],
            "cumulative start times"
        );
        let waits: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            waits,
            [
                20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 20480, 30000, 30000, 30000,
                30000
            ]
        );
    }

    #[test]
    fn exponent_and_cap_come_from_the_options() {
        let o = options(|o| {
            o.initial_reconnect_delay_ms = 100;
            o.reconnect_delay_exponent = 1.5;
            o.max_reconnect_delay_ms = 400;
        });
        let (starts, _) = passes_after_loss(&mut connected(&o), 6);
        assert_eq!(starts, [100, 250, 475, 812, 1212, 1612]);
    }

    #[test]
    fn without_exponential_back_off_the_delay_stays_initial() {
        let o = options(|o| o.use_exponential_back_off = false);
        let (starts, _) = passes_after_loss(&mut connected(&o), 4);
        assert_eq!(starts, [10, 20, 30, 40]);
    }

    #[test]
    fn max_reconnect_attempts_limits_passes_after_a_loss() {
        let o = options(|o| o.max_reconnect_attempts = 3);
        let (starts, end) = passes_after_loss(&mut connected(&o), 100);
        assert_eq!(starts, [10, 30, 70]);
        assert_eq!(end, Some(AfterFailure::GiveUp { attempts: 3 }));

        // 0 means "no reconnect", which in ActiveMQ still makes one pass.
        let o = options(|o| o.max_reconnect_attempts = 0);
        let (starts, end) = passes_after_loss(&mut connected(&o), 100);
        assert_eq!(starts, [10]);
        assert_eq!(end, Some(AfterFailure::GiveUp { attempts: 1 }));
    }

    #[test]
    fn startup_limit_applies_before_the_first_connect_and_max_after() {
        let o = options(|o| {
            o.startup_max_reconnect_attempts = 2;
            o.max_reconnect_attempts = 4;
        });
        let mut b = Backoff::new(&o);
        // The first connect: first pass immediately, one retry, then give up.
        let mut clock = SimClock::default();
        let mut starts = vec![clock.now_ms];
        loop {
            match b.on_pass_failed() {
                AfterFailure::Retry { delay, .. } => {
                    clock.sleep(delay);
                    starts.push(clock.now_ms);
                }
                AfterFailure::GiveUp { attempts } => {
                    assert_eq!(attempts, 2);
                    break;
                }
            }
        }
        assert_eq!(starts, [0, 10]);
        // Once connected, maxReconnectAttempts rules and the delay starts over.
        b.on_connected();
        let (starts, end) = passes_after_loss(&mut b, 100);
        assert_eq!(starts, [10, 30, 70, 150]);
        assert_eq!(end, Some(AfterFailure::GiveUp { attempts: 4 }));
    }

    #[test]
    fn startup_limit_of_minus_one_falls_back_to_max_reconnect_attempts() {
        let o = options(|o| o.max_reconnect_attempts = 2);
        let mut b = Backoff::new(&o);
        assert!(matches!(b.on_pass_failed(), AfterFailure::Retry { .. }));
        assert_eq!(b.on_pass_failed(), AfterFailure::GiveUp { attempts: 2 });
    }

    #[test]
    fn a_successful_reconnect_resets_delay_and_failures() {
        let mut b = connected(&FailoverOptions::default());
        let (starts, _) = passes_after_loss(&mut b, 5);
        assert_eq!(starts.last(), Some(&310));
        assert_eq!(b.failures(), 5);
        b.on_connected();
        assert_eq!(b.failures(), 0);
        let (starts, _) = passes_after_loss(&mut b, 2);
        assert_eq!(starts, [10, 30]);
    }

    #[test]
    fn zero_initial_delay_reconnects_immediately() {
        let o = options(|o| o.initial_reconnect_delay_ms = 0);
        let (starts, _) = passes_after_loss(&mut connected(&o), 3);
        assert_eq!(starts, [0, 0, 0]);
    }

    #[test]
    fn a_warning_is_due_every_warn_after_reconnect_attempts_failures() {
        let o = options(|o| o.warn_after_reconnect_attempts = 3);
        let mut b = connected(&o);
        b.on_connection_lost();
        let warns: Vec<bool> = (0..7)
            .map(|_| match b.on_pass_failed() {
                AfterFailure::Retry { warn, .. } => warn,
                AfterFailure::GiveUp { .. } => panic!("gave up"),
            })
            .collect();
        assert_eq!(warns, [false, false, true, false, false, true, false]);
    }

    #[test]
    fn ordered_connect_list_puts_the_failed_broker_last() {
        let mut rng = XorShift64::new(1);
        assert_eq!(connect_order(3, false, None, &mut rng), [0, 1, 2]);
        assert_eq!(connect_order(3, false, Some(0), &mut rng), [1, 2, 0]);
        assert_eq!(connect_order(3, false, Some(1), &mut rng), [0, 2, 1]);
        assert_eq!(connect_order(1, false, Some(0), &mut rng), [0]);
    }

    #[test]
    fn randomized_connect_list_is_a_seeded_permutation_with_the_failed_broker_last() {
        let mut a = XorShift64::new(42);
        let mut b = XorShift64::new(42);
        let mut seen_first = [false; 4];
        for _ in 0..200 {
            let order = connect_order(5, true, Some(4), &mut a);
            assert_eq!(order, connect_order(5, true, Some(4), &mut b), "same seed");
            assert_eq!(order[4], 4);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            seen_first[order[0]] = true;
        }
        assert_eq!(seen_first, [true; 4], "every broker comes first sometimes");
    }
}
