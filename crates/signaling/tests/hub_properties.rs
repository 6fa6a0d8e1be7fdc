//! Property tests of the hub: any sequence of inputs leaves it consistent,
//! never addresses a connection that is gone, and leaks nothing once everyone
//! has left.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use duet_signaling::{Config, ConnectionId, Disconnect, Hub, Output, ServerMessage};
use proptest::prelude::*;

/// A report with both parts, sent again and again: each part counts once per call.
const REPORT: &str = r#"{"type":"report","setup":{"outcome":"connected","ms":350,"path":{"local":"host","remote":"host","protocol":"udp"}},"summary":{"durationSecs":12,"rttMs":{"p50":1,"p95":2}}}"#;

#[derive(Debug, Clone)]
enum Step {
    Connect,
    Join {
        who: usize,
        room: u8,
        resume_from: Option<usize>,
    },
    Leave(usize),
    Message(usize),
    Report(usize),
    Garbage(usize, String),
    Disconnect(usize, bool),
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Connect),
        4 => (0..8usize, 0..3u8, prop::option::of(0..8usize))
            .prop_map(|(who, room, resume_from)| Step::Join { who, room, resume_from }),
        1 => (0..8usize).prop_map(Step::Leave),
        3 => (0..8usize).prop_map(Step::Message),
        2 => (0..8usize).prop_map(Step::Report),
        1 => (0..8usize, ".{0,20}").prop_map(|(who, text)| Step::Garbage(who, text)),
        2 => (0..8usize, any::<bool>()).prop_map(|(who, clean)| Step::Disconnect(who, clean)),
        2 => (0..40_000u16).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_the_hub_consistent(steps in prop::collection::vec(step(), 1..80)) {
        let config = Config { resume_queue_messages: 4, ..Config::default() };
        let grace = config.resume_grace;
        let silence = config.silence_timeout;
        let mut hub = Hub::new(config, [3; 32]);
        let mut now = Instant::now();
        let mut next = 0u64;
        let mut open: Vec<ConnectionId> = Vec::new();
        let mut gone: HashSet<ConnectionId> = HashSet::new();
        // Reports counted per connection (set-ups, summaries), and the calls it could report.
        let mut reports: HashMap<ConnectionId, (usize, usize)> = HashMap::new();
        let mut calls: HashMap<ConnectionId, usize> = HashMap::new();
        // The last resume token each connection was given.
        let mut tokens: Vec<(ConnectionId, String)> = Vec::new();

        let pick = |open: &Vec<ConnectionId>, index: usize| open.get(index % open.len().max(1)).copied();
        for step in steps {
            match step {
                Step::Connect => {
                    next += 1;
                    hub.handle_connect(ConnectionId(next), now);
                    open.push(ConnectionId(next));
                }
                Step::Join { who, room, resume_from } => {
                    if let Some(connection) = pick(&open, who) {
                        let token = resume_from
                            .and_then(|index| tokens.get(index % tokens.len().max(1)))
                            .map(|(_, token)| token.clone());
                        let text = match token {
                            Some(token) => format!(r#"{{"type":"join","room":"r{room}","resume":"{token}"}}"#),
                            None => format!(r#"{{"type":"join","room":"r{room}"}}"#),
                        };
                        hub.handle_text(connection, &text, now);
                    }
                }
                Step::Leave(who) => {
                    if let Some(connection) = pick(&open, who) {
                        hub.handle_text(connection, r#"{"type":"leave"}"#, now);
                    }
                }
                Step::Message(who) => {
                    if let Some(connection) = pick(&open, who) {
                        hub.handle_text(connection, r#"{"type":"message","data":{"x":1}}"#, now);
                    }
                }
                Step::Report(who) => {
                    if let Some(connection) = pick(&open, who) {
                        hub.handle_text(connection, REPORT, now);
                    }
                }
                Step::Garbage(who, text) => {
                    if let Some(connection) = pick(&open, who) {
                        hub.handle_text(connection, &text, now);
                    }
                }
                Step::Disconnect(who, clean) => {
                    if let Some(connection) = pick(&open, who) {
                        let how = if clean { Disconnect::Closed } else { Disconnect::Lost };
                        hub.handle_disconnect(connection, how, now);
                        open.retain(|c| *c != connection);
                        gone.insert(connection);
                    }
                }
                Step::Advance(millis) => {
                    now += Duration::from_millis(u64::from(millis));
                    hub.handle_timeout(now);
                }
            }
            while let Some(output) = hub.poll_output() {
                match output {
                    Output::Report { connection, report } => {
                        prop_assert!(!gone.contains(&connection), "a report of {connection:?}, which is gone");
                        let counted = reports.entry(connection).or_insert((0, 0));
                        counted.0 += usize::from(report.setup.is_some());
                        counted.1 += usize::from(report.summary.is_some());
                        let calls = calls.get(&connection).copied().unwrap_or(0);
                        prop_assert!(counted.0 <= calls && counted.1 <= calls,
                            "{connection:?} counted {counted:?} reports over {calls} calls");
                    }
                    Output::Send { to, message } => {
                        prop_assert!(!gone.contains(&to), "sent {message:?} to {to:?}, which is gone");
                        // Each seat or room mate of a connection may be a call to report once.
                        if matches!(message, ServerMessage::Joined { .. } | ServerMessage::OtherJoined { .. }) {
                            *calls.entry(to).or_insert(0) += 1;
                        }
                        if let ServerMessage::Joined { resume, .. } = &message {
                            tokens.push((to, resume.to_string()));
                        }
                    }
                    Output::Close { connection, .. } => {
                        prop_assert!(!gone.contains(&connection), "closed {connection:?} twice");
                        open.retain(|c| *c != connection);
                        gone.insert(connection);
                    }
                }
            }
            let stats = hub.stats();
            prop_assert_eq!(stats.connections, open.len());
            prop_assert!(stats.rooms <= 3);
        }

        // Everyone leaves; once every grace period and silence timeout has run
        // out, nothing is left behind.
        for connection in open.drain(..) {
            hub.handle_disconnect(connection, Disconnect::Lost, now);
        }
        now += grace + silence + Duration::from_secs(1);
        hub.handle_timeout(now);
        while hub.poll_output().is_some() {}
        let stats = hub.stats();
        prop_assert_eq!(stats.connections, 0);
        prop_assert_eq!(stats.rooms, 0);
        prop_assert_eq!(stats.away_seats, 0);
        prop_assert_eq!(hub.pending_timers(), 0);
    }
}
