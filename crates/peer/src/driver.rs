//! One native peer's run, with real IO: the signaling WebSocket, one UDP
//! socket for ICE (and TURN), the timers, the recording files and the live
//! status line. Everything protocol-related is decided by [`Call`]; this loop
//! only moves bytes and time in and out of it.
//!
//! Loop order, each turn: (1) flush the call's outputs (datagrams, messages,
//! events), (2) check the run's deadlines, (3) wait for the first of: the
//! call's timer, a signaling message, a datagram, the status tick, Ctrl-C.
//! The run is bounded: it ends at `timeout` without media, at `duration` after
//! media started, at `max_duration` in any case. With `stay` it outlives its
//! calls: after the other member's `bye` it gives the call's relay back, opens
//! a fresh UDP socket and waits for the next member; `timeout` then counts
//! from the start of each call.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::crypto::CryptoProvider;
use tokio::net::UdpSocket;

use crate::call::{Call, CallConfig, CallEvent, CallOutput, CallStats};
use crate::ice_servers::first_udp_turn;
use crate::media::Clip;
use crate::record::Recorder;
use crate::relay::TurnServer;
use crate::report::{self, Identity, Report};
use crate::signaling::{self, SignalingReceiver, SignalingSender};
use crate::wire::{ClientMessage, IceServer, PeerMessage, RoomName, ServerMessage};

/// Longest wait for the WebSocket and TLS handshakes.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// An application-level ping keeps proxies and the server's silence timer happy.
const PING_EVERY: Duration = Duration::from_secs(10);
/// The biggest UDP datagram we read.
const DATAGRAM_MAX: usize = 2048;

/// How one peer runs.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// `wss://HOST:PORT/ws`
    pub url: String,
    pub room: String,
    pub tls: Arc<rustls::ClientConfig>,
    /// Only a TURN relay candidate (no host candidate).
    pub relay_only: bool,
    /// Also offer a relay candidate next to the host one (when the server
    /// offers TURN over UDP).
    pub use_relay: bool,
    pub echo: bool,
    /// Fail when no media has arrived this long after the start.
    pub timeout: Duration,
    /// Stop this long after media started to arrive (None: when the other leaves).
    pub duration: Option<Duration>,
    /// Stop after this long whatever happens.
    pub max_duration: Duration,
    /// Our address for ICE (None: the one that routes to the signaling server).
    pub bind_ip: Option<IpAddr>,
    pub video: Option<Arc<Clip>>,
    pub audio: Option<Arc<Clip>>,
    /// Write what arrives to `received-video.ivf` and `received-audio.ogg` here.
    pub record_dir: Option<PathBuf>,
    /// Send this chat message once the data channel opens.
    pub chat: Option<String>,
    /// Print a status line this often on stderr (None: quiet).
    pub status_every: Option<Duration>,
    /// A label for the status lines (load mode runs many peers).
    pub label: String,
    /// Counters shared with a load run's status line.
    pub progress: Option<Arc<Progress>>,
    /// Stay in the room after the other member leaves, for the next one.
    pub stay: bool,
}

/// What a load run's status line shows, updated by every peer it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub connected: AtomicU64,
    pub receiving: AtomicU64,
    pub finished: AtomicU64,
    /// Payload bytes received by all peers.
    pub bytes_received: AtomicU64,
}

/// Runs one peer to its end and reports. Never panics on network input; every
/// failure ends up in the report's `error`.
pub async fn run(options: PeerOptions, crypto: Arc<CryptoProvider>) -> Report {
    let started = Instant::now();
    let progress = options.progress.clone();
    let mut run = Run::new(options, crypto, started);
    let ended = run.go().await;
    if let Some(progress) = progress {
        progress.finished.fetch_add(1, Ordering::Relaxed);
    }
    run.finish(ended)
}

/// Why a run ended early.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("no media arrived within {} s", .0.as_secs_f64())]
    NoMedia(Duration),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

/// The state of one run.
struct Run {
    options: PeerOptions,
    crypto: Arc<CryptoProvider>,
    started: Instant,
    identity: Identity,
    call: Option<Call>,
    /// When the current call started.
    call_started: Option<Instant>,
    /// The server has this call's set-up report (sent once the selected pair is known).
    setup_reported: bool,
    /// The counters of the last call that ended, for the report.
    last_stats: Option<CallStats>,
    /// The socket of the current call (shared with the loop in `serve`).
    socket: Option<Arc<UdpSocket>>,
    recorder: Recorder,
    state: &'static str,
    peer_left: bool,
}

impl Run {
    fn new(options: PeerOptions, crypto: Arc<CryptoProvider>, started: Instant) -> Self {
        let identity = Identity {
            room: options.room.clone(),
            ..Identity::default()
        };
        let recorder = Recorder::new(options.record_dir.clone());
        Self {
            options,
            crypto,
            started,
            identity,
            call: None,
            call_started: None,
            setup_reported: false,
            last_stats: None,
            socket: None,
            recorder,
            state: "connecting to signaling",
            peer_left: false,
        }
    }

    async fn go(&mut self) -> Result<(), RunError> {
        let (mut sender, mut receiver) = signaling::connect(
            &self.options.url,
            Arc::clone(&self.options.tls),
            CONNECT_DEADLINE,
        )
        .await
        .map_err(|err| err.to_string())?;
        let result = self.serve(&mut sender, &mut receiver).await;
        self.hang_up().await;
        self.report_summary(&mut sender).await;
        if result.is_ok() || self.peer_left {
            let _ = sender.send(&ClientMessage::Leave).await;
        }
        sender.close().await;
        result
    }

    async fn serve(
        &mut self,
        sender: &mut SignalingSender,
        receiver: &mut SignalingReceiver,
    ) -> Result<(), RunError> {
        let local_ip = match self.options.bind_ip {
            Some(ip) => ip,
            None => local_ip_towards(&self.options.url).await?,
        };
        let (mut socket, mut local_addr) = self.open_socket(local_ip).await?;
        let room = RoomName::parse(&self.options.room)
            .map_err(|err| format!("room {}: {err}", self.options.room))?;
        sender
            .send(&ClientMessage::Join { room, resume: None })
            .await
            .map_err(|err| err.to_string())?;
        self.state = "joining";

        let mut buffer = vec![0u8; DATAGRAM_MAX];
        let mut ice_servers: Vec<IceServer> = Vec::new();
        let mut turn: Option<TurnServer> = None;
        let mut next_ping = Instant::now() + PING_EVERY;
        let mut next_status = self
            .options
            .status_every
            .map(|every| Instant::now() + every);
        let mut media_since: Option<Instant> = None;
        let mut chat_sent = false;

        loop {
            // 1. What the call wants done.
            self.flush(&socket, sender, &mut chat_sent).await?;

            // 2. Deadlines of the run.
            let now = Instant::now();
            if let Some(call) = &self.call {
                if call.has_failed() {
                    return Err(RunError::Failed("the call failed".into()));
                }
                if media_since.is_none() && call.stats().any_media_received() {
                    media_since = Some(now);
                    self.identity.calls_with_media += 1;
                    if let Some(progress) = &self.options.progress {
                        progress.receiving.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if self.peer_left {
                if !self.options.stay {
                    self.state = "the other peer left";
                    return Ok(());
                }
                // Ready for the next member, on a fresh socket: a new relay
                // allocation needs a new 5-tuple.
                self.hang_up().await;
                self.report_summary(sender).await;
                (socket, local_addr) = self.open_socket(local_ip).await?;
                self.peer_left = false;
                media_since = None;
                chat_sent = false;
                self.state = "waiting for the next member";
                continue;
            }
            // Without `stay` the run is the call; with it, each call has its own timeout.
            let no_media_at = if self.options.stay {
                self.call_started.map(|at| at + self.options.timeout)
            } else {
                Some(self.started + self.options.timeout)
            };
            if media_since.is_none() && no_media_at.is_some_and(|at| now >= at) {
                self.state = "no media";
                return Err(RunError::NoMedia(self.options.timeout));
            }
            if let (Some(since), Some(duration)) = (media_since, self.options.duration)
                && now >= since + duration
            {
                return Ok(());
            }
            if now >= self.started + self.options.max_duration {
                return Ok(());
            }

            // 3. Wait for the first thing to happen.
            let mut wake = next_ping.min(self.started + self.options.max_duration);
            if let (None, Some(at)) = (media_since, no_media_at) {
                wake = wake.min(at);
            }
            if let (Some(since), Some(duration)) = (media_since, self.options.duration) {
                wake = wake.min(since + duration);
            }
            if let Some(call) = &self.call {
                wake = wake.min(call.poll_timeout());
            }
            if let Some(at) = next_status {
                wake = wake.min(at);
            }
            let wake = tokio::time::Instant::from_std(wake.max(now));
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => {
                    self.state = "interrupted";
                    return Ok(());
                }
                message = receiver.next() => {
                    let message = message.map_err(|err| err.to_string())?;
                    self.on_server_message(message, &mut ice_servers, &mut turn, local_addr).await?;
                }
                received = socket.recv_from(&mut buffer) => {
                    match received {
                        Ok((len, source)) => {
                            if let (Some(call), Some(bytes)) = (&mut self.call, buffer.get(..len)) {
                                call.handle_datagram(source, bytes, Instant::now());
                            }
                        }
                        // ICMP "port unreachable" and the like: the next datagram may be fine.
                        Err(err) => tracing::debug!("udp receive: {err}"),
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if let Some(call) = &mut self.call {
                        call.handle_timeout(now);
                    }
                    if now >= next_ping {
                        next_ping = now + PING_EVERY;
                        sender.send(&ClientMessage::Ping).await.map_err(|err| err.to_string())?;
                    }
                    if let (Some(at), Some(every)) = (next_status, self.options.status_every)
                        && now >= at
                    {
                        next_status = Some(now + every);
                        self.print_status(now);
                    }
                }
            }
        }
    }

    /// Opens the UDP socket for the next call (host candidate and TURN client).
    async fn open_socket(&mut self, ip: IpAddr) -> Result<(Arc<UdpSocket>, SocketAddr), String> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|err| format!("cannot open a UDP socket on {ip}: {err}"))?;
        let addr = socket.local_addr().map_err(|err| err.to_string())?;
        let socket = Arc::new(socket);
        self.socket = Some(Arc::clone(&socket));
        Ok((socket, addr))
    }

    /// Ends the current call: closes it, sends what gives its relay back, and
    /// keeps its counters for the report.
    /// Tells the server how the call that just ended went (best effort).
    async fn report_summary(&mut self, sender: &mut SignalingSender) {
        let report = self
            .last_stats
            .as_ref()
            .and_then(|stats| stats.summary_report(Instant::now()));
        if let Some(report) = report {
            let _ = sender.send(&ClientMessage::Report(report)).await;
        }
    }

    async fn hang_up(&mut self) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        call.close(Instant::now());
        if let Some(socket) = &self.socket {
            // Bounded: a closed call only has the relay's last requests to send.
            while let Some(output) = call.poll_output() {
                if let CallOutput::Transmit {
                    destination,
                    contents,
                } = output
                {
                    let _ = socket.send_to(&contents, destination).await;
                }
            }
        }
        self.last_stats = Some(call.stats().clone());
        self.call_started = None;
        self.recorder.finish();
    }

    /// Sends the call's datagrams and messages and handles its events.
    async fn flush(
        &mut self,
        socket: &UdpSocket,
        sender: &mut SignalingSender,
        chat_sent: &mut bool,
    ) -> Result<(), String> {
        let Some(call) = &mut self.call else {
            return Ok(());
        };
        let mut messages = Vec::new();
        let mut reports = Vec::new();
        // Bounded by what the call queued since the last turn.
        while let Some(output) = call.poll_output() {
            match output {
                CallOutput::Transmit {
                    destination,
                    contents,
                } => {
                    if let Err(err) = socket.send_to(&contents, destination).await {
                        tracing::debug!("udp send to {destination}: {err}");
                    }
                }
                CallOutput::Send(message) => messages.push(message),
                CallOutput::Event(event) => match event {
                    CallEvent::Connected => {
                        self.state = "connected";
                        if let Some(progress) = &self.options.progress {
                            progress.connected.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(label = %self.options.label, "connected");
                    }
                    CallEvent::Disconnected => self.state = "disconnected",
                    CallEvent::ChannelOpen => {
                        if let (Some(text), false) = (&self.options.chat, *chat_sent) {
                            *chat_sent = true;
                            call.send_chat(text, Instant::now());
                        }
                    }
                    CallEvent::RelayAllocated(addr) => tracing::debug!(%addr, "relay allocated"),
                    CallEvent::FirstFrame { kind, received } => {
                        tracing::debug!(label = %self.options.label, ?kind, received, "first frame");
                    }
                    CallEvent::Frame(frame) => self.recorder.write(&frame),
                    CallEvent::Received { bytes } => {
                        if let Some(progress) = &self.options.progress {
                            progress.bytes_received.fetch_add(bytes, Ordering::Relaxed);
                        }
                    }
                    CallEvent::Chat { text } => {
                        tracing::info!(label = %self.options.label, %text, "chat")
                    }
                    CallEvent::Problem(problem) => {
                        tracing::warn!(label = %self.options.label, "{problem}")
                    }
                    CallEvent::Failed(error) => return Err(error.to_string()),
                },
            }
        }
        if !self.setup_reported
            && let Some(report) = call.stats().setup_report()
        {
            self.setup_reported = true;
            reports.push(report);
        }
        for report in reports {
            sender
                .send(&ClientMessage::Report(report))
                .await
                .map_err(|err| err.to_string())?;
        }
        for message in messages {
            sender
                .send(&ClientMessage::message(&message).map_err(|err| err.to_string())?)
                .await
                .map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    async fn on_server_message(
        &mut self,
        message: ServerMessage,
        ice_servers: &mut Vec<IceServer>,
        turn: &mut Option<TurnServer>,
        local_addr: SocketAddr,
    ) -> Result<(), String> {
        let now = Instant::now();
        match message {
            ServerMessage::Joined {
                id,
                peers,
                ice_servers: servers,
                ..
            } => {
                self.identity.id = Some(id.to_string());
                *ice_servers = servers.to_vec();
                if self.options.relay_only {
                    *turn = Some(resolve_turn(ice_servers, local_addr).await?);
                } else if self.options.use_relay {
                    // Besides the host candidate: without a relay the call may still work.
                    match resolve_turn(ice_servers, local_addr).await {
                        Ok(server) => *turn = Some(server),
                        Err(reason) => tracing::info!("no relay candidate: {reason}"),
                    }
                }
                self.state = "waiting for the other peer";
                if let Some(peer) = peers.into_iter().next() {
                    self.start_call(peer.to_string(), true, turn.clone(), local_addr, now);
                }
            }
            ServerMessage::OtherJoined { id } => {
                self.start_call(id.to_string(), false, turn.clone(), local_addr, now);
            }
            ServerMessage::Message { from, data } => {
                if self.call.is_none() {
                    // A message before `other_joined` (a resumed seat): they are here.
                    self.start_call(from.to_string(), false, turn.clone(), local_addr, now);
                }
                match PeerMessage::from_raw(&data) {
                    Ok(message) => {
                        if let Some(call) = &mut self.call {
                            call.handle_message(message, now);
                        }
                    }
                    Err(err) if err.kind == "sdp" => return Err(err.to_string()),
                    Err(err) => tracing::warn!("{err}"),
                }
            }
            ServerMessage::Bye { .. } => {
                self.peer_left = true;
            }
            ServerMessage::Full { room } => {
                return Err(format!(
                    "room {room} is full: two members are already in it"
                ));
            }
            ServerMessage::Error { code, message } => {
                if self.identity.id.is_none() {
                    return Err(format!("the server refused to seat us: {code}: {message}"));
                }
                tracing::warn!("signaling error {code}: {message}");
            }
            ServerMessage::Leaved { .. } | ServerMessage::Pong => {}
        }
        Ok(())
    }

    fn start_call(
        &mut self,
        peer: String,
        initiator: bool,
        turn: Option<TurnServer>,
        local_addr: SocketAddr,
        now: Instant,
    ) {
        let mine = self.identity.id.clone().unwrap_or_default();
        // The web client's rule: the peer whose id sorts lower is polite.
        let polite = mine < peer;
        self.identity.peer = Some(peer);
        self.identity.offerer = Some(initiator);
        self.identity.polite = Some(polite);
        self.identity.calls += 1;
        self.call_started = Some(now);
        self.setup_reported = false;
        // A bot records each call in a directory of its own.
        if self.options.stay {
            let dir = self.options.record_dir.as_ref();
            let call_dir = dir.map(|dir| dir.join(format!("call-{}", self.identity.calls)));
            self.recorder = Recorder::new(call_dir);
        }
        self.state = "negotiating";
        let config = CallConfig {
            polite,
            initiator,
            local_addr,
            host_candidate: !self.options.relay_only,
            turn,
            video: self.options.video.clone(),
            audio: self.options.audio.clone(),
            echo: self.options.echo,
            deliver_media: self.options.record_dir.is_some(),
            report_bytes: self.options.progress.is_some(),
            crypto: Arc::clone(&self.crypto),
        };
        self.call = Some(Call::new(config, now));
    }

    fn print_status(&self, now: Instant) {
        let line = report::live_line(
            self.call.as_ref().map(Call::stats),
            self.started,
            now,
            self.state,
        );
        if self.options.label.is_empty() {
            eprintln!("{line}");
        } else {
            eprintln!("[{}] {line}", self.options.label);
        }
    }

    fn finish(mut self, ended: Result<(), RunError>) -> Report {
        self.recorder.finish();
        let stats = self
            .call
            .as_ref()
            .map(Call::stats)
            .or(self.last_stats.as_ref());
        let now = Instant::now();
        let stayed = self.options.stay;
        match ended {
            Ok(()) => {
                let mut report = report::build(stats, self.identity, self.started, now, None);
                // A bot's run went well when any of its calls brought media.
                if stayed {
                    report.outcome = if report.identity.calls_with_media > 0 {
                        report::Outcome::Ok
                    } else {
                        report::Outcome::NoMedia
                    };
                }
                report
            }
            Err(RunError::NoMedia(timeout)) => {
                let mut report = report::build(stats, self.identity, self.started, now, None);
                report.outcome = report::Outcome::NoMedia;
                report.error = Some(RunError::NoMedia(timeout).to_string());
                report
            }
            Err(RunError::Failed(message)) => {
                report::build(stats, self.identity, self.started, now, Some(message))
            }
        }
    }
}

/// The TURN server of `joined`, resolved to an address of our socket's family.
async fn resolve_turn(servers: &[IceServer], local: SocketAddr) -> Result<TurnServer, String> {
    let endpoint = first_udp_turn(servers)
        .ok_or("the server offers no TURN relay over UDP (is its relay on?)")?;
    let addresses = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|err| format!("cannot resolve the TURN server {}: {err}", endpoint.host))?;
    let addr = addresses
        .into_iter()
        .find(|addr| addr.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            format!(
                "the TURN server {} has no address we can reach",
                endpoint.host
            )
        })?;
    Ok(TurnServer {
        addr,
        username: endpoint.username,
        password: endpoint.password,
    })
}

/// The local address that routes to the signaling server (no packet is sent).
async fn local_ip_towards(url: &str) -> Result<IpAddr, String> {
    let (host, port) = signaling::url_host_port(url).map_err(|err| err.to_string())?;
    let server = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|err| format!("cannot resolve {host}: {err}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{host} has no IPv4 address"))?;
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|err| err.to_string())?;
    probe
        .connect(server)
        .map_err(|err| format!("no route to {server}: {err}"))?;
    Ok(probe.local_addr().map_err(|err| err.to_string())?.ip())
}
