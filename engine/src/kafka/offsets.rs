//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3) or the first
//! batch at or after a timestamp, answered by each partition's owner shard.

use std::{collections::HashMap, rc::Rc};

use kafka_protocol::messages::{
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    ListOffsetsRequest, ListOffsetsResponse, ResponseKind,
};

use super::{code_of, epoch_of, topic_name};
use crate::{error::EngineError, shard::Shard};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// (offset, timestamp, leader epoch) of one answer.
type Found = (i64, i64, i32);

/// One partition to look up: its slot in the request, topic, partition, timestamp.
type Lookup = ((usize, usize), String, i32, i64);

pub(super) async fn handle(shard: &Rc<Shard>, request: ListOffsetsRequest, version: i16) -> ResponseKind {
    let epoch = epoch_of(shard);
    let mut slots: Vec<Vec<Option<Result<Found, EngineError>>>> = request
        .topics
        .iter()
        .map(|t| t.partitions.iter().map(|_| None).collect())
        .collect();
    let mut by_owner: HashMap<usize, Vec<Lookup>> = HashMap::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        for (pi, partition) in topic.partitions.iter().enumerate() {
            let name = topic.name.0.to_string();
            match shard.owner_of(&name, partition.partition_index) {
                Ok(owner) => by_owner.entry(owner).or_default().push((
                    (ti, pi),
                    name,
                    partition.partition_index,
                    partition.timestamp,
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
                .map(|(_, topic, index, timestamp)| lookup(&s, &topic, index, timestamp))
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
    let mut response = ListOffsetsResponse::default();
    for (topic, answers) in request.topics.iter().zip(slots) {
        let mut out = ListOffsetsTopicResponse::default();
        out.name = topic_name(&topic.name.0);
        for (partition, answer) in topic.partitions.iter().zip(answers) {
            let answer = answer.unwrap_or(Err(EngineError::ShardUnavailable));
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

fn lookup(shard: &Shard, topic: &str, index: i32, timestamp: i64) -> Result<Found, EngineError> {
    let partition = shard.partition(topic, index)?;
    let log = &partition.log;
    let leader_epoch = partition.role().1;
    match timestamp {
        // Consumers see what every in-sync replica has: the high watermark.
        LATEST => Ok((partition.high_watermark().0, -1, leader_epoch)),
        EARLIEST => Ok((log.log_start().0, -1, leader_epoch)),
        MAX_TIMESTAMP => {
            let mut best: Option<(i64, i64)> = None;
            log.for_each_batch_header(|h| {
                if best.is_none_or(|(_, ts)| h.max_timestamp_ms > ts) {
                    best = Some((h.base_offset.0, h.max_timestamp_ms));
                }
            })?;
            Ok(best.map_or((-1, -1, leader_epoch), |(offset, ts)| (offset, ts, leader_epoch)))
        }
        t if t < 0 => Err(EngineError::InvalidRequest(format!(
            "unknown ListOffsets timestamp {t}"
        ))),
        t => Ok(match log.offset_for_timestamp(t)? {
            Some(found) => (found.offset.0, found.timestamp_ms, leader_epoch),
            None => (-1, -1, leader_epoch),
        }),
    }
}
