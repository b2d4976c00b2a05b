//! `shardctl partition ...`: where partitions are placed and led, and what
//! they hold, over the Kafka admin protocol (as `kafka-reassign-partitions`,
//! `kafka-leader-election`, `kafka-delete-records` and
//! `kafka-transactions describe-producers` do it).
//!
//! - `move T P --replicas 1,2,3`: AlterPartitionReassignments to those
//!   broker ids; returns once the move has started (the new replicas then
//!   copy the log and the move completes when they are in sync).
//! - `reassignments`: ListPartitionReassignments, the moves in progress.
//! - `elect-leaders [T [P]]`: preferred leader election (ElectLeaders).
//! - `delete-records T P --before OFFSET`: DeleteRecords, sent to the
//!   partition's leader (-1: up to the high watermark).
//! - `producers T P`: DescribeProducers, sent to the partition's leader.

use clap::{Args, Subcommand};
use kafka_protocol::messages::{
    alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic},
    delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic},
    describe_producers_request::TopicRequest,
    elect_leaders_request::TopicPartitions,
    AlterPartitionReassignmentsRequest, BrokerId, DeleteRecordsRequest, DescribeProducersRequest, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};

use crate::{
    error::ToolError,
    kafka_client::{metadata, refused, text, BrokerArgs, Client},
    report::{Report, Table, Value, Verdict},
};

/// Request versions the tool speaks (every Shardline broker serves them).
const ALTER_REASSIGNMENTS_VERSION: i16 = 0;
const LIST_REASSIGNMENTS_VERSION: i16 = 0;
const ELECT_LEADERS_VERSION: i16 = 2;
const DELETE_RECORDS_VERSION: i16 = 2;
const DESCRIBE_PRODUCERS_VERSION: i16 = 0;
/// How long the broker may take, as the Kafka tools wait.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// ElectLeaders: preferred replica election.
const ELECTION_PREFERRED: i8 = 0;
/// Kafka's ELECTION_NOT_NEEDED: the preferred replica leads already (not a failure).
const ELECTION_NOT_NEEDED: i16 = 84;

/// The `shardctl partition` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PartitionCommand {
    /// Move a partition's replicas to other brokers (AlterPartitionReassignments).
    Move(MoveArgs),
    /// List partition reassignments in progress.
    Reassignments(BrokerArgs),
    /// Make each partition's preferred replica its leader again (all partitions, one topic's, or one).
    ElectLeaders(ElectArgs),
    /// Delete a partition's records below an offset (DeleteRecords).
    DeleteRecords(DeleteArgs),
    /// Show the idempotent producers a partition remembers (DescribeProducers).
    Producers(PartitionArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PartitionArgs {
    /// The topic.
    topic: String,
    /// The partition.
    partition: i32,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MoveArgs {
    /// The topic.
    topic: String,
    /// The partition.
    partition: i32,
    /// The new replicas, broker ids in preference order (the first leads), e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true)]
    replicas: Vec<i32>,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ElectArgs {
    /// Only this topic's partitions.
    topic: Option<String>,
    /// Only this partition of the topic.
    partition: Option<i32>,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The topic.
    topic: String,
    /// The partition.
    partition: i32,
    /// Records below this offset are deleted (-1: every record below the high watermark).
    #[arg(long, allow_negative_numbers = true)]
    before: i64,
    #[command(flatten)]
    broker: BrokerArgs,
}

pub(crate) fn run(command: &PartitionCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        PartitionCommand::Move(args) => move_replicas(args, report),
        PartitionCommand::Reassignments(args) => reassignments(&args.bootstrap, report),
        PartitionCommand::ElectLeaders(args) => elect_leaders(args, report),
        PartitionCommand::DeleteRecords(args) => delete_records(args, report),
        PartitionCommand::Producers(args) => producers(args, report),
    }
}

/// A connection to the broker leading `topic`'s `partition` (found with a
/// Metadata request to `bootstrap`).
fn leader_client(bootstrap: &str, topic: &str, partition: i32) -> Result<Client, ToolError> {
    let metadata = metadata(bootstrap, Some(topic))?;
    let found = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| ToolError::Refused(format!("Metadata: the broker's answer does not name {topic}")))?;
    if found.error_code != 0 {
        return Err(refused(&format!("looking up {topic}"), found.error_code, None));
    }
    let leader = found
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .map(|p| p.leader_id.0)
        .ok_or_else(|| ToolError::Refused(format!("{topic} has no partition {partition}")))?;
    let broker = metadata
        .brokers
        .iter()
        .find(|b| b.node_id.0 == leader)
        .ok_or_else(|| ToolError::Refused(format!("{topic}-{partition} has no leader now (leader {leader})")))?;
    Client::connect(&format!("{}:{}", broker.host.as_str(), broker.port))
}

/// The answer for `partition` among a response's partition answers.
fn answer_for<'a, T>(
    answers: impl IntoIterator<Item = &'a T>,
    index_of: impl Fn(&T) -> i32,
    partition: i32,
    what: &str,
) -> Result<&'a T, ToolError> {
    answers
        .into_iter()
        .find(|answer| index_of(answer) == partition)
        .ok_or_else(|| ToolError::Refused(format!("{what}: the broker's answer does not name the partition")))
}

fn move_replicas(args: &MoveArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut partition = ReassignablePartition::default();
    partition.partition_index = args.partition;
    partition.replicas = Some(args.replicas.iter().map(|id| BrokerId(*id)).collect());
    let mut topic = ReassignableTopic::default();
    topic.name = TopicName(text(&args.topic));
    topic.partitions = vec![partition];
    let mut request = AlterPartitionReassignmentsRequest::default();
    request.timeout_ms = ADMIN_TIMEOUT_MS;
    request.topics = vec![topic];
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("AlterPartitionReassignments", ALTER_REASSIGNMENTS_VERSION, &request)?;
    let what = format!("moving {}-{}", args.topic, args.partition);
    if response.error_code != 0 {
        return Err(refused(&what, response.error_code, response.error_message.as_ref()));
    }
    let partitions = response.responses.iter().flat_map(|t| t.partitions.iter());
    let result = answer_for(partitions, |p| p.partition_index, args.partition, &what)?;
    if result.error_code != 0 {
        return Err(refused(&what, result.error_code, result.error_message.as_ref()));
    }
    let replicas = args
        .replicas
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    report.line(format_args!(
        "{}-{}: replicas {replicas} accepted",
        args.topic, args.partition
    ))?;
    report.field("topic", Value::text(&args.topic));
    report.field("partition", Value::from(args.partition));
    report.field("replicas", Value::text(replicas));
    Ok(Verdict::Healthy)
}

fn reassignments(bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut request = ListPartitionReassignmentsRequest::default();
    request.timeout_ms = ADMIN_TIMEOUT_MS;
    request.topics = None;
    let mut client = Client::connect(bootstrap)?;
    let response = client.call("ListPartitionReassignments", LIST_REASSIGNMENTS_VERSION, &request)?;
    if response.error_code != 0 {
        return Err(refused(
            "listing reassignments",
            response.error_code,
            response.error_message.as_ref(),
        ));
    }
    let ids = |nodes: &[BrokerId]| nodes.iter().map(|n| n.0.to_string()).collect::<Vec<_>>().join(",");
    let mut table = Table::new(
        "reassignments",
        &["topic", "partition", "replicas", "adding", "removing"],
    );
    for topic in &response.topics {
        for p in &topic.partitions {
            table.row(vec![
                Value::text(topic.name.0.as_str()),
                Value::from(p.partition_index),
                Value::text(ids(&p.replicas)),
                Value::text(ids(&p.adding_replicas)),
                Value::text(ids(&p.removing_replicas)),
            ]);
        }
    }
    report.table(&table)?;
    Ok(Verdict::Healthy)
}

fn elect_leaders(args: &ElectArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut request = ElectLeadersRequest::default();
    request.election_type = ELECTION_PREFERRED;
    request.timeout_ms = ADMIN_TIMEOUT_MS;
    request.topic_partitions = match &args.topic {
        None => None,
        Some(topic) => {
            let partitions = match args.partition {
                Some(partition) => vec![partition],
                None => metadata(&args.broker.bootstrap, Some(topic))?
                    .topics
                    .iter()
                    .filter(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
                    .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
                    .collect(),
            };
            let mut wanted = TopicPartitions::default();
            wanted.topic = TopicName(text(topic));
            wanted.partitions = partitions;
            Some(vec![wanted])
        }
    };
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("ElectLeaders", ELECT_LEADERS_VERSION, &request)?;
    if response.error_code != 0 {
        return Err(refused("electing leaders", response.error_code, None));
    }
    let mut table = Table::new("elections", &["topic", "partition", "result"]);
    let mut failed = None;
    for topic in &response.replica_election_results {
        for p in &topic.partition_result {
            let result = match p.error_code {
                0 => "elected".to_string(),
                ELECTION_NOT_NEEDED => "not needed".to_string(),
                code => {
                    failed.get_or_insert_with(|| refused("electing leaders", code, p.error_message.as_ref()));
                    kafka_protocol::ResponseError::try_from_code(code)
                        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"))
                }
            };
            table.row(vec![
                Value::text(topic.topic.0.as_str()),
                Value::from(p.partition_id),
                Value::text(result),
            ]);
        }
    }
    report.table(&table)?;
    match failed {
        Some(error) => Err(error),
        None => Ok(Verdict::Healthy),
    }
}

fn delete_records(args: &DeleteArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut partition = DeleteRecordsPartition::default();
    partition.partition_index = args.partition;
    partition.offset = args.before;
    let mut topic = DeleteRecordsTopic::default();
    topic.name = TopicName(text(&args.topic));
    topic.partitions = vec![partition];
    let mut request = DeleteRecordsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = ADMIN_TIMEOUT_MS;
    let mut client = leader_client(&args.broker.bootstrap, &args.topic, args.partition)?;
    let response = client.call("DeleteRecords", DELETE_RECORDS_VERSION, &request)?;
    let what = format!("deleting records of {}-{}", args.topic, args.partition);
    let partitions = response.topics.iter().flat_map(|t| t.partitions.iter());
    let result = answer_for(partitions, |p| p.partition_index, args.partition, &what)?;
    if result.error_code != 0 {
        return Err(refused(&what, result.error_code, None));
    }
    report.line(format_args!(
        "{}-{}: log start offset is now {}",
        args.topic, args.partition, result.low_watermark
    ))?;
    report.field("topic", Value::text(&args.topic));
    report.field("partition", Value::from(args.partition));
    report.field("low_watermark", Value::from(result.low_watermark));
    Ok(Verdict::Healthy)
}

fn producers(args: &PartitionArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut topic = TopicRequest::default();
    topic.name = TopicName(text(&args.topic));
    topic.partition_indexes = vec![args.partition];
    let mut request = DescribeProducersRequest::default();
    request.topics = vec![topic];
    let mut client = leader_client(&args.broker.bootstrap, &args.topic, args.partition)?;
    let response = client.call("DescribeProducers", DESCRIBE_PRODUCERS_VERSION, &request)?;
    let what = format!("describing the producers of {}-{}", args.topic, args.partition);
    let partitions = response.topics.iter().flat_map(|t| t.partitions.iter());
    let result = answer_for(partitions, |p| p.partition_index, args.partition, &what)?;
    if result.error_code != 0 {
        return Err(refused(&what, result.error_code, result.error_message.as_ref()));
    }
    let mut table = Table::new(
        "producers",
        &["producer_id", "epoch", "last_sequence", "last_timestamp_ms"],
    );
    for producer in &result.active_producers {
        table.row(vec![
            Value::from(producer.producer_id.0),
            Value::from(producer.producer_epoch),
            Value::from(producer.last_sequence),
            Value::from(producer.last_timestamp),
        ]);
    }
    report.table(&table)?;
    Ok(Verdict::Healthy)
}
