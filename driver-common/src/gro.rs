//! Coalescing on the way back into a TUN with offloads: consecutive in-order TCP segments of one flow
//! that one batch delivers to the host are written as *one* packet with a `virtio_net_hdr` asking the
//! kernel to segment it again (`GSO_TCPV4`/`GSO_TCPV6`, partial checksum) — one `write` and one trip
//! through the kernel's stack for up to 64 kB instead of one per segment. The reverse of
//! [`crate::gso::Segments`], with the rules of the kernel's own TCP GRO, kept strict:
//!
//! - same IP version, addresses, ports, TOS/traffic class, TTL/hop limit, DF; no IPv4 options, no IPv6
//!   extension headers;
//! - same TCP header length and options bytes, acknowledgement number and window; flags exactly ACK on
//!   every segment but the last, which may add PSH (a FIN, SYN, RST, URG, ECE or CWR is written alone);
//! - each segment's sequence number continues the previous one; every segment carries the first one's
//!   payload size except the last, which may carry less (and ends the train);
//! - every segment's IP and TCP checksums verify (coalescing must not launder a corrupted segment: the
//!   kernel completes the train's checksum over whatever bytes it is given);
//! - at most 64 segments and 65,535 bytes of IP packet.
//!
//! A segment that fits none of this is written as it is.

use pias_proto::checksum;

use crate::gso::{VNET_HDR_LEN, VnetHdr};

/// Most segments in one train (the kernel's GSO segment limit is far higher; this bounds the iovecs).
pub const MAX_SEGMENTS: usize = 64;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// A train being gathered: the first segment's headers and where the next must continue.
#[derive(Debug, Clone, Copy)]
pub struct Train {
    v6: bool,
    /// IP header length.
    l3: usize,
    /// IP + TCP header length.
    hdr: usize,
    mss: usize,
    count: usize,
    payload: usize,
    next_seq: u32,
    /// A shorter or PSH segment ended it.
    closed: bool,
    psh: bool,
}

/// The IP header length and version of a plain TCP packet whose checksums verify, with payload.
fn tcp_layout(p: &[u8]) -> Option<(bool, usize, usize)> {
    let v = p.first()? >> 4;
    let (v6, l3) = match v {
        4 => {
            if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
                return None;
            }
            if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
                return None;
            }
            // Not a fragment (DF is fine).
            if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 || checksum::checksum(&p[..20]) != 0 {
                return None;
            }
            (false, 20)
        }
        6 => {
            if p.len() < 60 || p[6] != 6 || usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let thl = usize::from(p[l3 + 12] >> 4) * 4;
    if thl < 20 || p.len() <= l3 + thl {
        return None;
    }
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    let pseudo = checksum::add(0, addrs) + 6 + (p.len() - l3) as u64;
    if !checksum::verifies(checksum::add(pseudo, &p[l3..])) {
        return None;
    }
    Some((v6, l3, l3 + thl))
}

fn seq(p: &[u8], l3: usize) -> u32 {
    u32::from_be_bytes([p[l3 + 4], p[l3 + 5], p[l3 + 6], p[l3 + 7]])
}

impl Train {
    /// Starts a train at `first`, if it could begin one (a plain TCP data segment with ACK alone).
    pub fn start(first: &[u8]) -> Option<Train> {
        let (v6, l3, hdr) = tcp_layout(first)?;
        if first[l3 + 13] != ACK {
            return None;
        }
        let mss = first.len() - hdr;
        Some(Train {
            v6,
            l3,
            hdr,
            mss,
            count: 1,
            payload: mss,
            next_seq: seq(first, l3).wrapping_add(mss as u32),
            closed: false,
            psh: false,
        })
    }

    /// How many segments the train holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The header length (IP + TCP): each segment's payload starts there.
    pub fn header_len(&self) -> usize {
        self.hdr
    }

    /// Adds `p` (whose first segment is `first`) if it continues the train; whether it did.
    pub fn push(&mut self, first: &[u8], p: &[u8]) -> bool {
        if self.closed || self.count == MAX_SEGMENTS {
            return false;
        }
        let Some((v6, l3, hdr)) = tcp_layout(p) else {
            return false;
        };
        let len = p.len() - hdr;
        if v6 != self.v6 || l3 != self.l3 || hdr != self.hdr || len > self.mss {
            return false;
        }
        if self.hdr + self.payload + len > 65_535 || seq(p, l3) != self.next_seq {
            return false;
        }
        // IP: everything but the lengths, the identification and the checksum.
        let same_ip = if v6 {
            p[..4] == first[..4] && p[6..40] == first[6..40]
        } else {
            p[..2] == first[..2] && p[6..10] == first[6..10] && p[12..20] == first[12..20]
        };
        // TCP: ports, acknowledgement, header length, window, urgent pointer and options (the flags apart).
        let (t, f) = (&p[l3..hdr], &first[l3..hdr]);
        let same_tcp =
            t[..4] == f[..4] && t[8..13] == f[8..13] && t[14..16] == f[14..16] && t[18..] == f[18..];
        let flags = t[13];
        if !same_ip || !same_tcp || (flags != ACK && flags != ACK | PSH) {
            return false;
        }
        self.count += 1;
        self.payload += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        if flags & PSH != 0 {
            self.psh = true;
            self.closed = true;
        }
        if len < self.mss {
            self.closed = true;
        }
        true
    }

    /// The `virtio_net_hdr` and the train's headers (the first segment's, `first`, with the train's
    /// lengths, the IPv4 checksum, PSH if the last had it, and the TCP checksum left partial for the
    /// kernel); the payloads of the segments follow them in order.
    pub fn headers(&self, first: &[u8], vnet: &mut [u8; VNET_HDR_LEN], out: &mut [u8]) {
        let (l3, hdr) = (self.l3, self.hdr);
        let total = hdr + self.payload;
        out[..hdr].copy_from_slice(&first[..hdr]);
        if self.v6 {
            out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[10..12].fill(0);
            let c = checksum::checksum(&out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        if self.psh {
            out[l3 + 13] |= PSH;
        }
        let addrs = if self.v6 { &out[8..40] } else { &out[12..20] };
        let pseudo = checksum::add(0, addrs) + 6 + (total - l3) as u64;
        out[l3 + 16..l3 + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        VnetHdr {
            flags: 1, // NEEDS_CSUM
            gso_type: if self.v6 { 4 } else { 1 },
            hdr_len: hdr as u16,
            gso_size: self.mss as u16,
            csum_start: l3 as u16,
            csum_offset: 16,
        }
        .write(vnet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso::Segments;

    /// A TCP train of `payload` bytes as the kernel would hand it over (partial checksum), v4 or v6.
    fn train(v6: bool, payload: usize, flags: u8) -> (VnetHdr, Vec<u8>) {
        let l3 = if v6 { 40 } else { 20 };
        let opts = [1u8, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8];
        let thl = 20 + opts.len();
        let mut p = vec![0u8; l3 + thl + payload];
        let n = p.len();
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((n - 40) as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 63;
            p[8] = 0xfd;
            p[23] = 1;
            p[24] = 0xfd;
            p[39] = 2;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            p[4..6].copy_from_slice(&[0x12, 0x34]);
            p[6] = 0x40;
            p[8] = 63;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 1, 7, 2]);
            p[16..20].copy_from_slice(&[10, 0, 0, 9]);
        }
        p[l3..l3 + 4].copy_from_slice(&[0x14, 0x51, 0x9c, 0x40]);
        p[l3 + 4..l3 + 8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[l3 + 8..l3 + 12].copy_from_slice(&4242u32.to_be_bytes());
        p[l3 + 12] = ((thl / 4) as u8) << 4;
        p[l3 + 13] = flags;
        p[l3 + 14..l3 + 16].copy_from_slice(&[1, 0]);
        p[l3 + 20..l3 + thl].copy_from_slice(&opts);
        for (i, b) in p[l3 + thl..].iter_mut().enumerate() {
            *b = (i * 13 % 256) as u8;
        }
        let h = VnetHdr {
            flags: 1,
            gso_type: if v6 { 4 } else { 1 },
            gso_size: 1400,
            ..VnetHdr::default()
        };
        (h, p)
    }

    fn cut(h: &VnetHdr, p: &[u8]) -> Vec<Vec<u8>> {
        let s = Segments::new(h, p).unwrap();
        (0..s.count())
            .map(|i| {
                let mut out = vec![0u8; 70_000];
                let n = s.write(i, &mut out);
                out.truncate(n);
                out
            })
            .collect()
    }

    /// Coalesces `segs` from the first: the vnet header and the packet as the kernel would read it.
    fn coalesce(segs: &[Vec<u8>]) -> (usize, VnetHdr, Vec<u8>) {
        let mut t = Train::start(&segs[0]).expect("starts");
        let mut n = 1;
        while n < segs.len() && t.push(&segs[0], &segs[n]) {
            n += 1;
        }
        let mut vnet = [0u8; VNET_HDR_LEN];
        let mut out = vec![0u8; t.header_len()];
        t.headers(&segs[0], &mut vnet, &mut out);
        for s in &segs[..n] {
            out.extend(&s[t.header_len()..]);
        }
        (n, VnetHdr::parse(&vnet), out)
    }

    #[test]
    fn a_coalesced_train_segments_back_into_the_same_packets() {
        for v6 in [false, true] {
            // ACK on all, PSH on the last: kept on the last after the round trip.
            let (h, p) = train(v6, 9000, ACK | PSH);
            let segs = cut(&h, &p);
            assert_eq!(segs.len(), 7);
            let (n, vh, big) = coalesce(&segs);
            assert_eq!(n, 7, "v6 {v6}");
            assert_eq!(vh.gso_size, 1400);
            assert_eq!(big.len(), p.len());
            let h = if v6 { 72 } else { 52 };
            assert_eq!(big[h - 12..], p[h - 12..], "options and payload (v6 {v6})");
            // What the kernel would do with it: cut again, checksums complete.
            assert_eq!(cut(&vh, &big), segs, "v6 {v6}");
        }
    }

    #[test]
    fn trains_stop_where_the_rules_say() {
        let (h, p) = train(false, 7500, ACK);
        let segs = cut(&h, &p);
        assert_eq!(segs.len(), 6);
        assert_eq!(coalesce(&segs).0, 6, "the shorter last one ends it");
        // A gap in the sequence.
        let mut gap = segs.clone();
        gap.remove(2);
        assert_eq!(coalesce(&gap).0, 2);
        // A different flow (another port; checksums made valid again by cutting a different train).
        let (h2, mut p2) = train(false, 7500, ACK);
        p2[21] ^= 1;
        let other = cut(&h2, &p2);
        let mixed = vec![segs[0].clone(), segs[1].clone(), other[2].clone()];
        assert_eq!(coalesce(&mixed).0, 2);
        // A corrupted segment is not coalesced.
        let mut bad = segs.clone();
        bad[3][100] ^= 0xff;
        assert_eq!(coalesce(&bad).0, 3);
        // Out of order: the train ends before the segment that does not continue it.
        let mut swapped = segs.clone();
        swapped.swap(4, 5);
        assert_eq!(coalesce(&swapped).0, 4);
        // A FIN never starts or joins a train.
        let (hf, pf) = train(false, 3000, ACK | 0x01);
        let fin = cut(&hf, &pf);
        assert_eq!(coalesce(&fin).0, 2);
        assert!(Train::start(&fin[2]).is_none());
        // PSH in the middle closes the train after it.
        let (hp, pp) = train(false, 3000, ACK | PSH);
        let mut psh = cut(&hp, &pp);
        let extra = segs[1].clone();
        psh.push(extra);
        assert_eq!(coalesce(&psh).0, 3);
        // Garbage starts nothing.
        assert!(Train::start(&[]).is_none());
        assert!(Train::start(&[0x45; 30]).is_none());
    }
}
