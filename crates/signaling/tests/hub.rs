//! Deterministic tests of the hub with simulated time: no sockets, no sleeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use duet_signaling::{
    CloseCode, Config, ConnectionId, Disconnect, Hub, Output, RateLimit, ServerMessage,
};
use serde_json::Value;

/// A hub, a fake clock and helpers to read what it sent.
struct Harness {
    hub: Hub,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        Self {
            hub: Hub::new(config, [7; 32]),
            now: Instant::now(),
        }
    }

    fn connect(&mut self, n: u64) -> ConnectionId {
        let connection = ConnectionId(n);
        self.hub.handle_connect(connection, self.now);
        connection
    }

    fn text(&mut self, connection: ConnectionId, text: &str) {
        self.hub.handle_text(connection, text, self.now);
    }

    fn join(&mut self, connection: ConnectionId, room: &str) -> Value {
        self.text(connection, &format!(r#"{{"type":"join","room":"{room}"}}"#));
        let sent = self.drain();
        sent.into_iter()
            .find(|(to, message)| *to == connection && message["type"] != "other_joined")
            .map(|(_, message)| message)
            .unwrap_or(Value::Null)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.hub.handle_timeout(self.now);
    }

    /// Every output so far, as (connection, JSON); closes appear as `{"close": code}`.
    fn drain(&mut self) -> Vec<(ConnectionId, Value)> {
        let mut sent = Vec::new();
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Send { to, message } => {
                    let json = serde_json::from_str(&message.to_json()).unwrap_or(Value::Null);
                    sent.push((to, json));
                }
                Output::Close {
                    connection, code, ..
                } => sent.push((connection, serde_json::json!({ "close": code.number() }))),
                Output::Report { connection, report } => {
                    sent.push((connection, serde_json::json!({ "report": report })));
                }
            }
        }
        sent
    }

    fn sent_to(&mut self, connection: ConnectionId) -> Vec<Value> {
        self.drain()
            .into_iter()
            .filter(|(to, _)| *to == connection)
            .map(|(_, message)| message)
            .collect()
    }
}

fn types(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|message| {
            message["type"]
                .as_str()
                .or_else(|| message.get("close").map(|_| "close"))
                .unwrap_or("?")
        })
        .collect()
}

#[test]
fn two_join_and_the_third_is_told_full() {
    let mut h = Harness::new();
    let (a, b, c) = (h.connect(1), h.connect(2), h.connect(3));

    let joined_a = h.join(a, "room1");
    assert_eq!(joined_a["type"], "joined");
    assert_eq!(joined_a["room"], "room1");
    assert_eq!(joined_a["peers"], serde_json::json!([]));
    assert_eq!(joined_a["resume"].as_str().map(str::len), Some(32));
    assert_eq!(joined_a["id"].as_str().map(str::len), Some(16));

    h.text(b, r#"{"type":"join","room":"room1"}"#);
    let sent = h.drain();
    let to_b: Vec<_> = sent.iter().filter(|(to, _)| *to == b).collect();
    let to_a: Vec<_> = sent.iter().filter(|(to, _)| *to == a).collect();
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].1["type"], "joined");
    assert_eq!(to_b[0].1["peers"], serde_json::json!([joined_a["id"]]));
    assert_ne!(to_b[0].1["id"], joined_a["id"]);
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0].1["type"], "other_joined");
    assert_eq!(to_a[0].1["id"], to_b[0].1["id"]);

    let full = h.join(c, "room1");
    assert_eq!(full, serde_json::json!({"type":"full","room":"room1"}));
    assert_eq!(h.hub.stats().rooms, 1);
}

#[test]
fn messages_reach_the_other_member_with_a_server_stamped_from() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let id_a = h.join(a, "r")["id"].clone();
    h.join(b, "r");
    h.text(
        a,
        r#"{"type":"message","data":{"sdp":"v=0","from":"forged"},"from":"forged"}"#,
    );
    let to_b = h.sent_to(b);
    assert_eq!(
        to_b,
        vec![
            serde_json::json!({"type":"message","from":id_a,"data":{"sdp":"v=0","from":"forged"}})
        ]
    );
    assert_eq!(h.hub.stats().messages_relayed, 1);
}

#[test]
fn rooms_are_isolated() {
    let mut h = Harness::new();
    let (a, b, c, d) = (h.connect(1), h.connect(2), h.connect(3), h.connect(4));
    h.join(a, "one");
    h.join(b, "one");
    h.join(c, "two");
    h.join(d, "two");
    h.text(a, r#"{"type":"message","data":1}"#);
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, b);
}

#[test]
fn leave_answers_leaved_and_the_other_gets_bye() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let id_a = h.join(a, "r")["id"].clone();
    h.join(b, "r");
    h.text(a, r#"{"type":"leave"}"#);
    let sent = h.drain();
    assert!(sent.contains(&(a, serde_json::json!({"type":"leaved","room":"r"}))));
    assert!(sent.contains(&(b, serde_json::json!({"type":"bye","id":id_a}))));
    // a may join another room now; leaving twice is an error.
    h.text(a, r#"{"type":"leave"}"#);
    assert_eq!(h.sent_to(a)[0]["code"], "not_in_room");
    assert_eq!(h.join(a, "elsewhere")["type"], "joined");
    assert_eq!(h.hub.stats().rooms, 2);
}

#[test]
fn the_last_member_leaving_removes_the_room() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.join(a, "r");
    assert_eq!(h.hub.stats().rooms, 1);
    h.hub.handle_disconnect(a, Disconnect::Closed, h.now);
    assert_eq!(h.hub.stats().rooms, 0);
    assert_eq!(h.hub.stats().connections, 0);
}

#[test]
fn joining_again_is_idempotent_and_another_room_needs_a_leave() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let first = h.join(a, "r");
    let second = h.join(a, "r");
    assert_eq!(first, second);
    h.text(a, r#"{"type":"join","room":"other"}"#);
    assert_eq!(h.sent_to(a)[0]["code"], "already_in_room");
}

#[test]
fn a_closed_connection_makes_the_peer_get_bye_at_once() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let id_a = h.join(a, "r")["id"].clone();
    h.join(b, "r");
    h.hub.handle_disconnect(a, Disconnect::Closed, h.now);
    assert_eq!(
        h.sent_to(b),
        vec![serde_json::json!({"type":"bye","id":id_a})]
    );
    // The seat is free again.
    let c = h.connect(3);
    assert_eq!(h.join(c, "r")["type"], "joined");
}

#[test]
fn resume_within_grace_gives_the_seat_back_and_delivers_what_was_queued() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let joined_a = h.join(a, "r");
    let id_b = h.join(b, "r")["id"].clone();
    h.drain();

    h.hub.handle_disconnect(a, Disconnect::Lost, h.now);
    assert!(
        h.drain().is_empty(),
        "the peer sees no bye while the seat waits"
    );
    h.advance(Duration::from_secs(10));
    h.text(b, r#"{"type":"message","data":"first"}"#);
    h.text(b, r#"{"type":"message","data":"second"}"#);
    assert!(h.drain().is_empty(), "messages to an away seat are queued");
    // A stranger cannot take the seat, the room is still full.
    let stranger = h.connect(9);
    assert_eq!(h.join(stranger, "r")["type"], "full");

    h.advance(Duration::from_secs(9));
    let a2 = h.connect(3);
    let token = joined_a["resume"].as_str().unwrap_or_default().to_owned();
    h.text(
        a2,
        &format!(r#"{{"type":"join","room":"r","resume":"{token}"}}"#),
    );
    let sent = h.drain();
    assert!(sent.iter().all(|(to, _)| *to == a2), "b is told nothing");
    let messages: Vec<Value> = sent.into_iter().map(|(_, message)| message).collect();
    assert_eq!(types(&messages), vec!["joined", "message", "message"]);
    assert_eq!(messages[0]["id"], joined_a["id"]);
    assert_eq!(messages[0]["peers"], serde_json::json!([id_b]));
    assert_ne!(
        messages[0]["resume"], joined_a["resume"],
        "the token is rotated"
    );
    assert_eq!(messages[1]["data"], "first");
    assert_eq!(messages[2]["data"], "second");
    assert_eq!(h.hub.stats().resumes, 1);

    // The seat is live again: no bye when the old grace period would have ended.
    for _ in 0..3 {
        h.advance(Duration::from_secs(10));
        h.hub.handle_activity(a2, h.now);
        h.hub.handle_activity(b, h.now);
    }
    let sent = h.drain();
    assert!(!types(&sent.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>()).contains(&"bye"));
}

#[test]
fn the_peer_gets_bye_when_grace_runs_out_and_the_token_is_then_worthless() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let joined_a = h.join(a, "r");
    h.join(b, "r");
    h.drain();
    h.hub.handle_disconnect(a, Disconnect::Lost, h.now);
    h.advance(Duration::from_millis(19_999));
    assert!(h.sent_to(b).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.sent_to(b),
        vec![serde_json::json!({"type":"bye","id":joined_a["id"]})]
    );
    let a2 = h.connect(3);
    let token = joined_a["resume"].as_str().unwrap_or_default().to_owned();
    h.text(
        a2,
        &format!(r#"{{"type":"join","room":"r","resume":"{token}"}}"#),
    );
    let sent = h.sent_to(a2);
    assert_eq!(sent[0]["type"], "joined");
    assert_ne!(
        sent[0]["id"], joined_a["id"],
        "a returning client without a valid token is new"
    );
}

#[test]
fn a_wrong_token_joins_as_a_new_member() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let joined_a = h.join(a, "r");
    h.hub.handle_disconnect(a, Disconnect::Lost, h.now);
    h.text(
        b,
        r#"{"type":"join","room":"r","resume":"00000000000000000000000000000001"}"#,
    );
    let sent = h.sent_to(b);
    assert_eq!(sent[0]["type"], "joined");
    assert_ne!(sent[0]["id"], joined_a["id"]);
    assert_eq!(sent[0]["peers"], serde_json::json!([joined_a["id"]]));
}

#[test]
fn resume_on_a_new_connection_replaces_a_connection_still_open() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let joined_a = h.join(a, "r");
    h.join(b, "r");
    h.drain();
    let a2 = h.connect(3);
    let token = joined_a["resume"].as_str().unwrap_or_default().to_owned();
    h.text(
        a2,
        &format!(r#"{{"type":"join","room":"r","resume":"{token}"}}"#),
    );
    let sent = h.drain();
    assert!(sent.contains(&(
        a,
        serde_json::json!({"close": CloseCode::Replaced.number()})
    )));
    assert!(sent.iter().all(|(to, _)| *to != b), "the peer sees nothing");
    h.text(b, r#"{"type":"message","data":42}"#);
    assert_eq!(h.sent_to(a2)[0]["data"], 42);
}

#[test]
fn a_silent_connection_is_dropped_and_its_peer_gets_bye() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let id_a = h.join(a, "r")["id"].clone();
    h.join(b, "r");
    h.drain();
    // b keeps talking (pongs), a says nothing.
    let silence = h.hub.config().silence_timeout.as_secs();
    for _ in 1..silence {
        h.advance(Duration::from_secs(1));
        h.hub.handle_activity(b, h.now);
    }
    assert!(h.drain().is_empty(), "{silence} s have not passed");
    h.advance(Duration::from_secs(1));
    let sent = h.drain();
    assert!(sent.contains(&(
        a,
        serde_json::json!({"close": CloseCode::SilenceTimeout.number()})
    )));
    assert!(sent.contains(&(b, serde_json::json!({"type":"bye","id":id_a}))));
    assert_eq!(h.hub.stats().connections, 1);
}

#[test]
fn activity_pushes_the_silence_deadline_back() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.join(a, "pings");
    let silence = h.hub.config().silence_timeout;
    for _ in 0..10 {
        h.advance(silence * 2 / 3);
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(types(&h.sent_to(a)), vec!["pong"]);
    }
    assert_eq!(h.hub.stats().connections, 1);
    assert!(h.hub.pending_timers() <= 2, "timers do not pile up");
    h.advance(silence + Duration::from_secs(1));
    assert_eq!(types(&h.sent_to(a)), vec!["close"]);
}

#[test]
fn a_flood_is_refused_then_closed_with_1008_and_the_peer_gets_bye() {
    let config = Config {
        rate_limit: RateLimit {
            burst: 5,
            per_second: 1,
            refusals_before_close: 3,
        },
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let (a, b) = (h.connect(1), h.connect(2));
    h.join(a, "r");
    h.join(b, "r");
    h.drain();
    for _ in 0..4 {
        h.text(b, r#"{"type":"ping"}"#);
    }
    assert_eq!(types(&h.sent_to(b)), vec!["pong"; 4]);
    h.text(b, r#"{"type":"ping"}"#); // the sixth message of the burst (the join was the first)
    let refused = h.sent_to(b);
    assert_eq!(refused[0]["code"], "rate_limited");
    h.text(b, r#"{"type":"ping"}"#);
    h.text(b, r#"{"type":"ping"}"#);
    assert_eq!(types(&h.sent_to(b)), vec!["error", "error"]);
    h.text(b, r#"{"type":"ping"}"#);
    let sent = h.drain();
    assert!(sent.contains(&(b, serde_json::json!({"close": 1008}))));
    assert!(sent.iter().any(|(to, m)| *to == a && m["type"] == "bye"));
}

#[test]
fn a_client_that_slows_down_is_served_again() {
    let config = Config {
        rate_limit: RateLimit {
            burst: 2,
            per_second: 1,
            refusals_before_close: 1,
        },
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let a = h.connect(1);
    for _ in 0..3 {
        h.text(a, r#"{"type":"ping"}"#);
    }
    assert_eq!(types(&h.sent_to(a)), vec!["pong", "pong", "error"]);
    h.advance(Duration::from_secs(2));
    h.text(a, r#"{"type":"ping"}"#);
    assert_eq!(types(&h.sent_to(a)), vec!["pong"]);
}

#[test]
fn the_room_cap_refuses_new_rooms_only() {
    let config = Config {
        max_rooms: 1,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let (a, b, c) = (h.connect(1), h.connect(2), h.connect(3));
    h.join(a, "r");
    h.text(c, r#"{"type":"join","room":"other"}"#);
    assert_eq!(h.sent_to(c)[0]["code"], "too_many_rooms");
    assert_eq!(h.join(b, "r")["type"], "joined");
}

#[test]
fn bad_input_gets_an_error_and_changes_nothing() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    h.join(a, "r");
    h.join(b, "r");
    h.drain();
    for (frame, code) in [
        ("nope", "bad_json"),
        ("[]", "bad_message"),
        (r#"{"type":"join","room":"bad room"}"#, "bad_room"),
        (r#"{"type":"fly"}"#, "unknown_type"),
        (r#"{"type":"message"}"#, "bad_message"),
    ] {
        h.text(a, frame);
        let sent = h.drain();
        assert_eq!(sent.len(), 1, "{frame}");
        assert_eq!(sent[0].0, a);
        assert_eq!(sent[0].1["type"], "error");
        assert_eq!(sent[0].1["code"], code, "{frame}");
    }
    h.hub.handle_binary(a, h.now);
    assert_eq!(h.sent_to(a)[0]["code"], "binary_frame");
    h.text(a, r#"{"type":"message","data":"still here"}"#);
    assert_eq!(h.sent_to(b)[0]["data"], "still here");
}

#[test]
fn messaging_alone_or_outside_a_room_is_an_error() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.text(a, r#"{"type":"message","data":1}"#);
    assert_eq!(h.sent_to(a)[0]["code"], "not_in_room");
    h.join(a, "r");
    h.text(a, r#"{"type":"message","data":1}"#);
    assert_eq!(h.sent_to(a)[0]["code"], "no_peer");
}

#[test]
fn an_overflowing_resume_queue_ends_the_away_seat() {
    let config = Config {
        resume_queue_messages: 3,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let (a, b) = (h.connect(1), h.connect(2));
    let id_a = h.join(a, "r")["id"].clone();
    h.join(b, "r");
    h.drain();
    h.hub.handle_disconnect(a, Disconnect::Lost, h.now);
    for n in 0..3 {
        h.text(b, &format!(r#"{{"type":"message","data":{n}}}"#));
    }
    assert!(h.drain().is_empty());
    h.text(b, r#"{"type":"message","data":3}"#);
    assert_eq!(
        h.sent_to(b),
        vec![serde_json::json!({"type":"bye","id":id_a})]
    );
}

#[test]
fn both_members_lost_then_both_resume() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let joined_a = h.join(a, "r");
    let joined_b = h.join(b, "r");
    h.drain();
    h.hub.handle_disconnect(a, Disconnect::Lost, h.now);
    h.hub.handle_disconnect(b, Disconnect::Lost, h.now);
    assert_eq!(h.hub.stats().away_seats, 2);
    h.advance(Duration::from_secs(5));
    let (a2, b2) = (h.connect(3), h.connect(4));
    for (connection, joined) in [(a2, &joined_a), (b2, &joined_b)] {
        let token = joined["resume"].as_str().unwrap_or_default().to_owned();
        h.text(
            connection,
            &format!(r#"{{"type":"join","room":"r","resume":"{token}"}}"#),
        );
    }
    let sent = h.drain();
    assert_eq!(sent.len(), 2, "only the two joined messages: {sent:?}");
    assert_eq!(h.hub.stats().away_seats, 0);
    h.text(a2, r#"{"type":"message","data":"hi"}"#);
    assert_eq!(h.sent_to(b2)[0]["from"], joined_a["id"]);
}

#[test]
fn zero_grace_means_a_lost_connection_ends_the_seat_at_once() {
    let config = Config {
        resume_grace: Duration::ZERO,
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let (a, b) = (h.connect(1), h.connect(2));
    h.join(a, "r");
    h.join(b, "r");
    h.drain();
    h.hub.handle_disconnect(a, Disconnect::Lost, h.now);
    assert_eq!(types(&h.sent_to(b)), vec!["bye"]);
}

#[test]
fn ice_servers_from_config_are_in_joined() {
    let config = Config {
        ice_servers: vec![duet_signaling::IceServer {
            urls: vec!["stun:stun.example.org:3478".to_owned()],
            username: None,
            credential: None,
        }],
        ..Config::default()
    };
    let mut h = Harness::with(config);
    let a = h.connect(1);
    assert_eq!(
        h.join(a, "r")["iceServers"],
        serde_json::json!([{"urls":["stun:stun.example.org:3478"]}])
    );
}

#[test]
fn same_seed_same_ids() {
    let run = || {
        let mut h = Harness::new();
        let a = h.connect(1);
        h.join(a, "r")
    };
    assert_eq!(run(), run());
    let _unused: Option<ServerMessage> = None;
}

#[test]
fn a_connection_can_have_its_own_ice_servers() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    let own: std::sync::Arc<[duet_signaling::IceServer]> =
        std::sync::Arc::from(vec![duet_signaling::IceServer {
            urls: vec!["turn:relay.example.org:3478?transport=udp".to_owned()],
            username: Some("1800000000:a".to_owned()),
            credential: Some("secret".to_owned()),
        }]);
    h.hub.set_ice_servers(a, own);
    assert_eq!(h.join(a, "r")["iceServers"][0]["username"], "1800000000:a");
    assert_eq!(h.join(b, "r")["iceServers"], serde_json::json!([]));
}

#[test]
fn a_connection_that_never_joins_is_closed_at_the_join_deadline() {
    let mut h = Harness::new();
    let idle = h.connect(1);
    let joiner = h.connect(2);
    // Pings keep a connection from the silence timeout, not from the join deadline.
    for _ in 0..9 {
        h.advance(Duration::from_secs(1));
        h.text(idle, r#"{"type":"ping"}"#);
    }
    h.join(joiner, "in-time");
    h.drain();
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.drain(),
        vec![(
            idle,
            serde_json::json!({"close": CloseCode::JoinTimeout.number()})
        )]
    );
    assert_eq!(h.hub.stats().connections, 1, "the member who joined stays");
    // A join refused because the room is full still meets the deadline: the
    // client has been answered, and decides what to do.
    let second = h.connect(3);
    h.join(second, "in-time");
    let refused = h.connect(4);
    assert_eq!(h.join(refused, "in-time")["type"], "full");
    h.advance(Duration::from_secs(11));
    h.text(joiner, r#"{"type":"ping"}"#);
    h.text(second, r#"{"type":"ping"}"#);
    assert!(
        h.sent_to(refused)
            .iter()
            .all(|message| message.get("close").is_none())
    );
}

#[test]
fn away_seats_together_hold_at_most_the_total_byte_bound() {
    let mut h = Harness::with(Config {
        away_total_bytes: 200 * 1024,
        ..Config::default()
    });
    // Three rooms, each with a member away and a member sending to it.
    let payload = "x".repeat(30 * 1024);
    let mut senders = Vec::new();
    for room in 0..3u64 {
        let away = h.connect(10 + room);
        let sender = h.connect(20 + room);
        h.join(away, &format!("room-{room}"));
        h.join(sender, &format!("room-{room}"));
        h.hub.handle_disconnect(away, Disconnect::Lost, h.now);
        senders.push(sender);
    }
    h.drain();
    let message = format!(r#"{{"type":"message","data":"{payload}"}}"#);
    // Each room alone may queue 512 KiB; together they stop at 200 KiB.
    for _ in 0..3 {
        for sender in &senders {
            h.text(*sender, &message);
        }
    }
    let stats = h.hub.stats();
    assert!(stats.away_bytes <= 200 * 1024, "{stats:?}");
    let byes = h
        .drain()
        .into_iter()
        .filter(|(_, message)| message["type"] == "bye")
        .count();
    assert!(byes >= 1, "the seat that went over the total bound ended");
}

#[test]
fn call_reports_count_once_per_call_and_bad_ones_are_refused() {
    let mut h = Harness::new();
    let a = h.connect(1);
    let b = h.connect(2);
    let report = r#"{"type":"report","setup":{"outcome":"connected","ms":300,"path":{"local":"host","remote":"host","protocol":"udp"}}}"#;
    h.text(a, report);
    assert_eq!(
        types(&h.sent_to(a)),
        ["error"],
        "not in a room: not_in_room"
    );
    h.join(a, "reports");
    h.join(b, "reports");
    h.drain();
    h.text(a, report);
    h.text(a, report);
    let counted: Vec<_> = h
        .drain()
        .into_iter()
        .filter(|(_, m)| m.get("report").is_some())
        .collect();
    assert_eq!(
        counted.len(),
        1,
        "the second set-up of the same call is not counted"
    );
    assert_eq!(counted[0].1["report"]["setup"]["ms"], 300.0);
    // The other leaves and someone new comes: a new call, reported afresh.
    h.text(b, r#"{"type":"leave"}"#);
    let c = h.connect(3);
    h.join(c, "reports");
    h.drain();
    h.text(a, report);
    assert_eq!(
        h.drain()
            .iter()
            .filter(|(_, m)| m.get("report").is_some())
            .count(),
        1
    );
    // A report that breaks a rule is refused with bad_report, and counts nothing.
    h.text(c, r#"{"type":"report","setup":{"outcome":"connected","ms":1e9,"path":{"local":"host","remote":"host","protocol":"udp"}}}"#);
    let sent = h.drain();
    assert!(sent.iter().all(|(_, m)| m.get("report").is_none()));
    assert_eq!(
        sent.iter()
            .find(|(to, _)| *to == c)
            .map(|(_, m)| m["code"].clone()),
        Some(Value::from("bad_report"))
    );
}

/// A room handed from one hub to another (a cluster's drain or failover):
/// the new hub seats the member whose connection it has, keeps the other
/// seat away with what was queued for it and what is left of its grace, and
/// goes on as if the room had always been there.
#[test]
fn a_room_moves_to_another_hub_with_its_seats_tokens_and_queue() {
    let mut old = Harness::new();
    old.hub.track_room_changes();
    let a = old.connect(1);
    let b = old.connect(2);
    let joined_a = old.join(a, "moving");
    let joined_b = old.join(b, "moving");
    old.drain();
    assert_eq!(old.hub.take_changed_rooms().len(), 1);
    // b's connection breaks; a message waits for it.
    old.hub.handle_disconnect(b, Disconnect::Lost, old.now);
    old.text(a, r#"{"type":"message","data":"queued"}"#);
    old.advance(Duration::from_secs(5));
    let snapshot = old.hub.export_room(&room("moving"), old.now).unwrap();
    assert_eq!(old.hub.forget_room(&room("moving")), vec![a]);
    assert_eq!(old.hub.stats().rooms, 0);
    assert_eq!(old.hub.stats().away_seats, 0);
    assert!(
        old.drain().is_empty(),
        "forgetting a room tells nobody anything"
    );

    // The new hub has a's connection (its own number for it) and nobody else.
    let mut new = Harness::new();
    let a2 = new.connect(10);
    let mapped = duet_signaling::RoomSnapshot {
        seats: snapshot
            .seats
            .into_iter()
            .map(|mut seat| {
                if let duet_signaling::SeatState::Connected(connection) = seat.state {
                    assert_eq!(connection, a);
                    seat.state = duet_signaling::SeatState::Connected(a2);
                }
                seat
            })
            .collect(),
    };
    assert!(new.hub.import_room(room("moving"), mapped.clone(), new.now));
    assert!(
        !new.hub.import_room(room("moving"), mapped, new.now),
        "imported twice"
    );
    assert!(
        new.drain().is_empty(),
        "taking a room over tells nobody anything"
    );
    assert_eq!(new.hub.stats().away_seats, 1);

    // a goes on talking; b resumes on the new hub with its old token and gets everything.
    new.text(a2, r#"{"type":"message","data":"after the move"}"#);
    let b2 = new.connect(11);
    new.text(
        b2,
        &format!(
            r#"{{"type":"join","room":"moving","resume":"{}"}}"#,
            joined_b["resume"].as_str().unwrap()
        ),
    );
    let sent = new.drain();
    let to_b: Vec<&Value> = sent
        .iter()
        .filter(|(to, _)| *to == b2)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(to_b[0]["type"], "joined");
    assert_eq!(to_b[0]["id"], joined_b["id"]);
    assert_eq!(to_b[0]["peers"][0], joined_a["id"]);
    assert_eq!(to_b[1]["data"], "queued");
    assert_eq!(to_b[2]["data"], "after the move");
    assert!(sent.iter().all(|(_, m)| m["type"] != "bye"));

    // The grace left was 15 s, not a fresh 20: had b not come back, a hears
    // `bye` 15 s after the move.
    let mut late = Harness::new();
    let a3 = late.connect(20);
    let snapshot = old_room_with_away_seat(a3, Duration::from_secs(15));
    assert!(late.hub.import_room(room("late"), snapshot, late.now));
    late.advance(Duration::from_secs(14));
    assert!(late.drain().is_empty());
    late.advance(Duration::from_secs(1));
    assert_eq!(
        types(&late.drain().into_iter().map(|(_, m)| m).collect::<Vec<_>>()),
        ["bye"]
    );
}

fn room(name: &str) -> duet_signaling::RoomName {
    duet_signaling::RoomName::parse(name).unwrap()
}

fn old_room_with_away_seat(
    connected: ConnectionId,
    left: Duration,
) -> duet_signaling::RoomSnapshot {
    use duet_signaling::{PeerId, ResumeToken, SeatSnapshot, SeatState};
    duet_signaling::RoomSnapshot {
        seats: vec![
            SeatSnapshot {
                id: PeerId(1),
                token: ResumeToken(1),
                state: SeatState::Connected(connected),
            },
            SeatSnapshot {
                id: PeerId(2),
                token: ResumeToken(2),
                state: SeatState::Away {
                    left,
                    queue: Vec::new(),
                },
            },
        ],
    }
}
