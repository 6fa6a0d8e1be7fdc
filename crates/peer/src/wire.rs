//! What travels over the signaling WebSocket, seen from this client: the one
//! definition in `duet-signaling` (the server uses the same types), re-exported.
//!
//! - [`ClientMessage`] is what we send ([`ClientMessage::to_json`]),
//!   [`ServerMessage`] what the server sends ([`ServerMessage::parse`]);
//! - [`PeerMessage`] is the call inside `message.data` (descriptions,
//!   candidates, chat), shared with Duet's web client.

pub use duet_signaling::call::{
    Description, DescriptionKind, IceCandidate, PeerMessage, PeerMessageError,
};
pub use duet_signaling::{ClientMessage, IceServer, PeerId, RoomName, ServerMessage};
