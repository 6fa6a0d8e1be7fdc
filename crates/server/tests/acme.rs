//! `--acme` against a real ACME CA: Debian's `pebble` (installed by
//! `./scripts/test`), with `pebble-challtestsrv` as its DNS server so that the
//! test name resolves to loopback. Pebble validates TLS-ALPN-01 on Duet's
//! HTTPS port, issues a certificate valid for 30 seconds, and Duet renews it
//! at two thirds of that lifetime while serving the old one. All on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::TestServer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

const DOMAIN: &str = "call.duet.test";
/// The lifetime pebble gives its certificates here; Duet renews after 2/3 of it.
const VALIDITY_SECS: u64 = 30;

/// A child process killed (by its PID) when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback (also free for UDP when `udp`).
fn free_port(udp: bool) -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if !udp || UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback");
}

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install Debian's `pebble` package (./scripts/test does)"
    );
    path
}

/// pebble and its DNS server, with pebble's own HTTPS signed by a CA of the test.
struct Pebble {
    _dns: Process,
    _pebble: Process,
    directory: String,
    /// The CA of pebble's HTTPS (for `--acme-ca`).
    listener_ca: PathBuf,
    management: SocketAddr,
    http: reqwest::Client,
}

impl Pebble {
    async fn start(dir: &Path, tls_alpn_port: u16) -> Self {
        // The CA and certificate pebble serves its directory with.
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "duet acme test listener CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        let listener_ca = dir.join("listener-ca.pem");
        std::fs::write(&listener_ca, ca.pem()).unwrap();
        std::fs::write(dir.join("listener-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("listener-key.pem"), leaf_key.serialize_pem()).unwrap();

        let dns_port = free_port(true);
        let acme = SocketAddr::from(([127, 0, 0, 1], free_port(false)));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port(false)));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": acme.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("listener-cert.pem"),
                "privateKey": dir.join("listener-key.pem"),
                "httpPort": 5002,
                "tlsPort": tls_alpn_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": VALIDITY_SECS,
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();

        // Answers A queries for any name with 127.0.0.1 and no AAAA, so pebble
        // reaches Duet's IPv4 loopback listener.
        let dns = Process(
            Command::new(tool("pebble-challtestsrv"))
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{}", free_port(false))])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pebble = Process(
            Command::new(tool("pebble"))
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(Stdio::from(
                    std::fs::File::create(dir.join("pebble.log")).unwrap(),
                ))
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let directory = format!("https://{acme}/dir");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http.get(&directory).send().await
                && response.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "pebble did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _dns: dns,
            _pebble: pebble,
            directory,
            listener_ca,
            management,
            http,
        }
    }

    /// The root that pebble's certificates chain to (made anew at each start).
    async fn root(&self) -> CertificateDer<'static> {
        let pem = self
            .http
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}

/// The leaf certificate Duet serves for `DOMAIN`, when it verifies against
/// `root` (pebble's); `Err` with the reason otherwise.
async fn served_leaf(
    port: u16,
    root: &CertificateDer<'static>,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        connector.connect(ServerName::try_from(DOMAIN).unwrap(), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok(leaf.into_owned())
}

fn turns_offered(server: &TestServer) -> bool {
    let relay = server.server.as_ref().unwrap().state.relay.clone().unwrap();
    relay
        .ice_servers(DOMAIN, "session")
        .iter()
        .flat_map(|server| server.urls.iter())
        .any(|url| url.starts_with("turns:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_obtained_served_and_renewed_over_tls_alpn() {
    let dir = std::env::temp_dir().join(format!("duet-acme-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port(false);
    let pebble = Pebble::start(&dir, port).await;
    let root = pebble.root().await;

    let server = TestServer::with(|args| {
        args.options.listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        args.options.domains = vec![DOMAIN.to_owned()];
        args.options.acme = true;
        args.options.acme_directory = Some(pebble.directory.clone());
        args.options.acme_ca = Some(pebble.listener_ca.clone());
        args.options.acme_email = Some("ops@duet.test".to_owned());
        args.state.data_dir = Some(dir.join("data"));
    })
    .await;
    let identity = &server.server.as_ref().unwrap().identity;

    // Until the certificate arrives the page is served with the self-signed
    // one (never refused), and `turns:` is not offered.
    let started = Instant::now();
    let first = loop {
        // Read before the handshake: once `trusted` is set, the CA's
        // certificate is already the one served.
        let trusted_before = identity.trusted.load(Ordering::Relaxed);
        match served_leaf(port, &root).await {
            Ok(leaf) => break leaf,
            Err(reason) => {
                assert!(
                    !trusted_before,
                    "trusted, yet the CA's certificate is not served"
                );
                assert!(!turns_offered(&server) || identity.trusted.load(Ordering::Relaxed));
                assert!(
                    reason.contains("UnknownIssuer") || reason.contains("invalid peer certificate"),
                    "unexpected failure before issuance: {reason}"
                );
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no certificate from pebble within 60 s; see {}",
                    dir.join("pebble.log").display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("issued after {:?}", started.elapsed());
    assert!(identity.trusted.load(Ordering::Relaxed));
    assert!(
        turns_offered(&server),
        "turns: is offered once the certificate is trusted"
    );
    assert!(
        std::fs::read_dir(dir.join("data/acme")).unwrap().count() >= 2,
        "the account and the certificate are kept in the data directory"
    );

    // Renewal: every handshake meanwhile verifies (the old certificate is
    // served until the new one is ready), and a new one replaces it.
    let renewal_started = Instant::now();
    let mut handshakes = 0;
    let renewed = loop {
        let leaf = served_leaf(port, &root)
            .await
            .unwrap_or_else(|reason| panic!("a handshake failed during renewal: {reason}"));
        handshakes += 1;
        if leaf != first {
            break leaf;
        }
        assert!(
            renewal_started.elapsed() < Duration::from_secs(VALIDITY_SECS * 2),
            "not renewed within {} s",
            VALIDITY_SECS * 2
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "renewed {:?} after issuance, {handshakes} handshakes verified meanwhile",
        renewal_started.elapsed()
    );
    assert_ne!(renewed, first);

    drop(server);
    drop(pebble);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_issuance_is_said_in_one_sentence_and_the_page_stays_up() {
    let dir = std::env::temp_dir().join(format!("duet-acme-fail-{}", rand::random::<u64>()));
    let port = free_port(false);
    // Nothing listens on this directory's port: issuance must fail.
    let directory = format!("https://127.0.0.1:{}/dir", free_port(false));
    let mut child = Process(
        Command::new(env!("CARGO_BIN_EXE_duet"))
            .args(["serve", "--no-turn", "--acme", "--domain", DOMAIN])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--acme-directory", &directory])
            .arg("--data-dir")
            .arg(&dir)
            .env("DUET_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let line = received
        .recv_timeout(Duration::from_secs(15))
        .expect("no warning within 15 s");
    assert!(
        line.contains("could not obtain a certificate over ACME") && line.contains(DOMAIN),
        "{line}"
    );
    // The page is still served (self-signed).
    let served = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(served.is_ok());
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
