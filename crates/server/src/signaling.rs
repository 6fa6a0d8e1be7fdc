//! The driver of the signaling hub: one lock around the sans-IO [`Hub`], the
//! outbound queue of every connection, and the timer task.
//!
//! Owns the hand-off between connection tasks and the hub. It must not block:
//! every hub call is short and done under a plain mutex, and outbound messages
//! go into per-connection queues bounded in messages and bytes (`outbox.rs`);
//! a connection whose queue is full is a slow reader and is dropped (4003)
//! rather than buffered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use duet_signaling::{
    CloseCode, ConnectionId, Disconnect, Hub, MessageKind, Output, ServerMessage,
};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::outbox::{Inbox, Outbox, outbox};

#[derive(Debug)]
pub struct Signaling {
    inner: Mutex<Inner>,
    /// Wakes the timer task when a deadline earlier than its current one appears.
    timer_wake: Notify,
    next_connection: AtomicU64,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Inner {
    hub: Hub,
    outboxes: HashMap<ConnectionId, Outbox>,
    /// When the timer task will wake next.
    timer_at: Option<Instant>,
}

impl Signaling {
    pub fn new(config: duet_signaling::Config, metrics: Arc<Metrics>) -> Arc<Self> {
        let seed: [u8; 32] = rand::random();
        Arc::new(Self {
            inner: Mutex::new(Inner {
                hub: Hub::new(config, seed),
                outboxes: HashMap::new(),
                timer_at: None,
            }),
            timer_wake: Notify::new(),
            next_connection: AtomicU64::new(1),
            metrics,
        })
    }

    /// The silence timeout, from which connection tasks derive their ping period.
    pub fn silence_timeout(&self) -> Duration {
        self.lock().hub.config().silence_timeout
    }

    /// Registers a new connection; the receiver is its outbound queue.
    pub fn connect(&self) -> (ConnectionId, Inbox) {
        self.connect_with(None)
    }

    /// Registers a new connection with its own `iceServers`.
    pub fn connect_with(
        &self,
        ice_servers: Option<Arc<[duet_signaling::IceServer]>>,
    ) -> (ConnectionId, Inbox) {
        let connection = ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed));
        let (sender, receiver) = outbox();
        self.metrics.connections_total.inc();
        self.metrics.connections.inc();
        self.with_hub(|inner, now| {
            inner.outboxes.insert(connection, sender);
            inner.hub.handle_connect(connection, now);
            if let Some(ice_servers) = ice_servers {
                inner.hub.set_ice_servers(connection, ice_servers);
            }
        });
        (connection, receiver)
    }

    pub fn text(&self, connection: ConnectionId, text: &str) {
        let started = Instant::now();
        let mut kind = None;
        self.with_hub(|inner, now| kind = inner.hub.handle_text(connection, text, now));
        if kind.is_some() {
            self.metrics.messages_received.inc();
        }
        if kind == Some(MessageKind::Join) {
            self.metrics
                .join_latency
                .observe(started.elapsed().as_secs_f64());
        }
    }

    pub fn binary(&self, connection: ConnectionId) {
        self.with_hub(|inner, now| inner.hub.handle_binary(connection, now));
    }

    /// A ping or pong frame: the connection is alive.
    pub fn activity(&self, connection: ConnectionId) {
        let now = Instant::now();
        self.lock().hub.handle_activity(connection, now);
    }

    pub fn disconnect(&self, connection: ConnectionId, how: Disconnect) {
        self.with_hub(|inner, now| {
            if inner.outboxes.remove(&connection).is_some() {
                self.metrics.connections.dec();
            }
            inner.hub.handle_disconnect(connection, how, now);
        });
    }

    /// Fires the hub's deadlines until `shutdown` turns true.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wake_at = {
                let mut inner = self.lock();
                let at = inner
                    .hub
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                inner.timer_at = Some(at);
                at
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    self.with_hub(|inner, now| inner.hub.handle_timeout(now));
                }
                _ = self.timer_wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the hub half-updated in a
        // way worse than stopping the whole service; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Runs one input against the hub, then carries out every output.
    fn with_hub(&self, input: impl FnOnce(&mut Inner, Instant)) {
        let now = Instant::now();
        let mut inner = self.lock();
        input(&mut inner, now);
        self.dispatch(&mut inner, now);
        let next = inner.hub.poll_timeout();
        if let (Some(next), Some(planned)) = (next, inner.timer_at)
            && next < planned
        {
            inner.timer_at = Some(next);
            self.timer_wake.notify_one();
        }
    }

    fn dispatch(&self, inner: &mut Inner, now: Instant) {
        while let Some(output) = inner.hub.poll_output() {
            match output {
                Output::Send { to, message } => {
                    self.count(&message);
                    let text = Utf8Bytes::from(message.to_json());
                    let Some(outbox) = inner.outboxes.get(&to) else {
                        continue;
                    };
                    if outbox.push(text).is_err() {
                        // A slow reader: dropping its sender ends its task,
                        // which closes the socket with 4003.
                        inner.outboxes.remove(&to);
                        self.metrics.connections.dec();
                        self.metrics.close(CloseCode::SlowReader.number());
                        inner.hub.handle_disconnect(to, Disconnect::Closed, now);
                    }
                }
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    self.metrics.close(code.number());
                    if let Some(outbox) = inner.outboxes.remove(&connection) {
                        self.metrics.connections.dec();
                        outbox.close(code.number(), reason);
                    }
                }
            }
        }
        let stats = inner.hub.stats();
        self.metrics.rooms.set(gauge(stats.rooms));
        self.metrics.away_seats.set(gauge(stats.away_seats));
    }

    fn count(&self, message: &ServerMessage) {
        match message {
            ServerMessage::Message { .. } => {
                self.metrics.messages_relayed.inc();
            }
            ServerMessage::Error { code, .. } => self.metrics.error(code.as_str()),
            ServerMessage::Joined { .. }
            | ServerMessage::OtherJoined { .. }
            | ServerMessage::Full { .. }
            | ServerMessage::Leaved { .. }
            | ServerMessage::Bye { .. }
            | ServerMessage::Pong => {}
        }
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
