//! Configuration: command-line flags, `DUET_*` environment variables and an
//! optional TOML file, merged once at start-up into a typed [`ServeConfig`].
//!
//! Precedence: flag, then environment variable, then file, then default.
//! Nothing else in the binary reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use duet_signaling::IceServer;
use serde::Deserialize;

/// Duet: self-hosted 1-to-1 audio/video calls.
#[derive(Debug, Parser)]
#[command(name = "duet", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the calling service: HTTPS web page, WebSocket signaling and the TURN relay.
    Serve(ServeArgs),
    /// Run only the STUN/TURN relay (a relay-only host).
    Turn(TurnOnlyArgs),
}

/// Flags of `duet turn`.
#[derive(Debug, Args, Default)]
pub struct TurnOnlyArgs {
    /// A TOML configuration file (only its TURN keys, data_dir and log are used).
    #[arg(long, env = "DUET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where Duet keeps its state (the TURN secret) [default: ./duet-data].
    #[arg(long, env = "DUET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter [default: info].
    #[arg(long, env = "DUET_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    #[command(flatten)]
    pub turn: TurnArgs,
}

/// Flags of the embedded STUN/TURN relay.
#[derive(Debug, Args, Default, Clone)]
pub struct TurnArgs {
    /// Turn the embedded STUN/TURN relay off.
    #[arg(long, env = "DUET_NO_TURN")]
    pub no_turn: bool,
    /// UDP and TCP address of the STUN/TURN listener [default: 0.0.0.0:3478].
    #[arg(long, env = "DUET_TURN_LISTEN", value_name = "ADDR")]
    pub turn_listen: Option<SocketAddr>,
    /// The public address of this host when it sits behind 1:1 NAT (coturn's external-ip).
    #[arg(long, env = "DUET_EXTERNAL_IP", value_name = "IP")]
    pub external_ip: Option<IpAddr>,
    /// Relay ports, e.g. 49152-65535 [default: 49152-65535].
    #[arg(long, env = "DUET_RELAY_PORTS", value_name = "LOW-HIGH")]
    pub relay_ports: Option<String>,
    /// Realm of the TURN credentials [default: duet].
    #[arg(long, env = "DUET_REALM", value_name = "REALM")]
    pub realm: Option<String>,
    /// TURN REST shared secret (coturn's static-auth-secret). Default: made on
    /// first run and kept in the data directory.
    #[arg(
        long,
        env = "DUET_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,
    /// A static TURN user, NAME:PASSWORD; repeat for several.
    #[arg(
        long = "turn-user",
        env = "DUET_TURN_USER",
        value_name = "NAME:PASSWORD",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub turn_users: Vec<String>,
    /// Peer addresses the relay may reach although they are in a denied range (loopback, private, ...).
    #[arg(
        long = "allow-peer",
        env = "DUET_ALLOW_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub allow_peers: Vec<String>,
    /// Most relay allocations at once [default: 10000].
    #[arg(long, env = "DUET_TURN_MAX_ALLOCATIONS", value_name = "N")]
    pub turn_max_allocations: Option<usize>,
    /// Most relay allocations for one user [default: 10].
    #[arg(long, env = "DUET_TURN_USER_QUOTA", value_name = "N")]
    pub turn_user_quota: Option<usize>,
    /// Bytes per second one allocation may relay (both ways); unlimited if unset.
    #[arg(long, env = "DUET_TURN_BANDWIDTH", value_name = "BYTES")]
    pub turn_bandwidth: Option<u64>,
    /// Host name put in the STUN/TURN URLs given to clients [default: the
    /// first --domain, else the external IP, else the host the page was loaded from].
    #[arg(long, env = "DUET_PUBLIC_HOST", value_name = "NAME")]
    pub public_host: Option<String>,
    /// Lifetime of the per-session TURN credentials, in seconds [default: 21600].
    #[arg(long, env = "DUET_TURN_CREDENTIAL_TTL_SECS", value_name = "SECS")]
    pub turn_credential_ttl_secs: Option<u64>,
}

/// Flags of `duet serve`. Every flag also reads a `DUET_*` environment variable.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// A TOML configuration file (see config.example.toml).
    #[arg(long, env = "DUET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTPS address; `[::]` listens on IPv6 and IPv4 [default: [::]:8443].
    #[arg(long, env = "DUET_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Plain HTTP address that redirects to HTTPS (off unless set).
    #[arg(long, env = "DUET_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// A TCP address that serves TURN over TLS alone, e.g. 0.0.0.0:5349 (off
    /// unless set; the HTTPS port serves TURN over TCP and TLS anyway).
    #[arg(long, env = "DUET_TURNS_LISTEN", value_name = "ADDR")]
    pub turns_listen: Option<SocketAddr>,
    /// Certificate chain (PEM); with --key. Without both, a self-signed one is made.
    #[arg(long, env = "DUET_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "DUET_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Obtain and renew a certificate for the --domain names over ACME
    /// (TLS-ALPN-01 on the HTTPS port, which must be reachable as port 443).
    #[arg(long, env = "DUET_ACME", conflicts_with = "cert")]
    pub acme: bool,
    /// The ACME directory [default: Let's Encrypt's production directory].
    #[arg(long, env = "DUET_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// The CA (PEM) that signs the ACME directory's own HTTPS certificate, for
    /// test directories such as pebble; without it the Web PKI roots are used.
    #[arg(long, env = "DUET_ACME_CA", value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,
    /// Contact address given to the ACME CA (expiry notices).
    #[arg(long, env = "DUET_ACME_EMAIL", value_name = "ADDRESS")]
    pub acme_email: Option<String>,
    /// Where Duet keeps its state (the generated certificate) [default: ./duet-data].
    #[arg(long, env = "DUET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Public host name of this server; repeat for several. Goes into the generated certificate.
    #[arg(
        long = "domain",
        env = "DUET_DOMAIN",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub domains: Vec<String>,
    /// Serve the web client from this directory instead of the copy built into the binary.
    #[arg(long, env = "DUET_WEB_DIR", value_name = "DIR")]
    pub web_dir: Option<PathBuf>,
    /// Another origin allowed to open the signaling WebSocket, e.g. https://app.example.org.
    #[arg(
        long = "allowed-origin",
        env = "DUET_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Seconds without any frame before a connection is dropped [default: 30].
    #[arg(long, env = "DUET_SILENCE_TIMEOUT_SECS", value_name = "SECS")]
    pub silence_timeout_secs: Option<u64>,
    /// Seconds a lost connection's seat waits for a resume [default: 20].
    #[arg(long, env = "DUET_RESUME_GRACE_SECS", value_name = "SECS")]
    pub resume_grace_secs: Option<u64>,
    /// Most WebSocket connections at once [default: 50000].
    #[arg(long, env = "DUET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most WebSocket connections from one IP address [default: 100].
    #[arg(long, env = "DUET_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Most rooms at once [default: 100000].
    #[arg(long, env = "DUET_MAX_ROOMS", value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Messages per second a connection may sustain [default: 50].
    #[arg(long, env = "DUET_RATE_LIMIT_PER_SECOND", value_name = "N")]
    pub rate_limit_per_second: Option<u32>,
    /// Messages a connection may send in a burst [default: 200].
    #[arg(long, env = "DUET_RATE_LIMIT_BURST", value_name = "N")]
    pub rate_limit_burst: Option<u32>,
    /// Log filter, e.g. `info` or `duet=debug` [default: info].
    #[arg(long, env = "DUET_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    #[command(flatten)]
    pub turn: TurnArgs,
}

impl ServeArgs {
    /// Flags for a server that lives on loopback only: HTTPS and the TURN relay
    /// on free ports of 127.0.0.1, the relay allowed to reach loopback peers,
    /// state in `data_dir` (the in-process servers of the tests).
    #[must_use]
    pub fn loopback(data_dir: PathBuf) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut args = Self {
            listen: Some(any_port),
            data_dir: Some(data_dir),
            ..Self::default()
        };
        args.turn.turn_listen = Some(any_port);
        args.turn.allow_peers = vec!["127.0.0.0/8".to_owned()];
        args
    }
}

/// The optional configuration file; same names as the flags, with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub turns_listen: Option<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub acme: Option<bool>,
    pub acme_directory: Option<String>,
    pub acme_ca: Option<PathBuf>,
    pub acme_email: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub domains: Vec<String>,
    pub web_dir: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub silence_timeout_secs: Option<u64>,
    pub resume_grace_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_rooms: Option<usize>,
    pub rate_limit_per_second: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub log: Option<String>,
    /// Extra `iceServers` entries handed to every client in `joined`.
    pub ice_servers: Vec<IceServer>,
    pub turn: FileTurnConfig,
}

/// The `[turn]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTurnConfig {
    pub enabled: Option<bool>,
    pub listen: Option<SocketAddr>,
    pub external_ip: Option<IpAddr>,
    pub relay_ports: Option<String>,
    pub realm: Option<String>,
    pub secret: Option<String>,
    pub users: Vec<String>,
    pub allow_peers: Vec<String>,
    pub max_allocations: Option<usize>,
    pub user_quota: Option<usize>,
    pub bandwidth: Option<u64>,
    pub public_host: Option<String>,
    pub credential_ttl_secs: Option<u64>,
}

/// The relay's settings, validated.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub listen: SocketAddr,
    pub external_ip: Option<IpAddr>,
    pub relay_ports: std::ops::RangeInclusive<u16>,
    pub realm: String,
    /// `None`: read or make the secret in the data directory.
    pub secret: Option<String>,
    pub users: Vec<(String, String)>,
    pub allow_peers: Vec<duet_turn::Cidr>,
    pub max_allocations: usize,
    pub user_quota: usize,
    pub bandwidth: Option<u64>,
    pub public_host: Option<String>,
    pub credential_ttl: Duration,
}

impl TurnSettings {
    /// Merges flags over the file's `[turn]` table over defaults. `None` when the relay is off.
    pub fn merge(args: TurnArgs, file: FileTurnConfig) -> anyhow::Result<Option<Self>> {
        if args.no_turn || file.enabled == Some(false) {
            return Ok(None);
        }
        let relay_ports = args
            .relay_ports
            .or(file.relay_ports)
            .unwrap_or_else(|| "49152-65535".to_owned());
        let relay_ports = parse_port_range(&relay_ports)
            .with_context(|| format!("`{relay_ports}` is not a port range like 49152-65535"))?;
        let users = if args.turn_users.is_empty() {
            file.users
        } else {
            args.turn_users
        };
        let users = users
            .iter()
            .map(|entry| {
                entry
                    .split_once(':')
                    .filter(|(name, password)| !name.is_empty() && !password.is_empty())
                    .map(|(name, password)| (name.to_owned(), password.to_owned()))
                    .with_context(|| "a TURN user must be given as NAME:PASSWORD".to_owned())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let allow_peers = if args.allow_peers.is_empty() {
            file.allow_peers
        } else {
            args.allow_peers
        };
        let allow_peers = allow_peers
            .iter()
            .map(|cidr| cidr.parse::<duet_turn::Cidr>().map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ttl = args
            .turn_credential_ttl_secs
            .or(file.credential_ttl_secs)
            .unwrap_or(6 * 3600);
        if ttl < 60 {
            bail!("the TURN credential lifetime must be at least 60 seconds");
        }
        Ok(Some(Self {
            listen: args
                .turn_listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 3478))),
            external_ip: args.external_ip.or(file.external_ip),
            relay_ports,
            realm: args
                .realm
                .or(file.realm)
                .unwrap_or_else(|| "duet".to_owned()),
            secret: args.turn_secret.or(file.secret),
            users,
            allow_peers,
            max_allocations: args
                .turn_max_allocations
                .or(file.max_allocations)
                .unwrap_or(10_000),
            user_quota: args.turn_user_quota.or(file.user_quota).unwrap_or(10),
            bandwidth: args.turn_bandwidth.or(file.bandwidth),
            public_host: args.public_host.or(file.public_host),
            credential_ttl: Duration::from_secs(ttl),
        }))
    }
}

fn parse_port_range(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-')?;
    let (low, high) = (
        low.trim().parse::<u16>().ok()?,
        high.trim().parse::<u16>().ok()?,
    );
    (low > 0 && low <= high).then_some(low..=high)
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    SelfSigned,
    /// Obtained over ACME; the self-signed one is served until it arrives.
    Acme(AcmeSettings),
}

/// Let's Encrypt's production directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// What `--acme` needs: the names, the CA's directory and how to trust it.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub directory: String,
    /// Trust only this CA for the directory's HTTPS (a test CA); Web PKI otherwise.
    pub directory_ca: Option<PathBuf>,
    pub contact: Option<String>,
}

impl AcmeSettings {
    fn merge(
        domains: &[String],
        directory: Option<String>,
        directory_ca: Option<PathBuf>,
        contact: Option<String>,
    ) -> anyhow::Result<Self> {
        if domains.is_empty() {
            bail!("--acme needs the name the certificate is for: give it with --domain");
        }
        let mut names = Vec::with_capacity(domains.len());
        for domain in domains {
            let name = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = name.contains('.')
                && name.parse::<IpAddr>().is_err()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                bail!(
                    "--acme needs DNS names, and `{domain}` is not one (ACME CAs do not certify IP addresses or single-label names)"
                );
            }
            names.push(name);
        }
        let directory = directory.unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_owned());
        if !directory.starts_with("https://") {
            bail!("the ACME directory `{directory}` is not an https:// URL");
        }
        let contact = contact.map(|address| {
            if address.starts_with("mailto:") {
                address
            } else {
                format!("mailto:{address}")
            }
        });
        Ok(Self {
            domains: names,
            directory,
            directory_ca,
            contact,
        })
    }
}

/// Everything `duet serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    /// The TURN-over-TLS-only listener, when set.
    pub turns_listen: Option<SocketAddr>,
    pub certificate: CertificateSource,
    pub data_dir: PathBuf,
    pub domains: Vec<String>,
    pub web_dir: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub log: String,
    pub signaling: duet_signaling::Config,
    /// The embedded relay; `None` when it is off.
    pub turn: Option<TurnSettings>,
}

impl ServeConfig {
    /// Merges flags and environment (already in `args`) over the file, over defaults.
    pub fn load(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    pub fn merge(args: ServeArgs, file: FileConfig) -> anyhow::Result<Self> {
        let defaults = duet_signaling::Config::default();
        let cert = args.cert.or(file.cert);
        let key = args.key.or(file.key);
        let domains = if args.domains.is_empty() {
            file.domains
        } else {
            args.domains
        };
        let acme = args.acme || file.acme.unwrap_or(false);
        let certificate = match (cert, key) {
            (Some(_), Some(_)) if acme => {
                bail!("--acme obtains the certificate, so --cert and --key cannot be given with it")
            }
            (Some(cert), Some(key)) => CertificateSource::Files { cert, key },
            (None, None) if acme => CertificateSource::Acme(AcmeSettings::merge(
                &domains,
                args.acme_directory.or(file.acme_directory),
                args.acme_ca.or(file.acme_ca),
                args.acme_email.or(file.acme_email),
            )?),
            (None, None) => CertificateSource::SelfSigned,
            (Some(_), None) => bail!("a certificate was given without its key (--key)"),
            (None, Some(_)) => bail!("a key was given without its certificate (--cert)"),
        };
        let silence_secs = args
            .silence_timeout_secs
            .or(file.silence_timeout_secs)
            .unwrap_or(defaults.silence_timeout.as_secs());
        if silence_secs < 2 {
            bail!("the silence timeout must be at least 2 seconds");
        }
        let grace_secs = args
            .resume_grace_secs
            .or(file.resume_grace_secs)
            .unwrap_or(defaults.resume_grace.as_secs());
        let rate_per_second = args
            .rate_limit_per_second
            .or(file.rate_limit_per_second)
            .unwrap_or(defaults.rate_limit.per_second);
        let rate_burst = args
            .rate_limit_burst
            .or(file.rate_limit_burst)
            .unwrap_or(defaults.rate_limit.burst);
        if rate_per_second == 0 || rate_burst == 0 {
            bail!("the rate limit and burst must be at least 1");
        }
        let mut allowed_origins = if args.allowed_origins.is_empty() {
            file.allowed_origins
        } else {
            args.allowed_origins
        };
        for origin in &mut allowed_origins {
            *origin = normalize_origin(origin)
                .with_context(|| format!("`{origin}` is not an origin like https://host:port"))?;
        }
        let turn = TurnSettings::merge(args.turn, file.turn)?;
        let turns_listen = args.turns_listen.or(file.turns_listen);
        if turns_listen.is_some() && turn.is_none() {
            bail!("--turns-listen serves the relay, which is turned off (--no-turn)");
        }
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8443))),
            http_listen: args.http_listen.or(file.http_listen),
            turns_listen,
            certificate,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("duet-data")),
            domains,
            web_dir: args.web_dir.or(file.web_dir),
            allowed_origins,
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(50_000),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(100),
            log: args
                .log
                .or(file.log)
                .unwrap_or_else(|| "info,memory_serve=warn".to_owned()),
            turn,
            signaling: duet_signaling::Config {
                silence_timeout: Duration::from_secs(silence_secs),
                resume_grace: Duration::from_secs(grace_secs),
                max_rooms: args
                    .max_rooms
                    .or(file.max_rooms)
                    .unwrap_or(defaults.max_rooms),
                rate_limit: duet_signaling::RateLimit {
                    burst: rate_burst,
                    per_second: rate_per_second,
                    refusals_before_close: defaults.rate_limit.refusals_before_close,
                },
                ice_servers: file.ice_servers,
                ..defaults
            },
        })
    }
}

/// What `duet turn` needs, validated.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub data_dir: PathBuf,
    pub log: String,
    pub turn: TurnSettings,
}

impl RelayConfig {
    pub fn load(args: TurnOnlyArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let turn = TurnSettings::merge(args.turn, file.turn)?
            .context("the relay is turned off (--no-turn), so `duet turn` has nothing to run")?;
        Ok(Self {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("duet-data")),
            log: args.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
            turn,
        })
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "the configuration file {} is invalid: {}",
            path.display(),
            error.message()
        )
    })
}

/// `https://Host:443/` → `https://host`; keeps scheme, host and a non-default port.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/');
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return None;
    }
    let rest = rest.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let rest = rest.strip_suffix(default_port).unwrap_or(&rest);
    Some(format!("{scheme}://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sensible() -> anyhow::Result<()> {
        let config = ServeConfig::merge(ServeArgs::default(), FileConfig::default())?;
        assert_eq!(config.listen.to_string(), "[::]:8443");
        assert!(matches!(config.certificate, CertificateSource::SelfSigned));
        assert_eq!(config.data_dir, PathBuf::from("duet-data"));
        assert_eq!(config.signaling.silence_timeout, Duration::from_secs(30));
        assert_eq!(config.signaling.resume_grace, Duration::from_secs(20));
        Ok(())
    }

    #[test]
    fn flags_win_over_the_file() -> anyhow::Result<()> {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nmax_rooms = 5\nsilence_timeout_secs = 60\n",
        )?;
        let args = ServeArgs {
            silence_timeout_secs: Some(10),
            ..ServeArgs::default()
        };
        let config = ServeConfig::merge(args, file)?;
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.signaling.max_rooms, 5);
        assert_eq!(config.signaling.silence_timeout, Duration::from_secs(10));
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let result: Result<FileConfig, _> = toml::from_str("lisen = \"127.0.0.1:1\"\n");
        assert!(result.is_err());
    }

    #[test]
    fn the_example_file_parses() -> anyhow::Result<()> {
        let text = include_str!("../../../config.example.toml");
        let file: FileConfig = toml::from_str(text)?;
        ServeConfig::merge(ServeArgs::default(), file)?;
        Ok(())
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            normalize_origin("HTTPS://App.Example.org:443/").as_deref(),
            Some("https://app.example.org")
        );
        assert_eq!(
            normalize_origin("https://a.b:8443").as_deref(),
            Some("https://a.b:8443")
        );
        assert_eq!(normalize_origin("ftp://a"), None);
        assert_eq!(normalize_origin("https://a/b"), None);
    }
}
