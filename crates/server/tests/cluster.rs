//! Several `duet serve` nodes on one real `redis-server` (`--redis`): members
//! of one room connected to different nodes join, relay, fill the room, leave
//! and resume exactly as on one node; Redis going away refuses joins with a
//! clear error and comes back by itself; a node killed or drained hands its
//! rooms over.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{ChildServer, Client, Event, RedisServer, TestServer};
use serde_json::{Value, json};

async fn node(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::with(move |args| args.options.redis = Some(url)).await
}

async fn join(client: &mut Client, room: &str, resume: Option<&Value>) -> Value {
    let mut message = json!({"type": "join", "room": room});
    if let Some(token) = resume {
        message["resume"] = token.clone();
    }
    client.send_json(message).await;
    client.recv().await
}

/// The next message, skipping nothing; panics on a close or on silence.
async fn expect(client: &mut Client, kind: &str) -> Value {
    let message = client.recv().await;
    assert_eq!(message["type"], kind, "{message}");
    message
}

/// Messages until `wait` passes; panics on a `bye`.
async fn no_bye(client: &mut Client, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match client.next_event(left).await {
            None => return,
            Some(Event::Json(message)) => {
                assert_ne!(message["type"], "bye", "a member was told `bye`: {message}")
            }
            Some(other) => panic!("the connection ended: {other:?}"),
        }
    }
}

/// Waits for a `bye` within `wait`; returns how long it took.
async fn bye_within(client: &mut Client, wait: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match client
            .next_event(wait.saturating_sub(started.elapsed()))
            .await
        {
            Some(Event::Json(message)) if message["type"] == "bye" => return started.elapsed(),
            Some(Event::Json(_)) => {}
            other => panic!("expected `bye` within {wait:?}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_nodes_join_relay_fill_and_leave_one_room() {
    let redis = RedisServer::start();
    let one = node(&redis).await;
    let two = node(&redis).await;

    let mut a = one.connect().await;
    let joined_a = join(&mut a, "crossing", None).await;
    assert_eq!(joined_a["type"], "joined");
    let mut b = two.connect().await;
    let joined_b = join(&mut b, "crossing", None).await;
    assert_eq!(joined_b["type"], "joined", "{joined_b}");
    assert_eq!(joined_b["peers"], json!([joined_a["id"]]));
    // Each node hands out its own session's TURN credentials.
    assert!(joined_b["iceServers"].is_array());
    let other = expect(&mut a, "other_joined").await;
    assert_eq!(other["id"], joined_b["id"]);

    // Relay both ways, data untouched, in order.
    for n in 0..20 {
        a.send_json(json!({"type": "message", "data": {"n": n, "text": "ü"}}))
            .await;
    }
    for n in 0..20 {
        let message = expect(&mut b, "message").await;
        assert_eq!(message["from"], joined_a["id"]);
        assert_eq!(message["data"], json!({"n": n, "text": "ü"}));
    }
    b.send_json(json!({"type": "message", "data": [1, 2, 3]}))
        .await;
    let message = expect(&mut a, "message").await;
    assert_eq!(message["from"], joined_b["id"]);
    assert_eq!(message["data"], json!([1, 2, 3]));

    // A third member is refused, on either node.
    for server in [&one, &two] {
        let mut c = server.connect().await;
        let full = join(&mut c, "crossing", None).await;
        assert_eq!(full["type"], "full", "{full}");
    }

    // Errors of the protocol come from the room's node as from one node.
    b.send("{not json").await;
    assert_eq!(expect(&mut b, "error").await["code"], "bad_json");
    b.send_json(json!({"type": "ping"})).await;
    expect(&mut b, "pong").await;

    // Leaving: the other member is told at once, and the seat is free again.
    b.send_json(json!({"type": "leave"})).await;
    expect(&mut b, "leaved").await;
    assert_eq!(expect(&mut a, "bye").await["id"], joined_b["id"]);
    let mut c = two.connect().await;
    let joined_c = join(&mut c, "crossing", None).await;
    assert_eq!(joined_c["type"], "joined");
    assert_eq!(joined_c["peers"], json!([joined_a["id"]]));
    expect(&mut a, "other_joined").await;

    // Closing the connection on purpose: `bye` at once, across nodes too.
    c.close(1000).await;
    assert_eq!(expect(&mut a, "bye").await["id"], joined_c["id"]);

    // The member of the other node may join another room after leaving.
    let joined_b2 = join(&mut b, "second", None).await;
    assert_eq!(joined_b2["type"], "joined", "{joined_b2}");
    let mut d = one.connect().await;
    let joined_d = join(&mut d, "second", None).await;
    assert_eq!(joined_d["peers"], json!([joined_b2["id"]]));
    expect(&mut b, "other_joined").await;

    // Messages to other nodes are counted (as PUBLISH commands).
    let metrics = two.metrics().await;
    assert!(
        metrics.contains("duet_cluster_redis_commands_total{op=\"publish\"}"),
        "{metrics}"
    );
    // b stayed with the node that held its first room, which took the second
    // room too (b's join reached it there); d is local to it.
    let one_metrics = one.metrics().await;
    for line in [
        "duet_cluster_rooms_held 2",
        "duet_cluster_remote_members 1",
        "duet_cluster_forwarded_connections 0",
    ] {
        assert!(one_metrics.contains(line), "{line} in {one_metrics}");
    }
    for line in [
        "duet_cluster_rooms_held 0",
        "duet_cluster_forwarded_connections 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resumes_on_another_node_with_its_queued_messages() {
    let redis = RedisServer::start();
    let one = node(&redis).await;
    let two = node(&redis).await;

    let mut a = one.connect().await;
    let joined_a = join(&mut a, "roaming", None).await;
    let mut b = two.connect().await;
    let joined_b = join(&mut b, "roaming", None).await;
    expect(&mut a, "other_joined").await;

    // b's network breaks; a goes on talking; b comes back through the other node.
    b.drop_abruptly();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send_json(json!({"type": "message", "data": "while you were away"}))
        .await;
    let mut b = one.connect().await;
    let resumed = join(&mut b, "roaming", Some(&joined_b["resume"])).await;
    assert_eq!(resumed["type"], "joined", "{resumed}");
    assert_eq!(resumed["id"], joined_b["id"]);
    assert_eq!(resumed["peers"], json!([joined_a["id"]]));
    assert_ne!(
        resumed["resume"], joined_b["resume"],
        "a used token is renewed"
    );
    let queued = expect(&mut b, "message").await;
    assert_eq!(queued["data"], "while you were away");
    no_bye(&mut a, Duration::from_millis(500)).await;

    // And a, the room's first member, moves to the other node too.
    a.drop_abruptly();
    let mut a = two.connect().await;
    let resumed_a = join(&mut a, "roaming", Some(&joined_a["resume"])).await;
    assert_eq!(resumed_a["id"], joined_a["id"], "{resumed_a}");
    b.send_json(json!({"type": "message", "data": "hello again"}))
        .await;
    assert_eq!(expect(&mut a, "message").await["data"], "hello again");
    no_bye(&mut b, Duration::from_millis(300)).await;

    // A stale token from the first connection gets a new seat only if one is
    // free; here the room is full.
    let mut stranger = two.connect().await;
    let refused = join(&mut stranger, "roaming", Some(&joined_b["resume"])).await;
    assert_eq!(refused["type"], "full", "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_joins_are_refused_clearly_and_service_returns_by_itself() {
    let mut redis = RedisServer::start();
    let one = node(&redis).await;
    let two = node(&redis).await;
    // A room whose members sit on one node, and one across nodes.
    let mut a = one.connect().await;
    join(&mut a, "local", None).await;
    let mut b = one.connect().await;
    join(&mut b, "local", None).await;
    expect(&mut a, "other_joined").await;

    // Redis frozen (SIGSTOP): a join of a room this node does not hold is
    // refused within the claim deadline, not left hanging.
    redis.signal("STOP");
    let mut c = two.connect().await;
    let started = Instant::now();
    let refused = join(&mut c, "elsewhere", None).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The room held by a node goes on without Redis.
    a.send_json(json!({"type": "message", "data": "still here"}))
        .await;
    assert_eq!(expect(&mut b, "message").await["data"], "still here");
    tokio::time::sleep(Duration::from_secs(8)).await;
    redis.signal("CONT");

    // Back by itself within seconds: the refused client tries again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = join(&mut c, "elsewhere", None).await;
        if answer["type"] == "joined" {
            break;
        }
        assert!(Instant::now() < deadline, "joins still refused: {answer}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut d = one.connect().await;
    let joined_d = join(&mut d, "elsewhere", None).await;
    assert_eq!(joined_d["type"], "joined", "{joined_d}");
    expect(&mut c, "other_joined").await;
    no_bye(&mut a, Duration::from_millis(100)).await;

    // Redis restarted without its data: nodes write back the rooms they hold,
    // so a member of a room held by one node still finds it from the other.
    redis.restart(Duration::from_millis(500));
    let recovered = Instant::now();
    loop {
        let mut e = two.connect().await;
        let answer = join(&mut e, "local", None).await;
        if answer["type"] == "full" {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "the room was not rebuilt in Redis: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.send_json(json!({"type": "message", "data": "after the restart"}))
        .await;
    assert_eq!(expect(&mut d, "message").await["data"], "after the restart");
}

fn child(redis: &RedisServer, grace_secs: u32) -> ChildServer {
    ChildServer::start(&[
        "--redis",
        &redis.url(),
        "--resume-grace-secs",
        &grace_secs.to_string(),
        "--drain-timeout-secs",
        "5",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_a_bye_after_the_grace_and_a_room_that_works() {
    let redis = RedisServer::start();
    let one = child(&redis, 4);
    let two = child(&redis, 4);
    let mut a = one.connect().await;
    let joined_a = join(&mut a, "sudden", None).await;
    let mut b = two.connect().await;
    join(&mut b, "sudden", None).await;
    expect(&mut a, "other_joined").await;

    // The node holding the room (and a) dies without a word.
    one.signal("KILL");
    // The bound docs/scaling.md states: the grace plus 7 s (the heartbeat expires
    // within 3 s, is judged missing after 1.5 s more, checked every second).
    let took = bye_within(&mut b, Duration::from_secs(4 + 7)).await;
    assert!(
        took >= Duration::from_secs(4),
        "bye before the grace: {took:?}"
    );
    eprintln!("bye {took:?} after the node was killed (grace 4 s)");
    let mut c = two.connect().await;
    let joined_c = join(&mut c, "sudden", None).await;
    assert_eq!(joined_c["type"], "joined", "{joined_c}");
    expect(&mut b, "other_joined").await;
    drop(joined_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_a_killed_node_resumes_on_another_within_the_grace() {
    let redis = RedisServer::start();
    let one = child(&redis, 20);
    let two = child(&redis, 20);
    let mut a = one.connect().await;
    let joined_a = join(&mut a, "rescue", None).await;
    let mut b = two.connect().await;
    let joined_b = join(&mut b, "rescue", None).await;
    expect(&mut a, "other_joined").await;

    one.signal("KILL");
    // a's client reconnects to the surviving node at once, as the web client
    // does; until the dead node is judged dead it is told to try again.
    let started = Instant::now();
    let resumed = loop {
        let mut again = two.connect().await;
        again
            .send_json(json!({"type": "join", "room": "rescue", "resume": joined_a["resume"]}))
            .await;
        match again.next_event(Duration::from_secs(5)).await {
            Some(Event::Json(message)) if message["type"] == "joined" => break (again, message),
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "no resume: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let (mut a, message) = resumed;
    assert_eq!(message["id"], joined_a["id"]);
    assert_eq!(message["peers"], json!([joined_b["id"]]));
    a.send_json(json!({"type": "message", "data": "made it"}))
        .await;
    assert_eq!(expect(&mut b, "message").await["data"], "made it");
    no_bye(&mut b, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_rooms_over_without_a_bye() {
    let redis = RedisServer::start();
    let mut one = child(&redis, 20);
    let two = child(&redis, 20);
    let mut a = one.connect().await;
    let joined_a = join(&mut a, "rolling", None).await;
    let mut b = two.connect().await;
    let joined_b = join(&mut b, "rolling", None).await;
    expect(&mut a, "other_joined").await;

    // SIGTERM: the node's members are told to reconnect (1012); the room goes to the other node.
    one.signal("TERM");
    assert_eq!(a.expect_close(Duration::from_secs(5)).await, Some(1012));
    let mut a = two.connect().await;
    let resumed = join(&mut a, "rolling", Some(&joined_a["resume"])).await;
    assert_eq!(resumed["type"], "joined", "{resumed}");
    assert_eq!(resumed["id"], joined_a["id"]);
    assert_eq!(resumed["peers"], json!([joined_b["id"]]));
    a.send_json(json!({"type": "message", "data": "after the restart"}))
        .await;
    assert_eq!(expect(&mut b, "message").await["data"], "after the restart");
    b.send_json(json!({"type": "message", "data": "welcome back"}))
        .await;
    assert_eq!(expect(&mut a, "message").await["data"], "welcome back");
    // The drained node has stopped; nobody was told `bye`, even once the old node is gone.
    assert!(
        one.wait_exit(Duration::from_secs(10)).is_some(),
        "the drained node did not stop"
    );
    no_bye(&mut b, Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_forgotten_during_a_long_outage_is_told_to_reconnect() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    // The room's node gives up on a silent member after 2 s; b's own node
    // keeps the default (and so pings b only every 10 s).
    let room_url = url.clone();
    let one = TestServer::with(move |args| {
        args.options.redis = Some(room_url);
        args.options.silence_timeout_secs = Some(2);
    })
    .await;
    let two = TestServer::with(move |args| args.options.redis = Some(url)).await;
    let mut a = one.connect().await;
    join(&mut a, "outage", None).await;
    let mut b = two.connect().await;
    let joined_b = join(&mut b, "outage", None).await;
    expect(&mut a, "other_joined").await;

    // Redis gone for longer than the silence timeout: the room's node hears
    // nothing of b and ends its seat (a is told `bye`), but cannot tell b's node.
    redis.kill();
    bye_within(&mut a, Duration::from_secs(6)).await;
    // Longer than a write to Redis may wait (5 s): the room node's close for b
    // is dropped. (a reads meanwhile, so its pings are answered.)
    no_bye(&mut a, Duration::from_secs(6)).await;
    redis.launch();
    no_bye(&mut a, Duration::from_secs(2)).await;
    // b's next frame reaches a node that no longer knows it: b is told to
    // reconnect (1012) instead of talking to nobody.
    b.send_json(json!({"type": "ping"})).await;
    assert_eq!(b.expect_close(Duration::from_secs(8)).await, Some(1012));
    // Reconnecting, it gets a seat again (a new one: the old one is gone) and a hears of it.
    let mut b = two.connect().await;
    let again = join(&mut b, "outage", Some(&joined_b["resume"])).await;
    assert_eq!(again["type"], "joined", "{again}");
    assert_ne!(again["id"], joined_b["id"]);
    expect(&mut a, "other_joined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls_with_a_private_ca() {
    let redis = RedisServer::start_tls();
    let tls = |redis: &RedisServer| {
        let (url, ca) = (redis.url(), redis.ca_path());
        move |args: &mut duet_server::config::ServeArgs| {
            args.options.redis = Some(url);
            args.options.redis_ca = Some(ca);
        }
    };
    let one = TestServer::with(tls(&redis)).await;
    let two = TestServer::with(tls(&redis)).await;
    let mut a = one.connect().await;
    join(&mut a, "private", None).await;
    let mut b = two.connect().await;
    let joined_b = join(&mut b, "private", None).await;
    assert_eq!(joined_b["peers"].as_array().unwrap().len(), 1, "{joined_b}");
    expect(&mut a, "other_joined").await;
    b.send_json(json!({"type": "message", "data": "over TLS"}))
        .await;
    assert_eq!(expect(&mut a, "message").await["data"], "over TLS");

    // Without the CA the node does not trust the server, and says so at start.
    let url = redis.url();
    let config = {
        let mut args = duet_server::config::ServeArgs::loopback(
            std::env::temp_dir().join(format!("duet-test-untrusted-{}", rand::random::<u64>())),
        );
        args.options.redis = Some(url);
        duet_server::config::ServeConfig::merge(args, duet_server::config::FileConfig::default())
            .unwrap()
    };
    let Err(error) = duet_server::server::start(config).await else {
        panic!("a node started with a Redis it cannot trust");
    };
    let text = format!("{error:#}");
    assert!(text.contains("Redis"), "{text}");
}
