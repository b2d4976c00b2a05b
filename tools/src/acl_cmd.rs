//! `shardctl acl ...`: the ACL bindings of a running broker, over the Kafka
//! protocol (CreateAcls, DescribeAcls, DeleteAcls), as `kafka-acls` does it.
//!
//! - `create --principal User:alice --operation Read [--operation Write]...
//!   (--topic T | --group G | --cluster | --transactional-id X)
//!   [--prefixed] [--host H] [--deny]`: one binding per operation.
//! - `list [filters]`: every binding the filters match, one per line.
//! - `delete [filters]`: removes every binding the filters match (at least
//!   a resource or a principal must be named) and lists them.
//!
//! Filters: `--principal`, `--host`, `--operation`, `--allow`/`--deny`, a
//! resource (`--topic` ... `--cluster`) and `--pattern any|match|literal|
//! prefixed` (default `literal` when a resource name is given with
//! `create`; `any` for `list` and `delete`; `match` lists what applies to
//! the named resource, through `*` and prefixes).
//!
//! The broker needs Alter on the cluster for create and delete, Describe for
//! list: run it as a super user (`SHARDCTL_SASL_USER`, `kafka_client.rs`).

use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::{
    create_acls_request::AclCreation, delete_acls_request::DeleteAclsFilter, CreateAclsRequest, DeleteAclsRequest,
    DescribeAclsRequest,
};
use shardline_raft::{AclOperation, AclPatternType, AclPermission, AclResourceType, CLUSTER_RESOURCE_NAME};

use crate::{
    error::ToolError,
    kafka_client::{refused, text, BrokerArgs, Client},
    report::{Report, Verdict},
};

/// Request versions the tool speaks (every Shardline broker serves them).
const ACLS_VERSION: i16 = 3;
/// Kafka's "any" code in filters.
const ANY: i8 = 1;
/// Kafka's MATCH pattern filter.
const PATTERN_MATCH: i8 = 2;

/// The `shardctl acl` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Create ACL bindings (one per --operation).
    Create(CreateArgs),
    /// List the ACL bindings the filters match.
    List(FilterArgs),
    /// Delete the ACL bindings the filters match, and list them.
    Delete(FilterArgs),
}

/// Which resource a binding or filter names.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub(crate) struct ResourceArgs {
    /// A topic (or topic prefix with --prefixed / --pattern prefixed).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (or prefix).
    #[arg(long)]
    group: Option<String>,
    /// A transactional id (or prefix).
    #[arg(long)]
    transactional_id: Option<String>,
    /// The cluster itself.
    #[arg(long)]
    cluster: bool,
}

impl ResourceArgs {
    /// (resource type, name), if a resource was named.
    fn named(&self) -> Option<(AclResourceType, &str)> {
        if self.cluster {
            return Some((AclResourceType::Cluster, CLUSTER_RESOURCE_NAME));
        }
        let named = [
            (AclResourceType::Topic, &self.topic),
            (AclResourceType::Group, &self.group),
            (AclResourceType::TransactionalId, &self.transactional_id),
        ];
        named
            .into_iter()
            .find_map(|(kind, name)| name.as_deref().map(|name| (kind, name)))
    }
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Who: `User:NAME`, or `User:*` for everyone.
    #[arg(long)]
    principal: String,
    /// From where: a client IP address, or `*`.
    #[arg(long, default_value = "*")]
    host: String,
    /// What (repeatable): All, Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite.
    #[arg(long = "operation", required = true, value_parser = parse_operation)]
    operations: Vec<AclOperation>,
    #[command(flatten)]
    resource: ResourceArgs,
    /// The resource name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow (a deny wins over every allow).
    #[arg(long)]
    deny: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// How a filter matches pattern types.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PatternFilter {
    /// Any pattern type, the exact name.
    Any,
    /// Everything that applies to the named resource (literal, `*`, prefixes).
    Match,
    /// Literal bindings only.
    Literal,
    /// Prefixed bindings only.
    Prefixed,
}

#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Only this principal.
    #[arg(long)]
    principal: Option<String>,
    /// Only this host.
    #[arg(long)]
    host: Option<String>,
    /// Only this operation.
    #[arg(long, value_parser = parse_operation)]
    operation: Option<AclOperation>,
    #[command(flatten)]
    resource: ResourceArgs,
    /// How the resource name matches.
    #[arg(long, value_enum, default_value = "any")]
    pattern: PatternFilter,
    /// Only allows.
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Only denies.
    #[arg(long)]
    deny: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

fn parse_operation(s: &str) -> Result<AclOperation, String> {
    AclOperation::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = AclOperation::ALL.iter().map(|o| o.name()).collect();
        format!("unknown operation `{s}`: use one of {}", names.join(", "))
    })
}

/// Runs a `shardctl acl` subcommand.
pub(crate) fn run(command: &AclCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        AclCommand::Create(args) => create(args, report),
        AclCommand::List(args) => list(args, report),
        AclCommand::Delete(args) => delete(args, report),
    }
}

/// One binding, as `list` and `delete` print it.
struct Line<'a> {
    principal: &'a str,
    host: &'a str,
    resource_type: i8,
    resource_name: &'a str,
    pattern_type: i8,
    operation: i8,
    permission: i8,
}

fn name_of<T>(code: i8, from_code: fn(i8) -> Option<T>, name: fn(T) -> &'static str) -> String {
    from_code(code).map_or_else(|| format!("code {code}"), |value| name(value).to_string())
}

fn print_header(report: &mut Report<'_>) -> Result<(), ToolError> {
    report.line(format_args!(
        "{:<24} {:<16} {:<16} {:<32} {:<9} {:<16} PERMISSION",
        "PRINCIPAL", "HOST", "RESOURCE_TYPE", "RESOURCE_NAME", "PATTERN", "OPERATION"
    ))
}

fn print(report: &mut Report<'_>, line: &Line<'_>) -> Result<(), ToolError> {
    report.line(format_args!(
        "{:<24} {:<16} {:<16} {:<32} {:<9} {:<16} {}",
        line.principal,
        line.host,
        name_of(line.resource_type, AclResourceType::from_code, AclResourceType::name),
        line.resource_name,
        name_of(line.pattern_type, AclPatternType::from_code, AclPatternType::name),
        name_of(line.operation, AclOperation::from_code, AclOperation::name),
        name_of(line.permission, AclPermission::from_code, AclPermission::name),
    ))
}

fn create(args: &CreateArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let Some((kind, name)) = args.resource.named() else {
        return Err(ToolError::Refused(
            "name a resource: --topic, --group, --transactional-id or --cluster".into(),
        ));
    };
    let pattern = if args.prefixed {
        AclPatternType::Prefixed
    } else {
        AclPatternType::Literal
    };
    let permission = if args.deny {
        AclPermission::Deny
    } else {
        AclPermission::Allow
    };
    let mut request = CreateAclsRequest::default();
    request.creations = args
        .operations
        .iter()
        .map(|operation| {
            let mut creation = AclCreation::default();
            creation.resource_type = kind.code();
            creation.resource_name = text(name);
            creation.resource_pattern_type = pattern.code();
            creation.principal = text(&args.principal);
            creation.host = text(&args.host);
            creation.operation = operation.code();
            creation.permission_type = permission.code();
            creation
        })
        .collect();
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("CreateAcls", ACLS_VERSION, &request)?;
    if response.results.len() != request.creations.len() {
        return Err(ToolError::Refused(format!(
            "CreateAcls: {} answers for {} bindings",
            response.results.len(),
            request.creations.len()
        )));
    }
    for (result, operation) in response.results.iter().zip(&args.operations) {
        if result.error_code != 0 {
            return Err(refused(
                &format!("creating the {} ACL", operation.name()),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        report.line(format_args!(
            "created {} {} on {} {name} ({}) for {} from {}",
            permission.name(),
            operation.name(),
            kind.name(),
            pattern.name(),
            args.principal,
            args.host
        ))?;
    }
    Ok(Verdict::Healthy)
}

/// The filter fields of `args`: (resource type, name, pattern, principal,
/// host, operation, permission), Kafka's codes.
struct WireFilter {
    resource_type: i8,
    resource_name: Option<String>,
    pattern_type: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
}

fn wire_filter(args: &FilterArgs) -> WireFilter {
    let named = args.resource.named();
    WireFilter {
        resource_type: named.map_or(ANY, |(kind, _)| kind.code()),
        resource_name: named.map(|(_, name)| name.to_string()),
        pattern_type: match args.pattern {
            PatternFilter::Any => ANY,
            PatternFilter::Match => PATTERN_MATCH,
            PatternFilter::Literal => AclPatternType::Literal.code(),
            PatternFilter::Prefixed => AclPatternType::Prefixed.code(),
        },
        principal: args.principal.clone(),
        host: args.host.clone(),
        operation: args.operation.map_or(ANY, AclOperation::code),
        permission: match (args.allow, args.deny) {
            (true, _) => AclPermission::Allow.code(),
            (_, true) => AclPermission::Deny.code(),
            _ => ANY,
        },
    }
}

fn list(args: &FilterArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let filter = wire_filter(args);
    let mut request = DescribeAclsRequest::default();
    request.resource_type_filter = filter.resource_type;
    request.resource_name_filter = filter.resource_name.as_deref().map(text);
    request.pattern_type_filter = filter.pattern_type;
    request.principal_filter = filter.principal.as_deref().map(text);
    request.host_filter = filter.host.as_deref().map(text);
    request.operation = filter.operation;
    request.permission_type = filter.permission;
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("DescribeAcls", ACLS_VERSION, &request)?;
    if response.error_code != 0 {
        return Err(refused(
            "listing ACLs",
            response.error_code,
            response.error_message.as_ref(),
        ));
    }
    print_header(report)?;
    for resource in &response.resources {
        for acl in &resource.acls {
            print(
                report,
                &Line {
                    principal: acl.principal.as_str(),
                    host: acl.host.as_str(),
                    resource_type: resource.resource_type,
                    resource_name: resource.resource_name.as_str(),
                    pattern_type: resource.pattern_type,
                    operation: acl.operation,
                    permission: acl.permission_type,
                },
            )?;
        }
    }
    Ok(Verdict::Healthy)
}

fn delete(args: &FilterArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    if args.resource.named().is_none() && args.principal.is_none() {
        return Err(ToolError::Refused(
            "name a resource or a --principal: delete does not remove every ACL at once".into(),
        ));
    }
    let filter = wire_filter(args);
    let mut wire = DeleteAclsFilter::default();
    wire.resource_type_filter = filter.resource_type;
    wire.resource_name_filter = filter.resource_name.as_deref().map(text);
    wire.pattern_type_filter = filter.pattern_type;
    wire.principal_filter = filter.principal.as_deref().map(text);
    wire.host_filter = filter.host.as_deref().map(text);
    wire.operation = filter.operation;
    wire.permission_type = filter.permission;
    let mut request = DeleteAclsRequest::default();
    request.filters = vec![wire];
    let mut client = Client::connect(&args.broker.bootstrap)?;
    let response = client.call("DeleteAcls", ACLS_VERSION, &request)?;
    let Some(result) = response.filter_results.first() else {
        return Err(ToolError::Refused("DeleteAcls: the broker answered no filter".into()));
    };
    if result.error_code != 0 {
        return Err(refused(
            "deleting ACLs",
            result.error_code,
            result.error_message.as_ref(),
        ));
    }
    report.line(format_args!("deleted {} ACL bindings", result.matching_acls.len()))?;
    print_header(report)?;
    for acl in &result.matching_acls {
        print(
            report,
            &Line {
                principal: acl.principal.as_str(),
                host: acl.host.as_str(),
                resource_type: acl.resource_type,
                resource_name: acl.resource_name.as_str(),
                pattern_type: acl.pattern_type,
                operation: acl.operation,
                permission: acl.permission_type,
            },
        )?;
    }
    Ok(Verdict::Healthy)
}
