//! Prometheus metrics of one server instance.
//!
//! Owns the registry and the metric handles; the registry is a value, not a
//! global, so several servers in one test process keep their own figures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::call_metrics::CallMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub rooms: Gauge,
    pub away_seats: Gauge,
    pub messages_received: Counter,
    pub messages_relayed: Counter,
    pub resumes: Counter,
    pub errors: Family<CodeLabel, Counter>,
    pub closes: Family<CodeLabel, Counter>,
    pub upgrades_refused: Family<ReasonLabel, Counter>,
    pub join_latency: Histogram,
    pub turn_allocations: Gauge,
    pub turn_allocations_total: Gauge,
    pub turn_packets: Family<DirectionLabel, Gauge>,
    pub turn_bytes: Family<DirectionLabel, Gauge>,
    pub turn_auth_failures: Gauge,
    pub turn_denied_peers: Gauge,
    pub turn_quota_refusals: Gauge,
    /// Call quality, from the reports of the clients.
    pub calls: CallMetrics,
    /// Commands sent to Redis (a cluster), by kind.
    pub redis_commands: Family<OpLabel, Counter>,
    /// Commands to Redis that failed or timed out.
    pub redis_errors: Counter,
    /// Writes and messages dropped because too many were waiting for Redis.
    pub redis_dropped: Counter,
    /// Rooms this node holds (a cluster).
    pub cluster_rooms_held: Gauge,
    /// Members of rooms held here that are connected to other nodes.
    pub cluster_remote_members: Gauge,
    /// Connections of this node whose room another node holds.
    pub cluster_forwarded: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("duet");
        let connections = Gauge::default();
        let connections_total = Counter::default();
        let rooms = Gauge::default();
        let away_seats = Gauge::default();
        let messages_received = Counter::default();
        let messages_relayed = Counter::default();
        let resumes = Counter::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let closes = Family::<CodeLabel, Counter>::default();
        let upgrades_refused = Family::<ReasonLabel, Counter>::default();
        // 10 µs to about 5 s.
        let join_latency = Histogram::new(exponential_buckets(0.000_01, 2.5, 15));
        registry.register(
            "signaling_connections",
            "Open signaling WebSocket connections",
            connections.clone(),
        );
        registry.register(
            "signaling_connections",
            "Signaling WebSocket connections accepted",
            connections_total.clone(),
        );
        registry.register("rooms", "Rooms with at least one seat", rooms.clone());
        registry.register(
            "away_seats",
            "Seats waiting for their client to resume",
            away_seats.clone(),
        );
        registry.register(
            "messages_received",
            "Client messages accepted by the signaling server",
            messages_received.clone(),
        );
        registry.register(
            "messages_relayed",
            "Messages delivered from one member to the other",
            messages_relayed.clone(),
        );
        registry.register(
            "resumes",
            "Seats taken back with a resume token",
            resumes.clone(),
        );
        registry.register(
            "signaling_errors",
            "Error messages sent to clients, by code",
            errors.clone(),
        );
        registry.register(
            "signaling_closes",
            "Connections closed by the server, by close code",
            closes.clone(),
        );
        registry.register(
            "upgrades_refused",
            "WebSocket upgrades refused, by reason",
            upgrades_refused.clone(),
        );
        registry.register(
            "join_latency_seconds",
            "Time from receiving a join to queueing its answer",
            join_latency.clone(),
        );
        let redis_commands = Family::<OpLabel, Counter>::default();
        let redis_errors = Counter::default();
        let redis_dropped = Counter::default();
        registry.register(
            "cluster_redis_commands",
            "Commands sent to Redis by this node of a cluster, by kind (publish: a message to another node)",
            redis_commands.clone(),
        );
        registry.register(
            "cluster_redis_errors",
            "Commands to Redis that failed or timed out",
            redis_errors.clone(),
        );
        registry.register(
            "cluster_redis_dropped",
            "Writes and messages to other nodes dropped because too many were waiting for Redis",
            redis_dropped.clone(),
        );
        let cluster_rooms_held = Gauge::default();
        let cluster_remote_members = Gauge::default();
        let cluster_forwarded = Gauge::default();
        registry.register(
            "cluster_rooms_held",
            "Rooms this node holds (runs and keeps in Redis)",
            cluster_rooms_held.clone(),
        );
        registry.register(
            "cluster_remote_members",
            "Members of rooms held here whose connection is on another node",
            cluster_remote_members.clone(),
        );
        registry.register(
            "cluster_forwarded_connections",
            "Connections of this node whose room another node holds (their frames are forwarded)",
            cluster_forwarded.clone(),
        );
        let turn_allocations = Gauge::default();
        let turn_allocations_total = Gauge::default();
        let turn_packets = Family::<DirectionLabel, Gauge>::default();
        let turn_bytes = Family::<DirectionLabel, Gauge>::default();
        let turn_auth_failures = Gauge::default();
        let turn_denied_peers = Gauge::default();
        let turn_quota_refusals = Gauge::default();
        registry.register(
            "turn_allocations",
            "Live TURN allocations",
            turn_allocations.clone(),
        );
        registry.register(
            "turn_allocations_made",
            "TURN allocations made since start",
            turn_allocations_total.clone(),
        );
        registry.register(
            "turn_relayed_packets",
            "Packets relayed since start, by direction",
            turn_packets.clone(),
        );
        registry.register(
            "turn_relayed_bytes",
            "Payload bytes relayed since start, by direction",
            turn_bytes.clone(),
        );
        registry.register(
            "turn_auth_failures",
            "TURN requests with wrong credentials since start",
            turn_auth_failures.clone(),
        );
        registry.register(
            "turn_denied_peers",
            "Permissions or channels refused by the peer address policy since start",
            turn_denied_peers.clone(),
        );
        registry.register(
            "turn_quota_refusals",
            "Allocations refused by a quota since start",
            turn_quota_refusals.clone(),
        );
        let calls = CallMetrics::register(&mut registry);
        Self {
            calls,
            redis_commands,
            redis_errors,
            redis_dropped,
            cluster_rooms_held,
            cluster_remote_members,
            cluster_forwarded,
            registry,
            turn_allocations,
            turn_allocations_total,
            turn_packets,
            turn_bytes,
            turn_auth_failures,
            turn_denied_peers,
            turn_quota_refusals,
            connections,
            connections_total,
            rooms,
            away_seats,
            messages_received,
            messages_relayed,
            resumes,
            errors,
            closes,
            upgrades_refused,
            join_latency,
        }
    }

    /// Copies the relay's counters into the exported gauges.
    pub fn record_relay(&self, stats: &duet_turn::Stats) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.turn_allocations.set(gauge(stats.allocations as u64));
        self.turn_allocations_total
            .set(gauge(stats.allocations_total));
        for (direction, packets, bytes) in [
            ("to_peer", stats.to_peer_packets, stats.to_peer_bytes),
            ("to_client", stats.to_client_packets, stats.to_client_bytes),
        ] {
            let label = DirectionLabel { direction };
            self.turn_packets.get_or_create(&label).set(gauge(packets));
            self.turn_bytes.get_or_create(&label).set(gauge(bytes));
        }
        self.turn_auth_failures.set(gauge(stats.auth_failures));
        self.turn_denied_peers.set(gauge(stats.denied_peers));
        self.turn_quota_refusals.set(gauge(stats.quota_refusals));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn redis_command(&self, op: &'static str) {
        self.redis_commands.get_or_create(&OpLabel { op }).inc();
    }

    pub fn close(&self, code: u16) {
        self.closes
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    pub fn refuse_upgrade(&self, reason: &str) {
        self.upgrades_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Serves `render()` at `/metrics` and `ok` at `/healthz` over plain HTTP
/// (`--metrics-listen`, an internal address) until `shutdown` turns true.
pub async fn serve_plain(
    listener: tokio::net::TcpListener,
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use axum::routing::get;
    let metrics = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = std::sync::Arc::clone(&render);
                async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, metrics)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        })
        .await?;
    Ok(())
}

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
