//! The master's local proof of mastership: a deadline on the monotonic clock, extended by each
//! successful renewal (lease) or keep-alive (row lock), and a sticky verdict once it is lost.
//!
//! The deadline is checked against the clock at every [`Fence::check`], not only by the keeper
//! task: a process that was stopped (SIGSTOP, a long GC-like pause, a suspended VM) fails its
//! very first check after it resumes, before any task of it has run. Once failed it stays failed:
//! a renewal that lands later cannot resurrect it, because someone may already have acted on the
//! failure (and another broker may be master by then).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferromq_store::Fence;

#[derive(Debug)]
struct State {
    valid_until: Instant,
    dead: Option<String>,
}

/// How long this master may still act, and whether it has lost mastership for good.
#[derive(Debug)]
pub(crate) struct Validity {
    epoch: u64,
    state: Mutex<State>,
}

impl Validity {
    /// Valid until `sent + window`, where `sent` is when the statement that proved mastership
    /// was *sent* (the database stamped the lease at or after that instant).
    pub(crate) fn new(epoch: u64, sent: Instant, window: Duration) -> Validity {
        Validity {
            epoch,
            state: Mutex::new(State {
                valid_until: sent + window,
                dead: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated (each field is
        // written in one assignment), so a poisoned lock is still safe to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` while valid; the first failure (deadline passed or [`Validity::kill`]) is sticky.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut s = self.lock();
        check_locked(&mut s, self.epoch)
    }

    /// A renewal sent at `sent` succeeded: extend to `sent + window` unless already lost.
    /// Returns `Err` when the deadline passed while the renewal was in flight: the lease may be
    /// valid in the database, but the fence has already refused (or could have), so it stays lost.
    pub(crate) fn extend(&self, sent: Instant, window: Duration) -> Result<(), String> {
        let mut s = self.lock();
        check_locked(&mut s, self.epoch)?;
        let until = sent + window;
        if until > s.valid_until {
            s.valid_until = until;
        }
        Ok(())
    }

    /// Marks mastership lost for good (the first reason wins).
    pub(crate) fn kill(&self, reason: impl Into<String>) {
        let mut s = self.lock();
        if s.dead.is_none() {
            s.dead = Some(reason.into());
        }
    }

    /// The current deadline, or `None` once lost.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let s = self.lock();
        match s.dead {
            Some(_) => None,
            None => Some(s.valid_until),
        }
    }

    /// Why mastership was lost, if it was.
    pub(crate) fn reason(&self) -> Option<String> {
        let mut s = self.lock();
        check_locked(&mut s, self.epoch).err()
    }
}

fn check_locked(s: &mut State, epoch: u64) -> Result<(), String> {
    if let Some(r) = &s.dead {
        return Err(r.clone());
    }
    let now = Instant::now();
    if now >= s.valid_until {
        let reason = format!(
            "shared-db mastership of epoch {epoch} could not be proven for {} ms past its deadline \
             (no successful renewal in time): another broker may take over, stepping down",
            now.duration_since(s.valid_until).as_millis()
        );
        s.dead = Some(reason.clone());
        return Err(reason);
    }
    Ok(())
}

/// The store's fence for a shared-db master: fails from the instant mastership can no longer be
/// proven (see the module docs), whether or not the keeper task has noticed yet.
#[derive(Debug)]
pub struct DbFence {
    pub(crate) validity: std::sync::Arc<Validity>,
}

impl Fence for DbFence {
    fn check(&self) -> Result<(), String> {
        self.validity.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_deadline_fails_for_good_even_if_a_renewal_lands_later() {
        let sent = Instant::now();
        let v = Validity::new(7, sent, Duration::ZERO);
        assert!(v.check().is_err(), "a zero window is already over");
        assert!(
            v.extend(Instant::now(), Duration::from_secs(3600)).is_err(),
            "a late renewal must not resurrect a lost mastership"
        );
        assert!(v.check().is_err());
        assert!(v.deadline().is_none());
    }

    #[test]
    fn a_renewal_extends_and_a_kill_is_sticky() {
        let v = Validity::new(1, Instant::now(), Duration::from_secs(3600));
        v.check().unwrap();
        v.extend(Instant::now(), Duration::from_secs(7200)).unwrap();
        v.check().unwrap();
        v.kill("released");
        v.kill("second reason is ignored");
        assert_eq!(v.check().unwrap_err(), "released");
        assert_eq!(v.reason().as_deref(), Some("released"));
    }
}
