//! The signaling WebSocket, client side: TLS set-up (the system's roots, a CA
//! file such as the self-signed `DATA_DIR/cert.pem` of `duet serve`, or no
//! verification at all), connecting within a deadline, and JSON messages in
//! and out. Owns the TCP connection; knows nothing of calls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use duet_signaling::ErrorCode;

use crate::wire::{ClientMessage, ServerMessage};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why signaling failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    #[error("bad signaling URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot reach the signaling server at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the signaling server did not answer within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the signaling connection was lost: {0}")]
    Lost(String),
    #[error("the signaling server sent something that is not a Duet message: {0}")]
    BadMessage(String),
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// The operating system's root certificates.
    #[default]
    System,
    /// Only the certificates in this PEM file (e.g. `duet serve`'s `cert.pem`).
    CaFile(std::path::PathBuf),
    /// Any certificate (tests and self-signed set-ups; the connection is not authenticated).
    Insecure,
}

/// A rustls client configuration for `trust`.
pub fn tls_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, SignalingError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| SignalingError::Connect {
            url: String::new(),
            reason: err.to_string(),
        })?;
    let config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(roots_from_file(path)?)
            .with_no_client_auth(),
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert); // skip the odd unparsable system certificate
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, SignalingError> {
    let error = |reason: String| SignalingError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|err| error(err.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|err| error(err.to_string()))?;
        roots.add(cert).map_err(|err| error(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(error("no certificate in it".into()));
    }
    Ok(roots)
}

/// The writing half of a signaling connection.
#[derive(Debug)]
pub struct SignalingSender {
    sink: SplitSink<Socket, Message>,
}

/// The reading half of a signaling connection.
#[derive(Debug)]
pub struct SignalingReceiver {
    stream: SplitStream<Socket>,
}

/// Connects to `url` (`wss://HOST:PORT/ws`) within `deadline`.
pub async fn connect(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    deadline: Duration,
) -> Result<(SignalingSender, SignalingReceiver), SignalingError> {
    let request = url
        .into_client_request()
        .map_err(|err| SignalingError::BadUrl {
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(Connector::Rustls(tls)),
    );
    let (socket, _) = tokio::time::timeout(deadline, connecting)
        .await
        .map_err(|_| SignalingError::ConnectTimeout(deadline))?
        .map_err(|err| SignalingError::Connect {
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
    let (sink, stream) = socket.split();
    Ok((SignalingSender { sink }, SignalingReceiver { stream }))
}

/// The host and port a signaling URL points at (for choosing our own address).
pub fn url_host_port(url: &str) -> Result<(String, u16), SignalingError> {
    let request = url
        .into_client_request()
        .map_err(|err| SignalingError::BadUrl {
            url: url.to_owned(),
            reason: err.to_string(),
        })?;
    let uri = request.uri();
    let host = uri.host().ok_or_else(|| SignalingError::BadUrl {
        url: url.to_owned(),
        reason: "no host".into(),
    })?;
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("ws") {
        80
    } else {
        443
    });
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

impl SignalingSender {
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), SignalingError> {
        let text = message.to_json();
        self.sink
            .send(Message::Text(text.into()))
            .await
            .map_err(|err| SignalingError::Lost(err.to_string()))
    }

    /// Closes the connection with 1000 (the server gives the other member `bye`).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink.close()).await;
    }
}

impl SignalingReceiver {
    /// The next message; `Err(Lost)` when the connection ends. Cancel-safe.
    pub async fn next(&mut self) -> Result<ServerMessage, SignalingError> {
        // Bounded: pings, pongs and raw frames are skipped, at most this many in a row.
        for _ in 0..1_000 {
            let frame = match self.stream.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Err(SignalingError::Lost(err.to_string())),
                None => return Err(SignalingError::Lost("closed".into())),
            };
            match frame {
                Message::Text(text) => match ServerMessage::parse(text.as_str()) {
                    Ok(message) => return Ok(message),
                    // A message type of a newer server: not for this client.
                    Err(error) if error.code == ErrorCode::UnknownType => {}
                    Err(error) => {
                        return Err(SignalingError::BadMessage(format!(
                            "{error}: {}",
                            text.as_str()
                        )));
                    }
                },
                Message::Close(frame) => {
                    let reason = frame.map_or_else(
                        || "closed without a reason".to_owned(),
                        |frame| format!("closed with {}: {}", u16::from(frame.code), frame.reason),
                    );
                    return Err(SignalingError::Lost(reason));
                }
                Message::Binary(_) => {
                    return Err(SignalingError::BadMessage("a binary frame".into()));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        Err(SignalingError::BadMessage("only control frames".into()))
    }
}

/// Accepts any server certificate (checks only that the handshake signatures are sound).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
