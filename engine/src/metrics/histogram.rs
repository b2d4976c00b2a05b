//! Fixed-bucket latency histograms of plain `Cell`s: recording is one
//! bucket search over a 17-entry table and two adds, on the shard that owns
//! the histogram. Buckets are not cumulative here; the exposition makes
//! them cumulative (`le`) when it writes them.

use std::{cell::Cell, time::Duration};

/// Upper bounds of every latency histogram of the engine, microseconds: the
/// same table as the log's fdatasync histogram
/// ([`shardline_log::SYNC_BUCKET_BOUNDS_US`]), so one dashboard reads them
/// all alike. 50 µs is below the loopback floor of a request here; 10 s is
/// past every timeout a client uses; a Fetch long poll (500 ms by default)
/// falls inside.
pub(crate) const LATENCY_BOUNDS_US: [u64; 17] = shardline_log::SYNC_BUCKET_BOUNDS_US;

/// Buckets of a latency histogram: one per bound, and +Inf.
pub(crate) const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// One latency histogram, on one shard.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: [Cell<u64>; LATENCY_BUCKETS],
    sum_us: Cell<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [const { Cell::new(0) }; LATENCY_BUCKETS],
            sum_us: Cell::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Counts one observation of `elapsed`.
    pub(crate) fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US.partition_point(|bound| *bound < micros);
        assert!(bucket < LATENCY_BUCKETS, "every latency has a bucket");
        if let Some(counter) = self.buckets.get(bucket) {
            counter.set(counter.get().wrapping_add(1));
        }
        self.sum_us.set(self.sum_us.get().wrapping_add(micros));
    }

    /// Whether anything was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.get() == 0)
    }

    /// A copy, to send to the shard that renders the scrape.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds_us: &LATENCY_BOUNDS_US,
            counts: self.buckets.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A histogram's counts at one moment, by bucket (not cumulative; the last
/// bucket is +Inf), with the bounds they were counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    /// Upper bounds, microseconds; `counts` has one more entry (+Inf).
    pub(crate) bounds_us: &'static [u64],
    /// Observations per bucket.
    pub(crate) counts: Vec<u64>,
    /// Sum of every observation, microseconds.
    pub(crate) sum_us: u64,
}

impl HistogramSnapshot {
    /// The log's fdatasync histogram of one thread.
    pub(crate) fn of_syncs(stats: &shardline_log::LogStats) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds_us: &shardline_log::SYNC_BUCKET_BOUNDS_US,
            counts: stats.sync_buckets.to_vec(),
            sum_us: stats.sync_micros_sum,
        }
    }

    /// Observations in all.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |sum, c| sum.wrapping_add(*c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let histogram = LatencyHistogram::default();
        assert!(histogram.is_empty());
        histogram.record(Duration::from_micros(50));
        histogram.record(Duration::from_micros(51));
        histogram.record(Duration::from_secs(3600));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(snapshot.counts[0], 1, "50 µs ≤ the first bound");
        assert_eq!(snapshot.counts[1], 1);
        assert_eq!(snapshot.counts[LATENCY_BUCKETS - 1], 1, "+Inf");
        assert_eq!(snapshot.count(), 3);
        assert_eq!(snapshot.sum_us, 3_600_000_101);
        assert!(!histogram.is_empty());
    }
}
