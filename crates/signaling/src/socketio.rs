//! The socket.io dialect: pages and apps written for the classic course server
//! (socket.io 2, events `join`, `joined`, `otherjoin`, `full`, `message`,
//! `leave`, `leaved`, `bye`), translated at the edge onto the one hub so they
//! meet Duet's own clients in the same rooms.
//!
//! Client → server: `join(room)`, `message(room, data)`, `leave(room)`.
//! Server → client: `joined(room, id, {iceServers})`, `otherjoin(room, id)`,
//! `full(room, id)`, `message(room, data)`, `leaved(room, id)`, `bye(room, id)`,
//! and `duet-error(code, message)` for refusals. A socket.io client is known to
//! others by its socket id; a Duet member by its server id.
//!
//! Who offers. A socket.io page offers when it is told `otherjoin` (the member
//! already in the room calls the newcomer); Duet's clients and `cmd` clients
//! offer as the newcomer. So between dialects the events are adjusted: a
//! socket.io member is not told `otherjoin` about a newcomer that offers by
//! itself, and a socket.io newcomer that finds such a member waiting is told
//! `otherjoin` right after `joined`, so exactly one side offers.
//!
//! Owns the translation only: the transport (Engine.IO, WebSocket, polling) is
//! the driver's, and this holds no state beyond one client's socket id.

use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::signal::{self, Form};
use crate::wire::{ClientMessage, PeerId, RoomName, ServerMessage};

/// The events' names, as the course server spells them.
pub mod events {
    /// Client → server: `join(room)`.
    pub const JOIN: &str = "join";
    /// Client → server: `leave(room)`.
    pub const LEAVE: &str = "leave";
    /// Both ways: `message(room, data)`.
    pub const MESSAGE: &str = "message";
    /// `joined(room, id, {iceServers})`: you are in the room.
    pub const JOINED: &str = "joined";
    /// `otherjoin(room, id)`: someone joined your room; make the offer.
    pub const OTHERJOIN: &str = "otherjoin";
    /// `full(room, id)`: the room holds two already.
    pub const FULL: &str = "full";
    /// `leaved(room, id)`: your `leave` is done.
    pub const LEAVED: &str = "leaved";
    /// `bye(room, id)`: the other member left.
    pub const BYE: &str = "bye";
    /// `duet-error(code, message)`: a refusal (`error` is reserved by socket.io).
    pub const ERROR: &str = "duet-error";
}

/// The name of the event that carries a refusal.
pub const ERROR_EVENT: &str = events::ERROR;

/// An event from a socket.io client, with its arguments as the driver could
/// read them (`None`: missing or of the wrong shape).
#[derive(Debug, Clone)]
pub enum Event {
    Join(Option<Value>),
    Leave(Option<Value>),
    Message(Option<(Value, Value)>),
    /// An event this dialect does not have.
    Other(String),
}

/// One socket.io client.
#[derive(Debug, Clone)]
pub struct SioClient {
    sid: String,
}

/// What the translation needs to know of the room.
pub struct View<'a> {
    /// The recipient's room, when it sits in one.
    pub room: Option<&'a RoomName>,
    /// How members are named to socket.io clients.
    pub name_of: &'a dyn Fn(PeerId) -> String,
    /// True for members that speak socket.io (and so offer on `otherjoin`).
    pub speaks_socketio: &'a dyn Fn(PeerId) -> bool,
}

impl std::fmt::Debug for View<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("View")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl SioClient {
    /// A client known by its socket id.
    #[must_use]
    pub fn new(sid: String) -> Self {
        Self { sid }
    }

    /// Its socket id: its name for everyone in its room.
    #[must_use]
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Translates one event into a hub message, or says in one sentence why not.
    pub fn translate_in(
        &self,
        event: Event,
        room: Option<&RoomName>,
    ) -> Result<ClientMessage, String> {
        match event {
            Event::Join(name) => {
                let name = room_argument(name.as_ref(), "join")?;
                let room = RoomName::parse(name).map_err(|error| format!("join: {error}"))?;
                Ok(ClientMessage::Join { room, resume: None })
            }
            Event::Leave(name) => {
                let name = room_argument(name.as_ref(), "leave")?;
                check_room(room, name)?;
                Ok(ClientMessage::Leave)
            }
            Event::Message(arguments) => {
                let (name, data) = arguments.ok_or("message needs a room and the data")?;
                let name = room_argument(Some(&name), "message")?;
                check_room(room, name)?;
                let data = RawValue::from_string(data.to_string()).map_err(|e| e.to_string())?;
                Ok(ClientMessage::Message { data })
            }
            Event::Other(name) => Err(format!(
                "unknown event `{}`; this server knows join, message and leave",
                name.chars().take(32).collect::<String>()
            )),
        }
    }

    /// The events this client is sent for a hub message, each as a JSON array
    /// `[event, arguments…]`; none for messages this dialect has no event for.
    #[must_use]
    pub fn translate_out(&self, message: &ServerMessage, view: &View<'_>) -> Vec<Value> {
        let room = || view.room.map_or(Value::Null, |room| json!(room));
        match message {
            ServerMessage::Joined {
                room: joined,
                peers,
                ice_servers,
                ..
            } => {
                let mut out = vec![json!([
                    events::JOINED,
                    joined,
                    self.sid,
                    { "iceServers": ice_servers }
                ])];
                if let Some(mate) = peers.first()
                    && !(view.speaks_socketio)(*mate)
                {
                    // The member there waits for the newcomer's offer: this page
                    // offers when told `otherjoin`.
                    out.push(json!([events::OTHERJOIN, joined, (view.name_of)(*mate)]));
                }
                out
            }
            ServerMessage::OtherJoined { id } if (view.speaks_socketio)(*id) => {
                vec![json!([events::OTHERJOIN, room(), (view.name_of)(*id)])]
            }
            // The newcomer offers by itself; an `otherjoin` would make both offer.
            ServerMessage::OtherJoined { .. } => Vec::new(),
            ServerMessage::Full { room: full } => vec![json!([events::FULL, full, self.sid])],
            ServerMessage::Leaved { room: left } => vec![json!([events::LEAVED, left, self.sid])],
            ServerMessage::Bye { id } => vec![json!([events::BYE, room(), (view.name_of)(*id)])],
            ServerMessage::Message { data, .. } => {
                let data = signal::to_form(data.get(), Form::Legacy);
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                vec![json!([events::MESSAGE, room(), data])]
            }
            ServerMessage::Error { code, message } => {
                vec![json!([ERROR_EVENT, code, message])]
            }
            ServerMessage::Pong => Vec::new(),
        }
    }
}

fn room_argument<'a>(value: Option<&'a Value>, event: &str) -> Result<&'a str, String> {
    value
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{event} needs the room name as its first argument"))
}

/// Only a member may speak to a room, and only to its own.
fn check_room(current: Option<&RoomName>, named: &str) -> Result<(), String> {
    match current {
        Some(room) if room.as_str() == named => Ok(()),
        Some(room) => Err(format!("you are in room {room}, not in that one")),
        None => Err("join a room first".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn view<'a>(
        room: Option<&'a RoomName>,
        name_of: &'a dyn Fn(PeerId) -> String,
        sio: &'a dyn Fn(PeerId) -> bool,
    ) -> View<'a> {
        View {
            room,
            name_of,
            speaks_socketio: sio,
        }
    }

    fn room() -> RoomName {
        RoomName::parse("room1").unwrap_or_else(|_| unreachable!())
    }

    fn joined(peers: Vec<PeerId>) -> ServerMessage {
        ServerMessage::Joined {
            room: room(),
            id: PeerId(1),
            peers,
            ice_servers: Arc::from(Vec::new()),
            resume: crate::ResumeToken(7),
        }
    }

    #[test]
    fn events_in_become_hub_messages() {
        let client = SioClient::new("abc".to_owned());
        let r = room();
        assert!(matches!(
            client.translate_in(Event::Join(Some(json!("room1"))), None),
            Ok(ClientMessage::Join { resume: None, .. })
        ));
        assert!(
            client
                .translate_in(Event::Join(Some(json!("no spaces"))), None)
                .is_err()
        );
        assert!(
            client
                .translate_in(Event::Join(Some(json!(5))), None)
                .is_err()
        );
        assert!(client.translate_in(Event::Join(None), None).is_err());
        let message = Event::Message(Some((
            json!("room1"),
            json!({"type": "offer", "sdp": "v=0"}),
        )));
        match client.translate_in(message.clone(), Some(&r)) {
            Ok(ClientMessage::Message { data }) => {
                assert_eq!(
                    serde_json::from_str::<Value>(data.get()).ok(),
                    Some(json!({"type": "offer", "sdp": "v=0"}))
                );
            }
            other => unreachable!("{other:?}"),
        }
        assert_eq!(
            client.translate_in(message, None).err().as_deref(),
            Some("join a room first")
        );
        let elsewhere = Event::Message(Some((json!("room2"), json!({}))));
        assert!(client.translate_in(elsewhere, Some(&r)).is_err());
        assert!(client.translate_in(Event::Message(None), Some(&r)).is_err());
        assert!(matches!(
            client.translate_in(Event::Leave(Some(json!("room1"))), Some(&r)),
            Ok(ClientMessage::Leave)
        ));
        assert!(
            client
                .translate_in(Event::Other("connect".to_owned()), Some(&r))
                .is_err()
        );
    }

    #[test]
    fn exactly_one_side_is_told_to_offer() {
        let client = SioClient::new("me".to_owned());
        let r = room();
        let name = |id: PeerId| format!("peer{}", id.0);
        let all_sio = |_: PeerId| true;
        let none_sio = |_: PeerId| false;
        // A socket.io mate offers on its own `otherjoin`: only `joined` here.
        let events =
            client.translate_out(&joined(vec![PeerId(2)]), &view(Some(&r), &name, &all_sio));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0][0], "joined");
        assert_eq!(events[0][2], "me");
        // A Duet mate waits for the newcomer's offer: `otherjoin` follows.
        let events =
            client.translate_out(&joined(vec![PeerId(2)]), &view(Some(&r), &name, &none_sio));
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], json!(["otherjoin", "room1", "peer2"]));
        // A Duet newcomer offers itself: this member is not told to.
        let other = ServerMessage::OtherJoined { id: PeerId(3) };
        assert!(
            client
                .translate_out(&other, &view(Some(&r), &name, &none_sio))
                .is_empty()
        );
        assert_eq!(
            client.translate_out(&other, &view(Some(&r), &name, &all_sio)),
            vec![json!(["otherjoin", "room1", "peer3"])]
        );
    }

    #[test]
    fn duet_signals_reach_a_page_in_its_own_form() {
        let client = SioClient::new("me".to_owned());
        let r = room();
        let name = |id: PeerId| format!("peer{}", id.0);
        let sio = |_: PeerId| false;
        let data = RawValue::from_string(
            r#"{"kind":"ice","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0"}}"#
                .to_owned(),
        )
        .unwrap_or_else(|_| unreachable!());
        let events = client.translate_out(
            &ServerMessage::Message {
                from: PeerId(2),
                data,
            },
            &view(Some(&r), &name, &sio),
        );
        assert_eq!(events[0][0], "message");
        assert_eq!(events[0][2]["type"], "candidate");
        assert_eq!(events[0][2]["candidate"]["sdpMid"], "0");
        let bye = client.translate_out(
            &ServerMessage::Bye { id: PeerId(2) },
            &view(Some(&r), &name, &sio),
        );
        assert_eq!(bye, vec![json!(["bye", "room1", "peer2"])]);
    }
}
