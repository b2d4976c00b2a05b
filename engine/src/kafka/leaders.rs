//! ElectLeaders, ListPartitionReassignments, AlterPartitionReassignments:
//! where partitions are led and placed, through the metadata group.
//!
//! - ElectLeaders (preferred): the metadata group's `ElectPreferredLeaders`
//!   command, the one the leader's liveness task proposes after failovers,
//!   so a partition whose preferred replica is back usually leads there
//!   already (ELECTION_NOT_NEEDED, as Kafka answers). A preferred replica
//!   that is fenced or out of sync is PREFERRED_LEADER_NOT_AVAILABLE.
//!   Unclean election (type 1) is refused: an out-of-sync leader loses
//!   acknowledged data, and the engine never elects one.
//! - Reassignments: the engine cannot yet add a replica on another broker
//!   and catch it up before dropping an old one, so no reassignment ever
//!   runs: ListPartitionReassignments is always empty, and
//!   AlterPartitionReassignments accepts only a target equal to the current
//!   replicas (nothing to do); any other target is INVALID_REPLICA_ASSIGNMENT
//!   saying so, and a cancellation is NO_REASSIGNMENT_IN_PROGRESS.

use std::rc::Rc;

use kafka_protocol::messages::{
    alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse},
    elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind,
};
use shardline_raft::{MetadataImage, PartitionMeta};

use super::{brokers::replica_broker_id, str_bytes, topic_name, wait_all_shards};
use crate::{
    error::{kafka_code, AdminError, EngineError},
    shard::Shard,
};

/// ElectLeaders `election_type` values.
const ELECTION_PREFERRED: i8 = 0;

fn partition_of<'a>(image: &'a MetadataImage, topic: &str, index: i32) -> Result<&'a PartitionMeta, EngineError> {
    image
        .topics
        .get(topic)
        .and_then(|t| usize::try_from(index).ok().and_then(|i| t.partitions.get(i)))
        .ok_or(EngineError::UnknownTopicOrPartition)
}

/// Why the preferred replica cannot take over, or `Ok` if it can.
fn election_needed(image: &MetadataImage, partition: &PartitionMeta) -> Result<(), EngineError> {
    let preferred = partition.replicas.first().copied();
    if preferred == Some(partition.leader) {
        return Err(EngineError::Admin(AdminError::ElectionNotNeeded));
    }
    let available = preferred
        .is_some_and(|p| partition.isr.contains(&p) && image.brokers.get(&p).is_some_and(|broker| !broker.fenced));
    if !available {
        return Err(EngineError::Admin(AdminError::PreferredLeaderNotAvailable));
    }
    Ok(())
}

fn partition_result(index: i32, outcome: &Result<(), EngineError>) -> PartitionResult {
    let mut result = PartitionResult::default();
    result.partition_id = index;
    if let Err(e) = outcome {
        result.error_code = kafka_code(e);
        result.error_message = Some(str_bytes(&e.to_string()));
    }
    result
}

pub(super) async fn elect_leaders(shard: &Rc<Shard>, request: ElectLeadersRequest) -> ResponseKind {
    let image = shard.image();
    // Named partitions, or (null) every partition that needs an election.
    let asked: Vec<(String, i32)> = match &request.topic_partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p)))
            .collect(),
        None => image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.clone(), p, t)))
            .filter(|(_, p, _)| election_needed(&image, p).is_ok())
            .map(|(name, p, _)| (name, p.index))
            .collect(),
    };
    let unclean = request.election_type != ELECTION_PREFERRED;
    let checked: Vec<Result<(), EngineError>> = asked
        .iter()
        .map(|(topic, index)| {
            if unclean {
                return Err(EngineError::InvalidRequest(
                    "unclean leader election is not supported: only in-sync replicas lead".into(),
                ));
            }
            partition_of(&image, topic, *index).and_then(|p| election_needed(&image, p))
        })
        .collect();
    let mut outcomes = checked;
    // A failed proposal (no metadata leader, shutting down) is the
    // response's top-level error; each partition then reads as not moved.
    let mut top_level_code = 0;
    if outcomes.iter().any(Result::is_ok) {
        if let Err(e) = shard.meta.elect_preferred_leaders().await {
            let e = EngineError::Meta(e);
            tracing::warn!(error = %e, "preferred leader election failed");
            top_level_code = kafka_code(&e);
        }
        wait_all_shards(shard, shard.meta.image().epoch).await;
        let after = shard.meta.image();
        for ((topic, index), outcome) in asked.iter().zip(outcomes.iter_mut()) {
            if outcome.is_err() {
                continue;
            }
            *outcome = partition_of(&after, topic, *index).and_then(|p| {
                if p.replicas.first() == Some(&p.leader) {
                    tracing::info!(%topic, partition = index, leader = p.leader, "preferred leader elected");
                    Ok(())
                } else {
                    Err(EngineError::Admin(AdminError::PreferredLeaderNotAvailable))
                }
            });
        }
    }
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, index), outcome) in asked.iter().zip(&outcomes) {
        let position = results.iter().position(|r| r.topic.0.as_str() == topic);
        let entry = match position {
            Some(position) => results.get_mut(position),
            None => {
                let mut result = ReplicaElectionResult::default();
                result.topic = topic_name(topic);
                results.push(result);
                results.last_mut()
            }
        };
        assert!(entry.is_some(), "a topic's result was just found or added");
        if let Some(entry) = entry {
            entry.partition_result.push(partition_result(*index, outcome));
        }
    }
    let mut response = ElectLeadersResponse::default();
    response.error_code = top_level_code;
    response.replica_election_results = results;
    ResponseKind::ElectLeaders(response)
}

pub(super) fn list_partition_reassignments(_request: ListPartitionReassignmentsRequest) -> ResponseKind {
    // No reassignment ever runs (module doc): the list is empty.
    ResponseKind::ListPartitionReassignments(ListPartitionReassignmentsResponse::default())
}

/// What AlterPartitionReassignments can do with one partition's target.
fn reassign(image: &MetadataImage, topic: &str, index: i32, target: Option<&[BrokerId]>) -> Result<(), EngineError> {
    let partition = partition_of(image, topic, index)?;
    let Some(target) = target else {
        return Err(EngineError::Admin(AdminError::NoReassignmentInProgress));
    };
    let current: Vec<i32> = partition
        .replicas
        .iter()
        .map(|node| replica_broker_id(image, partition, *node))
        .collect();
    let target: Vec<i32> = target.iter().map(|b| b.0).collect();
    if target == current {
        return Ok(());
    }
    Err(EngineError::Admin(AdminError::InvalidReplicaAssignment(format!(
        "{topic}-{index}: replicas are {current:?}, asked {target:?}: this broker cannot yet move a replica \
         (add one on another broker, catch it up, drop the old one); only the current assignment is accepted"
    ))))
}

pub(super) fn alter_partition_reassignments(
    shard: &Rc<Shard>,
    request: AlterPartitionReassignmentsRequest,
) -> ResponseKind {
    let image = shard.image();
    let mut response = AlterPartitionReassignmentsResponse::default();
    response.allow_replication_factor_change = request.allow_replication_factor_change;
    response.responses = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let mut result = ReassignableTopicResponse::default();
            result.name = topic.name.clone();
            result.partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let outcome = reassign(&image, &name, p.partition_index, p.replicas.as_deref());
                    let mut answer = ReassignablePartitionResponse::default();
                    answer.partition_index = p.partition_index;
                    if let Err(e) = outcome {
                        answer.error_code = kafka_code(&e);
                        answer.error_message = Some(str_bytes(&e.to_string()));
                    }
                    answer
                })
                .collect();
            result
        })
        .collect();
    ResponseKind::AlterPartitionReassignments(response)
}
