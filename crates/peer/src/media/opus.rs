//! The one thing Duet needs to know about an Opus packet without decoding it:
//! how long it lasts, from its TOC byte (RFC 6716 §3.1).

/// Samples at 48 kHz in one Opus packet, or None for a malformed packet.
#[must_use]
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame_samples: u32 = match (config, config % 4) {
        // SILK-only: 10, 20, 40, 60 ms.
        (0..=11, 0) => 480,
        (0..=11, 1) => 960,
        (0..=11, 2) => 1920,
        (0..=11, _) => 2880,
        // Hybrid: 10, 20 ms.
        (12..=15, 0 | 2) => 480,
        (12..=15, _) => 960,
        // CELT-only: 2.5, 5, 10, 20 ms.
        (_, 0) => 120,
        (_, 1) => 240,
        (_, 2) => 480,
        (_, _) => 960,
    };
    let frames: u32 = match toc & 0b11 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0b0011_1111),
    };
    let samples = frame_samples * frames;
    // RFC 6716 §3.2.5: a packet lasts at most 120 ms.
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_toc_byte() {
        assert_eq!(packet_samples(&[0b1111_1000]), Some(960)); // CELT 20 ms, one frame
        assert_eq!(packet_samples(&[0b0000_1000]), Some(960)); // SILK 20 ms
        assert_eq!(packet_samples(&[0b0000_1001]), Some(1920)); // two SILK 20 ms frames
        assert_eq!(packet_samples(&[0b1110_0011, 3]), Some(360)); // three CELT 2.5 ms frames
        assert_eq!(packet_samples(&[0b0001_1011, 3]), None); // 3 × 60 ms: too long
        assert_eq!(packet_samples(&[0b0110_0000]), Some(480)); // hybrid 10 ms
        assert_eq!(packet_samples(&[]), None);
        assert_eq!(packet_samples(&[0b0000_0011]), None); // code 3 without a count
        assert_eq!(packet_samples(&[0b0000_0011, 0]), None); // zero frames
    }
}
