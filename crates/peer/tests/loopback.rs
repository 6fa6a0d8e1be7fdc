//! Native peers calling each other through a real Duet server on loopback:
//! host candidates, Duet's TURN relay, and the ways a call goes wrong (a peer
//! that never answers, garbage SDP, the server going away), which must end
//! in a clear error within the timeout, never a hang or a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use duet_peer::driver;
use duet_peer::report::{Outcome, Report};
use duet_peer::wire::{ClientMessage, Description, DescriptionKind, PeerMessage, ServerMessage};

use common::{Duet, crypto, expect};

/// At least a second of each kind arrived (the first peer to reach its
/// duration leaves, which can cut the other's media short of its own).
fn assert_media(report: &Report) {
    assert_eq!(report.outcome, Outcome::Ok, "{report:#?}");
    let video = &report.received.video;
    let audio = &report.received.audio;
    assert!(video.frames >= 30, "video frames {}", video.frames);
    assert!(video.keyframes >= 1, "no keyframe");
    assert!(audio.frames >= 50, "audio frames {}", audio.frames);
    assert!(report.time_to_connected_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_peers_call_each_other_and_chat() {
    let duet = Duet::start().await;
    let mut first = duet.peer("pair", "first");
    first.echo = true;
    let mut second = duet.peer("pair", "second");
    second.chat = Some("hello from the second".into());
    let first = tokio::spawn(driver::run(first, crypto()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = driver::run(second, crypto()).await;
    let first = first.await.unwrap();

    assert_media(&first);
    assert_media(&second);
    assert_eq!(
        second.identity.offerer,
        Some(true),
        "the member who joins second offers"
    );
    assert_eq!(first.identity.offerer, Some(false));
    assert_ne!(first.identity.polite, second.identity.polite);
    assert_eq!(first.candidates.local, Some("host"));
    // A relay candidate was gathered too (the default, as in a browser); the
    // direct pair won.
    assert!(first.candidates.relay_address.is_some(), "{first:#?}");
    assert!(second.candidates.relay_address.is_some());
    assert_eq!((first.chat.received, first.chat.echoed), (1, 1));
    assert_eq!(second.chat.received, 1, "the echo came back");
    assert_eq!(second.sent.video.packets_lost, 0);

    // Both told the server how their call went (a set-up when connected, a
    // summary at the end), and it counted them.
    let metrics = &duet.server.as_ref().unwrap().state.metrics;
    let wanted = [
        r#"duet_call_setups_total{outcome="connected"} 2"#,
        r#"duet_call_paths_total{path="direct",transport="udp"} 2"#,
        "duet_call_summaries_total 2",
        "duet_call_rtt_seconds_count 2",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut text = metrics.encode();
    while !wanted.iter().all(|line| text.contains(line)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = metrics.encode();
    }
    for line in wanted {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_calls_go_through_duets_turn() {
    let duet = Duet::start().await;
    let mut first = duet.peer("relayed", "first");
    first.relay_only = true;
    let mut second = duet.peer("relayed", "second");
    second.relay_only = true;
    let first = tokio::spawn(driver::run(first, crypto()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = driver::run(second, crypto()).await;
    let first = first.await.unwrap();

    assert_media(&first);
    assert_media(&second);
    for report in [&first, &second] {
        assert_eq!(report.candidates.local, Some("relay"), "{report:#?}");
        assert_eq!(report.candidates.remote, Some("relay"));
        assert_eq!(
            report.candidates.local_address,
            report.candidates.relay_address
        );
    }
    let stats = duet.server.as_ref().unwrap().relay_stats().unwrap();
    assert!(stats.allocations_total >= 2, "{stats:?}");
    assert!(
        stats.to_peer_packets + stats.to_client_packets > 500,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_ends_in_no_media_at_the_timeout() {
    let duet = Duet::start().await;
    let (_silent_sender, _silent_receiver, _) = duet.raw_client("silent").await;
    let mut peer = duet.peer("silent", "caller");
    peer.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let report = driver::run(peer, crypto()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(report.outcome, Outcome::NoMedia);
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no media arrived within 2")
    );
    assert_eq!(report.negotiation.offers_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_answer_is_a_clear_error() {
    let duet = Duet::start().await;
    let (mut sender, mut receiver, _) = duet.raw_client("garbage-answer").await;
    let peer = tokio::spawn(driver::run(duet.peer("garbage-answer", "caller"), crypto()));
    // The native peer joins second and offers; answer it with garbage.
    expect(
        &mut receiver,
        |m| matches!(m, ServerMessage::Message { data, .. } if matches!(PeerMessage::from_raw(data), Ok(PeerMessage::Sdp { .. }))),
    )
    .await;
    let garbage = PeerMessage::Sdp {
        description: Description {
            kind: DescriptionKind::Answer,
            sdp: "v=0\r\nthis is not a session description\r\n".into(),
        },
    };
    sender
        .send(&ClientMessage::message(&garbage).unwrap())
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Error);
    let error = report.error.unwrap();
    assert!(error.contains("bad answer"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_or_truncated_offer_is_a_clear_error() {
    let duet = Duet::start().await;
    let peer = tokio::spawn(driver::run(duet.peer("garbage-offer", "callee"), crypto()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Joining second, the raw client is the one expected to offer.
    let (mut sender, _receiver, _) = duet.raw_client("garbage-offer").await;
    let truncated = PeerMessage::Sdp {
        description: Description {
            kind: DescriptionKind::Offer,
            sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAV"
                .into(),
        },
    };
    sender
        .send(&ClientMessage::message(&truncated).unwrap())
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Error);
    assert!(
        report.error.as_deref().unwrap().contains("bad offer"),
        "{:?}",
        report.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signaling_server_that_goes_away_is_a_clear_error() {
    let mut duet = Duet::start().await;
    let mut first = duet.peer("vanishing", "first");
    first.duration = None; // would stay until the other leaves
    let mut second = duet.peer("vanishing", "second");
    second.duration = None;
    let first = tokio::spawn(driver::run(first, crypto()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn(driver::run(second, crypto()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = Instant::now();
    duet.stop().await;
    for peer in [first, second] {
        let report = tokio::time::timeout(Duration::from_secs(10), peer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.outcome, Outcome::Error, "{report:#?}");
        let error = report.error.unwrap();
        assert!(error.contains("signaling connection was lost"), "{error}");
        // Media had flowed before the server left.
        assert!(report.received.video.frames > 30);
    }
    assert!(stopped.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_mode_runs_calls_in_pairs_through_the_relay() {
    let duet = Duet::start().await;
    let mut template = duet.peer("load", "");
    template.relay_only = true;
    template.duration = Some(Duration::from_secs(2));
    let started = Instant::now();
    let report = duet_peer::load::run(3, template, crypto(), None).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(report.calls, 3);
    assert_eq!(report.calls_with_media_both_ways, 3, "{:?}", report.errors);
    assert_eq!(report.peers.len(), 6);
    let rooms: std::collections::BTreeSet<&str> = report
        .peers
        .iter()
        .map(|p| p.identity.room.as_str())
        .collect();
    assert_eq!(
        rooms.into_iter().collect::<Vec<_>>(),
        ["load-0", "load-1", "load-2"]
    );
    assert!(
        report
            .peers
            .iter()
            .all(|p| p.candidates.local == Some("relay"))
    );
    assert!(report.packets_sent > 500);
    assert!(report.loss_percent < 1.0, "{}", report.loss_percent);
    assert!(
        report.received_kbps.min > 100.0,
        "{:?}",
        report.received_kbps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stays_takes_one_call_after_another_and_gives_relays_back() {
    let duet = Duet::start().await;
    let mut bot = duet.peer("bot-room", "bot");
    bot.stay = true;
    bot.duration = None;
    bot.relay_only = true;
    bot.max_duration = Duration::from_secs(16);
    // Each call has its own timeout, counted from its start: the waits between
    // and after the visitors are longer than it, and must not count.
    bot.timeout = Duration::from_secs(4);
    let record = std::env::temp_dir().join(format!("duet-peer-bot-{}", std::process::id()));
    bot.record_dir = Some(record.clone());
    let bot = tokio::spawn(driver::run(bot, crypto()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    for visitor in ["first visitor", "second visitor"] {
        let mut options = duet.peer("bot-room", visitor);
        options.relay_only = true;
        options.duration = Some(Duration::from_secs(2));
        let report = driver::run(options, crypto()).await;
        assert_media(&report);
        assert_eq!(
            report.identity.offerer,
            Some(true),
            "{visitor} joined second"
        );
        assert_eq!(report.candidates.remote, Some("relay"), "{report:#?}");
        // The visitor left; the bot hangs up and gives its allocation back
        // (both sides' allocations are freed at once, not at their expiry).
        let relay = duet.server.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while relay.relay_stats().unwrap().allocations > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(relay.relay_stats().unwrap().allocations, 0);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    let bot = bot.await.unwrap();
    assert_eq!(bot.outcome, Outcome::Ok, "{bot:#?}");
    assert_eq!((bot.identity.calls, bot.identity.calls_with_media), (2, 2));
    assert_eq!(bot.identity.offerer, Some(false), "the bot was there first");
    assert!(bot.received.video.frames >= 30, "the last call's figures");
    // Each call recorded on its own, from a keyframe.
    for call in ["call-1", "call-2"] {
        let video = std::fs::read(record.join(call).join("received-video.ivf")).unwrap();
        assert!(video.starts_with(b"DKIF") && video.len() > 10_000, "{call}");
        assert!(
            record.join(call).join("received-audio.ogg").exists(),
            "{call}"
        );
    }
    std::fs::remove_dir_all(&record).unwrap();
    assert_eq!(
        duet.server
            .as_ref()
            .unwrap()
            .relay_stats()
            .unwrap()
            .allocations_total,
        4
    );
}
