//! IncrementalAlterConfigs and AlterConfigs: topic config changes through
//! the metadata group (its `AlterTopicConfigs` command, all of a resource's
//! changes or none), applied live by every shard holding a replica
//! (`Shard::apply_image`). DescribeConfigs then shows them with source
//! DYNAMIC_TOPIC_CONFIG.
//!
//! What a topic takes is what the engine honours: `retention.ms`,
//! `retention.bytes`, `segment.bytes`, `segment.ms`, `max.message.bytes`,
//! `min.insync.replicas`, `shardline.fsync`, `cleanup.policy` (`delete`,
//! `compact` or both: the cleaner's settings `delete.retention.ms`,
//! `min.cleanable.dirty.ratio`, `min.compaction.lag.ms` and
//! `max.compaction.lag.ms` take effect at its next pass) and
//! `message.timestamp.type` (CreateTime, or LogAppendTime: the log stamps
//! batches from the next append), and `shardline.delivery.delay.ms` and
//! `shardline.delivery.delay.max.ms` (delayed delivery, `delivery.rs`: the
//! bound is found again at once) and `shardline.dlq.max.deliveries`
//! (dead-letter delivery, `coordinator/dlq.rs`: read at each OffsetFetch),
//! as the metadata group validates them
//! (`shardline_raft::validate_topic_config`). Anything else is
//! INVALID_CONFIG with the reason;
//! `validate_only` checks everything and changes nothing. Broker configs are
//! the engine's flags, fixed at start: altering one is INVALID_REQUEST
//! naming that.

use std::{collections::BTreeMap, rc::Rc};

use kafka_protocol::{
    messages::{
        alter_configs_response::AlterConfigsResourceResponse as LegacyResult,
        incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult, AlterConfigsRequest,
        AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
    },
    protocol::StrBytes,
};
use shardline_raft::{validate_topic_config, AclOperation, CONFIG_ENTRIES_MAX};

use super::{str_bytes, wait_all_shards};
use crate::{
    acl::{Access, Resource},
    coordinator::is_internal_topic,
    error::{kafka_code, AdminError, EngineError},
    shard::Shard,
};

/// ConfigResource types (Kafka's `ConfigResource.Type`).
pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One resource's changes: key → new value, or `None` to go back to the default.
type Changes = BTreeMap<String, Option<String>>;

/// The result of one resource: its type, name and outcome.
struct Outcome {
    resource_type: i8,
    resource_name: StrBytes,
    result: Result<(), EngineError>,
}

impl Outcome {
    /// Code and message for the response.
    fn code_and_message(&self) -> (i16, Option<StrBytes>) {
        match &self.result {
            Ok(()) => (0, None),
            Err(e) => (kafka_code(e), Some(str_bytes(&e.to_string()))),
        }
    }
}

fn invalid(why: String) -> EngineError {
    EngineError::Admin(AdminError::InvalidConfig(why))
}

/// Checks one topic config change: the metadata group's rules, then the
/// values the engine accepts but does not honour.
fn check_change(key: &str, value: Option<&str>) -> Result<(), EngineError> {
    validate_topic_config(key, value).map_err(EngineError::Meta)
}

/// The incremental operations of one resource as changes.
fn incremental_changes(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Changes, EngineError> {
    let mut changes = Changes::new();
    for config in configs {
        let key = config.name.to_string();
        let value = config.value.as_ref().map(|v| v.to_string());
        let change = match config.config_operation {
            OP_SET => match value {
                Some(value) => Some(value),
                None => return Err(invalid(format!("{key}: SET needs a value"))),
            },
            OP_DELETE => None,
            OP_APPEND | OP_SUBTRACT => {
                return Err(invalid(format!(
                    "{key}: APPEND and SUBTRACT apply to list configs; this broker has none it can change"
                )))
            }
            other => return Err(EngineError::InvalidRequest(format!("unknown config operation {other}"))),
        };
        if changes.insert(key.clone(), change).is_some() {
            return Err(EngineError::InvalidRequest(format!("{key} is named twice")));
        }
    }
    Ok(changes)
}

/// AlterConfigs replaces a resource's whole set: every key it names is set
/// (or deleted when null), every key it leaves out goes back to its default.
fn legacy_changes(
    shard: &Shard,
    topic: &str,
    configs: &[kafka_protocol::messages::alter_configs_request::AlterableConfig],
) -> Result<Changes, EngineError> {
    let image = shard.image();
    let current = image
        .topics
        .get(topic)
        .map(|t| t.configs.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let mut changes: Changes = current.into_iter().map(|key| (key, None)).collect();
    let mut named = std::collections::BTreeSet::new();
    for config in configs {
        let key = config.name.to_string();
        if !named.insert(key.clone()) {
            return Err(EngineError::InvalidRequest(format!("{key} is named twice")));
        }
        changes.insert(key, config.value.as_ref().map(|v| v.to_string()));
    }
    Ok(changes)
}

/// Validates and (unless `validate_only`) commits one resource's changes.
async fn alter_resource(
    shard: &Rc<Shard>,
    resource_type: i8,
    name: &str,
    changes: Result<Changes, EngineError>,
    validate_only: bool,
) -> Result<(), EngineError> {
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err(EngineError::InvalidRequest(
                "broker configs are the engine's flags, fixed at start (see `engine --help`); \
                 change topic configs instead"
                    .into(),
            ))
        }
        other => {
            return Err(EngineError::InvalidRequest(format!(
                "unsupported resource type {other}"
            )))
        }
    }
    if is_internal_topic(name) {
        return Err(EngineError::InternalTopic(name.to_string()));
    }
    if !shard.image().topics.contains_key(name) {
        return Err(EngineError::UnknownTopicOrPartition);
    }
    let changes = changes?;
    if changes.len() > CONFIG_ENTRIES_MAX {
        return Err(invalid(format!(
            "more than {CONFIG_ENTRIES_MAX} configs in one request"
        )));
    }
    for (key, value) in &changes {
        check_change(key, value.as_deref())?;
    }
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    let topic = shard.meta.alter_topic_configs(name, changes).await?;
    tracing::info!(topic = %name, configs = ?topic.configs, "topic configs altered");
    Ok(())
}

/// One resource of either request: its type, its name, and its changes
/// (or why they cannot be read).
type Asked = (i8, StrBytes, Result<Changes, EngineError>);

/// Alters every resource in order (each needs AlterConfigs on it: the topic,
/// or the cluster for a broker), then waits until every shard has the
/// result, so the next request anywhere sees it.
async fn alter_all(shard: &Rc<Shard>, access: &Access, asked: Vec<Asked>, validate_only: bool) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(asked.len());
    let image = shard.image();
    for (resource_type, resource_name, changes) in asked {
        let name = resource_name.to_string();
        let resource = if resource_type == RESOURCE_TOPIC {
            Resource::Topic(&name)
        } else {
            Resource::Cluster
        };
        let result = match access.check(&image, AclOperation::AlterConfigs, resource) {
            Ok(()) => alter_resource(shard, resource_type, &name, changes, validate_only).await,
            Err(refused) => Err(refused),
        };
        outcomes.push(Outcome {
            resource_type,
            resource_name,
            result,
        });
    }
    wait_all_shards(shard, shard.meta.image().epoch).await;
    outcomes
}

/// The response entries of both APIs: the same four fields in two types.
macro_rules! resource_results {
    ($outcomes:expr, $result:ty) => {
        $outcomes
            .iter()
            .map(|outcome| {
                let (code, message) = outcome.code_and_message();
                let mut result = <$result>::default();
                result.error_code = code;
                result.error_message = message;
                result.resource_type = outcome.resource_type;
                result.resource_name = outcome.resource_name.clone();
                result
            })
            .collect()
    };
}

pub(super) async fn incremental(
    shard: &Rc<Shard>,
    access: &Access,
    request: IncrementalAlterConfigsRequest,
) -> ResponseKind {
    let asked = request
        .resources
        .iter()
        .map(|r| {
            (
                r.resource_type,
                r.resource_name.clone(),
                incremental_changes(&r.configs),
            )
        })
        .collect();
    let outcomes = alter_all(shard, access, asked, request.validate_only).await;
    let mut response = IncrementalAlterConfigsResponse::default();
    response.responses = resource_results!(outcomes, IncrementalResult);
    ResponseKind::IncrementalAlterConfigs(response)
}

pub(super) async fn legacy(shard: &Rc<Shard>, access: &Access, request: AlterConfigsRequest) -> ResponseKind {
    let asked = request
        .resources
        .iter()
        .map(|r| {
            let changes = legacy_changes(shard, r.resource_name.as_str(), &r.configs);
            (r.resource_type, r.resource_name.clone(), changes)
        })
        .collect();
    let outcomes = alter_all(shard, access, asked, request.validate_only).await;
    let mut response = AlterConfigsResponse::default();
    response.responses = resource_results!(outcomes, LegacyResult);
    ResponseKind::AlterConfigs(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhonoured_and_unknown_configs_are_invalid_config() {
        assert!(check_change("retention.ms", Some("1000")).is_ok());
        assert!(check_change("retention.ms", None).is_ok());
        assert!(check_change("message.timestamp.type", Some("CreateTime")).is_ok());
        assert!(check_change("message.timestamp.type", Some("LogAppendTime")).is_ok());
        for (key, value) in [
            ("message.timestamp.type", Some("Now")),
            ("retention.ms", Some("soon")),
            ("no.such.config", Some("1")),
            ("cleanup.policy", Some("shred")),
        ] {
            let e = check_change(key, value).unwrap_err();
            assert_eq!(kafka_code(&e), 40, "{key}={value:?}: INVALID_CONFIG");
        }
    }
}
