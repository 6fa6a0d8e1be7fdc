//! Load mode: N calls at once, each a pair of native peers in a room of its
//! own (`PREFIX-0`, `PREFIX-1`, …), for a fixed duration, optionally through the
//! relay. Bounded in count ([`MAX_CALLS`]) and in time (every peer has its
//! timeout, duration and hard limit). Prints one status line a second and ends
//! with a summary: how many calls carried media both ways, the loss, the
//! bitrates, the set-up times.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::crypto::CryptoProvider;
use tokio::task::JoinSet;

use crate::driver::{self, PeerOptions, Progress};
use crate::report::{Outcome, Report};

/// Most calls one load run makes (two peers, two sockets and two WebSockets each).
pub const MAX_CALLS: usize = 500;
/// Pause between starting two calls, so the server sees a ramp, not a wall.
const RAMP_STEP: Duration = Duration::from_millis(25);
/// Pause between the two members of a call joining (the second one offers).
const SECOND_JOINS_AFTER: Duration = Duration::from_millis(200);

/// The summary of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub calls: usize,
    /// Calls in which both peers received media.
    pub calls_with_media_both_ways: usize,
    pub peers_failed: usize,
    pub errors: Vec<String>,
    pub relay_only: bool,
    pub duration_ms: u64,
    /// Over all peers: RTP packets sent, and lost as the receivers report them.
    pub packets_sent: u64,
    pub packets_lost: u64,
    pub loss_percent: f64,
    /// Per peer, payload bitrate received (kbit/s).
    pub received_kbps: Spread,
    pub sent_kbps: Spread,
    /// From the start of a peer's run to ICE+DTLS connected (ms).
    pub time_to_connected_ms: Spread,
    pub rtt_ms: Spread,
    /// Every peer's report.
    pub peers: Vec<Report>,
}

/// Minimum, median, 95th percentile and maximum.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |fraction: f64| {
            let index = ((values.len() - 1) as f64 * fraction).round() as usize;
            values.get(index).copied().unwrap_or_default()
        };
        Self {
            min: at(0.0),
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        }
    }
}

/// Runs `calls` calls; `template` gives every peer's options (its room is the prefix).
pub async fn run(
    calls: usize,
    template: PeerOptions,
    crypto: Arc<CryptoProvider>,
    status_every: Option<Duration>,
) -> LoadReport {
    let calls = calls.clamp(1, MAX_CALLS);
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let mut peers = JoinSet::new();
    let mut ticker = status_every.map(tokio::time::interval);
    let mut last_bytes = 0;
    let mut last_tick = Instant::now();

    for call in 0..calls {
        for (member, delay) in [("a", Duration::ZERO), ("b", SECOND_JOINS_AFTER)] {
            let mut options = template.clone();
            options.room = format!("{}-{call}", template.room);
            options.label = format!("call-{call}/{member}");
            options.status_every = None;
            options.progress = Some(Arc::clone(&progress));
            let crypto = Arc::clone(&crypto);
            peers.spawn(async move {
                tokio::time::sleep(delay).await;
                (call, driver::run(options, crypto).await)
            });
        }
        tokio::time::sleep(RAMP_STEP).await;
    }

    let mut reports: Vec<(usize, Report)> = Vec::with_capacity(calls * 2);
    // Bounded: each peer's run ends by its own deadlines; one more turn per peer.
    while reports.len() < calls * 2 {
        let tick = async {
            match &mut ticker {
                Some(ticker) => {
                    ticker.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            joined = peers.join_next() => match joined {
                Some(Ok(done)) => reports.push(done),
                Some(Err(err)) => {
                    tracing::error!("a peer task ended abnormally: {err}");
                    reports.push((usize::MAX, Report::lost(&err.to_string())));
                }
                None => break,
            },
            () = tick => {
                let bytes = progress.bytes_received.load(Ordering::Relaxed);
                let seconds = last_tick.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "{:6.1}s load | {} calls | peers connected {} receiving {} finished {} | {:.0} kbit/s received in all",
                    started.elapsed().as_secs_f64(),
                    calls,
                    progress.connected.load(Ordering::Relaxed),
                    progress.receiving.load(Ordering::Relaxed),
                    progress.finished.load(Ordering::Relaxed),
                    (bytes.saturating_sub(last_bytes)) as f64 * 8.0 / seconds / 1000.0,
                );
                last_bytes = bytes;
                last_tick = Instant::now();
            }
        }
    }
    summarize(calls, template.relay_only, started, reports)
}

fn summarize(
    calls: usize,
    relay_only: bool,
    started: Instant,
    mut reports: Vec<(usize, Report)>,
) -> LoadReport {
    reports.sort_by_key(|(call, _)| *call);
    let ok = |call: usize| {
        reports
            .iter()
            .filter(|(c, report)| *c == call && report.outcome == Outcome::Ok)
            .count()
            == 2
    };
    let calls_with_media_both_ways = (0..calls).filter(|&call| ok(call)).count();
    let peers: Vec<Report> = reports.into_iter().map(|(_, report)| report).collect();
    let errors: Vec<String> = peers
        .iter()
        .filter_map(|report| {
            report
                .error
                .as_ref()
                .map(|error| format!("{}: {error}", report.identity.room))
        })
        .collect();
    let packets_sent: u64 = peers
        .iter()
        .map(|r| r.sent.audio.packets + r.sent.video.packets)
        .sum();
    let packets_lost: u64 = peers
        .iter()
        .map(|r| r.sent.audio.packets_lost + r.sent.video.packets_lost)
        .sum();
    let loss_percent = if packets_sent == 0 {
        0.0
    } else {
        packets_lost as f64 * 100.0 / packets_sent as f64
    };
    LoadReport {
        calls,
        calls_with_media_both_ways,
        peers_failed: peers.iter().filter(|r| r.outcome != Outcome::Ok).count(),
        errors,
        relay_only,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        packets_sent,
        packets_lost,
        loss_percent,
        received_kbps: Spread::of(
            peers
                .iter()
                .map(|r| r.received.audio.bitrate_kbps + r.received.video.bitrate_kbps)
                .collect(),
        ),
        sent_kbps: Spread::of(
            peers
                .iter()
                .map(|r| r.sent.audio.bitrate_kbps + r.sent.video.bitrate_kbps)
                .collect(),
        ),
        time_to_connected_ms: Spread::of(
            peers
                .iter()
                .filter_map(|r| r.time_to_connected_ms.map(|ms| ms as f64))
                .collect(),
        ),
        rtt_ms: Spread::of(peers.iter().filter_map(|r| r.rtt_ms).collect()),
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_values() {
        let spread = Spread::of((1..=100).map(f64::from).collect());
        assert_eq!((spread.min, spread.max), (1.0, 100.0));
        assert_eq!(spread.p50, 51.0);
        assert_eq!(spread.p95, 95.0);
        assert_eq!(Spread::of(Vec::new()).max, 0.0);
    }
}
