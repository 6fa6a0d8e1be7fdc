//! The call's transport side: local candidates (host, relayed) and their
//! trickling, and the relay client's datagrams and events merged into the
//! call's outputs.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Candidate;

use super::{Call, CallError, CallEvent, CallOutput, candidate_type};
use crate::relay::{Relay, RelayEvent};
use crate::wire::{IceCandidate, PeerMessage};

impl Call {
    /// Adds a local candidate; trickles it when our description is already out.
    pub(super) fn add_local_candidate(&mut self, candidate: Candidate, now: Instant) {
        let added = self.rtc.add_local_candidate(candidate).cloned();
        self.drain(now);
        let Some(added) = added else {
            return; // redundant with one we have
        };
        self.local_candidates.push(added.clone());
        if self.negotiation.described() {
            self.trickle(&added);
        }
    }

    pub(super) fn trickle(&mut self, candidate: &Candidate) {
        let ufrag = self.rtc.direct_api().local_ice_credentials().ufrag;
        self.stats.negotiation.candidates_sent += 1;
        self.outputs.push_back(CallOutput::Send(PeerMessage::Ice {
            candidate: IceCandidate {
                candidate: candidate.to_sdp_string(),
                sdp_mid: self.negotiation.first_mid().map(str::to_owned),
                sdp_m_line_index: Some(0),
                username_fragment: Some(ufrag),
            },
        }));
    }

    /// Moves the relay's datagrams and events into the call's outputs.
    pub(super) fn flush_relay(&mut self, now: Instant) {
        let Some(relay) = &mut self.relay else {
            return;
        };
        let server = relay.server();
        while let Some(contents) = relay.poll_transmit() {
            self.outputs.push_back(CallOutput::Transmit {
                destination: server,
                contents,
            });
        }
        let mut events = Vec::new();
        while let Some(event) = relay.poll_event() {
            events.push(event);
        }
        for event in events {
            match event {
                RelayEvent::Allocated(relayed) => {
                    self.stats.relay_address = Some(relayed);
                    self.outputs
                        .push_back(CallOutput::Event(CallEvent::RelayAllocated(relayed)));
                    match Candidate::relayed(relayed, self.config.local_addr, "udp") {
                        Ok(candidate) => self.add_local_candidate(candidate, now),
                        Err(err) => {
                            self.problem(format!("unusable relayed address {relayed}: {err}"))
                        }
                    }
                }
                RelayEvent::Failed(reason) => {
                    if self.config.host_candidate {
                        self.problem(format!("no relay: {reason}"));
                    } else {
                        self.fail(CallError::Relay(reason));
                    }
                }
            }
        }
    }

    pub(super) fn local_type(&self, addr: SocketAddr) -> &'static str {
        if self.relay.as_ref().and_then(Relay::relayed) == Some(addr) {
            "relay"
        } else {
            self.local_candidates
                .iter()
                .find(|c| c.addr() == addr)
                .map_or("host", |c| candidate_type(c.kind()))
        }
    }
}
