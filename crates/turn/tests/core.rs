//! Deterministic tests of the TURN core with simulated time: every method,
//! expiry, refresh, permission and channel timeouts, quotas, each denied
//! address class, stale nonces and the REST secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duet_turn::datapath::{HEADROOM, TAILROOM};
use duet_turn::{Command, Config, FiveTuple, Forward, Server, Transport, rest_credentials};
use stun_types::attribute::{
    AttributeWrite, ErrorCode, Nonce, Realm, Software, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method,
};
use turn_types::attribute::{
    ChannelNumber, Data, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

const UNIX_START: u64 = 1_800_000_000;

struct Harness {
    server: Server,
    now: Instant,
    next_port_result: bool,
}

fn config() -> Config {
    let mut config = Config::new("duet", "203.0.113.1".parse().unwrap());
    config
        .credentials
        .users
        .insert("alice".to_owned(), "wonderland".to_owned());
    config.credentials.shared_secret = Some("rest-secret".to_owned());
    config.relay_ports = 50000..=50009;
    config
}

fn client(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::from(([198, 51, 100, 10], port)),
        server: "203.0.113.1:3478".parse().unwrap(),
    }
}

const PEER: &str = "192.0.2.55:7000";

impl Harness {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        Self {
            server: Server::new(config, [1; 32], now, UNIX_START),
            now,
            next_port_result: true,
        }
    }

    /// Sends a client packet; answers OpenRelay commands; returns messages sent back.
    fn client_sends(&mut self, from: FiveTuple, bytes: &[u8]) -> (Option<Forward>, Vec<Vec<u8>>) {
        let forward = self.server.handle_client(from, bytes, self.now);
        (forward, self.drain(from))
    }

    fn drain(&mut self, to_whom: FiveTuple) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        while let Some(command) = self.server.poll_command() {
            match command {
                Command::SendToClient { to, bytes } => {
                    assert_eq!(to, to_whom);
                    sent.push(bytes);
                }
                Command::OpenRelay { port, .. } => {
                    assert!((50000..=50009).contains(&port));
                    self.server
                        .handle_relay_opened(port, self.next_port_result, self.now);
                }
                Command::CloseRelay { .. } => {}
            }
        }
        sent
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
    }

    /// The nonce from a 401 challenge to an unauthenticated Allocate.
    fn nonce(&mut self, from: FiveTuple) -> String {
        let request = build(ALLOCATE, &[&RequestedTransport::new(17), &padding()], None);
        let (_, answers) = self.client_sends(from, &request);
        let answer = Message::from_bytes(&answers[0]).unwrap().clone_bytes();
        let message = Message::from_bytes(&answer).unwrap();
        assert_eq!(error_code(&message), Some(401));
        message.attribute::<Nonce>().unwrap().nonce().to_owned()
    }

    fn allocate(&mut self, from: FiveTuple, user: &str, password: &str) -> SocketAddr {
        let nonce = self.nonce(from);
        let request = build(
            ALLOCATE,
            &[&RequestedTransport::new(17)],
            Some((user, password, &nonce)),
        );
        let (_, answers) = self.client_sends(from, &request);
        let message = Message::from_bytes(&answers[0]).unwrap();
        assert_eq!(message.class(), MessageClass::Success, "{message}");
        assert!(
            message
                .validate_integrity(&credentials(user, password).into())
                .is_ok()
        );
        assert_eq!(
            message
                .attribute::<XorMappedAddress>()
                .unwrap()
                .addr(message.transaction_id()),
            from.client
        );
        message
            .attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(message.transaction_id())
    }

    /// Sends an authenticated request as alice and returns the one answer.
    fn request(
        &mut self,
        from: FiveTuple,
        method: Method,
        attributes: &[&dyn AttributeWrite],
    ) -> Vec<u8> {
        let nonce = self.nonce_for_request(from);
        let request = build(method, attributes, Some(("alice", "wonderland", &nonce)));
        let (_, answers) = self.client_sends(from, &request);
        assert_eq!(answers.len(), 1);
        answers.into_iter().next().unwrap()
    }

    fn nonce_for_request(&mut self, from: FiveTuple) -> String {
        // Any request without integrity gets a challenge with a fresh nonce.
        let request = build(REFRESH, &[&padding()], None);
        let (_, answers) = self.client_sends(from, &request);
        let message = Message::from_bytes(&answers[0]).unwrap();
        message.attribute::<Nonce>().unwrap().nonce().to_owned()
    }

    fn permit(&mut self, from: FiveTuple, peer: SocketAddr) -> Option<u16> {
        let request_peer = XorPeerAddress::new(peer, 0.into());
        let _ = request_peer;
        let answer = self.request_with_peer(from, CREATE_PERMISSION, peer, None);
        error_code(&Message::from_bytes(&answer).unwrap())
    }

    fn bind(&mut self, from: FiveTuple, channel: u16, peer: SocketAddr) -> Option<u16> {
        let answer = self.request_with_peer(from, CHANNEL_BIND, peer, Some(channel));
        error_code(&Message::from_bytes(&answer).unwrap())
    }

    fn request_with_peer(
        &mut self,
        from: FiveTuple,
        method: Method,
        peer: SocketAddr,
        channel: Option<u16>,
    ) -> Vec<u8> {
        let nonce = self.nonce_for_request(from);
        let mut message = Message::builder_request(method, MessageWriteVec::new());
        let transaction = message.transaction_id();
        message
            .add_attribute(&XorPeerAddress::new(peer, transaction))
            .unwrap();
        if let Some(channel) = channel {
            message.add_attribute(&ChannelNumber::new(channel)).unwrap();
        }
        sign(&mut message, "alice", "wonderland", &nonce);
        let bytes = message.finish();
        let (_, answers) = self.client_sends(from, &bytes);
        answers.into_iter().next().unwrap()
    }

    fn peer_sends(&mut self, relay_port: u16, peer: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        buffer[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        let delivery =
            self.server
                .handle_peer(relay_port, peer, &mut buffer, payload.len(), self.now)?;
        Some(buffer[delivery.bytes].to_vec())
    }
}

trait CloneBytes {
    fn clone_bytes(&self) -> Vec<u8>;
}

impl CloneBytes for Message<'_> {
    fn clone_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

/// A SOFTWARE attribute that makes a request as large as a real client's, so
/// the anti-amplification rule lets the 401 through.
fn padding() -> Software {
    Software::new("duet test client 0123456789abcdef0123456789").unwrap()
}

fn credentials(user: &str, password: &str) -> LongTermKeyCredentials {
    LongTermKeyCredentials::new(user.to_owned(), password.to_owned(), "duet".to_owned())
}

fn sign(message: &mut MessageWriteVec, user: &str, password: &str, nonce: &str) {
    message
        .add_attribute(&Username::new(user).unwrap())
        .unwrap();
    message.add_attribute(&Realm::new("duet").unwrap()).unwrap();
    message.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    message
        .add_message_integrity(
            &credentials(user, password).into(),
            IntegrityAlgorithm::Sha1,
        )
        .unwrap();
    message.add_fingerprint().unwrap();
}

fn build(
    method: Method,
    attributes: &[&dyn AttributeWrite],
    auth: Option<(&str, &str, &str)>,
) -> Vec<u8> {
    let mut message = Message::builder_request(method, MessageWriteVec::new());
    for attribute in attributes {
        message.add_attribute(*attribute).unwrap();
    }
    if let Some((user, password, nonce)) = auth {
        sign(&mut message, user, password, nonce);
    }
    message.finish()
}

fn error_code(message: &Message<'_>) -> Option<u16> {
    message
        .attribute::<ErrorCode>()
        .ok()
        .map(|code| code.code())
}

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

#[test]
fn binding_returns_the_mapped_address() {
    let mut h = Harness::new(config());
    let request = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    assert_eq!(request.len(), 20);
    let (_, answers) = h.client_sends(client(1000), &request);
    let message = Message::from_bytes(&answers[0]).unwrap();
    assert_eq!(message.class(), MessageClass::Success);
    assert_eq!(
        message
            .attribute::<XorMappedAddress>()
            .unwrap()
            .addr(message.transaction_id()),
        client(1000).client
    );
    assert_eq!(answers[0].len(), 32, "header and mapped address only");
}

#[test]
fn allocate_needs_credentials_and_small_requests_get_a_budgeted_challenge() {
    let mut h = Harness::new(config());
    // A browser's first Allocate is 28 bytes; its 401 is larger, so it is
    // answered only within the address's reflection budget (100, then 50/s).
    let small = build(ALLOCATE, &[&RequestedTransport::new(17)], None);
    assert_eq!(small.len(), 28);
    let mut answered = 0;
    for _ in 0..300 {
        let (_, answers) = h.client_sends(client(1000), &small);
        if let Some(answer) = answers.first() {
            let message = Message::from_bytes(answer).unwrap();
            assert_eq!(error_code(&message), Some(401));
            assert_eq!(message.attribute::<Realm>().unwrap().realm(), "duet");
            assert!(answer.len() <= 64);
            answered += 1;
        }
    }
    assert_eq!(answered, 100);
    // Over TCP (no spoofing possible) every request is challenged.
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..client(1000)
    };
    for _ in 0..20 {
        let (_, answers) = h.client_sends(tcp, &small);
        assert_eq!(answers.len(), 1);
    }
    // A request as large as coturn's uclient sends (52 bytes) always gets its
    // challenge, and the challenge is no larger than the request.
    // Like uclient's: REQUESTED-TRANSPORT, LIFETIME, a short SOFTWARE and a FINGERPRINT.
    let large = {
        let mut message = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        message.add_attribute(&RequestedTransport::new(17)).unwrap();
        message.add_attribute(&Lifetime::new(600)).unwrap();
        message
            .add_attribute(&Software::new("ab").unwrap())
            .unwrap();
        message.add_fingerprint().unwrap();
        message.finish()
    };
    assert_eq!(large.len(), 52);
    for _ in 0..50 {
        let (_, answers) = h.client_sends(client(1000), &large);
        assert_eq!(answers.len(), 1);
        assert!(
            answers[0].len() <= large.len(),
            "{} > {}",
            answers[0].len(),
            large.len()
        );
    }
}

#[test]
fn wrong_password_unknown_user_and_forged_nonce_get_401() {
    let mut h = Harness::new(config());
    let from = client(1000);
    let nonce = h.nonce(from);
    for (user, password, nonce) in [
        ("alice", "wrong", nonce.as_str()),
        ("mallory", "x", nonce.as_str()),
        ("alice", "wonderland", "AAAAAAAAAAAA"),
    ] {
        let request = build(
            ALLOCATE,
            &[&RequestedTransport::new(17)],
            Some((user, password, nonce)),
        );
        let (_, answers) = h.client_sends(from, &request);
        assert_eq!(
            error_code(&Message::from_bytes(&answers[0]).unwrap()),
            Some(401),
            "{user}/{password}/{nonce}"
        );
    }
    assert_eq!(h.server.stats().allocations, 0);
    assert!(h.server.stats().auth_failures >= 3);
}

#[test]
fn a_stale_nonce_gets_438_with_a_fresh_one() {
    let mut h = Harness::new(config());
    let from = client(1000);
    let nonce = h.nonce(from);
    h.advance(Duration::from_secs(601));
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    let message = Message::from_bytes(&answers[0]).unwrap();
    assert_eq!(error_code(&message), Some(438));
    let fresh = message.attribute::<Nonce>().unwrap().nonce().to_owned();
    assert_ne!(fresh, nonce);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &fresh)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        Message::from_bytes(&answers[0]).unwrap().class(),
        MessageClass::Success
    );
}

#[test]
fn rest_credentials_work_until_they_expire() {
    let mut h = Harness::new(config());
    let (user, password) = rest_credentials("rest-secret", "peer1", UNIX_START + 60);
    let relayed = h.allocate(client(1000), &user, &password);
    assert_eq!(relayed.ip().to_string(), "203.0.113.1");
    h.advance(Duration::from_secs(61));
    // The allocation made while they were valid can still be refreshed...
    let nonce = h.nonce_for_request(client(1000));
    let request = build(
        REFRESH,
        &[&Lifetime::new(600)],
        Some((&user, &password, &nonce)),
    );
    let (_, answers) = h.client_sends(client(1000), &request);
    assert_eq!(
        Message::from_bytes(&answers[0]).unwrap().class(),
        MessageClass::Success
    );
    // ...but no new allocation can be made with them.
    let from = client(1001);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some((&user, &password, &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(401)
    );
}

#[test]
fn allocation_lifetime_refresh_and_delete() {
    let mut h = Harness::new(config());
    let from = client(1000);
    h.allocate(from, "alice", "wonderland");
    assert_eq!(h.server.stats().allocations, 1);
    // Default lifetime is 600 s; a refresh asks for 3600 s (the maximum).
    h.advance(Duration::from_secs(500));
    let answer = h.request(from, REFRESH, &[&Lifetime::new(7200)]);
    let message = Message::from_bytes(&answer).unwrap();
    assert_eq!(message.class(), MessageClass::Success);
    assert_eq!(message.attribute::<Lifetime>().unwrap().seconds(), 3600);
    h.advance(Duration::from_secs(3599));
    assert_eq!(h.server.stats().allocations, 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.stats().allocations, 0, "expired");

    h.allocate(from, "alice", "wonderland");
    let answer = h.request(from, REFRESH, &[&Lifetime::new(0)]);
    assert_eq!(
        Message::from_bytes(&answer).unwrap().class(),
        MessageClass::Success
    );
    assert_eq!(h.server.stats().allocations, 0, "deleted by lifetime 0");
    let answer = h.request(from, REFRESH, &[&Lifetime::new(600)]);
    assert_eq!(
        error_code(&Message::from_bytes(&answer).unwrap()),
        Some(437)
    );
}

#[test]
fn a_second_allocate_is_a_mismatch_but_a_retransmission_is_answered_again() {
    let mut h = Harness::new(config());
    let from = client(1000);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, first) = h.client_sends(from, &request);
    let (_, again) = h.client_sends(from, &request);
    assert_eq!(first, again);
    let other = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &other);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(437)
    );
}

#[test]
fn tcp_relays_are_refused_with_442() {
    let mut h = Harness::new(config());
    let from = client(1000);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(6)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(442)
    );
}

#[test]
fn send_indication_and_data_indication_need_a_permission() {
    let mut h = Harness::new(config());
    let from = client(1000);
    let relayed = h.allocate(from, "alice", "wonderland");
    let send = {
        let mut message = Message::builder(
            stun_types::message::MessageType::from_class_method(MessageClass::Indication, SEND),
            stun_types::message::TransactionId::generate(),
            MessageWriteVec::new(),
        );
        let transaction = message.transaction_id();
        message
            .add_attribute(&XorPeerAddress::new(peer(), transaction))
            .unwrap();
        message.add_attribute(&Data::new(b"ping")).unwrap();
        message.finish()
    };
    let (forward, _) = h.client_sends(from, &send);
    assert_eq!(forward, None, "no permission yet");
    assert_eq!(h.peer_sends(relayed.port(), peer(), b"x"), None);

    assert_eq!(h.permit(from, peer()), None);
    let (forward, _) = h.client_sends(from, &send);
    let forward = forward.unwrap();
    assert_eq!(forward.peer, peer());
    assert_eq!(forward.relay_port, relayed.port());
    assert_eq!(&send[forward.payload], b"ping");

    // Permission is per IP: another port of the same peer is fine.
    let other_port: SocketAddr = "192.0.2.55:9999".parse().unwrap();
    let data = h.peer_sends(relayed.port(), other_port, b"pong").unwrap();
    let message = Message::from_bytes(&data).unwrap();
    assert_eq!(message.method(), turn_types::message::DATA);
    assert_eq!(message.attribute::<Data>().unwrap().data(), b"pong");
    assert_eq!(
        message
            .attribute::<XorPeerAddress>()
            .unwrap()
            .addr(message.transaction_id()),
        other_port
    );

    // Permissions last 300 s.
    h.advance(Duration::from_secs(301));
    assert_eq!(h.peer_sends(relayed.port(), peer(), b"late"), None);
}

#[test]
fn channels_carry_data_both_ways_and_expire() {
    let mut h = Harness::new(config());
    let from = client(1000);
    let relayed = h.allocate(from, "alice", "wonderland");
    assert_eq!(h.bind(from, 0x4001, peer()), None);
    let channel_data = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0x00];
    let (forward, _) = h.client_sends(from, &channel_data);
    let forward = forward.unwrap();
    assert_eq!(&channel_data[forward.payload], b"abc");
    assert_eq!(forward.peer, peer());
    let back = h.peer_sends(relayed.port(), peer(), b"xyz").unwrap();
    assert_eq!(back, vec![0x40, 0x01, 0x00, 0x03, b'x', b'y', b'z']);

    // Binding the same channel to another peer, or the peer to another channel, is refused.
    assert_eq!(
        h.bind(from, 0x4001, "192.0.2.56:7000".parse().unwrap()),
        Some(400)
    );
    assert_eq!(h.bind(from, 0x4002, peer()), Some(400));
    assert_eq!(
        h.bind(from, 0x3FFF, "192.0.2.57:7000".parse().unwrap()),
        Some(400)
    );
    // Refreshing is fine.
    assert_eq!(h.bind(from, 0x4001, peer()), None);

    // Keep the allocation and permission alive but let the channel lapse (600 s).
    for _ in 0..3 {
        h.advance(Duration::from_secs(250));
        let _ = h.request(from, REFRESH, &[&Lifetime::new(600)]);
        assert_eq!(h.permit(from, peer()), None);
    }
    let (forward, _) = h.client_sends(from, &channel_data);
    assert_eq!(forward, None, "the channel expired");
    // Without a channel, the peer's data arrives as a Data indication.
    let back = h.peer_sends(relayed.port(), peer(), b"xyz").unwrap();
    assert_eq!(
        Message::from_bytes(&back).unwrap().method(),
        turn_types::message::DATA
    );
}

#[test]
fn tcp_channel_data_is_padded() {
    let mut h = Harness::new(config());
    let from = FiveTuple {
        transport: Transport::Tcp,
        ..client(1000)
    };
    let relayed = h.allocate(from, "alice", "wonderland");
    assert_eq!(h.bind(from, 0x4000, peer()), None);
    let back = h.peer_sends(relayed.port(), peer(), b"xyzzy").unwrap();
    assert_eq!(back.len(), 12);
}

#[test]
fn every_denied_address_class_gets_403() {
    let mut config = config();
    // Another address of this host (say, its public one behind the relay's).
    config
        .peer_policy
        .server_addresses
        .push("198.51.100.200".parse().unwrap());
    let mut h = Harness::new(config);
    let from = client(1000);
    h.allocate(from, "alice", "wonderland");
    for address in [
        "127.0.0.1:80",
        "0.0.0.0:80",
        "10.0.0.1:80",
        "172.16.5.4:80",
        "192.168.0.1:80",
        "100.64.1.1:80",
        "169.254.169.254:80",
        "224.0.0.251:5353",
        "255.255.255.255:80",
        "198.51.100.200:22",
        "[::ffff:127.0.0.1]:80",
        "[::ffff:169.254.169.254]:80",
    ] {
        let peer: SocketAddr = address.parse().unwrap();
        assert_eq!(h.permit(from, peer), Some(403), "{address}");
        assert_eq!(h.bind(from, 0x4100, peer), Some(403), "{address}");
    }
    assert!(h.server.stats().denied_peers >= 24);
}

#[test]
fn two_allocations_on_this_relay_reach_each_other_but_nothing_else_on_the_host() {
    let mut h = Harness::new(config());
    let (a, b) = (client(1000), client(2000));
    let relayed_a = h.allocate(a, "alice", "wonderland");
    let relayed_b = h.allocate(b, "alice", "wonderland");
    // Permissions towards the relay's own address are allowed (both sides relayed).
    assert_eq!(h.bind(a, 0x4000, relayed_b), None);
    assert_eq!(h.permit(b, relayed_a), None);
    let (forward, _) = h.client_sends(a, &[0x40, 0x00, 0x00, 0x02, b'h', b'i']);
    let forward = forward.unwrap();
    assert_eq!(forward.peer, relayed_b);
    assert!(h.server.is_relay(forward.peer));
    // The driver delivers it to B's allocation itself.
    let delivered = h.peer_sends(relayed_b.port(), relayed_a, b"hi").unwrap();
    let message = Message::from_bytes(&delivered).unwrap();
    assert_eq!(message.attribute::<Data>().unwrap().data(), b"hi");
    // But other ports on the relay's address (its own services) stay out of reach.
    let own_service: SocketAddr = "203.0.113.1:22".parse().unwrap();
    assert_eq!(h.bind(a, 0x4001, own_service), None);
    let (forward, _) = h.client_sends(a, &[0x40, 0x01, 0x00, 0x02, b'h', b'i']);
    assert_eq!(forward, None);
    assert!(!h.server.is_relay(own_service));
}

#[test]
fn the_allow_list_opens_a_denied_range() {
    let mut config = config();
    config
        .peer_policy
        .allowed
        .push("10.0.0.0/8".parse().unwrap());
    let mut h = Harness::new(config);
    let from = client(1000);
    h.allocate(from, "alice", "wonderland");
    assert_eq!(h.permit(from, "10.1.2.3:9".parse().unwrap()), None);
    assert_eq!(h.permit(from, "192.168.1.1:9".parse().unwrap()), Some(403));
}

#[test]
fn quotas_per_user_and_in_total_give_486() {
    let mut config = config();
    config.max_allocations_per_user = 2;
    config.max_allocations = 3;
    let mut h = Harness::new(config);
    h.allocate(client(1), "alice", "wonderland");
    h.allocate(client(2), "alice", "wonderland");
    let from = client(3);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(486)
    );
    let (user, password) = rest_credentials("rest-secret", "bob", UNIX_START + 3600);
    h.allocate(client(4), &user, &password);
    let (user, password) = rest_credentials("rest-secret", "carol", UNIX_START + 3600);
    let from = client(5);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some((&user, &password, &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(486)
    );
    assert_eq!(h.server.stats().quota_refusals, 2);
}

#[test]
fn another_users_request_on_an_allocation_gets_441() {
    let mut h = Harness::new(config());
    let from = client(1000);
    h.allocate(from, "alice", "wonderland");
    let (user, password) = rest_credentials("rest-secret", "bob", UNIX_START + 3600);
    let nonce = h.nonce_for_request(from);
    let request = build(
        REFRESH,
        &[&Lifetime::new(600)],
        Some((&user, &password, &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(441)
    );
}

#[test]
fn the_relay_port_range_runs_out_with_508_and_failed_binds_are_retried() {
    let mut config = config();
    config.relay_ports = 50000..=50001;
    config.max_allocations_per_user = 10;
    let mut h = Harness::new(config);
    h.allocate(client(1), "alice", "wonderland");
    h.allocate(client(2), "alice", "wonderland");
    let from = client(3);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(508)
    );

    let mut h = Harness::new(self::config());
    h.next_port_result = false;
    let from = client(1);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(508)
    );
    assert_eq!(h.server.stats().allocations, 0);
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut h = Harness::new(config());
    let mut message = Message::builder_request(BINDING, MessageWriteVec::new());
    message
        .add_attribute(&stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(0x7777),
            &[0u8; 32],
        ))
        .unwrap();
    let bytes = message.finish();
    let (_, answers) = h.client_sends(client(1), &bytes);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(420)
    );
}

#[test]
fn tcp_client_closing_deletes_its_allocation() {
    let mut h = Harness::new(config());
    let from = FiveTuple {
        transport: Transport::Tcp,
        ..client(1000)
    };
    h.allocate(from, "alice", "wonderland");
    h.server.handle_client_closed(from);
    assert_eq!(h.server.stats().allocations, 0);
}

#[test]
fn a_bandwidth_cap_drops_the_excess() {
    let mut config = config();
    config.bandwidth_per_allocation = Some(1000);
    let mut h = Harness::new(config);
    let from = client(1000);
    let relayed = h.allocate(from, "alice", "wonderland");
    assert_eq!(h.permit(from, peer()), None);
    let payload = [0u8; 400];
    let delivered = (0..5)
        .filter(|_| h.peer_sends(relayed.port(), peer(), &payload).is_some())
        .count();
    assert_eq!(delivered, 2);
    h.advance(Duration::from_secs(1));
    assert!(h.peer_sends(relayed.port(), peer(), &payload).is_some());
}

#[test]
fn a_send_indication_with_a_fingerprint_forwards_exactly_its_data() {
    let mut h = Harness::new(config());
    let (a, b) = (client(1000), client(2000));
    let relayed_a = h.allocate(a, "alice", "wonderland");
    let relayed_b = h.allocate(b, "alice", "wonderland");
    assert_eq!(h.permit(a, relayed_b), None);
    assert_eq!(h.permit(b, relayed_a), None);
    let payload: Vec<u8> = (0..101u8).collect();
    let send = {
        let mut message = Message::builder(
            stun_types::message::MessageType::from_class_method(MessageClass::Indication, SEND),
            stun_types::message::TransactionId::generate(),
            MessageWriteVec::new(),
        );
        let transaction = message.transaction_id();
        message
            .add_attribute(&XorPeerAddress::new(relayed_b, transaction))
            .unwrap();
        message.add_attribute(&Data::new(&payload)).unwrap();
        message.add_fingerprint().unwrap();
        message.finish()
    };
    let (forward, _) = h.client_sends(a, &send);
    let forward = forward.unwrap();
    assert_eq!(&send[forward.payload.clone()], &payload[..]);
    assert!(h.server.is_relay(forward.peer));
    let delivered = h.peer_sends(relayed_b.port(), relayed_a, &payload).unwrap();
    let message = Message::from_bytes(&delivered).unwrap();
    assert_eq!(message.attribute::<Data>().unwrap().data(), &payload[..]);
}

#[test]
fn a_draining_server_refuses_new_allocations_and_keeps_the_old_ones() {
    let mut h = Harness::new(config());
    let kept = client(1);
    h.allocate(kept, "alice", "wonderland");
    h.server.stop_allocating();
    let from = client(2);
    let nonce = h.nonce(from);
    let request = build(
        ALLOCATE,
        &[&RequestedTransport::new(17)],
        Some(("alice", "wonderland", &nonce)),
    );
    let (_, answers) = h.client_sends(from, &request);
    assert_eq!(
        error_code(&Message::from_bytes(&answers[0]).unwrap()),
        Some(508)
    );
    // The allocation made before goes on: it can be refreshed, and it ends as usual.
    let answer = h.request(kept, REFRESH, &[&Lifetime::new(600)]);
    assert_eq!(
        Message::from_bytes(&answer).unwrap().class(),
        MessageClass::Success
    );
    assert_eq!(h.server.stats().allocations, 1);
    let answer = h.request(kept, REFRESH, &[&Lifetime::new(0)]);
    assert_eq!(
        Message::from_bytes(&answer).unwrap().class(),
        MessageClass::Success
    );
    assert_eq!(h.server.stats().allocations, 0);
}

/// An authenticated Allocate from `from` with `attributes` (REQUESTED-TRANSPORT
/// UDP is added first); the one answer.
fn allocate_with(h: &mut Harness, from: FiveTuple, attributes: &[&dyn AttributeWrite]) -> Vec<u8> {
    let nonce = h.nonce(from);
    let udp = RequestedTransport::new(17);
    let mut all: Vec<&dyn AttributeWrite> = vec![&udp];
    all.extend_from_slice(attributes);
    let request = build(ALLOCATE, &all, Some(("alice", "wonderland", &nonce)));
    let (_, mut answers) = h.client_sends(from, &request);
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

fn relayed_port(answer: &[u8]) -> u16 {
    let message = Message::from_bytes(answer).unwrap();
    assert_eq!(message.class(), MessageClass::Success, "{message}");
    message
        .attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(message.transaction_id())
        .port()
}

#[test]
fn a_duplicate_requested_transport_gets_400() {
    let mut h = Harness::new(config());
    let answer = allocate_with(&mut h, client(1), &[&RequestedTransport::new(17)]);
    assert_eq!(
        error_code(&Message::from_bytes(&answer).unwrap()),
        Some(400)
    );
}

#[test]
fn malformed_stun_and_a_wrong_fingerprint_get_no_answer() {
    let mut h = Harness::new(config());
    let from = client(1);
    // A Binding with a FINGERPRINT, then the same with the fingerprint's last byte flipped.
    let mut message = Message::builder_request(BINDING, MessageWriteVec::new());
    message.add_fingerprint().unwrap();
    let good = message.finish();
    let (_, answers) = h.client_sends(from, &good);
    assert_eq!(answers.len(), 1, "a valid Binding is answered");
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0xFF;
    let (_, answers) = h.client_sends(from, &bad);
    assert!(
        answers.is_empty(),
        "a wrong FINGERPRINT is discarded silently"
    );
    // A header announcing more attribute bytes than it carries.
    let mut truncated = good.clone();
    truncated[3] = truncated[3].wrapping_add(8);
    let (_, answers) = h.client_sends(from, &truncated);
    assert!(
        answers.is_empty(),
        "a malformed message is discarded silently"
    );
    // An attribute whose length runs past the message.
    let request = build(ALLOCATE, &[&RequestedTransport::new(17)], None);
    let mut broken = request.clone();
    broken[22..24].copy_from_slice(&200u16.to_be_bytes());
    let (_, answers) = h.client_sends(from, &broken);
    assert!(answers.is_empty());
}

/// RFC 8656 §12 narrowed channel numbers to 0x4000–0x4FFF; RFC 5766 clients,
/// coturn's `turnutils_uclient` among them, pick numbers up to 0x7FFF, so
/// those are accepted too (the demultiplexing the narrower range protects is
/// the client's own, and it chose the number). Below and above: 400.
#[test]
fn channel_numbers_are_0x4000_to_0x7fff() {
    let mut h = Harness::new(config());
    let from = client(1);
    h.allocate(from, "alice", "wonderland");
    assert_eq!(h.bind(from, 0x4FFF, peer()), None);
    assert_eq!(
        h.bind(from, 0x7FFF, "192.0.2.57:7000".parse().unwrap()),
        None
    );
    for invalid in [0x3FFF, 0x8000, 0xFFFF] {
        assert_eq!(
            h.bind(from, invalid, "192.0.2.56:7000".parse().unwrap()),
            Some(400),
            "{invalid:#x}"
        );
    }
}

#[test]
fn even_port_with_r_reserves_the_next_port_for_30_seconds() {
    let mut h = Harness::new(config());
    // EVEN-PORT without R: an even port, no token.
    let plain = allocate_with(&mut h, client(1), &[&EvenPort::new(false)]);
    assert_eq!(relayed_port(&plain) % 2, 0);
    assert!(
        Message::from_bytes(&plain)
            .unwrap()
            .attribute::<ReservationToken>()
            .is_err()
    );

    // EVEN-PORT R=1: an even port and a token for the next one.
    let first = allocate_with(&mut h, client(2), &[&EvenPort::new(true)]);
    let port = relayed_port(&first);
    assert_eq!(port % 2, 0);
    let token = Message::from_bytes(&first)
        .unwrap()
        .attribute::<ReservationToken>()
        .unwrap()
        .token();
    // The token with EVEN-PORT is a bad request.
    let both = allocate_with(
        &mut h,
        client(3),
        &[&ReservationToken::new(token), &EvenPort::new(false)],
    );
    assert_eq!(error_code(&Message::from_bytes(&both).unwrap()), Some(400));
    // Another client's Allocate with the token gets the next port.
    let second = allocate_with(&mut h, client(4), &[&ReservationToken::new(token)]);
    assert_eq!(relayed_port(&second), port + 1);
    // A token is used once; an unknown one gets 508.
    let again = allocate_with(&mut h, client(5), &[&ReservationToken::new(token)]);
    assert_eq!(error_code(&Message::from_bytes(&again).unwrap()), Some(508));

    // A reservation nobody takes ends after 30 s and frees its port.
    let third = allocate_with(&mut h, client(6), &[&EvenPort::new(true)]);
    let token = Message::from_bytes(&third)
        .unwrap()
        .attribute::<ReservationToken>()
        .unwrap()
        .token();
    h.advance(Duration::from_secs(31));
    let late = allocate_with(&mut h, client(7), &[&ReservationToken::new(token)]);
    assert_eq!(error_code(&Message::from_bytes(&late).unwrap()), Some(508));
}

#[test]
fn every_address_of_the_host_is_out_of_reach_both_ways() {
    let mut h = Harness::new(config());
    // The relay advertises 203.0.113.1; the host also has 198.51.100.9.
    h.server
        .set_own_addresses(vec!["198.51.100.9".parse().unwrap()]);
    let (a, b) = (client(1000), client(2000));
    let relayed_a = h.allocate(a, "alice", "wonderland");
    let relayed_b = h.allocate(b, "alice", "wonderland");
    // A service bound to the host's second address cannot be reached.
    assert_eq!(h.permit(a, "198.51.100.9:5000".parse().unwrap()), Some(403));
    // A has a permission for the relay address (to talk to B's relay)...
    assert_eq!(h.permit(a, relayed_b), None);
    assert!(
        h.peer_sends(relayed_a.port(), relayed_b, b"from B")
            .is_some()
    );
    // ...which lets no other service of this host write into A's relay: not
    // from the relay address outside the relay ports, nor from its other address.
    let own_service: SocketAddr = "203.0.113.1:5353".parse().unwrap();
    assert_eq!(h.peer_sends(relayed_a.port(), own_service, b"x"), None);
    let second_address: SocketAddr = "198.51.100.9:5353".parse().unwrap();
    assert_eq!(h.peer_sends(relayed_a.port(), second_address, b"x"), None);
    // A public peer with a permission is delivered as usual.
    assert_eq!(h.permit(a, peer()), None);
    assert!(h.peer_sends(relayed_a.port(), peer(), b"ok").is_some());
}

#[test]
fn ipv6_relays_for_requested_address_family_ipv6_with_the_policy_applied() {
    use stun_types::AddressFamily;
    use turn_types::attribute::RequestedAddressFamily;
    // Without an IPv6 relay address: 440.
    let mut h = Harness::new(config());
    let answer = allocate_with(
        &mut h,
        client(1),
        &[&RequestedAddressFamily::new(AddressFamily::IPV6)],
    );
    assert_eq!(
        error_code(&Message::from_bytes(&answer).unwrap()),
        Some(440)
    );

    let mut with_v6 = config();
    with_v6.relay_address_v6 = Some("2001:db8::10".parse().unwrap());
    let mut h = Harness::new(with_v6);
    let from = client(1);
    let answer = allocate_with(
        &mut h,
        from,
        &[&RequestedAddressFamily::new(AddressFamily::IPV6)],
    );
    let message = Message::from_bytes(&answer).unwrap();
    let relayed = message
        .attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(message.transaction_id());
    assert_eq!(
        relayed.ip(),
        "2001:db8::10".parse::<std::net::IpAddr>().unwrap()
    );
    // Peers of an IPv6 relay are IPv6, under the same policy as IPv4 ones.
    assert_eq!(
        h.permit(from, "[2001:db8:5::7]:7000".parse().unwrap()),
        None
    );
    assert_eq!(
        h.permit(from, peer()),
        Some(443),
        "an IPv4 peer on an IPv6 relay"
    );
    for denied in [
        "[fe80::1]:7000",
        "[::1]:7000",
        "[fd00::5]:7000",
        "[64:ff9b::a9fe:a9fe]:80",
    ] {
        assert_eq!(
            h.permit(from, denied.parse().unwrap()),
            Some(403),
            "{denied}"
        );
    }
    // An IPv4 client's default allocation is still IPv4.
    let v4 = allocate_with(&mut h, client(2), &[]);
    assert!(
        Message::from_bytes(&v4)
            .unwrap()
            .attribute::<XorRelayedAddress>()
            .is_ok_and(|address| address
                .addr(Message::from_bytes(&v4).unwrap().transaction_id())
                .is_ipv4())
    );
}
