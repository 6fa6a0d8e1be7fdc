//! The relay's data path: ChannelData and Data indications framed in place,
//! in the caller's buffer, without allocating.
//!
//! Owns byte layouts only (RFC 8656 §11.4 and §12.4); no state, no IO.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// Bytes a peer datagram's buffer must keep free in front of the payload: the
/// largest header written there (a Data indication to an IPv6 peer:
/// 20 header + 24 XOR-PEER-ADDRESS + 4 DATA header).
pub const HEADROOM: usize = 48;
/// Bytes a peer datagram's buffer must keep free after the payload (padding).
pub const TAILROOM: usize = 3;

const MAGIC_COOKIE: u32 = 0x2112_A442;
const DATA_INDICATION: u16 = 0x0017;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;

/// Splits a client's ChannelData message into its channel number and the
/// range of its payload. `None` if it is not well-formed.
pub fn parse_channel_data(packet: &[u8]) -> Option<(u16, Range<usize>)> {
    let header = packet.get(..4)?;
    let number = u16::from_be_bytes([*header.first()?, *header.get(1)?]);
    let length = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    if !(0x4000..=0x7FFF).contains(&number) || 4 + length > packet.len() {
        return None;
    }
    Some((number, 4..4 + length))
}

/// Frames the payload at `HEADROOM..HEADROOM + len` as ChannelData; over TCP
/// it is padded to a multiple of four bytes. Returns the range to send.
pub fn frame_channel_data(
    buffer: &mut [u8],
    len: usize,
    channel: u16,
    pad: bool,
) -> Option<Range<usize>> {
    let length = u16::try_from(len).ok()?;
    let start = HEADROOM - 4;
    let header = buffer.get_mut(start..HEADROOM)?;
    let [channel_high, channel_low] = channel.to_be_bytes();
    let [length_high, length_low] = length.to_be_bytes();
    header.copy_from_slice(&[channel_high, channel_low, length_high, length_low]);
    let mut end = HEADROOM + len;
    if pad {
        let padded = end + padding(len);
        buffer.get_mut(end..padded)?.fill(0);
        end = padded;
    }
    Some(start..end)
}

/// Frames the payload at `HEADROOM..HEADROOM + len` as a Data indication from
/// `peer`. Returns the range to send.
pub fn frame_data_indication(
    buffer: &mut [u8],
    len: usize,
    peer: SocketAddr,
    transaction: [u8; 12],
) -> Option<Range<usize>> {
    let data_length = u16::try_from(len).ok()?;
    let address_length: usize = match peer.ip() {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 20,
    };
    let padded = len + padding(len);
    let attributes = 4 + address_length + 4 + padded;
    let message_length = u16::try_from(attributes).ok()?;
    let start = HEADROOM - (20 + 4 + address_length + 4);
    let head = buffer.get_mut(start..HEADROOM)?;
    let mut cursor = Cursor { bytes: head, at: 0 };
    cursor.put(&DATA_INDICATION.to_be_bytes())?;
    cursor.put(&message_length.to_be_bytes())?;
    cursor.put(&MAGIC_COOKIE.to_be_bytes())?;
    cursor.put(&transaction)?;
    cursor.put(&XOR_PEER_ADDRESS.to_be_bytes())?;
    cursor.put(&u16::try_from(address_length).ok()?.to_be_bytes())?;
    let port = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match peer.ip() {
        IpAddr::V4(v4) => {
            cursor.put(&[0, 0x01])?;
            cursor.put(&port.to_be_bytes())?;
            cursor.put(&(u32::from(v4) ^ MAGIC_COOKIE).to_be_bytes())?;
        }
        IpAddr::V6(v6) => {
            cursor.put(&[0, 0x02])?;
            cursor.put(&port.to_be_bytes())?;
            let mut mask = [0u8; 16];
            for (target, source) in mask
                .iter_mut()
                .zip(MAGIC_COOKIE.to_be_bytes().iter().chain(transaction.iter()))
            {
                *target = *source;
            }
            let mut address = v6.octets();
            for (byte, mask) in address.iter_mut().zip(mask.iter()) {
                *byte ^= mask;
            }
            cursor.put(&address)?;
        }
    }
    cursor.put(&DATA.to_be_bytes())?;
    cursor.put(&data_length.to_be_bytes())?;
    let end = HEADROOM + padded;
    buffer.get_mut(HEADROOM + len..end)?.fill(0);
    Some(start..end)
}

/// Largest message accepted on a TCP connection.
pub const MAX_TCP_MESSAGE: usize = 4 + 65535 + 3;

/// How a TCP byte stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFrame {
    /// A whole message of this many bytes is at the front.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// Neither STUN nor ChannelData: the stream is garbage.
    Invalid,
}

/// Finds the first message in a TCP stream from a client (RFC 8656 §12.5:
/// STUN messages, and ChannelData padded to a multiple of four).
pub fn tcp_frame(stream: &[u8]) -> TcpFrame {
    let (Some(first), Some(high), Some(low)) = (stream.first(), stream.get(2), stream.get(3))
    else {
        return TcpFrame::Incomplete;
    };
    let length = usize::from(u16::from_be_bytes([*high, *low]));
    let total = match first >> 6 {
        0b00 => 20 + length,
        0b01 => 4 + length + padding(length),
        _ => return TcpFrame::Invalid,
    };
    if stream.len() >= total {
        TcpFrame::Complete(total)
    } else {
        TcpFrame::Incomplete
    }
}

/// Size of an XOR-MAPPED-ADDRESS attribute for `address`.
pub fn mapped_address_len(address: SocketAddr) -> usize {
    match address.ip() {
        IpAddr::V4(_) => 12,
        IpAddr::V6(_) => 24,
    }
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

struct Cursor<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, data: &[u8]) -> Option<()> {
        let end = self.at + data.len();
        self.bytes.get_mut(self.at..end)?.copy_from_slice(data);
        self.at = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::message::Message;
    use turn_types::attribute::{Data, XorPeerAddress};

    fn buffer_with(payload: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0xEE; HEADROOM + payload.len() + TAILROOM];
        buffer[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        buffer
    }

    #[test]
    fn channel_data_round_trips_and_pads_only_for_tcp() {
        let mut buffer = buffer_with(b"hello");
        let range = frame_channel_data(&mut buffer, 5, 0x4001, false).unwrap();
        let framed = &buffer[range];
        assert_eq!(framed, &[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(parse_channel_data(framed), Some((0x4001, 4..9)));
        let mut buffer = buffer_with(b"hello");
        let range = frame_channel_data(&mut buffer, 5, 0x4001, true).unwrap();
        assert_eq!(range.len(), 12);
        assert_eq!(&buffer[range][9..], &[0, 0, 0]);
    }

    #[test]
    fn data_indications_parse_with_a_real_stun_parser() {
        for peer in ["198.51.100.7:40000", "[2001:db8::7]:40000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut buffer = buffer_with(b"media!!");
            let range = frame_data_indication(&mut buffer, 7, peer, [7; 12]).unwrap();
            let message = Message::from_bytes(&buffer[range]).unwrap();
            assert_eq!(message.method(), turn_types::message::DATA);
            assert_eq!(
                message.class(),
                stun_types::message::MessageClass::Indication
            );
            let address = message.attribute::<XorPeerAddress>().unwrap();
            assert_eq!(address.addr(message.transaction_id()), peer);
            assert_eq!(message.attribute::<Data>().unwrap().data(), b"media!!");
        }
    }

    #[test]
    fn tcp_streams_are_cut_into_messages() {
        assert_eq!(tcp_frame(&[0x00, 0x01]), TcpFrame::Incomplete);
        let mut stun = vec![0x00, 0x01, 0x00, 0x04];
        stun.extend_from_slice(&[0; 20]);
        assert_eq!(tcp_frame(&stun), TcpFrame::Complete(24));
        assert_eq!(tcp_frame(&stun[..23]), TcpFrame::Incomplete);
        let channel = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 0x40];
        assert_eq!(tcp_frame(&channel), TcpFrame::Complete(12));
        assert_eq!(tcp_frame(&[0xff, 0, 0, 0]), TcpFrame::Invalid);
    }

    #[test]
    fn malformed_channel_data_is_rejected() {
        assert_eq!(parse_channel_data(&[0x40]), None);
        assert_eq!(parse_channel_data(&[0x40, 0, 0, 9, 1, 2]), None);
        assert_eq!(parse_channel_data(&[0x80, 0, 0, 0]), None);
        assert_eq!(parse_channel_data(&[0x40, 0, 0, 0]), Some((0x4000, 4..4)));
    }
}
