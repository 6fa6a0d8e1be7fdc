//! A call's counters turned into what people read: the one-line live status
//! and the JSON report written at the end. Pure functions of the counters and
//! `now`.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::call::stats::{CallStats, Kind, NegotiationCounters, Received, Sent};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Media arrived and nothing failed.
    Ok,
    /// No media arrived within the timeout.
    NoMedia,
    /// Something failed (signaling, negotiation, relay).
    Error,
}

/// Who we were in the room.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Identity {
    pub room: String,
    pub id: Option<String>,
    pub peer: Option<String>,
    pub offerer: Option<bool>,
    pub polite: Option<bool>,
    /// Calls in this run (more than one with `--stay`; the figures below are
    /// the last one's), and how many of them brought media.
    pub calls: u64,
    pub calls_with_media: u64,
}

/// The final report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub error: Option<String>,
    #[serde(flatten)]
    pub identity: Identity,
    pub duration_ms: u64,
    /// From the start of the run (before signaling) to ICE+DTLS connected.
    pub time_to_connected_ms: Option<u64>,
    pub time_to_first_frame_ms: Directions<Option<u64>>,
    pub received: ByKind<ReceivedReport>,
    pub sent: ByKind<SentReport>,
    pub rtt_ms: Option<f64>,
    pub candidates: CandidateReport,
    pub chat: ChatReport,
    pub negotiation: NegotiationCounters,
    pub problems: u64,
    /// The six digits both callers see (the web client shows the same), from
    /// the two DTLS fingerprints; null before descriptions were exchanged.
    pub verification_code: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Directions<T> {
    pub received: ByKind<T>,
    pub sent: ByKind<T>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ByKind<T> {
    pub audio: T,
    pub video: T,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReceivedReport {
    pub codec: Option<&'static str>,
    pub frames: u64,
    pub keyframes: u64,
    pub packets: u64,
    pub packets_lost: u64,
    pub bytes: u64,
    pub bitrate_kbps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SentReport {
    pub codec: Option<&'static str>,
    pub frames: u64,
    pub keyframes: u64,
    pub packets: u64,
    /// As the other side reports it (RTCP receiver reports).
    pub packets_lost: u64,
    pub bytes: u64,
    pub bitrate_kbps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    pub local: Option<&'static str>,
    pub remote: Option<&'static str>,
    pub local_address: Option<String>,
    pub remote_address: Option<String>,
    pub relay_address: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub received: u64,
    pub echoed: u64,
}

impl Report {
    /// The report of a peer whose task died before it could report.
    #[must_use]
    pub fn lost(error: &str) -> Self {
        let now = Instant::now();
        build(
            None,
            Identity::default(),
            now,
            now,
            Some(format!("the peer stopped abnormally: {error}")),
        )
    }
}

/// Builds the report of a run that began at `started` and ends at `now`.
#[must_use]
pub fn build(
    stats: Option<&CallStats>,
    identity: Identity,
    started: Instant,
    now: Instant,
    error: Option<String>,
) -> Report {
    let outcome = match (&error, stats) {
        (Some(_), _) => Outcome::Error,
        (None, Some(stats)) if stats.any_media_received() => Outcome::Ok,
        (None, _) => Outcome::NoMedia,
    };
    let since_start =
        |at: Option<Instant>| at.map(|at| millis(at.saturating_duration_since(started)));
    let empty = CallStats::new(started);
    let stats = stats.unwrap_or(&empty);
    let per_kind_received = |kind: Kind| received_report(stats.received.get(kind), now);
    let per_kind_sent = |kind: Kind| sent_report(stats.sent.get(kind), now);
    Report {
        outcome,
        error,
        identity,
        duration_ms: millis(now.saturating_duration_since(started)),
        time_to_connected_ms: since_start(stats.connected_at),
        time_to_first_frame_ms: Directions {
            received: ByKind {
                audio: since_start(stats.received.audio.first_at),
                video: since_start(stats.received.video.first_at),
            },
            sent: ByKind {
                audio: since_start(stats.sent.audio.first_at),
                video: since_start(stats.sent.video.first_at),
            },
        },
        received: ByKind {
            audio: per_kind_received(Kind::Audio),
            video: per_kind_received(Kind::Video),
        },
        sent: ByKind {
            audio: per_kind_sent(Kind::Audio),
            video: per_kind_sent(Kind::Video),
        },
        rtt_ms: stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
        candidates: CandidateReport {
            local: stats.local_candidate_type,
            remote: stats.remote_candidate_type,
            local_address: stats.selected_pair.map(|(local, _)| local.to_string()),
            remote_address: stats.selected_pair.map(|(_, remote)| remote.to_string()),
            relay_address: stats.relay_address.map(|addr| addr.to_string()),
        },
        chat: ChatReport {
            received: stats.chat_received,
            echoed: stats.chat_echoed,
        },
        negotiation: stats.negotiation.clone(),
        problems: stats.problems,
        verification_code: stats.verification_code.clone(),
    }
}

/// One line for the terminal: where the call is and how media flows.
#[must_use]
pub fn live_line(stats: Option<&CallStats>, started: Instant, now: Instant, state: &str) -> String {
    let elapsed = now.saturating_duration_since(started).as_secs_f64();
    let Some(stats) = stats else {
        return format!("{elapsed:6.1}s {state}");
    };
    let video_in = &stats.received.video;
    let audio_in = &stats.received.audio;
    let rtt = stats.rtt.map_or_else(
        || "-".to_owned(),
        |rtt| format!("{:.0}ms", rtt.as_secs_f64() * 1000.0),
    );
    format!(
        "{elapsed:6.1}s {state} | video in {} fr {} key {:.0} kbit/s out {} fr | audio in {} out {} | lost in {} out {} | rtt {rtt} | {}",
        video_in.frames,
        video_in.keyframes,
        received_report(video_in, now).bitrate_kbps,
        stats.sent.video.frames,
        audio_in.frames,
        stats.sent.audio.frames,
        video_in.packets_lost() + audio_in.packets_lost(),
        stats.sent.video.packets_lost + stats.sent.audio.packets_lost,
        stats.local_candidate_type.unwrap_or("-"),
    )
}

fn received_report(received: &Received, now: Instant) -> ReceivedReport {
    ReceivedReport {
        codec: received.codec,
        frames: received.frames,
        keyframes: received.keyframes,
        packets: received.packets,
        packets_lost: received.packets_lost(),
        bytes: received.bytes,
        bitrate_kbps: kbps(received.bytes, received.first_at, now),
    }
}

fn sent_report(sent: &Sent, now: Instant) -> SentReport {
    SentReport {
        codec: sent.codec,
        frames: sent.frames,
        keyframes: sent.keyframes,
        packets: sent.packets,
        packets_lost: sent.packets_lost,
        bytes: sent.bytes,
        bitrate_kbps: kbps(sent.bytes, sent.first_at, now),
    }
}

/// Payload bitrate between `first` and `now`.
fn kbps(bytes: u64, first: Option<Instant>, now: Instant) -> f64 {
    let Some(first) = first else {
        return 0.0;
    };
    let seconds = now.saturating_duration_since(first).as_secs_f64();
    if seconds < 0.1 {
        return 0.0;
    }
    let kbps = bytes as f64 * 8.0 / seconds / 1000.0;
    (kbps * 10.0).round() / 10.0
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_media_is_no_media_and_with_an_error_is_error() {
        let start = Instant::now();
        let stats = CallStats::new(start);
        let later = start + Duration::from_secs(5);
        let report = build(Some(&stats), Identity::default(), start, later, None);
        assert_eq!(report.outcome, Outcome::NoMedia);
        assert_eq!(report.duration_ms, 5000);
        let failed = build(None, Identity::default(), start, later, Some("boom".into()));
        assert_eq!(failed.outcome, Outcome::Error);
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["outcome"], "error");
        assert_eq!(json["error"], "boom");
        assert!(json["time_to_first_frame_ms"]["received"]["video"].is_null());
    }

    #[test]
    fn bitrates_and_times_come_from_the_counters() {
        let start = Instant::now();
        let mut stats = CallStats::new(start);
        stats.connected_at = Some(start + Duration::from_millis(300));
        stats.received.video.first_at = Some(start + Duration::from_secs(1));
        stats.received.video.frames = 60;
        stats.received.video.bytes = 250_000; // in 2 s: 1000 kbit/s
        let report = build(
            Some(&stats),
            Identity::default(),
            start,
            start + Duration::from_secs(3),
            None,
        );
        assert_eq!(report.outcome, Outcome::Ok);
        assert_eq!(report.time_to_connected_ms, Some(300));
        assert_eq!(report.time_to_first_frame_ms.received.video, Some(1000));
        assert!((report.received.video.bitrate_kbps - 1000.0).abs() < 0.01);
        let line = live_line(
            Some(&stats),
            start,
            start + Duration::from_secs(3),
            "connected",
        );
        assert!(line.contains("video in 60 fr"), "{line}");
    }
}
