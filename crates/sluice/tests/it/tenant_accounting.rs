//! Per-tenant accounting end to end: a few hundred tenants, some inactive, some
//! over a per-tenant rate limit, through a tenant route into a file; `/metrics`
//! must balance every tenant (received = delivered + dropped) with exactly the
//! figures the test counts itself from what it sent and what the file holds.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use crate::api::{Sample, api_addr, scrape};
use crate::common::{Daemon, wait_until};

const TENANTS: usize = 300;
const MAX_SERIES: usize = 250;

/// `name{tenant=...}` (with `reason`, when given) values by tenant.
fn by_tenant(s: &[Sample], name: &str, reason: Option<&str>) -> HashMap<String, f64> {
    s.iter()
        .filter(|(n, l, _)| {
            n == name && reason.is_none_or(|r| l.get("reason").map(String::as_str) == Some(r))
        })
        .map(|(_, l, v)| (l["tenant"].clone(), *v))
        .collect()
}

#[test]
fn every_tenant_balances_received_against_delivered_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let inactive = |k: usize| k % 7 == 3;
    let heavy = |k: usize| k.is_multiple_of(10);
    let active: String = (0..TENANTS)
        .filter(|&k| !inactive(k))
        .map(|k| format!("t{k}\n"))
        .collect();
    std::fs::write(dir.path().join("tenants.txt"), active).unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            data_dir = "$DIR/data"
            [api]
            address = "127.0.0.1:0"
            max_tenant_series = {MAX_SERIES}
            [sources.p]
            type = "pipe"
            path = "$DIR/in.fifo"
            [routes.by_tenant]
            type = "tenant"
            inputs = ["p"]
            active_list = "$DIR/tenants.txt"
            [routes.limit]
            type = "rate_limit"
            inputs = ["by_tenant"]
            per = "{{tenant}}"
            events_per_sec = 20
            when_over = "drop"
            [sinks.f]
            type = "file"
            inputs = ["limit"]
            path = "$DIR/out.log"
            "#
        ),
    );
    let addr = api_addr(&d);
    let fifo = dir.path().join("in.fifo");
    wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
    // Tenants interleaved so that every batch mixes many of them; heavy ones
    // run far over their limit. Plus lines no tenant can claim: a bad id, no id.
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut text = String::new();
    for round in 0..300 {
        for k in 0..TENANTS {
            if round < 3 || heavy(k) {
                text.push_str(&format!("t{k} line {round}\n"));
                *sent.entry(format!("t{k}")).or_default() += 1;
            }
        }
    }
    for i in 0..40 {
        text.push_str(&format!("bad!id {i}\nnospace{i}\n"));
    }
    let total = sent.values().sum::<u64>() + 80;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();

    let mut s = Vec::new();
    let settled = |s: &[Sample]| -> f64 {
        s.iter()
            .filter(|(n, _, _)| {
                n == "sluice_tenant_delivered_events_total"
                    || n == "sluice_tenant_dropped_events_total"
            })
            .map(|x| x.2)
            .sum()
    };
    wait_until(Duration::from_secs(30), "every event settled", || {
        s = scrape(addr);
        settled(&s) >= total as f64
    });
    assert_eq!(settled(&s), total as f64, "settled more than was sent");

    let mut delivered: HashMap<String, u64> = HashMap::new();
    for line in std::fs::read_to_string(dir.path().join("out.log"))
        .unwrap()
        .lines()
    {
        *delivered
            .entry(line.split(' ').next().unwrap().to_owned())
            .or_default() += 1;
    }
    let received = by_tenant(&s, "sluice_tenant_received_events_total", None);
    let got_delivered = by_tenant(&s, "sluice_tenant_delivered_events_total", None);
    let rate_limited = by_tenant(&s, "sluice_tenant_dropped_events_total", Some("rate_limit"));
    let inactive_dropped = by_tenant(&s, "sluice_tenant_dropped_events_total", Some("inactive"));
    let all_dropped = |t: &str| -> f64 {
        s.iter()
            .filter(|(n, l, _)| n == "sluice_tenant_dropped_events_total" && l["tenant"] == t)
            .map(|x| x.2)
            .sum()
    };
    assert_eq!(received.len(), MAX_SERIES + 1, "the cap plus other");
    let mut other = (80.0, 0.0, 0.0, 80.0); // received, delivered, rate limited, inactive
    for k in 0..TENANTS {
        let t = format!("t{k}");
        let (sent_t, deliv_t) = (sent[&t] as f64, *delivered.get(&t).unwrap_or(&0) as f64);
        let (limited_t, inactive_t) = if inactive(k) {
            (0.0, sent_t)
        } else {
            (sent_t - deliv_t, 0.0)
        };
        if !received.contains_key(&t) {
            other.0 += sent_t;
            other.1 += deliv_t;
            other.2 += limited_t;
            other.3 += inactive_t;
            continue;
        }
        assert_eq!(received[&t], sent_t, "{t} received");
        assert_eq!(got_delivered[&t], deliv_t, "{t} delivered");
        assert_eq!(rate_limited[&t], limited_t, "{t} rate limited");
        assert_eq!(inactive_dropped[&t], inactive_t, "{t} inactive");
        assert_eq!(
            received[&t],
            got_delivered[&t] + all_dropped(&t),
            "{t} balance"
        );
        if heavy(k) && !inactive(k) {
            assert!(limited_t > 0.0, "{t} went over its limit");
        }
    }
    assert_eq!(received["other"], other.0, "other received");
    assert_eq!(got_delivered["other"], other.1, "other delivered");
    assert_eq!(rate_limited["other"], other.2, "other rate limited");
    assert_eq!(inactive_dropped["other"], other.3, "other inactive");
    assert!(
        s.iter()
            .any(|(n, _, v)| n == "sluice_tenant_other_lookups_total" && *v > 0.0)
    );
    assert!(d.stop().success(), "{}", d.stderr());
}
