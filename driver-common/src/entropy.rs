//! Secrets from the OS random source (SPEC.md §8.1): the one place a driver draws what the sans-IO core
//! takes as [`Secrets`]. Never derived from the configured `seed`, which is guessable (the lab set it to the
//! proxy index) and only makes simulations reproducible.
use std::io;

use pias_state::secrets::{SECRETS_LEN, Secrets};

/// Fills `buf` from `getrandom(2)` (blocking until the kernel's pool is initialised, which it is long
/// before a proxy starts), retrying on `EINTR` and short reads.
pub fn os_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes for the duration of the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Fresh secrets for a proxy starting now.
pub fn os_secrets() -> io::Result<Secrets> {
    let mut b = [0u8; SECRETS_LEN];
    os_random(&mut b)?;
    Ok(Secrets::from_bytes(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        // 768 bits drawn twice: equal only if the source is broken (or constant).
        let a = os_secrets().unwrap();
        let b = os_secrets().unwrap();
        assert_ne!(a, b);
        let mut z = [0u8; 64];
        os_random(&mut z).unwrap();
        assert_ne!(z, [0u8; 64]);
    }
}
