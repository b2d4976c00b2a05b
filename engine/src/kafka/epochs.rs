//! OffsetForLeaderEpoch: where a leader epoch ends in this leader's log.
//! Followers ask it after a leader change to find where their copy diverges
//! (and KIP-320 clients to validate their position after one).

use std::rc::Rc;

use kafka_protocol::messages::{
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};

use super::{code_of, on_owners, refused_or, topic_name, topics_allowed};
use crate::{
    acl::{Access, Resource},
    error::EngineError,
    shard::Shard,
};
use shardline_raft::AclOperation;

/// (epoch, end offset) found for one partition.
type Found = (i32, i64);

/// A follower (`replica_id` ≥ 0) needs ClusterAction on the cluster, a
/// client Describe on each topic, as Kafka asks.
pub(super) async fn handle(shard: &Rc<Shard>, access: &Access, request: OffsetForLeaderEpochRequest) -> ResponseKind {
    let allowed: Vec<Result<(), EngineError>> = if request.replica_id.0 >= 0 {
        let image = shard.image();
        request
            .topics
            .iter()
            .map(|_| access.check(&image, AclOperation::ClusterAction, Resource::Cluster))
            .collect()
    } else {
        let names = request.topics.iter().map(|t| t.topic.0.as_str());
        topics_allowed(shard, access, AclOperation::Describe, names)
    };
    let questions = request
        .topics
        .iter()
        .zip(&allowed)
        .map(|(t, allowed)| {
            t.partitions
                .iter()
                .filter(|_| allowed.is_ok())
                .map(|p| {
                    (
                        t.topic.0.to_string(),
                        p.partition,
                        (p.current_leader_epoch, p.leader_epoch),
                    )
                })
                .collect()
        })
        .collect();
    let slots = on_owners(shard, questions, lookup).await;
    let mut response = OffsetForLeaderEpochResponse::default();
    for ((topic, answers), allowed) in request.topics.iter().zip(slots).zip(&allowed) {
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic_name(&topic.topic.0);
        let answers = refused_or(answers, allowed, topic.partitions.len());
        for (partition, answer) in topic.partitions.iter().zip(answers) {
            let mut p = EpochEndOffset::default();
            p.partition = partition.partition;
            p.error_code = code_of(&answer);
            let (leader_epoch, end_offset) = answer.unwrap_or((-1, -1));
            p.leader_epoch = leader_epoch;
            p.end_offset = end_offset;
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::OffsetForLeaderEpoch(response)
}

/// Kafka's answer: the largest epoch ≤ `requested` in this log and where it
/// ends (the start of the next epoch, or the log end); (-1, -1) when the log
/// has no epoch that old.
fn lookup(shard: &Shard, topic: &str, index: i32, (current, requested): (i32, i32)) -> Result<Found, EngineError> {
    let partition = shard.partition(topic, index)?;
    partition.check_leader_epoch(current)?;
    Ok(match partition.log.end_offset_for_epoch(requested) {
        Some((epoch, end)) => (epoch, end.0),
        None => (-1, -1),
    })
}
