//! The two wire protocols behind one interface: Duet's JSON messages and
//! socket.io 2 (Engine.IO 3) events, WebSocket transport only. The messages
//! and event names are `duet-signaling`'s (the server's own definitions);
//! only the Engine.IO framing is written here.
//!
//! The load engine asks an adapter for the URL path, the join frame and a relay
//! frame, and hands it every text frame it receives to classify. Relay payloads
//! carry `"sbt"` (send time, µs since the run's origin) and `"sbp"` (the step
//! number) as the first keys of the relayed data, so the receiver finds them with
//! a substring search instead of a full JSON parse.

use std::fmt::Write as _;
use std::time::Duration;

use duet_signaling::socketio::events;
use duet_signaling::{ClientMessage, ErrorCode, RoomName, ServerMessage};
use serde_json::value::RawValue;

/// Which server protocol to speak.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Duet: `wss://ADDR/ws`, one JSON object per text frame.
    Duet,
    /// socket.io 2 over Engine.IO 3: `wss://ADDR/socket.io/?EIO=3&transport=websocket`.
    Socketio,
}

/// What a received text frame means to the load engine.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A relayed benchmark message.
    Relay {
        /// Send time, µs since the run's origin.
        sent_us: u64,
        /// Step the message belongs to.
        step: u32,
    },
    /// Our join succeeded.
    Joined,
    /// The other member arrived.
    OtherJoined,
    /// The other member left.
    Bye,
    /// The room was full.
    Full,
    /// The server refused something (the code or a short description).
    Error(String),
    /// An answer to a keep-alive.
    Pong,
    /// Engine.IO: the server pings, answer `3`.
    EioPing,
    /// Engine.IO: the open packet, with the server's ping interval.
    EioOpen {
        /// `pingInterval`, ms.
        ping_interval_ms: Option<u64>,
    },
    /// socket.io: connected to the default namespace (`40`).
    SioConnect,
    /// The server ended the session at the protocol level (`1`, `41`).
    Closed,
    /// Anything else (left-over replies, no-ops).
    Other,
}

/// Key of the send timestamp in relayed data.
const KEY_SENT: &str = "\"sbt\":";
/// Key of the step number in relayed data.
const KEY_STEP: &str = "\"sbp\":";

impl Protocol {
    /// The WebSocket URL for a server at `addr`.
    pub fn url(self, addr: std::net::SocketAddr) -> String {
        match self {
            Protocol::Duet => format!("wss://{addr}/ws"),
            Protocol::Socketio => format!("wss://{addr}/socket.io/?EIO=3&transport=websocket"),
        }
    }

    /// Whether the protocol has its own handshake after the WebSocket opens.
    pub fn has_session_handshake(self) -> bool {
        matches!(self, Protocol::Socketio)
    }

    /// The frame that joins `room`.
    pub fn join_frame(self, room: &str) -> String {
        match self {
            // An invalid name gives an empty frame, which the server refuses (and the run reports).
            Protocol::Duet => RoomName::parse(room).map_or_else(
                |_| String::new(),
                |room| ClientMessage::Join { room, resume: None }.to_json(),
            ),
            Protocol::Socketio => format!(r#"42["{}",{}]"#, events::JOIN, json_string(room)),
        }
    }

    /// The frame that relays a benchmark message to the other member of `room`.
    pub fn relay_frame(self, room: &str, sent_us: u64, step: u32, pad: &str) -> String {
        let mut data = String::with_capacity(pad.len() + 48);
        // Writing to a String cannot fail.
        let _ = write!(data, r#"{{"sbt":{sent_us},"sbp":{step},"pad":"{pad}"}}"#);
        match self {
            Protocol::Duet => RawValue::from_string(data).map_or_else(
                |_| String::new(),
                |data| ClientMessage::Message { data }.to_json(),
            ),
            Protocol::Socketio => {
                format!(r#"42["{}",{},{data}]"#, events::MESSAGE, json_string(room))
            }
        }
    }

    /// The application keep-alive frame the client must send, and how often, if any.
    /// Duet needs none (the server's WebSocket pings are answered by the library).
    pub fn keepalive(self, ping_interval: Option<Duration>) -> Option<(&'static str, Duration)> {
        match self {
            Protocol::Duet => None,
            Protocol::Socketio => Some(("2", ping_interval.unwrap_or(Duration::from_secs(25)))),
        }
    }

    /// Classify a received text frame.
    pub fn classify(self, text: &str) -> Incoming {
        if let Some(relay) = relay_fields(text) {
            return relay;
        }
        match self {
            Protocol::Duet => classify_duet(text),
            Protocol::Socketio => classify_socketio(text),
        }
    }
}

/// The benchmark fields of a relayed message, if `text` is one.
fn relay_fields(text: &str) -> Option<Incoming> {
    let sent_us = num_after(text, KEY_SENT)?;
    let step = num_after(text, KEY_STEP)?;
    Some(Incoming::Relay {
        sent_us,
        step: u32::try_from(step).ok()?,
    })
}

/// The unsigned integer after the first occurrence of `key` in `text`.
fn num_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text.get(start..)?.trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits.get(..end)?.parse().ok()
}

fn classify_duet(text: &str) -> Incoming {
    match ServerMessage::parse(text) {
        Ok(ServerMessage::Joined { .. }) => Incoming::Joined,
        Ok(ServerMessage::OtherJoined { .. }) => Incoming::OtherJoined,
        Ok(ServerMessage::Bye { .. }) => Incoming::Bye,
        Ok(ServerMessage::Full { .. }) => Incoming::Full,
        Ok(ServerMessage::Pong) => Incoming::Pong,
        Ok(ServerMessage::Error { code, .. }) => Incoming::Error(code.as_str().to_owned()),
        Ok(ServerMessage::Message { .. } | ServerMessage::Leaved { .. }) => Incoming::Other,
        Err(error) if error.code == ErrorCode::UnknownType => Incoming::Other,
        Err(error) => Incoming::Error(format!("unparsable frame ({error}): {}", clip(text))),
    }
}

fn classify_socketio(text: &str) -> Incoming {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'0') => Incoming::EioOpen {
            ping_interval_ms: num_after(text, "\"pingInterval\":"),
        },
        Some(b'1') => Incoming::Closed,
        Some(b'2') => Incoming::EioPing,
        Some(b'3') => Incoming::Pong,
        Some(b'4') => match bytes.get(1) {
            Some(b'0') => Incoming::SioConnect,
            Some(b'1') => Incoming::Closed,
            Some(b'2') => classify_sio_event(text.get(2..).unwrap_or("")),
            Some(b'4') => Incoming::Error(format!("socket.io error: {}", clip(text))),
            _ => Incoming::Other,
        },
        _ => Incoming::Other,
    }
}

fn classify_sio_event(json: &str) -> Incoming {
    let Ok(args) = serde_json::from_str::<Vec<serde_json::Value>>(json) else {
        return Incoming::Error(format!("unparsable event: {}", clip(json)));
    };
    match args.first().and_then(|v| v.as_str()) {
        Some(events::JOINED) => Incoming::Joined,
        Some(events::OTHERJOIN) => Incoming::OtherJoined,
        Some(events::BYE) => Incoming::Bye,
        Some(events::FULL) => Incoming::Full,
        Some(events::ERROR) => Incoming::Error(format!("refused: {}", clip(json))),
        _ => Incoming::Other,
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The start of a frame, for error messages.
fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duet_frames() {
        let p = Protocol::Duet;
        assert_eq!(
            p.classify(
                r#"{"type":"joined","room":"r","id":"00000000000000ab","peers":[],"iceServers":[],"resume":"0123456789abcdef0123456789abcdef"}"#
            ),
            Incoming::Joined
        );
        assert_eq!(
            p.classify(r#"{"type":"other_joined","id":"00000000000000ab"}"#),
            Incoming::OtherJoined
        );
        assert_eq!(
            p.classify(r#"{"type":"error","code":"rate_limited","message":"slow down"}"#),
            Incoming::Error("rate_limited".to_owned())
        );
        let sent = p.relay_frame("r", 123_456, 7, "xx");
        assert_eq!(
            sent,
            r#"{"type":"message","data":{"sbt":123456,"sbp":7,"pad":"xx"}}"#
        );
        let got = r#"{"type":"message","from":"0123456789abcdef","data":{"sbt":123456,"sbp":7,"pad":"xx"}}"#;
        assert_eq!(
            p.classify(got),
            Incoming::Relay {
                sent_us: 123_456,
                step: 7
            }
        );
    }

    #[test]
    fn socketio_frames() {
        let p = Protocol::Socketio;
        assert_eq!(
            p.classify(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":60000}"#),
            Incoming::EioOpen {
                ping_interval_ms: Some(25_000)
            }
        );
        assert_eq!(p.classify("40"), Incoming::SioConnect);
        assert_eq!(p.classify("3"), Incoming::Pong);
        assert_eq!(p.classify(r#"42["joined","r1","abc"]"#), Incoming::Joined);
        assert_eq!(
            p.classify(r#"42["otherjoin","r1","abc"]"#),
            Incoming::OtherJoined
        );
        assert_eq!(p.join_frame("r1"), r#"42["join","r1"]"#);
        let f = p.relay_frame("r1", 99, 0, "");
        assert_eq!(f, r#"42["message","r1",{"sbt":99,"sbp":0,"pad":""}]"#);
        assert_eq!(
            p.classify(&f),
            Incoming::Relay {
                sent_us: 99,
                step: 0
            }
        );
    }
}
