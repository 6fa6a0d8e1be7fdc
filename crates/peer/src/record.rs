//! Recording: the media received in a call written to files a person can play
//! (VP8 to IVF and H.264 to an Annex B `.h264` stream, each starting at the
//! first keyframe; Opus to Ogg). A write error stops the recording, never the
//! call.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::call::{Kind, ReceivedFrame};
use crate::media::ivf::IvfWriter;
use crate::media::ogg::OggOpusWriter;
use crate::media::{MediaCodec, VIDEO_CLOCK_RATE, opus};

/// Writes received media to files, when asked.
#[derive(Debug)]
pub struct Recorder {
    dir: Option<PathBuf>,
    video: Option<VideoFile>,
    audio: Option<OggOpusWriter<BufWriter<File>>>,
    failed: bool,
}

impl Recorder {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            video: None,
            audio: None,
            failed: false,
        }
    }

    pub fn write(&mut self, frame: &ReceivedFrame) {
        if self.failed {
            return;
        }
        if let Err(err) = self.try_write(frame) {
            tracing::warn!("recording stopped: {err}");
            self.failed = true;
        }
    }

    fn try_write(&mut self, frame: &ReceivedFrame) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        match frame.kind {
            Kind::Video => {
                if self.video.is_none() {
                    if !frame.keyframe {
                        return Ok(()); // a file a player can open starts with a keyframe
                    }
                    self.video = Some(match frame.codec {
                        MediaCodec::H264 => VideoFile::H264(create(dir, "received-video.h264")?),
                        _ => {
                            let file = create(dir, "received-video.ivf")?;
                            let (width, height) = vp8_size(&frame.data).unwrap_or((640, 360));
                            let writer = IvfWriter::new(file, width, height, VIDEO_CLOCK_RATE)?;
                            VideoFile::Ivf(writer, frame.media_time)
                        }
                    });
                }
                match &mut self.video {
                    // One file, one codec: a mid-call codec change ends the recording.
                    Some(VideoFile::Ivf(..)) if frame.codec != MediaCodec::Vp8 => {
                        return Err(codec_changed());
                    }
                    Some(VideoFile::H264(..)) if frame.codec != MediaCodec::H264 => {
                        return Err(codec_changed());
                    }
                    Some(VideoFile::Ivf(writer, first)) => {
                        writer.write_frame(frame.media_time.saturating_sub(*first), &frame.data)?;
                    }
                    // str0m hands H.264 frames over in Annex B form: the stream is their sequence.
                    Some(VideoFile::H264(file)) => file.write_all(&frame.data)?,
                    None => {}
                }
            }
            Kind::Audio => {
                if self.audio.is_none() {
                    self.audio = Some(OggOpusWriter::new(
                        create(dir, "received-audio.ogg")?,
                        2,
                        1,
                    )?);
                }
                if let Some(writer) = &mut self.audio {
                    let samples = opus::packet_samples(&frame.data).unwrap_or(960);
                    writer.write_packet(&frame.data, samples)?;
                }
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) {
        let closed = match self.video.take() {
            Some(VideoFile::Ivf(writer, _)) => writer.finish().map(drop),
            Some(VideoFile::H264(mut file)) => file.flush(),
            None => Ok(()),
        };
        if let Err(err) = closed {
            tracing::warn!("closing the video recording: {err}");
        }
        if let Some(writer) = self.audio.take()
            && let Err(err) = writer.finish()
        {
            tracing::warn!("closing the audio recording: {err}");
        }
    }
}

/// The received video's file: IVF (with the first frame's media time, the
/// file's zero) or a raw H.264 stream.
#[derive(Debug)]
enum VideoFile {
    Ivf(IvfWriter<BufWriter<File>>, u64),
    H264(BufWriter<File>),
}

fn codec_changed() -> std::io::Error {
    std::io::Error::other("the video codec changed mid-call")
}

fn create(dir: &Path, name: &str) -> std::io::Result<BufWriter<File>> {
    std::fs::create_dir_all(dir)?;
    Ok(BufWriter::new(File::create(dir.join(name))?))
}

/// Width and height from a VP8 keyframe header (RFC 6386 §9.1).
fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    let header = frame.get(3..10)?;
    if header.get(0..3)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([*header.get(3)?, *header.get(4)?]) & 0x3fff;
    let height = u16::from_le_bytes([*header.get(5)?, *header.get(6)?]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::media::{Clip, DEFAULT_FPS, DEFAULT_H264_VIDEO, DEFAULT_VIDEO, ivf};

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("duet-peer-record-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn frames(clip: &Clip, kind: Kind) -> Vec<ReceivedFrame> {
        clip.frames
            .iter()
            .enumerate()
            .map(|(index, frame)| ReceivedFrame {
                kind,
                codec: clip.codec,
                media_time: index as u64 * 3000,
                data: Arc::clone(&frame.data),
                keyframe: frame.keyframe,
            })
            .collect()
    }

    #[test]
    fn h264_is_recorded_as_a_stream_from_its_first_keyframe() {
        let dir = scratch_dir("h264");
        let clip = Clip::from_h264(DEFAULT_H264_VIDEO, DEFAULT_FPS).unwrap();
        let received = frames(&clip, Kind::Video);
        let mut recorder = Recorder::new(Some(dir.clone()));
        // Joining mid-stream: the frames before the second keyframe (30) are skipped.
        for frame in &received[5..] {
            recorder.write(frame);
        }
        // A codec change ends the recording; what was written stays playable.
        let vp8 = Clip::from_ivf(DEFAULT_VIDEO).unwrap();
        recorder.write(&frames(&vp8, Kind::Video)[0]);
        recorder.write(&received[0]);
        recorder.finish();
        let written = std::fs::read(dir.join("received-video.h264")).unwrap();
        let expected: Vec<u8> = received[30..]
            .iter()
            .flat_map(|f| f.data.iter().copied())
            .collect();
        assert_eq!(written, expected);
        assert!(!dir.join("received-video.ivf").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vp8_is_recorded_as_ivf() {
        let dir = scratch_dir("vp8");
        let clip = Clip::from_ivf(DEFAULT_VIDEO).unwrap();
        let received = frames(&clip, Kind::Video);
        let mut recorder = Recorder::new(Some(dir.clone()));
        for frame in &received {
            recorder.write(frame);
        }
        recorder.finish();
        let written = std::fs::read(dir.join("received-video.ivf")).unwrap();
        let file = ivf::parse(&written).unwrap();
        assert_eq!((file.header.width, file.header.height), (640, 360));
        assert_eq!(file.frames.len(), received.len());
        assert_eq!(file.frames[7].data, &*received[7].data);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
