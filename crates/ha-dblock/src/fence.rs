//! The master's local proof of mastership: a deadline on the boot-time clock, extended by each
//! successful renewal (lease) or keep-alive (row lock), and a sticky verdict once it is lost.
//!
//! The deadline is checked against the clock at every [`Fence::check`], not only by the keeper
//! task: a process that was stopped (SIGSTOP, a long GC-like pause, a suspended VM) fails its
//! very first check after it resumes, before any task of it has run. Once failed it stays failed:
//! a renewal that lands later cannot resurrect it, because someone may already have acted on the
//! failure (and another broker may be master by then).
//!
//! The clock is `CLOCK_BOOTTIME`, not `CLOCK_MONOTONIC` (what `Instant` and tokio's timers
//! read): the monotonic clock stops while the machine is suspended, so a master suspended for
//! longer than its lease would resume believing its lease still valid while the database has
//! long handed it to another broker. Boot time keeps counting through a suspend. Timers that
//! only schedule renewals stay on tokio's clock; only the validity check needs boot time.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferromq_store::Fence;

/// The clocks the fence reads; injectable so a test can suspend the machine.
pub trait LeaseClock: Send + Sync + std::fmt::Debug + 'static {
    /// Time since boot including time spent suspended (`CLOCK_BOOTTIME`).
    fn boottime(&self) -> Duration;
    /// Time since boot excluding time spent suspended (`CLOCK_MONOTONIC`). Used only to tell
    /// in a log how long a suspend lasted.
    fn monotonic(&self) -> Duration;
}

/// The kernel's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemLeaseClock;

impl LeaseClock for SystemLeaseClock {
    fn boottime(&self) -> Duration {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = rustix::time::ClockId::Boottime;
        // Elsewhere the monotonic clock is the best there is (macOS's keeps counting asleep).
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let id = rustix::time::ClockId::Monotonic;
        read(id)
    }

    fn monotonic(&self) -> Duration {
        read(rustix::time::ClockId::Monotonic)
    }
}

fn read(id: rustix::time::ClockId) -> Duration {
    // Both clocks start at boot and never go negative.
    Duration::try_from(rustix::time::clock_gettime(id)).unwrap_or(Duration::ZERO)
}

#[derive(Debug)]
struct State {
    /// Boot-time instant at which mastership can no longer be proven.
    valid_until: Duration,
    /// `boottime - monotonic` when mastership was last proven: it grows by exactly the time
    /// spent suspended since.
    suspend_offset: Duration,
    dead: Option<String>,
}

/// How long this master may still act, and whether it has lost mastership for good.
#[derive(Debug)]
pub(crate) struct Validity {
    epoch: u64,
    clock: Arc<dyn LeaseClock>,
    state: Mutex<State>,
}

impl Validity {
    /// Valid until `sent + window`, where `sent` (from [`Validity::now`] or the same clock) is
    /// when the statement that proved mastership was *sent* (the database stamped the lease at
    /// or after that instant).
    pub(crate) fn new(
        epoch: u64,
        clock: Arc<dyn LeaseClock>,
        sent: Duration,
        window: Duration,
    ) -> Validity {
        let suspend_offset = suspend_offset(&*clock);
        Validity {
            epoch,
            clock,
            state: Mutex::new(State {
                valid_until: sent + window,
                suspend_offset,
                dead: None,
            }),
        }
    }

    /// The fence's clock now: stamp a renewal with this when it is sent.
    pub(crate) fn now(&self) -> Duration {
        lease_now(&*self.clock)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated (each field is
        // written in one assignment), so a poisoned lock is still safe to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` while valid; the first failure (deadline passed or [`Validity::kill`]) is sticky.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut s = self.lock();
        self.check_locked(&mut s)
    }

    /// A renewal sent at `sent` succeeded: extend to `sent + window` unless already lost.
    /// Returns `Err` when the deadline passed while the renewal was in flight: the lease may be
    /// valid in the database, but the fence has already refused (or could have), so it stays lost.
    pub(crate) fn extend(&self, sent: Duration, window: Duration) -> Result<(), String> {
        let mut s = self.lock();
        self.check_locked(&mut s)?;
        let until = sent + window;
        if until > s.valid_until {
            s.valid_until = until;
        }
        s.suspend_offset = suspend_offset(&*self.clock);
        Ok(())
    }

    /// Marks mastership lost for good (the first reason wins).
    pub(crate) fn kill(&self, reason: impl Into<String>) {
        let mut s = self.lock();
        if s.dead.is_none() {
            s.dead = Some(reason.into());
        }
    }

    /// How long mastership remains provable from now, or why it is lost.
    pub(crate) fn remaining(&self) -> Result<Duration, String> {
        let mut s = self.lock();
        self.check_locked(&mut s)?;
        Ok(s.valid_until.saturating_sub(self.now()))
    }

    fn check_locked(&self, s: &mut State) -> Result<(), String> {
        if let Some(r) = &s.dead {
            return Err(r.clone());
        }
        let now = self.now();
        if now >= s.valid_until {
            let suspended = suspend_offset(&*self.clock).saturating_sub(s.suspend_offset);
            let why = if suspended.is_zero() {
                "no successful renewal in time".to_string()
            } else {
                format!("the machine was suspended for {} ms", suspended.as_millis())
            };
            let reason = format!(
                "shared-db mastership of epoch {} could not be proven for {} ms past its deadline \
                 ({why}): another broker may take over, stepping down",
                self.epoch,
                (now - s.valid_until).as_millis()
            );
            s.dead = Some(reason.clone());
            return Err(reason);
        }
        Ok(())
    }
}

/// The time a lease's validity is measured in, on `clock`.
pub(crate) fn lease_now(clock: &dyn LeaseClock) -> Duration {
    clock.boottime()
}

fn suspend_offset(clock: &dyn LeaseClock) -> Duration {
    clock.boottime().saturating_sub(clock.monotonic())
}

/// The store's fence for a shared-db master: fails from the instant mastership can no longer be
/// proven (see the module docs), whether or not the keeper task has noticed yet.
#[derive(Debug)]
pub struct DbFence {
    pub(crate) validity: Arc<Validity>,
}

impl Fence for DbFence {
    fn check(&self) -> Result<(), String> {
        self.validity.check()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A machine whose clocks the test moves: running advances both, suspending only boot time.
    #[derive(Debug, Default)]
    struct Machine {
        boottime_ms: AtomicU64,
        monotonic_ms: AtomicU64,
    }

    impl Machine {
        fn run(&self, ms: u64) {
            self.boottime_ms.fetch_add(ms, Ordering::SeqCst);
            self.monotonic_ms.fetch_add(ms, Ordering::SeqCst);
        }

        fn suspend(&self, ms: u64) {
            self.boottime_ms.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl LeaseClock for Machine {
        fn boottime(&self) -> Duration {
            Duration::from_millis(self.boottime_ms.load(Ordering::SeqCst))
        }
        fn monotonic(&self) -> Duration {
            Duration::from_millis(self.monotonic_ms.load(Ordering::SeqCst))
        }
    }

    fn validity(machine: &Arc<Machine>, window_ms: u64) -> Validity {
        let clock: Arc<dyn LeaseClock> = machine.clone();
        Validity::new(
            7,
            clock.clone(),
            clock.boottime(),
            Duration::from_millis(window_ms),
        )
    }

    #[test]
    fn a_master_suspended_past_its_lease_fails_its_fence_on_resume() {
        let machine = Arc::new(Machine::default());
        machine.run(1_000);
        let v = validity(&machine, 7_500);
        machine.run(1_000);
        v.check().unwrap();
        // Suspended for a minute: the monotonic clock stood still, the database's did not.
        machine.suspend(60_000);
        let reason = v
            .check()
            .expect_err("a master suspended past its lease still passed its fence");
        assert!(reason.contains("suspended for 60000 ms"), "{reason}");
        assert!(v.remaining().is_err());
    }

    #[test]
    fn a_passed_deadline_fails_for_good_even_if_a_renewal_lands_later() {
        let machine = Arc::new(Machine::default());
        let v = validity(&machine, 0);
        assert!(v.check().is_err(), "a zero window is already over");
        assert!(
            v.extend(v.now(), Duration::from_secs(3600)).is_err(),
            "a late renewal must not resurrect a lost mastership"
        );
        assert!(v.check().is_err());
        assert!(v.remaining().is_err());
    }

    #[test]
    fn a_renewal_extends_and_a_kill_is_sticky() {
        let machine = Arc::new(Machine::default());
        let v = validity(&machine, 3_600_000);
        v.check().unwrap();
        machine.run(3_000_000);
        v.extend(v.now(), Duration::from_secs(3600)).unwrap();
        machine.run(3_000_000);
        v.check().unwrap();
        assert_eq!(v.remaining(), Ok(Duration::from_secs(600)));
        v.kill("released");
        v.kill("second reason is ignored");
        assert_eq!(v.check().unwrap_err(), "released");
        assert_eq!(v.remaining().unwrap_err(), "released");
    }

    #[test]
    fn the_system_clocks_read_and_boot_time_never_lags_monotonic_time() {
        let c = SystemLeaseClock;
        let mono = c.monotonic();
        let boot = c.boottime();
        assert!(!boot.is_zero());
        assert!(boot >= mono, "boot time {boot:?} behind monotonic {mono:?}");
    }
}
