//! Connections of the gRPC port. Every accepted TCP stream is wrapped in a
//! [`TrackedStream`] whose [`Connection`] rides along with each request
//! (tonic puts it in the request's extensions): the per-connection stream
//! counts, the ingest rate budget and, with mutual TLS, the verified
//! client certificate's subject. It lives exactly as long as the
//! connection, so closing and reopening streams does not reset a budget.
//! It also records when the transport has closed (the peer's end of
//! stream, or a read or write error), which `Ingest` checks before it
//! evaluates each batch.
//!
//! What the port holds is bounded here too:
//!
//! - `limits.max_connections`: a connection past it is closed at accept;
//!   on a plaintext port it first gets an HTTP/2 `GOAWAY` whose debug data
//!   names the limit ([`refuse_at_accept`]).
//! - `limits.idle_timeout_ms`: a connection with no call open for that
//!   long (calls are counted by the gate, [`Connection::start_call`]) is
//!   closed: reading it ends, as if the peer had gone. Keepalive pings do
//!   not count as calls.
//! - A plaintext client on the TLS port: its first bytes are not a TLS
//!   record, so instead of handing them to the TLS handshake (which the
//!   client would see as an `h2 protocol error`), the connection answers in
//!   plaintext that this port speaks TLS: an HTTP/2 `GOAWAY` with that
//!   message to an HTTP/2 client, a `400` to an HTTP/1 one; then it reads
//!   what the client sends until it goes (so the answer is not lost to a
//!   reset) and closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TlsConnectInfo};

use super::limits::IngestRate;
use crate::metrics::{Refusal, Refusals};

/// HTTP/2 error code of the `GOAWAY` that refuses a connection past
/// `limits.max_connections`: `ENHANCE_YOUR_CALM`.
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// HTTP/2 error code of the `GOAWAY` to a plaintext client on the TLS
/// port: `INADEQUATE_SECURITY`.
const INADEQUATE_SECURITY: u32 = 0xc;
/// How long a refused connection is read before it is closed anyway.
const DRAIN_FOR: Duration = Duration::from_secs(2);
/// What a plaintext client on the TLS port is told.
pub const TLS_ONLY_MESSAGE: &str =
    "this port speaks TLS: connect with TLS (an https:// address, or your client's TLS option)";

/// The HTTP/2 frames that refuse a connection before any stream: an empty
/// `SETTINGS` (the server preface) and a `GOAWAY` with `code` and
/// `message` as debug data.
pub fn goaway(code: u32, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(26 + message.len());
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = u32::try_from(8 + message.len()).unwrap_or(u32::MAX).min(0xff_ffff);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&message.as_bytes()[..(len as usize - 8)]);
    out
}

/// What a client that spoke plaintext on the TLS port gets, by what it
/// sent first: HTTP/2 frames, an HTTP/1 response, or nothing (other bytes).
fn plaintext_answer(first: &[u8]) -> Option<Vec<u8>> {
    if first.starts_with(b"PRI ") {
        return Some(goaway(INADEQUATE_SECURITY, TLS_ONLY_MESSAGE));
    }
    if first.first().is_some_and(u8::is_ascii_uppercase) {
        let body = format!("{TLS_ONLY_MESSAGE}\n");
        return Some(
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
    }
    None
}

/// Closes a connection past `limits.max_connections`: on a plaintext port
/// it is told why first (a `GOAWAY` naming the limit), and read until the
/// client goes (at most [`DRAIN_FOR`]) so the answer is not lost to a
/// reset. Runs on a task of its own: accepting goes on.
pub fn refuse_at_accept(mut io: TcpStream, plaintext: bool, limit: usize) {
    tokio::spawn(async move {
        if plaintext {
            let message = format!("too many connections to this server: the limit is {limit} (limits.max_connections)");
            let _ = io.write_all(&goaway(ENHANCE_YOUR_CALM, &message)).await;
            let _ = io.shutdown().await;
        }
        let mut scratch = [0u8; 1024];
        let _ = tokio::time::timeout(DRAIN_FOR, async {
            while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Nanoseconds since the first call of this process, for connection
/// activity marks.
fn mono_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What every connection of the port shares: the connection count, the
/// limits, the refusal counts.
#[derive(Debug)]
pub struct PortSettings {
    pub open: Arc<AtomicUsize>,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    pub ingest_rate_per_second: Option<u32>,
    /// The port speaks TLS: a client's first bytes must be a TLS record.
    pub tls: bool,
    pub refusals: Arc<Refusals>,
}

impl PortSettings {
    /// Takes a place for an accepted connection, or refuses it (see
    /// [`refuse_at_accept`]).
    pub fn accept(self: &Arc<Self>, io: TcpStream) -> Option<TrackedStream> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.refusals.count(Refusal::TooManyConnections);
            tracing::warn!(
                remote = ?io.peer_addr().ok(),
                limit = self.max_connections,
                "Connection refused: too many connections (limits.max_connections)."
            );
            refuse_at_accept(io, !self.tls, self.max_connections);
            return None;
        }
        let mut stream = TrackedStream::new(io, self.ingest_rate_per_second);
        stream.port = Some(self.clone());
        stream.expect_tls = self.tls;
        if let Some(timeout) = self.idle_timeout {
            stream.idle = Some((timeout, Box::pin(tokio::time::sleep(timeout))));
        }
        Some(stream)
    }
}

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
    /// Calls open on the connection (every call, counted by the gate).
    open_calls: AtomicU32,
    /// When the last call ended ([`mono_ns`]); the connection's start
    /// before any.
    last_call_ns: AtomicU64,
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
            open_calls: AtomicU32::new(0),
            last_call_ns: AtomicU64::new(mono_ns()),
        }
    }

    /// Counts a call open on the connection until the guard is dropped.
    pub fn start_call(self: &Arc<Self>) -> CallGuard {
        self.open_calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    /// How long the connection has had no call open; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.open_calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.last_call_ns.load(Ordering::Acquire);
        Some(Duration::from_nanos(mono_ns().saturating_sub(since)))
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

/// A call open on a connection (see [`Connection::start_call`]).
#[derive(Debug)]
pub struct CallGuard(Arc<Connection>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.last_call_ns.store(mono_ns(), Ordering::Release);
        self.0.open_calls.fetch_sub(1, Ordering::AcqRel);
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
    /// The port's settings and connection count (the place is given back
    /// on drop); `None` for a stream made without them.
    port: Option<Arc<PortSettings>>,
    /// The first bytes must be a TLS record (until they have been seen).
    expect_tls: bool,
    /// The idle timeout and its timer.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Refusing a plaintext client on the TLS port: reading what it sends
    /// until it goes, or this timer fires.
    refusing: Option<Pin<Box<Sleep>>>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if let Some(port) = &self.port {
            port.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
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
            port: None,
            expect_tls: false,
            idle: None,
            refusing: None,
        }
    }

    /// Whether the idle timeout has passed with no call open; re-arms the
    /// timer otherwise. Polled when a read finds nothing to read.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((timeout, sleep)) = &mut self.idle else {
            return false;
        };
        while sleep.as_mut().poll(cx).is_ready() {
            match self.connection.idle_for() {
                Some(idle) if idle >= *timeout => return true,
                Some(idle) => sleep.as_mut().reset(tokio::time::Instant::now() + (*timeout - idle)),
                None => sleep.as_mut().reset(tokio::time::Instant::now() + *timeout),
            }
        }
        false
    }

    /// Reads and drops what a refused plaintext client sends, until it goes
    /// or the drain timer fires; then the read fails.
    fn poll_refusing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => break,
                Poll::Pending => {
                    let timer = self.refusing.as_mut().map(|t| t.as_mut().poll(cx).is_ready());
                    if timer != Some(true) {
                        return Poll::Pending;
                    }
                    break;
                }
            }
        }
        self.connection.mark_closed();
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, TLS_ONLY_MESSAGE)))
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
        if this.refusing.is_some() {
            return this.poll_refusing(cx);
        }
        let (room, filled) = (buf.remaining(), buf.filled().len());
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if result.is_pending() && this.idle_expired(cx) {
            if let Some(port) = &this.port {
                port.refusals.count(Refusal::IdleTimeout);
            }
            tracing::debug!(remote = ?this.connection.remote, "Idle connection closed (limits.idle_timeout_ms).");
            this.connection.mark_closed();
            // Nothing read: the end of the stream, as if the peer had gone.
            return Poll::Ready(Ok(()));
        }
        if this.expect_tls && matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > filled {
            this.expect_tls = false;
            let first = &buf.filled()[filled..];
            // 0x16: a TLS handshake record, as every ClientHello starts.
            if first[0] != 0x16 {
                if let Some(port) = &this.port {
                    port.refusals.count(Refusal::PlaintextOnTls);
                }
                tracing::debug!(remote = ?this.connection.remote, "Plaintext client on the TLS port: told so.");
                if let Some(answer) = plaintext_answer(first) {
                    // Best effort: the socket's buffer is empty at this point.
                    let _ = this.io.try_write(&answer);
                }
                let _ = Pin::new(&mut this.io).poll_shutdown(cx);
                buf.set_filled(filled);
                this.refusing = Some(Box::pin(tokio::time::sleep(DRAIN_FOR)));
                return this.poll_refusing(cx);
            }
        }
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
