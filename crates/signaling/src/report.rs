//! Call reports: what a client tells the server about its call, for the
//! operator's metrics (docs/signaling-protocol.md, "Call reports").
//!
//! A member sends `{"type":"report", "setup": {...}}` once its call has
//! connected, failed to connect or been given up, and `{"type":"report",
//! "summary": {...}}` when it ends. There are no addresses, names or ids in a
//! report, only how the call went. Everything is checked here like any other
//! frame from the network: known fields only, enums spelled as documented,
//! every number finite and within a stated bound; a report that breaks a rule
//! is refused whole, with the reason.
//!
//! Owns the shape and the bounds only; the hub decides what counts (one setup
//! and one summary per seat) and the driver turns what counts into metrics.

use serde::{Deserialize, Serialize};

/// Largest report frame accepted, in bytes.
pub const REPORT_MAX_BYTES: usize = 4 * 1024;

/// A call report: its set-up, its summary, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Setup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// How the call got going, or did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    pub outcome: Outcome,
    /// From the moment both members were in the room to the outcome, in ms.
    #[serde(rename = "ms")]
    pub millis: f64,
    /// The selected candidate pair, when connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Path>,
    /// The ICE connection state when the call was given up (failed only).
    #[serde(default, rename = "iceState", skip_serializing_if = "Option::is_none")]
    pub ice_state: Option<IceState>,
    /// `icecandidateerror` events seen (a STUN or TURN server not reached).
    #[serde(default, rename = "candidateErrors")]
    pub candidate_errors: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Media flows.
    Connected,
    /// No connection within the client's patience (the web client: 30 s).
    Failed,
    /// Given up by a person (hang-up, the other left) before it connected.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceState {
    New,
    Checking,
    Disconnected,
    Failed,
    Closed,
}

/// The selected candidate pair, by kind only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Path {
    pub local: CandidateType,
    pub remote: CandidateType,
    /// The transport between the two candidates.
    pub protocol: Transport,
    /// How this side reaches its TURN server, when its candidate is a relay one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayTransport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTransport {
    Udp,
    Tcp,
    Tls,
}

impl Path {
    /// `direct` or `relay`: whether either side's candidate is a relay one.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.local == CandidateType::Relay || self.remote == CandidateType::Relay {
            "relay"
        } else {
            "direct"
        }
    }

    /// The transport that matters for firewalls: the relay's own when relayed.
    #[must_use]
    pub fn transport(&self) -> &'static str {
        match (self.relay, self.protocol) {
            (Some(RelayTransport::Udp), _) => "udp",
            (Some(RelayTransport::Tcp), _) => "tcp",
            (Some(RelayTransport::Tls), _) => "tls",
            (None, Transport::Udp) => "udp",
            (None, Transport::Tcp) => "tcp",
        }
    }
}

/// How the call went, once it ended: per-second samples as percentiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// From connected to the end, in seconds.
    #[serde(rename = "durationSecs")]
    pub duration_secs: f64,
    #[serde(default, rename = "rttMs", skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<Percentiles>,
    #[serde(
        default,
        rename = "lossPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub loss_percent: Option<Percentiles>,
    #[serde(default, rename = "jitterMs", skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<Percentiles>,
    #[serde(
        default,
        rename = "bitrateInKbps",
        skip_serializing_if = "Option::is_none"
    )]
    pub bitrate_in_kbps: Option<Percentiles>,
    #[serde(
        default,
        rename = "bitrateOutKbps",
        skip_serializing_if = "Option::is_none"
    )]
    pub bitrate_out_kbps: Option<Percentiles>,
    /// Height of the received video, in pixels.
    #[serde(
        default,
        rename = "videoHeight",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_height: Option<Percentiles>,
    /// Times the received video stopped for a second or more.
    #[serde(default)]
    pub freezes: u32,
    #[serde(default, rename = "iceRestarts")]
    pub ice_restarts: u32,
}

/// The median and the 95th percentile of a call's samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
}

/// The bounds of each number: a value outside is a lie or a bug.
const MAX_SETUP_MS: f64 = 600_000.0;
const MAX_DURATION_SECS: f64 = 7.0 * 24.0 * 3600.0;
const MAX_RTT_MS: f64 = 60_000.0;
const MAX_JITTER_MS: f64 = 60_000.0;
const MAX_BITRATE_KBPS: f64 = 1_000_000.0;
const MAX_VIDEO_HEIGHT: f64 = 8_640.0;
const MAX_COUNT: u32 = 1_000_000;

impl CallReport {
    /// Parses and checks the fields of a `report` frame (everything but `type`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > REPORT_MAX_BYTES {
            return Err(format!("a report may be {REPORT_MAX_BYTES} bytes at most"));
        }
        // The frame is `{"type":"report", …}`: everything but `type` is the report.
        let mut value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|error| format!("report: {error}"))?;
        value.remove("type");
        let report: CallReport = serde_json::from_value(serde_json::Value::Object(value))
            .map_err(|error| format!("report: {error}"))?;
        report.check()?;
        Ok(report)
    }

    /// Checks every bound; says which one a report breaks.
    pub fn check(&self) -> Result<(), String> {
        if self.setup.is_none() && self.summary.is_none() {
            return Err("report: needs `setup` or `summary`".to_owned());
        }
        if let Some(setup) = &self.setup {
            within("setup.ms", setup.millis, MAX_SETUP_MS)?;
            count("setup.candidateErrors", setup.candidate_errors)?;
            match setup.outcome {
                Outcome::Connected if setup.path.is_none() => {
                    return Err("report: a connected setup needs its `path`".to_owned());
                }
                Outcome::Failed | Outcome::Cancelled if setup.path.is_some() => {
                    return Err("report: only a connected setup has a `path`".to_owned());
                }
                _ => {}
            }
        }
        if let Some(summary) = &self.summary {
            within(
                "summary.durationSecs",
                summary.duration_secs,
                MAX_DURATION_SECS,
            )?;
            let pairs = [
                ("rttMs", summary.rtt_ms, MAX_RTT_MS),
                ("lossPercent", summary.loss_percent, 100.0),
                ("jitterMs", summary.jitter_ms, MAX_JITTER_MS),
                ("bitrateInKbps", summary.bitrate_in_kbps, MAX_BITRATE_KBPS),
                ("bitrateOutKbps", summary.bitrate_out_kbps, MAX_BITRATE_KBPS),
                ("videoHeight", summary.video_height, MAX_VIDEO_HEIGHT),
            ];
            for (name, value, max) in pairs {
                if let Some(value) = value {
                    within(name, value.p50, max)?;
                    within(name, value.p95, max)?;
                    if value.p95 < value.p50 {
                        return Err(format!("report: {name}.p95 is below its p50"));
                    }
                }
            }
            count("summary.freezes", summary.freezes)?;
            count("summary.iceRestarts", summary.ice_restarts)?;
        }
        Ok(())
    }
}

fn within(name: &str, value: f64, max: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("report: {name} must be between 0 and {max}"))
    }
}

fn count(name: &str, value: u32) -> Result<(), String> {
    if value <= MAX_COUNT {
        Ok(())
    } else {
        Err(format!("report: {name} must be at most {MAX_COUNT}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECTED: &str = r#"{"type":"report","setup":{"outcome":"connected","ms":412.5,"path":{"local":"relay","remote":"host","protocol":"udp","relay":"tls"}}}"#;

    #[test]
    fn a_good_report_parses() {
        let report = CallReport::parse(CONNECTED).unwrap_or_else(|error| unreachable!("{error}"));
        let path = report.setup.and_then(|setup| setup.path);
        assert_eq!(
            path.map(|path| (path.kind(), path.transport())),
            Some(("relay", "tls"))
        );
        let summary = r#"{"type":"report","summary":{"durationSecs":61,"rttMs":{"p50":20,"p95":31},"freezes":1,"iceRestarts":0}}"#;
        assert!(CallReport::parse(summary).is_ok());
    }

    #[test]
    fn lies_and_garbage_are_refused_with_a_reason() {
        for (text, reason) in [
            (r#"{"type":"report"}"#, "needs `setup` or `summary`"),
            (
                r#"{"type":"report","setup":{"outcome":"connected","ms":-1,"path":{"local":"host","remote":"host","protocol":"udp"}}}"#,
                "setup.ms",
            ),
            (
                r#"{"type":"report","setup":{"outcome":"connected","ms":1}}"#,
                "needs its `path`",
            ),
            (
                r#"{"type":"report","setup":{"outcome":"failed","ms":1,"path":{"local":"host","remote":"host","protocol":"udp"}}}"#,
                "only a connected",
            ),
            (
                r#"{"type":"report","setup":{"outcome":"exploded","ms":1}}"#,
                "unknown variant",
            ),
            (
                r#"{"type":"report","summary":{"durationSecs":1,"lossPercent":{"p50":5,"p95":101}}}"#,
                "lossPercent",
            ),
            (
                r#"{"type":"report","summary":{"durationSecs":1,"rttMs":{"p50":50,"p95":20}}}"#,
                "below its p50",
            ),
            (
                r#"{"type":"report","summary":{"durationSecs":1e309}}"#,
                "report:",
            ),
            (
                r#"{"type":"report","summary":{"durationSecs":1,"ip":"192.0.2.1"}}"#,
                "unknown field",
            ),
            (
                r#"{"type":"report","summary":{"durationSecs":1,"freezes":4294967295}}"#,
                "freezes",
            ),
        ] {
            let error = CallReport::parse(text).err().unwrap_or_default();
            assert!(error.contains(reason), "{text}: {error}");
        }
        let padded = format!(
            r#"{{"type":"report","summary":{{"durationSecs":1}},"pad":"{}"}}"#,
            "x".repeat(REPORT_MAX_BYTES)
        );
        assert!(CallReport::parse(&padded).is_err_and(|error| error.contains("bytes at most")));
    }
}
