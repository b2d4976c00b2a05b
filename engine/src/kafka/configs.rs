//! DescribeConfigs for topics (their configs over the broker defaults) and
//! for the broker itself.

use std::rc::Rc;

use kafka_protocol::messages::{
    describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult},
    DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind,
};

use super::{
    alter_configs::{RESOURCE_BROKER, RESOURCE_TOPIC},
    str_bytes,
};
use crate::{
    acl::{Access, Resource},
    error::{kafka_code, EngineError},
    shard::{Shard, MAX_MESSAGE_BYTES_DEFAULT},
};

/// ConfigSource values of DescribeConfigs v1+.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Topic configs with their defaults on this broker.
fn topic_defaults(shard: &Shard) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "delete".to_string()),
        ("retention.ms", (7i64 * 24 * 3600 * 1000).to_string()),
        ("retention.bytes", "-1".to_string()),
        ("segment.bytes", shard.config.segment_bytes.to_string()),
        ("segment.ms", (7i64 * 24 * 3600 * 1000).to_string()),
        ("max.message.bytes", MAX_MESSAGE_BYTES_DEFAULT.to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
        ("message.timestamp.before.max.ms", i64::MAX.to_string()),
        ("message.timestamp.after.max.ms", i64::MAX.to_string()),
        ("message.timestamp.difference.max.ms", i64::MAX.to_string()),
        ("shardline.fsync", shard.config.fsync.to_string()),
        ("min.insync.replicas", "1".to_string()),
        ("delete.retention.ms", (24i64 * 3600 * 1000).to_string()),
        ("min.cleanable.dirty.ratio", "0.5".to_string()),
        ("min.compaction.lag.ms", "0".to_string()),
        ("max.compaction.lag.ms", i64::MAX.to_string()),
        ("shardline.delivery.delay.ms", "0".to_string()),
        ("shardline.delivery.delay.max.ms", "0".to_string()),
        ("shardline.dlq.max.deliveries", "0".to_string()),
    ]
}

fn entry(name: &str, value: String, source: i8, version: i16) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = str_bytes(name);
    out.value = Some(str_bytes(&value));
    out.read_only = source == SOURCE_STATIC_BROKER;
    out.config_source = if version == 0 { -1 } else { source };
    out
}

/// DescribeConfigs on each topic, or on the cluster for the broker's.
pub(super) fn describe(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeConfigsRequest,
    version: i16,
) -> ResponseKind {
    let image = shard.image();
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let resource_of = match resource.resource_type {
            RESOURCE_TOPIC => Some(Resource::Topic(resource.resource_name.as_str())),
            RESOURCE_BROKER => Some(Resource::Cluster),
            _ => None,
        };
        let describable = resource_of.map(|of| access.check(&image, shardline_raft::AclOperation::DescribeConfigs, of));
        if let Some(Err(refused)) = describable {
            result.error_code = kafka_code(&refused);
            result.error_message = Some(str_bytes(&refused.to_string()));
            response.results.push(result);
            continue;
        }
        match resource.resource_type {
            RESOURCE_TOPIC => match image.topics.get(resource.resource_name.as_str()) {
                Some(topic) => {
                    for (name, default) in topic_defaults(shard) {
                        if !wanted(name) {
                            continue;
                        }
                        result.configs.push(match topic.configs.get(name) {
                            Some(value) => entry(name, value.clone(), SOURCE_TOPIC, version),
                            None => entry(name, default, SOURCE_DEFAULT, version),
                        });
                    }
                }
                None => {
                    result.error_code = kafka_code(&EngineError::UnknownTopicOrPartition);
                    result.error_message = Some(str_bytes("unknown topic"));
                }
            },
            RESOURCE_BROKER => {
                let node = shard.node_id().to_string();
                if !resource.resource_name.is_empty() && resource.resource_name.as_str() != node {
                    result.error_code = kafka_code(&EngineError::InvalidRequest("not this broker".into()));
                    result.error_message = Some(str_bytes("not this broker"));
                } else {
                    let broker = [
                        ("broker.id", node.clone()),
                        ("num.partitions", shard.config.default_partitions.to_string()),
                        ("auto.create.topics.enable", shard.config.auto_create_topics.to_string()),
                        ("log.dirs", shard.config.data_dir.display().to_string()),
                        ("shardline.shards", shard.shard_count.to_string()),
                        ("shardline.fsync", shard.config.fsync.to_string()),
                    ];
                    for (name, value) in broker {
                        if wanted(name) {
                            result.configs.push(entry(name, value, SOURCE_STATIC_BROKER, version));
                        }
                    }
                }
            }
            other => {
                let why = format!("unsupported resource type {other}");
                result.error_code = kafka_code(&EngineError::InvalidRequest(why.clone()));
                result.error_message = Some(str_bytes(&why));
            }
        }
        response.results.push(result);
    }
    ResponseKind::DescribeConfigs(response)
}
