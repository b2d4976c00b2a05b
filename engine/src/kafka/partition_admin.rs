//! DescribeLogDirs, DeleteRecords and DescribeProducers: the per-partition
//! admin APIs, each answered from the shards holding the partitions.
//!
//! - DescribeLogDirs: one log dir, `--data-dir`, with the size on disk of
//!   every replica the addressed broker holds (a shard with a port of its
//!   own is a broker of its own, `brokers.rs`; with shared ports the node is
//!   one broker). The offset lag is 0: a replica's lag behind its leader is
//!   not tracked per replica on the follower.
//! - DeleteRecords: on the partition's leader shard, moves the log start to
//!   the offset asked (-1: the high watermark), durably; followers follow
//!   the leader's log start as they fetch (`replica.rs`). An offset past the
//!   high watermark is OFFSET_OUT_OF_RANGE.
//! - DescribeProducers: the idempotent producers the leader remembers
//!   (`producer.rs`); there are no transactions, so no coordinator epoch or
//!   open transaction.

use std::{collections::HashMap, rc::Rc};

use kafka_protocol::messages::{
    delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
    describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic},
    describe_producers_response::{PartitionResponse, ProducerState, TopicResponse},
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, ResponseKind,
};
use shardline_log::{LogError, Offset};

use shardline_raft::{AclOperation, AclResourceType};

use super::{code_of, epoch_of, on_owners, split_by_owner, str_bytes, topic_name, Question, Slot};
use crate::{
    acl::{Access, Resource},
    error::{kafka_code, EngineError},
    producer::ProducerSummary,
    shard::Shard,
};

/// What a partition-level admin request may do to `topic` (Kafka's rule:
/// DeleteRecords needs Delete, DescribeProducers Read, on the topic); the
/// refusal travels to the owner shard as `false`.
fn allowed(shard: &Shard, access: &Access, operation: AclOperation, topic: &str) -> bool {
    access.allows(&shard.image(), operation, Resource::Topic(topic))
}

fn refused_topic() -> EngineError {
    EngineError::NotAuthorized(AclResourceType::Topic)
}

/// One replica as DescribeLogDirs shows it: topic, partition, bytes on disk.
type ReplicaSize = (String, i32, u64);

/// The shards whose replicas the broker this connection reached holds: this
/// shard alone when it has a Kafka port (and broker id) of its own, every
/// shard of the node otherwise.
fn shards_of_addressed_broker(shard: &Shard) -> Vec<usize> {
    let image = shard.image();
    let own_ports = image
        .brokers
        .get(&shard.node_id())
        .is_some_and(|broker| !broker.shard_ports.is_empty());
    if own_ports {
        vec![shard.id]
    } else {
        (0..shard.shard_count).collect()
    }
}

/// Total and free bytes of the file system holding `path` (-1, -1 if unknown).
fn disk_bytes(path: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a
    // zero-initialised out-parameter of the type statvfs expects.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return (-1, -1);
    }
    let block: u64 = stat.f_frsize;
    let total = i64::try_from(stat.f_blocks.saturating_mul(block)).unwrap_or(i64::MAX);
    let free = i64::try_from(stat.f_bavail.saturating_mul(block)).unwrap_or(i64::MAX);
    (total, free)
}

/// Needs Describe on the cluster, as in Kafka.
pub(super) async fn describe_log_dirs(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeLogDirsRequest,
) -> ResponseKind {
    if let Err(refused) = access.check(&shard.image(), AclOperation::Describe, Resource::Cluster) {
        let mut response = DescribeLogDirsResponse::default();
        response.error_code = kafka_code(&refused);
        return ResponseKind::DescribeLogDirs(response);
    }
    let wanted: Option<HashMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let asks = shards_of_addressed_broker(shard).into_iter().map(|owner| {
        shard.invoke_on(owner, |s: Rc<Shard>| async move {
            s.open_partitions()
                .into_iter()
                .map(|((topic, index), partition)| (topic, index, partition.log.size_bytes()))
                .collect::<Vec<ReplicaSize>>()
        })
    });
    let mut by_topic: std::collections::BTreeMap<String, Vec<DescribeLogDirsPartition>> = Default::default();
    for replicas in futures_util::future::join_all(asks).await.into_iter().flatten() {
        for (topic, index, size) in replicas {
            let asked = wanted
                .as_ref()
                .is_none_or(|w| w.get(&topic).is_some_and(|partitions| partitions.contains(&index)));
            if !asked {
                continue;
            }
            let mut partition = DescribeLogDirsPartition::default();
            partition.partition_index = index;
            partition.partition_size = i64::try_from(size).unwrap_or(i64::MAX);
            partition.offset_lag = 0;
            by_topic.entry(topic).or_default().push(partition);
        }
    }
    let mut result = DescribeLogDirsResult::default();
    let data_dir = std::path::absolute(&shard.config.data_dir).unwrap_or_else(|_| shard.config.data_dir.clone());
    result.log_dir = str_bytes(&data_dir.display().to_string());
    (result.total_bytes, result.usable_bytes) = disk_bytes(&data_dir);
    result.topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            let mut topic = DescribeLogDirsTopic::default();
            topic.name = topic_name(&name);
            topic.partitions = partitions;
            topic
        })
        .collect();
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    ResponseKind::DescribeLogDirs(response)
}

/// DeleteRecords of one partition on its leader shard: the new low watermark.
async fn delete_on_owner(
    shard: &Shard,
    topic: &str,
    index: i32,
    offset: i64,
    allowed: bool,
) -> Result<i64, EngineError> {
    if !allowed {
        return Err(refused_topic());
    }
    let partition = shard.partition(topic, index)?;
    let high_watermark = partition.high_watermark();
    let target = if offset == -1 { high_watermark } else { Offset(offset) };
    if target.0 < 0 || target > high_watermark {
        return Err(EngineError::Log(LogError::OffsetOutOfRange {
            requested: target,
            log_start: partition.log.log_start(),
            log_end: high_watermark,
        }));
    }
    let before = partition.log.log_start();
    let after = partition.log.delete_records_before(target).await?;
    assert!(after >= before, "the log start never moves back");
    if after > before {
        tracing::info!(%topic, partition = index, log_start = after.0, "records deleted below the new log start");
    }
    Ok(after.0)
}

pub(super) async fn delete_records(shard: &Rc<Shard>, access: &Access, request: DeleteRecordsRequest) -> ResponseKind {
    let epoch = epoch_of(shard);
    let mut answers: Vec<Vec<(i32, Result<i64, EngineError>)>> = request
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, Err(EngineError::ShardUnavailable)))
                .collect()
        })
        .collect();
    let placed = request.topics.iter().enumerate().flat_map(|(ti, topic)| {
        let name = topic.name.0.to_string();
        let allowed = allowed(shard, access, AclOperation::Delete, &name);
        topic
            .partitions
            .iter()
            .enumerate()
            .map(move |(pi, p)| ((ti, pi), (name.clone(), p.partition_index, (p.offset, allowed))))
    });
    let split = split_by_owner(shard, placed);
    let mut fill = |(ti, pi): Slot, answer: Result<i64, EngineError>| {
        let slot = answers.get_mut(ti).and_then(|t| t.get_mut(pi));
        assert!(slot.is_some(), "every answer has a slot in the request");
        if let Some(slot) = slot {
            slot.1 = answer;
        }
    };
    for (slot, error) in split.unowned {
        fill(slot, Err(error));
    }
    let parts = split.owners.into_iter().map(|(owner, items)| {
        shard.invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            let mut out = Vec::with_capacity(items.len());
            for (slot, (name, index, (offset, allowed))) in items {
                out.push((slot, delete_on_owner(&s, &name, index, offset, allowed).await));
            }
            out
        })
    });
    for answered in futures_util::future::join_all(parts).await {
        // An owner that did not answer leaves its slots at SHARD_UNAVAILABLE.
        for (slot, answer) in answered.into_iter().flatten() {
            fill(slot, answer);
        }
    }
    let mut response = DeleteRecordsResponse::default();
    response.topics = request
        .topics
        .iter()
        .zip(answers)
        .map(|(topic, partitions)| {
            let mut result = DeleteRecordsTopicResult::default();
            result.name = topic.name.clone();
            result.partitions = partitions
                .into_iter()
                .map(|(index, answer)| {
                    let mut p = DeleteRecordsPartitionResult::default();
                    p.partition_index = index;
                    p.error_code = code_of(&answer);
                    p.low_watermark = answer.unwrap_or(-1);
                    p
                })
                .collect();
            result
        })
        .collect();
    ResponseKind::DeleteRecords(response)
}

fn producers_of(shard: &Shard, topic: &str, index: i32, allowed: bool) -> Result<Vec<ProducerSummary>, EngineError> {
    if !allowed {
        return Err(refused_topic());
    }
    Ok(shard.partition(topic, index)?.producers())
}

pub(super) async fn describe_producers(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeProducersRequest,
) -> ResponseKind {
    let questions: Vec<Vec<Question<bool>>> = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let allowed = allowed(shard, access, AclOperation::Read, &name);
            t.partition_indexes
                .iter()
                .map(|i| (name.clone(), *i, allowed))
                .collect()
        })
        .collect();
    let answers = on_owners(shard, questions, producers_of).await;
    let mut response = DescribeProducersResponse::default();
    response.topics = request
        .topics
        .iter()
        .zip(answers)
        .map(|(topic, partitions)| {
            let mut result = TopicResponse::default();
            result.name = topic.name.clone();
            result.partitions = topic
                .partition_indexes
                .iter()
                .zip(partitions)
                .map(|(index, answer)| {
                    let mut p = PartitionResponse::default();
                    p.partition_index = *index;
                    p.error_code = code_of(&answer);
                    match answer {
                        Ok(producers) => {
                            p.active_producers = producers.iter().map(producer_state).collect();
                        }
                        Err(e) => p.error_message = Some(str_bytes(&e.to_string())),
                    }
                    p
                })
                .collect();
            result
        })
        .collect();
    ResponseKind::DescribeProducers(response)
}

fn producer_state(summary: &ProducerSummary) -> ProducerState {
    let mut state = ProducerState::default();
    state.producer_id = ProducerId(summary.producer_id);
    state.producer_epoch = i32::from(summary.epoch);
    state.last_sequence = summary.last_sequence;
    state.last_timestamp = summary.last_timestamp_ms;
    state.coordinator_epoch = summary.coordinator_epoch;
    state.current_txn_start_offset = summary.current_txn_start_offset;
    state
}
