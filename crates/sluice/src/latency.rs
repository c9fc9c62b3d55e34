//! A histogram of durations with fixed buckets (the acknowledgement latency of
//! sources), on its own so that the ack module, and the fuzz targets that
//! compile it by path, need nothing else of [`crate::metrics`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the acknowledgement-latency buckets, in seconds; one more
/// bucket (`+Inf`) takes the rest.
pub const ACK_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of durations with fixed buckets: an observation is a bucket
/// search over 14 bounds and two relaxed atomic adds, no lock, no allocation.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative), `+Inf` last.
    buckets: [AtomicU64; ACK_LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, in nanoseconds.
    sum_ns: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// (upper bound, observations in that bucket alone); `f64::MAX` for `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    /// Count one duration.
    #[inline]
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = ACK_LATENCY_BUCKETS.partition_point(|&b| b < s);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The buckets now (each read once; a scrape racing an observation may see
    /// the count without the sum, never a bucket going back).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = ACK_LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(&self.buckets)
            .map(|(b, n)| (b, n.load(Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: self.sum_ns.load(Relaxed) as f64 / 1e9,
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
        }
    }
}
