//! The outbound queue of one signaling connection, bounded in messages and in
//! bytes: what the hub has for a client that the client's task has not yet
//! written. A client that does not read fills it; the push that would go over
//! either bound fails, and the driver closes that connection (4003) instead of
//! buffering more. So a slow reader costs at most [`OUTBOX_BYTES`] here (plus
//! the one message its task is writing), whatever the other side sends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// Messages queued for one connection at most.
pub const OUTBOX_MESSAGES: usize = 256;
/// Bytes of text queued for one connection at most (four 64 KiB frames).
pub const OUTBOX_BYTES: usize = 256 * 1024;
/// Slots an empty queue keeps; a burst's larger buffer is given back once
/// the task has written it all (idle connections are most of them).
const KEPT_SLOTS: usize = 4;

/// What a connection task must write.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// The hub's side: pushes without waiting. Dropping it ends the queue once
/// the task has taken what is in it.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The connection task's side.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
}

/// The queue is over one of its bounds (or its task is gone): the client
/// reads too slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// One queue, shared by its two sides. Nothing is allocated for the messages
/// until the first one (an idle connection's queue is a few words), unlike a
/// channel that reserves a block of slots up front.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the task when a message is queued or the hub lets go.
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Outbound>,
    bytes: usize,
    hub_gone: bool,
    task_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A new, empty queue.
#[must_use]
pub fn outbox() -> (Outbox, Inbox) {
    let shared = Arc::new(Shared::default());
    (
        Outbox {
            shared: Arc::clone(&shared),
        },
        Inbox { shared },
    )
}

impl Outbox {
    /// Queues a text message, unless that would go over a bound.
    pub fn push(&self, text: Utf8Bytes) -> Result<(), Full> {
        {
            let mut queue = self.shared.lock();
            if queue.task_gone
                || queue.messages.len() >= OUTBOX_MESSAGES
                || queue.bytes + text.len() > OUTBOX_BYTES
            {
                return Err(Full);
            }
            queue.bytes += text.len();
            queue.messages.push_back(Outbound::Text(text));
        }
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Queues a close; if the queue is full the task sees the queue end and closes anyway.
    pub fn close(&self, code: u16, reason: &'static str) {
        {
            let mut queue = self.shared.lock();
            if queue.messages.len() >= OUTBOX_MESSAGES {
                return;
            }
            queue.messages.push_back(Outbound::Close(code, reason));
        }
        self.shared.ready.notify_one();
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.lock().hub_gone = true;
        self.shared.ready.notify_one();
    }
}

impl Inbox {
    /// The next message to write; `None` once the hub has dropped the queue
    /// (the connection is over: a slow reader, or closed without a reason).
    /// Cancel-safe: a message is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            {
                let mut queue = self.shared.lock();
                if let Some(next) = queue.messages.pop_front() {
                    if let Outbound::Text(text) = &next {
                        queue.bytes -= text.len();
                    }
                    if queue.messages.is_empty() && queue.messages.capacity() > KEPT_SLOTS {
                        queue.messages.shrink_to(KEPT_SLOTS);
                    }
                    return Some(next);
                }
                if queue.hub_gone {
                    return None;
                }
            }
            // A push between the check above and this wait leaves a permit
            // in `ready`, so it is not missed.
            self.shared.ready.notified().await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.shared.lock().task_gone = true;
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
    #[tokio::test]
    async fn a_waiting_task_is_woken_even_after_an_abandoned_wait() {
        let (outbox, mut inbox) = outbox();
        // A wait given up (as a `select!` does when another branch wins)…
        let abandoned =
            tokio::time::timeout(std::time::Duration::from_millis(10), inbox.recv()).await;
        assert!(abandoned.is_err());
        // …loses nothing: a message pushed from another task wakes the next one.
        let pusher = tokio::spawn(async move {
            tokio::task::yield_now().await;
            assert_eq!(outbox.push(text(3)), Ok(()));
            outbox
        });
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), inbox.recv()).await;
        assert!(matches!(next, Ok(Some(Outbound::Text(t))) if t.len() == 3));
        drop(pusher.await);
    }

    #[tokio::test]
    async fn a_queue_whose_task_is_gone_refuses_pushes() {
        let (outbox, inbox) = outbox();
        drop(inbox);
        assert_eq!(outbox.push(text(1)), Err(Full));
    }

    #[tokio::test]
    async fn a_burst_gives_its_buffer_back_once_written() {
        let (outbox, mut inbox) = outbox();
        for _ in 0..200 {
            assert_eq!(outbox.push(text(10)), Ok(()));
        }
        assert!(outbox.shared.lock().messages.capacity() >= 200);
        for _ in 0..200 {
            assert!(inbox.recv().await.is_some());
        }
        let queue = outbox.shared.lock();
        assert_eq!(queue.bytes, 0);
        assert!(queue.messages.capacity() <= KEPT_SLOTS);
    }
}
