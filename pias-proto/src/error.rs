//! The one error type of the wire layer.
//!
//! Every parser in this crate returns [`WireError`] for malformed input; nothing here panics on any byte
//! sequence. Parsing never changes state (the crate holds none), so every variant means "this input was
//! rejected and nothing happened". Each variant names the structure (`what`) so a counter or a log line
//! can say which layer refused the packet.

/// Why bytes could not be parsed, or a buffer could not be filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends before the structure does.
    #[error("{what}: truncated, need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A version field holds a value this implementation does not speak.
    #[error("{what}: unsupported version {version}")]
    BadVersion { what: &'static str, version: u8 },
    /// A length field disagrees with the bytes present or with the structure's rules.
    #[error("{what}: bad length {len}")]
    BadLength { what: &'static str, len: usize },
    /// A checksum did not verify.
    #[error("{what}: bad checksum")]
    BadChecksum { what: &'static str },
    /// A type or code this implementation does not know and must not skip.
    #[error("{what}: unknown or unsupported value {value:#x}")]
    Unsupported { what: &'static str, value: u32 },
    /// A field holds a value the specification forbids.
    #[error("{what}: malformed ({reason})")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
    /// The message authentication code did not verify (wrong key, or tampered bytes).
    #[error("authentication failed")]
    BadMac,
    /// An output buffer is too small; nothing was written that the caller may rely on.
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
}

/// Result alias for the wire layer.
pub type Result<T> = core::result::Result<T, WireError>;

/// Returns `Err(Truncated)` unless `buf` holds at least `need` bytes.
#[inline]
pub(crate) fn need(what: &'static str, buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(WireError::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Returns `Err(BufferTooSmall)` unless `buf` holds at least `need` bytes.
#[inline]
pub(crate) fn room(buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(WireError::BufferTooSmall {
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}
