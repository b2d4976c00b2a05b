//! Latency bookkeeping: HdrHistograms in microseconds and the summary the report prints.
//!
//! Every latency the bench records is measured from a message's *intended* send time (see
//! `schedule.rs`), and only for messages whose intended time falls inside the measurement window
//! ([`Window`]): warm-up samples never reach a histogram.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Smallest latency a histogram distinguishes (µs).
const LATENCY_US_LOW: u64 = 1;
/// Largest latency a histogram tracks exactly (µs): one hour. Larger values are clamped to it
/// (`saturating_record`), which no run bounded by `--duration` plus the drain cap can reach.
const LATENCY_US_HIGH: u64 = 3_600_000_000;
/// Significant decimal digits kept: 3 means ±0.1 % per value.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles every report shows, as (label, quantile).
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// A histogram of latencies in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram covering 1 µs .. 1 h at 3 significant digits.
    pub fn new() -> LatencyHistogram {
        let histogram = match Histogram::new_with_bounds(LATENCY_US_LOW, LATENCY_US_HIGH, SIGNIFICANT_DIGITS) {
            Ok(histogram) => histogram,
            // The bounds are constants that hdrhistogram accepts; this arm cannot run.
            Err(_) => Histogram::new(SIGNIFICANT_DIGITS).unwrap_or_else(|_| unreachable!("3 significant digits")),
        };
        LatencyHistogram { histogram }
    }

    /// Records one latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(LATENCY_US_LOW);
        self.histogram.saturating_record(micros);
    }

    /// Records `completed - intended` (0 if `completed` is earlier).
    pub fn record_since(&mut self, intended: Instant, completed: Instant) {
        self.record(completed.saturating_duration_since(intended));
    }

    /// Adds every sample of `other`.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Both have the same bounds, so adding cannot fail; if it somehow did, the samples of
        // `other` are recorded one bucket at a time instead.
        if self.histogram.add(&other.histogram).is_err() {
            for bucket in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(bucket.value_iterated_to(), bucket.count_at_value());
            }
        }
    }

    /// The latency at quantile `q` (0..=1), `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.histogram.is_empty() {
            return None;
        }
        Some(Duration::from_micros(self.histogram.value_at_quantile(q)))
    }

    /// The summary the report prints.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.histogram.is_empty();
        let at = |q: f64| if empty { 0 } else { self.histogram.value_at_quantile(q) };
        LatencySummary {
            count: self.histogram.len(),
            min_us: if empty { 0 } else { self.histogram.min() },
            mean_us: if empty { 0.0 } else { self.histogram.mean() },
            percentiles_us: PERCENTILES.map(|(_, q)| at(q)),
            max_us: if empty { 0 } else { self.histogram.max() },
        }
    }
}

/// Count, mean, the [`PERCENTILES`] and max of one histogram, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min_us: u64,
    /// Mean sample.
    pub mean_us: f64,
    /// Values at [`PERCENTILES`], in that order.
    pub percentiles_us: [u64; 5],
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    /// The value at the percentile labelled `label` ("p99", …).
    pub fn percentile_us(&self, label: &str) -> Option<u64> {
        PERCENTILES
            .iter()
            .zip(self.percentiles_us)
            .find(|((name, _), _)| *name == label)
            .map(|(_, value)| value)
    }
}

/// The measurement window: samples whose intended time is in `[start, end)` count.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// End of warm-up.
    pub start: Instant,
    /// End of the measured run.
    pub end: Instant,
}

impl Window {
    /// Whether an intended send time falls inside the window.
    pub fn contains(&self, instant: Instant) -> bool {
        instant >= self.start && instant < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Pacer, RateSchedule};

    #[test]
    fn percentiles_and_bookkeeping() {
        let mut histogram = LatencyHistogram::new();
        assert_eq!(histogram.quantile(0.5), None);
        assert_eq!(histogram.summary().count, 0);
        for micros in 1..=10_000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 10_000);
        assert_eq!(summary.min_us, 1);
        // 3 significant digits: within 0.1 %.
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(summary.percentile_us("p50").unwrap(), 5_000));
        assert!(near(summary.percentile_us("p90").unwrap(), 9_000));
        assert!(near(summary.percentile_us("p99").unwrap(), 9_900));
        assert!(near(summary.percentile_us("p99.9").unwrap(), 9_990));
        assert!(near(summary.max_us, 10_000));

        let mut merged = LatencyHistogram::new();
        merged.add(&histogram);
        merged.add(&histogram);
        assert_eq!(merged.summary().count, 20_000);
        assert_eq!(merged.summary().percentiles_us, summary.percentiles_us);

        // Out-of-range values are clamped, never lost or panicking.
        merged.record(Duration::from_secs(100_000));
        merged.record(Duration::ZERO);
        assert_eq!(merged.summary().count, 20_002);
    }

    #[test]
    fn window_excludes_warm_up() {
        let start = Instant::now();
        let window = Window {
            start: start + Duration::from_secs(1),
            end: start + Duration::from_secs(3),
        };
        assert!(!window.contains(start));
        assert!(window.contains(start + Duration::from_secs(1)));
        assert!(!window.contains(start + Duration::from_secs(3)));
    }

    /// A single-server broker that takes `service` per message and is frozen during `stall`.
    struct SimulatedBroker {
        service: Duration,
        stall_start: Instant,
        stall_end: Instant,
        free_at: Instant,
    }

    impl SimulatedBroker {
        /// When a message that reaches the broker at `arrival` is acknowledged.
        fn acknowledge(&mut self, arrival: Instant) -> Instant {
            let mut begin = arrival.max(self.free_at);
            if begin >= self.stall_start && begin < self.stall_end {
                begin = self.stall_end;
            }
            self.free_at = begin + self.service;
            self.free_at
        }
    }

    /// 2 s at 1000 msg/s against a broker answering in 0.2 ms that stalls for 100 ms at t = 1 s.
    /// Returns (open-loop histogram, closed-loop histogram).
    fn simulate_stall() -> (LatencyHistogram, LatencyHistogram) {
        let start = Instant::now();
        let end = start + Duration::from_secs(2);
        let broker = |start: Instant| SimulatedBroker {
            service: Duration::from_micros(200),
            stall_start: start + Duration::from_secs(1),
            stall_end: start + Duration::from_millis(1100),
            free_at: start,
        };

        // Open loop, as the bench does: every message goes out at its intended time (or as soon
        // as the client can), and latency counts from the intended time.
        let mut open = LatencyHistogram::new();
        let mut open_broker = broker(start);
        let mut pacer = Pacer::new(RateSchedule::new(start, 1000, 1, 0), end);
        let mut now = start;
        while !pacer.is_finished(now) {
            while let Some(due) = pacer.poll_due(now) {
                let acknowledged = open_broker.acknowledge(now);
                open.record_since(due.intended, acknowledged);
            }
            now += Duration::from_micros(100);
        }

        // Closed loop, the classic mistake: send, wait for the answer, send the next; latency counts
        // from the actual send, so the messages that should have gone out during the stall were
        // simply never sent and the stall shows up as a single slow sample.
        let mut closed = LatencyHistogram::new();
        let mut closed_broker = broker(start);
        let schedule = RateSchedule::new(start, 1000, 1, 0);
        let mut client_free = start;
        for index in 0..2000 {
            let intended = schedule.intended(index).unwrap();
            let sent = intended.max(client_free);
            let acknowledged = closed_broker.acknowledge(sent);
            closed.record_since(sent, acknowledged);
            client_free = acknowledged;
        }
        (open, closed)
    }

    #[test]
    fn coordinated_omission_open_loop_sees_a_stall_closed_loop_hides_it() {
        let (open, closed) = simulate_stall();
        assert_eq!(open.summary().count, 2000);
        assert_eq!(closed.summary().count, 2000);

        // ~100 of 2000 messages (5 %) were meant to go out during the 100 ms stall; the one meant
        // for its start waited ~100 ms, and the first ~50 of them waited over 50 ms (2.5 % > 1 %).
        let open_p99 = open.quantile(0.99).unwrap();
        assert!(
            open_p99 >= Duration::from_millis(50),
            "open-loop p99 {open_p99:?} must show the stall"
        );
        assert!(open.summary().max_us >= 99_000);
        let open_p90 = open.quantile(0.90).unwrap();
        assert!(
            open_p90 < Duration::from_millis(5),
            "the stall is only ~5 % of the run: p90 {open_p90:?}"
        );

        // Closed loop: one sample of ~100 ms, the rest at 0.2 ms; p99 looks perfectly healthy.
        let closed_p99 = closed.quantile(0.99).unwrap();
        assert!(
            closed_p99 < Duration::from_millis(5),
            "closed-loop p99 {closed_p99:?} hides the stall"
        );
        assert!(closed.summary().max_us >= 99_000, "only the max betrays it");
    }
}
