//! CreateTopics, DeleteTopics, CreatePartitions: proposals to the metadata
//! group; the answer waits until every shard has applied the change.

use std::{collections::BTreeMap, rc::Rc};

use kafka_protocol::{
    messages::{
        create_partitions_response::CreatePartitionsTopicResult, create_topics_response::CreatableTopicResult,
        delete_topics_response::DeletableTopicResult, CreatePartitionsRequest, CreatePartitionsResponse,
        CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind,
    },
    ResponseError,
};
use shardline_raft::{AclOperation, MetaError, NewTopic};

use super::{str_bytes, topic_name, wait_all_shards};
use crate::{
    acl::{Access, Resource},
    coordinator::is_internal_topic,
    error::{kafka_code, EngineError},
    shard::Shard,
};

/// Checks that `partitions` more partitions of `replication_factor` replicas
/// fit under the brokers' limit (`--max-partitions-per-shard` × the shards of
/// every unfenced broker), counting every replica the image already places.
/// Each node checks against its own flag; the metadata group applies a topic
/// whole or not at all, so a refused one leaves nothing behind.
fn check_capacity(shard: &Shard, partitions: i32, replication_factor: i16) -> Result<(), EngineError> {
    let image = shard.image();
    let hosted: usize = image
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .map(|partition| partition.replicas.len())
        .sum();
    let shards: usize = image
        .brokers
        .values()
        .filter(|broker| !broker.fenced)
        .map(|broker| usize::try_from(broker.shards).unwrap_or(0))
        .sum();
    let capacity = shards.saturating_mul(shard.config.max_partitions_per_shard);
    let wanted = usize::try_from(partitions)
        .unwrap_or(0)
        .saturating_mul(usize::try_from(replication_factor).unwrap_or(0).max(1));
    if hosted.saturating_add(wanted) > capacity {
        return Err(EngineError::PolicyViolation(format!(
            "{wanted} more partition replicas would pass the limit of {capacity} ({} per shard on {shards} shards; \
             {hosted} placed): raise --max-partitions-per-shard or add brokers",
            shard.config.max_partitions_per_shard
        )));
    }
    Ok(())
}

/// Creates each missing topic with the default partition count
/// (auto-create), where the principal may create it.
pub(super) async fn auto_create(shard: &Rc<Shard>, access: &Access, names: &[String]) {
    let image = shard.image();
    let mut created = false;
    let creatable = names
        .iter()
        .filter(|n| !image.topics.contains_key(*n) && access.may_create_topic(&image, n).is_ok());
    for name in creatable {
        let topic = shard.default_topic(name);
        if let Err(e) = check_capacity(shard, topic.partitions, topic.replication_factor) {
            tracing::warn!(topic = %name, error = %e, "auto-create refused");
            continue;
        }
        match shard.meta.create_topic(topic).await {
            Ok(_) => {
                tracing::info!(topic = %name, "auto-created topic");
                created = true;
            }
            Err(MetaError::TopicExists(_)) => created = true,
            Err(e) => tracing::warn!(topic = %name, error = %e, "auto-create failed"),
        }
    }
    if created {
        wait_all_shards(shard, shard.meta.image().epoch).await;
    }
}

pub(super) async fn create_topics(shard: &Rc<Shard>, access: &Access, request: CreateTopicsRequest) -> ResponseKind {
    let mut response = CreateTopicsResponse::default();
    let image = shard.image();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic_name(&name);
        // Replicas given by hand, per partition: the partition count and
        // replication factor are theirs (Kafka asks for -1 in both then).
        let (assignments, assignment_error) = match hand_assignments(
            &name,
            topic
                .assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.as_slice())),
        ) {
            Ok(assignments) => (assignments, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        let by_hand = assignments.len();
        let partitions = if by_hand > 0 {
            i32::try_from(by_hand).unwrap_or(i32::MAX)
        } else if topic.num_partitions == -1 {
            shard.config.default_partitions
        } else {
            topic.num_partitions
        };
        let replication_factor = match assignments.first() {
            Some(first) => i16::try_from(first.len()).unwrap_or(i16::MAX),
            None if topic.replication_factor == -1 => shard.config.default_replication_factor,
            None => topic.replication_factor,
        };
        let configs: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
            .collect();
        let outcome = if let Err(refused) = access.may_create_topic(&image, &name) {
            Err(refused)
        } else if by_hand > 0 && (topic.num_partitions != -1 || topic.replication_factor != -1) {
            Err(EngineError::InvalidRequest(
                "both a partition count or replication factor and replica assignments were given".into(),
            ))
        } else if let Some(e) = assignment_error {
            Err(e)
        } else if let Err(e) = check_capacity(shard, partitions, replication_factor) {
            Err(e)
        } else if request.validate_only {
            validate_only(shard, &name, partitions, replication_factor)
        } else {
            shard
                .meta
                .create_topic(NewTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor,
                    configs,
                    assignments,
                })
                .await
                .map(|meta| {
                    tracing::info!(topic = %name, partitions, replication_factor, "topic created");
                    result.topic_id = uuid::Uuid::from_bytes(meta.id);
                })
                .map_err(EngineError::from)
        };
        match &outcome {
            Ok(()) => {
                result.num_partitions = partitions;
                result.replication_factor = replication_factor;
            }
            Err(e) => {
                result.error_code = kafka_code(e);
                result.error_message = Some(str_bytes(&e.to_string()));
                result.num_partitions = -1;
                result.replication_factor = -1;
            }
        }
        response.topics.push(result);
    }
    wait_all_shards(shard, shard.meta.image().epoch).await;
    ResponseKind::CreateTopics(response)
}

fn validate_only(shard: &Shard, name: &str, partitions: i32, replication_factor: i16) -> Result<(), EngineError> {
    if shard.image().topics.contains_key(name) {
        return Err(EngineError::Meta(MetaError::TopicExists(name.to_string())));
    }
    if partitions < 1 {
        return Err(EngineError::InvalidRequest(format!(
            "invalid partition count {partitions}"
        )));
    }
    if replication_factor < 1 || usize::try_from(replication_factor).unwrap_or(0) > shard.image().brokers.len() {
        return Err(EngineError::InvalidRequest(format!(
            "invalid replication factor {replication_factor}"
        )));
    }
    Ok(())
}

pub(super) async fn delete_topics(shard: &Rc<Shard>, access: &Access, request: DeleteTopicsRequest) -> ResponseKind {
    let mut names: Vec<Option<String>> = request.topic_names.iter().map(|n| Some(n.0.to_string())).collect();
    let image = shard.image();
    for state in &request.topics {
        let name = match &state.name {
            Some(name) => Some(name.0.to_string()),
            None => image
                .topics
                .values()
                .find(|t| t.id == *state.topic_id.as_bytes())
                .map(|t| t.name.clone()),
        };
        names.push(name);
    }
    let mut response = DeleteTopicsResponse::default();
    for name in names {
        let mut result = DeletableTopicResult::default();
        match name {
            Some(name) if is_internal_topic(&name) => {
                result.name = Some(topic_name(&name));
                let e = EngineError::InternalTopic(name);
                result.error_code = kafka_code(&e);
                result.error_message = Some(str_bytes(&e.to_string()));
            }
            Some(name) => {
                result.name = Some(topic_name(&name));
                let deleted = match access.check(&image, AclOperation::Delete, Resource::Topic(&name)) {
                    Ok(()) => shard.meta.delete_topic(&name).await.map_err(EngineError::from),
                    Err(refused) => Err(refused),
                };
                match deleted {
                    Ok(meta) => {
                        tracing::info!(topic = %name, "topic deleted");
                        result.topic_id = uuid::Uuid::from_bytes(meta.id);
                    }
                    Err(e) => {
                        result.error_code = kafka_code(&e);
                        result.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
            }
            None => result.error_code = ResponseError::UnknownTopicId.code(),
        }
        response.responses.push(result);
    }
    wait_all_shards(shard, shard.meta.image().epoch).await;
    ResponseKind::DeleteTopics(response)
}

/// Partitions CreatePartitions to `total` would add to `name` (0 when it
/// would not grow; the metadata group then refuses it).
fn added_partitions(shard: &Shard, name: &str, total: i32) -> Result<i32, EngineError> {
    let image = shard.image();
    let topic = image.topics.get(name).ok_or(EngineError::UnknownTopicOrPartition)?;
    let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    Ok(total.saturating_sub(current).max(0))
}

/// Replicas per partition of `name` (its first partition's).
fn replication_of(shard: &Shard, name: &str) -> i16 {
    let image = shard.image();
    image
        .topics
        .get(name)
        .and_then(|topic| topic.partitions.first())
        .map_or(1, |partition| {
            i16::try_from(partition.replicas.len()).unwrap_or(i16::MAX)
        })
}

/// Replica lists given by hand, as (partition index, Kafka broker ids):
/// one per partition 0..n, each broker id read as its node (the shard there
/// is chosen by load). Empty when none are given. The metadata group checks
/// the brokers themselves.
fn hand_assignments<'a>(
    topic: &str,
    lists: impl Iterator<Item = (i32, &'a [kafka_protocol::messages::BrokerId])>,
) -> Result<Vec<Vec<i32>>, EngineError> {
    let mut by_index: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (index, brokers) in lists {
        let nodes = brokers.iter().map(|b| super::brokers::node_of_broker(b.0)).collect();
        if by_index.insert(index, nodes).is_some() {
            return Err(invalid_assignment(
                topic,
                format!("partition {index} is assigned twice"),
            ));
        }
    }
    if !by_index
        .keys()
        .copied()
        .eq(0..i32::try_from(by_index.len()).unwrap_or(i32::MAX))
    {
        return Err(invalid_assignment(
            topic,
            "assignments must name partitions 0, 1, ... each once".to_string(),
        ));
    }
    Ok(by_index.into_values().collect())
}

/// CreatePartitions' replica lists for the partitions it adds (one per new
/// partition), as nodes; empty when none are given.
fn hand_partition_assignments(
    shard: &Shard,
    name: &str,
    total: i32,
    assignments: Option<&[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment]>,
) -> Result<Vec<Vec<i32>>, EngineError> {
    let Some(assignments) = assignments else {
        return Ok(Vec::new());
    };
    let current = shard.image().topics.get(name).map_or(0, |t| t.partitions.len());
    let added = usize::try_from(total).unwrap_or(0).saturating_sub(current);
    if assignments.len() != added {
        let reason = format!("{} replica lists for {added} new partitions", assignments.len());
        return Err(invalid_assignment(name, reason));
    }
    let first = i32::try_from(current).unwrap_or(i32::MAX);
    let lists = (0..).zip(assignments.iter().map(|a| a.broker_ids.as_slice()));
    hand_assignments(name, lists).inspect(|lists| {
        assert_eq!(lists.len(), added, "one list per new partition from {first}");
    })
}

fn invalid_assignment(topic: &str, reason: String) -> EngineError {
    EngineError::Meta(MetaError::InvalidReassignment {
        topic: topic.to_owned(),
        partition: -1,
        reason,
    })
}

pub(super) async fn create_partitions(
    shard: &Rc<Shard>,
    access: &Access,
    request: CreatePartitionsRequest,
) -> ResponseKind {
    let mut response = CreatePartitionsResponse::default();
    let image = shard.image();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic_name(&name);
        let (assignments, assignment_error) =
            match hand_partition_assignments(shard, &name, topic.count, topic.assignments.as_deref()) {
                Ok(assignments) => (assignments, None),
                Err(error) => (Vec::new(), Some(error)),
            };
        let outcome: Result<(), EngineError> =
            if let Err(refused) = access.check(&image, AclOperation::Alter, Resource::Topic(&name)) {
                Err(refused)
            } else if is_internal_topic(&name) {
                // A group's (or transactional id's) partition is its hash
                // modulo the count: the count is fixed.
                Err(EngineError::InternalTopic(name.clone()))
            } else if let Some(e) = assignment_error {
                Err(e)
            } else if let Err(e) = added_partitions(shard, &name, topic.count)
                .and_then(|added| check_capacity(shard, added, replication_of(shard, &name)))
            {
                Err(e)
            } else if request.validate_only {
                match shard.image().topics.get(&name) {
                    None => Err(EngineError::UnknownTopicOrPartition),
                    Some(t) if usize::try_from(topic.count).unwrap_or(0) <= t.partitions.len() => {
                        Err(EngineError::Meta(MetaError::InvalidPartitions {
                            requested: topic.count,
                            current: t.partitions.len() as i32,
                        }))
                    }
                    Some(_) => Ok(()),
                }
            } else {
                shard
                    .meta
                    .create_partitions(&name, topic.count, assignments)
                    .await
                    .map(|_| ())
                    .map_err(EngineError::from)
            };
        if let Err(e) = &outcome {
            result.error_code = kafka_code(e);
            result.error_message = Some(str_bytes(&e.to_string()));
        }
        response.results.push(result);
    }
    wait_all_shards(shard, shard.meta.image().epoch).await;
    ResponseKind::CreatePartitions(response)
}
