//! The overlay socket: bound to the proxy's overlay address, non-blocking, with large buffers and address
//! reuse (a restarted proxy binds again at once). Each driver wraps the returned std socket in its own
//! reactor's type.
//!
//! No packet-info option is needed: the core takes only the sender's address from a datagram (the
//! destination is always this proxy's one overlay address).

use core::net::SocketAddr;
use std::io;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds the overlay socket at `addr` with `buffer` bytes of receive and send buffer (0: the kernel's
/// default).
pub fn bind(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if buffer > 0 {
        // As root, the FORCE options ignore net.core.{r,w}mem_max; otherwise fall back to the capped ones.
        if set_buffer_force(&s, libc::SO_RCVBUFFORCE, buffer).is_err() {
            s.set_recv_buffer_size(buffer)?;
        }
        if set_buffer_force(&s, libc::SO_SNDBUFFORCE, buffer).is_err() {
            s.set_send_buffer_size(buffer)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("bind overlay socket {addr}: {e} (is the address configured on this host?)"),
        )
    })?;
    Ok(s.into())
}

/// `setsockopt(SOL_SOCKET, opt, size)` for the FORCE buffer options socket2 does not wrap.
fn set_buffer_force(s: &Socket, opt: libc::c_int, size: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: `v` is a live c_int and the length passed is its size; the descriptor is open.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends one datagram on a non-blocking UDP socket, whatever reactor holds it, without waiting:
/// `WouldBlock` when its send buffer is full. (A reactor's own `try_send_to` may answer `WouldBlock` from a
/// stale readiness flag without asking the kernel.)
pub fn send_to(socket: impl std::os::fd::AsFd, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(&socket).send_to(datagram, &to.into())
}
