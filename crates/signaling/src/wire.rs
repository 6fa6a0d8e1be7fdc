//! The wire types of the signaling protocol: what clients may send, what the
//! server answers, and the rules for names, ids and tokens.
//!
//! Owns parsing and serialization only; it knows nothing about rooms. Every
//! parse returns a typed error, never panics: frames come from the network.

use std::fmt;
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::report::CallReport;

/// Longest room name, in bytes.
pub const ROOM_NAME_MAX_LEN: usize = 64;

/// A valid room name: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {ROOM_NAME_MAX_LEN} characters")]
    TooLong,
    #[error("room name may only contain letters, digits, '-' and '_'")]
    BadCharacter,
}

impl RoomName {
    /// Checks `name` against the rules.
    pub fn parse(name: &str) -> Result<Self, RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > ROOM_NAME_MAX_LEN {
            return Err(RoomNameError::TooLong);
        }
        if !name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        {
            return Err(RoomNameError::BadCharacter);
        }
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Serialize for RoomName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A member id, assigned by the server at random; 16 lowercase hex digits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

impl PeerId {
    /// Parses the wire form: 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Self)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The secret that gives a returning client its seat back; 32 hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResumeToken(pub u128);

impl ResumeToken {
    /// Parses the wire form; anything else is simply not a token.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Self)
    }

    /// Compares without an early exit, so timing tells nothing about the secret.
    pub fn matches(&self, other: &ResumeToken) -> bool {
        (self.0 ^ other.0).count_ones() == 0
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ResumeToken(..)")
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

impl Serialize for ResumeToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// A string or a list of strings on the wire (as `RTCIceServer` takes it); always a list here.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(deserializer)? {
        Urls::One(url) => vec![url],
        Urls::Many(urls) => urls,
    })
}

/// A message from a client: parsed and checked by the server
/// ([`ClientMessage::parse`]), written by clients ([`ClientMessage::to_json`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join {
        room: RoomName,
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeToken>,
    },
    Leave,
    /// Anything for the other member (SDP, candidates, app messages), relayed untouched.
    Message {
        data: Box<RawValue>,
    },
    Ping,
    /// How this member's call went, for the operator's metrics (never relayed).
    Report(CallReport),
}

/// The type of a client message, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Join,
    Leave,
    Message,
    Ping,
    Report,
}

impl ClientMessage {
    pub fn kind(&self) -> MessageKind {
        match self {
            ClientMessage::Join { .. } => MessageKind::Join,
            ClientMessage::Leave => MessageKind::Leave,
            ClientMessage::Message { .. } => MessageKind::Message,
            ClientMessage::Ping => MessageKind::Ping,
            ClientMessage::Report(_) => MessageKind::Report,
        }
    }

    /// A `message` carrying `data` (a call message, or any JSON value).
    pub fn message(data: &impl Serialize) -> Result<Self, serde_json::Error> {
        Ok(ClientMessage::Message {
            data: serde_json::value::to_raw_value(data)?,
        })
    }

    /// The text frame a client sends.
    pub fn to_json(&self) -> String {
        // Room names, tokens and raw JSON always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one text frame (the server's side).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let frame: Frame<'_> = serde_json::from_str(text).map_err(ParseError::from_json)?;
        let kind = frame.kind.ok_or_else(|| {
            ParseError::new(ErrorCode::BadMessage, "missing field `type`".to_owned())
        })?;
        match kind.as_ref() {
            "join" => {
                let room = frame.room.ok_or_else(|| {
                    ParseError::new(ErrorCode::BadMessage, "`join` needs a `room`".to_owned())
                })?;
                let room = RoomName::parse(&room)
                    .map_err(|error| ParseError::new(ErrorCode::BadRoom, error.to_string()))?;
                // An unknown or malformed token is not an error: the client joins as new.
                let resume = frame.resume.as_deref().and_then(ResumeToken::parse);
                Ok(ClientMessage::Join { room, resume })
            }
            "leave" => Ok(ClientMessage::Leave),
            "message" => {
                let data = frame.data.ok_or_else(|| {
                    ParseError::new(ErrorCode::BadMessage, "`message` needs `data`".to_owned())
                })?;
                Ok(ClientMessage::Message {
                    data: data.to_owned(),
                })
            }
            "ping" => Ok(ClientMessage::Ping),
            "report" => CallReport::parse(text)
                .map(ClientMessage::Report)
                .map_err(|reason| ParseError::new(ErrorCode::BadReport, reason)),
            other => Err(ParseError::new(
                ErrorCode::UnknownType,
                format!("unknown message type `{}`", truncate(other, 32)),
            )),
        }
    }
}

/// The envelope of a client frame. Unknown fields are ignored so clients can
/// add their own; known fields must have the right type.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "string_field")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "string_field")]
    room: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "optional_string_field")]
    resume: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

fn string_field<'de, D>(deserializer: D) -> Result<Option<std::borrow::Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: &'de RawValue = Deserialize::deserialize(deserializer)?;
    raw_string(raw).map(Some).map_err(D::Error::custom)
}

fn optional_string_field<'de, D>(
    deserializer: D,
) -> Result<Option<std::borrow::Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: &'de RawValue = Deserialize::deserialize(deserializer)?;
    if raw.get() == "null" {
        return Ok(None);
    }
    raw_string(raw).map(Some).map_err(D::Error::custom)
}

fn raw_string(raw: &RawValue) -> Result<std::borrow::Cow<'_, str>, String> {
    serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get())
        .map_err(|_| format!("expected a string, found `{}`", truncate(raw.get(), 32)))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => text.get(..index).unwrap_or(text),
        None => text,
    }
}

/// A client message that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
}

impl ParseError {
    fn new(code: ErrorCode, message: String) -> Self {
        Self { code, message }
    }

    /// A frame that is not JSON (`bad_json`), or JSON of the wrong shape (`bad_message`).
    fn from_json(error: serde_json::Error) -> Self {
        if error.is_data() {
            Self::new(ErrorCode::BadMessage, error.to_string())
        } else {
            Self::new(ErrorCode::BadJson, format!("invalid JSON: {error}"))
        }
    }
}

/// The `code` of an `error` message. Stable: clients may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// Valid JSON, but not a message: not an object, no `type`, a missing or wrongly typed field.
    BadMessage,
    /// `type` names no message of the protocol.
    UnknownType,
    /// The room name breaks the rules.
    BadRoom,
    /// A binary frame; the protocol uses text frames only.
    BinaryFrame,
    /// `leave` or `message` from a connection that is in no room.
    NotInRoom,
    /// `join` of a second room without leaving the first.
    AlreadyInRoom,
    /// `message` while alone in the room.
    NoPeer,
    /// The server holds as many rooms as it may.
    TooManyRooms,
    /// Messages arrive faster than the limit.
    RateLimited,
    /// A call report breaks a rule (a field unknown, a number out of bounds, too big).
    BadReport,
    /// The server cannot reach what it needs to seat you (its room store, in a
    /// cluster of nodes); try again in a moment.
    Unavailable,
}

impl ErrorCode {
    /// The code named `text`, if the protocol has it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }

    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::BadRoom,
        ErrorCode::BinaryFrame,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::NoPeer,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::BadReport,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyInRoom => "already_in_room",
            ErrorCode::NoPeer => "no_peer",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadReport => "bad_report",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// WebSocket close codes the server uses or honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1012: the server is restarting (draining): reconnect, with the resume
    /// token, in a moment (to this server's successor, or another node).
    Restarting,
    /// 1008: the client broke a rule (rate limit) and kept on.
    PolicyViolation,
    /// 1009: a frame over the size limit.
    MessageTooBig,
    /// 4001: the seat was resumed on another connection.
    Replaced,
    /// 4002: nothing heard from the connection within the silence timeout.
    SilenceTimeout,
    /// 4003: the client reads too slowly; its outbound queue is full.
    SlowReader,
    /// 4004: the connection sent no `join` within the join deadline.
    JoinTimeout,
}

impl CloseCode {
    /// The close code a client sends to say "I will come back with my resume token".
    pub const CLIENT_RECONNECTING: u16 = 4000;

    pub fn number(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::Restarting => 1012,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::Replaced => 4001,
            CloseCode::SilenceTimeout => 4002,
            CloseCode::SlowReader => 4003,
            CloseCode::JoinTimeout => 4004,
        }
    }
}

/// A message from the server to one client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        room: RoomName,
        id: PeerId,
        peers: Vec<PeerId>,
        #[serde(rename = "iceServers")]
        ice_servers: Arc<[IceServer]>,
        resume: ResumeToken,
    },
    OtherJoined {
        id: PeerId,
    },
    Full {
        room: RoomName,
    },
    Leaved {
        room: RoomName,
    },
    Bye {
        id: PeerId,
    },
    Message {
        from: PeerId,
        data: Box<RawValue>,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// The envelope of a server frame, as a client reads it. Unknown fields are
/// ignored (the server may add some); known ones must have the right type.
#[derive(Deserialize)]
struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    peers: Option<Vec<String>>,
    #[serde(default, rename = "iceServers")]
    ice_servers: Option<Vec<IceServer>>,
    #[serde(default, borrow)]
    resume: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    from: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    message: Option<String>,
}

impl ServerMessage {
    /// Parses one text frame (a client's side). A type this version does not
    /// know is an [`ErrorCode::UnknownType`] error, which clients ignore.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let bad = |what: &str| ParseError::new(ErrorCode::BadMessage, what.to_owned());
        let frame: ServerFrame<'_> = serde_json::from_str(text).map_err(ParseError::from_json)?;
        let room = || {
            let room = frame.room.as_deref().ok_or_else(|| bad("missing `room`"))?;
            RoomName::parse(room)
                .map_err(|error| ParseError::new(ErrorCode::BadRoom, error.to_string()))
        };
        let peer = |field: Option<&str>, name: &str| {
            field
                .and_then(PeerId::parse)
                .ok_or_else(|| bad(&format!("`{name}` is not a member id")))
        };
        let message = match frame.kind.as_ref() {
            "joined" => ServerMessage::Joined {
                room: room()?,
                id: peer(frame.id.as_deref(), "id")?,
                peers: frame
                    .peers
                    .iter()
                    .flatten()
                    .map(|id| peer(Some(id), "peers"))
                    .collect::<Result<_, _>>()?,
                ice_servers: Arc::from(frame.ice_servers.clone().unwrap_or_default()),
                resume: frame
                    .resume
                    .as_deref()
                    .and_then(ResumeToken::parse)
                    .ok_or_else(|| bad("`resume` is not a resume token"))?,
            },
            "other_joined" => ServerMessage::OtherJoined {
                id: peer(frame.id.as_deref(), "id")?,
            },
            "full" => ServerMessage::Full { room: room()? },
            "leaved" => ServerMessage::Leaved { room: room()? },
            "bye" => ServerMessage::Bye {
                id: peer(frame.id.as_deref(), "id")?,
            },
            "message" => ServerMessage::Message {
                from: peer(frame.from.as_deref(), "from")?,
                data: frame.data.ok_or_else(|| bad("missing `data`"))?.to_owned(),
            },
            "pong" => ServerMessage::Pong,
            "error" => ServerMessage::Error {
                code: frame
                    .code
                    .as_deref()
                    .and_then(ErrorCode::parse)
                    .ok_or_else(|| bad("`code` is not an error code of the protocol"))?,
                message: frame.message.clone().unwrap_or_default(),
            },
            other => {
                return Err(ParseError::new(
                    ErrorCode::UnknownType,
                    format!("unknown message type `{}`", truncate(other, 32)),
                ));
            }
        };
        Ok(message)
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every field is a string, number,
        // list or already-valid raw JSON. Fall back to a valid frame regardless.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.to_owned()
        })
    }

    /// Approximate size in bytes, for bounding queues.
    pub fn weight(&self) -> usize {
        match self {
            ServerMessage::Message { data, .. } => 48 + data.get().len(),
            ServerMessage::Error { message, .. } => 48 + message.len(),
            _ => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        match ClientMessage::parse(text) {
            Ok(message) => unreachable!("expected an error, parsed {message:?}"),
            Err(error) => error.code,
        }
    }

    #[test]
    fn room_names_follow_the_rules() {
        assert!(RoomName::parse("abc-DEF_123").is_ok());
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
        assert_eq!(RoomName::parse(""), Err(RoomNameError::Empty));
        assert_eq!(
            RoomName::parse(&"a".repeat(65)),
            Err(RoomNameError::TooLong)
        );
        assert_eq!(RoomName::parse("a b"), Err(RoomNameError::BadCharacter));
        assert_eq!(RoomName::parse("é"), Err(RoomNameError::BadCharacter));
        assert_eq!(RoomName::parse("../x"), Err(RoomNameError::BadCharacter));
    }

    #[test]
    fn parses_every_client_message() {
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"r1"}"#),
            Ok(ClientMessage::Join { resume: None, .. })
        ));
        let token = "0123456789abcdef0123456789abcdef";
        match ClientMessage::parse(&format!(
            r#"{{"type":"join","room":"r1","resume":"{token}"}}"#
        )) {
            Ok(ClientMessage::Join {
                resume: Some(resume),
                room,
            }) => {
                assert_eq!(resume.to_string(), token);
                assert_eq!(room.as_str(), "r1");
            }
            other => unreachable!("{other:?}"),
        }
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ping","extra":[1,2]}"#),
            Ok(ClientMessage::Ping)
        ));
        match ClientMessage::parse(
            r#"{"type":"message","data":{"sdp":"v=0\r\n","n":[1,2.5,null]}}"#,
        ) {
            Ok(ClientMessage::Message { data }) => {
                assert_eq!(data.get(), r#"{"sdp":"v=0\r\n","n":[1,2.5,null]}"#)
            }
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_frames_with_the_right_code() {
        assert_eq!(code_of("not json"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"type":"join""#), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadMessage);
        assert_eq!(code_of("42"), ErrorCode::BadMessage);
        assert_eq!(code_of("{}"), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":7}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"type":"join"}"#), ErrorCode::BadMessage);
        assert_eq!(
            code_of(r#"{"type":"join","room":5}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code_of(r#"{"type":"join","room":"a b"}"#),
            ErrorCode::BadRoom
        );
        assert_eq!(code_of(r#"{"type":"join","room":""}"#), ErrorCode::BadRoom);
        assert_eq!(
            code_of(r#"{"type":"join","room":"r","resume":12}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(code_of(r#"{"type":"message"}"#), ErrorCode::BadMessage);
        assert_eq!(
            code_of(r#"{"type":"join","type":"join","room":"r"}"#),
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn a_malformed_resume_token_is_no_token() {
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"r","resume":"nope"}"#),
            Ok(ClientMessage::Join { resume: None, .. })
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"r","resume":null}"#),
            Ok(ClientMessage::Join { resume: None, .. })
        ));
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let room = RoomName::parse("r").ok();
        let Some(room) = room else {
            unreachable!("valid name")
        };
        let joined = ServerMessage::Joined {
            room,
            id: PeerId(0xab),
            peers: vec![PeerId(1)],
            ice_servers: Arc::from(vec![IceServer {
                urls: vec!["stun:example.org:3478".to_owned()],
                username: None,
                credential: None,
            }]),
            resume: ResumeToken(0xff),
        };
        assert_eq!(
            joined.to_json(),
            r#"{"type":"joined","room":"r","id":"00000000000000ab","peers":["0000000000000001"],"iceServers":[{"urls":["stun:example.org:3478"]}],"resume":"000000000000000000000000000000ff"}"#
        );
        assert_eq!(
            ServerMessage::OtherJoined { id: PeerId(2) }.to_json(),
            r#"{"type":"other_joined","id":"0000000000000002"}"#
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerMessage::Error {
                code: ErrorCode::NoPeer,
                message: "alone".to_owned()
            }
            .to_json(),
            r#"{"type":"error","code":"no_peer","message":"alone"}"#
        );
    }
}
