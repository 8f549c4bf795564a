//! TCP bindings: the state machine's moves between timeout classes.

use super::*;

fn tcp_table() -> (NatTable, FlowKey, BindingId) {
    let mut t = NatTable::new(cfg(&["198.51.100.1"]), crate::secrets::table_key_for_tests(3)).unwrap();
    let c = key(IpProtocol::Tcp, "203.0.113.9", 40000, "192.0.2.80", 80);
    let tr = t.create(&c, (v4("10.0.0.7"), 8080), 0, secs(0)).unwrap();
    (t, c, tr.id)
}

#[test]
fn tcp_handshake_and_close_move_through_states_and_timeouts() {
    use Direction::{Forward as F, Reverse as R};
    let (mut t, c, id) = tcp_table();
    let exp = |t: &NatTable| {
        let b = t.get_forward(&c).unwrap();
        (b.tcp.unwrap(), b.expires)
    };
    assert_eq!(exp(&t), (TcpState::HalfOpen, secs(30)));
    let steps: [(TcpFlags, Direction, TcpState, u64); 6] = [
        (TcpFlags::SYN, F, TcpState::HalfOpen, 30),
        (TcpFlags::SYN_ACK, R, TcpState::Opening, 240),
        (TcpFlags::ACK, F, TcpState::Established, 7440),
        (TcpFlags::FIN_ACK, F, TcpState::FinForward, 7440),
        (TcpFlags::FIN_ACK, R, TcpState::Closing, 240),
        (TcpFlags::ACK, F, TcpState::Closing, 240),
    ];
    for (n, (flags, dir, state, timeout)) in steps.into_iter().enumerate() {
        let now = secs(n as u64 + 1);
        assert_eq!(t.observe_tcp(id, flags, dir, now), Some(state), "step {n}");
        assert_eq!(exp(&t), (state, now + Duration::from_secs(timeout)), "step {n}");
    }
    // The closed connection expires after the transitory timeout.
    assert_eq!(t.poll_timeout(), Some(secs(6 + 240)));
    assert_eq!(t.handle_timeout(secs(245)), 0);
    assert_eq!(t.handle_timeout(secs(246)), 1);
    assert!(t.is_empty());
    assert_eq!(t.counters().expired(TimeoutClass::TcpTransitory), 1);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn tcp_rst_closes_and_a_new_syn_reopens() {
    let (mut t, c, id) = tcp_table();
    t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(1));
    assert_eq!(
        t.observe_tcp(id, TcpFlags::ACK, Direction::Reverse, secs(2)),
        Some(TcpState::Established)
    );
    assert_eq!(
        t.observe_tcp(id, TcpFlags::RST, Direction::Reverse, secs(3)),
        Some(TcpState::Reset)
    );
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(13));
    assert_eq!(
        t.observe_tcp(id, TcpFlags::SYN, Direction::Forward, secs(4)),
        Some(TcpState::HalfOpen)
    );
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(34));
    t.observe_tcp(id, TcpFlags::RST | TcpFlags::ACK, Direction::Forward, secs(5));
    // Past the RST timeout a lookup misses and the binding is gone from both indexes.
    let rev = t.get_forward(&c).unwrap().reverse;
    assert_eq!(t.lookup_forward(&c, 0, secs(15)), None);
    assert_eq!(t.get_reverse(&rev), None);
    assert_eq!(t.counters().expired(TimeoutClass::TcpClosed), 1);
    assert_eq!(
        t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(16)),
        None,
        "stale id"
    );
}

#[test]
fn mid_flow_tcp_stays_transitory_until_both_ways() {
    let (mut t, c, id) = tcp_table();
    for s in 1..5 {
        assert_eq!(
            t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(s)),
            Some(TcpState::HalfOpen)
        );
    }
    assert_eq!(t.get_forward(&c).unwrap().class, TimeoutClass::TcpHalfOpen);
    assert_eq!(t.new_in_prefix(c.src), 1, "still new");
    assert_eq!(
        t.observe_tcp(id, TcpFlags::ACK, Direction::Reverse, secs(5)),
        Some(TcpState::Established)
    );
    assert_eq!(
        t.new_in_prefix(c.src),
        0,
        "established: no longer counted against the prefix"
    );
}

/// A SYN nobody answers holds its port for the half-open timeout only; a SYN the target answers moves to the
/// transitory class.
#[test]
fn half_open_tcp_expires_after_the_short_timeout() {
    let (mut t, c, id) = tcp_table();
    assert_eq!(t.get_forward(&c).unwrap().class, TimeoutClass::TcpHalfOpen);
    assert_eq!(t.handle_timeout(secs(29)), 0);
    assert_eq!(t.handle_timeout(secs(30)), 1);
    assert_eq!(t.counters().expired(TimeoutClass::TcpHalfOpen), 1);
    assert_eq!(
        t.observe_tcp(id, TcpFlags::SYN, Direction::Forward, secs(31)),
        None
    );
    let tr = t.create(&c, (v4("10.0.0.7"), 8080), 0, secs(40)).unwrap();
    t.observe_tcp(tr.id, TcpFlags::SYN, Direction::Forward, secs(40));
    assert_eq!(
        t.observe_tcp(tr.id, TcpFlags::SYN_ACK, Direction::Reverse, secs(41)),
        Some(TcpState::Opening)
    );
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(41 + 240));
}
