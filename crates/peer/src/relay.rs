//! The client side of TURN (RFC 8656) for one call, sans-IO: allocates a relay
//! address on the server named in `joined.iceServers`, installs permissions
//! and channels for the peers ICE talks to, wraps outgoing datagrams and
//! unwraps incoming ones. The protocol itself is `turn-client-proto`'s; this
//! module adapts it to the call (std `Instant`s, one UDP socket shared with
//! ICE) and decides when to ask for permissions and channels.
//!
//! It never touches a socket or a clock: datagrams and `now` come in, datagrams
//! for the TURN server and events come out.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use turn_client_proto::api::{BindChannelError, CreatePermissionError, TurnEvent, TurnPollRet};
use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnRecvRet};
use turn_client_proto::stun::Instant as TurnInstant;
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::types::TransportType;
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::udp::TurnClientUdp;

/// A resolved TURN server with the credentials for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

/// What the relay client has to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// The server gave us this relayed address: a local ICE candidate.
    Allocated(SocketAddr),
    /// No relay (refused, unreachable, or the allocation was lost).
    Failed(String),
}

/// One TURN allocation over UDP.
#[derive(Debug)]
pub struct Relay {
    client: TurnClientUdp,
    /// Where and as whom to allocate (kept for another attempt).
    local: SocketAddr,
    credentials: TurnServer,
    /// Allocations tried so far.
    attempts: u32,
    /// When to try again after a failed first allocation.
    retry_at: Option<Instant>,
    server: SocketAddr,
    /// The origin of the TURN crate's clock (its instants count from here).
    epoch: Instant,
    relayed: Option<SocketAddr>,
    failed: bool,
    /// Given back: no more events.
    released: bool,
    /// Peers asked for before the allocation existed.
    waiting_permissions: Vec<IpAddr>,
    channels_requested: HashSet<SocketAddr>,
    /// Peers a permission was asked for (asking twice is an error in the client).
    permissions_requested: HashSet<IpAddr>,
    to_server: VecDeque<Vec<u8>>,
    events: VecDeque<RelayEvent>,
    wake_at: Option<Instant>,
    /// Datagrams dropped because the peer had no permission yet.
    pub dropped_without_permission: u64,
}

impl Relay {
    /// Starts an allocation from `local` (the call's UDP socket) on `server`.
    #[must_use]
    pub fn allocate(local: SocketAddr, server: TurnServer, now: Instant) -> Self {
        let mut relay = Self {
            client: new_client(local, &server),
            local,
            attempts: 1,
            retry_at: None,
            server: server.addr,
            credentials: server,
            epoch: now,
            relayed: None,
            failed: false,
            released: false,
            waiting_permissions: Vec::new(),
            channels_requested: HashSet::new(),
            permissions_requested: HashSet::new(),
            to_server: VecDeque::new(),
            events: VecDeque::new(),
            wake_at: None,
            dropped_without_permission: 0,
        };
        relay.pump(now);
        relay
    }

    /// The TURN server's address (datagrams from it belong to the relay).
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    #[must_use]
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Handles a datagram from the TURN server. Returns the peer data it carried, if any.
    pub fn handle_datagram(
        &mut self,
        local: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let transmit = Transmit::new(bytes, TransportType::Udp, self.server, local);
        let peer_data = match self.client.recv(transmit, self.turn_time(now)) {
            TurnRecvRet::PeerData(data) => Some((data.peer, data.data().to_vec())),
            TurnRecvRet::Handled | TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => None,
        };
        self.pump(now);
        peer_data
    }

    /// Wraps `payload` for `peer` (ChannelData once a channel is bound, a Send
    /// indication before). None when the peer has no permission yet: one is
    /// requested and the datagram dropped (ICE retransmits its checks).
    pub fn wrap(&mut self, peer: SocketAddr, payload: &[u8], now: Instant) -> Option<Vec<u8>> {
        let time = self.turn_time(now);
        let wrapped = match self.client.send_to(TransportType::Udp, peer, payload, time) {
            Ok(Some(transmit)) => Some(transmit.build().data),
            Ok(None) => None,
            Err(_) => {
                self.dropped_without_permission += 1;
                self.permit(peer.ip(), now);
                None
            }
        };
        if wrapped.is_some() && self.channels_requested.insert(peer) {
            // A channel costs 4 bytes a datagram instead of 36.
            match self.client.bind_channel(TransportType::Udp, peer, time) {
                Ok(()) | Err(BindChannelError::AlreadyExists) => {}
                Err(_) => {
                    self.channels_requested.remove(&peer);
                }
            }
            self.pump(now);
        }
        wrapped
    }

    /// Lets `peer` send to our relayed address (done for every remote candidate).
    pub fn permit(&mut self, peer: IpAddr, now: Instant) {
        if self.relayed.is_none() {
            if !self.waiting_permissions.contains(&peer) {
                self.waiting_permissions.push(peer);
            }
            return;
        }
        self.request_permission(peer, now);
        self.pump(now);
    }

    /// Drives retransmissions, refreshes and another allocation attempt.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.attempts += 1;
            self.client = new_client(self.local, &self.credentials);
            self.channels_requested.clear();
            self.permissions_requested.clear();
        }
        self.pump(now);
    }

    /// Gives the allocation back (a Refresh with lifetime 0) so the server
    /// frees it now rather than when it expires. Best effort: the answer is
    /// not awaited, and nothing this relay does afterwards is reported.
    pub fn release(&mut self, now: Instant) {
        self.released = true;
        self.retry_at = None;
        if self.relayed.is_some() && self.client.delete(self.turn_time(now)).is_ok() {
            self.pump(now);
        }
    }

    /// When `handle_timeout` is due next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.wake_at, self.retry_at) {
            (Some(wake), Some(retry)) => Some(wake.min(retry)),
            (wake, retry) => wake.or(retry),
        }
    }

    /// The next datagram to send to the TURN server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.to_server.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// Collects whatever the TURN client wants to send or say.
    fn pump(&mut self, now: Instant) {
        let time = self.turn_time(now);
        // Twice: events of the first round may queue requests, whose
        // retransmission timer the second round's `poll` then reports.
        for _ in 0..2 {
            self.wake_at = match self.client.poll(time) {
                TurnPollRet::WaitUntil(at) => Some(self.std_time(at).max(now)),
                TurnPollRet::Closed => {
                    self.fail("the TURN allocation is closed", now);
                    None
                }
                // TCP-only outcomes; a UDP allocation does not produce them.
                TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => None,
            };
            // Bounded: the client queues a handful of items at most.
            for _ in 0..64 {
                let Some(event) = self.client.poll_event() else {
                    break;
                };
                self.on_event(event, now);
            }
            for _ in 0..64 {
                let Some(transmit) = self.client.poll_transmit(time) else {
                    break;
                };
                self.to_server.push_back(transmit.data.as_ref().to_vec());
            }
        }
    }

    fn on_event(&mut self, event: TurnEvent, now: Instant) {
        match event {
            TurnEvent::AllocationCreated(_, relayed) => {
                if self.relayed.is_none() {
                    self.relayed = Some(relayed);
                    self.events.push_back(RelayEvent::Allocated(relayed));
                    for peer in std::mem::take(&mut self.waiting_permissions) {
                        self.request_permission(peer, now);
                    }
                }
            }
            TurnEvent::AllocationCreateFailed(_) => self.fail(
                "the TURN server refused the allocation or never answered it",
                now,
            ),
            TurnEvent::ChannelCreateFailed(_, peer) => {
                self.channels_requested.remove(&peer);
            }
            TurnEvent::PermissionCreateFailed(_, peer) => {
                self.permissions_requested.remove(&peer);
            }
            TurnEvent::PermissionCreated(..)
            | TurnEvent::ChannelCreated(..)
            | TurnEvent::TcpConnected(_)
            | TurnEvent::TcpConnectFailed(_) => {}
        }
    }

    /// Asks for a permission once per peer (the client refreshes it by itself).
    fn request_permission(&mut self, peer: IpAddr, now: Instant) {
        if self.permissions_requested.contains(&peer) {
            return;
        }
        let time = self.turn_time(now);
        match self
            .client
            .create_permission(TransportType::Udp, peer, time)
        {
            Ok(()) | Err(CreatePermissionError::AlreadyExists) => {
                self.permissions_requested.insert(peer);
            }
            Err(_) => {
                if !self.waiting_permissions.contains(&peer) {
                    self.waiting_permissions.push(peer);
                }
            }
        }
    }

    /// A first allocation that failed is tried again (a lost or garbled answer
    /// under load should not cost the call); anything else is reported.
    fn fail(&mut self, reason: &str, now: Instant) {
        if self.relayed.is_none() && self.attempts < ALLOCATION_ATTEMPTS {
            if self.retry_at.is_none() {
                tracing::debug!("TURN allocation attempt {} failed: {reason}", self.attempts);
                self.retry_at = Some(now + ALLOCATION_RETRY_AFTER);
            }
            return;
        }
        if !self.failed && !self.released {
            self.failed = true;
            self.events.push_back(RelayEvent::Failed(reason.to_owned()));
        }
    }

    fn turn_time(&self, now: Instant) -> TurnInstant {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        TurnInstant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    fn std_time(&self, at: TurnInstant) -> Instant {
        self.epoch + at.saturating_duration_since(TurnInstant::from_nanos(0))
    }
}

/// Allocations tried before the relay is reported failed.
const ALLOCATION_ATTEMPTS: u32 = 3;
/// Pause before another allocation attempt.
const ALLOCATION_RETRY_AFTER: Duration = Duration::from_millis(500);

fn new_client(local: SocketAddr, server: &TurnServer) -> TurnClientUdp {
    let config = TurnConfig::new(TurnCredentials::new(&server.username, &server.password));
    TurnClientUdp::allocate(local, server.addr, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> TurnServer {
        TurnServer {
            addr: "127.0.0.1:3478".parse().unwrap(),
            username: "1700000000:session".into(),
            password: "secret".into(),
        }
    }

    #[test]
    fn an_unanswered_allocation_is_retried_then_reported() {
        let start = Instant::now();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut relay = Relay::allocate(local, server(), start);
        let mut requests = 0;
        let mut failure = None;
        // Simulated time: jump from deadline to deadline; the server never answers.
        for _ in 0..10_000 {
            while relay.poll_transmit().is_some() {
                requests += 1;
            }
            if let Some(event) = relay.poll_event() {
                failure = Some(event);
                break;
            }
            let Some(at) = relay.poll_timeout() else {
                break;
            };
            relay.handle_timeout(at);
        }
        assert!(
            matches!(failure, Some(RelayEvent::Failed(_))),
            "{failure:?}"
        );
        assert_eq!(relay.attempts, ALLOCATION_ATTEMPTS);
        // Each attempt sends its request and retransmissions of it.
        assert!(
            requests >= 3 * ALLOCATION_ATTEMPTS as usize,
            "{requests} requests"
        );
        assert_eq!(relay.relayed(), None);
    }

    #[test]
    fn datagrams_from_elsewhere_are_ignored() {
        let start = Instant::now();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut relay = Relay::allocate(local, server(), start);
        for garbage in [
            &b""[..],
            b"\x00\x01\x00\x00",
            &[0x40, 0x00, 0x00, 0x10, 1, 2, 3],
        ] {
            assert_eq!(relay.handle_datagram(local, garbage, start), None);
        }
        // Before the allocation exists nothing can be sent, and nothing panics.
        assert_eq!(
            relay.wrap("127.0.0.1:5000".parse().unwrap(), b"x", start),
            None
        );
    }
}
