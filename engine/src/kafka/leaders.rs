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
//! - AlterPartitionReassignments: the metadata group's `ReassignPartition`
//!   command. The target's brokers not yet holding the partition join its
//!   replicas as followers and copy the log from the leader (outside the
//!   ISR, so the high watermark does not wait for them); the leader adds
//!   them to the ISR once caught up, and the metadata group completes the
//!   move when it applies the ISR change that puts all of the target in
//!   sync: the replicas become the target, leadership moves if the leader
//!   left, and the brokers left out delete their copy. Broker ids name
//!   nodes (a shard's id, node + 1000 × shard, names its node: the metadata
//!   group picks the shard). A null target cancels the move in progress.
//!   One move per partition at a time.
//! - ListPartitionReassignments: the moves in progress, with the brokers
//!   being added and removed.

use std::rc::Rc;

use kafka_protocol::messages::{
    alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse},
    elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment},
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind,
};
use shardline_raft::{AclOperation, MetadataImage, PartitionMeta};

use super::{
    brokers::{node_of_broker, replica_broker_id},
    str_bytes, topic_name, wait_all_shards,
};
use crate::{
    acl::{Access, Resource},
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

/// Alter on the cluster, as in Kafka; refused, the whole request is.
pub(super) async fn elect_leaders(shard: &Rc<Shard>, access: &Access, request: ElectLeadersRequest) -> ResponseKind {
    let image = shard.image();
    if let Err(refused) = access.check(&image, AclOperation::Alter, Resource::Cluster) {
        let mut response = ElectLeadersResponse::default();
        response.error_code = kafka_code(&refused);
        return ResponseKind::ElectLeaders(response);
    }
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

/// Describe on the cluster, as in Kafka.
pub(super) fn list_partition_reassignments(
    shard: &Rc<Shard>,
    access: &Access,
    request: ListPartitionReassignmentsRequest,
) -> ResponseKind {
    let image = shard.image();
    if let Err(refused) = access.check(&image, AclOperation::Describe, Resource::Cluster) {
        let mut response = ListPartitionReassignmentsResponse::default();
        response.error_code = kafka_code(&refused);
        response.error_message = Some(str_bytes(&refused.to_string()));
        return ResponseKind::ListPartitionReassignments(response);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let asked = |topic: &str, index: i32| {
        wanted.as_ref().is_none_or(|w| {
            w.iter()
                .any(|(name, partitions)| name == topic && partitions.contains(&index))
        })
    };
    let ids = |partition: &PartitionMeta, nodes: &[i32]| -> Vec<BrokerId> {
        nodes
            .iter()
            .map(|node| BrokerId(replica_broker_id(&image, partition, *node)))
            .collect()
    };
    let mut response = ListPartitionReassignmentsResponse::default();
    for topic in image.topics.values() {
        let moving: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .filter(|p| asked(&topic.name, p.index))
            .filter_map(|p| {
                let reassignment = p.reassignment.as_ref()?;
                let mut ongoing = OngoingPartitionReassignment::default();
                ongoing.partition_index = p.index;
                ongoing.replicas = ids(p, &p.replicas);
                ongoing.adding_replicas = ids(p, &reassignment.adding());
                ongoing.removing_replicas = ids(p, &reassignment.removing());
                Some(ongoing)
            })
            .collect();
        if !moving.is_empty() {
            let mut ongoing = OngoingTopicReassignment::default();
            ongoing.name = topic_name(&topic.name);
            ongoing.partitions = moving;
            response.topics.push(ongoing);
        }
    }
    ResponseKind::ListPartitionReassignments(response)
}

/// Proposes one partition's move (`Some` target, Kafka broker ids) or its
/// cancellation (`None`).
async fn reassign(
    shard: &Shard,
    topic: &str,
    index: i32,
    target: Option<&[BrokerId]>,
    allow_replication_factor_change: bool,
) -> Result<(), EngineError> {
    let nodes: Option<Vec<i32>> = target.map(|ids| ids.iter().map(|id| node_of_broker(id.0)).collect());
    if let (Some(nodes), false) = (&nodes, allow_replication_factor_change) {
        let image = shard.image();
        let partition = partition_of(&image, topic, index)?;
        let current = partition.reassignment.as_ref().map_or(&partition.replicas, |r| &r.from);
        if nodes.len() != current.len() {
            return Err(EngineError::Admin(AdminError::InvalidReplicaAssignment(format!(
                "{} replicas asked, {} now, and the request does not allow changing the replication factor",
                nodes.len(),
                current.len()
            ))));
        }
    }
    shard.meta.reassign_partition(topic, index, nodes.clone()).await?;
    match nodes {
        Some(nodes) => tracing::info!(%topic, partition = index, target = ?nodes, "partition reassignment started"),
        None => tracing::info!(%topic, partition = index, "partition reassignment cancelled"),
    }
    Ok(())
}

/// Alter on the cluster, as in Kafka.
pub(super) async fn alter_partition_reassignments(
    shard: &Rc<Shard>,
    access: &Access,
    request: AlterPartitionReassignmentsRequest,
) -> ResponseKind {
    // v0 has no flag: changing the replication factor was always allowed.
    let allow = request.allow_replication_factor_change;
    let mut response = AlterPartitionReassignmentsResponse::default();
    response.allow_replication_factor_change = allow;
    if let Err(refused) = access.check(&shard.image(), AclOperation::Alter, Resource::Cluster) {
        response.error_code = kafka_code(&refused);
        response.error_message = Some(str_bytes(&refused.to_string()));
        return ResponseKind::AlterPartitionReassignments(response);
    }
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let mut result = ReassignableTopicResponse::default();
        result.name = topic.name.clone();
        for p in &topic.partitions {
            let outcome = reassign(shard, &name, p.partition_index, p.replicas.as_deref(), allow).await;
            let mut answer = ReassignablePartitionResponse::default();
            answer.partition_index = p.partition_index;
            if let Err(e) = outcome {
                answer.error_code = kafka_code(&e);
                answer.error_message = Some(str_bytes(&e.to_string()));
            }
            result.partitions.push(answer);
        }
        response.responses.push(result);
    }
    wait_all_shards(shard, shard.meta.image().epoch).await;
    ResponseKind::AlterPartitionReassignments(response)
}
