//! ListOffsets: earliest (-2), latest (-1), the record with the max
//! timestamp (-3) or the first record at or after a timestamp, answered by
//! each partition's owner shard. In a compressed batch (which the broker
//! does not decompress) the answer is the batch's base offset and max
//! timestamp.

use std::rc::Rc;

use kafka_protocol::messages::{
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    ListOffsetsRequest, ListOffsetsResponse, ResponseKind,
};

use super::{code_of, on_owners, refused_or, topic_name, topics_allowed};
use crate::{acl::Access, error::EngineError, shard::Shard};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// (offset, timestamp, leader epoch) of one answer.
type Found = (i64, i64, i32);

/// ListOffsets `isolation_level` 1: latest is the last stable offset.
const READ_COMMITTED: i8 = 1;

/// One partition's question.
struct Question {
    timestamp: i64,
    read_committed: bool,
}

/// Describe on each topic; the partitions of the others are not asked.
pub(super) async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: ListOffsetsRequest,
    version: i16,
) -> ResponseKind {
    let names = request.topics.iter().map(|t| t.name.0.as_str());
    let allowed = topics_allowed(shard, access, shardline_raft::AclOperation::Describe, names);
    let questions = request
        .topics
        .iter()
        .zip(&allowed)
        .map(|(t, allowed)| {
            t.partitions
                .iter()
                .filter(|_| allowed.is_ok())
                .map(|p| {
                    let question = Question {
                        timestamp: p.timestamp,
                        read_committed: request.isolation_level == READ_COMMITTED,
                    };
                    (t.name.0.to_string(), p.partition_index, question)
                })
                .collect()
        })
        .collect();
    let slots = on_owners(shard, questions, lookup).await;
    let mut response = ListOffsetsResponse::default();
    for ((topic, answers), allowed) in request.topics.iter().zip(slots).zip(&allowed) {
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic_name(&topic.name.0);
        let answers = refused_or(answers, allowed, topic.partitions.len());
        for (partition, answer) in topic.partitions.iter().zip(answers) {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = partition.partition_index;
            p.error_code = code_of(&answer);
            let (offset, timestamp, leader_epoch) = answer.unwrap_or((-1, -1, -1));
            p.offset = offset;
            p.timestamp = timestamp;
            // The field exists from v4; kafka-protocol refuses a non-default value before.
            if version >= 4 {
                p.leader_epoch = leader_epoch;
            }
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::ListOffsets(response)
}

fn lookup(shard: &Shard, topic: &str, index: i32, question: Question) -> Result<Found, EngineError> {
    let partition = shard.partition(topic, index)?;
    let log = &partition.log;
    let leader_epoch = partition.role().1;
    match question.timestamp {
        // read_committed consumers see up to the last stable offset.
        LATEST if question.read_committed => Ok((partition.consumer_view().last_stable_offset.0, -1, leader_epoch)),
        // Consumers see what every in-sync replica has: the high watermark
        // (both capped by delayed delivery, `delivery.rs`).
        LATEST => Ok((partition.consumer_view().high_watermark.0, -1, leader_epoch)),
        EARLIEST => Ok((log.log_start().0, -1, leader_epoch)),
        MAX_TIMESTAMP => Ok(match log.offset_of_max_timestamp()? {
            Some(found) => (found.offset.0, found.timestamp_ms, leader_epoch),
            None => (-1, -1, leader_epoch),
        }),
        t if t < 0 => Err(EngineError::InvalidRequest(format!(
            "unknown ListOffsets timestamp {t}"
        ))),
        t => Ok(match log.offset_for_timestamp(t)? {
            Some(found) => (found.offset.0, found.timestamp_ms, leader_epoch),
            None => (-1, -1, leader_epoch),
        }),
    }
}
