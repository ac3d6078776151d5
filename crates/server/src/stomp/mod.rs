//! The STOMP connector: accepts connections and runs a session for each.

pub(crate) mod dest;
mod session;

use std::sync::Arc;

use bytes::BytesMut;
use ferromq_protocol::stomp::{encode, Command, Frame, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use session::ConnectorContext;

/// Accepts STOMP connections on `listener` until shutdown, at most `max_connections` at once.
/// A connection over the limit gets an ERROR frame and is closed.
pub async fn run_listener(listener: TcpListener, ctx: Arc<ConnectorContext>) {
    let limit = Arc::new(Semaphore::new(ctx.config.stomp.max_connections));
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
                        tracing::warn!(%peer, max = ctx.config.stomp.max_connections, "connection refused: maximumConnections reached");
                        tokio::spawn(refuse(stream, ctx.config.stomp.max_connections));
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

async fn refuse(mut stream: tokio::net::TcpStream, max: usize) {
    let mut buf = BytesMut::new();
    let f = Frame::new(Command::Error).with_header(
        "message",
        format!("Connection limit of {max} reached (maximumConnections)"),
    );
    encode(&f, Version::V1_0, &mut buf);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&buf)).await;
    let _ = stream.shutdown().await;
}
