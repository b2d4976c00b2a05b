//! OffsetForLeaderEpoch: where a leader epoch ends in this leader's log.
//! Followers ask it after a leader change to find where their copy diverges
//! (and KIP-320 clients to validate their position after one).

use std::rc::Rc;

use kafka_protocol::messages::{
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};

use super::{code_of, on_owners, topic_name};
use crate::{error::EngineError, shard::Shard};

/// (epoch, end offset) found for one partition.
type Found = (i32, i64);

pub(super) async fn handle(shard: &Rc<Shard>, request: OffsetForLeaderEpochRequest) -> ResponseKind {
    let questions = request
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
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
    for (topic, answers) in request.topics.iter().zip(slots) {
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic_name(&topic.topic.0);
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
