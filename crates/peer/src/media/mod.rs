//! Media without codecs: pre-encoded clips read from IVF (VP8), Annex B
//! (H.264) and Ogg (Opus) files, a playout cursor that says which frame is due when, and writers that
//! store what was received so a person can play it back.
//!
//! Nothing here touches a socket or a clock: the playout takes `now` and the
//! writers take any `std::io::Write`.

pub mod h264;
pub mod ivf;
pub mod ogg;
pub mod opus;

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The VP8 test pattern sent by default (see `fixtures/make-fixtures.sh`).
pub const DEFAULT_VIDEO: &[u8] = include_bytes!("../../fixtures/video-vp8.ivf");
/// The same test pattern in H.264 (constrained baseline), for `--codec h264`.
pub const DEFAULT_H264_VIDEO: &[u8] = include_bytes!("../../fixtures/video-h264.h264");
/// The frame rate of the fixtures (an Annex B stream does not say it).
pub const DEFAULT_FPS: u32 = 30;
/// The Opus tone sent by default (see `fixtures/make-fixtures.sh`).
pub const DEFAULT_AUDIO: &[u8] = include_bytes!("../../fixtures/audio-opus.ogg");

/// RTP clock rate of video (all video codecs in WebRTC).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// RTP clock rate of Opus.
pub const AUDIO_CLOCK_RATE: u32 = 48_000;

/// A falling-behind playout (the process was stopped, the machine overloaded)
/// skips ahead instead of sending a burst of late frames.
const MAX_LAG: Duration = Duration::from_millis(500);
/// Most frames one poll hands out, so a stall never turns into a flood.
const MAX_FRAMES_PER_POLL: usize = 8;

/// Why a media file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("not an IVF file: {0}")]
    BadIvf(&'static str),
    #[error("IVF file holds {0}, not VP8")]
    UnsupportedIvfCodec(String),
    #[error("not an Ogg file: {0}")]
    BadOgg(&'static str),
    #[error("Ogg page checksum mismatch at byte {0}")]
    OggChecksum(usize),
    #[error("not an Ogg Opus stream: {0}")]
    BadOpus(&'static str),
    #[error("not an H.264 Annex B stream: {0}")]
    BadH264(&'static str),
    #[error("the clip has no frames")]
    Empty,
}

/// The codec a clip is encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaCodec {
    Opus,
    Vp8,
    H264,
}

impl MediaCodec {
    /// The name the report and the status line use (the SDP name).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Vp8 => "VP8",
            Self::H264 => "H264",
        }
    }

    /// True when an encoded frame of this codec is one a decoder can start from.
    #[must_use]
    pub fn is_keyframe(self, frame: &[u8]) -> bool {
        match self {
            Self::Opus => true,
            Self::Vp8 => ivf::is_vp8_keyframe(frame),
            Self::H264 => h264::is_keyframe(frame),
        }
    }
}

/// One encoded frame of a clip.
#[derive(Debug, Clone)]
pub struct ClipFrame {
    pub data: Arc<[u8]>,
    /// How long the frame lasts, in units of the clip's clock rate.
    pub duration: u32,
    /// A frame a decoder can start from.
    pub keyframe: bool,
}

/// A pre-encoded clip, played in a loop.
#[derive(Debug, Clone)]
pub struct Clip {
    pub codec: MediaCodec,
    pub clock_rate: u32,
    pub frames: Vec<ClipFrame>,
    /// Picture size, for video.
    pub size: Option<(u16, u16)>,
}

impl Clip {
    /// The VP8 frames of an IVF file; every frame lasts one tick of its frame rate.
    pub fn from_ivf(bytes: &[u8]) -> Result<Self, MediaError> {
        let file = ivf::parse(bytes)?;
        let duration = file.header.frame_duration(VIDEO_CLOCK_RATE);
        let frames: Vec<ClipFrame> = file
            .frames
            .iter()
            .map(|frame| ClipFrame {
                data: Arc::from(frame.data),
                duration,
                keyframe: ivf::is_vp8_keyframe(frame.data),
            })
            .collect();
        if frames.is_empty() {
            return Err(MediaError::Empty);
        }
        Ok(Self {
            codec: MediaCodec::Vp8,
            clock_rate: VIDEO_CLOCK_RATE,
            frames,
            size: Some((file.header.width, file.header.height)),
        })
    }

    /// The pictures of an H.264 Annex B stream, `fps` of them per second.
    pub fn from_h264(bytes: &[u8], fps: u32) -> Result<Self, MediaError> {
        let duration = VIDEO_CLOCK_RATE / fps.clamp(1, 240);
        let frames: Vec<ClipFrame> = h264::access_units(bytes)?
            .into_iter()
            .map(|unit| ClipFrame {
                data: Arc::from(unit),
                duration,
                keyframe: h264::is_keyframe(unit),
            })
            .collect();
        Ok(Self {
            codec: MediaCodec::H264,
            clock_rate: VIDEO_CLOCK_RATE,
            frames,
            size: None,
        })
    }

    /// A video file by its contents: IVF (VP8) or an H.264 Annex B stream,
    /// whose frame rate is `fps` (the stream does not carry it).
    pub fn from_video_file(bytes: &[u8], fps: u32) -> Result<Self, MediaError> {
        if h264::looks_like_annex_b(bytes) {
            Self::from_h264(bytes, fps)
        } else {
            Self::from_ivf(bytes)
        }
    }

    /// The Opus packets of an Ogg Opus file, each lasting what its TOC byte says.
    pub fn from_ogg_opus(bytes: &[u8]) -> Result<Self, MediaError> {
        let packets = ogg::read_packets(bytes)?;
        let mut packets = packets.into_iter();
        let head = packets.next().ok_or(MediaError::BadOpus("no OpusHead"))?;
        if !head.starts_with(b"OpusHead") {
            return Err(MediaError::BadOpus("the first packet is not OpusHead"));
        }
        let tags = packets.next().ok_or(MediaError::BadOpus("no OpusTags"))?;
        if !tags.starts_with(b"OpusTags") {
            return Err(MediaError::BadOpus("the second packet is not OpusTags"));
        }
        let mut frames = Vec::new();
        for packet in packets {
            let samples =
                opus::packet_samples(&packet).ok_or(MediaError::BadOpus("a malformed packet"))?;
            frames.push(ClipFrame {
                data: Arc::from(packet),
                duration: samples,
                keyframe: true,
            });
        }
        if frames.is_empty() {
            return Err(MediaError::Empty);
        }
        Ok(Self {
            codec: MediaCodec::Opus,
            clock_rate: AUDIO_CLOCK_RATE,
            frames,
            size: None,
        })
    }

    /// Average bitrate of the clip in bits per second.
    #[must_use]
    pub fn bitrate(&self) -> u64 {
        let bytes: u64 = self.frames.iter().map(|f| f.data.len() as u64).sum();
        let units: u64 = self.frames.iter().map(|f| u64::from(f.duration)).sum();
        if units == 0 {
            return 0;
        }
        bytes * 8 * u64::from(self.clock_rate) / units
    }
}

/// A frame that is due now, with its RTP media time (in clock-rate units,
/// growing across loops).
#[derive(Debug, Clone)]
pub struct DueFrame {
    pub frame: ClipFrame,
    pub media_time: u64,
}

/// Plays a clip in a loop in real time: says which frame is due at `now`.
#[derive(Debug, Clone)]
pub struct Playout {
    clip: Arc<Clip>,
    next_index: usize,
    /// Media time of the next frame, in clock-rate units.
    media_time: u64,
    /// When media time `anchor_media` is due.
    anchor: Instant,
    anchor_media: u64,
}

impl Playout {
    /// Starts the clip from its first frame, due at `now`.
    #[must_use]
    pub fn new(clip: Arc<Clip>, now: Instant) -> Self {
        Self {
            clip,
            next_index: 0,
            media_time: 0,
            anchor: now,
            anchor_media: 0,
        }
    }

    /// When the next frame is due.
    #[must_use]
    pub fn next_due(&self) -> Instant {
        let elapsed = self.media_time.saturating_sub(self.anchor_media);
        self.anchor + units_to_duration(elapsed, self.clip.clock_rate)
    }

    /// The frames due at `now` (at most a few; a playout far behind skips ahead).
    pub fn poll(&mut self, now: Instant) -> Vec<DueFrame> {
        let mut due = Vec::new();
        if self.clip.frames.is_empty() {
            return due;
        }
        if now.saturating_duration_since(self.next_due()) > MAX_LAG {
            // Far behind: carry on from now, media time continuing.
            self.anchor = now;
            self.anchor_media = self.media_time;
        }
        while due.len() < MAX_FRAMES_PER_POLL && self.next_due() <= now {
            let Some(frame) = self.clip.frames.get(self.next_index) else {
                self.next_index = 0;
                continue;
            };
            due.push(DueFrame {
                frame: frame.clone(),
                media_time: self.media_time,
            });
            self.media_time += u64::from(frame.duration.max(1));
            self.next_index = (self.next_index + 1) % self.clip.frames.len().max(1);
        }
        due
    }

    /// Makes the next frame a keyframe: jumps to the next keyframe of the clip
    /// (a pre-encoded clip cannot make one on demand).
    pub fn skip_to_keyframe(&mut self) {
        let count = self.clip.frames.len();
        for step in 0..count {
            let index = (self.next_index + step) % count;
            if self.clip.frames.get(index).is_some_and(|f| f.keyframe) {
                self.next_index = index;
                return;
            }
        }
    }
}

fn units_to_duration(units: u64, clock_rate: u32) -> Duration {
    let rate = u64::from(clock_rate.max(1));
    let seconds = units / rate;
    let rest = units % rate;
    Duration::from_secs(seconds) + Duration::from_nanos(rest * 1_000_000_000 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fixtures_parse() {
        let video = Clip::from_ivf(DEFAULT_VIDEO).unwrap();
        assert_eq!(video.size, Some((640, 360)));
        assert_eq!(video.frames.len(), 60);
        assert!(video.frames[0].keyframe);
        assert_eq!(video.frames.iter().filter(|f| f.keyframe).count(), 2);
        assert_eq!(video.frames[0].duration, 3000);
        let audio = Clip::from_ogg_opus(DEFAULT_AUDIO).unwrap();
        assert!(audio.frames.len() >= 200, "{}", audio.frames.len());
        assert!(audio.frames.iter().all(|f| f.duration == 960));
        assert!(video.bitrate() > 300_000 && video.bitrate() < 2_000_000);
        let h264 = Clip::from_video_file(DEFAULT_H264_VIDEO, DEFAULT_FPS).unwrap();
        assert_eq!(h264.codec, MediaCodec::H264);
        assert_eq!(h264.frames.len(), 60);
        assert_eq!(h264.frames[0].duration, 3000);
        assert!(h264.frames[0].keyframe && h264.frames[30].keyframe);
        assert!(h264.bitrate() > 300_000 && h264.bitrate() < 2_000_000);
        assert_eq!(
            Clip::from_video_file(DEFAULT_VIDEO, DEFAULT_FPS)
                .unwrap()
                .codec,
            MediaCodec::Vp8
        );
    }

    #[test]
    fn playout_keeps_real_time_and_loops() {
        let clip = Arc::new(Clip::from_ivf(DEFAULT_VIDEO).unwrap());
        let start = Instant::now();
        let mut playout = Playout::new(Arc::clone(&clip), start);
        let mut sent = Vec::new();
        for ms in (0..=3000).step_by(10) {
            sent.extend(playout.poll(start + Duration::from_millis(ms)));
        }
        // 3 s at 30 fps, the first frame at 0: 91 frames, the clip looped once.
        assert_eq!(sent.len(), 91);
        assert_eq!(sent[60].media_time, 60 * 3000);
        assert!(sent[60].frame.keyframe);
        let times: Vec<u64> = sent.iter().map(|f| f.media_time).collect();
        assert!(times.windows(2).all(|w| w[1] == w[0] + 3000));
    }

    #[test]
    fn playout_skips_ahead_after_a_stall() {
        let clip = Arc::new(Clip::from_ivf(DEFAULT_VIDEO).unwrap());
        let start = Instant::now();
        let mut playout = Playout::new(clip, start);
        let late = playout.poll(start + Duration::from_secs(10));
        assert!(late.len() <= MAX_FRAMES_PER_POLL);
        assert!(playout.next_due() > start + Duration::from_secs(10));
    }

    #[test]
    fn keyframe_request_jumps_to_a_keyframe() {
        let clip = Arc::new(Clip::from_ivf(DEFAULT_VIDEO).unwrap());
        let start = Instant::now();
        let mut playout = Playout::new(clip, start);
        playout.poll(start + Duration::from_millis(100));
        playout.skip_to_keyframe();
        let next = playout.poll(start + Duration::from_millis(200));
        assert!(next[0].frame.keyframe);
    }
}
