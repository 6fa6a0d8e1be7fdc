//! The figures of a run (serialised as one JSON line), the human summary, and the
//! side-by-side comparison of two runs (Duet vs the Node reference) with ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::hist::LatencyMs;
use crate::protocol::Protocol;

/// The parameters a run was made with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Params {
    /// Clients asked for.
    pub clients: usize,
    /// Connects + joins in flight at once.
    pub concurrency: usize,
    /// Number of 127.0.0.K source addresses.
    pub source_addrs: usize,
    /// Padding bytes in each relayed message.
    pub payload_bytes: usize,
    /// Tokio worker threads of the load generator.
    pub threads: usize,
    /// Stated relay rate, msg/s.
    pub rate: f64,
    /// Seconds at the stated rate.
    pub duration_secs: f64,
    /// Seconds per sweep step.
    pub step_secs: f64,
    /// The p99 bound of the sweep, ms.
    pub p99_limit_ms: f64,
    /// First sweep rate, msg/s.
    pub sweep_start: f64,
    /// RLIMIT_NOFILE the generator got.
    pub nofile_limit: u64,
}

/// Connect + join phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectFigures {
    /// Clients that joined.
    pub joined: usize,
    /// Clients that did not.
    pub failed: usize,
    /// Wall time of the phase, s.
    pub wall_secs: f64,
    /// Joined clients per second of wall time.
    pub joins_per_sec: f64,
    /// TCP + TLS + WebSocket (+ Engine.IO open) latency.
    pub connect_ms: LatencyMs,
    /// Send `join` → `joined` latency.
    pub join_ms: LatencyMs,
    /// Server CPU per connect + join, ms.
    pub server_cpu_ms_per_join: Option<f64>,
    /// Connect latency of probes made one at a time with all clients idle.
    #[serde(default)]
    pub probe_connect_ms: Option<LatencyMs>,
    /// Join latency of those probes (join latency at rest, N connections held).
    #[serde(default)]
    pub probe_join_ms: Option<LatencyMs>,
}

/// Memory and CPU with every client connected and idle.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleFigures {
    /// Connections open when measured.
    pub connections: usize,
    /// Idle seconds before and during the measurement.
    pub settle_secs: f64,
    /// Server RSS before any client connected, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS with all clients idle, KiB.
    pub server_rss_idle_kib: Option<u64>,
    /// (idle − before) / connections, KiB.
    pub server_rss_per_conn_kib: Option<f64>,
    /// Server peak RSS so far, KiB.
    pub server_hwm_kib: Option<u64>,
    /// Server CPU while idle, % of one core.
    pub server_idle_cpu_percent: Option<f64>,
    /// The load generator's RSS, KiB.
    pub client_rss_kib: u64,
}

/// One relay step at a fixed aggregate rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepFigures {
    /// Step number.
    pub step: u32,
    /// Aggregate rate asked for, msg/s.
    pub target_rate: f64,
    /// Rate actually sent, msg/s.
    pub achieved_rate: f64,
    /// Sending time, s.
    pub secs: f64,
    /// Pairs taking part.
    pub pairs: usize,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Sent but not received by the end of the drain.
    pub lost: u64,
    /// One-way relay latency.
    pub latency_ms: LatencyMs,
    /// Lateness of sends against schedule (load generator health).
    pub send_lag_ms: LatencyMs,
    /// Server CPU over the step, % of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server CPU seconds per 1000 relayed messages (all CPU of the step).
    pub server_cpu_secs_per_1000_msgs: Option<f64>,
    /// The same, less the server's idle CPU (keep-alives) over the step.
    #[serde(default)]
    pub server_cpu_secs_per_1000_msgs_above_idle: Option<f64>,
    /// Server RSS at the end of the step, KiB.
    pub server_rss_kib: Option<u64>,
    /// Load generator CPU over the step, % of one core.
    pub client_cpu_percent: f64,
    /// All cores busy, % of the machine.
    pub machine_busy_percent: f64,
    /// CPU used by processes other than the server and the generator, % of the machine.
    #[serde(default)]
    pub other_load_percent: f64,
    /// Other load above `--max-other-load`: the figures may be the machine's, not the server's.
    #[serde(default)]
    pub disturbed: bool,
    /// Disturbed attempts at this rate that were measured again.
    #[serde(default)]
    pub retries: u32,
    /// Closes, errors and `bye`s during the step.
    pub incidents: u64,
    /// p99 within the limit, nothing lost, no incidents, rate reached.
    pub ok: bool,
    /// Why not ok, or "ok".
    pub verdict: String,
}

/// Result of the sweep.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MaxRate {
    /// Highest rate that passed, msg/s (`None`: not even the lowest tried).
    pub rate: Option<f64>,
    /// Its p99, ms.
    pub p99_ms: Option<f64>,
    /// Lowest rate that failed, msg/s.
    pub first_failing_rate: Option<f64>,
    /// What stopped the sweep.
    pub limited_by: String,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// A name for the server under test ("duet", "node").
    pub label: String,
    /// Protocol spoken.
    pub protocol: Option<Protocol>,
    /// Server address.
    pub target: String,
    /// Server PID measured, if any.
    pub server_pid: Option<u32>,
    /// Start time, seconds since the Unix epoch.
    pub unix_time: u64,
    /// Parameters.
    pub params: Params,
    /// Connect + join.
    pub connect: Option<ConnectFigures>,
    /// Idle memory and CPU.
    pub idle: Option<IdleFigures>,
    /// At the stated rate.
    pub relay: Option<StepFigures>,
    /// Every sweep step, in order.
    pub sweep: Vec<StepFigures>,
    /// Failing attempts that other load disturbed and that were measured again.
    #[serde(default)]
    pub disturbed: Vec<StepFigures>,
    /// The sweep's answer.
    pub max_rate: Option<MaxRate>,
    /// Rare events by phase.
    pub events: BTreeMap<String, u64>,
    /// The run's hard deadline cut it short.
    pub deadline_hit: bool,
    /// Remarks (limits hit, warnings).
    pub notes: Vec<String>,
    /// Redis commands during the stated-rate phase (a cluster, `--redis-port`).
    #[serde(default)]
    pub redis: Option<RedisFigures>,
}

/// What Redis ran while messages were relayed at the stated rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisFigures {
    /// Messages received by the clients in the phase.
    pub messages: u64,
    /// Every command Redis ran in the phase (from `INFO commandstats`).
    pub commands: u64,
    /// Of which `PUBLISH`.
    pub publishes: u64,
    pub secs: f64,
    pub commands_per_message: f64,
    pub publishes_per_message: f64,
    /// Commands that are not `PUBLISH`, per second (heartbeats, room records).
    pub background_per_sec: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn step_line(s: &StepFigures) -> String {
    format!(
        "  {:>9.0} msg/s asked, {:>9.0} sent/s | p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>9.3} ms | lost {:>5} | srv CPU {:>5}% {:>7} ms/1k msg ({} above idle) | gen CPU {:>4.0}% | machine {:>3.0}% (others {:>3.0}%) | lag p99 {:.2} ms | {}",
        s.target_rate,
        s.achieved_rate,
        s.latency_ms.p50,
        s.latency_ms.p99,
        s.latency_ms.max,
        s.lost,
        opt(s.server_cpu_percent, 0),
        opt(s.server_cpu_secs_per_1000_msgs.map(|x| x * 1000.0), 1),
        opt(
            s.server_cpu_secs_per_1000_msgs_above_idle
                .map(|x| x * 1000.0),
            1
        ),
        s.client_cpu_percent,
        s.machine_busy_percent,
        s.other_load_percent,
        s.send_lag_ms.p99,
        s.verdict
    )
}

impl Report {
    /// The human summary.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let p = &self.params;
        let _ = writeln!(
            o,
            "== sigbench: {} ({}) at {}, {} clients in rooms of two, {} source addresses, payload {} B, {} generator threads",
            self.label,
            self.protocol.map_or("?", |p| match p {
                Protocol::Duet => "duet",
                Protocol::Socketio => "socket.io",
            }),
            self.target,
            p.clients,
            p.source_addrs,
            p.payload_bytes,
            p.threads
        );
        if let Some(c) = &self.connect {
            let _ = writeln!(
                o,
                "connect+join: {} joined, {} failed in {:.1} s ({:.0}/s); connect p50 {:.2} ms p99 {:.2} ms; join p50 {:.3} ms p99 {:.3} ms max {:.1} ms; server CPU {} ms per connect+join",
                c.joined,
                c.failed,
                c.wall_secs,
                c.joins_per_sec,
                c.connect_ms.p50,
                c.connect_ms.p99,
                c.join_ms.p50,
                c.join_ms.p99,
                c.join_ms.max,
                opt(c.server_cpu_ms_per_join, 3)
            );
            if let (Some(pc), Some(pj)) = (&c.probe_connect_ms, &c.probe_join_ms) {
                let _ = writeln!(
                    o,
                    "join at rest ({} probes one at a time, all clients idle): connect p50 {:.2} ms p99 {:.2} ms; join p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
                    pj.count, pc.p50, pc.p99, pj.p50, pj.p99, pj.max
                );
            }
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                o,
                "idle: {} connections; server RSS {} KiB before, {} KiB idle → {} KiB per connection; peak {} KiB; idle server CPU {}% of a core; generator RSS {} KiB",
                i.connections,
                i.server_rss_before_kib
                    .map_or("-".to_owned(), |v| v.to_string()),
                i.server_rss_idle_kib
                    .map_or("-".to_owned(), |v| v.to_string()),
                opt(i.server_rss_per_conn_kib, 2),
                i.server_hwm_kib.map_or("-".to_owned(), |v| v.to_string()),
                opt(i.server_idle_cpu_percent, 1),
                i.client_rss_kib
            );
        }
        if let Some(r) = &self.relay {
            let _ = writeln!(
                o,
                "relay at the stated rate for {:.0} s ({} pairs):",
                r.secs, r.pairs
            );
            let _ = writeln!(o, "{}", step_line(r));
        }
        if !self.sweep.is_empty() {
            let _ = writeln!(
                o,
                "rate sweep ({:.0} s per step, p99 limit {} ms):",
                p.step_secs, p.p99_limit_ms
            );
            for s in &self.sweep {
                let _ = writeln!(o, "{}", step_line(s));
            }
        }
        if let Some(m) = &self.max_rate {
            let _ = writeln!(
                o,
                "max message rate with p99 ≤ {} ms and no loss: {} msg/s (p99 {} ms); first failing {} msg/s; stopped by: {}",
                p.p99_limit_ms,
                opt(m.rate, 0),
                opt(m.p99_ms, 2),
                opt(m.first_failing_rate, 0),
                m.limited_by
            );
        }
        if !self.disturbed.is_empty() {
            let _ = writeln!(
                o,
                "{} failing attempts were disturbed by other processes on the machine and measured again:",
                self.disturbed.len()
            );
            for s in &self.disturbed {
                let _ = writeln!(o, "{}", step_line(s));
            }
        }
        if !self.events.is_empty() {
            let _ = writeln!(o, "events:");
            for (k, v) in &self.events {
                let _ = writeln!(o, "  {v:>7} × {k}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        if self.deadline_hit {
            let _ = writeln!(
                o,
                "note: the run's hard deadline cut it short; figures are partial"
            );
        }
        o
    }
}

/// One row of the comparison: a name, both values, and which way is better.
struct Row {
    name: String,
    a: Option<f64>,
    b: Option<f64>,
    higher_is_better: bool,
    digits: usize,
}

/// Markdown table of run `a` (Duet), side by side with run `b` (the reference)
/// if given, with the ratio expressed as "how many times better `a` is".
pub fn compare(a: &Report, b: Option<&Report>) -> String {
    let mut rows = Vec::new();
    let mut row =
        |name: &str, a: Option<f64>, b: Option<f64>, higher_is_better: bool, digits: usize| {
            rows.push(Row {
                name: name.to_owned(),
                a,
                b,
                higher_is_better,
                digits,
            });
        };
    let ca = a.connect.as_ref();
    let cb = b.and_then(|b| b.connect.as_ref());
    row(
        "clients joined",
        ca.map(|c| c.joined as f64),
        cb.map(|c| c.joined as f64),
        true,
        0,
    );
    row(
        "connect+join rate (clients/s)",
        ca.map(|c| c.joins_per_sec),
        cb.map(|c| c.joins_per_sec),
        true,
        0,
    );
    let probe = |c: &ConnectFigures| c.probe_join_ms;
    row(
        "join latency at rest p50 (ms)",
        ca.and_then(probe).map(|l| l.p50),
        cb.and_then(probe).map(|l| l.p50),
        false,
        3,
    );
    row(
        "join latency at rest p99 (ms)",
        ca.and_then(probe).map(|l| l.p99),
        cb.and_then(probe).map(|l| l.p99),
        false,
        3,
    );
    row(
        "join latency during ramp p50 (ms)",
        ca.map(|c| c.join_ms.p50),
        cb.map(|c| c.join_ms.p50),
        false,
        3,
    );
    row(
        "join latency during ramp p99 (ms)",
        ca.map(|c| c.join_ms.p99),
        cb.map(|c| c.join_ms.p99),
        false,
        3,
    );
    row(
        "server CPU per connect+join (ms)",
        ca.and_then(|c| c.server_cpu_ms_per_join),
        cb.and_then(|c| c.server_cpu_ms_per_join),
        false,
        3,
    );
    let ia = a.idle.as_ref();
    let ib = b.and_then(|b| b.idle.as_ref());
    row(
        "server RSS per idle connection (KiB)",
        ia.and_then(|i| i.server_rss_per_conn_kib),
        ib.and_then(|i| i.server_rss_per_conn_kib),
        false,
        2,
    );
    row(
        "server RSS, all idle (MiB)",
        ia.and_then(|i| i.server_rss_idle_kib)
            .map(|k| k as f64 / 1024.0),
        ib.and_then(|i| i.server_rss_idle_kib)
            .map(|k| k as f64 / 1024.0),
        false,
        1,
    );
    row(
        "server CPU while idle (% of a core)",
        ia.and_then(|i| i.server_idle_cpu_percent),
        ib.and_then(|i| i.server_idle_cpu_percent),
        false,
        1,
    );
    let ra = a.relay.as_ref();
    let rb = b.and_then(|b| b.relay.as_ref());
    let rate = ra.map_or(0.0, |r| r.target_rate);
    row(
        &format!("relay p50 at {rate:.0} msg/s (ms)"),
        ra.map(|r| r.latency_ms.p50),
        rb.map(|r| r.latency_ms.p50),
        false,
        3,
    );
    row(
        &format!("relay p99 at {rate:.0} msg/s (ms)"),
        ra.map(|r| r.latency_ms.p99),
        rb.map(|r| r.latency_ms.p99),
        false,
        3,
    );
    row(
        &format!("server CPU at {rate:.0} msg/s (% of a core)"),
        ra.and_then(|r| r.server_cpu_percent),
        rb.and_then(|r| r.server_cpu_percent),
        false,
        1,
    );
    row(
        "server CPU per 1000 messages, all (ms)",
        ra.and_then(|r| r.server_cpu_secs_per_1000_msgs)
            .map(|s| s * 1000.0),
        rb.and_then(|r| r.server_cpu_secs_per_1000_msgs)
            .map(|s| s * 1000.0),
        false,
        1,
    );
    row(
        "server CPU per 1000 messages, above idle (ms)",
        ra.and_then(|r| r.server_cpu_secs_per_1000_msgs_above_idle)
            .map(|s| s * 1000.0),
        rb.and_then(|r| r.server_cpu_secs_per_1000_msgs_above_idle)
            .map(|s| s * 1000.0),
        false,
        1,
    );
    row(
        &format!("max msg/s with p99 ≤ {} ms", a.params.p99_limit_ms),
        a.max_rate.as_ref().and_then(|m| m.rate),
        b.and_then(|b| b.max_rate.as_ref()).and_then(|m| m.rate),
        true,
        0,
    );

    let mut o = String::new();
    match b {
        Some(b) => {
            let _ = writeln!(
                o,
                "| metric ({} clients) | {} | {} | {} vs {} |",
                a.params.clients, a.label, b.label, a.label, b.label
            );
            let _ = writeln!(o, "|---|---:|---:|---:|");
        }
        None => {
            let _ = writeln!(o, "| metric ({} clients) | {} |", a.params.clients, a.label);
            let _ = writeln!(o, "|---|---:|");
        }
    }
    for r in rows {
        let fmt =
            |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.*}", r.digits));
        if b.is_none() {
            let _ = writeln!(o, "| {} | {} |", r.name, fmt(r.a));
            continue;
        }
        let ratio = match (r.a, r.b) {
            (Some(x), Some(y)) if x > 0.0 && y > 0.0 => {
                let k = if r.higher_is_better { x / y } else { y / x };
                format!("{k:.2}× {}", if k >= 1.0 { "better" } else { "worse" })
            }
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            r.name,
            fmt(r.a),
            fmt(r.b),
            ratio
        );
    }
    let tail = |r: &Report| {
        let m = r.max_rate.as_ref();
        format!(
            "{}: max-rate search stopped by: {}",
            r.label,
            m.map_or("no sweep", |m| m.limited_by.as_str())
        )
    };
    let _ = writeln!(o, "\n{}", tail(a));
    if let Some(b) = b {
        let _ = writeln!(o, "{}", tail(b));
    }
    o
}

/// Read a report written with `--json` (the file holds one JSON object).
pub fn load(path: &std::path::Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(text.trim()).with_context(|| format!("parsing {}", path.display()))
}
