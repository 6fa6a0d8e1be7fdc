//! A TURN-over-TCP flood from one address against the real `duet` binary (a
//! child process, so its memory and sockets can be read from /proc): 10,000
//! connections from 127.0.0.2 to the HTTPS port, each sending a piece of a
//! STUN message and then nothing (10 bytes of a header, or a header announcing
//! 65,532 bytes followed by 30 kB). Meanwhile a client from 127.0.0.3 (coturn's
//! `turnutils_uclient`) must allocate and relay without loss; the server's
//! sockets stay within the per-address caps, its memory within a stated
//! bound, and once the deadlines have passed nothing of the flood is left.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ChildServer, EchoPeer, coturn_tool};
use duet_server::front::MAX_UNSORTED_PER_ADDRESS;
use duet_server::turn_stream::{FIRST_MESSAGE_DEADLINE, MAX_STREAMS_PER_ADDRESS};

const SECRET: &str = "flood-secret";
const FLOOD: usize = 10_000;
/// Flood connections kept open on this side (well above the per-address caps).
const HELD: usize = 1_000;
/// The most the server's resident memory may grow under the flood.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// One flood connection from 127.0.0.2: a piece of a STUN message, then silence.
fn flood_connection(port: u16, index: usize) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .ok()?;
    socket
        .connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)).into(),
            Duration::from_secs(1),
        )
        .ok()?;
    let mut stream: TcpStream = socket.into();
    // An Allocate request header: type, length, magic cookie, transaction id.
    let mut header = vec![0x00, 0x03, 0xFF, 0xFC, 0x21, 0x12, 0xA4, 0x42];
    header.extend_from_slice(&rand::random::<[u8; 12]>());
    let _ = if index.is_multiple_of(2) {
        stream.write_all(&header[..10])
    } else {
        stream
            .write_all(&header)
            .and_then(|()| stream.write_all(&[0u8; 30_000]))
    };
    Some(stream)
}

/// coturn's client from 127.0.0.3, over TCP to the HTTPS port: 2 clients × 30 messages.
fn legitimate_client_relays(port: u16, peer: &EchoPeer) {
    let output = common::uclient_output(
        Command::new(coturn_tool("turnutils_uclient"))
            .args(["-t", "-c", "-n", "30", "-m", "2", "-z", "10", "-l", "400"])
            .args(["-u", "legit", "-W", SECRET, "-L", "127.0.0.3"])
            .args(["-p", &port.to_string(), "-e", "127.0.0.1"])
            .args(["-r", &peer.port.to_string(), "127.0.0.1"]),
    );
    common::assert_uclient_relayed(&output, 60);
}

#[test]
fn a_tcp_flood_from_one_address_on_the_https_port_leaves_other_clients_served() {
    let server = ChildServer::start(&["--turn-secret", SECRET]);
    flood(&server, server.https);
}

#[test]
fn a_tcp_flood_from_one_address_on_the_relay_port_leaves_other_clients_served() {
    let server = ChildServer::start(&["--turn-secret", SECRET]);
    flood(&server, server.turn);
}

/// Floods `port` of `server` and checks the bounds stated at the top.
fn flood(server: &ChildServer, port: u16) {
    // The flood keeps its first connections open on this side (the server
    // holds at most its per-address caps of them); later ones, which the
    // server refuses at once, are let go after their bytes are sent.
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    rlimit::Resource::NOFILE.set(hard, hard).unwrap();

    let peer = EchoPeer::start();
    let baseline_rss = server.rss_kib();
    let baseline_sockets = server.open_sockets();

    let started = Instant::now();
    let mut held = Vec::new();
    let mut peak_sockets = 0;
    let mut peak_rss = baseline_rss;
    let mut legit_checked = false;
    for index in 0..FLOOD {
        if let Some(stream) = flood_connection(port, index)
            && held.len() < HELD
        {
            held.push(stream);
        }
        if (index + 1).is_multiple_of(500) {
            peak_sockets = peak_sockets.max(server.open_sockets());
            peak_rss = peak_rss.max(server.rss_kib());
        }
        if index == FLOOD / 2 {
            // In the middle of the flood, with every per-address slot taken.
            legitimate_client_relays(port, &peer);
            legit_checked = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood took too long"
        );
    }
    assert!(legit_checked);
    legitimate_client_relays(port, &peer);
    let flood_took = started.elapsed();

    let cap = MAX_STREAMS_PER_ADDRESS + MAX_UNSORTED_PER_ADDRESS;
    println!(
        "port {port}: flood of {FLOOD} connections in {flood_took:?}; server sockets: {baseline_sockets} before, \
         {peak_sockets} at most during; RSS {baseline_rss} KiB before, {peak_rss} KiB at most during"
    );
    assert!(
        peak_sockets <= baseline_sockets + cap + 16,
        "the server held {peak_sockets} sockets (baseline {baseline_sockets}, per-address caps {cap})"
    );
    assert!(
        peak_rss - baseline_rss <= RSS_GROWTH_BOUND_KIB,
        "RSS grew by {} KiB",
        peak_rss - baseline_rss
    );

    // The flood's connections are still open on this side, silent; the
    // server drops each at its first-message deadline.
    let deadline = Instant::now() + FIRST_MESSAGE_DEADLINE + Duration::from_secs(10);
    loop {
        let sockets = server.open_sockets();
        if sockets <= baseline_sockets + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sockets} sockets still open (baseline {baseline_sockets}) after the deadlines"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(held);
}
