//! Sans-IO signaling core of Duet.
//!
//! This crate owns the rules of a Duet room: who may sit in it (at most two
//! members), how members find each other, how their messages are relayed, how a
//! member that lost its connection gets its seat back (`resume`), and when a
//! silent connection is dropped. It owns the wire format of the signaling
//! protocol too (see `docs/signaling-protocol.md`).
//!
//! It must not do IO: no sockets, no clock, no threads, no global state. The
//! driver (the `duet` binary) feeds it inputs with the current [`Instant`],
//! drains [`Output`]s with [`Hub::poll_output`] and wakes it at
//! [`Hub::poll_timeout`]. Randomness (member ids, resume tokens) comes from a
//! seeded generator, so tests are deterministic.
//!
//! [`Instant`]: std::time::Instant

pub mod call;
pub mod cluster;
pub mod cmd;
mod hub;
mod rate;
pub mod report;
pub mod signal;
pub mod socketio;
mod timers;
mod wire;

pub use hub::{
    Config, ConnectionId, Disconnect, Hub, Output, RateLimit, RoomSnapshot, SeatSnapshot,
    SeatState, Stats,
};
pub use wire::{
    ClientMessage, CloseCode, ErrorCode, IceServer, MessageKind, ParseError, PeerId, ResumeToken,
    RoomName, RoomNameError, ServerMessage,
};
