//! Connections of the gRPC port. Every accepted TCP stream is wrapped in a
//! [`TrackedStream`] whose [`Connection`] rides along with each request
//! (tonic puts it in the request's extensions): the per-connection stream
//! counts, the ingest rate budget and, with mutual TLS, the verified
//! client certificate's subject. It lives exactly as long as the
//! connection, so closing and reopening streams does not reset a budget.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
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
}

impl Connection {
    pub fn new(remote: Option<SocketAddr>, ingest_rate_per_second: Option<u32>) -> Self {
        Connection {
            remote,
            ingest_streams: AtomicU32::new(0),
            subscribers: AtomicU32::new(0),
            ingest_rate: ingest_rate_per_second.map(|rate| Arc::new(IngestRate::new(rate))),
            subject: OnceLock::new(),
        }
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

impl AsyncRead for TrackedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
