//! The admin HTTP endpoint on `transports.admin`: `GET /status` (the broker's role as JSON,
//! read by `ferromq status`), the JSON admin API under `/api/v1` ([`api`]), Prometheus
//! `/metrics` ([`metrics`]) and the web console at `/` ([`console`]). It runs in every role —
//! a slave opens no client port, but an operator can still ask it what it is doing. The
//! failover history they report is kept across restarts by [`history`]. See
//! docs/operations.md.

mod api;
mod auth;
pub mod cli;
mod console;
pub mod history;
pub mod metrics;

pub use history::{BecameMaster, Event, Failover, LostMastership, Suspension, SuspensionEnd};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferromq_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::connections::Connections;

/// The broker this process serves while it is master, for the admin API; empty otherwise.
#[derive(Debug, Clone, Default)]
pub struct Live(pub Option<LiveServer>);

/// What the admin API reads from a serving master.
#[derive(Debug, Clone)]
pub struct LiveServer {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Its open client connections.
    pub connections: Connections,
}

impl PartialEq for Live {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.broker, &b.broker),
            _ => false,
        }
    }
}

impl Eq for Live {}

/// A replicating master's replication state, read when `/api/v1/ha` or `/metrics` is served;
/// empty in every other mode and role.
#[derive(Debug, Clone, Default)]
pub struct ReplicationView(pub Option<Arc<dyn ferromq_ha::ReplicationStatus>>);

impl ReplicationView {
    /// The state now, if this broker is a replicating master.
    pub fn read(&self) -> Option<ferromq_ha::Replication> {
        self.0.as_ref().map(|r| r.replication())
    }
}

impl PartialEq for ReplicationView {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ReplicationView {}

/// What `/status` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `brokerName`.
    pub broker: String,
    /// `none`, `shared-file`, …
    pub ha_mode: String,
    /// `starting`, `slave`, `master`, `deposed`, `stopping`.
    pub role: String,
    /// The mastership epoch (0 when not master or without HA).
    pub epoch: u64,
    /// Where STOMP listens, when master.
    pub stomp: String,
    /// The network bridges of the broker while it is master (read live when served).
    pub bridges: crate::server::BridgeList,
    /// The broker while this process is master (not part of the `/status` JSON).
    pub live: Live,
    /// The replication state while this process is a replicating master (not part of the
    /// `/status` JSON; see `/api/v1/ha`).
    pub replication: ReplicationView,
    /// This broker's failover history, of this process and the earlier ones whose history file
    /// it read (see `/api/v1/ha` and the `ferromq_ha_*` metrics).
    pub failover: Failover,
}

/// Milliseconds since the Unix epoch (0 for a time before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 in UTC with milliseconds (`2026-12-06T22:14:11.123Z`), without a date crate: the
/// admin API needs only this one format.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let ms = unix_ms(t);
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

impl Status {
    /// The JSON document served.
    pub fn to_json(&self) -> String {
        fn esc(s: &str) -> String {
            s.chars()
                .flat_map(|c| match c {
                    '"' => "\\\"".chars().collect::<Vec<_>>(),
                    '\\' => "\\\\".chars().collect(),
                    c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
                    c => vec![c],
                })
                .collect()
        }
        use std::sync::atomic::Ordering::Relaxed;
        let bridges: Vec<String> = self
            .bridges
            .snapshot()
            .iter()
            .map(|b| {
                let addrs: Vec<String> =
                    b.addrs.iter().map(|a| format!("\"{}\"", esc(a))).collect();
                format!(
                    "{{\"connector\":\"{}\",\"addrs\":[{}],\"remote\":\"{}\",\"connected\":{},\"connects\":{},\"network_consumers\":{},\"forwarded\":{},\"pulled\":{}}}",
                    esc(&b.connector),
                    addrs.join(","),
                    esc(&b.stats.remote.lock()),
                    b.stats.connected.load(Relaxed),
                    b.stats.connects.load(Relaxed),
                    b.stats.consumers.load(Relaxed),
                    b.stats.forwarded.load(Relaxed),
                    b.stats.pulled.load(Relaxed),
                )
            })
            .collect();
        format!(
            "{{\"broker\":\"{}\",\"ha_mode\":\"{}\",\"role\":\"{}\",\"epoch\":{},\"stomp\":\"{}\",\"bridges\":[{}]}}",
            esc(&self.broker),
            esc(&self.ha_mode),
            esc(&self.role),
            self.epoch,
            esc(&self.stomp),
            bridges.join(",")
        )
    }
}

/// Most admin connections served at once; one more is closed at once. Operators and a few
/// scrapers need a handful; the cap keeps a flood of idle sockets from exhausting descriptors.
const CONNECTIONS_MAX: usize = 64;

/// How long a client may take to send a request's head (on a kept-alive connection: the next
/// request's), so that a silent socket does not hold one of [`CONNECTIONS_MAX`] for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most HTTP headers in a request (hyper's default, stated).
const REQUEST_HEADERS_MAX: usize = 100;

/// Serves `/status`, `/api/v1` and `/metrics` on `listener` until the process ends, over
/// HTTPS when `tls` is given (`transports.admin_tls`). `cfg` gives the users, limits and policy
/// the API applies.
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<Status>,
    cfg: Arc<Config>,
    tls: Option<crate::tls::TlsAcceptor>,
) {
    let app = api::AppState::new(status, cfg.clone());
    serve_app(listener, app, &cfg, tls).await
}

/// [`serve`], checking logins against the users `live` holds now (a SIGHUP reload changes
/// them); give `tls` an acceptor presenting `live`'s certificate
/// ([`crate::tls::acceptor_with`]) for it to be reloaded too.
pub async fn serve_reloadable(
    listener: TcpListener,
    status: watch::Receiver<Status>,
    cfg: Arc<Config>,
    tls: Option<crate::tls::TlsAcceptor>,
    live: Arc<crate::reload::LiveConfig>,
) {
    let app = api::AppState::new(status, cfg.clone()).with_live(live);
    serve_app(listener, app, &cfg, tls).await
}

async fn serve_app(
    listener: TcpListener,
    app: api::AppState,
    cfg: &Config,
    tls: Option<crate::tls::TlsAcceptor>,
) {
    let handshake_timeout = Duration::from_millis(cfg.tls.handshake_timeout_ms);
    let app = api::router(app);
    let limit = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = CONNECTIONS_MAX, "admin connection refused: too many open");
            drop(stream);
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer, app).await,
                Some(acceptor) => {
                    let handshake = crate::tls::handshake(
                        &acceptor,
                        stream,
                        peer,
                        handshake_timeout,
                        "admin",
                        None,
                    );
                    if let Some(tls) = handshake.await {
                        // The verified client certificate logs requests in when it is mapped
                        // to a user (the access check in `api` reads it); the layer goes on
                        // this connection's copy of the router only.
                        let app = match crate::tls::peer_subject(&tls) {
                            Some(dn) => app.layer(axum::Extension(api::ClientCert(dn))),
                            None => app,
                        };
                        serve_connection(tls, peer, app).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves HTTP/1 requests on one admin connection, plain or TLS, until it ends.
async fn serve_connection<I>(io: I, peer: SocketAddr, app: axum::Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(REQUEST_HEADERS_MAX)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

/// Binds the admin endpoint.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// `ferromq status`: fetches `/status` from an admin endpoint (`host:port` or
/// `https://host:port` with `tls`).
pub async fn fetch(addr: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> anyhow::Result<String> {
    let (status, body) = cli::request(addr, "GET", "/status", None, None, tls).await?;
    if status != 200 {
        anyhow::bail!("{addr} answered: HTTP {status}");
    }
    Ok(body)
}

/// `ferromq status` over several brokers: one line per broker (group, admin address, role,
/// epoch, STOMP address) and one per bridge of a master (where it goes, whether it is up, what
/// it moved), from each broker's `/status` JSON or the error reaching it.
pub fn topology_table(brokers: &[(String, anyhow::Result<String>)]) -> String {
    use serde_json::Value;
    let mut rows: Vec<[String; 5]> = vec![[
        "GROUP".into(),
        "ADMIN".into(),
        "ROLE".into(),
        "EPOCH".into(),
        "STOMP".into(),
    ]];
    let mut bridges: Vec<(usize, String)> = Vec::new();
    for (addr, body) in brokers {
        let v = match body {
            Ok(b) => serde_json::from_str::<Value>(b)
                .map_err(|e| anyhow::anyhow!("bad /status answer: {e}")),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                rows.push([
                    "?".into(),
                    addr.clone(),
                    format!("unreachable ({e})"),
                    "-".into(),
                    "-".into(),
                ]);
                continue;
            }
        };
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let epoch = v["epoch"].as_u64().unwrap_or(0);
        rows.push([
            s("broker"),
            addr.clone(),
            s("role"),
            if epoch == 0 {
                "-".into()
            } else {
                epoch.to_string()
            },
            if s("stomp").is_empty() {
                "-".into()
            } else {
                s("stomp")
            },
        ]);
        for b in v["bridges"].as_array().into_iter().flatten() {
            let remote = b["remote"].as_str().unwrap_or("");
            let addrs: Vec<&str> = b["addrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            bridges.push((
                rows.len() - 1,
                format!(
                    "  bridge {} -> {} at {} [{}] connects {} network consumers {} forwarded {} pulled {}",
                    b["connector"].as_str().unwrap_or("?"),
                    if remote.is_empty() { "?" } else { remote },
                    addrs.join(","),
                    if b["connected"].as_bool() == Some(true) { "up" } else { "down" },
                    b["connects"].as_u64().unwrap_or(0),
                    b["network_consumers"].as_u64().unwrap_or(0),
                    b["forwarded"].as_u64().unwrap_or(0),
                    b["pulled"].as_u64().unwrap_or(0),
                ),
            ));
        }
    }
    let mut width = [0usize; 5];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        for (_, b) in bridges.iter().filter(|(row, _)| *row == i) {
            out.push_str(b);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.123Z: a leap day, the last second of it.
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
        assert_eq!(unix_ms(t), 1_709_251_199_123);
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        assert_eq!(rfc3339(t), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn topology_lists_brokers_and_their_bridges() {
        let master = Status {
            broker: "group1".into(),
            ha_mode: "replicated".into(),
            role: "master".into(),
            epoch: 7,
            stomp: "stomp://127.0.0.1:62011".into(),
            ..Default::default()
        };
        let stats = std::sync::Arc::new(crate::network::bridge::BridgeStats::default());
        stats
            .forwarded
            .store(42, std::sync::atomic::Ordering::Relaxed);
        stats
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *stats.remote.lock() = "group2".into();
        master.bridges.push(crate::server::BridgeStatus {
            connector: "net:group2".into(),
            addrs: vec!["tcp://127.0.0.1:62021".into()],
            stats,
        });
        let slave = Status {
            broker: "group1".into(),
            ha_mode: "replicated".into(),
            role: "slave".into(),
            ..Default::default()
        };
        let t = topology_table(&[
            ("127.0.0.1:63011".into(), Ok(master.to_json())),
            ("127.0.0.1:63012".into(), Ok(slave.to_json())),
            (
                "127.0.0.1:63013".into(),
                Err(anyhow::anyhow!("connection refused")),
            ),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("GROUP"));
        assert!(
            lines[1].contains("master") && lines[1].contains(" 7 "),
            "{t}"
        );
        assert!(
            lines[2].contains("bridge net:group2 -> group2 at tcp://127.0.0.1:62021 [up]"),
            "{t}"
        );
        assert!(lines[2].contains("forwarded 42"), "{t}");
        assert!(
            lines[3].contains("slave") && lines[3].contains("group1"),
            "{t}"
        );
        assert!(lines[4].contains("unreachable (connection refused)"), "{t}");
    }
    use super::*;

    #[tokio::test]
    async fn status_is_served_as_json_and_follows_updates() {
        let (l, addr) = bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = watch::channel(Status {
            broker: "b\"1".into(),
            ha_mode: "shared-file".into(),
            role: "slave".into(),
            ..Status::default()
        });
        tokio::spawn(serve(l, rx, Arc::new(Config::default()), None));
        let body = fetch(&addr.to_string(), None).await.unwrap();
        assert_eq!(
            body,
            r#"{"broker":"b\"1","ha_mode":"shared-file","role":"slave","epoch":0,"stomp":"","bridges":[]}"#
        );
        let stats = std::sync::Arc::new(crate::network::bridge::BridgeStats::default());
        tx.send_modify(|s| {
            s.role = "master".into();
            s.epoch = 4;
            s.bridges = crate::server::BridgeList::default();
            s.bridges.push(crate::server::BridgeStatus {
                connector: "to-b".into(),
                addrs: vec!["127.0.0.1:1".into()],
                stats: stats.clone(),
            });
        });
        let body = fetch(&addr.to_string(), None).await.unwrap();
        assert!(body.contains(r#""role":"master","epoch":4"#), "{body}");
        // Counters are read when the status is served, not when it was set.
        stats
            .forwarded
            .store(7, std::sync::atomic::Ordering::Relaxed);
        *stats.remote.lock() = "b".into();
        let body = fetch(&addr.to_string(), None).await.unwrap();
        assert!(
            body.contains(r#""bridges":[{"connector":"to-b","addrs":["127.0.0.1:1"],"remote":"b","connected":false,"connects":0,"network_consumers":0,"forwarded":7,"pulled":0}]"#),
            "{body}"
        );
    }
}
