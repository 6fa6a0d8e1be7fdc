//! The `duet` server: HTTPS, the embedded web client and WebSocket signaling.
//!
//! All IO of Duet lives in this crate; the protocol rules live in
//! `duet-signaling`. The binary (`main.rs`) only parses the command line and
//! calls [`server::start`].

pub mod acme;
pub mod app;
pub mod call_metrics;
pub mod cluster;
pub mod config;
pub mod front;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod relays;
pub mod server;
pub mod signaling;
pub mod socketio;
pub mod tls;
pub mod turn;
pub mod turn_stream;
pub mod ws;

/// Installs aws-lc-rs as the process' rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
