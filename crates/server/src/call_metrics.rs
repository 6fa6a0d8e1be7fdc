//! Call quality for operators: the metrics and the log line made from the
//! call reports clients send (`duet_signaling::report`; the hub has already
//! checked them and kept one set-up and one summary per seat).
//!
//! Every member reports its own view, so a call that both sides report is
//! counted twice; ratios (connected / all, relayed / all) are unaffected.
//! Distributions are of each call's median (p50) sample.

use duet_signaling::report::{CallReport, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IceStateLabel {
    pub ice_state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: &'static str,
    pub transport: &'static str,
}

/// The `duet_call_*` metrics.
#[derive(Debug)]
pub struct CallMetrics {
    pub setups: Family<OutcomeLabel, Counter>,
    pub setup_seconds: Histogram,
    pub failures: Family<IceStateLabel, Counter>,
    pub candidate_errors: Counter,
    pub paths: Family<PathLabel, Counter>,
    pub summaries: Counter,
    pub duration_seconds: Histogram,
    pub rtt_seconds: Histogram,
    pub loss_ratio: Histogram,
    pub jitter_seconds: Histogram,
    pub receive_bitrate_bps: Histogram,
    pub video_height_pixels: Histogram,
    pub freezes: Counter,
    pub ice_restarts: Counter,
}

fn histogram(buckets: &[f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

impl CallMetrics {
    /// The metrics, registered under `duet_call_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            setups: Family::default(),
            setup_seconds: histogram(&[
                0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
            ]),
            failures: Family::default(),
            candidate_errors: Counter::default(),
            paths: Family::default(),
            summaries: Counter::default(),
            duration_seconds: histogram(&[
                5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
            ]),
            rtt_seconds: histogram(&[0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]),
            loss_ratio: histogram(&[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]),
            jitter_seconds: histogram(&[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]),
            receive_bitrate_bps: histogram(&[50e3, 100e3, 250e3, 500e3, 1e6, 1.5e6, 2e6, 4e6, 8e6]),
            video_height_pixels: histogram(&[120.0, 180.0, 240.0, 360.0, 480.0, 720.0, 1080.0]),
            freezes: Counter::default(),
            ice_restarts: Counter::default(),
        };
        let calls = registry.sub_registry_with_prefix("call");
        calls.register(
            "setups",
            "Call set-ups reported by members, by outcome (connected, failed, cancelled)",
            metrics.setups.clone(),
        );
        calls.register(
            "setup_seconds",
            "Time from both members in the room to media flowing, of connected calls",
            metrics.setup_seconds.clone(),
        );
        calls.register(
            "failures",
            "Calls that did not connect, by the ICE state they were given up in",
            metrics.failures.clone(),
        );
        calls.register(
            "candidate_errors",
            "ICE candidate errors (a STUN or TURN server not reached) reported with set-ups",
            metrics.candidate_errors.clone(),
        );
        calls.register(
            "paths",
            "Connected calls by path (direct or relay) and transport (udp, tcp, tls)",
            metrics.paths.clone(),
        );
        calls.register(
            "summaries",
            "Call summaries reported by members at the end of their call",
            metrics.summaries.clone(),
        );
        calls.register(
            "duration_seconds",
            "How long calls lasted once connected",
            metrics.duration_seconds.clone(),
        );
        calls.register(
            "rtt_seconds",
            "Median round-trip time of each call",
            metrics.rtt_seconds.clone(),
        );
        calls.register(
            "loss_ratio",
            "Median inbound packet loss of each call (0 to 1)",
            metrics.loss_ratio.clone(),
        );
        calls.register(
            "jitter_seconds",
            "Median inbound jitter of each call",
            metrics.jitter_seconds.clone(),
        );
        calls.register(
            "receive_bitrate_bps",
            "Median received bitrate of each call, bits per second",
            metrics.receive_bitrate_bps.clone(),
        );
        calls.register(
            "video_height_pixels",
            "Median height of the received video of each call",
            metrics.video_height_pixels.clone(),
        );
        calls.register(
            "freezes",
            "Times received video froze for a second or more",
            metrics.freezes.clone(),
        );
        calls.register(
            "ice_restarts",
            "ICE restarts during calls",
            metrics.ice_restarts.clone(),
        );
        metrics
    }

    /// Counts a report and writes its log line.
    pub fn record(&self, report: &CallReport) {
        if let Some(setup) = &report.setup {
            let outcome = match setup.outcome {
                Outcome::Connected => "connected",
                Outcome::Failed => "failed",
                Outcome::Cancelled => "cancelled",
            };
            self.setups.get_or_create(&OutcomeLabel { outcome }).inc();
            self.candidate_errors
                .inc_by(u64::from(setup.candidate_errors));
            let (path, transport) = setup
                .path
                .map_or(("-", "-"), |path| (path.kind(), path.transport()));
            match setup.outcome {
                Outcome::Connected => {
                    self.setup_seconds.observe(setup.millis / 1000.0);
                    self.paths
                        .get_or_create(&PathLabel { path, transport })
                        .inc();
                }
                Outcome::Failed => {
                    let ice_state = setup.ice_state.map_or("unknown", |state| match state {
                        duet_signaling::report::IceState::New => "new",
                        duet_signaling::report::IceState::Checking => "checking",
                        duet_signaling::report::IceState::Disconnected => "disconnected",
                        duet_signaling::report::IceState::Failed => "failed",
                        duet_signaling::report::IceState::Closed => "closed",
                    });
                    self.failures
                        .get_or_create(&IceStateLabel { ice_state })
                        .inc();
                }
                Outcome::Cancelled => {}
            }
            tracing::info!(
                target: "duet::call",
                outcome,
                setup_ms = setup.millis.round(),
                path,
                transport,
                candidate_errors = setup.candidate_errors,
                "call set-up reported"
            );
        }
        if let Some(summary) = &report.summary {
            self.summaries.inc();
            self.duration_seconds.observe(summary.duration_secs);
            let median = |value: Option<duet_signaling::report::Percentiles>| value.map(|p| p.p50);
            if let Some(rtt) = median(summary.rtt_ms) {
                self.rtt_seconds.observe(rtt / 1000.0);
            }
            if let Some(loss) = median(summary.loss_percent) {
                self.loss_ratio.observe(loss / 100.0);
            }
            if let Some(jitter) = median(summary.jitter_ms) {
                self.jitter_seconds.observe(jitter / 1000.0);
            }
            if let Some(bitrate) = median(summary.bitrate_in_kbps) {
                self.receive_bitrate_bps.observe(bitrate * 1000.0);
            }
            if let Some(height) = median(summary.video_height) {
                self.video_height_pixels.observe(height);
            }
            self.freezes.inc_by(u64::from(summary.freezes));
            self.ice_restarts.inc_by(u64::from(summary.ice_restarts));
            tracing::info!(
                target: "duet::call",
                duration_secs = summary.duration_secs.round(),
                rtt_p50_ms = median(summary.rtt_ms),
                loss_p50_percent = median(summary.loss_percent),
                jitter_p50_ms = median(summary.jitter_ms),
                receive_kbps_p50 = median(summary.bitrate_in_kbps),
                send_kbps_p50 = median(summary.bitrate_out_kbps),
                video_height_p50 = median(summary.video_height),
                freezes = summary.freezes,
                ice_restarts = summary.ice_restarts,
                "call summary reported"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use duet_signaling::report::CallReport;

    use crate::metrics::Metrics;

    /// The sample names of an exposition (`name` or `name{labels} value`).
    fn samples(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_dashboard_uses_only_metrics_the_server_exports() {
        let metrics = Metrics::new();
        for text in [
            r#"{"type":"report","setup":{"outcome":"connected","ms":400,"path":{"local":"relay","remote":"host","protocol":"udp","relay":"tcp"}},"summary":{"durationSecs":60,"rttMs":{"p50":30,"p95":40},"lossPercent":{"p50":0,"p95":1},"jitterMs":{"p50":3,"p95":5},"bitrateInKbps":{"p50":900,"p95":1200},"bitrateOutKbps":{"p50":900,"p95":1100},"videoHeight":{"p50":480,"p95":720},"freezes":2,"iceRestarts":1}}"#,
            r#"{"type":"report","setup":{"outcome":"failed","ms":30000,"iceState":"checking","candidateErrors":3}}"#,
        ] {
            let report = CallReport::parse(text).unwrap_or_else(|error| unreachable!("{error}"));
            metrics.calls.record(&report);
        }
        let exported = metrics.encode();
        assert!(
            exported.contains(r#"duet_call_paths_total{path="relay",transport="tcp"} 1"#),
            "{exported}"
        );
        assert!(exported.contains(r#"duet_call_failures_total{ice_state="checking"} 1"#));
        assert!(exported.contains("duet_call_candidate_errors_total 3"));
        let exported = samples(&exported);
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/grafana/duet-calls.json"
        ))
        .unwrap_or_default();
        let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap_or_default();
        let mut used = BTreeSet::new();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for (start, _) in expr.match_indices("duet_") {
                    let name: String = expr
                        .get(start..)
                        .unwrap_or_default()
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    used.insert(name);
                }
            }
        }
        assert!(used.len() >= 10, "{used:?}");
        for name in &used {
            assert!(
                name.starts_with("duet_call_"),
                "{name} is not a call metric"
            );
            assert!(
                exported.contains(name),
                "the dashboard uses {name}, which /metrics does not have"
            );
        }
    }
}
