//! Random bytes never panic the core, never get an answer larger than the
//! request over UDP, and never reach a peer without a permission.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::Instant;

use duet_turn::datapath::{HEADROOM, TAILROOM, parse_channel_data};
use duet_turn::{Command, Config, FiveTuple, Server, Transport};
use proptest::prelude::*;

fn server() -> Server {
    let mut config = Config::new("duet", "203.0.113.1".parse().unwrap());
    config
        .credentials
        .users
        .insert("alice".to_owned(), "pw".to_owned());
    Server::new(config, [2; 32], Instant::now(), 1_800_000_000)
}

/// Byte strings biased towards things that look like STUN and ChannelData.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (any::<[u8; 2]>(), prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(kind, rest)| {
            let mut bytes = vec![kind[0] & 0x3f, kind[1]];
            bytes.extend_from_slice(&u16::try_from(rest.len()).unwrap_or(0).to_be_bytes());
            bytes.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            bytes.extend_from_slice(&[7; 12]);
            bytes.extend_from_slice(&rest);
            bytes
        }),
        (0x4000u16..0x5000, prop::collection::vec(any::<u8>(), 0..60)).prop_map(
            |(channel, rest)| {
                let mut bytes = channel.to_be_bytes().to_vec();
                bytes.extend_from_slice(&u16::try_from(rest.len() + 3).unwrap_or(0).to_be_bytes());
                bytes.extend_from_slice(&rest);
                bytes
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_client_packets_are_safe(packets in prop::collection::vec(packet(), 1..10), tcp in any::<bool>()) {
        let mut server = server();
        let from = FiveTuple {
            transport: if tcp { Transport::Tcp } else { Transport::Udp },
            client: "198.51.100.1:4000".parse().unwrap(),
            server: "203.0.113.1:3478".parse().unwrap(),
        };
        let now = Instant::now();
        for packet in &packets {
            let forward = server.handle_client(from, packet, now);
            prop_assert!(forward.is_none(), "no allocation, no forwarding");
            while let Some(command) = server.poll_command() {
                // Binding answers may carry the mapped address on top; other
                // answers larger than their request are small and budgeted.
                if let Command::SendToClient { bytes, .. } = command
                    && !tcp
                {
                    prop_assert!(bytes.len() <= packet.len() + 12 || bytes.len() <= 64, "{} > {}", bytes.len(), packet.len());
                }
            }
        }
    }

    #[test]
    fn random_peer_datagrams_are_dropped(payload in prop::collection::vec(any::<u8>(), 0..300), port in any::<u16>()) {
        let mut server = server();
        let mut buffer = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        buffer[HEADROOM..HEADROOM + payload.len()].copy_from_slice(&payload);
        let peer: SocketAddr = "192.0.2.1:9".parse().unwrap();
        prop_assert!(server.handle_peer(port, peer, &mut buffer, payload.len(), Instant::now()).is_none());
    }

    #[test]
    fn channel_data_parser_never_reads_past_the_end(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Some((_, range)) = parse_channel_data(&bytes) {
            prop_assert!(range.end <= bytes.len());
        }
    }
}
