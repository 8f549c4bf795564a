//! `recvmmsg` / `sendmmsg` on the overlay socket: up to [`CHUNK`] datagrams per system call, into and
//! out of buffers the driver owns. The message headers live on the stack for one call; nothing is
//! allocated.

use core::mem::{size_of, zeroed};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::io;
use std::os::fd::RawFd;

/// Datagrams per system call (and slots per batch step).
pub(crate) const CHUNK: usize = 64;

/// A datagram to send: `bufs[slot][start..end]` to `to`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) slot: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) to: SocketAddr,
}

/// Receives up to `min(bufs.len(), CHUNK)` datagrams, datagram `i` into `bufs[i][off..]`; its length and
/// sender go to `got[i]`. Returns how many were received; `WouldBlock` when none was queued.
pub(crate) fn recv(
    fd: RawFd,
    bufs: &mut [Vec<u8>],
    off: usize,
    got: &mut [(usize, SocketAddr)],
) -> io::Result<usize> {
    let n = bufs.len().min(got.len()).min(CHUNK);
    // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero lengths).
    let mut iov: [libc::iovec; CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; CHUNK] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
    for i in 0..n {
        let b = &mut bufs[i][off..];
        iov[i] = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        };
        hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point at `iov`, `names` and the buffers, all live and exclusively borrowed for
    // the call; the kernel writes at most `iov_len` bytes per buffer and `msg_namelen` per name.
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
        let from = from_storage(&names[i]).unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        got[i] = (hdrs[i].msg_len as usize, from);
    }
    Ok(r)
}

/// Sends every `outs` datagram, `CHUNK` per system call. Returns `(sent, full, failed)`. A datagram the
/// kernel refuses is counted failed and skipped; when the socket's send buffer is full (`WouldBlock`,
/// `ENOBUFS`) the rest of the batch is dropped as full — UDP overload sheds load, it does not stall the
/// loop.
pub(crate) fn send(fd: RawFd, bufs: &[Vec<u8>], outs: &[Out]) -> (usize, usize, usize) {
    let (mut sent, mut failed) = (0, 0);
    let mut k = 0;
    while k < outs.len() {
        let n = (outs.len() - k).min(CHUNK);
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iov: [libc::iovec; CHUNK] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_storage; CHUNK] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
        for i in 0..n {
            let o = &outs[k + i];
            let b = &bufs[o.slot][o.start..o.end];
            iov[i] = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
            hdrs[i].msg_hdr.msg_namelen = to_storage(o.to, &mut names[i]);
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs[..n]` point at live `iov`, `names` and buffers; sendmmsg only reads them.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if driver_common::proxy_loop::is_full(&e) {
                tracing::debug!("overlay send buffer full: batch rest dropped");
                return (sent, outs.len() - k, failed);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(error = %e, to = %outs[k].to, "overlay send failed");
            failed += 1;
            k += 1;
            continue;
        }
        sent += r as usize;
        k += r as usize;
    }
    (sent, 0, failed)
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

    #[test]
    fn batches_round_trip_on_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
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
        assert_eq!(send(a.as_raw_fd(), &bufs, &outs), (5, 0, 0));
        for b in &mut bufs {
            b.fill(0xee);
        }
        let mut got = [(0, SocketAddr::from(([0, 0, 0, 0], 0))); 8];
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; 200]).collect();
        let n = recv(b.as_raw_fd(), &mut rx, 16, &mut got).unwrap();
        assert_eq!(n, 5);
        for (i, (len, from)) in got[..n].iter().enumerate() {
            assert_eq!(*len, 10 + i);
            assert_eq!(*from, a.local_addr().unwrap());
            assert!(rx[i][16..16 + len].iter().all(|&x| x == i as u8));
        }
        let e = recv(b.as_raw_fd(), &mut rx, 16, &mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
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
