//! The load engine: runs the phases of a benchmark against one server.
//!
//! 1. connect + join N clients, at most `concurrency` in flight;
//! 2. idle for `settle_secs`, then read server RSS and idle CPU;
//! 3. relay at the stated rate for `duration` seconds;
//! 4. sweep the rate (doubling, then bisecting) for the highest rate whose p99
//!    stays within the limit with nothing lost;
//! 5. close every client.
//!
//! Each phase has its own time bound, and the caller wraps the whole in a hard
//! deadline. Figures are written into the shared report as soon as they exist,
//! so a run cut short still reports what it measured.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::RunArgs;
use crate::client::{self, ClientCtx};
use crate::net;
use crate::procstat::{self, MachineSample, Pid, ProcSample};
use crate::report::{ConnectFigures, IdleFigures, MaxRate, Report, StepFigures};
use crate::state::{MAX_STEPS, Phase, Shared, label};
use crate::tls;

/// Messages a sweep step aims to measure, at least (it lengthens slow steps).
const MIN_STEP_SAMPLES: f64 = 2000.0;

/// A look at the server, the generator and the machine at one instant.
#[derive(Debug, Clone, Copy)]
struct Look {
    at: Instant,
    server: Option<ProcSample>,
    own: Option<ProcSample>,
    machine: Option<MachineSample>,
}

/// The engine of one run.
#[derive(Debug)]
struct Engine {
    args: RunArgs,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    report: Arc<Mutex<Report>>,
    deadline: Instant,
    /// The next free step number.
    next_step: AtomicU32,
}

/// Run the benchmark, filling `report` as figures come in.
pub async fn run(args: RunArgs, report: Arc<Mutex<Report>>, deadline: Instant) -> Result<()> {
    for addr in &args.addrs {
        net::check_loopback(*addr)?;
    }
    let shared = Arc::new(Shared::new(args.clients));
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let ctx = Arc::new(ClientCtx {
        shared: Arc::clone(&shared),
        protocol: args.protocol,
        urls: args
            .addrs
            .iter()
            .map(|addr| args.protocol.url(*addr))
            .collect(),
        servers: args.addrs.clone(),
        tls: tls::insecure_client_config()?,
        admission: Arc::new(Semaphore::new(args.concurrency.max(1))),
        client_timeout: Duration::from_secs_f64(args.client_timeout_secs),
        connect_deadline: Instant::now() + Duration::from_secs_f64(args.connect_phase_secs),
        pad: "x".repeat(args.payload_bytes),
        room_prefix: format!("sb{:x}-", std::process::id()),
        phase: phase_rx,
    });
    let engine = Engine {
        args,
        shared,
        phase: phase_tx,
        report,
        deadline,
        next_step: AtomicU32::new(0),
    };
    let mut clients = JoinSet::new();
    let result = match tokio::time::timeout_at(deadline, engine.phases(&ctx, &mut clients)).await {
        Ok(r) => r,
        Err(_) => {
            engine.with_report(|r| r.deadline_hit = true);
            Ok(())
        }
    };
    engine.close_all(&mut clients).await;
    result
}

impl Engine {
    fn look(&self) -> Look {
        Look {
            at: Instant::now(),
            server: procstat::sample_all(&self.args.server_pids),
            own: procstat::sample(Pid::Own).ok(),
            machine: procstat::machine().ok(),
        }
    }

    fn with_report(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    fn note(&self, text: String) {
        eprintln!("note: {text}");
        self.with_report(|r| r.notes.push(text));
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    async fn phases(&self, ctx: &Arc<ClientCtx>, clients: &mut JoinSet<()>) -> Result<()> {
        let before = self.look();
        self.connect_phase(ctx, clients).await;
        let after_connect = self.look();
        self.connect_cpu(&before, &after_connect);

        // Idle: let the last handshakes' garbage settle, then measure.
        self.shared.label.store(label::IDLE, Ordering::Relaxed);
        let settle = Duration::from_secs_f64(self.args.settle_secs).min(self.remaining());
        tokio::time::sleep(settle).await;
        let idle = self.look();
        self.idle_figures(&before, &after_connect, &idle);

        self.probe_joins(ctx).await;

        if self.shared.active_pairs() == 0 {
            self.note("no pair has both members joined: nothing to relay".to_owned());
            return Ok(());
        }

        // The stated rate.
        let redis_before = self.redis_counts().await;
        let relay = self.measure(self.args.rate, self.args.duration).await;
        let redis_after = self.redis_counts().await;
        if let (Some(before), Some(after), Some(r)) = (redis_before, redis_after, &relay) {
            let messages = r.received;
            let commands = after.0.saturating_sub(before.0);
            let publishes = after.1.saturating_sub(before.1);
            let secs = after.2.duration_since(before.2).as_secs_f64();
            let per = |n: u64| {
                if messages > 0 {
                    n as f64 / messages as f64
                } else {
                    0.0
                }
            };
            let figures = crate::report::RedisFigures {
                messages,
                commands,
                publishes,
                secs,
                commands_per_message: per(commands),
                publishes_per_message: per(publishes),
                background_per_sec: (commands - publishes.min(commands)) as f64 / secs.max(0.001),
            };
            eprintln!(
                "redis during the stated rate: {commands} commands for {messages} messages ({:.3} per message), {publishes} PUBLISH ({:.3} per message), {:.0} other commands/s",
                figures.commands_per_message,
                figures.publishes_per_message,
                figures.background_per_sec
            );
            self.with_report(|rep| rep.redis = Some(figures));
        }
        if let Some(r) = relay {
            eprintln!("relay at stated rate: {}", r.verdict);
            self.with_report(|rep| rep.relay = Some(r));
        }

        if !self.args.no_sweep {
            self.sweep().await;
        }
        Ok(())
    }

    /// Redis' command count and PUBLISH count now (`--redis-port`), if it answers.
    async fn redis_counts(&self) -> Option<(u64, u64, Instant)> {
        let port = self.args.redis_port?;
        let read = async {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            stream
                .write_all(b"INFO commandstats\r\nQUIT\r\n")
                .await
                .ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await.ok()?;
            Some(text)
        };
        let text = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()??;
        let (mut total, mut publishes) = (0u64, 0u64);
        for line in text.lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls = stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            total += calls;
            if name == "publish" {
                publishes = calls;
            }
        }
        Some((total, publishes, Instant::now()))
    }

    async fn connect_phase(&self, ctx: &Arc<ClientCtx>, clients: &mut JoinSet<()>) {
        let n = self.args.clients;
        let start = Instant::now();
        for id in 0..n {
            let src = net::source_addr(id, self.args.source_addrs);
            clients.spawn(client::run(Arc::clone(ctx), id, src));
        }
        // Bounded: the connect deadline plus one client timeout, and the hard deadline.
        let limit = ctx.connect_deadline + ctx.client_timeout + Duration::from_secs(1);
        let mut last_print = Instant::now();
        loop {
            let joined = self.shared.joined.load(Ordering::Relaxed);
            let failed = self.shared.failed.load(Ordering::Relaxed);
            if joined + failed >= n || Instant::now() >= limit || self.remaining().is_zero() {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                eprintln!(
                    "connect: {joined}/{n} joined, {failed} failed, {:.0} s",
                    start.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let joined = self.shared.joined.load(Ordering::Relaxed);
        let failed = self.shared.failed.load(Ordering::Relaxed);
        eprintln!("connect: {joined}/{n} joined, {failed} failed in {wall:.1} s");
        if joined + failed < n {
            self.note(format!(
                "connect phase ended by its time bound with {} clients still pending",
                n - joined - failed
            ));
        }
        let figures = ConnectFigures {
            joined,
            failed,
            wall_secs: wall,
            joins_per_sec: if wall > 0.0 {
                joined as f64 / wall
            } else {
                0.0
            },
            connect_ms: self.shared.connect_hist.snapshot().summary_ms(),
            join_ms: self.shared.join_hist.snapshot().summary_ms(),
            server_cpu_ms_per_join: None,
            probe_connect_ms: None,
            probe_join_ms: None,
        };
        self.with_report(|r| r.connect = Some(figures));
    }

    fn connect_cpu(&self, before: &Look, after: &Look) {
        let joined = self.shared.joined.load(Ordering::Relaxed);
        if let (Some(b), Some(a)) = (before.server, after.server)
            && joined > 0
        {
            let ms = (a.cpu_secs - b.cpu_secs) * 1000.0 / joined as f64;
            self.with_report(|r| {
                if let Some(c) = r.connect.as_mut() {
                    c.server_cpu_ms_per_join = Some(ms);
                }
            });
        }
    }

    fn idle_figures(&self, before: &Look, after_connect: &Look, idle: &Look) {
        let connections = self.shared.live_clients();
        let secs = idle.at.duration_since(after_connect.at).as_secs_f64();
        let (rss_before, rss_idle, hwm) = match (before.server, idle.server) {
            (Some(b), Some(i)) => (Some(b.rss_kib), Some(i.rss_kib), Some(i.hwm_kib)),
            _ => (None, None, None),
        };
        let per_conn = match (rss_before, rss_idle) {
            (Some(b), Some(i)) if connections > 0 => {
                Some((i as f64 - b as f64) / connections as f64)
            }
            _ => None,
        };
        let idle_cpu = match (after_connect.server, idle.server) {
            (Some(a), Some(i)) if secs > 0.0 => Some((i.cpu_secs - a.cpu_secs) * 100.0 / secs),
            _ => None,
        };
        let figures = IdleFigures {
            connections,
            settle_secs: secs,
            server_rss_before_kib: rss_before,
            server_rss_idle_kib: rss_idle,
            server_rss_per_conn_kib: per_conn,
            server_hwm_kib: hwm,
            server_idle_cpu_percent: idle_cpu,
            client_rss_kib: idle.own.map_or(0, |o| o.rss_kib),
        };
        eprintln!(
            "idle: {connections} connections, server RSS per connection {} KiB",
            per_conn.map_or("-".to_owned(), |v| format!("{v:.2}"))
        );
        self.with_report(|r| r.idle = Some(figures));
    }

    /// Join latency at rest: with every client connected and idle, connect and
    /// join `probe_pairs` extra pairs one client at a time, closing each pair
    /// before the next (so at most two extra sockets exist).
    async fn probe_joins(&self, ctx: &Arc<ClientCtx>) {
        let pairs = self.args.probe_pairs;
        if pairs == 0 {
            return;
        }
        let until =
            Instant::now() + Duration::from_secs_f64(self.args.probe_secs).min(self.remaining());
        let shared = &self.shared;
        let mut failures = 0usize;
        let mut done = 0usize;
        for j in 0..pairs {
            if Instant::now() >= until {
                break;
            }
            let room = format!("{}probe{j}", ctx.room_prefix);
            let mut sockets = Vec::with_capacity(2);
            for member in 0..2 {
                let src = net::source_addr(2 * j + member, self.args.source_addrs);
                let attempt = tokio::time::timeout_at(
                    until,
                    client::connect_and_join(
                        ctx,
                        2 * j + member,
                        &room,
                        src,
                        &shared.probe_connect_hist,
                        &shared.probe_join_hist,
                    ),
                )
                .await;
                match attempt {
                    Ok(Ok((ws, _))) => sockets.push(ws),
                    Ok(Err(e)) => {
                        failures += 1;
                        shared.event(&format!("probe join failed: {e:#}"));
                    }
                    Err(_) => failures += 1,
                }
            }
            for mut ws in sockets {
                client::close(&mut ws).await;
            }
            done += 1;
        }
        let connect = shared.probe_connect_hist.snapshot().summary_ms();
        let join = shared.probe_join_hist.snapshot().summary_ms();
        eprintln!(
            "probe joins at rest: {} joins, join p50 {:.3} ms p99 {:.3} ms, {failures} failed",
            join.count, join.p50, join.p99
        );
        if done < pairs {
            self.note(format!(
                "probe joins cut short by their time bound after {done} pairs"
            ));
        }
        self.with_report(|r| {
            if let Some(c) = r.connect.as_mut() {
                c.probe_connect_ms = Some(connect);
                c.probe_join_ms = Some(join);
            }
        });
    }

    /// Wait (bounded) until every message sent so far has arrived.
    async fn quiesce(&self, limit: Duration) {
        let until = Instant::now() + limit.min(self.remaining());
        while self.shared.outstanding() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One relay step at `rate` msg/s for `secs` seconds. `None` when there is no
    /// time or no pair left, or the step number is out of range.
    async fn step(&self, step: u32, rate: f64, secs: f64) -> Option<StepFigures> {
        let counters = self.shared.step(step)?;
        let pairs = self.shared.active_pairs();
        let drain = Duration::from_secs_f64(self.args.drain_secs);
        let needed = Duration::from_secs_f64(secs) + drain + Duration::from_secs(1);
        if pairs == 0 || rate <= 0.0 || self.remaining() < needed {
            if self.remaining() < needed {
                self.note(format!(
                    "step {step} at {rate:.0} msg/s skipped: hard deadline too near"
                ));
            }
            return None;
        }
        // Let anything left from an earlier step arrive first.
        self.quiesce(drain).await;
        let period = Duration::from_secs_f64(2.0 * pairs as f64 / rate);
        let start = Instant::now() + Duration::from_millis(100);
        let end = start + Duration::from_secs_f64(secs);
        let s0 = self.look();
        self.shared
            .label
            .store(label::STEP_BASE + step, Ordering::Relaxed);
        self.phase.send_replace(Phase::Relay {
            step,
            start,
            end,
            period,
        });
        tokio::time::sleep_until(end).await;
        let drain_until = Instant::now() + drain;
        while counters.received.load(Ordering::Relaxed) < counters.sent.load(Ordering::Relaxed)
            && Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.phase.send_replace(Phase::Idle);
        let s1 = self.look();
        self.shared.label.store(label::IDLE, Ordering::Relaxed);

        let sent = counters.sent.load(Ordering::Relaxed);
        let received = counters.received.load(Ordering::Relaxed);
        let lost = sent.saturating_sub(received);
        let latency = counters.latency.snapshot().summary_ms();
        let send_lag = counters.lag.snapshot().summary_ms();
        let wall = s1.at.duration_since(s0.at).as_secs_f64().max(1e-9);
        let idle_percent = self
            .report
            .lock()
            .ok()
            .and_then(|r| r.idle.as_ref().and_then(|i| i.server_idle_cpu_percent));
        let (server_cpu_percent, per_1000, per_1000_above_idle, rss) = match (s0.server, s1.server)
        {
            (Some(a), Some(b)) => {
                let cpu = b.cpu_secs - a.cpu_secs;
                let per = (received > 0).then(|| cpu * 1000.0 / received as f64);
                let above = idle_percent.and_then(|idle| {
                    let extra = (cpu - idle / 100.0 * wall).max(0.0);
                    (received > 0).then(|| extra * 1000.0 / received as f64)
                });
                (Some(cpu * 100.0 / wall), per, above, Some(b.rss_kib))
            }
            _ => (None, None, None, None),
        };
        let client_cpu_percent = match (s0.own, s1.own) {
            (Some(a), Some(b)) => (b.cpu_secs - a.cpu_secs) * 100.0 / wall,
            _ => 0.0,
        };
        let machine_busy_percent = match (s0.machine, s1.machine) {
            (Some(a), Some(b)) => a.busy_percent(b),
            _ => 0.0,
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let ours = (server_cpu_percent.unwrap_or(0.0) + client_cpu_percent) / cpus;
        let other_load_percent = (machine_busy_percent - ours).max(0.0);
        let disturbed = other_load_percent > self.args.max_other_load;
        let incidents = self.shared.events_with_prefix(&format!("step {step}:"));
        let achieved_rate = sent as f64 / secs;
        let limit = self.args.p99_limit_ms;
        let mut why = Vec::new();
        if latency.p99 > limit {
            why.push(format!("p99 {:.1} ms > {limit} ms", latency.p99));
        }
        if lost > 0 {
            why.push(format!("{lost} lost"));
        }
        if incidents > 0 {
            why.push(format!("{incidents} closes/errors"));
        }
        if achieved_rate < 0.95 * rate {
            why.push(format!(
                "rate not reached ({:.0}% sent)",
                achieved_rate * 100.0 / rate
            ));
        }
        let ok = why.is_empty();
        if !ok && disturbed {
            why.push(format!(
                "disturbed: other processes used {other_load_percent:.0}% of the machine"
            ));
        }
        let figures = StepFigures {
            step,
            target_rate: rate,
            achieved_rate,
            secs,
            pairs,
            sent,
            received,
            lost,
            latency_ms: latency,
            send_lag_ms: send_lag,
            server_cpu_percent,
            server_cpu_secs_per_1000_msgs: per_1000,
            server_cpu_secs_per_1000_msgs_above_idle: per_1000_above_idle,
            server_rss_kib: rss,
            client_cpu_percent,
            machine_busy_percent,
            other_load_percent,
            disturbed,
            retries: 0,
            incidents,
            ok,
            verdict: if ok { "ok".to_owned() } else { why.join(", ") },
        };
        Some(figures)
    }

    /// Measure at `rate` for `secs`; a failing step that other processes on the
    /// machine disturbed is measured again, at most `--retries` times.
    async fn measure(&self, rate: f64, secs: f64) -> Option<StepFigures> {
        let mut retries = 0u32;
        loop {
            let step = self.next_step.fetch_add(1, Ordering::Relaxed);
            if step as usize >= MAX_STEPS {
                return None;
            }
            let mut f = self.step(step, rate, secs).await?;
            f.retries = retries;
            if f.ok || !f.disturbed || retries >= self.args.retries {
                return Some(f);
            }
            retries += 1;
            self.note(format!(
                "{rate:.0} msg/s: {} — measuring again ({retries} of {})",
                f.verdict, self.args.retries
            ));
            self.with_report(|r| r.disturbed.push(f));
            self.quiesce(Duration::from_secs_f64(self.args.drain_secs))
                .await;
            tokio::time::sleep(Duration::from_secs(3).min(self.remaining())).await;
        }
    }

    /// Run one sweep step and record it; returns its figures.
    async fn sweep_step(&self, rate: f64) -> Option<StepFigures> {
        // Enough samples for a meaningful p99 at low rates: up to 4× longer steps.
        let secs = self
            .args
            .step_secs
            .max((MIN_STEP_SAMPLES / rate).min(4.0 * self.args.step_secs));
        let f = self.measure(rate, secs).await?;
        eprintln!(
            "sweep: {:.0} msg/s → p99 {:.2} ms, {}",
            rate, f.latency_ms.p99, f.verdict
        );
        self.with_report(|r| r.sweep.push(f.clone()));
        // Pause between steps so a backlog from this one does not bleed into the next.
        self.quiesce(Duration::from_secs_f64(self.args.drain_secs))
            .await;
        tokio::time::sleep(Duration::from_secs(1).min(self.remaining())).await;
        Some(f)
    }

    /// Find the highest passing rate: double from the start value until a step
    /// fails (or halve while the start fails), then bisect between the two.
    async fn sweep(&self) {
        let mut best: Option<StepFigures> = None;
        let mut worst: Option<StepFigures> = None;
        let mut stopped = String::new();
        let mut rate = self.args.sweep_start;
        for _ in 0..self.args.sweep_steps.max(1) {
            let Some(f) = self.sweep_step(rate).await else {
                stopped = "hard deadline or step budget".to_owned();
                break;
            };
            if f.ok {
                best = Some(f);
                rate *= 2.0;
            } else {
                stopped = f.verdict.clone();
                worst = Some(f);
                break;
            }
        }
        if worst.is_none() && stopped.is_empty() {
            stopped = format!(
                "sweep step budget ({} doublings) exhausted without a failure",
                self.args.sweep_steps
            );
        }
        // Even the start failed: look lower, a few halvings.
        if best.is_none() && worst.is_some() {
            let mut r = self.args.sweep_start;
            for _ in 0..3 {
                r /= 2.0;
                let Some(f) = self.sweep_step(r).await else {
                    break;
                };
                if f.ok {
                    best = Some(f);
                    break;
                }
                worst = Some(f);
            }
        }
        // Bisect.
        for _ in 0..self.args.sweep_refine {
            let (Some(lo), Some(hi)) = (best.as_ref(), worst.as_ref()) else {
                break;
            };
            let mid = ((lo.target_rate + hi.target_rate) / 2.0).round();
            if hi.target_rate - lo.target_rate <= lo.target_rate * 0.05 {
                break;
            }
            let Some(f) = self.sweep_step(mid).await else {
                break;
            };
            if f.ok {
                best = Some(f);
            } else {
                stopped = f.verdict.clone();
                worst = Some(f);
            }
        }
        let max = MaxRate {
            rate: best.as_ref().map(|b| b.target_rate),
            p99_ms: best.as_ref().map(|b| b.latency_ms.p99),
            first_failing_rate: worst.as_ref().map(|w| w.target_rate),
            limited_by: stopped,
        };
        self.with_report(|r| r.max_rate = Some(max));
    }

    /// Tell every client to close, wait a bounded time, abort the rest.
    async fn close_all(&self, clients: &mut JoinSet<()>) {
        self.shared.label.store(label::CLOSING, Ordering::Relaxed);
        self.phase.send_replace(Phase::Close);
        let until = Instant::now() + Duration::from_secs(10);
        while !clients.is_empty() {
            match tokio::time::timeout_at(until, clients.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        clients.abort_all();
        self.with_report(|r| r.events = self.shared.events());
    }
}
