//! Draining (what SIGTERM does): the listener closes, every WebSocket is closed
//! with 1012 so its client comes back with its resume token, nobody is told
//! `bye`, new relay allocations are refused, and the existing ones keep the
//! server up until they end or the drain deadline passes. Over real sockets,
//! with coturn's `turnutils_uclient` as the relay's client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{EchoPeer, Event, TestServer, coturn_tool, pair};

const SECRET: &str = "drain-secret";

/// Every event up to the close: the close code, and whether a `bye` came first.
async fn close_of(client: &mut common::Client) -> (Option<u16>, bool) {
    let mut bye = false;
    loop {
        match client.next_event(Duration::from_secs(2)).await {
            Some(Event::Closed(code, _)) => return (code, bye),
            Some(Event::Ended) => return (None, bye),
            Some(Event::Json(value)) => bye |= value["type"] == "bye",
            None => panic!("not closed within 2 s of the drain"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_websockets_with_1012_without_bye_and_stops_when_empty() {
    let mut server = TestServer::start().await;
    let (mut a, mut b, _, _) = pair(&server, "drain").await;
    let addr = server.addr;

    let running = server.server.take().unwrap();
    let drain = tokio::spawn(running.drain(Duration::from_secs(10)));
    for client in [&mut a, &mut b] {
        let (code, bye) = close_of(client).await;
        assert_eq!(code, Some(1012));
        assert!(!bye, "a member was told `bye` although nobody left");
    }
    // With no relayed call left, the drain ends at once, not at its deadline.
    let drained = tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .expect("the drain did not end when everyone had gone")
        .unwrap();
    assert_eq!(drained.connections_left, 0);
    assert_eq!(drained.allocations_left, 0);
    assert!(drained.took < Duration::from_secs(2), "{drained:?}");
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_calls_keep_a_draining_server_up_until_its_deadline_and_new_ones_are_refused() {
    let mut server = TestServer::with(|args| {
        args.turn.turn_secret = Some(SECRET.to_owned());
    })
    .await;
    let peer = EchoPeer::start();
    let turn = server.server.as_ref().unwrap().turn_addr.unwrap();
    let uclient = |messages: &str| {
        let mut command = Command::new(coturn_tool("turnutils_uclient"));
        command
            .args(["-c", "-n", messages, "-m", "1", "-z", "20", "-l", "100"])
            .args(["-u", "drain", "-W", SECRET])
            .args(["-p", &turn.port().to_string(), "-e", "127.0.0.1"])
            .args(["-r", &peer.port.to_string(), "127.0.0.1"]);
        command
    };
    // A relayed "call" in progress: uclient sending for a minute.
    let mut call = uclient("3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let relay = server.server.as_ref().unwrap().state.relay.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.stats().allocations == 0 {
        assert!(Instant::now() < deadline, "uclient did not allocate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait until it relays.
    while relay.stats().to_peer_packets < 10 {
        assert!(
            Instant::now() < deadline,
            "uclient did not relay: {:?}",
            relay.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let relayed_before = relay.stats().to_peer_packets;

    let running = server.server.take().unwrap();
    let started = Instant::now();
    let drain = tokio::spawn(running.drain(Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new allocation is refused (uclient gives up), the running call goes on.
    let refused = tokio::task::block_in_place(|| uclient("5").output().unwrap());
    let text = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        !text.contains("tot_recv_msgs=5"),
        "a new allocation was served during the drain:\n{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        relay.stats().to_peer_packets > relayed_before,
        "the relayed call stopped when the drain began"
    );

    let drained = drain.await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3), "{drained:?}");
    assert!(drained.allocations_left >= 1, "{drained:?}");
    let _ = call.kill();
    let _ = call.wait();
}
