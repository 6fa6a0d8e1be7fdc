//! The embedded relay against TURN clients nobody here wrote: coturn's
//! `turnutils_uclient` (UDP and TCP, static user and REST secret) with
//! `turnutils_peer` as the far end, and `turnutils_stunclient` for Binding.
//! `./scripts/test` installs them (Debian package `coturn`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::{EchoPeer, TestServer, coturn_tool};

const SECRET: &str = "interop-secret";

async fn relay() -> TestServer {
    TestServer::with(|args| {
        args.turn.turn_users = vec!["alice:wonderland".to_owned()];
        args.turn.turn_secret = Some(SECRET.to_owned());
    })
    .await
}

/// Runs uclient with two clients, 50 messages each, and checks all 100 came
/// back. `flags` go first: `-t` for TCP, `-c` for no RTCP allocation (without
/// it, uclient's default, each client reserves a port pair with EVEN-PORT R=1).
fn uclient(server: &TestServer, peer: &EchoPeer, flags: &[&str], auth: &[&str], size: &str) {
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let output = common::uclient_output(
        Command::new(coturn_tool("turnutils_uclient"))
            .args(flags)
            .args(["-n", "50", "-m", "2", "-z", "10", "-l", size])
            .args(auth)
            .args([
                "-p",
                &turn.port().to_string(),
                "-e",
                "127.0.0.1",
                "-r",
                &peer.port.to_string(),
            ])
            .arg("127.0.0.1"),
    );
    common::assert_uclient_relayed(&output, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_udp_with_a_static_user() {
    let server = relay().await;
    let peer = EchoPeer::start();
    tokio::task::block_in_place(|| {
        uclient(
            &server,
            &peer,
            &["-c"],
            &["-u", "alice", "-w", "wonderland"],
            "160",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tcp_with_a_static_user() {
    let server = relay().await;
    let peer = EchoPeer::start();
    tokio::task::block_in_place(|| {
        uclient(
            &server,
            &peer,
            &["-t", "-c"],
            &["-u", "alice", "-w", "wonderland"],
            "1200",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_udp_with_the_rest_secret() {
    let server = relay().await;
    let peer = EchoPeer::start();
    tokio::task::block_in_place(|| {
        uclient(
            &server,
            &peer,
            &["-c"],
            &["-u", "bench", "-W", SECRET],
            "1200",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tcp_with_the_rest_secret() {
    let server = relay().await;
    let peer = EchoPeer::start();
    tokio::task::block_in_place(|| {
        uclient(
            &server,
            &peer,
            &["-t", "-c"],
            &["-u", "bench", "-W", SECRET],
            "160",
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_client_to_client_through_two_allocations() {
    let server = relay().await;
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    for transport in [&[][..], &["-t"][..]] {
        let output = tokio::task::block_in_place(|| {
            Command::new(coturn_tool("turnutils_uclient"))
                .args(transport)
                .args(["-y", "-c", "-n", "50", "-m", "4", "-z", "10", "-l", "160"])
                .args(["-u", "alice", "-w", "wonderland"])
                .args(["-p", &turn.port().to_string(), "127.0.0.1"])
                .output()
                .unwrap()
        });
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{text}");
        assert!(
            text.contains("tot_send_bytes ~ 32000, tot_recv_bytes ~ 32000"),
            "{text}"
        );
        assert!(text.contains("Total lost packets 0 (0.000000%)"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_cannot_allocate() {
    let server = relay().await;
    let peer = EchoPeer::start();
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let output = tokio::task::block_in_place(|| {
        Command::new(coturn_tool("turnutils_uclient"))
            .args(["-c", "-n", "5", "-m", "1", "-u", "alice", "-w", "wrong"])
            .args([
                "-p",
                &turn.port().to_string(),
                "-e",
                "127.0.0.1",
                "-r",
                &peer.port.to_string(),
            ])
            .arg("127.0.0.1")
            .output()
            .unwrap()
    });
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("Cannot complete Allocation"));
    assert_eq!(
        server
            .server
            .as_ref()
            .unwrap()
            .relay_stats()
            .unwrap()
            .allocations,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stunclient_binding_gets_the_mapped_address() {
    let server = relay().await;
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let output = tokio::task::block_in_place(|| {
        Command::new(coturn_tool("turnutils_stunclient"))
            .args(["-p", &turn.port().to_string(), "127.0.0.1"])
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

#[tokio::test]
async fn joined_carries_stun_and_turn_with_per_session_credentials() {
    let server = relay().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let joined_a = a.join("ice").await;
    let joined_b = b.join("ice").await;
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let servers = joined_a["iceServers"].as_array().unwrap();
    assert_eq!(
        servers[0]["urls"][0],
        format!("stun:localhost:{}", turn.port())
    );
    assert_eq!(
        servers[1]["urls"],
        serde_json::json!([
            format!("turn:localhost:{}?transport=udp", turn.port()),
            format!("turn:localhost:{}?transport=tcp", server.addr.port())
        ])
    );
    let username = servers[1]["username"].as_str().unwrap();
    let credential = servers[1]["credential"].as_str().unwrap();
    assert_eq!(credential, duet_turn::rest_password(SECRET, username));
    let expiry: u64 = username.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now && expiry <= now + 6 * 3600 + 5);
    // Each session has its own credentials.
    assert_ne!(
        joined_b["iceServers"][1]["username"],
        servers[1]["username"]
    );
    // The page's static JavaScript holds no secret.
    let page = server
        .http()
        .get(server.url("/js/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tasks_end_with_the_server() {
    let mut server = relay().await;
    let peer = EchoPeer::start();
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let allocations = |server: &TestServer| {
        server
            .server
            .as_ref()
            .unwrap()
            .relay_stats()
            .unwrap()
            .allocations
    };
    // uclient killed in the middle of its run leaves its allocations behind,
    // each with a relay socket and the task that reads it.
    let mut child = Command::new(coturn_tool("turnutils_uclient"))
        .args(["-c", "-n", "5000", "-m", "4", "-z", "20", "-l", "100"])
        .args(["-u", "alice", "-w", "wonderland"])
        .args(["-p", &turn.port().to_string(), "-e", "127.0.0.1"])
        .args(["-r", &peer.port.to_string(), "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while allocations(&server) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "uclient did not allocate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(allocations(&server) >= 4);

    let metrics = tokio::runtime::Handle::current().metrics();
    server.stop().await;
    // Every task the server spawned has ended, the relay sockets' readers included.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while metrics.num_alive_tasks() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} tasks outlived the server",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_with_default_flags_over_udp_and_tcp() {
    let server = relay().await;
    let peer = EchoPeer::start();
    // No `-c`: for each client uclient asks an even relay port with the next
    // one reserved (EVEN-PORT R=1), then allocates that one for RTCP with the
    // RESERVATION-TOKEN it got back.
    for transport in [&[][..], &["-t"][..]] {
        tokio::task::block_in_place(|| {
            uclient(
                &server,
                &peer,
                transport,
                &["-u", "alice", "-w", "wonderland"],
                "120",
            );
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_gets_an_ipv6_relay_and_relays_to_an_ipv6_peer() {
    // The test server's IPv6 relays are on ::1 (ServeArgs::loopback).
    let server = relay().await;
    let peer = EchoPeer::on("::1");
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    for transport in [&[][..], &["-t"][..]] {
        let output = tokio::task::block_in_place(|| {
            common::uclient_output(
                Command::new(coturn_tool("turnutils_uclient"))
                    .args(transport)
                    .args(["-x", "-c", "-n", "50", "-m", "2", "-z", "10", "-l", "120"])
                    .args(["-u", "alice", "-w", "wonderland"])
                    .args(["-p", &turn.port().to_string(), "-e", "::1"])
                    .args(["-r", &peer.port.to_string(), "127.0.0.1"]),
            )
        });
        common::assert_uclient_relayed(&output, 100);
    }
}
