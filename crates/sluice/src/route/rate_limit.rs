//! `type = "rate_limit"`: token buckets per key (Scribe's `max_msg_per_second`,
//! the FUSE quota's cousin for any stream).
//!
//! The key is a template (`per = "{tenant}"`); `""` means one bucket for all. Each
//! key has an event bucket (`events_per_sec`) and/or a byte bucket
//! (`bytes_per_sec`), refilled continuously and holding at most a tenth of a
//! second of tokens, so a long window admits the configured rate within 1%.
//!
//! `when_over = "drop"`: an event is admitted while both buckets hold tokens (the
//! byte bucket may go into debt by one event, so an event larger than the burst
//! still passes when the bucket is full); others are dropped and counted per key.
//! `when_over = "block"`: every event is admitted and charged; the sending task
//! then sleeps until the most indebted key is back to zero. That slows the
//! source — backpressure, nothing dropped.
//!
//! Keys idle long enough to be full again are forgotten once more than
//! [`MAX_KEYS`] exist (a sweep of the table, at most once per [`SWEEP_EVERY`]);
//! past that, new keys share one overflow bucket, as do keys longer than
//! [`MAX_KEY_BYTES`] (the key can come from clients: `{tag}`, `{field.X}`). Both
//! are counted in [`Limiter::overflowed`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::event::Event;
use crate::template::Template;

/// What to do with events over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenOver {
    /// Drop them, counted per key.
    #[default]
    Drop,
    /// Slow the sender down.
    Block,
}

/// `[routes.NAME] type = "rate_limit"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RateLimitRouteConfig {
    /// Key template; `""` = one bucket for all.
    #[serde(default)]
    pub per: String,
    /// Events per second per key.
    #[serde(default)]
    pub events_per_sec: Option<f64>,
    /// Body bytes per second per key.
    #[serde(default)]
    pub bytes_per_sec: Option<f64>,
    /// `drop` or `block`.
    #[serde(default)]
    pub when_over: WhenOver,
}

impl Validate for RateLimitRouteConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.events_per_sec.is_none() && self.bytes_per_sec.is_none() {
            v.error(
                "events_per_sec",
                "set events_per_sec, bytes_per_sec or both",
            );
        }
        for (key, val) in [
            ("events_per_sec", self.events_per_sec),
            ("bytes_per_sec", self.bytes_per_sec),
        ] {
            if val.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                v.error(key, "must be a positive number");
            }
        }
        if let Err(e) = Template::parse(&self.per, false, false) {
            v.error("per", e);
        }
    }
}

/// Most keys tracked at once.
pub const MAX_KEYS: usize = 100_000;
/// Longest key with a bucket of its own; longer ones use the overflow bucket.
pub const MAX_KEY_BYTES: usize = 256;
/// A full table is swept for idle keys at most this often: between sweeps new
/// keys go to the overflow bucket, so a flood of new keys costs one sweep a
/// second, not one per key.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Share of a second a full bucket holds.
const BURST_SECS: f64 = 0.1;
const OVERFLOW_KEY: &str = "\u{0}overflow";

#[derive(Debug, Clone)]
struct Bucket {
    events: f64,
    bytes: f64,
    last: Instant,
    /// Dropped since the last report.
    dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    cap: f64,
}

impl Rate {
    fn new(per_sec: f64) -> Rate {
        Rate {
            per_sec,
            cap: (per_sec * BURST_SECS).max(1.0),
        }
    }
}

#[derive(Debug, Clone)]
enum KeyOf {
    All,
    Tenant,
    Tag,
    Template(Template),
}

/// Token buckets by key (the pure part of a rate_limit route).
#[derive(Debug)]
pub struct Limiter {
    key: KeyOf,
    events: Option<Rate>,
    bytes: Option<Rate>,
    mode: WhenOver,
    buckets: HashMap<Box<str>, Bucket, foldhash::fast::RandomState>,
    scratch: String,
    last_sweep: Option<Instant>,
    /// Events whose key got the shared overflow bucket (table full, or key
    /// longer than [`MAX_KEY_BYTES`]).
    pub overflowed: u64,
    /// Sweeps of the full table so far.
    sweeps: u64,
}

impl Limiter {
    /// From a validated config.
    pub fn new(config: &RateLimitRouteConfig) -> Result<Limiter, String> {
        let key = match config.per.as_str() {
            "" => KeyOf::All,
            "{tenant}" => KeyOf::Tenant,
            "{tag}" => KeyOf::Tag,
            other => KeyOf::Template(Template::parse(other, false, false)?),
        };
        Ok(Limiter {
            key,
            events: config.events_per_sec.map(Rate::new),
            bytes: config.bytes_per_sec.map(Rate::new),
            mode: config.when_over,
            buckets: HashMap::default(),
            scratch: String::new(),
            last_sweep: None,
            overflowed: 0,
            sweeps: 0,
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> WhenOver {
        self.mode
    }

    fn bucket(&mut self, e: &Event, now: Instant) -> &mut Bucket {
        let key: &str = match &self.key {
            KeyOf::All => "",
            KeyOf::Tenant => e.tenant.as_deref().unwrap_or(""),
            KeyOf::Tag => &e.tag,
            KeyOf::Template(t) => {
                self.scratch.clear();
                t.render(e, &mut self.scratch);
                &self.scratch
            }
        };
        let fresh = || Bucket {
            events: self.events.map_or(0.0, |r| r.cap),
            bytes: self.bytes.map_or(0.0, |r| r.cap),
            last: now,
            dropped: 0,
        };
        let key = if key.len() > MAX_KEY_BYTES {
            self.overflowed += 1;
            OVERFLOW_KEY
        } else {
            key
        };
        if !self.buckets.contains_key(key) {
            let sweep_due = self
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
            if self.buckets.len() >= MAX_KEYS && sweep_due {
                let (ev, by) = (self.events, self.bytes);
                // Forget the idle keys (full again, nothing dropped); keep the
                // busy ones, whose limits would otherwise reset.
                self.buckets.retain(|_, b| !is_full(b, ev, by, now));
                self.last_sweep = Some(now);
                self.sweeps += 1;
            }
            let key = if self.buckets.len() >= MAX_KEYS {
                self.overflowed += 1;
                OVERFLOW_KEY
            } else {
                key
            };
            let b = fresh();
            let map = &mut self.buckets;
            return map.entry(key.into()).or_insert(b);
        }
        self.buckets.get_mut(key).expect("checked above")
    }

    /// Drop mode: remove the events over the limit; returns how many.
    pub fn admit(&mut self, events: &mut Vec<Event>, now: Instant) -> usize {
        let (ev_rate, by_rate) = (self.events, self.bytes);
        let before = events.len();
        events.retain(|e| {
            let b = self.bucket(e, now);
            refill(b, ev_rate, by_rate, now);
            let ok =
                ev_rate.is_none_or(|_| b.events >= 1.0) && by_rate.is_none_or(|_| b.bytes > 0.0);
            if ok {
                b.events -= 1.0;
                b.bytes -= e.body.len() as f64;
            } else {
                b.dropped += 1;
            }
            ok
        });
        before - events.len()
    }

    /// Block mode: charge every event; returns how long the sender must wait.
    pub fn charge(&mut self, events: &[Event], now: Instant) -> Duration {
        let (ev_rate, by_rate) = (self.events, self.bytes);
        let mut worst = 0.0f64;
        for e in events {
            let b = self.bucket(e, now);
            refill(b, ev_rate, by_rate, now);
            b.events -= 1.0;
            b.bytes -= e.body.len() as f64;
            if let Some(r) = ev_rate {
                worst = worst.max(-b.events / r.per_sec);
            }
            if let Some(r) = by_rate {
                worst = worst.max(-b.bytes / r.per_sec);
            }
        }
        Duration::from_secs_f64(worst.max(0.0))
    }

    /// Keys that dropped events since the last call, with their counts (reset).
    pub fn take_dropped(&mut self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .buckets
            .iter_mut()
            .filter(|(_, b)| b.dropped > 0)
            .map(|(k, b)| (display_key(k), std::mem::take(&mut b.dropped)))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

fn display_key(k: &str) -> String {
    if k == OVERFLOW_KEY {
        "(overflow)".to_owned()
    } else {
        k.to_owned()
    }
}

fn refill(b: &mut Bucket, ev: Option<Rate>, by: Option<Rate>, now: Instant) {
    let dt = now.saturating_duration_since(b.last).as_secs_f64();
    b.last = b.last.max(now);
    if let Some(r) = ev {
        b.events = (b.events + dt * r.per_sec).min(r.cap);
    }
    if let Some(r) = by {
        b.bytes = (b.bytes + dt * r.per_sec).min(r.cap);
    }
}

fn is_full(b: &Bucket, ev: Option<Rate>, by: Option<Rate>, now: Instant) -> bool {
    let mut c = b.clone();
    refill(&mut c, ev, by, now);
    ev.is_none_or(|r| c.events >= r.cap) && by.is_none_or(|r| c.bytes >= r.cap) && c.dropped == 0
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn cfg(per: &str, eps: Option<f64>, bps: Option<f64>, mode: WhenOver) -> RateLimitRouteConfig {
        RateLimitRouteConfig {
            per: per.into(),
            events_per_sec: eps,
            bytes_per_sec: bps,
            when_over: mode,
        }
    }

    fn events(tenant: &str, n: usize, size: usize) -> Vec<Event> {
        let body = Bytes::from(vec![b'x'; size]);
        let mut e = Event::new(body, 0, "t".into(), "s".into());
        e.tenant = Some(tenant.into());
        vec![e; n]
    }

    /// Offer `offered_per_tick` events every 10 ms for `secs`; return admitted.
    fn run(l: &mut Limiter, tenant: &str, offered_per_tick: usize, secs: u64) -> usize {
        let start = Instant::now();
        let mut admitted = 0;
        for tick in 0..secs * 100 {
            let now = start + Duration::from_millis(tick * 10);
            let mut batch = events(tenant, offered_per_tick, 100);
            l.admit(&mut batch, now);
            admitted += batch.len();
        }
        admitted
    }

    #[test]
    fn drop_mode_holds_the_rate_within_five_percent_over_ten_seconds() {
        let mut l = Limiter::new(&cfg("{tenant}", Some(5000.0), None, WhenOver::Drop)).unwrap();
        // Offered 200/tick = 20,000/s; the limit is 5,000/s.
        let admitted = run(&mut l, "a", 200, 10);
        let expected = 50_000.0;
        assert!(
            (admitted as f64 - expected).abs() / expected < 0.05,
            "admitted {admitted}"
        );
        let dropped = l.take_dropped();
        assert_eq!(dropped, vec![("a".to_owned(), 200_000 - admitted as u64)]);
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let mut l = Limiter::new(&cfg("{tenant}", Some(1000.0), None, WhenOver::Drop)).unwrap();
        let now = Instant::now();
        let mut a = events("a", 500, 1);
        let mut b = events("b", 50, 1);
        l.admit(&mut a, now);
        l.admit(&mut b, now);
        assert_eq!(a.len(), 100, "burst is a tenth of a second");
        assert_eq!(b.len(), 50);
    }

    #[test]
    fn byte_limit_counts_body_bytes() {
        let mut l = Limiter::new(&cfg("", None, Some(100_000.0), WhenOver::Drop)).unwrap();
        let start = Instant::now();
        let mut admitted_bytes = 0;
        for tick in 0..1000 {
            let mut batch = events("a", 10, 1000);
            l.admit(&mut batch, start + Duration::from_millis(tick * 10));
            admitted_bytes += batch.len() * 1000;
        }
        let expected = 1_000_000.0;
        assert!(
            (admitted_bytes as f64 - expected).abs() / expected < 0.05,
            "{admitted_bytes}"
        );
    }

    #[test]
    fn block_mode_charges_everything_and_asks_to_wait() {
        let mut l = Limiter::new(&cfg("", Some(1000.0), None, WhenOver::Block)).unwrap();
        let now = Instant::now();
        let wait = l.charge(&events("a", 600, 1), now);
        // 100 tokens in the bucket, 500 owed at 1000/s.
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.001, "{wait:?}");
        let wait = l.charge(&events("a", 100, 1), now + Duration::from_millis(500));
        assert!((wait.as_secs_f64() - 0.1).abs() < 0.001, "{wait:?}");
    }

    #[test]
    fn key_table_is_bounded() {
        let mut l = Limiter::new(&cfg("{tenant}", Some(1.0), None, WhenOver::Drop)).unwrap();
        let now = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            let mut b = events(&i.to_string(), 2, 1);
            l.admit(&mut b, now);
        }
        assert!(l.buckets.len() <= MAX_KEYS + 1);
    }

    #[test]
    fn a_flood_of_new_keys_sweeps_once_a_second_and_long_keys_share_a_bucket() {
        let mut l = Limiter::new(&cfg("{tenant}", Some(1.0), None, WhenOver::Drop)).unwrap();
        let now = Instant::now();
        // Fill the table with keys that are not idle (their bucket is spent).
        for i in 0..MAX_KEYS {
            l.admit(&mut events(&i.to_string(), 2, 1), now);
        }
        assert_eq!(l.buckets.len(), MAX_KEYS);
        // 10,000 new keys within the same second: one sweep, not 10,000.
        for i in 0..10_000 {
            l.admit(&mut events(&format!("new{i}"), 1, 1), now);
        }
        assert_eq!(l.sweeps, 1);
        assert_eq!(l.overflowed, 10_000);
        // A second later the table is swept again for the next new key.
        l.admit(&mut events("later", 1, 1), now + SWEEP_EVERY);
        assert_eq!(l.sweeps, 2);

        // Keys idle long enough to be full again are the ones forgotten.
        let mut l = Limiter::new(&cfg("{tenant}", Some(1.0), None, WhenOver::Drop)).unwrap();
        for i in 0..MAX_KEYS {
            l.admit(&mut events(&i.to_string(), 1, 1), now);
        }
        l.admit(&mut events("busy", 2, 1), now);
        assert!(
            l.buckets.contains_key(OVERFLOW_KEY),
            "a full table of keys busy this second"
        );
        l.admit(&mut events("fresh", 1, 1), now + SWEEP_EVERY);
        assert!(
            l.buckets.contains_key("fresh"),
            "idle keys were not forgotten"
        );
        assert!(l.buckets.len() < 10, "{} keys kept", l.buckets.len());

        let mut l = Limiter::new(&cfg("{tenant}", Some(1.0), None, WhenOver::Drop)).unwrap();
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        l.admit(&mut events(&long, 1, 1), now);
        l.admit(&mut events(&format!("{long}y"), 1, 1), now);
        assert_eq!(l.overflowed, 2);
        assert_eq!(l.buckets.len(), 1, "long keys share the overflow bucket");
    }
}
