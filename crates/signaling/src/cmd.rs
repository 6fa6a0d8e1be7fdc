//! The `cmd` dialect: clients of the classic course variant that speak
//! plain-WebSocket JSON with a `cmd` field, translated at the edge onto the
//! one hub, so they meet Duet's own clients in the same rooms.
//!
//! Client → server: `{"cmd":"join","roomId":R,"uid":U}`,
//! `{"cmd":"leave","roomId":R,"uid":U}`, and
//! `{"cmd":"offer"|"answer"|"candidate","roomId":R,"uid":U,"remoteUid":V,"msg":S}`
//! where `S` is a JSON document encoded as a string, relayed byte-identical.
//! Server → client: `{"cmd":"resp-join","remoteUid":V}` (to a joiner that finds
//! V there), `{"cmd":"new-peer","remoteUid":U}`, `{"cmd":"peer-leave","remoteUid":U}`,
//! the relayed offer/answer/candidate, and `{"cmd":"error","msg":…}` /
//! `{"cmd":"full","roomId":R,"msg":…}` for refusals.
//!
//! The uids are the clients' own choice and trusted for nothing: a client's
//! `uid` must be the one it joined with, and `remoteUid` its room mate's. A
//! member that speaks Duet's own protocol is known to `cmd` clients by its
//! server id. Owns the translation only: no sockets, no state beyond one
//! client's uid.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::signal::{self, Form};
use crate::wire::{ClientMessage, PeerId, RoomName, ServerMessage};

/// Longest accepted `uid`.
pub const UID_MAX_LEN: usize = 64;

/// True when `text` (a connection's first frame) is in the `cmd` dialect.
#[must_use]
pub fn is_cmd(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| value.get("cmd").map(Value::is_string))
        .unwrap_or(false)
}

/// A `cmd` client: the uid it joined with.
#[derive(Debug, Clone, Default)]
pub struct CmdClient {
    uid: Option<String>,
}

/// What the translation needs to know of the hub: where the client sits.
#[derive(Debug, Clone, Default)]
pub struct Seat {
    /// The client's room, when it has joined one.
    pub room: Option<RoomName>,
    /// The uid of its room mate, when there is one.
    pub mate_uid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    cmd: String,
    #[serde(rename = "roomId")]
    room_id: Option<String>,
    uid: Option<String>,
    #[serde(rename = "remoteUid")]
    remote_uid: Option<String>,
    msg: Option<String>,
}

impl CmdClient {
    /// The uid this client joined with.
    #[must_use]
    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// Translates one frame into a hub message, or says in one sentence why not.
    pub fn translate_in(&mut self, text: &str, seat: &Seat) -> Result<ClientMessage, String> {
        let frame: Frame =
            serde_json::from_str(text).map_err(|error| format!("not a cmd message: {error}"))?;
        let uid = frame.uid.as_deref().unwrap_or_default();
        match frame.cmd.as_str() {
            "join" => {
                let room = frame.room_id.as_deref().unwrap_or_default();
                let room = RoomName::parse(room).map_err(|error| format!("roomId: {error}"))?;
                if uid.is_empty() || uid.len() > UID_MAX_LEN {
                    return Err(format!("uid must be 1 to {UID_MAX_LEN} characters"));
                }
                if self.uid.as_deref().is_some_and(|own| own != uid) {
                    return Err("this connection already joined with another uid".to_owned());
                }
                self.uid = Some(uid.to_owned());
                Ok(ClientMessage::Join { room, resume: None })
            }
            "leave" => {
                self.check_sender(uid)?;
                Ok(ClientMessage::Leave)
            }
            "offer" | "answer" | "candidate" => {
                self.check_sender(uid)?;
                if seat.room.is_none() {
                    return Err("join a room first".to_owned());
                }
                let remote = frame.remote_uid.as_deref().unwrap_or_default();
                if seat.mate_uid.as_deref() != Some(remote) {
                    return Err("remoteUid is not in your room".to_owned());
                }
                let msg = frame.msg.ok_or("msg is missing")?;
                let data = json!({ "cmd": frame.cmd, "msg": msg }).to_string();
                let data = RawValue::from_string(data).map_err(|error| error.to_string())?;
                Ok(ClientMessage::Message { data })
            }
            other => Err(format!("unknown cmd `{other}`")),
        }
    }

    fn check_sender(&self, uid: &str) -> Result<(), String> {
        match self.uid.as_deref() {
            None => Err("join a room first".to_owned()),
            Some(own) if own == uid => Ok(()),
            Some(_) => Err("uid is not yours".to_owned()),
        }
    }

    /// What this client is sent for a hub message, if anything. `uid_of`
    /// names a member (its uid if it speaks `cmd`, its server id otherwise).
    #[must_use]
    pub fn translate_out(
        &self,
        message: &ServerMessage,
        room: Option<&RoomName>,
        uid_of: &dyn Fn(PeerId) -> String,
    ) -> Option<String> {
        let value = match message {
            ServerMessage::Joined { peers, .. } => {
                let mate = peers.first()?;
                json!({ "cmd": "resp-join", "remoteUid": uid_of(*mate) })
            }
            ServerMessage::OtherJoined { id } => {
                json!({ "cmd": "new-peer", "remoteUid": uid_of(*id) })
            }
            ServerMessage::Bye { id } => json!({ "cmd": "peer-leave", "remoteUid": uid_of(*id) }),
            ServerMessage::Full { room } => json!({
                "cmd": "full",
                "roomId": room,
                "msg": format!("room {room} is full: two people are in it already"),
            }),
            ServerMessage::Error { code, message } => {
                json!({ "cmd": "error", "code": code, "msg": message })
            }
            ServerMessage::Message { from, data } => {
                let (cmd, msg) = envelope(data.get())?;
                json!({
                    "cmd": cmd,
                    "roomId": room,
                    "uid": uid_of(*from),
                    "remoteUid": self.uid,
                    "msg": msg,
                })
            }
            ServerMessage::Leaved { .. } | ServerMessage::Pong => return None,
        };
        Some(value.to_string())
    }
}

/// A relayed message as a `cmd` client reads it: its `cmd` and `msg`, after
/// descriptions and candidates of other dialects are put in this one's form.
fn envelope(data: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(&signal::to_form(data, Form::Cmd)).ok()?;
    let cmd = value.get("cmd").and_then(Value::as_str)?;
    let msg = value.get("msg").and_then(Value::as_str)?;
    Some((cmd.to_owned(), msg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(client: &mut CmdClient, uid: &str) {
        let join = format!(r#"{{"cmd":"join","roomId":"r1","uid":"{uid}"}}"#);
        assert!(matches!(
            client.translate_in(&join, &Seat::default()),
            Ok(ClientMessage::Join { .. })
        ));
    }

    fn seated(mate: &str) -> Seat {
        Seat {
            room: RoomName::parse("r1").ok(),
            mate_uid: Some(mate.to_owned()),
        }
    }

    #[test]
    fn the_dialect_is_told_by_the_first_frame() {
        assert!(is_cmd(r#"{"cmd":"join","roomId":"a","uid":"u"}"#));
        assert!(!is_cmd(r#"{"type":"join","room":"a"}"#));
        assert!(!is_cmd("not json"));
    }

    #[test]
    fn a_relayed_msg_keeps_its_bytes_and_names_the_sender() {
        let mut alice = CmdClient::default();
        joined(&mut alice, "alice");
        let msg = r#"{\"type\":\"offer\",\"sdp\":\"v=0\\r\\n\"}"#;
        let frame = format!(
            r#"{{"cmd":"offer","roomId":"r1","uid":"alice","remoteUid":"bob","msg":"{msg}"}}"#
        );
        let Ok(ClientMessage::Message { data }) = alice.translate_in(&frame, &seated("bob")) else {
            panic!("not relayed");
        };
        let mut bob = CmdClient::default();
        joined(&mut bob, "bob");
        let out = bob
            .translate_out(
                &ServerMessage::Message {
                    from: PeerId(7),
                    data,
                },
                RoomName::parse("r1").ok().as_ref(),
                &|_| "alice".to_owned(),
            )
            .unwrap_or_default();
        let value: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(value["uid"], "alice");
        assert_eq!(value["remoteUid"], "bob");
        let original: Value = serde_json::from_str(&frame).unwrap_or_default();
        assert_eq!(value["msg"], original["msg"], "byte-identical");
    }

    #[test]
    fn spoofed_uids_and_strangers_are_refused() {
        let mut alice = CmdClient::default();
        let before = r#"{"cmd":"offer","roomId":"r1","uid":"alice","remoteUid":"bob","msg":"{}"}"#;
        assert!(
            alice.translate_in(before, &Seat::default()).is_err(),
            "before join"
        );
        joined(&mut alice, "alice");
        let spoofed =
            r#"{"cmd":"offer","roomId":"r1","uid":"mallory","remoteUid":"bob","msg":"{}"}"#;
        assert_eq!(
            alice.translate_in(spoofed, &seated("bob")).err().as_deref(),
            Some("uid is not yours")
        );
        let stranger =
            r#"{"cmd":"offer","roomId":"r1","uid":"alice","remoteUid":"carol","msg":"{}"}"#;
        assert_eq!(
            alice
                .translate_in(stranger, &seated("bob"))
                .err()
                .as_deref(),
            Some("remoteUid is not in your room")
        );
        assert!(
            alice
                .translate_in(r#"{"cmd":"dance"}"#, &seated("bob"))
                .is_err()
        );
        assert!(
            alice
                .translate_in(
                    r#"{"cmd":"join","roomId":"r1","uid":"other"}"#,
                    &Seat::default()
                )
                .is_err()
        );
    }

    #[test]
    fn other_dialects_reach_a_cmd_client_as_offer_answer_candidate() {
        let sdp = r#"{"kind":"sdp","description":{"type":"answer","sdp":"v=0"}}"#;
        let (cmd, msg) = envelope(sdp).unwrap_or_default();
        assert_eq!(cmd, "answer");
        assert_eq!(
            serde_json::from_str::<Value>(&msg).ok(),
            Some(json!({"type": "answer", "sdp": "v=0"}))
        );
        let ice = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0"}}"#;
        assert_eq!(
            envelope(ice).map(|(cmd, _)| cmd).as_deref(),
            Some("candidate")
        );
        assert_eq!(envelope(r#"{"kind":"chat","text":"hi"}"#), None);
    }
}
