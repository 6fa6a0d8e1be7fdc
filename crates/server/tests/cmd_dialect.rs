//! The `cmd` dialect of the classic course variant on `/ws`, against the real
//! server: a client of our own written from the dialect's description (join,
//! offer/answer/candidate, leave), a third joiner, spoofed uids, bad input, and
//! a room where a `cmd` client meets a client of Duet's own protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Client, Event, TestServer, pair};
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

async fn cmd(client: &mut Client, value: Value) {
    client.send(&value.to_string()).await;
}

async fn join(client: &mut Client, room: &str, uid: &str) {
    cmd(client, json!({"cmd":"join","roomId":room,"uid":uid})).await;
}

#[tokio::test]
async fn two_cmd_clients_call_and_the_msg_arrives_byte_identical() {
    let server = TestServer::start().await;
    let (mut alice, mut bob) = (server.connect().await, server.connect().await);
    join(&mut alice, "classic", "alice").await;
    alice.expect_silence(QUIET).await; // nobody there yet: no resp-join
    join(&mut bob, "classic", "bob").await;
    assert_eq!(
        bob.recv().await,
        json!({"cmd":"resp-join","remoteUid":"alice"})
    );
    assert_eq!(
        alice.recv().await,
        json!({"cmd":"new-peer","remoteUid":"bob"})
    );

    // A JSON document as a string, with escapes and non-ASCII text, passes untouched.
    let offer = r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=é ☎\r\n"}"#;
    cmd(
        &mut alice,
        json!({"cmd":"offer","roomId":"classic","uid":"alice","remoteUid":"bob","msg":offer}),
    )
    .await;
    let got = bob.recv().await;
    assert_eq!(got["cmd"], "offer");
    assert_eq!(got["uid"], "alice");
    assert_eq!(got["remoteUid"], "bob");
    assert_eq!(got["roomId"], "classic");
    assert_eq!(got["msg"].as_str(), Some(offer));
    cmd(&mut bob, json!({"cmd":"answer","roomId":"classic","uid":"bob","remoteUid":"alice","msg":"{\"type\":\"answer\"}"})).await;
    assert_eq!(alice.recv().await["msg"], "{\"type\":\"answer\"}");
    cmd(&mut bob, json!({"cmd":"candidate","roomId":"classic","uid":"bob","remoteUid":"alice","msg":"{\"candidate\":\"c\"}"})).await;
    assert_eq!(alice.recv().await["cmd"], "candidate");

    // A third joiner is refused with a clear message; the two see nothing.
    let mut carol = server.connect().await;
    join(&mut carol, "classic", "carol").await;
    let full = carol.recv().await;
    assert_eq!(full["cmd"], "full");
    assert!(full["msg"].as_str().unwrap().contains("full"), "{full}");
    alice.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;

    // Leaving: the other is told.
    cmd(
        &mut alice,
        json!({"cmd":"leave","roomId":"classic","uid":"alice"}),
    )
    .await;
    assert_eq!(
        bob.recv().await,
        json!({"cmd":"peer-leave","remoteUid":"alice"})
    );
}

#[tokio::test]
async fn spoofed_uids_strangers_and_messages_before_join_are_refused() {
    let server = TestServer::start().await;
    let mut early = server.connect().await;
    cmd(
        &mut early,
        json!({"cmd":"offer","roomId":"r","uid":"x","remoteUid":"y","msg":"{}"}),
    )
    .await;
    let error = early.recv().await;
    assert_eq!(error["cmd"], "error");
    assert_eq!(error["msg"], "join a room first");

    let (mut alice, mut bob) = (server.connect().await, server.connect().await);
    join(&mut alice, "spoof", "alice").await;
    join(&mut bob, "spoof", "bob").await;
    bob.recv().await;
    alice.recv().await;
    // Alice pretends to be Bob.
    cmd(
        &mut alice,
        json!({"cmd":"offer","roomId":"spoof","uid":"bob","remoteUid":"bob","msg":"{}"}),
    )
    .await;
    assert_eq!(alice.recv().await["msg"], "uid is not yours");
    // Alice writes to someone who is not her room mate.
    cmd(
        &mut alice,
        json!({"cmd":"offer","roomId":"spoof","uid":"alice","remoteUid":"mallory","msg":"{}"}),
    )
    .await;
    assert_eq!(alice.recv().await["msg"], "remoteUid is not in your room");
    // Unknown commands, wrong types and broken JSON get an error too.
    cmd(&mut alice, json!({"cmd":"dance"})).await;
    assert_eq!(alice.recv().await["cmd"], "error");
    cmd(&mut alice, json!({"cmd":"offer","roomId":"spoof","uid":"alice","remoteUid":"bob","msg":{"not":"a string"}})).await;
    assert_eq!(alice.recv().await["cmd"], "error");
    alice.send("{not json").await;
    assert_eq!(alice.recv().await["cmd"], "error");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_cmd_client_and_a_duet_client_meet_in_one_room() {
    let server = TestServer::start().await;
    let mut duet = server.connect().await;
    let joined = duet.join("mixed").await;
    let duet_id = joined["id"].as_str().unwrap().to_owned();
    let mut classic = server.connect().await;
    join(&mut classic, "mixed", "bob").await;
    assert_eq!(
        classic.recv().await,
        json!({"cmd":"resp-join","remoteUid":duet_id})
    );
    let other = duet.recv().await;
    assert_eq!(other["type"], "other_joined");
    let bob_id = other["id"].clone();

    // The web client's offer reaches the classic client as a cmd offer...
    let description = json!({"type":"offer","sdp":"v=0\r\n"});
    duet.send_json(json!({"type":"message","data":{"kind":"sdp","description":description}}))
        .await;
    let offer = classic.recv().await;
    assert_eq!(offer["cmd"], "offer");
    assert_eq!(offer["uid"], duet_id.as_str());
    assert_eq!(offer["remoteUid"], "bob");
    let msg: Value = serde_json::from_str(offer["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg, description);
    // ...and its answer and candidates reach the web client in its own format.
    let answer = json!({"type":"answer","sdp":"v=0\r\n"});
    cmd(&mut classic, json!({"cmd":"answer","roomId":"mixed","uid":"bob","remoteUid":duet_id,"msg":answer.to_string()})).await;
    let got = duet.recv().await;
    assert_eq!(got["type"], "message");
    assert_eq!(got["from"], bob_id);
    assert_eq!(got["data"], json!({"kind":"sdp","description":answer}));
    let candidate = json!({"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0"});
    cmd(&mut classic, json!({"cmd":"candidate","roomId":"mixed","uid":"bob","remoteUid":duet_id,"msg":candidate.to_string()})).await;
    assert_eq!(
        duet.recv().await["data"],
        json!({"kind":"ice","candidate":candidate})
    );

    // A classic client cannot resume: when its socket drops, the other is told at once.
    classic.drop_abruptly();
    match duet.next_event(Duration::from_secs(2)).await {
        Some(Event::Json(bye)) => assert_eq!(bye["type"], "bye"),
        other => panic!("expected bye at once, got {other:?}"),
    }
}

#[tokio::test]
async fn cmd_clients_do_not_disturb_other_rooms() {
    let server = TestServer::start().await;
    let (mut a, mut b, _, _) = pair(&server, "quiet-room").await;
    let mut noisy = server.connect().await;
    join(&mut noisy, "noisy", "n").await;
    for _ in 0..20 {
        cmd(
            &mut noisy,
            json!({"cmd":"offer","roomId":"noisy","uid":"n","remoteUid":"nobody","msg":"{}"}),
        )
        .await;
    }
    // A frame over the limit ends the noisy connection (1009; the frame may be
    // lost to a reset, since the client left answers unread) and nothing else.
    let huge = format!(
        r#"{{"cmd":"join","roomId":"noisy","uid":"{}"}}"#,
        "x".repeat(70_000)
    );
    noisy.send(&huge).await;
    assert!(matches!(
        noisy.expect_close(Duration::from_secs(3)).await,
        Some(1009) | None
    ));
    a.send_json(json!({"type":"message","data":{"hello":1}}))
        .await;
    assert_eq!(b.recv().await["data"], json!({"hello":1}));
}
