//! Configuration of the shared-database locker (`ha.mode = "shared-db"`).

use std::sync::Arc;
use std::time::Duration;

use crate::fence::{LeaseClock, SystemLeaseClock};
use crate::DbLockError;

/// Which locking scheme elects the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locker {
    /// ActiveMQ's `lease-database-locker`: a time-limited lease in row 1, renewed by the master.
    /// Survives half-open connections and never needs a long-running transaction.
    #[default]
    Lease,
    /// ActiveMQ's `database-locker`: a transaction holding `SELECT … FOR UPDATE` on row 2 for
    /// the whole mastership, on a dedicated connection.
    Row,
}

/// Settings of [`crate::DbLock`]. Durations carry ActiveMQ's names in their docs; the server's
/// TOML keys are the field names with `_ms` appended. `Debug` hides the URL's password.
#[derive(Clone)]
pub struct DbLockConfig {
    /// `postgres://…` or `mysql://…` (also `postgresql://`, `mariadb://`).
    pub url: String,
    /// Prefix of the lock table's name (`<prefix>lock`); letters, digits and `_` only.
    /// Default `activemq_`.
    pub table_prefix: String,
    /// The locking scheme. Default [`Locker::Lease`].
    pub locker: Locker,
    /// `lease_ms`: how long a lease lasts after each renewal, by the database's clock.
    /// Default 10 s, ActiveMQ's `lockAcquireSleepInterval` default (which is its lease length):
    /// a crashed master is replaced within about this long, and a master rides out database
    /// outages of up to `lease - 2 × renew_interval` (5 s by default) without stepping down.
    pub lease: Duration,
    /// `lock_keepalive_period_ms`: how often the master renews its lease (lease locker) or
    /// pings its lock connection (row locker). Default `lease / 4` = 2.5 s. It is also the
    /// safety margin: a master stops serving once `lease - renew_interval` has passed since it
    /// sent its last successful renewal, well before the database lets anyone else take over.
    pub renew_interval: Duration,
    /// `lock_acquire_sleep_interval_ms`: how often a slave polls for a free lease. Default
    /// 200 ms, so a clean shutdown hands over in a fraction of a second; each poll is one
    /// non-locking primary-key `SELECT` (5 per second per slave).
    pub lock_acquire_sleep_interval: Duration,
    /// Upper bound on connecting and on every statement (`queryTimeout`). Default 2 s; must be
    /// shorter than `lease - 2 × renew_interval` so a renewal can finish within the lease.
    pub statement_timeout: Duration,
    /// `lease_holder_id`: identifies this broker in the lock row; unique per broker and per
    /// process run (see [`unique_holder_id`]). Required, at most 250 characters.
    pub holder_id: String,
    /// `create_tables_on_startup`: create the lock table and its rows if absent. Default true.
    pub create_tables_on_startup: bool,
    /// The clocks the master's fence reads. Default [`SystemLeaseClock`] (`CLOCK_BOOTTIME`);
    /// tests inject their own.
    pub clock: Arc<dyn LeaseClock>,
}

impl std::fmt::Debug for DbLockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbLockConfig")
            .field("url", &crate::db::redact(&self.url))
            .field("table_prefix", &self.table_prefix)
            .field("locker", &self.locker)
            .field("lease", &self.lease)
            .field("renew_interval", &self.renew_interval)
            .field(
                "lock_acquire_sleep_interval",
                &self.lock_acquire_sleep_interval,
            )
            .field("statement_timeout", &self.statement_timeout)
            .field("holder_id", &self.holder_id)
            .field("create_tables_on_startup", &self.create_tables_on_startup)
            .field("clock", &self.clock)
            .finish()
    }
}

/// The slowest a slave retries an unreachable database (its backoff doubles up to this).
pub(crate) const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl DbLockConfig {
    /// Defaults for everything but the database and the holder id.
    pub fn new(url: impl Into<String>, holder_id: impl Into<String>) -> DbLockConfig {
        let lease = Duration::from_secs(10);
        DbLockConfig {
            url: url.into(),
            table_prefix: "activemq_".into(),
            locker: Locker::Lease,
            lease,
            renew_interval: lease / 4,
            lock_acquire_sleep_interval: Duration::from_millis(200),
            statement_timeout: Duration::from_secs(2),
            holder_id: holder_id.into(),
            create_tables_on_startup: true,
            clock: Arc::new(SystemLeaseClock),
        }
    }

    /// The lock table's name.
    pub fn table(&self) -> String {
        format!("{}lock", self.table_prefix)
    }

    /// How long after its last successful renewal was sent a lease master may still serve.
    pub(crate) fn lease_window(&self) -> Duration {
        self.lease.saturating_sub(self.renew_interval)
    }

    /// How long after its last successful keep-alive was sent a row-lock master may still
    /// serve: one period until the next keep-alive plus that keep-alive's timeout.
    pub(crate) fn row_window(&self) -> Duration {
        self.renew_interval + self.statement_timeout
    }

    pub(crate) fn validate(&self) -> Result<(), DbLockError> {
        let bad = |m: String| Err(DbLockError::Config(m));
        if self.table_prefix.len() > 50
            || !self
                .table_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            // The prefix is spliced into SQL text; only identifier characters are safe there.
            return bad(format!(
                "table_prefix {:?} must be at most 50 letters, digits or '_'",
                self.table_prefix
            ));
        }
        if self.holder_id.is_empty() || self.holder_id.chars().count() > 250 {
            return bad("holder_id must be 1 to 250 characters".into());
        }
        for (name, d) in [
            ("renew_interval", self.renew_interval),
            (
                "lock_acquire_sleep_interval",
                self.lock_acquire_sleep_interval,
            ),
            ("statement_timeout", self.statement_timeout),
        ] {
            if d < Duration::from_millis(10) {
                return bad(format!("{name} must be at least 10 ms"));
            }
        }
        // The validity window must hold one full renewal attempt (wait, then a statement that may
        // take up to its timeout), or a healthy master would step down between two renewals.
        let needed = self.renew_interval + self.statement_timeout;
        if self.lease_window() <= needed {
            return bad(format!(
                "lease ({} ms) must exceed 2 × renew_interval + statement_timeout ({} ms)",
                self.lease.as_millis(),
                (self.renew_interval + needed).as_millis()
            ));
        }
        if i64::try_from(self.lease.as_millis()).is_err() {
            return bad("lease is too long".into());
        }
        Ok(())
    }
}

/// A holder id unique to this process run: `<broker_name>-<pid>-<start time in µs>`. A restarted
/// broker gets a new id, so it can never mistake its previous incarnation's lease for its own.
pub fn unique_holder_id(broker_name: &str) -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let mut id = format!("{broker_name}-{}-{micros:x}", std::process::id());
    // Keep within the column's 250 characters, cutting the broker name, never the suffix.
    while id.chars().count() > 250 {
        id.remove(0);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keep_renewals_inside_the_lease() {
        let c = DbLockConfig::new("postgres://x/y", "b1");
        c.validate().unwrap();
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.renew_interval, Duration::from_millis(2500));
        assert!(c.lease_window() > c.renew_interval + c.statement_timeout);
    }

    #[test]
    fn a_lease_too_short_for_its_renewals_is_refused() {
        let mut c = DbLockConfig::new("postgres://x/y", "b1");
        c.lease = Duration::from_secs(5);
        assert!(matches!(c.validate(), Err(DbLockError::Config(_))));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = DbLockConfig::new("postgres://u:secret@h/db", "b1");
        let s = format!("{c:?}");
        assert!(!s.contains("secret") && s.contains("u@h/db"), "{s}");
    }

    #[test]
    fn a_prefix_that_is_not_an_identifier_is_refused() {
        let mut c = DbLockConfig::new("postgres://x/y", "b1");
        c.table_prefix = "x; DROP TABLE y; --".into();
        assert!(matches!(c.validate(), Err(DbLockError::Config(_))));
    }

    #[test]
    fn unique_holder_ids_fit_the_column_and_keep_their_suffix() {
        let id = unique_holder_id(&"b".repeat(400));
        assert_eq!(id.chars().count(), 250);
        assert!(id.contains(&format!("-{}-", std::process::id())));
    }
}
