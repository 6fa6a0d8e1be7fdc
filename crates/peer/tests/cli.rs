//! The `duet-peer` binary as a script would use it: its exit status, its JSON
//! report, its error messages, and that it ends on its own within its timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Duet;

/// Waits for `child` at most `limit`, killing it (by its own handle) past that.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    panic!(
        "duet-peer did not end within {limit:?}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn peer(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_duet-peer"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_in_a_room_exits_2_with_a_report_at_the_timeout() {
    let duet = Duet::start().await;
    let url = duet.url();
    let cert = duet.cert();
    let child = peer(&[
        "--url",
        &url,
        "--room",
        "lonely",
        "--ca-file",
        cert.to_str().unwrap(),
        "--timeout",
        "1.5",
        "--quiet",
    ]);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || wait_bounded(child, Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "no_media");
    assert_eq!(report["room"], "lonely");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no media arrived within 1.5 s"));
}

#[test]
fn an_unreachable_server_exits_1_with_a_clear_message() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("wss://127.0.0.1:{port}/ws");
    let output = wait_bounded(
        peer(&[
            "--url",
            &url,
            "--room",
            "r",
            "--insecure",
            "--quiet",
            "--timeout",
            "5",
        ]),
        Duration::from_secs(15),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the signaling server"),
        "{stderr}"
    );
}

/// Runs the binary with `extra` after a URL nothing answers on: it must refuse
/// before connecting, with exit status 1 and `named` in its message.
fn assert_refused(extra: &[&str], named: &str) {
    let mut args = vec!["--url", "wss://127.0.0.1:1/ws", "--room", "r"];
    args.extend_from_slice(extra);
    let output = wait_bounded(peer(&args), Duration::from_secs(15));
    assert_eq!(
        output.status.code(),
        Some(1),
        "{extra:?}: usage errors are not 'no media'"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(named), "{extra:?}: {stderr}");
}

#[test]
fn bad_arguments_are_refused() {
    assert_refused(&["--timeout", "0"], "--timeout must be a positive number");
    assert_refused(&["--no-such-flag"], "--no-such-flag");
    assert_refused(&["--video", "/nonexistent.ivf"], "/nonexistent.ivf");
    // Flags that contradict each other are named.
    assert_refused(&["--stay", "--duration", "5"], "--duration");
    assert_refused(&["--codec", "h264", "--video", "clip.ivf"], "--video");
    assert_refused(&["--fps", "0"], "--fps");
    // A video file that is neither IVF nor H.264 is refused with the reason.
    let junk = std::env::temp_dir().join(format!("duet-peer-junk-{}.h264", std::process::id()));
    std::fs::write(&junk, b"\x00\x00\x01\x09\xf0 no picture in here").unwrap();
    assert_refused(
        &["--video", junk.to_str().unwrap()],
        "not an H.264 Annex B stream: no coded picture",
    );
    std::fs::remove_file(&junk).unwrap();
}
