//! The lock table's SQL, per dialect. Runtime queries only: the table name carries a
//! configurable prefix, so nothing here can be checked at compile time.
//!
//! Every time is the **database's** clock in milliseconds since the Unix epoch, never a
//! broker's: brokers' clocks may disagree, the database's is the one all of them read.

/// The SQL dialect, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    MySql,
}

/// `expiry_ms` of row 1 while a row-locker master holds mastership: never expires, so a
/// (misconfigured) lease locker of the same group can never take over a row-lock master.
pub(crate) const ROW_HELD_EXPIRY_MS: i64 = i64::MAX;

/// Every statement the locker runs, with the table name filled in.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub create_table: String,
    pub insert_rows: String,
    pub count_rows: String,
    /// `broker_name, expiry_ms, epoch, <db now ms>` of row 1, without taking any lock.
    pub peek: String,
    /// binds: holder, lease ms.
    pub lease_acquire: String,
    pub read_epoch: String,
    /// binds: lease ms, holder, epoch.
    pub lease_renew: String,
    /// binds: holder, epoch.
    pub release: String,
    pub row_lock: String,
    pub row1_for_update: String,
    /// binds: holder.
    pub row_take_epoch: String,
    pub keepalive: String,
}

impl Statements {
    pub(crate) fn new(dialect: Dialect, table: &str) -> Statements {
        let (now, p1, p2, p3, engine, insert) = match dialect {
            Dialect::Postgres => (
                "(extract(epoch from clock_timestamp()) * 1000)::bigint",
                "$1",
                "$2",
                "$3",
                "",
                "INSERT INTO",
            ),
            // sqlx sets the session time zone to +00:00, so UNIX_TIMESTAMP has no DST ambiguity.
            Dialect::MySql => (
                "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
                "?",
                "?",
                "?",
                " ENGINE=InnoDB",
                "INSERT IGNORE INTO",
            ),
        };
        let on_conflict = match dialect {
            Dialect::Postgres => " ON CONFLICT (id) DO NOTHING",
            Dialect::MySql => "",
        };
        Statements {
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS {table} (id BIGINT NOT NULL PRIMARY KEY, \
                 broker_name VARCHAR(250) NULL, epoch BIGINT NOT NULL, \
                 expiry_ms BIGINT NOT NULL, time BIGINT NOT NULL){engine}"
            ),
            insert_rows: format!(
                "{insert} {table} (id, broker_name, epoch, expiry_ms, time) \
                 VALUES (1, NULL, 0, 0, 0), (2, NULL, 0, 0, 0){on_conflict}"
            ),
            count_rows: format!("SELECT COUNT(*) FROM {table} WHERE id IN (1, 2)"),
            peek: format!("SELECT broker_name, expiry_ms, epoch, {now} FROM {table} WHERE id = 1"),
            lease_acquire: format!(
                "UPDATE {table} SET broker_name = {p1}, epoch = epoch + 1, \
                 expiry_ms = {now} + {p2}, time = {now} \
                 WHERE id = 1 AND (expiry_ms < {now} OR broker_name IS NULL)"
            ),
            read_epoch: format!("SELECT epoch FROM {table} WHERE id = 1"),
            lease_renew: format!(
                "UPDATE {table} SET expiry_ms = {now} + {p1}, time = {now} \
                 WHERE id = 1 AND broker_name = {p2} AND epoch = {p3}"
            ),
            release: format!(
                "UPDATE {table} SET broker_name = NULL, expiry_ms = 0, time = {now} \
                 WHERE id = 1 AND broker_name = {p1} AND epoch = {p2}"
            ),
            row_lock: format!("SELECT id FROM {table} WHERE id = 2 FOR UPDATE"),
            row1_for_update: format!("SELECT broker_name FROM {table} WHERE id = 1 FOR UPDATE"),
            row_take_epoch: format!(
                "UPDATE {table} SET broker_name = {p1}, epoch = epoch + 1, \
                 expiry_ms = {ROW_HELD_EXPIRY_MS}, time = {now} WHERE id = 1"
            ),
            keepalive: "SELECT 1".into(),
        }
    }
}
