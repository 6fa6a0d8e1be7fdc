//! TURN requests decoded once: each method's attributes are read and checked
//! here into a typed value, so the handlers in `server.rs` work on what the
//! client asked for, not on a message, and every malformed request is refused
//! (400, with the reason) before any state is touched.
//!
//! Owns the per-method validation of RFC 8656 §7–§12; authentication, quotas
//! and the peer policy stay with the server.

use std::net::{IpAddr, SocketAddr};

use stun_types::attribute::AttributeType;
use stun_types::message::{Message, Method};
use turn_types::attribute::{
    ChannelNumber, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};

const RESERVATION_TOKEN: AttributeType = AttributeType::new(0x0022);
const REQUESTED_ADDRESS_FAMILY: AttributeType = AttributeType::new(0x0017);
const EVEN_PORT: AttributeType = AttributeType::new(0x0018);
const REQUESTED_TRANSPORT: AttributeType = AttributeType::new(0x0019);
const XOR_PEER_ADDRESS: AttributeType = AttributeType::new(0x0012);

/// Why a request is refused: the STUN error code and its reason phrase. The
/// server turns it into the (integrity-protected) error answer, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnError {
    pub code: u16,
    pub reason: &'static str,
}

impl TurnError {
    #[must_use]
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// The address family of a relayed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// An Allocate, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocateRequest {
    /// REQUESTED-ADDRESS-FAMILY, when given.
    pub family: Option<Family>,
    /// EVEN-PORT, when given: `true` when the next port is to be reserved (R bit).
    pub even_port: Option<bool>,
    /// RESERVATION-TOKEN, when given (never with EVEN-PORT or a family).
    pub reservation: Option<u64>,
    /// LIFETIME asked for, in seconds.
    pub lifetime: Option<u32>,
}

/// A request of one of the TURN methods, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Allocate(AllocateRequest),
    /// LIFETIME asked for, in seconds (0 deletes the allocation).
    Refresh {
        lifetime: Option<u32>,
    },
    /// Every XOR-PEER-ADDRESS of the request (at least one).
    CreatePermission {
        peers: Vec<IpAddr>,
    },
    ChannelBind {
        number: u16,
        peer: SocketAddr,
    },
}

impl Request {
    /// Reads a request of a TURN method; `None` for other methods (Binding is
    /// answered without authentication, anything else gets 400 there).
    pub fn decode(message: &Message<'_>) -> Option<Result<Self, TurnError>> {
        let method: Method = message.method();
        let decoded = if method == ALLOCATE {
            decode_allocate(message).map(Request::Allocate)
        } else if method == REFRESH {
            Ok(Request::Refresh {
                lifetime: lifetime(message),
            })
        } else if method == CREATE_PERMISSION {
            decode_peers(message).map(|peers| Request::CreatePermission { peers })
        } else if method == CHANNEL_BIND {
            decode_channel_bind(message)
        } else {
            return None;
        };
        Some(decoded)
    }
}

fn lifetime(message: &Message<'_>) -> Option<u32> {
    message
        .attribute::<Lifetime>()
        .ok()
        .map(|lifetime| lifetime.seconds())
}

fn count(message: &Message<'_>, kind: AttributeType) -> usize {
    message
        .iter_attributes()
        .filter(|(_, attribute)| attribute.header.get_type() == kind)
        .count()
}

fn decode_allocate(message: &Message<'_>) -> Result<AllocateRequest, TurnError> {
    if count(message, REQUESTED_TRANSPORT) > 1 {
        return Err(TurnError::new(400, "Duplicate REQUESTED-TRANSPORT"));
    }
    match message.attribute::<RequestedTransport>() {
        Ok(transport) if transport.protocol() == RequestedTransport::UDP => {}
        Ok(_) => return Err(TurnError::new(442, "Unsupported Transport Protocol")),
        Err(_) => return Err(TurnError::new(400, "REQUESTED-TRANSPORT missing")),
    }
    let reservation = match message.raw_attribute(RESERVATION_TOKEN) {
        None => None,
        Some(_) => Some(
            message
                .attribute::<ReservationToken>()
                .map_err(|_| TurnError::new(400, "Bad RESERVATION-TOKEN"))?
                .token(),
        ),
    };
    let even_port = match message.raw_attribute(EVEN_PORT) {
        None => None,
        Some(_) => Some(
            message
                .attribute::<EvenPort>()
                .map_err(|_| TurnError::new(400, "Bad EVEN-PORT"))?
                .requested(),
        ),
    };
    let family = match message.raw_attribute(REQUESTED_ADDRESS_FAMILY) {
        None => None,
        Some(raw) => match raw.value.first() {
            Some(0x01) => Some(Family::V4),
            Some(0x02) => Some(Family::V6),
            _ => return Err(TurnError::new(400, "Bad REQUESTED-ADDRESS-FAMILY")),
        },
    };
    if reservation.is_some() && (even_port.is_some() || family.is_some()) {
        return Err(TurnError::new(
            400,
            "RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
        ));
    }
    Ok(AllocateRequest {
        family,
        even_port,
        reservation,
        lifetime: lifetime(message),
    })
}

fn decode_peers(message: &Message<'_>) -> Result<Vec<IpAddr>, TurnError> {
    let transaction = message.transaction_id();
    let mut peers = Vec::new();
    for (_, raw) in message.iter_attributes() {
        if raw.header.get_type() != XOR_PEER_ADDRESS {
            continue;
        }
        let peer = XorPeerAddress::try_from(&raw)
            .map_err(|_| TurnError::new(400, "Bad XOR-PEER-ADDRESS"))?;
        peers.push(peer.addr(transaction).ip());
    }
    if peers.is_empty() {
        return Err(TurnError::new(400, "XOR-PEER-ADDRESS missing"));
    }
    Ok(peers)
}

fn decode_channel_bind(message: &Message<'_>) -> Result<Request, TurnError> {
    let number = message
        .attribute::<ChannelNumber>()
        .map_err(|_| TurnError::new(400, "CHANNEL-NUMBER missing"))?
        .channel();
    let peer = message
        .attribute::<XorPeerAddress>()
        .map_err(|_| TurnError::new(400, "XOR-PEER-ADDRESS missing"))?
        .addr(message.transaction_id());
    Ok(Request::ChannelBind { number, peer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::message::{MessageWrite, MessageWriteExt, MessageWriteVec};

    fn allocate(attributes: &[&dyn stun_types::attribute::AttributeWrite]) -> Vec<u8> {
        let mut message = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        for attribute in attributes {
            message.add_attribute(*attribute).ok();
        }
        message.finish()
    }

    fn decoded(bytes: &[u8]) -> Option<Result<Request, TurnError>> {
        Message::from_bytes(bytes)
            .ok()
            .and_then(|m| Request::decode(&m))
    }

    #[test]
    fn an_allocate_is_read_into_its_fields() {
        let bytes = allocate(&[
            &RequestedTransport::new(17),
            &EvenPort::new(true),
            &Lifetime::new(1200),
        ]);
        assert_eq!(
            decoded(&bytes),
            Some(Ok(Request::Allocate(AllocateRequest {
                family: None,
                even_port: Some(true),
                reservation: None,
                lifetime: Some(1200),
            })))
        );
    }

    #[test]
    fn malformed_allocates_are_refused_with_their_reason() {
        let cases: [(Vec<u8>, u16); 4] = [
            (allocate(&[]), 400),
            (allocate(&[&RequestedTransport::new(6)]), 442),
            (
                allocate(&[&RequestedTransport::new(17), &RequestedTransport::new(17)]),
                400,
            ),
            (
                allocate(&[
                    &RequestedTransport::new(17),
                    &ReservationToken::new(7),
                    &EvenPort::new(false),
                ]),
                400,
            ),
        ];
        for (bytes, code) in cases {
            assert_eq!(
                decoded(&bytes).and_then(Result::err).map(|e| e.code),
                Some(code)
            );
        }
    }
}
