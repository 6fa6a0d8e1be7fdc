//! Ogg (RFC 3533), only as far as one Opus stream needs (RFC 7845): packets
//! read out of pages, and pages written around received Opus packets.

use std::io::{self, Write};

use super::MediaError;

const PAGE_HEADER_LEN: usize = 27;
const FLAG_CONTINUED: u8 = 0x01;
const FLAG_FIRST: u8 = 0x02;
const FLAG_LAST: u8 = 0x04;
/// Most packets the writer keeps in one page (one second of 20 ms packets).
const PACKETS_PER_PAGE: usize = 50;
/// Samples of decoder delay announced in OpusHead (libopus' usual value).
const PRE_SKIP: u16 = 312;

/// The packets of the first logical stream in `bytes`, in order. Every page's
/// checksum is verified; a packet still open at the end is dropped.
pub fn read_packets(bytes: &[u8]) -> Result<Vec<Vec<u8>>, MediaError> {
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut serial = None;
    let mut offset = 0;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + PAGE_HEADER_LEN)
            .ok_or(MediaError::BadOgg("truncated page header"))?;
        if header.get(0..4) != Some(b"OggS") {
            return Err(MediaError::BadOgg("no OggS capture pattern"));
        }
        let page_serial = header
            .get(14..18)
            .ok_or(MediaError::BadOgg("short header"))?;
        let segment_count = usize::from(*header.get(26).ok_or(MediaError::BadOgg("short header"))?);
        let table_end = offset + PAGE_HEADER_LEN + segment_count;
        let table = bytes
            .get(offset + PAGE_HEADER_LEN..table_end)
            .ok_or(MediaError::BadOgg("truncated segment table"))?;
        let body_len: usize = table.iter().map(|&len| usize::from(len)).sum();
        let page = bytes
            .get(offset..table_end + body_len)
            .ok_or(MediaError::BadOgg("truncated page"))?;
        if page_checksum(page) != stored_checksum(page)? {
            return Err(MediaError::OggChecksum(offset));
        }
        let same_stream = serial
            .get_or_insert_with(|| page_serial.to_vec())
            .as_slice()
            == page_serial;
        if same_stream {
            let mut body = table_end;
            for &len in table {
                let len = usize::from(len);
                let segment = bytes
                    .get(body..body + len)
                    .ok_or(MediaError::BadOgg("truncated segment"))?;
                partial.extend_from_slice(segment);
                body += len;
                if len < 255 {
                    packets.push(std::mem::take(&mut partial));
                }
            }
        }
        offset = table_end + body_len;
    }
    Ok(packets)
}

/// Writes received Opus packets as an Ogg Opus file a player can open.
#[derive(Debug)]
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    /// Samples (at 48 kHz) up to the end of the last packet queued.
    granule: u64,
    queued: Vec<Vec<u8>>,
    queued_segments: usize,
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the OpusHead and OpusTags pages.
    pub fn new(out: W, channels: u8, serial: u32) -> io::Result<Self> {
        let mut writer = Self {
            out,
            serial,
            sequence: 0,
            granule: 0,
            queued: Vec::new(),
            queued_segments: 0,
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels.max(1));
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        writer.write_page(&[head], 0, FLAG_FIRST)?;
        let vendor = b"duet-peer";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer.write_page(&[tags], 0, 0)?;
        Ok(writer)
    }

    /// Queues one packet lasting `samples` (48 kHz); full pages are written out.
    pub fn write_packet(&mut self, packet: &[u8], samples: u32) -> io::Result<()> {
        let segments = packet.len() / 255 + 1;
        if segments > 255 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an Opus packet over 65 kB",
            ));
        }
        if self.queued_segments + segments > 255 || self.queued.len() >= PACKETS_PER_PAGE {
            self.flush_page(0)?;
        }
        self.queued.push(packet.to_vec());
        self.queued_segments += segments;
        self.granule += u64::from(samples);
        Ok(())
    }

    /// Writes the last page (marked end of stream) and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_page(FLAG_LAST)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_page(&mut self, flags: u8) -> io::Result<()> {
        let packets = std::mem::take(&mut self.queued);
        self.queued_segments = 0;
        self.write_page(&packets, self.granule + u64::from(PRE_SKIP), flags)
    }

    fn write_page(&mut self, packets: &[Vec<u8>], granule: u64, flags: u8) -> io::Result<()> {
        let mut table = Vec::new();
        for packet in packets {
            let mut left = packet.len();
            while left >= 255 {
                table.push(255u8);
                left -= 255;
            }
            table.push(left as u8);
        }
        if table.len() > 255 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many segments for one Ogg page",
            ));
        }
        let mut page = Vec::with_capacity(PAGE_HEADER_LEN + table.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags & (FLAG_CONTINUED | FLAG_FIRST | FLAG_LAST));
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(table.len() as u8);
        page.extend_from_slice(&table);
        for packet in packets {
            page.extend_from_slice(packet);
        }
        let checksum = page_checksum(&page);
        if let Some(field) = page.get_mut(22..26) {
            field.copy_from_slice(&checksum.to_le_bytes());
        }
        self.sequence = self.sequence.wrapping_add(1);
        self.out.write_all(&page)
    }
}

fn stored_checksum(page: &[u8]) -> Result<u32, MediaError> {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(page.get(22..26).ok_or(MediaError::BadOgg("short page"))?);
    Ok(u32::from_le_bytes(raw))
}

/// The Ogg CRC-32 of a page, computed with its checksum field taken as zero.
fn page_checksum(page: &[u8]) -> u32 {
    let mut crc = 0u32;
    for (index, &byte) in page.iter().enumerate() {
        let byte = if (22..26).contains(&index) { 0 } else { byte };
        let slot = ((crc >> 24) as u8 ^ byte) as usize;
        crc = (crc << 8) ^ CRC_TABLE.get(slot).copied().unwrap_or(0);
    }
    crc
}

/// CRC-32 with polynomial 0x04c11db7, not reflected, as Ogg uses it.
static CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = (index as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 0x8000_0000 != 0 {
                (value << 1) ^ 0x04c1_1db7
            } else {
                value << 1
            };
            bit += 1;
        }
        // A constant evaluation: an index out of range fails the build, not a run.
        #[allow(clippy::indexing_slicing)]
        {
            table[index] = value;
        }
        index += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::DEFAULT_AUDIO;

    #[test]
    fn reads_the_fixture() {
        let packets = read_packets(DEFAULT_AUDIO).unwrap();
        assert!(packets[0].starts_with(b"OpusHead"));
        assert!(packets[1].starts_with(b"OpusTags"));
        assert!(packets.len() > 200);
    }

    #[test]
    fn writes_what_it_reads() {
        let packets = read_packets(DEFAULT_AUDIO).unwrap();
        let mut writer = OggOpusWriter::new(Vec::new(), 2, 7).unwrap();
        let big = vec![0xfc; 700]; // spans several 255-byte segments
        writer.write_packet(&big, 960).unwrap();
        for packet in &packets[2..] {
            writer.write_packet(packet, 960).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let again = read_packets(&bytes).unwrap();
        assert_eq!(again.len(), packets.len() + 1);
        assert_eq!(again[2], big);
        assert_eq!(again[3..], packets[2..]);
    }

    #[test]
    fn corrupted_input_is_an_error_not_a_panic() {
        let mut bytes = DEFAULT_AUDIO.to_vec();
        bytes[100] ^= 0xff;
        assert!(matches!(
            read_packets(&bytes),
            Err(MediaError::OggChecksum(_))
        ));
        for cut in [1, 26, 27, 30, DEFAULT_AUDIO.len() - 3] {
            assert!(read_packets(&DEFAULT_AUDIO[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read_packets(b"OggS but nothing else of a page").is_err());
    }
}
