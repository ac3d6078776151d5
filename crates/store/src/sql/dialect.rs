//! The SQL text of each database: DDL, placeholders, upserts and row locks.
//!
//! Everything the three databases disagree on lives here, so the writer and the readers are
//! written once. Table names are `{prefix}msgs`, `{prefix}acks`, `{prefix}lists` and
//! `{prefix}lock`; the prefix is checked to be `[A-Za-z0-9_]` before it is spliced into SQL.

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, embedded (`sqlite://PATH`).
    Sqlite,
    /// PostgreSQL (`postgres://…`).
    Postgres,
    /// MySQL or MariaDB (`mysql://…`).
    MySql,
}

/// Placeholders one statement may carry at most, per database (SQLite's
/// `SQLITE_MAX_VARIABLE_NUMBER` since 3.32, and the 16-bit parameter count of the PostgreSQL and
/// MySQL wire protocols). The writer stays well below, see `writer::ROWS_PER_STATEMENT_MAX`.
pub(crate) fn placeholders_max(d: Dialect) -> usize {
    match d {
        Dialect::Sqlite => 32_766,
        Dialect::Postgres | Dialect::MySql => 65_535,
    }
}

/// The table names of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub prefix: String,
    pub msgs: String,
    pub acks: String,
    pub lists: String,
    pub lock: String,
}

impl Tables {
    pub(crate) fn new(prefix: &str) -> Tables {
        Tables {
            prefix: prefix.to_string(),
            msgs: format!("{prefix}msgs"),
            acks: format!("{prefix}acks"),
            lists: format!("{prefix}lists"),
            lock: format!("{prefix}lock"),
        }
    }
}

/// Builds one statement, numbering placeholders the way the database wants (`$1` or `?`).
#[derive(Debug)]
pub(crate) struct Sql {
    dialect: Dialect,
    pub text: String,
    params: usize,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect, start: &str) -> Sql {
        Sql {
            dialect,
            text: start.to_string(),
            params: 0,
        }
    }

    /// Appends text.
    pub(crate) fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    /// Appends the next placeholder.
    pub(crate) fn param(&mut self) -> &mut Sql {
        self.params += 1;
        match self.dialect {
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.params.to_string());
            }
            Dialect::Sqlite | Dialect::MySql => self.text.push('?'),
        }
        self
    }
}

impl Dialect {
    /// The type of the payload column: every database's "large binary" type.
    fn blob(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
            Dialect::MySql => "LONGBLOB",
        }
    }

    /// A key column. MySQL compares VARCHARs case-insensitively by default, which would merge
    /// `queue://A` and `queue://a`: keys get a binary collation there.
    fn key(self) -> &'static str {
        match self {
            Dialect::MySql => "VARCHAR(250) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            Dialect::Sqlite | Dialect::Postgres => "VARCHAR(250)",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Dialect::MySql => "VARCHAR(250) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            Dialect::Sqlite | Dialect::Postgres => "VARCHAR(250)",
        }
    }

    fn table_options(self) -> &'static str {
        match self {
            Dialect::MySql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            Dialect::Sqlite | Dialect::Postgres => "",
        }
    }

    /// The integer type a `CAST` turns an aggregate into so that it decodes as `i64`
    /// (MySQL's `SUM` is a DECIMAL otherwise).
    pub(crate) fn bigint_cast(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
            Dialect::MySql => "SIGNED",
        }
    }

    /// `BEGIN` for a write transaction. SQLite's `IMMEDIATE` takes the database's write lock at
    /// once, so the fence read below and the writes after it see one state.
    pub(crate) fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
            Dialect::MySql => "START TRANSACTION",
        }
    }

    /// The fence read: the lease row's epoch under a shared row lock, so the new master's
    /// `UPDATE` of the epoch waits for this transaction to end (see the module docs of `sql`).
    pub(crate) fn fence_select(self, t: &Tables) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT epoch FROM {} WHERE id = 1", t.lock),
            Dialect::Postgres => format!("SELECT epoch FROM {} WHERE id = 1 FOR SHARE", t.lock),
            Dialect::MySql => format!(
                "SELECT epoch FROM {} WHERE id = 1 LOCK IN SHARE MODE",
                t.lock
            ),
        }
    }

    /// The server version query.
    pub(crate) fn version_query(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT sqlite_version()",
            Dialect::Postgres | Dialect::MySql => "SELECT version()",
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` statements, in order.
    pub(crate) fn create_tables(self, t: &Tables) -> Vec<String> {
        let (key, text, blob, opts) = (self.key(), self.text(), self.blob(), self.table_options());
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (container {key} NOT NULL, seq BIGINT NOT NULL, \
                 msg {blob} NOT NULL, PRIMARY KEY (container, seq)){opts}",
                t.msgs
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (container {key} NOT NULL PRIMARY KEY, \
                 client_id {text} NOT NULL, sub_name {text} NOT NULL, sub_dest {text} NOT NULL, \
                 selector TEXT NULL, no_local BIGINT NOT NULL){opts}",
                t.acks
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (container {key} NOT NULL PRIMARY KEY, \
                 max_seq BIGINT NOT NULL){opts}",
                t.lists
            ),
            // Shared with the shared-database HA locker: keep in step with it.
            format!(
                "CREATE TABLE IF NOT EXISTS {} (id BIGINT NOT NULL PRIMARY KEY, \
                 broker_name VARCHAR(250) NULL, epoch BIGINT NOT NULL, \
                 expiry_ms BIGINT NOT NULL, time BIGINT NOT NULL){opts}",
                t.lock
            ),
        ]
    }

    /// Inserts lock row `id` (free, epoch 0) unless it exists; safe for concurrent creators.
    pub(crate) fn insert_lock_row(self, t: &Tables, id: u8) -> String {
        let values =
            format!("(id, broker_name, epoch, expiry_ms, time) VALUES ({id}, NULL, 0, 0, 0)");
        match self {
            Dialect::Sqlite => format!("INSERT OR IGNORE INTO {} {values}", t.lock),
            Dialect::Postgres => format!(
                "INSERT INTO {} {values} ON CONFLICT (id) DO NOTHING",
                t.lock
            ),
            Dialect::MySql => format!("INSERT IGNORE INTO {} {values}", t.lock),
        }
    }

    /// Starts a message insert; callers append `rows` value tuples.
    pub(crate) fn insert_msgs(self, t: &Tables, rows: usize) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!("INSERT INTO {} (container, seq, msg) VALUES ", t.msgs),
        );
        for i in 0..rows {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .param()
                .push(", ")
                .param()
                .push(", ")
                .param()
                .push(")");
        }
        sql
    }

    /// Inserts or replaces one message (the same seq enqueued again replaces it).
    pub(crate) fn upsert_msg(self, t: &Tables) -> Sql {
        let mut sql = self.insert_msgs(t, 1);
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                sql.push(" ON CONFLICT (container, seq) DO UPDATE SET msg = excluded.msg")
            }
            Dialect::MySql => sql.push(" ON DUPLICATE KEY UPDATE msg = VALUES(msg)"),
        };
        sql
    }

    /// `WHERE` part matching `rows` (container, seq) keys. An OR of equalities is the form all
    /// three planners turn into primary-key lookups (SQLite has no row-value `IN` list).
    pub(crate) fn key_filter(self, sql: &mut Sql, rows: usize) {
        sql.push(" WHERE ");
        for i in 0..rows {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(container = ")
                .param()
                .push(" AND seq = ")
                .param()
                .push(")");
        }
    }

    /// Sum of payload bytes of the keyed messages.
    pub(crate) fn sum_keyed(self, t: &Tables, rows: usize) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!(
                "SELECT CAST(COALESCE(SUM(LENGTH(msg)), 0) AS {}) FROM {}",
                self.bigint_cast(),
                t.msgs
            ),
        );
        self.key_filter(&mut sql, rows);
        sql
    }

    /// Deletes the keyed messages.
    pub(crate) fn delete_keyed(self, t: &Tables, rows: usize) -> Sql {
        let mut sql = Sql::new(self, &format!("DELETE FROM {}", t.msgs));
        self.key_filter(&mut sql, rows);
        sql
    }

    /// Payload bytes of one list.
    pub(crate) fn sum_list(self, t: &Tables) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!(
                "SELECT CAST(COALESCE(SUM(LENGTH(msg)), 0) AS {}) FROM {} WHERE container = ",
                self.bigint_cast(),
                t.msgs
            ),
        );
        sql.param();
        sql
    }

    /// Deletes from `table` where `container = ?`.
    pub(crate) fn delete_container(self, table: &str) -> Sql {
        let mut sql = Sql::new(self, &format!("DELETE FROM {table} WHERE container = "));
        sql.param();
        sql
    }

    /// Payload length of one message, if present.
    pub(crate) fn msg_len(self, t: &Tables) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!(
                "SELECT CAST(LENGTH(msg) AS {}) FROM {} WHERE container = ",
                self.bigint_cast(),
                t.msgs
            ),
        );
        sql.param().push(" AND seq = ").param();
        sql
    }

    /// Creates or replaces a subscription row.
    pub(crate) fn upsert_sub(self, t: &Tables) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!(
                "INSERT INTO {} (container, client_id, sub_name, sub_dest, selector, no_local) \
                 VALUES (",
                t.acks
            ),
        );
        for i in 0..6 {
            if i > 0 {
                sql.push(", ");
            }
            sql.param();
        }
        sql.push(")");
        match self {
            Dialect::Sqlite | Dialect::Postgres => sql.push(
                " ON CONFLICT (container) DO UPDATE SET client_id = excluded.client_id, \
                 sub_name = excluded.sub_name, sub_dest = excluded.sub_dest, \
                 selector = excluded.selector, no_local = excluded.no_local",
            ),
            Dialect::MySql => sql.push(
                " ON DUPLICATE KEY UPDATE client_id = VALUES(client_id), \
                 sub_name = VALUES(sub_name), sub_dest = VALUES(sub_dest), \
                 selector = VALUES(selector), no_local = VALUES(no_local)",
            ),
        };
        sql
    }

    /// Creates or updates `rows` list rows (container, max_seq).
    pub(crate) fn upsert_lists(self, t: &Tables, rows: usize) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!("INSERT INTO {} (container, max_seq) VALUES ", t.lists),
        );
        for i in 0..rows {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(").param().push(", ").param().push(")");
        }
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                sql.push(" ON CONFLICT (container) DO UPDATE SET max_seq = excluded.max_seq")
            }
            Dialect::MySql => sql.push(" ON DUPLICATE KEY UPDATE max_seq = VALUES(max_seq)"),
        };
        sql
    }

    /// Every non-empty list: container, count, bytes, highest live seq, remembered max seq.
    pub(crate) fn recover_lists(self, t: &Tables) -> String {
        format!(
            "SELECT m.container, CAST(COUNT(*) AS {c}), CAST(SUM(LENGTH(m.msg)) AS {c}), \
             MAX(m.seq), CAST(COALESCE(MAX(l.max_seq), 0) AS {c}) FROM {msgs} m \
             LEFT JOIN {lists} l ON l.container = m.container GROUP BY m.container",
            c = self.bigint_cast(),
            msgs = t.msgs,
            lists = t.lists
        )
    }

    /// Every subscription row.
    pub(crate) fn recover_subs(self, t: &Tables) -> String {
        format!(
            "SELECT container, client_id, sub_name, sub_dest, selector, no_local FROM {}",
            t.acks
        )
    }

    /// Every remembered list max seq.
    pub(crate) fn all_lists(self, t: &Tables) -> String {
        format!("SELECT container, max_seq FROM {}", t.lists)
    }

    /// A page of one list.
    pub(crate) fn load(self, t: &Tables) -> Sql {
        let mut sql = Sql::new(
            self,
            &format!("SELECT seq, msg FROM {} WHERE container = ", t.msgs),
        );
        sql.param()
            .push(" AND seq > ")
            .param()
            .push(" ORDER BY seq LIMIT ")
            .param();
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_and_others_are_question_marks() {
        let t = Tables::new("p_");
        let pg = Dialect::Postgres.insert_msgs(&t, 2).text;
        assert!(pg.ends_with("($1, $2, $3), ($4, $5, $6)"), "{pg}");
        let my = Dialect::MySql.delete_keyed(&t, 2).text;
        assert_eq!(
            my,
            "DELETE FROM p_msgs WHERE (container = ? AND seq = ?) OR (container = ? AND seq = ?)"
        );
    }

    #[test]
    fn lock_row_inserts_tolerate_an_existing_row_on_every_database() {
        let t = Tables::new("x_");
        assert!(Dialect::Sqlite
            .insert_lock_row(&t, 1)
            .starts_with("INSERT OR IGNORE"));
        assert!(Dialect::Postgres
            .insert_lock_row(&t, 2)
            .ends_with("ON CONFLICT (id) DO NOTHING"));
        assert!(Dialect::MySql
            .insert_lock_row(&t, 1)
            .starts_with("INSERT IGNORE"));
    }
}
