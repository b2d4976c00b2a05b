//! `shardctl group ...`: consumer groups of a running broker, over the Kafka
//! protocol (the tool is an ordinary Kafka client, see `kafka_client.rs`).
//!
//! - `list` shows every group with its state (ListGroups).
//! - `describe G` shows the members and their assignments (FindCoordinator,
//!   DescribeGroups), and per partition the committed offset, the log end and
//!   the lag (OffsetFetch, ListOffsets).
//! - `reset-offsets G --to earliest|latest|OFFSET [--topic T]` rewrites the
//!   group's committed offsets (OffsetCommit as a "simple" commit, generation
//!   -1). The group must have no members: Kafka refuses a simple commit to an
//!   active group, and so does the tool, before it writes anything.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use kafka_protocol::{
    messages::{
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
        BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
        ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
    },
    protocol::{Decodable, StrBytes},
};

use crate::{
    error::ToolError,
    kafka_client::{refused, text, BrokerArgs, Client},
    report::{Report, Table, Value, Verdict},
};

/// Request versions the tool speaks: recent, non-batched ones every Shardline broker serves.
const FIND_COORDINATOR_VERSION: i16 = 3;
const LIST_GROUPS_VERSION: i16 = 4;
const DESCRIBE_GROUPS_VERSION: i16 = 5;
const OFFSET_FETCH_VERSION: i16 = 7;
const OFFSET_COMMIT_VERSION: i16 = 8;
const LIST_OFFSETS_VERSION: i16 = 7;
const METADATA_VERSION: i16 = 12;

/// ListOffsets timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// The `shardctl group` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// List every consumer group with its state.
    List(BrokerArgs),
    /// Show a group's members, their assignments, and committed offset, log end and lag per partition.
    Describe(DescribeArgs),
    /// Set a group's committed offsets to the earliest, the latest, or a given offset (group must be empty).
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    /// The group id.
    group: String,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// The group id.
    group: String,
    /// `earliest`, `latest`, or an offset (clamped into each partition's log).
    #[arg(long, value_name = "earliest|latest|OFFSET")]
    to: String,
    /// Reset every partition of this topic (default: the partitions the group has commits for).
    #[arg(long)]
    topic: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Runs a `shardctl group` subcommand.
pub(crate) fn run(command: &GroupCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        GroupCommand::List(args) => list(&args.bootstrap, report),
        GroupCommand::Describe(args) => describe(&args.group, &args.broker.bootstrap, report),
        GroupCommand::ResetOffsets(args) => reset(args, report),
    }
}

fn list(bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut client = Client::connect(bootstrap)?;
    let response = client.call("ListGroups", LIST_GROUPS_VERSION, &ListGroupsRequest::default())?;
    if response.error_code != 0 {
        return Err(refused("ListGroups", response.error_code, None));
    }
    let mut table = Table::new("groups", &["group", "state", "protocol_type"]);
    for group in &response.groups {
        table.row(vec![
            Value::text(group.group_id.0.as_str()),
            Value::text(group.group_state.as_str()),
            Value::text(dash(group.protocol_type.as_str())),
        ]);
    }
    report.table(&table)?;
    Ok(Verdict::Healthy)
}

/// A connection to the group's coordinator.
fn coordinator(bootstrap: &str, group: &str) -> Result<Client, ToolError> {
    let mut client = Client::connect(bootstrap)?;
    let request = FindCoordinatorRequest::default().with_key(text(group));
    let found = client.call("FindCoordinator", FIND_COORDINATOR_VERSION, &request)?;
    if found.error_code != 0 {
        return Err(refused("FindCoordinator", found.error_code, None));
    }
    let addr = format!("{}:{}", found.host.as_str(), found.port);
    if addr == bootstrap {
        Ok(client)
    } else {
        Client::connect(&addr)
    }
}

struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
}

/// A member as DescribeGroups shows it, with its assignment decoded.
struct MemberView {
    member_id: String,
    client_id: String,
    host: String,
    instance_id: Option<String>,
    /// Topic → assigned partitions.
    assigned: BTreeMap<String, Vec<i32>>,
}

fn describe_group(client: &mut Client, group: &str) -> Result<Described, ToolError> {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]);
    let response = client.call("DescribeGroups", DESCRIBE_GROUPS_VERSION, &request)?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| ToolError::Refused("DescribeGroups: empty answer".into()))?;
    if described.error_code != 0 {
        return Err(refused("DescribeGroups", described.error_code, None));
    }
    let consumer = described.protocol_type.as_str() == "consumer";
    let members = described
        .members
        .into_iter()
        .map(|m| {
            let mut assigned: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            if consumer {
                if let Some(assignment) = decode_assignment(m.member_assignment) {
                    for topic in assignment.assigned_partitions {
                        assigned
                            .entry(topic.topic.0.to_string())
                            .or_default()
                            .extend(topic.partitions);
                    }
                }
            }
            MemberView {
                member_id: m.member_id.to_string(),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                instance_id: m.group_instance_id.map(|i| i.to_string()),
                assigned,
            }
        })
        .collect();
    Ok(Described {
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
    })
}

/// A consumer-protocol assignment: `version i16` then the struct at that version.
fn decode_assignment(mut bytes: bytes::Bytes) -> Option<ConsumerProtocolAssignment> {
    if bytes.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
    let _ = bytes::Buf::get_i16(&mut bytes);
    ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)).ok()
}

/// Committed offsets of `group`: (topic, partition) → offset.
fn committed(client: &mut Client, group: &str) -> Result<BTreeMap<(String, i32), i64>, ToolError> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_topics(None);
    let response = client.call("OffsetFetch", OFFSET_FETCH_VERSION, &request)?;
    if response.error_code != 0 {
        return Err(refused("OffsetFetch", response.error_code, None));
    }
    let mut out = BTreeMap::new();
    for topic in response.topics {
        for partition in topic.partitions {
            if partition.error_code == 0 && partition.committed_offset >= 0 {
                out.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// The offsets at `timestamp` (EARLIEST or LATEST) of the given partitions.
fn log_offsets(
    client: &mut Client,
    partitions: &[(String, i32)],
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>, ToolError> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let topics = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )
        })
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(topics);
    let response = client.call("ListOffsets", LIST_OFFSETS_VERSION, &request)?;
    let mut out = BTreeMap::new();
    for topic in response.topics {
        for partition in topic.partitions {
            if partition.error_code == 0 {
                out.insert((topic.name.0.to_string(), partition.partition_index), partition.offset);
            }
        }
    }
    Ok(out)
}

fn describe(group: &str, bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut client = coordinator(bootstrap, group)?;
    let described = describe_group(&mut client, group)?;
    let offsets = committed(&mut client, group)?;
    report.field("group", Value::text(group));
    report.field("state", Value::text(&described.state));
    report.field("members", Value::from(described.members.len()));
    report.line(format_args!(
        "group {group} state={} protocol_type={} protocol={} members={}",
        described.state,
        dash(&described.protocol_type),
        dash(&described.protocol),
        described.members.len()
    ))?;
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for member in &described.members {
        let assignment: Vec<String> = member
            .assigned
            .iter()
            .map(|(topic, partitions)| {
                let list: Vec<String> = partitions.iter().map(ToString::to_string).collect();
                format!("{topic}:{}", list.join(","))
            })
            .collect();
        report.line(format_args!(
            "member {} client_id={} host={} instance={} assigned={}",
            member.member_id,
            member.client_id,
            member.host,
            member.instance_id.as_deref().unwrap_or("-"),
            if assignment.is_empty() {
                "-".to_string()
            } else {
                assignment.join(";")
            }
        ))?;
        for (topic, partitions) in &member.assigned {
            for partition in partitions {
                owner.insert((topic.clone(), *partition), member.member_id.clone());
            }
        }
    }
    let mut partitions: Vec<(String, i32)> = offsets.keys().cloned().collect();
    for key in owner.keys() {
        if !offsets.contains_key(key) {
            partitions.push(key.clone());
        }
    }
    partitions.sort();
    let mut bootstrap_client = Client::connect(bootstrap)?;
    let ends = log_offsets(&mut bootstrap_client, &partitions, LATEST)?;
    let offset = |value: Option<i64>| value.map_or(Value::Null, Value::Int);
    let mut table = Table::new(
        "offsets",
        &["topic", "partition", "committed", "log_end", "lag", "member"],
    );
    for key in &partitions {
        let committed = offsets.get(key).copied();
        let end = ends.get(key).copied();
        let lag = committed.zip(end).map(|(c, e)| (e - c).max(0));
        table.row(vec![
            Value::text(&key.0),
            Value::from(key.1),
            offset(committed),
            offset(end),
            offset(lag),
            Value::text(owner.get(key).map_or("-", String::as_str)),
        ]);
    }
    report.table(&table)?;
    Ok(Verdict::Healthy)
}

fn dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

/// Where `--to` points.
enum Target {
    Earliest,
    Latest,
    Offset(i64),
}

fn parse_target(to: &str) -> Result<Target, ToolError> {
    match to {
        "earliest" => Ok(Target::Earliest),
        "latest" => Ok(Target::Latest),
        other => other
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(Target::Offset)
            .ok_or_else(|| ToolError::Refused(format!("--to {other}: expected earliest, latest or an offset ≥ 0"))),
    }
}

fn topic_partitions(client: &mut Client, topic: &str) -> Result<Vec<(String, i32)>, ToolError> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(text(topic))))
    ]));
    let response = client.call("Metadata", METADATA_VERSION, &request)?;
    let found = response
        .topics
        .into_iter()
        .next()
        .ok_or_else(|| ToolError::Refused(format!("topic {topic}: no metadata")))?;
    if found.error_code != 0 {
        return Err(refused(&format!("topic {topic}"), found.error_code, None));
    }
    Ok(found
        .partitions
        .iter()
        .map(|p| (topic.to_string(), p.partition_index))
        .collect())
}

fn reset(args: &ResetArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let target = parse_target(&args.to)?;
    let group = args.group.as_str();
    let mut client = coordinator(&args.broker.bootstrap, group)?;
    let described = describe_group(&mut client, group)?;
    if !described.members.is_empty() || !matches!(described.state.as_str(), "Empty" | "Dead") {
        return Err(ToolError::Refused(format!(
            "group {group} is {} with {} member(s): stop its consumers before resetting offsets",
            described.state,
            described.members.len()
        )));
    }
    let before = committed(&mut client, group)?;
    let mut bootstrap_client = Client::connect(&args.broker.bootstrap)?;
    let partitions: Vec<(String, i32)> = match &args.topic {
        Some(topic) => topic_partitions(&mut bootstrap_client, topic)?,
        None => before.keys().cloned().collect(),
    };
    if partitions.is_empty() {
        return Err(ToolError::Refused(format!(
            "group {group} has no committed offsets: name a topic with --topic"
        )));
    }
    let earliest = log_offsets(&mut bootstrap_client, &partitions, EARLIEST)?;
    let latest = log_offsets(&mut bootstrap_client, &partitions, LATEST)?;
    let mut new_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for key in &partitions {
        let (Some(low), Some(high)) = (earliest.get(key).copied(), latest.get(key).copied()) else {
            return Err(ToolError::Refused(format!(
                "{}:{}: the broker did not report its offsets",
                key.0, key.1
            )));
        };
        let offset = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offset(o) => o.clamp(low, high),
        };
        new_offsets.insert(key.clone(), offset);
    }
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), offset) in &new_offsets {
        by_topic.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text(topic)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.call("OffsetCommit", OFFSET_COMMIT_VERSION, &request)?;
    for topic in &response.topics {
        for partition in &topic.partitions {
            if partition.error_code != 0 {
                return Err(refused(
                    &format!("OffsetCommit {}:{}", topic.name.0.as_str(), partition.partition_index),
                    partition.error_code,
                    None,
                ));
            }
        }
    }
    let mut table = Table::new("reset", &["topic", "partition", "old", "new"]);
    for (key, offset) in &new_offsets {
        table.row(vec![
            Value::text(&key.0),
            Value::from(key.1),
            before.get(key).map_or(Value::Null, |old| Value::Int(*old)),
            Value::Int(*offset),
        ]);
    }
    report.table(&table)?;
    Ok(Verdict::Healthy)
}
