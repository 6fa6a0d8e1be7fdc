//! The TURN server core: one state machine for every client, allocation and
//! relay port of a Duet relay.
//!
//! Inputs are datagrams (or TCP-framed messages) with their addresses and the
//! current `Instant`; outputs are [`Command`]s for the driver. The data path
//! (ChannelData and Send/Data indications) does not allocate: it returns where
//! to send which bytes of the caller's buffer. No IO, no clock, no globals.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stun_types::attribute::{
    AttributeType, ErrorCode, Nonce, Realm, UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType,
    MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn_types::attribute::{Lifetime, ReservationToken, XorPeerAddress, XorRelayedAddress};
use turn_types::message::{ALLOCATE, SEND};

use crate::allocation::{Allocation, ChannelBindError};
use crate::auth::{Nonces, Refusal};
use crate::config::Config;
use crate::datapath;
use crate::policy::PeerDecision;
use crate::reflection::ReflectionBudget;
use crate::request::{AllocateRequest, Family, Request, TurnError};

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A client's 5-tuple: transport, client address and the server address it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send a STUN message to a client.
    SendToClient { to: FiveTuple, bytes: Vec<u8> },
    /// Bind a relay socket on this port, then call [`Server::handle_relay_opened`].
    OpenRelay { port: u16, ipv6: bool },
    /// Close the relay socket on this port.
    CloseRelay { port: u16 },
}

/// Relay `payload` (a range of the caller's buffer) from relay port `relay_port` to `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub relay_port: u16,
    pub peer: SocketAddr,
    pub payload: Range<usize>,
}

/// Deliver `bytes` (a range of the caller's buffer) to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub to: FiveTuple,
    pub bytes: Range<usize>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations: usize,
    pub allocations_total: u64,
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
    pub auth_failures: u64,
    pub denied_peers: u64,
    pub quota_refusals: u64,
    pub dropped: u64,
}

/// An Allocate waiting for its relay socket.
#[derive(Debug)]
struct Pending {
    from: FiveTuple,
    transaction: TransactionId,
    username: String,
    credentials: LongTermKeyCredentials,
    algorithm: IntegrityAlgorithm,
    lifetime: Duration,
    attempts: u8,
    /// With EVEN-PORT R=1: the token of the next port, reserved for this client.
    reservation: Option<u64>,
    /// The relayed address's IP (the family the client asked for).
    relay_ip: IpAddr,
}

/// A port held back for a later Allocate carrying its RESERVATION-TOKEN (RFC 8656 §7.2).
#[derive(Debug, Clone, Copy)]
struct Reservation {
    port: u16,
    expires: Instant,
}

/// How long a reserved port waits for the Allocate that takes it (RFC 8656 §7.2: 30 s).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// What a handled request is answered with (a refusal is a [`TurnError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// A success without attributes.
    Success,
    /// A success carrying LIFETIME (Refresh).
    Lifetime(Duration),
    /// Answered already, or later (an Allocate waits for its relay socket).
    Later,
}

/// A request that passed authentication.
struct Authenticated {
    username: String,
    credentials: LongTermKeyCredentials,
    algorithm: IntegrityAlgorithm,
}

/// Attributes this server understands (comprehension-required ones outside this list get 420).
const KNOWN_ATTRIBUTES: [AttributeType; 16] = [
    AttributeType::new(0x0006), // USERNAME
    AttributeType::new(0x0008), // MESSAGE-INTEGRITY
    AttributeType::new(0x000C), // CHANNEL-NUMBER
    AttributeType::new(0x000D), // LIFETIME
    AttributeType::new(0x0012), // XOR-PEER-ADDRESS
    AttributeType::new(0x0013), // DATA
    AttributeType::new(0x0014), // REALM
    AttributeType::new(0x0015), // NONCE
    AttributeType::new(0x0017), // REQUESTED-ADDRESS-FAMILY
    AttributeType::new(0x0018), // EVEN-PORT
    AttributeType::new(0x0019), // REQUESTED-TRANSPORT
    AttributeType::new(0x001A), // DONT-FRAGMENT
    AttributeType::new(0x001C), // MESSAGE-INTEGRITY-SHA256
    AttributeType::new(0x001D), // PASSWORD-ALGORITHM
    AttributeType::new(0x001E), // USERHASH
    AttributeType::new(0x0022), // RESERVATION-TOKEN
];
const MESSAGE_INTEGRITY: AttributeType = AttributeType::new(0x0008);
const MESSAGE_INTEGRITY_SHA256: AttributeType = AttributeType::new(0x001C);
const FINGERPRINT: AttributeType = AttributeType::new(0x8028);
/// Relay ports tried for one Allocate before giving up with 508.
const OPEN_ATTEMPTS: u8 = 3;

/// The TURN server state machine. See the module documentation.
#[derive(Debug)]
pub struct Server {
    config: Config,
    nonces: Nonces,
    epoch: Instant,
    epoch_unix: u64,
    rng: StdRng,
    allocations: HashMap<FiveTuple, Allocation>,
    by_port: HashMap<u16, FiveTuple>,
    pending: HashMap<u16, Pending>,
    ports_in_use: HashSet<u16>,
    per_user: HashMap<String, usize>,
    expiries: BinaryHeap<Reverse<(Instant, FiveTuple)>>,
    commands: VecDeque<Command>,
    stats: Stats,
    reflection: ReflectionBudget,
    /// The `now` of the input being handled.
    now: Instant,
    /// Set by [`Server::stop_allocating`]: the server is draining.
    draining: bool,
    /// Ports reserved by EVEN-PORT R=1, by token.
    reservations: HashMap<u64, Reservation>,
}

impl Server {
    /// A server with no allocations. `now`/`now_unix` anchor the clock (Unix
    /// time is needed for REST credentials); `seed` drives nonces and ports.
    pub fn new(mut config: Config, seed: [u8; 32], now: Instant, now_unix: u64) -> Self {
        // The relay's own addresses are never peers: that would loop through the relay.
        for relay in [Some(config.relay_address), config.relay_address_v6]
            .into_iter()
            .flatten()
        {
            if !config.peer_policy.server_addresses.contains(&relay) {
                config.peer_policy.server_addresses.push(relay);
            }
        }
        let mut rng = StdRng::from_seed(seed);
        let nonces = Nonces::new(rng.random());
        Self {
            config,
            nonces,
            epoch: now,
            epoch_unix: now_unix,
            rng,
            allocations: HashMap::new(),
            by_port: HashMap::new(),
            pending: HashMap::new(),
            ports_in_use: HashSet::new(),
            per_user: HashMap::new(),
            expiries: BinaryHeap::new(),
            commands: VecDeque::new(),
            stats: Stats::default(),
            reflection: ReflectionBudget::default(),
            now,
            draining: false,
            reservations: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A message from a client: a STUN message or ChannelData (one datagram, or
    /// one message cut from a TCP stream). Returns data to relay to a peer, if any.
    pub fn handle_client(
        &mut self,
        from: FiveTuple,
        packet: &[u8],
        now: Instant,
    ) -> Option<Forward> {
        self.now = now;
        match packet.first().map(|byte| byte >> 6) {
            Some(0b01) => self.client_channel_data(from, packet, now),
            Some(0b00) => self.client_stun(from, packet, now),
            _ => {
                self.stats.dropped += 1;
                None
            }
        }
    }

    /// A datagram from a peer to relay port `relay_port`. `buffer` holds the
    /// payload at `datapath::HEADROOM..HEADROOM + payload_len` and has at least
    /// `datapath::TAILROOM` bytes after it; the header is written in front of
    /// the payload in place. Returns what to send to which client.
    pub fn handle_peer(
        &mut self,
        relay_port: u16,
        peer: SocketAddr,
        buffer: &mut [u8],
        payload_len: usize,
        now: Instant,
    ) -> Option<Delivery> {
        let to = *self.by_port.get(&relay_port)?;
        if self.reaches_own_host(peer) {
            // A service of this host (not one of our relays) writing into a
            // relay: as refused as the other way round.
            self.stats.dropped += 1;
            return None;
        }
        let allocation = self.allocations.get_mut(&to)?;
        if !allocation.is_permitted(peer.ip(), now) || !allocation.spend(payload_len, now) {
            self.stats.dropped += 1;
            return None;
        }
        let bytes = match allocation.channel_of(peer, now) {
            Some(channel) => datapath::frame_channel_data(
                buffer,
                payload_len,
                channel,
                to.transport == Transport::Tcp,
            ),
            None => {
                let transaction: [u8; 12] = self.rng.random();
                datapath::frame_data_indication(buffer, payload_len, peer, transaction)
            }
        }?;
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += payload_len as u64;
        Some(Delivery { to, bytes })
    }

    /// The answer to [`Command::OpenRelay`]: `true` if the socket is bound.
    pub fn handle_relay_opened(&mut self, port: u16, opened: bool, now: Instant) {
        let Some(pending) = self.pending.remove(&port) else {
            if opened {
                // Nobody waits for it any more (the client went away): close it.
                self.ports_in_use.remove(&port);
                self.commands.push_back(Command::CloseRelay { port });
            }
            return;
        };
        if opened {
            self.finish_allocation(port, pending, now);
            return;
        }
        self.ports_in_use.remove(&port);
        if pending.attempts + 1 >= OPEN_ATTEMPTS {
            self.release_user(&pending.username);
            let response = self.error(
                ALLOCATE,
                pending.transaction,
                508,
                "Insufficient Capacity",
                None,
            );
            self.send(pending.from, response);
            return;
        }
        match self.pick_port(false) {
            Some(next) => {
                self.pending.insert(
                    next,
                    Pending {
                        attempts: pending.attempts + 1,
                        ..pending
                    },
                );
                self.commands.push_back(Command::OpenRelay {
                    port: next,
                    ipv6: pending.relay_ip.is_ipv6(),
                });
            }
            None => {
                self.release_user(&pending.username);
                let response = self.error(
                    ALLOCATE,
                    pending.transaction,
                    508,
                    "Insufficient Capacity",
                    None,
                );
                self.send(pending.from, response);
            }
        }
    }

    /// A TCP client connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, from: FiveTuple) {
        self.delete_allocation(&from);
    }

    /// Expires allocations whose lifetime ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.expiries.peek().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop();
            match self
                .allocations
                .get(&key)
                .map(|allocation| allocation.expires)
            {
                Some(expires) if expires <= now => self.delete_allocation(&key),
                Some(expires) if expires > at => self.expiries.push(Reverse((expires, key))),
                _ => {}
            }
        }
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Refuses new allocations from now on (508, "Server Draining"), while
    /// the existing ones go on being refreshed and relayed until they end:
    /// what a server shutting down gracefully does.
    pub fn stop_allocating(&mut self) {
        self.draining = true;
    }

    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocations.len(),
            ..self.stats
        }
    }

    /// True when the client at `from` holds an allocation.
    pub fn has_allocation(&self, from: &FiveTuple) -> bool {
        self.allocations.contains_key(from)
    }

    /// True when `peer` is a live relay address of this server: the driver
    /// then hands the data to [`Server::handle_peer`] itself instead of
    /// sending it through the kernel, and it never reaches other services.
    pub fn is_relay(&self, peer: SocketAddr) -> bool {
        self.is_relay_address(peer.ip()) && self.by_port.contains_key(&peer.port())
    }

    /// True when `address` is one of the relayed addresses (IPv4 or IPv6).
    fn is_relay_address(&self, address: IpAddr) -> bool {
        let address = crate::policy::canonical(address);
        address == crate::policy::canonical(self.config.relay_address)
            || self.config.relay_address_v6 == Some(address)
    }

    /// The relayed address's IP of the allocation on `port` (the source of its
    /// data when the driver delivers it to another of our relays itself).
    pub fn relay_ip_of_port(&self, port: u16) -> Option<IpAddr> {
        let key = self.by_port.get(&port)?;
        self.allocations
            .get(key)
            .map(|allocation| allocation.relay_ip)
    }

    /// True when `peer` is on one of this host's addresses but is not one of
    /// its relays: a service of this host, out of reach (both ways) unless the
    /// operator allowed that address explicitly.
    fn reaches_own_host(&self, peer: SocketAddr) -> bool {
        self.is_own_host(peer.ip())
            && !self.by_port.contains_key(&peer.port())
            && !self.config.peer_policy.explicitly_allowed(peer.ip())
    }

    /// True when `address` is one of this host's (its interfaces', the
    /// advertised relay address, `--external-ip`).
    fn is_own_host(&self, address: IpAddr) -> bool {
        let address = crate::policy::canonical(address);
        self.is_relay_address(address)
            || self
                .config
                .peer_policy
                .server_addresses
                .iter()
                .any(|own| crate::policy::canonical(*own) == address)
    }

    /// Replaces the host's own addresses (read again by the driver when the
    /// interfaces change); the relay address always stays among them.
    pub fn set_own_addresses(&mut self, mut addresses: Vec<IpAddr>) {
        for relay in [
            Some(self.config.relay_address),
            self.config.relay_address_v6,
        ]
        .into_iter()
        .flatten()
        {
            if !addresses.contains(&relay) {
                addresses.push(relay);
            }
        }
        self.config.peer_policy.server_addresses = addresses;
    }

    /// The address clients are told their relays are on.
    pub fn relay_address(&self) -> IpAddr {
        self.config.relay_address
    }

    /// Unix seconds at `now`.
    pub fn unix_time(&self, now: Instant) -> u64 {
        self.epoch_unix + now.saturating_duration_since(self.epoch).as_secs()
    }

    // ----- data path -----

    fn client_channel_data(
        &mut self,
        from: FiveTuple,
        packet: &[u8],
        now: Instant,
    ) -> Option<Forward> {
        let Some((number, payload)) = datapath::parse_channel_data(packet) else {
            self.stats.dropped += 1;
            return None;
        };
        let peer = self.allocations.get(&from)?.channel_peer(number, now)?;
        self.forward_to_peer(from, peer, payload, now)
    }

    fn send_indication(
        &mut self,
        from: FiveTuple,
        message: &Message<'_>,
        now: Instant,
    ) -> Option<Forward> {
        let peer = message
            .attribute::<XorPeerAddress>()
            .ok()?
            .addr(message.transaction_id());
        let (offset, data) = message.raw_attribute_and_offset(AttributeType::new(0x0013))?;
        let start = offset + 4;
        let payload = start..start + data.value.len();
        self.forward_to_peer(from, peer, payload, now)
    }

    /// The checks every client → peer packet passes, whatever carried it: the
    /// peer is not another service of this host, has a permission, and the
    /// allocation's bandwidth budget covers the payload.
    fn forward_to_peer(
        &mut self,
        from: FiveTuple,
        peer: SocketAddr,
        payload: Range<usize>,
        now: Instant,
    ) -> Option<Forward> {
        let to_own_host = self.reaches_own_host(peer);
        let allocation = self.allocations.get_mut(&from)?;
        if to_own_host
            || !allocation.is_permitted(peer.ip(), now)
            || !allocation.spend(payload.len(), now)
        {
            self.stats.dropped += 1;
            return None;
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += payload.len() as u64;
        Some(Forward {
            relay_port: allocation.relay_port,
            peer,
            payload,
        })
    }

    // ----- control path -----

    fn client_stun(&mut self, from: FiveTuple, packet: &[u8], now: Instant) -> Option<Forward> {
        let message = match Message::from_bytes(packet) {
            Ok(message) => message,
            Err(_) => {
                // Not a valid STUN message (bad header, lengths, or FINGERPRINT):
                // discarded without an answer (RFC 8489 §6.3), which also leaves
                // a spoofed source nothing to reflect.
                self.stats.dropped += 1;
                return None;
            }
        };
        match message.class() {
            MessageClass::Request => {}
            MessageClass::Indication => {
                return if message.method() == SEND {
                    self.send_indication(from, &message, now)
                } else {
                    None
                };
            }
            MessageClass::Success | MessageClass::Error => {
                self.stats.dropped += 1;
                return None;
            }
        }
        if let Some(unknown) = unknown_required(&message) {
            let response = self.unknown_attributes(&message, &unknown);
            self.answer_unauthenticated(from, packet.len(), response);
            return None;
        }
        if message.method() == BINDING {
            self.binding(from, &message, packet.len());
            return None;
        }
        let Some(decoded) = Request::decode(&message) else {
            let response = self.error(
                message.method(),
                message.transaction_id(),
                400,
                "Unknown method",
                None,
            );
            self.answer_unauthenticated(from, packet.len(), response);
            return None;
        };
        // Authenticated first (a 401 or 438 challenge otherwise), then the
        // request's own checks; every refusal is answered here, in one place.
        let auth = self.authenticate(from, &message, packet.len(), now)?;
        let reply =
            decoded.and_then(|request| self.handle_request(from, &message, &auth, request, now));
        match reply {
            Ok(Reply::Success) => self.reply_success(from, &message, &auth, &[]),
            Ok(Reply::Lifetime(lifetime)) => {
                let lifetime = Lifetime::new(seconds(lifetime));
                self.reply_success(from, &message, &auth, &[&lifetime]);
            }
            Ok(Reply::Later) => {}
            Err(error) => self.reply_error(from, &message, &auth, error.code, error.reason),
        }
        None
    }

    /// One authenticated, decoded request: what to answer.
    fn handle_request(
        &mut self,
        from: FiveTuple,
        message: &Message<'_>,
        auth: &Authenticated,
        request: Request,
        now: Instant,
    ) -> Result<Reply, TurnError> {
        match request {
            Request::Allocate(request) => self.allocate(from, message, auth, request, now),
            Request::Refresh { lifetime } => {
                self.check_owner(from, auth)?;
                Ok(self.refresh(from, lifetime, now))
            }
            Request::CreatePermission { peers } => {
                self.check_owner(from, auth)?;
                self.create_permission(from, peers, now)
            }
            Request::ChannelBind { number, peer } => {
                self.check_owner(from, auth)?;
                self.channel_bind(from, number, peer, now)
            }
        }
    }

    fn binding(&mut self, from: FiveTuple, request: &Message<'_>, request_len: usize) {
        let mut response = Message::builder_success(request, MessageWriteVec::with_capacity(48));
        let mapped = XorMappedAddress::new(from.client, request.transaction_id());
        if response.add_attribute(&mapped).is_err() {
            return;
        }
        if request.has_attribute(FINGERPRINT) && response.add_fingerprint().is_err() {
            return;
        }
        let bytes = response.finish();
        // A Binding answer may exceed a bare 20-byte request by the mapped
        // address it exists to carry; nothing else is added to it.
        let allowance = request_len + datapath::mapped_address_len(from.client);
        self.answer_bounded(from, allowance, bytes);
    }

    fn allocate(
        &mut self,
        from: FiveTuple,
        message: &Message<'_>,
        auth: &Authenticated,
        request: AllocateRequest,
        now: Instant,
    ) -> Result<Reply, TurnError> {
        let transaction = message.transaction_id();
        if let Some(existing) = self.allocations.get(&from) {
            if existing.allocate_transaction != transaction {
                return Err(TurnError::new(437, "Allocation Mismatch"));
            }
            // A retransmission: the same answer again.
            let bytes = existing.allocate_response.clone();
            self.send(from, bytes);
            return Ok(Reply::Later);
        }
        if self.pending.values().any(|pending| pending.from == from) {
            return Ok(Reply::Later); // a retransmission while the relay socket is being opened
        }
        let v4 = self.config.relay_address.is_ipv4();
        let relay_ip = match request.family {
            None => self.config.relay_address,
            Some(Family::V4) if v4 => self.config.relay_address,
            Some(Family::V6) if !v4 => self.config.relay_address,
            Some(Family::V6) => self
                .config
                .relay_address_v6
                .ok_or(TurnError::new(440, "Address Family not Supported"))?,
            Some(Family::V4) => return Err(TurnError::new(440, "Address Family not Supported")),
        };
        if self.draining {
            return Err(TurnError::new(508, "Server Draining"));
        }
        let user_count = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if self.allocations.len() + self.pending.len() >= self.config.max_allocations
            || user_count >= self.config.max_allocations_per_user
        {
            self.stats.quota_refusals += 1;
            return Err(TurnError::new(486, "Allocation Quota Reached"));
        }
        self.expire_reservations(now);
        let capacity = TurnError::new(508, "Insufficient Capacity");
        let (port, reservation) = match (request.reservation, request.even_port) {
            (Some(token), _) => {
                let reserved = self
                    .reservations
                    .remove(&token)
                    .ok_or(TurnError::new(508, "Unknown or expired RESERVATION-TOKEN"))?;
                (reserved.port, None)
            }
            (None, Some(true)) => {
                let port = self.pick_port_pair().ok_or(capacity)?;
                let token: u64 = self.rng.random();
                self.reservations.insert(
                    token,
                    Reservation {
                        port: port + 1,
                        expires: now + RESERVATION_LIFETIME,
                    },
                );
                (port, Some(token))
            }
            (None, even) => (self.pick_port(even.is_some()).ok_or(capacity)?, None),
        };
        let lifetime = self
            .desired_lifetime(request.lifetime)
            .unwrap_or(self.config.lifetimes.allocation_default);
        *self.per_user.entry(auth.username.clone()).or_insert(0) += 1;
        self.pending.insert(
            port,
            Pending {
                from,
                transaction,
                username: auth.username.clone(),
                credentials: auth.credentials.clone(),
                algorithm: auth.algorithm,
                lifetime,
                attempts: 0,
                reservation,
                relay_ip,
            },
        );
        self.commands.push_back(Command::OpenRelay {
            port,
            ipv6: relay_ip.is_ipv6(),
        });
        Ok(Reply::Later)
    }

    fn finish_allocation(&mut self, port: u16, pending: Pending, now: Instant) {
        let expires = now + pending.lifetime;
        let relayed = SocketAddr::new(pending.relay_ip, port);
        let mut allocation = Allocation::new(
            pending.username,
            pending.credentials,
            relayed,
            expires,
            pending.transaction,
            self.config.bandwidth_per_allocation,
            now,
        );
        let key = allocation.key(pending.algorithm);
        let mut response = Message::builder(
            MessageType::from_class_method(MessageClass::Success, ALLOCATE),
            pending.transaction,
            MessageWriteVec::with_capacity(128),
        );
        let built = response
            .add_attribute(&XorRelayedAddress::new(relayed, pending.transaction))
            .and_then(|()| response.add_attribute(&Lifetime::new(seconds(pending.lifetime))))
            .and_then(|()| {
                response.add_attribute(&XorMappedAddress::new(
                    pending.from.client,
                    pending.transaction,
                ))
            })
            .and_then(|()| match pending.reservation {
                Some(token) => response.add_attribute(&ReservationToken::new(token)),
                None => Ok(()),
            })
            .and_then(|()| response.add_message_integrity_with_key(&key, pending.algorithm))
            .and_then(|()| response.add_fingerprint());
        if built.is_err() {
            self.ports_in_use.remove(&port);
            self.commands.push_back(Command::CloseRelay { port });
            return;
        }
        let bytes = response.finish();
        allocation.allocate_response = bytes.clone();
        self.by_port.insert(port, pending.from);
        self.allocations.insert(pending.from, allocation);
        self.expiries.push(Reverse((expires, pending.from)));
        self.stats.allocations_total += 1;
        self.send(pending.from, bytes);
    }

    fn refresh(&mut self, from: FiveTuple, lifetime: Option<u32>, now: Instant) -> Reply {
        if lifetime == Some(0) {
            self.delete_allocation(&from);
            return Reply::Lifetime(Duration::ZERO);
        }
        let lifetime = self
            .desired_lifetime(lifetime)
            .unwrap_or(self.config.lifetimes.allocation_default);
        if let Some(allocation) = self.allocations.get_mut(&from) {
            allocation.expires = now + lifetime;
            self.expiries.push(Reverse((allocation.expires, from)));
        }
        Reply::Lifetime(lifetime)
    }

    fn create_permission(
        &mut self,
        from: FiveTuple,
        peers: Vec<IpAddr>,
        now: Instant,
    ) -> Result<Reply, TurnError> {
        // Every peer is checked before any permission is installed (all or nothing).
        for peer in &peers {
            self.check_peer(from, *peer)?;
        }
        let until = now + self.config.lifetimes.permission;
        let allocation = self
            .allocations
            .get_mut(&from)
            .ok_or(TurnError::new(437, "Allocation Mismatch"))?;
        for peer in peers {
            if !allocation.permit(peer, until, now) {
                return Err(TurnError::new(508, "Too many permissions"));
            }
        }
        Ok(Reply::Success)
    }

    fn channel_bind(
        &mut self,
        from: FiveTuple,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Reply, TurnError> {
        self.check_peer(from, peer.ip())?;
        let channel_until = now + self.config.lifetimes.channel;
        let permission_until = now + self.config.lifetimes.permission;
        let allocation = self
            .allocations
            .get_mut(&from)
            .ok_or(TurnError::new(437, "Allocation Mismatch"))?;
        match allocation.bind_channel(number, peer, channel_until, now) {
            Ok(()) => {}
            Err(ChannelBindError::BadNumber) => {
                return Err(TurnError::new(400, "Bad channel number"));
            }
            Err(ChannelBindError::Conflict) => {
                return Err(TurnError::new(400, "Channel or peer already bound"));
            }
        }
        if !allocation.permit(peer.ip(), permission_until, now) {
            return Err(TurnError::new(508, "Too many permissions"));
        }
        Ok(Reply::Success)
    }

    // ----- authentication -----

    /// Checks the long-term credentials (RFC 8489 §9.2.4). On failure the
    /// answer is already queued and `None` returned.
    fn authenticate(
        &mut self,
        from: FiveTuple,
        request: &Message<'_>,
        request_len: usize,
        now: Instant,
    ) -> Option<Authenticated> {
        let transaction = request.transaction_id();
        let has_integrity = request.has_attribute(MESSAGE_INTEGRITY)
            || request.has_attribute(MESSAGE_INTEGRITY_SHA256);
        if !has_integrity {
            let response = self.challenge(&from, request, 401, now);
            self.answer_unauthenticated(from, request_len, response);
            return None;
        }
        let (Ok(username), Ok(_realm), Ok(nonce)) = (
            request.attribute::<Username>(),
            request.attribute::<Realm>(),
            request.attribute::<Nonce>(),
        ) else {
            let response = self.error(request.method(), transaction, 400, "Bad Request", None);
            self.answer_unauthenticated(from, request_len, response);
            return None;
        };
        match self
            .nonces
            .verify(nonce.nonce(), from.client, self.clock(now))
        {
            Ok(()) => {}
            Err(true) => {
                let response = self.challenge(&from, request, 438, now);
                self.answer_unauthenticated(from, request_len, response);
                return None;
            }
            Err(false) => {
                self.stats.auth_failures += 1;
                let response = self.challenge(&from, request, 401, now);
                self.answer_unauthenticated(from, request_len, response);
                return None;
            }
        }
        let username = username.username().to_owned();
        let password = match self
            .config
            .credentials
            .password(&username, self.unix_time(now))
        {
            Ok(password) => password,
            // Expiry gates new allocations; the owner of a live allocation may
            // keep refreshing it with the credentials that created it.
            Err(Refusal::Expired)
                if self
                    .allocations
                    .get(&from)
                    .is_some_and(|allocation| allocation.username == username) =>
            {
                self.allocations
                    .get(&from)
                    .map(|allocation| allocation.credentials.password().to_owned())
                    .unwrap_or_default()
            }
            Err(Refusal::UnknownUser | Refusal::Expired) => {
                self.stats.auth_failures += 1;
                let response = self.challenge(&from, request, 401, now);
                self.answer_unauthenticated(from, request_len, response);
                return None;
            }
        };
        let credentials =
            LongTermKeyCredentials::new(username.clone(), password, self.config.realm.clone());
        let algorithm = if request.has_attribute(MESSAGE_INTEGRITY_SHA256) {
            IntegrityAlgorithm::Sha256
        } else {
            IntegrityAlgorithm::Sha1
        };
        let key = credentials.make_key(algorithm);
        if request.validate_integrity_with_key(&key).is_err() {
            self.stats.auth_failures += 1;
            let response = self.challenge(&from, request, 401, now);
            self.answer_unauthenticated(from, request_len, response);
            return None;
        }
        Some(Authenticated {
            username,
            credentials,
            algorithm,
        })
    }

    /// A request that acts on `from`'s allocation: it must exist (else 437)
    /// and belong to the same user (else 441).
    fn check_owner(&self, from: FiveTuple, auth: &Authenticated) -> Result<(), TurnError> {
        match self.allocations.get(&from) {
            Some(allocation) if allocation.username == auth.username => Ok(()),
            Some(_) => Err(TurnError::new(441, "Wrong Credentials")),
            None => Err(TurnError::new(437, "Allocation Mismatch")),
        }
    }

    /// Whether the allocation of `from` may have `peer` as a peer: the same
    /// family as its relayed address (443 otherwise), and allowed by the policy.
    fn check_peer(&mut self, from: FiveTuple, peer: IpAddr) -> Result<(), TurnError> {
        let relay_v4 = self
            .allocations
            .get(&from)
            .map_or(self.config.relay_address, |allocation| allocation.relay_ip)
            .is_ipv4();
        if peer.is_ipv4() != relay_v4 && crate::policy::canonical(peer).is_ipv4() != relay_v4 {
            return Err(TurnError::new(443, "Peer Address Family Mismatch"));
        }
        // Another allocation on this relay is a peer like any other (both sides
        // relayed); its data never leaves the relay (see `is_relay`).
        if self.is_relay_address(peer) {
            return Ok(());
        }
        match self.config.peer_policy.check(peer) {
            PeerDecision::Allowed => Ok(()),
            PeerDecision::Denied(_) => {
                self.stats.denied_peers += 1;
                Err(TurnError::new(403, "Forbidden"))
            }
        }
    }

    // ----- answers -----

    fn reply_success(
        &mut self,
        from: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        attributes: &[&dyn stun_types::attribute::AttributeWrite],
    ) {
        let key = auth.credentials.make_key(auth.algorithm);
        let mut response = Message::builder_success(request, MessageWriteVec::with_capacity(96));
        let mut built = Ok(());
        for attribute in attributes {
            built = built.and_then(|()| response.add_attribute(*attribute));
        }
        let built = built
            .and_then(|()| response.add_message_integrity_with_key(&key, auth.algorithm))
            .and_then(|()| response.add_fingerprint());
        if built.is_ok() {
            let bytes = response.finish();
            self.send(from, bytes);
        }
    }

    fn reply_error(
        &mut self,
        from: FiveTuple,
        request: &Message<'_>,
        auth: &Authenticated,
        code: u16,
        reason: &str,
    ) {
        let key = auth.credentials.make_key(auth.algorithm);
        let bytes = self.error(
            request.method(),
            request.transaction_id(),
            code,
            reason,
            Some((&key, auth.algorithm)),
        );
        self.send(from, bytes);
    }

    /// A 401 or 438 with a fresh nonce and the realm: as small as it can be.
    fn challenge(
        &mut self,
        from: &FiveTuple,
        request: &Message<'_>,
        code: u16,
        now: Instant,
    ) -> Vec<u8> {
        let expiry = self
            .clock(now)
            .saturating_add(seconds(self.config.nonce_lifetime));
        let nonce = self.nonces.mint(from.client, expiry);
        let mut response = Message::builder_error(request, MessageWriteVec::with_capacity(80));
        let _ = self.error_code_into(&mut response, code, "");
        if let Ok(realm) = Realm::new(&self.config.realm) {
            let _ = response.add_attribute(&realm);
        }
        if let Ok(nonce) = Nonce::new(&nonce) {
            let _ = response.add_attribute(&nonce);
        }
        response.finish()
    }

    fn error(
        &self,
        method: Method,
        transaction: TransactionId,
        code: u16,
        reason: &str,
        integrity: Option<(&stun_types::message::IntegrityKey, IntegrityAlgorithm)>,
    ) -> Vec<u8> {
        let mut response = Message::builder(
            MessageType::from_class_method(MessageClass::Error, method),
            transaction,
            MessageWriteVec::with_capacity(96),
        );
        let _ = self.error_code_into(&mut response, code, reason);
        if let Some((key, algorithm)) = integrity {
            let _ = response.add_message_integrity_with_key(key, algorithm);
            let _ = response.add_fingerprint();
        }
        response.finish()
    }

    fn error_code_into(
        &self,
        response: &mut MessageWriteVec,
        code: u16,
        reason: &str,
    ) -> Result<(), ()> {
        let attribute = ErrorCode::builder(code)
            .reason(reason)
            .build()
            .map_err(|_| ())?;
        response.add_attribute(&attribute).map_err(|_| ())
    }

    fn unknown_attributes(&self, request: &Message<'_>, unknown: &[AttributeType]) -> Vec<u8> {
        let mut response = Message::builder_error(request, MessageWriteVec::with_capacity(64));
        let _ = self.error_code_into(&mut response, 420, "");
        let _ = response.add_attribute(&UnknownAttributes::new(unknown));
        response.finish()
    }

    /// A message we could not parse: answer 400 if it is clearly a request to
    /// us, drop it otherwise.
    /// Unauthenticated answers over UDP: no larger than the request, or else
    /// small and within the address's reflection budget (see `reflection.rs`).
    fn answer_unauthenticated(&mut self, from: FiveTuple, request_len: usize, bytes: Vec<u8>) {
        if from.transport == Transport::Udp
            && !self
                .reflection
                .allow(from.client.ip(), request_len, bytes.len(), self.now)
        {
            self.stats.dropped += 1;
            return;
        }
        self.send(from, bytes);
    }

    fn answer_bounded(&mut self, from: FiveTuple, limit: usize, bytes: Vec<u8>) {
        if from.transport == Transport::Udp && bytes.len() > limit {
            self.stats.dropped += 1;
            return;
        }
        self.send(from, bytes);
    }

    fn send(&mut self, to: FiveTuple, bytes: Vec<u8>) {
        self.commands.push_back(Command::SendToClient { to, bytes });
    }

    // ----- bookkeeping -----

    /// The lifetime granted for `requested` seconds: within the default and the maximum.
    fn desired_lifetime(&self, requested: Option<u32>) -> Option<Duration> {
        let lifetimes = self.config.lifetimes;
        let requested = Duration::from_secs(u64::from(requested?));
        Some(
            requested
                .min(lifetimes.allocation_max)
                .max(lifetimes.allocation_default),
        )
    }

    /// An even port whose next port is free too; both are taken (the next one
    /// for the reservation).
    fn pick_port_pair(&mut self) -> Option<u16> {
        let range = self.config.relay_ports.clone();
        let fits = |port: u16, used: &HashSet<u16>| {
            port.is_multiple_of(2)
                && port < *range.end()
                && !used.contains(&port)
                && !used.contains(&(port + 1))
        };
        let mut chosen = None;
        for _ in 0..16 {
            let port = self.rng.random_range(range.clone());
            if fits(port, &self.ports_in_use) {
                chosen = Some(port);
                break;
            }
        }
        let port = chosen.or_else(|| range.clone().find(|port| fits(*port, &self.ports_in_use)))?;
        self.ports_in_use.insert(port);
        self.ports_in_use.insert(port + 1);
        Some(port)
    }

    /// Frees the ports of reservations nobody took in time.
    fn expire_reservations(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, reservation)| reservation.expires <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            if let Some(reservation) = self.reservations.remove(&token) {
                self.ports_in_use.remove(&reservation.port);
            }
        }
    }

    fn pick_port(&mut self, even: bool) -> Option<u16> {
        let range = self.config.relay_ports.clone();
        let size = usize::from(range.end().saturating_sub(*range.start())) + 1;
        if self.ports_in_use.len() >= size {
            return None;
        }
        let acceptable = |port: u16, used: &HashSet<u16>| {
            !used.contains(&port) && (!even || port.is_multiple_of(2))
        };
        for _ in 0..16 {
            let port = self.rng.random_range(range.clone());
            if acceptable(port, &self.ports_in_use) {
                self.ports_in_use.insert(port);
                return Some(port);
            }
        }
        let port = range
            .clone()
            .find(|port| acceptable(*port, &self.ports_in_use))?;
        self.ports_in_use.insert(port);
        Some(port)
    }

    fn delete_allocation(&mut self, key: &FiveTuple) {
        let Some(allocation) = self.allocations.remove(key) else {
            self.pending.retain(|_, pending| pending.from != *key);
            return;
        };
        self.by_port.remove(&allocation.relay_port);
        self.ports_in_use.remove(&allocation.relay_port);
        self.release_user(&allocation.username);
        self.commands.push_back(Command::CloseRelay {
            port: allocation.relay_port,
        });
    }

    fn release_user(&mut self, username: &str) {
        if let Some(count) = self.per_user.get_mut(username) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(username);
            }
        }
    }

    /// Seconds on the server's own clock (for nonces).
    fn clock(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }
}

fn seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// Comprehension-required attributes (type < 0x8000) that this server does not know.
fn unknown_required(message: &Message<'_>) -> Option<Vec<AttributeType>> {
    let unknown: Vec<AttributeType> = message
        .iter_attributes()
        .map(|(_, raw)| raw.header.get_type())
        .filter(|kind| kind.value() < 0x8000 && !KNOWN_ATTRIBUTES.contains(kind))
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}
