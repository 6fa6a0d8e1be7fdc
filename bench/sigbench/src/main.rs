//! `duet-sigbench`: the signaling benchmark harness.
//!
//! Loads one signaling server on loopback with N clients in rooms of two and
//! reports join latency, server RSS per idle connection, relay latency at a stated
//! rate, and the highest rate whose p99 stays within a bound, for Duet's protocol
//! or for the socket.io 2 reference server, with the same load engine. See
//! `scripts/bench-signaling` and BENCHMARKS.md.

mod cli;
mod client;
mod engine;
mod hist;
mod net;
mod procstat;
mod protocol;
mod report;
mod state;
mod tls;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::cli::{Cli, Cmd, RunArgs};
use crate::report::{Params, Report};

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => run(*args),
        Cmd::Compare(c) => {
            let a = report::load(&c.a)?;
            let b = c.b.as_deref().map(report::load).transpose()?;
            print!("{}", report::compare(&a, b.as_ref()));
            Ok(())
        }
    }
}

/// Raise RLIMIT_NOFILE as far as allowed: to `want` if the process may raise its
/// hard limit, else to the hard limit. Returns the soft limit in force.
fn raise_nofile(want: u64) -> Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get().context("getrlimit")?;
    if want > hard && rlimit::Resource::NOFILE.set(want, want).is_ok() {
        return Ok(want);
    }
    if soft < hard {
        rlimit::Resource::NOFILE
            .set(hard, hard)
            .context("setrlimit NOFILE")?;
    }
    Ok(hard.max(soft))
}

/// File descriptors the generator needs besides its sockets.
const FD_SPARE: u64 = 32;

fn run(args: RunArgs) -> Result<()> {
    for addr in &args.addrs {
        net::check_loopback(*addr)?;
    }
    if args.clients < 2 || !args.clients.is_multiple_of(2) {
        bail!("--clients must be even and at least 2 (clients come in pairs)");
    }
    if !(args.rate > 0.0 && args.duration > 0.0 && args.step_secs > 0.0) {
        bail!("--rate, --duration and --step-secs must be positive");
    }
    let want = args.clients as u64 + FD_SPARE;
    let nofile = raise_nofile(want)?;
    if nofile < want {
        bail!(
            "{} clients need {want} file descriptors but RLIMIT_NOFILE is {nofile} (hard limit); use --clients {} or fewer",
            args.clients,
            (nofile.saturating_sub(FD_SPARE)) & !1
        );
    }
    tls::install_provider();

    let report = Arc::new(Mutex::new(Report {
        label: args.label.clone(),
        protocol: Some(args.protocol),
        target: args
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        server_pid: args.server_pids.first().copied(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        params: Params {
            clients: args.clients,
            concurrency: args.concurrency,
            source_addrs: args.source_addrs,
            payload_bytes: args.payload_bytes,
            threads: args.threads,
            rate: args.rate,
            duration_secs: args.duration,
            step_secs: args.step_secs,
            p99_limit_ms: args.p99_limit_ms,
            sweep_start: args.sweep_start,
            nofile_limit: nofile,
        },
        ..Report::default()
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let json_path = args.json.clone();
    let deadline_secs = args.deadline_secs;
    let result = runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(deadline_secs);
        // The engine stops its phases at the deadline and then closes clients
        // (bounded); this outer bound is the backstop.
        let backstop = deadline + Duration::from_secs(20);
        match tokio::time::timeout_at(backstop, engine::run(args, Arc::clone(&report), deadline))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                if let Ok(mut r) = report.lock() {
                    r.deadline_hit = true;
                }
                Ok(())
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));

    let final_report = report.lock().map(|r| r.clone()).unwrap_or_default();
    let json = serde_json::to_string(&final_report).context("serialising the report")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", final_report.human())?;
    writeln!(out, "{json}")?;
    if let Some(path) = json_path {
        std::fs::write(&path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    result
}
