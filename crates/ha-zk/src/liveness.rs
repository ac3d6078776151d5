//! Fast failover: master -> slave heartbeats, the master's lease, and the slave's patience.
//!
//! Without it a failover waits for ZooKeeper to expire the dead master's session
//! (`zk_session_timeout_ms`, 2 s by default, often 10 s or more in production). With it:
//!
//! - The master sends a `Heartbeat` every `master_timeout / 5` on a separate liveness
//!   connection per slave (never behind a burst of entries), and a slave answers each with a
//!   `Pong`. The master holds a **lease** while enough slaves answered a heartbeat it *sent*
//!   less than `master_timeout / 2` ago; without it, it confirms and dispatches nothing.
//! - A slave that has received no heartbeat for `master_timeout` **fences** the master's epoch:
//!   it records (durably, in its store) that it will never again follow or acknowledge that
//!   epoch, then reports its position tagged as fenced. Once a quorum of members other than the
//!   master has fenced it, the most up-to-date of them takes mastership in one ZooKeeper
//!   transaction that bumps the epoch and replaces the master znode (the old master's session
//!   may still be alive).
//!
//! Why it is safe: the old master confirms a write only with acknowledgements from a majority
//! of `replicas` (itself included); a quorum of fenced members leaves fewer unfenced members
//! than it needs, so from the moment the last fence is recorded it can confirm nothing more,
//! and every write it confirmed before is on at least one of the fenced members (majorities
//! intersect) — the one elected is the most up to date of them. Dispatch: a slave fences no
//! earlier than `master_timeout` after it *received* its last heartbeat, and the master's lease
//! from that heartbeat ran out `master_timeout / 2` after it was *sent* — earlier — so the old
//! master stopped dispatching before the new one can start. Both sides count time with
//! `CLOCK_BOOTTIME`, which keeps counting while a machine is suspended.

use std::time::Duration;

/// Time since boot, including time suspended (`CLOCK_BOOTTIME`): a master whose VM was paused
/// past its lease must see the lease gone the moment it runs again.
pub fn boottime() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let id = rustix::time::ClockId::Boottime;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let id = rustix::time::ClockId::Monotonic;
    Duration::try_from(rustix::time::clock_gettime(id)).unwrap_or(Duration::ZERO)
}

/// The timing of fast failover in a group, derived from `master_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How long a slave waits without a heartbeat before it fences the master's epoch.
    pub timeout: Duration,
    /// How often the master sends a heartbeat.
    pub heartbeat: Duration,
    /// How long an answered heartbeat keeps the master's lease, from when it was sent.
    pub lease: Duration,
    /// How many slaves must hold a current lease for the master to serve: `replicas - quorum`.
    /// With fewer, a quorum of the others may have fenced it.
    pub needed: usize,
}

impl Liveness {
    /// Fast failover for a group of `replicas` with `master_timeout`, or `None` when it is off
    /// (`master_timeout` zero) or impossible (fewer than 3 replicas: the members other than the
    /// master cannot form a quorum on their own).
    pub fn new(master_timeout: Duration, replicas: usize) -> Option<Liveness> {
        let quorum = replicas / 2 + 1;
        if master_timeout.is_zero() || replicas < quorum + 1 {
            return None;
        }
        Some(Liveness {
            timeout: master_timeout,
            heartbeat: (master_timeout / 5).max(Duration::from_millis(5)),
            lease: master_timeout / 2,
            needed: replicas - quorum,
        })
    }

    /// Whether leases whose heartbeats were sent at `sent` (boot time) keep a master serving
    /// at `now`.
    pub fn holds(&self, sent: impl IntoIterator<Item = Duration>, now: Duration) -> bool {
        sent.into_iter().filter(|s| *s + self.lease > now).count() >= self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_failover_needs_three_replicas_and_a_timeout() {
        assert_eq!(Liveness::new(Duration::from_millis(500), 1), None);
        assert_eq!(Liveness::new(Duration::from_millis(500), 2), None);
        assert_eq!(Liveness::new(Duration::ZERO, 3), None);
        let l = Liveness::new(Duration::from_millis(500), 3).unwrap();
        assert_eq!(l.needed, 1);
        assert_eq!(l.heartbeat, Duration::from_millis(100));
        assert!(
            l.lease < l.timeout,
            "the lease must end before a slave's patience"
        );
        assert_eq!(
            Liveness::new(Duration::from_millis(500), 5).unwrap().needed,
            2
        );
        assert_eq!(
            Liveness::new(Duration::from_millis(500), 4).unwrap().needed,
            1
        );
    }

    #[test]
    fn a_lease_counts_from_the_heartbeats_sending() {
        let l = Liveness::new(Duration::from_millis(500), 5).unwrap();
        let ms = Duration::from_millis;
        // Two slaves answered heartbeats sent at 1000 and 1100 ms: the lease (250 ms) holds
        // until the older one runs out.
        assert!(l.holds([ms(1000), ms(1100)], ms(1249)));
        assert!(!l.holds([ms(1000), ms(1100)], ms(1250)));
        assert!(
            !l.holds([ms(1100)], ms(1101)),
            "one slave is not enough for 5 replicas"
        );
    }
}
