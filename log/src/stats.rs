//! Per-thread counters of the log's disk work, for the engine's metrics.
//!
//! A [`Log`](crate::Log) lives on one shard, and a shard is one thread, so
//! the counters are plain `Cell`s in a `thread_local!`: counting costs an
//! add, never a lock or a shared atomic. [`thread_stats`] copies the calling
//! thread's counters out (the engine calls it on each shard when a metrics
//! scrape asks); nothing here ever resets them.
//!
//! What is counted:
//! - every fdatasync of segment data while serving (group commit, the
//!   interval and roll syncs, sealing a rolled segment: `segment::sync_file`),
//!   with its latency in fixed buckets ([`SYNC_BUCKET_BOUNDS_US`]); the syncs
//!   recovery makes while opening a log are not;
//! - bytes of batches written into segments (`append`, `append_with_epoch`,
//!   `append_replicated`);
//! - bytes of batches returned by [`Log::read`](crate::Log::read), whoever
//!   reads (consumers, followers, the group coordinator's replay).
//!
//! The clock read around an fdatasync is `std::time::Instant`: this is
//! observation only and never changes what the log does.

use std::{cell::Cell, time::Duration};

/// Upper bounds, in microseconds, of the fdatasync latency buckets (a value
/// lands in the first bucket whose bound is ≥ it; above the last, in +Inf).
/// From 50 µs (a sync with nothing to write back) to 10 s (a stalled disk);
/// on the reference VM a 64 KiB fdatasync takes 0.3 ms at p50 and 1–2 ms at
/// p99 (docs/benchmarks.md). The engine's request latency histograms use the
/// same bounds.
pub const SYNC_BUCKET_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Buckets of the fdatasync histogram: one per bound, and +Inf.
pub const SYNC_BUCKETS: usize = SYNC_BUCKET_BOUNDS_US.len() + 1;

/// A copy of one thread's counters (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// fdatasync calls on segment data.
    pub syncs: u64,
    /// Their total latency, microseconds.
    pub sync_micros_sum: u64,
    /// Their latencies by bucket, not cumulative: `sync_buckets[i]` counts
    /// syncs that took more than `SYNC_BUCKET_BOUNDS_US[i - 1]` and at most
    /// `SYNC_BUCKET_BOUNDS_US[i]` µs; the last one counts the slower ones.
    pub sync_buckets: [u64; SYNC_BUCKETS],
    /// Bytes of batches written into segments.
    pub append_bytes: u64,
    /// Bytes of batches returned by reads.
    pub read_bytes: u64,
}

struct Counters {
    syncs: Cell<u64>,
    sync_micros_sum: Cell<u64>,
    sync_buckets: [Cell<u64>; SYNC_BUCKETS],
    append_bytes: Cell<u64>,
    read_bytes: Cell<u64>,
}

thread_local! {
    static COUNTERS: Counters = const {
        Counters {
            syncs: Cell::new(0),
            sync_micros_sum: Cell::new(0),
            sync_buckets: [const { Cell::new(0) }; SYNC_BUCKETS],
            append_bytes: Cell::new(0),
            read_bytes: Cell::new(0),
        }
    };
}

fn add(counter: &Cell<u64>, amount: u64) {
    counter.set(counter.get().wrapping_add(amount));
}

/// The calling thread's counters so far.
pub fn thread_stats() -> LogStats {
    COUNTERS.with(|c| LogStats {
        syncs: c.syncs.get(),
        sync_micros_sum: c.sync_micros_sum.get(),
        sync_buckets: std::array::from_fn(|i| c.sync_buckets.get(i).map_or(0, Cell::get)),
        append_bytes: c.append_bytes.get(),
        read_bytes: c.read_bytes.get(),
    })
}

/// The bucket of a latency of `micros`.
fn sync_bucket(micros: u64) -> usize {
    SYNC_BUCKET_BOUNDS_US.partition_point(|bound| *bound < micros)
}

/// Counts one fdatasync of segment data that took `elapsed`.
pub(crate) fn record_sync(elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    COUNTERS.with(|c| {
        add(&c.syncs, 1);
        add(&c.sync_micros_sum, micros);
        let bucket = sync_bucket(micros);
        assert!(bucket < SYNC_BUCKETS, "every latency has a bucket");
        if let Some(counter) = c.sync_buckets.get(bucket) {
            add(counter, 1);
        }
    });
}

/// Counts `bytes` of batches written into a segment.
pub(crate) fn record_append(bytes: u64) {
    COUNTERS.with(|c| add(&c.append_bytes, bytes));
}

/// Counts `bytes` of batches returned by a read.
pub(crate) fn record_read(bytes: u64) {
    COUNTERS.with(|c| add(&c.read_bytes, bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_increasing() {
        assert!(SYNC_BUCKET_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_at_or_above_it() {
        assert_eq!(sync_bucket(0), 0);
        assert_eq!(sync_bucket(50), 0, "bounds are inclusive");
        assert_eq!(sync_bucket(51), 1);
        assert_eq!(sync_bucket(10_000_000), SYNC_BUCKETS - 2);
        assert_eq!(sync_bucket(10_000_001), SYNC_BUCKETS - 1, "+Inf");
        assert_eq!(sync_bucket(u64::MAX), SYNC_BUCKETS - 1);
    }

    #[test]
    fn counters_are_per_thread_and_add_up() {
        std::thread::spawn(|| {
            record_sync(Duration::from_micros(300));
            record_sync(Duration::from_secs(60));
            record_append(10);
            record_read(7);
            let stats = thread_stats();
            assert_eq!(stats.syncs, 2);
            assert_eq!(stats.sync_micros_sum, 60_000_300);
            assert_eq!(stats.sync_buckets[3], 1, "300 µs ≤ 500 µs");
            assert_eq!(stats.sync_buckets[SYNC_BUCKETS - 1], 1);
            assert_eq!(stats.sync_buckets.iter().sum::<u64>(), stats.syncs);
            assert_eq!((stats.append_bytes, stats.read_bytes), (10, 7));
        })
        .join()
        .unwrap();
        assert_eq!(thread_stats().syncs, 0, "another thread's counters are its own");
    }
}
