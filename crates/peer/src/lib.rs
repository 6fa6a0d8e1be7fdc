//! duet-peer: a headless native WebRTC peer that speaks Duet's signaling protocol.
//!
//! It joins a room like the web client does, negotiates with whoever is there
//! (a browser or another native peer, with the same perfect-negotiation rules),
//! sends pre-encoded media (a VP8 test pattern and an Opus tone) looped in real
//! time, receives and checks the other side's media, answers chat on the data
//! channel, and reports what happened.
//!
//! The crate is split the way the rest of Duet is:
//!
//! - sans-IO, no sockets, no clock: [`call`] (one call: a str0m `Rtc`, the
//!   negotiation rules, the media pacing, the counters), [`relay`] (the TURN
//!   client side, on `turn-client-proto`), [`media`] (IVF and Ogg Opus, read and
//!   written), [`wire`] (the signaling and peer-message formats), [`report`]
//!   (the counters turned into a JSON report and a one-line summary);
//! - IO: [`signaling`] (the WebSocket client over TLS), [`driver`] (one tokio
//!   task per call: the UDP socket, the WebSocket, the timers), [`record`]
//!   (received media to files), [`load`] (several calls at once, in pairs).

pub mod call;
pub mod driver;
pub mod ice_servers;
pub mod load;
pub mod media;
pub mod record;
pub mod relay;
pub mod report;
pub mod signaling;
pub mod verify;
pub mod wire;
