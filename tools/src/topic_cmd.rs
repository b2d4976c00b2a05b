//! `shardctl topic ...`: topics of a running broker, over the Kafka protocol
//! (the tool is an ordinary Kafka client, see `kafka_client.rs`), as
//! `kafka-topics` or `rpk topic` do it.
//!
//! - `create T [--partitions N] [--replication-factor R] [--config K=V]...`
//!   (CreateTopics; -1, the default, takes the broker's own defaults).
//! - `list` shows every topic with its partition and replica counts
//!   (Metadata for all topics).
//! - `describe T` shows each partition's leader, replicas and in-sync
//!   replicas (Metadata for one topic), then the topic's configs with their
//!   source (DescribeConfigs).
//! - `alter T [--config K=V]... [--delete-config K]... [--validate-only]`
//!   sets and removes topic configs (IncrementalAlterConfigs: the configs
//!   not named keep their values), as `kafka-configs --alter`.
//! - `delete T` (DeleteTopics).
//!
//! A refusal (the topic exists, a policy violation, an unknown topic) is the
//! broker's error name and message, with exit status 2.

use clap::{Args, Subcommand};
use kafka_protocol::messages::{
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    describe_configs_request::DescribeConfigsResource,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};

use crate::{
    error::ToolError,
    kafka_client::{metadata, refused, text, BrokerArgs, Client},
    report::{Report, Table, Value, Verdict},
};

/// Request versions the tool speaks (every Shardline broker serves them).
const CREATE_TOPICS_VERSION: i16 = 7;
const DELETE_TOPICS_VERSION: i16 = 6;
const DESCRIBE_CONFIGS_VERSION: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_VERSION: i16 = 1;
/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
/// How long the broker may take to create or delete, as kafka-topics waits.
const TOPIC_TIMEOUT_MS: i32 = 30_000;

/// The `shardctl topic` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List every topic with its partition and replica counts.
    List(BrokerArgs),
    /// Show each partition of a topic (leader, replicas, in-sync replicas) and its configs.
    Describe(NamedArgs),
    /// Set or remove topic configs (the others keep their values).
    Alter(AlterArgs),
    /// Delete a topic and its data.
    Delete(NamedArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NamedArgs {
    /// The topic.
    topic: String,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The topic.
    topic: String,
    /// Partitions (-1: the broker's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    partitions: i32,
    /// Copies of each partition (-1: the broker's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    replication_factor: i16,
    /// A topic config, `KEY=VALUE` (repeat for more), e.g. `retention.ms=3600000`.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    configs: Vec<(String, String)>,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AlterArgs {
    /// The topic.
    topic: String,
    /// A config to set, `KEY=VALUE` (repeat for more), e.g. `retention.ms=3600000`.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    configs: Vec<(String, String)>,
    /// A config to remove (back to the broker's default); repeat for more.
    #[arg(long = "delete-config", value_name = "KEY")]
    deletes: Vec<String>,
    /// Only check the change; change nothing.
    #[arg(long)]
    validate_only: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Runs a `shardctl topic` subcommand.
pub(crate) fn run(command: &TopicCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        TopicCommand::Create(args) => create(args, report),
        TopicCommand::List(args) => list(&args.bootstrap, report),
        TopicCommand::Describe(args) => describe(&args.topic, &args.broker.bootstrap, report),
        TopicCommand::Alter(args) => alter(args, report),
        TopicCommand::Delete(args) => delete(&args.topic, &args.broker.bootstrap, report),
    }
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn create(args: &CreateArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text(&args.topic));
    topic.num_partitions = args.partitions;
    topic.replication_factor = args.replication_factor;
    topic.configs = args
        .configs
        .iter()
        .map(|(key, value)| {
            let mut config = CreatableTopicConfig::default();
            config.name = text(key);
            config.value = Some(text(value));
            config
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = TOPIC_TIMEOUT_MS;
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("CreateTopics", CREATE_TOPICS_VERSION, &request)?;
    let Some(result) = response.topics.iter().find(|t| t.name.0.as_str() == args.topic) else {
        return Err(ToolError::Refused(format!(
            "CreateTopics: the broker's answer does not name {}",
            args.topic
        )));
    };
    if result.error_code != 0 {
        return Err(refused(
            &format!("creating {}", args.topic),
            result.error_code,
            result.error_message.as_ref(),
        ));
    }
    report.line(format_args!(
        "created {} ({} partitions, replication factor {})",
        args.topic, result.num_partitions, result.replication_factor
    ))?;
    report.field("created", Value::text(&args.topic));
    report.field("partitions", Value::from(result.num_partitions));
    report.field("replication_factor", Value::from(i32::from(result.replication_factor)));
    Ok(Verdict::Healthy)
}

fn list(bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let response = metadata(bootstrap, None)?;
    let mut topics: Vec<_> = response
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|name| (name.0.as_str(), t)))
        .collect();
    topics.sort_by_key(|(name, _)| *name);
    let mut table = Table::new("topics", &["topic", "partitions", "replicas"]);
    for (name, topic) in topics {
        let replicas = topic.partitions.first().map_or(0, |p| p.replica_nodes.len());
        table.row(vec![
            Value::text(name),
            Value::from(topic.partitions.len()),
            Value::from(replicas),
        ]);
    }
    report.table(&table)?;
    Ok(Verdict::Healthy)
}

fn describe(topic: &str, bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let response = metadata(bootstrap, Some(topic))?;
    let Some(found) = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Err(ToolError::Refused(format!(
            "Metadata: the broker's answer does not name {topic}"
        )));
    };
    if found.error_code != 0 {
        return Err(refused(&format!("describing {topic}"), found.error_code, None));
    }
    let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
        nodes.iter().map(|n| n.0.to_string()).collect::<Vec<_>>().join(",")
    };
    let mut partitions: Vec<_> = found.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let mut table = Table::new(
        "partitions",
        &["topic", "partition", "leader", "leader_epoch", "replicas", "isr"],
    );
    for p in partitions {
        table.row(vec![
            Value::text(topic),
            Value::from(p.partition_index),
            Value::from(p.leader_id.0),
            Value::from(p.leader_epoch),
            Value::text(ids(&p.replica_nodes)),
            Value::text(ids(&p.isr_nodes)),
        ]);
    }
    report.table(&table)?;
    report.table(&configs(topic, bootstrap)?)?;
    Ok(Verdict::Healthy)
}

/// Kafka's names of DescribeConfigs `config_source` values.
fn config_source(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

/// The topic's configs as a table (DescribeConfigs).
fn configs(topic: &str, bootstrap: &str) -> Result<Table, ToolError> {
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = RESOURCE_TOPIC;
    resource.resource_name = text(topic);
    resource.configuration_keys = None;
    let mut request = DescribeConfigsRequest::default();
    request.resources = vec![resource];
    let mut client = Client::connect(bootstrap)?;
    let response = client.call("DescribeConfigs", DESCRIBE_CONFIGS_VERSION, &request)?;
    let Some(result) = response.results.first() else {
        return Err(ToolError::Refused(
            "DescribeConfigs: the broker's answer is empty".into(),
        ));
    };
    if result.error_code != 0 {
        return Err(refused(
            &format!("describing the configs of {topic}"),
            result.error_code,
            result.error_message.as_ref(),
        ));
    }
    let mut table = Table::new("configs", &["config", "value", "source"]);
    for config in &result.configs {
        table.row(vec![
            Value::text(config.name.as_str()),
            config.value.as_ref().map_or(Value::Null, |v| Value::text(v.as_str())),
            Value::text(config_source(config.config_source)),
        ]);
    }
    Ok(table)
}

fn alter(args: &AlterArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    if args.configs.is_empty() && args.deletes.is_empty() {
        return Err(ToolError::Refused(
            "nothing to alter: give --config KEY=VALUE or --delete-config KEY".into(),
        ));
    }
    let sets = args.configs.iter().map(|(key, value)| {
        let mut config = AlterableConfig::default();
        config.name = text(key);
        config.config_operation = OP_SET;
        config.value = Some(text(value));
        config
    });
    let deletes = args.deletes.iter().map(|key| {
        let mut config = AlterableConfig::default();
        config.name = text(key);
        config.config_operation = OP_DELETE;
        config
    });
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = RESOURCE_TOPIC;
    resource.resource_name = text(&args.topic);
    resource.configs = sets.chain(deletes).collect();
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    request.validate_only = args.validate_only;
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("IncrementalAlterConfigs", INCREMENTAL_ALTER_CONFIGS_VERSION, &request)?;
    let Some(result) = response.responses.first() else {
        return Err(ToolError::Refused(
            "IncrementalAlterConfigs: the broker's answer is empty".into(),
        ));
    };
    if result.error_code != 0 {
        return Err(refused(
            &format!("altering {}", args.topic),
            result.error_code,
            result.error_message.as_ref(),
        ));
    }
    let verb = if args.validate_only { "validated" } else { "altered" };
    report.line(format_args!(
        "{verb} {}: {} set, {} removed",
        args.topic,
        args.configs.len(),
        args.deletes.len()
    ))?;
    report.field(verb, Value::text(&args.topic));
    Ok(Verdict::Healthy)
}

fn delete(topic: &str, bootstrap: &str, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mut state = DeleteTopicState::default();
    state.name = Some(TopicName(text(topic)));
    let mut request = DeleteTopicsRequest::default();
    request.topics = vec![state];
    request.timeout_ms = TOPIC_TIMEOUT_MS;
    let mut client = Client::connect(bootstrap)?;
    let response = client.call("DeleteTopics", DELETE_TOPICS_VERSION, &request)?;
    let Some(result) = response
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Err(ToolError::Refused(format!(
            "DeleteTopics: the broker's answer does not name {topic}"
        )));
    };
    if result.error_code != 0 {
        return Err(refused(
            &format!("deleting {topic}"),
            result.error_code,
            result.error_message.as_ref(),
        ));
    }
    report.line(format_args!("deleted {topic}"))?;
    report.field("deleted", Value::text(topic));
    Ok(Verdict::Healthy)
}
