//! Relays on other hosts (`duet serve --turn-server`): two real `duet turn`
//! processes sharing a secret, a signaling server without a relay of its own.
//! Callers are spread over the relays, the one with fewer allocations (as its
//! `/metrics` says) is preferred, a relay that goes away is left out, and the
//! credentials a caller gets work on the relay it was given (coturn's
//! turnutils_uclient relays through it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{EchoPeer, TestServer, coturn_tool, free_port};
use serde_json::Value;

const SECRET: &str = "relay-pool-test-secret";

/// A `duet turn` child process with its metrics on plain HTTP.
struct Relay {
    child: Child,
    port: u16,
    metrics: u16,
    dir: std::path::PathBuf,
}

impl Relay {
    fn start() -> Self {
        let port = free_port(true);
        let metrics = free_port(false);
        let dir = std::env::temp_dir().join(format!("duet-relay-{}", rand::random::<u64>()));
        let child = Command::new(env!("CARGO_BIN_EXE_duet"))
            .args(["turn", "--turn-listen", &format!("127.0.0.1:{port}")])
            .args([
                "--turn-secret",
                SECRET,
                "--allow-peer",
                "127.0.0.0/8",
                "--log",
                "error",
            ])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", metrics)).is_err() {
            assert!(Instant::now() < deadline, "duet turn did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            metrics,
            dir,
        }
    }

    fn spec(&self) -> String {
        format!(
            "127.0.0.1:{}@http://127.0.0.1:{}/metrics",
            self.port, self.metrics
        )
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The relay port in a `joined` message, and its TURN credentials.
fn relay_of(joined: &Value) -> (u16, String, String) {
    let turn = joined["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|server| server["username"].is_string())
        .unwrap_or_else(|| panic!("no TURN entry in {joined}"));
    let url = turn["urls"][0].as_str().unwrap();
    let port = url
        .trim_start_matches("turn:127.0.0.1:")
        .split('?')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (
        port,
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
    )
}

/// Joins `count` fresh rooms and counts the relay each caller was given.
async fn spread(server: &TestServer, count: usize) -> BTreeMap<u16, usize> {
    let mut seen = BTreeMap::new();
    for n in 0..count {
        let mut client = server.connect().await;
        let joined = client
            .join(&format!("pool-{}-{n}", rand::random::<u32>()))
            .await;
        *seen.entry(relay_of(&joined).0).or_insert(0) += 1;
        client.close(1000).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_spread_over_relays_on_other_hosts_by_their_load() {
    let mut a = Relay::start();
    let b = Relay::start();
    let (spec_a, spec_b) = (a.spec(), b.spec());
    let server = TestServer::with(|args| {
        args.turn.no_turn = true;
        args.turn.turn_secret = Some(SECRET.to_owned());
        args.options.turn_servers = vec![spec_a, spec_b];
    })
    .await;
    // Both relays' metrics answer within a poll or two; then, both idle, callers alternate.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let seen = spread(&server, 4).await;
    assert_eq!(seen.get(&a.port), Some(&2), "{seen:?}");
    assert_eq!(seen.get(&b.port), Some(&2), "{seen:?}");

    // The credentials work on the relay they were given for: 100 datagrams
    // through it to an echo peer and back, none lost. Meanwhile that relay holds
    // allocations, so new callers go to B.
    let mut client = server.connect().await;
    let joined = client.join("pool-uclient").await;
    let (port, user, password) = relay_of(&joined);
    let peer = EchoPeer::start();
    let target = if port == a.port { a.port } else { b.port };
    let load = std::thread::spawn({
        let (user, password) = (user.clone(), password.clone());
        let peer = peer.port;
        move || {
            common::uclient_output(
                Command::new(coturn_tool("turnutils_uclient"))
                    .args(["-n", "250", "-m", "4", "-z", "20", "-l", "160"])
                    .args(["-u", &user, "-w", &password])
                    .args([
                        "-p",
                        &target.to_string(),
                        "-e",
                        "127.0.0.1",
                        "-r",
                        &peer.to_string(),
                    ])
                    .arg("127.0.0.1"),
            )
        }
    });
    // While its allocations live (several seconds), every caller gets the other relay.
    let other = if target == a.port { b.port } else { a.port };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut preferred = false;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = spread(&server, 3).await;
        if seen.get(&other) == Some(&3) {
            preferred = true;
            break;
        }
    }
    let output = tokio::task::spawn_blocking(move || load.join().unwrap())
        .await
        .unwrap();
    common::assert_uclient_relayed(&output, 1000);
    assert!(preferred, "callers kept being given the loaded relay");
    client.close(1000).await;

    // A relay that goes away is left out once its metrics stop answering.
    a.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let seen = spread(&server, 4).await;
    assert_eq!(seen.get(&b.port), Some(&4), "{seen:?}");
}
