//! Metrics: what each shard counts, and how a scrape gathers it.
//!
//! ## Shared nothing, gathered by message
//! Every shard counts its own work in its own [`ShardProbe`] (plain `Cell`s
//! and fixed arrays of them, no lock, no shared atomic), and `net` and `log`
//! count theirs in per-thread cells of their own (a shard is one thread).
//! A request pays a few `Cell` adds and one histogram bucket; nothing is
//! aggregated while serving. A scrape of `/metrics` (served by the HTTP
//! endpoint on shard 0, `http.rs`) asks every shard for a
//! [`ShardSnapshot`](snapshot::ShardSnapshot) with `Shard::invoke_on` — one
//! cross-core message per other shard, each bounded by
//! [`SHARD_SCRAPE_TIMEOUT`] — then adds what only shard 0 reads (the
//! metadata Raft group's progress, the process's memory and descriptors),
//! joins consumer-group commits with partition high watermarks into lag,
//! and writes the text (`render.rs`, `exposition.rs`). A shard that does not
//! answer in time is reported as `shardline_shard_up{shard} 0` and its
//! series are missing from that scrape.
//!
//! ## Where each number is counted
//! | what | where |
//! | --- | --- |
//! | requests by API and version, latency by API, in flight | `KafkaHandler::handle` (kafka/mod.rs) |
//! | errors by API and Kafka code | `error::kafka_code`, the one mapping, under the API [`probe::with_api`] set |
//! | produced records and bytes | the owner shard, once a produce's batch is appended (kafka/produce.rs) |
//! | bytes received and sent | `net`'s connection loop (`shardline_net::thread_stats`) |
//! | connections open, accepted, refused, closed idle | `connections.rs` |
//! | cross-shard messages and round trips | `Shard::invoke_on` |
//! | fsyncs and their latency, bytes appended and read | `log` (`shardline_log::thread_stats`) |
//! | partitions: offsets, high watermark, size, under-replication | a walk of the shard's partitions at scrape time |
//! | consumer-group lag | the coordinators' committed offsets against the high watermarks, joined on shard 0 |
//! | metadata Raft: term, leader, log, commit and applied index | `MetadataGroup::status` and `commit_index` |
//! | process resident memory, open descriptors | `/proc/self` at scrape time |
//!
//! ## Bounds
//! Label values that grow with use are bounded per shard and scrape:
//! partitions ([`snapshot::PARTITION_SERIES_PER_SHARD_MAX`]), committed
//! offsets ([`snapshot::GROUP_OFFSET_SERIES_PER_SHARD_MAX`]), error codes
//! ([`probe::ERROR_SERIES_MAX`]); what a bound leaves out is counted in
//! `shardline_metrics_series_left_out_total{family}` (errors past their
//! table in `shardline_request_errors_total{api="other"}`). Requests and
//! latencies are fixed arrays over the APIs `net` serves. docs/operations.md
//! (Monitoring) lists every metric and the alert it serves.

mod exposition;
mod histogram;
pub(crate) mod probe;
mod render;
mod snapshot;

use std::{collections::BTreeMap, future::Future, rc::Rc, time::Duration, time::Instant};

pub(crate) use exposition::Format;
pub(crate) use probe::{with_api, ShardProbe};
pub(crate) use snapshot::ShardSnapshot;

use crate::shard::Shard;

/// How long a scrape waits for each shard's snapshot. A shard busy for
/// longer than this is itself the news (`shardline_shard_up 0`); the scrape
/// still answers with what it has, well inside Prometheus's default 10 s
/// scrape timeout.
pub(crate) const SHARD_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a scrape waits for the metadata group's commit index.
const RAFT_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Series left out by a bound, summed over every scrape so far, by family:
/// kept by the HTTP endpoint on shard 0.
pub(crate) type LeftOut = BTreeMap<&'static str, u64>;

/// The metadata Raft group as one node sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RaftSnapshot {
    pub(crate) term: u64,
    pub(crate) leader: Option<u64>,
    pub(crate) last_log_index: Option<u64>,
    pub(crate) commit_index: Option<u64>,
    pub(crate) applied_index: Option<u64>,
}

/// The process, from `/proc/self` and `getrlimit`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessSnapshot {
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) max_fds: Option<u64>,
}

/// Everything one scrape reports.
#[derive(Debug, Clone)]
pub(crate) struct Gathered {
    /// Every shard, with its snapshot if it answered in time.
    pub(crate) shards: Vec<(usize, Option<ShardSnapshot>)>,
    pub(crate) raft: RaftSnapshot,
    pub(crate) process: ProcessSnapshot,
    /// How long gathering took.
    pub(crate) gather_time: Duration,
}

/// `work`'s output if it finishes within `bound`.
pub(crate) async fn within<T>(bound: Duration, work: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(bound).await;
        None
    })
    .await
}

/// Asks every shard for its snapshot (in parallel, each within
/// [`SHARD_SCRAPE_TIMEOUT`]) and reads the metadata group and the process.
pub(crate) async fn gather(shard: &Rc<Shard>) -> Gathered {
    let started = Instant::now();
    let asks = (0..shard.shard_count).map(|k| {
        let ask = shard.invoke_on(k, |s: Rc<Shard>| async move { ShardSnapshot::take(&s) });
        async move { (k, within(SHARD_SCRAPE_TIMEOUT, ask).await.and_then(Result::ok)) }
    });
    let shards = futures_util::future::join_all(asks).await;
    let status = shard.meta.status();
    let commit_index = within(RAFT_QUERY_TIMEOUT, shard.meta.commit_index())
        .await
        .and_then(Result::ok)
        .flatten();
    Gathered {
        shards,
        raft: RaftSnapshot {
            term: status.term,
            leader: status.leader,
            last_log_index: status.last_log_index,
            commit_index,
            applied_index: status.last_applied_index,
        },
        process: process_snapshot(),
        gather_time: started.elapsed(),
    }
}

/// Renders a scrape in `format`, adding what its bounds left out to
/// `left_out` first.
pub(crate) fn render(gathered: &Gathered, left_out: &mut LeftOut, format: Format) -> String {
    render::render(gathered, left_out, format)
}

/// Resident memory and descriptors of this process. Reads procfs (a few
/// small reads on shard 0, once per scrape); a value that cannot be read
/// is left out.
fn process_snapshot() -> ProcessSnapshot {
    // SAFETY: sysconf has no preconditions.
    let page_bytes = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok();
    let resident_pages = std::fs::read_to_string("/proc/self/statm").ok().and_then(|statm| {
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|pages| pages.parse::<u64>().ok())
    });
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| u64::try_from(entries.count()).unwrap_or(u64::MAX));
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur);
    ProcessSnapshot {
        resident_bytes: resident_pages
            .zip(page_bytes)
            .map(|(pages, bytes)| pages.saturating_mul(bytes)),
        open_fds,
        max_fds,
    }
}
