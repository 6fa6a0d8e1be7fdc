//! What travels over the signaling WebSocket, seen from a client: the server's
//! messages (docs/signaling-protocol.md), ours, and the application messages
//! the web client puts inside `message.data` (web/js/call.js, web/js/room.js):
//!
//! ```text
//! { kind: 'sdp',  description: { type: 'offer' | 'answer', sdp } }
//! { kind: 'ice',  candidate: { candidate, sdpMid, sdpMLineIndex, usernameFragment } }
//! { kind: 'chat', text }          (also on the data channel, as JSON text)
//! ```
//!
//! Unknown message types and kinds are tolerated (they parse to `Other`), as
//! the protocol promises; known ones must have the documented fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message from the signaling server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        room: String,
        id: String,
        #[serde(default)]
        peers: Vec<String>,
        #[serde(rename = "iceServers", default)]
        ice_servers: Vec<IceServer>,
        #[serde(default)]
        resume: Option<String>,
    },
    OtherJoined {
        id: String,
    },
    Full {
        room: String,
    },
    Leaved {
        room: String,
    },
    Bye {
        id: String,
    },
    Message {
        from: String,
        data: Value,
    },
    Pong,
    Error {
        code: String,
        #[serde(default)]
        message: String,
    },
    #[serde(other)]
    Other,
}

/// One entry of `joined.iceServers`, as `RTCPeerConnection` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Urls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

/// `urls` is a string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    #[must_use]
    pub fn to_vec(&self) -> Vec<&str> {
        match self {
            Self::One(url) => vec![url.as_str()],
            Self::Many(urls) => urls.iter().map(String::as_str).collect(),
        }
    }
}

/// A message to the signaling server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join { room: String },
    Leave,
    Message { data: PeerMessage },
    Ping,
}

/// An application message between the two peers (signaling `data`, or JSON
/// text on the data channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PeerMessage {
    Sdp {
        description: Description,
    },
    Ice {
        candidate: IceCandidate,
    },
    Chat {
        text: String,
    },
    /// Anything else (media state, codec choice, ring mode): not for us.
    #[serde(other)]
    Other,
}

/// An `RTCSessionDescriptionInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    #[serde(rename = "type")]
    pub kind: DescriptionKind,
    #[serde(default)]
    pub sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DescriptionKind {
    Offer,
    Answer,
    Pranswer,
    Rollback,
}

/// An `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// `candidate:…` as in SDP; empty for "end of candidates".
    #[serde(default)]
    pub candidate: String,
    #[serde(rename = "sdpMid", default)]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    pub sdp_m_line_index: Option<u32>,
    #[serde(rename = "usernameFragment", default)]
    pub username_fragment: Option<String>,
}

/// Why an application message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {kind} message from the other peer: {reason}")]
pub struct PeerMessageError {
    pub kind: String,
    pub reason: String,
}

impl PeerMessage {
    /// Parses `data`; a known kind with bad fields is an error (so a garbage
    /// offer is reported, not silently ignored), an unknown kind is `Other`.
    pub fn from_value(data: &Value) -> Result<Self, PeerMessageError> {
        let kind = data
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self::deserialize(data).map_err(|err| PeerMessageError {
            kind: if kind.is_empty() {
                "untyped".into()
            } else {
                kind
            },
            reason: err.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_the_server_messages() {
        let joined: ServerMessage = serde_json::from_value(json!({
            "type": "joined", "room": "r", "id": "00000000000000aa", "peers": ["00000000000000bb"],
            "iceServers": [{"urls": "stun:h:3478"}, {"urls": ["turn:h:3478?transport=udp"], "username": "u", "credential": "p"}],
            "resume": "t", "future": 1
        }))
        .unwrap();
        let ServerMessage::Joined {
            peers, ice_servers, ..
        } = joined
        else {
            panic!("not joined")
        };
        assert_eq!(peers, ["00000000000000bb"]);
        assert_eq!(ice_servers[1].urls.to_vec(), ["turn:h:3478?transport=udp"]);
        let other: ServerMessage = serde_json::from_str(r#"{"type":"surprise"}"#).unwrap();
        assert_eq!(other, ServerMessage::Other);
    }

    #[test]
    fn writes_what_the_web_client_reads() {
        let message = ClientMessage::Message {
            data: PeerMessage::Ice {
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                    username_fragment: Some("abcd".into()),
                },
            },
        };
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            json!({"type": "message", "data": {"kind": "ice", "candidate": {
                "candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host",
                "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}})
        );
        assert_eq!(
            serde_json::to_string(&ClientMessage::Join { room: "a".into() }).unwrap(),
            r#"{"type":"join","room":"a"}"#
        );
    }

    #[test]
    fn peer_messages_known_unknown_and_broken() {
        let sdp = PeerMessage::from_value(
            &json!({"kind": "sdp", "description": {"type": "offer", "sdp": "v=0"}}),
        )
        .unwrap();
        assert!(matches!(sdp, PeerMessage::Sdp { .. }));
        let media = PeerMessage::from_value(&json!({"kind": "media", "audio": true})).unwrap();
        assert_eq!(media, PeerMessage::Other);
        let broken =
            PeerMessage::from_value(&json!({"kind": "sdp", "description": 7})).unwrap_err();
        assert_eq!(broken.kind, "sdp");
        assert!(PeerMessage::from_value(&json!("just a string")).is_err());
    }
}
