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
use duet_signaling::cmd::{self, CmdClient};
use duet_signaling::signal::{self, Form};
use duet_signaling::socketio::{self, SioClient};
use duet_signaling::{
    CloseCode, ConnectionId, Disconnect, Hub, MessageKind, Output, PeerId, ServerMessage,
};
use serde_json::value::RawValue;
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
    /// The dialect of each connection, told by its first frame.
    dialects: HashMap<ConnectionId, Dialect>,
    /// How members of the other dialects are known (a `cmd` client's uid, a
    /// socket.io client's socket id), by their seat's id. Others go by their id.
    names: HashMap<PeerId, Name>,
    /// When the timer task will wake next.
    timer_at: Option<Instant>,
}

/// What a connection speaks: Duet's own protocol, the `cmd` dialect or
/// socket.io (translated at this edge; see `duet_signaling::cmd` and
/// `duet_signaling::socketio`).
#[derive(Debug)]
enum Dialect {
    Duet,
    Cmd {
        client: CmdClient,
        /// Its seat's id, once joined.
        id: Option<PeerId>,
    },
    SocketIo {
        client: SioClient,
        /// Its seat's id, once joined.
        id: Option<PeerId>,
    },
}

impl Dialect {
    /// The seat of a client of another dialect, whose name outlives it until its room mate is told.
    fn legacy_seat(&self) -> Option<PeerId> {
        match self {
            Dialect::Duet => None,
            Dialect::Cmd { id, .. } | Dialect::SocketIo { id, .. } => *id,
        }
    }
}

/// A member of another dialect, as the others know it.
#[derive(Debug)]
struct Name {
    text: String,
    socket_io: bool,
}

/// How other dialects name a member: its uid or socket id, else its id.
fn name_of(names: &HashMap<PeerId, Name>, id: PeerId) -> String {
    names
        .get(&id)
        .map_or_else(|| id.to_string(), |name| name.text.clone())
}

impl Signaling {
    pub fn new(config: duet_signaling::Config, metrics: Arc<Metrics>) -> Arc<Self> {
        let seed: [u8; 32] = rand::random();
        Arc::new(Self {
            inner: Mutex::new(Inner {
                hub: Hub::new(config, seed),
                outboxes: HashMap::new(),
                dialects: HashMap::new(),
                names: HashMap::new(),
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
        self.with_hub(|inner, now| {
            let dialect = inner.dialects.entry(connection).or_insert_with(|| {
                if cmd::is_cmd(text) {
                    Dialect::Cmd {
                        client: CmdClient::default(),
                        id: None,
                    }
                } else {
                    Dialect::Duet
                }
            });
            kind = match dialect {
                Dialect::Duet => inner.hub.handle_text(connection, text, now),
                Dialect::Cmd { client, .. } => {
                    let seat = inner.hub.seat_of(connection);
                    let seat = cmd::Seat {
                        room: seat.as_ref().map(|(room, _, _)| room.clone()),
                        mate_uid: seat
                            .and_then(|(_, _, mate)| mate)
                            .map(|mate| name_of(&inner.names, mate)),
                    };
                    let translated = client.translate_in(text, &seat);
                    inner.hub.handle_translated(connection, translated, now)
                }
                // Never on a WebSocket of /ws: socket.io has its own transport.
                Dialect::SocketIo { .. } => None,
            };
        });
        self.count_input(kind, started);
    }

    /// Registers a socket.io client, known to others by its socket id.
    pub fn connect_socketio(
        &self,
        sid: String,
        ice_servers: Option<Arc<[duet_signaling::IceServer]>>,
    ) -> (ConnectionId, Inbox) {
        let (connection, inbox) = self.connect_with(ice_servers);
        let dialect = Dialect::SocketIo {
            client: SioClient::new(sid),
            id: None,
        };
        self.lock().dialects.insert(connection, dialect);
        (connection, inbox)
    }

    /// An event from a socket.io client.
    pub fn socketio_event(&self, connection: ConnectionId, event: socketio::Event) {
        let started = Instant::now();
        let mut kind = None;
        self.with_hub(|inner, now| {
            let Some(Dialect::SocketIo { client, .. }) = inner.dialects.get(&connection) else {
                return;
            };
            let room = inner.hub.seat_of(connection).map(|(room, _, _)| room);
            let translated = client.translate_in(event, room.as_ref());
            kind = inner.hub.handle_translated(connection, translated, now);
        });
        self.count_input(kind, started);
    }

    fn count_input(&self, kind: Option<MessageKind>, started: Instant) {
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
        let mut legacy_id = None;
        self.with_hub(|inner, now| {
            if inner.outboxes.remove(&connection).is_some() {
                self.metrics.connections.dec();
            }
            let how = match inner.dialects.remove(&connection) {
                // The other dialects have no resume token: waiting for the
                // client to come back is pointless, so its room mate is told at once.
                Some(dialect @ (Dialect::Cmd { .. } | Dialect::SocketIo { .. })) => {
                    legacy_id = dialect.legacy_seat();
                    Disconnect::Closed
                }
                _ => how,
            };
            inner.hub.handle_disconnect(connection, how, now);
        });
        // After the `peer-leave` or `bye` above was rendered with it.
        if let Some(id) = legacy_id {
            self.lock().names.remove(&id);
        }
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
                    let rendered = render(inner, to, &message);
                    if let ServerMessage::Bye { id } = &message {
                        // That seat is gone for good; its name was needed once more, above.
                        inner.names.remove(id);
                    }
                    let Some(text) = rendered else {
                        continue;
                    };
                    let text = Utf8Bytes::from(text);
                    let Some(outbox) = inner.outboxes.get(&to) else {
                        continue;
                    };
                    if outbox.push(text).is_err() {
                        // A slow reader: dropping its sender ends its task,
                        // which closes the socket with 4003.
                        inner.outboxes.remove(&to);
                        forget_dialect(inner, to);
                        self.metrics.connections.dec();
                        self.metrics.close(CloseCode::SlowReader.number());
                        inner.hub.handle_disconnect(to, Disconnect::Closed, now);
                    }
                }
                Output::Report { report, .. } => self.metrics.calls.record(&report),
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    self.metrics.close(code.number());
                    forget_dialect(inner, connection);
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

/// Drops what is kept of a connection the hub has closed. (The name of a
/// client of another dialect stays until it is gone from its room: only the
/// `peer-leave` or `bye` needs it.)
fn forget_dialect(inner: &mut Inner, connection: ConnectionId) {
    if let Some(id) = inner
        .dialects
        .remove(&connection)
        .and_then(|dialect| dialect.legacy_seat())
        && inner.hub.seat_of(connection).is_none()
    {
        inner.names.remove(&id);
    }
}

/// A hub message as `to` reads it: in its dialect (`None`: nothing to send
/// it), with the descriptions and candidates of other dialects in its form. A
/// socket.io client gets a JSON array of events (`[[event, args…], …]`).
/// Between two of Duet's own clients the message goes out as it is (no
/// lookup, no parse of `data`): only other dialects need the translation.
fn render(inner: &mut Inner, to: ConnectionId, message: &ServerMessage) -> Option<String> {
    let legacy = matches!(
        inner.dialects.get(&to),
        Some(Dialect::Cmd { .. } | Dialect::SocketIo { .. })
    );
    if !legacy {
        if let ServerMessage::Message { from, data } = message
            && inner.names.contains_key(from)
            && let std::borrow::Cow::Owned(translated) = signal::to_form(data.get(), Form::Duet)
            && let Ok(data) = RawValue::from_string(translated)
        {
            return Some(ServerMessage::Message { from: *from, data }.to_json());
        }
        return Some(message.to_json());
    }
    let room = inner.hub.seat_of(to).map(|(room, _, _)| room);
    let room = room.as_ref();
    match inner.dialects.get_mut(&to) {
        Some(Dialect::Cmd { client, id }) => {
            if let ServerMessage::Joined { id: own, .. } = message {
                *id = Some(*own);
                if let Some(uid) = client.uid() {
                    let name = Name {
                        text: uid.to_owned(),
                        socket_io: false,
                    };
                    inner.names.insert(*own, name);
                }
            }
            let names = &inner.names;
            client.translate_out(message, room, &|id| name_of(names, id))
        }
        Some(Dialect::SocketIo { client, id }) => {
            if let ServerMessage::Joined { id: own, .. } = message {
                *id = Some(*own);
                let name = Name {
                    text: client.sid().to_owned(),
                    socket_io: true,
                };
                inner.names.insert(*own, name);
            }
            let names = &inner.names;
            let view = socketio::View {
                room,
                name_of: &|id| name_of(names, id),
                speaks_socketio: &|id| names.get(&id).is_some_and(|name| name.socket_io),
            };
            let events = client.translate_out(message, &view);
            (!events.is_empty()).then(|| serde_json::Value::Array(events).to_string())
        }
        // Rendered above.
        None | Some(Dialect::Duet) => None,
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
