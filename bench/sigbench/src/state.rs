//! State shared by the load engine and every client task: histograms, counters,
//! each client's status, the current phase, and a tally of rare events (closes,
//! server errors, `bye`s) keyed by the phase they happened in.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;

use crate::hist::Hist;
use tokio::sync::Notify;

/// Most measurement steps a run can have (the main relay phase plus the sweep).
pub const MAX_STEPS: usize = 64;

/// What the clients should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Stay connected, send nothing but keep-alives.
    Idle,
    /// Send relay messages between `start` and `end`, one every `period` per client.
    Relay {
        /// Step number (index into [`Shared::steps`]).
        step: u32,
        /// When the first sends may start.
        start: TokioInstant,
        /// No sends at or after this.
        end: TokioInstant,
        /// Interval between two sends of one client.
        period: Duration,
    },
    /// Close the connection and end.
    Close,
}

/// Status of one client.
pub mod status {
    /// Not joined yet.
    pub const PENDING: u8 = 0;
    /// In its room.
    pub const JOINED: u8 = 1;
    /// Never got in.
    pub const FAILED: u8 = 2;
    /// Was in, then lost its connection.
    pub const GONE: u8 = 3;
}

/// Phase labels for the event tally.
pub mod label {
    /// Connecting and joining.
    pub const CONNECT: u32 = 0;
    /// Idle between phases.
    pub const IDLE: u32 = 1;
    /// Closing at the end.
    pub const CLOSING: u32 = 2;
    /// Step `k` is `STEP_BASE + k`.
    pub const STEP_BASE: u32 = 100;
}

/// Counters of one measurement step.
#[derive(Debug, Default)]
pub struct StepCounters {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages received by the other member.
    pub received: AtomicU64,
    /// One-way relay latency, µs.
    pub latency: Hist,
    /// How late sends were against their schedule, µs (load generator health).
    pub lag: Hist,
}

/// Everything the engine and the clients share.
#[derive(Debug)]
pub struct Shared {
    /// The run's clock origin; relay timestamps are µs since it.
    pub origin: Instant,
    /// TCP + TLS + WebSocket (+ Engine.IO open) time, µs.
    pub connect_hist: Hist,
    /// Send `join` → receive `joined`, µs.
    pub join_hist: Hist,
    /// Connect time of the probes made one at a time once all clients are idle, µs.
    pub probe_connect_hist: Hist,
    /// Join latency of those probes, µs.
    pub probe_join_hist: Hist,
    /// Per-step counters.
    pub steps: Vec<StepCounters>,
    /// Per-client status (see [`status`]).
    pub status: Vec<AtomicU8>,
    /// Clients that joined.
    pub joined: AtomicUsize,
    /// Clients that failed to connect or join.
    pub failed: AtomicUsize,
    /// Woken whenever a client joins or fails.
    pub outcome: Notify,
    /// Current phase label (see [`label`]).
    pub label: AtomicU32,
    /// Rare events: "phase: what" → count.
    events: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    /// State for `clients` clients.
    pub fn new(clients: usize) -> Self {
        Self {
            origin: Instant::now(),
            connect_hist: Hist::new(),
            join_hist: Hist::new(),
            probe_connect_hist: Hist::new(),
            probe_join_hist: Hist::new(),
            steps: (0..MAX_STEPS).map(|_| StepCounters::default()).collect(),
            status: (0..clients)
                .map(|_| AtomicU8::new(status::PENDING))
                .collect(),
            joined: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            outcome: Notify::new(),
            label: AtomicU32::new(label::CONNECT),
            events: Mutex::new(BTreeMap::new()),
        }
    }

    /// µs since the origin.
    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Status of client `id`.
    pub fn status_of(&self, id: usize) -> u8 {
        self.status
            .get(id)
            .map_or(status::FAILED, |s| s.load(Ordering::Relaxed))
    }

    /// Set the status of client `id`.
    pub fn set_status(&self, id: usize, value: u8) {
        if let Some(s) = self.status.get(id) {
            s.store(value, Ordering::Relaxed);
        }
    }

    /// Count one event, labelled with the current phase.
    pub fn event(&self, what: &str) {
        let phase = match self.label.load(Ordering::Relaxed) {
            label::CONNECT => "connect".to_owned(),
            label::IDLE => "idle".to_owned(),
            label::CLOSING => "closing".to_owned(),
            n => format!("step {}", n.saturating_sub(label::STEP_BASE)),
        };
        let key = format!("{phase}: {what}");
        if let Ok(mut map) = self.events.lock() {
            *map.entry(key).or_insert(0) += 1;
        }
    }

    /// A copy of the event tally.
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.events.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Events counted so far whose label starts with `prefix`.
    pub fn events_with_prefix(&self, prefix: &str) -> u64 {
        self.events
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, v)| *v)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Counters of step `k`, if in range.
    pub fn step(&self, k: u32) -> Option<&StepCounters> {
        self.steps.get(k as usize)
    }

    /// Pairs whose two members are both in their room now.
    pub fn active_pairs(&self) -> usize {
        let n = self.status.len() / 2;
        (0..n)
            .filter(|p| {
                self.status_of(2 * p) == status::JOINED
                    && self.status_of(2 * p + 1) == status::JOINED
            })
            .count()
    }

    /// Clients connected and in their room now.
    pub fn live_clients(&self) -> usize {
        self.status
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == status::JOINED)
            .count()
    }

    /// Messages sent but not (yet) received, over all steps.
    pub fn outstanding(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| {
                s.sent
                    .load(Ordering::Relaxed)
                    .saturating_sub(s.received.load(Ordering::Relaxed))
            })
            .sum()
    }
}
