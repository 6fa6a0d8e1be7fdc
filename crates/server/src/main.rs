//! The `duet` command line: parse, configure, run until SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use duet_server::config::{Cli, Command, RelayConfig, ServeConfig};
use duet_server::server::{RunningServer, start};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => ServeConfig::load(args).and_then(serve),
        Command::Turn(args) => RelayConfig::load(args).and_then(relay_only),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("duet: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging, crypto provider, file-descriptor limit and the runtime, shared by every command.
fn prepare(log: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    let filter = EnvFilter::try_new(log)
        .map_err(|error| anyhow::anyhow!("invalid log filter `{log}`: {error}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    duet_server::install_crypto_provider();
    // Each connection is a file descriptor; the default soft limit (1024) is far too low.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "could not raise the open-file limit");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("cannot start the runtime: {error}"))
}

fn relay_only(config: RelayConfig) -> anyhow::Result<()> {
    let runtime = prepare(&config.log)?;
    runtime.block_on(async move {
        // Signals are caught before anything is announced, so a SIGTERM sent
        // as soon as the relay says it runs is a drain, not a kill.
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let relay = std::sync::Arc::new(
            duet_server::turn::Relay::start(config.turn, &config.data_dir, stopped.clone(), &mut tasks)
                .await?,
        );
        if let Some(address) = config.metrics_listen {
            // The relay's counters over plain HTTP, for Prometheus and for the
            // `duet serve --turn-server …@URL` that picks the least loaded relay.
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen for metrics on {address}: {error}"))?;
            let metrics = duet_server::metrics::Metrics::new();
            let counted = std::sync::Arc::clone(&relay);
            let render: std::sync::Arc<dyn Fn() -> String + Send + Sync> =
                std::sync::Arc::new(move || {
                    metrics.record_relay(&counted.stats());
                    metrics.encode()
                });
            tasks.spawn(duet_server::metrics::serve_plain(listener, render, stopped));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Duet relay is running");
        let _ = writeln!(
            out,
            "  STUN/TURN on udp://{0} and tcp://{0}",
            relay.udp_addr
        );
        if let Some(address) = config.metrics_listen {
            let _ = writeln!(out, "  metrics on http://{address}/metrics");
        }
        let _ = writeln!(
            out,
            "  TURN REST secret in {}",
            config.data_dir.join("turn-secret").display()
        );
        let _ = out.flush();
        drop(out);
        tokio::select! {
            _ = terminate.recv() => {
                // Drain: no new allocations; relayed calls go on until they end,
                // the deadline passes, or another signal comes.
                relay.stop_allocating();
                tracing::info!(deadline_secs = config.drain_timeout.as_secs(), "draining: new allocations are refused");
                let drained = async {
                    while relay.stats().allocations > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::time::timeout(config.drain_timeout, drained) => {}
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ = interrupt.recv() => {}
            Some(result) = tasks.join_next() => {
                result.map_err(|error| anyhow::anyhow!("a relay task stopped: {error}"))??;
            }
        }
        let _ = stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    })
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = prepare(&config.log)?;
    let drain_timeout = config.drain_timeout;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut server = start(config).await?;
        announce(&server);
        tokio::select! {
            _ = terminate.recv() => {
                // SIGTERM (systemd, Kubernetes, a rolling restart): drain. A
                // second SIGTERM or a SIGINT meanwhile stops at once.
                tracing::info!(deadline_secs = drain_timeout.as_secs(), "draining: clients are told to reconnect, relayed calls may finish");
                tokio::select! {
                    drained = server.drain(drain_timeout) => tracing::info!(
                        took_ms = drained.took.as_millis(),
                        connections_left = drained.connections_left,
                        allocations_left = drained.allocations_left,
                        "drained; stopped"
                    ),
                    _ = terminate.recv() => tracing::info!("stopped during the drain"),
                    _ = interrupt.recv() => tracing::info!("stopped during the drain"),
                }
                Ok(())
            }
            _ = interrupt.recv() => {
                tracing::info!("shutting down");
                server.shutdown().await;
                Ok(())
            }
            error = server.failed() => Err(error),
        }
    })
}

fn announce(server: &RunningServer) {
    let address = server.https_addr;
    let open = if address.ip().is_unspecified() || address.ip().is_loopback() {
        format!("https://localhost:{}", address.port())
    } else {
        format!("https://{address}")
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Duet is running: open {open}/?room=test in two tabs");
    let _ = writeln!(out, "  listening on https://{address}");
    if let Some(http) = server.http_addr {
        let _ = writeln!(out, "  redirecting http://{http} to HTTPS");
    }
    match server.turn_addr {
        Some(turn) => {
            let _ = writeln!(out, "  STUN/TURN on udp://{turn} and tcp://{turn}");
            let _ = writeln!(
                out,
                "  TURN over TCP and TLS on the HTTPS port {}",
                address.port()
            );
            if let Some(turns) = server.turns_addr {
                let _ = writeln!(out, "  TURN over TLS on tcp://{turns}");
            }
        }
        None => {
            let _ = writeln!(out, "  STUN/TURN relay off");
        }
    }
    let origin = if let Some(acme) = &server.identity.acme_for {
        format!("self-signed until the certificate for {acme} arrives over ACME")
    } else if server
        .identity
        .trusted
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        "given".to_owned()
    } else if server.identity.generated {
        "self-signed, made now".to_owned()
    } else {
        "self-signed, kept".to_owned()
    };
    let _ = writeln!(
        out,
        "  certificate {} ({origin})\n  SHA-256 fingerprint {}",
        server.identity.cert_path.display(),
        server.identity.fingerprint
    );
    let _ = out.flush();
}
