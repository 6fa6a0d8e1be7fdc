//! Test support: a real Duet server (signaling and TURN) on loopback port 0,
//! started in this process, and options for native peers that trust its
//! certificate. Also a bare signaling client that plays a misbehaving peer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duet_peer::driver::PeerOptions;
use duet_peer::media::{Clip, DEFAULT_AUDIO, DEFAULT_VIDEO};
use duet_peer::signaling::{self, SignalingReceiver, SignalingSender, Trust};
use duet_peer::wire::{ClientMessage, RoomName, ServerMessage};
use duet_server::config::{FileConfig, ServeArgs, ServeConfig};
use duet_server::server::RunningServer;

pub struct Duet {
    pub server: Option<RunningServer>,
    pub data_dir: PathBuf,
    pub port: u16,
}

impl Duet {
    /// A server with its relay on, allowed to relay to loopback peers.
    pub async fn start() -> Self {
        duet_server::install_crypto_provider();
        let data_dir = std::env::temp_dir().join(format!(
            "duet-peer-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let args = ServeArgs::loopback(data_dir.clone());
        let config = ServeConfig::merge(args, FileConfig::default()).unwrap();
        let server = duet_server::server::start(config).await.unwrap();
        let port = server.https_addr.port();
        Self {
            server: Some(server),
            data_dir,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("wss://localhost:{}/ws", self.port)
    }

    pub fn cert(&self) -> PathBuf {
        self.data_dir.join("cert.pem")
    }

    /// Options for a native peer in `room` that stays `duration` once media flows.
    pub fn peer(&self, room: &str, label: &str) -> PeerOptions {
        PeerOptions {
            url: self.url(),
            room: room.to_owned(),
            tls: signaling::tls_config(&Trust::CaFile(self.cert())).unwrap(),
            relay_only: false,
            use_relay: true,
            echo: false,
            timeout: Duration::from_secs(15),
            duration: Some(Duration::from_secs(3)),
            max_duration: Duration::from_secs(30),
            bind_ip: None,
            video: Some(Arc::new(Clip::from_ivf(DEFAULT_VIDEO).unwrap())),
            audio: Some(Arc::new(Clip::from_ogg_opus(DEFAULT_AUDIO).unwrap())),
            record_dir: None,
            chat: None,
            status_every: None,
            label: label.to_owned(),
            progress: None,
            stay: false,
        }
    }

    /// A bare signaling client that has joined `room` (the first message is `joined`).
    pub async fn raw_client(
        &self,
        room: &str,
    ) -> (SignalingSender, SignalingReceiver, ServerMessage) {
        let tls = signaling::tls_config(&Trust::CaFile(self.cert())).unwrap();
        let (mut sender, mut receiver) =
            signaling::connect(&self.url(), tls, Duration::from_secs(5))
                .await
                .unwrap();
        sender
            .send(&ClientMessage::Join {
                room: RoomName::parse(room).unwrap(),
                resume: None,
            })
            .await
            .unwrap();
        let joined = receiver.next().await.unwrap();
        assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
        (sender, receiver, joined)
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Drop for Duet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn crypto() -> Arc<str0m::crypto::CryptoProvider> {
    Arc::new(str0m::crypto::from_feature_flags())
}

/// Waits for the next message of type `matches` from a raw client, within 10 s.
pub async fn expect(
    receiver: &mut SignalingReceiver,
    matches: impl Fn(&ServerMessage) -> bool,
) -> ServerMessage {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let message = receiver.next().await.unwrap();
            if matches(&message) {
                return message;
            }
        }
    })
    .await
    .expect("the expected message did not come")
}
