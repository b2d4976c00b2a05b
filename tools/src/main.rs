//! # `shardctl`: the Shardline operator's tool
//!
//! `shardctl` is what an operator runs next to a Shardline broker to look at,
//! and administer, what the broker keeps. It is a plain process, not a
//! shard: it has no glommio executor and takes no lock in the broker's files.
//! `shardctl log` reads files only; `shardctl group` and `shardctl topic` are
//! ordinary Kafka clients of a running broker (`--bootstrap`, default
//! 127.0.0.1:9092).
//!
//! ## What it reads
//! `shardctl log` reads one *partition directory* straight from disk: the
//! `<base_offset>.log` segment files of the partition log (crate
//! `shardline-log`), each a run of Kafka RecordBatch v2 batches followed, in
//! the active segment, by zero fill up to the file's fixed size. It only ever
//! opens files for reading, so it is safe on a stopped broker's directory, a
//! copy, or a backup. On a running broker's directory it works too, but the
//! batch being written at that moment may read as torn; what it reports about
//! the active segment's tail is then a snapshot, not damage. The
//! `<base_offset>.index` files are derived data with a format private to the
//! log; they are only reported, never checked.
//!
//! "Valid" means what it means to the broker: every batch goes through
//! `shardline_log::validate_stored` (header, length, magic, record count, codec,
//! CRC-32C), and offsets must continue from batch to batch and from one
//! segment file to the next, as the log's recovery requires.
//!
//! ## Commands
//! - `shardctl log dump DIR`: every segment and every batch header, one line
//!   per batch, like Kafka's `kafka-dump-log`.
//! - `shardctl log verify DIR`: a one-line verdict, or the first corruption
//!   with its file, offset, position and reason.
//! - `shardctl group list`, `shardctl group describe G` (members, assignment,
//!   committed offset and lag per partition), `shardctl group reset-offsets G
//!   --to earliest|latest|OFFSET [--topic T]` (the group must be empty).
//! - `shardctl topic create T [--partitions N] [--replication-factor R]
//!   [--config K=V]...`, `shardctl topic list`, `shardctl topic describe T`,
//!   `shardctl topic alter T [--config K=V]... [--delete-config K]...`,
//!   `shardctl topic delete T`.
//! - `shardctl cluster status`: brokers, controller, shards, partitions per
//!   shard, under-replicated and offline partitions.
//! - `shardctl partition move|reassignments|elect-leaders|delete-records|producers`.
//! - `shardctl top [--http HOST:PORT] [--iterations N]`: per-shard request
//!   rates and latencies from the broker's `/metrics`.
//! - `shardctl acl create|list|delete` (`acl_cmd.rs`), `shardctl user
//!   add|list|delete` (`user_cmd.rs`).
//!
//! Every command takes the global `--output table|json`: aligned tables (the
//! default) or one JSON object for scripts (`report.rs`). With
//! `SHARDCTL_SASL_USER` and `SHARDCTL_SASL_PASSWORD` set, every broker
//! connection logs in with SASL PLAIN first (a SASL_PLAINTEXT or SASL_SSL
//! listener); with `SHARDCTL_TLS_CA` set it speaks TLS, trusting that CA
//! (and presents `SHARDCTL_TLS_CERT`/`SHARDCTL_TLS_KEY` if set: `tls.rs`).
//!
//! ## Exit status
//! - 0: the command ran and found nothing wrong.
//! - 1: the command ran and found corruption (it says where).
//! - 2: the command could not run: a usage error (clap uses 2 as well), a
//!   missing directory, an I/O error, an unreachable broker or a refused
//!   request (e.g. resetting the offsets of a group that has members). The
//!   message on stderr says which.
//!
//! ## Layout
//! This file holds the command tree and turns results into exit statuses. Each
//! command group is a module with its own clap `Subcommand` enum and a `run`
//! function (`log_cmd`); a new group (`shardctl group ...`, `shardctl topic
//! ...`) is one more `Command` variant and one more module. Commands return a
//! [`report::Verdict`] or a [`error::ToolError`], and write their output
//! through a [`report::Report`].

mod acl_cmd;
mod cluster_cmd;
mod error;
mod group_cmd;
mod kafka_client;
mod log_cmd;
mod partition_cmd;
mod prometheus_text;
mod report;
mod segment_walk;
mod tls;
mod top_cmd;
mod topic_cmd;
mod user_cmd;

use std::{
    io::{self, BufWriter, Write},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

use crate::{
    error::ToolError,
    report::{Report, Verdict},
};

/// Exit status when the command found nothing wrong.
const EXIT_HEALTHY: u8 = 0;
/// Exit status when the command found and reported corruption.
const EXIT_CORRUPT: u8 = 1;
/// Exit status when the command could not run; the same as clap's for a usage error.
const EXIT_FAILED: u8 = 2;

/// Shardline admin and offline inspection tool.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, about, long_about = None)]
struct Cli {
    /// Output: aligned tables for people, or one JSON object for scripts.
    #[arg(long, global = true, value_enum, default_value_t = report::OutputFormat::Table)]
    output: report::OutputFormat,
    #[command(subcommand)]
    command: Command,
}

/// Command groups.
#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a partition log on disk (read-only).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Consumer groups of a running broker (a Kafka client of it: --bootstrap).
    #[command(subcommand)]
    Group(group_cmd::GroupCommand),
    /// Topics of a running broker: create, list, describe, alter, delete (a Kafka client of it: --bootstrap).
    #[command(subcommand)]
    Topic(topic_cmd::TopicCommand),
    /// The cluster as a whole: brokers, controller, shards, partitions (a Kafka client: --bootstrap).
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Partitions: move replicas, elect preferred leaders, delete records, show producers.
    #[command(subcommand)]
    Partition(partition_cmd::PartitionCommand),
    /// A live view of per-shard request rates and latencies from the broker's /metrics (--http).
    Top(top_cmd::TopArgs),
    /// ACLs of a running broker: create, list, delete (a Kafka client of it: --bootstrap).
    #[command(subcommand)]
    Acl(acl_cmd::AclCommand),
    /// SCRAM users kept by a running broker: add, list, delete (a Kafka client of it: --bootstrap).
    #[command(subcommand)]
    User(user_cmd::UserCommand),
}

fn run(command: &Command, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        Command::Log(log_command) => log_cmd::run(log_command, report),
        Command::Group(group_command) => group_cmd::run(group_command, report),
        Command::Topic(topic_command) => topic_cmd::run(topic_command, report),
        Command::Cluster(cluster_command) => cluster_cmd::run(cluster_command, report),
        Command::Partition(partition_command) => partition_cmd::run(partition_command, report),
        Command::Top(args) => top_cmd::run(args, report),
        Command::Acl(acl_command) => acl_cmd::run(acl_command, report),
        Command::User(user_command) => user_cmd::run(user_command, report),
    }
}

fn main() -> ExitCode {
    // On a usage error clap prints the usage and exits with status 2 itself.
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut report = Report::new(&mut out, cli.output);
    let result = run(&cli.command, &mut report).and_then(|verdict| report.finish().map(|()| verdict));
    // Flush what was reported before any error message, so the two read in order.
    let flushed = out.flush().map_err(ToolError::Output);
    match result.and_then(|verdict| flushed.map(|()| verdict)) {
        Ok(Verdict::Healthy) => ExitCode::from(EXIT_HEALTHY),
        Ok(Verdict::Corrupt) => ExitCode::from(EXIT_CORRUPT),
        // Whoever read the output stopped reading (`shardctl log dump DIR | head`):
        // nothing to tell them.
        Err(ToolError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_FAILED),
        Err(e) => {
            // If stderr is gone too, the exit status is all that is left to say.
            let _ = writeln!(io::stderr(), "shardctl: error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
