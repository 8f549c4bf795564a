//! The health-gated announcement (SPEC.md §7.7): proxies on a fabric where proxy 1 can be cut off, the
//! rule's hysteresis, the lone proxy, the survivor of an overlay of two, draining, the operator's override
//! and the driver's overlay report.

use super::*;
use crate::seal::Dest;

const P1: &str = "10.0.0.1:6081";
const P2: &str = "10.0.0.2:6081";
const P3: &str = "10.0.0.3:6081";

fn proxy(id: u32, addr: &str, seeds: &[&str]) -> Proxy {
    let mut c = ProxyConfig::new(
        ProxyId(id),
        addr.parse().unwrap(),
        MasterKey::from_bytes([3; 32]),
        vec![format!("10.200.0.{id}").parse().unwrap()],
        vec!["10.99.255.1".parse().unwrap()],
    );
    c.membership.seeds = seeds.iter().map(|s| s.parse().unwrap()).collect();
    Proxy::new(c, &Secrets::from_seed_for_tests(id.into()), Instant::ZERO).unwrap()
}

/// Proxies whose overlay datagrams reach each other unless proxy 1 is cut off (every datagram to or from
/// it is lost); time advances in 10 ms steps, and every `AnnounceChanged` of proxy 1 is recorded with its
/// time. Three by default: proxy 1 cut off loses two Alive peers at once, which is isolation.
struct Pair {
    p: Vec<Proxy>,
    now: Instant,
    cut: bool,
    changes: Vec<(Instant, Announce)>,
}

impl Pair {
    fn new() -> Pair {
        Pair::of(&[P1, P2, P3])
    }

    fn of(addrs: &[&str]) -> Pair {
        let p = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| proxy(i as u32 + 1, a, if i == 0 { &[] } else { &[P1] }))
            .collect();
        Pair {
            p,
            now: Instant::ZERO,
            cut: false,
            changes: Vec::new(),
        }
    }

    fn step(&mut self) {
        self.now += Duration::from_millis(10);
        let now = self.now;
        let mut buf = vec![0u8; 2048];
        let mut wire: Vec<(usize, SocketAddr, Vec<u8>)> = Vec::new();
        for (i, p) in self.p.iter_mut().enumerate() {
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now);
            }
            while let Some(t) = p.poll_transmit(now, &mut buf) {
                if let Dest::Overlay(to) = t.dest {
                    wire.push((i, to, buf[..t.len].to_vec()));
                }
            }
        }
        for (from, to, bytes) in wire {
            let Some(j) = self.p.iter().position(|p| p.config().overlay_addr == to) else {
                continue;
            };
            if self.cut && (from == 0 || j == 0) {
                continue;
            }
            let src = self.p[from].config().overlay_addr;
            let mut b = vec![0u8; HEADROOM + bytes.len()];
            b[HEADROOM..].copy_from_slice(&bytes);
            let mut pb = PacketBuf::new(&mut b, HEADROOM, HEADROOM + bytes.len());
            let _ = self.p[j].handle_overlay(now, src, &mut pb);
        }
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(ev) = self.p[0].poll_event() {
            if let Event::AnnounceChanged { up, reason } = ev {
                self.changes.push((self.now, Announce { up, reason }));
            }
        }
        for p in &mut self.p[1..] {
            while p.poll_event().is_some() {}
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn up(&self) -> Announce {
        self.p[0].announce()
    }
}

#[test]
fn a_lone_proxy_announces_and_stays_announced() {
    let mut p = proxy(1, P1, &[]);
    assert_eq!(
        p.announce(),
        Announce {
            up: true,
            reason: AnnounceReason::Alone
        }
    );
    let mut now = Instant::ZERO;
    for _ in 0..600 {
        now += Duration::from_millis(100);
        p.handle_timeout(now);
    }
    assert!(p.announce().up, "{:?}", p.announce());
    assert!(
        std::iter::from_fn(|| p.poll_event()).all(|e| !matches!(e, Event::AnnounceChanged { .. })),
        "a lone proxy never changes its announcement"
    );
    assert_eq!(p.counters().announce_withdrawals, 0);
}

#[test]
fn a_cut_off_proxy_withdraws_after_the_hold_down_and_returns_after_the_hold_up() {
    let mut s = Pair::new();
    s.run(Duration::from_secs(3));
    assert_eq!(s.p[0].membership().usable().count(), 3, "joined");
    assert_eq!(s.up().reason, AnnounceReason::Healthy);
    assert!(
        s.changes.iter().all(|c| c.1.up),
        "no withdrawal while healthy: {:?}",
        s.changes
    );
    let hold = s.p[0].config().announce;

    // Cut: the last round trip was at most one probe interval before; withdrawn hold_down after it.
    let cut_at = s.now;
    s.cut = true;
    s.run(Duration::from_secs(5));
    let (at, a) = *s.changes.last().expect("withdrawn");
    assert_eq!(
        a,
        Announce {
            up: false,
            reason: AnnounceReason::Isolated
        }
    );
    let after = at.saturating_since(cut_at);
    assert!(
        after <= hold.hold_down && after + Duration::from_millis(400) >= hold.hold_down,
        "withdrawn {after:?} after the cut (hold_down {:?})",
        hold.hold_down
    );
    assert_eq!(s.p[0].counters().announce_withdrawals, 1);
    let mut m = Vec::new();
    s.p[0].for_each_counter(|n, v| m.push((n, v)));
    assert!(m.contains(&("announced", 0)), "the gauge says withdrawn");

    // Restored: the overlay heals (reconnect probes, refutation), then hold_up of health before announcing.
    let healed = s.now;
    s.cut = false;
    s.run(Duration::from_secs(15));
    let ups: Vec<_> = s.changes.iter().filter(|c| c.0 > healed && c.1.up).collect();
    assert_eq!(ups.len(), 1, "announced once, no flapping: {:?}", s.changes);
    assert_eq!(ups[0].1.reason, AnnounceReason::Healthy);
    assert_eq!(
        s.p[0].counters().announce_withdrawals,
        1,
        "recovering is not another withdrawal"
    );
    let first_ok = s
        .changes
        .iter()
        .find(|c| c.0 > healed && c.1.reason == AnnounceReason::Recovering)
        .map(|c| c.0);
    let first_ok = first_ok.expect("a Recovering phase first");
    assert!(
        ups[0].0.saturating_since(first_ok) >= hold.hold_up,
        "announced {:?} after health returned (hold_up {:?})",
        ups[0].0.saturating_since(first_ok),
        hold.hold_up
    );
    assert!(s.up().up);
}

#[test]
fn a_short_blip_does_not_withdraw() {
    let mut s = Pair::new();
    s.run(Duration::from_secs(3));
    s.cut = true;
    s.run(Duration::from_millis(1000));
    s.cut = false;
    s.run(Duration::from_secs(5));
    assert!(s.up().up);
    assert!(
        s.changes.iter().all(|c| c.1.up),
        "a 1 s blip, shorter than hold_down, must not withdraw: {:?}",
        s.changes
    );
}

#[test]
fn draining_withdraws_whatever_the_operator_said() {
    let mut s = Pair::new();
    s.run(Duration::from_secs(3));
    s.p[0].set_announce_mode(s.now, AnnounceMode::On);
    s.collect();
    assert_eq!(s.up().reason, AnnounceReason::Operator);
    s.p[0].leave(s.now);
    s.collect();
    assert_eq!(
        s.changes.last().map(|c| c.1),
        Some(Announce {
            up: false,
            reason: AnnounceReason::Draining
        }),
        "the leave withdraws at once: {:?}",
        s.changes
    );
    s.p[0].set_announce_mode(s.now, AnnounceMode::Auto);
    assert!(!s.up().up, "still draining");
}

#[test]
fn a_withdrawal_leaves_no_deadline_in_the_past() {
    // Draining, and withdrawn for a fault: the driver's timer must not be left due for ever.
    let mut p = proxy(1, P1, &[]);
    let t0 = Instant::from_millis(1000);
    p.leave(t0);
    assert!(!p.announce().up);
    let late = t0 + Duration::from_secs(30);
    p.handle_timeout(late);
    assert!(
        p.poll_timeout().is_none_or(|t| t > late),
        "{:?}",
        p.poll_timeout()
    );

    let mut p = proxy(1, P1, &[]);
    p.set_overlay_failed(t0, true);
    p.handle_timeout(late);
    assert_eq!(p.announce().reason, AnnounceReason::OverlayFailed);
    let later = late + Duration::from_secs(30);
    p.handle_timeout(later);
    assert!(
        p.poll_timeout().is_none_or(|t| t > later),
        "{:?}",
        p.poll_timeout()
    );
}

#[test]
fn the_operator_overrides_and_auto_returns_to_the_rule() {
    let mut s = Pair::new();
    s.run(Duration::from_secs(3));
    s.p[0].set_announce_mode(s.now, AnnounceMode::Off);
    s.collect();
    assert_eq!(
        s.changes.last().map(|c| c.1),
        Some(Announce {
            up: false,
            reason: AnnounceReason::Operator
        })
    );
    assert_eq!(s.p[0].announce_mode(), AnnounceMode::Off);
    // `auto` when healthy: back at once (the operator decided; no hold-up).
    s.p[0].set_announce_mode(s.now, AnnounceMode::Auto);
    s.collect();
    assert_eq!(s.up().reason, AnnounceReason::Healthy);
    // `on` keeps a cut-off proxy announced; `auto` then withdraws it at once (the fault is old).
    s.p[0].set_announce_mode(s.now, AnnounceMode::On);
    s.cut = true;
    s.run(Duration::from_secs(4));
    assert_eq!(s.up().reason, AnnounceReason::Operator);
    assert!(s.up().up);
    s.p[0].set_announce_mode(s.now, AnnounceMode::Auto);
    s.collect();
    assert_eq!(
        s.up(),
        Announce {
            up: false,
            reason: AnnounceReason::Isolated
        }
    );
    assert_eq!(s.p[0].counters().announce_withdrawals, 2);
}

#[test]
fn an_overlay_socket_failure_withdraws_after_the_hold_down() {
    // Even a lone proxy: it cannot answer its targets' registrations or reach anyone.
    let mut p = proxy(1, P1, &[]);
    let hold = p.config().announce;
    let t0 = Instant::from_millis(1000);
    p.set_overlay_failed(t0, true);
    assert!(p.announce().up, "not before the hold-down");
    assert_eq!(p.poll_timeout().map(|t| t <= t0 + hold.hold_down), Some(true));
    p.set_overlay_failed(t0 + Duration::from_millis(500), true);
    p.handle_timeout(t0 + hold.hold_down);
    assert_eq!(
        p.announce(),
        Announce {
            up: false,
            reason: AnnounceReason::OverlayFailed
        }
    );
    let t1 = t0 + hold.hold_down + Duration::from_secs(1);
    p.set_overlay_failed(t1, false);
    assert_eq!(p.announce().reason, AnnounceReason::Recovering);
    p.handle_timeout(t1 + (hold.hold_up - Duration::from_millis(1)));
    assert!(!p.announce().up);
    p.handle_timeout(t1 + hold.hold_up);
    assert_eq!(
        p.announce(),
        Announce {
            up: true,
            reason: AnnounceReason::Alone
        }
    );
    let evs: Vec<_> = std::iter::from_fn(|| p.poll_event())
        .filter_map(|e| match e {
            Event::AnnounceChanged { up, reason } => Some((up, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        evs,
        [
            (false, AnnounceReason::OverlayFailed),
            (false, AnnounceReason::Recovering),
            (true, AnnounceReason::Alone)
        ]
    );
}

#[test]
fn a_hold_down_shorter_than_a_suspicion_is_refused() {
    let mut c = proxy(1, P1, &[]).config().clone();
    c.announce.hold_down = Duration::from_millis(300);
    assert_eq!(c.validate().unwrap_err().field, "announce_hold_down");
}

#[test]
fn the_survivor_of_an_overlay_of_two_stays_announced() {
    // Proxy 2 goes silent: a crash and a cut look the same from proxy 1, and withdrawing would turn the
    // crash of one proxy into an outage of both (SPEC.md §7.7).
    let mut s = Pair::of(&[P1, P2]);
    s.run(Duration::from_secs(3));
    assert_eq!(s.up().reason, AnnounceReason::Healthy);
    s.cut = true;
    s.run(Duration::from_secs(10));
    assert!(
        s.changes.iter().all(|c| c.1.up),
        "never withdrawn: {:?}",
        s.changes
    );
    assert_eq!(s.up().reason, AnnounceReason::Alone);
    assert_eq!(s.p[0].counters().announce_withdrawals, 0);
    let t = s.p[0].poll_timeout();
    assert!(
        t.is_none_or(|t| t > s.now),
        "no deadline left in the past: {t:?} at {:?}",
        s.now
    );
    // The peer returns: healthy again, still no withdrawal.
    s.cut = false;
    s.run(Duration::from_secs(10));
    assert_eq!(s.up().reason, AnnounceReason::Healthy);
    assert_eq!(s.p[0].counters().announce_withdrawals, 0);
}

#[test]
fn losing_peers_one_by_one_leaves_the_last_one_announced() {
    // Three proxies; proxy 3 goes silent first and is declared Down, then proxy 2: proxy 1 lost one Alive
    // peer at a time, which is what crashes look like, so it stays announced to the end.
    let mut s = Pair::new();
    s.run(Duration::from_secs(3));
    let p3 = s.p.pop().expect("three");
    drop(p3);
    s.run(Duration::from_secs(6));
    assert!(s.up().up, "{:?}", s.up());
    let p2 = s.p.pop().expect("two");
    drop(p2);
    s.run(Duration::from_secs(6));
    assert!(
        s.changes.iter().all(|c| c.1.up),
        "never withdrawn: {:?}",
        s.changes
    );
    assert_eq!(s.up().reason, AnnounceReason::Alone);
}
