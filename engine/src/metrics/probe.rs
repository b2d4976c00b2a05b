//! What one shard counts about its own work: the `ShardProbe` it owns, and
//! two per-thread tables for what is counted where no shard is at hand.
//!
//! Everything is a plain `Cell` or a fixed array of them, read and written
//! only on the shard's own thread: a request pays a few adds and one
//! histogram bucket, never a lock or a shared atomic. A scrape reads them
//! through a message to the shard (`snapshot.rs`).
//!
//! Per-thread, not in the probe:
//! - **The API being served.** [`with_api`] wraps a request's future and sets
//!   the thread's current API for the length of each poll (and
//!   `Shard::invoke_on` carries it to the shard that runs a part of the
//!   request), so [`count_error`] knows which API an error code answers.
//! - **Error codes.** [`count_error`] is called from `error::kafka_code`, the
//!   one place an error becomes a Kafka code; that function has no shard at
//!   hand, and a shard is a thread, so the table is a `thread_local!` read by
//!   the shard's snapshot like the `net` and `log` counters.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    future::Future,
    rc::Rc,
    time::Duration,
};

use shardline_net::SUPPORTED_APIS;

use super::histogram::{HistogramSnapshot, LatencyHistogram};

/// APIs the engine serves (net's table); requests are counted by position in it.
pub(crate) const APIS: usize = SUPPORTED_APIS.len();

/// Versions counted per API: every supported version is below 16 (the
/// highest is Metadata v12); a request at another version is counted in the
/// last slot.
pub(crate) const API_VERSIONS_COUNTED: usize = 16;

/// Distinct (API, error code) pairs counted per shard: Kafka has about 130
/// codes and the engine 33 APIs, and a handler produces a handful of codes
/// each, so this is never reached in practice; past it an error is counted
/// in `errors_left_out` instead.
pub(crate) const ERROR_SERIES_MAX: usize = 512;

/// Position of `api_key` in the supported table.
pub(crate) fn api_slot(api_key: i16) -> Option<usize> {
    SUPPORTED_APIS.binary_search_by_key(&api_key, |(key, _, _)| *key).ok()
}

/// API key at position `slot` of the supported table.
pub(crate) fn api_key_of(slot: usize) -> Option<i16> {
    SUPPORTED_APIS.get(slot).map(|(key, _, _)| *key)
}

/// The log cleaner's work on one shard, counted after each pass that
/// rewrote segments (`Shard::clean_logs`).
#[derive(Debug, Default)]
struct CleanerCounts {
    passes: Cell<u64>,
    segments_swapped: Cell<u64>,
    bytes_removed: Cell<u64>,
    records_removed: Cell<u64>,
}

/// [`CleanerCounts`] as a scrape reads them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CleanerSnapshot {
    pub(crate) passes: u64,
    pub(crate) segments_swapped: u64,
    pub(crate) bytes_removed: u64,
    pub(crate) records_removed: u64,
}

/// Client connections of one shard, counted by `connections.rs`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    /// Taken and served.
    pub(crate) accepted: Cell<u64>,
    /// Closed at once: the shard served its share of `--max-connections`.
    pub(crate) refused: Cell<u64>,
    /// Closed for idling past `--connections-max-idle-ms`.
    pub(crate) closed_idle: Cell<u64>,
    /// Open now.
    pub(crate) open: Cell<u64>,
}

/// Counters of one shard's work.
#[derive(Debug)]
pub(crate) struct ShardProbe {
    /// Client requests whose partition work (produce, fetch, offsets) ran
    /// partly on another shard: each is a cross-core round trip. With own
    /// shard listeners an up-to-date client causes none.
    pub(crate) forwarded_partition_requests: Cell<u64>,
    /// Group requests (join, sync, heartbeat, commit, ...) that arrived on a
    /// shard other than their coordinator's.
    pub(crate) forwarded_group_requests: Cell<u64>,
    /// Requests by API (position in `SUPPORTED_APIS`) and version.
    requests: [[Cell<u64>; API_VERSIONS_COUNTED]; APIS],
    /// Time from a request's decode to its answer, by API.
    latency: [LatencyHistogram; APIS],
    /// Requests being handled on this shard now (shutdown waits for them).
    pub(crate) requests_in_flight: Rc<Cell<usize>>,
    /// Records and bytes of batches clients produced to partitions of this
    /// shard (counted on the owner, once appended).
    produced_records: Cell<u64>,
    produced_bytes: Cell<u64>,
    /// The log cleaner's work on this shard's compacted partitions.
    cleaned: CleanerCounts,
    /// Messages this shard sent to shard i with `invoke_on`.
    cross_shard_messages: Vec<Cell<u64>>,
    /// Their round trips: send to answer.
    cross_shard_round_trip: LatencyHistogram,
    /// Client connections.
    pub(crate) connections: Rc<ConnectionCounts>,
    /// Set once every Kafka listener of the shard listens (readiness).
    pub(crate) listeners_bound: Cell<bool>,
}

impl ShardProbe {
    pub(crate) fn new(shard_count: usize) -> ShardProbe {
        ShardProbe {
            forwarded_partition_requests: Cell::new(0),
            forwarded_group_requests: Cell::new(0),
            requests: std::array::from_fn(|_| [const { Cell::new(0) }; API_VERSIONS_COUNTED]),
            latency: std::array::from_fn(|_| LatencyHistogram::default()),
            requests_in_flight: Rc::new(Cell::new(0)),
            produced_records: Cell::new(0),
            produced_bytes: Cell::new(0),
            cleaned: CleanerCounts::default(),
            cross_shard_messages: (0..shard_count).map(|_| Cell::new(0)).collect(),
            cross_shard_round_trip: LatencyHistogram::default(),
            connections: Rc::new(ConnectionCounts::default()),
            listeners_bound: Cell::new(false),
        }
    }

    pub(crate) fn count(counter: &Cell<u64>) {
        add(counter, 1);
    }

    /// Counts a request of the API at `slot`, at `version`.
    pub(crate) fn count_request(&self, slot: Option<usize>, version: i16) {
        let Some(versions) = slot.and_then(|slot| self.requests.get(slot)) else {
            return;
        };
        let last = API_VERSIONS_COUNTED - 1;
        let index = usize::try_from(version).map_or(last, |v| v.min(last));
        if let Some(counter) = versions.get(index) {
            add(counter, 1);
        }
    }

    /// Records how long a request of the API at `slot` took.
    pub(crate) fn record_latency(&self, slot: Option<usize>, elapsed: Duration) {
        if let Some(histogram) = slot.and_then(|slot| self.latency.get(slot)) {
            histogram.record(elapsed);
        }
    }

    /// Counts a batch of `records` records and `bytes` bytes produced here.
    pub(crate) fn count_produced(&self, records: u64, bytes: u64) {
        add(&self.produced_records, records);
        add(&self.produced_bytes, bytes);
    }

    /// Counts one cleaning pass of a partition that rewrote segments.
    pub(crate) fn count_cleaned(&self, report: &shardline_log::CleanReport) {
        let cleaned = &self.cleaned;
        add(&cleaned.passes, 1);
        add(
            &cleaned.segments_swapped,
            u64::try_from(report.segments_swapped).unwrap_or(u64::MAX),
        );
        add(
            &cleaned.bytes_removed,
            report.bytes_before.saturating_sub(report.bytes_after),
        );
        add(
            &cleaned.records_removed,
            report.records_removed.saturating_add(report.tombstones_removed),
        );
    }

    /// The cleaner's counters.
    pub(crate) fn cleaned(&self) -> CleanerSnapshot {
        let cleaned = &self.cleaned;
        CleanerSnapshot {
            passes: cleaned.passes.get(),
            segments_swapped: cleaned.segments_swapped.get(),
            bytes_removed: cleaned.bytes_removed.get(),
            records_removed: cleaned.records_removed.get(),
        }
    }

    /// Counts a message to shard `to` that took `round_trip` to answer.
    pub(crate) fn record_cross_shard(&self, to: usize, round_trip: Duration) {
        if let Some(counter) = self.cross_shard_messages.get(to) {
            add(counter, 1);
        }
        self.cross_shard_round_trip.record(round_trip);
    }

    /// Requests counted: (API key, version, count), the counted ones only.
    pub(crate) fn requests(&self) -> Vec<(i16, i16, u64)> {
        let mut out = Vec::new();
        for (slot, versions) in self.requests.iter().enumerate() {
            let Some(api_key) = api_key_of(slot) else { continue };
            for (version, counter) in versions.iter().enumerate() {
                if counter.get() > 0 {
                    out.push((api_key, i16::try_from(version).unwrap_or(i16::MAX), counter.get()));
                }
            }
        }
        out
    }

    /// Latency histograms by API key: those with observations, and Produce
    /// and Fetch always (dashboards plot them from the start).
    pub(crate) fn latencies(&self) -> Vec<(i16, HistogramSnapshot)> {
        use kafka_protocol::messages::ApiKey;
        let always = [ApiKey::Produce as i16, ApiKey::Fetch as i16];
        self.latency
            .iter()
            .enumerate()
            .filter_map(|(slot, histogram)| {
                let api_key = api_key_of(slot)?;
                (!histogram.is_empty() || always.contains(&api_key)).then(|| (api_key, histogram.snapshot()))
            })
            .collect()
    }

    /// (records, bytes) produced here.
    pub(crate) fn produced(&self) -> (u64, u64) {
        (self.produced_records.get(), self.produced_bytes.get())
    }

    /// Messages sent to each shard, by shard.
    pub(crate) fn cross_shard_messages(&self) -> Vec<u64> {
        self.cross_shard_messages.iter().map(Cell::get).collect()
    }

    pub(crate) fn cross_shard_round_trip(&self) -> HistogramSnapshot {
        self.cross_shard_round_trip.snapshot()
    }
}

fn add(counter: &Cell<u64>, amount: u64) {
    counter.set(counter.get().wrapping_add(amount));
}

/// The API a shard's thread is serving right now: a position in
/// `SUPPORTED_APIS`, or `NO_API`.
type ApiContext = u16;

/// No request is being polled (authentication, replication, ticks).
const NO_API: ApiContext = u16::MAX;

/// Errors by (API key, or `None` outside a request; Kafka code).
type ErrorTable = HashMap<(Option<i16>, i16), u64>;

thread_local! {
    static CURRENT_API: Cell<ApiContext> = const { Cell::new(NO_API) };
    static ERRORS: RefCell<ErrorTable> = RefCell::new(HashMap::new());
    static ERRORS_LEFT_OUT: Cell<u64> = const { Cell::new(0) };
}

/// The API being served on this thread now (to carry to another shard).
pub(crate) fn current_api() -> Option<usize> {
    let current = CURRENT_API.with(Cell::get);
    (current != NO_API).then_some(usize::from(current))
}

/// Runs `future` with `api` (a position in `SUPPORTED_APIS`) as the
/// thread's current API during each of its polls; the one before is put
/// back after each poll, so interleaved requests on a shard never see each
/// other's.
pub(crate) async fn with_api<F: Future>(api: Option<usize>, future: F) -> F::Output {
    let context = api.and_then(|slot| ApiContext::try_from(slot).ok()).unwrap_or(NO_API);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let before = CURRENT_API.with(|current| current.replace(context));
        let polled = future.as_mut().poll(cx);
        CURRENT_API.with(|current| current.set(before));
        polled
    })
    .await
}

/// Counts one Kafka error `code` under the thread's current API. Called by
/// `error::kafka_code` only.
pub(crate) fn count_error(code: i16) {
    let api = current_api().and_then(api_key_of);
    ERRORS.with(|errors| {
        let mut errors = errors.borrow_mut();
        let full = errors.len() >= ERROR_SERIES_MAX;
        match errors.get_mut(&(api, code)) {
            Some(count) => *count = count.wrapping_add(1),
            None if full => ERRORS_LEFT_OUT.with(|left_out| add(left_out, 1)),
            None => {
                errors.insert((api, code), 1);
            }
        }
        assert!(errors.len() <= ERROR_SERIES_MAX, "the error table is bounded");
    });
}

/// This thread's error counts: (API key or `None`, code, count), and how
/// many errors found the table full.
pub(crate) fn errors() -> (Vec<(Option<i16>, i16, u64)>, u64) {
    let counted = ERRORS.with(|errors| {
        errors
            .borrow()
            .iter()
            .map(|(&(api, code), &count)| (api, code, count))
            .collect()
    });
    (counted, ERRORS_LEFT_OUT.with(Cell::get))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_slots_follow_the_supported_table() {
        for (slot, (key, _, _)) in SUPPORTED_APIS.iter().enumerate() {
            assert_eq!(api_slot(*key), Some(slot));
            assert_eq!(api_key_of(slot), Some(*key));
        }
        assert_eq!(api_slot(9999), None);
        let max_version = SUPPORTED_APIS.iter().map(|(_, _, max)| *max).max().unwrap();
        assert!(usize::try_from(max_version).unwrap() < API_VERSIONS_COUNTED - 1);
    }

    #[test]
    fn requests_are_counted_by_api_and_version() {
        let probe = ShardProbe::new(2);
        let produce = api_slot(0);
        probe.count_request(produce, 9);
        probe.count_request(produce, 9);
        probe.count_request(produce, 99);
        probe.count_request(None, 1);
        assert_eq!(
            probe.requests(),
            vec![(0, 9, 2), (0, i16::try_from(API_VERSIONS_COUNTED - 1).unwrap(), 1)]
        );
    }

    #[test]
    fn errors_are_counted_under_the_api_being_polled() {
        std::thread::spawn(|| {
            futures_lite::future::block_on(async {
                count_error(6);
                with_api(api_slot(1), async {
                    count_error(1);
                    // A nested scope (a forwarded part) and back.
                    with_api(api_slot(0), async { count_error(6) }).await;
                    count_error(1);
                })
                .await;
                assert_eq!(current_api(), None, "the scope ends with its future");
            });
            let (mut counted, left_out) = errors();
            counted.sort_unstable();
            assert_eq!(counted, vec![(None, 6, 1), (Some(0), 6, 1), (Some(1), 1, 2)]);
            assert_eq!(left_out, 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_error_table_is_bounded() {
        std::thread::spawn(|| {
            for code in 0..i16::try_from(ERROR_SERIES_MAX + 10).unwrap() {
                count_error(code);
            }
            let (counted, left_out) = errors();
            assert_eq!(counted.len(), ERROR_SERIES_MAX);
            assert_eq!(left_out, 10);
        })
        .join()
        .unwrap();
    }
}
