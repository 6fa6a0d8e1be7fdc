//! What a call counts: negotiation steps, candidates, media each way, and the
//! transport figures str0m reports (RTT, selected pair, losses). Plain data,
//! filled by the call, read by the live line and the final report.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
}
