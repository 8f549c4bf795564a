//! Batched packet I/O around [`ProxyLoop`], shared by the drivers: many packets per system call on the
//! overlay socket ([`crate::mmsg`]: `recvmmsg`, `sendmmsg`, UDP GRO and GSO) and, with TUN offloads,
//! many segments per `read`/`write` on the TUN ([`crate::gso`], [`crate::gro`]). A driver keeps only how
//! it waits: it passes the descriptors and, for reads, a closure that performs the read through its
//! reactor's readiness (tokio's `try_io`; mio calls straight through).
//!
//! Per step, up to [`CHUNK`] packets are read into fixed slots at `HEADROOM`, handed to the core in place,
//! and what it returns is gathered and sent together at the end of the step:
//! - overlay-bound frames with `sendmmsg`, where consecutive frames to one peer of one size (a bulk
//!   flow's full-size segments) leave as one `UDP_SEGMENT` message;
//! - host-bound packets to the TUN, where (with offloads) consecutive in-order TCP segments of one flow
//!   leave as one write with a GSO `virtio_net_hdr`, the rest one write each.
//!
//! A TUN read that is a train of segments is cut into ordinary packets right after the read, so the core
//! never sees anything else. A coalesced overlay receive (`UDP_GRO`) is split back into its datagrams,
//! each copied into a spill slot at `HEADROOM` for the core (a copy of one datagram costs far less than
//! the system calls coalescing saves). Buffers are allocated once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use pias_state::proxy::{HEADROOM, Verdict};

use crate::gro::{MAX_SEGMENTS, Train};
use crate::gso::{self, Segments, VNET_HDR_LEN, VnetHdr};
use crate::mmsg::{self, CHUNK, Got, Offloads, Out};
use crate::{MAX_PACKET, ProxyLoop, Side};

// A `virtio_net_hdr` is read into the headroom, right in front of its packet.
const _: () = assert!(HEADROOM >= VNET_HDR_LEN);

/// The batch buffers and the overlay socket's negotiated offloads.
#[derive(Debug)]
pub struct Batch {
    /// Receive slots: packets are read at `HEADROOM`, handled and forwarded in place.
    slots: Vec<Vec<u8>>,
    /// What the last `recvmmsg` got.
    got: Vec<Got>,
    /// Overlay-bound datagrams of the current step.
    outs: Vec<Out>,
    /// How many of `slots` a receive fills; the rest take the datagrams of coalesced receives.
    recv_slots: usize,
    /// Host-bound packets of the current step: `slots[slot][start..end]`.
    hosts: Vec<(usize, usize, usize)>,
    /// Where a TUN read that is a train of segments waits while it is cut into the slots.
    train: Vec<u8>,
    offloads: Offloads,
    /// The TUN has offloads: reads and writes carry a `virtio_net_hdr`.
    vnet: bool,
}

impl Batch {
    /// Buffers for steps of up to `min(batch, CHUNK)` packets; negotiates the overlay socket's UDP
    /// offloads (logged once). `vnet`: the TUN was opened with offloads ([`crate::tun::open_offload`]).
    pub fn new(batch: usize, overlay: BorrowedFd<'_>, vnet: bool) -> Batch {
        let n = batch.clamp(1, CHUNK);
        Batch {
            slots: (0..2 * n).map(|_| vec![0u8; HEADROOM + MAX_PACKET]).collect(),
            recv_slots: n,
            hosts: Vec::with_capacity(2 * n),
            got: vec![Got::default(); n],
            outs: Vec::with_capacity(2 * n),
            train: vec![0u8; HEADROOM + MAX_PACKET],
            offloads: Offloads::negotiate(overlay.as_raw_fd()),
            vnet,
        }
    }

    /// Whether the TUN's reads and writes carry a `virtio_net_hdr`.
    pub fn vnet(&self) -> bool {
        self.vnet
    }

    /// The overlay socket's offloads (`gso` turns off if a path refuses it).
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Up to [`ProxyLoop::batch`] reads from the TUN, each by `read` (into the slice it is given;
    /// `WouldBlock` when the queue is empty). Another error is counted and ends the batch (a persistent
    /// one must not spin the loop). With offloads, a read that is a train of segments is cut into its
    /// packets ([`crate::gso`]), each handed to the core like any other. Returns whether the batch filled
    /// up (packets may be left).
    pub fn tun(
        &mut self,
        core: &mut ProxyLoop,
        tun: BorrowedFd<'_>,
        overlay: BorrowedFd<'_>,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> bool {
        let now = core.now();
        let at = if self.vnet {
            HEADROOM - VNET_HDR_LEN
        } else {
            HEADROOM
        };
        let (mut reads, mut got, mut used) = (0, 0, 0);
        let mut more = false;
        self.outs.clear();
        loop {
            if reads == core.batch() {
                more = true;
                break;
            }
            if used == self.slots.len() {
                self.flush(core, tun, overlay);
                used = 0;
            }
            let n = match read(&mut self.slots[used][at..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    core.on_read_error(Side::Tun, &e);
                    break;
                }
            };
            reads += 1;
            if !self.vnet {
                got += 1;
                let (v, r) = core.on_host(now, &mut self.slots[used], n);
                self.route(v, used, r.start, r.end);
                used += 1;
                continue;
            }
            let Some(n) = n.checked_sub(VNET_HDR_LEN) else {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TUN read shorter than its virtio-net header",
                );
                core.on_read_error(Side::Tun, &e);
                continue;
            };
            let mut h = [0u8; VNET_HDR_LEN];
            h.copy_from_slice(&self.slots[used][at..HEADROOM]);
            let h = VnetHdr::parse(&h);
            if !h.is_gso() {
                if let Err(e) = gso::complete_checksum(&h, &mut self.slots[used][HEADROOM..HEADROOM + n]) {
                    core.on_read_error(Side::Tun, &io::Error::new(io::ErrorKind::InvalidData, e));
                    continue;
                }
                got += 1;
                let (v, r) = core.on_host(now, &mut self.slots[used], n);
                self.route(v, used, r.start, r.end);
                used += 1;
                continue;
            }
            // A train: move its buffer aside (a swap, no copy) and cut it into the slots.
            core::mem::swap(&mut self.slots[used], &mut self.train);
            let train = core::mem::take(&mut self.train);
            match Segments::new(&h, &train[HEADROOM..HEADROOM + n]) {
                Err(e) => core.on_read_error(Side::Tun, &io::Error::new(io::ErrorKind::InvalidData, e)),
                Ok(segs) => {
                    for i in 0..segs.count() {
                        if used == self.slots.len() {
                            self.flush(core, tun, overlay);
                            used = 0;
                        }
                        let len = segs.write(i, &mut self.slots[used][HEADROOM..]);
                        got += 1;
                        let (v, r) = core.on_host(now, &mut self.slots[used], len);
                        self.route(v, used, r.start, r.end);
                        used += 1;
                    }
                }
            }
            self.train = train;
        }
        self.flush(core, tun, overlay);
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
            let want = left.min(self.recv_slots);
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
            let mut spill = 0;
            for slot in 0..n {
                let g = self.got[slot];
                if g.seg >= g.len {
                    got += 1;
                    let (v, r) = core.on_overlay(now, g.from, &mut self.slots[slot], g.len);
                    self.route(v, slot, r.start, r.end);
                    continue;
                }
                // Coalesced by UDP_GRO: each datagram copied into a spill slot, handled there.
                for d in g.datagrams() {
                    if spill == self.recv_slots {
                        self.flush(core, tun, overlay);
                        spill = 0;
                    }
                    let at = self.recv_slots + spill;
                    spill += 1;
                    got += 1;
                    let len = d.len();
                    let (rx, sp) = self.slots.split_at_mut(at);
                    sp[0][HEADROOM..HEADROOM + len]
                        .copy_from_slice(&rx[slot][HEADROOM + d.start..HEADROOM + d.end]);
                    let (v, r) = core.on_overlay(now, g.from, &mut self.slots[at], len);
                    self.route(v, at, r.start, r.end);
                }
            }
            self.flush(core, tun, overlay);
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

    /// Where slot `slot`'s bytes `start..end` go: gathered for the TUN or the overlay, sent by
    /// [`Batch::flush`] at the end of the step.
    fn route(&mut self, v: Verdict, slot: usize, start: usize, end: usize) {
        match v {
            Verdict::Overlay(to) => self.outs.push(Out { slot, start, end, to }),
            Verdict::Host => self.hosts.push((slot, start, end)),
            Verdict::Consumed | Verdict::Drop(_) => {}
        }
    }

    /// Sends what the step gathered: host-bound packets (coalesced where [`crate::gro`] allows, with
    /// offloads), then overlay-bound datagrams in `sendmmsg` batches.
    fn flush(&mut self, core: &mut ProxyLoop, tun: BorrowedFd<'_>, overlay: BorrowedFd<'_>) {
        self.flush_hosts(core, tun);
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

    fn flush_hosts(&mut self, core: &mut ProxyLoop, tun: BorrowedFd<'_>) {
        let hosts = &self.hosts;
        let mut i = 0;
        while i < hosts.len() {
            let (s, a, b) = hosts[i];
            let first = &self.slots[s][a..b];
            if self.vnet
                && let Some(mut t) = Train::start(first)
            {
                let mut j = i + 1;
                while j < hosts.len() {
                    let (s2, a2, b2) = hosts[j];
                    if !t.push(first, &self.slots[s2][a2..b2]) {
                        break;
                    }
                    j += 1;
                }
                if t.count() > 1 {
                    let hl = t.header_len();
                    let mut vnet = [0u8; VNET_HDR_LEN];
                    let mut head = [0u8; 128];
                    t.headers(first, &mut vnet, &mut head[..hl]);
                    let mut parts: [&[u8]; MAX_SEGMENTS + 2] = [&[]; MAX_SEGMENTS + 2];
                    parts[0] = &vnet;
                    parts[1] = &head[..hl];
                    for (k, &(s2, a2, b2)) in hosts[i..j].iter().enumerate() {
                        parts[2 + k] = &self.slots[s2][a2 + hl..b2];
                    }
                    let n = j - i;
                    match crate::tun::writev(tun, &parts[..2 + n]) {
                        Ok(_) => core.on_sent_batch(Side::Tun, n, 0, 0),
                        Err(e) if crate::proxy_loop::is_full(&e) => core.on_sent_batch(Side::Tun, 0, n, 0),
                        Err(e) => {
                            tracing::debug!(error = %e, segments = n, "coalesced TUN write failed");
                            core.on_sent_batch(Side::Tun, 0, 0, n);
                        }
                    }
                    i = j;
                    continue;
                }
            }
            let r = crate::tun::send(tun, first, self.vnet);
            core.on_sent(Side::Tun, r, None);
            i += 1;
        }
        self.hosts.clear();
    }
}
