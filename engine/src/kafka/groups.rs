//! The consumer-group APIs: FindCoordinator (of groups and of
//! transactional ids), JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups, OffsetDelete.
//!
//! Each request names a group; the group's coordinator is the shard owning
//! its `__consumer_offsets` partition (`coordinator::partition_for`). The
//! request is decoded here, shipped to that shard with `Shard::invoke_on`,
//! served by `coordinator` there, and the answer is encoded here at the
//! request's version (fields a version lacks stay at their defaults:
//! kafka-protocol refuses to encode them otherwise).

use std::{future::Future, rc::Rc};

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        delete_groups_response::DeletableGroupResult,
        describe_groups_response::{DescribedGroup, DescribedGroupMember},
        find_coordinator_response::Coordinator as CoordinatorEntry,
        join_group_response::JoinGroupResponseMember,
        leave_group_response::MemberResponse,
        list_groups_response::ListedGroup,
        offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
        offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic},
        offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic},
        BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
        FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
        JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
        ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
        OffsetFetchRequest, OffsetFetchResponse, ResponseKind, SyncGroupRequest, SyncGroupResponse,
    },
    protocol::StrBytes,
};
use shardline_raft::{AclOperation, MetadataImage, PartitionMeta};

use super::{
    brokers::{kafka_broker, KafkaBroker},
    epoch_of, str_bytes, topic_name, topics_allowed,
};
use crate::{
    acl::{Access, Resource},
    coordinator::{self, record::CommittedOffset, transactions::TRANSACTIONS_TOPIC, Commit, Committer, OFFSETS_TOPIC},
    error::{kafka_code, EngineError, GroupError, TxnError},
    shard::{Shard, ShardProbe},
};

fn group_code(error: GroupError) -> i16 {
    kafka_code(&EngineError::Group(error))
}

/// Whether `access` may do `operation` on `group` (the error code to
/// answer with, if not).
fn group_allowed(shard: &Shard, access: &Access, operation: AclOperation, group: &str) -> Result<(), i16> {
    access
        .check(&shard.image(), operation, Resource::Group(group))
        .map_err(|refused| kafka_code(&refused))
}

/// `key`'s partition of the internal topic `topic` (`__consumer_offsets`
/// for a group, `__transaction_state` for a transactional id) in `image`.
pub(super) fn internal_partition_of<'a>(image: &'a MetadataImage, topic: &str, key: &str) -> Option<&'a PartitionMeta> {
    let topic = image.topics.get(topic)?;
    let index = coordinator::partition_for(key, topic.partitions.len());
    usize::try_from(index).ok().and_then(|i| topic.partitions.get(i))
}

/// How a coordinator request is refused before it reaches a coordinator:
/// the internal topic or its partition is missing, or this broker does not
/// lead it.
pub(super) struct Unrouted<E> {
    pub(super) unavailable: E,
    pub(super) not_coordinator: E,
}

/// Runs `work(coordinator shard, partition)` on the shard leading `key`'s
/// partition of the internal topic `topic` (a group's coordinator, or a
/// transactional id's).
pub(super) async fn on_internal_leader<R, E, F, Fut>(
    shard: &Rc<Shard>,
    topic: &str,
    key: &str,
    unrouted: Unrouted<E>,
    work: F,
) -> Result<R, E>
where
    R: Send + 'static,
    E: Send + 'static,
    F: FnOnce(Rc<Shard>, i32) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, E>> + 'static,
{
    let index = match internal_partition_of(&shard.image(), topic, key) {
        Some(partition) => partition.index,
        None => return Err(unrouted.unavailable),
    };
    let Ok(owner) = shard.owner_of(topic, index) else {
        return Err(unrouted.not_coordinator);
    };
    if owner != shard.id {
        ShardProbe::count(&shard.probe.forwarded_group_requests);
    }
    let epoch = epoch_of(shard);
    match shard
        .invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            work(s, index).await
        })
        .await
    {
        Ok(answer) => answer,
        Err(_) => Err(unrouted.not_coordinator),
    }
}

/// Runs `work(coordinator shard, partition)` on `group`'s coordinator shard.
pub(super) async fn on_coordinator<R, F, Fut>(shard: &Rc<Shard>, group: &str, work: F) -> Result<R, GroupError>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>, i32) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, GroupError>> + 'static,
{
    let unrouted = Unrouted {
        unavailable: GroupError::CoordinatorNotAvailable,
        not_coordinator: GroupError::NotCoordinator,
    };
    on_internal_leader(shard, OFFSETS_TOPIC, group, unrouted, work).await
}

/// The broker coordinating `key`: the leader of its partition of the
/// internal topic `topic` — the shard that holds it, when shards have ports
/// of their own. `None`: no coordinator is available.
fn coordinator_of(shard: &Shard, topic: &str, key: &str, listener: &str) -> Option<KafkaBroker> {
    let image = shard.image();
    let partition = internal_partition_of(&image, topic, key)?;
    if image.brokers.get(&partition.leader).is_none_or(|b| b.fenced) {
        return None;
    }
    // Out of touch with the metadata quorum, this broker leads nothing (the
    // others have fenced it): it does not name itself coordinator from its
    // stale image, as its Metadata does not name it leader, so the client
    // asks again, elsewhere.
    if shard.out_of_quorum() && partition.leader == shard.node_id() {
        return None;
    }
    kafka_broker(&image, partition.leader, partition.shard, listener)
}

/// FindCoordinator key type of a consumer group.
const GROUP_KEY: i8 = 0;
/// FindCoordinator key type of a transactional id.
const TRANSACTION_KEY: i8 = 1;

pub(super) fn find_coordinator(
    shard: &Rc<Shard>,
    access: &Access,
    request: FindCoordinatorRequest,
    version: i16,
    listener: &str,
) -> ResponseKind {
    let answer = |key: &str| -> Result<KafkaBroker, EngineError> {
        match request.key_type {
            GROUP_KEY => {
                access.check(&shard.image(), AclOperation::Describe, Resource::Group(key))?;
                coordinator_of(shard, OFFSETS_TOPIC, key, listener)
                    .ok_or(EngineError::Group(GroupError::CoordinatorNotAvailable))
            }
            TRANSACTION_KEY => {
                access.check(&shard.image(), AclOperation::Describe, Resource::TransactionalId(key))?;
                coordinator_of(shard, TRANSACTIONS_TOPIC, key, listener)
                    .ok_or(EngineError::Txn(TxnError::CoordinatorNotAvailable))
            }
            other => Err(EngineError::InvalidRequest(format!(
                "coordinator key type {other}: only groups (0) and transactional ids (1) have coordinators"
            ))),
        }
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut entry = CoordinatorEntry::default();
                entry.key = key.clone();
                match answer(key) {
                    Ok(broker) => {
                        entry.node_id = BrokerId(broker.id);
                        entry.host = str_bytes(&broker.host);
                        entry.port = i32::from(broker.port);
                    }
                    Err(e) => {
                        entry.node_id = BrokerId(-1);
                        entry.port = -1;
                        entry.error_code = kafka_code(&e);
                        entry.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
                entry
            })
            .collect();
    } else {
        match answer(&request.key) {
            Ok(broker) => {
                response.node_id = BrokerId(broker.id);
                response.host = str_bytes(&broker.host);
                response.port = i32::from(broker.port);
            }
            Err(e) => {
                response.node_id = BrokerId(-1);
                response.port = -1;
                response.error_code = kafka_code(&e);
                if version >= 1 {
                    response.error_message = Some(str_bytes(&e.to_string()));
                }
            }
        }
    }
    ResponseKind::FindCoordinator(response)
}

pub(super) async fn join_group(
    shard: &Rc<Shard>,
    access: &Access,
    request: JoinGroupRequest,
    version: i16,
    client_id: Option<String>,
) -> ResponseKind {
    let group = request.group_id.0.to_string();
    if let Err(code) = group_allowed(shard, access, AclOperation::Read, &group) {
        let mut response = JoinGroupResponse::default();
        response.error_code = code;
        response.generation_id = -1;
        response.member_id = request.member_id.clone();
        response.protocol_name = (version < 7).then(StrBytes::default);
        return ResponseKind::JoinGroup(response);
    }
    let join = shardline_groups::JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        client_id: client_id.unwrap_or_default(),
        // The peer address is not known to handlers; Kafka shows "/host".
        client_host: String::from("/"),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { -1 },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member: version >= 4,
    };
    let member_id = join.member_id.clone();
    let answer = on_coordinator(shard, &group, {
        let group = group.clone();
        move |s, index| async move { coordinator::join(&s, index, &group, join).await }
    })
    .await;
    let mut response = JoinGroupResponse::default();
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            response.error_code = group_code(e);
            response.generation_id = -1;
            response.member_id = str_bytes(&member_id);
            response.protocol_name = (version < 7).then(StrBytes::default);
            return ResponseKind::JoinGroup(response);
        }
    };
    response.error_code = answer.error.map_or(0, |refusal| group_code(refusal.into()));
    response.generation_id = answer.generation;
    if version >= 7 {
        response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = answer.protocol.as_deref().map(str_bytes);
    } else {
        // Not nullable before v7.
        response.protocol_name = Some(str_bytes(answer.protocol.as_deref().unwrap_or_default()));
    }
    response.leader = str_bytes(&answer.leader);
    response.member_id = str_bytes(&answer.member_id);
    response.members = answer
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = str_bytes(&id);
            if version >= 5 {
                member.group_instance_id = instance.as_deref().map(str_bytes);
            }
            member.metadata = metadata;
            member
        })
        .collect();
    ResponseKind::JoinGroup(response)
}

pub(super) async fn sync_group(
    shard: &Rc<Shard>,
    access: &Access,
    request: SyncGroupRequest,
    version: i16,
) -> ResponseKind {
    let group = request.group_id.0.to_string();
    if let Err(code) = group_allowed(shard, access, AclOperation::Read, &group) {
        let mut response = SyncGroupResponse::default();
        response.error_code = code;
        return ResponseKind::SyncGroup(response);
    }
    let committer = Committer {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        generation: request.generation_id,
    };
    let assignments: Vec<(String, Bytes)> = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let answer = on_coordinator(shard, &group, {
        let group = group.clone();
        move |s, index| async move { coordinator::sync(&s, index, &group, committer, assignments).await }
    })
    .await;
    let mut response = SyncGroupResponse::default();
    match answer {
        Ok(answer) => {
            response.assignment = answer.assignment;
            if version >= 5 {
                response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
                response.protocol_name = answer.protocol.as_deref().map(str_bytes);
            }
        }
        Err(e) => response.error_code = group_code(e),
    }
    ResponseKind::SyncGroup(response)
}

pub(super) async fn heartbeat(shard: &Rc<Shard>, access: &Access, request: HeartbeatRequest) -> ResponseKind {
    let group = request.group_id.0.to_string();
    if let Err(code) = group_allowed(shard, access, AclOperation::Read, &group) {
        let mut response = HeartbeatResponse::default();
        response.error_code = code;
        return ResponseKind::Heartbeat(response);
    }
    let committer = Committer {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        generation: request.generation_id,
    };
    let answer = on_coordinator(shard, &group, {
        let group = group.clone();
        move |s, index| async move { coordinator::heartbeat(&s, index, &group, &committer) }
    })
    .await;
    let mut response = HeartbeatResponse::default();
    response.error_code = answer.err().map_or(0, group_code);
    ResponseKind::Heartbeat(response)
}

pub(super) async fn leave_group(
    shard: &Rc<Shard>,
    access: &Access,
    request: LeaveGroupRequest,
    version: i16,
) -> ResponseKind {
    let group = request.group_id.0.to_string();
    if let Err(code) = group_allowed(shard, access, AclOperation::Read, &group) {
        let mut response = LeaveGroupResponse::default();
        response.error_code = code;
        return ResponseKind::LeaveGroup(response);
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(ToString::to_string),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let answer = on_coordinator(shard, &group, {
        let group = group.clone();
        let members = members.clone();
        move |s, index| async move { coordinator::leave(&s, index, &group, &members) }
    })
    .await;
    let mut response = LeaveGroupResponse::default();
    match answer {
        Err(e) => response.error_code = group_code(e),
        Ok(results) => {
            if version >= 3 {
                response.members = members
                    .iter()
                    .zip(&results)
                    .map(|((member_id, instance), result)| {
                        let mut out = MemberResponse::default();
                        out.member_id = str_bytes(member_id);
                        out.group_instance_id = instance.as_deref().map(str_bytes);
                        out.error_code = result.err().map_or(0, group_code);
                        out
                    })
                    .collect();
            } else {
                response.error_code = results.first().and_then(|r| r.err()).map_or(0, group_code);
            }
        }
    }
    ResponseKind::LeaveGroup(response)
}

/// Read on the group (else every partition is refused with its code) and
/// Read on each topic, as Kafka asks.
pub(super) async fn offset_commit(
    shard: &Rc<Shard>,
    access: &Access,
    request: OffsetCommitRequest,
    version: i16,
) -> ResponseKind {
    let group = request.group_id.0.to_string();
    let group_refused = group_allowed(shard, access, AclOperation::Read, &group).err();
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| CommitPartition {
            index: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
            metadata: p.committed_metadata.as_ref().map(ToString::to_string),
        });
        (topic.name.0.to_string(), partitions.collect())
    });
    let (slots, commits) = plan_commits(shard, access, group_refused, topics.collect(), &kafka_code);
    let committer = Committer {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        generation: request.generation_id_or_member_epoch,
    };
    let count = commits.len();
    let results: Vec<i16> = if commits.is_empty() {
        Vec::new()
    } else {
        let answer = on_coordinator(shard, &group, {
            let group = group.clone();
            move |s, index| async move {
                let results = coordinator::commit(&s, index, &group, committer, commits).await;
                Ok(results.iter().map(super::code_of).collect::<Vec<i16>>())
            }
        })
        .await;
        match answer {
            Ok(codes) => codes,
            Err(e) => vec![group_code(e); count],
        }
    };
    let mut results = results.into_iter();
    let mut response = OffsetCommitResponse::default();
    for (topic, row) in request.topics.iter().zip(slots) {
        let mut out = OffsetCommitResponseTopic::default();
        out.name = topic_name(&topic.name.0);
        for (partition, slot) in topic.partitions.iter().zip(row) {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = partition.partition_index;
            p.error_code = slot.unwrap_or_else(|| results.next().unwrap_or(group_code(GroupError::NotCoordinator)));
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::OffsetCommit(response)
}

/// One partition of an OffsetCommit or TxnOffsetCommit request.
pub(super) struct CommitPartition {
    pub(super) index: i32,
    pub(super) offset: i64,
    /// -1 when the request's version has none.
    pub(super) leader_epoch: i32,
    pub(super) metadata: Option<String>,
}

/// The commits of a request, in order, and per partition either the code
/// answered here (`refused`: the whole request's refusal; a topic the
/// principal may not Read; an unknown or internal topic or partition) or
/// `None` (the next of the commits, for the coordinator). `code` maps an
/// error at the request's version.
pub(super) fn plan_commits(
    shard: &Shard,
    access: &Access,
    refused: Option<i16>,
    topics: Vec<(String, Vec<CommitPartition>)>,
    code: &dyn Fn(&EngineError) -> i16,
) -> (Vec<Vec<Option<i16>>>, Vec<Commit>) {
    let image = shard.image();
    let now_ms = super::unix_now_ms();
    let mut slots = Vec::with_capacity(topics.len());
    let mut commits = Vec::new();
    for (name, partitions) in topics {
        let meta = image
            .topics
            .get(&name)
            .filter(|_| !coordinator::is_internal_topic(&name));
        let topic_refused = access.check(&image, AclOperation::Read, Resource::Topic(&name)).err();
        let mut row = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let known = meta.is_some_and(|t| usize::try_from(partition.index).is_ok_and(|i| i < t.partitions.len()));
            if let Some(refused) = refused {
                row.push(Some(refused));
            } else if let Some(topic_refused) = &topic_refused {
                row.push(Some(code(topic_refused)));
            } else if known {
                row.push(None);
                commits.push(Commit {
                    topic: name.clone(),
                    partition: partition.index,
                    committed: CommittedOffset {
                        offset: partition.offset,
                        leader_epoch: partition.leader_epoch,
                        commit_timestamp_ms: now_ms,
                        metadata: partition.metadata,
                    },
                });
            } else {
                row.push(Some(code(&EngineError::UnknownTopicOrPartition)));
            }
        }
        slots.push(row);
    }
    let sent = slots.iter().flatten().filter(|slot| slot.is_none()).count();
    assert_eq!(sent, commits.len(), "one slot per commit sent");
    (slots, commits)
}

/// Describe on the group (else the whole answer is its code) and on each
/// topic: a named topic the principal may not Describe is refused, one it
/// was not asked about is left out, as Kafka does.
pub(super) async fn offset_fetch(
    shard: &Rc<Shard>,
    access: &Access,
    request: OffsetFetchRequest,
    version: i16,
) -> ResponseKind {
    let group = request.group_id.0.to_string();
    if let Err(code) = group_allowed(shard, access, AclOperation::Describe, &group) {
        let mut response = OffsetFetchResponse::default();
        if version >= 2 {
            response.error_code = code;
        }
        response.topics = request
            .topics
            .iter()
            .flatten()
            .map(|topic| {
                let mut out = OffsetFetchResponseTopic::default();
                out.name = topic.name.clone();
                out.partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|index| {
                        let mut p = OffsetFetchResponsePartition::default();
                        p.partition_index = *index;
                        p.committed_offset = -1;
                        p.error_code = code;
                        p
                    })
                    .collect();
                out
            })
            .collect();
        return ResponseKind::OffsetFetch(response);
    }
    let image = shard.image();
    let describable = |topic: &str| access.check(&image, AclOperation::Describe, Resource::Topic(topic));
    let wanted: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partition_indexes.iter().map(|p| (t.name.0.to_string(), *p)))
            .collect()
    });
    let answer = on_coordinator(shard, &group, {
        let group = group.clone();
        let wanted = wanted.clone();
        // v7: the consumer asks for stable offsets (KIP-447).
        let require_stable = request.require_stable;
        // Dead-letter delivery (`coordinator/dlq.rs`) where the principal may write the `.dlq` topic.
        let permits = coordinator::dlq::Permits::of(&image, access, wanted.as_deref());
        move |s, index| async move {
            let found = coordinator::fetch_offsets(&s, index, &group, wanted, require_stable)?;
            Ok(coordinator::dlq::after_fetch(&s, index, &group, found, &permits).await)
        }
    })
    .await;
    let mut response = OffsetFetchResponse::default();
    let found: Vec<(String, i32, Result<Option<CommittedOffset>, i16>)> = match answer {
        Ok(found) => found
            .into_iter()
            .map(|(t, p, o)| (t, p, o.map_err(group_code)))
            .collect(),
        Err(e) => {
            let code = group_code(e);
            if version >= 2 {
                response.error_code = code;
            }
            // v1 has no top-level error: every requested partition carries it.
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, Err(code)))
                .collect()
        }
    };
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    let asked_for_all = request.topics.is_none();
    for (topic, partition, result) in found {
        let result = match describable(&topic) {
            Ok(()) => result,
            Err(_) if asked_for_all => continue,
            Err(refused) => Err(kafka_code(&refused)),
        };
        let mut p = OffsetFetchResponsePartition::default();
        p.partition_index = partition;
        match result {
            Ok(Some(committed)) => {
                p.committed_offset = committed.offset;
                if version >= 5 {
                    p.committed_leader_epoch = committed.leader_epoch;
                }
                p.metadata = Some(str_bytes(committed.metadata.as_deref().unwrap_or_default()));
            }
            Ok(None) => p.committed_offset = -1,
            Err(code) => {
                p.committed_offset = -1;
                p.error_code = code;
            }
        }
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(p),
            _ => {
                let mut out = OffsetFetchResponseTopic::default();
                out.name = topic_name(&topic);
                out.partitions.push(p);
                topics.push(out);
            }
        }
    }
    response.topics = topics;
    ResponseKind::OffsetFetch(response)
}

/// Every group for Describe on the cluster, else the groups the principal
/// may Describe, as Kafka filters them.
pub(super) async fn list_groups(
    shard: &Rc<Shard>,
    access: &Access,
    request: ListGroupsRequest,
    version: i16,
) -> ResponseKind {
    let image = shard.image();
    let all = access.allows(&image, AclOperation::Describe, Resource::Cluster);
    let listable = |group: &str| all || access.allows(&image, AclOperation::Describe, Resource::Group(group));
    let lists =
        (0..shard.shard_count).map(|owner| shard.invoke_on(owner, |s: Rc<Shard>| async move { s.coordinator.list() }));
    let filter: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut response = ListGroupsResponse::default();
    for list in futures_util::future::join_all(lists).await {
        match list {
            Ok(groups) => {
                for (group, protocol_type, state) in groups {
                    if (!filter.is_empty() && !filter.contains(&state.to_lowercase())) || !listable(&group) {
                        continue;
                    }
                    let mut listed = ListedGroup::default();
                    listed.group_id = GroupId(str_bytes(&group));
                    listed.protocol_type = str_bytes(&protocol_type);
                    if version >= 4 {
                        listed.group_state = str_bytes(state);
                    }
                    response.groups.push(listed);
                }
            }
            Err(e) => response.error_code = kafka_code(&e),
        }
    }
    response.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ResponseKind::ListGroups(response)
}

pub(super) async fn describe_groups(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeGroupsRequest,
    version: i16,
) -> ResponseKind {
    let describes = request.groups.iter().map(|group| {
        let name = group.0.to_string();
        async move {
            if let Err(code) = group_allowed(shard, access, AclOperation::Describe, &name) {
                return (name, Err(code));
            }
            let answer = on_coordinator(shard, &name, {
                let name = name.clone();
                move |s, index| async move { s.coordinator.describe(index, &name) }
            })
            .await
            .map_err(group_code);
            (name, answer)
        }
    });
    let mut response = DescribeGroupsResponse::default();
    for (name, answer) in futures_util::future::join_all(describes).await {
        let mut out = DescribedGroup::default();
        out.group_id = GroupId(str_bytes(&name));
        match answer {
            Err(code) => out.error_code = code,
            Ok(description) => {
                out.group_state = str_bytes(description.state);
                out.protocol_type = str_bytes(&description.protocol_type);
                out.protocol_data = str_bytes(&description.protocol);
                out.members = description
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut member = DescribedGroupMember::default();
                        member.member_id = str_bytes(&m.member_id);
                        if version >= 4 {
                            member.group_instance_id = m.instance_id.as_deref().map(str_bytes);
                        }
                        member.client_id = str_bytes(&m.client_id);
                        member.client_host = str_bytes(&m.client_host);
                        member.member_metadata = m.metadata;
                        member.member_assignment = m.assignment;
                        member
                    })
                    .collect();
            }
        }
        response.groups.push(out);
    }
    ResponseKind::DescribeGroups(response)
}

pub(super) async fn delete_groups(shard: &Rc<Shard>, access: &Access, request: DeleteGroupsRequest) -> ResponseKind {
    let deletes = request.groups_names.iter().map(|group| {
        let name = group.0.to_string();
        async move {
            if let Err(code) = group_allowed(shard, access, AclOperation::Delete, &name) {
                return (name, Err(code));
            }
            let answer = on_coordinator(shard, &name, {
                let name = name.clone();
                move |s, index| async move { coordinator::delete_group(&s, index, &name).await }
            })
            .await
            .map_err(group_code);
            (name, answer)
        }
    });
    let mut response = DeleteGroupsResponse::default();
    for (name, answer) in futures_util::future::join_all(deletes).await {
        let mut result = DeletableGroupResult::default();
        result.group_id = GroupId(str_bytes(&name));
        result.error_code = answer.err().unwrap_or(0);
        response.results.push(result);
    }
    ResponseKind::DeleteGroups(response)
}

/// Delete on the group, as Kafka asks (and Read on the topics, checked
/// when the answer is made).
pub(super) async fn offset_delete(shard: &Rc<Shard>, access: &Access, request: OffsetDeleteRequest) -> ResponseKind {
    let group = request.group_id.0.to_string();
    if let Err(code) = group_allowed(shard, access, AclOperation::Delete, &group) {
        let mut response = OffsetDeleteResponse::default();
        response.error_code = code;
        return ResponseKind::OffsetDelete(response);
    }
    let readable = topics_allowed(
        shard,
        access,
        AclOperation::Read,
        request.topics.iter().map(|t| t.name.0.as_str()),
    );
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, readable)| readable.is_ok())
        .flat_map(|(t, _)| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index)))
        .collect();
    let answer = on_coordinator(shard, &group, {
        let group = group.clone();
        let partitions = partitions.clone();
        move |s, index| async move { coordinator::delete_offsets(&s, index, &group, partitions).await }
    })
    .await;
    let mut response = OffsetDeleteResponse::default();
    let results = match answer {
        Err(e) => {
            response.error_code = group_code(e);
            return ResponseKind::OffsetDelete(response);
        }
        Ok(results) => results,
    };
    let image = shard.image();
    let mut results = results.into_iter();
    for (topic, readable) in request.topics.iter().zip(&readable) {
        let mut out = OffsetDeleteResponseTopic::default();
        out.name = topic_name(&topic.name.0);
        let meta = image.topics.get(topic.name.0.as_str());
        for partition in &topic.partitions {
            if let Err(refused) = readable {
                let mut p = OffsetDeleteResponsePartition::default();
                p.partition_index = partition.partition_index;
                p.error_code = kafka_code(refused);
                out.partitions.push(p);
                continue;
            }
            let result = results.next().unwrap_or(Err(GroupError::NotCoordinator));
            let known =
                meta.is_some_and(|t| usize::try_from(partition.partition_index).is_ok_and(|i| i < t.partitions.len()));
            let mut p = OffsetDeleteResponsePartition::default();
            p.partition_index = partition.partition_index;
            p.error_code = match result {
                Err(e) => group_code(e),
                Ok(()) if !known => kafka_code(&EngineError::UnknownTopicOrPartition),
                Ok(()) => 0,
            };
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::OffsetDelete(response)
}
