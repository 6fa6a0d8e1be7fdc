//! What signaling nodes sharing one Redis say to each other, and how a room
//! is kept in Redis (sans-IO: the formats and their checks; the driver does
//! the IO).
//!
//! Each room is held by one node, its *owner*: the node that runs the room in
//! its [`Hub`](crate::Hub). A member connected to another node is a *remote*
//! member: its node forwards its frames to the owner ([`NodeMessage::Frame`])
//! and writes what the owner sends back ([`NodeMessage::Out`]). The owner
//! keeps a copy of the room's seats in Redis ([`StoredRoom`]) so that another
//! node can carry the room on when the owner stops or dies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::{ConnectionId, RoomSnapshot, SeatSnapshot, SeatState};
use crate::socketio::Event;
use crate::wire::{CloseCode, IceServer, PeerId, ResumeToken, ServerMessage};

/// Largest message one node accepts from another (a 64 KiB frame with its envelope).
pub const MAX_NODE_MESSAGE: usize = 80 * 1024;

/// A node's name: 16 lowercase hex digits, chosen at random when it starts.
pub fn is_node_name(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// One message between nodes, with the node that sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    #[serde(flatten)]
    pub message: NodeMessage,
}

impl Envelope {
    /// Parses a message from another node; `None` for anything malformed,
    /// oversized or from a node with an impossible name.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_NODE_MESSAGE {
            return None;
        }
        let envelope: Envelope = serde_json::from_slice(bytes).ok()?;
        is_node_name(&envelope.from).then_some(envelope)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What one node tells another. `c` is always the number of a connection on
/// the node where the member is connected (the edge), never the owner's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum NodeMessage {
    /// Edge → owner: a member of a room you hold is connected to me; here is
    /// what the hub needs of it (its TURN credentials, its socket.io id).
    Attach {
        c: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice: Option<Vec<IceServer>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sio: Option<String>,
    },
    /// Edge → owner: a text frame from the member.
    Frame { c: u64, text: String },
    /// Edge → owner: a socket.io event from the member.
    Event { c: u64, event: SioEvent },
    /// Edge → owner: the member's connection is alive (a ping or pong).
    Activity { c: u64 },
    /// Edge → owner: the member's connection ended (`lost`: it broke and may resume).
    Gone { c: u64, lost: bool },
    /// Owner → edge: write this text to the member.
    Out { c: u64, text: String },
    /// Owner → edge: close the member's connection with this code.
    Close { c: u64, code: u16 },
    /// New owner → edge: the member's room is now held by `owner`.
    Rehome { c: u64, owner: String, room: String },
    /// Owner → edge: I no longer hold this room (I am stopping); take it over.
    Released { room: String },
}

/// A socket.io event as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum SioEvent {
    Join { a: Option<Value> },
    Leave { a: Option<Value> },
    Message { a: Option<(Value, Value)> },
    Other { name: String },
}

impl From<Event> for SioEvent {
    fn from(event: Event) -> Self {
        match event {
            Event::Join(a) => SioEvent::Join { a },
            Event::Leave(a) => SioEvent::Leave { a },
            Event::Message(a) => SioEvent::Message { a },
            Event::Other(name) => SioEvent::Other { name },
        }
    }
}

impl From<SioEvent> for Event {
    fn from(event: SioEvent) -> Self {
        match event {
            SioEvent::Join { a } => Event::Join(a),
            SioEvent::Leave { a } => Event::Leave(a),
            SioEvent::Message { a } => Event::Message(a),
            SioEvent::Other { name } => Event::Other(name),
        }
    }
}

/// The close a node asks of another, with the reason its hub would give.
pub fn close_code(number: u16) -> Option<CloseCode> {
    [
        CloseCode::GoingAway,
        CloseCode::Restarting,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::Replaced,
        CloseCode::SilenceTimeout,
        CloseCode::SlowReader,
        CloseCode::JoinTimeout,
    ]
    .into_iter()
    .find(|code| code.number() == number)
}

/// A room as kept in Redis: each seat, and where its member is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoom {
    pub seats: Vec<StoredSeat>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSeat {
    /// The member's id, 16 hex digits.
    pub id: String,
    /// Its resume token, 32 hex digits.
    pub token: String,
    /// Connected: the node it is connected to and its connection number there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<(String, u64)>,
    /// Away: milliseconds of grace left when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_ms: Option<u64>,
    /// Away: the messages queued for it, as sent on the wire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<String>,
}

impl StoredRoom {
    /// The stored form of a hub's room; `locate` tells where a connection's
    /// member is (node, connection number on that node).
    pub fn from_snapshot(
        snapshot: &RoomSnapshot,
        locate: impl Fn(ConnectionId) -> Option<(String, u64)>,
    ) -> Self {
        let seats = snapshot
            .seats
            .iter()
            .map(|seat| {
                let (at, away_ms, queue) = match &seat.state {
                    SeatState::Connected(connection) => (locate(*connection), None, Vec::new()),
                    SeatState::Away { left, queue } => (
                        None,
                        Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
                        queue.iter().map(ServerMessage::to_json).collect(),
                    ),
                };
                StoredSeat {
                    id: seat.id.to_string(),
                    token: seat.token.to_string(),
                    away_ms,
                    at,
                    queue,
                }
            })
            .collect();
        Self { seats }
    }

    /// The hub's form of a stored room; `attach` gives the connection a
    /// member's location maps to on this node (`None`: it is away). Seats
    /// that do not parse are left out, so a damaged record cannot seat a
    /// member under a malformed id.
    pub fn to_snapshot(
        &self,
        mut attach: impl FnMut(&str, u64) -> Option<ConnectionId>,
    ) -> RoomSnapshot {
        let seats = self
            .seats
            .iter()
            .filter_map(|seat| {
                let id = PeerId::parse(&seat.id)?;
                let token = ResumeToken::parse(&seat.token)?;
                let connection = seat
                    .at
                    .as_ref()
                    .and_then(|(node, connection)| attach(node, *connection));
                let state = match connection {
                    Some(connection) => SeatState::Connected(connection),
                    None => SeatState::Away {
                        // A member connected somewhere this node cannot reach gets a full grace.
                        left: seat.away_ms.map_or(Duration::MAX, Duration::from_millis),
                        queue: seat
                            .queue
                            .iter()
                            .filter_map(|text| ServerMessage::parse(text).ok())
                            .collect(),
                    },
                };
                Some(SeatSnapshot { id, token, state })
            })
            .collect();
        RoomSnapshot { seats }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// How long a node's own link to Redis must have worked before it judges
/// another node dead by its missing heartbeat (after an outage or a pause of
/// Redis, every heartbeat has expired at once: the others need a moment to
/// write theirs again).
pub const HEALTHY_BEFORE_JUDGING: Duration = Duration::from_secs(3);
/// How long a heartbeat must stay missing before its node is judged dead
/// (longer than a heartbeat period, so a key lost with Redis' data is written
/// again before anyone judges).
pub const MISSING_BEFORE_DEAD: Duration = Duration::from_millis(1500);

/// Judges other nodes dead from their heartbeats, and only while this node's
/// own view of Redis can be trusted.
#[derive(Debug, Default)]
pub struct DeathWatch {
    healthy_since: Option<Instant>,
    missing: HashMap<String, Instant>,
}

impl DeathWatch {
    /// A command to Redis succeeded.
    pub fn redis_ok(&mut self, now: Instant) {
        self.healthy_since.get_or_insert(now);
    }

    /// A command to Redis failed: nothing seen so far can be trusted.
    pub fn redis_failed(&mut self) {
        self.healthy_since = None;
        self.missing.clear();
    }

    /// `node`'s heartbeat was there or not at `now`. True: judge it dead (once).
    pub fn observe(&mut self, node: &str, present: bool, now: Instant) -> bool {
        if present {
            self.missing.remove(node);
            return false;
        }
        let trusted = self
            .healthy_since
            .is_some_and(|since| now.saturating_duration_since(since) >= HEALTHY_BEFORE_JUDGING);
        if !trusted {
            return false;
        }
        let first = *self.missing.entry(node.to_owned()).or_insert(now);
        if now.saturating_duration_since(first) >= MISSING_BEFORE_DEAD {
            self.missing.remove(node);
            return true;
        }
        false
    }

    /// Forgets nodes no longer watched.
    pub fn retain(&mut self, watched: &[String]) {
        self.missing.retain(|node, _| watched.contains(node));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn a_node_is_judged_dead_only_when_missing_long_enough_while_redis_works() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut watch = DeathWatch::default();
        // Not before Redis has worked for a while: right after an outage every heartbeat is gone.
        watch.redis_ok(at(0));
        assert!(!watch.observe("a", false, at(1000)));
        assert!(!watch.observe("a", false, at(2900)));
        // Trusted now; missing for the first time.
        assert!(!watch.observe("a", false, at(3000)));
        assert!(!watch.observe("a", false, at(4000)));
        // Back before it was judged: starts over.
        assert!(!watch.observe("a", true, at(4200)));
        assert!(!watch.observe("a", false, at(4400)));
        assert!(!watch.observe("a", false, at(5800)));
        assert!(watch.observe("a", false, at(5900)));
        // Judged once.
        assert!(!watch.observe("a", false, at(6000)));
        // A failure of our own link resets everything.
        watch.redis_failed();
        watch.redis_ok(at(6000));
        assert!(!watch.observe("b", false, at(7000)));
        assert!(!watch.observe("b", false, at(8999)));
        assert!(!watch.observe("b", false, at(9000)));
        assert!(watch.observe("b", false, at(10_600)));
    }

    #[test]
    fn envelopes_round_trip_and_reject_junk() {
        let envelope = Envelope {
            from: "0123456789abcdef".into(),
            message: NodeMessage::Frame {
                c: 7,
                text: r#"{"type":"ping"}"#.into(),
            },
        };
        let text = envelope.to_json();
        let back = Envelope::parse(text.as_bytes()).unwrap();
        assert!(
            matches!(back.message, NodeMessage::Frame { c: 7, ref text } if text.contains("ping"))
        );
        assert!(Envelope::parse(b"{}").is_none());
        assert!(Envelope::parse(br#"{"from":"x","t":"activity","c":1}"#).is_none());
        assert!(Envelope::parse(&vec![b' '; MAX_NODE_MESSAGE + 1]).is_none());
        let event: SioEvent = Event::Message(Some((Value::from("r"), Value::from(1)))).into();
        let text = serde_json::to_string(&NodeMessage::Event { c: 1, event }).unwrap();
        let back: NodeMessage = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back,
            NodeMessage::Event {
                event: SioEvent::Message { a: Some(_) },
                ..
            }
        ));
    }

    #[test]
    fn stored_rooms_keep_ids_tokens_locations_and_queues() {
        let snapshot = RoomSnapshot {
            seats: vec![
                SeatSnapshot {
                    id: PeerId(0xab),
                    token: ResumeToken(0xcd),
                    state: SeatState::Connected(ConnectionId(3)),
                },
                SeatSnapshot {
                    id: PeerId(0xef),
                    token: ResumeToken(0x12),
                    state: SeatState::Away {
                        left: Duration::from_millis(1500),
                        queue: vec![ServerMessage::Pong],
                    },
                },
            ],
        };
        let stored =
            StoredRoom::from_snapshot(&snapshot, |c| Some(("0123456789abcdef".into(), c.0)));
        let stored = StoredRoom::parse(&stored.to_json()).unwrap();
        assert_eq!(stored.seats[0].at, Some(("0123456789abcdef".into(), 3)));
        assert_eq!(stored.seats[1].away_ms, Some(1500));
        let back = stored
            .to_snapshot(|node, c| (node == "0123456789abcdef").then_some(ConnectionId(c + 100)));
        assert!(matches!(
            back.seats[0].state,
            SeatState::Connected(ConnectionId(103))
        ));
        assert_eq!(back.seats[0].token, ResumeToken(0xcd));
        assert!(
            matches!(&back.seats[1].state, SeatState::Away { left, queue } if left.as_millis() == 1500 && queue.len() == 1)
        );
        // A member whose node is not reachable from here is away.
        let elsewhere = stored.to_snapshot(|_, _| None);
        assert!(matches!(elsewhere.seats[0].state, SeatState::Away { .. }));
        // Damaged seats are left out.
        let mut damaged = stored.clone();
        damaged.seats[0].token = "nope".into();
        assert_eq!(damaged.to_snapshot(|_, _| None).seats.len(), 1);
    }
}
