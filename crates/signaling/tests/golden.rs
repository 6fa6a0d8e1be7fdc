//! The golden examples (`crates/signaling/golden/`, see its README) against the
//! one definition of the protocol: each message parses on the side that
//! receives it and is written back identically by the side that sends it.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use duet_signaling::call::PeerMessage;
use duet_signaling::signal::{Form, to_form};
use duet_signaling::{ClientMessage, ServerMessage};
use serde_json::Value;

fn golden(folder: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path, text.trim_end().to_owned())
        })
        .collect()
}

/// Every number as a float: JSON does not tell `412` from `412.0`, and
/// neither do the clients (JavaScript writes the first).
fn normal(value: Value) -> Value {
    match value {
        Value::Number(number) => number
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(normal).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, normal(value)))
                .collect(),
        ),
        other => other,
    }
}

fn raw(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

/// `text` as JSON, numbers normalized.
fn json(text: &str) -> Value {
    normal(raw(text))
}

#[test]
fn the_server_reads_and_clients_write_every_client_message() {
    let mut types = BTreeSet::new();
    for (path, text) in golden("client") {
        let message = ClientMessage::parse(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        types.insert(match &message {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave => "leave",
            ClientMessage::Message { .. } => "message",
            ClientMessage::Ping => "ping",
            ClientMessage::Report(_) => "report",
        });
        assert_eq!(
            json(&message.to_json()),
            json(&text),
            "{} written back",
            path.display()
        );
    }
    assert_eq!(types.len(), 5, "every client message has an example");
}

#[test]
fn clients_read_and_the_server_writes_every_server_message() {
    let mut types = BTreeSet::new();
    for (path, text) in golden("server") {
        let message = ServerMessage::parse(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        types.insert(match &message {
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::OtherJoined { .. } => "other_joined",
            ServerMessage::Full { .. } => "full",
            ServerMessage::Leaved { .. } => "leaved",
            ServerMessage::Bye { .. } => "bye",
            ServerMessage::Message { .. } => "message",
            ServerMessage::Pong => "pong",
            ServerMessage::Error { .. } => "error",
        });
        assert_eq!(
            json(&message.to_json()),
            json(&text),
            "{} written back",
            path.display()
        );
    }
    assert_eq!(types.len(), 8, "every server message has an example");
}

#[test]
fn the_call_messages_are_the_peers_own() {
    for (path, text) in golden("call") {
        let value = raw(&text);
        let message = PeerMessage::from_value(&value)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_ne!(message, PeerMessage::Other, "{}", path.display());
        let written = serde_json::to_value(&message).unwrap_or_default();
        assert_eq!(
            normal(written),
            normal(value),
            "{} written back",
            path.display()
        );
    }
    // What a client sends in `message.data` is a call message.
    for name in ["message-sdp.json", "message-ice.json"] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("golden/client")
                .join(name),
        )
        .unwrap_or_default();
        let data = &raw(&text)["data"];
        assert!(
            !matches!(
                PeerMessage::from_value(data),
                Ok(PeerMessage::Other) | Err(_)
            ),
            "{name}"
        );
    }
}

/// `msg` of the `cmd` form is a JSON document in a string: compared as JSON.
fn comparable(value: &Value) -> Value {
    let mut value = normal(value.clone());
    if let Some(msg) = value.get("msg").and_then(Value::as_str) {
        value["msg"] = json(msg);
    }
    value
}

#[test]
fn every_form_of_a_signal_turns_into_every_other() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/forms.json"))
            .unwrap_or_default();
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    assert!(rows.len() >= 3);
    let forms = [
        ("duet", Form::Duet),
        ("cmd", Form::Cmd),
        ("legacy", Form::Legacy),
    ];
    for row in rows {
        for (from, _) in forms {
            for (to, form) in forms {
                let source = row[from].to_string();
                let turned = json(&to_form(&source, form));
                assert_eq!(
                    comparable(&turned),
                    comparable(&row[to]),
                    "{from} → {to}: {source}"
                );
            }
        }
    }
}
