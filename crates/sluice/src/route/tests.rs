use bytes::Bytes;

use super::*;
use crate::ack::{AckReceiver, AckToken};
use crate::buffer::{self, BufferReceiver, WhenFull};

fn sink() -> (Output, BufferReceiver) {
    let (tx, rx) = buffer::memory(1000, WhenFull::Block, Arc::new(Counters::default()));
    (Output::new(vec![tx]), rx)
}

fn node(imp: Imp) -> (RouteNode, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    (
        RouteNode {
            name: "r".into(),
            counters: counters.clone(),
            book: None,
            imp,
            _stop: None,
        },
        counters,
    )
}

fn tenant_node(out: Output) -> (RouteNode, Arc<Counters>) {
    let cfg: tenant::TenantRouteConfig =
        toml_edit::de::from_str("active_list = \"x\"\nstrip = true").unwrap();
    let set = tenant::ActiveSet::from_ids(["acme"]);
    node(Imp::Tenant {
        split: tenant::TenantSplit::new(&cfg),
        active: Arc::new(ArcSwap::from_pointee(set)),
        out,
    })
}

fn batch(bodies: &[&'static str], tags: &[&str]) -> (EventBatch, AckReceiver) {
    let (token, rx) = AckToken::channel();
    let events = bodies
        .iter()
        .zip(tags.iter().cycle())
        .map(|(b, t)| {
            Event::new(
                Bytes::from_static(b.as_bytes()),
                0,
                Arc::from(*t),
                "s".into(),
            )
        })
        .collect();
    (EventBatch::new(events, token), rx)
}

#[tokio::test]
async fn partial_policy_drop_forwards_the_rest_and_reports_dropped() {
    let (out, mut rx) = sink();
    let (route, counters) = tenant_node(out);
    let (b, ack) = batch(&["acme a", "nope b"], &["t"]);
    assert!(route.send(b, true).await);
    let got = rx.recv().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got.events[0].body[..], b"a");
    got.ack.resolve(AckStatus::Delivered);
    assert_eq!(ack.await, AckStatus::Dropped);
    assert_eq!(counters.dropped.load(Relaxed), 1);
    assert_eq!(counters.events_out.load(Relaxed), 1);
}

#[tokio::test]
async fn whole_batch_dropped_by_policy_resolves_dropped_without_sending() {
    let (out, mut rx) = sink();
    let (route, _) = tenant_node(out);
    let (b, ack) = batch(&["nope a", "nope b"], &["t"]);
    route.send(b, true).await;
    assert_eq!(ack.await, AckStatus::Dropped);
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn split_parts_share_the_token_and_the_original_resolves() {
    let (apps, mut apps_rx) = sink();
    let (rest, mut rest_rx) = sink();
    let cfg: rules::RulesRouteConfig = toml_edit::de::from_str(
        "rules = [{ match = \"app.**\", to = \"apps\" }, { match = \"ignore*\", to = \"drop\" }]\ndefault = \"rest\"",
    )
    .unwrap();
    let (route, counters) = node(Imp::Rules {
        rules: rules::Rules::new(&cfg).unwrap(),
        ports: vec![apps, rest],
    });
    let (b, mut ack) = batch(
        &["1", "2", "3", "4"],
        &["app.x", "misc", "ignore_me", "app"],
    );
    route.send(b, true).await;
    let a = apps_rx.recv().await.unwrap();
    let r = rest_rx.recv().await.unwrap();
    assert_eq!((a.len(), r.len()), (2, 1));
    a.ack.resolve(AckStatus::Delivered);
    let waker = std::task::Waker::noop();
    let pending = Pin::new(&mut ack).poll(&mut std::task::Context::from_waker(waker));
    assert!(pending.is_pending(), "the rest part is still out");
    r.ack.resolve(AckStatus::Delivered);
    assert_eq!(
        ack.await,
        AckStatus::Delivered,
        "a drop rule is not a policy drop"
    );
    assert_eq!(counters.dropped.load(Relaxed), 1);
}

#[tokio::test]
async fn filtered_out_batch_resolves_delivered() {
    let (out, mut rx) = sink();
    let cfg: filter::FilterRouteConfig = toml_edit::de::from_str("min_level = \"error\"").unwrap();
    let (route, counters) = node(Imp::Filter { filter: cfg, out });
    let (b, ack) = batch(&["INFO x", "WARN y"], &["t"]);
    route.send(b, true).await;
    assert_eq!(ack.await, AckStatus::Delivered);
    assert!(rx.try_recv().is_none());
    assert_eq!(counters.dropped.load(Relaxed), 2);
}

#[tokio::test]
async fn block_rate_limit_waits_unless_reached_through_a_fan_out() {
    let (out, mut rx) = sink();
    let cfg: rate_limit::RateLimitRouteConfig =
        toml_edit::de::from_str("events_per_sec = 100\nwhen_over = \"block\"").unwrap();
    let limiter = std::sync::Mutex::new(rate_limit::Limiter::new(&cfg).unwrap());
    let (route, counters) = node(Imp::RateLimit {
        limiter,
        last_report: AtomicU64::new(0),
        out,
    });
    let start = Instant::now();
    // A full bucket holds 10; 21 events owe 11, paid off in 110 ms.
    let (b, _) = batch(&["a"; 21], &["t"]);
    route.send(b, true).await;
    assert!(
        start.elapsed() >= Duration::from_millis(105),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(rx.recv().await.unwrap().len(), 21);
    assert_eq!(counters.dropped.load(Relaxed), 0);
    let (b, _) = batch(&["a"; 5], &["t"]);
    route.send(b, false).await;
    assert_eq!(
        counters.dropped.load(Relaxed),
        5,
        "no tokens left: dropped, not waited for"
    );
}
