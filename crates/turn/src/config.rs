//! The relay's settings, validated by the binary and handed in whole.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::auth::Credentials;
use crate::policy::PeerPolicy;

/// Everything the TURN core needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// REALM of the long-term credentials.
    pub realm: String,
    pub credentials: Credentials,
    /// The address clients are told their relay is on (`--external-ip`, or the
    /// address the relay sockets bind to).
    pub relay_address: IpAddr,
    /// The address of IPv6 relays (REQUESTED-ADDRESS-FAMILY IPv6), when the
    /// host has one; without it such requests get 440.
    pub relay_address_v6: Option<IpAddr>,
    /// Ports the relay sockets take (IPv4 and IPv6 relays share them).
    pub relay_ports: RangeInclusive<u16>,
    pub peer_policy: PeerPolicy,
    /// Most allocations at once.
    pub max_allocations: usize,
    /// Most allocations for one username at once.
    pub max_allocations_per_user: usize,
    /// Bytes per second one allocation may relay (both ways together); `None` is no cap.
    pub bandwidth_per_allocation: Option<u64>,
    pub lifetimes: Lifetimes,
    /// How long a nonce stays fresh.
    pub nonce_lifetime: Duration,
}

/// RFC 8656 lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub allocation_default: Duration,
    pub allocation_max: Duration,
    pub permission: Duration,
    pub channel: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            allocation_default: Duration::from_secs(600),
            allocation_max: Duration::from_secs(3600),
            permission: Duration::from_secs(300),
            channel: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// A configuration with the defaults and no users; tests and the binary fill it in.
    pub fn new(realm: &str, relay_address: IpAddr) -> Self {
        Self {
            realm: realm.to_owned(),
            credentials: Credentials::default(),
            relay_address,
            relay_address_v6: None,
            relay_ports: 49152..=65535,
            peer_policy: PeerPolicy::default(),
            max_allocations: 10_000,
            max_allocations_per_user: 10,
            bandwidth_per_allocation: None,
            lifetimes: Lifetimes::default(),
            nonce_lifetime: Duration::from_secs(600),
        }
    }
}
