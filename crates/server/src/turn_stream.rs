//! TURN over a byte stream: TCP on the relay's own port, and TCP or TLS on the
//! HTTPS port (handed over by [`crate::front`] once the first bytes were seen
//! to be STUN). One task per connection cuts messages from the stream and
//! feeds them to the relay core; answers and relayed data come back through a
//! queue bounded in bytes.
//!
//! Owns the per-connection deadlines and limits, stated here and in SECURITY
//! terms in the README:
//! - a first complete message within [`FIRST_MESSAGE_DEADLINE`];
//! - a message that has started must be complete within [`MESSAGE_DEADLINE`];
//! - without an allocation, silence ends the connection after [`IDLE_WITHOUT_ALLOCATION`];
//!   with one, after [`IDLE_WITH_ALLOCATION`] (allocations are refreshed far more often);
//! - a write that cannot finish within [`WRITE_DEADLINE`] (a client that stops
//!   reading) ends the connection;
//! - at most [`QUEUE_BYTES`] wait to be written; beyond that, relayed data is
//!   dropped as a full network would drop it;
//! - at most [`MAX_STREAMS_PER_ADDRESS`] connections from one address (IPv6: per
//!   /64) and [`MAX_STREAMS`] in all.
//!
//! Must not: hold the core's lock across an await, or buffer more than one
//! message's worth of input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duet_turn::datapath::{HEADROOM, MAX_TCP_MESSAGE, TAILROOM, TcpFrame, tcp_frame};
use duet_turn::{FiveTuple, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::limits::{Permit, Refusal};
use crate::turn::{Shared, relay_client_message, with_shared};

/// Longest a new connection may take to send its first complete message.
pub const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a started message may take to arrive whole.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(10);
/// Silence allowed on a connection that holds no allocation.
pub const IDLE_WITHOUT_ALLOCATION: Duration = Duration::from_secs(30);
/// Silence allowed on a connection that holds an allocation.
pub const IDLE_WITH_ALLOCATION: Duration = Duration::from_secs(600);
/// Longest one write to the client may take.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes queued for one client before further messages are dropped.
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Most stream connections from one address (IPv6: one /64).
pub const MAX_STREAMS_PER_ADDRESS: usize = 100;
/// Most stream connections at once.
pub const MAX_STREAMS: usize = 10_000;
/// Messages queued for one client (each also counts against [`QUEUE_BYTES`]).
const QUEUE_MESSAGES: usize = 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The sending side of one stream client's queue, bounded in bytes.
#[derive(Debug)]
pub struct StreamWriter {
    sender: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl StreamWriter {
    /// Queues a copy of `bytes`, or drops it when the client's queue is full.
    pub fn send(&self, bytes: &[u8]) {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued + bytes.len() > QUEUE_BYTES {
            return;
        }
        if self.sender.try_send(bytes.to_vec()).is_ok() {
            self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        }
    }
}

/// Registers a stream client with the relay and spawns its task. `already_read`
/// holds bytes the caller took off the stream to recognize it (the start of
/// the first message). Refused when a connection cap is reached.
pub(crate) fn accept<S>(
    shared: &Arc<Shared>,
    stream: S,
    already_read: Vec<u8>,
    from: FiveTuple,
) -> Result<(), Refusal>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let permit = shared.stream_limits.try_acquire(from.client.ip())?;
    let (sender, queue) = mpsc::channel(QUEUE_MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = StreamWriter {
        sender,
        queued: Arc::clone(&queued),
    };
    shared.lock().stream_clients.insert(from, writer);
    tokio::spawn(run(
        Arc::clone(shared),
        stream,
        already_read,
        from,
        Queue { queue, queued },
        permit,
    ));
    Ok(())
}

/// The receiving side of a client's queue.
struct Queue {
    queue: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// Why a stream connection ended (logged at debug level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Shutdown,
    Invalid,
    NoFirstMessage,
    MessageTooSlow,
    Idle,
    WriteStalled,
}

async fn run<S>(
    shared: Arc<Shared>,
    stream: S,
    already_read: Vec<u8>,
    from: FiveTuple,
    mut queue: Queue,
    _permit: Permit,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut shutdown = shared.shutdown.clone();
    let mut input = Input::new(already_read);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut scratch = vec![0u8; HEADROOM + MAX_TCP_MESSAGE + TAILROOM];
    let end = 'connection: loop {
        // Bytes already read may hold whole messages (the first one, handed over).
        loop {
            match input.next_message() {
                Ok(Some(message)) => relay_client_message(&shared, from, message, &mut scratch),
                Ok(None) => break,
                Err(()) => break 'connection End::Invalid,
            }
            input.consume();
        }
        let has_allocation = shared.lock().core.has_allocation(&from);
        let deadline = input.deadline(has_allocation);
        tokio::select! {
            // Priority: shutdown, then outgoing data, then input.
            biased;
            _ = crate::front::stopping(&mut shutdown) => break End::Shutdown,
            outgoing = queue.queue.recv() => {
                let Some(bytes) = outgoing else { break End::Closed };
                queue.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                match tokio::time::timeout(WRITE_DEADLINE, writer.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break End::Closed,
                    Err(_) => break End::WriteStalled,
                }
            }
            read = tokio::time::timeout_at(deadline.at, reader.read(&mut chunk)) => {
                let len = match read {
                    Ok(Ok(0) | Err(_)) => break End::Closed,
                    Ok(Ok(len)) => len,
                    Err(_) => break deadline.reason,
                };
                input.push(chunk.get(..len).unwrap_or_default());
            }
        }
    };
    tracing::debug!(client = %from.client, reason = ?end, "TURN stream connection ended");
    let _ = writer.shutdown().await;
    with_shared(&shared, |inner| {
        inner.stream_clients.remove(&from);
        inner.core.handle_client_closed(from);
    });
}

/// The input side of one connection: bytes received and not yet relayed, and
/// the clock of the deadlines.
struct Input {
    pending: Vec<u8>,
    /// Size of the message at the front, once [`Input::next_message`] found it.
    front: usize,
    opened: Instant,
    last_message: Option<Instant>,
    /// When the first byte of the incomplete message at the front arrived.
    message_started: Option<Instant>,
}

/// When the connection ends if nothing more arrives, and why.
struct Deadline {
    at: Instant,
    reason: End,
}

impl Input {
    fn new(already_read: Vec<u8>) -> Self {
        let now = Instant::now();
        let message_started = (!already_read.is_empty()).then_some(now);
        Self {
            pending: already_read,
            front: 0,
            opened: now,
            last_message: None,
            message_started,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.pending.is_empty() && !bytes.is_empty() {
            self.message_started = Some(Instant::now());
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The complete message at the front, if any; `Err` when the stream is not
    /// TURN framing (or announces a message larger than any TURN message).
    fn next_message(&mut self) -> Result<Option<&[u8]>, ()> {
        match tcp_frame(&self.pending) {
            TcpFrame::Complete(size) if size <= MAX_TCP_MESSAGE => {
                self.front = size;
                Ok(self.pending.get(..size))
            }
            TcpFrame::Incomplete => Ok(None),
            TcpFrame::Complete(_) | TcpFrame::Invalid => Err(()),
        }
    }

    /// Drops the message returned by the last [`Input::next_message`].
    fn consume(&mut self) {
        self.pending.drain(..self.front.min(self.pending.len()));
        self.front = 0;
        let now = Instant::now();
        self.last_message = Some(now);
        self.message_started = (!self.pending.is_empty()).then_some(now);
    }

    fn deadline(&self, has_allocation: bool) -> Deadline {
        let Some(last) = self.last_message else {
            return Deadline {
                at: self.opened + FIRST_MESSAGE_DEADLINE,
                reason: End::NoFirstMessage,
            };
        };
        if let Some(started) = self.message_started {
            return Deadline {
                at: started + MESSAGE_DEADLINE,
                reason: End::MessageTooSlow,
            };
        }
        let idle = if has_allocation {
            IDLE_WITH_ALLOCATION
        } else {
            IDLE_WITHOUT_ALLOCATION
        };
        Deadline {
            at: last + idle,
            reason: End::Idle,
        }
    }
}

/// The five-tuple of a stream client.
pub fn five_tuple(client: SocketAddr, server: SocketAddr) -> FiveTuple {
    FiveTuple {
        transport: Transport::Tcp,
        client,
        server,
    }
}
