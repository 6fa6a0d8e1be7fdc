//! The call's media: what is sent (a clip per kind, played out in real time
//! once ICE and DTLS are up, on the m-line negotiated for it) and what is
//! received (frames counted, keyframes recognised, statistics kept).

use std::sync::Arc;
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Pt,
};
use str0m::stats::{MediaEgressStats, MediaIngressStats};

use super::stats::Kind;
use super::{Call, CallEvent, CallOutput, ReceivedFrame};
use crate::media::{Clip, MediaCodec, Playout};

/// While no video keyframe has arrived, ask for one this often (in frames).
const KEYFRAME_ASK_EVERY: u64 = 30;

/// One kind of media we send.
#[derive(Debug)]
pub(super) struct Outgoing {
    kind: Kind,
    clip: Arc<Clip>,
    mid: Option<Mid>,
    pt: Option<Pt>,
    /// The negotiated direction lets us send.
    sending: bool,
    playout: Option<Playout>,
    stopped: bool,
}

impl Outgoing {
    pub(super) fn new(kind: Kind, clip: Arc<Clip>) -> Self {
        Self {
            kind,
            clip,
            mid: None,
            pt: None,
            sending: false,
            playout: None,
            stopped: false,
        }
    }

    /// When the next frame is due, if this media is playing.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.stopped || !self.sending || self.pt.is_none() {
            return None;
        }
        self.playout.as_ref().map(Playout::next_due)
    }

    pub(super) fn stop(&mut self) {
        self.stopped = true;
        self.playout = None;
    }

    /// Forgets the m-line (its `Rtc` was replaced).
    pub(super) fn unbind(&mut self) {
        self.mid = None;
        self.pt = None;
        self.sending = false;
        self.playout = None;
    }
}

impl Call {
    /// True when we have media of `kind` to send.
    pub(super) fn sends(&self, kind: MediaKind) -> bool {
        let kind = to_kind(kind);
        self.outgoing.iter().any(|outgoing| outgoing.kind == kind)
    }

    fn kind_of(&self, mid: Mid) -> Option<Kind> {
        self.rtc.media(mid).map(|media| to_kind(media.kind()))
    }

    pub(super) fn on_media_added(
        &mut self,
        mid: Mid,
        kind: MediaKind,
        direction: Direction,
        now: Instant,
    ) {
        if !direction.is_sending() {
            return;
        }
        let kind = to_kind(kind);
        let Some(outgoing) = self
            .outgoing
            .iter_mut()
            .find(|outgoing| outgoing.kind == kind && outgoing.mid.is_none())
        else {
            return;
        };
        let codec = outgoing.clip.codec;
        let pt = self
            .rtc
            .writer(mid)
            .and_then(|writer| best_payload_type(writer.payload_params(), codec));
        outgoing.mid = Some(mid);
        outgoing.pt = pt;
        outgoing.sending = true;
        if pt.is_some() {
            self.stats.sent.get_mut(kind).codec = Some(codec.name());
        } else {
            self.problem(format!(
                "the other side does not take {}: not sending {kind:?}",
                codec.name()
            ));
        }
        if self.connected {
            self.start_playouts(now);
        }
    }

    pub(super) fn on_media_changed(&mut self, mid: Mid, direction: Direction, now: Instant) {
        for outgoing in &mut self.outgoing {
            if outgoing.mid == Some(mid) {
                outgoing.sending = direction.is_sending();
            }
        }
        if self.connected {
            self.start_playouts(now);
        }
    }

    /// Starts every bound, not yet playing clip from its first frame (a keyframe).
    pub(super) fn start_playouts(&mut self, now: Instant) {
        for outgoing in &mut self.outgoing {
            if outgoing.playout.is_none()
                && !outgoing.stopped
                && outgoing.sending
                && outgoing.pt.is_some()
            {
                outgoing.playout = Some(Playout::new(Arc::clone(&outgoing.clip), now));
            }
        }
    }

    /// Writes the frames that are due.
    pub(super) fn send_due_media(&mut self, now: Instant) {
        for index in 0..self.outgoing.len() {
            let Some(outgoing) = self.outgoing.get_mut(index) else {
                continue;
            };
            let (Some(mid), Some(pt), true, false) = (
                outgoing.mid,
                outgoing.pt,
                outgoing.sending,
                outgoing.stopped,
            ) else {
                continue;
            };
            let kind = outgoing.kind;
            let due = outgoing
                .playout
                .as_mut()
                .map(|p| p.poll(now))
                .unwrap_or_default();
            for frame in due {
                let time = MediaTime::new(frame.media_time, frequency(kind));
                let Some(writer) = self.rtc.writer(mid) else {
                    break;
                };
                let written = writer.write(pt, now, time, Arc::clone(&frame.frame.data));
                self.drain(now);
                match written {
                    Ok(()) => {
                        let sent = self.stats.sent.get_mut(kind);
                        sent.frames += 1;
                        sent.bytes += frame.frame.data.len() as u64;
                        sent.keyframes += u64::from(kind == Kind::Video && frame.frame.keyframe);
                        if sent.first_at.is_none() {
                            sent.first_at = Some(now);
                            self.outputs
                                .push_back(CallOutput::Event(CallEvent::FirstFrame {
                                    kind,
                                    received: false,
                                }));
                        }
                    }
                    Err(err) => {
                        self.problem(format!("could not send {kind:?}: {err}"));
                        break;
                    }
                }
            }
        }
    }

    pub(super) fn on_media_data(&mut self, data: MediaData, now: Instant) {
        let Some(kind) = self.kind_of(data.mid) else {
            return;
        };
        let codec = media_codec(data.params.spec().codec);
        let keyframe = kind == Kind::Video && codec.is_some_and(|c| c.is_keyframe(&data.data));
        let received = self.stats.received.get_mut(kind);
        received.codec = codec.map(MediaCodec::name);
        received.frames += 1;
        received.bytes += data.data.len() as u64;
        received.last_at = Some(now);
        let first = received.first_at.is_none();
        received.first_at.get_or_insert(now);
        if keyframe {
            received.keyframes += 1;
            received.first_keyframe_at.get_or_insert(now);
        }
        let ask_keyframe = kind == Kind::Video
            && received.keyframes == 0
            && (received.frames - 1).is_multiple_of(KEYFRAME_ASK_EVERY);
        if first {
            self.outputs
                .push_back(CallOutput::Event(CallEvent::FirstFrame {
                    kind,
                    received: true,
                }));
        }
        if ask_keyframe {
            let asked = self.rtc.writer(data.mid).is_some_and(|mut writer| {
                writer
                    .request_keyframe(data.rid, KeyframeRequestKind::Pli)
                    .is_ok()
            });
            self.stats.keyframe_requests_sent += u64::from(asked);
        }
        if self.config.report_bytes {
            self.outputs
                .push_back(CallOutput::Event(CallEvent::Received {
                    bytes: data.data.len() as u64,
                }));
        }
        if self.config.deliver_media
            && let Some(codec) = codec
        {
            self.outputs
                .push_back(CallOutput::Event(CallEvent::Frame(ReceivedFrame {
                    kind,
                    codec,
                    media_time: data.time.numer(),
                    data: data.data,
                    keyframe,
                })));
        }
    }

    pub(super) fn on_keyframe_request(&mut self, mid: Mid) {
        self.stats.keyframe_requests_received += 1;
        for outgoing in &mut self.outgoing {
            if outgoing.mid == Some(mid)
                && let Some(playout) = &mut outgoing.playout
            {
                playout.skip_to_keyframe();
            }
        }
    }

    pub(super) fn on_ingress_stats(&mut self, ingress: &MediaIngressStats) {
        let Some(kind) = self.kind_of(ingress.mid) else {
            return;
        };
        let received = self.stats.received.get_mut(kind);
        received.packets = ingress.packets;
        if let Some(remote) = &ingress.remote {
            received.sender_packets = remote.packets;
        }
    }

    pub(super) fn on_egress_stats(&mut self, egress: &MediaEgressStats) {
        let Some(kind) = self.kind_of(egress.mid) else {
            return;
        };
        let sent = self.stats.sent.get_mut(kind);
        sent.packets = egress.packets;
        if let Some(remote) = &egress.remote {
            sent.packets_lost = remote.packets_lost;
        }
        if egress.rtt.is_some() && self.stats.rtt.is_none() {
            self.stats.rtt = egress.rtt;
        }
    }
}

fn to_kind(kind: MediaKind) -> Kind {
    match kind {
        MediaKind::Audio => Kind::Audio,
        MediaKind::Video => Kind::Video,
    }
}

/// str0m's name of a codec we send.
fn rtp_codec(codec: MediaCodec) -> Codec {
    match codec {
        MediaCodec::Opus => Codec::Opus,
        MediaCodec::Vp8 => Codec::Vp8,
        MediaCodec::H264 => Codec::H264,
    }
}

/// A codec we receive, if we know it (only these are offered or accepted).
fn media_codec(codec: Codec) -> Option<MediaCodec> {
    match codec {
        Codec::Opus => Some(MediaCodec::Opus),
        Codec::Vp8 => Some(MediaCodec::Vp8),
        Codec::H264 => Some(MediaCodec::H264),
        _ => None,
    }
}

/// The payload type to send `codec` with. For H.264 the clips are constrained
/// baseline in packetization mode 1 (what every WebRTC H.264 decoder takes):
/// prefer that, then baseline (a superset), then any mode 1, then anything.
fn best_payload_type<'a>(
    params: impl Iterator<Item = &'a PayloadParams>,
    codec: MediaCodec,
) -> Option<Pt> {
    let wanted = rtp_codec(codec);
    params
        .filter(|p| p.spec().codec == wanted)
        .min_by_key(|p| {
            if codec != MediaCodec::H264 {
                return 0;
            }
            let format = &p.spec().format;
            let profile = format.profile_level_id.map(|id| id >> 8);
            match (format.packetization_mode, profile) {
                (Some(1), Some(0x42e0)) => 0,
                (Some(1), Some(0x4200)) => 1,
                (Some(1), _) => 2,
                _ => 3,
            }
        })
        .map(PayloadParams::pt)
}

fn frequency(kind: Kind) -> Frequency {
    match kind {
        Kind::Audio => Frequency::FORTY_EIGHT_KHZ,
        Kind::Video => Frequency::NINETY_KHZ,
    }
}
