//! Group messages between proxies: JAP→RAP reports, IAP↔RAP resolution, JAP→IAP invalidation.

use super::rd;
use crate::addr::{ProxyId, TransportAddr};
use crate::error::{Result, WireError, need, room};

const TA: usize = TransportAddr::WIRE_LEN;

/// One line of a JAP's report: "for this group I have about this many targets, and am this loaded" (28
/// bytes).
///
/// ```text
/// 0 group (20) | 20 approximate target count u32 | 24 flags u8 | 25 reserved u8 | 26 load u16
/// ```
/// Flag bit 0: the JAP has tunnel-mode targets for the group. `load` is the JAP's rate of new flows in
/// per-mille of its configured capacity (1000 = at capacity; 0 when it has no capacity configured), so a
/// RAP can weight JAPs by spare capacity without knowing each one's capacity (SPEC.md §9.1). It took two of
/// the formerly reserved bytes, which older receivers ignore and older senders send as zero ("not loaded").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportEntry {
    pub group: TransportAddr,
    pub count: u32,
    pub flags: u8,
    pub load: u16,
}

impl ReportEntry {
    pub const LEN: usize = 28;
    pub const FLAG_TUNNEL: u8 = 0x01;
    /// The `load` of a JAP exactly at its capacity.
    pub const LOAD_FULL: u16 = 1000;

    fn parse(b: &[u8]) -> Result<Self> {
        need("report entry", b, Self::LEN)?;
        Ok(ReportEntry {
            group: TransportAddr::parse(&b[..TA])?,
            count: rd::u32(b, 20),
            flags: b[24],
            load: rd::u16(b, 26),
        })
    }

    fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        let mut ta = [0u8; TA];
        self.group.write(&mut ta);
        out[..TA].copy_from_slice(&ta);
        out[20..24].copy_from_slice(&self.count.to_be_bytes());
        out[24] = self.flags;
        out[25] = 0;
        out[26..28].copy_from_slice(&self.load.to_be_bytes());
        Ok(())
    }
}

/// A JAP's report to a RAP: several groups at once (`0 count u16 | 2 reserved | 4 count × 28`).
///
/// The RAP acknowledges the message's sequence number with a [`ReportAck`]; the JAP resends until it is
/// acknowledged (SPEC.md §9.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reports<'a> {
    Wire(&'a [u8]),
    Slice(&'a [ReportEntry]),
}

impl<'a> Reports<'a> {
    /// Most entries one message carries.
    pub const MAX: usize = (super::MAX_BODY_LEN - 4) / ReportEntry::LEN;

    pub fn parse(b: &'a [u8]) -> Result<Self> {
        need("reports", b, 4)?;
        let count = usize::from(rd::u16(b, 0));
        let end = 4 + count * ReportEntry::LEN;
        need("reports list", b, end)?;
        let list = &b[4..end];
        for e in list.chunks_exact(ReportEntry::LEN) {
            ReportEntry::parse(e)?;
        }
        Ok(Reports::Wire(list))
    }

    pub fn len(&self) -> usize {
        match self {
            Reports::Wire(b) => b.len() / ReportEntry::LEN,
            Reports::Slice(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = ReportEntry> + 'a {
        let (wire, slice): (&'a [u8], &'a [ReportEntry]) = match *self {
            Reports::Wire(b) => (b, &[]),
            Reports::Slice(s) => (&[], s),
        };
        wire.chunks_exact(ReportEntry::LEN)
            .filter_map(|c| ReportEntry::parse(c).ok())
            .chain(slice.iter().copied())
    }

    pub(super) fn body_len(&self) -> usize {
        4 + self.len() * ReportEntry::LEN
    }

    pub(super) fn emit(&self, out: &mut [u8]) -> Result<()> {
        let n = self.len();
        if n > usize::from(u16::MAX) {
            return Err(WireError::BadLength {
                what: "reports",
                len: n,
            });
        }
        room(out, self.body_len())?;
        out[0..2].copy_from_slice(&(n as u16).to_be_bytes());
        out[2..4].fill(0);
        match self {
            Reports::Wire(b) => out[4..4 + b.len()].copy_from_slice(b),
            Reports::Slice(s) => {
                for (i, e) in s.iter().enumerate() {
                    e.emit(&mut out[4 + i * ReportEntry::LEN..])?;
                }
            }
        }
        Ok(())
    }
}

/// Acknowledges a report message by its sequence number (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportAck {
    pub acked_seq: u64,
}

impl ReportAck {
    pub const LEN: usize = 8;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("report ack", b, Self::LEN)?;
        Ok(ReportAck {
            acked_seq: rd::u64(b, 0),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        out[..8].copy_from_slice(&self.acked_seq.to_be_bytes());
        Ok(())
    }
}

/// An IAP asks a RAP for a group's JAPs without sending a packet through it (20 bytes: the group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolve {
    pub group: TransportAddr,
}

impl Resolve {
    pub const LEN: usize = TA;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("resolve", b, Self::LEN)?;
        Ok(Resolve {
            group: TransportAddr::parse(&b[..TA])?,
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        let mut ta = [0u8; TA];
        self.group.write(&mut ta);
        out[..TA].copy_from_slice(&ta);
        Ok(())
    }
}

/// Most JAPs in one answer.
pub const MAX_ANSWER_ENTRIES: usize = 16;

/// One JAP in an answer, with its weight in the IAP's per-flow choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnswerEntry {
    pub jap: ProxyId,
    pub weight: u32,
}

/// A RAP's answer to an IAP: the JAPs to use for a group and for how long.
///
/// ```text
/// 0 group (20) | 20 ttl_ms u32 | 24 count u8 | 25 reserved (3) | 28 count × (jap id u32, weight u32)
/// ```
/// A count of 0 means "the group has no JAP now": the IAP caches that (negatively) for the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub group: TransportAddr,
    pub ttl_ms: u32,
    pub count: u8,
    pub entries: [AnswerEntry; MAX_ANSWER_ENTRIES],
}

impl Answer {
    pub fn new(group: TransportAddr, ttl_ms: u32, list: &[AnswerEntry]) -> Self {
        let n = list.len().min(MAX_ANSWER_ENTRIES);
        let mut entries = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        entries[..n].copy_from_slice(&list[..n]);
        Answer {
            group,
            ttl_ms,
            count: n as u8,
            entries,
        }
    }

    /// The JAPs, in the order sent.
    pub fn japs(&self) -> &[AnswerEntry] {
        &self.entries[..usize::from(self.count).min(MAX_ANSWER_ENTRIES)]
    }

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("answer", b, 28)?;
        let count = b[24];
        if usize::from(count) > MAX_ANSWER_ENTRIES {
            return Err(WireError::BadLength {
                what: "answer entries",
                len: count.into(),
            });
        }
        need("answer entries", b, 28 + 8 * usize::from(count))?;
        let mut entries = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        for (i, e) in entries.iter_mut().take(count.into()).enumerate() {
            let jap = ProxyId(rd::u32(b, 28 + 8 * i));
            if !jap.is_some() {
                return Err(WireError::Malformed {
                    what: "answer",
                    reason: "JAP id 0",
                });
            }
            *e = AnswerEntry {
                jap,
                weight: rd::u32(b, 32 + 8 * i),
            };
        }
        Ok(Answer {
            group: TransportAddr::parse(&b[..TA])?,
            ttl_ms: rd::u32(b, 20),
            count,
            entries,
        })
    }

    pub(super) fn body_len(&self) -> usize {
        28 + 8 * self.japs().len()
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, self.body_len())?;
        let mut ta = [0u8; TA];
        self.group.write(&mut ta);
        out[..TA].copy_from_slice(&ta);
        out[20..24].copy_from_slice(&self.ttl_ms.to_be_bytes());
        out[24] = self.japs().len() as u8;
        out[25..28].fill(0);
        for (i, e) in self.japs().iter().enumerate() {
            out[28 + 8 * i..32 + 8 * i].copy_from_slice(&e.jap.0.to_be_bytes());
            out[32 + 8 * i..36 + 8 * i].copy_from_slice(&e.weight.to_be_bytes());
        }
        Ok(())
    }
}

/// A JAP tells an IAP to drop its cache entry for a group (24 bytes: `0 group | 20 reason u8 | 21 rsvd`).
///
/// [`Invalidate::REASON_NO_TARGETS`] removes the JAP from the IAP's entry; [`Invalidate::REASON_DRAINING`]
/// asks the IAP to send its *new* flows elsewhere while the JAP keeps the flows it already serves (SPEC.md
/// §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidate {
    pub group: TransportAddr,
    pub reason: u8,
}

impl Invalidate {
    pub const LEN: usize = TA + 4;
    /// The JAP has no live target for the group.
    pub const REASON_NO_TARGETS: u8 = 1;
    /// The JAP is over its capacity for new flows: re-resolve, send new flows elsewhere, keep established
    /// ones at this JAP.
    pub const REASON_DRAINING: u8 = 2;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("invalidate", b, Self::LEN)?;
        Ok(Invalidate {
            group: TransportAddr::parse(&b[..TA])?,
            reason: b[20],
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        let mut ta = [0u8; TA];
        self.group.write(&mut ta);
        out[..TA].copy_from_slice(&ta);
        out[20] = self.reason;
        out[21..24].fill(0);
        Ok(())
    }
}
