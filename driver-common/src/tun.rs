//! A TUN device created by this process (raw `/dev/net/tun` + `TUNSETIFF`), as a non-blocking file
//! descriptor each driver registers with its own reactor.
//!
//! The device is *not* persistent (no `TUNSETPERSIST`): it exists while this process holds the file
//! descriptor, and when the process exits — cleanly or not — the kernel deletes the device and every route
//! through it. That is how a dead proxy withdraws its anycast prefix from routing.
//!
//! Flags: `IFF_TUN | IFF_NO_PI` — every read returns exactly one IP packet with no prefix, every write takes
//! one. Reads return `WouldBlock` when the queue is empty, so a driver reads a bounded batch per wake-up.
//!
//! With offloads ([`open_offload`]): also `IFF_VNET_HDR`, and `TUNSETOFFLOAD` with checksum, TSO4/6 and,
//! where the kernel has it, USO4/6. Every read then starts with a `virtio_net_hdr`
//! ([`crate::gso::VNET_HDR_LEN`] bytes) and may hold a train of up to 64 kB of segments that the kernel no
//! longer cuts for us (the driver cuts it, [`crate::gso`]); every write must start with such a header
//! ([`send`] writes an all-zero one: one ordinary packet, checksums complete). Offloads are negotiated:
//! where the kernel or the device refuses them the TUN is opened plain, and that is logged once.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `_IOW('T', 202, int)` from `<linux/if_tun.h>`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as far as `TUNSETIFF` reads it: the name and the flags, padded to the kernel's 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` non-blocking and attaches it to (creating) the device `name`. Needs
/// `CAP_NET_ADMIN`. Returns the descriptor and the name the kernel confirmed.
pub fn open(name: &str) -> io::Result<(OwnedFd, String)> {
    open_flags(name, IFF_TUN | IFF_NO_PI)
}

/// As [`open`], with offloads if the kernel has them: returns whether they are on (every read and write
/// then carries a `virtio_net_hdr`; see the module documentation). Without them — an old kernel, a
/// device that refuses — the TUN is opened plain and that is logged once.
pub fn open_offload(name: &str) -> io::Result<(OwnedFd, String, bool)> {
    let (fd, got) = open_flags(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)?;
    let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    let with_uso = set_offload(&fd, base | TUN_F_USO4 | TUN_F_USO6);
    let uso = with_uso.is_ok();
    let r = with_uso.or_else(|_| set_offload(&fd, base));
    match r {
        Ok(()) => {
            tracing::info!(tun = %got, tso = true, uso, "TUN offloads on (virtio-net header, checksum, TSO)");
            Ok((fd, got, true))
        }
        Err(e) => {
            tracing::info!(tun = %got, error = %e, "TUN offloads unavailable: one packet per read");
            // Closing deletes the (non-persistent) device; open it again without the header.
            drop(fd);
            let (fd, got) = open(name)?;
            Ok((fd, got, false))
        }
    }
}

/// `TUNSETOFFLOAD` with `flags`.
fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long); the descriptor is open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn open_flags(name: &str, flags: libc::c_short) -> io::Result<(OwnedFd, String)> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name {name:?}: use 1 to 15 characters without '/', spaces or NUL"),
        ));
    }
    let path: &CStr = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string; `open` has no other preconditions.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("open /dev/net/tun: {e} (is the tun module available, and are we root?)"),
        ));
    }
    // SAFETY: `raw` is a descriptor we just opened and own exclusively.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is laid out as its prefix and padded to
    // the full 40 bytes, and lives across the call.
    let rc = unsafe { libc::ioctl(owned.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
    }
    let end = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
    Ok((owned, name))
}

/// Reads one packet into `buf`; `WouldBlock` if none is queued.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes one IP packet; `WouldBlock` if the device's queue is full.
pub fn write(fd: BorrowedFd<'_>, pkt: &[u8]) -> io::Result<usize> {
    // SAFETY: `pkt` is valid for reads of `pkt.len()` bytes for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes one IP packet, behind an all-zero `virtio_net_hdr` when the TUN has offloads (`vnet`): no
/// segmentation, checksums complete. `WouldBlock` if the device's queue is full.
pub fn send(fd: BorrowedFd<'_>, pkt: &[u8], vnet: bool) -> io::Result<usize> {
    if !vnet {
        return write(fd, pkt);
    }
    let hdr = [0u8; crate::gso::VNET_HDR_LEN];
    writev(fd, &[&hdr, pkt]).map(|n| n.saturating_sub(hdr.len()))
}

/// Writes `parts` (at most [`crate::gro::MAX_SEGMENTS`] + 2; more are ignored) as one packet (`writev`).
pub fn writev(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; crate::gro::MAX_SEGMENTS + 2];
    let n = parts.len().min(iov.len());
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
    }
    // SAFETY: `iov[..n]` describe live slices, only read for the duration of the call.
    let r = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), n as libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
