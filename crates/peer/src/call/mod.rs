//! One call with the other member of a room, sans-IO.
//!
//! A [`Call`] owns a str0m `Rtc`, the relay client when TURN is used, the
//! negotiation state (perfect negotiation, as web/js/call.js does it), the
//! media playouts and the counters. It never reads a clock or touches a socket:
//!
//! - inputs: [`Call::handle_message`] (an application message relayed by the
//!   signaling server), [`Call::handle_datagram`] (a UDP datagram that reached
//!   the call's socket), [`Call::handle_timeout`]; each takes `now`;
//! - outputs: [`Call::poll_output`] yields messages for the other peer,
//!   datagrams to send and events; [`Call::poll_timeout`] says when to call
//!   `handle_timeout` next.
//!
//! Every mutation of the `Rtc` is followed by draining its output until it
//! returns a timeout (str0m's one rule); `drain` is where that happens.

mod candidates;
mod chat;
mod media;
mod negotiation;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::channel::{ChannelConfig, ChannelId};
use str0m::crypto::CryptoProvider;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, CandidateKind, Event, IceConnectionState, Input, Output, Rtc};

use crate::media::{Clip, MediaCodec};
use crate::relay::{Relay, TurnServer};
use crate::wire::PeerMessage;

pub use stats::{CallStats, Kind};

use media::Outgoing;
use negotiation::Negotiation;

/// The data channel both sides open out of band, with the same id, as the web
/// client does (`{ negotiated: true, id: 0 }`, label "duet").
pub const DATA_CHANNEL_ID: u16 = 0;
pub const DATA_CHANNEL_LABEL: &str = "duet";
/// How often str0m reports statistics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How long ICE may stay disconnected before we restart it (the web client's
/// `DISCONNECTED_RESTART_MS`).
const ICE_RESTART_AFTER: Duration = Duration::from_secs(3);
/// A connected call that hears nothing for this long has lost its path. str0m
/// itself says so only after ~20 s of unanswered checks; browsers after ~5 s.
/// (The other side's RTCP and ICE keepalives arrive every few seconds even
/// without media.)
const PATH_SILENCE: Duration = Duration::from_secs(5);
/// Most outputs one drain takes from str0m before calling it a runaway.
const MAX_OUTPUTS_PER_DRAIN: usize = 100_000;
/// What an echoed chat message starts with.
pub const ECHO_PREFIX: &str = "echo: ";
/// Longest chat text echoed back.
const CHAT_MAX_CHARS: usize = 2_000;

/// How a call is set up.
#[derive(Clone)]
pub struct CallConfig {
    /// Yields on colliding offers: the peer whose id sorts lower.
    pub polite: bool,
    /// Offers at once (the member who joined second); the other waits.
    pub initiator: bool,
    /// The call's UDP socket (a host candidate unless relay-only).
    pub local_addr: SocketAddr,
    /// Offer the socket's address as a host candidate (false: relay only).
    pub host_candidate: bool,
    /// Allocate a relay on this TURN server.
    pub turn: Option<TurnServer>,
    pub video: Option<Arc<Clip>>,
    pub audio: Option<Arc<Clip>>,
    /// Answer chat messages with "echo: …".
    pub echo: bool,
    /// Emit every received frame as [`CallEvent::Frame`] (for recording).
    pub deliver_media: bool,
    /// Emit [`CallEvent::Received`] for every received frame (for load totals).
    pub report_bytes: bool,
    pub crypto: Arc<CryptoProvider>,
}

impl fmt::Debug for CallConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallConfig")
            .field("polite", &self.polite)
            .field("initiator", &self.initiator)
            .field("local_addr", &self.local_addr)
            .field("host_candidate", &self.host_candidate)
            .field("turn", &self.turn.as_ref().map(|t| t.addr))
            .field("video", &self.video.is_some())
            .field("audio", &self.audio.is_some())
            .field("echo", &self.echo)
            .field("deliver_media", &self.deliver_media)
            .field("report_bytes", &self.report_bytes)
            .finish_non_exhaustive()
    }
}

/// What the call wants done, or wants known.
#[derive(Debug, Clone)]
pub enum CallOutput {
    /// Relay this to the other peer (a signaling `message`).
    Send(PeerMessage),
    /// Send this datagram from the call's socket.
    Transmit {
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Event(CallEvent),
}

/// Facts about the call.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// ICE lost the other side.
    Disconnected,
    ChannelOpen,
    /// The relay gave us this address.
    RelayAllocated(SocketAddr),
    /// The first frame of `kind` went out or came in.
    FirstFrame {
        kind: Kind,
        received: bool,
    },
    /// A received frame (only with `deliver_media`).
    Frame(ReceivedFrame),
    /// A frame of this many bytes arrived (only with `report_bytes`).
    Received {
        bytes: u64,
    },
    Chat {
        text: String,
    },
    /// Something went wrong that the call survives.
    Problem(String),
    /// The call cannot go on.
    Failed(CallError),
}

/// A frame received from the other side.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    pub kind: Kind,
    pub codec: MediaCodec,
    /// RTP media time in the codec's clock rate (90 kHz, 48 kHz).
    pub media_time: u64,
    pub data: Arc<[u8]>,
    pub keyframe: bool,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the other peer sent a bad {kind}: {reason}")]
    BadDescription { kind: &'static str, reason: String },
    #[error("{0}")]
    BadMessage(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("TURN relay: {0}")]
    Relay(String),
}

/// One call (see the module documentation).
pub struct Call {
    config: CallConfig,
    rtc: Rtc,
    rtc_timeout: Instant,
    relay: Option<Relay>,
    negotiation: Negotiation,
    /// Local candidates, in the order added (re-added to a fresh `Rtc`).
    local_candidates: Vec<Candidate>,
    /// Remote candidate addresses and their types, for the report.
    remote_candidate_types: HashMap<SocketAddr, &'static str>,
    channel: Option<ChannelId>,
    outgoing: Vec<Outgoing>,
    stats: CallStats,
    outputs: VecDeque<CallOutput>,
    connected: bool,
    /// The path was lost at this time (and has not come back since).
    disconnected_since: Option<Instant>,
    /// str0m's last word on ICE.
    ice_state: IceConnectionState,
    /// When the last datagram from the other side arrived.
    last_received: Option<Instant>,
    failed: bool,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("config", &self.config)
            .field("connected", &self.connected)
            .field("failed", &self.failed)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// A call that gathers its candidates at once and, as initiator, offers.
    #[must_use]
    pub fn new(config: CallConfig, now: Instant) -> Self {
        let rtc = build_rtc(&config, now);
        let relay = config
            .turn
            .clone()
            .map(|server| Relay::allocate(config.local_addr, server, now));
        let outgoing = [(Kind::Audio, &config.audio), (Kind::Video, &config.video)]
            .into_iter()
            .filter_map(|(kind, clip)| {
                clip.as_ref()
                    .map(|clip| Outgoing::new(kind, Arc::clone(clip)))
            })
            .collect();
        let mut call = Self {
            negotiation: Negotiation::new(config.initiator),
            config,
            rtc,
            rtc_timeout: now,
            relay,
            local_candidates: Vec::new(),
            remote_candidate_types: HashMap::new(),
            channel: None,
            outgoing,
            stats: CallStats::new(now),
            outputs: VecDeque::new(),
            connected: false,
            disconnected_since: None,
            ice_state: IceConnectionState::New,
            last_received: None,
            failed: false,
        };
        if call.config.host_candidate {
            match Candidate::host(call.config.local_addr, "udp") {
                Ok(candidate) => call.add_local_candidate(candidate, now),
                Err(err) => call.problem(format!("no host candidate: {err}")),
            }
        }
        call.flush_relay(now);
        call.drain(now);
        if call.config.initiator {
            call.make_offer(now);
        }
        call
    }

    /// Handles an application message from the other peer.
    pub fn handle_message(&mut self, message: PeerMessage, now: Instant) {
        if self.failed {
            return;
        }
        match message {
            PeerMessage::Sdp { description } => self.on_description(description, now),
            PeerMessage::Ice { candidate } => self.on_remote_candidate(candidate, now),
            PeerMessage::Chat { text } => self.on_chat(text, None, now),
            PeerMessage::Other => {}
        }
    }

    /// Handles a datagram that reached the call's socket from `source`.
    pub fn handle_datagram(&mut self, source: SocketAddr, contents: &[u8], now: Instant) {
        if self.failed {
            return;
        }
        let from_relay_server = self.relay.as_ref().is_some_and(|r| r.server() == source);
        if from_relay_server {
            let local = self.config.local_addr;
            let unwrapped = self.relay.as_mut().and_then(|relay| {
                relay
                    .handle_datagram(local, contents, now)
                    .map(|data| (relay.relayed(), data))
            });
            if let Some((Some(relayed), (peer, data))) = unwrapped {
                self.receive(peer, relayed, &data, now);
            }
            self.flush_relay(now);
        } else {
            self.receive(source, self.config.local_addr, contents, now);
        }
    }

    /// Drives timers: str0m's, the relay's, and the media playouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if self.connected
            && self.disconnected_since.is_none()
            && self
                .last_received
                .is_some_and(|at| now >= at + PATH_SILENCE)
        {
            self.path_lost(now);
        }
        if self
            .disconnected_since
            .is_some_and(|since| now >= since + ICE_RESTART_AFTER)
        {
            // Again every few seconds while the path stays broken.
            self.disconnected_since = Some(now);
            self.restart_ice(now);
        }
        if now >= self.rtc_timeout {
            if let Err(err) = self.rtc.handle_input(Input::Timeout(now)) {
                self.fail(CallError::Rtc(err.to_string()));
                return;
            }
            self.drain(now);
        }
        if let Some(relay) = &mut self.relay
            && relay.poll_timeout().is_some_and(|at| at <= now)
        {
            relay.handle_timeout(now);
        }
        self.flush_relay(now);
        self.negotiation.expire_queued_candidates(now);
        self.send_due_media(now);
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        if self.failed {
            return self.rtc_timeout + Duration::from_secs(3600);
        }
        let mut next = self.rtc_timeout;
        match (self.disconnected_since, self.last_received) {
            (Some(since), _) => next = next.min(since + ICE_RESTART_AFTER),
            (None, Some(at)) if self.connected => next = next.min(at + PATH_SILENCE),
            _ => {}
        }
        if let Some(at) = self.relay.as_ref().and_then(Relay::poll_timeout) {
            next = next.min(at);
        }
        for outgoing in &self.outgoing {
            if let Some(at) = outgoing.next_due() {
                next = next.min(at);
            }
        }
        next
    }

    #[must_use]
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    #[must_use]
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Sends a chat message on the data channel (or through signaling before it opens).
    pub fn send_chat(&mut self, text: &str, now: Instant) {
        let message = PeerMessage::Chat {
            text: text.to_owned(),
        };
        if !self.write_channel(self.channel, &message, now) {
            self.outputs.push_back(CallOutput::Send(message));
        }
    }

    /// Ends the call: str0m stops sending, and the relay allocation (if any)
    /// is given back; the only outputs left are the datagrams that do that.
    pub fn close(&mut self, now: Instant) {
        self.rtc.disconnect();
        self.outgoing.iter_mut().for_each(Outgoing::stop);
        if let Some(relay) = &mut self.relay {
            relay.release(now);
        }
        self.flush_relay(now);
    }

    // ---------------------------------------------------------------------
    // str0m plumbing

    /// Feeds a datagram to str0m as received on `destination` (the socket, or the relay).
    fn receive(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        now: Instant,
    ) {
        let Ok(contents) = contents.try_into() else {
            return; // not STUN, DTLS, RTP or RTCP: not for us
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(err) = self.rtc.handle_input(input) {
            self.problem(format!("a datagram from {source} was refused: {err}"));
        }
        self.last_received = Some(now);
        // Heard from again: the path is back, unless str0m says otherwise.
        if self.ice_state != IceConnectionState::Disconnected {
            self.disconnected_since = None;
        }
        self.drain(now);
    }

    /// The path is gone (str0m says so, or nothing arrives): restart ICE if it
    /// does not come back soon.
    fn path_lost(&mut self, now: Instant) {
        if self.disconnected_since.is_none() {
            self.disconnected_since = Some(now);
            self.outputs
                .push_back(CallOutput::Event(CallEvent::Disconnected));
        }
    }

    /// Takes str0m's output until it returns its next timeout.
    fn drain(&mut self, now: Instant) {
        for _ in 0..MAX_OUTPUTS_PER_DRAIN {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.rtc_timeout = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    self.route(
                        transmit.source,
                        transmit.destination,
                        &transmit.contents,
                        now,
                    );
                }
                Ok(Output::Event(event)) => self.on_rtc_event(event, now),
                Err(err) => {
                    self.fail(CallError::Rtc(err.to_string()));
                    return;
                }
            }
        }
        self.fail(CallError::Rtc("str0m produced output without end".into()));
    }

    /// Sends a datagram str0m made: through the relay when its source is the relayed address.
    fn route(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        now: Instant,
    ) {
        match &mut self.relay {
            Some(relay) if relay.relayed() == Some(source) => {
                if let Some(wrapped) = relay.wrap(destination, contents, now) {
                    let server = relay.server();
                    self.outputs.push_back(CallOutput::Transmit {
                        destination: server,
                        contents: wrapped,
                    });
                }
                self.flush_relay(now);
            }
            _ => self.outputs.push_back(CallOutput::Transmit {
                destination,
                contents: contents.to_vec(),
            }),
        }
    }

    fn on_rtc_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.stats.connected_at.get_or_insert(now);
                self.outputs
                    .push_back(CallOutput::Event(CallEvent::Connected));
                self.start_playouts(now);
            }
            Event::IceConnectionStateChange(state) => {
                self.ice_state = state;
                match state {
                    IceConnectionState::Disconnected if self.connected => self.path_lost(now),
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        self.disconnected_since = None;
                    }
                    _ => {}
                }
            }
            Event::Closed if self.connected => {
                self.outputs
                    .push_back(CallOutput::Event(CallEvent::Disconnected));
            }
            Event::MediaAdded(added) => {
                self.on_media_added(added.mid, added.kind, added.direction, now)
            }
            Event::MediaChanged(changed) => {
                self.on_media_changed(changed.mid, changed.direction, now)
            }
            Event::MediaData(data) => self.on_media_data(data, now),
            Event::KeyframeRequest(request) => self.on_keyframe_request(request.mid),
            Event::ChannelOpen(id, _label) => {
                if self.channel.is_none() {
                    self.channel = Some(id);
                }
                self.stats.channel_open_at.get_or_insert(now);
                self.outputs
                    .push_back(CallOutput::Event(CallEvent::ChannelOpen));
            }
            Event::ChannelData(data) if !data.binary => {
                self.on_channel_text(data.id, &data.data, now);
            }
            Event::ChannelClose(id) if self.channel == Some(id) => {
                self.channel = None;
            }
            Event::PeerStats(peer) => {
                self.stats.rtt = peer.rtt.or(self.stats.rtt);
                if let Some(pair) = peer.selected_candidate_pair {
                    let local = pair.local.addr;
                    let remote = pair.remote.addr;
                    self.stats.selected_pair = Some((local, remote));
                    self.stats.local_candidate_type = Some(self.local_type(local));
                    self.stats.remote_candidate_type = Some(
                        self.remote_candidate_types
                            .get(&remote)
                            .copied()
                            .unwrap_or("prflx"),
                    );
                }
            }
            Event::MediaIngressStats(ingress) => self.on_ingress_stats(&ingress),
            Event::MediaEgressStats(egress) => self.on_egress_stats(&egress),
            // Not used by this peer: other ICE states, binary channel data, other
            // channels closing, bandwidth estimates, raw RTP, feedback details.
            _ => {}
        }
    }

    // ---------------------------------------------------------------------
    // Failure

    fn problem(&mut self, message: String) {
        self.stats.problems += 1;
        self.outputs
            .push_back(CallOutput::Event(CallEvent::Problem(message)));
    }

    fn fail(&mut self, error: CallError) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.outgoing.iter_mut().for_each(Outgoing::stop);
        self.outputs
            .push_back(CallOutput::Event(CallEvent::Failed(error)));
    }
}

/// A new `Rtc`: Opus, VP8 and H.264 (what we can send and recognise), the
/// video clip's codec first so the other side prefers it too; statistics every
/// second.
fn build_rtc(config: &CallConfig, now: Instant) -> Rtc {
    let h264_first = config
        .video
        .as_ref()
        .is_some_and(|clip| clip.codec == MediaCodec::H264);
    let builder = Rtc::builder()
        .set_crypto_provider(Arc::clone(&config.crypto))
        .clear_codecs()
        .enable_opus(true, false);
    let builder = if h264_first {
        builder.enable_h264(true).enable_vp8(true)
    } else {
        builder.enable_vp8(true).enable_h264(true)
    };
    builder.set_stats_interval(Some(STATS_INTERVAL)).build(now)
}

/// The data channel of the web client.
fn data_channel_config() -> ChannelConfig {
    ChannelConfig {
        label: DATA_CHANNEL_LABEL.to_owned(),
        negotiated: Some(DATA_CHANNEL_ID),
        ..ChannelConfig::default()
    }
}

/// A candidate type as SDP and the report name it.
fn candidate_type(kind: CandidateKind) -> &'static str {
    match kind {
        CandidateKind::Host => "host",
        CandidateKind::PeerReflexive => "prflx",
        CandidateKind::ServerReflexive => "srflx",
        CandidateKind::Relayed => "relay",
    }
}

#[cfg(test)]
mod tests;
