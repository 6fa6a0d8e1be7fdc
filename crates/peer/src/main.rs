//! `duet-peer`: join a Duet room as a headless WebRTC peer, send a test pattern
//! and a tone, check what comes back, and report.
//!
//! Exit status: 0 when media arrived (in load mode: in every call, both ways),
//! 2 when none arrived within `--timeout`, 1 on any other failure (signaling,
//! negotiation, relay, bad arguments).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use duet_peer::driver::{self, PeerOptions};
use duet_peer::load;
use duet_peer::media::{Clip, DEFAULT_AUDIO, DEFAULT_FPS, DEFAULT_H264_VIDEO, DEFAULT_VIDEO};
use duet_peer::report::{Outcome, Report};
use duet_peer::signaling::{Trust, tls_config};

/// A headless native WebRTC peer for Duet rooms.
#[derive(Debug, Parser)]
#[command(name = "duet-peer", version)]
struct Args {
    /// The signaling endpoint, wss://HOST:PORT/ws.
    #[arg(long, env = "DUET_PEER_URL")]
    url: String,
    /// The room to join.
    #[arg(long, env = "DUET_PEER_ROOM")]
    room: String,
    /// Trust only the certificates in this PEM file (duet serve keeps its
    /// self-signed one at DATA_DIR/cert.pem).
    #[arg(long, conflicts_with = "insecure")]
    ca_file: Option<PathBuf>,
    /// Accept any server certificate (the connection is then not authenticated).
    #[arg(long)]
    insecure: bool,
    /// Use only a TURN relay candidate, from the server's iceServers.
    #[arg(long)]
    relay_only: bool,
    /// Offer only the host candidate. By default a TURN relay candidate (from
    /// the server's iceServers) is offered next to it, as browsers do, so a
    /// peer behind NAT can still be reached.
    #[arg(long, conflicts_with = "relay_only")]
    no_relay: bool,
    /// Answer chat messages from the other side with "echo: …".
    #[arg(long)]
    echo: bool,
    /// Send this chat message once the data channel is open.
    #[arg(long)]
    chat: Option<String>,
    /// Fail (exit status 2) when no media has arrived after this many seconds.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    /// Stop this many seconds after media started to arrive (default: when the
    /// other peer leaves).
    #[arg(long)]
    duration: Option<f64>,
    /// Stay in the room after the other member leaves and take the next call
    /// (a bot or a probe); the run ends at --max-duration or Ctrl-C, and
    /// --timeout counts from the start of each call.
    #[arg(long, conflicts_with_all = ["duration", "calls"])]
    stay: bool,
    /// Stop after this many seconds whatever happens.
    #[arg(long, default_value_t = 3600.0)]
    max_duration: f64,
    /// Video to send, looped: VP8 in IVF or an H.264 Annex B stream (see
    /// crates/peer/fixtures/make-fixtures.sh).
    #[arg(long, conflicts_with = "no_video")]
    video: Option<PathBuf>,
    /// The codec of the built-in test pattern (with --video the file decides).
    #[arg(long, value_enum, default_value_t = VideoCodec::Vp8, conflicts_with_all = ["video", "no_video"])]
    codec: VideoCodec,
    /// Frames per second of a --video H.264 stream (Annex B does not carry it).
    #[arg(long, default_value_t = DEFAULT_FPS, value_parser = clap::value_parser!(u32).range(1..=120))]
    fps: u32,
    /// Opus audio to send, looped (Ogg).
    #[arg(long, conflicts_with = "no_audio")]
    audio: Option<PathBuf>,
    /// Send no video.
    #[arg(long)]
    no_video: bool,
    /// Send no audio.
    #[arg(long)]
    no_audio: bool,
    /// Write the received media to DIR/received-video.ivf (or .h264) and
    /// DIR/received-audio.ogg (with --stay: DIR/call-1/, DIR/call-2/, …).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Write the JSON report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The local IP address for ICE (default: the one routing to the server).
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
    /// No status line every second.
    #[arg(long)]
    quiet: bool,
    /// Load mode: run this many calls at once, each a pair of native peers in
    /// its own room (ROOM-0, ROOM-1, …), for --duration seconds (default 10).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=500))]
    calls: Option<u16>,
    /// Log filter (tracing syntax).
    #[arg(long, env = "DUET_PEER_LOG", default_value = "duet_peer=info,warn")]
    log: String,
}

/// The built-in test pattern's codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VideoCodec {
    Vp8,
    H264,
}

fn main() -> ExitCode {
    // Usage errors exit 1: status 2 means "no media".
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NoMedia) => ExitCode::from(2),
        Ok(Outcome::Error) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("duet-peer: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<Outcome> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let crypto = Arc::new(str0m::crypto::from_feature_flags());
    let trust = match (&args.ca_file, args.insecure) {
        (Some(path), _) => Trust::CaFile(path.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::System,
    };
    let options = PeerOptions {
        url: args.url.clone(),
        room: args.room.clone(),
        tls: tls_config(&trust)?,
        relay_only: args.relay_only,
        use_relay: !args.no_relay,
        echo: args.echo,
        timeout: seconds(args.timeout, "--timeout")?,
        duration: args
            .duration
            .map(|d| seconds(d, "--duration"))
            .transpose()?,
        max_duration: seconds(args.max_duration, "--max-duration")?,
        bind_ip: args.bind,
        video: load_clip(
            args.no_video,
            args.video.as_ref(),
            match args.codec {
                VideoCodec::Vp8 => DEFAULT_VIDEO,
                VideoCodec::H264 => DEFAULT_H264_VIDEO,
            },
            |bytes| Clip::from_video_file(bytes, args.fps),
        )?,
        audio: load_clip(
            args.no_audio,
            args.audio.as_ref(),
            DEFAULT_AUDIO,
            Clip::from_ogg_opus,
        )?,
        record_dir: args.record.clone(),
        chat: args.chat.clone(),
        status_every: (!args.quiet).then_some(Duration::from_secs(1)),
        label: String::new(),
        progress: None,
        stay: args.stay,
    };
    if let Some(calls) = args.calls {
        return run_load(usize::from(calls), options, crypto, &args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(driver::run(options, crypto));
    write_report(&report, args.report.as_ref())?;
    if let Some(error) = &report.error {
        eprintln!("duet-peer: {error}");
    }
    Ok(report.outcome)
}

fn run_load(
    calls: usize,
    mut template: PeerOptions,
    crypto: Arc<str0m::crypto::CryptoProvider>,
    args: &Args,
) -> anyhow::Result<Outcome> {
    template.duration = template.duration.or(Some(Duration::from_secs(10)));
    let status_every = template.status_every.take();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(load::run(calls, template, crypto, status_every));
    let json = serde_json::to_string_pretty(&report)?;
    match &args.report {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    eprintln!(
        "duet-peer: {}/{} calls carried media both ways; loss {:.3} %; {} peer errors",
        report.calls_with_media_both_ways,
        report.calls,
        report.loss_percent,
        report.errors.len()
    );
    Ok(
        if !report.errors.is_empty() && report.peers.iter().any(|p| p.outcome == Outcome::Error) {
            Outcome::Error
        } else if report.calls_with_media_both_ways < report.calls {
            Outcome::NoMedia
        } else {
            Outcome::Ok
        },
    )
}

fn load_clip(
    none: bool,
    path: Option<&PathBuf>,
    default: &[u8],
    parse: impl Fn(&[u8]) -> Result<Clip, duet_peer::media::MediaError>,
) -> anyhow::Result<Option<Arc<Clip>>> {
    if none {
        return Ok(None);
    }
    let clip = match path {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            parse(&bytes).with_context(|| format!("reading {}", path.display()))?
        }
        None => parse(default).context("the built-in clip")?,
    };
    Ok(Some(Arc::new(clip)))
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds"))
}

fn write_report(report: &Report, path: Option<&PathBuf>) -> anyhow::Result<()> {
    if let Some(code) = &report.verification_code {
        // For the person at the other end to compare with what their page shows.
        eprintln!("duet-peer: verification code {code}");
    }
    let json = serde_json::to_string_pretty(report)?;
    match path {
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
        }
        None => {
            println!("{json}");
            Ok(())
        }
    }
}
