//! The signaling hub as a whole session: several connections of one `Hub`
//! connect, send text and binary frames, show activity, disconnect (closed or
//! lost) and go silent while simulated time moves on, in an order the fuzz
//! input decides (read with `arbitrary`'s `Unstructured`, one byte per field;
//! the layout is in fuzz/README.md).
//!
//! Alongside the hub runs a model of its seats, built only from the hub's
//! inputs and outputs. After every step the hub's written invariants
//! (ARCHITECTURE.md, crates/signaling/src/hub.rs) are checked against it:
//! - a room has at most two seats, and an empty room is gone;
//! - a connection holds at most one seat, and no seat is held by two connections;
//! - `joined.peers` is exactly the other seat of the room;
//! - `from` on a relayed message is the sender's own seat id;
//! - nothing is sent to, or closed on, a connection that is gone, and a close comes once;
//! - answers (`error`, `pong`) go to the connection that asked;
//! - the hub's counters (connections, rooms, away seats) agree with the model;
//! - every output is drained, and once everyone has gone and every deadline
//!   has passed, nothing is left behind (no room, no seat, no timer).
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use duet_signaling::{
    CloseCode, Config, ConnectionId, Disconnect, Hub, Output, PeerId, RateLimit, ResumeToken,
    RoomName, ServerMessage,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Connections one session may open (their numbers are never reused).
const MAX_CONNECTIONS: usize = 12;
/// Room names the structured `join` uses: `r0` … `r3`.
const ROOMS: u8 = 4;
/// One step of the `advance` operation.
const TICK: Duration = Duration::from_millis(250);

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(variant) = input.arbitrary::<u8>() else { return };
    let mut session = Session::new(config(variant));
    while !input.is_empty() {
        let Ok(operation) = Operation::read(&mut input) else { break };
        session.apply(operation);
    }
    session.finish();
});

/// The hub's configuration: the defaults, tight limits that are easy to reach,
/// or no resume grace at all.
fn config(variant: u8) -> Config {
    let defaults = Config::default();
    match variant % 3 {
        0 => defaults,
        1 => Config {
            silence_timeout: Duration::from_secs(10),
            resume_grace: Duration::from_secs(5),
            resume_queue_messages: 4,
            resume_queue_bytes: 1024,
            max_rooms: 2,
            rate_limit: RateLimit { burst: 4, per_second: 2, refusals_before_close: 2 },
            ..defaults
        },
        _ => Config { resume_grace: Duration::ZERO, ..defaults },
    }
}

/// One input to the hub. `who` picks one of the connections opened so far
/// (also ones already gone: a driver may still hand in a frame it read before
/// the close).
#[derive(Debug)]
enum Operation {
    Connect,
    /// Any text frame (its bytes as UTF-8, invalid sequences replaced).
    Text { who: u8, text: String },
    /// `join` of room `r{room % 4}`; `resume` > 0 sends the last token
    /// given to connection `resume - 1`.
    Join { who: u8, room: u8, resume: u8 },
    Leave { who: u8 },
    /// `message` whose data carries `size * 32` bytes of padding.
    Message { who: u8, size: u8 },
    Ping { who: u8 },
    /// A call report whose set-up took `ms * 10` ms (over 600 s is refused).
    Report { who: u8, ms: u16 },
    Binary { who: u8 },
    Activity { who: u8 },
    Disconnect { who: u8, lost: bool },
    /// Time moves by `ticks` × 250 ms, then the hub's deadlines fire.
    Advance { ticks: u8 },
}

impl Operation {
    fn read(input: &mut Unstructured<'_>) -> Result<Self> {
        let kind: u8 = input.arbitrary()?;
        Ok(match kind % 11 {
            0 => Operation::Connect,
            1 => {
                let who = input.arbitrary()?;
                let len: u8 = input.arbitrary()?;
                let bytes = input.bytes(usize::from(len).min(input.len()))?;
                Operation::Text { who, text: String::from_utf8_lossy(bytes).into_owned() }
            }
            2 => Operation::Join {
                who: input.arbitrary()?,
                room: input.arbitrary()?,
                resume: input.arbitrary()?,
            },
            3 => Operation::Leave { who: input.arbitrary()? },
            4 => Operation::Message { who: input.arbitrary()?, size: input.arbitrary()? },
            5 => Operation::Ping { who: input.arbitrary()? },
            6 => Operation::Binary { who: input.arbitrary()? },
            7 => Operation::Activity { who: input.arbitrary()? },
            8 => {
                let who = input.arbitrary()?;
                let how: u8 = input.arbitrary()?;
                Operation::Disconnect { who, lost: how & 1 == 1 }
            }
            9 => Operation::Advance { ticks: input.arbitrary()? },
            _ => Operation::Report { who: input.arbitrary()?, ms: input.arbitrary()? },
        })
    }
}

/// A seat as the model sees it.
#[derive(Debug)]
struct SeatModel {
    id: PeerId,
    /// `Some` while the seat waits for a resume.
    away_until: Option<Instant>,
}

/// The hub under test and the model of its state.
struct Session {
    hub: Hub,
    resume_grace: Duration,
    silence_timeout: Duration,
    now: Instant,
    /// Every connection opened, in order; `who` indexes this.
    opened: Vec<ConnectionId>,
    live: HashSet<ConnectionId>,
    /// The last resume token each connection was given.
    tokens: HashMap<ConnectionId, ResumeToken>,
    /// The seat each live connection holds.
    seat_of: HashMap<ConnectionId, (RoomName, PeerId)>,
    rooms: BTreeMap<RoomName, Vec<SeatModel>>,
}

impl Session {
    fn new(config: Config) -> Self {
        Self {
            resume_grace: config.resume_grace,
            silence_timeout: config.silence_timeout,
            hub: Hub::new(config, [5; 32]),
            now: Instant::now(),
            opened: Vec::new(),
            live: HashSet::new(),
            tokens: HashMap::new(),
            seat_of: HashMap::new(),
            rooms: BTreeMap::new(),
        }
    }

    fn apply(&mut self, operation: Operation) {
        let now = self.now;
        let sender = match operation {
            Operation::Connect => {
                if self.opened.len() < MAX_CONNECTIONS {
                    let connection = ConnectionId(self.opened.len() as u64 + 1);
                    self.hub.handle_connect(connection, now);
                    self.opened.push(connection);
                    self.live.insert(connection);
                }
                None
            }
            Operation::Text { who, text } => self.text(who, &text),
            Operation::Join { who, room, resume } => {
                let room = format!("r{}", room % ROOMS);
                let token = resume
                    .checked_sub(1)
                    .and_then(|index| self.pick(index))
                    .and_then(|connection| self.tokens.get(&connection));
                let text = match token {
                    Some(token) => format!(r#"{{"type":"join","room":"{room}","resume":"{token}"}}"#),
                    None => format!(r#"{{"type":"join","room":"{room}"}}"#),
                };
                self.text(who, &text)
            }
            Operation::Leave { who } => self.text(who, r#"{"type":"leave"}"#),
            Operation::Message { who, size } => {
                let padding = "x".repeat(usize::from(size) * 32);
                self.text(who, &format!(r#"{{"type":"message","data":{{"pad":"{padding}"}}}}"#))
            }
            Operation::Ping { who } => self.text(who, r#"{"type":"ping"}"#),
            Operation::Report { who, ms } => {
                let ms = u32::from(ms) * 10;
                self.text(
                    who,
                    &format!(
                        r#"{{"type":"report","setup":{{"outcome":"connected","ms":{ms},"path":{{"local":"host","remote":"relay","protocol":"udp"}}}},"summary":{{"durationSecs":{ms}}}}}"#
                    ),
                )
            }
            Operation::Binary { who } => {
                let connection = self.pick(who);
                if let Some(connection) = connection {
                    self.hub.handle_binary(connection, now);
                }
                connection
            }
            Operation::Activity { who } => {
                let connection = self.pick(who);
                if let Some(connection) = connection {
                    self.hub.handle_activity(connection, now);
                }
                connection
            }
            Operation::Disconnect { who, lost } => {
                if let Some(connection) = self.pick(who) {
                    let how = if lost { Disconnect::Lost } else { Disconnect::Closed };
                    self.disconnected(connection, how);
                    self.hub.handle_disconnect(connection, how, now);
                }
                None
            }
            Operation::Advance { ticks } => {
                self.now += TICK * u32::from(ticks);
                self.hub.handle_timeout(self.now);
                None
            }
        };
        let sender_seat = sender.and_then(|connection| self.seat_of.get(&connection).cloned());
        let sender_live = sender.is_some_and(|connection| self.live.contains(&connection));
        let produced = self.drain(sender, sender_seat.map(|(_, id)| id));
        if sender.is_some() && !sender_live {
            assert_eq!(produced, 0, "a connection that is gone got answers");
        }
        self.expire_away_seats();
        self.check();
    }

    /// The whole session ends: everyone goes, every deadline passes.
    fn finish(&mut self) {
        let live: Vec<ConnectionId> = self.live.iter().copied().collect();
        for connection in live {
            self.disconnected(connection, Disconnect::Lost);
            self.hub.handle_disconnect(connection, Disconnect::Lost, self.now);
            self.drain(None, None);
        }
        self.now += self.resume_grace + self.silence_timeout + Duration::from_secs(1);
        self.hub.handle_timeout(self.now);
        self.drain(None, None);
        self.expire_away_seats();
        self.check();
        let stats = self.hub.stats();
        assert_eq!((stats.connections, stats.rooms, stats.away_seats), (0, 0, 0), "left behind: {stats:?}");
        assert_eq!(self.hub.pending_timers(), 0, "deadlines left behind");
    }

    fn pick(&self, who: u8) -> Option<ConnectionId> {
        if self.opened.is_empty() {
            return None;
        }
        self.opened.get(usize::from(who) % self.opened.len()).copied()
    }

    fn text(&mut self, who: u8, text: &str) -> Option<ConnectionId> {
        let connection = self.pick(who)?;
        self.hub.handle_text(connection, text, self.now);
        Some(connection)
    }

    /// The driver reports a connection gone: the model updates its seat first.
    fn disconnected(&mut self, connection: ConnectionId, how: Disconnect) {
        if !self.live.remove(&connection) {
            return;
        }
        let Some((room, id)) = self.seat_of.remove(&connection) else { return };
        if how == Disconnect::Lost && !self.resume_grace.is_zero() {
            let until = self.now + self.resume_grace;
            let seat = self.rooms.get_mut(&room).and_then(|seats| seats.iter_mut().find(|seat| seat.id == id));
            match seat {
                Some(seat) => seat.away_until = Some(until),
                None => panic!("the model lost seat {id:?} of room {room}"),
            }
        } else {
            self.remove_seat(&room, id);
        }
    }

    /// Applies every output of the last step to the model; returns how many there were.
    fn drain(&mut self, sender: Option<ConnectionId>, sender_id: Option<PeerId>) -> usize {
        let mut count = 0;
        while let Some(output) = self.hub.poll_output() {
            count += 1;
            match output {
                Output::Send { to, message } => {
                    assert!(self.live.contains(&to), "{message:?} sent to {to:?}, which is gone");
                    self.received(to, message, sender, sender_id);
                }
                Output::Report { connection, report } => {
                    assert!(self.live.contains(&connection), "a report of {connection:?}, which is gone");
                    assert!(self.seat_of.contains_key(&connection), "a report of {connection:?}, which has no seat");
                    assert!(report.check().is_ok(), "a report out of bounds was counted: {report:?}");
                }
                Output::Close { connection, code, .. } => {
                    assert!(self.live.remove(&connection), "closed {connection:?}, which is gone");
                    if let Some((room, id)) = self.seat_of.remove(&connection) {
                        // A resume moves the seat to the new connection (its
                        // `joined` follows); any other close ends the seat.
                        if code != CloseCode::Replaced {
                            self.remove_seat(&room, id);
                        }
                    }
                }
            }
        }
        assert!(self.hub.poll_output().is_none(), "outputs left after draining");
        count
    }

    fn received(
        &mut self,
        to: ConnectionId,
        message: ServerMessage,
        sender: Option<ConnectionId>,
        sender_id: Option<PeerId>,
    ) {
        let own = self.seat_of.get(&to).cloned();
        match message {
            ServerMessage::Joined { room, id, peers, resume, .. } => {
                match own {
                    Some((own_room, own_id)) => assert!(
                        own_room == room && own_id == id,
                        "{to:?} holds {own_id:?} in {own_room} and got joined for {id:?} in {room}"
                    ),
                    None => self.seated(to, &room, id),
                }
                let others: BTreeSet<PeerId> = self
                    .rooms
                    .get(&room)
                    .map(|seats| seats.iter().map(|seat| seat.id).filter(|other| *other != id).collect())
                    .unwrap_or_default();
                let listed: BTreeSet<PeerId> = peers.iter().copied().collect();
                assert_eq!(listed.len(), peers.len(), "joined.peers lists a member twice");
                assert_eq!(listed, others, "joined.peers is not the rest of room {room}");
                self.tokens.insert(to, resume);
            }
            ServerMessage::OtherJoined { id } => {
                let (_, own_id) = own.expect("other_joined to a connection without a seat");
                assert_ne!(id, own_id, "told that it joined its own room");
            }
            ServerMessage::Full { room } => {
                assert!(own.is_none(), "full to a connection that holds a seat");
                let seats = self.rooms.get(&room).map_or(0, Vec::len);
                assert_eq!(seats, 2, "full for room {room}, which has {seats} seats");
            }
            ServerMessage::Leaved { room } => {
                match own {
                    Some((own_room, id)) if own_room == room => self.remove_seat(&room, id),
                    other => panic!("leaved {room} to {to:?}, which holds {other:?}"),
                }
                self.seat_of.remove(&to);
            }
            ServerMessage::Bye { id } => {
                let (own_room, own_id) = own.expect("bye to a connection without a seat");
                assert_ne!(id, own_id, "told that it left itself");
                let elsewhere = self
                    .rooms
                    .iter()
                    .any(|(room, seats)| *room != own_room && seats.iter().any(|seat| seat.id == id));
                assert!(!elsewhere, "bye for {id:?}, which sits in another room");
                self.remove_seat(&own_room, id);
            }
            ServerMessage::Message { from, .. } => {
                let (_, own_id) = own.expect("a message to a connection without a seat");
                assert_ne!(from, own_id, "a message from itself");
                let sender = sender.expect("a message relayed by a step without a sender");
                if sender != to {
                    // Relayed now (not replayed from an away seat's queue on resume).
                    assert_eq!(Some(from), sender_id, "`from` is not the sender's seat id");
                }
            }
            ServerMessage::Pong | ServerMessage::Error { .. } => {
                assert_eq!(Some(to), sender, "an answer to a connection that did not ask");
            }
        }
    }

    /// A `joined` to a connection without a seat: a new seat, or a resumed one.
    fn seated(&mut self, to: ConnectionId, room: &RoomName, id: PeerId) {
        assert!(
            !self.seat_of.values().any(|(_, held)| *held == id),
            "seat {id:?} held by two live connections"
        );
        let elsewhere =
            self.rooms.iter().any(|(other, seats)| other != room && seats.iter().any(|seat| seat.id == id));
        assert!(!elsewhere, "seat {id:?} in two rooms");
        let seats = self.rooms.entry(room.clone()).or_default();
        match seats.iter_mut().find(|seat| seat.id == id) {
            Some(seat) => seat.away_until = None,
            None => seats.push(SeatModel { id, away_until: None }),
        }
        assert!(seats.len() <= 2, "room {room} has {} seats", seats.len());
        self.seat_of.insert(to, (room.clone(), id));
    }

    fn remove_seat(&mut self, room: &RoomName, id: PeerId) {
        if let Some(seats) = self.rooms.get_mut(room) {
            seats.retain(|seat| seat.id != id);
            if seats.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Away seats whose grace ran out are gone once the hub's deadlines fired.
    fn expire_away_seats(&mut self) {
        let now = self.now;
        for seats in self.rooms.values_mut() {
            seats.retain(|seat| seat.away_until.is_none_or(|until| until > now));
        }
        self.rooms.retain(|_, seats| !seats.is_empty());
    }

    fn check(&self) {
        for (room, seats) in &self.rooms {
            assert!((1..=2).contains(&seats.len()), "room {room} has {} seats", seats.len());
        }
        let mut held = HashSet::new();
        for (connection, (room, id)) in &self.seat_of {
            assert!(self.live.contains(connection), "a gone connection {connection:?} holds a seat");
            assert!(held.insert(*id), "seat {id:?} held twice");
            let seat = self.rooms.get(room).and_then(|seats| seats.iter().find(|seat| seat.id == *id));
            assert!(
                seat.is_some_and(|seat| seat.away_until.is_none()),
                "{connection:?} holds {id:?} in {room}, which the room does not have as connected"
            );
        }
        let away = self.rooms.values().flatten().filter(|seat| seat.away_until.is_some()).count();
        let stats = self.hub.stats();
        assert_eq!(stats.connections, self.live.len(), "connections: hub {stats:?}");
        assert_eq!(stats.rooms, self.rooms.len(), "rooms: hub {stats:?}, model {:?}", self.rooms);
        assert_eq!(stats.away_seats, away, "away seats: hub {stats:?}, model {:?}", self.rooms);
    }
}
