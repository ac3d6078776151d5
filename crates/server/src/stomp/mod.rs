//! The STOMP connector: accepts connections and runs a session for each.

pub(crate) mod dest;
mod session;

use std::sync::Arc;

use bytes::BytesMut;
use ferromq_protocol::stomp::{encode, Command, Frame, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::conn_stream::ClientStream;
use crate::tls::TlsAcceptor;

pub use session::ConnectorContext;
pub(crate) use session::RESERVED_HEADERS;

/// Accepts STOMP connections on `listener` until shutdown, at most `max_connections` at once.
/// A connection over the limit (or over `security.max_connections_per_ip`) gets an ERROR frame
/// and is closed.
pub async fn run_listener(listener: TcpListener, ctx: Arc<ConnectorContext>) {
    let max = ctx.config.stomp.max_connections;
    let shutdown = ctx.shutdown.clone();
    crate::accept::accept_loop(
        listener,
        max,
        shutdown,
        "stomp",
        ctx.connections.clone(),
        ctx.live.clone(),
        |stream, peer| session::serve(ClientStream::Tcp(stream), peer, ctx.clone()),
        |stream, reason| {
            tokio::spawn(refuse(stream, reason));
        },
    )
    .await;
}

/// Accepts STOMP over TLS (`transports.stomp_ssl`) on `listener` until shutdown, with the same
/// sessions and limits as [`run_listener`] (its own `stomp.max_connections`). The handshake
/// runs in the connection's task, under `tls.handshake_timeout_ms`. A connection over a limit
/// is closed without a frame: the client has not negotiated TLS yet, so it could not read one.
pub async fn run_tls_listener(
    listener: TcpListener,
    ctx: Arc<ConnectorContext>,
    acceptor: TlsAcceptor,
) {
    let max = ctx.config.stomp.max_connections;
    let shutdown = ctx.shutdown.clone();
    let timeout = std::time::Duration::from_millis(ctx.config.tls.handshake_timeout_ms);
    crate::accept::accept_loop(
        listener,
        max,
        shutdown,
        "stomp",
        ctx.connections.clone(),
        ctx.live.clone(),
        |stream, peer| {
            let ctx = ctx.clone();
            let acceptor = acceptor.clone();
            async move {
                let shutdown = Some(ctx.shutdown.clone());
                let tls =
                    crate::tls::handshake(&acceptor, stream, peer, timeout, "stomp+ssl", shutdown);
                if let Some(tls) = tls.await {
                    session::serve(ClientStream::Tls(Box::new(tls)), peer, ctx).await;
                }
            }
        },
        |stream, _| drop(stream),
    )
    .await;
}

/// Answers a connection over a limit with an ERROR frame giving `reason`, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, reason: String) {
    let mut buf = BytesMut::new();
    let f = Frame::new(Command::Error).with_header("message", reason);
    encode(&f, Version::V1_0, &mut buf);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&buf)).await;
    let _ = stream.shutdown().await;
}
