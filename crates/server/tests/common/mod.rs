//! Test support: a real server on port 0 and a real WebSocket client over TLS
//! that trusts the server's generated certificate (and nothing else).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duet_server::config::{FileConfig, ServeArgs, ServeConfig};
use duet_server::server::{RunningServer, start};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen promptly.
pub const PROMPT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub data_dir: PathBuf,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// Starts a server on 127.0.0.1:0 after `adjust` edits the flags.
    pub async fn with(adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        duet_server::install_crypto_provider();
        let data_dir = std::env::temp_dir().join(format!(
            "duet-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut args = ServeArgs::loopback(data_dir.clone());
        adjust(&mut args);
        let config = ServeConfig::merge(args, FileConfig::default()).unwrap();
        let server = start(config).await.unwrap();
        let addr = server.https_addr;
        let tls = client_tls(&server.identity.cert_path);
        Self {
            server: Some(server),
            addr,
            tls,
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn ws_url(&self) -> String {
        format!("wss://localhost:{}/ws", self.addr.port())
    }

    /// Opens a signaling connection with no `Origin` (as a native client).
    pub async fn connect(&self) -> Client {
        self.try_connect(None).await.expect("WebSocket connection")
    }

    pub async fn try_connect(
        &self,
        origin: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        connect_ws(self.addr, &self.tls, origin).await
    }

    /// A reqwest client that trusts this server's certificate.
    pub fn http(&self) -> reqwest::Client {
        let pem = std::fs::read(self.data_dir.join("cert.pem")).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .resolve("localhost", self.addr)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn client_tls(cert_path: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One signaling client.
pub struct Client {
    pub socket: Socket,
}

/// What a read produced.
#[derive(Debug, PartialEq)]
pub enum Event {
    Json(Value),
    Closed(Option<u16>, String),
    Ended,
}

impl Client {
    pub async fn send(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(Message::Binary(Bytes::from(bytes)))
            .await
            .expect("send");
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send_json(serde_json::json!({"type":"join","room":room}))
            .await;
        self.recv().await
    }

    /// The next JSON message, within [`PROMPT`]; panics on anything else.
    pub async fn recv(&mut self) -> Value {
        match self.next_event(PROMPT).await {
            Some(Event::Json(value)) => value,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next event within `wait`, or None if nothing came.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            return Some(match next {
                Some(Ok(Message::Text(text))) => {
                    Event::Json(serde_json::from_str(text.as_str()).expect("server sent JSON"))
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(
                    frame.as_ref().map(|frame| u16::from(frame.code)),
                    frame
                        .map(|frame| frame.reason.to_string())
                        .unwrap_or_default(),
                ),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => panic!("the server sent a binary frame"),
                Some(Err(_)) | None => Event::Ended,
            });
        }
    }

    /// Asserts nothing but pings arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(event) = self.next_event(wait).await {
            panic!("expected nothing, got {event:?}");
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        loop {
            match self.next_event(wait).await {
                Some(Event::Closed(code, _)) => return code,
                Some(Event::Ended) => return None,
                Some(Event::Json(_)) => continue,
                None => panic!("the server did not close the connection within {wait:?}"),
            }
        }
    }

    pub async fn close(mut self, code: u16) {
        let _ = self
            .socket
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .await;
        // Wait for the server's reply so the close is complete.
        let _ = tokio::time::timeout(PROMPT, async {
            while self.socket.next().await.is_some() {}
        })
        .await;
    }

    /// Drops the TCP connection without a close frame, as a broken network would.
    pub fn drop_abruptly(self) {
        drop(self.socket);
    }
}

/// Two clients that have joined `room`; returns (first, second, first id, second id).
pub async fn pair(server: &TestServer, room: &str) -> (Client, Client, Value, Value) {
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let joined_a = a.join(room).await;
    assert_eq!(joined_a["type"], "joined");
    let joined_b = b.join(room).await;
    assert_eq!(joined_b["type"], "joined");
    let other = a.recv().await;
    assert_eq!(other["type"], "other_joined");
    (a, b, joined_a, joined_b)
}

/// The path of a coturn tool; fails with what to install when it is missing.
pub fn coturn_tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's coturn package (./scripts/test does)"
    );
    path
}

/// A `turnutils_peer` UDP echo on a free loopback port, stopped on drop.
pub struct EchoPeer {
    child: std::process::Child,
    pub port: u16,
}

impl EchoPeer {
    pub fn start() -> Self {
        Self::on("127.0.0.1")
    }

    /// An echo peer on `address` (e.g. `::1`).
    pub fn on(address: &str) -> Self {
        let port = std::net::UdpSocket::bind((address, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(coturn_tool("turnutils_peer"))
            .args(["-p", &port.to_string(), "-L", address])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Self { child, port }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signaling WebSocket to `addr` (as `localhost`), trusting what `tls` trusts.
async fn connect_ws(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    origin: Option<&str>,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("wss://localhost:{}/ws", addr.port()).into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    let stream = TcpStream::connect(addr).await?;
    let (socket, _) = tokio_tungstenite::client_async_tls_with_config(
        request,
        stream,
        None,
        Some(Connector::Rustls(Arc::clone(tls))),
    )
    .await?;
    Ok(Client { socket })
}

/// A free TCP port of 127.0.0.1 (free for UDP too when `udp`).
pub fn free_port(udp: bool) -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if !udp || std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback");
}

/// The real `duet` binary as a child process on loopback (HTTPS and the relay
/// on free ports), so a test can read its memory and sockets from /proc.
/// Killed (by its PID) when dropped.
pub struct ChildServer {
    child: std::process::Child,
    pub https: u16,
    /// The relay's own port (UDP and TCP).
    pub turn: u16,
    dir: PathBuf,
}

impl ChildServer {
    /// Starts `duet serve` with `extra` flags and waits until it accepts connections.
    pub fn start(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("duet-child-{}", rand::random::<u64>()));
        let https = free_port(false);
        let turn = loop {
            let port = free_port(true);
            if port != https {
                break port;
            }
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_duet"))
            .args(["serve", "--listen", &format!("127.0.0.1:{https}")])
            .args(["--turn-listen", &format!("127.0.0.1:{turn}")])
            .args(["--allow-peer", "127.0.0.0/8", "--log", "error"])
            .arg("--data-dir")
            .arg(&dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // The port listens before the certificate is made: wait for both.
        while std::net::TcpStream::connect(("127.0.0.1", https)).is_err()
            || !dir.join("cert.pem").exists()
        {
            assert!(std::time::Instant::now() < deadline, "duet did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            https,
            turn,
            dir,
        }
    }

    /// A signaling WebSocket that trusts the child's generated certificate.
    pub async fn connect(&self) -> Client {
        let tls = client_tls(&self.dir.join("cert.pem"));
        connect_ws(SocketAddr::from(([127, 0, 0, 1], self.https)), &tls, None)
            .await
            .expect("WebSocket connection")
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sockets the server process holds.
    pub fn open_sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count()
    }
}

impl ChildServer {
    /// Sends a signal (`TERM`, `KILL`) to the server process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to end; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `turnutils_uclient` and returns its output, running it again (at
/// most twice more) only when it stopped on one known quirk of its own:
/// each client binds a random channel number to the peer's port + 1, then
/// another random number to the peer itself, and 1 time in 16,384 the
/// second number is the first. RFC 8656 §12 requires the server to refuse
/// that bind (400), and uclient gives up. Any other failure is returned as is.
pub fn uclient_output(command: &mut std::process::Command) -> std::process::Output {
    const COLLISION: &str = "channel bind: error 400 (Channel or peer already bound)";
    let mut attempts = 0;
    loop {
        let output = command.output().expect("turnutils_uclient runs");
        attempts += 1;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        if output.status.success() || attempts == 3 || !text.contains(COLLISION) {
            return output;
        }
        eprintln!("uclient picked the same random channel number twice; running it again");
    }
}

/// Asserts that a `turnutils_uclient` run succeeded and every one of its
/// `messages` came back, none lost.
pub fn assert_uclient_relayed(output: &std::process::Output, messages: usize) {
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "uclient failed:\n{text}");
    assert!(
        text.contains(&format!(
            "tot_send_msgs={messages}, tot_recv_msgs={messages}"
        )),
        "{text}"
    );
    assert!(text.contains("Total lost packets 0 (0.000000%)"), "{text}");
}

/// A real `redis-server` on a free loopback port, without persistence
/// (a restart loses everything, as the cluster must survive). Killed (by its
/// PID) when dropped.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    /// With TLS only: the directory of its certificate (`ca.pem`, `leaf.pem`, `key.pem`).
    pub tls: Option<PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            child: None,
            port: free_port(false),
            tls: None,
        };
        server.launch();
        server
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 from a
    /// CA of its own (made with the openssl tool); the CA is `ca_path()`.
    pub fn start_tls() -> Self {
        let dir = std::env::temp_dir().join(format!("duet-redis-tls-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("the openssl tool");
            assert!(status.success(), "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=Duet test Redis CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "key.pem",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        let mut server = Self {
            child: None,
            port: free_port(false),
            tls: Some(dir),
        };
        server.launch();
        server
    }

    pub fn ca_path(&self) -> PathBuf {
        self.tls.as_ref().unwrap().join("ca.pem")
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again, after [`RedisServer::kill`]) on its port, empty.
    pub fn launch(&mut self) {
        let path = "/usr/bin/redis-server";
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: install Debian's redis-server package (./scripts/test does)"
        );
        let mut command = std::process::Command::new(path);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(dir) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join("leaf.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.pem"))
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> String {
        self.child.as_ref().unwrap().id().to_string()
    }

    /// Sends a signal (`STOP`, `CONT`) to the server process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the server (its data is gone) and starts a new one on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.launch();
    }

    /// Kills the server; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server must be woken to die.
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        if let Some(dir) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
