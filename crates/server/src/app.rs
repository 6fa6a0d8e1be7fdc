//! The HTTP application: routes, the WebSocket upgrade with its checks, the
//! web client and the security headers.
//!
//! Owns request handling only; listening sockets and TLS live in `server.rs`.
//! Tests call [`router`] without a socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::normalize_origin;
use crate::limits::{ConnectionLimits, Refusal};
use crate::metrics::Metrics;
use crate::signaling::Signaling;

/// Largest signaling frame or message accepted.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub signaling: Arc<Signaling>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<ConnectionLimits>,
    /// Origins allowed besides the server's own host, normalized.
    pub allowed_origins: Vec<String>,
    pub web_dir: Option<PathBuf>,
    pub shutdown: watch::Receiver<bool>,
    /// True once the server drains (SIGTERM): no new signaling connections.
    pub draining: watch::Receiver<bool>,
    /// The embedded relay, which makes per-session TURN credentials.
    pub relay: Option<Arc<crate::turn::Relay>>,
    /// Relays on other hosts, handed out instead of the embedded one (`--turn-server`).
    pub relays: Option<Arc<crate::relays::RelayPool>>,
    /// `iceServers` from the configuration file, given to every client as well.
    pub extra_ice_servers: Vec<duet_signaling::IceServer>,
    /// The host for STUN/TURN URLs when none is configured: the first domain.
    pub default_host: Option<String>,
}

/// Every route of the server.
/// `ok`, or 503 while the server drains, so a load balancer stops sending callers.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    if *state.draining.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    // `/check` is the connection self-test page (check.html).
    let web = match &state.web_dir {
        Some(dir) => Router::new()
            .route_service(
                "/check",
                tower_http::services::ServeFile::new(dir.join("check.html")),
            )
            .fallback_service(tower_http::services::ServeDir::new(dir)),
        None => memory_serve::load!()
            .index_file(Some("/index.html"))
            .add_alias("/check", "/check.html")
            .into_router(),
    };
    let socketio = crate::socketio::routes(Arc::clone(&state));
    Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&state))
        .merge(socketio)
        .merge(web)
        .layer(header_layer(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             media-src 'self' blob:; connect-src 'self' wss: https:; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(
            header::HeaderName::from_static("permissions-policy"),
            "camera=(self), microphone=(self), display-capture=(self), fullscreen=(self)",
        ))
}

fn header_layer(
    name: header::HeaderName,
    value: &'static str,
) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        render_metrics(&state),
    )
        .into_response()
}

/// The metrics exposition, the relay's counters brought up to date.
pub fn render_metrics(state: &AppState) -> String {
    if let Some(relay) = &state.relay {
        state.metrics.record_relay(&relay.stats());
    }
    state.metrics.encode()
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.allowed_origins) {
        return refuse(&state, Refused::Origin);
    }
    if *state.draining.borrow() {
        return refuse(&state, Refused::Draining);
    }
    let permit = match state.limits.try_acquire(peer.ip()) {
        Ok(permit) => permit,
        Err(Refusal::ServerFull) => return refuse(&state, Refused::ServerFull),
        Err(Refusal::TooManyFromAddress) => return refuse(&state, Refused::PerAddress),
    };
    let signaling = Arc::clone(&state.signaling);
    let shutdown = state.shutdown.clone();
    let draining = state.draining.clone();
    let ice_servers = session_ice_servers(&state, &headers);
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Idle connections are most of them: 512-byte read chunks (tungstenite
        // zero-fills the whole chunk on every read, so its size is resident per
        // connection), enough for most signaling messages in one read; a larger
        // frame (an SDP) is still read whole, in more chunks.
        .read_buffer_size(512)
        .write_buffer_size(0)
        // One frame being written at most (write_buffer_size 0 flushes each):
        // with the outbox, what a client that does not read can cost.
        .max_write_buffer_size(MAX_FRAME_BYTES + 64 * 1024)
        .on_upgrade(move |socket| {
            crate::ws::run(socket, signaling, permit, ice_servers, shutdown, draining)
        })
}

/// Why a signaling connection (a WebSocket upgrade, a socket.io session) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Origin,
    Draining,
    ServerFull,
    PerAddress,
}

impl Refused {
    /// The label of `upgrades_refused` and the code socket.io clients get.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::Origin => "origin",
            Refused::Draining => "draining",
            Refused::ServerFull => "server_full",
            Refused::PerAddress => "per_address",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refused::Origin => "this origin may not use the signaling server",
            Refused::Draining => "the server is restarting; try again in a moment",
            Refused::ServerFull => "too many connections; try again later",
            Refused::PerAddress => "too many connections from your address",
        }
    }
}

/// Counts a refusal and answers it over HTTP.
pub(crate) fn refuse(state: &AppState, why: Refused) -> Response {
    state.metrics.refuse_upgrade(why.reason());
    let status = match why {
        Refused::Origin => StatusCode::FORBIDDEN,
        Refused::Draining | Refused::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
        Refused::PerAddress => StatusCode::TOO_MANY_REQUESTS,
    };
    let body = format!("{}\n", why.message());
    if why == Refused::Draining {
        return (status, [(header::RETRY_AFTER, "2")], body).into_response();
    }
    (status, body).into_response()
}

/// The relay's STUN/TURN entries with credentials for this session, plus the
/// configured extras. The host is the configured public one, else the first
/// domain, else the host this request reached.
pub(crate) fn session_ice_servers(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<Arc<[duet_signaling::IceServer]>> {
    let session = format!("{:016x}", rand::random::<u64>());
    let mut servers = match (&state.relays, &state.relay) {
        (Some(pool), _) => pool.ice_servers(&session),
        (None, Some(relay)) => {
            let request_host = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .and_then(|host| host.parse::<axum::http::uri::Authority>().ok())
                .map(|authority| authority.host().trim_matches(['[', ']']).to_owned());
            let host = relay
                .configured_host()
                .or_else(|| state.default_host.clone())
                .or(request_host)?;
            relay.ice_servers(&host, &session)
        }
        (None, None) => return None,
    };
    servers.extend(state.extra_ice_servers.iter().cloned());
    Some(Arc::from(servers))
}

/// Browsers always send `Origin` on a WebSocket upgrade; it must be this
/// server's own (the `Host` it was reached by) or an allowed one. Clients that
/// send none (native peers, command-line tools) are not browsers and pass.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(origin) = origin.to_str().ok().and_then(normalize_origin) else {
        return false;
    };
    if allowed.contains(&origin) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| normalize_origin(&format!("https://{host}")));
    host.is_some_and(|own| own == origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            map.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        map
    }

    #[test]
    fn own_origin_passes_others_need_to_be_listed() {
        let allowed = vec!["https://app.example.org".to_owned()];
        assert!(origin_allowed(
            &headers(Some("https://localhost:8443"), "localhost:8443"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://Call.Example.org"), "call.example.org:443"),
            &allowed
        ));
        assert!(origin_allowed(
            &headers(Some("https://app.example.org"), "call.example.org"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("https://evil.example"), "localhost:8443"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("http://localhost:8443"), "localhost:8443"),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(Some("null"), "localhost:8443"),
            &allowed
        ));
        assert!(origin_allowed(&headers(None, "localhost:8443"), &allowed));
    }
}
