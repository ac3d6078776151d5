//! The accept loop every connector shares: a bounded number of connections, each served by its
//! own task, until shutdown; then the loop waits for its sessions to hand their messages back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Accepts on `listener` until `shutdown` changes, at most `max` connections at once and at
/// most `security.max_connections_per_ip` (as `live` has it now) from one address over every
/// listener: each runs `serve`; one over a limit goes to `refuse` with the reason (which
/// answers and closes it).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept_loop<S, F, R>(
    listener: TcpListener,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
    protocol: &'static str,
    connections: crate::connections::Connections,
    live: Arc<crate::reload::LiveConfig>,
    serve: S,
    refuse: R,
) where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream, String),
{
    let limit = Arc::new(Semaphore::new(max));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, protocol, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, max, protocol, "connection refused: maximumConnections reached");
                    refuse(stream, format!("Connection limit of {max} reached (maximumConnections)"));
                    continue;
                };
                let per_ip = live.security().max_connections_per_ip;
                match connections.try_register(protocol, peer, per_ip) {
                    Ok(listed) => {
                        let session = serve(stream, peer);
                        tasks.spawn(async move {
                            session.await;
                            drop(listed);
                            drop(permit);
                        });
                    }
                    Err(full) => {
                        drop(permit);
                        tracing::warn!(
                            %peer,
                            max_connections_per_ip = full.max,
                            protocol,
                            "connection refused: security.max_connections_per_ip reached for {}",
                            peer.ip()
                        );
                        refuse(
                            stream,
                            format!(
                                "Connection limit of {} per client address reached \
                                 (max_connections_per_ip)",
                                full.max
                            ),
                        );
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    // Sessions see the same shutdown signal; wait for them to hand their messages back.
    while tasks.join_next().await.is_some() {}
}
