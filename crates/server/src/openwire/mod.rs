//! The OpenWire connector: ActiveMQ's native protocol, so that unmodified ActiveMQ JMS
//! applications (`tcp://host:61616`, `failover:(…)`) connect. See `docs/openwire.md`.

mod convert;
mod session;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::conn_stream::ClientStream;
use crate::stomp::ConnectorContext;
use crate::tls::TlsAcceptor;

/// Runs the OpenWire listeners until shutdown: plain (`transports.openwire`) and over TLS
/// (`transports.openwire_ssl`), either or both. They share one registry, so that a temporary
/// destination made over one is advertised to JMS clients of the other (a request/reply pair
/// may use both), and a failover client moving between them replaces its stale connection.
pub async fn run_listeners(
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    ctx: Arc<ConnectorContext>,
) {
    let registry = Arc::new(Registry::default());
    let plain = async {
        if let Some(l) = plain {
            run_listener(l, ctx.clone(), registry.clone()).await;
        }
    };
    let tls = async {
        if let Some((l, acceptor)) = tls {
            run_tls_listener(l, ctx.clone(), acceptor, registry.clone()).await;
        }
    };
    tokio::join!(plain, tls);
}

/// Accepts OpenWire connections on `listener` until shutdown, at most
/// `openwire.max_connections` at once; a connection over the limit is closed at once (the JMS
/// client reports the closed socket and, on a failover URI, tries the next broker).
async fn run_listener(listener: TcpListener, ctx: Arc<ConnectorContext>, registry: Arc<Registry>) {
    crate::accept::accept_loop(
        listener,
        ctx.config.openwire.max_connections,
        ctx.shutdown.clone(),
        "openwire",
        ctx.connections.clone(),
        ctx.live.clone(),
        |stream, peer| {
            session::serve(
                ClientStream::Tcp(stream),
                peer,
                ctx.clone(),
                registry.clone(),
            )
        },
        |stream, _| drop(stream),
    )
    .await;
}

/// Accepts OpenWire over TLS (ActiveMQ's `ssl://`, `transports.openwire_ssl`) on `listener`
/// until shutdown, with the same sessions and limits as [`run_listener`] (its own
/// `openwire.max_connections`, as each ActiveMQ transport connector has). The handshake runs
/// in the connection's task, under `tls.handshake_timeout_ms`.
async fn run_tls_listener(
    listener: TcpListener,
    ctx: Arc<ConnectorContext>,
    acceptor: TlsAcceptor,
    registry: Arc<Registry>,
) {
    let timeout = std::time::Duration::from_millis(ctx.config.tls.handshake_timeout_ms);
    crate::accept::accept_loop(
        listener,
        ctx.config.openwire.max_connections,
        ctx.shutdown.clone(),
        "openwire",
        ctx.connections.clone(),
        ctx.live.clone(),
        |stream, peer| {
            let ctx = ctx.clone();
            let acceptor = acceptor.clone();
            let registry = registry.clone();
            async move {
                let shutdown = Some(ctx.shutdown.clone());
                let tls = crate::tls::handshake(&acceptor, stream, peer, timeout, "ssl", shutdown);
                if let Some(tls) = tls.await {
                    session::serve(ClientStream::Tls(Box::new(tls)), peer, ctx, registry).await;
                }
            }
        },
        |stream, _| drop(stream),
    )
    .await;
}

/// The live connections of one listener by client id, so that a client reconnecting with the
/// same ConnectionId (a failover client whose old socket the broker has not yet seen die)
/// replaces its stale connection instead of being refused with "client id already connected".
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_client_id: Mutex<HashMap<String, Live>>,
    /// Temporary destinations of this listener's connections and who watches them.
    pub(crate) temps: Mutex<TempAdvisories>,
}

/// ActiveMQ's temporary-destination advisories, which the JMS client needs: a producer refuses
/// to send to a temporary destination its connection has not seen advertised ("Cannot publish
/// to a deleted Destination"). Every connection's advisory consumer gets the current set when it
/// subscribes and every change after.
#[derive(Debug, Default)]
pub(crate) struct TempAdvisories {
    /// Live temporary destinations: (owning connection, the DestinationInfo that added it).
    pub(crate) live: Vec<(u64, ferromq_protocol::openwire::DestinationInfo)>,
    /// Advisory consumers: (connection, where to send).
    pub(crate) watchers: Vec<(u64, session::AdvisoryWatcher)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// The OpenWire ConnectionId the client chose.
    pub connection_id: String,
    /// Tells the connection to close.
    pub kill: Arc<Notify>,
    /// Becomes true once the connection has released everything it held.
    pub gone: watch::Receiver<bool>,
}

impl Registry {
    pub(crate) fn get(&self, client_id: &str) -> Option<Live> {
        self.by_client_id.lock().get(client_id).cloned()
    }

    pub(crate) fn insert(&self, client_id: &str, live: Live) {
        self.by_client_id.lock().insert(client_id.to_string(), live);
    }

    /// Forgets `client_id` if it is still registered to `connection_id`.
    pub(crate) fn remove(&self, client_id: &str, connection_id: &str) {
        let mut m = self.by_client_id.lock();
        if m.get(client_id)
            .is_some_and(|l| l.connection_id == connection_id)
        {
            m.remove(client_id);
        }
    }
}

pub use convert::{JMS_HEADER_PREFIX, JMS_ID_HEADER, JMS_KIND_HEADER, JMS_PROPS_HEADER};
