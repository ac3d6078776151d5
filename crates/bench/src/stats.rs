//! Latency histograms (`hdrhistogram`, microsecond resolution) and the summaries reports print.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks exactly: one hour in µs. Larger values are clamped to
/// it (and still counted), so a pathological stall cannot fail a run.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits kept (0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram from 1 µs to [`LATENCY_US_MAX`].
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5):
        // this cannot fail, and a test builds one.
        #[allow(clippy::expect_used)]
        let hist = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        LatencyHistogram { hist }
    }

    /// Records a latency given in nanoseconds. Sub-microsecond values count as 1 µs; values
    /// beyond the range as [`LATENCY_US_MAX`].
    pub fn record_ns(&mut self, latency_ns: u64) {
        let us = (latency_ns / 1_000).clamp(1, LATENCY_US_MAX);
        self.hist.saturating_record(us);
    }

    /// Records a latency given in microseconds.
    pub fn record_us(&mut self, latency_us: u64) {
        self.hist
            .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so `add` cannot fail; saturate if it ever does.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The percentiles reports print; `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: self.hist.len(),
            min_us: self.hist.min(),
            mean_us: self.hist.mean(),
            p50_us: self.hist.value_at_quantile(0.50),
            p90_us: self.hist.value_at_quantile(0.90),
            p99_us: self.hist.value_at_quantile(0.99),
            p99_9_us: self.hist.value_at_quantile(0.999),
            max_us: self.hist.max(),
        })
    }
}

/// Percentiles of one latency histogram, in microseconds (hdrhistogram's values: each is
/// the highest value equivalent to the true one within 0.1%).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p99_9_us: u64,
    /// Largest sample.
    pub max_us: u64,
}
