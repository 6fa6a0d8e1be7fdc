//! The `duet` binary as an operator meets it: start-up messages, one-sentence
//! errors, configuration files, and a prompt exit on SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn duet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duet"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("duet-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `duet serve` with `args` expecting it to fail at start-up.
fn fails(args: &[&str]) -> String {
    let output: Output = duet()
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Starts `duet serve` and returns it with its announced HTTPS address.
fn serve(data_dir: &std::path::Path) -> (Child, String, Vec<String>) {
    let mut child = duet()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut address = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("listening on https://") {
            address = Some(rest.to_owned());
        }
        let done = line.contains("fingerprint");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, address.expect("announced address"), lines)
}

#[test]
fn a_busy_port_is_one_clear_sentence() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let dir = temp_dir("busy");
    let stderr = fails(&["--listen", &address, "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(
        stderr.trim(),
        format!("duet: cannot listen on {address}: the address is already in use")
    );
}

#[test]
fn an_unreadable_key_file_is_named() {
    let dir = temp_dir("key");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let key = dir.join("missing-key.pem");
    let stderr = fails(&[
        "--listen",
        "127.0.0.1:0",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(stderr.contains("cert.pem"), "{stderr}");
    std::fs::write(&cert, "").unwrap();
    let generated = certificate_made_by_duet(&dir);
    let stderr = fails(&[
        "--listen",
        "127.0.0.1:0",
        "--cert",
        generated.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(stderr.contains("missing-key.pem"), "{stderr}");
}

/// A valid certificate made by a first run of duet itself.
fn certificate_made_by_duet(dir: &std::path::Path) -> PathBuf {
    let data = dir.join("data");
    let (mut child, _, _) = serve(&data);
    child.kill().unwrap();
    child.wait().unwrap();
    data.join("cert.pem")
}

#[test]
fn unknown_keys_in_the_config_file_are_rejected() {
    let dir = temp_dir("config");
    let file = dir.join("duet.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nmax_romos = 3\n").unwrap();
    let stderr = fails(&["--config", file.to_str().unwrap()]);
    assert!(stderr.contains("duet.toml"), "{stderr}");
    assert!(stderr.contains("max_romos"), "{stderr}");
}

#[test]
fn environment_variables_configure_like_flags() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let dir = temp_dir("env");
    let output = duet()
        .arg("serve")
        .env("DUET_LISTEN", &address)
        .env("DUET_DATA_DIR", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
}

#[test]
fn it_announces_the_url_and_fingerprint_and_stops_on_sigterm_within_5_seconds() {
    let dir = temp_dir("sigterm");
    let (mut child, address, lines) = serve(&dir);
    let text = lines.join("\n");
    assert!(text.contains("/?room="), "{text}");
    assert!(text.contains("(self-signed, made now)"), "{text}");
    let fingerprint = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("SHA-256 fingerprint "))
        .unwrap();
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    assert!(address.starts_with("127.0.0.1:"));

    terminate_and_wait(&mut child, Duration::from_secs(5));

    // The second run keeps the certificate.
    let (mut again, _, lines) = serve(&dir);
    let text = lines.join("\n");
    assert!(text.contains("(self-signed, kept)"), "{text}");
    assert!(text.contains(fingerprint), "{text}");
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn the_relay_alone_drains_on_sigterm_and_stops_at_once_with_no_allocation_left() {
    let dir = temp_dir("turn-drain");
    let mut child = duet()
        .args([
            "turn",
            "--turn-listen",
            "127.0.0.1:0",
            "--drain-timeout-secs",
            "20",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("Duet relay is running"), "{line}");
    // No relayed call: the drain ends long before its 20 s deadline.
    terminate_and_wait(&mut child, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends SIGTERM to `child` and asserts it exits successfully within `within`.
fn terminate_and_wait(child: &mut Child, within: Duration) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(started.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
