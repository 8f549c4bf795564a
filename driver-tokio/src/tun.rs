//! A TUN device created by this process (`driver_common::tun`: raw `/dev/net/tun` + `TUNSETIFF`), read
//! and written through tokio's [`AsyncFd`].
//!
//! The device is *not* persistent (no `TUNSETPERSIST`): it exists while this process holds the file
//! descriptor, and when the process exits — cleanly or not — the kernel deletes the device and every route
//! through it. That is how a dead proxy withdraws its anycast prefix from routing (SPEC.md §7.6; the lab
//! e2e suite kills a proxy and watches OSPF move its clients).
//!
//! Flags: `IFF_TUN | IFF_NO_PI`, and `IFF_VNET_HDR` with TSO/checksum offloads where the kernel has them
//! (`driver_common::tun::open_offload`: then a read may be a train of segments the driver cuts,
//! `driver_common::gso`). Without offloads every read returns exactly one IP packet with no prefix, every
//! write takes one. The descriptor is non-blocking; [`Tun::try_recv`] returns `WouldBlock` when the queue is empty, so
//! the driver can read a bounded batch per readiness event, and [`Tun::try_send`] when the device's queue
//! is full (the driver drops and counts: it never waits to send).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A TUN device owned by this process.
#[derive(Debug)]
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
    /// Opened with offloads: reads and writes carry a `virtio_net_hdr` (`driver_common::tun::open_offload`).
    vnet: bool,
}

impl Tun {
    /// Creates (or attaches to) the TUN device `name`. Needs `CAP_NET_ADMIN`. Must be called inside a tokio
    /// runtime (the descriptor is registered with its reactor).
    pub fn create(name: &str) -> io::Result<Tun> {
        let (owned, name, vnet) = driver_common::tun::open_offload(name)?;
        // SAFETY: `OwnedFd` keeps the descriptor open, unchanged, for as long as the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Tun { fd, name, vnet })
    }

    /// The device's name (as the kernel confirmed it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether reads and writes carry a `virtio_net_hdr` (offloads on).
    pub fn vnet(&self) -> bool {
        self.vnet
    }

    /// The descriptor (for writes and the shared batch code, which never wait).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Waits until a read may succeed. The returned guard's readiness is cleared by [`Tun::try_recv`] only
    /// through [`ReadyGuard::recv`], which the driver uses for its batches.
    pub async fn readable(&self) -> io::Result<ReadyGuard<'_>> {
        Ok(ReadyGuard {
            guard: self.fd.readable().await?,
        })
    }

    /// Reads one packet (with offloads: a `virtio_net_hdr` and a packet or train) into `buf` without
    /// waiting; `WouldBlock` if none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_fd(self.fd.get_ref(), buf)
    }

    /// Writes one IP packet without waiting; `WouldBlock` when the device's queue is full.
    pub fn try_send(&self, pkt: &[u8]) -> io::Result<usize> {
        driver_common::tun::send(self.fd.get_ref().as_fd(), pkt, self.vnet)
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
    driver_common::tun::read(fd.as_fd(), buf)
}
