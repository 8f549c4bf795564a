//! A TUN device created by this process (raw `/dev/net/tun` + `TUNSETIFF`), as a non-blocking file
//! descriptor each driver registers with its own reactor.
//!
//! The device is *not* persistent (no `TUNSETPERSIST`): it exists while this process holds the file
//! descriptor, and when the process exits — cleanly or not — the kernel deletes the device and every route
//! through it. That is how a dead proxy withdraws its anycast prefix from routing.
//!
//! Flags: `IFF_TUN | IFF_NO_PI` — every read returns exactly one IP packet with no prefix, every write takes
//! one. Reads return `WouldBlock` when the queue is empty, so a driver reads a bounded batch per wake-up.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `_IOW('T', 202, int)` from `<linux/if_tun.h>`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
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
        flags: IFF_TUN | IFF_NO_PI,
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
