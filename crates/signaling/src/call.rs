//! The call inside `message.data`: what Duet's web client, `duet-peer` and
//! any native client following docs/signaling-protocol.md exchange through the
//! server (and as JSON text on the data channel):
//!
//! ```text
//! { kind: 'sdp',  description: { type: 'offer' | 'answer', sdp } }
//! { kind: 'ice',  candidate: { candidate, sdpMid, sdpMLineIndex, usernameFragment } }
//! { kind: 'chat', text }
//! ```
//!
//! The server relays `data` untouched and never reads these (except to put
//! descriptions and candidates in another dialect's form, `signal.rs`); they
//! are the contract between clients. Unknown kinds parse to `Other`, as the
//! protocol promises; known ones must have the documented fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Parses relayed `data` (see [`PeerMessage::from_value`]).
    pub fn from_raw(data: &serde_json::value::RawValue) -> Result<Self, PeerMessageError> {
        let value: Value = serde_json::from_str(data.get()).map_err(|err| PeerMessageError {
            kind: "untyped".into(),
            reason: err.to_string(),
        })?;
        Self::from_value(&value)
    }

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
