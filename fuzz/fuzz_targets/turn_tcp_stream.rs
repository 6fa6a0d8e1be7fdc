//! TURN over TCP: a byte stream cut into messages the way the server's stream
//! reader cuts it (`crates/server/src/turn_stream.rs`), each message handed to
//! the relay core with a TCP five-tuple.
//!
//! Input layout (see fuzz/README.md):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | setup: bit 0 = allocate, permit the peer and bind channel 0x4000 first; bit 1 = IPv6 addresses |
//! | 1 | seconds the simulated clock moves after each chunk |
//! | 2 | `n`, the number of chunk sizes that follow |
//! | 3 .. 3+n | chunk sizes, each byte + 1 |
//! | the rest | the stream; what the chunk sizes leave over arrives as one last chunk |
//!
//! Checked: a cut message is never longer than the bytes received, nor than
//! `MAX_TCP_MESSAGE`; each call to `tcp_frame` either cuts a message (of at
//! least one byte, so the reader moves on) or waits for more, or ends the
//! connection; its answer for a prefix agrees with its answer for the whole;
//! the messages cut do not depend on how the stream was split; every answer
//! the core sends back is one whole framed message for this client only; a
//! forward stays inside its message; and closing the connection frees the
//! allocation.
#![no_main]

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use duet_turn::datapath::{MAX_TCP_MESSAGE, TcpFrame, tcp_frame};
use duet_turn::{Command, Config, FiveTuple, Server, Transport};
use libfuzzer_sys::fuzz_target;
use stun_types::attribute::{AttributeWrite, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn_types::attribute::{ChannelNumber, RequestedTransport, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};

const USER: &str = "alice";
const PASSWORD: &str = "pw";
const REALM: &str = "duet";
/// The channel the setup binds, so ChannelData in the stream reaches the data path.
const CHANNEL: u16 = 0x4000;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let mut session = Session::new(input.ipv6);
    if input.allocate {
        session.set_up_allocation();
    }

    // The reference: the whole stream at once.
    let whole = cut_all(input.stream);

    // The stream as the server reads it, chunk by chunk.
    let mut reader = Reader::default();
    let mut cut = Vec::new();
    let mut ended = false;
    for chunk in input.chunks() {
        reader.push(chunk);
        while let Some(message) = reader.next_message() {
            match message {
                Ok(range) => {
                    session.client_sends(&input.stream[range.clone()]);
                    cut.push(range);
                }
                Err(()) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            break;
        }
        session.advance(Duration::from_secs(u64::from(input.seconds_per_chunk)));
    }
    assert_eq!(cut, whole.messages, "the messages cut depend on how the stream was split");
    assert_eq!(ended, whole.invalid, "the end of the stream depends on how it was split");

    // The connection closes: its allocation goes with it.
    session.server.handle_client_closed(session.from);
    session.drain();
    assert_eq!(session.server.stats().allocations, 0, "a closed stream kept its allocation");
});

/// The fuzz input, decoded.
struct Input<'a> {
    allocate: bool,
    ipv6: bool,
    seconds_per_chunk: u8,
    chunk_sizes: &'a [u8],
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&setup, rest) = data.split_first()?;
        let (&seconds_per_chunk, rest) = rest.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let count = usize::from(count).min(rest.len());
        let (chunk_sizes, stream) = rest.split_at(count);
        Some(Self {
            allocate: setup & 1 != 0,
            ipv6: setup & 2 != 0,
            seconds_per_chunk,
            chunk_sizes,
            stream,
        })
    }

    /// The stream in the chunks a socket would return.
    fn chunks(&self) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = self.stream;
        for &size in self.chunk_sizes {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((usize::from(size) + 1).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        if !rest.is_empty() {
            chunks.push(rest);
        }
        chunks
    }
}

/// The server's stream reader, with the stream's offsets kept so the cut
/// messages can be compared with the reference.
#[derive(Default)]
struct Reader {
    pending: Vec<u8>,
    /// Offset in the stream of `pending[0]`.
    offset: usize,
    received: usize,
}

impl Reader {
    fn push(&mut self, chunk: &[u8]) {
        assert!(!chunk.is_empty(), "a socket read of 0 bytes is the end of the stream");
        self.pending.extend_from_slice(chunk);
        self.received += chunk.len();
    }

    /// The next complete message (its range in the stream), `Err` when the
    /// stream is not TURN framing, `None` when more bytes are needed.
    fn next_message(&mut self) -> Option<Result<Range<usize>, ()>> {
        let frame = tcp_frame(&self.pending);
        check_frame(&self.pending, frame);
        match frame {
            TcpFrame::Complete(size) if size <= MAX_TCP_MESSAGE => {
                assert!(size > 0, "an empty message: the reader would never move on");
                assert!(size <= self.pending.len(), "a message longer than the bytes received");
                let range = self.offset..self.offset + size;
                assert!(range.end <= self.received);
                self.pending.drain(..size);
                self.offset += size;
                Some(Ok(range))
            }
            TcpFrame::Incomplete => None,
            TcpFrame::Complete(_) | TcpFrame::Invalid => Some(Err(())),
        }
    }
}

/// `tcp_frame`'s answer for `bytes` agrees with its answer for their prefixes.
fn check_frame(bytes: &[u8], frame: TcpFrame) {
    match frame {
        TcpFrame::Complete(size) => {
            assert!(size >= 4 && size <= bytes.len(), "Complete({size}) of {} bytes", bytes.len());
            assert_eq!(tcp_frame(&bytes[..size]), TcpFrame::Complete(size));
            assert_eq!(tcp_frame(&bytes[..size - 1]), TcpFrame::Incomplete);
        }
        TcpFrame::Incomplete => {
            for len in [0, 1, bytes.len() / 2] {
                assert_eq!(tcp_frame(&bytes[..len.min(bytes.len())]), TcpFrame::Incomplete);
            }
        }
        TcpFrame::Invalid => {
            assert!(bytes.len() >= 4, "Invalid decided on fewer than 4 bytes");
            assert_eq!(tcp_frame(&bytes[..4]), TcpFrame::Invalid);
        }
    }
}

/// What the whole stream yields when it arrives at once.
struct Cut {
    messages: Vec<Range<usize>>,
    invalid: bool,
}

fn cut_all(stream: &[u8]) -> Cut {
    let mut messages = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        match tcp_frame(rest) {
            TcpFrame::Complete(size) if size <= MAX_TCP_MESSAGE => {
                messages.push(at..at + size);
                at += size;
            }
            TcpFrame::Incomplete => return Cut { messages, invalid: false },
            TcpFrame::Complete(_) | TcpFrame::Invalid => return Cut { messages, invalid: true },
        }
    }
}

/// The relay core and the one TCP client talking to it, in simulated time.
struct Session {
    server: Server,
    from: FiveTuple,
    peer: SocketAddr,
    now: Instant,
    next_transaction: u128,
    relay_port: Option<u16>,
}

impl Session {
    fn new(ipv6: bool) -> Self {
        let (client, listener, relay, peer): (SocketAddr, SocketAddr, _, SocketAddr) = if ipv6 {
            (
                "[2001:db8:1::10]:40000".parse().unwrap(),
                "[2001:db8:2::1]:443".parse().unwrap(),
                "2001:db8:2::1".parse().unwrap(),
                "[2001:db8:3::55]:7000".parse().unwrap(),
            )
        } else {
            (
                "198.51.100.10:40000".parse().unwrap(),
                "203.0.113.1:443".parse().unwrap(),
                "203.0.113.1".parse().unwrap(),
                "192.0.2.55:7000".parse().unwrap(),
            )
        };
        let mut config = Config::new(REALM, relay);
        config.credentials.users.insert(USER.to_owned(), PASSWORD.to_owned());
        config.relay_ports = 50000..=50009;
        let now = Instant::now();
        Self {
            server: Server::new(config, [7; 32], now, 1_800_000_000),
            from: FiveTuple { transport: Transport::Tcp, client, server: listener },
            peer,
            now,
            next_transaction: 1,
            relay_port: None,
        }
    }

    /// Allocates, permits the peer and binds [`CHANNEL`] to it, each answered with success.
    fn set_up_allocation(&mut self) {
        let nonce = self.nonce();
        let allocate = self.signed(ALLOCATE, &[&RequestedTransport::new(RequestedTransport::UDP)], &nonce);
        self.expect_success(&allocate);
        assert!(self.server.has_allocation(&self.from), "the setup's Allocate failed");
        let transaction = self.transaction();
        let permission = self.signed_with_peer(CREATE_PERMISSION, transaction, None, &nonce);
        self.expect_success(&permission);
        let transaction = self.transaction();
        let bind = self.signed_with_peer(CHANNEL_BIND, transaction, Some(CHANNEL), &nonce);
        self.expect_success(&bind);
    }

    /// Sends one message cut from the stream and checks what comes back.
    fn client_sends(&mut self, message: &[u8]) {
        assert!(message.len() <= MAX_TCP_MESSAGE);
        if let Some(forward) = self.server.handle_client(self.from, message, self.now) {
            assert!(self.server.has_allocation(&self.from), "a forward without an allocation");
            assert!(
                forward.payload.start <= forward.payload.end && forward.payload.end <= message.len(),
                "forward {:?} outside a message of {} bytes",
                forward.payload,
                message.len()
            );
            assert_eq!(Some(forward.relay_port), self.relay_port, "a forward from another relay port");
        }
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// Carries out the core's commands; returns the answers sent to the client.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut answers = Vec::new();
        while let Some(command) = self.server.poll_command() {
            match command {
                Command::SendToClient { to, bytes } => {
                    assert_eq!(to, self.from, "an answer to a client that sent nothing");
                    assert!(bytes.len() <= MAX_TCP_MESSAGE);
                    assert_eq!(
                        tcp_frame(&bytes),
                        TcpFrame::Complete(bytes.len()),
                        "an answer over TCP that is not one whole framed message"
                    );
                    answers.push(bytes);
                }
                Command::OpenRelay { port, .. } => {
                    assert!((50000..=50009).contains(&port), "relay port {port} outside the range");
                    self.relay_port = Some(port);
                    self.server.handle_relay_opened(port, true, self.now);
                }
                Command::CloseRelay { port } => {
                    if self.relay_port == Some(port) {
                        self.relay_port = None;
                    }
                }
            }
        }
        answers
    }

    /// The nonce of a 401 challenge to an unauthenticated Allocate.
    fn nonce(&mut self) -> String {
        let transaction = self.transaction();
        let mut request = Message::builder(request_type(ALLOCATE), transaction, MessageWriteVec::new());
        request.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
        let request = request.finish();
        self.server.handle_client(self.from, &request, self.now);
        let answers = self.drain();
        let answer = Message::from_bytes(answers.first().expect("no challenge")).unwrap();
        answer.attribute::<Nonce>().expect("a challenge without a nonce").nonce().to_owned()
    }

    fn signed(&mut self, method: Method, attributes: &[&dyn AttributeWrite], nonce: &str) -> Vec<u8> {
        let transaction = self.transaction();
        let mut request = Message::builder(request_type(method), transaction, MessageWriteVec::new());
        for attribute in attributes {
            request.add_attribute(*attribute).unwrap();
        }
        sign(&mut request, nonce);
        request.finish()
    }

    fn signed_with_peer(
        &mut self,
        method: Method,
        transaction: TransactionId,
        channel: Option<u16>,
        nonce: &str,
    ) -> Vec<u8> {
        let mut request = Message::builder(request_type(method), transaction, MessageWriteVec::new());
        request.add_attribute(&XorPeerAddress::new(self.peer, transaction)).unwrap();
        if let Some(channel) = channel {
            request.add_attribute(&ChannelNumber::new(channel)).unwrap();
        }
        sign(&mut request, nonce);
        request.finish()
    }

    fn expect_success(&mut self, request: &[u8]) {
        self.server.handle_client(self.from, request, self.now);
        let answers = self.drain();
        let answer = Message::from_bytes(answers.first().expect("no answer")).unwrap();
        assert_eq!(answer.class(), MessageClass::Success, "setup step refused: {answer}");
    }

    fn transaction(&mut self) -> TransactionId {
        self.next_transaction += 1;
        TransactionId::from(self.next_transaction)
    }
}

fn request_type(method: Method) -> MessageType {
    MessageType::from_class_method(MessageClass::Request, method)
}

fn sign(request: &mut MessageWriteVec, nonce: &str) {
    request.add_attribute(&Username::new(USER).unwrap()).unwrap();
    request.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
    request.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    let credentials = LongTermKeyCredentials::new(USER.to_owned(), PASSWORD.to_owned(), REALM.to_owned());
    request.add_message_integrity(&credentials.into(), IntegrityAlgorithm::Sha1).unwrap();
    request.add_fingerprint().unwrap();
}
