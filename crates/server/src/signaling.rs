//! The driver of the signaling hub: one lock around the sans-IO [`Hub`], the
//! outbound queue of every connection, and the timer task.
//!
//! Owns the hand-off between connection tasks and the hub. It must not block:
//! every hub call is short and done under a plain mutex, and outbound messages
//! go into per-connection queues bounded in messages and bytes (`outbox.rs`);
//! a connection whose queue is full is a slow reader and is dropped (4003)
//! rather than buffered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use duet_signaling::cluster::{Envelope, NodeMessage, StoredRoom};
use duet_signaling::cmd::{self, CmdClient};
use duet_signaling::signal::{self, Form};
use duet_signaling::socketio::{self, SioClient};
use duet_signaling::{
    ClientMessage, CloseCode, ConnectionId, Disconnect, ErrorCode, Hub, IceServer, MessageKind,
    Output, PeerId, RoomName, ServerMessage,
};
use serde_json::value::RawValue;
use tokio::sync::{Notify, watch};

use crate::cluster::{Claim, Link};
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
    /// With `--redis`: the rooms this node holds and the members that cross nodes.
    cluster: Option<ClusterState>,
}

/// What a node of a cluster knows besides its hub (see `duet_signaling::cluster`).
#[derive(Debug)]
struct ClusterState {
    link: Arc<Link>,
    /// Rooms this node holds (runs in its hub and keeps in Redis).
    owned: HashSet<RoomName>,
    /// Connections of this node whose room another node holds.
    moved: HashMap<ConnectionId, Moved>,
    /// Members of rooms held here whose connection is on another node: the
    /// hub's connection for each, and where the member is.
    remote: HashMap<ConnectionId, (Arc<str>, u64)>,
    remote_index: HashMap<(Arc<str>, u64), ConnectionId>,
}

/// A connection of this node whose room another node holds.
#[derive(Debug)]
struct Moved {
    owner: Arc<str>,
    room: RoomName,
    ice_servers: Option<Arc<[IceServer]>>,
    /// True once the holder has answered (a `join` always gets an answer).
    answered: bool,
}

/// How long a connection handed to another node waits for its first answer
/// before it is told to reconnect (that node may have died a moment ago).
const UNANSWERED: Duration = Duration::from_secs(3);

/// A `join` this node cannot answer alone: the room may be held by another
/// node. The connection's task awaits [`Signaling::route`] with it.
#[derive(Debug)]
pub struct Route {
    room: RoomName,
    input: Input,
}

/// A frame or event kept while its room is looked up.
#[derive(Debug)]
enum Input {
    Text(String),
    Event(socketio::Event),
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
                cluster: None,
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

    /// A text frame from a connection. `Some`: its room must be looked up
    /// first (a cluster); the caller awaits [`Signaling::route`] with it.
    #[must_use]
    pub fn text(&self, connection: ConnectionId, text: &str) -> Option<Route> {
        let started = Instant::now();
        let mut kind = None;
        let mut route = None;
        self.with_hub(|inner, now| {
            if forward_if_moved(inner, connection, || NodeMessage::Frame {
                c: connection.0,
                text: text.to_owned(),
            }) {
                return;
            }
            if let Some(room) = join_elsewhere(inner, connection, text) {
                route = Some(Route {
                    room,
                    input: Input::Text(text.to_owned()),
                });
                return;
            }
            kind = hub_text(inner, connection, text, now);
        });
        self.count_input(kind, started);
        route
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

    /// An event from a socket.io client. `Some`: as for [`Signaling::text`].
    #[must_use]
    pub fn socketio_event(
        &self,
        connection: ConnectionId,
        event: socketio::Event,
    ) -> Option<Route> {
        let started = Instant::now();
        let mut kind = None;
        let mut route = None;
        self.with_hub(|inner, now| {
            if forward_if_moved(inner, connection, || NodeMessage::Event {
                c: connection.0,
                event: event.clone().into(),
            }) {
                return;
            }
            if let Some(room) = sio_join_elsewhere(inner, connection, &event) {
                route = Some(Route {
                    room,
                    input: Input::Event(event),
                });
                return;
            }
            kind = hub_event(inner, connection, event, now);
        });
        self.count_input(kind, started);
        route
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
        let mut inner = self.lock();
        if !forward_if_moved(&mut inner, connection, || NodeMessage::Activity {
            c: connection.0,
        }) {
            inner.hub.handle_activity(connection, now);
        }
    }

    pub fn disconnect(&self, connection: ConnectionId, how: Disconnect) {
        let mut legacy_id = None;
        self.with_hub(|inner, now| {
            if inner.outboxes.remove(&connection).is_some() {
                self.metrics.connections.dec();
            }
            if let Some(cluster) = inner.cluster.as_mut()
                && let Some(moved) = cluster.moved.remove(&connection)
            {
                // The room's node decides, knowing the dialect.
                let message = NodeMessage::Gone {
                    c: connection.0,
                    lost: how == Disconnect::Lost,
                };
                cluster.link.send(&moved.owner, message);
                inner.dialects.remove(&connection);
                return;
            }
            legacy_id = hub_disconnect(inner, connection, how, now);
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
                    if let Some(cluster) = &inner.cluster
                        && let Some((node, c)) = cluster.remote.get(&to)
                    {
                        cluster.link.send(node, NodeMessage::Out { c: *c, text });
                        continue;
                    }
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
                    if let Some(cluster) = inner.cluster.as_mut()
                        && let Some((node, c)) = cluster.remote.remove(&connection)
                    {
                        cluster.remote_index.remove(&(Arc::clone(&node), c));
                        let message = NodeMessage::Close {
                            c,
                            code: code.number(),
                        };
                        cluster.link.send(&node, message);
                    }
                    if let Some(outbox) = inner.outboxes.remove(&connection) {
                        self.metrics.connections.dec();
                        outbox.close(code.number(), reason);
                    }
                }
            }
        }
        save_changed_rooms(inner, now);
        if let Some(cluster) = &inner.cluster {
            self.metrics
                .cluster_rooms_held
                .set(gauge(cluster.owned.len()));
            self.metrics
                .cluster_remote_members
                .set(gauge(cluster.remote.len()));
            self.metrics
                .cluster_forwarded
                .set(gauge(cluster.moved.len()));
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

/// A cluster of nodes on one Redis (`--redis`; see `crate::cluster`).
impl Signaling {
    /// Makes this node one of a cluster: rooms are claimed in Redis, members
    /// of rooms held elsewhere are forwarded there.
    pub fn join_cluster(&self, link: Arc<Link>) {
        let mut inner = self.lock();
        inner.hub.track_room_changes();
        inner.cluster = Some(ClusterState {
            link,
            owned: HashSet::new(),
            moved: HashMap::new(),
            remote: HashMap::new(),
            remote_index: HashMap::new(),
        });
    }

    fn link(&self) -> Option<Arc<Link>> {
        self.lock()
            .cluster
            .as_ref()
            .map(|cluster| Arc::clone(&cluster.link))
    }

    /// Finds who holds the room of a `join` (claiming it when nobody does)
    /// and passes the `join` on: to this node's hub, or to the holder.
    pub async fn route(self: &Arc<Self>, connection: ConnectionId, route: Route) {
        let Some(link) = self.link() else {
            return;
        };
        let claim = link.claim(&route.room).await;
        let started = Instant::now();
        let mut kind = None;
        self.with_hub(|inner, now| {
            let Some(cluster) = inner.cluster.as_ref() else {
                return;
            };
            let remote = cluster.remote.get(&connection).cloned();
            let here = inner.outboxes.contains_key(&connection) || remote.is_some();
            if !here || cluster.moved.contains_key(&connection) {
                return;
            }
            match claim {
                Ok(Claim::Mine { stored, dead }) => {
                    take_room(
                        inner,
                        &route.room,
                        stored,
                        &dead,
                        &self.next_connection,
                        now,
                    );
                    kind = match route.input {
                        Input::Text(text) => hub_text(inner, connection, &text, now),
                        Input::Event(event) => hub_event(inner, connection, event, now),
                    };
                    // Claimed for a join the hub refused (too many rooms, a rate
                    // limit): this node does not hold the room after all.
                    if !inner.hub.has_room(&route.room)
                        && let Some(cluster) = inner.cluster.as_mut()
                        && cluster.owned.remove(&route.room)
                    {
                        cluster.link.delete(&route.room);
                    }
                }
                Ok(Claim::Other(owner)) => match remote {
                    // A member of another node that left its room here and
                    // joins one held by a third: it reconnects, to be routed afresh.
                    Some((node, c)) => {
                        forget_remote(inner, connection, now);
                        let code = CloseCode::Restarting.number();
                        link.send(&node, NodeMessage::Close { c, code });
                    }
                    None => {
                        move_to(inner, connection, owner, route, now);
                        let signaling = Arc::clone(self);
                        tokio::spawn(async move {
                            tokio::time::sleep(UNANSWERED).await;
                            signaling.close_unanswered(connection);
                        });
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, room = %route.room, "cannot look up a room in Redis");
                    inner.hub.refuse_join(
                        connection,
                        ErrorCode::Unavailable,
                        "the server cannot reach its room store; try again in a moment".to_owned(),
                    );
                }
            }
        });
        self.count_input(kind, started);
    }

    /// Tells a connection handed to another node to reconnect if that node
    /// has not answered it.
    fn close_unanswered(&self, connection: ConnectionId) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(cluster) = inner.cluster.as_mut() else {
            return;
        };
        let Some(moved) = cluster.moved.remove(&connection) else {
            return;
        };
        if moved.answered {
            cluster.moved.insert(connection, moved);
            return;
        }
        tracing::warn!(owner = %moved.owner, "no answer from the node holding a room; the member reconnects");
        inner.dialects.remove(&connection);
        if let Some(outbox) = inner.outboxes.remove(&connection) {
            self.metrics.connections.dec();
            let code = CloseCode::Restarting;
            outbox.close(code.number(), close_reason(code));
        }
    }

    /// A message from another node.
    pub fn on_node(self: &Arc<Self>, envelope: Envelope) {
        let from: Arc<str> = Arc::from(envelope.from.as_str());
        let mut route = None;
        let mut legacy_id = None;
        self.with_hub(|inner, now| {
            let Some(cluster) = inner.cluster.as_mut() else {
                return;
            };
            let remote = |cluster: &ClusterState, c: u64| {
                cluster.remote_index.get(&(Arc::clone(&from), c)).copied()
            };
            match envelope.message {
                NodeMessage::Attach { c, ice, sio } => {
                    if remote(cluster, c).is_some() {
                        return;
                    }
                    let connection =
                        ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed));
                    cluster.remote.insert(connection, (Arc::clone(&from), c));
                    cluster
                        .remote_index
                        .insert((Arc::clone(&from), c), connection);
                    inner.hub.handle_connect(connection, now);
                    if let Some(ice) = ice {
                        inner.hub.set_ice_servers(connection, Arc::from(ice));
                    }
                    if let Some(sid) = sio {
                        let dialect = Dialect::SocketIo {
                            client: SioClient::new(sid),
                            id: None,
                        };
                        inner.dialects.insert(connection, dialect);
                    }
                }
                NodeMessage::Frame { c, text } => {
                    let Some(connection) = known_or_closed(cluster, &from, c) else {
                        return;
                    };
                    if let Some(room) = join_elsewhere(inner, connection, &text) {
                        route = Some((
                            connection,
                            Route {
                                room,
                                input: Input::Text(text),
                            },
                        ));
                    } else {
                        hub_text(inner, connection, &text, now);
                    }
                }
                NodeMessage::Event { c, event } => {
                    let Some(connection) = known_or_closed(cluster, &from, c) else {
                        return;
                    };
                    let event = socketio::Event::from(event);
                    if let Some(room) = sio_join_elsewhere(inner, connection, &event) {
                        route = Some((
                            connection,
                            Route {
                                room,
                                input: Input::Event(event),
                            },
                        ));
                    } else {
                        hub_event(inner, connection, event, now);
                    }
                }
                NodeMessage::Activity { c } => {
                    let Some(connection) = known_or_closed(cluster, &from, c) else {
                        return;
                    };
                    inner.hub.handle_activity(connection, now);
                }
                NodeMessage::Gone { c, lost } => {
                    let Some(connection) = remote(cluster, c) else {
                        return;
                    };
                    cluster.remote.remove(&connection);
                    cluster.remote_index.remove(&(Arc::clone(&from), c));
                    let how = if lost {
                        Disconnect::Lost
                    } else {
                        Disconnect::Closed
                    };
                    legacy_id = hub_disconnect(inner, connection, how, now);
                }
                NodeMessage::Out { c, text } => {
                    let connection = ConnectionId(c);
                    let from_owner = match cluster.moved.get_mut(&connection) {
                        Some(moved) if moved.owner == from => {
                            moved.answered = true;
                            true
                        }
                        _ => false,
                    };
                    let Some(outbox) = inner.outboxes.get(&connection).filter(|_| from_owner)
                    else {
                        return;
                    };
                    if outbox.push(Utf8Bytes::from(text)).is_err() {
                        // A slow reader, as for a room held here.
                        inner.outboxes.remove(&connection);
                        inner.dialects.remove(&connection);
                        cluster.moved.remove(&connection);
                        self.metrics.connections.dec();
                        self.metrics.close(CloseCode::SlowReader.number());
                        cluster
                            .link
                            .send(&from, NodeMessage::Gone { c, lost: false });
                    }
                }
                NodeMessage::Close { c, code } => {
                    let connection = ConnectionId(c);
                    if cluster
                        .moved
                        .get(&connection)
                        .is_none_or(|moved| moved.owner != from)
                    {
                        return;
                    }
                    cluster.moved.remove(&connection);
                    inner.dialects.remove(&connection);
                    if let Some(outbox) = inner.outboxes.remove(&connection) {
                        self.metrics.connections.dec();
                        let code = duet_signaling::cluster::close_code(code)
                            .unwrap_or(CloseCode::Restarting);
                        outbox.close(code.number(), close_reason(code));
                    }
                }
                NodeMessage::Rehome { c, owner, room } => {
                    // Only the new holder itself says where the room went.
                    if *owner != *from {
                        return;
                    }
                    let connection = ConnectionId(c);
                    match cluster.moved.get_mut(&connection) {
                        Some(moved) if moved.room.as_str() == room => {
                            moved.owner = Arc::from(owner.as_str());
                            moved.answered = true;
                        }
                        // In another room by now: not this room's member any more.
                        Some(_) => {
                            cluster
                                .link
                                .send(&owner, NodeMessage::Gone { c, lost: true });
                        }
                        None => {
                            // Gone meanwhile: the new holder must not wait for it.
                            cluster
                                .link
                                .send(&owner, NodeMessage::Gone { c, lost: true });
                        }
                    }
                }
                NodeMessage::Released { room } => {
                    let Ok(room) = RoomName::parse(&room) else {
                        return;
                    };
                    route = None;
                    let owner = Arc::clone(&from);
                    let link = Arc::clone(&cluster.link);
                    let signaling = Arc::clone(self);
                    tokio::spawn(async move { signaling.reclaim(link, room, owner).await });
                }
            }
        });
        if let Some(id) = legacy_id {
            self.lock().names.remove(&id);
        }
        if let Some((connection, route)) = route {
            let signaling = Arc::clone(self);
            tokio::spawn(async move { signaling.route(connection, route).await });
        }
    }

    /// Takes over a room whose holder stopped (`Released`) or died: its
    /// members connected here carry on. If another node took it first, the
    /// members here that it did not take along are told to reconnect.
    async fn reclaim(self: Arc<Self>, link: Arc<Link>, room: RoomName, old_owner: Arc<str>) {
        for attempt in 0..10u32 {
            match link.claim(&room).await {
                Ok(Claim::Mine { stored, dead }) => {
                    self.with_hub(|inner, now| {
                        take_room(inner, &room, stored, &dead, &self.next_connection, now);
                    });
                    // Whoever did not come home (no record of it) reconnects.
                    self.close_moved(&room, &old_owner);
                    return;
                }
                Ok(Claim::Other(_)) => {
                    // The new holder tells each member's node (`Rehome`) as it takes the room.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    self.close_moved(&room, &old_owner);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, %room, attempt, "cannot take over a room; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.close_moved(&room, &old_owner);
    }

    /// Closes (1012: reconnect) the connections here whose room `owner` held.
    fn close_moved(&self, room: &RoomName, owner: &Arc<str>) {
        self.with_hub(|inner, _| {
            let Some(cluster) = inner.cluster.as_mut() else {
                return;
            };
            let stranded: Vec<ConnectionId> = cluster
                .moved
                .iter()
                .filter(|(_, moved)| moved.room == *room && moved.owner == *owner)
                .map(|(connection, _)| *connection)
                .collect();
            for connection in stranded {
                cluster.moved.remove(&connection);
                inner.dialects.remove(&connection);
                if let Some(outbox) = inner.outboxes.remove(&connection) {
                    self.metrics.connections.dec();
                    let code = CloseCode::Restarting;
                    outbox.close(code.number(), close_reason(code));
                }
            }
        });
    }

    /// The nodes this one depends on: holders of rooms of its connections,
    /// and nodes of members of the rooms it holds.
    pub fn nodes_to_watch(&self) -> Vec<String> {
        let inner = self.lock();
        let Some(cluster) = inner.cluster.as_ref() else {
            return Vec::new();
        };
        let mut nodes: Vec<String> = cluster
            .moved
            .values()
            .map(|moved| moved.owner.to_string())
            .chain(cluster.remote.values().map(|(node, _)| node.to_string()))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// `node` is dead: its members here lose their connection (their seats
    /// wait for a resume), and the rooms it held are taken over.
    pub fn node_dead(self: &Arc<Self>, node: &str) {
        let mut rooms = Vec::new();
        let mut link = None;
        let mut legacy = Vec::new();
        self.with_hub(|inner, now| {
            let Some(cluster) = inner.cluster.as_mut() else {
                return;
            };
            let members: Vec<ConnectionId> = cluster
                .remote
                .iter()
                .filter(|(_, (at, _))| &**at == node)
                .map(|(connection, _)| *connection)
                .collect();
            for connection in &members {
                if let Some((at, c)) = cluster.remote.remove(connection) {
                    cluster.remote_index.remove(&(at, c));
                }
            }
            rooms = cluster
                .moved
                .values()
                .filter(|moved| &*moved.owner == node)
                .map(|moved| (moved.room.clone(), Arc::clone(&moved.owner)))
                .collect();
            rooms.sort_unstable();
            rooms.dedup();
            link = Some(Arc::clone(&cluster.link));
            // As if their sockets had broken: their seats wait for a resume.
            for connection in members {
                legacy.extend(hub_disconnect(inner, connection, Disconnect::Lost, now));
            }
        });
        if !legacy.is_empty() {
            let mut inner = self.lock();
            for id in legacy {
                inner.names.remove(&id);
            }
        }
        let Some(link) = link else {
            return;
        };
        tracing::warn!(
            node,
            rooms = rooms.len(),
            "a node stopped answering; taking over its rooms"
        );
        for (room, owner) in rooms {
            let signaling = Arc::clone(self);
            let link = Arc::clone(&link);
            tokio::spawn(async move { signaling.reclaim(link, room, owner).await });
        }
    }

    /// Another node holds a room this one thought it held (Redis lost and
    /// regained it meanwhile): this node lets go, and its members reconnect
    /// to be seated by the holder.
    pub fn lost_room(&self, room: &RoomName) {
        self.with_hub(|inner, now| {
            let Some(cluster) = inner.cluster.as_mut() else {
                return;
            };
            if !cluster.owned.remove(room) {
                return;
            }
            tracing::warn!(%room, "another node holds this room now; its members reconnect");
            let code = CloseCode::Restarting;
            for connection in inner.hub.forget_room(room) {
                if let Some(cluster) = inner.cluster.as_mut()
                    && let Some((node, c)) = cluster.remote.get(&connection).cloned()
                {
                    cluster.link.send(
                        &node,
                        NodeMessage::Close {
                            c,
                            code: code.number(),
                        },
                    );
                    forget_remote(inner, connection, now);
                } else {
                    inner.dialects.remove(&connection);
                    inner
                        .hub
                        .handle_disconnect(connection, Disconnect::Closed, now);
                    if let Some(outbox) = inner.outboxes.remove(&connection) {
                        self.metrics.connections.dec();
                        outbox.close(code.number(), close_reason(code));
                    }
                }
            }
            // Forgotten, not gone: nothing to delete in Redis.
            inner.hub.take_changed_rooms();
        });
    }

    /// Every room this node holds, as kept in Redis (rewritten now and then,
    /// so the records outlive neither this node nor a loss of Redis' data).
    pub fn owned_rooms(&self) -> Vec<(RoomName, String)> {
        let now = Instant::now();
        let inner = self.lock();
        let Some(cluster) = inner.cluster.as_ref() else {
            return Vec::new();
        };
        cluster
            .owned
            .iter()
            .filter_map(|room| {
                let stored = stored_room(&inner.hub, cluster, room, now)?;
                Some((room.clone(), stored.to_json()))
            })
            .collect()
    }

    /// Stops holding any room (a drain): each room's record is written with
    /// its members as they are (those of this node away, waiting for their
    /// resume), and the nodes of its other members are told to take it over.
    pub fn release_all(&self) {
        self.with_hub(|inner, now| {
            let Some(cluster) = inner.cluster.as_mut() else {
                return;
            };
            let rooms: Vec<RoomName> = cluster.owned.drain().collect();
            for room in rooms {
                let Some(cluster) = inner.cluster.as_ref() else {
                    return;
                };
                let stored = stored_room(&inner.hub, cluster, &room, now);
                let link = Arc::clone(&cluster.link);
                link.release(&room, stored.map(|stored| stored.to_json()));
                let mut told = HashSet::new();
                for connection in inner.hub.forget_room(&room) {
                    let Some((node, _)) = inner
                        .cluster
                        .as_ref()
                        .and_then(|cluster| cluster.remote.get(&connection).cloned())
                    else {
                        continue;
                    };
                    if told.insert(Arc::clone(&node)) {
                        let message = NodeMessage::Released {
                            room: room.to_string(),
                        };
                        link.send(&node, message);
                    }
                    forget_remote(inner, connection, now);
                }
            }
            inner.hub.take_changed_rooms();
        });
    }
}

/// Hands a connection whose room `owner` holds to that node: from now on its
/// frames go there and what comes back is written to it.
fn move_to(
    inner: &mut Inner,
    connection: ConnectionId,
    owner: Arc<str>,
    route: Route,
    now: Instant,
) {
    let Some(cluster) = inner.cluster.as_mut() else {
        return;
    };
    let ice_servers = inner.hub.ice_servers_of(connection);
    // In no room: its session here ends without a word.
    inner
        .hub
        .handle_disconnect(connection, Disconnect::Closed, now);
    let sio = match inner.dialects.get(&connection) {
        Some(Dialect::SocketIo { client, .. }) => Some(client.sid().to_owned()),
        _ => None,
    };
    let c = connection.0;
    let attach = NodeMessage::Attach {
        c,
        ice: ice_servers.as_ref().map(|servers| servers.to_vec()),
        sio,
    };
    cluster.link.send(&owner, attach);
    let input = match route.input {
        Input::Text(text) => NodeMessage::Frame { c, text },
        Input::Event(event) => NodeMessage::Event {
            c,
            event: event.into(),
        },
    };
    cluster.link.send(&owner, input);
    let moved = Moved {
        owner,
        room: route.room,
        ice_servers,
        answered: false,
    };
    cluster.moved.insert(connection, moved);
}

/// The reason sent with a close another node asked for.
fn close_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::GoingAway => "server shutting down",
        CloseCode::Restarting => "server restarting; reconnect",
        CloseCode::PolicyViolation => "message rate limit exceeded",
        CloseCode::MessageTooBig => "frame too large",
        CloseCode::Replaced => "resumed on another connection",
        CloseCode::SilenceTimeout => "nothing heard from the connection",
        CloseCode::SlowReader => "reading too slowly",
        CloseCode::JoinTimeout => "no join within the join deadline",
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

// ----- the hub's side of one input -----

/// A text frame into the hub, read in the connection's dialect.
fn hub_text(
    inner: &mut Inner,
    connection: ConnectionId,
    text: &str,
    now: Instant,
) -> Option<MessageKind> {
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
    match dialect {
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
    }
}

/// A socket.io event into the hub.
fn hub_event(
    inner: &mut Inner,
    connection: ConnectionId,
    event: socketio::Event,
    now: Instant,
) -> Option<MessageKind> {
    let Some(Dialect::SocketIo { client, .. }) = inner.dialects.get(&connection) else {
        return None;
    };
    let room = inner.hub.seat_of(connection).map(|(room, _, _)| room);
    let translated = client.translate_in(event, room.as_ref());
    inner.hub.handle_translated(connection, translated, now)
}

/// A connection has ended; returns the seat of a client of another dialect,
/// whose name must go once its room mate has been told.
fn hub_disconnect(
    inner: &mut Inner,
    connection: ConnectionId,
    how: Disconnect,
    now: Instant,
) -> Option<PeerId> {
    let mut legacy_id = None;
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
    legacy_id
}

// ----- a cluster of nodes -----

/// Passes the input of a connection whose room another node holds to that
/// node. False: the connection is not such a one.
fn forward_if_moved(
    inner: &mut Inner,
    connection: ConnectionId,
    message: impl FnOnce() -> NodeMessage,
) -> bool {
    let Some(cluster) = inner.cluster.as_ref() else {
        return false;
    };
    let Some(moved) = cluster.moved.get(&connection) else {
        return false;
    };
    cluster.link.send(&moved.owner, message());
    true
}

/// The room of a `join` from a connection in no room, when this node does
/// not hold it (so it must be looked up); `None` for anything else.
fn join_elsewhere(inner: &Inner, connection: ConnectionId, text: &str) -> Option<RoomName> {
    let cluster = inner.cluster.as_ref()?;
    if inner.hub.seat_of(connection).is_some() {
        return None;
    }
    let cmd_client = match inner.dialects.get(&connection) {
        Some(Dialect::Cmd { client, .. }) => Some(client.clone()),
        Some(Dialect::SocketIo { .. }) => return None,
        Some(Dialect::Duet) => None,
        None => cmd::is_cmd(text).then(CmdClient::default),
    };
    let message = match cmd_client {
        Some(mut client) => client.translate_in(text, &cmd::Seat::default()).ok()?,
        None => ClientMessage::parse(text).ok()?,
    };
    let ClientMessage::Join { room, .. } = message else {
        return None;
    };
    (!cluster.owned.contains(&room)).then_some(room)
}

/// As [`join_elsewhere`], for a socket.io event.
fn sio_join_elsewhere(
    inner: &Inner,
    connection: ConnectionId,
    event: &socketio::Event,
) -> Option<RoomName> {
    let cluster = inner.cluster.as_ref()?;
    if !matches!(event, socketio::Event::Join(_)) || inner.hub.seat_of(connection).is_some() {
        return None;
    }
    let Some(Dialect::SocketIo { client, .. }) = inner.dialects.get(&connection) else {
        return None;
    };
    let Ok(ClientMessage::Join { room, .. }) = client.translate_in(event.clone(), None) else {
        return None;
    };
    (!cluster.owned.contains(&room)).then_some(room)
}

/// Writes the seats of every room whose seats changed to Redis (or deletes
/// the record of a room that is gone).
fn save_changed_rooms(inner: &mut Inner, now: Instant) {
    let Some(cluster) = inner.cluster.as_mut() else {
        return;
    };
    for room in inner.hub.take_changed_rooms() {
        match stored_room(&inner.hub, cluster, &room, now) {
            Some(stored) => cluster.link.save(&room, stored.to_json()),
            None => {
                if cluster.owned.remove(&room) {
                    cluster.link.delete(&room);
                }
            }
        }
    }
}

/// A room of the hub as kept in Redis: each member where it is connected.
fn stored_room(
    hub: &Hub,
    cluster: &ClusterState,
    room: &RoomName,
    now: Instant,
) -> Option<StoredRoom> {
    let snapshot = hub.export_room(room, now)?;
    let me = cluster.link.node();
    Some(StoredRoom::from_snapshot(&snapshot, |connection| {
        Some(match cluster.remote.get(&connection) {
            Some((node, c)) => (node.to_string(), *c),
            None => (me.to_string(), connection.0),
        })
    }))
}

/// Starts holding a room this node has claimed: its seats come from Redis
/// when another node held it before. A member connected here comes home, a
/// member on another live node becomes a remote member (and its node is told
/// where its room went), anyone else is away for its grace.
fn take_room(
    inner: &mut Inner,
    room: &RoomName,
    stored: Option<StoredRoom>,
    dead: &HashSet<String>,
    next_connection: &AtomicU64,
    now: Instant,
) {
    let Some(cluster) = inner.cluster.as_mut() else {
        return;
    };
    if !cluster.owned.insert(room.clone()) || inner.hub.has_room(room) {
        return;
    }
    let Some(stored) = stored else {
        return;
    };
    let me = Arc::clone(cluster.link.node());
    let mut places: HashMap<(String, u64), ConnectionId> = HashMap::new();
    let mut rehome = Vec::new();
    for seat in &stored.seats {
        let Some((node, c)) = &seat.at else {
            continue;
        };
        if **node == *me {
            let connection = ConnectionId(*c);
            // Only a connection of this room comes home (a stale record may
            // name a connection that has moved on to another room).
            if cluster
                .moved
                .get(&connection)
                .is_none_or(|moved| moved.room != *room)
            {
                continue;
            }
            let Some(moved) = cluster.moved.remove(&connection) else {
                continue;
            };
            inner.hub.handle_connect(connection, now);
            if let Some(ice_servers) = moved.ice_servers {
                inner.hub.set_ice_servers(connection, ice_servers);
            }
            places.insert((node.clone(), *c), connection);
        } else if !dead.contains(node) {
            let node: Arc<str> = Arc::from(node.as_str());
            let connection = ConnectionId(next_connection.fetch_add(1, Ordering::Relaxed));
            inner.hub.handle_connect(connection, now);
            cluster.remote.insert(connection, (Arc::clone(&node), *c));
            cluster
                .remote_index
                .insert((Arc::clone(&node), *c), connection);
            places.insert((node.to_string(), *c), connection);
            rehome.push((node, *c));
        }
    }
    let snapshot = stored.to_snapshot(|node, c| places.get(&(node.to_owned(), c)).copied());
    inner.hub.import_room(room.clone(), snapshot, now);
    for (node, c) in rehome {
        let owner = me.to_string();
        let room = room.to_string();
        cluster
            .link
            .send(&node, NodeMessage::Rehome { c, owner, room });
    }
}

/// The hub's connection for member `c` of node `from`. A member this node no
/// longer knows (closed while Redis was away, or this node restarted) is told,
/// through its node, to reconnect instead of talking to nobody.
fn known_or_closed(cluster: &ClusterState, from: &Arc<str>, c: u64) -> Option<ConnectionId> {
    let known = cluster.remote_index.get(&(Arc::clone(from), c)).copied();
    if known.is_none() {
        let code = CloseCode::Restarting.number();
        cluster.link.send(from, NodeMessage::Close { c, code });
    }
    known
}

/// Forgets a member of another node (its hub session ends without a word).
fn forget_remote(inner: &mut Inner, connection: ConnectionId, now: Instant) {
    if let Some(cluster) = inner.cluster.as_mut()
        && let Some((node, c)) = cluster.remote.remove(&connection)
    {
        cluster.remote_index.remove(&(node, c));
    }
    inner.dialects.remove(&connection);
    inner
        .hub
        .handle_disconnect(connection, Disconnect::Closed, now);
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
