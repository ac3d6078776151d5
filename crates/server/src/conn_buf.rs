//! Connection buffers that hold memory only while there is data in them.
//!
//! A broker with 10,000 mostly idle connections must not keep a read and a write buffer
//! allocated for each: preallocated 8–64 KiB buffers cost ~88 KB of resident memory per idle
//! STOMP connection (measured, `bench-results/scale.md`); these rules bring it to ~15 KB.

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use crate::conn_stream::ReadHalf;

/// Bytes reserved for one read from a client socket.
pub(crate) const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A write buffer larger than this after a write is let go (a burst's buffer is not kept by a
/// connection that goes idle).
pub(crate) const WRITE_BUF_KEEP_BYTES: usize = 64 * 1024;

/// Waits until the socket is readable, then reads what it has into `buf` (reserving a chunk
/// only now). Returns 0 at end of stream. Cancel-safe: nothing is read before the last await.
///
/// A TLS connection cannot wait on the socket's readiness (rustls may already hold decrypted
/// bytes, or need several records for one byte of plaintext), so it reads into a reserved chunk
/// and keeps it while idle; tokio-rustls's read is cancel-safe too.
pub(crate) async fn read_some(rd: &mut ReadHalf, buf: &mut BytesMut) -> std::io::Result<usize> {
    let rd = match rd {
        ReadHalf::Tcp(rd) => rd,
        ReadHalf::Tls(rd) => {
            if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 2 {
                buf.reserve(READ_CHUNK_BYTES);
            }
            return rd.read_buf(buf).await;
        }
    };
    loop {
        rd.readable().await?;
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 2 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        match rd.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            // Readiness can be stale (tokio clears it only on WouldBlock, so this is what
            // happens right after every read that emptied the socket): wait again, without
            // holding the chunk just reserved — else every idle connection keeps one.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => release_if_empty(buf),
            Err(e) => return Err(e),
        }
    }
}

/// Lets an emptied read buffer go (frames decoded from it hold copies, or slices of their own
/// when 64 KiB or larger: `ferromq_protocol::own_allocation`).
pub(crate) fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Empties a write buffer after its bytes were written, letting a large one go.
pub(crate) fn written(buf: &mut BytesMut) {
    if buf.capacity() > WRITE_BUF_KEEP_BYTES {
        *buf = BytesMut::new();
    } else {
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_let_go_when_empty_or_large() {
        let mut b = BytesMut::with_capacity(1024);
        b.extend_from_slice(b"x");
        release_if_empty(&mut b);
        assert_eq!(b.capacity(), 1024, "data left: kept");
        let _ = b.split_to(1);
        release_if_empty(&mut b);
        assert_eq!(b.capacity(), 0);

        let mut w = BytesMut::with_capacity(WRITE_BUF_KEEP_BYTES + 1);
        w.extend_from_slice(b"frame");
        written(&mut w);
        assert_eq!(w.capacity(), 0, "a large buffer is let go");
        let mut w = BytesMut::with_capacity(512);
        w.extend_from_slice(b"frame");
        written(&mut w);
        assert!(w.is_empty());
        assert_eq!(w.capacity(), 512, "a small one is reused");
    }

    #[tokio::test]
    async fn read_some_reads_what_arrives_and_sees_the_end() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"hello").await.unwrap();
            s.shutdown().await.unwrap();
        });
        let (sock, _) = listener.accept().await.unwrap();
        let (rd, _wr) = sock.into_split();
        let mut rd = ReadHalf::Tcp(rd);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        loop {
            let n = read_some(&mut rd, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf.split());
        }
        assert_eq!(got, b"hello");
        client.await.unwrap();
    }

    /// An idle connection waits with no read buffer, even after the read that emptied its
    /// socket left tokio's readiness set (found by measuring RSS: 31 KB per idle connection,
    /// one reserved chunk each, before the fix; 16 KB after).
    #[tokio::test]
    async fn waiting_for_data_holds_no_buffer() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sock, _) = listener.accept().await.unwrap();
        let (rd, _wr) = sock.into_split();
        let mut rd = ReadHalf::Tcp(rd);
        client.write_all(b"CONNECT\n\n\0").await.unwrap();
        let mut buf = BytesMut::new();
        let n = read_some(&mut rd, &mut buf).await.unwrap();
        assert!(n > 0);
        let _ = buf.split();
        release_if_empty(&mut buf);
        assert_eq!(buf.capacity(), 0);
        // Nothing more arrives: the wait is cut short, and must not have kept a chunk.
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            read_some(&mut rd, &mut buf),
        )
        .await;
        assert!(waited.is_err(), "no data was sent");
        assert_eq!(buf.capacity(), 0, "a reserved chunk was kept while waiting");
        drop(client);
    }
}
