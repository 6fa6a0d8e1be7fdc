//! The HTTPS port: one TCP listener, three protocols.
//!
//! Each connection accepted on `--listen` is told apart by its first bytes
//! ([`sniff`]): a TLS ClientHello is handshaken, then the first decrypted
//! bytes decide between HTTP (the page, the signaling
//! WebSocket, `/metrics`) and TURN over TLS; a plain STUN message is TURN over
//! TCP; a plain HTTP request gets a redirect to HTTPS. A network that lets
//! only TCP 443 out can so still reach the relay. `--turns-listen` runs the
//! same loop for TURN over TLS alone.
//!
//! Deadlines: the first bytes within [`SNIFF_DEADLINE`], the TLS handshake
//! within [`HANDSHAKE_DEADLINE`], then the first decrypted bytes within
//! [`SNIFF_DEADLINE`] again; a connection that misses one is closed. At most
//! [`MAX_UNSORTED_PER_ADDRESS`] connections from one address (IPv6: per /64)
//! and [`MAX_UNSORTED`] in all may be at these stages at once; more are
//! closed at once.
//!
//! Owns accepting, sniffing and those deadlines; knows nothing of HTTP routes
//! (`app.rs`) or of TURN (`turn.rs`, `turn_stream.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::acme::ACME_TLS_ALPN;
use crate::limits::ConnectionLimits;
use crate::turn::Relay;

/// Longest a new connection may take to send the bytes that say what it is.
pub const SNIFF_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a TLS handshake may take.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest an HTTP/1 client may take to send a request's headers.
const HEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Longest open HTTP connections are given to finish on shutdown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// Connections not yet sorted (sniffing or in the handshake) from one address.
pub const MAX_UNSORTED_PER_ADDRESS: usize = 64;
/// Connections not yet sorted, in all.
pub const MAX_UNSORTED: usize = 4096;
/// Bytes read at most to sort a connection (a STUN header is 20).
const SNIFF_BYTES: usize = 64;

/// What a connection's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS record (handshake).
    Tls,
    /// A STUN message (TURN's control protocol).
    Stun,
    /// An HTTP/1 request line or the HTTP/2 preface.
    Http,
    /// Nothing this port speaks.
    Unknown,
}

/// Sorts a connection by its first bytes; `None` while more are needed.
///
/// A TLS record starts with 0x16 (handshake); a STUN message with two zero
/// bits, a length that is a multiple of 4 and the magic cookie at bytes 4–7
/// (RFC 8489 §5); HTTP with an upper-case method name (`GET`, `PRI` …).
#[must_use]
pub fn sniff(first: &[u8]) -> Option<Protocol> {
    let &byte = first.first()?;
    Some(match byte {
        0x16 => Protocol::Tls,
        b'A'..=b'Z' => Protocol::Http,
        _ if byte & 0xC0 == 0 => {
            let header = first.get(..8)?;
            let length_aligned = header.get(3).is_some_and(|low| low & 0x03 == 0);
            let cookie = header.get(4..8) == Some(&[0x21, 0x12, 0xA4, 0x42][..]);
            if length_aligned && cookie {
                Protocol::Stun
            } else {
                Protocol::Unknown
            }
        }
        _ => Protocol::Unknown,
    })
}

/// Which protocols a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTPS, TURN over TCP and TURN over TLS (`--listen`).
    Https,
    /// TURN over TLS only (`--turns-listen`).
    TurnsOnly,
}

/// Everything a listener needs to serve its connections.
#[derive(Debug)]
pub struct Front {
    pub role: Role,
    pub tls: Arc<rustls::ServerConfig>,
    /// The web application (HTTPS connections).
    pub app: Router,
    /// Plain HTTP requests on the HTTPS port: the redirect to HTTPS.
    pub redirect: Router,
    /// The relay, when it is on.
    pub relay: Option<Arc<Relay>>,
    pub shutdown: watch::Receiver<bool>,
    /// True once the server drains: the listener stops accepting (connections
    /// already accepted go on).
    pub draining: watch::Receiver<bool>,
    pub unsorted: Arc<ConnectionLimits>,
}

impl Front {
    #[must_use]
    pub fn new(
        role: Role,
        tls: Arc<rustls::ServerConfig>,
        app: Router,
        redirect: Router,
        relay: Option<Arc<Relay>>,
        shutdown: watch::Receiver<bool>,
        draining: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            role,
            tls,
            app,
            redirect,
            relay,
            shutdown,
            draining,
            unsorted: ConnectionLimits::new(MAX_UNSORTED, MAX_UNSORTED_PER_ADDRESS),
        })
    }
}

/// Accepts connections until the server drains or shuts down (then the
/// listener is closed); each is sorted and served by a task of its own.
pub async fn serve(listener: TcpListener, front: Arc<Front>) -> anyhow::Result<()> {
    let listening = listener.local_addr()?;
    let mut shutdown = front.shutdown.clone();
    let mut draining = front.draining.clone();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &mut shutdown) => accepted,
            () = stopping(&mut draining) => None,
        };
        let Some((stream, client)) = accepted else {
            break;
        };
        let Ok(permit) = front.unsorted.try_acquire(client.ip()) else {
            tracing::debug!(%client, "too many unsorted connections; closed");
            continue;
        };
        // The address this connection reached (the listener's may be `[::]`).
        let local = stream.local_addr().map_or(listening, canonical);
        let front = Arc::clone(&front);
        tokio::spawn(async move {
            let sorted = sort(&front, stream, client, local).await;
            drop(permit);
            if let Some(connection) = sorted {
                serve_sorted(&front, connection, client, local).await;
            }
        });
    }
    Ok(())
}

/// The next connection, with Nagle off; `None` once the server is shutting down.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, canonical(client)));
                }
                // Out of descriptors and the like: let the moment pass.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = stopping(shutdown) => return None,
        }
    }
}

/// A connection whose protocol is known.
enum Sorted {
    PlainHttp(Prefixed<TcpStream>),
    PlainTurn(Prefixed<TcpStream>),
    TlsHttp(Prefixed<TlsStream>),
    TlsTurn(Prefixed<TlsStream>),
}

type TlsStream = tokio_rustls::server::TlsStream<Prefixed<TcpStream>>;

/// Reads, handshakes and reads again until the connection's protocol is
/// known; `None` closes it (unknown, silent, or not served on this port).
async fn sort(
    front: &Front,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
) -> Option<Sorted> {
    let mut stream = Prefixed::new(stream);
    let protocol = read_until_sorted(&mut stream).await?;
    match (protocol, front.role) {
        (Protocol::Tls, _) => {}
        (Protocol::Stun, Role::Https) if front.relay.is_some() => {
            return Some(Sorted::PlainTurn(stream));
        }
        (Protocol::Http, Role::Https) => return Some(Sorted::PlainHttp(stream)),
        (other, role) => {
            tracing::debug!(%client, %local, ?other, ?role, "not served on this port; closed");
            return None;
        }
    }
    let acceptor = TlsAcceptor::from(Arc::clone(&front.tls));
    let tls = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream))
        .await
        .ok()?
        .ok()?;
    if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        return None;
    }
    // The ALPN cannot decide: TURN clients offer `http/1.1` too (coturn's does,
    // to pass proxies), so the first decrypted bytes do.
    let mut tls = Prefixed::new(tls);
    let protocol = read_until_sorted(&mut tls).await?;
    match (protocol, front.role) {
        (Protocol::Stun, _) if front.relay.is_some() => Some(Sorted::TlsTurn(tls)),
        (Protocol::Http, Role::Https) => Some(Sorted::TlsHttp(tls)),
        (other, role) => {
            tracing::debug!(%client, %local, ?other, ?role, "not served over TLS on this port; closed");
            None
        }
    }
}

/// Reads the first bytes (within [`SNIFF_DEADLINE`]) until [`sniff`] decides.
async fn read_until_sorted<S: AsyncRead + Unpin>(stream: &mut Prefixed<S>) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + SNIFF_DEADLINE;
    let mut chunk = [0u8; SNIFF_BYTES];
    loop {
        if let Some(protocol) = sniff(&stream.prefix) {
            return Some(protocol);
        }
        let room = SNIFF_BYTES.saturating_sub(stream.prefix.len());
        let window = chunk.get_mut(..room)?;
        let len = tokio::time::timeout_at(deadline, stream.inner.read(window))
            .await
            .ok()?
            .ok()?;
        if len == 0 {
            return None;
        }
        stream.prefix.extend_from_slice(window.get(..len)?);
    }
}

async fn serve_sorted(front: &Front, connection: Sorted, client: SocketAddr, local: SocketAddr) {
    match connection {
        Sorted::PlainHttp(stream) => {
            serve_http(front, &front.redirect, stream, client).await;
        }
        Sorted::TlsHttp(stream) => serve_http(front, &front.app, stream, client).await,
        Sorted::PlainTurn(stream) => hand_to_relay(front, stream, client, local),
        Sorted::TlsTurn(stream) => hand_to_relay(front, stream, client, local),
    }
}

fn hand_to_relay<S>(front: &Front, stream: Prefixed<S>, client: SocketAddr, local: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(relay) = &front.relay else {
        return;
    };
    let (stream, already_read) = stream.into_parts();
    if let Err(refusal) = relay.accept_stream(stream, already_read, client, local) {
        tracing::debug!(%client, ?refusal, "TURN stream connection refused");
    }
}

/// Serves HTTP/1.1 or HTTP/2 (with WebSocket upgrades) until the connection
/// ends, or until shutdown plus [`DRAIN_DEADLINE`].
async fn serve_http<S>(front: &Front, router: &Router, stream: Prefixed<S>, client: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = router.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(client));
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(request).await.always_ok()) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut shutdown = front.shutdown.clone();
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopping(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_DEADLINE, connection).await;
        }
    }
}

/// `::ffff:a.b.c.d:port` as `a.b.c.d:port`: on a dual-stack socket IPv4
/// clients arrive mapped, and every limit and STUN answer wants the IPv4 address.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// Resolves once the server is shutting down (at once if it already is).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// `Result<T, Infallible>` without an `unwrap`.
trait AlwaysOk<T> {
    fn always_ok(self) -> T;
}

impl<T> AlwaysOk<T> for Result<T, Infallible> {
    fn always_ok(self) -> T {
        match self {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

/// A stream with the bytes already read from it put back in front.
#[derive(Debug)]
struct Prefixed<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read again.
    consumed: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(inner: S) -> Self {
        Self {
            prefix: Vec::new(),
            consumed: 0,
            inner,
        }
    }

    /// The stream and the bytes read from it not yet consumed.
    fn into_parts(self) -> (S, Vec<u8>) {
        let Self {
            mut prefix,
            consumed,
            inner,
        } = self;
        prefix.drain(..consumed.min(prefix.len()));
        (inner, prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.consumed..)
            && !rest.is_empty()
        {
            let len = rest.len().min(buffer.remaining());
            buffer.put_slice(rest.get(..len).unwrap_or_default());
            this.consumed += len;
            if this.consumed == this.prefix.len() {
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, bytes)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_by_first_bytes() {
        // A Binding request header: type 0x0001, length 0, magic cookie.
        let binding = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4];
        assert_eq!(sniff(&binding), Some(Protocol::Stun));
        assert_eq!(sniff(&binding[..7]), None);
        assert_eq!(sniff(&[]), None);
        assert_eq!(sniff(&[0x16]), Some(Protocol::Tls));
        assert_eq!(sniff(b"G"), Some(Protocol::Http));
        assert_eq!(sniff(b"PRI * HTTP/2.0"), Some(Protocol::Http));
        // Wrong cookie, misaligned length, ChannelData, lower-case, binary.
        assert_eq!(
            sniff(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x43]),
            Some(Protocol::Unknown)
        );
        assert_eq!(
            sniff(&[0x00, 0x01, 0x00, 0x01, 0x21, 0x12, 0xA4, 0x42]),
            Some(Protocol::Unknown)
        );
        assert_eq!(sniff(&[0x40, 0x00, 0x00, 0x04]), Some(Protocol::Unknown));
        assert_eq!(sniff(b"get /"), Some(Protocol::Unknown));
        assert_eq!(sniff(&[0xFF]), Some(Protocol::Unknown));
    }

    #[tokio::test]
    async fn a_prefixed_stream_reads_its_prefix_first() {
        let (mut near, far) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut near, b" world")
            .await
            .ok();
        drop(near);
        let mut stream = Prefixed::new(far);
        stream.prefix = b"hello".to_vec();
        let mut all = Vec::new();
        let read = stream.read_to_end(&mut all).await.ok();
        assert_eq!(read, Some(11));
        assert_eq!(all, b"hello world");
    }

    #[test]
    fn into_parts_keeps_what_was_not_read_again() {
        let mut stream = Prefixed::new(());
        stream.prefix = b"abcdef".to_vec();
        stream.consumed = 2;
        let ((), rest) = stream.into_parts();
        assert_eq!(rest, b"cdef");
    }
}
