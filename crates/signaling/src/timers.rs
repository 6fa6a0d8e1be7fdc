//! Deadlines of the hub, kept in one min-heap.
//!
//! Entries are lazy: an entry may be stale (its connection gone, its seat
//! resumed); the hub checks each entry against its state when it fires, so
//! updating a deadline never needs a search through the heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::hub::ConnectionId;
use crate::wire::{PeerId, RoomName};

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The connection may have been silent for too long.
    Silence(ConnectionId),
    /// A seat whose connection was lost may have run out of grace.
    Grace(RoomName, PeerId),
    /// The connection may not have sent `join` in time.
    Join(ConnectionId),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline, possibly of a stale entry (waking early is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
