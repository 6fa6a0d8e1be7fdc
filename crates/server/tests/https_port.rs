//! The HTTPS port serves three protocols: HTTPS (the page, the WebSocket),
//! TURN over TCP and TURN over TLS, told apart by their first bytes; and
//! `--turns-listen` serves TURN over TLS alone. Checked from outside over real
//! sockets, with coturn's `turnutils_uclient` as the TURN client (Debian
//! package `coturn`, installed by `./scripts/test`), and with clients that
//! misbehave: each is closed within its stated deadline and leaves nothing behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{EchoPeer, TestServer, coturn_tool};
use duet_server::front::{HANDSHAKE_DEADLINE, SNIFF_DEADLINE};
use duet_server::turn_stream::FIRST_MESSAGE_DEADLINE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "https-port-secret";

async fn server_with(adjust: impl FnOnce(&mut duet_server::config::ServeArgs)) -> TestServer {
    TestServer::with(|args| {
        args.turn.turn_secret = Some(SECRET.to_owned());
        adjust(args);
    })
    .await
}

/// uclient with two clients, 50 messages each, over TCP (`-t`) or TLS (`-t -S`)
/// to `port`; all 100 must come back from the peer.
fn uclient_relays_without_loss(port: u16, peer: &EchoPeer, tls: bool) {
    let mut command = Command::new(coturn_tool("turnutils_uclient"));
    command.arg("-t");
    if tls {
        command.arg("-S");
    }
    command
        .args(["-c", "-n", "50", "-m", "2", "-z", "10", "-l", "600"])
        .args(["-u", "uclient", "-W", SECRET])
        .args(["-p", &port.to_string(), "-e", "127.0.0.1"])
        .args(["-r", &peer.port.to_string(), "127.0.0.1"]);
    let output = common::uclient_output(&mut command);
    common::assert_uclient_relayed(&output, 100);
}

async fn page_is_served(server: &TestServer) {
    let response = server.http().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("<html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tcp_and_tls_on_the_https_port_while_it_serves_the_page() {
    let server = server_with(|_| {}).await;
    let peer = EchoPeer::start();
    let port = server.addr.port();
    page_is_served(&server).await;
    for tls in [false, true] {
        tokio::task::block_in_place(|| uclient_relays_without_loss(port, &peer, tls));
        page_is_served(&server).await;
    }
    // The WebSocket still works on the same port.
    let mut client = server.connect().await;
    client.join("same-port").await;
    let relay = server.server.as_ref().unwrap().state.relay.clone().unwrap();
    wait_until(|| relay.stream_connections() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turns_port_relays_over_tls_and_closes_http() {
    let server = server_with(|args| {
        args.options.turns_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let turns = server.server.as_ref().unwrap().turns_addr.unwrap();
    let peer = EchoPeer::start();
    tokio::task::block_in_place(|| uclient_relays_without_loss(turns.port(), &peer, true));
    // HTTPS on the TURN-only port: the handshake succeeds, the request gets no answer.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let started = Instant::now();
    let result = http
        .get(format!("https://127.0.0.1:{}/", turns.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(result.is_err(), "HTTP was answered on the TURN-only port");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not closed at once"
    );
    // A plain STUN message (no TLS) is not served there either.
    let mut stream = TcpStream::connect(turns).await.unwrap();
    stream.write_all(&stun_header(0)).await.unwrap();
    assert_closed_within(&mut stream, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn plain_http_on_the_https_port_is_redirected() {
    let server = server_with(|_| {}).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /?room=x HTTP/1.1\r\nHost: localhost:8443\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer.contains(&format!("https://localhost:{}/?room=x", server.addr.port())),
        "{answer}"
    );
}

#[tokio::test]
async fn joined_offers_turn_over_tcp_on_the_https_port_and_no_turns_when_self_signed() {
    let server = server_with(|_| {}).await;
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap().port();
    let https = server.addr.port();
    let mut client = server.connect().await;
    let joined = client.join("urls").await;
    assert_eq!(
        joined["iceServers"][0]["urls"],
        serde_json::json!([format!("stun:localhost:{turn}")])
    );
    assert_eq!(
        joined["iceServers"][1]["urls"],
        serde_json::json!([
            format!("turn:localhost:{turn}?transport=udp"),
            format!("turn:localhost:{https}?transport=tcp"),
        ])
    );
}

#[tokio::test]
async fn joined_offers_turns_when_the_certificate_is_given() {
    let dir = std::env::temp_dir().join(format!("duet-given-cert-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let server = server_with(|args| {
        args.options.cert = Some(dir.join("cert.pem"));
        args.options.key = Some(dir.join("key.pem"));
        args.state.data_dir = Some(dir.clone());
    })
    .await;
    assert!(
        server
            .server
            .as_ref()
            .unwrap()
            .identity
            .trusted
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let https = server.addr.port();
    let mut client = server.connect().await;
    let joined = client.join("urls").await;
    let urls = joined["iceServers"][1]["urls"].as_array().unwrap().clone();
    assert_eq!(urls.len(), 3, "{urls:?}");
    assert_eq!(urls[1], format!("turn:localhost:{https}?transport=tcp"));
    assert_eq!(urls[2], format!("turns:localhost:{https}?transport=tcp"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clients that start and go silent, each closed within its deadline: one
/// byte on the HTTPS port, a TLS ClientHello and nothing more, a STUN header
/// announcing 64 KiB and nothing more (on the HTTPS port and on the relay's
/// own TCP port). Run side by side, so the test takes one deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_clients_are_closed_within_their_deadlines() {
    let server = server_with(|_| {}).await;
    let https = server.addr;
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let slack = Duration::from_secs(2);

    let one_byte = async {
        let mut stream = TcpStream::connect(https).await.unwrap();
        stream.write_all(&[0x00]).await.unwrap();
        assert_closed_after(&mut stream, SNIFF_DEADLINE, slack).await;
    };
    let hello_only = async {
        let mut stream = TcpStream::connect(https).await.unwrap();
        stream.write_all(&client_hello()).await.unwrap();
        assert_closed_after(&mut stream, HANDSHAKE_DEADLINE, slack).await;
    };
    let big_header_https = async {
        let mut stream = TcpStream::connect(https).await.unwrap();
        stream.write_all(&stun_header(0xFFFC)).await.unwrap();
        stream.write_all(&[0u8; 30_000]).await.unwrap();
        assert_closed_after(&mut stream, FIRST_MESSAGE_DEADLINE, slack).await;
    };
    let big_header_turn = async {
        let mut stream = TcpStream::connect(turn).await.unwrap();
        stream.write_all(&stun_header(0xFFFC)).await.unwrap();
        assert_closed_after(&mut stream, FIRST_MESSAGE_DEADLINE, slack).await;
    };
    let not_a_protocol = async {
        let mut stream = TcpStream::connect(https).await.unwrap();
        stream.write_all(&[0xFF; 8]).await.unwrap();
        assert_closed_within(&mut stream, slack).await;
    };
    tokio::join!(
        one_byte,
        hello_only,
        big_header_https,
        big_header_turn,
        not_a_protocol
    );

    let running = server.server.as_ref().unwrap();
    let relay = running.state.relay.clone().unwrap();
    wait_until(|| running.unsorted_connections() == 0 && relay.stream_connections() == 0).await;
    // The port still serves.
    page_is_served(&server).await;
}

/// A STUN Binding request header announcing `length` bytes of attributes.
fn stun_header(length: u16) -> Vec<u8> {
    let mut header = vec![0x00, 0x01];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    header.extend_from_slice(&[7; 12]);
    header
}

/// The bytes of a real TLS ClientHello for `localhost`.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut bytes = Vec::new();
    connection.write_tls(&mut bytes).unwrap();
    assert_eq!(bytes.first(), Some(&0x16));
    bytes
}

/// The server closes `stream` no sooner than `deadline` (less a little) and
/// no later than `deadline + slack`.
async fn assert_closed_after(stream: &mut TcpStream, deadline: Duration, slack: Duration) {
    let started = Instant::now();
    assert_closed_within(stream, deadline + slack).await;
    let took = started.elapsed();
    assert!(
        took + Duration::from_millis(500) >= deadline,
        "closed after {took:?}, before the {deadline:?} deadline"
    );
}

async fn assert_closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {limit:?}");
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never became true"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `[::]` listens dual-stack: the page over IPv4 and IPv6, and TURN over TCP
/// from an IPv4 client sees its IPv4 address (not `::ffff:…`) in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unspecified_ipv6_address_serves_ipv4_and_ipv6() {
    let server = server_with(|args| {
        args.options.listen = Some("[::]:0".parse().unwrap());
    })
    .await;
    let port = server.addr.port();
    for ip in ["127.0.0.1", "[::1]"] {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let response = http
            .get(format!("https://{ip}:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "over {ip}");
    }
    // A Binding request over TCP from 127.0.0.1: XOR-MAPPED-ADDRESS must be IPv4.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&stun_header(0)).await.unwrap();
    let mut answer = vec![0u8; 20];
    stream.read_exact(&mut answer).await.unwrap();
    let length = usize::from(u16::from_be_bytes([answer[2], answer[3]]));
    answer.resize(20 + length, 0);
    stream.read_exact(&mut answer[20..]).await.unwrap();
    assert_eq!(&answer[..2], &[0x01, 0x01], "a Binding success answer");
    let mut attributes = &answer[20..];
    let mut family = None;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let size = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        if kind == 0x0020 {
            family = Some(attributes[5]);
        }
        attributes = &attributes[(4 + size.div_ceil(4) * 4).min(attributes.len())..];
    }
    assert_eq!(family, Some(0x01), "XOR-MAPPED-ADDRESS is IPv4: {answer:?}");
}
