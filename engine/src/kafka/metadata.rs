//! Metadata: brokers, the controller, and topics with their partitions'
//! leaders, from this shard's image. Auto-creates requested topics if enabled.

use std::rc::Rc;

use kafka_protocol::messages::{
    metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
    BrokerId, MetadataRequest, MetadataResponse, ResponseKind,
};
use shardline_raft::{AclOperation, TopicMeta};

use super::{
    admin::auto_create,
    brokers::{kafka_brokers, leader_broker_id, replica_broker_id},
    str_bytes, topic_name,
};
use crate::{
    acl::{Access, Resource},
    coordinator::is_internal_topic,
    error::{kafka_code, EngineError},
    shard::Shard,
};

/// Topics the principal may not Describe are left out of an all-topics
/// answer and answered TOPIC_AUTHORIZATION_FAILED when named, as Kafka does.
pub(super) async fn handle(
    shard: &Rc<Shard>,
    access: &Access,
    request: MetadataRequest,
    listener: &str,
) -> ResponseKind {
    let requested: Option<Vec<String>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect()
    });
    if let Some(names) = &requested {
        if shard.config.auto_create_topics && request.allow_auto_topic_creation {
            let image = shard.image();
            let missing: Vec<String> = names
                .iter()
                .filter(|n| !image.topics.contains_key(*n))
                .cloned()
                .collect();
            if !missing.is_empty() {
                auto_create(shard, access, &missing).await;
            }
        }
    }
    let image = shard.image();
    let mut response = MetadataResponse::default();
    // A broker out of touch with the metadata quorum names no leader where
    // its stale image names itself, and no controller (clients send their
    // Metadata requests to the controller they were told of), so clients
    // ask another broker (see `Shard::out_of_quorum`).
    let stale_self = shard.out_of_quorum().then(|| shard.node_id());
    // Fenced brokers (silent past the session timeout) are left out, as Kafka
    // leaves out brokers that are not alive — and so is this one when it
    // is out of quorum: the others have fenced it by now. librdkafka asks
    // its most recently used connection for metadata; when that is the only
    // connection it has (this broker led every partition it writes), a
    // broker that kept naming itself would be asked forever, while one
    // that leaves itself out is dropped, and the client connects to the
    // others, which name the new leaders. Each shard with a port of its
    // own is a broker of its own, at the addresses of the listener this
    // client came through (see `brokers`).
    response.brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced && stale_self != Some(b.node_id))
        .flat_map(|broker| kafka_brokers(broker, listener))
        .map(|b| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(b.id);
            broker.host = str_bytes(&b.host);
            broker.port = i32::from(b.port);
            broker
        })
        .collect();
    response.cluster_id = Some(str_bytes(&image.cluster_id));
    response.controller_id = BrokerId(if stale_self.is_some() { -1 } else { image.controller_id });
    let describe = |topic: &TopicMeta| {
        let mut out = MetadataResponseTopic::default();
        out.name = Some(topic_name(&topic.name));
        out.is_internal = is_internal_topic(&topic.name);
        out.topic_id = uuid::Uuid::from_bytes(topic.id);
        out.partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let mut partition = MetadataResponsePartition::default();
                partition.partition_index = p.index;
                let broker_id = |node: &i32| BrokerId(replica_broker_id(&image, p, *node));
                partition.leader_id = BrokerId(leader_broker_id(&image, p));
                partition.leader_epoch = p.leader_epoch;
                partition.replica_nodes = p.replicas.iter().map(broker_id).collect();
                partition.isr_nodes = p.isr.iter().map(broker_id).collect();
                if stale_self == Some(p.leader) {
                    partition.leader_id = BrokerId(-1);
                }
                if p.leader < 0 || stale_self == Some(p.leader) {
                    partition.error_code = kafka_code(&EngineError::LeaderNotAvailable);
                }
                partition
            })
            .collect();
        out
    };
    response.topics = match requested {
        // The internal topics are only described when asked for by name.
        None => image
            .topics
            .values()
            .filter(|t| !is_internal_topic(&t.name))
            .filter(|t| access.allows(&image, AclOperation::Describe, Resource::Topic(&t.name)))
            .map(describe)
            .collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                match (
                    access.check(&image, AclOperation::Describe, Resource::Topic(name)),
                    image.topics.get(name),
                ) {
                    (Err(refused), _) => {
                        let mut out = MetadataResponseTopic::default();
                        out.name = Some(topic_name(name));
                        out.error_code = kafka_code(&refused);
                        out
                    }
                    (Ok(()), Some(topic)) => describe(topic),
                    (Ok(()), None) => {
                        let mut out = MetadataResponseTopic::default();
                        out.name = Some(topic_name(name));
                        // Kafka: a name no topic can have is INVALID_TOPIC_EXCEPTION.
                        let missing = match shardline_raft::validate_topic_name(name) {
                            Err(invalid) => EngineError::Meta(invalid),
                            Ok(()) => EngineError::UnknownTopicOrPartition,
                        };
                        out.error_code = kafka_code(&missing);
                        out
                    }
                }
            })
            .collect(),
    };
    ResponseKind::Metadata(response)
}
