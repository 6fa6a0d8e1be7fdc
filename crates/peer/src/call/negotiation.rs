//! Offers, answers and trickled candidates, with the web client's rules
//! (web/js/call.js):
//!
//! - Either side may offer; only one offer of ours is outstanding at a time.
//! - POLITENESS: the peer whose id sorts lower is polite. When offers cross, the
//!   impolite side ignores the other's offer (its own wins); the polite side
//!   drops its own and answers. If nothing was negotiated yet, the polite side
//!   starts over with a fresh `Rtc` instead (str0m keeps the data channel and
//!   media of a dropped first offer allocated; a fresh one is clean and costs
//!   nothing at that point), exactly as the browser does.
//! - A candidate that arrives before its description, or for a newer ICE
//!   generation (another ufrag), waits in a bounded queue and is applied as
//!   soon as a matching description is in.
//! - Garbage SDP from the other side ends the call with a clear error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::Protocol;

use super::{Call, CallError, CallOutput, candidate_type, data_channel_config};
use crate::wire::{Description, DescriptionKind, IceCandidate, PeerMessage};

/// The `msid` stream of the media we offer.
const MEDIA_STREAM_ID: &str = "duet-peer";
/// A candidate waits at most this long for its description.
const QUEUED_CANDIDATE_TTL: Duration = Duration::from_secs(60);
/// Most candidates kept waiting.
const QUEUE_LIMIT: usize = 256;

/// The negotiation state of one `Rtc`.
#[derive(Debug)]
pub(super) struct Negotiation {
    /// Our offer, until its answer comes (str0m's rollback is dropping it).
    pending: Option<SdpPendingOffer>,
    /// The m-lines that offer adds (str0m announces only the remote's with MediaAdded).
    pending_mids: Vec<Mid>,
    /// An offer/answer exchange has completed on this `Rtc`.
    negotiated: bool,
    /// The side that waits for the first offer does not offer before it.
    may_offer: bool,
    /// Something to negotiate once the current exchange is over.
    offer_wanted: bool,
    /// The data channel is allocated in this `Rtc` (it can be only once).
    channel_created: bool,
    /// Media kinds this `Rtc` already asked for in an offer.
    kinds_offered: Vec<MediaKind>,
    /// Media kinds with a live m-line in the last exchange.
    session_kinds: Vec<MediaKind>,
    /// Our first description is out: later candidates must be trickled.
    described: bool,
    first_mid: Option<String>,
    remote_ufrag: Option<String>,
    queue: VecDeque<(IceCandidate, Instant)>,
    /// The last description each side sent, for the verification code.
    local_sdp: Option<String>,
    remote_sdp: Option<String>,
}

impl Negotiation {
    pub(super) fn new(initiator: bool) -> Self {
        Self {
            pending: None,
            pending_mids: Vec::new(),
            negotiated: false,
            may_offer: initiator,
            offer_wanted: false,
            channel_created: false,
            kinds_offered: Vec::new(),
            session_kinds: Vec::new(),
            described: false,
            first_mid: None,
            remote_ufrag: None,
            queue: VecDeque::new(),
            local_sdp: None,
            remote_sdp: None,
        }
    }

    pub(super) fn described(&self) -> bool {
        self.described
    }

    pub(super) fn first_mid(&self) -> Option<&str> {
        self.first_mid.as_deref()
    }

    pub(super) fn expire_queued_candidates(&mut self, now: Instant) {
        self.queue
            .retain(|(_, at)| now.saturating_duration_since(*at) < QUEUED_CANDIDATE_TTL);
    }

    /// Forgets what belonged to the `Rtc` being replaced (not the candidate queue).
    fn reset_for_fresh_start(&mut self) {
        self.pending = None;
        self.pending_mids.clear();
        self.negotiated = false;
        self.channel_created = false;
        self.kinds_offered.clear();
        self.session_kinds.clear();
        self.first_mid = None;
    }
}

impl Call {
    /// Offers whatever needs negotiating (first media and data channel, a kind
    /// still missing), unless an offer is already out or we must wait for theirs.
    pub(super) fn make_offer(&mut self, now: Instant) {
        if self.failed || !self.negotiation.may_offer {
            return;
        }
        if self.negotiation.pending.is_some() {
            self.negotiation.offer_wanted = true;
            return;
        }
        self.negotiation.offer_wanted = false;
        let missing = self.missing_kinds();
        let directions: Vec<(MediaKind, Direction)> = missing
            .iter()
            .map(|&kind| {
                let direction = if self.sends(kind) {
                    Direction::SendRecv
                } else {
                    Direction::RecvOnly
                };
                (kind, direction)
            })
            .collect();
        let add_channel = !self.negotiation.channel_created;
        let mut api = self.rtc.sdp_api();
        let mids: Vec<Mid> = directions
            .into_iter()
            .map(|(kind, direction)| {
                // One stream for both tracks: the web client plays `streams[0]` of
                // each track in one element, so audio and video must share it.
                api.add_media(
                    kind,
                    direction,
                    Some(MEDIA_STREAM_ID.to_owned()),
                    None,
                    None,
                )
            })
            .collect();
        if add_channel {
            api.add_channel_with_config(data_channel_config());
        }
        let applied = api.apply();
        self.drain(now);
        let Some((offer, pending)) = applied else {
            return; // nothing needed negotiating
        };
        self.negotiation.kinds_offered.extend(missing);
        self.negotiation.channel_created = true;
        self.negotiation.pending = Some(pending);
        self.negotiation.pending_mids = mids;
        self.stats.negotiation.offers_sent += 1;
        self.send_description(DescriptionKind::Offer, offer.to_sdp_string());
    }

    /// Restarts ICE (new credentials, same candidates) with an offer, as the
    /// web client does when the path stays broken: unless an offer is already
    /// out (its answer, or the other side's restart, comes first).
    pub(super) fn restart_ice(&mut self, now: Instant) {
        if self.failed || !self.negotiation.negotiated || self.negotiation.pending.is_some() {
            return;
        }
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let applied = api.apply();
        self.drain(now);
        let Some((offer, pending)) = applied else {
            return;
        };
        self.negotiation.pending = Some(pending);
        self.stats.negotiation.offers_sent += 1;
        self.stats.negotiation.ice_restarts += 1;
        self.send_description(DescriptionKind::Offer, offer.to_sdp_string());
    }

    pub(super) fn on_description(&mut self, description: Description, now: Instant) {
        match description.kind {
            DescriptionKind::Offer => self.on_remote_offer(&description.sdp, now),
            DescriptionKind::Answer => self.on_remote_answer(&description.sdp, now),
            DescriptionKind::Pranswer | DescriptionKind::Rollback => {
                self.problem(format!("ignored a {:?} description", description.kind));
            }
        }
    }

    /// The code of the descriptions exchanged last (see `crate::verify`).
    fn update_verification_code(&mut self) {
        if let (Some(local), Some(remote)) =
            (&self.negotiation.local_sdp, &self.negotiation.remote_sdp)
        {
            self.stats.verification_code = crate::verify::verification_code(local, remote);
        }
    }

    fn on_remote_offer(&mut self, sdp: &str, now: Instant) {
        self.stats.negotiation.offers_received += 1;
        self.negotiation.remote_sdp = Some(sdp.to_owned());
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(offer) => offer,
            Err(err) => return self.fail(bad_description("offer", err)),
        };
        let collision = self.negotiation.pending.is_some();
        if collision && !self.config.polite {
            self.stats.negotiation.offers_ignored += 1;
            return;
        }
        if collision {
            self.stats.negotiation.rollbacks += 1;
            self.negotiation.pending = None;
            self.negotiation.pending_mids.clear();
            if self.negotiation.negotiated {
                self.negotiation.offer_wanted = true; // ours again, after this exchange
            } else {
                self.start_fresh(now);
            }
        }
        let accepted = self.rtc.sdp_api().accept_offer(offer);
        self.drain(now);
        let answer = match accepted {
            Ok(answer) => answer,
            Err(err) => return self.fail(bad_description("offer", err)),
        };
        self.negotiation.negotiated = true;
        self.negotiation.may_offer = true;
        self.negotiation.remote_ufrag = ice_ufrag(sdp);
        self.negotiation.session_kinds = media_kinds(sdp);
        if !self.negotiation.channel_created && sdp.contains("m=application") {
            self.negotiation.channel_created = true;
            self.rtc
                .direct_api()
                .create_data_channel(data_channel_config());
            self.drain(now);
        }
        self.note_remote_sdp_candidates(sdp, now);
        self.stats.negotiation.answers_sent += 1;
        self.send_description(DescriptionKind::Answer, answer.to_sdp_string());
        self.after_exchange(now);
    }

    fn on_remote_answer(&mut self, sdp: &str, now: Instant) {
        self.stats.negotiation.answers_received += 1;
        self.negotiation.remote_sdp = Some(sdp.to_owned());
        self.update_verification_code();
        let Some(pending) = self.negotiation.pending.take() else {
            // An answer to an offer we no longer have (rolled back, or a replay).
            self.stats.negotiation.unexpected_answers += 1;
            return;
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => answer,
            Err(err) => return self.fail(bad_description("answer", err)),
        };
        let accepted = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain(now);
        if let Err(err) = accepted {
            return self.fail(bad_description("answer", err));
        }
        for mid in std::mem::take(&mut self.negotiation.pending_mids) {
            let line = self
                .rtc
                .media(mid)
                .map(|media| (media.kind(), media.direction()));
            if let Some((kind, direction)) = line {
                self.on_media_added(mid, kind, direction, now);
            }
        }
        self.negotiation.negotiated = true;
        self.negotiation.remote_ufrag = ice_ufrag(sdp);
        self.negotiation.session_kinds = media_kinds(sdp);
        self.note_remote_sdp_candidates(sdp, now);
        self.after_exchange(now);
    }

    /// After an offer/answer exchange: waiting candidates, then anything still to negotiate.
    fn after_exchange(&mut self, now: Instant) {
        self.apply_queued_candidates(now);
        if self.negotiation.offer_wanted || !self.missing_kinds().is_empty() {
            self.make_offer(now);
        }
    }

    fn send_description(&mut self, kind: DescriptionKind, sdp: String) {
        // Every local candidate so far is in this description.
        self.negotiation.described = true;
        if self.negotiation.first_mid.is_none() {
            self.negotiation.first_mid = sdp_attribute(&sdp, "mid");
        }
        self.negotiation.local_sdp = Some(sdp.clone());
        self.update_verification_code();
        self.outputs.push_back(CallOutput::Send(PeerMessage::Sdp {
            description: Description { kind, sdp },
        }));
    }

    /// Replaces the `Rtc` by a new one with the same local candidates.
    fn start_fresh(&mut self, now: Instant) {
        self.stats.negotiation.fresh_starts += 1;
        self.rtc = super::build_rtc(&self.config, now);
        self.negotiation.reset_for_fresh_start();
        self.channel = None;
        self.connected = false;
        for outgoing in &mut self.outgoing {
            outgoing.unbind();
        }
        self.local_candidates.clear();
        let mut candidates = Vec::new();
        if self.config.host_candidate {
            candidates.extend(Candidate::host(self.config.local_addr, "udp").ok());
        }
        if let Some(relayed) = self.relay.as_ref().and_then(crate::relay::Relay::relayed) {
            candidates.extend(Candidate::relayed(relayed, self.config.local_addr, "udp").ok());
        }
        for candidate in candidates {
            // In the answer about to be made: nothing to trickle.
            if let Some(added) = self.rtc.add_local_candidate(candidate).cloned() {
                self.local_candidates.push(added);
            }
            self.drain(now);
        }
    }

    /// Kinds we have media for and this `Rtc` has neither negotiated nor offered.
    fn missing_kinds(&self) -> Vec<MediaKind> {
        [MediaKind::Audio, MediaKind::Video]
            .into_iter()
            .filter(|kind| {
                let present = self.negotiation.session_kinds.contains(kind);
                let offered = self.negotiation.kinds_offered.contains(kind);
                let first_offer = !self.negotiation.negotiated;
                !present && !offered && (first_offer || self.sends(*kind))
            })
            .collect()
    }

    // ---------------------------------------------------------------------
    // Remote candidates

    pub(super) fn on_remote_candidate(&mut self, candidate: IceCandidate, now: Instant) {
        self.stats.negotiation.candidates_received += 1;
        if candidate.candidate.trim().is_empty() {
            return; // end of candidates
        }
        let current = self.negotiation.remote_ufrag.as_deref();
        let for_later = match (candidate.username_fragment.as_deref(), current) {
            (Some(theirs), Some(current)) => theirs != current,
            _ => false,
        };
        if current.is_none() || for_later {
            self.stats.negotiation.candidates_queued += 1;
            self.negotiation.queue.push_back((candidate, now));
            if self.negotiation.queue.len() > QUEUE_LIMIT {
                self.negotiation.queue.pop_front();
            }
            return;
        }
        self.add_remote_candidate(&candidate, now);
    }

    fn apply_queued_candidates(&mut self, now: Instant) {
        let current = self.negotiation.remote_ufrag.clone();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.negotiation
                .queue
                .drain(..)
                .partition(|(candidate, _)| {
                    candidate.username_fragment.is_none() || candidate.username_fragment == current
                });
        self.negotiation.queue = waiting.into_iter().collect();
        for (candidate, _) in ready {
            self.add_remote_candidate(&candidate, now);
        }
    }

    fn add_remote_candidate(&mut self, init: &IceCandidate, now: Instant) {
        let line = init.candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let candidate = match Candidate::from_sdp_string(line) {
            Ok(candidate) => candidate,
            Err(err) => {
                // mDNS host names (x.local) end up here too: a browser hiding its address.
                self.stats.negotiation.candidates_rejected += 1;
                return self.problem(format!("unusable remote candidate: {err}"));
            }
        };
        if candidate.proto() != Protocol::Udp {
            self.stats.negotiation.candidates_rejected += 1;
            return; // TCP candidates: this peer speaks UDP only
        }
        self.learn_remote_candidate(&candidate, now);
        self.rtc.add_remote_candidate(candidate);
        self.drain(now);
    }

    /// Notes the candidates inside a remote description (str0m adds them itself).
    fn note_remote_sdp_candidates(&mut self, sdp: &str, now: Instant) {
        let candidates: Vec<Candidate> = sdp
            .lines()
            .filter_map(|line| line.trim().strip_prefix("a="))
            .filter(|line| line.starts_with("candidate:"))
            .filter_map(|line| Candidate::from_sdp_string(line).ok())
            .collect();
        for candidate in &candidates {
            self.learn_remote_candidate(candidate, now);
        }
    }

    /// Remembers a remote candidate's type and lets it reach our relay.
    fn learn_remote_candidate(&mut self, candidate: &Candidate, now: Instant) {
        self.remote_candidate_types
            .insert(candidate.addr(), candidate_type(candidate.kind()));
        if let Some(relay) = &mut self.relay {
            relay.permit(candidate.addr().ip(), now);
        }
        self.flush_relay(now);
    }
}

fn bad_description(kind: &'static str, error: impl std::fmt::Display) -> CallError {
    CallError::BadDescription {
        kind,
        reason: error.to_string(),
    }
}

/// The kinds of the live audio and video m-lines of a description (port 0: rejected).
fn media_kinds(sdp: &str) -> Vec<MediaKind> {
    sdp.lines()
        .filter_map(|line| line.trim().strip_prefix("m="))
        .filter_map(|media| {
            let mut fields = media.split_whitespace();
            let kind = match fields.next()? {
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                _ => return None,
            };
            (fields.next()? != "0").then_some(kind)
        })
        .collect()
}

/// The ICE username fragment of a description (the first one; bundle makes them equal).
pub(super) fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp_attribute(sdp, "ice-ufrag")
}

/// The value of the first `a=NAME:value` line.
fn sdp_attribute(sdp: &str, name: &str) -> Option<String> {
    sdp.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("a=")?
            .strip_prefix(name)?
            .strip_prefix(':')?;
        Some(value.trim().to_owned())
    })
}
