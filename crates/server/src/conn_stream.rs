//! A client connection's socket, plain TCP or TLS, split into the halves the session's reader
//! and writer tasks own.
//!
//! An enum rather than a generic session: the plain path keeps tokio's owned TCP halves (no
//! lock between reader and writer, readiness-based reads that hold no buffer while idle, see
//! `conn_buf`), and the sessions are compiled once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::tls::TlsStream;

/// An accepted client connection.
#[derive(Debug)]
pub(crate) enum ClientStream {
    /// `transports.stomp`, `transports.openwire`.
    Tcp(TcpStream),
    /// `transports.stomp_ssl`, `transports.openwire_ssl`, after the handshake.
    Tls(Box<TlsStream>),
}

impl ClientStream {
    /// The subject of the client's verified certificate, on a TLS connection that sent one.
    pub(crate) fn peer_subject(&self) -> Option<crate::dn::Dn> {
        match self {
            ClientStream::Tcp(_) => None,
            ClientStream::Tls(s) => crate::tls::peer_subject(s),
        }
    }

    /// Splits the connection (after turning Nagle off: sessions batch their writes).
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            ClientStream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            ClientStream::Tls(s) => {
                let _ = s.get_ref().0.set_nodelay(true);
                let (r, w) = tokio::io::split(*s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// The half a session reads from (see `conn_buf::read_some`).
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The half a session's writer task writes to. TLS buffers records inside rustls, so a writer
/// must `flush` after its `write_all` (a no-op on TCP).
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream>),
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(w) => w.is_write_vectored(),
            WriteHalf::Tls(w) => w.is_write_vectored(),
        }
    }
}
