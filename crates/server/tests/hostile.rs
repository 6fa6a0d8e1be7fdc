//! Hostile input over real sockets: random bytes and random JSON from one
//! client must get an answer or a clean close, never a crash or a hang, and
//! must never disturb a call in another room.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Event, TestServer, pair};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Arbitrary JSON values, biased towards things that look like our messages.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("join"),
            Just("leave"),
            Just("message"),
            Just("ping"),
            Just("joined"),
            Just("bye")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("room".to_owned()),
                    Just("data".to_owned()),
                    Just("resume".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        json_value().prop_map(|value| Frame::Text(value.to_string())),
        ".{0,200}".prop_map(Frame::Text),
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|bytes| Frame::Text(String::from_utf8_lossy(&bytes).into_owned())),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Frame::Binary),
    ]
}

#[test]
fn random_frames_get_answers_or_clean_closes_and_other_rooms_are_unaffected() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::with(|args| {
        // Many cases run over one server from one address.
        args.options.max_connections_per_ip = Some(1000);
        args.options.rate_limit_burst = Some(1000);
    }));
    let (calm_a, calm_b, _, _) = runtime.block_on(pair(&server, "calm"));
    let calm = tokio::sync::Mutex::new((calm_a, calm_b));

    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(frames in prop::collection::vec(frame(), 1..12))| {
        runtime.block_on(async {
            let mut attacker = server.connect().await;
            attacker.join("storm").await;
            for frame in &frames {
                match frame {
                    Frame::Text(text) => attacker.send(text).await,
                    Frame::Binary(bytes) => attacker.send_binary(bytes.clone()).await,
                }
                // Every frame gets an answer or a clean close: the attacker is
                // alone in its room, so even a valid `message` is answered (`no_peer`).
                match attacker.next_event(Duration::from_millis(300)).await {
                    Some(Event::Json(answer)) => {
                        let kind = answer["type"].as_str().unwrap_or_default().to_owned();
                        prop_assert!(
                            ["error", "joined", "full", "leaved", "pong", "bye"].contains(&kind.as_str()),
                            "unexpected answer {answer}"
                        );
                        if kind == "error" {
                            prop_assert!(answer["code"].is_string() && answer["message"].is_string());
                        }
                    }
                    Some(Event::Closed(code, _)) => {
                        prop_assert!(matches!(code, Some(1007..=1009)), "close {code:?}");
                        break;
                    }
                    Some(Event::Ended) => prop_assert!(false, "the server dropped the connection"),
                    None => prop_assert!(false, "no answer to {frame:?}"),
                }
            }
            attacker.close(1000).await;
            // The calm room still works, in both directions.
            let mut calm = calm.lock().await;
            let (calm_a, calm_b) = &mut *calm;
            calm_a.send_json(json!({"type":"message","data":"still here"})).await;
            prop_assert_eq!(calm_b.recv().await["data"].clone(), json!("still here"));
            calm_b.send(r#"{"type":"ping"}"#).await;
            prop_assert_eq!(calm_b.recv().await, json!({"type":"pong"}));
            Ok(())
        })?;
    });
    let health = runtime.block_on(async {
        server
            .http()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(health, 200);
}
