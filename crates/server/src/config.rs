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

/// Declares a group of options once: for each, its flag, environment
/// variable, configuration-file key, help text and default. From that one
/// declaration come the clap flags (`$Args`), the file's table (`$File`, whose
/// `KEYS` list every key it accepts), and the merged values (`$Values`, from
/// `$Args::merge`: flag or environment, else file, else default). A default is
/// a string parsed like a flag's value, so the `[default: …]` that `--help`
/// shows is the default that is used.
///
/// Kinds: `value` (a default), `optional` (no default: `Option`), `list`
/// (comma-separated or repeated; a non-empty flag list replaces the file's),
/// `switch` (a flag without value; on if either the flag or the file says so).
macro_rules! options {
    (
        $(#[$args_meta:meta])*
        args $Args:ident, file $File:ident, values $Values:ident {
            $(
                $kind:ident $field:ident: $ty:ty = $default:tt,
                flag $flag:literal, env $env:literal, key $key:literal, name $name:literal, hide $hide:literal,
                help $help:literal;
            )*
        }
    ) => {
        options!(@args [$(#[$args_meta])*] $Args []
            $($kind $field: $ty, $flag, $env, $name, $hide, (options!(@help $kind, $help, $default));)*);

        /// Keys of the configuration file (see [`options!`]).
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        pub struct $File {
            $(
                #[serde(rename = $key)]
                pub $field: options!(@file_type $kind, $ty),
            )*
        }

        impl $File {
            /// Every key this table accepts.
            pub const KEYS: &[&str] = &[$($key),*];
            /// Every option of the group as declared.
            pub const DECLARED: &[Declared] = &[$(Declared {
                key: $key,
                flag: $flag,
                env: $env,
                default: options!(@default $kind, $default),
            }),*];
        }

        /// Merged values (see [`options!`]).
        #[derive(Debug, Clone)]
        pub struct $Values {
            $(pub $field: options!(@value_type $kind, $ty),)*
        }

        impl $Args {
            /// Flag or environment, else the file, else the default.
            pub fn merge(self, file: $File) -> anyhow::Result<$Values> {
                Ok($Values {
                    $($field: options!(@merge $kind, self.$field, file.$field, $default, $flag, $ty),)*
                })
            }
        }
    };
    // The clap struct: its field types must be written out (clap reads them to
    // tell optional, repeated and switch flags apart), hence one arm per kind.
    (@args [$($meta:tt)*] $Args:ident [$($fields:tt)*]) => {
        $($meta)*
        #[derive(Debug, Args, Default, Clone)]
        pub struct $Args { $($fields)* }
    };
    (@args $meta:tt $Args:ident [$($fields:tt)*]
        switch $field:ident: $ty:ty, $flag:literal, $env:literal, $name:literal, $hide:literal, ($help:expr);
        $($rest:tt)*) => {
        options!(@args $meta $Args [$($fields)*
            #[arg(long = $flag, env = $env, help = $help)]
            pub $field: bool,
        ] $($rest)*);
    };
    (@args $meta:tt $Args:ident [$($fields:tt)*]
        list $field:ident: $ty:ty, $flag:literal, $env:literal, $name:literal, $hide:literal, ($help:expr);
        $($rest:tt)*) => {
        options!(@args $meta $Args [$($fields)*
            #[arg(long = $flag, env = $env, value_name = $name, hide_env_values = $hide, help = $help, value_delimiter = ',')]
            pub $field: Vec<$ty>,
        ] $($rest)*);
    };
    (@args $meta:tt $Args:ident [$($fields:tt)*]
        $kind:ident $field:ident: $ty:ty, $flag:literal, $env:literal, $name:literal, $hide:literal, ($help:expr);
        $($rest:tt)*) => {
        options!(@args $meta $Args [$($fields)*
            #[arg(long = $flag, env = $env, value_name = $name, hide_env_values = $hide, help = $help)]
            pub $field: Option<$ty>,
        ] $($rest)*);
    };
    (@default value, $default:literal) => { Some($default) };
    (@default $kind:ident, $default:tt) => { None };
    (@help value, $help:literal, $default:literal) => { concat!($help, " [default: ", $default, "]") };
    (@help $kind:ident, $help:literal, $default:tt) => { $help };
    (@file_type list, $ty:ty) => { Vec<$ty> };
    (@file_type $kind:ident, $ty:ty) => { Option<$ty> };
    (@value_type value, $ty:ty) => { $ty };
    (@value_type optional, $ty:ty) => { Option<$ty> };
    (@value_type list, $ty:ty) => { Vec<$ty> };
    (@value_type switch, $ty:ty) => { bool };
    (@merge value, $arg:expr, $file:expr, $default:literal, $flag:literal, $ty:ty) => {
        match $arg.or($file) {
            Some(value) => value,
            None => parse_default::<$ty>($default, $flag)?,
        }
    };
    (@merge optional, $arg:expr, $file:expr, $default:tt, $flag:literal, $ty:ty) => { $arg.or($file) };
    (@merge list, $arg:expr, $file:expr, $default:tt, $flag:literal, $ty:ty) => {
        if $arg.is_empty() { $file } else { $arg }
    };
    (@merge switch, $arg:expr, $file:expr, $default:tt, $flag:literal, $ty:ty) => {
        $arg || $file.unwrap_or(false)
    };
}

/// One option as declared with [`options!`].
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    pub key: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
    pub default: Option<&'static str>,
}

/// A built-in default, parsed like the flag's value (a unit test parses them all).
fn parse_default<T: std::str::FromStr>(text: &str, flag: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|error| {
        anyhow::anyhow!("the built-in default of --{flag}, `{text}`, is invalid: {error}")
    })
}

options! {
    /// Where Duet keeps its state, and its log: options of both commands.
    args StateArgs, file FileState, values StateValues {
        value data_dir: PathBuf = "duet-data",
            flag "data-dir", env "DUET_DATA_DIR", key "data_dir", name "DIR", hide false,
            help "Where Duet keeps its state: the certificate, the ACME account, the TURN secret";
        value log: String = "info,memory_serve=warn",
            flag "log", env "DUET_LOG", key "log", name "FILTER", hide false,
            help "Log filter, e.g. `info` or `duet=debug`";
        value drain_timeout_secs: u64 = "30",
            flag "drain-timeout-secs", env "DUET_DRAIN_TIMEOUT_SECS", key "drain_timeout_secs", name "SECS", hide false,
            help "On SIGTERM, seconds relayed calls may go on before the server stops (it stops sooner when none is left)";
        optional metrics_listen: SocketAddr = _,
            flag "metrics-listen", env "DUET_METRICS_LISTEN", key "metrics_listen", name "ADDR", hide false,
            help "Also serve /metrics (and /healthz) over plain HTTP on this address, e.g. an internal 10.0.0.5:9478 for Prometheus and for `duet serve --turn-server …@URL`";
    }
}

options! {
    /// Options of `duet serve` (besides the relay's and the state's).
    args ServeOptions, file FileServe, values ServeValues {
        value listen: SocketAddr = "[::]:8443",
            flag "listen", env "DUET_LISTEN", key "listen", name "ADDR", hide false,
            help "HTTPS address (also TURN over TCP and TLS); `[::]` listens on IPv6 and IPv4";
        optional http_listen: SocketAddr = _,
            flag "http-listen", env "DUET_HTTP_LISTEN", key "http_listen", name "ADDR", hide false,
            help "Plain HTTP address that redirects to HTTPS (off unless set)";
        optional turns_listen: SocketAddr = _,
            flag "turns-listen", env "DUET_TURNS_LISTEN", key "turns_listen", name "ADDR", hide false,
            help "A TCP address that serves TURN over TLS alone, e.g. 0.0.0.0:5349 (off unless set; the HTTPS port serves TURN over TCP and TLS anyway)";
        optional cert: PathBuf = _,
            flag "cert", env "DUET_CERT", key "cert", name "FILE", hide false,
            help "Certificate chain (PEM); with --key. Without them (and without --acme) a self-signed one is made";
        optional key: PathBuf = _,
            flag "key", env "DUET_KEY", key "key", name "FILE", hide false,
            help "Private key (PEM) of --cert";
        switch acme: bool = _,
            flag "acme", env "DUET_ACME", key "acme", name "", hide false,
            help "Obtain and renew a certificate for the --domain names over ACME (TLS-ALPN-01 on the HTTPS port, which must be reachable as port 443)";
        value acme_directory: String = "https://acme-v02.api.letsencrypt.org/directory",
            flag "acme-directory", env "DUET_ACME_DIRECTORY", key "acme_directory", name "URL", hide false,
            help "The ACME directory (a CA's, or Let's Encrypt's staging one for trials)";
        optional acme_ca: PathBuf = _,
            flag "acme-ca", env "DUET_ACME_CA", key "acme_ca", name "FILE", hide false,
            help "The CA (PEM) of the ACME directory's own HTTPS certificate, for test directories such as pebble; without it the Web PKI roots are used";
        optional acme_email: String = _,
            flag "acme-email", env "DUET_ACME_EMAIL", key "acme_email", name "ADDRESS", hide false,
            help "Contact address given to the ACME CA (expiry notices)";
        list domains: String = _,
            flag "domain", env "DUET_DOMAIN", key "domains", name "NAME", hide false,
            help "Public host name of this server; repeat for several. Goes into the certificate and the allowed origins";
        optional web_dir: PathBuf = _,
            flag "web-dir", env "DUET_WEB_DIR", key "web_dir", name "DIR", hide false,
            help "Serve the web client from this directory instead of the copy built into the binary";
        list turn_servers: String = _,
            flag "turn-server", env "DUET_TURN_SERVER", key "turn_servers", name "HOST:PORT[@METRICS_URL]", hide false,
            help "A relay on another host (`duet turn` with the same --turn-secret) to hand out to callers instead of the embedded one; repeat for several. With @http://HOST:PORT/metrics (its --metrics-listen) each call gets the relay with the fewest allocations";
        optional redis: String = _,
            flag "redis", env "DUET_REDIS", key "redis", name "URL", hide false,
            help "Run as one node of a cluster sharing rooms through this Redis (or Valkey), e.g. redis://10.0.0.9:6379/0, rediss://user:password@host:6380 for TLS; members of one room may then be connected to different nodes";
        optional redis_ca: PathBuf = _,
            flag "redis-ca", env "DUET_REDIS_CA", key "redis_ca", name "FILE", hide false,
            help "The CA certificate (PEM) of a rediss:// server whose certificate a private CA signed (without it the system's roots are used)";
        list allowed_origins: String = _,
            flag "allowed-origin", env "DUET_ALLOWED_ORIGIN", key "allowed_origins", name "ORIGIN", hide false,
            help "Another origin allowed to open the signaling WebSocket, e.g. https://app.example.org";
        value silence_timeout_secs: u64 = "45",
            flag "silence-timeout-secs", env "DUET_SILENCE_TIMEOUT_SECS", key "silence_timeout_secs", name "SECS", hide false,
            help "Seconds without any frame before a connection is dropped";
        value join_timeout_secs: u64 = "10",
            flag "join-timeout-secs", env "DUET_JOIN_TIMEOUT_SECS", key "join_timeout_secs", name "SECS", hide false,
            help "Seconds a WebSocket may stay open without sending `join` (then closed with 4004)";
        value resume_grace_secs: u64 = "20",
            flag "resume-grace-secs", env "DUET_RESUME_GRACE_SECS", key "resume_grace_secs", name "SECS", hide false,
            help "Seconds a lost connection's seat waits for a resume (0: no resume)";
        value max_connections: usize = "50000",
            flag "max-connections", env "DUET_MAX_CONNECTIONS", key "max_connections", name "N", hide false,
            help "Most WebSocket connections at once";
        value max_connections_per_ip: usize = "100",
            flag "max-connections-per-ip", env "DUET_MAX_CONNECTIONS_PER_IP", key "max_connections_per_ip", name "N", hide false,
            help "Most WebSocket connections from one IP address";
        value max_rooms: usize = "100000",
            flag "max-rooms", env "DUET_MAX_ROOMS", key "max_rooms", name "N", hide false,
            help "Most rooms at once";
        value rate_limit_per_second: u32 = "50",
            flag "rate-limit-per-second", env "DUET_RATE_LIMIT_PER_SECOND", key "rate_limit_per_second", name "N", hide false,
            help "Messages per second a connection may sustain";
        value rate_limit_burst: u32 = "200",
            flag "rate-limit-burst", env "DUET_RATE_LIMIT_BURST", key "rate_limit_burst", name "N", hide false,
            help "Messages a connection may send in a burst";
    }
}

options! {
    /// Options of the STUN/TURN relay (`[turn]` in the file).
    args TurnArgs, file FileTurnConfig, values TurnValues {
        switch no_turn: bool = _,
            flag "no-turn", env "DUET_NO_TURN", key "disabled", name "", hide false,
            help "Turn the embedded STUN/TURN relay off";
        value turn_listen: SocketAddr = "0.0.0.0:3478",
            flag "turn-listen", env "DUET_TURN_LISTEN", key "listen", name "ADDR", hide false,
            help "UDP and TCP address of the STUN/TURN listener";
        optional relay_ipv6: IpAddr = _,
            flag "relay-ipv6", env "DUET_RELAY_IPV6", key "relay_ipv6", name "IP", hide false,
            help "IPv6 address for IPv6 relays (clients asking REQUESTED-ADDRESS-FAMILY IPv6) [default: this host's global IPv6 address, if any]";
        optional external_ip: IpAddr = _,
            flag "external-ip", env "DUET_EXTERNAL_IP", key "external_ip", name "IP", hide false,
            help "The public address of this host when it sits behind 1:1 NAT (coturn's external-ip)";
        value relay_ports: String = "49152-65535",
            flag "relay-ports", env "DUET_RELAY_PORTS", key "relay_ports", name "LOW-HIGH", hide false,
            help "Ports the relay sockets take (UDP)";
        value realm: String = "duet",
            flag "realm", env "DUET_REALM", key "realm", name "REALM", hide false,
            help "Realm of the TURN credentials";
        optional turn_secret: String = _,
            flag "turn-secret", env "DUET_TURN_SECRET", key "secret", name "SECRET", hide true,
            help "TURN REST shared secret (coturn's static-auth-secret); made on first run and kept in the data directory when unset";
        list turn_users: String = _,
            flag "turn-user", env "DUET_TURN_USER", key "users", name "NAME:PASSWORD", hide true,
            help "A static TURN user, NAME:PASSWORD; repeat for several";
        list allow_peers: String = _,
            flag "allow-peer", env "DUET_ALLOW_PEER", key "allow_peers", name "CIDR", hide false,
            help "Peer addresses the relay may reach although they are in a denied range (loopback, private, ...)";
        value turn_max_allocations: usize = "10000",
            flag "turn-max-allocations", env "DUET_TURN_MAX_ALLOCATIONS", key "max_allocations", name "N", hide false,
            help "Most relay allocations at once";
        value turn_user_quota: usize = "10",
            flag "turn-user-quota", env "DUET_TURN_USER_QUOTA", key "user_quota", name "N", hide false,
            help "Most relay allocations for one user";
        optional turn_bandwidth: u64 = _,
            flag "turn-bandwidth", env "DUET_TURN_BANDWIDTH", key "bandwidth", name "BYTES", hide false,
            help "Bytes per second one allocation may relay (both ways); unlimited if unset";
        optional public_host: String = _,
            flag "public-host", env "DUET_PUBLIC_HOST", key "public_host", name "NAME", hide false,
            help "Host name put in the STUN/TURN URLs given to clients [default: the first --domain, else the external IP, else the host the page was loaded from]";
        value turn_credential_ttl_secs: u64 = "21600",
            flag "turn-credential-ttl-secs", env "DUET_TURN_CREDENTIAL_TTL_SECS", key "credential_ttl_secs", name "SECS", hide false,
            help "Lifetime of the per-session TURN credentials, in seconds";
    }
}

/// Flags of `duet turn`.
#[derive(Debug, Args, Default)]
pub struct TurnOnlyArgs {
    /// A TOML configuration file (only its `[turn]` table, data_dir and log are used).
    #[arg(long, env = "DUET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub turn: TurnArgs,
}

/// Flags of `duet serve`. Every flag also reads a `DUET_*` environment variable
/// and a key of the configuration file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// A TOML configuration file (see config.example.toml).
    #[arg(long, env = "DUET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: ServeOptions,
    #[command(flatten)]
    pub state: StateArgs,
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
        let mut args = Self::default();
        args.options.listen = Some(any_port);
        args.state.data_dir = Some(data_dir);
        args.turn.turn_listen = Some(any_port);
        args.turn.relay_ipv6 = Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
        args.turn.allow_peers = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
        args
    }
}

/// The optional configuration file: the keys of the option groups above (the
/// relay's in a `[turn]` table), and extra `iceServers` entries.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    #[serde(flatten)]
    pub serve: FileServe,
    #[serde(flatten)]
    pub state: FileState,
    /// Extra `iceServers` entries handed to every client in `joined`.
    pub ice_servers: Vec<IceServer>,
    pub turn: FileTurnConfig,
}

impl FileConfig {
    /// Parses the file, refusing keys no option declares (a typo must not go unnoticed).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let table: toml::Table =
            toml::from_str(text).map_err(|error| anyhow::anyhow!("{}", error.message()))?;
        let top: Vec<&str> = [FileServe::KEYS, FileState::KEYS, &["ice_servers", "turn"]].concat();
        for (key, value) in &table {
            if !top.contains(&key.as_str()) {
                bail!("unknown key `{key}`");
            }
            if key == "turn" {
                let Some(turn) = value.as_table() else {
                    bail!("`turn` must be a table ([turn])");
                };
                if let Some(unknown) = turn
                    .keys()
                    .find(|key| !FileTurnConfig::KEYS.contains(&key.as_str()))
                {
                    bail!("unknown key `{unknown}` in [turn]");
                }
            }
        }
        table
            .try_into()
            .map_err(|error: toml::de::Error| anyhow::anyhow!("{}", error.message()))
    }
}

/// The relay's settings, validated.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub listen: SocketAddr,
    pub external_ip: Option<IpAddr>,
    /// Where IPv6 relays are (`None`: found at start, if the host has one).
    pub relay_ipv6: Option<IpAddr>,
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
        let values = args.merge(file)?;
        if values.no_turn {
            return Ok(None);
        }
        let relay_ports = parse_port_range(&values.relay_ports).with_context(|| {
            format!(
                "`{}` is not a port range like 49152-65535",
                values.relay_ports
            )
        })?;
        let users = values
            .turn_users
            .iter()
            .map(|entry| {
                entry
                    .split_once(':')
                    .filter(|(name, password)| !name.is_empty() && !password.is_empty())
                    .map(|(name, password)| (name.to_owned(), password.to_owned()))
                    .with_context(|| "a TURN user must be given as NAME:PASSWORD".to_owned())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let allow_peers = values
            .allow_peers
            .iter()
            .map(|cidr| cidr.parse::<duet_turn::Cidr>().map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if values.relay_ipv6.is_some_and(|ip| ip.is_ipv4()) {
            bail!("--relay-ipv6 takes an IPv6 address");
        }
        if values.turn_credential_ttl_secs < 60 {
            bail!("the TURN credential lifetime must be at least 60 seconds");
        }
        Ok(Some(Self {
            listen: values.turn_listen,
            external_ip: values.external_ip,
            relay_ipv6: values.relay_ipv6,
            relay_ports,
            realm: values.realm,
            secret: values.turn_secret,
            users,
            allow_peers,
            max_allocations: values.turn_max_allocations,
            user_quota: values.turn_user_quota,
            bandwidth: values.turn_bandwidth,
            public_host: values.public_host,
            credential_ttl: Duration::from_secs(values.turn_credential_ttl_secs),
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
        directory: String,
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
    /// How long a drain (SIGTERM) waits for relayed calls to end.
    pub drain_timeout: Duration,
    pub log: String,
    pub signaling: duet_signaling::Config,
    /// The embedded relay; `None` when it is off.
    pub turn: Option<TurnSettings>,
    /// Relays on other hosts handed out instead of the embedded one (`--turn-server`).
    pub external_relays: Option<crate::relays::PoolConfig>,
    /// Where /metrics is also served over plain HTTP.
    pub metrics_listen: Option<SocketAddr>,
    /// The Redis of a cluster of nodes (`--redis`).
    pub redis: Option<String>,
    /// The CA of a `rediss://` server's certificate (`--redis-ca`).
    pub redis_ca: Option<PathBuf>,
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
        let values = args.options.merge(file.serve)?;
        let state = args.state.merge(file.state)?;
        let certificate = match (values.cert, values.key) {
            (Some(_), Some(_)) if values.acme => {
                bail!("--acme obtains the certificate, so --cert and --key cannot be given with it")
            }
            (Some(cert), Some(key)) => CertificateSource::Files { cert, key },
            (None, None) if values.acme => CertificateSource::Acme(AcmeSettings::merge(
                &values.domains,
                values.acme_directory,
                values.acme_ca,
                values.acme_email,
            )?),
            (None, None) => CertificateSource::SelfSigned,
            (Some(_), None) => bail!("a certificate was given without its key (--key)"),
            (None, Some(_)) => bail!("a key was given without its certificate (--cert)"),
        };
        if values.join_timeout_secs == 0 {
            bail!("the join timeout must be at least 1 second");
        }
        if values.silence_timeout_secs < 2 {
            bail!("the silence timeout must be at least 2 seconds");
        }
        if values.rate_limit_per_second == 0 || values.rate_limit_burst == 0 {
            bail!("the rate limit and burst must be at least 1");
        }
        let mut allowed_origins = values.allowed_origins;
        for origin in &mut allowed_origins {
            *origin = normalize_origin(origin)
                .with_context(|| format!("`{origin}` is not an origin like https://host:port"))?;
        }
        let shared_secret = args
            .turn
            .turn_secret
            .clone()
            .or(file.turn.turn_secret.clone());
        let turn = TurnSettings::merge(args.turn, file.turn)?;
        let external_relays = crate::relays::PoolConfig::parse(
            &values.turn_servers,
            shared_secret,
            turn.as_ref()
                .map_or(Duration::from_secs(86_400), |turn| turn.credential_ttl),
        )?;
        if values.turns_listen.is_some() && turn.is_none() {
            bail!("--turns-listen serves the relay, which is turned off (--no-turn)");
        }
        let defaults = duet_signaling::Config::default();
        Ok(Self {
            listen: values.listen,
            http_listen: values.http_listen,
            turns_listen: values.turns_listen,
            certificate,
            data_dir: state.data_dir,
            domains: values.domains,
            web_dir: values.web_dir,
            allowed_origins,
            max_connections: values.max_connections,
            max_connections_per_ip: values.max_connections_per_ip,
            drain_timeout: Duration::from_secs(state.drain_timeout_secs),
            log: state.log,
            turn,
            external_relays,
            metrics_listen: state.metrics_listen,
            redis: values.redis,
            redis_ca: values.redis_ca,
            signaling: duet_signaling::Config {
                silence_timeout: Duration::from_secs(values.silence_timeout_secs),
                resume_grace: Duration::from_secs(values.resume_grace_secs),
                join_timeout: Duration::from_secs(values.join_timeout_secs),
                max_rooms: values.max_rooms,
                rate_limit: duet_signaling::RateLimit {
                    burst: values.rate_limit_burst,
                    per_second: values.rate_limit_per_second,
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
    /// How long a drain (SIGTERM) waits for relayed calls to end.
    pub drain_timeout: Duration,
    pub turn: TurnSettings,
    /// Where /metrics is served over plain HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

impl RelayConfig {
    pub fn load(args: TurnOnlyArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let state = args.state.merge(file.state)?;
        let turn = TurnSettings::merge(args.turn, file.turn)?
            .context("the relay is turned off (--no-turn), so `duet turn` has nothing to run")?;
        Ok(Self {
            data_dir: state.data_dir,
            log: state.log,
            drain_timeout: Duration::from_secs(state.drain_timeout_secs),
            turn,
            metrics_listen: state.metrics_listen,
        })
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    FileConfig::parse(&text)
        .with_context(|| format!("the configuration file {} is invalid", path.display()))
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
        let turn = config.turn.context("the relay is on by default")?;
        assert_eq!(turn.listen.to_string(), "0.0.0.0:3478");
        assert_eq!(turn.relay_ports, 49152..=65535);
        Ok(())
    }

    #[test]
    fn the_signaling_defaults_are_the_hubs() -> anyhow::Result<()> {
        // The hub's own defaults (used by its tests) and the declared ones agree.
        let config = ServeConfig::merge(ServeArgs::default(), FileConfig::default())?;
        let hub = duet_signaling::Config::default();
        assert_eq!(config.signaling.silence_timeout, hub.silence_timeout);
        assert_eq!(config.signaling.resume_grace, hub.resume_grace);
        assert_eq!(config.signaling.join_timeout, hub.join_timeout);
        assert_eq!(config.signaling.max_rooms, hub.max_rooms);
        assert_eq!(config.signaling.rate_limit.burst, hub.rate_limit.burst);
        assert_eq!(
            config.signaling.rate_limit.per_second,
            hub.rate_limit.per_second
        );
        Ok(())
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() -> anyhow::Result<()> {
        let file = FileConfig::parse(
            "listen = \"127.0.0.1:9000\"\nmax_rooms = 5\nsilence_timeout_secs = 60\n[turn]\nlisten = \"127.0.0.1:3479\"\nrealm = \"file\"\n",
        )?;
        let mut args = ServeArgs::default();
        args.options.silence_timeout_secs = Some(10);
        args.turn.realm = Some("flag".to_owned());
        let config = ServeConfig::merge(args, file)?;
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.signaling.max_rooms, 5);
        assert_eq!(config.signaling.silence_timeout, Duration::from_secs(10));
        let turn = config.turn.context("relay on")?;
        assert_eq!(turn.listen.to_string(), "127.0.0.1:3479");
        assert_eq!(turn.realm, "flag");
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        for (text, named) in [
            ("lisen = \"127.0.0.1:1\"\n", "`lisen`"),
            ("[turn]\nsecrte = \"x\"\n", "`secrte` in [turn]"),
            ("turn = 3\n", "[turn]"),
        ] {
            let error = FileConfig::parse(text).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(named)),
                "{text}: {error:?}"
            );
        }
    }

    #[test]
    fn the_relay_is_turned_off_by_flag_or_file() -> anyhow::Result<()> {
        let file = FileConfig::parse("[turn]\ndisabled = true\n")?;
        assert!(
            ServeConfig::merge(ServeArgs::default(), file)?
                .turn
                .is_none()
        );
        let mut args = ServeArgs::default();
        args.turn.no_turn = true;
        assert!(
            ServeConfig::merge(args, FileConfig::default())?
                .turn
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn the_example_file_holds_every_key_with_its_default() -> anyhow::Result<()> {
        let text = include_str!("../../../config.example.toml");
        let file = FileConfig::parse(text)?;
        ServeConfig::merge(ServeArgs::default(), file)?;
        // Every key appears (set, or commented out), and a value set is the default.
        let top: toml::Table = toml::from_str(text)?;
        let turn = top
            .get("turn")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        let (turn_text, top_text) = text
            .split_once("\n[turn]\n")
            .map(|(top, turn)| (turn, top))
            .unwrap_or(("", text));
        let groups = [
            (FileServe::DECLARED, &top, top_text),
            (FileState::DECLARED, &top, top_text),
            (FileTurnConfig::DECLARED, &turn, turn_text),
        ];
        for (declared, table, section) in groups {
            for option in declared {
                let set = table.get(option.key);
                let mentioned = set.is_some() || section.contains(&format!("# {} = ", option.key));
                assert!(
                    mentioned,
                    "config.example.toml does not mention `{}`",
                    option.key
                );
                if let (Some(value), Some(default)) = (set, option.default) {
                    let shown = match value {
                        toml::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    assert_eq!(
                        shown, default,
                        "`{}` in config.example.toml is not its default",
                        option.key
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn every_default_parses_and_every_flag_and_variable_is_unique() -> anyhow::Result<()> {
        // merge() parses every default the arguments and the file leave unset.
        ServeConfig::merge(ServeArgs::default(), FileConfig::default())?;
        let all: Vec<Declared> = [
            FileServe::DECLARED,
            FileState::DECLARED,
            FileTurnConfig::DECLARED,
        ]
        .concat();
        for option in &all {
            assert_eq!(
                all.iter().filter(|other| other.flag == option.flag).count(),
                1,
                "--{}",
                option.flag
            );
            assert_eq!(
                all.iter().filter(|other| other.env == option.env).count(),
                1,
                "{}",
                option.env
            );
            assert!(option.env.starts_with("DUET_"), "{}", option.env);
        }
        Ok(())
    }

    #[test]
    fn help_shows_each_default_once() {
        use clap::CommandFactory;
        let help = Cli::command()
            .find_subcommand_mut("serve")
            .map(|serve| serve.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("[default: [::]:8443]"), "{help}");
        assert!(help.contains("[default: 49152-65535]"), "{help}");
        assert!(help.contains("[env: DUET_TURN_LISTEN="), "{help}");
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
