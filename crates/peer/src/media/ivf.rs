//! IVF, the container libvpx writes: a 32-byte file header, then each frame as
//! a 12-byte header (size, timestamp) and its bytes. Read for the clips we
//! send, written for the VP8 we receive.

use std::io::{self, Seek, SeekFrom, Write};

use super::MediaError;

const FILE_HEADER_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 12;

/// The fields of an IVF file header that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfHeader {
    pub fourcc: [u8; 4],
    pub width: u16,
    pub height: u16,
    /// Frames per second is `timebase_denominator / timebase_numerator`.
    pub timebase_denominator: u32,
    pub timebase_numerator: u32,
    pub frame_count: u32,
}

impl IvfHeader {
    /// One frame's duration in units of `clock_rate` (one tick of the time base).
    #[must_use]
    pub fn frame_duration(&self, clock_rate: u32) -> u32 {
        let denominator = u64::from(self.timebase_denominator.max(1));
        let ticks = u64::from(clock_rate) * u64::from(self.timebase_numerator.max(1)) / denominator;
        u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
    }
}

/// One frame, borrowed from the file's bytes.
#[derive(Debug, Clone, Copy)]
pub struct IvfFrame<'a> {
    pub timestamp: u64,
    pub data: &'a [u8],
}

/// A parsed IVF file.
#[derive(Debug, Clone)]
pub struct IvfFile<'a> {
    pub header: IvfHeader,
    pub frames: Vec<IvfFrame<'a>>,
}

/// Parses a whole VP8 IVF file. A truncated last frame is an error.
pub fn parse(bytes: &[u8]) -> Result<IvfFile<'_>, MediaError> {
    let header_bytes = bytes
        .get(..FILE_HEADER_LEN)
        .ok_or(MediaError::BadIvf("shorter than its header"))?;
    if header_bytes.get(0..4) != Some(b"DKIF") {
        return Err(MediaError::BadIvf("no DKIF signature"));
    }
    let header_len = usize::from(le_u16(header_bytes, 6)?);
    let mut fourcc = [0u8; 4];
    fourcc.copy_from_slice(
        header_bytes
            .get(8..12)
            .ok_or(MediaError::BadIvf("no codec"))?,
    );
    if &fourcc != b"VP80" {
        return Err(MediaError::UnsupportedIvfCodec(
            String::from_utf8_lossy(&fourcc).into_owned(),
        ));
    }
    let header = IvfHeader {
        fourcc,
        width: le_u16(header_bytes, 12)?,
        height: le_u16(header_bytes, 14)?,
        timebase_denominator: le_u32(header_bytes, 16)?,
        timebase_numerator: le_u32(header_bytes, 20)?,
        frame_count: le_u32(header_bytes, 24)?,
    };
    let mut frames = Vec::new();
    let mut offset = header_len.max(FILE_HEADER_LEN);
    while offset < bytes.len() {
        let frame_header = bytes
            .get(offset..offset + FRAME_HEADER_LEN)
            .ok_or(MediaError::BadIvf("truncated frame header"))?;
        let size = le_u32(frame_header, 0)? as usize;
        let timestamp = le_u64(frame_header, 4)?;
        let start = offset + FRAME_HEADER_LEN;
        let data = bytes
            .get(start..start.saturating_add(size))
            .ok_or(MediaError::BadIvf("truncated frame"))?;
        frames.push(IvfFrame { timestamp, data });
        offset = start + size;
    }
    Ok(IvfFile { header, frames })
}

/// True when a VP8 frame is a keyframe (RFC 6386 §9.1: bit 0 of the first byte is 0).
#[must_use]
pub fn is_vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|byte| byte & 1 == 0)
}

/// Writes VP8 frames into an IVF file; the frame count is patched in on `finish`.
#[derive(Debug)]
pub struct IvfWriter<W: Write + Seek> {
    out: W,
    frames: u32,
}

impl<W: Write + Seek> IvfWriter<W> {
    /// Writes the file header. `timebase` is in Hz (90 000 for RTP video time).
    pub fn new(mut out: W, width: u16, height: u16, timebase: u32) -> io::Result<Self> {
        let mut header = [0u8; FILE_HEADER_LEN];
        header[0..4].copy_from_slice(b"DKIF");
        header[6..8].copy_from_slice(&(FILE_HEADER_LEN as u16).to_le_bytes());
        header[8..12].copy_from_slice(b"VP80");
        header[12..14].copy_from_slice(&width.to_le_bytes());
        header[14..16].copy_from_slice(&height.to_le_bytes());
        header[16..20].copy_from_slice(&timebase.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        out.write_all(&header)?;
        Ok(Self { out, frames: 0 })
    }

    /// Appends one frame with its timestamp in the file's time base.
    pub fn write_frame(&mut self, timestamp: u64, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        self.out.write_all(&size.to_le_bytes())?;
        self.out.write_all(&timestamp.to_le_bytes())?;
        self.out.write_all(data)?;
        self.frames = self.frames.saturating_add(1);
        Ok(())
    }

    /// Patches the frame count into the header and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.seek(SeekFrom::Start(24))?;
        self.out.write_all(&self.frames.to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn le_u16(bytes: &[u8], at: usize) -> Result<u16, MediaError> {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(bytes.get(at..at + 2).ok_or(MediaError::BadIvf("short"))?);
    Ok(u16::from_le_bytes(raw))
}

fn le_u32(bytes: &[u8], at: usize) -> Result<u32, MediaError> {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(bytes.get(at..at + 4).ok_or(MediaError::BadIvf("short"))?);
    Ok(u32::from_le_bytes(raw))
}

fn le_u64(bytes: &[u8], at: usize) -> Result<u64, MediaError> {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes.get(at..at + 8).ok_or(MediaError::BadIvf("short"))?);
    Ok(u64::from_le_bytes(raw))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::media::DEFAULT_VIDEO;

    #[test]
    fn writes_what_it_reads() {
        let file = parse(DEFAULT_VIDEO).unwrap();
        assert_eq!(file.header.frame_count as usize, file.frames.len());
        let mut writer = IvfWriter::new(Cursor::new(Vec::new()), 640, 360, 30).unwrap();
        for frame in &file.frames {
            writer.write_frame(frame.timestamp, frame.data).unwrap();
        }
        let bytes = writer.finish().unwrap().into_inner();
        let again = parse(&bytes).unwrap();
        assert_eq!(again.header, file.header);
        assert_eq!(again.frames.len(), file.frames.len());
        assert_eq!(again.frames[5].data, file.frames[5].data);
    }

    #[test]
    fn truncated_and_garbage_input_are_errors_not_panics() {
        for cut in [0, 10, 31, 32, 40, DEFAULT_VIDEO.len() - 1] {
            let result = parse(&DEFAULT_VIDEO[..cut]);
            if cut > 32 {
                assert!(result.is_err(), "cut at {cut}");
            }
        }
        assert!(parse(b"not an ivf file at all, really not one").is_err());
        let mut huge = DEFAULT_VIDEO[..44].to_vec();
        huge[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_err());
    }
}
