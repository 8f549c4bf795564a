//! Reading classic pcap captures (tcpdump's `-w` format), for `pias decode`, fixtures and the fuzz corpus.
//!
//! Both byte orders and both time resolutions (micro and nano) are read. [`PcapRecord::ip`] strips the
//! link layer for the link types a Linux capture produces: Ethernet (with one 802.1Q tag), raw IP, Linux
//! cooked v1 and v2, and the IPv4/IPv6-only types. Everything is borrowed from the input; malformed files give
//! a typed error, never a panic.

use crate::error::{Result, WireError, need};

/// A pcap file's records, borrowed.
#[derive(Debug, Clone)]
pub struct PcapReader<'a> {
    rest: &'a [u8],
    le: bool,
    nanos: bool,
    /// The capture's link type.
    pub link_type: u32,
}

/// One captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapRecord<'a> {
    /// Capture time in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Length of the frame on the wire (the record may hold less if the capture was truncated).
    pub orig_len: u32,
    pub link_type: u32,
    pub data: &'a [u8],
}

impl<'a> PcapReader<'a> {
    /// Checks the global header.
    pub fn new(b: &'a [u8]) -> Result<Self> {
        need("pcap header", b, 24)?;
        let (le, nanos) = match [b[0], b[1], b[2], b[3]] {
            [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
            [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
            [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
            _ => {
                return Err(WireError::Malformed {
                    what: "pcap",
                    reason: "bad magic (not a classic pcap file)",
                });
            }
        };
        let link_type = rd32(le, &b[20..24]) & 0x0fff_ffff;
        Ok(PcapReader {
            rest: &b[24..],
            le,
            nanos,
            link_type,
        })
    }
}

fn rd32(le: bool, b: &[u8]) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

impl<'a> Iterator for PcapReader<'a> {
    type Item = Result<PcapRecord<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        if let Err(e) = need("pcap record header", r, 16) {
            self.rest = &[];
            return Some(Err(e));
        }
        let secs = u64::from(rd32(self.le, &r[0..4]));
        let frac = u64::from(rd32(self.le, &r[4..8]));
        let incl = rd32(self.le, &r[8..12]) as usize;
        let orig_len = rd32(self.le, &r[12..16]);
        if let Err(e) = need("pcap record data", r, 16 + incl) {
            self.rest = &[];
            return Some(Err(e));
        }
        self.rest = &r[16 + incl..];
        let time_ns = secs * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 };
        Some(Ok(PcapRecord {
            time_ns,
            orig_len,
            link_type: self.link_type,
            data: &r[16..16 + incl],
        }))
    }
}

impl<'a> PcapRecord<'a> {
    /// The IP packet in the frame, if the link type is known and the frame carries IPv4 or IPv6.
    pub fn ip(&self) -> Option<&'a [u8]> {
        let f = self.data;
        let (ethertype, ip) = match self.link_type {
            // Ethernet, possibly with one 802.1Q tag.
            1 => {
                let t = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
                if t == 0x8100 {
                    (u16::from_be_bytes([*f.get(16)?, *f.get(17)?]), f.get(18..)?)
                } else {
                    (t, f.get(14..)?)
                }
            }
            // Raw IP (101 and the old 12/14), IPv4 (228), IPv6 (229): the version nibble decides.
            101 | 12 | 14 | 228 | 229 => (if f.first()? >> 4 == 6 { 0x86dd } else { 0x0800 }, f),
            // Linux cooked v1: protocol at 14, header 16 bytes.
            113 => (u16::from_be_bytes([*f.get(14)?, *f.get(15)?]), f.get(16..)?),
            // Linux cooked v2: protocol at 0, header 20 bytes.
            276 => (u16::from_be_bytes([*f.first()?, *f.get(1)?]), f.get(20..)?),
            _ => return None,
        };
        matches!(ethertype, 0x0800 | 0x86dd).then_some(ip)
    }
}

/// Writes a classic pcap (little-endian, microseconds, link type raw IP) of IP packets into a `Vec`.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    out: Vec<u8>,
}

impl Default for PcapWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PcapWriter {
    /// Link type of the file: raw IP (101).
    pub const LINK_TYPE_RAW: u32 = 101;

    pub fn new() -> Self {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65_535u32.to_le_bytes());
        out.extend_from_slice(&Self::LINK_TYPE_RAW.to_le_bytes());
        PcapWriter { out }
    }

    /// Appends one IP packet captured at `time_us` microseconds.
    pub fn push(&mut self, time_us: u64, ip: &[u8]) {
        let len = ip.len().min(65_535) as u32;
        self.out
            .extend_from_slice(&((time_us / 1_000_000) as u32).to_le_bytes());
        self.out
            .extend_from_slice(&((time_us % 1_000_000) as u32).to_le_bytes());
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(&ip[..len as usize]);
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn writer_output_reads_back() {
        let mut w = PcapWriter::new();
        w.push(1_500_000, &[0x45, 1, 2]);
        w.push(2_000_001, &[0x60, 9]);
        let recs: Vec<_> = PcapReader::new(w.bytes())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].time_ns, 1_500_000_000);
        assert_eq!(recs[1].ip(), Some(&[0x60, 9][..]));
    }

    use super::*;

    #[test]
    fn reads_the_fixtures_and_rejects_garbage() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dns4.pcap");
        let bytes = std::fs::read(path).unwrap();
        let r = PcapReader::new(&bytes).unwrap();
        let recs: Vec<_> = r.collect::<Result<_>>().unwrap();
        assert!(recs.len() >= 2);
        assert!(recs.iter().all(|r| r.ip().is_some()));
        assert!(
            recs.iter()
                .filter(|r| r.ip().is_some_and(|ip| ip[0] >> 4 == 4))
                .count()
                >= 2
        );
        assert!(PcapReader::new(&[0u8; 24]).is_err());
        // A truncated record is an error, then the iterator ends.
        let cut = &bytes[..bytes.len() - 3];
        let errs = PcapReader::new(cut).unwrap().filter(|r| r.is_err()).count();
        assert_eq!(errs, 1);
    }
}
