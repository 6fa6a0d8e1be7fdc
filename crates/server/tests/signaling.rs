//! The signaling rules over real sockets: a server on port 0, real TLS, real
//! WebSocket clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{Event, PROMPT, TestServer, pair};
use serde_json::json;

#[tokio::test]
async fn two_members_meet_and_relay_messages_untouched() {
    let server = TestServer::start().await;
    let (mut a, mut b, joined_a, joined_b) = pair(&server, "meet").await;
    assert_eq!(joined_a["peers"], json!([]));
    assert_eq!(joined_b["peers"], json!([joined_a["id"]]));
    assert!(joined_a["iceServers"].is_array());
    assert_eq!(joined_a["resume"].as_str().unwrap().len(), 32);

    let data = json!({"description":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},"n":[1,2.5,null,"ü"]});
    a.send_json(json!({"type":"message","data":data,"from":"someone-else"}))
        .await;
    let got = b.recv().await;
    assert_eq!(
        got,
        json!({"type":"message","from":joined_a["id"],"data":data})
    );

    b.send_json(json!({"type":"message","data":"hello"})).await;
    assert_eq!(a.recv().await["data"], "hello");

    a.send(r#"{"type":"ping"}"#).await;
    assert_eq!(a.recv().await, json!({"type":"pong"}));
}

#[tokio::test]
async fn a_third_member_is_told_full_and_gets_no_seat() {
    let server = TestServer::start().await;
    let (mut a, _b, _, _) = pair(&server, "busy").await;
    let mut c = server.connect().await;
    assert_eq!(c.join("busy").await, json!({"type":"full","room":"busy"}));
    c.send_json(json!({"type":"message","data":1})).await;
    assert_eq!(c.recv().await["code"], "not_in_room");
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn leave_gives_leaved_and_bye() {
    let server = TestServer::start().await;
    let (mut a, mut b, joined_a, _) = pair(&server, "leave").await;
    a.send(r#"{"type":"leave"}"#).await;
    assert_eq!(a.recv().await, json!({"type":"leaved","room":"leave"}));
    assert_eq!(b.recv().await, json!({"type":"bye","id":joined_a["id"]}));
}

#[tokio::test]
async fn a_closed_tab_makes_the_peer_get_bye_within_a_second() {
    let server = TestServer::start().await;
    let (a, mut b, joined_a, _) = pair(&server, "tab").await;
    let started = Instant::now();
    a.close(1001).await;
    let bye = b.recv().await;
    assert_eq!(bye, json!({"type":"bye","id":joined_a["id"]}));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn resume_within_grace_keeps_the_seat_and_delivers_queued_messages() {
    let server = TestServer::start().await;
    let (a, mut b, joined_a, joined_b) = pair(&server, "resume").await;
    a.drop_abruptly();
    // The peer sees no bye while the seat waits; its messages are kept.
    b.expect_silence(Duration::from_millis(500)).await;
    b.send_json(json!({"type":"message","data":{"candidate":"one"}}))
        .await;
    b.send_json(json!({"type":"message","data":{"candidate":"two"}}))
        .await;
    b.expect_silence(Duration::from_millis(200)).await;

    let mut a2 = server.connect().await;
    a2.send_json(json!({"type":"join","room":"resume","resume":joined_a["resume"]}))
        .await;
    let joined = a2.recv().await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["id"], joined_a["id"]);
    assert_eq!(joined["peers"], json!([joined_b["id"]]));
    assert_ne!(joined["resume"], joined_a["resume"]);
    assert_eq!(a2.recv().await["data"]["candidate"], "one");
    assert_eq!(a2.recv().await["data"]["candidate"], "two");
    a2.send_json(json!({"type":"message","data":"back"})).await;
    assert_eq!(
        b.recv().await,
        json!({"type":"message","from":joined_a["id"],"data":"back"})
    );

    // The old token is spent.
    let mut stranger = server.connect().await;
    stranger
        .send_json(json!({"type":"join","room":"resume","resume":joined_a["resume"]}))
        .await;
    assert_eq!(stranger.recv().await["type"], "full");
}

#[tokio::test]
async fn close_code_4000_keeps_the_seat_for_a_resume() {
    let server = TestServer::start().await;
    let (a, mut b, joined_a, _) = pair(&server, "planned").await;
    a.close(4000).await;
    b.expect_silence(Duration::from_millis(300)).await;
    let mut a2 = server.connect().await;
    a2.send_json(json!({"type":"join","room":"planned","resume":joined_a["resume"]}))
        .await;
    assert_eq!(a2.recv().await["id"], joined_a["id"]);
}

#[tokio::test]
async fn after_the_grace_period_the_peer_gets_bye_and_the_client_is_new() {
    let server = TestServer::with(|args| args.options.resume_grace_secs = Some(1)).await;
    let (a, mut b, joined_a, _) = pair(&server, "late").await;
    a.drop_abruptly();
    let started = Instant::now();
    assert_eq!(b.recv().await, json!({"type":"bye","id":joined_a["id"]}));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let mut a2 = server.connect().await;
    a2.send_json(json!({"type":"join","room":"late","resume":joined_a["resume"]}))
        .await;
    let joined = a2.recv().await;
    assert_eq!(joined["type"], "joined");
    assert_ne!(joined["id"], joined_a["id"]);
}

#[tokio::test]
async fn resume_on_a_new_connection_replaces_the_old_one() {
    let server = TestServer::start().await;
    let (mut a, mut b, joined_a, _) = pair(&server, "switch").await;
    let mut a2 = server.connect().await;
    a2.send_json(json!({"type":"join","room":"switch","resume":joined_a["resume"]}))
        .await;
    assert_eq!(a2.recv().await["id"], joined_a["id"]);
    assert_eq!(a.expect_close(PROMPT).await, Some(4001));
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_and_its_peer_gets_bye() {
    let server = TestServer::with(|args| args.options.silence_timeout_secs = Some(2)).await;
    let (a, mut b, joined_a, _) = pair(&server, "silent").await;
    // `a` stops reading, so its client never answers the server's pings. `b`
    // keeps reading (and so answers pings) the whole time.
    let started = Instant::now();
    let bye = match b.next_event(Duration::from_secs(5)).await {
        Some(Event::Json(message)) => message,
        other => panic!("expected bye, got {other:?}"),
    };
    assert_eq!(bye, json!({"type":"bye","id":joined_a["id"]}));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // The close frame (4002) may be lost to a reset, since `a` wrote pongs late;
    // the server's own count says which code it sent.
    let mut a = a;
    assert!(matches!(a.expect_close(PROMPT).await, Some(4002) | None));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("duet_signaling_closes_total{code=\"4002\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_live_connection_survives_beyond_the_silence_timeout() {
    let server = TestServer::with(|args| args.options.silence_timeout_secs = Some(2)).await;
    let mut a = server.connect().await;
    assert_eq!(a.join("alive").await["type"], "joined");
    // Reading answers the server's pings, which is all a browser does.
    a.expect_silence(Duration::from_secs(5)).await;
    a.send(r#"{"type":"ping"}"#).await;
    assert_eq!(a.recv().await["type"], "pong");
}

/// Counts the WebSocket pings the server sends within `wait`; when `talk`, the
/// client sends a `ping` message of its own every 300 ms meanwhile.
async fn server_pings_within(client: &mut common::Client, wait: Duration, talk: bool) -> usize {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    let mut talk_at = tokio::time::Instant::now();
    let mut pings = 0;
    loop {
        if talk && tokio::time::Instant::now() >= talk_at {
            client.send(r#"{"type":"ping"}"#).await;
            talk_at += Duration::from_millis(300);
        }
        let until = if talk {
            talk_at.min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, client.socket.next()).await {
            Err(_) if tokio::time::Instant::now() >= deadline => return pings,
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_) | Message::Pong(_)))) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_server_pings_only_a_silent_client() {
    // Silence timeout 2 s: the server pings after 0.8 s without a frame.
    let server = TestServer::with(|args| args.options.silence_timeout_secs = Some(2)).await;
    let mut quiet = server.connect().await;
    assert_eq!(quiet.join("quiet").await["type"], "joined");
    let pings = server_pings_within(&mut quiet, Duration::from_millis(2500), false).await;
    assert!(
        (2..=4).contains(&pings),
        "{pings} pings in 2.5 s of silence"
    );
    let mut talkative = server.connect().await;
    assert_eq!(talkative.join("talkative").await["type"], "joined");
    let pings = server_pings_within(&mut talkative, Duration::from_millis(2500), true).await;
    assert_eq!(pings, 0, "a client heard from every 300 ms was pinged");
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_connection_stays() {
    let server = TestServer::start().await;
    let (mut a, mut b, _, _) = pair(&server, "bad").await;
    let cases: [(&str, &str); 12] = [
        ("not json", "bad_json"),
        ("{\"type\":\"join\"", "bad_json"),
        ("[1,2,3]", "bad_message"),
        ("\"join\"", "bad_message"),
        ("{}", "bad_message"),
        ("{\"type\":42}", "bad_message"),
        ("{\"type\":\"teleport\"}", "unknown_type"),
        ("{\"type\":\"join\"}", "bad_message"),
        ("{\"type\":\"join\",\"room\":[\"r\"]}", "bad_message"),
        ("{\"type\":\"join\",\"room\":\"no spaces\"}", "bad_room"),
        ("{\"type\":\"join\",\"room\":\"other\"}", "already_in_room"),
        ("{\"type\":\"message\"}", "bad_message"),
    ];
    for (frame, code) in cases {
        a.send(frame).await;
        let answer = a.recv().await;
        assert_eq!(answer["type"], "error", "{frame}");
        assert_eq!(answer["code"], code, "{frame}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    a.send_json(json!({"type":"join","room":"x".repeat(65)}))
        .await;
    assert_eq!(a.recv().await["code"], "bad_room");
    a.send_binary(vec![0, 1, 2]).await;
    assert_eq!(a.recv().await["code"], "binary_frame");
    a.send_json(json!({"type":"message","data":"still fine"}))
        .await;
    assert_eq!(b.recv().await["data"], "still fine");

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("duet_signaling_errors_total{code=\"bad_json\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn room_names_are_checked() {
    let server = TestServer::start().await;
    let mut a = server.connect().await;
    for room in ["", "a b", "../etc", "é", &"x".repeat(65)] {
        a.send_json(json!({"type":"join","room":room})).await;
        assert_eq!(a.recv().await["code"], "bad_room", "{room:?}");
    }
    assert_eq!(a.join(&"x".repeat(64)).await["type"], "joined");
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_with_1009_and_the_peer_gets_bye() {
    let server = TestServer::start().await;
    let (mut a, mut b, joined_a, _) = pair(&server, "big").await;
    let fits = json!({"type":"message","data":"x".repeat(60 * 1024)}).to_string();
    a.send(&fits).await;
    assert_eq!(
        b.recv().await["data"].as_str().map(str::len),
        Some(60 * 1024)
    );
    a.send(&"y".repeat(64 * 1024 + 1)).await;
    assert_eq!(a.expect_close(PROMPT).await, Some(1009));
    assert_eq!(b.recv().await, json!({"type":"bye","id":joined_a["id"]}));
}

#[tokio::test]
async fn a_flood_is_refused_then_closed_with_1008() {
    let server = TestServer::with(|args| {
        args.options.rate_limit_burst = Some(10);
        args.options.rate_limit_per_second = Some(5);
    })
    .await;
    let (mut a, mut b, joined_a, _) = pair(&server, "flood").await;
    for _ in 0..60 {
        a.send(r#"{"type":"ping"}"#).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match a.next_event(PROMPT).await {
            Some(Event::Json(message)) if message["type"] == "pong" => pongs += 1,
            Some(Event::Json(message)) if message["code"] == "rate_limited" => limited += 1,
            Some(Event::Closed(code, _)) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    assert!((9..=12).contains(&pongs), "{pongs} pongs");
    assert_eq!(limited, 20);
    assert_eq!(b.recv().await, json!({"type":"bye","id":joined_a["id"]}));
}

#[tokio::test]
async fn other_rooms_are_undisturbed_by_a_misbehaving_client() {
    let server = TestServer::start().await;
    let (mut a, mut b, _, _) = pair(&server, "calm").await;
    let (mut x, _y, _, _) = pair(&server, "storm").await;
    x.send(&"z".repeat(70 * 1024)).await;
    assert_eq!(x.expect_close(PROMPT).await, Some(1009));
    a.send_json(json!({"type":"message","data":"ok"})).await;
    assert_eq!(b.recv().await["data"], "ok");
    a.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_not_buffered() {
    let server = TestServer::with(|args| {
        args.options.rate_limit_burst = Some(100_000);
        args.options.rate_limit_per_second = Some(100_000);
    })
    .await;
    let (mut fast, slow, _, joined_slow) = pair(&server, "slow").await;
    // `slow` never reads. The server's socket buffer fills, then its bounded queue.
    let payload = json!({"type":"message","data":"s".repeat(60 * 1024)}).to_string();
    let started = Instant::now();
    let mut bye = None;
    for _ in 0..3000 {
        fast.send(&payload).await;
        if let Some(Event::Json(message)) = fast.next_event(Duration::from_millis(1)).await {
            bye = Some(message);
            break;
        }
    }
    let bye = match bye {
        Some(bye) => bye,
        None => fast.recv().await,
    };
    assert_eq!(bye, json!({"type":"bye","id":joined_slow["id"]}));
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(slow);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("duet_signaling_closes_total{code=\"4003\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_a_reason() {
    let mut server = TestServer::start().await;
    let (mut a, mut b, _, _) = pair(&server, "bye").await;
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for client in [&mut a, &mut b] {
        match client.next_event(PROMPT).await {
            Some(Event::Closed(code, reason)) => {
                assert_eq!(code, Some(1001));
                assert_eq!(reason, "server shutting down");
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_with_4004_at_the_join_deadline() {
    let server = TestServer::with(|args| args.options.join_timeout_secs = Some(1)).await;
    let mut idle = server.connect().await;
    let mut member = server.connect().await;
    assert_eq!(member.join("joined-in-time").await["type"], "joined");
    // The idle one answers pings (it reads), which keeps it from the silence
    // timeout, not from the join deadline.
    let started = Instant::now();
    assert_eq!(idle.expect_close(Duration::from_secs(3)).await, Some(4004));
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    member.expect_silence(Duration::from_secs(1)).await;
    member.send(r#"{"type":"ping"}"#).await;
    assert_eq!(member.recv().await["type"], "pong");
    assert!(
        server
            .metrics()
            .await
            .contains("duet_signaling_closes_total{code=\"4004\"} 1")
    );
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_4003_and_its_peer_told_bye() {
    let server = TestServer::with(|args| {
        args.options.rate_limit_burst = Some(10_000);
        args.options.rate_limit_per_second = Some(10_000);
    })
    .await;
    let (mut reader, mut sender, joined_reader, _) = pair(&server, "slow").await;
    let message = format!(r#"{{"type":"message","data":"{}"}}"#, "y".repeat(60 * 1024));
    // The reader reads nothing; the kernel's buffers fill first, then its queue.
    let started = Instant::now();
    let bye = loop {
        sender.send(&message).await;
        if let Some(Event::Json(value)) = sender.next_event(Duration::from_millis(1)).await
            && value["type"] == "bye"
        {
            break value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow reader was never closed"
        );
    };
    assert_eq!(bye["id"], joined_reader["id"]);
    // What it reads now ends with 4003 (after what the kernel held).
    let mut code = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match reader.next_event(Duration::from_secs(5)).await {
            Some(Event::Json(_)) => {}
            Some(Event::Closed(closed, _)) => {
                code = closed;
                break;
            }
            Some(Event::Ended) | None => break,
        }
    }
    assert!(matches!(code, Some(4003) | None), "{code:?}");
    assert!(
        server
            .metrics()
            .await
            .contains("duet_signaling_closes_total{code=\"4003\"} 1")
    );
}
