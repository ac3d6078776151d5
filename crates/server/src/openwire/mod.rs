//! The OpenWire connector: ActiveMQ's native protocol, so that unmodified ActiveMQ JMS
//! applications (`tcp://host:61616`, `failover:(…)`) connect. See `docs/openwire.md`.

mod convert;
mod session;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::stomp::ConnectorContext;

/// Accepts OpenWire connections on `listener` until shutdown, at most
/// `openwire.max_connections` at once; a connection over the limit is closed at once.
pub async fn run_listener(listener: TcpListener, ctx: Arc<ConnectorContext>) {
    let max = ctx.config.openwire.max_connections;
    let limit = Arc::new(Semaphore::new(max));
    let mut shutdown = ctx.shutdown.clone();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match limit.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = ctx.clone();
                        tasks.spawn(async move {
                            session::serve(stream, peer, ctx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // The JMS client reports the closed socket and, on a failover URI,
                        // tries the next broker.
                        tracing::warn!(%peer, max, "OpenWire connection refused: maximumConnections reached");
                        drop(stream);
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

pub use convert::{JMS_HEADER_PREFIX, JMS_ID_HEADER, JMS_KIND_HEADER, JMS_PROPS_HEADER};
