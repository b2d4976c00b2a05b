//! OffsetForLeaderEpoch: where a leader epoch ends in this leader's log.
//! Followers ask it after a leader change to find where their copy diverges
//! (and KIP-320 clients to validate their position after one).

use std::{collections::HashMap, rc::Rc};

use kafka_protocol::messages::{
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};

use super::{code_of, epoch_of, topic_name};
use crate::{error::EngineError, shard::Shard};

/// (epoch, end offset) found for one partition.
type Found = (i32, i64);

/// One partition to look up: its slot in the response, topic, index, the
/// requester's current leader epoch and the epoch asked about.
type Item = ((usize, usize), String, i32, i32, i32);

pub(super) async fn handle(shard: &Rc<Shard>, request: OffsetForLeaderEpochRequest) -> ResponseKind {
    let epoch = epoch_of(shard);
    let mut slots: Vec<Vec<Option<Result<Found, EngineError>>>> = request
        .topics
        .iter()
        .map(|t| t.partitions.iter().map(|_| None).collect())
        .collect();
    let mut by_owner: HashMap<usize, Vec<Item>> = HashMap::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        for (pi, partition) in topic.partitions.iter().enumerate() {
            match shard.owner_of(&topic.topic.0, partition.partition) {
                Ok(owner) => by_owner.entry(owner).or_default().push((
                    (ti, pi),
                    topic.topic.0.to_string(),
                    partition.partition,
                    partition.current_leader_epoch,
                    partition.leader_epoch,
                )),
                Err(e) => {
                    if let Some(slot) = slots.get_mut(ti).and_then(|t| t.get_mut(pi)) {
                        *slot = Some(Err(e));
                    }
                }
            }
        }
    }
    let parts = by_owner.into_iter().map(|(owner, items)| {
        let keys: Vec<(usize, usize)> = items.iter().map(|(k, ..)| *k).collect();
        let work = shard.invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            items
                .into_iter()
                .map(|(_, topic, index, current, requested)| lookup(&s, &topic, index, current, requested))
                .collect::<Vec<_>>()
        });
        async move { (keys, work.await) }
    });
    for (keys, answer) in futures_util::future::join_all(parts).await {
        let answers: Vec<Result<Found, EngineError>> = match answer {
            Ok(answers) => answers,
            Err(_) => keys.iter().map(|_| Err(EngineError::ShardUnavailable)).collect(),
        };
        for ((ti, pi), answer) in keys.into_iter().zip(answers) {
            if let Some(slot) = slots.get_mut(ti).and_then(|t| t.get_mut(pi)) {
                *slot = Some(answer);
            }
        }
    }
    let mut response = OffsetForLeaderEpochResponse::default();
    for (topic, answers) in request.topics.iter().zip(slots) {
        let mut out = OffsetForLeaderTopicResult::default();
        out.topic = topic_name(&topic.topic.0);
        for (partition, answer) in topic.partitions.iter().zip(answers) {
            let answer = answer.unwrap_or(Err(EngineError::ShardUnavailable));
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
fn lookup(shard: &Shard, topic: &str, index: i32, current: i32, requested: i32) -> Result<Found, EngineError> {
    let partition = shard.partition(topic, index)?;
    partition.check_leader_epoch(current)?;
    Ok(match partition.log.end_offset_for_epoch(requested) {
        Some((epoch, end)) => (epoch, end.0),
        None => (-1, -1),
    })
}
