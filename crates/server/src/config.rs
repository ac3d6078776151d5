//! The TOML configuration file, with ActiveMQ-familiar names, and its environment overrides.
//!
//! Every section and key is optional; unknown keys are an error that names the key. Any value
//! can be overridden from the environment as `FERROMQ__<SECTION>__<KEY>`, for example
//! `FERROMQ__TRANSPORTS__STOMP=0.0.0.0:61613` or `FERROMQ__STORE__BACKEND=memory`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[broker]`
    pub broker: BrokerSection,
    /// `[transports]`
    pub transports: TransportsSection,
    /// `[store]`
    pub store: StoreSection,
    /// `[policy]`: destination policy (redelivery, DLQ, memory limits).
    pub policy: PolicySection,
    /// `[stomp]`: STOMP connector settings and limits.
    pub stomp: StompSection,
    /// `[openwire]`: OpenWire connector settings and limits.
    pub openwire: OpenWireSection,
    /// `[security]`
    pub security: SecuritySection,
    /// `[admin]`: the admin HTTP API and metrics on `transports.admin`.
    pub admin: AdminSection,
    /// `[tls]`: certificates for the TLS listeners (`transports.stomp_ssl`, `openwire_ssl`,
    /// `admin_tls`).
    pub tls: TlsSection,
    /// `[ha]`: high availability.
    pub ha: HaSection,
    /// `[[network_connectors]]`: bridges to other brokers (ActiveMQ's `networkConnector`).
    pub network_connectors: Vec<crate::network::NetworkConnectorConfig>,
    /// `[log]`: how `ferromq serve` logs.
    pub log: LogSection,
}

/// `[log]`: the broker's log output (standard error).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (default: one human-readable line per event) or `json` (one JSON object per
    /// line, for a log collector; the same as the `--log-json` flag, which wins when given).
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".into(),
        }
    }
}

impl LogSection {
    /// Whether the broker logs JSON lines.
    pub fn json(&self) -> bool {
        self.format == "json"
    }
}

/// `[ha]`: how this broker becomes master.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaSection {
    /// `none` (standalone), `shared-file` (master/slave on a shared `broker.data_dir`),
    /// `shared-db` (master/slave on a shared database, `store.backend = "sql"`) or
    /// `replicated` (each broker its own store, replicated; ZooKeeper elects the master; needs
    /// the `zk` build feature).
    pub mode: String,
    /// How often the master re-checks that it still holds its lock (`lockKeepAlivePeriod`), ms.
    pub lock_keepalive_ms: u64,
    /// After losing mastership, wait as a slave again (`restartAllowed`); otherwise exit.
    pub restart_allowed: bool,
    /// This broker's identity in the lock; default: broker name and process id.
    pub holder_id: String,
    /// Tell connected clients the addresses of the group on CONNECTED
    /// (`updateClusterClients`).
    pub update_cluster_clients: bool,
    /// `shared-db`: `lease` (ActiveMQ's `lease-database-locker`, the default) or `row`
    /// (`database-locker`: `SELECT … FOR UPDATE` held on a dedicated connection).
    pub locker: String,
    /// `shared-db` lease locker: how long a lease lasts, by the database's clock, in ms.
    pub lease_ms: u64,
    /// `shared-db`: how often a slave retries for the lock (`lockAcquireSleepInterval`), ms.
    pub lock_acquire_sleep_interval_ms: u64,
    /// `shared-db` lease locker: this broker's id in the lock row (`leaseHolderId`); default:
    /// `holder_id`, else the broker name and the process id.
    pub lease_holder_id: String,
    /// `replicated`: the cluster size; `(replicas/2)+1` brokers must be online (`replicas`).
    pub replicas: usize,
    /// `replicated`: which implementation runs the replication: `core` (the replication core
    /// of `docs/replication.md`: an in-sync set recorded in ZooKeeper, epochs in every ack,
    /// staged full copies) or `legacy` (the position-report election of earlier releases). The
    /// two do not interoperate and their stores differ: every broker of a group runs the same
    /// one, and a data directory written by one is not read by the other.
    pub engine: String,
    /// `replicated`, `core` engine: this broker's member id in its group, 1..=2^31 — stable
    /// across restarts, unique in the group. 0 (the default): allocated once from ZooKeeper
    /// and kept in the local store.
    pub broker_id: u32,
    /// `replicated`: comma-separated ZooKeeper servers (`zkAddress`).
    pub zk_address: String,
    /// `replicated`: the election path; groups (`broker.name`) may share it (`zkPath`).
    pub zk_path: String,
    /// `replicated`: ZooKeeper session timeout, the failure detection time (`zkSessionTimeout`).
    pub zk_session_timeout_ms: u64,
    /// `replicated`: fast failover: slaves that hear no heartbeat from the master for this
    /// long fence its epoch and elect another without waiting for its ZooKeeper session to
    /// expire; the master stops confirming and dispatching after half of it without answers.
    /// 0 = off (the session timeout alone decides, as in ActiveMQ). Every broker of a group
    /// must use the same value (recorded in ZooKeeper). Needs `replicas >= 3`.
    pub master_timeout_ms: u64,
    /// `replicated`: ZooKeeper digest password; empty = open ACLs (`zkPassword`).
    pub zk_password: String,
    /// `replicated`: where the master listens for slaves, `tcp://host:port`, port 0 = dynamic
    /// (`bind`).
    pub bind: String,
    /// `replicated`: host slaves use to reach this broker's `bind` port; default: the bind
    /// host, or 127.0.0.1 when it is a wildcard (`hostname`).
    pub hostname: String,
    /// `replicated`: election tie-breaker among equally up-to-date brokers (`weight`).
    pub weight: i64,
    /// `replicated`: shared secret slaves present to the master (`securityToken`).
    pub security_token: String,
    /// `replicated`: when a write is confirmed: `local_mem`, `local_disk`, `remote_mem`,
    /// `remote_disk`, `quorum_mem`, `quorum_disk` (`sync`; default `quorum_disk`, unlike
    /// ActiveMQ's `quorum_mem`, so that a confirmed write is on a majority of disks).
    pub sync: String,
    /// `replicated`: PEM certificate chain (leaf first) this broker presents on the
    /// replication link, as server when master and as client when slave. With `tls_key` and
    /// `tls_ca`, the link runs over mutual TLS; all three unset: plain TCP (trusted networks
    /// only).
    pub tls_cert: PathBuf,
    /// `replicated`: PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// `replicated`: PEM bundle of the CAs that sign the group's certificates: a master accepts
    /// only slaves with a certificate they signed, a slave only such a master.
    pub tls_ca: PathBuf,
    /// `replicated`, with TLS: a slave also checks that the master's certificate names the
    /// host (DNS name, or IP address in a SAN) the master published (`ha.hostname`, or the
    /// bind host). `false`: the CA chain alone is checked.
    pub tls_verify_hostname: bool,
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            mode: "none".into(),
            lock_keepalive_ms: 500,
            restart_allowed: true,
            holder_id: String::new(),
            update_cluster_clients: false,
            locker: "lease".into(),
            lease_ms: 5000,
            lock_acquire_sleep_interval_ms: 100,
            lease_holder_id: String::new(),
            replicas: 3,
            engine: "legacy".into(),
            broker_id: 0,
            zk_address: "127.0.0.1:2181".into(),
            zk_path: "/default".into(),
            zk_session_timeout_ms: 2000,
            master_timeout_ms: 500,
            zk_password: String::new(),
            bind: "tcp://0.0.0.0:61619".into(),
            hostname: String::new(),
            weight: 1,
            security_token: String::new(),
            sync: "quorum_disk".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_ca: PathBuf::new(),
            tls_verify_hostname: true,
        }
    }
}

/// `[broker]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// `brokerName`.
    pub name: String,
    /// Where the store keeps its files (`dataDirectory`).
    pub data_dir: PathBuf,
    /// Make every message persistent, whatever its `persistent` header says.
    pub persistent_delivery: bool,
    /// How often expired messages are swept out of queues (`expireMessagesPeriod`), in ms.
    pub expire_messages_period_ms: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            name: "localhost".into(),
            data_dir: PathBuf::from("data"),
            persistent_delivery: false,
            expire_messages_period_ms: 30_000,
        }
    }
}

/// `[transports]`: listen addresses (ActiveMQ's transport connectors).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportsSection {
    /// STOMP listen address, `host:port` (`stomp://` prefix accepted).
    pub stomp: String,
    /// OpenWire listen address for ActiveMQ JMS clients, `host:port` (`tcp://` prefix
    /// accepted; ActiveMQ's port is 61616); empty = off.
    pub openwire: String,
    /// The OpenWire address clients should use for this broker (`tcp://host:port`), as told to
    /// them by `ha.update_cluster_clients`; default: the OpenWire listen address.
    pub openwire_advertise: String,
    /// The address clients should use for this broker, `tcp://host:port`, as told to them by
    /// `ha.update_cluster_clients`; default: the STOMP listen address.
    pub advertise: String,
    /// Admin HTTP endpoint, `host:port` (`GET /status`, the `/api/v1` admin API and
    /// Prometheus `/metrics`, see docs/operations.md), open in every role; empty = off. Bind
    /// it to loopback or a management network: with no `[security]` users it needs no login.
    pub admin: String,
    /// STOMP over TLS listen address (ActiveMQ's `stomp+ssl://`, port 61612), `host:port`
    /// (`stomp+ssl://` or `ssl://` prefix accepted); empty = off. Needs `tls.cert` and
    /// `tls.key`.
    pub stomp_ssl: String,
    /// OpenWire over TLS listen address (ActiveMQ's `ssl://`, port 61617), `host:port`
    /// (`ssl://` prefix accepted); empty = off. Needs `tls.cert` and `tls.key`.
    pub openwire_ssl: String,
    /// Serve the admin endpoint (`transports.admin`) over HTTPS with `[tls]`'s certificate.
    pub admin_tls: bool,
    /// ActiveMQ's `discoveryUri`: while master, advertise the STOMP address on
    /// `multicast://default` (or `multicast://addr:port?options`) or in ZooKeeper
    /// (`zookeeper://host:port/path`, one znode per `broker.name`); empty = off.
    pub discovery: String,
    /// Which listener `discovery` advertises, as ActiveMQ puts `discoveryUri` on one transport
    /// connector: `stomp` (default: `tcp://…`, the STOMP address) or `stomp+ssl` (the STOMP
    /// over TLS listener, `stomp+ssl://…`), which discovery connectors with `tls_ca` bridge to.
    pub discovery_transport: String,
    /// The address other brokers should use for the STOMP over TLS listener,
    /// `stomp+ssl://host:port`, as advertised by `discovery_transport = "stomp+ssl"`; default:
    /// the listen address. Its host must be a name the certificate (`tls.cert`) carries.
    pub stomp_ssl_advertise: String,
}

impl Default for TransportsSection {
    fn default() -> Self {
        TransportsSection {
            stomp: "127.0.0.1:61613".into(),
            openwire: String::new(),
            openwire_advertise: String::new(),
            advertise: String::new(),
            admin: String::new(),
            stomp_ssl: String::new(),
            openwire_ssl: String::new(),
            admin_tls: false,
            discovery: String::new(),
            discovery_transport: "stomp".into(),
            stomp_ssl_advertise: String::new(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `journal` (the default, embedded, durable), `lsm` (RocksDB, cargo feature `lsm`), `sql`
    /// (SQLite, PostgreSQL or MariaDB/MySQL, cargo feature `sql`) or `memory` (nothing
    /// survives a restart).
    pub backend: String,
    /// `sql`: the database, `sqlite://PATH`, `postgres://USER@HOST:PORT/DB` or
    /// `mysql://USER@HOST:PORT/DB`; empty: SQLite in `<data_dir>/ferromq.sqlite`.
    pub url: String,
    /// `sql`: prefix of the table names (`tablePrefix`): `<prefix>msgs`, `<prefix>acks`,
    /// `<prefix>lock`.
    pub table_prefix: String,
    /// `sql`: create the tables when they are missing (`createTablesOnStartup`).
    pub create_tables_on_startup: bool,
    /// `journal`: the write path, `portable` (`pwrite` + `fdatasync`, the default, as in
    /// `JournalConfig`: the proven path, and the one that keeps written messages in the page
    /// cache), `auto` (the store's documented rule, `ferromq_store::journal::AUTO_RULE`: portable,
    /// since the direct path wins flush-bound workloads and loses bulk loads and backlog
    /// read-back, bench-results/io-uring.md; the log line says why) or `io-uring` (the direct
    /// path, forced; a startup error when unavailable).
    pub journal_io: String,
    /// `journal` on the direct path (`journal_io = "io-uring"`):
    /// group writes in flight at most (1..=64). 1 (the default): the writer thread writes each
    /// group itself (`O_DIRECT | O_DSYNC`). Above 1: pipelined through io_uring, a group
    /// confirmed only when it and every earlier one are durable; the kernel hands each such
    /// write to a worker thread, which collapsed under CPU load (bench-results/io-uring.md).
    pub journal_io_depth: usize,
    /// `always` | `periodic` | `never` (KahaDB's `journalDiskSyncStrategy`).
    pub sync: String,
    /// With `sync = "periodic"`: longest time written data stays unsynced
    /// (`journalDiskSyncInterval`), in ms.
    pub sync_interval_ms: u64,
    /// With `sync = "always"`: the longest time a consumer's acknowledgement that asked for no
    /// receipt (a STOMP ACK without `receipt`, an auto-ack, an asynchronous JMS ack) stays
    /// written but unsynced when no other write brings a flush, in ms (at most 10,000). A crash
    /// within that time redelivers the message, which at-least-once delivery allows; acks with
    /// a receipt and transaction commits stay synchronous. 0 = every ack is flushed on its own.
    /// `journal` and `lsm`; `sql` on PostgreSQL commits such acks with `synchronous_commit =
    /// off` when this is above 0.
    pub ack_sync_delay_ms: u64,
    /// Segment file size (`journalMaxFileLength`), in bytes.
    pub journal_max_file_length: u64,
    /// How journal segments' space is reserved (`preallocationStrategy`): `zeros` (segments
    /// zero-filled ahead of the writer, so a sync commits no filesystem metadata) or
    /// `sparse_file`.
    pub preallocation_strategy: String,
    /// Index checkpoint period (`checkpointInterval`), in ms.
    pub checkpoint_interval_ms: u64,
    /// Bytes of index blocks the journal's page cache keeps (KahaDB's `indexCacheSize`, in
    /// bytes rather than pages): with the blocks changed since the last checkpoint, the
    /// index's memory whatever the depth of the queues.
    pub index_cache_bytes: u64,
    /// Segment garbage-collection period (`cleanupInterval`), in ms.
    pub cleanup_interval_ms: u64,
    /// Skip corrupt journal records, logging each, instead of refusing to start
    /// (`checkForCorruptJournalFiles`).
    pub check_for_corrupt_journal_files: bool,
    /// Start even when journal segments are missing (`ignoreMissingJournalfiles`).
    pub ignore_missing_journal_files: bool,
    /// Stored message bytes at which producers of persistent messages wait
    /// (`storeUsage` limit); 0 = no limit.
    pub store_usage_limit: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: "journal".into(),
            url: String::new(),
            table_prefix: "activemq_".into(),
            create_tables_on_startup: true,
            journal_io: "portable".into(),
            journal_io_depth: ferromq_store::journal::IO_DEPTH_DEFAULT,
            sync: "always".into(),
            sync_interval_ms: 1000,
            ack_sync_delay_ms: ferromq_store::journal::ACK_SYNC_DELAY_MS_DEFAULT,
            journal_max_file_length: 32 * 1024 * 1024,
            preallocation_strategy: "zeros".into(),
            checkpoint_interval_ms: 5000,
            index_cache_bytes: ferromq_store::journal::pages::INDEX_CACHE_BYTES_DEFAULT,
            cleanup_interval_ms: 30_000,
            check_for_corrupt_journal_files: false,
            ignore_missing_journal_files: false,
            store_usage_limit: 0,
        }
    }
}

/// `[policy]`: ActiveMQ's destination policy and redelivery policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// The shared dead-letter queue.
    pub dead_letter_queue: String,
    /// `maximumRedeliveries` (-1: unlimited).
    pub maximum_redeliveries: i32,
    /// `processExpired`.
    pub process_expired: bool,
    /// `processNonPersistent`.
    pub process_non_persistent: bool,
    /// Per-destination memory limit before producer flow control (`memoryLimit`), in bytes.
    pub memory_limit_bytes: u64,
    /// Per non-durable topic subscriber memory before its oldest messages are discarded.
    pub topic_subscriber_memory_limit_bytes: u64,
    /// `sendFailIfNoSpaceAfterTimeout` in ms; 0 = block until space.
    pub send_fail_if_no_space_after_timeout_ms: u64,
    /// Default `activemq.prefetchSize` for queue subscriptions.
    pub queue_prefetch: u32,
    /// Default `activemq.prefetchSize` for topic subscriptions.
    pub topic_prefetch: u32,
    /// Most destinations the broker creates.
    pub max_destinations: usize,
    /// Duplicate ids (`_AMQ_DUPL_ID`) remembered and persisted per destination (Artemis's
    /// `id-cache-size`); 0 turns duplicate detection off.
    pub id_cache_size: usize,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            dead_letter_queue: "ActiveMQ.DLQ".into(),
            maximum_redeliveries: 6,
            process_expired: true,
            process_non_persistent: false,
            memory_limit_bytes: 64 * 1024 * 1024,
            topic_subscriber_memory_limit_bytes: 16 * 1024 * 1024,
            send_fail_if_no_space_after_timeout_ms: 0,
            queue_prefetch: 1000,
            topic_prefetch: 32766,
            max_destinations: 100_000,
            id_cache_size: 20_000,
        }
    }
}

/// `[stomp]`: the STOMP connector's behaviour and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StompSection {
    /// Most client connections at once (`maximumConnections`).
    pub max_connections: usize,
    /// Largest frame accepted, in bytes (`wireFormat.maxFrameSize`).
    pub max_frame_bytes: usize,
    /// Most headers per frame.
    pub max_headers: usize,
    /// Longest header line, in bytes.
    pub max_header_line_bytes: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most open transactions per connection.
    pub max_transactions: usize,
    /// Most frames (sends + acks) one transaction may hold.
    pub max_transaction_frames: usize,
    /// A connection must send CONNECT within this many ms.
    pub connect_timeout_ms: u64,
    /// A client that does not take its data within this many ms is disconnected
    /// (`transport.soWriteTimeout`); 0 = never.
    pub write_timeout_ms: u64,
    /// The shortest heart-beat interval the broker agrees to, in ms.
    pub heart_beat_min_ms: u64,
    /// Grace factor on the client's heart-beat interval before it counts as silent
    /// (`transport.hbGracePeriodMultiplier`).
    pub heart_beat_grace_multiplier: f64,
}

impl Default for StompSection {
    fn default() -> Self {
        StompSection {
            max_connections: 1000,
            max_frame_bytes: 16 * 1024 * 1024,
            max_headers: 1000,
            max_header_line_bytes: 10 * 1024,
            max_subscriptions: 1000,
            max_transactions: 100,
            max_transaction_frames: 100_000,
            connect_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            heart_beat_min_ms: 1000,
            heart_beat_grace_multiplier: 1.5,
        }
    }
}

/// `[openwire]`: the OpenWire connector's behaviour and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenWireSection {
    /// Most client connections at once (`maximumConnections`).
    pub max_connections: usize,
    /// Largest command accepted, in bytes (`wireFormat.maxFrameSize`).
    pub max_frame_bytes: usize,
    /// The inactivity timeout the broker offers (`wireFormat.maxInactivityDuration`); the
    /// smaller of the client's and this one applies; 0 = no inactivity monitoring.
    pub max_inactivity_duration_ms: u64,
    /// A connection must send its WireFormatInfo and ConnectionInfo within this many ms.
    pub connect_timeout_ms: u64,
    /// A client that does not take its data within this many ms is disconnected
    /// (`transport.soWriteTimeout`); 0 = never.
    pub write_timeout_ms: u64,
    /// Most consumers (browsers included) per connection.
    pub max_consumers: usize,
    /// Most producers per connection.
    pub max_producers: usize,
    /// Most open transactions per connection.
    pub max_transactions: usize,
    /// Most sends + acks one transaction may hold.
    pub max_transaction_ops: usize,
}

impl Default for OpenWireSection {
    fn default() -> Self {
        OpenWireSection {
            max_connections: 1000,
            max_frame_bytes: 64 * 1024 * 1024,
            max_inactivity_duration_ms: 30_000,
            connect_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            max_consumers: 1000,
            max_producers: 1000,
            max_transactions: 100,
            max_transaction_ops: 100_000,
        }
    }
}

/// `[security]`: simple authentication (ActiveMQ's `simpleAuthenticationPlugin`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// When non-empty, CONNECT must carry a matching `login`/`passcode`.
    pub users: Vec<User>,
    /// Destination rules (ActiveMQ's `authorizationPlugin`); none = every authenticated
    /// client may use every destination. See `crate::authz`.
    pub authorization: Vec<crate::authz::AuthorizationEntry>,
    /// Accept users whose `password` is plain text instead of a `ferromq passwd` hash.
    pub plaintext_passwords: bool,
    /// Clients that log in with a TLS client certificate instead of a password (ActiveMQ's
    /// `jaasCertificateAuthenticationPlugin`): needs `tls.need_client_auth` or
    /// `tls.want_client_auth`.
    pub certificate_users: Vec<CertificateUser>,
    /// Most connections open at once from one client address, over every listener
    /// together; 0 = no limit. One more is refused (STOMP: an ERROR frame) and logged.
    pub max_connections_per_ip: usize,
    /// A STOMP or OpenWire client that gives neither login nor password (nor a mapped client
    /// certificate) logs in as [`SecuritySection::anonymous_user`] in
    /// [`SecuritySection::anonymous_group`] instead of being refused (ActiveMQ's
    /// `anonymousAccessAllowed`); rules then decide what it may use. A wrong password is still
    /// refused. The admin API never takes anonymous requests.
    pub anonymous_access_allowed: bool,
    /// The anonymous client's login (ActiveMQ's `anonymousUser`).
    pub anonymous_user: String,
    /// The anonymous client's group (ActiveMQ's `anonymousGroup`).
    pub anonymous_group: String,
}

impl Default for SecuritySection {
    fn default() -> SecuritySection {
        SecuritySection {
            users: Vec::new(),
            authorization: Vec::new(),
            plaintext_passwords: false,
            certificate_users: Vec::new(),
            max_connections_per_ip: 0,
            anonymous_access_allowed: false,
            anonymous_user: "anonymous".into(),
            anonymous_group: "anonymous".into(),
        }
    }
}

/// A `[[security.certificate_users]]` entry: the client certificate whose subject is `subject`
/// logs in as `username`, in `groups`, without a password.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateUser {
    /// The login it gets (what rules, logs and the admin API's connection list show).
    pub username: String,
    /// The certificate's subject as an RFC 4514 string, most specific first, as `openssl
    /// x509 -noout -subject -nameopt RFC2253` prints it: `CN=orders-app,O=Acme,C=DE`.
    pub subject: String,
    /// Its groups, as a user's.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A user of `[security]`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The login.
    pub username: String,
    /// The passcode.
    pub password: String,
    /// Groups the user belongs to (ActiveMQ's `groups`). Members of [`ADMIN_GROUP`] may change
    /// state through the admin API (send, purge); others may only read it.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The group whose members may use the admin API's state-changing operations (ActiveMQ's
/// conventional `admins` group).
pub const ADMIN_GROUP: &str = "admins";

impl User {
    /// True when the user is in [`ADMIN_GROUP`].
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMIN_GROUP)
    }
}

/// `[admin]`: limits of the admin API and of `/metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Most destinations given their own series in `/metrics`; the rest are summed under
    /// `destination="_other"`, so a broker with many destinations cannot explode the scrape.
    pub metrics_destinations_max: usize,
    /// Most messages one browse (`GET /api/v1/queues/{name}/messages?limit=N`) returns.
    pub browse_limit_max: usize,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            metrics_destinations_max: 1000,
            browse_limit_max: 1000,
        }
    }
}

/// `[tls]`: the certificate the TLS listeners present and how they check clients' (ActiveMQ's
/// `sslContext` key and trust stores, as PEM files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CAs trusted to sign client certificates (the trust store).
    pub ca: PathBuf,
    /// Refuse, during the handshake, a client without a certificate signed by `ca`
    /// (`needClientAuth`).
    pub need_client_auth: bool,
    /// Ask for a client certificate and check it against `ca` when one is sent, but accept
    /// clients without one (`wantClientAuth`).
    pub want_client_auth: bool,
    /// A client must finish its TLS handshake within this many ms, or it is closed.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            ca: PathBuf::new(),
            need_client_auth: false,
            want_client_auth: false,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

const ENV_PREFIX: &str = "FERROMQ__";

impl Config {
    /// Reads `path` (if given), applies `FERROMQ__SECTION__KEY` overrides from `env`, and
    /// validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?,
            None => String::new(),
        };
        let mut doc: toml::Table = toml::from_str(&text).with_context(|| match path {
            Some(p) => format!("invalid TOML in {}", p.display()),
            None => "invalid TOML".into(),
        })?;
        for (k, v) in env {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let [section, key] = parts.as_slice() else {
                bail!("environment override {k}: expected FERROMQ__<SECTION>__<KEY>");
            };
            // Values are TOML when they parse as such (numbers, booleans), else strings.
            let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.clone()));
            let sec = doc
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(sec) = sec.as_table_mut() else {
                bail!("environment override {k}: [{section}] is not a table");
            };
            sec.insert(key.clone(), value);
        }
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| {
                anyhow::anyhow!("invalid configuration: {}", e.message())
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        crate::network::validate(&self.network_connectors)?;
        crate::security::Security::new(&self.security).map_err(anyhow::Error::msg)?;
        if !self.security.authorization.is_empty()
            && self.security.users.is_empty()
            && self.security.certificate_users.is_empty()
            && !self.security.anonymous_access_allowed
        {
            bail!(
                "security.authorization needs security.users (or security.certificate_users, \
                 or anonymous_access_allowed): rules name groups, and without users nobody logs \
                 in with any"
            );
        }
        let client_certificates = self.tls.need_client_auth || self.tls.want_client_auth;
        if !self.security.certificate_users.is_empty() && !client_certificates {
            bail!(
                "security.certificate_users needs tls.need_client_auth or tls.want_client_auth \
                 (and tls.ca): without them no client presents a certificate"
            );
        }
        if !self.transports.discovery.is_empty() {
            crate::network::discovery::DiscoveryUri::parse(&self.transports.discovery)
                .map_err(|e| anyhow::anyhow!("transports.discovery = {e}"))?;
        }
        match self.transports.discovery_transport.as_str() {
            "stomp" => {}
            "stomp+ssl" => {
                if self.stomp_ssl_listen_addr().is_none() {
                    bail!(
                        "transports.discovery_transport = \"stomp+ssl\" advertises the STOMP over \
                         TLS listener, but transports.stomp_ssl is not set"
                    );
                }
            }
            t => {
                bail!("transports.discovery_transport = {t:?}: expected \"stomp\" or \"stomp+ssl\"")
            }
        }
        let ssl_adv = self.transports.stomp_ssl_advertise.trim();
        if !ssl_adv.is_empty() {
            let addr = ssl_adv
                .strip_prefix("stomp+ssl://")
                .or_else(|| ssl_adv.strip_prefix("ssl://"));
            let host_port = |a: &str| {
                a.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                })
            };
            if !addr.is_some_and(host_port) {
                bail!(
                    "transports.stomp_ssl_advertise = {ssl_adv:?}: expected stomp+ssl://host:port"
                );
            }
        }
        if self.broker.name.is_empty() || self.broker.name.contains([':', '/']) {
            bail!("broker.name must be non-empty and contain no ':' or '/'");
        }
        match self.log.format.as_str() {
            "text" | "json" => {}
            f => bail!("log.format = {f:?}: expected \"text\" or \"json\""),
        }
        match self.store.sync.as_str() {
            "always" | "periodic" | "never" => {}
            s => bail!("store.sync = {s:?}: expected \"always\", \"periodic\" or \"never\""),
        }
        if self.store.ack_sync_delay_ms > ferromq_store::journal::ACK_SYNC_DELAY_MS_MAX {
            bail!(
                "store.ack_sync_delay_ms = {} is over {} ms",
                self.store.ack_sync_delay_ms,
                ferromq_store::journal::ACK_SYNC_DELAY_MS_MAX
            );
        }
        if self.stomp.max_connections == 0 {
            bail!("stomp.max_connections must be at least 1");
        }
        if self.stomp.max_frame_bytes < 1024 {
            bail!("stomp.max_frame_bytes must be at least 1024");
        }
        if self.openwire.max_connections == 0 {
            bail!("openwire.max_connections must be at least 1");
        }
        if self.openwire.max_frame_bytes < 4096 {
            bail!("openwire.max_frame_bytes must be at least 4096");
        }
        match self.store.backend.as_str() {
            "journal" | "lsm" | "sql" | "memory" => {}
            b => {
                bail!("store.backend = {b:?}: expected \"journal\", \"lsm\", \"sql\" or \"memory\"")
            }
        }
        match self.store.journal_io.as_str() {
            "auto" | "io-uring" | "portable" => {}
            j => bail!("store.journal_io = {j:?}: expected \"auto\", \"io-uring\" or \"portable\""),
        }
        let depth_max = ferromq_store::journal::IO_DEPTH_MAX;
        if !(1..=depth_max).contains(&self.store.journal_io_depth) {
            bail!(
                "store.journal_io_depth = {}: expected 1..={depth_max}",
                self.store.journal_io_depth
            );
        }
        match self.store.preallocation_strategy.as_str() {
            "zeros" | "sparse_file" => {}
            p => {
                bail!("store.preallocation_strategy = {p:?}: expected \"zeros\" or \"sparse_file\"")
            }
        }
        let ha_tls = [&self.ha.tls_cert, &self.ha.tls_key, &self.ha.tls_ca];
        if self.ha.mode != "replicated" && ha_tls.iter().any(|p| !p.as_os_str().is_empty()) {
            bail!(
                "ha.tls_cert, ha.tls_key and ha.tls_ca secure the replication link of ha.mode = \"replicated\" only (ha.mode = {:?}); the client listeners' TLS is in [tls]",
                self.ha.mode
            );
        }
        match self.ha.mode.as_str() {
            "none" => {}
            "shared-file" => {
                if self.store.backend != "journal" {
                    bail!("ha.mode = \"shared-file\" needs store.backend = \"journal\" on the shared data_dir");
                }
            }
            "shared-db" => {
                if self.store.backend != "sql" {
                    bail!("ha.mode = \"shared-db\" needs store.backend = \"sql\"");
                }
                if !(self.store.url.starts_with("postgres://")
                    || self.store.url.starts_with("postgresql://")
                    || self.store.url.starts_with("mysql://")
                    || self.store.url.starts_with("mariadb://"))
                {
                    bail!("ha.mode = \"shared-db\" needs store.url naming a PostgreSQL or MySQL/MariaDB server that every broker of the group shares");
                }
                match self.ha.locker.as_str() {
                    "lease" | "row" => {}
                    l => bail!("ha.locker = {l:?}: expected \"lease\" or \"row\""),
                }
                if self.ha.lease_ms < 200 {
                    bail!("ha.lease_ms must be at least 200");
                }
            }
            "replicated" => {
                // A slave's "disk" ack and the master's local_disk confirmation both come from
                // the local store: unless it syncs every write, "disk" would mean page cache,
                // and a recorded position could run ahead of what survives a crash.
                if self.store.sync != "always" {
                    bail!(
                        "ha.mode = \"replicated\" needs store.sync = \"always\" (got {:?}): a replica's \"disk\" acknowledgement must mean synced to disk, not the page cache; every broker of the group must use \"always\"",
                        self.store.sync
                    );
                }
                if !cfg!(feature = "zk") {
                    bail!("ha.mode = \"replicated\" needs a build with the `zk` feature");
                }
                if self.store.backend == "memory" {
                    bail!("ha.mode = \"replicated\" needs a persistent store.backend");
                }
                match self.ha.sync.as_str() {
                    "local_mem" | "local_disk" | "remote_mem" | "remote_disk" | "quorum_mem"
                    | "quorum_disk" => {}
                    s => bail!("ha.sync = {s:?}: expected local_mem, local_disk, remote_mem, remote_disk, quorum_mem or quorum_disk"),
                }
                if self.ha.replicas == 0 {
                    bail!("ha.replicas must be at least 1");
                }
                match self.ha.engine.as_str() {
                    "core" | "legacy" => {}
                    e => bail!("ha.engine = {e:?}: expected \"core\" or \"legacy\""),
                }
                if self.ha.broker_id > 1 << 31 {
                    bail!("ha.broker_id must be at most 2147483648 (0: allocated)");
                }
                if !self.ha.zk_path.starts_with('/') {
                    bail!("ha.zk_path must start with '/'");
                }
                if self.ha.zk_address.trim().is_empty() {
                    bail!("ha.zk_address must name at least one ZooKeeper server");
                }
                if self.ha.zk_session_timeout_ms < 100 {
                    bail!("ha.zk_session_timeout_ms must be at least 100");
                }
                if self.ha.master_timeout_ms != 0 && self.ha.master_timeout_ms < 50 {
                    bail!("ha.master_timeout_ms must be 0 (off) or at least 50");
                }
                // Reads and checks the files now: a bad certificate stops the start with its
                // key and path instead of failing every replication handshake later.
                #[cfg(feature = "zk")]
                crate::tls::replication_tls(&self.ha)?;
            }
            m => bail!(
                "ha.mode = {m:?}: expected \"none\", \"shared-file\", \"shared-db\" or \"replicated\""
            ),
        }
        if self.policy.queue_prefetch == 0 || self.policy.topic_prefetch == 0 {
            bail!("policy.queue_prefetch and policy.topic_prefetch must be at least 1");
        }
        self.validate_tls()
    }

    /// The listeners that asked for TLS, by their key.
    fn tls_listeners(&self) -> Vec<&'static str> {
        let t = &self.transports;
        let mut v = Vec::new();
        if !t.stomp_ssl.trim().is_empty() {
            v.push("transports.stomp_ssl");
        }
        if !t.openwire_ssl.trim().is_empty() {
            v.push("transports.openwire_ssl");
        }
        if t.admin_tls {
            v.push("transports.admin_tls");
        }
        v
    }

    fn validate_tls(&self) -> anyhow::Result<()> {
        let wanted = self.tls_listeners();
        if self.transports.admin_tls && self.transports.admin.trim().is_empty() {
            bail!("transports.admin_tls = true needs transports.admin (the address to serve HTTPS on)");
        }
        if self.tls.handshake_timeout_ms == 0 {
            bail!("tls.handshake_timeout_ms must be at least 1");
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let t = &self.tls;
        if t.cert.as_os_str().is_empty() || t.key.as_os_str().is_empty() {
            bail!(
                "{} needs tls.cert (PEM certificate chain) and tls.key (PEM private key) in [tls]",
                wanted.join(" and ")
            );
        }
        // Read and check the files now, so that a bad certificate stops the start with its
        // file name instead of failing every handshake later.
        crate::tls::server_config(t, &[])?;
        Ok(())
    }

    /// The address advertised to clients (`tcp://host:port`).
    pub fn advertised(&self) -> String {
        if self.transports.advertise.is_empty() {
            format!("tcp://{}", self.stomp_listen_addr())
        } else {
            self.transports.advertise.clone()
        }
    }

    /// The service discovery advertises (`transports.discovery_transport`): the STOMP address
    /// (`tcp://…`), or the STOMP over TLS one (`stomp+ssl://…`). `stomp_addr` and
    /// `stomp_ssl_addr` are the bound addresses: with port 0 the real port is only known
    /// once listening.
    pub fn discovery_service(
        &self,
        stomp_addr: std::net::SocketAddr,
        stomp_ssl_addr: Option<std::net::SocketAddr>,
    ) -> String {
        if self.transports.discovery_transport == "stomp+ssl" {
            if !self.transports.stomp_ssl_advertise.is_empty() {
                return self.transports.stomp_ssl_advertise.trim().to_string();
            }
            // `validate` refused stomp+ssl without a TLS listener; should it be missing
            // anyway, the plain address below is still a true one.
            if let Some(a) = stomp_ssl_addr {
                return format!("stomp+ssl://{a}");
            }
        }
        if self.transports.advertise.is_empty() {
            format!("tcp://{stomp_addr}")
        } else {
            self.advertised()
        }
    }

    /// The OpenWire address advertised to clients, when OpenWire is on.
    pub fn openwire_advertised(&self) -> Option<String> {
        if !self.transports.openwire_advertise.is_empty() {
            return Some(self.transports.openwire_advertise.clone());
        }
        self.openwire_listen_addr().map(|a| format!("tcp://{a}"))
    }

    /// What this broker registers in its group's member list: its advertised STOMP address,
    /// then its OpenWire address (see [`crate::cluster`]).
    pub fn member_entry(&self) -> String {
        match self.openwire_advertised() {
            Some(ow) => format!("{} {ow}", self.advertised()),
            None => self.advertised(),
        }
    }

    /// The holder id of this broker in HA locks and member lists.
    pub fn holder(&self) -> String {
        if self.ha.holder_id.is_empty() {
            format!("{}-{}", self.broker.name, std::process::id())
        } else {
            self.ha.holder_id.clone()
        }
    }

    /// The OpenWire listen address without an optional `tcp://` or `openwire://` scheme and
    /// its `?options`; `None` when OpenWire is off.
    pub fn openwire_listen_addr(&self) -> Option<&str> {
        let s = self.transports.openwire.trim();
        if s.is_empty() {
            return None;
        }
        let s = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("openwire://"))
            .unwrap_or(s);
        Some(s.split('?').next().unwrap_or(s))
    }

    /// The STOMP over TLS listen address without an optional `stomp+ssl://`, `stomp+tls://`
    /// or `ssl://` scheme and its `?options`; `None` when off.
    pub fn stomp_ssl_listen_addr(&self) -> Option<&str> {
        strip_listen(
            &self.transports.stomp_ssl,
            &["stomp+ssl://", "stomp+tls://", "ssl://"],
        )
    }

    /// The OpenWire over TLS listen address without an optional `ssl://` or `tls://` scheme
    /// and its `?options`; `None` when off.
    pub fn openwire_ssl_listen_addr(&self) -> Option<&str> {
        strip_listen(&self.transports.openwire_ssl, &["ssl://", "tls://"])
    }

    /// The STOMP listen address without an optional `stomp://` or `tcp://` scheme.
    pub fn stomp_listen_addr(&self) -> &str {
        let s = self.transports.stomp.as_str();
        s.strip_prefix("stomp://")
            .or_else(|| s.strip_prefix("tcp://"))
            .unwrap_or(s)
    }
}

/// `s` without the first of `schemes` it starts with and without its `?options`; `None` when
/// empty.
fn strip_listen<'a>(s: &'a str, schemes: &[&str]) -> Option<&'a str> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let s = schemes.iter().find_map(|p| s.strip_prefix(p)).unwrap_or(s);
    Some(s.split('?').next().unwrap_or(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_activemq_defaults() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.transports.stomp, "127.0.0.1:61613");
        assert_eq!(c.policy.dead_letter_queue, "ActiveMQ.DLQ");
        assert_eq!(c.policy.maximum_redeliveries, 6);
        assert_eq!(c.store.sync, "always");
        assert_eq!(c.store.backend, "journal");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "[broker]\nname = \"b\"\nnmae = \"typo\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), Vec::new()).unwrap_err());
        assert!(err.contains("nmae"), "{err}");
        std::fs::write(&p, "[brokr]\nname = \"b\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), Vec::new()).unwrap_err());
        assert!(err.contains("brokr"), "{err}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        assert!(!Config::load(None, Vec::new()).unwrap().log.json());
        std::fs::write(&p, "[log]\nformat = \"json\"\n").unwrap();
        assert!(Config::load(Some(&p), Vec::new()).unwrap().log.json());
        std::fs::write(&p, "[log]\nformat = \"xml\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), Vec::new()).unwrap_err());
        assert!(err.contains("log.format"), "{err}");
        let c = env_config(&[("FERROMQ__LOG__FORMAT", "json")]).unwrap();
        assert!(c.log.json(), "overridable from the environment");
    }

    fn env_config(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::load(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn shared_db_needs_the_sql_backend_on_a_database_server() {
        let err = format!(
            "{:#}",
            env_config(&[("FERROMQ__HA__MODE", "shared-db")]).unwrap_err()
        );
        assert!(err.contains("store.backend = \"sql\""), "{err}");
        let err = format!(
            "{:#}",
            env_config(&[
                ("FERROMQ__HA__MODE", "shared-db"),
                ("FERROMQ__STORE__BACKEND", "sql"),
                ("FERROMQ__STORE__URL", "sqlite:///tmp/x.db"),
            ])
            .unwrap_err()
        );
        assert!(err.contains("PostgreSQL or MySQL"), "{err}");
        let c = env_config(&[
            ("FERROMQ__HA__MODE", "shared-db"),
            ("FERROMQ__STORE__BACKEND", "sql"),
            ("FERROMQ__STORE__URL", "postgres://u@127.0.0.1:5433/db"),
            ("FERROMQ__HA__LOCKER", "row"),
        ])
        .unwrap();
        assert_eq!(c.ha.locker, "row");
        let err = format!(
            "{:#}",
            env_config(&[
                ("FERROMQ__HA__MODE", "shared-db"),
                ("FERROMQ__STORE__BACKEND", "sql"),
                ("FERROMQ__STORE__URL", "mysql://u@127.0.0.1:3307/db"),
                ("FERROMQ__HA__LOCKER", "table"),
            ])
            .unwrap_err()
        );
        assert!(err.contains("ha.locker"), "{err}");
    }

    #[test]
    fn unknown_backends_and_journal_io_are_errors() {
        let err = format!(
            "{:#}",
            env_config(&[("FERROMQ__STORE__BACKEND", "leveldb")]).unwrap_err()
        );
        assert!(err.contains("\"lsm\""), "{err}");
        let err = format!(
            "{:#}",
            env_config(&[("FERROMQ__STORE__JOURNAL_IO", "aio")]).unwrap_err()
        );
        assert!(err.contains("io-uring"), "{err}");
        for depth in ["0", "65"] {
            let err = format!(
                "{:#}",
                env_config(&[("FERROMQ__STORE__JOURNAL_IO_DEPTH", depth)]).unwrap_err()
            );
            assert!(err.contains("journal_io_depth"), "{err}");
        }
        let c = env_config(&[("FERROMQ__STORE__JOURNAL_IO_DEPTH", "16")]).unwrap();
        assert_eq!(c.store.journal_io_depth, 16);
    }

    #[test]
    fn environment_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "[transports]\nstomp = \"127.0.0.1:1\"\n").unwrap();
        let env = vec![
            (
                "FERROMQ__TRANSPORTS__STOMP".to_string(),
                "127.0.0.1:2".to_string(),
            ),
            (
                "FERROMQ__POLICY__MAXIMUM_REDELIVERIES".to_string(),
                "3".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&p), env).unwrap();
        assert_eq!(c.transports.stomp, "127.0.0.1:2");
        assert_eq!(c.policy.maximum_redeliveries, 3);
    }

    #[test]
    fn replicated_mode_has_activemq_defaults_and_checks_its_values() {
        let c = Config::default();
        assert_eq!(c.ha.replicas, 3);
        assert_eq!(c.ha.zk_path, "/default");
        assert_eq!(c.ha.zk_session_timeout_ms, 2000);
        assert_eq!(c.ha.bind, "tcp://0.0.0.0:61619");
        assert_eq!(c.ha.sync, "quorum_disk");
        let env = |k: &str, v: &str| (k.to_string(), v.to_string());
        let bad_sync = vec![
            env("FERROMQ__HA__MODE", "replicated"),
            env("FERROMQ__HA__SYNC", "quorum"),
        ];
        assert!(Config::load(None, bad_sync).is_err());
        let bad_path = vec![
            env("FERROMQ__HA__MODE", "replicated"),
            env("FERROMQ__HA__ZK_PATH", "relative"),
        ];
        assert!(Config::load(None, bad_path).is_err());
        let ok = vec![
            env("FERROMQ__HA__MODE", "replicated"),
            env("FERROMQ__HA__SYNC", "remote_mem"),
        ];
        assert_eq!(Config::load(None, ok).is_ok(), cfg!(feature = "zk"));
    }

    #[test]
    fn replicated_mode_refuses_a_store_that_does_not_sync_every_write() {
        let env = |k: &str, v: &str| (k.to_string(), v.to_string());
        for sync in ["periodic", "never"] {
            let r = Config::load(
                None,
                vec![
                    env("FERROMQ__HA__MODE", "replicated"),
                    env("FERROMQ__STORE__SYNC", sync),
                ],
            );
            let err = format!("{:#}", r.unwrap_err());
            assert!(
                err.contains("store.sync") && err.contains("\"always\""),
                "{sync}: {err}"
            );
        }
        let always = vec![
            env("FERROMQ__HA__MODE", "replicated"),
            env("FERROMQ__STORE__SYNC", "always"),
        ];
        assert_eq!(Config::load(None, always).is_ok(), cfg!(feature = "zk"));
        // Outside replicated mode, periodic stays a legitimate trade-off.
        let single = vec![env("FERROMQ__STORE__SYNC", "periodic")];
        assert!(Config::load(None, single).is_ok());
    }

    #[test]
    fn tls_listen_addresses_accept_activemq_schemes_and_drop_options() {
        let mut c = Config::default();
        c.transports.stomp_ssl = "stomp+ssl://0.0.0.0:61612?transport.needClientAuth=true".into();
        c.transports.openwire_ssl = "ssl://0.0.0.0:61617".into();
        assert_eq!(c.stomp_ssl_listen_addr(), Some("0.0.0.0:61612"));
        assert_eq!(c.openwire_ssl_listen_addr(), Some("0.0.0.0:61617"));
        c.transports.stomp_ssl = " ".into();
        assert_eq!(c.stomp_ssl_listen_addr(), None);
    }

    #[test]
    fn invalid_values_are_rejected() {
        let env = vec![("FERROMQ__STORE__SYNC".to_string(), "sometimes".to_string())];
        assert!(Config::load(None, env).is_err());
    }
}
