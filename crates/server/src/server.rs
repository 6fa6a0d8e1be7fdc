//! Starting and stopping a Duet server: binds the listeners, loads the TLS
//! identity, spawns the HTTPS port's accept loop (HTTPS, TURN over TCP and
//! TLS, see [`crate::front`]), the optional TURN-over-TLS port, the optional
//! HTTP redirect and the signaling timer task, and shuts them all down on request.
//!
//! Owns the listening sockets and tasks. [`start`] takes a config whose
//! addresses may use port 0, so tests run many servers side by side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::{AppState, router};
use crate::config::{CertificateSource, ServeConfig};
use crate::front::{Front, Role};
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::signaling::Signaling;
use crate::tls::{Identity, load_identity, self_signed_names};
use crate::turn::{Relay, StreamPorts};

/// Longest shutdown waits for tasks before giving up on them.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);

/// A server that is accepting connections.
#[derive(Debug)]
pub struct RunningServer {
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// The TURN-over-TLS-only port, when on.
    pub turns_addr: Option<SocketAddr>,
    pub identity: Identity,
    pub state: Arc<AppState>,
    /// UDP/TCP address of the embedded relay, when on.
    pub turn_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    draining: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
    /// Connections of the HTTPS port not yet sorted by protocol.
    unsorted: Arc<ConnectionLimits>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    pub took: Duration,
    /// Signaling connections and relay allocations still there at the deadline.
    pub connections_left: usize,
    pub allocations_left: usize,
}

/// How often a drain checks whether everyone has gone.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Binds, loads the certificate and starts serving.
pub async fn start(config: ServeConfig) -> anyhow::Result<RunningServer> {
    let https_listener = bind(config.listen)?;
    let http_listener = config.http_listen.map(bind).transpose()?;
    let turns_listener = config.turns_listen.map(bind).transpose()?;
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?,
        ),
        None => None,
    };
    let https_addr = https_listener.local_addr()?;
    let turns_addr = match &turns_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let http_addr = match &http_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };

    let names = self_signed_names(&config.domains);
    let mut identity = load_identity(&config.certificate, &config.data_dir, &names)?;
    if let CertificateSource::Files { .. } = config.certificate {
        tracing::info!(cert = %identity.cert_path.display(), "using the configured certificate");
    }

    let metrics = Arc::new(Metrics::new());
    let signaling = Signaling::new(config.signaling.clone(), Arc::clone(&metrics));
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let (draining, draining_receiver) = watch::channel(false);
    let mut allowed_origins = config.allowed_origins.clone();
    for domain in &config.domains {
        allowed_origins.push(format!("https://{}", domain.to_ascii_lowercase()));
        allowed_origins.push(format!(
            "https://{}:{}",
            domain.to_ascii_lowercase(),
            https_addr.port()
        ));
    }
    let mut tasks = JoinSet::new();
    let relay = match config.turn.clone() {
        Some(settings) => {
            let mut relay = Relay::start(
                settings,
                &config.data_dir,
                shutdown_receiver.clone(),
                &mut tasks,
            )
            .await?;
            relay.streams = StreamPorts {
                https: Some(https_addr.port()),
                tls_trusted: Arc::clone(&identity.trusted),
            };
            Some(Arc::new(relay))
        }
        None => None,
    };
    let turn_addr = relay.as_ref().map(|relay| relay.udp_addr);
    let state = Arc::new(AppState {
        signaling: Arc::clone(&signaling),
        metrics,
        limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
        allowed_origins,
        web_dir: config.web_dir.clone(),
        shutdown: shutdown_receiver.clone(),
        draining: draining_receiver.clone(),
        relay,
        relays: config
            .external_relays
            .clone()
            .map(crate::relays::RelayPool::new),
        extra_ice_servers: config.signaling.ice_servers.clone(),
        default_host: config.domains.first().cloned(),
    });
    let relay = state.relay.clone();

    if let Some(pool) = &state.relays {
        let pool = Arc::clone(pool);
        let shutdown = shutdown_receiver.clone();
        tasks.spawn(async move {
            pool.poll(shutdown).await;
            Ok(())
        });
    }
    if let Some(listener) = metrics_listener {
        let render_state = Arc::clone(&state);
        let render: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(move || crate::app::render_metrics(&render_state));
        let shutdown = shutdown_receiver.clone();
        tasks.spawn(async move {
            crate::metrics::serve_plain(listener, render, shutdown)
                .await
                .context("the metrics listener failed")
        });
    }

    tasks.spawn({
        let signaling = Arc::clone(&signaling);
        let shutdown = shutdown_receiver.clone();
        async move {
            signaling.run_timers(shutdown).await;
            Ok(())
        }
    });
    if let Some(url) = &config.redis {
        let (link, pending) = crate::cluster::Link::connect(
            url,
            config.redis_ca.as_deref(),
            Arc::clone(&state.metrics),
        )
        .await?;
        signaling.join_cluster(Arc::clone(&link));
        let signaling = Arc::clone(&signaling);
        let shutdown = shutdown_receiver.clone();
        tasks.spawn(async move {
            link.run(pending, signaling, shutdown).await;
            Ok(())
        });
    }

    if let Some(acme) = identity.acme.take() {
        let trusted = Arc::clone(&identity.trusted);
        let shutdown = shutdown_receiver.clone();
        tasks.spawn(async move {
            acme.run(trusted, shutdown).await;
            Ok(())
        });
    }

    let https_port = https_addr.port();
    let redirect = redirect_router(https_port);
    let front = |role| {
        Front::new(
            role,
            Arc::clone(&identity.server_config),
            router(Arc::clone(&state)),
            redirect.clone(),
            relay.clone(),
            shutdown_receiver.clone(),
            draining_receiver.clone(),
        )
    };
    let https_front = front(Role::Https);
    let unsorted = Arc::clone(&https_front.unsorted);
    let listener = tokio::net::TcpListener::from_std(https_listener)
        .context("cannot use the HTTPS listener")?;
    tasks.spawn(async move {
        crate::front::serve(listener, https_front)
            .await
            .context("the HTTPS listener failed")
    });
    if let Some(listener) = turns_listener {
        let turns_front = front(Role::TurnsOnly);
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("cannot use the TURN-over-TLS listener")?;
        tasks.spawn(async move {
            crate::front::serve(listener, turns_front)
                .await
                .context("the TURN-over-TLS listener failed")
        });
    }

    if let Some(listener) = http_listener {
        let mut stop = shutdown_receiver.clone();
        tasks.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, redirect)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
                .context("the HTTP redirect server failed")
        });
    }

    Ok(RunningServer {
        https_addr,
        http_addr,
        turns_addr,
        identity,
        state,
        turn_addr,
        shutdown,
        draining,
        tasks,
        unsorted,
    })
}

impl RunningServer {
    /// The relay's counters, when it is on.
    pub fn relay_stats(&self) -> Option<duet_turn::Stats> {
        self.state.relay.as_ref().map(|relay| relay.stats())
    }

    /// Connections of the HTTPS port still being sorted (read, handshaken).
    pub fn unsorted_connections(&self) -> usize {
        self.unsorted.total()
    }

    /// Drains, then shuts down (SIGTERM): stops accepting connections (the
    /// HTTPS listener closes, `/healthz` and WebSocket upgrades answer 503),
    /// closes every WebSocket with 1012 so clients come back with their resume
    /// token (nobody is told `bye`), refuses new relay allocations (508) and
    /// lets the existing ones go on until they end or `deadline` passes.
    pub async fn drain(self, deadline: Duration) -> Drained {
        let started = tokio::time::Instant::now();
        let _ = self.draining.send(true);
        if let Some(relay) = &self.state.relay {
            relay.stop_allocating();
        }
        // In a cluster, the rooms this node holds go to other nodes once its
        // own members have been told to reconnect (their seats wait for them).
        let until = started + Duration::from_secs(2);
        while self.state.limits.total() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.state.signaling.release_all();
        let relay = self.state.relay.clone();
        let busy = || {
            let allocations = relay.as_ref().map_or(0, |relay| relay.stats().allocations);
            (self.state.limits.total(), allocations)
        };
        let until = started + deadline;
        let mut left = busy();
        while left != (0, 0) && tokio::time::Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
            left = busy();
        }
        let drained = Drained {
            took: started.elapsed(),
            connections_left: left.0,
            allocations_left: left.1,
        };
        self.shutdown().await;
        drained
    }

    /// Closes every WebSocket with 1001, stops accepting, and waits (bounded) for the tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }

    /// Resolves when a server task stops by itself (an error), with that error.
    pub async fn failed(&mut self) -> anyhow::Error {
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Err(error)) => return error,
                Err(error) => return anyhow::anyhow!("a server task stopped: {error}"),
                Ok(Ok(())) => {}
            }
        }
        anyhow::anyhow!("all server tasks ended")
    }
}

/// Binds a TCP listener. The IPv6 unspecified address (`[::]`, the default)
/// listens dual-stack, IPv4 and IPv6 on one socket; on a host without IPv6 it
/// falls back to `0.0.0.0` on the same port.
fn bind(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let dual_stack = address.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    match bind_exactly(address, dual_stack) {
        Err(error) if dual_stack && !ipv6_available() => {
            let fallback = SocketAddr::from(([0, 0, 0, 0], address.port()));
            tracing::warn!(%address, %fallback, "this host has no IPv6: listening on IPv4 only");
            bind_exactly(fallback, false).map_err(|_| error)
        }
        result => result,
    }
}

/// True when the kernel can make an IPv6 socket at all.
fn ipv6_available() -> bool {
    std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_ok()
}

fn bind_exactly(address: SocketAddr, dual_stack: bool) -> anyhow::Result<std::net::TcpListener> {
    let describe = |error: std::io::Error| {
        let why = match error.kind() {
            std::io::ErrorKind::AddrInUse => "the address is already in use".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_owned()
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "the address does not belong to this machine".to_owned()
            }
            _ => error.to_string(),
        };
        anyhow::anyhow!("cannot listen on {address}: {why}")
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(describe)?;
    if address.is_ipv6() {
        socket.set_only_v6(!dual_stack).map_err(describe)?;
    }
    socket.set_reuse_address(true).map_err(describe)?;
    socket.set_nonblocking(true).map_err(describe)?;
    socket.bind(&address.into()).map_err(describe)?;
    socket.listen(4096).map_err(describe)?;
    Ok(socket.into())
}

/// Answers every request with a permanent redirect to the same path over HTTPS.
fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |request: Request| async move {
        redirect_to_https(request.uri(), request.headers(), https_port)
    })
}

fn redirect_to_https(uri: &Uri, headers: &axum::http::HeaderMap, https_port: u16) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok());
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "a Host header is needed\n").into_response();
    };
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let authority = if https_port == 443 {
        host.host().to_owned()
    } else if host.host().contains(':') {
        format!("[{}]:{https_port}", host.host().trim_matches(['[', ']']))
    } else {
        format!("{}:{https_port}", host.host())
    };
    Redirect::permanent(&format!("https://{authority}{path}")).into_response()
}
