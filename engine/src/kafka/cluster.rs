//! ApiVersions, DescribeCluster and InitProducerId.

use std::{cell::Cell, rc::Rc};

use kafka_protocol::messages::{
    api_versions_response::ApiVersion, describe_cluster_response::DescribeClusterBroker, ApiVersionsResponse, BrokerId,
    DescribeClusterRequest, DescribeClusterResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
    ResponseKind,
};

use super::{brokers::kafka_brokers, str_bytes};
use crate::{
    acl::{Access, Resource},
    error::kafka_code,
    shard::Shard,
};
use shardline_raft::{AclOperation, AclResourceType};

/// ApiVersions: exactly the table `net` can decode and the engine implements.
pub(crate) fn api_versions() -> ResponseKind {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = shardline_net::SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            let mut api = ApiVersion::default();
            api.api_key = *key;
            api.min_version = *min;
            api.max_version = *max;
            api
        })
        .collect();
    ResponseKind::ApiVersions(response)
}

pub(super) fn describe_cluster(
    shard: &Rc<Shard>,
    _access: &Access,
    _request: DescribeClusterRequest,
    listener: &str,
) -> ResponseKind {
    let image = shard.image();
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(&image.cluster_id);
    response.controller_id = BrokerId(image.controller_id);
    response.brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .flat_map(|broker| kafka_brokers(broker, listener))
        .map(|b| {
            let mut broker = DescribeClusterBroker::default();
            broker.broker_id = BrokerId(b.id);
            broker.host = str_bytes(&b.host);
            broker.port = i32::from(b.port);
            broker
        })
        .collect();
    ResponseKind::DescribeCluster(response)
}

thread_local! {
    /// Producer ids handed out by this shard in the current millisecond.
    static ISSUED: Cell<(i64, i64)> = const { Cell::new((0, 0)) };
}

/// Bits of a producer id: 41 of milliseconds, 6 of node id, 6 of shard, 10
/// of sequence within the millisecond. Unique across the nodes of a cluster
/// (ids 0–63), their shards and restarts, as long as clocks do not go back.
const NODE_BITS: u32 = 6;
const SHARD_BITS: u32 = 6;
const SEQUENCE_BITS: u32 = 10;

pub(crate) fn next_producer_id(node_id: i32, shard_id: usize) -> i64 {
    ISSUED.with(|issued| {
        let now_ms = super::unix_now_ms();
        let (last_ms, sequence) = issued.get();
        let (ms, sequence) = if now_ms > last_ms {
            (now_ms, 0)
        } else if sequence + 1 < (1 << SEQUENCE_BITS) {
            (last_ms, sequence + 1)
        } else {
            // More than 1024 ids in one millisecond: borrow the next millisecond.
            (last_ms + 1, 0)
        };
        issued.set((ms, sequence));
        let node_bits = i64::from(node_id) & ((1 << NODE_BITS) - 1);
        let shard_bits = (shard_id as i64) & ((1 << SHARD_BITS) - 1);
        (ms << (NODE_BITS + SHARD_BITS + SEQUENCE_BITS))
            | (node_bits << (SHARD_BITS + SEQUENCE_BITS))
            | (shard_bits << SEQUENCE_BITS)
            | sequence
    })
}

/// An idempotent producer needs IdempotentWrite on the cluster or Write on
/// some topic (Kafka 3's rule); a transactional one Write on its id.
fn idempotent_writer(image: &shardline_raft::MetadataImage, access: &Access) -> Result<(), crate::error::EngineError> {
    access
        .check(image, AclOperation::IdempotentWrite, Resource::Cluster)
        .or_else(|refused| {
            let writer =
                access
                    .authorizer
                    .allows_any(image, &access.session, AclOperation::Write, AclResourceType::Topic);
            if writer {
                Ok(())
            } else {
                Err(refused)
            }
        })
}

/// InitProducerId: an idempotent producer is answered here; a
/// transactional one by its transaction coordinator (`transactions.rs`).
pub(super) async fn init_producer_id(
    shard: &Rc<Shard>,
    access: &Access,
    request: InitProducerIdRequest,
    version: i16,
) -> ResponseKind {
    let mut response = InitProducerIdResponse::default();
    let image = shard.image();
    let allowed = match request.transactional_id.as_deref() {
        Some(transactional_id) => {
            access.check(&image, AclOperation::Write, Resource::TransactionalId(transactional_id))
        }
        None => idempotent_writer(&image, access),
    };
    if let Err(refused) = &allowed {
        response.error_code = kafka_code(refused);
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
    } else if request.transactional_id.is_some() {
        return super::transactions::init_producer_id(shard, request, version).await;
    } else if request.producer_id.0 >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX {
        // KIP-360: an idempotent producer bumps its epoch after an error.
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch + 1;
    } else {
        response.producer_id = ProducerId(next_producer_id(shard.node_id(), shard.id));
        response.producer_epoch = 0;
    }
    ResponseKind::InitProducerId(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_unique_and_positive() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let id = next_producer_id(1, 3);
            assert!(id > 0);
            assert!(seen.insert(id), "duplicate producer id {id}");
        }
        let shard_of = |id: i64| (id >> SEQUENCE_BITS) & 0x3f;
        let node_of = |id: i64| (id >> (SEQUENCE_BITS + SHARD_BITS)) & 0x3f;
        assert_ne!(shard_of(next_producer_id(1, 1)), shard_of(next_producer_id(1, 2)));
        assert_eq!(node_of(next_producer_id(2, 1)), 2);
        assert_eq!(node_of(next_producer_id(3, 1)), 3);
    }
}
