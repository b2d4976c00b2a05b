//! Fetch: read whole batches as slices of mapped segments on each owner shard,
//! trim to `max_bytes` in request order, and long-poll (`max_wait_ms`,
//! `min_bytes`) by registering a one-shot watch on every partition read.

use std::{rc::Rc, time::Duration};

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::{messages::FetchRequest, ResponseError};
use shardline_log::{LogError, Offset};
use shardline_net::{AbortedTransaction, FetchPartitionResponse, FetchResponse, FetchTopicResponse, ResponseBody};

use super::{code_of, epoch_of, on_owners, split_by_owner};
use crate::{
    acl::{Access, Resource},
    error::{kafka_code, EngineError},
    partition::FetchWatch,
    shard::Shard,
};
use shardline_raft::AclOperation;

/// Longest a fetch waits for data, whatever the client asks (bounds the
/// resources a parked fetch holds).
const FETCH_WAIT_MAX_MS: i32 = 30_000;

/// Most record bytes one Fetch response carries, whatever the client asks
/// (Kafka's broker `fetch.max.bytes` default, 55 MiB): bounds the work and
/// the memory one request can make a shard spend. A first batch larger than
/// this is still returned whole, as Kafka does (KIP-74).
const FETCH_RESPONSE_BYTES_MAX: usize = 55 << 20;

/// What the owner shard read for one partition.
struct PartitionRead {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start: i64,
    /// read_committed: the aborted transactions in the range read.
    aborted: Option<Vec<AbortedTransaction>>,
    result: Result<Vec<Bytes>, EngineError>,
    /// Delayed delivery: when more becomes visible by time alone.
    due_ms: Option<i64>,
}

impl PartitionRead {
    fn failed(error: EngineError) -> PartitionRead {
        PartitionRead {
            high_watermark: -1,
            last_stable_offset: -1,
            log_start: -1,
            aborted: None,
            result: Err(error),
            due_ms: None,
        }
    }
}

/// Fetch `isolation_level` 1: read below the last stable offset only.
const READ_COMMITTED: i8 = 1;

#[derive(Clone)]
struct Item {
    topic: String,
    index: i32,
    offset: i64,
    partition_max_bytes: usize,
    /// The leader epoch the fetcher believes in (-1 = not given).
    current_leader_epoch: i32,
    /// The fetching follower's broker id, or -1 for a consumer.
    replica_id: i32,
    /// A read_committed consumer: reads below the last stable offset and
    /// is told the aborted transactions it must skip.
    read_committed: bool,
}

pub(super) async fn handle(shard: &Rc<Shard>, access: &Access, request: FetchRequest) -> ResponseBody {
    let mut response = FetchResponse {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics: Vec::new(),
    };
    if request.session_id != 0 {
        // No fetch sessions are ever handed out, so none can be found.
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return ResponseBody::Fetch(response);
    }
    let replica_id = request.replica_id.0;
    // A follower fetch reads past the high watermark and moves it: only
    // brokers (ClusterAction on the cluster) may send one. Refused whole.
    if replica_id >= 0 {
        if let Err(refused) = access.check(&shard.image(), AclOperation::ClusterAction, Resource::Cluster) {
            return refuse_all(&request, response, &refused);
        }
    }
    // A consumer reads the topics it may Read; the others are answered
    // TOPIC_AUTHORIZATION_FAILED and not read.
    let image = shard.image();
    let readable: Vec<Result<(), EngineError>> = request
        .topics
        .iter()
        .map(|t| access.check(&image, AclOperation::Read, Resource::Topic(t.topic.0.as_str())))
        .collect();
    drop(image);
    // A partition named twice is read once and answered once (Kafka keeps
    // one entry per partition too): repeats cannot multiply the work.
    let mut named = std::collections::HashSet::new();
    let items: Vec<Vec<Item>> = request
        .topics
        .iter()
        .zip(&readable)
        .map(|(t, readable)| {
            t.partitions
                .iter()
                .filter(|_| readable.is_ok())
                .filter(|p| named.insert((t.topic.0.as_str(), p.partition)))
                .map(|p| Item {
                    topic: t.topic.0.to_string(),
                    index: p.partition,
                    offset: p.fetch_offset,
                    partition_max_bytes: usize::try_from(p.partition_max_bytes)
                        .unwrap_or(0)
                        .min(FETCH_RESPONSE_BYTES_MAX),
                    current_leader_epoch: p.current_leader_epoch,
                    replica_id,
                    read_committed: replica_id < 0 && request.isolation_level == READ_COMMITTED,
                })
                .collect()
        })
        .collect();
    drop(named);
    let flat: Vec<Item> = items.iter().flatten().cloned().collect();
    let max_bytes = usize::try_from(request.max_bytes)
        .ok()
        .filter(|b| *b > 0)
        .unwrap_or(FETCH_RESPONSE_BYTES_MAX)
        .min(FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MAX_MS);
    let deadline = std::time::Instant::now() + Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
    let reads = loop {
        let mut reads = read_all(shard, &flat).await;
        let total = trim_to(&mut reads, max_bytes);
        let failed = reads.iter().any(|r| r.result.is_err());
        let now = std::time::Instant::now();
        if total >= min_bytes || failed || now >= deadline || flat.is_empty() {
            break reads;
        }
        let watches = watch_all(shard, &flat).await;
        if watches.is_empty() {
            break reads;
        }
        let remaining = crate::delivery::sleep_for(
            deadline.saturating_duration_since(now),
            reads.iter().map(|r| r.due_ms),
            super::unix_now_ms(),
        );
        futures_lite::future::or(
            async {
                let _ = futures_util::future::select_all(watches).await;
            },
            glommio::timer::sleep(remaining),
        )
        .await;
    };
    let mut reads = reads.into_iter();
    for ((topic, partitions), readable) in request.topics.iter().zip(&items).zip(&readable) {
        let mut out = FetchTopicResponse {
            name: topic.topic.0.to_string(),
            partitions: Vec::new(),
        };
        if let Err(refused) = readable {
            out.partitions = refused_partitions(topic, refused);
            response.topics.push(out);
            continue;
        }
        for item in partitions {
            let read = reads
                .next()
                .unwrap_or_else(|| PartitionRead::failed(EngineError::ShardUnavailable));
            let error_code = code_of(&read.result);
            out.partitions.push(FetchPartitionResponse {
                partition_index: item.index,
                error_code,
                high_watermark: read.high_watermark,
                last_stable_offset: read.last_stable_offset,
                log_start_offset: read.log_start,
                aborted_transactions: read.aborted,
                preferred_read_replica: -1,
                records: read.result.unwrap_or_default(),
            });
        }
        response.topics.push(out);
    }
    ResponseBody::Fetch(response)
}

/// Every partition of `topic` answered with `refused`'s code, nothing read.
fn refused_partitions(
    topic: &kafka_protocol::messages::fetch_request::FetchTopic,
    refused: &EngineError,
) -> Vec<FetchPartitionResponse> {
    let error_code = kafka_code(refused);
    topic
        .partitions
        .iter()
        .map(|p| FetchPartitionResponse {
            partition_index: p.partition,
            error_code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: None,
            preferred_read_replica: -1,
            records: Vec::new(),
        })
        .collect()
}

/// The whole request refused with `refused`'s code: at the top (v7+) and
/// on every partition (what older versions read).
fn refuse_all(request: &FetchRequest, mut response: FetchResponse, refused: &EngineError) -> ResponseBody {
    response.error_code = kafka_code(refused);
    response.topics = request
        .topics
        .iter()
        .map(|topic| FetchTopicResponse {
            name: topic.topic.0.to_string(),
            partitions: refused_partitions(topic, refused),
        })
        .collect();
    ResponseBody::Fetch(response)
}

/// Drops record chunks past `max_bytes`, in request order; the first
/// non-empty partition keeps its data whatever its size (KIP-74), so a
/// consumer always progresses. Returns the bytes kept.
fn trim_to(reads: &mut [PartitionRead], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for read in reads.iter_mut() {
        if let Ok(chunks) = &mut read.result {
            let bytes: usize = chunks.iter().map(Bytes::len).sum();
            if bytes == 0 {
                continue;
            }
            if total > 0 && total + bytes > max_bytes {
                chunks.clear();
                continue;
            }
            total += bytes;
        }
    }
    total
}

/// Reads every item on its owner shard, preserving item order.
async fn read_all(shard: &Rc<Shard>, items: &[Item]) -> Vec<PartitionRead> {
    let questions = vec![items.iter().map(|i| (i.topic.clone(), i.index, i.clone())).collect()];
    on_owners(shard, questions, |s, _, _, item| Ok(read_local(s, &item)))
        .await
        .into_iter()
        .flatten()
        .map(|answer| answer.unwrap_or_else(PartitionRead::failed))
        .collect()
}

fn read_local(shard: &Shard, item: &Item) -> PartitionRead {
    let partition = match shard.partition(&item.topic, item.index) {
        Ok(partition) => partition,
        Err(e) => return PartitionRead::failed(e),
    };
    if let Err(e) = partition.check_leader_epoch(item.current_leader_epoch) {
        return PartitionRead::failed(e);
    }
    let from = Offset(item.offset);
    let log_end = partition.log.log_end();
    if item.replica_id >= 0 {
        // A follower's fetch offset is its log end: it moves the high
        // watermark. One past this log's end is a follower that has what the
        // leader never had (or a lie): refused, and it moves nothing.
        if from > log_end {
            return PartitionRead::failed(EngineError::Log(LogError::OffsetOutOfRange {
                requested: from,
                log_start: partition.log.log_start(),
                log_end,
            }));
        }
        partition.record_follower_fetch(item.replica_id, from);
    }
    // Consumers see what delayed delivery lets them (`delivery.rs`);
    // followers copy everything.
    let view = visible(&partition, item);
    let (high_watermark, last_stable_offset) = (view.high_watermark, view.last_stable_offset);
    // Followers copy up to the log end, read_uncommitted consumers read
    // below the high watermark, read_committed ones below the LSO.
    let end = if item.replica_id >= 0 {
        log_end
    } else if item.read_committed {
        last_stable_offset
    } else {
        high_watermark
    };
    let log_start = partition.log.log_start().0;
    let read = if from >= end && from <= log_end {
        Ok((Vec::new(), from))
    } else {
        partition
            .read(from, item.partition_max_bytes.max(1), end)
            .map(|r| (r.chunks, r.next_offset))
    };
    // The aborted transactions that start inside what was read.
    let read_end = read.as_ref().map_or(from, |(_, next)| *next);
    let result = read.map(|(chunks, _)| chunks);
    let aborted = item.read_committed.then(|| {
        partition
            .aborted_between(from, read_end)
            .into_iter()
            .map(|a| AbortedTransaction {
                producer_id: a.producer_id.0,
                first_offset: a.first_offset.0,
            })
            .collect()
    });
    PartitionRead {
        high_watermark: high_watermark.0,
        last_stable_offset: last_stable_offset.0,
        log_start,
        aborted,
        result,
        due_ms: view.due_ms,
    }
}

/// The high watermark and last stable offset `item`'s fetcher may read
/// below: a consumer's capped by delayed delivery, a follower's not.
fn visible(partition: &crate::partition::Partition, item: &Item) -> crate::delivery::ConsumerView {
    if item.replica_id < 0 {
        return partition.consumer_view();
    }
    crate::delivery::ConsumerView {
        high_watermark: partition.high_watermark(),
        last_stable_offset: partition.last_stable_offset(),
        due_ms: None,
    }
}

/// Parks the fetch on every partition it names: one watch per owner shard,
/// fired by the first of that shard's partitions to get data past its fetch
/// offset (at once if one already has some, so no wake-up is lost between the
/// read and the watch). A fetch naming any number of partitions waits on at
/// most one channel per shard.
#[expect(
    clippy::async_yields_async,
    reason = "each owner hands back the receiver its watch fires; the requesting shard awaits it"
)]
async fn watch_all(shard: &Rc<Shard>, items: &[Item]) -> Vec<oneshot::Receiver<()>> {
    let epoch = epoch_of(shard);
    let placed = items
        .iter()
        .enumerate()
        .map(|(i, item)| ((0, i), (item.topic.clone(), item.index, item.clone())));
    let split = split_by_owner(shard, placed);
    let parts = split.owners.into_iter().map(|(owner, owned)| {
        shard.invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            let (watch, fired) = FetchWatch::new();
            for (_, (_, _, item)) in &owned {
                if watch_local(&s, item, &watch) == Watched::AlreadyFired {
                    break;
                }
                glommio::yield_if_needed().await;
            }
            fired
        })
    });
    futures_util::future::join_all(parts)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Watched {
    /// The partition has data past the fetch offset: the watch fired.
    AlreadyFired,
    /// Waiting for the partition's next append (or the item cannot be
    /// watched: the next read reports why).
    Waiting,
}

fn watch_local(shard: &Shard, item: &Item, watch: &Rc<FetchWatch>) -> Watched {
    let Ok(partition) = shard.partition(&item.topic, item.index) else {
        return Watched::Waiting;
    };
    let view = visible(&partition, item);
    let visible_end = if item.replica_id >= 0 {
        partition.log.log_end()
    } else if item.read_committed {
        view.last_stable_offset
    } else {
        view.high_watermark
    };
    if visible_end.0 > item.offset {
        watch.fire();
        return Watched::AlreadyFired;
    }
    partition.watch(watch);
    Watched::Waiting
}
