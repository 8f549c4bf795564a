//! No reflection (SPEC.md §8.4): replies to requests whose source is not yet verified — the Challenge to a
//! zero-cookie Register, the Gone to a Refresh or Deregister for no registration — go to whatever source the
//! request claims, which anyone can forge. Each is at most as large as its request (no amplification), and
//! they are rate-limited per source prefix (/24 for IPv4, /56 for IPv6: one site, whatever address in it is
//! forged), so replaying one recorded request from spoofed sources draws a bounded number of replies towards
//! any victim network, however many copies are sent.
//!
//! Token buckets in a bounded LRU map keyed by prefix: `reply_burst` tokens, refilled at `reply_rate` per
//! second. A prefix evicted from a full map starts again with a full bucket; an attacker who wants that has
//! to cycle `reply_limit_prefixes` other prefixes through per burst, each costing them a request at least
//! as large as the reply it draws.

use super::*;

/// A source prefix: family, then the /24 (IPv4) or /56 (IPv6) bytes.
pub(super) type Prefix = [u8; 8];

/// A prefix's token bucket: thousandths of a token, and when it was last refilled.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    milli: u64,
    at: Instant,
}

/// The prefix a source belongs to for rate limiting.
pub(super) fn prefix_of(ip: IpAddr) -> Prefix {
    let mut p = [0u8; 8];
    match ip {
        IpAddr::V4(a) => {
            p[0] = 4;
            p[1..4].copy_from_slice(&a.octets()[..3]);
        }
        IpAddr::V6(a) => {
            p[0] = 6;
            p[1..8].copy_from_slice(&a.octets()[..7]);
        }
    }
    p
}

impl Registry {
    /// Takes one token from `to`'s prefix bucket; `false` (counted) when it is empty.
    pub(super) fn reply_allowed(&mut self, now: Instant, to: IpAddr) -> bool {
        let cap = u64::from(self.cfg.reply_burst).saturating_mul(1000);
        let rate = u64::from(self.cfg.reply_rate);
        let p = prefix_of(to);
        let b = match self.reply_limit.get_mut(&p) {
            Some(b) => b,
            None => {
                if self
                    .reply_limit
                    .insert(p, Bucket { milli: cap, at: now })
                    .is_some()
                {
                    self.counters.reply_limit_evicted += 1;
                }
                match self.reply_limit.get_mut(&p) {
                    Some(b) => b,
                    None => return false,
                }
            }
        };
        // Whole milliseconds only, so a refill rounds down and never lets more through than the rate.
        let ms = now.saturating_since(b.at).as_millis() as u64;
        if ms > 0 {
            b.milli = b.milli.saturating_add(ms.saturating_mul(rate)).min(cap);
            b.at = now;
        }
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            self.counters.replies_rate_limited += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_group_a_site() {
        let p = |s: &str| prefix_of(s.parse().unwrap());
        assert_eq!(p("192.0.2.1"), p("192.0.2.254"));
        assert_ne!(p("192.0.2.1"), p("192.0.3.1"));
        assert_eq!(p("2001:db8:0:ff::1"), p("2001:db8:0:ff:1::1"));
        assert_eq!(p("2001:db8:0:1::1"), p("2001:db8:0:ff::1"), "same /56");
        assert_ne!(p("2001:db8:0:100::1"), p("2001:db8:0:ff::1"));
        assert_ne!(p("0.0.0.0"), p("::"));
    }
}
