//! The transaction APIs (KIP-98): InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and TxnOffsetCommit; and
//! WriteTxnMarkers, which a coordinator on another node sends to this one
//! for the partitions it leads; DescribeTransactions and ListTransactions
//! for operators (kafka-transactions.sh).
//!
//! Each request names a transactional id; its coordinator is the shard
//! leading its `__transaction_state` partition
//! (`coordinator::transactions`). The request is decoded here, shipped to
//! that shard with `Shard::invoke_on`, served there, and answered here at
//! the request's version. TxnOffsetCommit goes to the *group's* coordinator
//! instead (`coordinator::txn_commit`). Clients older than KIP-588 are told
//! INVALID_PRODUCER_EPOCH where newer ones are told PRODUCER_FENCED
//! (`error::kafka_code_at`).

use std::{future::Future, rc::Rc};

use kafka_protocol::messages::{
    add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult},
    txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic},
    write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    },
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId as WireProducerId,
    ResponseKind, TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::messages::{
    describe_transactions_response::{TopicData as DescribedTopic, TransactionState as DescribedTransaction},
    list_transactions_response::TransactionState as ListedTransaction,
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse,
    TransactionalId,
};
use shardline_raft::AclOperation;

use super::{
    epoch_of,
    groups::{on_internal_leader, plan_commits, CommitPartition, Unrouted},
    str_bytes, topic_name,
};
use crate::{
    acl::{Access, Resource},
    control::{Marker, Outcome},
    coordinator::{
        self,
        transaction::{Producer, TxnState},
        transactions::{self as txn, TRANSACTIONS_TOPIC},
        Committer,
    },
    error::{kafka_code_at, EngineError, GroupError, TxnError},
    producer::{ProducerEpoch, ProducerId},
    shard::Shard,
};

/// Runs `work(coordinator shard, partition)` on the id's coordinator shard.
async fn on_coordinator<R, F, Fut>(shard: &Rc<Shard>, transactional_id: &str, work: F) -> Result<R, TxnError>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>, i32) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, TxnError>> + 'static,
{
    let unrouted = Unrouted {
        unavailable: TxnError::CoordinatorNotAvailable,
        not_coordinator: TxnError::NotCoordinator,
    };
    on_internal_leader(shard, TRANSACTIONS_TOPIC, transactional_id, unrouted, work).await
}

/// Write on the transactional id, as Kafka asks of every transaction API.
fn id_allowed(shard: &Shard, access: &Access, transactional_id: &str) -> Result<(), EngineError> {
    access.check(
        &shard.image(),
        AclOperation::Write,
        Resource::TransactionalId(transactional_id),
    )
}

fn code(result: &Result<(), EngineError>, knows_producer_fenced: bool) -> i16 {
    match result {
        Ok(()) => 0,
        Err(e) => kafka_code_at(e, knows_producer_fenced),
    }
}

/// InitProducerId with a transactional id (Write on it was checked).
pub(super) async fn init_producer_id(shard: &Rc<Shard>, request: InitProducerIdRequest, version: i16) -> ResponseKind {
    let mut response = InitProducerIdResponse::default();
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.to_string())
        .unwrap_or_default();
    // KIP-360 (v3+): a producer that already has an id names it to bump it.
    let expected = (request.producer_id.0 >= 0 && request.producer_epoch >= 0).then_some(Producer {
        id: ProducerId(request.producer_id.0),
        epoch: ProducerEpoch(request.producer_epoch),
    });
    let fresh = ProducerId(super::cluster::next_producer_id(shard.node_id(), shard.id));
    let timeout_ms = request.transaction_timeout_ms;
    let answer =
        on_coordinator(shard, &transactional_id, {
            let transactional_id = transactional_id.clone();
            move |s, index| async move {
                txn::init_producer_id(&s, index, &transactional_id, timeout_ms, expected, fresh).await
            }
        })
        .await;
    match answer {
        Ok(producer) => {
            response.producer_id = WireProducerId(producer.id.0);
            response.producer_epoch = producer.epoch.0;
        }
        Err(e) => {
            response.error_code = kafka_code_at(&EngineError::Txn(e), version >= 4);
            response.producer_id = WireProducerId(-1);
            response.producer_epoch = -1;
        }
    }
    ResponseKind::InitProducerId(response)
}

pub(super) async fn add_partitions(
    shard: &Rc<Shard>,
    access: &Access,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let transactional_id = request.v3_and_below_transactional_id.0.to_string();
    let producer = Producer {
        id: ProducerId(request.v3_and_below_producer_id.0),
        epoch: ProducerEpoch(request.v3_and_below_producer_epoch),
    };
    let knows_producer_fenced = version >= 2;
    // Per partition: the code of why it cannot be added, if it cannot.
    let image = shard.image();
    let id_refused = id_allowed(shard, access, &transactional_id).err();
    let verdicts: Vec<Vec<Option<i16>>> = request
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let meta = image.topics.get(name).filter(|_| !coordinator::is_internal_topic(name));
            let topic_refused = access.check(&image, AclOperation::Write, Resource::Topic(name)).err();
            topic
                .partitions
                .iter()
                .map(|p| {
                    let known = meta.is_some_and(|t| usize::try_from(*p).is_ok_and(|i| i < t.partitions.len()));
                    match id_refused.as_ref().or(topic_refused.as_ref()) {
                        Some(refused) => Some(kafka_code_at(refused, knows_producer_fenced)),
                        None if known => None,
                        None => Some(kafka_code_at(
                            &EngineError::UnknownTopicOrPartition,
                            knows_producer_fenced,
                        )),
                    }
                })
                .collect()
        })
        .collect();
    drop(image);
    let any_refused = verdicts.iter().flatten().any(Option::is_some);
    let outcome: Result<(), EngineError> = if any_refused {
        Err(EngineError::Txn(TxnError::OperationNotAttempted))
    } else {
        let partitions: Vec<(String, i32)> = request
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
            .collect();
        on_coordinator(shard, &transactional_id, {
            let transactional_id = transactional_id.clone();
            move |s, index| async move { txn::add_partitions(&s, index, &transactional_id, producer, partitions).await }
        })
        .await
        .map_err(EngineError::Txn)
    };
    let outcome = code(&outcome, knows_producer_fenced);
    let mut response = AddPartitionsToTxnResponse::default();
    for (topic, verdicts) in request.v3_and_below_topics.iter().zip(verdicts) {
        let mut out = AddPartitionsToTxnTopicResult::default();
        out.name = topic_name(&topic.name.0);
        for (partition, verdict) in topic.partitions.iter().zip(verdicts) {
            let mut p = AddPartitionsToTxnPartitionResult::default();
            p.partition_index = *partition;
            p.partition_error_code = verdict.unwrap_or(outcome);
            out.results_by_partition.push(p);
        }
        response.results_by_topic_v3_and_below.push(out);
    }
    ResponseKind::AddPartitionsToTxn(response)
}

pub(super) async fn add_offsets(
    shard: &Rc<Shard>,
    access: &Access,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let transactional_id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let producer = Producer {
        id: ProducerId(request.producer_id.0),
        epoch: ProducerEpoch(request.producer_epoch),
    };
    let outcome = match id_allowed(shard, access, &transactional_id)
        .and_then(|()| access.check(&shard.image(), AclOperation::Read, Resource::Group(&group)))
    {
        Err(refused) => Err(refused),
        Ok(()) => on_coordinator(shard, &transactional_id, {
            let transactional_id = transactional_id.clone();
            move |s, index| async move { txn::add_group(&s, index, &transactional_id, producer, group).await }
        })
        .await
        .map_err(EngineError::Txn),
    };
    let mut response = AddOffsetsToTxnResponse::default();
    response.error_code = code(&outcome, version >= 2);
    ResponseKind::AddOffsetsToTxn(response)
}

pub(super) async fn end_txn(shard: &Rc<Shard>, access: &Access, request: EndTxnRequest, version: i16) -> ResponseKind {
    let transactional_id = request.transactional_id.0.to_string();
    let producer = Producer {
        id: ProducerId(request.producer_id.0),
        epoch: ProducerEpoch(request.producer_epoch),
    };
    let commit = request.committed;
    let outcome = match id_allowed(shard, access, &transactional_id) {
        Err(refused) => Err(refused),
        Ok(()) => on_coordinator(shard, &transactional_id, {
            let transactional_id = transactional_id.clone();
            move |s, index| async move { txn::end(&s, index, &transactional_id, producer, commit).await }
        })
        .await
        .map_err(EngineError::Txn),
    };
    let mut response = EndTxnResponse::default();
    response.error_code = code(&outcome, version >= 2);
    ResponseKind::EndTxn(response)
}

/// TxnOffsetCommit: Write on the transactional id, Read on the group and
/// on each topic (as Kafka asks); served by the group's coordinator.
pub(super) async fn txn_offset_commit(
    shard: &Rc<Shard>,
    access: &Access,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> ResponseKind {
    let knows_producer_fenced = version >= 3;
    let transactional_id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let refused = id_allowed(shard, access, &transactional_id)
        .and_then(|()| access.check(&shard.image(), AclOperation::Read, Resource::Group(&group)))
        .err()
        .map(|refused| kafka_code_at(&refused, knows_producer_fenced));
    let topics = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| CommitPartition {
            index: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
            metadata: p.committed_metadata.as_ref().map(ToString::to_string),
        });
        (topic.name.0.to_string(), partitions.collect())
    });
    let code_at = |e: &EngineError| kafka_code_at(e, knows_producer_fenced);
    let (slots, commits) = plan_commits(shard, access, refused, topics.collect(), &code_at);
    let committer = Committer {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        generation: if version >= 3 { request.generation_id } else { -1 },
    };
    let producer_id = request.producer_id.0;
    let count = commits.len();
    let results: Vec<i16> = if commits.is_empty() {
        Vec::new()
    } else {
        let answer = super::groups::on_coordinator(shard, &group, {
            let group = group.clone();
            move |s, index| async move {
                let results = coordinator::txn_commit(&s, index, &group, producer_id, committer, commits).await;
                Ok(results
                    .iter()
                    .map(|r| code(r, knows_producer_fenced))
                    .collect::<Vec<i16>>())
            }
        })
        .await;
        match answer {
            Ok(codes) => codes,
            Err(e) => vec![kafka_code_at(&EngineError::Group(e), knows_producer_fenced); count],
        }
    };
    let mut results = results.into_iter();
    let mut response = TxnOffsetCommitResponse::default();
    for (topic, row) in request.topics.iter().zip(slots) {
        let mut out = TxnOffsetCommitResponseTopic::default();
        out.name = topic_name(&topic.name.0);
        for (partition, slot) in topic.partitions.iter().zip(row) {
            let mut p = TxnOffsetCommitResponsePartition::default();
            p.partition_index = partition.partition_index;
            p.error_code = slot.unwrap_or_else(|| {
                results.next().unwrap_or_else(|| {
                    kafka_code_at(&EngineError::Group(GroupError::NotCoordinator), knows_producer_fenced)
                })
            });
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    ResponseKind::TxnOffsetCommit(response)
}

/// WriteTxnMarkers (between brokers): ClusterAction on the cluster; each
/// partition named gets its marker on the shard leading it here
/// (`coordinator::transactions::apply_marker`), with its own error code.
pub(super) async fn write_txn_markers(
    shard: &Rc<Shard>,
    access: &Access,
    request: WriteTxnMarkersRequest,
) -> ResponseKind {
    let refused = access
        .check(&shard.image(), AclOperation::ClusterAction, Resource::Cluster)
        .err()
        .map(|refused| kafka_code_at(&refused, true));
    let epoch = epoch_of(shard);
    let mut response = WriteTxnMarkersResponse::default();
    for written in &request.markers {
        let marker = Marker {
            producer_id: ProducerId(written.producer_id.0),
            producer_epoch: ProducerEpoch(written.producer_epoch),
            outcome: if written.transaction_result {
                Outcome::Commit
            } else {
                Outcome::Abort
            },
            coordinator_epoch: written.coordinator_epoch,
        };
        let mut result = WritableTxnMarkerResult::default();
        result.producer_id = written.producer_id;
        for topic in &written.topics {
            let mut out = WritableTxnMarkerTopicResult::default();
            out.name = topic.name.clone();
            for &index in &topic.partition_indexes {
                let error_code = match refused {
                    Some(refused) => refused,
                    None => {
                        let name = topic.name.0.to_string();
                        let outcome = match shard.owner_of(&name, index) {
                            Err(e) => Err(e),
                            Ok(owner) => shard
                                .invoke_on(owner, move |s: Rc<Shard>| async move {
                                    s.wait_for_epoch(epoch).await;
                                    txn::apply_marker(&s, &name, index, marker).await
                                })
                                .await
                                .and_then(|r| r),
                        };
                        code(&outcome, true)
                    }
                };
                let mut p = WritableTxnMarkerPartitionResult::default();
                p.partition_index = index;
                p.error_code = error_code;
                out.partitions.push(p);
            }
            result.topics.push(out);
        }
        response.markers.push(result);
    }
    ResponseKind::WriteTxnMarkers(response)
}

/// DescribeTransactions (kafka-transactions.sh describe): each id from its
/// coordinator, Describe on the id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
pub(super) async fn describe_transactions(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeTransactionsRequest,
) -> ResponseKind {
    let mut response = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let transactional_id = id.0.to_string();
        let mut state = DescribedTransaction::default();
        state.transactional_id = id;
        state.producer_id = WireProducerId(-1);
        state.producer_epoch = -1;
        state.transaction_start_time_ms = -1;
        let allowed = access.check(
            &shard.image(),
            AclOperation::Describe,
            Resource::TransactionalId(&transactional_id),
        );
        let found = match allowed {
            Err(refused) => Err(refused),
            Ok(()) => on_coordinator(shard, &transactional_id, {
                let transactional_id = transactional_id.clone();
                move |s, index| async move { txn::describe(&s, index, &transactional_id) }
            })
            .await
            .map_err(EngineError::Txn),
        };
        match found {
            Ok(meta) => {
                state.transaction_state = str_bytes(meta.state.name());
                state.transaction_timeout_ms = meta.timeout_ms;
                if meta.state == TxnState::Ongoing || meta.state.is_prepared() {
                    state.transaction_start_time_ms = meta.started_ms;
                }
                state.producer_id = WireProducerId(meta.producer_id.0);
                state.producer_epoch = meta.producer_epoch.0;
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = std::collections::BTreeMap::new();
                for (topic, partition) in meta.partitions {
                    by_topic.entry(topic).or_default().push(partition);
                }
                state.topics = by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut data = DescribedTopic::default();
                        data.topic = topic_name(&topic);
                        data.partitions = partitions;
                        data
                    })
                    .collect();
            }
            Err(e) => state.error_code = kafka_code_at(&e, true),
        }
        response.transaction_states.push(state);
    }
    ResponseKind::DescribeTransactions(response)
}

/// ListTransactions (kafka-transactions.sh list): the ids every shard of
/// this broker coordinates, filtered by state, producer id and (v1) by
/// how long they have been open; only ids the principal may Describe.
pub(super) async fn list_transactions(
    shard: &Rc<Shard>,
    access: &Access,
    request: ListTransactionsRequest,
    version: i16,
) -> ResponseKind {
    const STATES: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];
    let mut response = ListTransactionsResponse::default();
    response.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let answers =
        (0..shard.shard_count).map(|owner| shard.invoke_on(owner, |s: Rc<Shard>| async move { txn::list(&s) }));
    let now_ms = super::unix_now_ms();
    let duration_filter_ms = if version >= 1 { request.duration_filter } else { -1 };
    let image = shard.image();
    for answer in futures_util::future::join_all(answers).await {
        let Ok(ids) = answer else { continue };
        for meta in ids {
            let state_ok = request.state_filters.is_empty()
                || request.state_filters.iter().any(|f| f.as_str() == meta.state.name());
            let producer_ok = request.producer_id_filters.is_empty()
                || request.producer_id_filters.iter().any(|p| p.0 == meta.producer_id.0);
            let open = meta.state == TxnState::Ongoing || meta.state.is_prepared();
            let duration_ok = duration_filter_ms < 0 || (open && now_ms - meta.started_ms >= duration_filter_ms);
            let visible = access.allows(
                &image,
                AclOperation::Describe,
                Resource::TransactionalId(&meta.transactional_id),
            );
            if state_ok && producer_ok && duration_ok && visible {
                let mut listed = ListedTransaction::default();
                listed.transactional_id = TransactionalId(str_bytes(&meta.transactional_id));
                listed.producer_id = WireProducerId(meta.producer_id.0);
                listed.transaction_state = str_bytes(meta.state.name());
                response.transaction_states.push(listed);
            }
        }
    }
    ResponseKind::ListTransactions(response)
}
