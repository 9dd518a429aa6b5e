//! Connections of the gRPC port. Every accepted TCP stream is wrapped in a
//! [`TrackedStream`] whose [`Connection`] rides along with each request
//! (tonic puts it in the request's extensions): the per-connection stream
//! counts, the ingest rate budget and, with mutual TLS, the verified
//! client certificate's subject. It lives exactly as long as the
//! connection, so closing and reopening streams does not reset a budget.
//! It also records when the transport has closed (the peer's end of
//! stream, or a read or write error), which `Ingest` checks before it
//! evaluates each batch.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TlsConnectInfo};

use super::limits::IngestRate;

/// What the server keeps about one client connection.
#[derive(Debug)]
pub struct Connection {
    /// The peer's address, for logs.
    pub remote: Option<SocketAddr>,
    /// Open `Ingest` streams on this connection.
    pub(super) ingest_streams: AtomicU32,
    /// Open subscriptions on this connection.
    pub(super) subscribers: AtomicU32,
    /// The ticks-per-second budget, when one is configured.
    pub(super) ingest_rate: Option<Arc<IngestRate>>,
    /// The verified client certificate's subject CN, read once.
    subject: OnceLock<Option<Arc<str>>>,
    /// Set once the transport has closed: reading found the peer's end of
    /// stream, or a read or write failed.
    closed: AtomicBool,
}

impl Connection {
    pub fn new(remote: Option<SocketAddr>, ingest_rate_per_second: Option<u32>) -> Self {
        Connection {
            remote,
            ingest_streams: AtomicU32::new(0),
            subscribers: AtomicU32::new(0),
            ingest_rate: ingest_rate_per_second.map(|rate| Arc::new(IngestRate::new(rate))),
            subject: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether the transport has closed. Whatever is still buffered from
    /// the connection was sent by a client that can no longer get an
    /// answer to it.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(super) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The common name of the client certificate that TLS verified, if
    /// any; `tls` is the request's TLS connection info.
    pub fn subject(&self, tls: Option<&TlsConnectInfo<ConnectionInfo>>) -> Option<Arc<str>> {
        self.subject
            .get_or_init(|| {
                let certs = tls?.peer_certs()?;
                let leaf = certs.first()?;
                super::tls::common_name(leaf.as_ref()).map(Arc::from)
            })
            .clone()
    }
}

/// The request extension that carries a [`Connection`].
#[derive(Clone, Debug)]
pub struct ConnectionInfo(pub Arc<Connection>);

/// The connection of a request, from its extensions: plaintext or TLS.
pub fn of_request(
    extensions: &tonic::codegen::http::Extensions,
) -> Option<(&Arc<Connection>, Option<&TlsConnectInfo<ConnectionInfo>>)> {
    let tls = extensions.get::<TlsConnectInfo<ConnectionInfo>>();
    let plain = extensions.get::<ConnectionInfo>();
    plain.or(tls.map(TlsConnectInfo::get_ref)).map(|info| (&info.0, tls))
}

/// A TCP stream of the gRPC port with its [`Connection`].
pub struct TrackedStream {
    io: TcpStream,
    connection: Arc<Connection>,
}

impl TrackedStream {
    /// Wraps an accepted stream (with TCP_NODELAY set).
    pub fn new(io: TcpStream, ingest_rate_per_second: Option<u32>) -> Self {
        // Small batches and acks go out at once; an error here only costs latency.
        let _ = io.set_nodelay(true);
        let remote = io.peer_addr().ok();
        TrackedStream {
            io,
            connection: Arc::new(Connection::new(remote, ingest_rate_per_second)),
        }
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo(self.connection.clone())
    }
}

impl TrackedStream {
    /// Passes `result` on, noting a failed I/O as the connection closing.
    fn note<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &result {
            self.connection.mark_closed();
        }
        result
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (room, filled) = (buf.remaining(), buf.filled().len());
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        // Nothing read into a buffer with room: the peer's end of stream.
        if matches!(result, Poll::Ready(Ok(()))) && room > 0 && buf.filled().len() == filled {
            this.connection.mark_closed();
        }
        this.note(result)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.note(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: the client's end, and the server's end tracked.
    async fn pair() -> (TcpStream, TrackedStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, TrackedStream::new(server, None))
    }

    #[tokio::test]
    async fn the_peer_closing_marks_the_connection_closed_once_its_bytes_are_read() {
        let (mut client, mut server) = pair().await;
        let connection = server.connect_info().0;
        client.write_all(b"last words").await.expect("write");
        drop(client);
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("read");
        assert!(!connection.is_closed(), "bytes still to read: not closed yet");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("read to the end");
        assert_eq!(rest, b" words");
        assert!(connection.is_closed());
    }

    #[tokio::test]
    async fn a_connection_in_use_is_not_closed() {
        let (mut client, mut server) = pair().await;
        let connection = server.connect_info().0;
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.expect("read");
        server.write_all(b"pong").await.expect("write back");
        client.read_exact(&mut buf).await.expect("read back");
        assert!(!connection.is_closed());
        // A read into a buffer without room reads nothing, and is not the
        // end: the byte is still there.
        client.write_all(b"x").await.expect("write");
        let mut none = [0u8; 0];
        assert_eq!(server.read(&mut none).await.expect("empty read"), 0);
        assert!(!connection.is_closed());
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.expect("read the byte");
        assert_eq!(&one, b"x");
        assert!(!connection.is_closed());
    }
}
