//! Lab: `exclude_sender` across JAPs (SPEC.md §9.5). The DNS group 10.99.0.53:53/udp has the policy and one
//! target per site: t1 (JAP p1) and t3 (JAP p3). A site that queries its own group is alone at its JAP for
//! it: the JAP hands the query off to the group's RAP, which relays it to the other JAP, and the other site
//! answers — where before the JAP dropped the query and invalidated its IAP each time.
//!
//! Asserted, for each site: every query is answered, by the other site (the answer is the answering site's
//! address), never by itself (its dnsmasq logs none of them); its JAP counted the handoffs and sent no
//! Invalidate; some RAP counted the relays.
//!
//! Needs root and the lab's tools; run under the cross-helper lock:
//! `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_exclude_sender`.

mod common;

use common::lab::*;

const QUERIES: usize = 5;

#[test]
fn lab_exclude_sender_tokio() {
    exclude_sender("tokio");
}

#[test]
fn lab_exclude_sender_mio() {
    exclude_sender("mio");
}

fn exclude_sender(driver: &str) {
    let _lab = Lab::up(driver);
    for (site, jap, me, other) in [("t1", "p1", T1.0, T3.0), ("t3", "p3", T3.0, T1.0)] {
        let qlog = format!("{DIR}/{site}/dns-queries.log");
        let own_queries = || {
            std::fs::read_to_string(&qlog)
                // The test's queries only: the site's agent queries its own dnsmasq directly (". NS", its
                // health check, SPEC §10.3), which is not a query through the group.
                .map(|s| {
                    s.lines()
                        .filter(|l| l.contains("query[") && l.contains("www.demo.pias"))
                        .count()
                })
                .unwrap_or(0)
        };
        let before_log = own_queries();
        let a = counters();
        for i in 0..QUERIES {
            let out = exec(
                site,
                &[
                    "dig",
                    &format!("@{DNS4}"),
                    "+time=2",
                    "+tries=2",
                    "www.demo.pias",
                    "A",
                ],
            );
            let got = answer(&text(&out));
            assert_eq!(
                got.as_deref(),
                Some(other),
                "{site}'s query {i} must be answered by the other site ({other}), not {me}:\n{}",
                text(&out)
            );
        }
        let b = counters();
        let why = changed(&a, &b);
        assert_eq!(
            own_queries(),
            before_log,
            "{site}'s dnsmasq must not see its own queries"
        );
        assert!(
            delta(&a, &b, jap, "jap_handoffs") >= 1,
            "{jap} handed {site}'s queries off:{why}"
        );
        let relayed: u64 = PROXIES.iter().map(|p| delta(&a, &b, p, "rap_handoffs")).sum();
        assert!(relayed >= 1, "a RAP relayed the handoffs:{why}");
        assert_eq!(
            delta(&a, &b, jap, "invalidations_sent") + delta(&a, &b, jap, "drop_no_target"),
            0,
            "{jap} neither dropped nor invalidated:{why}"
        );
    }
    assert!(
        answer(&dig("c1", DNS4, "A")).is_some(),
        "clients keep being served"
    );
}
