//! The outbound queue of one signaling connection, bounded in messages and in
//! bytes: what the hub has for a client that the client's task has not yet
//! written. A client that does not read fills it; the push that would go over
//! either bound fails, and the driver closes that connection (4003) instead of
//! buffering more. So a slow reader costs at most [`OUTBOX_BYTES`] here (plus
//! the one message its task is writing), whatever the other side sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

/// Messages queued for one connection at most.
pub const OUTBOX_MESSAGES: usize = 256;
/// Bytes of text queued for one connection at most (four 64 KiB frames).
pub const OUTBOX_BYTES: usize = 256 * 1024;

/// What a connection task must write.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// The hub's side: pushes without waiting.
#[derive(Debug)]
pub struct Outbox {
    sender: mpsc::Sender<Outbound>,
    bytes: Arc<AtomicUsize>,
}

/// The connection task's side.
#[derive(Debug)]
pub struct Inbox {
    receiver: mpsc::Receiver<Outbound>,
    bytes: Arc<AtomicUsize>,
}

/// The queue is over one of its bounds: the client reads too slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A new, empty queue.
#[must_use]
pub fn outbox() -> (Outbox, Inbox) {
    let (sender, receiver) = mpsc::channel(OUTBOX_MESSAGES);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            sender,
            bytes: Arc::clone(&bytes),
        },
        Inbox { receiver, bytes },
    )
}

impl Outbox {
    /// Queues a text message, unless that would go over a bound.
    pub fn push(&self, text: Utf8Bytes) -> Result<(), Full> {
        let len = text.len();
        // Only the hub (under its lock) adds, so the check and the add cannot
        // race with another push; the task only subtracts.
        if self.bytes.load(Ordering::Acquire) + len > OUTBOX_BYTES {
            return Err(Full);
        }
        self.bytes.fetch_add(len, Ordering::AcqRel);
        self.sender.try_send(Outbound::Text(text)).map_err(|_| {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            Full
        })
    }

    /// Queues a close; if the queue is full the task sees the queue end and closes anyway.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.sender.try_send(Outbound::Close(code, reason));
    }
}

impl Inbox {
    /// The next message to write; `None` once the hub has dropped the queue
    /// (the connection is over: a slow reader, or closed without a reason).
    pub async fn recv(&mut self) -> Option<Outbound> {
        let next = self.receiver.recv().await;
        if let Some(Outbound::Text(text)) = &next {
            self.bytes.fetch_sub(text.len(), Ordering::AcqRel);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(len))
    }

    #[tokio::test]
    async fn bytes_are_bounded_and_freed_as_the_task_writes() {
        let (outbox, mut inbox) = outbox();
        for _ in 0..4 {
            assert_eq!(outbox.push(text(64 * 1024)), Ok(()));
        }
        assert_eq!(outbox.push(text(1)), Err(Full), "256 KiB queued");
        assert!(matches!(inbox.recv().await, Some(Outbound::Text(_))));
        assert_eq!(outbox.push(text(64 * 1024)), Ok(()), "room again");
    }

    #[tokio::test]
    async fn messages_are_bounded_too() {
        let (outbox, _inbox) = outbox();
        for _ in 0..OUTBOX_MESSAGES {
            assert_eq!(outbox.push(text(1)), Ok(()));
        }
        assert_eq!(outbox.push(text(1)), Err(Full));
    }

    #[tokio::test]
    async fn the_queue_ends_when_the_hub_drops_it() {
        let (outbox, mut inbox) = outbox();
        outbox.close(4003, "reading too slowly");
        drop(outbox);
        assert!(matches!(inbox.recv().await, Some(Outbound::Close(4003, _))));
        assert!(inbox.recv().await.is_none());
    }
}
