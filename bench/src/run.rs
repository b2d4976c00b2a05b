//! State shared by the worker threads of one run: the clock, the stop flag, the first error, live
//! counters for the progress line, and each thread's statistics.
//!
//! Every worker owns one [`Stats`] behind its own mutex; it locks it once per response (not per
//! message), and the progress line locks each briefly once a second, so there is no contention to
//! speak of. Counters the progress line reads every second are plain atomics.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{error::BenchError, keys::SpreadCounts, latency::LatencyHistogram, latency::Window};

/// How long producers keep sending a backlog (messages meant for the window that are still unsent)
/// after the window ends. A broker that cannot catch up within it has fallen far behind `--rate`;
/// what is still unsent is counted as not sent.
pub const DRAIN_SEND_MAX: Duration = Duration::from_secs(5);
/// How long, after sending stops, producers wait for outstanding acknowledgements and consumers
/// for the last messages. What has not arrived by then is counted as unacknowledged / unconsumed.
pub const DRAIN_ACK_MAX: Duration = Duration::from_secs(5);
/// Slack on top of every other bound before the main thread stops waiting for workers.
pub const JOIN_SLACK: Duration = Duration::from_secs(5);

/// Converts monotonic instants to wall-clock nanoseconds through one anchor taken at start, so
/// the values written into messages are comparable across processes on one host while latencies
/// inside this process come from the monotonic clock alone.
#[derive(Debug, Clone, Copy)]
pub struct WallAnchor {
    instant: Instant,
    unix_ns: u64,
}

impl WallAnchor {
    /// Anchors now.
    pub fn now() -> WallAnchor {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
        WallAnchor {
            instant: Instant::now(),
            unix_ns,
        }
    }

    /// `instant` as ns since the UNIX epoch.
    pub fn unix_ns(&self, instant: Instant) -> u64 {
        let (after, before) = (
            instant.saturating_duration_since(self.instant),
            self.instant.saturating_duration_since(instant),
        );
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        let before = u64::try_from(before.as_nanos()).unwrap_or(u64::MAX);
        self.unix_ns.saturating_add(after).saturating_sub(before)
    }
}

/// The timeline of a run, fixed before any worker starts.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    /// When the schedule starts (warm-up begins).
    pub start: Instant,
    /// The measured part: warm-up ends at `window.start`, the run at `window.end`.
    pub window: Window,
    /// Producers stop sending backlog here.
    pub send_deadline: Instant,
    /// Producers stop waiting for acknowledgements, consumers stop fetching, here.
    pub drain_deadline: Instant,
    /// Wall-clock anchor for the send times embedded in messages.
    pub anchor: WallAnchor,
}

impl RunClock {
    /// A run starting at `start`, with `warmup` then `duration` measured.
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> RunClock {
        let window = Window {
            start: start + warmup,
            end: start + warmup + duration,
        };
        let send_deadline = window.end + DRAIN_SEND_MAX;
        RunClock {
            start,
            window,
            send_deadline,
            drain_deadline: send_deadline + DRAIN_ACK_MAX,
            anchor: WallAnchor::now(),
        }
    }

    /// Whether `instant` is still warm-up.
    pub fn in_warmup(&self, instant: Instant) -> bool {
        instant < self.window.start
    }
}

/// Messages and payload bytes (key + value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    /// Messages.
    pub messages: u64,
    /// Key + value bytes.
    pub bytes: u64,
}

impl Volume {
    /// Adds `messages` and `bytes`.
    pub fn add(&mut self, messages: u64, bytes: u64) {
        self.messages += messages;
        self.bytes += bytes;
    }

    fn merge(&mut self, other: &Volume) {
        self.add(other.messages, other.bytes);
    }
}

/// One worker's statistics (producers fill the produce fields, consumers the consume fields).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Intended send → acknowledgement of the Produce request carrying the message (for acks=0:
    /// → the request written to the socket), for messages intended inside the window.
    pub publish: LatencyHistogram,
    /// Intended send → request written to the socket: batching (linger), waiting for an in-flight
    /// slot, and the client's own lateness. Close to `publish` means the client is the bottleneck.
    pub send_delay: LatencyHistogram,
    /// Intended send → consumed, for messages intended inside the window.
    pub end_to_end: LatencyHistogram,
    /// Fetch request written → its response read, for responses that carried records and arrived
    /// inside the window (empty long polls wait up to `max_wait_ms` by design and are left out).
    pub fetch: LatencyHistogram,
    /// Messages written to the socket, all of the run.
    pub sent: Volume,
    /// Messages acknowledged, all of the run.
    pub acknowledged: Volume,
    /// Messages acknowledged while the window was open (throughput).
    pub acknowledged_in_window: Volume,
    /// Produce requests sent.
    pub produce_requests: u64,
    /// Bytes the sent batches would have had uncompressed (header included), all of the run.
    pub batch_bytes_uncompressed: u64,
    /// Bytes of the sent batches as sent, all of the run.
    pub batch_bytes_sent: u64,
    /// Messages meant for the run never sent (the producer could not catch up before the drain cap).
    pub not_sent: u64,
    /// Messages sent but not acknowledged by the drain cap.
    pub unacknowledged: u64,
    /// Records consumed, all of the run.
    pub consumed: Volume,
    /// Records consumed while the window was open (throughput).
    pub consumed_in_window: Volume,
    /// Consumed records without the bench's send-time header (another writer's).
    pub foreign_records: u64,
    /// Consumed batches that were compressed (decompressed and read).
    pub compressed_batches: u64,
    /// Bytes of the batches consumers read, as fetched (compressed if they were).
    pub batch_bytes_fetched: u64,
    /// Fetch requests sent.
    pub fetch_requests: u64,
    /// Fetch responses without records (a long poll that found nothing new).
    pub empty_fetches: u64,
    /// Consumers that read every partition up to its target (`--prefill`), and when the last did.
    pub consumers_caught_up: u64,
    /// When the last of them caught up.
    pub caught_up_at: Option<Instant>,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.publish.add(&other.publish);
        self.send_delay.add(&other.send_delay);
        self.end_to_end.add(&other.end_to_end);
        self.fetch.add(&other.fetch);
        self.sent.merge(&other.sent);
        self.acknowledged.merge(&other.acknowledged);
        self.acknowledged_in_window.merge(&other.acknowledged_in_window);
        self.produce_requests += other.produce_requests;
        self.batch_bytes_uncompressed += other.batch_bytes_uncompressed;
        self.batch_bytes_sent += other.batch_bytes_sent;
        self.not_sent += other.not_sent;
        self.unacknowledged += other.unacknowledged;
        self.consumed.merge(&other.consumed);
        self.consumed_in_window.merge(&other.consumed_in_window);
        self.foreign_records += other.foreign_records;
        self.compressed_batches += other.compressed_batches;
        self.batch_bytes_fetched += other.batch_bytes_fetched;
        self.fetch_requests += other.fetch_requests;
        self.empty_fetches += other.empty_fetches;
        self.consumers_caught_up += other.consumers_caught_up;
        self.caught_up_at = self.caught_up_at.max(other.caught_up_at);
    }
}

/// A worker's statistics, shared with the progress line.
pub type SharedStats = Arc<Mutex<Stats>>;

/// Locks, ignoring poisoning (workers do not panic; if one did, its numbers are still the best there are).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What every worker of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// The timeline.
    pub clock: RunClock,
    stop: AtomicBool,
    first_error: Mutex<Option<BenchError>>,
    producers_running: AtomicU64,
    /// When the last producer finished, as ns after `clock.start` (u64::MAX: not yet).
    producers_finished_ns: AtomicU64,
    /// Messages acknowledged so far (progress line).
    pub acknowledged_messages: AtomicU64,
    /// Payload bytes acknowledged so far (progress line).
    pub acknowledged_bytes: AtomicU64,
    /// Records consumed so far (progress line).
    pub consumed_messages: AtomicU64,
    /// Payload bytes consumed so far (progress line).
    pub consumed_bytes: AtomicU64,
    stats: Mutex<Vec<SharedStats>>,
    /// Messages per key and partition, added by each producer when it finishes.
    spread: Mutex<SpreadCounts>,
}

impl Shared {
    /// State for a run on `clock` with `producers` producer threads.
    pub fn new(clock: RunClock, producers: u64) -> Shared {
        Shared {
            clock,
            stop: AtomicBool::new(false),
            first_error: Mutex::new(None),
            producers_running: AtomicU64::new(producers),
            producers_finished_ns: AtomicU64::new(if producers == 0 { 0 } else { u64::MAX }),
            acknowledged_messages: AtomicU64::new(0),
            acknowledged_bytes: AtomicU64::new(0),
            consumed_messages: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            stats: Mutex::new(Vec::new()),
            spread: Mutex::new(SpreadCounts::default()),
        }
    }

    /// A fresh [`Stats`] for one worker, registered for the progress line and the final report.
    pub fn register_stats(&self) -> SharedStats {
        let stats = Arc::new(Mutex::new(Stats::default()));
        lock(&self.stats).push(Arc::clone(&stats));
        stats
    }

    /// Everything recorded so far, merged.
    pub fn merged_stats(&self) -> Stats {
        let mut merged = Stats::default();
        for stats in lock(&self.stats).iter() {
            merged.merge(&lock(stats));
        }
        merged
    }

    /// Adds a finished producer's key and partition counts.
    pub fn add_spread(&self, counts: &SpreadCounts) {
        lock(&self.spread).merge(counts);
    }

    /// Every finished producer's key and partition counts, added up.
    pub fn spread(&self) -> SpreadCounts {
        lock(&self.spread).clone()
    }

    /// Records the first failure and tells every worker to stop.
    pub fn fail(&self, error: BenchError) {
        let mut slot = lock(&self.first_error);
        if slot.is_none() {
            *slot = Some(error);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Asks every worker to stop without an error (e.g. the join deadline passed).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether workers should stop now.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Takes the first failure, if any.
    pub fn take_error(&self) -> Option<BenchError> {
        lock(&self.first_error).take()
    }

    /// A producer thread finished (its last acknowledgement is in).
    pub fn producer_finished(&self) {
        let previous = self
            .producers_running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if previous == Ok(1) {
            let since_start = Instant::now().saturating_duration_since(self.clock.start);
            let nanos = u64::try_from(since_start.as_nanos()).unwrap_or(u64::MAX - 1);
            self.producers_finished_ns.store(nanos, Ordering::SeqCst);
        }
    }

    /// When the last producer finished, if all have.
    pub fn producers_finished_at(&self) -> Option<Instant> {
        match self.producers_finished_ns.load(Ordering::SeqCst) {
            u64::MAX => None,
            nanos => self.clock.start.checked_add(Duration::from_nanos(nanos)),
        }
    }
}

/// Sleeps until `deadline` (returns at once if it has passed).
pub fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_maps_instants_monotonically() {
        let anchor = WallAnchor::now();
        let later = anchor.instant + Duration::from_millis(5);
        assert_eq!(anchor.unix_ns(later) - anchor.unix_ns(anchor.instant), 5_000_000);
        if let Some(earlier) = anchor.instant.checked_sub(Duration::from_millis(2)) {
            assert_eq!(anchor.unix_ns(anchor.instant) - anchor.unix_ns(earlier), 2_000_000);
        }
    }

    #[test]
    fn first_error_wins_and_stops() {
        let shared = Shared::new(RunClock::new(Instant::now(), Duration::ZERO, Duration::from_secs(1)), 2);
        assert!(!shared.is_stopped());
        shared.fail(BenchError::Internal("first".into()));
        shared.fail(BenchError::Internal("second".into()));
        assert!(shared.is_stopped());
        assert!(shared.take_error().unwrap().to_string().contains("first"));
        shared.producer_finished();
        assert!(shared.producers_finished_at().is_none());
        shared.producer_finished();
        shared.producer_finished();
        assert!(shared.producers_finished_at().is_some());
    }
}
