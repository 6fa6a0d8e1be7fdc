//! The call's own messages — session descriptions and ICE candidates — in the
//! form each dialect's clients write them, and the translation between forms,
//! so clients of different dialects can call each other in one room.
//!
//! The server relays `data` untouched between clients of one dialect; only
//! between dialects is a description or a candidate rewritten, and anything
//! else (chat, mute state, a dialect's own extras) is left as it is.
//!
//! | form | description | candidate |
//! |---|---|---|
//! | [`Form::Duet`] (web client, `duet-peer`) | `{"kind":"sdp","description":{"type","sdp"}}` | `{"kind":"ice","candidate":C}` |
//! | [`Form::Cmd`] | `{"cmd":"offer"\|"answer","msg":"{\"type\",\"sdp\"}"}` | `{"cmd":"candidate","msg":"C"}` |
//! | [`Form::Legacy`] (socket.io pages) | `{"type":"offer"\|"answer","sdp":S}` | `{"type":"candidate","candidate":C}` |

use std::borrow::Cow;

use serde_json::{Map, Value, json};

/// How one dialect's clients write descriptions and candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Duet's own: objects with a `kind`.
    Duet,
    /// The `cmd` dialect: the document as a JSON string in `msg`.
    Cmd,
    /// The classic socket.io pages: an `RTCSessionDescriptionInit` as is, and
    /// candidates wrapped with `type: "candidate"`.
    Legacy,
}

/// A description or a candidate, whatever its form.
#[derive(Debug, Clone, PartialEq)]
enum Signal {
    /// `{"type":"offer"|"answer","sdp":…}`.
    Description(Value),
    /// An `RTCIceCandidateInit`.
    Candidate(Value),
}

/// `data` in `form`: borrowed when it is already in that form or is no
/// description or candidate at all (relayed as it is), rewritten otherwise.
#[must_use]
pub fn to_form(data: &str, form: Form) -> Cow<'_, str> {
    match decode(data) {
        Some((from, signal)) if from != form => Cow::Owned(encode(&signal, form)),
        _ => Cow::Borrowed(data),
    }
}

/// True when `data` is a description or a candidate (in any form).
#[must_use]
pub fn is_signal(data: &str) -> bool {
    decode(data).is_some()
}

fn decode(data: &str) -> Option<(Form, Signal)> {
    let Value::Object(object) = serde_json::from_str::<Value>(data).ok()? else {
        return None;
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    if let (Some(cmd), Some(msg)) = (text("cmd"), text("msg")) {
        let document: Value = serde_json::from_str(msg).ok()?;
        let signal = match cmd {
            "offer" | "answer" => Signal::Description(description(&document)?),
            "candidate" => Signal::Candidate(document),
            _ => return None,
        };
        return Some((Form::Cmd, signal));
    }
    if let Some(kind) = text("kind") {
        let signal = match kind {
            "sdp" => Signal::Description(description(object.get("description")?)?),
            "ice" => Signal::Candidate(object.get("candidate")?.clone()),
            _ => return None,
        };
        return Some((Form::Duet, signal));
    }
    let signal = match text("type")? {
        "offer" | "answer" => Signal::Description(description(&Value::Object(object.clone()))?),
        "candidate" => Signal::Candidate(object.get("candidate")?.clone()),
        _ => return None,
    };
    Some((Form::Legacy, signal))
}

/// The `type` and `sdp` of a description (other fields dropped), if it is one.
fn description(value: &Value) -> Option<Value> {
    let kind = value.get("type").and_then(Value::as_str)?;
    let sdp = value.get("sdp").and_then(Value::as_str)?;
    (kind == "offer" || kind == "answer").then(|| json!({ "type": kind, "sdp": sdp }))
}

fn encode(signal: &Signal, form: Form) -> String {
    let value = match (form, signal) {
        (Form::Duet, Signal::Description(description)) => {
            json!({ "kind": "sdp", "description": description })
        }
        (Form::Duet, Signal::Candidate(candidate)) => {
            json!({ "kind": "ice", "candidate": candidate })
        }
        (Form::Cmd, Signal::Description(description)) => json!({
            "cmd": description.get("type").cloned().unwrap_or(Value::Null),
            "msg": description.to_string(),
        }),
        (Form::Cmd, Signal::Candidate(candidate)) => {
            json!({ "cmd": "candidate", "msg": candidate.to_string() })
        }
        (Form::Legacy, Signal::Description(description)) => description.clone(),
        (Form::Legacy, Signal::Candidate(candidate)) => {
            let mut object = Map::new();
            object.insert("type".to_owned(), json!("candidate"));
            object.insert("candidate".to_owned(), candidate.clone());
            Value::Object(object)
        }
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(left: &str, right: &str) {
        assert_eq!(
            serde_json::from_str::<Value>(left).ok(),
            serde_json::from_str::<Value>(right).ok(),
            "{left} vs {right}"
        );
    }

    const OFFER_DUET: &str = r#"{"kind":"sdp","description":{"type":"offer","sdp":"v=0\r\n"}}"#;
    const OFFER_CMD: &str = r#"{"cmd":"offer","msg":"{\"sdp\":\"v=0\\r\\n\",\"type\":\"offer\"}"}"#;
    const OFFER_LEGACY: &str = r#"{"type":"offer","sdp":"v=0\r\n"}"#;
    const ICE_DUET: &str = r#"{"kind":"ice","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0"}}"#;
    const ICE_LEGACY: &str = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0"}}"#;

    #[test]
    fn every_form_reaches_every_other() {
        for from in [OFFER_DUET, OFFER_CMD, OFFER_LEGACY] {
            same(&to_form(from, Form::Duet), OFFER_DUET);
            same(&to_form(from, Form::Legacy), OFFER_LEGACY);
            same(&to_form(from, Form::Cmd), OFFER_CMD);
        }
        same(&to_form(ICE_DUET, Form::Legacy), ICE_LEGACY);
        same(&to_form(ICE_LEGACY, Form::Duet), ICE_DUET);
        let cmd = to_form(ICE_LEGACY, Form::Cmd);
        same(&to_form(&cmd, Form::Duet), ICE_DUET);
    }

    #[test]
    fn the_own_form_and_other_messages_pass_byte_identical() {
        for (data, form) in [
            (OFFER_DUET, Form::Duet),
            (OFFER_CMD, Form::Cmd),
            (OFFER_LEGACY, Form::Legacy),
            (r#"{"kind":"chat","text":"hi"}"#, Form::Legacy),
            (r#"{"type":"bye"}"#, Form::Duet),
            ("[1,2]", Form::Cmd),
            ("not json", Form::Duet),
        ] {
            assert!(matches!(to_form(data, form), Cow::Borrowed(same) if same == data));
        }
    }

    #[test]
    fn half_signals_are_not_signals() {
        assert!(!is_signal(r#"{"kind":"sdp"}"#));
        assert!(!is_signal(r#"{"type":"offer"}"#));
        assert!(!is_signal(r#"{"type":"pranswer","sdp":"v=0"}"#));
        assert!(!is_signal(r#"{"cmd":"offer","msg":"not json"}"#));
        assert!(!is_signal(r#"{"cmd":"candidate"}"#));
        assert!(is_signal(OFFER_CMD));
    }
}
