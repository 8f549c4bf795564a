//! Batched packet I/O around [`ProxyLoop`], shared by the drivers: many packets per system call on the
//! overlay socket ([`crate::mmsg`]: `recvmmsg`, `sendmmsg`, UDP GRO and GSO), one `read`/`write` per
//! packet on the TUN. A driver keeps only how it waits: it passes the descriptors and, for reads, a
//! closure that performs the read through its reactor's readiness (tokio's `try_io`; mio calls straight
//! through).
//!
//! Per step, up to [`CHUNK`] packets are read into fixed slots at `HEADROOM`, handed to the core in place,
//! and forwarded from the same bytes: host-bound results written to the TUN at once, overlay-bound ones
//! gathered and sent together at the end of the step — where consecutive frames to one peer of one size
//! (a bulk flow's full-size segments) leave as one `UDP_SEGMENT` message. A coalesced receive (`UDP_GRO`)
//! is split back into its datagrams, each copied into a scratch slot at `HEADROOM` for the core (a copy of
//! one datagram costs far less than the system calls coalescing saves); what those produce for the
//! overlay (rare: overlay-to-overlay forwarding) is sent at once. Buffers are allocated once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use pias_state::proxy::{HEADROOM, Verdict};

use crate::mmsg::{self, CHUNK, Got, Offloads, Out};
use crate::{MAX_PACKET, ProxyLoop, Side};

/// The batch buffers and the overlay socket's negotiated offloads.
#[derive(Debug)]
pub struct Batch {
    /// Receive slots: packets are read at `HEADROOM`, handled and forwarded in place.
    slots: Vec<Vec<u8>>,
    /// What the last `recvmmsg` got.
    got: Vec<Got>,
    /// Overlay-bound datagrams of the current step.
    outs: Vec<Out>,
    /// Where one datagram of a coalesced receive is handled.
    scratch: Vec<u8>,
    offloads: Offloads,
}

impl Batch {
    /// Buffers for steps of up to `min(batch, CHUNK)` packets; negotiates the overlay socket's UDP
    /// offloads (logged once).
    pub fn new(batch: usize, overlay: BorrowedFd<'_>) -> Batch {
        let n = batch.clamp(1, CHUNK);
        Batch {
            slots: (0..n).map(|_| vec![0u8; HEADROOM + MAX_PACKET]).collect(),
            got: vec![Got::default(); n],
            outs: Vec::with_capacity(n),
            scratch: vec![0u8; HEADROOM + MAX_PACKET],
            offloads: Offloads::negotiate(overlay.as_raw_fd()),
        }
    }

    /// The overlay socket's offloads (`gso` turns off if a path refuses it).
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Up to [`ProxyLoop::batch`] packets from the TUN, each by `read` (into the slice it is given;
    /// `WouldBlock` when the queue is empty). Another error is counted and ends the batch (a persistent
    /// one must not spin the loop). Returns whether the batch filled up (packets may be left).
    pub fn tun(
        &mut self,
        core: &mut ProxyLoop,
        tun: BorrowedFd<'_>,
        overlay: BorrowedFd<'_>,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> bool {
        let now = core.now();
        let mut left = core.batch();
        let mut got = 0;
        let mut more = false;
        'outer: while left > 0 {
            let step = left.min(self.slots.len());
            self.outs.clear();
            let mut read_n = 0;
            while read_n < step {
                let slot = read_n;
                let n = match read(&mut self.slots[slot][HEADROOM..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.flush(core, overlay);
                        break 'outer;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        core.on_read_error(Side::Tun, &e);
                        self.flush(core, overlay);
                        break 'outer;
                    }
                };
                read_n += 1;
                got += 1;
                let (v, r) = core.on_host(now, &mut self.slots[slot], n);
                self.route(core, tun, v, slot, r.start, r.end);
            }
            self.flush(core, overlay);
            left -= read_n;
            more = left == 0;
        }
        core.on_batch(got);
        more
    }

    /// Up to [`ProxyLoop::batch`] datagrams from the overlay socket, `recvmmsg` per step. `io` runs the
    /// receive it is given through the driver's readiness (or just calls it). Each error takes a place in
    /// the batch, so a stream of them cannot spin the loop. Returns whether the batch filled up.
    pub fn overlay(
        &mut self,
        core: &mut ProxyLoop,
        tun: BorrowedFd<'_>,
        overlay: BorrowedFd<'_>,
        mut io: impl FnMut(&mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>,
    ) -> bool {
        let now = core.now();
        let mut left = core.batch();
        let mut got = 0;
        let mut more = false;
        let fd = overlay.as_raw_fd();
        while left > 0 {
            let want = left.min(self.slots.len());
            let (slots, gots) = (&mut self.slots[..want], &mut self.got[..want]);
            let n = match io(&mut || mmsg::recv(fd, slots, HEADROOM, gots)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    core.on_read_error(Side::Overlay, &e);
                    left -= 1;
                    more = left == 0;
                    continue;
                }
            };
            self.outs.clear();
            for slot in 0..n {
                let g = self.got[slot];
                if g.seg >= g.len {
                    got += 1;
                    let (v, r) = core.on_overlay(now, g.from, &mut self.slots[slot], g.len);
                    self.route(core, tun, v, slot, r.start, r.end);
                    continue;
                }
                // Coalesced by UDP_GRO: each datagram through the scratch slot.
                for d in g.datagrams() {
                    got += 1;
                    let len = d.len();
                    let src = &self.slots[slot][HEADROOM + d.start..HEADROOM + d.end];
                    self.scratch[HEADROOM..HEADROOM + len].copy_from_slice(src);
                    let (v, r) = core.on_overlay(now, g.from, &mut self.scratch, len);
                    let bytes = &self.scratch[r];
                    match v {
                        Verdict::Host => {
                            let r = crate::tun::write(tun, bytes);
                            core.on_sent(Side::Tun, r, None);
                        }
                        Verdict::Overlay(to) => {
                            let r = crate::overlay::send_to(overlay, bytes, to);
                            core.on_sent(Side::Overlay, r, Some(to));
                        }
                        Verdict::Consumed | Verdict::Drop(_) => {}
                    }
                }
            }
            self.flush(core, overlay);
            left = left.saturating_sub(n);
            if n < want {
                // The queue was empty before the step filled: a later datagram brings a new edge.
                break;
            }
            more = left == 0;
        }
        core.on_batch(got);
        more
    }

    /// Where slot `slot`'s bytes `start..end` go: the TUN at once, the overlay with the step.
    fn route(
        &mut self,
        core: &mut ProxyLoop,
        tun: BorrowedFd<'_>,
        v: Verdict,
        slot: usize,
        start: usize,
        end: usize,
    ) {
        match v {
            Verdict::Overlay(to) => self.outs.push(Out { slot, start, end, to }),
            Verdict::Host => {
                let r = crate::tun::write(tun, &self.slots[slot][start..end]);
                core.on_sent(Side::Tun, r, None);
            }
            Verdict::Consumed | Verdict::Drop(_) => {}
        }
    }

    fn flush(&mut self, core: &mut ProxyLoop, overlay: BorrowedFd<'_>) {
        if self.outs.is_empty() {
            return;
        }
        let (sent, full, failed) = mmsg::send(
            overlay.as_raw_fd(),
            &self.slots,
            &self.outs,
            &mut self.offloads.gso,
        );
        core.on_sent_batch(Side::Overlay, sent, full, failed);
        self.outs.clear();
    }
}
