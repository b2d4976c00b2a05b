//! Produce: split the request by owner shard, append on each owner, join the
//! answers in request order. acks=0 gets no response at all.

use std::{rc::Rc, time::Duration};

use shardline_net::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse, RecordError, ResponseBody,
};

use super::{admin::auto_create, epoch_of, split_by_owner, Slot};
use crate::{
    acl::{Access, Resource},
    coordinator::is_internal_topic,
    error::EngineError,
    partition::Produced,
    shard::Shard,
};
use shardline_raft::AclOperation;

/// Longest an acks=all produce waits for the in-sync replicas, whatever the
/// client's timeout says.
const PRODUCE_TIMEOUT_MAX_MS: u64 = 60_000;

pub(super) async fn handle(shard: &Rc<Shard>, access: &Access, request: ProduceRequest) -> Option<ResponseBody> {
    let acks = request.acks;
    // acks=all waits for the in-sync replicas at most this long (the client's own bound).
    let timeout = Duration::from_millis(
        u64::try_from(request.timeout_ms)
            .unwrap_or(0)
            .clamp(1, PRODUCE_TIMEOUT_MAX_MS),
    );
    // Write on each topic, decided once per topic (Kafka does the same;
    // an idempotent producer was checked at InitProducerId), and Write on
    // the transactional id of a transactional produce, else every
    // partition is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
    let transactional_id = request.transactional_id.as_deref();
    let writable = |image: &shardline_raft::MetadataImage, topic: &str| {
        if let Some(id) = transactional_id {
            access.check(image, AclOperation::Write, Resource::TransactionalId(id))?;
        }
        access.check(image, AclOperation::Write, Resource::Topic(topic))
    };
    if shard.config.auto_create_topics {
        let image = shard.image();
        let names: Vec<String> = request
            .topics
            .iter()
            .filter(|t| writable(&image, &t.name).is_ok())
            .map(|t| t.name.clone())
            .collect();
        drop(image);
        auto_create(shard, access, &names).await;
    }
    let image = shard.image();
    let epoch = epoch_of(shard);
    let mut results: Vec<Vec<Option<Result<Produced, EngineError>>>> = request
        .topics
        .iter()
        .map(|t| t.partitions.iter().map(|_| None).collect())
        .collect();
    let mut routed = Vec::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        for (pi, partition) in topic.partitions.iter().enumerate() {
            // A name no topic can have is INVALID_TOPIC_EXCEPTION at once (not
            // retriable), not an unknown topic a client would retry until its
            // delivery timeout.
            let records = shardline_raft::validate_topic_name(&topic.name)
                .map_err(EngineError::Meta)
                .and_then(|()| writable(&image, &topic.name))
                .and_then(|()| match (&partition.records, is_internal_topic(&topic.name)) {
                    (_, true) => Err(EngineError::InternalTopic(topic.name.clone())),
                    (None, false) => Err(EngineError::InvalidRecord("null records".into())),
                    (Some(records), false) => Ok(records.clone()),
                });
            match records {
                Ok(records) => routed.push(((ti, pi), (topic.name.clone(), partition.index, records))),
                Err(error) => {
                    if let Some(slot) = results.get_mut(ti).and_then(|t| t.get_mut(pi)) {
                        *slot = Some(Err(error));
                    }
                }
            }
        }
    }
    let split = split_by_owner(shard, routed);
    for ((ti, pi), error) in split.unowned {
        if let Some(slot) = results.get_mut(ti).and_then(|t| t.get_mut(pi)) {
            *slot = Some(Err(error));
        }
    }
    let parts = split.owners.into_iter().map(|(owner, items)| {
        let slots: Vec<Slot> = items.iter().map(|(slot, _)| *slot).collect();
        let work = shard.invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            let appends = items.into_iter().map(|(_, (topic, index, records))| {
                let s = Rc::clone(&s);
                async move {
                    let partition = s.partition(&topic, index)?;
                    let batch_bytes = records.len() as u64;
                    let batch_records = shardline_log::BatchHeader::parse(&records)
                        .map_or(0, |header| u64::try_from(header.record_count).unwrap_or(0));
                    // Only the mapped topic's records may set MQTT retained
                    // messages: its name is compared first, so no other
                    // topic's records are walked.
                    let retains = (topic == s.config.mqtt_kafka_topic).then(|| records.clone());
                    let produced = partition.produce(records, acks, timeout).await?;
                    s.probe.count_produced(batch_records, batch_bytes);
                    if let Some(records) = retains {
                        crate::mqtt::retained::store_produced(&s, &records).await?;
                    }
                    Ok(produced)
                }
            });
            futures_util::future::join_all(appends).await
        });
        async move { (slots, work.await) }
    });
    for (slots, answer) in futures_util::future::join_all(parts).await {
        match answer {
            Ok(answers) => {
                for ((ti, pi), answer) in slots.into_iter().zip(answers) {
                    if let Some(slot) = results.get_mut(ti).and_then(|t| t.get_mut(pi)) {
                        *slot = Some(answer);
                    }
                }
            }
            Err(e) => {
                for (ti, pi) in slots {
                    if let Some(slot) = results.get_mut(ti).and_then(|t| t.get_mut(pi)) {
                        let _ = &e;
                        *slot = Some(Err(EngineError::ShardUnavailable));
                    }
                }
            }
        }
    }
    for topic in &results {
        for result in topic.iter().flatten() {
            if let Err(e) = result {
                if matches!(e, EngineError::Log(l) if !matches!(l, shardline_log::LogError::InvalidBatch(_))) {
                    tracing::warn!(error = %e, "produce failed");
                }
            }
        }
    }
    if acks == 0 {
        return None;
    }
    let topics = request
        .topics
        .iter()
        .zip(results)
        .map(|(topic, answers)| ProduceTopicResponse {
            name: topic.name.clone(),
            partitions: topic
                .partitions
                .iter()
                .zip(answers)
                .map(|(partition, answer)| {
                    let answer = answer.unwrap_or(Err(EngineError::ShardUnavailable));
                    let (base_offset, log_start_offset, log_append_time_ms) = match &answer {
                        Ok(p) => (p.base_offset.0, p.log_start.0, p.log_append_time_ms.unwrap_or(-1)),
                        Err(_) => (-1, -1, -1),
                    };
                    // v8+: why, and which records (KIP-467), as Kafka says it.
                    let (error_message, record_errors) = match &answer {
                        Ok(_) => (None, Vec::new()),
                        Err(error) => (Some(error.to_string()), record_errors(error)),
                    };
                    ProducePartitionResponse {
                        index: partition.index,
                        error_code: super::code_of(&answer),
                        base_offset,
                        log_append_time_ms,
                        log_start_offset,
                        record_errors,
                        error_message,
                    }
                })
                .collect(),
        })
        .collect();
    Some(ResponseBody::Produce(ProduceResponse {
        topics,
        throttle_time_ms: 0,
    }))
}

/// The records an error names (KIP-467 `record_errors`).
fn record_errors(error: &EngineError) -> Vec<RecordError> {
    match error {
        EngineError::InvalidTimestamp(records) | EngineError::RecordsRefused(records) => records
            .iter()
            .map(|(index, why)| RecordError {
                batch_index: *index,
                message: Some(why.clone()),
            })
            .collect(),
        _ => Vec::new(),
    }
}
