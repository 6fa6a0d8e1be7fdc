//! H.264 in Annex B, the raw byte stream x264 and ffmpeg write (`.h264`): NAL
//! units behind `00 00 01` or `00 00 00 01` start codes. Read for the clips we
//! send (split into access units, one per frame), and the form str0m hands
//! received H.264 frames in (so a recording is the frames written one after
//! another).
//!
//! An access unit starts (ITU-T H.264 §7.4.1.2.3) at an access unit delimiter,
//! SPS, PPS or SEI that follows a picture's slices, or at a slice whose
//! `first_mb_in_slice` is 0. That covers files with and without delimiters.

use super::MediaError;

/// NAL unit types that matter here (ITU-T H.264 Table 7-1).
const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// One NAL unit of a byte stream: where its start code begins, and its bytes
/// (header byte first, no start code).
#[derive(Debug, Clone, Copy)]
struct Nal<'a> {
    start: usize,
    data: &'a [u8],
}

impl Nal<'_> {
    fn kind(&self) -> u8 {
        self.data.first().map_or(0, |header| header & 0x1f)
    }

    fn is_slice(&self) -> bool {
        matches!(self.kind(), NAL_SLICE..=NAL_IDR)
    }

    /// A slice whose first macroblock is 0: the first slice of a picture.
    /// `first_mb_in_slice` is the slice header's first field, ue(v) coded, so
    /// it is 0 exactly when the first bit after the NAL header is 1.
    fn starts_picture(&self) -> bool {
        self.is_slice() && self.data.get(1).is_some_and(|byte| byte & 0x80 != 0)
    }
}

/// The NAL units of an Annex B byte stream, in order. Bytes before the first
/// start code are ignored; trailing zero bytes belong to no NAL unit.
fn nal_units(bytes: &[u8]) -> Vec<Nal<'_>> {
    let mut starts = Vec::new(); // (start code position, payload position)
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes.get(i..i + 3) == Some(&[0, 0, 1]) {
            let long = i > 0 && bytes.get(i - 1) == Some(&0);
            let code = if long { i - 1 } else { i };
            starts.push((code, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (index, &(code, payload)) in starts.iter().enumerate() {
        let end = starts.get(index + 1).map_or(bytes.len(), |&(next, _)| next);
        let mut data = bytes.get(payload..end).unwrap_or_default();
        while let [rest @ .., 0] = data {
            data = rest;
        }
        if !data.is_empty() {
            nals.push(Nal { start: code, data });
        }
    }
    nals
}

/// The NAL units of an Annex B byte stream (header byte first, no start code).
#[must_use]
pub fn nal_payloads(bytes: &[u8]) -> Vec<&[u8]> {
    nal_units(bytes).into_iter().map(|nal| nal.data).collect()
}

/// Splits a byte stream into access units (one coded picture each, with the
/// parameter sets and SEI before it), each still in Annex B form.
pub fn access_units(bytes: &[u8]) -> Result<Vec<&[u8]>, MediaError> {
    let nals = nal_units(bytes);
    if nals.is_empty() {
        return Err(MediaError::BadH264("no start code"));
    }
    let mut units = Vec::new();
    let mut unit_start: Option<usize> = None;
    let mut has_picture = false;
    for nal in &nals {
        let opens =
            matches!(nal.kind(), NAL_AUD | NAL_SPS | NAL_PPS | NAL_SEI) || nal.starts_picture();
        if opens && has_picture {
            if let Some(start) = unit_start {
                units.push(bytes.get(start..nal.start).unwrap_or_default());
            }
            unit_start = None;
            has_picture = false;
        }
        unit_start.get_or_insert(nal.start);
        has_picture |= nal.is_slice();
    }
    if let (Some(start), true) = (unit_start, has_picture) {
        units.push(bytes.get(start..).unwrap_or_default());
    }
    if units.is_empty() {
        return Err(MediaError::BadH264("no coded picture"));
    }
    Ok(units)
}

/// True when an access unit holds an IDR picture (a decoder can start there).
#[must_use]
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit)
        .iter()
        .any(|nal| nal.kind() == NAL_IDR)
}

/// True when `bytes` look like an Annex B stream (they open with a start code).
#[must_use]
pub fn looks_like_annex_b(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0, 0, 1]) || bytes.starts_with(&[0, 0, 0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::DEFAULT_H264_VIDEO;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00];
    const P_FIRST: &[u8] = &[0x41, 0x9a, 0x00];
    /// A second slice of the same picture (first_mb_in_slice > 0: first bit 0).
    const P_SECOND: &[u8] = &[0x41, 0x40, 0x00];
    const AUD: &[u8] = &[0x09, 0xf0];

    fn stream(nals: &[(&[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (nal, long) in nals {
            out.extend_from_slice(if *long { &[0, 0, 0, 1] } else { &[0, 0, 1] });
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn splits_pictures_with_their_parameter_sets() {
        let bytes = stream(&[
            (SPS, true),
            (PPS, true),
            (IDR, true),
            (P_FIRST, false),
            (P_SECOND, false),
            (SPS, true),
            (PPS, false),
            (IDR, true),
        ]);
        let units = access_units(&bytes).unwrap();
        assert_eq!(units.len(), 3);
        assert!(is_keyframe(units[0]));
        assert!(!is_keyframe(units[1]));
        assert!(is_keyframe(units[2]));
        assert_eq!(nal_units(units[0]).len(), 3);
        assert_eq!(nal_units(units[1]).len(), 2, "both slices of one picture");
        assert_eq!(units.concat(), bytes, "nothing lost or repeated");
    }

    #[test]
    fn delimiters_open_access_units() {
        let bytes = stream(&[
            (AUD, true),
            (SPS, true),
            (PPS, true),
            (IDR, true),
            (AUD, true),
            (P_FIRST, true),
        ]);
        let units = access_units(&bytes).unwrap();
        assert_eq!(units.len(), 2);
        assert!(units[1].starts_with(&[0, 0, 0, 1, 0x09]));
    }

    #[test]
    fn rejects_what_is_not_h264() {
        assert_eq!(
            access_units(b"DKIF and more"),
            Err(MediaError::BadH264("no start code"))
        );
        assert_eq!(
            access_units(&stream(&[(SPS, true), (PPS, true)])),
            Err(MediaError::BadH264("no coded picture"))
        );
        assert!(access_units(&[]).is_err());
        assert!(access_units(&[0, 0, 1]).is_err());
    }

    #[test]
    fn never_panics_on_cut_streams() {
        for len in 0..DEFAULT_H264_VIDEO.len().min(4_000) {
            let _ = access_units(&DEFAULT_H264_VIDEO[..len]);
            let _ = is_keyframe(&DEFAULT_H264_VIDEO[..len]);
        }
    }

    #[test]
    fn the_fixture_is_one_access_unit_per_frame() {
        let units = access_units(DEFAULT_H264_VIDEO).unwrap();
        assert_eq!(units.len(), 60);
        assert!(is_keyframe(units[0]));
        assert_eq!(units.iter().filter(|unit| is_keyframe(unit)).count(), 2);
        assert!(looks_like_annex_b(DEFAULT_H264_VIDEO));
    }
}
