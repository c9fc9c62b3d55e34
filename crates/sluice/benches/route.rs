//! Routing cost per event, per route type: `cargo bench -p sluice --bench route`.
//!
//! Each iteration routes one batch of 1,000 events (the size a pipe read yields);
//! criterion's throughput is in events, so time/1000 is the cost per event. The
//! tenant case uses 10,000 active tenants, ids drawn at random among 11,000 (so
//! about 9% are unknown and dropped), with strip. Building the batch is not timed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice::event::Event;
use sluice::route::bucket::{BucketRouteConfig, Bucketer};
use sluice::route::filter::{FilterRouteConfig, Level, Missing};
use sluice::route::rate_limit::{Limiter, RateLimitRouteConfig, WhenOver};
use sluice::route::rules::{Rule, Rules, RulesRouteConfig};
use sluice::route::tenant::{ActiveSet, TenantSplit, Unknown};

/// Counts allocations, to show that the tenant path makes none per event.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 1000;
const TENANTS: usize = 10_000;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall writing into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One read's worth of CDN lines in one buffer, sliced per line as sources do.
fn cdn_batch(seed: u64) -> Vec<Event> {
    let mut s = seed | 1;
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    for _ in 0..BATCH {
        let id = xorshift(&mut s) % (TENANTS as u64 * 11 / 10);
        let start = buf.len();
        buf.extend_from_slice(
            format!("client{id} 203.0.113.9 - - \"GET /v1/objects/{s:x} HTTP/1.1\" 200 5120")
                .as_bytes(),
        );
        ranges.push(start..buf.len());
    }
    let all = Bytes::from(buf);
    let (tag, src): (Arc<str>, Arc<str>) = ("edge".into(), "edge_pipe".into());
    ranges
        .into_iter()
        .map(|r| Event::new(all.slice(r), 0, tag.clone(), src.clone()))
        .collect()
}

fn tagged_batch() -> Vec<Event> {
    let tags: Vec<Arc<str>> = ["app.web", "app.db", "ignore_x", "misc", "bucket_me"]
        .iter()
        .map(|t| Arc::from(*t))
        .collect();
    (0..BATCH)
        .map(|i| {
            let body = Bytes::from(format!(
                "user{}:2024-01-01 12:00:00 WARN something happened",
                i % 97
            ));
            // Runs of 100 events per tag: sources emit one tag per batch.
            Event::new(body, 0, tags[(i / 100) % tags.len()].clone(), "s".into())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(BATCH as u64));

    let ids: Vec<String> = (0..TENANTS).map(|i| format!("client{i}")).collect();
    let set = ActiveSet::from_ids(ids.iter().map(String::as_str));
    let split = TenantSplit::new(&toml_tenant());
    // No allocation per event: route a whole batch and count.
    let mut events = cdn_batch(99);
    let before = ALLOCATIONS.load(Relaxed);
    let dropped = split.apply(&mut events, &set);
    let allocated = ALLOCATIONS.load(Relaxed) - before;
    println!(
        "tenant split: {allocated} allocations for {BATCH} events ({dropped} unknown dropped)"
    );
    assert_eq!(allocated, 0, "the tenant path must not allocate");
    // Thread CPU time (not wall time: this machine is shared and busy), best of 5
    // rounds of 200 batches. "Fresh": each batch routed right after it was built,
    // as a source hands it over; "cold": 200 batches built first, then routed.
    let (mut fresh, mut cold) = (f64::MAX, f64::MAX);
    for round in 0..5u64 {
        let mut spent = 0;
        for i in 0..200 {
            let mut b = cdn_batch(round * 1000 + i);
            let t0 = thread_cpu_ns();
            black_box(split.apply(&mut b, &set));
            spent += thread_cpu_ns() - t0;
        }
        fresh = fresh.min(spent as f64 / (200 * BATCH) as f64);
        let mut batches: Vec<Vec<Event>> = (0..200).map(|i| cdn_batch(round * 1000 + i)).collect();
        let t0 = thread_cpu_ns();
        for b in &mut batches {
            black_box(split.apply(b, &set));
        }
        cold = cold.min((thread_cpu_ns() - t0) as f64 / (200 * BATCH) as f64);
    }
    println!(
        "tenant split, 10,000 tenants, strip: {fresh:.1} ns/event fresh, {cold:.1} ns/event cold (thread CPU time)"
    );
    let mut seed = 1u64;
    g.bench_function("tenant_split_strip_10k_tenants", |b| {
        b.iter_batched(
            || {
                seed += 1;
                cdn_batch(seed)
            },
            |mut events| {
                let dropped = split.apply(&mut events, &set);
                black_box((events, dropped))
            },
            BatchSize::LargeInput,
        )
    });
    // The baseline the split is compared with: the same batches, untouched.
    g.bench_function("baseline_batch_handoff", |b| {
        b.iter_batched(|| cdn_batch(7), black_box, BatchSize::LargeInput)
    });

    let rule = |m: &str, t: &str| Rule {
        pattern: m.into(),
        to: t.into(),
    };
    let rules = Rules::new(&RulesRouteConfig {
        rules: vec![
            rule("ignore*", "drop"),
            rule("bucket_me", "bucketed"),
            rule("app.**", "apps"),
            rule("{web,api}.*", "front"),
        ],
        default: Some("rest".into()),
    })
    .unwrap();
    let tagged = tagged_batch();
    g.bench_function("rules_4_globs", |b| {
        b.iter(|| {
            rules.targets(black_box(&tagged)).fold(0usize, |n, t| {
                n + (t == sluice::route::rules::Target::Drop) as usize
            })
        })
    });

    let bucketer = Bucketer::new(&BucketRouteConfig {
        buckets: 5,
        key: "prefix".into(),
        delimiter: ":".into(),
    })
    .unwrap();
    g.bench_function("bucket_prefix_murmur2", |b| {
        let mut scratch = String::new();
        b.iter(|| {
            tagged
                .iter()
                .map(|e| bucketer.bucket_of(e, &mut scratch))
                .sum::<u32>()
        })
    });

    let filter = FilterRouteConfig {
        min_level: Level::Warn,
        field: "level".into(),
        parse_body: true,
        missing: Missing::Pass,
    };
    g.bench_function("filter_level_from_body", |b| {
        b.iter(|| tagged.iter().filter(|e| filter.keep(e)).count())
    });

    let mut limiter = Limiter::new(&RateLimitRouteConfig {
        per: "{tenant}".into(),
        events_per_sec: Some(1e12),
        bytes_per_sec: None,
        when_over: WhenOver::Drop,
    })
    .unwrap();
    let mut tenant_events = cdn_batch(3);
    split.apply(&mut tenant_events, &set);
    g.bench_function("rate_limit_per_tenant", |b| {
        b.iter_batched(
            || tenant_events.clone(),
            |mut events| {
                let now = Instant::now();
                black_box(limiter.admit(&mut events, now))
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn toml_tenant() -> sluice::route::tenant::TenantRouteConfig {
    sluice::route::tenant::TenantRouteConfig {
        split: None,
        field: None,
        strip: true,
        active_list: "/dev/null".into(),
        unknown: Unknown::Drop,
        poll_interval_ms: 250,
        admin: Default::default(),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
