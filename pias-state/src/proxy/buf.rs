//! The packet buffer the data path works in place on.

/// A packet inside a larger buffer, with room in front of it.
///
/// Drivers read a packet into `buf[HEADROOM..]` and hand `PacketBuf::new(buf, HEADROOM, HEADROOM + n)` to
/// the proxy. The proxy may prepend an overlay header into the headroom, strip one, or rewrite the packet,
/// and the driver then sends `bytes()`: no copy on the forwarding paths.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
}

/// Headroom drivers should leave: enough for the largest overlay header PIAS prepends.
pub const HEADROOM: usize = 64;

impl<'a> PacketBuf<'a> {
    /// The packet is `buf[start..end]`. Out-of-range bounds are clamped to the buffer.
    pub fn new(buf: &'a mut [u8], start: usize, end: usize) -> Self {
        let end = end.min(buf.len());
        let start = start.min(end);
        PacketBuf { buf, start, end }
    }

    /// The packet.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The packet, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Where the packet lies in the buffer.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.start..self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes available in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Grows the packet by `n` bytes at the front and returns them; `None` (unchanged) without headroom.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        Some(&mut self.buf[self.start..self.start + n])
    }

    /// Drops `n` bytes from the front (at most the whole packet).
    pub fn strip_front(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Cuts the packet to `len` bytes (never grows it).
    pub fn truncate(&mut self, len: usize) {
        self.end = self.end.min(self.start + len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_strip_stay_in_bounds() {
        let mut raw = [0u8; 16];
        raw[8..12].copy_from_slice(&[1, 2, 3, 4]);
        let mut p = PacketBuf::new(&mut raw, 8, 12);
        assert!(p.prepend(9).is_none());
        p.prepend(2).unwrap().copy_from_slice(&[9, 9]);
        assert_eq!(p.bytes(), &[9, 9, 1, 2, 3, 4]);
        p.strip_front(3);
        assert_eq!(p.bytes(), &[2, 3, 4]);
        p.strip_front(100);
        assert!(p.is_empty());
        let p = PacketBuf::new(&mut raw, 20, 30);
        assert!(p.is_empty());
    }
}
