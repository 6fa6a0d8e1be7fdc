//! Relays on other hosts (`--turn-server`): `duet serve` hands each caller one
//! of several `duet turn` relays that share its TURN REST secret, so relay
//! capacity grows apart from signaling, and relayed calls do not depend on the
//! signaling node at all.
//!
//! Which one: the relay with the fewest allocations, as each relay's own
//! `/metrics` says (polled every second over plain HTTP, `duet turn
//! --metrics-listen`); ties and relays without metrics take turns. A relay
//! whose metrics stop answering is left out until they answer again (unless
//! every relay is silent: then all take turns, since metrics may simply be
//! firewalled).
//!
//! Owns the choice and the polling; the credentials are the REST scheme every
//! Duet relay checks (`duet_turn::rest_credentials`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use duet_signaling::IceServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// How often each relay's metrics are read.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// A relay whose metrics have not answered for this long is left out.
const STALE_AFTER: Duration = Duration::from_secs(4);
/// Longest a metrics request may take.
const POLL_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest metrics page read.
const MAX_METRICS_BYTES: usize = 1024 * 1024;

/// One relay on another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRelay {
    /// As clients reach it: a name, an IPv4 address or a bracketed IPv6 one.
    pub host: String,
    pub port: u16,
    /// Its metrics page: host:port to connect to, and the path.
    pub metrics: Option<(String, String)>,
}

/// `--turn-server` values and the shared secret, validated.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub relays: Vec<ExternalRelay>,
    pub secret: String,
    pub credential_ttl: Duration,
}

impl PoolConfig {
    /// `None` without `--turn-server`. Each value is `HOST[:PORT][@http://HOST:PORT/PATH]`.
    pub fn parse(
        values: &[String],
        secret: Option<String>,
        credential_ttl: Duration,
    ) -> anyhow::Result<Option<Self>> {
        if values.is_empty() {
            return Ok(None);
        }
        let secret = secret.context(
            "--turn-server needs --turn-secret: the secret the relays share (their --turn-secret)",
        )?;
        let relays = values
            .iter()
            .map(|value| parse_relay(value).with_context(|| format!("--turn-server `{value}`")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Self {
            relays,
            secret,
            credential_ttl,
        }))
    }
}

fn parse_relay(value: &str) -> anyhow::Result<ExternalRelay> {
    let (address, metrics) = match value.split_once('@') {
        Some((address, url)) => (address, Some(parse_metrics_url(url)?)),
        None => (value, None),
    };
    let address = address.trim_start_matches("turn:");
    let (host, port) = match address.rsplit_once(':') {
        // `[v6]:port` or `name:port`; a bare IPv6 address has more colons.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (
            host,
            port.parse::<u16>().context("the port is not a number")?,
        ),
        _ => (address, 3478),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if host.is_empty() || port == 0 {
        bail!("give it as HOST[:PORT][@http://HOST:PORT/metrics]");
    }
    Ok(ExternalRelay {
        host,
        port,
        metrics,
    })
}

fn parse_metrics_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("the metrics URL must be http://HOST:PORT/PATH (an internal address)")?;
    let (authority, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, "/metrics"),
    };
    if !authority.contains(':') {
        bail!("the metrics URL needs its port, e.g. http://10.0.0.5:9478/metrics");
    }
    Ok((authority.to_owned(), path.to_owned()))
}

/// What is known of one relay's load.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    allocations: u64,
    seen: Option<Instant>,
}

/// The relays and what their metrics said.
#[derive(Debug)]
pub struct RelayPool {
    config: PoolConfig,
    loads: Mutex<Vec<Load>>,
    turn: AtomicUsize,
}

impl RelayPool {
    pub fn new(config: PoolConfig) -> Arc<Self> {
        let loads = Mutex::new(vec![Load::default(); config.relays.len()]);
        Arc::new(Self {
            config,
            loads,
            turn: AtomicUsize::new(0),
        })
    }

    fn loads(&self) -> std::sync::MutexGuard<'_, Vec<Load>> {
        self.loads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The relay the next caller gets, at `now`.
    pub fn choose(&self, now: Instant) -> usize {
        let loads = self.loads().clone();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        choose(&loads, turn, now)
    }

    /// The `iceServers` of one session: the chosen relay, with credentials for it.
    pub fn ice_servers(&self, session: &str) -> Vec<IceServer> {
        let index = self.choose(Instant::now());
        let Some(relay) = self.config.relays.get(index) else {
            return Vec::new();
        };
        let (host, port) = (&relay.host, relay.port);
        crate::turn::session_ice_servers(
            format!("stun:{host}:{port}"),
            vec![
                format!("turn:{host}:{port}?transport=udp"),
                format!("turn:{host}:{port}?transport=tcp"),
            ],
            &self.config.secret,
            session,
            self.config.credential_ttl,
        )
    }

    /// Reads every relay's metrics each second until `shutdown`.
    pub async fn poll(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let reads = self.config.relays.iter().map(|relay| async move {
                match &relay.metrics {
                    Some((authority, path)) => allocations(authority, path).await,
                    None => None,
                }
            });
            let results = futures_util::future::join_all(reads).await;
            let now = Instant::now();
            let mut loads = self.loads();
            for (load, result) in loads.iter_mut().zip(results) {
                if let Some(allocations) = result {
                    *load = Load {
                        allocations,
                        seen: Some(now),
                    };
                }
            }
        }
    }
}

/// The relay with the fewest allocations among those whose metrics answered
/// lately (ties take turns); every relay in turn when none did.
fn choose(loads: &[Load], turn: usize, now: Instant) -> usize {
    let fresh: Vec<usize> = (0..loads.len())
        .filter(|&index| {
            loads
                .get(index)
                .and_then(|load| load.seen)
                .is_some_and(|seen| now.saturating_duration_since(seen) <= STALE_AFTER)
        })
        .collect();
    if fresh.is_empty() {
        return turn % loads.len().max(1);
    }
    let least = fresh
        .iter()
        .filter_map(|&index| loads.get(index).map(|load| load.allocations))
        .min()
        .unwrap_or(0);
    let tied: Vec<usize> = fresh
        .into_iter()
        .filter(|&index| {
            loads
                .get(index)
                .is_some_and(|load| load.allocations == least)
        })
        .collect();
    tied.get(turn % tied.len().max(1)).copied().unwrap_or(0)
}

/// `duet_turn_allocations` from a relay's metrics page, or `None` if it did not answer.
async fn allocations(authority: &str, path: &str) -> Option<u64> {
    let page = tokio::time::timeout(POLL_TIMEOUT, get(authority, path))
        .await
        .ok()??;
    page.lines()
        .find_map(|line| line.strip_prefix("duet_turn_allocations "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// A plain HTTP/1.0 GET of an internal metrics page: the body of a 200, else `None`.
async fn get(authority: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream
        .take(MAX_METRICS_BYTES as u64)
        .read_to_end(&mut response)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code == "200")
        .then(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_parse_with_and_without_metrics() {
        let config = PoolConfig::parse(
            &[
                "relay1.example.org".to_owned(),
                "turn:relay2.example.org:3479@http://10.0.0.5:9478/metrics".to_owned(),
                "[2001:db8::7]:3478".to_owned(),
                "2001:db8::8".to_owned(),
            ],
            Some("s3cret".to_owned()),
            Duration::from_secs(600),
        );
        let relays = config
            .ok()
            .flatten()
            .map(|config| config.relays)
            .unwrap_or_default();
        assert_eq!(relays.len(), 4);
        assert_eq!(
            (
                relays[0].host.as_str(),
                relays[0].port,
                relays[0].metrics.is_none()
            ),
            ("relay1.example.org", 3478, true)
        );
        assert_eq!(relays[1].port, 3479);
        assert_eq!(
            relays[1].metrics,
            Some(("10.0.0.5:9478".to_owned(), "/metrics".to_owned()))
        );
        assert_eq!(
            (relays[2].host.as_str(), relays[2].port),
            ("[2001:db8::7]", 3478)
        );
        assert_eq!(
            (relays[3].host.as_str(), relays[3].port),
            ("[2001:db8::8]", 3478)
        );
        assert!(
            PoolConfig::parse(&["r:1".to_owned()], None, Duration::from_secs(60)).is_err(),
            "no secret"
        );
        assert!(
            PoolConfig::parse(
                &["r@https://x:1/m".to_owned()],
                Some("s".into()),
                Duration::from_secs(60)
            )
            .is_err()
        );
        assert!(
            PoolConfig::parse(
                &["r:0".to_owned()],
                Some("s".into()),
                Duration::from_secs(60)
            )
            .is_err()
        );
    }

    #[test]
    fn the_least_loaded_fresh_relay_wins_and_ties_take_turns() {
        let now = Instant::now();
        let at = |allocations, seen: Option<Duration>| Load {
            allocations,
            seen: seen.map(|ago| now - ago),
        };
        let recent = Some(Duration::from_secs(1));
        // Fewest allocations wins, whatever the turn.
        let loads = [at(40, recent), at(3, recent), at(9, recent)];
        assert!((0..6).all(|turn| choose(&loads, turn, now) == 1));
        // A stale relay is left out even if it looked idle.
        let loads = [at(40, recent), at(0, Some(Duration::from_secs(30)))];
        assert!((0..6).all(|turn| choose(&loads, turn, now) == 0));
        // Ties take turns.
        let loads = [at(2, recent), at(7, recent), at(2, recent)];
        let picks: Vec<_> = (0..4).map(|turn| choose(&loads, turn, now)).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        // Nothing known: every relay in turn.
        let loads = [at(0, None), at(0, None), at(0, None)];
        let picks: Vec<_> = (0..4).map(|turn| choose(&loads, turn, now)).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
    }
}
