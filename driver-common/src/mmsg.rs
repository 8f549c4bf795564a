//! `recvmmsg` / `sendmmsg` on the overlay socket: up to [`CHUNK`] datagrams per system call, into and
//! out of buffers the driver owns, with UDP generic segmentation both ways when the kernel offers it.
//!
//! - Receive (`UDP_GRO`): the kernel may hand over several same-size datagrams of one sender coalesced
//!   into one buffer; the control message says the segment size ([`Got::seg`]), and the caller splits.
//! - Send (`UDP_SEGMENT`): consecutive datagrams to the same address of the same size (the last of a run
//!   may be shorter) go as *one* message whose iovecs gather them, with the segment size in a control
//!   message; the kernel (or the NIC) cuts them apart again. One system call and one trip through the
//!   stack for up to [`CHUNK`] datagrams instead of one each.
//!
//! Both are negotiated ([`Offloads::negotiate`]) and fall back to one datagram per message, logged once.
//! The message headers live on the stack for one call; nothing is allocated.

use core::mem::{size_of, zeroed};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::io;
use std::os::fd::RawFd;

/// Datagrams per system call (and slots per batch step). Also the most segments one `UDP_SEGMENT`
/// message carries (the kernel's limit, `UDP_MAX_SEGMENTS`, is 64 on older kernels).
pub const CHUNK: usize = 64;

/// The largest UDP payload one `UDP_SEGMENT` message may carry (an IPv4 datagram's maximum less the IPv4
/// and UDP headers; IPv6 allows a little more, not worth a second limit).
const GSO_MAX_BYTES: usize = 65_535 - 20 - 8;

/// Room for one control message carrying an `int` (the `UDP_GRO` segment size) or a `u16`
/// (`UDP_SEGMENT`), 8-byte aligned as `cmsghdr` needs.
type CmsgBuf = [u64; 4];

/// Which UDP offloads this socket has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// `UDP_SEGMENT` sends work (kernel ≥ 4.18).
    pub gso: bool,
    /// `UDP_GRO` is on: a receive may return coalesced datagrams (kernel ≥ 5.0).
    pub gro: bool,
}

impl Offloads {
    /// Turns on `UDP_GRO` and checks that `UDP_SEGMENT` is known, logging once what the socket got and
    /// why not where it did not (the fallback, one datagram per message, is always correct).
    pub fn negotiate(fd: RawFd) -> Offloads {
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int and the length passed is its size.
        let gro = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let gro = if gro == 0 {
            true
        } else {
            let e = io::Error::last_os_error();
            tracing::info!(error = %e, "UDP_GRO unavailable on the overlay socket: one datagram per receive");
            false
        };
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live and `len` is `v`'s size; the kernel writes at most `len` bytes.
        let gso = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        let gso = if gso == 0 {
            true
        } else {
            let e = io::Error::last_os_error();
            tracing::info!(error = %e, "UDP_SEGMENT unavailable on the overlay socket: one datagram per send");
            false
        };
        if gso || gro {
            tracing::info!(gso, gro, "overlay socket UDP offloads");
        }
        Offloads { gso, gro }
    }
}

/// A datagram to send: `bufs[slot][start..end]` to `to`.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub slot: usize,
    pub start: usize,
    pub end: usize,
    pub to: SocketAddr,
}

impl Out {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// What one receive got: `len` bytes from `from`; with `UDP_GRO`, `seg` is the size of the coalesced
/// datagrams (every one `seg` long but the last, which may be shorter), else `seg == len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Got {
    pub len: usize,
    pub from: SocketAddr,
    pub seg: usize,
}

impl Default for Got {
    fn default() -> Self {
        Got {
            len: 0,
            from: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            seg: 0,
        }
    }
}

impl Got {
    /// The datagrams in the buffer, as ranges relative to where the receive wrote.
    pub fn datagrams(&self) -> impl Iterator<Item = core::ops::Range<usize>> + use<> {
        let len = self.len;
        let seg = if self.seg == 0 || self.seg >= len {
            len
        } else {
            self.seg
        };
        // An empty datagram is still one (the core counts and drops it).
        let n = if seg == 0 { 1 } else { len.div_ceil(seg) };
        (0..n).map(move |k| k * seg..((k + 1) * seg).min(len))
    }
}

/// Receives up to `min(bufs.len(), got.len(), CHUNK)` messages, message `i` into `bufs[i][off..]`;
/// what arrived goes to `got[i]`. Returns how many were received; `WouldBlock` when none was queued.
pub fn recv(fd: RawFd, bufs: &mut [Vec<u8>], off: usize, got: &mut [Got]) -> io::Result<usize> {
    let n = bufs.len().min(got.len()).min(CHUNK);
    // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero lengths).
    let mut iov: [libc::iovec; CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
    let mut cmsgs: [CmsgBuf; CHUNK] = [[0; 4]; CHUNK];
    for i in 0..n {
        let b = &mut bufs[i][off..];
        iov[i] = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        h.msg_control = cmsgs[i].as_mut_ptr().cast();
        h.msg_controllen = size_of::<CmsgBuf>() as _;
    }
    // SAFETY: `hdrs[..n]` point at `iov`, `names`, `cmsgs` and the buffers, all live and exclusively
    // borrowed for the call; the kernel writes at most `iov_len` bytes per buffer, `msg_namelen` per name
    // and `msg_controllen` per control buffer.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            core::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let r = r as usize;
    for i in 0..r {
        let len = hdrs[i].msg_len as usize;
        let from = from_storage(&names[i]).unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let seg = gro_size(&hdrs[i].msg_hdr).filter(|&s| s > 0).unwrap_or(len);
        got[i] = Got { len, from, seg };
    }
    Ok(r)
}

/// The `UDP_GRO` segment size in a received message's control data, if any.
fn gro_size(h: &libc::msghdr) -> Option<usize> {
    // SAFETY: `h` is a header the kernel filled: `msg_control`/`msg_controllen` describe the control
    // data it wrote (or are zero), which the CMSG macros walk without leaving it.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and points at a cmsghdr inside the control buffer.
        let cm = unsafe { &*c };
        if cm.cmsg_level == libc::SOL_UDP && cm.cmsg_type == libc::UDP_GRO {
            // SAFETY: a UDP_GRO control message carries one int; it may be unaligned.
            let v = unsafe { core::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) };
            return usize::try_from(v).ok();
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    None
}

/// How many of `outs` (from the first) can go as one `UDP_SEGMENT` message: same address, every one as
/// long as the first but the last (which may be shorter), at most [`CHUNK`] and [`GSO_MAX_BYTES`].
fn run_len(outs: &[Out]) -> usize {
    let Some(first) = outs.first() else { return 0 };
    let seg = first.len();
    if seg == 0 {
        return 1;
    }
    let (mut n, mut bytes) = (1, seg);
    for o in &outs[1..] {
        let l = o.len();
        if n == CHUNK || o.to != first.to || l == 0 || l > seg || bytes + l > GSO_MAX_BYTES {
            break;
        }
        n += 1;
        bytes += l;
        if l < seg {
            break;
        }
    }
    n
}

/// Sends every `outs` datagram, up to [`CHUNK`] per system call; with `gso`, runs of same-size datagrams
/// to one address go as one `UDP_SEGMENT` message each. Returns `(sent, full, failed)` in datagrams. A
/// datagram the kernel refuses is counted failed and skipped; when the socket's send buffer is full
/// (`WouldBlock`, `ENOBUFS`) the rest of the batch is dropped as full — UDP overload sheds load, it does
/// not stall the loop. A segmented message the kernel refuses is sent again one datagram per message
/// (e.g. `EINVAL` when the segment exceeds the route's MTU); if the refusal says segmentation cannot work
/// on this path at all (`EIO`: no checksum offload; `EOPNOTSUPP`), `*gso` is turned off, logged once.
pub fn send(fd: RawFd, bufs: &[Vec<u8>], outs: &[Out], gso: &mut bool) -> (usize, usize, usize) {
    let (mut sent, mut failed) = (0, 0);
    let mut k = 0;
    // Datagrams before this index go one per message (a refused run being retried).
    let mut plain_until = 0;
    while k < outs.len() {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iov: [libc::iovec; CHUNK] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_storage; CHUNK] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
        let mut cmsgs: [CmsgBuf; CHUNK] = [[0; 4]; CHUNK];
        // Datagrams per message.
        let mut counts = [0usize; CHUNK];
        let (mut m, mut j) = (0, k);
        while m < CHUNK && j < outs.len() && j - k < CHUNK {
            let room = CHUNK - (j - k);
            let run = if *gso && j >= plain_until {
                run_len(&outs[j..outs.len().min(j + room)])
            } else {
                1
            };
            for (i, o) in outs[j..j + run].iter().enumerate() {
                let b = &bufs[o.slot][o.start..o.end];
                iov[j - k + i] = libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                };
            }
            let h = &mut hdrs[m].msg_hdr;
            h.msg_namelen = to_storage(outs[j].to, &mut names[m]);
            h.msg_name = (&mut names[m] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut iov[j - k];
            h.msg_iovlen = run as _;
            if run > 1 {
                set_segment(h, &mut cmsgs[m], outs[j].len() as u16);
            }
            counts[m] = run;
            m += 1;
            j += run;
        }
        // SAFETY: `hdrs[..m]` point at live `iov`, `names`, `cmsgs` and buffers; sendmmsg only reads them.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), m as libc::c_uint, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if crate::proxy_loop::is_full(&e) {
                tracing::debug!("overlay send buffer full: batch rest dropped");
                return (sent, outs.len() - k, failed);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if counts[0] > 1 {
                // The segmented message was refused: send its datagrams one by one.
                if matches!(e.raw_os_error(), Some(libc::EIO | libc::EOPNOTSUPP)) {
                    tracing::info!(error = %e, "UDP_SEGMENT refused on this path: one datagram per send from now on");
                    *gso = false;
                } else {
                    tracing::debug!(error = %e, to = %outs[k].to, "segmented send refused: sending one by one");
                }
                plain_until = k + counts[0];
                continue;
            }
            tracing::debug!(error = %e, to = %outs[k].to, "overlay send failed");
            failed += 1;
            k += 1;
            continue;
        }
        for &c in &counts[..r as usize] {
            sent += c;
            k += c;
        }
    }
    (sent, 0, failed)
}

/// Puts a `UDP_SEGMENT` control message of segment size `seg` into `h`, in `buf`.
fn set_segment(h: &mut libc::msghdr, buf: &mut CmsgBuf, seg: u16) {
    h.msg_control = buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as libc::c_uint) } as _;
    // SAFETY: `h` points at `buf`, which is at least CMSG_SPACE(2) bytes and 8-byte aligned, so the first
    // header and its data lie inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as libc::c_uint) as _;
        core::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
    }
}

/// The socket address in a `sockaddr_storage` the kernel filled.
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `s`; returns its length.
fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let p = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            p.sin_family = libc::AF_INET as libc::sa_family_t;
            p.sin_port = a.port().to_be();
            p.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let p = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            p.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            p.sin6_port = a.port().to_be();
            p.sin6_flowinfo = a.flowinfo();
            p.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            p.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Everything `b` has queued, as (sender, datagram) after splitting coalesced receives.
    fn drain(b: &std::net::UdpSocket) -> Vec<(SocketAddr, Vec<u8>)> {
        drain_counting(b).0
    }

    /// As [`drain`], and how many receives were coalesced.
    fn drain_counting(b: &std::net::UdpSocket) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let mut coalesced = 0;
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; 16 + 65_535]).collect();
        let mut got = [Got::default(); 8];
        let mut out = Vec::new();
        loop {
            match recv(b.as_raw_fd(), &mut rx, 16, &mut got) {
                Ok(n) => {
                    for (i, g) in got[..n].iter().enumerate() {
                        coalesced += usize::from(g.seg < g.len);
                        for r in g.datagrams() {
                            out.push((g.from, rx[i][16 + r.start..16 + r.end].to_vec()));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (out, coalesced),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn batches_round_trip_on_loopback() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut bufs: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 100]).collect();
        let outs: Vec<Out> = (0..5)
            .map(|i| Out {
                slot: i,
                start: 10,
                end: 20 + i,
                to,
            })
            .collect();
        assert_eq!(send(a.as_raw_fd(), &bufs, &outs, &mut false), (5, 0, 0));
        for b in &mut bufs {
            b.fill(0xee);
        }
        let got = drain(&b);
        assert_eq!(got.len(), 5);
        for (i, (from, d)) in got.iter().enumerate() {
            assert_eq!(d.len(), 10 + i);
            assert_eq!(*from, a.local_addr().unwrap());
            assert!(d.iter().all(|&x| x == i as u8));
        }
        let mut rx = vec![vec![0u8; 100]];
        let e = recv(b.as_raw_fd(), &mut rx, 16, &mut [Got::default()]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    /// Runs of same-size datagrams to one address: the segmented sends arrive as the same datagrams, in
    /// order, whether the receiver coalesces (`UDP_GRO`) or not; a shorter one ends a run, another address
    /// starts one.
    #[test]
    fn segmented_sends_arrive_as_the_same_datagrams() {
        let (a, b) = pair();
        let (_, c) = pair();
        let gro = Offloads::negotiate(b.as_raw_fd());
        let plain = c.local_addr().unwrap();
        let to = b.local_addr().unwrap();
        // 20 x 1200 to b, one of 700 to b, 3 x 1200 to c, 5 x 1200 to b.
        let mut lens = vec![(to, 1200); 20];
        lens.push((to, 700));
        lens.extend([(plain, 1200); 3]);
        lens.extend([(to, 1200); 5]);
        let bufs: Vec<Vec<u8>> = (0..lens.len())
            .map(|i| (0..1300).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let outs: Vec<Out> = lens
            .iter()
            .enumerate()
            .map(|(i, &(to, l))| Out {
                slot: i,
                start: 4,
                end: 4 + l,
                to,
            })
            .collect();
        let mut gso = Offloads::negotiate(a.as_raw_fd()).gso;
        assert_eq!(send(a.as_raw_fd(), &bufs, &outs, &mut gso), (lens.len(), 0, 0));
        let want = |i: usize| bufs[i][4..4 + lens[i].1].to_vec();
        let (at_b, coalesced) = drain_counting(&b);
        let at_b: Vec<Vec<u8>> = at_b.into_iter().map(|(_, d)| d).collect();
        // Where both ends have the offloads (any kernel since 5.0), loopback keeps a segmented send whole
        // up to a GRO socket: the offloads were really used.
        if gso && gro.gro {
            assert!(coalesced >= 2, "{coalesced} coalesced receives");
        }
        let want_b: Vec<Vec<u8>> = (0..lens.len()).filter(|&i| lens[i].0 == to).map(want).collect();
        assert_eq!(at_b, want_b, "gro {gro:?}");
        let at_c: Vec<Vec<u8>> = drain(&c).into_iter().map(|(_, d)| d).collect();
        assert_eq!(at_c, (21..24).map(want).collect::<Vec<_>>());
    }

    #[test]
    fn runs_are_one_address_one_size_and_bounded() {
        let a: SocketAddr = "10.0.0.1:6081".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:6081".parse().unwrap();
        let o = |to, len| Out {
            slot: 0,
            start: 0,
            end: len,
            to,
        };
        assert_eq!(run_len(&[]), 0);
        assert_eq!(run_len(&[o(a, 100), o(a, 100), o(a, 50), o(a, 50)]), 3);
        assert_eq!(run_len(&[o(a, 100), o(a, 100), o(b, 100)]), 2);
        assert_eq!(run_len(&[o(a, 100), o(a, 120)]), 1);
        assert_eq!(run_len(&vec![o(a, 100); 100]), CHUNK);
        assert_eq!(run_len(&vec![o(a, 1400); 64]), GSO_MAX_BYTES / 1400);
    }

    #[test]
    fn coalesced_receives_split_at_the_segment_size() {
        let g = Got {
            len: 250,
            from: "10.0.0.1:1".parse().unwrap(),
            seg: 100,
        };
        assert_eq!(
            g.datagrams().collect::<Vec<_>>(),
            vec![0..100, 100..200, 200..250]
        );
        let one = Got { seg: 250, ..g };
        assert_eq!(one.datagrams().collect::<Vec<_>>(), vec![0..250]);
        let empty = Got { len: 0, seg: 0, ..g };
        assert_eq!(empty.datagrams().collect::<Vec<_>>(), vec![0..0]);
    }

    #[test]
    fn addresses_convert_both_ways() {
        for a in ["10.1.2.3:6081", "[fd00::1]:6081"] {
            let a: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero sockaddr_storage is valid.
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            to_storage(a, &mut s);
            assert_eq!(from_storage(&s), Some(a));
        }
    }
}
