//! The JSON admin API under `/api/v1`, `/metrics` and `/status`, on axum (and the web console
//! of [`super::console`] at `/`).
//!
//! Handlers read the broker through its own API ([`Broker::snapshot`], [`Broker::browse`],
//! [`Broker::purge`], [`Broker::send`]): nothing here knows a protocol, and a message sent
//! through the API takes the same path as a STOMP SEND.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use ferromq_broker::{BrokerError, Destination, Message, DEFAULT_PRIORITY, MAX_PRIORITY};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::metrics::{self, DestinationCounters, Scrape};
use super::{LiveServer, Status};
use crate::config::Config;

/// Messages a browse returns when the request names no `limit`.
const BROWSE_LIMIT_DEFAULT: usize = 100;

/// How long a send through the API waits for the broker (flow control, the store) before it
/// answers 503. The send itself is not cancelled: it runs in its own task and may still
/// complete.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most dead-lettered messages one `POST /api/v1/queues/{name}/retry` sends back: one store
/// batch of at most twice this many ops, and one pass over the queue under its lock. A larger
/// queue takes several calls (the answer says how many messages remain).
pub(crate) const RETRY_BATCH_MAX: usize = 1000;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    status: watch::Receiver<Status>,
    cfg: Arc<Config>,
    /// The users a SIGHUP reload keeps current; without it, `security`.
    live: Option<Arc<crate::reload::LiveConfig>>,
    /// `cfg`'s users, compiled once, for an endpoint without `live`.
    security: Arc<crate::security::Security>,
    started: Instant,
}

/// The subject of the client certificate the TLS handshake of a request's connection verified
/// (`tls.ca`), put in the request's extensions by the accept loop for the access check.
#[derive(Debug, Clone)]
pub(crate) struct ClientCert(pub(crate) crate::dn::Dn);

impl AppState {
    /// The state of an endpoint started now.
    pub(crate) fn new(status: watch::Receiver<Status>, cfg: Arc<Config>) -> AppState {
        // A loaded configuration has compiled already; should a hand-built one not, its
        // password users still protect the endpoint (never an open one for a bad rule).
        let security = crate::security::Security::new(&cfg.security).unwrap_or_else(|_| {
            crate::security::Security {
                users: cfg.security.users.clone(),
                ..Default::default()
            }
        });
        AppState {
            status,
            cfg,
            live: None,
            security: Arc::new(security),
            started: Instant::now(),
        }
    }

    /// Checks logins against the users `live` has now instead of the start-up configuration's.
    pub(crate) fn with_live(mut self, live: Arc<crate::reload::LiveConfig>) -> AppState {
        self.live = Some(live);
        self
    }

    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The serving broker, or 503 naming the role this process is in.
    fn master(&self) -> Result<LiveServer, ApiError> {
        let st = self.status.borrow();
        st.live.0.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this broker is not serving (role: {}); ask the master",
                    st.role
                ),
            )
        })
    }
}

/// The router: every route, the body limit and the access check.
pub(crate) fn router(state: AppState) -> Router {
    // A message sent through the API is at most as large as a STOMP frame may be, plus room
    // for its JSON quoting of headers.
    let body_max = state.cfg.stomp.max_frame_bytes.saturating_add(64 * 1024);
    Router::new()
        .merge(super::console::routes())
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/broker", get(broker))
        .route("/api/v1/ha", get(ha))
        .route("/api/v1/bridges", get(bridges))
        .route("/api/v1/queues", get(list_queues))
        .route("/api/v1/queues/{name}", get(one_queue).delete(delete_queue))
        .route(
            "/api/v1/queues/{name}/messages",
            get(browse).post(send_message),
        )
        .route("/api/v1/queues/{name}/purge", post(purge))
        .route("/api/v1/queues/{name}/retry", post(retry_all))
        .route(
            "/api/v1/queues/{name}/messages/{message_id}",
            delete(remove_message),
        )
        .route(
            "/api/v1/queues/{name}/messages/{message_id}/move",
            post(move_message),
        )
        .route(
            "/api/v1/queues/{name}/messages/{message_id}/copy",
            post(copy_message),
        )
        .route(
            "/api/v1/queues/{name}/messages/{message_id}/retry",
            post(retry_message),
        )
        .route("/api/v1/topics", get(list_topics))
        .route("/api/v1/topics/{name}", delete(delete_topic))
        .route("/api/v1/subscriptions", get(subscriptions))
        .route(
            "/api/v1/subscriptions/{client_id}/{name}",
            delete(delete_subscription),
        )
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/connections/{id}", delete(close_connection))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), access))
        .layer(DefaultBodyLimit::max(body_max))
        .with_state(state)
}

/// A JSON error answer, `{"error": "<reason>"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }

    fn no_queue(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no such queue: {name}"))
    }
}

// axum's own rejections (a body over the limit, a bad query string) answer in plain text;
// these keep every error JSON, with axum's status and reason.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> ApiError {
        ApiError::new(e.status(), e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new(e.status(), e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::new(e.status(), e.body_text())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        let status = match &e {
            BrokerError::InvalidDestination(_) => StatusCode::BAD_REQUEST,
            BrokerError::NoSuchDestination(_) | BrokerError::NotFound(_) => StatusCode::NOT_FOUND,
            BrokerError::InUse(_) => StatusCode::CONFLICT,
            BrokerError::UnknownDelivery(_) => StatusCode::BAD_REQUEST,
            BrokerError::Store(_)
            | BrokerError::ResourceExhausted(_)
            | BrokerError::Limit(_)
            | BrokerError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: &self.reason,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"ferromq\""),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Authentication, authorisation and the CSRF rule, before any handler (see [`super::auth`]).
async fn access(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let security = match &state.live {
        Some(l) => l.security(),
        None => state.security.clone(),
    };
    let client_cert = req.extensions().get::<ClientCert>().map(|c| &c.0);
    match super::auth::check(
        &security,
        client_cert,
        req.method(),
        req.uri().path(),
        req.headers(),
    ) {
        Ok(()) => next.run(req).await,
        Err(r) => ApiError::new(r.status, r.reason).into_response(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here: see docs/operations.md",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint: see GET /status, /metrics and /api/v1 in docs/operations.md",
    )
}

/// `GET /status`: the document `ferromq status` reads, unchanged.
async fn status(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.status().to_json(),
    )
        .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let status = state.status();
    let live = status.live.0.clone();
    let max = state.cfg.admin.metrics_destinations_max;
    let uptime = state.started.elapsed().as_secs_f64();
    // Snapshots lock every list once; done off the async workers so a large broker's scrape
    // does not hold up the endpoint's other requests.
    match tokio::task::spawn_blocking(move || {
        Scrape::gather(status, uptime, live.as_ref(), max).render()
    })
    .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scrape failed: {e}"),
        )
        .into_response(),
    }
}

/// `GET /api/v1/broker`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct BrokerInfo {
    name: String,
    version: &'static str,
    uptime_ms: u64,
    ha_mode: String,
    role: String,
    epoch: u64,
    /// Where STOMP listens, when master.
    stomp: String,
    /// Absent on a slave (its store belongs to the master).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destinations: Option<DestinationCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatch_paused: Option<bool>,
}

#[derive(Debug, Serialize, PartialEq)]
struct StoreInfo {
    kind: &'static str,
    usage_bytes: u64,
    /// 0 = no limit.
    usage_limit_bytes: u64,
}

#[derive(Debug, Serialize, PartialEq)]
struct MemoryInfo {
    /// Message bytes held in memory by every queue and subscription.
    used_bytes: u64,
    /// The limit of each destination (`policy.memory_limit_bytes`); there is no broker-wide
    /// limit.
    destination_limit_bytes: u64,
    topic_subscriber_limit_bytes: u64,
}

#[derive(Debug, Serialize, PartialEq)]
struct DestinationCount {
    queues: u64,
    topic_subscriptions: u64,
}

async fn broker(State(state): State<AppState>) -> Json<BrokerInfo> {
    let st = state.status();
    let mut info = BrokerInfo {
        name: st.broker.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        ha_mode: st.ha_mode.clone(),
        role: st.role.clone(),
        epoch: st.epoch,
        stomp: st.stomp.clone(),
        store: None,
        memory: None,
        destinations: None,
        connections: None,
        dispatch_paused: None,
    };
    if let Some(live) = &st.live.0 {
        let b = &live.broker;
        let lists = b.snapshot();
        let cfg = b.config();
        info.store = Some(StoreInfo {
            kind: b.store().kind(),
            usage_bytes: b.store().usage_bytes(),
            usage_limit_bytes: cfg.store_usage_limit_bytes,
        });
        info.memory = Some(MemoryInfo {
            used_bytes: lists.iter().map(|l| l.memory_bytes).sum(),
            destination_limit_bytes: cfg.destination_memory_limit_bytes,
            topic_subscriber_limit_bytes: cfg.topic_subscriber_memory_limit_bytes,
        });
        let queues = metrics::queues(&lists).len() as u64;
        info.destinations = Some(DestinationCount {
            queues,
            topic_subscriptions: (lists.len() as u64).saturating_sub(queues),
        });
        info.connections = Some(live.connections.snapshot().len() as u64);
        info.dispatch_paused = Some(b.dispatch_paused());
    }
    Json(info)
}

/// `GET /api/v1/ha`: this broker's HA mode, role and epoch; a replicating master adds its log
/// position and each connected slave's acknowledged position and lag.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct HaInfo {
    /// `none`, `shared-file`, `shared-db`, `replicated`.
    mode: String,
    /// `starting`, `slave`, `master`, `deposed`.
    role: String,
    /// The mastership epoch (0 when not master or without HA).
    epoch: u64,
    /// `ha.sync` and `ha.replicas`, in the replicated mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<u64>,
    /// Present while this broker is a replicating master; `null` otherwise (a slave knows
    /// only its own position, and other modes do not replicate).
    replication: Option<ReplicationInfo>,
    /// This broker's failover history.
    failover: FailoverInfo,
}

/// How often and why this broker became master, lost mastership and was suspended, since
/// `since_unix_ms` (across restarts: see [`super::history`]).
#[derive(Debug, Serialize, PartialEq)]
struct FailoverInfo {
    /// When the history began: the start of the earliest run it holds.
    since_unix_ms: Option<u64>,
    /// When this process started: an event before it comes from an earlier run.
    process_started_unix_ms: Option<u64>,
    /// Times this broker became master.
    masterships: u64,
    /// The last time it did; `null` if it never was.
    last_became_master: Option<BecameMasterInfo>,
    /// Times it lost mastership.
    lost_masterships: u64,
    /// The last time it lost mastership; `null` if it never did.
    last_lost_mastership: Option<LostMastershipInfo>,
    /// Times, as master, it was suspended (confirming and dispatching nothing).
    suspensions: u64,
    /// Whether it is suspended now.
    suspended_now: bool,
    /// When the suspension going on began; `null` when not suspended.
    suspended_since_unix_ms: Option<u64>,
    /// Time spent suspended, an ongoing suspension counted up to now.
    suspended_ms_total: u64,
    /// The last suspension, ongoing or over; `null` if there was none.
    last_suspension: Option<SuspensionInfo>,
    /// The most recent events, newest first, at most
    /// [`EVENTS_MAX`](super::history::EVENTS_MAX) of them.
    history: Vec<EventInfo>,
}

/// One event of the recent history: `kind` is `became_master`, `lost_mastership` or
/// `suspension`, with the fields of `last_became_master`, `last_lost_mastership` or
/// `last_suspension` respectively.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EventInfo {
    BecameMaster(BecameMasterInfo),
    LostMastership(LostMastershipInfo),
    Suspension(SuspensionInfo),
}

#[derive(Debug, Serialize, PartialEq)]
struct BecameMasterInfo {
    /// RFC 3339, UTC.
    at: String,
    at_unix_ms: u64,
    epoch: u64,
    reason: String,
    /// From seeing the previous master gone (or starting to compete, when there was none) to
    /// serving clients; `null` when the HA mode cannot tell.
    takeover_ms: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
struct LostMastershipInfo {
    at: String,
    at_unix_ms: u64,
    epoch: u64,
    reason: String,
}

#[derive(Debug, Serialize, PartialEq)]
struct SuspensionInfo {
    /// RFC 3339, UTC.
    from: String,
    from_unix_ms: u64,
    /// `null` while it goes on, and when the process ended during it (then its end is not
    /// known).
    to: Option<String>,
    to_unix_ms: Option<u64>,
    /// Up to now while it goes on; `null` when its end is not known.
    duration_ms: Option<u64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl FailoverInfo {
    fn new(f: &super::Failover, now: std::time::SystemTime) -> FailoverInfo {
        use super::{unix_ms, SuspensionEnd};
        let ongoing = f
            .last_suspension
            .filter(|s| s.end == SuspensionEnd::Ongoing);
        FailoverInfo {
            since_unix_ms: f.since.map(unix_ms),
            process_started_unix_ms: f.process_started.map(unix_ms),
            masterships: f.masterships,
            last_became_master: f.last_became_master.as_ref().map(BecameMasterInfo::new),
            lost_masterships: f.losses,
            last_lost_mastership: f.last_lost.as_ref().map(LostMastershipInfo::new),
            suspensions: f.suspensions,
            suspended_now: ongoing.is_some(),
            suspended_since_unix_ms: ongoing.map(|s| unix_ms(s.from)),
            suspended_ms_total: millis(f.suspended_total(now)),
            last_suspension: f.last_suspension.map(|s| SuspensionInfo::new(&s, now)),
            history: f
                .events
                .iter()
                .rev()
                .map(|e| match e {
                    super::Event::BecameMaster(b) => {
                        EventInfo::BecameMaster(BecameMasterInfo::new(b))
                    }
                    super::Event::LostMastership(l) => {
                        EventInfo::LostMastership(LostMastershipInfo::new(l))
                    }
                    super::Event::Suspension(s) => {
                        EventInfo::Suspension(SuspensionInfo::new(s, now))
                    }
                })
                .collect(),
        }
    }
}

impl BecameMasterInfo {
    fn new(b: &super::BecameMaster) -> BecameMasterInfo {
        use super::{rfc3339, unix_ms};
        BecameMasterInfo {
            at: rfc3339(b.at),
            at_unix_ms: unix_ms(b.at),
            epoch: b.epoch,
            reason: b.reason.clone(),
            takeover_ms: b.takeover.map(millis),
        }
    }
}

impl LostMastershipInfo {
    fn new(l: &super::LostMastership) -> LostMastershipInfo {
        use super::{rfc3339, unix_ms};
        LostMastershipInfo {
            at: rfc3339(l.at),
            at_unix_ms: unix_ms(l.at),
            epoch: l.epoch,
            reason: l.reason.clone(),
        }
    }
}

impl SuspensionInfo {
    fn new(s: &super::Suspension, now: std::time::SystemTime) -> SuspensionInfo {
        use super::{rfc3339, unix_ms, SuspensionEnd};
        let to = match s.end {
            SuspensionEnd::At(t) => Some(t),
            SuspensionEnd::Ongoing | SuspensionEnd::Unknown => None,
        };
        SuspensionInfo {
            from: rfc3339(s.from),
            from_unix_ms: unix_ms(s.from),
            to: to.map(rfc3339),
            to_unix_ms: to.map(unix_ms),
            duration_ms: s.duration(now).map(millis),
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
struct ReplicationInfo {
    /// The last log position the master assigned.
    last_lsn: u64,
    /// The highest position the master's own store confirmed.
    local_lsn: u64,
    /// Slave acknowledgements a write waits for, and whether they mean durable.
    slave_acks_required: u64,
    slave_acks_durable: bool,
    slaves: Vec<SlaveInfo>,
}

#[derive(Debug, Serialize, PartialEq)]
struct SlaveInfo {
    member: String,
    /// What the sync mode counts: `durable_lsn` when acknowledgements mean durable, else
    /// `received_lsn`.
    acked_lsn: u64,
    received_lsn: u64,
    durable_lsn: u64,
    /// `last_lsn - acked_lsn`.
    lag_entries: u64,
    queued_bytes: u64,
}

impl HaInfo {
    fn new(st: &Status, cfg: &Config) -> HaInfo {
        let replicated = st.ha_mode == "replicated";
        HaInfo {
            mode: st.ha_mode.clone(),
            role: st.role.clone(),
            epoch: st.epoch,
            sync: replicated.then(|| cfg.ha.sync.clone()),
            replicas: replicated.then_some(cfg.ha.replicas as u64),
            replication: st.replication.read().map(|r| ReplicationInfo {
                last_lsn: r.last_lsn,
                local_lsn: r.local_lsn,
                slave_acks_required: r.slave_acks_required,
                slave_acks_durable: r.slave_acks_durable,
                slaves: r
                    .slaves
                    .into_iter()
                    .map(|s| SlaveInfo {
                        member: s.member,
                        acked_lsn: s.acked_lsn,
                        received_lsn: s.received_lsn,
                        durable_lsn: s.durable_lsn,
                        lag_entries: s.lag_entries,
                        queued_bytes: s.queued_bytes,
                    })
                    .collect(),
            }),
            failover: FailoverInfo::new(&st.failover, std::time::SystemTime::now()),
        }
    }
}

async fn ha(State(state): State<AppState>) -> Json<HaInfo> {
    Json(HaInfo::new(&state.status(), &state.cfg))
}

/// One network bridge in `GET /api/v1/bridges`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct BridgeInfo {
    /// Its network connector's name.
    name: String,
    /// The addresses it connects to, in order.
    addrs: Vec<String>,
    /// The remote broker's name, once a connection told it (empty before).
    remote: String,
    /// `connected`, or `connecting` while it has no connection up (it retries).
    state: &'static str,
    /// Connections made since it started.
    connects: u64,
    /// Network consumers it holds on this broker now.
    network_consumers: u64,
    /// Messages sent to the remote and confirmed by it.
    forwarded: u64,
    /// Duplex: messages pulled from the remote and stored here.
    pulled: u64,
}

#[derive(Serialize)]
struct Bridges {
    bridges: Vec<BridgeInfo>,
}

/// The bridges in `st`, counters read now.
pub(crate) fn bridge_infos(st: &Status) -> Vec<BridgeInfo> {
    use std::sync::atomic::Ordering::Relaxed;
    st.bridges
        .snapshot()
        .into_iter()
        .map(|b| BridgeInfo {
            name: b.connector,
            addrs: b.addrs,
            remote: b.stats.remote.lock().clone(),
            state: if b.stats.connected.load(Relaxed) {
                "connected"
            } else {
                "connecting"
            },
            connects: b.stats.connects.load(Relaxed),
            network_consumers: b.stats.consumers.load(Relaxed),
            forwarded: b.stats.forwarded.load(Relaxed),
            pulled: b.stats.pulled.load(Relaxed),
        })
        .collect()
}

/// `GET /api/v1/bridges`: the network bridges of a master (a slave runs none: an empty list).
async fn bridges(State(state): State<AppState>) -> Json<Bridges> {
    Json(Bridges {
        bridges: bridge_infos(&state.status()),
    })
}

/// One queue in `GET /api/v1/queues`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct QueueInfo {
    name: String,
    temporary: bool,
    /// Messages not yet acknowledged (ActiveMQ's `QueueSize`): pending plus in flight.
    depth: u64,
    pending: u64,
    inflight: u64,
    consumers: u64,
    /// OpenWire producers with this queue as their fixed destination (STOMP has no producers).
    producers: u64,
    memory_bytes: u64,
    /// The queue's memory window (`policy.memory_limit_bytes`); 0 = unbounded.
    memory_limit_bytes: u64,
    /// Waiting messages held only in the store (paged out past the memory window), counted
    /// in `pending` too.
    paged_out: u64,
    enqueued: u64,
    dequeued: u64,
    dispatched: u64,
    expired: u64,
    dead_lettered: u64,
}

impl QueueInfo {
    fn new(name: String, temporary: bool, c: &DestinationCounters) -> QueueInfo {
        QueueInfo {
            name,
            temporary,
            depth: c.depth,
            pending: c.depth - c.inflight,
            inflight: c.inflight,
            consumers: c.consumers,
            producers: c.producers,
            memory_bytes: c.memory_bytes,
            memory_limit_bytes: c.memory_limit_bytes,
            paged_out: c.paged_out,
            enqueued: c.enqueued,
            dequeued: c.dequeued,
            dispatched: c.dispatched,
            expired: c.expired,
            dead_lettered: c.dead_lettered,
        }
    }
}

#[derive(Serialize)]
struct Queues {
    queues: Vec<QueueInfo>,
}

async fn list_queues(State(state): State<AppState>) -> ApiResult<Json<Queues>> {
    let live = state.master()?;
    let queues = metrics::queues(&live.broker.snapshot())
        .into_iter()
        .map(|(name, (temporary, c))| QueueInfo::new(name, temporary, &c))
        .collect();
    Ok(Json(Queues { queues }))
}

async fn one_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueInfo>> {
    let live = state.master()?;
    let s = live
        .broker
        .queue_snapshot(&Destination::queue(&name))
        .ok_or_else(|| ApiError::no_queue(&name))?;
    let mut c = DestinationCounters::default();
    c.add(&s);
    Ok(Json(QueueInfo::new(name, false, &c)))
}

/// One topic (or wildcard pattern) in `GET /api/v1/topics`, summed over its subscriptions.
#[derive(Debug, Serialize, PartialEq)]
struct TopicInfo {
    name: String,
    subscriptions: u64,
    durable_subscriptions: u64,
    consumers: u64,
    /// Messages waiting in, or in flight from, its subscriptions.
    depth: u64,
    inflight: u64,
    memory_bytes: u64,
    /// Waiting copies held only in the store (durable subscriptions paged out).
    paged_out: u64,
    /// Copies added to its subscriptions (one per subscription a message reached).
    enqueued: u64,
    dequeued: u64,
    dispatched: u64,
    expired: u64,
    dead_lettered: u64,
    discarded: u64,
}

#[derive(Serialize)]
struct Topics {
    topics: Vec<TopicInfo>,
}

async fn list_topics(State(state): State<AppState>) -> ApiResult<Json<Topics>> {
    let live = state.master()?;
    let topics = metrics::topics(&live.broker.topic_subscriptions())
        .into_iter()
        .map(|(name, (durable, c))| TopicInfo {
            name,
            subscriptions: c.subscriptions,
            durable_subscriptions: durable,
            consumers: c.consumers,
            depth: c.depth,
            inflight: c.inflight,
            memory_bytes: c.memory_bytes,
            paged_out: c.paged_out,
            enqueued: c.enqueued,
            dequeued: c.dequeued,
            dispatched: c.dispatched,
            expired: c.expired,
            dead_lettered: c.dead_lettered,
            discarded: c.discarded,
        })
        .collect();
    Ok(Json(Topics { topics }))
}

#[derive(Serialize)]
struct ConnectionInfo {
    /// What `DELETE /api/v1/connections/{id}` names.
    id: u64,
    protocol: &'static str,
    remote: String,
    since_ms: u64,
    /// As the client gave it (checked only when `[security]` has users).
    login: Option<String>,
    client_id: Option<String>,
}

#[derive(Serialize)]
struct Connections {
    connections: Vec<ConnectionInfo>,
}

async fn connections(State(state): State<AppState>) -> ApiResult<Json<Connections>> {
    let live = state.master()?;
    let connections = live
        .connections
        .snapshot()
        .into_iter()
        .map(|c| ConnectionInfo {
            id: c.id,
            protocol: c.protocol,
            remote: c.remote.to_string(),
            since_ms: c.since_ms,
            login: c.login,
            client_id: c.client_id,
        })
        .collect();
    Ok(Json(Connections { connections }))
}

#[derive(Deserialize)]
struct BrowseQuery {
    limit: Option<usize>,
}

/// A message as the API shows it.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct MessageInfo {
    id: String,
    /// The same as `id`, under the name the per-message operations' paths use.
    message_id: String,
    persistent: bool,
    priority: u8,
    timestamp_ms: u64,
    /// 0 = never.
    expires_ms: u64,
    headers: BTreeMap<String, String>,
    /// The body when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    /// The body, base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

impl MessageInfo {
    fn new(m: &Message) -> MessageInfo {
        let (body, body_base64) = match std::str::from_utf8(&m.body) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&m.body)),
            ),
        };
        MessageInfo {
            id: m.id.to_string(),
            message_id: m.id.to_string(),
            persistent: m.persistent,
            priority: m.priority,
            timestamp_ms: m.timestamp_ms,
            expires_ms: m.expires_ms,
            headers: m.headers.iter().cloned().collect(),
            body,
            body_base64,
        }
    }
}

#[derive(Serialize)]
struct Browse {
    queue: String,
    limit: usize,
    messages: Vec<MessageInfo>,
}

/// `GET /api/v1/queues/{name}/messages?limit=N`: the first N messages waiting, in delivery
/// order, without consuming them (messages in flight to a consumer are not shown).
async fn browse(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<BrowseQuery>, QueryRejection>,
) -> ApiResult<Json<Browse>> {
    let Path(name) = name?;
    let Query(q) = q?;
    let live = state.master()?;
    let dest = Destination::queue(&name);
    if live.broker.queue_snapshot(&dest).is_none() {
        return Err(ApiError::no_queue(&name));
    }
    let max = state.cfg.admin.browse_limit_max;
    let limit = q.limit.unwrap_or(BROWSE_LIMIT_DEFAULT.min(max));
    if limit > max {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is over admin.browse_limit_max = {max}"
        )));
    }
    let messages = live
        .broker
        .browse(&dest, limit)
        .iter()
        .map(|m| MessageInfo::new(m))
        .collect();
    Ok(Json(Browse {
        queue: name,
        limit,
        messages,
    }))
}

/// The body of `POST /api/v1/queues/{name}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    /// The body, as text.
    #[serde(default)]
    body: String,
    /// Application headers (user properties, `correlation-id`, `type`, …).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Default true: an operator's message should not vanish in a restart.
    persistent: Option<bool>,
    /// 0-9, default 4.
    priority: Option<u8>,
    /// Time to live in ms; absent or 0 = never expires.
    ttl_ms: Option<u64>,
}

#[derive(Serialize)]
struct Sent {
    id: String,
    persistent: bool,
}

/// Sends a message as a STOMP SEND with a receipt would: the answer comes once the broker has
/// it and, when persistent, once the store confirms it.
async fn send_message(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let Path(name) = name?;
    let body = body?;
    let live = state.master()?;
    let req: SendRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad message JSON: {e}")))?;
    let max_headers = state.cfg.stomp.max_headers;
    if req.headers.len() > max_headers {
        return Err(ApiError::bad_request(format!(
            "{} headers: at most stomp.max_headers = {max_headers}",
            req.headers.len()
        )));
    }
    if req.body.len() > state.cfg.stomp.max_frame_bytes {
        return Err(ApiError::bad_request(format!(
            "body of {} bytes is over stomp.max_frame_bytes = {}",
            req.body.len(),
            state.cfg.stomp.max_frame_bytes
        )));
    }
    let priority = req.priority.unwrap_or(DEFAULT_PRIORITY);
    if priority > MAX_PRIORITY {
        return Err(ApiError::bad_request(format!(
            "priority {priority}: expected 0 to {MAX_PRIORITY}"
        )));
    }
    if let Some((n, _)) = req
        .headers
        .iter()
        // `reply-to` is reserved in STOMP only because the session rewrites it; here it is
        // taken as given.
        .find(|(n, _)| *n != "reply-to" && crate::stomp::RESERVED_HEADERS.contains(&n.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "header {n:?} is set by the broker or by the request's own fields"
        )));
    }
    let broker = live.broker.clone();
    let persistent = req.persistent.unwrap_or(true) || state.cfg.broker.persistent_delivery;
    let now = broker.now_ms();
    let msg = Message {
        id: broker.next_message_id(),
        destination: Destination::queue(&name),
        headers: req.headers.into_iter().collect(),
        body: req.body.into(),
        persistent,
        priority,
        timestamp_ms: now,
        expires_ms: match req.ttl_ms {
            None | Some(0) => 0,
            Some(ttl) => now.saturating_add(ttl),
        },
        // No connection: `noLocal` subscribers receive it like any other.
        producer_connection: 0,
        wire: Default::default(),
    };
    let id = msg.id.to_string();
    // Its own task: a client that hangs up (or the timeout below) must not cancel a send
    // half-way through the broker.
    let task =
        tokio::spawn(async move { broker.send(msg).await?.await.map_err(BrokerError::from) });
    match tokio::time::timeout(SEND_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => Ok((StatusCode::CREATED, Json(Sent { id, persistent }))),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("send failed: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the broker did not take the message within {} s (flow control or a slow store); it may still be sent",
                SEND_TIMEOUT.as_secs()
            ),
        )),
    }
}

#[derive(Serialize)]
struct Purged {
    queue: String,
    purged: u64,
}

/// Removes every waiting message of a queue (not those in flight to a consumer); answers once
/// the store has the removal.
async fn purge(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Purged>> {
    let live = state.master()?;
    let dest = Destination::queue(&name);
    if live.broker.queue_snapshot(&dest).is_none() {
        return Err(ApiError::no_queue(&name));
    }
    let (purged, done) = live.broker.purge(&dest)?;
    done.await.map_err(BrokerError::from)?;
    Ok(Json(Purged {
        queue: name,
        purged,
    }))
}

/// Runs a broker operation on its own task and waits for it: a client that hangs up must not
/// cancel an operation half-way (a message taken from its queue and not yet placed elsewhere).
async fn detached<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T, BrokerError>> + Send + 'static,
) -> ApiResult<T> {
    match tokio::spawn(op).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("operation failed: {e}"),
        )),
    }
}

#[derive(Serialize)]
struct QueueDeleted {
    deleted: String,
    messages: u64,
}

/// `DELETE /api/v1/queues/{name}`: removes the queue and its messages (ActiveMQ's
/// `removeQueue`); `409` while consumers are attached (see [`Broker::remove_queue`]).
async fn delete_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueDeleted>> {
    let broker = state.master()?.broker;
    let dest = Destination::queue(&name);
    let messages = detached(async move { broker.remove_queue(&dest).await }).await?;
    Ok(Json(QueueDeleted {
        deleted: name,
        messages,
    }))
}

#[derive(Serialize)]
struct MessageRemoved {
    queue: String,
    removed: String,
}

/// `DELETE /api/v1/queues/{name}/messages/{message_id}` (ActiveMQ's `removeMessage`).
async fn remove_message(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<MessageRemoved>> {
    let broker = state.master()?.broker;
    let dest = Destination::queue(&name);
    let mid = id.clone();
    detached(async move { broker.remove_message(&dest, &mid).await }).await?;
    Ok(Json(MessageRemoved {
        queue: name,
        removed: id,
    }))
}

/// The body of a move or copy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    /// The target queue's name.
    to: String,
}

#[derive(Serialize)]
struct Moved {
    from: String,
    to: String,
    /// The message's id in the source.
    message_id: String,
    /// Its id in the target (the same for a move; a new one for a copy).
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    moved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    copied: Option<String>,
}

fn move_target(body: &[u8]) -> ApiResult<Destination> {
    let req: MoveRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"to\": \"QUEUE\"}}: {e}")))?;
    if req.to.is_empty() {
        return Err(ApiError::bad_request("\"to\" names no queue"));
    }
    Ok(Destination::queue(&req.to))
}

async fn move_or_copy(
    state: AppState,
    name: String,
    id: String,
    body: &[u8],
    copy: bool,
) -> ApiResult<Json<Moved>> {
    let broker = state.master()?.broker;
    let to = move_target(body)?;
    let from = Destination::queue(&name);
    let (mid, target) = (id.clone(), to.clone());
    let new_id =
        detached(async move { broker.move_message(&from, &mid, &target, copy).await }).await?;
    Ok(Json(Moved {
        from: name,
        to: to.name.to_string(),
        moved: (!copy).then(|| id.clone()),
        copied: copy.then(|| id.clone()),
        message_id: id,
        id: new_id.to_string(),
    }))
}

/// `POST /api/v1/queues/{name}/messages/{message_id}/move`, body `{"to": "Q2"}`.
async fn move_message(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Moved>> {
    move_or_copy(state, name, id, &body?, false).await
}

/// `POST /api/v1/queues/{name}/messages/{message_id}/copy`, body `{"to": "Q2"}`.
async fn copy_message(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<Moved>> {
    move_or_copy(state, name, id, &body?, true).await
}

#[derive(Serialize)]
struct Retried {
    retried: u64,
    /// The original queue (one message retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// Messages left in the queue (all retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining: Option<u64>,
}

/// `POST /api/v1/queues/{name}/messages/{message_id}/retry`: back to its original queue.
async fn retry_message(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<Retried>> {
    let broker = state.master()?.broker;
    let dest = Destination::queue(&name);
    let to = detached(async move { broker.retry_message(&dest, &id).await }).await?;
    Ok(Json(Retried {
        retried: 1,
        to: Some(to.name.to_string()),
        remaining: None,
    }))
}

/// `POST /api/v1/queues/{name}/retry`: up to [`RETRY_BATCH_MAX`] messages per call.
async fn retry_all(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Retried>> {
    let broker = state.master()?.broker;
    let dest = Destination::queue(&name);
    let out = detached(async move { broker.retry_all(&dest, RETRY_BATCH_MAX).await }).await?;
    Ok(Json(Retried {
        retried: out.retried,
        to: None,
        remaining: Some(out.remaining),
    }))
}

/// `DELETE /api/v1/topics/{name}`: a topic holds nothing but its subscriptions, so this
/// answers why it cannot go (`409` naming its durable subscriptions or counting its
/// subscribers), or `404` when nothing is bound to it.
async fn delete_topic(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueDeleted>> {
    let live = state.master()?;
    live.broker.remove_topic(&name)?;
    Ok(Json(QueueDeleted {
        deleted: name,
        messages: 0,
    }))
}

#[derive(Serialize)]
struct SubscriptionInfo {
    client_id: String,
    name: String,
    topic: String,
    selector: Option<String>,
    active: bool,
    pending: u64,
    inflight: u64,
}

#[derive(Serialize)]
struct Subscriptions {
    subscriptions: Vec<SubscriptionInfo>,
}

/// `GET /api/v1/subscriptions`: every durable subscription.
async fn subscriptions(State(state): State<AppState>) -> ApiResult<Json<Subscriptions>> {
    let live = state.master()?;
    let subscriptions = live
        .broker
        .durable_subscriptions()
        .into_iter()
        .map(|d| SubscriptionInfo {
            client_id: d.client_id,
            name: d.name,
            topic: d.topic,
            selector: d.selector,
            active: d.active,
            pending: d.pending,
            inflight: d.inflight,
        })
        .collect();
    Ok(Json(Subscriptions { subscriptions }))
}

#[derive(Serialize)]
struct SubscriptionDeleted {
    deleted: bool,
    client_id: String,
    name: String,
}

/// `DELETE /api/v1/subscriptions/{client_id}/{name}`: an inactive one only (`409` otherwise).
async fn delete_subscription(
    State(state): State<AppState>,
    Path((client_id, name)): Path<(String, String)>,
) -> ApiResult<Json<SubscriptionDeleted>> {
    let broker = state.master()?.broker;
    let durable = ferromq_broker::DurableName {
        client_id: client_id.clone(),
        name: name.clone(),
    };
    detached(async move { broker.destroy_subscription(&durable).await }).await?;
    Ok(Json(SubscriptionDeleted {
        deleted: true,
        client_id,
        name,
    }))
}

#[derive(Serialize)]
struct Closed {
    closed: u64,
    protocol: &'static str,
    remote: String,
}

/// `DELETE /api/v1/connections/{id}`: asks that connection's session to close (STOMP: an
/// ERROR frame "closed by an administrator" first; OpenWire: a ConnectionError). Answers once
/// asked; the connection leaves the listing as soon as its session has closed.
async fn close_connection(
    State(state): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Json<Closed>> {
    let Path(id) = id?;
    let live = state.master()?;
    let c = live
        .connections
        .close(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no open connection {id}")))?;
    Ok(Json(Closed {
        closed: id,
        protocol: c.protocol,
        remote: c.remote.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use ferromq_broker::{system_clock, Broker, BrokerConfig};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    /// A router over a master with a memory store, small limits and no users.
    fn app() -> (Router, Arc<Broker>) {
        app_with(BrokerConfig::default())
    }

    fn app_with(broker_config: BrokerConfig) -> (Router, Arc<Broker>) {
        let broker = Broker::open(
            broker_config,
            Arc::new(ferromq_store::MemoryStore::new()),
            system_clock(),
        )
        .unwrap();
        let mut cfg = Config::default();
        cfg.stomp.max_frame_bytes = 1024;
        cfg.stomp.max_headers = 3;
        cfg.admin.browse_limit_max = 5;
        let (_tx, rx) = watch::channel(Status {
            role: "master".into(),
            live: super::super::Live(Some(LiveServer {
                broker: broker.clone(),
                connections: Default::default(),
            })),
            ..Status::default()
        });
        // The receiver keeps the last value after the sender is gone.
        (router(AppState::new(rx, Arc::new(cfg))), broker)
    }

    async fn call(app: &Router, method: &str, uri: &str, json: Option<String>) -> (u16, Value) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if json.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Body::from(json.unwrap_or_default())).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {bytes:?}"));
        (code, v)
    }

    #[tokio::test]
    async fn a_sent_message_is_browsed_with_its_headers_and_counted() {
        let (app, broker) = app();
        let (code, v) = call(
            &app,
            "POST",
            "/api/v1/queues/q/messages",
            Some(r#"{"body":"hi","headers":{"k":"v","reply-to":"/queue/r"},"priority":7,"persistent":false}"#.into()),
        )
        .await;
        assert_eq!(code, 201, "{v}");
        assert_eq!(v["persistent"], false);
        let (code, v) = call(&app, "GET", "/api/v1/queues/q/messages", None).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["limit"], 5, "the default is capped by browse_limit_max");
        let m = &v["messages"][0];
        assert_eq!(m["body"], "hi");
        assert_eq!(m["priority"], 7);
        assert_eq!(m["headers"]["k"], "v");
        assert_eq!(m["headers"]["reply-to"], "/queue/r");
        let s = broker
            .queue_snapshot(&Destination::queue("q"))
            .expect("created by the send");
        assert_eq!(s.stats.enqueued, 1);
        let (code, v) = call(&app, "GET", "/api/v1/queues/q", None).await;
        assert_eq!((code, &v["depth"]), (200, &Value::from(1)), "{v}");
    }

    /// A queue past its memory window says how many of its waiting messages are held only in
    /// the store (ActiveMQ's cursor memory and "paged out"), in the API and in /metrics.
    #[tokio::test]
    async fn a_queue_past_its_memory_window_reports_its_paged_out_messages() {
        let (app, broker) = app_with(BrokerConfig {
            destination_memory_limit_bytes: 16 * 1024,
            ..BrokerConfig::default()
        });
        let body = "x".repeat(900);
        for _ in 0..60 {
            let (code, v) = call(
                &app,
                "POST",
                "/api/v1/queues/deep/messages",
                Some(format!(r#"{{"body":"{body}","persistent":true}}"#)),
            )
            .await;
            assert_eq!(code, 201, "{v}");
        }
        let s = broker.queue_snapshot(&Destination::queue("deep")).unwrap();
        assert!(
            s.paged_out > 0,
            "60 KiB of messages in a 16 KiB window: {s:?}"
        );
        let (code, v) = call(&app, "GET", "/api/v1/queues/deep", None).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["memory_limit_bytes"], 16 * 1024, "{v}");
        assert_eq!(v["paged_out"], s.paged_out, "{v}");
        assert_eq!(
            v["pending"], 60,
            "paged-out messages still count as pending: {v}"
        );
        assert!(
            v["memory_bytes"].as_u64().unwrap() <= 16 * 1024 + 2048,
            "{v}"
        );
        let req = axum::http::Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let metrics = String::from_utf8_lossy(&bytes);
        assert!(
            metrics.contains(&format!(
                "ferromq_queue_paged_out{{destination=\"deep\"}} {}",
                s.paged_out
            )),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_a_json_reason() {
        let (app, _) = app();
        let send = "/api/v1/queues/q/messages";
        for (body, needle) in [
            (
                r#"{"body":"x","headers":{"a":"1","b":"2","c":"3","d":"4"}}"#.to_string(),
                "max_headers",
            ),
            (
                format!(r#"{{"body":"{}"}}"#, "x".repeat(1025)),
                "max_frame_bytes",
            ),
            (r#"{"body":"x","priority":10}"#.into(), "priority"),
            (
                r#"{"body":"x","headers":{"message-id":"forged"}}"#.into(),
                "message-id",
            ),
            (r#"{"body":"x","colour":"red"}"#.into(), "unknown field"),
            ("not json".into(), "bad message JSON"),
        ] {
            let (code, v) = call(&app, "POST", send, Some(body.clone())).await;
            assert_eq!(code, 400, "{body}: {v}");
            assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
        }
        // Over the body limit (max_frame_bytes + 64 KiB): 413, still JSON.
        let huge = format!(r#"{{"body":"{}"}}"#, "x".repeat(70 * 1024));
        let (code, v) = call(&app, "POST", send, Some(huge)).await;
        assert_eq!(code, 413, "{v}");
        let (code, v) = call(&app, "GET", "/api/v1/queues/q/messages?limit=x", None).await;
        assert_eq!(code, 400, "{v}");
        let (code, v) = call(&app, "GET", "/api/v1/queues/q/messages?limit=1", None).await;
        assert_eq!(code, 404, "nothing above was sent, so no queue: {v}");
        let (code, _) = call(&app, "POST", send, Some(r#"{"body":"x"}"#.into())).await;
        assert_eq!(code, 201);
        let (code, v) = call(&app, "GET", "/api/v1/queues/q/messages?limit=6", None).await;
        assert_eq!(code, 400, "over browse_limit_max: {v}");
        let (code, v) = call(&app, "GET", "/api/v1/queues/q/purge", None).await;
        assert_eq!(code, 405, "{v}");
        let (code, v) = call(&app, "GET", "/api/v2", None).await;
        assert_eq!(code, 404, "{v}");
    }

    #[tokio::test]
    async fn a_broker_that_is_not_serving_answers_its_role_and_503() {
        let (_tx, rx) = watch::channel(Status {
            role: "slave".into(),
            ha_mode: "shared-file".into(),
            ..Status::default()
        });
        let app = router(AppState::new(rx, Arc::new(Config::default())));
        let (code, v) = call(&app, "GET", "/api/v1/broker", None).await;
        assert_eq!(code, 200);
        assert_eq!(v["role"], "slave");
        assert!(v.get("store").is_none(), "{v}");
        for (method, uri, body) in [
            ("GET", "/api/v1/queues", None),
            ("GET", "/api/v1/topics", None),
            ("GET", "/api/v1/connections", None),
            ("POST", "/api/v1/queues/q/purge", Some("{}".to_string())),
            (
                "POST",
                "/api/v1/queues/q/messages",
                Some(r#"{"body":"x"}"#.into()),
            ),
            ("DELETE", "/api/v1/queues/q", Some("{}".into())),
            (
                "DELETE",
                "/api/v1/queues/q/messages/ID:1",
                Some("{}".into()),
            ),
            (
                "POST",
                "/api/v1/queues/q/messages/ID:1/move",
                Some(r#"{"to":"r"}"#.into()),
            ),
            (
                "POST",
                "/api/v1/queues/q/messages/ID:1/copy",
                Some(r#"{"to":"r"}"#.into()),
            ),
            (
                "POST",
                "/api/v1/queues/q/messages/ID:1/retry",
                Some("{}".into()),
            ),
            ("POST", "/api/v1/queues/q/retry", Some("{}".into())),
            ("DELETE", "/api/v1/topics/t", Some("{}".into())),
            ("GET", "/api/v1/subscriptions", None),
            ("DELETE", "/api/v1/subscriptions/c/s", Some("{}".into())),
            ("DELETE", "/api/v1/connections/1", Some("{}".into())),
        ] {
            let (code, v) = call(&app, method, uri, body).await;
            assert_eq!(code, 503, "{method} {uri}: {v}");
            assert!(v["error"].as_str().unwrap().contains("slave"), "{v}");
        }
    }

    #[test]
    fn the_failover_block_reports_suspensions_ongoing_over_and_of_an_earlier_run() {
        use crate::admin::{Failover, SuspensionEnd};
        use std::time::{Duration, UNIX_EPOCH};
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let mut f = Failover::new(t(1_000));
        f.serving(false, t(2_000));
        f.serving(true, t(2_400));
        f.serving(false, t(5_000));
        let json = |f: &Failover, now| serde_json::to_value(FailoverInfo::new(f, now)).unwrap();
        let v = json(&f, t(5_100));
        assert_eq!(v["since_unix_ms"], 1_000, "{v}");
        assert_eq!(v["process_started_unix_ms"], 1_000, "{v}");
        assert_eq!(v["suspensions"], 2, "{v}");
        assert_eq!(v["suspended_now"], true, "{v}");
        assert_eq!(v["suspended_since_unix_ms"], 5_000, "{v}");
        assert_eq!(v["suspended_ms_total"], 500, "{v}");
        let last = &v["last_suspension"];
        assert_eq!(last["from"], "1970-01-01T00:00:05.000Z", "{v}");
        assert_eq!(last["from_unix_ms"], 5_000, "{v}");
        assert!(last["to"].is_null() && last["to_unix_ms"].is_null(), "{v}");
        assert_eq!(last["duration_ms"], 100, "{v}");

        f.serving(true, t(5_300));
        let v = json(&f, t(9_000));
        assert_eq!(v["suspended_now"], false, "{v}");
        assert!(v["suspended_since_unix_ms"].is_null(), "{v}");
        assert_eq!(v["suspended_ms_total"], 700, "{v}");
        assert_eq!(v["last_suspension"]["to_unix_ms"], 5_300, "{v}");
        assert_eq!(v["last_suspension"]["duration_ms"], 300, "{v}");

        // Read from the file of a process that ended while suspended: over, end unknown.
        f.serving(false, t(6_000));
        f.last_suspension = f.last_suspension.map(|mut s| {
            s.end = SuspensionEnd::Unknown;
            s
        });
        let v = json(&f, t(9_000));
        assert_eq!(v["suspended_now"], false, "{v}");
        assert_eq!(v["suspended_ms_total"], 700, "{v}");
        assert!(v["last_suspension"]["duration_ms"].is_null(), "{v}");
        assert_eq!(v["last_suspension"]["from_unix_ms"], 6_000, "{v}");
    }

    #[test]
    fn the_failover_block_lists_the_recent_history_newest_first() {
        use crate::admin::{BecameMaster, Failover, LostMastership};
        use std::time::{Duration, UNIX_EPOCH};
        let t = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let mut f = Failover::new(t(1_000));
        f.became_master(BecameMaster {
            at: t(2_000),
            epoch: 7,
            reason: "acquired the lock".into(),
            takeover: Some(Duration::from_millis(40)),
        });
        f.serving(false, t(3_000));
        f.serving(true, t(3_200));
        f.lost_mastership(LostMastership {
            at: t(4_000),
            epoch: 7,
            reason: "lost the lock".into(),
        });
        let v = serde_json::to_value(FailoverInfo::new(&f, t(9_000))).unwrap();
        let h = v["history"].as_array().expect("a history array");
        assert_eq!(h.len(), 3, "{v}");
        assert_eq!(h[0]["kind"], "lost_mastership", "{v}");
        assert_eq!(h[0]["reason"], "lost the lock", "{v}");
        assert_eq!(h[1]["kind"], "suspension", "{v}");
        assert_eq!(h[1]["duration_ms"], 200, "{v}");
        assert_eq!(h[2]["kind"], "became_master", "{v}");
        assert_eq!(h[2]["epoch"], 7, "{v}");
        assert_eq!(h[2]["takeover_ms"], 40, "{v}");
        // The fields clients read before the history existed are still there.
        assert_eq!(v["last_became_master"]["epoch"], 7, "{v}");
        assert_eq!(v["last_lost_mastership"]["reason"], "lost the lock", "{v}");
    }
}
