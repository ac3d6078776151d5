//! The STOMP connector: accepts connections and runs a session for each.

pub(crate) mod dest;
mod session;

use std::sync::Arc;

use bytes::BytesMut;
use ferromq_protocol::stomp::{encode, Command, Frame, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

pub use session::ConnectorContext;
pub(crate) use session::RESERVED_HEADERS;

/// Accepts STOMP connections on `listener` until shutdown, at most `max_connections` at once.
/// A connection over the limit gets an ERROR frame and is closed.
pub async fn run_listener(listener: TcpListener, ctx: Arc<ConnectorContext>) {
    let max = ctx.config.stomp.max_connections;
    let shutdown = ctx.shutdown.clone();
    crate::accept::accept_loop(
        listener,
        max,
        shutdown,
        "stomp",
        ctx.connections.clone(),
        |stream, peer| session::serve(stream, peer, ctx.clone()),
        |stream| {
            tokio::spawn(refuse(stream, max));
        },
    )
    .await;
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
