//! Opening one benchmark connection: a TCP socket bound to a chosen loopback
//! source address, TLS, and the WebSocket upgrade.
//!
//! Binding each socket to one of several 127.0.0.K addresses spreads the
//! connections over several (source address, port) spaces, so 20,000 clients do
//! not run out of ephemeral ports towards one server address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A client's WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The source address of client `i` when cycling over `count` addresses from 127.0.0.2.
pub fn source_addr(i: usize, count: usize) -> IpAddr {
    let k = (i % count.max(1)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(k)))
}

/// Refuse anything but a loopback server address: this is a load generator.
pub fn check_loopback(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "refusing non-loopback target {addr}: the benchmark only loads servers on this machine"
        );
    }
    Ok(())
}

/// Per-connection WebSocket buffers, kept small: the harness holds 20,000 of them.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// TCP connect from `src` (IPv4 only; for an IPv6 server the kernel picks), then
/// TLS and the WebSocket upgrade to `url`.
pub async fn open(
    url: &str,
    server: SocketAddr,
    src: IpAddr,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Ws> {
    let sock = match server {
        SocketAddr::V4(_) => {
            let s = TcpSocket::new_v4().context("socket")?;
            s.set_reuseaddr(true).context("SO_REUSEADDR")?;
            s.bind(SocketAddr::new(src, 0))
                .with_context(|| format!("bind {src}"))?;
            s
        }
        SocketAddr::V6(_) => TcpSocket::new_v6().context("socket")?,
    };
    let tcp = sock.connect(server).await.context("tcp connect")?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
        url,
        tcp,
        Some(ws_config()),
        Some(Connector::Rustls(Arc::clone(tls))),
    )
    .await
    .context("tls/websocket handshake")?;
    Ok(ws)
}
