//! One allocation: its relay port, its owner's credentials, its permissions
//! and channel bindings, and its bandwidth budget.
//!
//! Owns the per-allocation rules (RFC 8656 §9–§12); no IO, time passed in.

use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, TransactionId,
};

use crate::policy::canonical;

/// Most permissions one allocation may hold; more is a sign of abuse.
pub const MAX_PERMISSIONS: usize = 256;
/// Valid channel numbers: RFC 8656 §12 narrowed them to 0x4000–0x4FFF, but
/// RFC 5766 clients (coturn's own tools among them) still use up to 0x7FFF.
pub const CHANNEL_NUMBERS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

#[derive(Debug)]
pub struct Allocation {
    pub username: String,
    pub credentials: LongTermKeyCredentials,
    /// Cached HMAC keys for the two integrity algorithms.
    keys: [Option<IntegrityKey>; 2],
    pub relay_port: u16,
    /// The relayed address's IP (IPv4 or IPv6): its family is the peers' family.
    pub relay_ip: IpAddr,
    pub expires: Instant,
    /// The Allocate transaction and its answer, for retransmissions.
    pub allocate_transaction: TransactionId,
    pub allocate_response: Vec<u8>,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    budget: Option<ByteBudget>,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Why a channel could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBindError {
    /// The number is outside 0x4000–0x7FFF.
    BadNumber,
    /// The number is bound to another peer, or the peer to another number.
    Conflict,
}

impl Allocation {
    pub fn new(
        username: String,
        credentials: LongTermKeyCredentials,
        relayed: SocketAddr,
        expires: Instant,
        allocate_transaction: TransactionId,
        bandwidth: Option<u64>,
        now: Instant,
    ) -> Self {
        Self {
            username,
            credentials,
            keys: [None, None],
            relay_port: relayed.port(),
            relay_ip: relayed.ip(),
            expires,
            allocate_transaction,
            allocate_response: Vec::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_of_peer: HashMap::new(),
            budget: bandwidth.map(|rate| ByteBudget::new(rate, now)),
        }
    }

    /// The HMAC key for `algorithm`, computed once.
    pub fn key(&mut self, algorithm: IntegrityAlgorithm) -> IntegrityKey {
        let [sha1, sha256] = &mut self.keys;
        let slot = match algorithm {
            IntegrityAlgorithm::Sha1 => sha1,
            IntegrityAlgorithm::Sha256 => sha256,
        };
        slot.get_or_insert_with(|| self.credentials.make_key(algorithm))
            .clone()
    }

    /// Installs or refreshes a permission. False: too many permissions.
    pub fn permit(&mut self, peer: IpAddr, until: Instant, now: Instant) -> bool {
        let peer = canonical(peer);
        if !self.permissions.contains_key(&peer) && self.permissions.len() >= MAX_PERMISSIONS {
            self.permissions.retain(|_, expires| *expires > now);
            if self.permissions.len() >= MAX_PERMISSIONS {
                return false;
            }
        }
        self.permissions.insert(peer, until);
        true
    }

    pub fn is_permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&canonical(peer))
            .is_some_and(|expires| *expires > now)
    }

    /// Binds or refreshes a channel (RFC 8656 §11.2 rules).
    pub fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        until: Instant,
        now: Instant,
    ) -> Result<(), ChannelBindError> {
        if !CHANNEL_NUMBERS.contains(&number) {
            return Err(ChannelBindError::BadNumber);
        }
        let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
        // An expired binding no longer holds its number or its peer.
        if let Some(existing) = self.channels.get(&number).copied()
            && existing.expires <= now
        {
            self.channels.remove(&number);
            self.channel_of_peer.remove(&existing.peer);
        }
        if let Some(existing) = self.channel_of_peer.get(&peer).copied()
            && existing != number
            && self
                .channels
                .get(&existing)
                .is_some_and(|channel| channel.expires > now)
        {
            return Err(ChannelBindError::Conflict);
        }
        if let Some(existing) = self.channels.get(&number)
            && existing.peer != peer
        {
            return Err(ChannelBindError::Conflict);
        }
        self.channels.insert(
            number,
            Channel {
                peer,
                expires: until,
            },
        );
        self.channel_of_peer.insert(peer, number);
        Ok(())
    }

    /// The peer of a live channel.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|channel| channel.expires > now)
            .map(|channel| channel.peer)
    }

    /// The live channel bound to `peer`, if any.
    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_of_peer.get(&peer)?;
        self.channel_peer(number, now).map(|_| number)
    }

    /// Charges `bytes` to the bandwidth budget. False: over the cap, drop it.
    pub fn spend(&mut self, bytes: usize, now: Instant) -> bool {
        match &mut self.budget {
            Some(budget) => budget.spend(bytes, now),
            None => true,
        }
    }
}

/// A token bucket in bytes: one second's worth of burst.
#[derive(Debug)]
struct ByteBudget {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl ByteBudget {
    fn new(rate: u64, now: Instant) -> Self {
        let rate = rate as f64;
        Self {
            rate,
            tokens: rate,
            updated: now,
        }
    }

    fn spend(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        let cost = bytes as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}
