//! Command-line interface: `run` loads one server, `compare` puts two runs side
//! by side.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::protocol::Protocol;

/// Signaling load generator for Duet and the socket.io 2 reference server.
#[derive(Debug, Parser)]
#[command(name = "duet-sigbench", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Connect N clients in rooms of two, measure join, idle memory, relay at a
    /// stated rate, and sweep the rate up to the p99 limit.
    Run(Box<RunArgs>),
    /// Print a Markdown table of a `run --json` file, or of two side by side with ratios.
    Compare(CompareArgs),
}

/// Options of `run`. Every phase is bounded in count and time.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server protocol.
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// Server address (loopback only). Repeat it for the nodes of a cluster:
    /// the two members of each room then connect to different nodes.
    #[arg(long = "addr", default_value = "127.0.0.1:8443")]
    pub addrs: Vec<SocketAddr>,
    /// Name of the server under test, for the report.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Number of clients (even; pairs share a room).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub clients: usize,
    /// Connects + joins in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Spread sockets over this many source addresses 127.0.0.2, 127.0.0.3, …
    #[arg(long, default_value_t = 8)]
    pub source_addrs: usize,
    /// PID of the server, for RSS and CPU from /proc. Repeat it for every
    /// process of the service (each node of a cluster, and its Redis): the
    /// figures are their sums.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Idle seconds after everyone joined before measuring memory and idle CPU.
    #[arg(long, default_value_t = 5.0)]
    pub settle_secs: f64,
    /// Extra pairs joined one client at a time once all clients are idle, for
    /// the join latency at rest.
    #[arg(long, default_value_t = 100)]
    pub probe_pairs: usize,
    /// Most seconds for those probes.
    #[arg(long, default_value_t = 30.0)]
    pub probe_secs: f64,
    /// The stated aggregate relay rate, messages per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Seconds of relaying at the stated rate.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Padding bytes in each relayed message (an ICE candidate is about 200 B).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Skip the rate sweep.
    #[arg(long)]
    pub no_sweep: bool,
    /// First rate of the sweep, msg/s; each step doubles it.
    #[arg(long, default_value_t = 1000.0)]
    pub sweep_start: f64,
    /// Most doubling steps.
    #[arg(long, default_value_t = 10)]
    pub sweep_steps: u32,
    /// Bisection steps between the last passing and the first failing rate.
    #[arg(long, default_value_t = 3)]
    pub sweep_refine: u32,
    /// Seconds per sweep step.
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// The sweep's latency bound: p99 at or under this many ms.
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    /// Most seconds to wait for in-flight messages after a step.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
    /// A step counts as disturbed when processes other than the server and the
    /// generator use more than this % of the machine.
    #[arg(long, default_value_t = 15.0)]
    pub max_other_load: f64,
    /// How many times a failing, disturbed step is measured again.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds allowed for one client's connect + join.
    #[arg(long, default_value_t = 30.0)]
    pub client_timeout_secs: f64,
    /// Seconds allowed for the whole connect + join phase.
    #[arg(long, default_value_t = 300.0)]
    pub connect_phase_secs: f64,
    /// Hard deadline of the whole run, seconds.
    #[arg(long, default_value_t = 900.0)]
    pub deadline_secs: f64,
    /// The loopback port of the cluster's redis-server: its commands are
    /// counted (`INFO commandstats`) around the stated-rate phase.
    #[arg(long)]
    pub redis_port: Option<u16>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Report of the server the ratios are about (Duet).
    pub a: PathBuf,
    /// Report of the reference server (Node), if any.
    pub b: Option<PathBuf>,
}
