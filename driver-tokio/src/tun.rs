//! A TUN device created by this process (raw `/dev/net/tun` + `TUNSETIFF`), read and written through
//! tokio's [`AsyncFd`].
//!
//! The device is *not* persistent (no `TUNSETPERSIST`): it exists while this process holds the file
//! descriptor, and when the process exits — cleanly or not — the kernel deletes the device and every route
//! through it. That is how a dead proxy withdraws its anycast prefix from routing (LAB-NOTES.md).
//!
//! Flags: `IFF_TUN | IFF_NO_PI` — every read returns exactly one IP packet with no prefix, every write takes
//! one. The descriptor is non-blocking; [`Tun::try_recv`] returns `WouldBlock` when the queue is empty, so
//! the driver can read a bounded batch per readiness event.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

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

/// A TUN device owned by this process.
#[derive(Debug)]
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name`. Needs `CAP_NET_ADMIN`. Must be called inside a tokio
    /// runtime (the descriptor is registered with its reactor).
    pub fn create(name: &str) -> io::Result<Tun> {
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
        // SAFETY: `OwnedFd` keeps the descriptor open, unchanged, for as long as the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Tun { fd, name })
    }

    /// The device's name (as the kernel confirmed it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until a read may succeed. The returned guard's readiness is cleared by [`Tun::try_recv`] only
    /// through [`ReadyGuard::recv`], which the driver uses for its batches.
    pub async fn readable(&self) -> io::Result<ReadyGuard<'_>> {
        Ok(ReadyGuard {
            guard: self.fd.readable().await?,
        })
    }

    /// Reads one packet into `buf` without waiting; `WouldBlock` if none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_fd(self.fd.get_ref(), buf)
    }

    /// Writes one IP packet. Waits for writability only in the rare case the kernel says `EAGAIN`.
    pub async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        match write_fd(self.fd.get_ref(), pkt) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.fd.async_io(Interest::WRITABLE, |fd| write_fd(fd, pkt)).await
            }
            r => r,
        }
    }
}

/// Readiness of the TUN for reading; reads through it clear the readiness when the queue is empty.
#[derive(Debug)]
pub struct ReadyGuard<'a> {
    guard: tokio::io::unix::AsyncFdReadyGuard<'a, OwnedFd>,
}

impl ReadyGuard<'_> {
    /// Reads one packet; `None` when the queue is empty (readiness cleared: the next `readable` waits).
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        self.guard.try_io(|fd| read_fd(fd.get_ref(), buf)).ok()
    }

    /// Forgets the readiness (after an error, so a persistent error cannot spin the loop).
    pub fn clear(&mut self) {
        self.guard.clear_ready();
    }
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_fd(fd: &OwnedFd, pkt: &[u8]) -> io::Result<usize> {
    // SAFETY: `pkt` is valid for reads of `pkt.len()` bytes for the duration of the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
