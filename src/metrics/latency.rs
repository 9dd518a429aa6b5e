//! Latency histograms: HdrHistogram with an explicit range, clamping and
//! counting values above it as outliers.
//!
//! Memory: a histogram tracking 1 ns ..= `max` with `s` significant figures
//! holds about `log2(max) × 10^s` counters of 8 bytes: for 60 s in ns
//! (2^36) that is ~37 KiB at 2 figures and ~300 KiB at 3.

use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Quantiles exported for every histogram (the maximum is exported too).
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

/// A latency histogram in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
    max: u64,
    /// Values above `max`, recorded as `max`.
    outliers: u64,
}

impl Latency {
    /// A histogram of values 0 ..= `max_ns` at `sigfig` significant figures
    /// (clamped to 1..=5).
    pub fn new(max_ns: u64, sigfig: u8) -> Self {
        let max = max_ns.max(2);
        // Cannot fail: low is 1, high is at least 2 and the figures are in 1..=5.
        let hist = Histogram::new_with_bounds(1, max, sigfig.clamp(1, 5)).expect("valid histogram bounds");
        Latency { hist, max, outliers: 0 }
    }

    /// Records one value; a value above the maximum counts as the maximum
    /// and as an outlier.
    #[inline]
    pub fn record(&mut self, value_ns: u64) {
        let value = if value_ns > self.max {
            self.outliers += 1;
            self.max
        } else {
            value_ns
        };
        // Cannot fail: the value is within the histogram's range.
        let _ = self.hist.record(value);
    }

    /// Adds another histogram's counts (same range expected).
    pub fn merge(&mut self, other: &Latency) {
        if self.hist.add(&other.hist).is_err() {
            // Different ranges: fall back to value-by-value with clamping.
            for v in other.hist.iter_recorded() {
                let value = v.value_iterated_to().min(self.max);
                let _ = self.hist.record_n(value, v.count_at_value());
            }
        }
        self.outliers += other.outliers;
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    pub fn outliers(&self) -> u64 {
        self.outliers
    }

    pub fn max_ns(&self) -> u64 {
        self.hist.max()
    }

    pub fn quantile_ns(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    /// The sum of recorded values, from the mean (exact enough for a
    /// Prometheus `_sum`).
    pub fn sum_ns(&self) -> f64 {
        self.hist.mean() * self.hist.len() as f64
    }
}

/// A latency histogram split into shards so that recorders on different
/// tasks rarely meet on one lock. Each recorder keeps its shard index
/// (e.g. one per ingest stream); a scrape merges them.
#[derive(Debug)]
pub struct ShardedLatency {
    shards: Box<[Mutex<Latency>]>,
}

impl ShardedLatency {
    pub fn new(shards: usize, max_ns: u64, sigfig: u8) -> Self {
        ShardedLatency {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Latency::new(max_ns, sigfig)))
                .collect(),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Records into shard `shard` (taken modulo the shard count).
    #[inline]
    pub fn record(&self, shard: usize, value_ns: u64) {
        let shard = &self.shards[shard % self.shards.len()];
        shard.lock().unwrap_or_else(PoisonError::into_inner).record(value_ns);
    }

    /// All shards merged.
    pub fn snapshot(&self) -> Latency {
        let mut shards = self.shards.iter();
        let mut total = match shards.next() {
            Some(first) => first.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            None => Latency::new(2, 1),
        };
        for shard in shards {
            total.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_counts_outliers() {
        let mut l = Latency::new(1_000, 2);
        l.record(10);
        l.record(5_000);
        assert_eq!(l.len(), 2);
        assert_eq!(l.outliers(), 1);
        assert!(l.max_ns() <= 1_010 && l.max_ns() >= 990, "{}", l.max_ns());
    }

    #[test]
    fn shards_merge() {
        let s = ShardedLatency::new(4, 1_000_000, 2);
        for i in 0..100u64 {
            s.record(i as usize, i * 1_000);
        }
        let all = s.snapshot();
        assert_eq!(all.len(), 100);
        let p50 = all.quantile_ns(0.5);
        assert!((48_000..=51_000).contains(&p50), "{p50}");
    }
}
