//! Two calls talking to each other in one thread, in simulated time: datagrams
//! and signaling messages travel through queues with a fixed latency, and the
//! clock jumps from one deadline to the next. Seconds of call take
//! milliseconds, and nothing depends on the machine's speed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::media::{
    Clip, DEFAULT_AUDIO, DEFAULT_FPS, DEFAULT_H264_VIDEO, DEFAULT_VIDEO, MediaCodec, h264,
};
use crate::wire::{Description, DescriptionKind, IceCandidate};

const NETWORK_LATENCY: Duration = Duration::from_millis(5);
const SIGNALING_LATENCY: Duration = Duration::from_millis(20);

struct Side {
    call: Call,
    addr: SocketAddr,
    events: Vec<CallEvent>,
    /// Messages this side sent to the other (all of them, for inspection).
    sent: Vec<PeerMessage>,
}

impl Side {
    fn chats(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Chat { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn failure(&self) -> Option<&CallError> {
        self.events.iter().find_map(|e| match e {
            CallEvent::Failed(error) => Some(error),
            _ => None,
        })
    }
}

type Tamper = Box<dyn FnMut(&PeerMessage) -> Option<PeerMessage>>;

/// In-flight datagrams and messages.
#[derive(Default)]
struct Network {
    datagrams: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// (due, to side a?, message)
    messages: VecDeque<(Instant, bool, PeerMessage)>,
    /// Rewrites (or drops, with None) signaling messages, for tests that tamper.
    tamper: Option<Tamper>,
    /// Every datagram is lost (the path is broken; signaling still works).
    broken: bool,
}

impl Network {
    fn next_due(&self) -> Option<Instant> {
        let datagram = self.datagrams.front().map(|d| d.0);
        let message = self.messages.front().map(|m| m.0);
        match (datagram, message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn clips() -> (Arc<Clip>, Arc<Clip>) {
    (
        Arc::new(Clip::from_ivf(DEFAULT_VIDEO).unwrap()),
        Arc::new(Clip::from_ogg_opus(DEFAULT_AUDIO).unwrap()),
    )
}

fn config(port: u16, polite: bool, initiator: bool) -> CallConfig {
    let (video, audio) = clips();
    CallConfig {
        polite,
        initiator,
        local_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        host_candidate: true,
        turn: None,
        video: Some(video),
        audio: Some(audio),
        echo: true,
        deliver_media: false,
        report_bytes: false,
        crypto: Arc::new(str0m::crypto::from_feature_flags()),
    }
}

struct Harness {
    now: Instant,
    a: Side,
    b: Side,
    net: Network,
}

impl Harness {
    /// `a` joined first and waits for `b`'s offer, as in a Duet room; `a` is polite.
    fn new() -> Self {
        Self::with(config(10_000, true, false), config(20_000, false, true))
    }

    fn with(a: CallConfig, b: CallConfig) -> Self {
        let now = Instant::now();
        let side = |config: CallConfig| Side {
            addr: config.local_addr,
            call: Call::new(config, now),
            events: Vec::new(),
            sent: Vec::new(),
        };
        Self {
            now,
            a: side(a),
            b: side(b),
            net: Network::default(),
        }
    }

    /// Moves outputs into the network, then runs until `duration` has passed.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..1_000_000 {
            self.collect();
            let mut next = self.a.call.poll_timeout().min(self.b.call.poll_timeout());
            if let Some(due) = self.net.next_due() {
                next = next.min(due);
            }
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            self.deliver();
            self.a.call.handle_timeout(self.now);
            self.b.call.handle_timeout(self.now);
        }
        panic!("the simulation did not reach its end");
    }

    fn collect(&mut self) {
        let now = self.now;
        for (side, to_a) in [(&mut self.a, false), (&mut self.b, true)] {
            while let Some(output) = side.call.poll_output() {
                match output {
                    CallOutput::Send(message) => {
                        side.sent.push(message.clone());
                        let message = match &mut self.net.tamper {
                            Some(tamper) => tamper(&message),
                            None => Some(message),
                        };
                        if let Some(message) = message {
                            self.net
                                .messages
                                .push_back((now + SIGNALING_LATENCY, to_a, message));
                        }
                    }
                    CallOutput::Transmit {
                        destination,
                        contents,
                    } => self.net.datagrams.push_back((
                        now + NETWORK_LATENCY,
                        side.addr,
                        destination,
                        contents,
                    )),
                    CallOutput::Event(event) => side.events.push(event),
                }
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        while self.net.datagrams.front().is_some_and(|d| d.0 <= now) {
            let Some((_, from, to, contents)) = self.net.datagrams.pop_front() else {
                break;
            };
            if self.net.broken {
                continue;
            }
            for side in [&mut self.a, &mut self.b] {
                if side.addr == to {
                    side.call.handle_datagram(from, &contents, now);
                }
            }
        }
        while self.net.messages.front().is_some_and(|m| m.0 <= now) {
            let Some((_, to_a, message)) = self.net.messages.pop_front() else {
                break;
            };
            let side = if to_a { &mut self.a } else { &mut self.b };
            side.call.handle_message(message, now);
        }
    }
}

fn assert_media_flowed(side: &Side, seconds: u64) {
    let stats = side.call.stats();
    assert!(stats.connected_at.is_some(), "not connected");
    let video = &stats.received.video;
    let audio = &stats.received.audio;
    // 30 fps and 50 packets per second, minus set-up time.
    assert!(
        video.frames >= 25 * seconds,
        "video frames {}",
        video.frames
    );
    assert!(video.keyframes >= 1, "no keyframe");
    assert!(
        audio.frames >= 40 * seconds,
        "audio frames {}",
        audio.frames
    );
    assert!(video.packets >= video.frames, "packets {}", video.packets);
    assert_eq!(stats.sent.video.packets_lost, 0);
}

#[test]
fn media_and_chat_flow_both_ways() {
    let mut h = Harness::new();
    h.run(Duration::from_secs(4));
    assert!(h.a.call.is_connected() && h.b.call.is_connected());
    assert_media_flowed(&h.a, 3);
    assert_media_flowed(&h.b, 3);
    assert_eq!(h.a.call.stats().negotiation.offers_sent, 0);
    assert_eq!(h.b.call.stats().negotiation.offers_sent, 1);
    assert_eq!(h.a.call.stats().negotiation.answers_sent, 1);
    assert_eq!(h.a.call.stats().local_candidate_type, Some("host"));
    assert_eq!(h.a.call.stats().remote_candidate_type, Some("host"));
    assert!(h.a.call.stats().rtt.is_some());
    assert!(h.a.call.stats().channel_open_at.is_some());

    // Chat on the data channel; the other side echoes it.
    h.b.call.send_chat("hello", h.now);
    h.run(Duration::from_millis(500));
    assert_eq!(h.a.chats(), ["hello"]);
    assert_eq!(h.b.chats(), ["echo: hello"]);
    // Neither side relayed chat through signaling: the channel carried it.
    assert!(
        !h.b.sent
            .iter()
            .any(|m| matches!(m, PeerMessage::Chat { .. }))
    );
}

#[test]
fn crossing_offers_resolve_by_politeness() {
    // Both offer at once: a (polite) gives way and starts over, b ignores a's offer.
    let mut h = Harness::with(config(10_000, true, true), config(20_000, false, true));
    h.run(Duration::from_secs(3));
    let a = &h.a.call.stats().negotiation;
    let b = &h.b.call.stats().negotiation;
    assert_eq!((a.rollbacks, a.fresh_starts, a.answers_sent), (1, 1, 1));
    assert_eq!((b.offers_ignored, b.answers_received), (1, 1));
    assert_eq!(a.unexpected_answers + b.unexpected_answers, 0);
    assert_media_flowed(&h.a, 2);
    assert_media_flowed(&h.b, 2);
}

#[test]
fn a_side_without_media_still_receives() {
    let mut quiet = config(10_000, true, false);
    quiet.video = None;
    quiet.audio = None;
    let mut h = Harness::with(quiet, config(20_000, false, true));
    h.run(Duration::from_secs(3));
    assert_media_flowed(&h.a, 2);
    assert_eq!(h.b.call.stats().received.video.frames, 0);
    assert!(h.b.failure().is_none() && h.a.failure().is_none());
}

#[test]
fn early_candidates_wait_for_their_description() {
    let mut h = Harness::new();
    // b's host candidate, trickled ahead of the offer it belongs to.
    let early = PeerMessage::Ice {
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 20000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        },
    };
    h.a.call.handle_message(early, h.now);
    assert_eq!(h.a.call.stats().negotiation.candidates_queued, 1);
    h.run(Duration::from_secs(2));
    assert!(h.a.call.is_connected());
}

#[test]
fn unusable_candidates_are_counted_not_fatal() {
    let mut h = Harness::new();
    h.run(Duration::from_secs(1));
    for line in [
        "candidate:1 1 udp 2130706431 3f2a1c9e-1111-4c3e-9e5b-1234567890ab.local 5000 typ host",
        "candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
        "candidate:garbage",
        "", // end of candidates
    ] {
        h.a.call.handle_message(
            PeerMessage::Ice {
                candidate: IceCandidate {
                    candidate: line.into(),
                    sdp_mid: None,
                    sdp_m_line_index: Some(0),
                    username_fragment: None,
                },
            },
            h.now,
        );
    }
    h.run(Duration::from_secs(1));
    assert_eq!(h.a.call.stats().negotiation.candidates_rejected, 3);
    assert!(h.a.failure().is_none());
    assert!(h.a.call.is_connected());
}

fn offer(sdp: &str) -> PeerMessage {
    PeerMessage::Sdp {
        description: Description {
            kind: DescriptionKind::Offer,
            sdp: sdp.to_owned(),
        },
    }
}

#[test]
fn a_garbage_offer_fails_the_call_with_a_clear_error() {
    let mut h = Harness::new();
    h.a.call.handle_message(offer("this is not SDP"), h.now);
    h.collect();
    match h.a.failure() {
        Some(CallError::BadDescription {
            kind: "offer",
            reason,
        }) => assert!(!reason.is_empty()),
        other => panic!("expected a bad offer, got {other:?}"),
    }
    assert!(h.a.call.has_failed());
    // A failed call stays quiet and keeps no timers running for media.
    h.run(Duration::from_secs(1));
    assert!(h.a.call.stats().sent.video.frames == 0);
}

#[test]
fn a_garbage_answer_fails_the_offerer() {
    let mut h = Harness::new();
    h.net.tamper = Some(Box::new(|message| match message {
        PeerMessage::Sdp { description } if description.kind == DescriptionKind::Answer => {
            Some(PeerMessage::Sdp {
                description: Description {
                    kind: DescriptionKind::Answer,
                    sdp: "v=0\r\nm=garbage\r\n".into(),
                },
            })
        }
        other => Some(other.clone()),
    }));
    h.run(Duration::from_secs(1));
    assert!(matches!(
        h.b.failure(),
        Some(CallError::BadDescription { kind: "answer", .. })
    ));
}

#[test]
fn mangled_offers_never_panic() {
    // Take a real offer and feed truncated and corrupted copies to fresh calls.
    let h = Harness::new();
    let Some(PeerMessage::Sdp { description }) = h.b.call.outputs.iter().find_map(|o| match o {
        CallOutput::Send(message) => Some(message.clone()),
        _ => None,
    }) else {
        panic!("b made no offer");
    };
    let sdp = description.sdp;
    let mut variants: Vec<String> = (1..20)
        .map(|i| sdp.chars().take(sdp.len() * i / 20).collect())
        .collect();
    for index in 0..sdp.lines().count() {
        let without: Vec<&str> = sdp
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, l)| l)
            .collect();
        variants.push(without.join("\r\n"));
    }
    variants.push(sdp.replace("a=fingerprint", "a=fingerprunt"));
    variants.push(sdp.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"));
    variants.push("\u{0}\u{ffff}".repeat(100));
    let now = Instant::now();
    let mut failures = 0;
    for variant in variants {
        let mut call = Call::new(config(10_000, true, false), now);
        call.handle_message(offer(&variant), now);
        call.handle_timeout(now + Duration::from_millis(100));
        while let Some(output) = call.poll_output() {
            failures += usize::from(matches!(output, CallOutput::Event(CallEvent::Failed(_))));
        }
    }
    assert!(failures > 10, "only {failures} variants were refused");
}

#[test]
fn an_answer_without_an_offer_is_ignored() {
    let mut h = Harness::new();
    h.a.call.handle_message(
        PeerMessage::Sdp {
            description: Description {
                kind: DescriptionKind::Answer,
                sdp: "v=0".into(),
            },
        },
        h.now,
    );
    assert_eq!(h.a.call.stats().negotiation.unexpected_answers, 1);
    h.run(Duration::from_secs(2));
    assert!(h.a.call.is_connected());
}

#[test]
fn chat_through_signaling_is_echoed_through_signaling() {
    let mut h = Harness::new();
    h.a.call.handle_message(
        PeerMessage::Chat {
            text: "before the channel".into(),
        },
        h.now,
    );
    h.collect();
    assert!(h.a.sent.contains(&PeerMessage::Chat {
        text: "echo: before the channel".into()
    }));
}

#[test]
fn received_frames_are_delivered_for_recording() {
    let mut recording = config(10_000, true, false);
    recording.deliver_media = true;
    let mut h = Harness::with(recording, config(20_000, false, true));
    h.run(Duration::from_secs(2));
    let video = received_frames(&h.a, Kind::Video);
    assert!(video.len() > 20);
    // The first video frame received is a keyframe, sent as the clip starts.
    assert!(video[0].keyframe);
    // What arrives is what the clip holds.
    let clip = Clip::from_ivf(DEFAULT_VIDEO).unwrap();
    assert_eq!(&*video[1].data, &*clip.frames[1].data);
}

fn h264_config(port: u16, polite: bool, initiator: bool) -> CallConfig {
    let mut config = config(port, polite, initiator);
    config.video = Some(Arc::new(
        Clip::from_h264(DEFAULT_H264_VIDEO, DEFAULT_FPS).unwrap(),
    ));
    config
}

fn received_frames(side: &Side, kind: Kind) -> Vec<&ReceivedFrame> {
    side.events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Frame(frame) if frame.kind == kind => Some(frame),
            _ => None,
        })
        .collect()
}

#[test]
fn h264_flows_both_ways_and_arrives_intact() {
    let mut a = h264_config(10_000, true, false);
    a.deliver_media = true;
    let mut h = Harness::with(a, h264_config(20_000, false, true));
    h.run(Duration::from_secs(4));
    assert_media_flowed(&h.a, 3);
    assert_media_flowed(&h.b, 3);
    for side in [&h.a, &h.b] {
        assert_eq!(side.call.stats().sent.video.codec, Some("H264"));
        assert_eq!(side.call.stats().received.video.codec, Some("H264"));
    }
    // Every picture's NAL units arrive as sent (the delimiters are the
    // packetizer's to drop), keyframes where the clip has them.
    let clip = Clip::from_h264(DEFAULT_H264_VIDEO, DEFAULT_FPS).unwrap();
    let video = received_frames(&h.a, Kind::Video);
    assert!(video.len() > 60, "{}", video.len());
    assert!(video.iter().all(|f| f.codec == MediaCodec::H264));
    for (index, frame) in video.iter().take(60).enumerate() {
        let not_aud = |nal: &&[u8]| nal.first().is_some_and(|h| h & 0x1f != 9);
        let sent: Vec<&[u8]> = h264::nal_payloads(&clip.frames[index].data)
            .into_iter()
            .filter(not_aud)
            .collect();
        let got: Vec<&[u8]> = h264::nal_payloads(&frame.data)
            .into_iter()
            .filter(not_aud)
            .collect();
        assert_eq!(got, sent, "frame {index}");
        assert_eq!(frame.keyframe, clip.frames[index].keyframe, "frame {index}");
    }
}

#[test]
fn each_side_sends_its_own_codec() {
    // The H.264 side offers; the VP8 side answers with both codecs, and each
    // sends what its clip holds.
    let mut h = Harness::with(
        config(10_000, true, false),
        h264_config(20_000, false, true),
    );
    h.run(Duration::from_secs(3));
    assert_media_flowed(&h.a, 2);
    assert_media_flowed(&h.b, 2);
    assert_eq!(h.a.call.stats().received.video.codec, Some("H264"));
    assert_eq!(h.b.call.stats().received.video.codec, Some("VP8"));
    assert_eq!(h.a.call.stats().sent.video.codec, Some("VP8"));
}

#[test]
fn a_path_that_stays_broken_is_restarted_and_media_resumes() {
    let mut h = Harness::new();
    h.run(Duration::from_secs(3));
    assert_media_flowed(&h.a, 2);
    let offers_before =
        h.b.sent
            .iter()
            .chain(&h.a.sent)
            .filter(|m| is_offer(m))
            .count();

    // The path breaks for a while: ICE notices, and after 3 s of it the call
    // offers an ICE restart (new credentials), again every 3 s while broken.
    h.net.broken = true;
    h.run(Duration::from_secs(12));
    let restarts =
        h.a.call.stats().negotiation.ice_restarts + h.b.call.stats().negotiation.ice_restarts;
    assert!(
        restarts >= 1,
        "no ICE restart: {:?}",
        h.a.events
            .iter()
            .filter(|e| !matches!(e, CallEvent::Frame(_)))
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
    );
    let offers: Vec<&PeerMessage> =
        h.b.sent
            .iter()
            .chain(&h.a.sent)
            .filter(|m| is_offer(m))
            .collect();
    assert!(offers.len() > offers_before);
    let ufrags: std::collections::HashSet<Option<String>> = offers
        .iter()
        .map(|m| match m {
            PeerMessage::Sdp { description } => negotiation::ice_ufrag(&description.sdp),
            _ => None,
        })
        .collect();
    assert!(
        ufrags.len() >= 2,
        "a restart offer carries new ICE credentials"
    );
    assert!(
        h.a.events
            .iter()
            .any(|e| matches!(e, CallEvent::Disconnected))
    );

    // The path comes back: media flows again, and the call never failed.
    h.net.broken = false;
    let before = h.a.call.stats().received.video.frames;
    h.run(Duration::from_secs(6));
    let after = h.a.call.stats().received.video.frames;
    assert!(
        after >= before + 60,
        "video did not resume: {before} -> {after}"
    );
    assert!(h.b.call.stats().received.video.frames > 0);
    assert!(h.a.failure().is_none() && h.b.failure().is_none());
    // Restarts stopped once connected again.
    let settled =
        h.a.call.stats().negotiation.ice_restarts + h.b.call.stats().negotiation.ice_restarts;
    h.run(Duration::from_secs(6));
    assert_eq!(
        h.a.call.stats().negotiation.ice_restarts + h.b.call.stats().negotiation.ice_restarts,
        settled
    );
}

fn is_offer(message: &PeerMessage) -> bool {
    matches!(message, PeerMessage::Sdp { description } if description.kind == DescriptionKind::Offer)
}
