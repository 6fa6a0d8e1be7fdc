//! The hub: every connection, every room, every seat, and the rules between them.
//!
//! Owns the room state machine. A room has at most two seats; a seat is either
//! attached to a live connection or *away* (its connection was lost and it
//! waits, for the grace period, for a `join` with its resume token). The hub
//! must not do IO and must not read the clock: inputs carry `now`, results are
//! queued as [`Output`]s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::rate::TokenBucket;
use crate::report::CallReport;
use crate::timers::{Timer, Timers};
use crate::wire::{
    ClientMessage, CloseCode, ErrorCode, IceServer, MessageKind, PeerId, ResumeToken, RoomName,
    ServerMessage,
};

/// Most members a room holds: Duet is for 1-to-1 calls.
pub const ROOM_CAPACITY: usize = 2;

/// A connection, numbered by the driver. Numbers must not be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// The hub's limits and timeouts.
#[derive(Debug, Clone)]
pub struct Config {
    /// A connection with no frame for this long is dropped and its peer told `bye`.
    pub silence_timeout: Duration,
    /// How long a lost connection's seat waits for a `join` with its resume token.
    pub resume_grace: Duration,
    /// Messages kept for an away seat; one more ends the seat.
    pub resume_queue_messages: usize,
    /// Bytes kept for an away seat; more ends the seat.
    pub resume_queue_bytes: usize,
    /// Bytes kept for all away seats together; more ends the seat that would
    /// go over (so many rooms cannot add up to more than this).
    pub away_total_bytes: usize,
    /// A connection that sends no `join` for this long is closed (4004).
    pub join_timeout: Duration,
    /// Most rooms at once.
    pub max_rooms: usize,
    pub rate_limit: RateLimit,
    /// What `joined.iceServers` carries.
    pub ice_servers: Vec<IceServer>,
}

/// The per-connection message rate limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Messages a connection may send at once after a quiet period.
    pub burst: u32,
    /// Messages per second sustained.
    pub per_second: u32,
    /// Refused messages, without the client slowing down, before the connection is closed.
    pub refusals_before_close: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            silence_timeout: Duration::from_secs(45),
            resume_grace: Duration::from_secs(20),
            resume_queue_messages: 256,
            resume_queue_bytes: 512 * 1024,
            away_total_bytes: 64 * 1024 * 1024,
            join_timeout: Duration::from_secs(10),
            max_rooms: 100_000,
            rate_limit: RateLimit {
                burst: 200,
                per_second: 50,
                refusals_before_close: 20,
            },
            ice_servers: Vec::new(),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send this message on this connection.
    Send {
        to: ConnectionId,
        message: ServerMessage,
    },
    /// Count this call report in the metrics: the parts of it not counted
    /// before for this seat (one set-up and one summary per seat).
    Report {
        connection: ConnectionId,
        report: CallReport,
    },
    /// Send a close frame and drop the connection. The hub has already forgotten it.
    Close {
        connection: ConnectionId,
        code: CloseCode,
        reason: &'static str,
    },
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed on purpose (a close frame; a closed tab): the peer is told `bye` now.
    Closed,
    /// The connection broke (no close frame, a network error, or the client's
    /// close code 4000): the seat waits for a resume during the grace period.
    Lost,
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: usize,
    pub rooms: usize,
    pub away_seats: usize,
    /// Bytes queued for away seats, all together.
    pub away_bytes: usize,
    pub messages_relayed: u64,
    pub resumes: u64,
}

#[derive(Debug)]
struct Session {
    last_seen: Instant,
    /// This connection's own `iceServers` (per-session TURN credentials), if any.
    ice_servers: Option<Arc<[IceServer]>>,
    seat: Option<(RoomName, PeerId)>,
    bucket: TokenBucket,
    refusals: u32,
    /// True once the connection has sent a `join` (the join deadline is met).
    asked_to_join: bool,
}

#[derive(Debug)]
struct Room {
    seats: Vec<Seat>,
}

#[derive(Debug)]
struct Seat {
    id: PeerId,
    token: ResumeToken,
    attachment: Attachment,
    /// What this seat's reports have counted already.
    reported: Reported,
}

/// The parts of a call report a seat has sent; each counts once.
#[derive(Debug, Default, Clone, Copy)]
struct Reported {
    setup: bool,
    summary: bool,
}

#[derive(Debug)]
enum Attachment {
    Connected(ConnectionId),
    Away {
        until: Instant,
        queue: VecDeque<ServerMessage>,
        queued_bytes: usize,
    },
}

/// The signaling state machine. See the module documentation.
#[derive(Debug)]
pub struct Hub {
    config: Config,
    ice_servers: Arc<[IceServer]>,
    sessions: HashMap<ConnectionId, Session>,
    rooms: HashMap<RoomName, Room>,
    timers: Timers,
    outputs: VecDeque<Output>,
    rng: StdRng,
    stats: Stats,
    /// Rooms whose seats changed since [`Hub::take_changed_rooms`], when tracked.
    changed: Option<HashSet<RoomName>>,
}

/// A room as another hub needs it to carry on (see [`Hub::export_room`]).
#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    pub seats: Vec<SeatSnapshot>,
}

/// One seat of a [`RoomSnapshot`].
#[derive(Debug, Clone)]
pub struct SeatSnapshot {
    pub id: PeerId,
    pub token: ResumeToken,
    pub state: SeatState,
}

/// Where a seat's member is, in a [`RoomSnapshot`].
#[derive(Debug, Clone)]
pub enum SeatState {
    /// On this connection (numbered by the hub that holds the snapshot).
    Connected(ConnectionId),
    /// Away: waits this much longer for a resume, with these messages queued for it.
    Away {
        left: Duration,
        queue: Vec<ServerMessage>,
    },
}

impl Hub {
    /// A hub with no connections. `seed` drives ids and resume tokens: give it
    /// fresh entropy in production and a constant in tests.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let ice_servers = Arc::from(config.ice_servers.clone());
        Self {
            config,
            ice_servers,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            timers: Timers::default(),
            outputs: VecDeque::new(),
            rng: StdRng::from_seed(seed),
            stats: Stats::default(),
            changed: None,
        }
    }

    /// From now on, remembers which rooms' seats change (a member seated,
    /// gone, away or back), for [`Hub::take_changed_rooms`].
    pub fn track_room_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    /// The rooms whose seats changed since the last call (or since tracking began).
    pub fn take_changed_rooms(&mut self) -> Vec<RoomName> {
        self.changed
            .as_mut()
            .map(|changed| changed.drain().collect())
            .unwrap_or_default()
    }

    /// True if this hub holds the room.
    pub fn has_room(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    /// Every room this hub holds.
    pub fn room_names(&self) -> impl Iterator<Item = &RoomName> {
        self.rooms.keys()
    }

    /// The `iceServers` a connection was given, if its own.
    pub fn ice_servers_of(&self, connection: ConnectionId) -> Option<Arc<[IceServer]>> {
        self.sessions.get(&connection)?.ice_servers.clone()
    }

    /// Refuses a connection's `join` with an error of the protocol, for a
    /// refusal decided outside the hub (a room store that cannot be reached).
    /// The connection did ask to join: its join deadline is met.
    pub fn refuse_join(&mut self, connection: ConnectionId, code: ErrorCode, message: String) {
        if let Some(session) = self.sessions.get_mut(&connection) {
            session.asked_to_join = true;
            self.send_error(connection, code, message);
        }
    }

    /// A copy of a room's seats, for another hub to take over with [`Hub::import_room`].
    pub fn export_room(&self, room: &RoomName, now: Instant) -> Option<RoomSnapshot> {
        let room = self.rooms.get(room)?;
        let seats = room
            .seats
            .iter()
            .map(|seat| SeatSnapshot {
                id: seat.id,
                token: seat.token,
                state: match &seat.attachment {
                    Attachment::Connected(connection) => SeatState::Connected(*connection),
                    Attachment::Away { until, queue, .. } => SeatState::Away {
                        left: until.saturating_duration_since(now),
                        queue: queue.iter().cloned().collect(),
                    },
                },
            })
            .collect();
        Some(RoomSnapshot { seats })
    }

    /// Takes over a room another hub held. A seat whose connection is one of
    /// this hub's (and in no room) is seated on it; any other seat is away for
    /// what is left of its grace. Nobody is told anything. False if this hub
    /// already holds the room, or holds as many as it may.
    pub fn import_room(&mut self, name: RoomName, snapshot: RoomSnapshot, now: Instant) -> bool {
        if self.rooms.contains_key(&name) || self.rooms.len() >= self.config.max_rooms {
            return false;
        }
        let mut seats: Vec<Seat> = Vec::with_capacity(ROOM_CAPACITY);
        for seat in snapshot.seats {
            if seats.len() >= ROOM_CAPACITY || seats.iter().any(|other| other.id == seat.id) {
                continue;
            }
            let free = |connection: &ConnectionId| {
                self.sessions
                    .get(connection)
                    .is_some_and(|session| session.seat.is_none())
            };
            let attachment = match seat.state {
                SeatState::Connected(connection) if free(&connection) => {
                    if let Some(session) = self.sessions.get_mut(&connection) {
                        session.seat = Some((name.clone(), seat.id));
                        session.asked_to_join = true;
                    }
                    Attachment::Connected(connection)
                }
                state => {
                    let (left, queue) = match state {
                        SeatState::Away { left, queue } => {
                            (left.min(self.config.resume_grace), queue)
                        }
                        SeatState::Connected(_) => (self.config.resume_grace, Vec::new()),
                    };
                    let until = now + left;
                    self.timers
                        .schedule(until, Timer::Grace(name.clone(), seat.id));
                    self.stats.away_seats += 1;
                    let mut queued_bytes = 0;
                    let mut kept = VecDeque::new();
                    for message in queue {
                        let weight = message.weight();
                        if kept.len() >= self.config.resume_queue_messages
                            || queued_bytes + weight > self.config.resume_queue_bytes
                            || self.stats.away_bytes + weight > self.config.away_total_bytes
                        {
                            break;
                        }
                        queued_bytes += weight;
                        self.stats.away_bytes += weight;
                        kept.push_back(message);
                    }
                    Attachment::Away {
                        until,
                        queue: kept,
                        queued_bytes,
                    }
                }
            };
            seats.push(Seat {
                id: seat.id,
                token: seat.token,
                attachment,
                reported: Reported::default(),
            });
        }
        if seats.is_empty() {
            return false;
        }
        self.rooms.insert(name.clone(), Room { seats });
        self.mark_changed(&name);
        true
    }

    /// Drops a room without telling anyone (another hub carries it on).
    /// Returns the connections that sat in it; they are in no room now.
    pub fn forget_room(&mut self, name: &RoomName) -> Vec<ConnectionId> {
        let Some(room) = self.rooms.remove(name) else {
            return Vec::new();
        };
        let mut connections = Vec::new();
        for seat in room.seats {
            match seat.attachment {
                Attachment::Connected(connection) => {
                    if let Some(session) = self.sessions.get_mut(&connection) {
                        session.seat = None;
                    }
                    connections.push(connection);
                }
                Attachment::Away { queued_bytes, .. } => {
                    self.stats.away_seats = self.stats.away_seats.saturating_sub(1);
                    self.stats.away_bytes = self.stats.away_bytes.saturating_sub(queued_bytes);
                }
            }
        }
        connections
    }

    fn mark_changed(&mut self, room: &RoomName) {
        if let Some(changed) = self.changed.as_mut() {
            changed.insert(room.clone());
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new connection has been accepted.
    pub fn handle_connect(&mut self, connection: ConnectionId, now: Instant) {
        let session = Session {
            last_seen: now,
            ice_servers: None,
            seat: None,
            bucket: TokenBucket::full(self.config.rate_limit.burst, now),
            refusals: 0,
            asked_to_join: false,
        };
        if self.sessions.insert(connection, session).is_none() {
            self.timers.schedule(
                now + self.config.silence_timeout,
                Timer::Silence(connection),
            );
            self.timers
                .schedule(now + self.config.join_timeout, Timer::Join(connection));
        }
    }

    /// Gives one connection its own `iceServers` (e.g. TURN credentials made for it).
    pub fn set_ice_servers(&mut self, connection: ConnectionId, ice_servers: Arc<[IceServer]>) {
        if let Some(session) = self.sessions.get_mut(&connection) {
            session.ice_servers = Some(ice_servers);
        }
    }

    /// A frame that carries no message (a WebSocket ping or pong) proves the connection alive.
    pub fn handle_activity(&mut self, connection: ConnectionId, now: Instant) {
        if let Some(session) = self.sessions.get_mut(&connection) {
            session.last_seen = now;
        }
    }

    /// A text frame arrived. Returns the kind of message it held, if it was one.
    pub fn handle_text(
        &mut self,
        connection: ConnectionId,
        text: &str,
        now: Instant,
    ) -> Option<MessageKind> {
        if !self.admit(connection, now) {
            return None;
        }
        match ClientMessage::parse(text) {
            Ok(message) => {
                let kind = message.kind();
                self.handle_message(connection, message, now);
                Some(kind)
            }
            Err(error) => {
                self.send_error(connection, error.code, error.message);
                None
            }
        }
    }

    /// A message translated from another dialect (`cmd`), rate-limited like
    /// any frame; `Err` is answered with a `bad_message` error saying why.
    pub fn handle_translated(
        &mut self,
        connection: ConnectionId,
        message: Result<ClientMessage, String>,
        now: Instant,
    ) -> Option<MessageKind> {
        if !self.admit(connection, now) {
            return None;
        }
        match message {
            Ok(message) => {
                let kind = message.kind();
                self.handle_message(connection, message, now);
                Some(kind)
            }
            Err(reason) => {
                self.send_error(connection, ErrorCode::BadMessage, reason);
                None
            }
        }
    }

    /// Where `connection` sits: its room, its id, and its room mate's id.
    pub fn seat_of(&self, connection: ConnectionId) -> Option<(RoomName, PeerId, Option<PeerId>)> {
        let (room, id) = self.sessions.get(&connection)?.seat.clone()?;
        let mate = self
            .rooms
            .get(&room)
            .and_then(|seats| seats.seats.iter().find(|seat| seat.id != id))
            .map(|seat| seat.id);
        Some((room, id, mate))
    }

    /// A binary frame arrived; the protocol has none.
    pub fn handle_binary(&mut self, connection: ConnectionId, now: Instant) {
        if self.admit(connection, now) {
            self.send_error(
                connection,
                ErrorCode::BinaryFrame,
                "binary frames are not part of the protocol; send JSON text".to_owned(),
            );
        }
    }

    /// A parsed message from a connection (already admitted by the rate limit).
    pub fn handle_message(
        &mut self,
        connection: ConnectionId,
        message: ClientMessage,
        now: Instant,
    ) {
        match message {
            ClientMessage::Join { room, resume } => self.join(connection, room, resume, now),
            ClientMessage::Leave => self.leave(connection),
            ClientMessage::Message { data } => self.relay(connection, data),
            ClientMessage::Ping => self.send(connection, ServerMessage::Pong),
            ClientMessage::Report(report) => self.report(connection, report),
        }
    }

    /// The connection is gone.
    pub fn handle_disconnect(&mut self, connection: ConnectionId, how: Disconnect, now: Instant) {
        let Some(session) = self.sessions.remove(&connection) else {
            return;
        };
        let Some((room, id)) = session.seat else {
            return;
        };
        match how {
            Disconnect::Lost if !self.config.resume_grace.is_zero() => {
                self.set_away(&room, id, now)
            }
            Disconnect::Lost | Disconnect::Closed => self.remove_seat(&room, id),
        }
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Silence(connection) => self.check_silence(connection, now),
                Timer::Grace(room, id) => self.check_grace(&room, id, now),
                Timer::Join(connection) => {
                    let late = self
                        .sessions
                        .get(&connection)
                        .is_some_and(|session| !session.asked_to_join);
                    if late {
                        self.close(
                            connection,
                            CloseCode::JoinTimeout,
                            "no join within the join deadline",
                            now,
                        );
                    }
                }
            }
        }
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Hub::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.sessions.len(),
            rooms: self.rooms.len(),
            ..self.stats
        }
    }

    /// Number of pending deadlines, stale ones included (for tests of boundedness).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    // ----- inputs, one by one -----

    /// Applies the rate limit and records liveness. False: drop the frame.
    fn admit(&mut self, connection: ConnectionId, now: Instant) -> bool {
        let limit = self.config.rate_limit;
        let Some(session) = self.sessions.get_mut(&connection) else {
            return false;
        };
        session.last_seen = now;
        if session.bucket.try_take(limit.burst, limit.per_second, now) {
            if session.bucket.level() >= f64::from(limit.burst) / 2.0 {
                session.refusals = 0;
            }
            return true;
        }
        session.refusals += 1;
        if session.refusals > limit.refusals_before_close {
            self.close(
                connection,
                CloseCode::PolicyViolation,
                "message rate limit exceeded",
                now,
            );
        } else {
            self.send_error(
                connection,
                ErrorCode::RateLimited,
                format!(
                    "more than {} messages per second; slow down or be disconnected",
                    limit.per_second
                ),
            );
        }
        false
    }

    fn join(
        &mut self,
        connection: ConnectionId,
        room_name: RoomName,
        resume: Option<ResumeToken>,
        now: Instant,
    ) {
        if let Some(session) = self.sessions.get_mut(&connection) {
            session.asked_to_join = true;
        }
        let current = self
            .sessions
            .get(&connection)
            .and_then(|session| session.seat.clone());
        if let Some((current_room, id)) = current {
            if current_room == room_name {
                // Joining the room you are in again: answer the same, change nothing.
                if let Some(token) = self.seat(&current_room, id).map(|seat| seat.token) {
                    self.send_joined(connection, &current_room, id, token);
                }
            } else {
                self.send_error(
                    connection,
                    ErrorCode::AlreadyInRoom,
                    format!("already in room `{current_room}`; send `leave` first"),
                );
            }
            return;
        }
        if let Some(token) = resume
            && self.try_resume(connection, &room_name, token, now)
        {
            return;
        }
        self.join_as_new(connection, room_name);
    }

    /// Gives a seat back to the holder of its token. False: no such seat.
    fn try_resume(
        &mut self,
        connection: ConnectionId,
        room_name: &RoomName,
        token: ResumeToken,
        now: Instant,
    ) -> bool {
        let new_token = ResumeToken(self.rng.random());
        let Some(room) = self.rooms.get_mut(room_name) else {
            return false;
        };
        let Some(seat) = room
            .seats
            .iter_mut()
            .find(|seat| seat.token.matches(&token))
        else {
            return false;
        };
        let id = seat.id;
        seat.token = new_token;
        let previous = std::mem::replace(&mut seat.attachment, Attachment::Connected(connection));
        let mut pending = VecDeque::new();
        match previous {
            Attachment::Connected(old) => {
                // The old connection is still open (a network change the server
                // has not noticed yet): the new one replaces it.
                if let Some(session) = self.sessions.get_mut(&old) {
                    session.seat = None;
                }
                self.close(
                    old,
                    CloseCode::Replaced,
                    "resumed on another connection",
                    now,
                );
            }
            Attachment::Away {
                queue,
                queued_bytes,
                ..
            } => {
                pending = queue;
                self.stats.away_seats = self.stats.away_seats.saturating_sub(1);
                self.stats.away_bytes = self.stats.away_bytes.saturating_sub(queued_bytes);
            }
        }
        if let Some(session) = self.sessions.get_mut(&connection) {
            session.seat = Some((room_name.clone(), id));
        }
        self.mark_changed(room_name);
        self.stats.resumes += 1;
        self.send_joined(connection, room_name, id, new_token);
        for message in pending {
            self.send(connection, message);
        }
        true
    }

    fn join_as_new(&mut self, connection: ConnectionId, room_name: RoomName) {
        if !self.rooms.contains_key(&room_name) && self.rooms.len() >= self.config.max_rooms {
            self.send_error(
                connection,
                ErrorCode::TooManyRooms,
                "the server holds as many rooms as it may; try again later".to_owned(),
            );
            return;
        }
        let id = PeerId(self.rng.random());
        let token = ResumeToken(self.rng.random());
        let room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room {
            seats: Vec::with_capacity(ROOM_CAPACITY),
        });
        if room.seats.len() >= ROOM_CAPACITY {
            self.send(connection, ServerMessage::Full { room: room_name });
            return;
        }
        if room.seats.iter().any(|seat| seat.id == id) {
            // A 64-bit collision inside one room: vanishingly rare, but never two equal ids.
            let id = PeerId(id.0 ^ 1);
            return self.seat_member(connection, room_name, id, token);
        }
        self.seat_member(connection, room_name, id, token);
    }

    fn seat_member(
        &mut self,
        connection: ConnectionId,
        room_name: RoomName,
        id: PeerId,
        token: ResumeToken,
    ) {
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return;
        };
        room.seats.push(Seat {
            id,
            token,
            attachment: Attachment::Connected(connection),
            reported: Reported::default(),
        });
        let others: Vec<PeerId> = room
            .seats
            .iter()
            .filter(|seat| seat.id != id)
            .map(|seat| seat.id)
            .collect();
        // A new room mate is a new call: the members already there report it afresh.
        for seat in room.seats.iter_mut() {
            seat.reported = Reported::default();
        }
        if let Some(session) = self.sessions.get_mut(&connection) {
            session.seat = Some((room_name.clone(), id));
        }
        self.mark_changed(&room_name);
        self.send_joined(connection, &room_name, id, token);
        for other in others {
            self.deliver(&room_name, other, ServerMessage::OtherJoined { id });
        }
    }

    fn leave(&mut self, connection: ConnectionId) {
        let seat = self
            .sessions
            .get_mut(&connection)
            .and_then(|session| session.seat.take());
        let Some((room, id)) = seat else {
            self.send_error(connection, ErrorCode::NotInRoom, "not in a room".to_owned());
            return;
        };
        self.remove_seat(&room, id);
        self.send(connection, ServerMessage::Leaved { room });
    }

    /// The seat `connection` holds; without one it is told `not_in_room`, saying `why`.
    fn seat_or_refuse(
        &mut self,
        connection: ConnectionId,
        why: &str,
    ) -> Option<(RoomName, PeerId)> {
        let seat = self
            .sessions
            .get(&connection)
            .and_then(|session| session.seat.clone());
        if seat.is_none() {
            self.send_error(connection, ErrorCode::NotInRoom, why.to_owned());
        }
        seat
    }

    fn relay(&mut self, connection: ConnectionId, data: Box<serde_json::value::RawValue>) {
        let Some((room_name, from)) =
            self.seat_or_refuse(connection, "join a room before sending messages")
        else {
            return;
        };
        let other = self
            .rooms
            .get(&room_name)
            .and_then(|room| room.seats.iter().find(|seat| seat.id != from))
            .map(|seat| seat.id);
        let Some(other) = other else {
            self.send_error(
                connection,
                ErrorCode::NoPeer,
                "nobody else is in the room".to_owned(),
            );
            return;
        };
        self.stats.messages_relayed += 1;
        if !self.deliver(&room_name, other, ServerMessage::Message { from, data }) {
            // The away seat's queue overflowed: it will not come back whole.
            self.remove_seat(&room_name, other);
        }
    }

    // ----- timers -----

    fn check_silence(&mut self, connection: ConnectionId, now: Instant) {
        let Some(session) = self.sessions.get(&connection) else {
            return;
        };
        let deadline = session.last_seen + self.config.silence_timeout;
        if deadline > now {
            self.timers.schedule(deadline, Timer::Silence(connection));
            return;
        }
        self.close(
            connection,
            CloseCode::SilenceTimeout,
            "nothing heard from the connection",
            now,
        );
    }

    fn check_grace(&mut self, room: &RoomName, id: PeerId, now: Instant) {
        let expired = matches!(
            self.seat(room, id).map(|seat| &seat.attachment),
            Some(Attachment::Away { until, .. }) if *until <= now
        );
        if expired {
            self.remove_seat(room, id);
        }
    }

    // ----- seats -----

    /// Passes on the parts of a report this seat has not sent before; a
    /// member may report what it likes, but only once per call.
    fn report(&mut self, connection: ConnectionId, mut report: CallReport) {
        let Some((room, id)) =
            self.seat_or_refuse(connection, "a report is about a call: join a room first")
        else {
            return;
        };
        let Some(seat) = self
            .rooms
            .get_mut(&room)
            .and_then(|room| room.seats.iter_mut().find(|seat| seat.id == id))
        else {
            return;
        };
        if report.setup.is_some() && std::mem::replace(&mut seat.reported.setup, true) {
            report.setup = None;
        }
        if report.summary.is_some() && std::mem::replace(&mut seat.reported.summary, true) {
            report.summary = None;
        }
        if report.setup.is_some() || report.summary.is_some() {
            self.outputs
                .push_back(Output::Report { connection, report });
        }
    }

    fn seat(&self, room: &RoomName, id: PeerId) -> Option<&Seat> {
        self.rooms
            .get(room)
            .and_then(|room| room.seats.iter().find(|seat| seat.id == id))
    }

    fn set_away(&mut self, room_name: &RoomName, id: PeerId, now: Instant) {
        let until = now + self.config.resume_grace;
        let Some(seat) = self
            .rooms
            .get_mut(room_name)
            .and_then(|room| room.seats.iter_mut().find(|seat| seat.id == id))
        else {
            return;
        };
        seat.attachment = Attachment::Away {
            until,
            queue: VecDeque::new(),
            queued_bytes: 0,
        };
        self.stats.away_seats += 1;
        self.timers
            .schedule(until, Timer::Grace(room_name.clone(), id));
        self.mark_changed(room_name);
    }

    /// Removes a seat, tells the others `bye`, and drops the room once empty.
    fn remove_seat(&mut self, room_name: &RoomName, id: PeerId) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(index) = room.seats.iter().position(|seat| seat.id == id) else {
            return;
        };
        let seat = room.seats.swap_remove(index);
        let others: Vec<PeerId> = room.seats.iter().map(|seat| seat.id).collect();
        if room.seats.is_empty() {
            self.rooms.remove(room_name);
        }
        self.mark_changed(room_name);
        match seat.attachment {
            Attachment::Away { queued_bytes, .. } => {
                self.stats.away_seats = self.stats.away_seats.saturating_sub(1);
                self.stats.away_bytes = self.stats.away_bytes.saturating_sub(queued_bytes);
            }
            Attachment::Connected(connection) => {
                if let Some(session) = self.sessions.get_mut(&connection) {
                    session.seat = None;
                }
            }
        }
        for other in others {
            self.deliver(room_name, other, ServerMessage::Bye { id });
        }
    }

    /// Sends to a seat's connection, or queues for an away seat. False: the queue overflowed.
    fn deliver(&mut self, room_name: &RoomName, id: PeerId, message: ServerMessage) -> bool {
        let limits = (
            self.config.resume_queue_messages,
            self.config.resume_queue_bytes,
            self.config.away_total_bytes,
        );
        let Some(seat) = self
            .rooms
            .get_mut(room_name)
            .and_then(|room| room.seats.iter_mut().find(|seat| seat.id == id))
        else {
            return true;
        };
        match &mut seat.attachment {
            Attachment::Connected(connection) => {
                let to = *connection;
                self.outputs.push_back(Output::Send { to, message });
                true
            }
            Attachment::Away {
                queue,
                queued_bytes,
                ..
            } => {
                let weight = message.weight();
                if queue.len() >= limits.0
                    || *queued_bytes + weight > limits.1
                    || self.stats.away_bytes + weight > limits.2
                {
                    return false;
                }
                *queued_bytes += weight;
                self.stats.away_bytes += weight;
                queue.push_back(message);
                true
            }
        }
    }

    // ----- outputs -----

    fn send_joined(
        &mut self,
        connection: ConnectionId,
        room: &RoomName,
        id: PeerId,
        token: ResumeToken,
    ) {
        let peers = self
            .rooms
            .get(room)
            .map(|room| {
                room.seats
                    .iter()
                    .filter(|seat| seat.id != id)
                    .map(|seat| seat.id)
                    .collect()
            })
            .unwrap_or_default();
        self.send(
            connection,
            ServerMessage::Joined {
                room: room.clone(),
                id,
                peers,
                ice_servers: self
                    .sessions
                    .get(&connection)
                    .and_then(|session| session.ice_servers.clone())
                    .unwrap_or_else(|| Arc::clone(&self.ice_servers)),
                resume: token,
            },
        );
    }

    fn send(&mut self, to: ConnectionId, message: ServerMessage) {
        self.outputs.push_back(Output::Send { to, message });
    }

    fn send_error(&mut self, to: ConnectionId, code: ErrorCode, message: String) {
        self.send(to, ServerMessage::Error { code, message });
    }

    /// Closes a connection from the server side; its seat ends at once.
    fn close(
        &mut self,
        connection: ConnectionId,
        code: CloseCode,
        reason: &'static str,
        now: Instant,
    ) {
        self.outputs.push_back(Output::Close {
            connection,
            code,
            reason,
        });
        self.handle_disconnect(connection, Disconnect::Closed, now);
    }
}
