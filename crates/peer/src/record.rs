//! Recording: the media received in a call written to files a person can play
//! (VP8 to IVF, starting at the first keyframe; Opus to Ogg). A write error stops
//! the recording, never the call.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::call::{Kind, ReceivedFrame};
use crate::media::ivf::IvfWriter;
use crate::media::ogg::OggOpusWriter;
use crate::media::{VIDEO_CLOCK_RATE, opus};

/// Writes received media to files, when asked.
#[derive(Debug)]
pub struct Recorder {
    dir: Option<PathBuf>,
    video: Option<(IvfWriter<BufWriter<File>>, u64)>,
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
                    let file = create(dir, "received-video.ivf")?;
                    let (width, height) = vp8_size(&frame.data).unwrap_or((640, 360));
                    self.video = Some((
                        IvfWriter::new(file, width, height, VIDEO_CLOCK_RATE)?,
                        frame.media_time,
                    ));
                }
                if let Some((writer, first)) = &mut self.video {
                    writer.write_frame(frame.media_time.saturating_sub(*first), &frame.data)?;
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
        if let Some((writer, _)) = self.video.take()
            && let Err(err) = writer.finish()
        {
            tracing::warn!("closing the video recording: {err}");
        }
        if let Some(writer) = self.audio.take()
            && let Err(err) = writer.finish()
        {
            tracing::warn!("closing the audio recording: {err}");
        }
    }
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
