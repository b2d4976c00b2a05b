//! Fetch: read whole batches as slices of mapped segments on each owner shard,
//! trim to `max_bytes` in request order, and long-poll (`max_wait_ms`,
//! `min_bytes`) by registering a one-shot watch on every partition read.
//! Which partitions are read and which answered is the fetch session's
//! call (`fetch_session.rs`, KIP-227): all of the request's for a full
//! fetch; all of the session's, answering only those where something
//! moved, for an incremental one.

use std::{
    collections::{HashMap, HashSet},
    rc::Rc,
    time::Duration,
};

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::messages::FetchRequest;
use shardline_log::{LogError, Offset};
use shardline_net::{AbortedTransaction, FetchPartitionResponse, FetchResponse, FetchTopicResponse, ResponseBody};

use super::{
    code_of, epoch_of,
    fetch_session::{Asker, ConnectionId, FetchAsk, Marks, Plan, ReadOutcome, SessionEpoch, SessionId, Wanted},
    on_owners, split_by_owner,
};
use crate::{
    acl::{Access, Resource},
    error::{kafka_code, EngineError},
    partition::FetchWatch,
    shard::{PartitionKey, Shard},
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

pub(super) async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    connection: ConnectionId,
    request: FetchRequest,
) -> ResponseBody {
    let mut response = FetchResponse {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics: Vec::new(),
    };
    let replica_id = request.replica_id.0;
    // A follower fetch reads past the high watermark and moves it: only
    // brokers (ClusterAction on the cluster) may send one. Refused whole.
    if replica_id >= 0 {
        if let Err(refused) = access.check(&shard.image(), AclOperation::ClusterAction, Resource::Cluster) {
            return refuse_all(&request, response, &refused);
        }
    }
    // The session (if any) says which partitions to read and answer.
    let asker = Asker {
        connection,
        follower: replica_id >= 0,
    };
    let plan = shard
        .fetch_sessions
        .borrow_mut()
        .begin(monotonic_ms(), asker, ask_of(&request));
    let (ticket, planned) = match plan {
        Plan::Refuse(refused) => {
            response.error_code = kafka_code(&EngineError::FetchSession(refused));
            return ResponseBody::Fetch(response);
        }
        Plan::Read { ticket, partitions } => (ticket, partitions),
    };
    response.session_id = ticket.session_id.0;
    // A consumer reads the topics it may Read; the others are answered
    // TOPIC_AUTHORIZATION_FAILED and not read. Checked on every request,
    // for every partition of the session.
    let refusals = refusals(shard, access, &planned);
    let read_committed = replica_id < 0 && request.isolation_level == READ_COMMITTED;
    let flat: Vec<Item> = planned
        .iter()
        .filter(|((topic, _), _)| !refusals.contains_key(topic.as_str()))
        .map(|((topic, index), wanted)| Item {
            topic: topic.clone(),
            index: *index,
            offset: wanted.fetch_offset,
            partition_max_bytes: usize::try_from(wanted.partition_max_bytes)
                .unwrap_or(0)
                .min(FETCH_RESPONSE_BYTES_MAX),
            current_leader_epoch: wanted.current_leader_epoch,
            replica_id,
            read_committed,
        })
        .collect();
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
    // Every planned partition's answer, in plan order: refused, or read.
    let mut reads = reads.into_iter();
    let answers: Vec<(PartitionKey, FetchPartitionResponse)> = planned
        .iter()
        .map(|(key, _)| {
            let answer = match refusals.get(key.0.as_str()) {
                Some(code) => refused_partition(key.1, *code),
                None => {
                    let read = reads
                        .next()
                        .unwrap_or_else(|| PartitionRead::failed(EngineError::ShardUnavailable));
                    read_partition(key.1, read)
                }
            };
            (key.clone(), answer)
        })
        .collect();
    drop(refusals);
    assert!(reads.next().is_none(), "every read is answered");
    let outcomes: Vec<(PartitionKey, ReadOutcome)> = answers
        .iter()
        .map(|(key, answer)| (key.clone(), outcome_of(answer)))
        .collect();
    let included = shard.fetch_sessions.borrow_mut().answered(ticket, &outcomes);
    assert_eq!(included.len(), answers.len(), "one verdict per answer");
    response.topics = by_topic(
        answers
            .into_iter()
            .zip(included)
            .filter(|(_, keep)| *keep)
            .map(|(a, _)| a),
    );
    ResponseBody::Fetch(response)
}

/// The session fields and partitions of `request`; a partition named twice
/// is read once and answered once (the first naming counts, as Kafka keeps
/// one entry per partition too): repeats cannot multiply the work.
fn ask_of(request: &FetchRequest) -> FetchAsk {
    let mut named = HashSet::new();
    let partitions = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.as_str(), p)))
        .filter(|(topic, p)| named.insert((*topic, p.partition)))
        .map(|(topic, p)| {
            let wanted = Wanted {
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            };
            ((topic.to_string(), p.partition), wanted)
        })
        .collect();
    let forgotten = request
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p)))
        .collect();
    FetchAsk {
        session_id: SessionId(request.session_id),
        epoch: SessionEpoch(request.session_epoch),
        partitions,
        forgotten,
    }
}

/// The Kafka code of each planned topic `access` may not Read.
fn refusals<'a>(shard: &Shard, access: &Access, planned: &'a [(PartitionKey, Wanted)]) -> HashMap<&'a str, i16> {
    let image = shard.image();
    let mut checked: HashMap<&str, Option<i16>> = HashMap::new();
    for ((topic, _), _) in planned {
        checked.entry(topic.as_str()).or_insert_with(|| {
            access
                .check(&image, AclOperation::Read, Resource::Topic(topic))
                .err()
                .map(|refused| kafka_code(&refused))
        });
    }
    checked
        .into_iter()
        .filter_map(|(topic, code)| code.map(|code| (topic, code)))
        .collect()
}

fn read_partition(index: i32, read: PartitionRead) -> FetchPartitionResponse {
    FetchPartitionResponse {
        partition_index: index,
        error_code: code_of(&read.result),
        high_watermark: read.high_watermark,
        last_stable_offset: read.last_stable_offset,
        log_start_offset: read.log_start,
        aborted_transactions: read.aborted,
        preferred_read_replica: -1,
        records: read.result.unwrap_or_default(),
    }
}

fn refused_partition(index: i32, error_code: i16) -> FetchPartitionResponse {
    FetchPartitionResponse {
        partition_index: index,
        error_code,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted_transactions: None,
        preferred_read_replica: -1,
        records: Vec::new(),
    }
}

/// What the session table needs to know of one partition's answer.
fn outcome_of(answer: &FetchPartitionResponse) -> ReadOutcome {
    ReadOutcome {
        has_records: answer.records.iter().any(|chunk| !chunk.is_empty()),
        failed: answer.error_code != 0,
        marks: Marks {
            high_watermark: answer.high_watermark,
            last_stable_offset: answer.last_stable_offset,
            log_start: answer.log_start_offset,
        },
    }
}

/// Partition answers grouped by topic, topics in the order first named,
/// partitions in answer order.
fn by_topic(answers: impl Iterator<Item = (PartitionKey, FetchPartitionResponse)>) -> Vec<FetchTopicResponse> {
    let mut topics: Vec<FetchTopicResponse> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for ((topic, _), answer) in answers {
        let at = *position.entry(topic.clone()).or_insert_with(|| {
            topics.push(FetchTopicResponse {
                name: topic,
                partitions: Vec::new(),
            });
            topics.len() - 1
        });
        match topics.get_mut(at) {
            Some(out) => out.partitions.push(answer),
            None => unreachable!("position {at} was pushed when first seen"),
        }
    }
    topics
}

/// Milliseconds on a clock that never goes back, for the session table.
fn monotonic_ms() -> u64 {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let started = STARTED.get_or_init(std::time::Instant::now);
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
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
        .map(|p| refused_partition(p.partition, error_code))
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
