//! Setup before the load: find a broker, create the topic if asked, learn partition leaders, and
//! read the offsets consumers start from.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use kafka_protocol::{
    messages::{
        create_topics_request::CreatableTopic,
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        ApiKey, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
    },
    protocol::StrBytes,
};

use crate::{
    error::{code_name, BenchError},
    wire::{Connection, REQUEST_TIMEOUT},
};

/// How long to wait for a (new) topic's partitions to all have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Pause between Metadata polls while waiting for leaders.
const LEADER_POLL: Duration = Duration::from_millis(100);
/// TOPIC_ALREADY_EXISTS: fine when `--partitions` asks to create a topic that is there.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION: "not there yet" right after a create, else "no such topic".
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's LEADER_NOT_AVAILABLE: the partition exists but is not served yet; waited for.
const LEADER_NOT_AVAILABLE: i16 = 5;

/// ListOffsets timestamp for the next offset to be written.
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp for the first offset still stored.
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// One partition and the broker leading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    /// Partition id.
    pub partition: i32,
    /// `host:port` of its leader.
    pub leader: String,
}

/// Connects to the first bootstrap broker that answers.
pub fn bootstrap(brokers: &[String]) -> Result<Connection, BenchError> {
    let mut last_error = BenchError::Usage("--brokers lists no broker".to_string());
    for address in brokers {
        match Connection::open(address) {
            Ok(connection) => return Ok(connection),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Whether CreateTopics made the topic or found it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic was created.
    Created,
    /// It already existed (its partition count may differ from the one asked for).
    AlreadyExisted,
}

/// Creates `topic` with `partitions` partitions (broker-default replication).
pub fn create_topic(connection: &mut Connection, topic: &str, partitions: i32) -> Result<CreateOutcome, BenchError> {
    let version = connection.apis.version(ApiKey::CreateTopics)?;
    // -1 (the broker's default replication factor) needs v4; older versions get 1.
    let replication_factor = if version >= 4 { -1 } else { 1 };
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)])
        .with_timeout_ms(i32::try_from(REQUEST_TIMEOUT.as_millis()).unwrap_or(i32::MAX))
        .with_validate_only(false);
    let response = connection.call(&request, version, "creating the topic")?;
    let result = response
        .topics
        .iter()
        .find(|result| result.name.0.as_str() == topic)
        .ok_or_else(|| BenchError::Protocol {
            address: connection.address().to_string(),
            detail: format!("CreateTopics response does not mention topic {topic}"),
        })?;
    match result.error_code {
        0 => Ok(CreateOutcome::Created),
        TOPIC_ALREADY_EXISTS => Ok(CreateOutcome::AlreadyExisted),
        code => Err(BenchError::Broker {
            api: "CreateTopics",
            subject: format!("topic {topic} ({partitions} partitions)"),
            code,
            message: result.error_message.as_ref().map(|m| m.as_str().to_string()),
        }),
    }
}

/// The partitions of `topic` and their leaders, waiting up to [`LEADER_WAIT`] for every partition
/// to have one. A topic just created may not be known at once, so with `just_created` an unknown
/// topic is waited for too; otherwise it is reported at once.
pub fn describe_topic(
    connection: &mut Connection,
    topic: &str,
    just_created: bool,
) -> Result<Vec<PartitionLeader>, BenchError> {
    let version = connection.apis.version(ApiKey::Metadata)?;
    let mut request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
    ]));
    if version >= 4 {
        request = request.with_allow_auto_topic_creation(false);
    }
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let response = connection.call(&request, version, "reading topic metadata")?;
        let brokers: BTreeMap<BrokerId, String> = response
            .brokers
            .iter()
            .map(|broker| (broker.node_id, format!("{}:{}", broker.host.as_str(), broker.port)))
            .collect();
        let found = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|name| name.0.as_str() == topic));
        let outcome: Result<Vec<PartitionLeader>, BenchError> = match found {
            None => Err(BenchError::Broker {
                api: "Metadata",
                subject: format!("topic {topic}"),
                code: UNKNOWN_TOPIC_OR_PARTITION,
                message: Some("topic missing from the response".to_string()),
            }),
            Some(found) if found.error_code != 0 => Err(BenchError::Broker {
                api: "Metadata",
                subject: format!("topic {topic}"),
                code: found.error_code,
                message: None,
            }),
            Some(found) => {
                let mut partitions = Vec::with_capacity(found.partitions.len());
                let mut missing = None;
                for partition in &found.partitions {
                    match brokers.get(&partition.leader_id) {
                        Some(leader) if partition.error_code == 0 => partitions.push(PartitionLeader {
                            partition: partition.partition_index,
                            leader: leader.clone(),
                        }),
                        _ => missing = Some((partition.partition_index, partition.error_code)),
                    }
                }
                partitions.sort_by_key(|p| p.partition);
                match missing {
                    Some((partition, code)) => Err(BenchError::Broker {
                        api: "Metadata",
                        subject: format!("{topic}/{partition}"),
                        code: if code == 0 { LEADER_NOT_AVAILABLE } else { code },
                        message: Some("partition has no leader".to_string()),
                    }),
                    None if partitions.is_empty() => Err(BenchError::Broker {
                        api: "Metadata",
                        subject: format!("topic {topic}"),
                        code: LEADER_NOT_AVAILABLE,
                        message: Some("topic has no partitions yet".to_string()),
                    }),
                    None => Ok(partitions),
                }
            }
        };
        match outcome {
            Ok(partitions) => return Ok(partitions),
            Err(BenchError::Broker { code, .. })
                if (code == LEADER_NOT_AVAILABLE || (just_created && code == UNKNOWN_TOPIC_OR_PARTITION))
                    && Instant::now() + LEADER_POLL < deadline =>
            {
                std::thread::sleep(LEADER_POLL);
            }
            Err(BenchError::Broker {
                code: UNKNOWN_TOPIC_OR_PARTITION,
                subject,
                ..
            }) if !just_created => {
                return Err(BenchError::Usage(format!(
                    "{subject} does not exist ({}); pass --partitions N to create it",
                    code_name(UNKNOWN_TOPIC_OR_PARTITION)
                )))
            }
            Err(error) => return Err(error),
        }
    }
}

/// Offsets of `partitions` (all led by the broker behind `connection`) at `timestamp`
/// ([`LATEST_TIMESTAMP`] or [`EARLIEST_TIMESTAMP`]).
pub fn list_offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, BenchError> {
    let version = connection.apis.version(ApiKey::ListOffsets)?;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&partition| {
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let response = connection.call(&request, version, "listing offsets")?;
    let mut offsets = BTreeMap::new();
    for topic_response in response.topics.iter().filter(|t| t.name.0.as_str() == topic) {
        for partition in &topic_response.partitions {
            BenchError::check_code(
                "ListOffsets",
                || format!("{topic}/{}", partition.partition_index),
                partition.error_code,
                None,
            )?;
            offsets.insert(partition.partition_index, partition.offset);
        }
    }
    if let Some(missing) = partitions.iter().find(|p| !offsets.contains_key(p)) {
        return Err(BenchError::Protocol {
            address: connection.address().to_string(),
            detail: format!("ListOffsets response has no entry for {topic}/{missing}"),
        });
    }
    Ok(offsets)
}
