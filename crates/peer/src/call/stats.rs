//! What a call counts: negotiation steps, candidates, media each way, and the
//! transport figures str0m reports (RTT, selected pair, losses). Plain data,
//! filled by the call, read by the live line and the final report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duet_signaling::report::{
    CallReport, CandidateType, Outcome, Path, Percentiles, RelayTransport, Setup, Summary,
    Transport,
};
use serde::Serialize;

/// A media kind, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Audio,
    Video,
}

/// One value per media kind.
#[derive(Debug, Clone, Default)]
pub struct PerKind<T> {
    pub audio: T,
    pub video: T,
}

impl<T> PerKind<T> {
    pub fn get(&self, kind: Kind) -> &T {
        match kind {
            Kind::Audio => &self.audio,
            Kind::Video => &self.video,
        }
    }

    pub fn get_mut(&mut self, kind: Kind) -> &mut T {
        match kind {
            Kind::Audio => &mut self.audio,
            Kind::Video => &mut self.video,
        }
    }
}

/// Media received of one kind.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The codec of the last frame (its SDP name).
    pub codec: Option<&'static str>,
    /// Frames assembled from RTP (audio: packets, one frame each).
    pub frames: u64,
    pub keyframes: u64,
    /// Payload bytes of the assembled frames.
    pub bytes: u64,
    /// RTP packets received (str0m's ingress statistics, once a second).
    pub packets: u64,
    /// RTP packets the sender says it sent (its sender reports).
    pub sender_packets: u64,
    pub first_at: Option<Instant>,
    pub first_keyframe_at: Option<Instant>,
    pub last_at: Option<Instant>,
}

impl Received {
    /// Packets sent but not received so far (an estimate: packets in flight
    /// when the sender report left count as lost until the next one).
    #[must_use]
    pub fn packets_lost(&self) -> u64 {
        self.sender_packets.saturating_sub(self.packets)
    }
}

/// Media sent of one kind.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// The codec sent (its SDP name), once negotiated.
    pub codec: Option<&'static str>,
    pub frames: u64,
    pub keyframes: u64,
    /// Payload bytes of the frames written.
    pub bytes: u64,
    /// RTP packets sent (str0m's egress statistics).
    pub packets: u64,
    /// RTP packets the other side reports lost (its receiver reports).
    pub packets_lost: u64,
    pub first_at: Option<Instant>,
}

/// Negotiation and ICE candidate counters (as the web client keeps them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NegotiationCounters {
    pub offers_sent: u64,
    pub answers_sent: u64,
    pub offers_received: u64,
    pub answers_received: u64,
    /// Colliding offers ignored (impolite side).
    pub offers_ignored: u64,
    /// Own offers rolled back (polite side).
    pub rollbacks: u64,
    /// First offers replaced by a fresh connection (polite side).
    pub fresh_starts: u64,
    /// Answers with no offer of ours outstanding.
    pub unexpected_answers: u64,
    /// ICE restarts we offered (the path stayed broken for a few seconds).
    pub ice_restarts: u64,
    pub candidates_sent: u64,
    pub candidates_received: u64,
    /// Arrived before their description; applied later.
    pub candidates_queued: u64,
    /// Not usable here (TCP, mDNS names, malformed).
    pub candidates_rejected: u64,
}

/// Everything a call counts.
#[derive(Debug, Clone)]
pub struct CallStats {
    pub started_at: Instant,
    pub connected_at: Option<Instant>,
    pub channel_open_at: Option<Instant>,
    pub received: PerKind<Received>,
    pub sent: PerKind<Sent>,
    pub rtt: Option<Duration>,
    /// The pair ICE selected: local and remote address.
    pub selected_pair: Option<(SocketAddr, SocketAddr)>,
    /// "host", "srflx", "prflx" or "relay".
    pub local_candidate_type: Option<&'static str>,
    pub remote_candidate_type: Option<&'static str>,
    pub relay_address: Option<SocketAddr>,
    pub chat_received: u64,
    pub chat_echoed: u64,
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
    pub negotiation: NegotiationCounters,
    /// Non-fatal problems (bad candidates, codec mismatches), counted.
    pub problems: u64,
    /// The verification code of the connection (see `crate::verify`), once
    /// both descriptions are known.
    pub verification_code: Option<String>,
}

impl CallStats {
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Self {
            started_at: now,
            connected_at: None,
            channel_open_at: None,
            received: PerKind::default(),
            sent: PerKind::default(),
            rtt: None,
            selected_pair: None,
            local_candidate_type: None,
            remote_candidate_type: None,
            relay_address: None,
            chat_received: 0,
            chat_echoed: 0,
            keyframe_requests_received: 0,
            keyframe_requests_sent: 0,
            negotiation: NegotiationCounters::default(),
            problems: 0,
            verification_code: None,
        }
    }

    /// True once media of any kind has arrived.
    #[must_use]
    pub fn any_media_received(&self) -> bool {
        self.received.audio.frames > 0 || self.received.video.frames > 0
    }

    /// The call report's set-up, once connected (docs/signaling-protocol.md,
    /// "Call reports"). This peer speaks UDP only, to its relay too.
    #[must_use]
    pub fn setup_report(&self) -> Option<CallReport> {
        let connected_at = self.connected_at?;
        let kind = |name: Option<&str>| match name? {
            "host" => Some(CandidateType::Host),
            "srflx" => Some(CandidateType::Srflx),
            "prflx" => Some(CandidateType::Prflx),
            "relay" => Some(CandidateType::Relay),
            _ => None,
        };
        let local = kind(self.local_candidate_type)?;
        let remote = kind(self.remote_candidate_type)?;
        let path = Path {
            local,
            remote,
            protocol: Transport::Udp,
            relay: (local == CandidateType::Relay).then_some(RelayTransport::Udp),
        };
        let setup = Setup {
            outcome: Outcome::Connected,
            millis: (connected_at - self.started_at).as_secs_f64() * 1000.0,
            path: Some(path),
            ice_state: None,
            candidate_errors: 0,
        };
        Some(CallReport {
            setup: Some(setup),
            summary: None,
        })
    }

    /// The call report's summary at `now`, once connected. This peer keeps
    /// whole-call figures, not per-second samples: each is given as both its
    /// p50 and its p95.
    #[must_use]
    pub fn summary_report(&self, now: Instant) -> Option<CallReport> {
        let connected_at = self.connected_at?;
        let seconds = now.saturating_duration_since(connected_at).as_secs_f64();
        let both = |value: f64| Percentiles {
            p50: value,
            p95: value,
        };
        let kbps = |bytes: u64| both(bytes as f64 * 8.0 / seconds.max(1.0) / 1000.0);
        let sent_packets = self.received.audio.sender_packets + self.received.video.sender_packets;
        let lost = self.received.audio.packets_lost() + self.received.video.packets_lost();
        let summary = Summary {
            duration_secs: seconds,
            rtt_ms: self.rtt.map(|rtt| both(rtt.as_secs_f64() * 1000.0)),
            loss_percent: (sent_packets > 0)
                .then(|| both((lost as f64 * 100.0 / sent_packets as f64).min(100.0))),
            jitter_ms: None,
            bitrate_in_kbps: Some(kbps(self.received.audio.bytes + self.received.video.bytes)),
            bitrate_out_kbps: Some(kbps(self.sent.audio.bytes + self.sent.video.bytes)),
            video_height: None,
            freezes: 0,
            ice_restarts: u32::try_from(self.negotiation.ice_restarts).unwrap_or(u32::MAX),
        };
        let report = CallReport {
            setup: None,
            summary: Some(summary),
        };
        report.check().is_ok().then_some(report)
    }
}
