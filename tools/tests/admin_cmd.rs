//! `shardctl topic alter`, `cluster status`, `partition ...` and `top` as the
//! real binary against a real engine process, in both output formats
//! (`--output json` parsed as JSON).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

mod common;

use common::{shardctl, stdout_of};
use shardline_testkit::Engine;

/// The JSON object a successful `--output json` run printed.
fn json(output: &Output) -> serde_json::Value {
    let text = stdout_of(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn refused_with(output: &Output, name: &str) {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(name), "expected {name}: {stderr}");
}

#[test]
fn topic_alter_partition_commands_and_cluster_status() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    stdout_of(&shardctl(&engine, "topic", &["create", "audit", "--partitions", "2"]));

    let altered = stdout_of(&shardctl(
        &engine,
        "topic",
        &[
            "alter",
            "audit",
            "--config",
            "retention.ms=1234567",
            "--config",
            "retention.bytes=999999",
        ],
    ));
    assert!(altered.contains("altered audit: 2 set, 0 removed"), "{altered}");
    stdout_of(&shardctl(
        &engine,
        "topic",
        &["alter", "audit", "--delete-config", "retention.bytes"],
    ));
    let validated = json(&shardctl(
        &engine,
        "topic",
        &[
            "alter",
            "audit",
            "--config",
            "retention.ms=1",
            "--validate-only",
            "--output",
            "json",
        ],
    ));
    assert_eq!(validated["validated"], "audit");
    refused_with(
        &shardctl(&engine, "topic", &["alter", "audit", "--config", "retention.ms=soon"]),
        "InvalidConfig",
    );

    let described = json(&shardctl(&engine, "topic", &["describe", "audit", "--output", "json"]));
    assert_eq!(described["partitions"].as_array().unwrap().len(), 2, "{described}");
    let config = |key: &str| {
        described["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["config"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing: {described}"))
    };
    assert_eq!(
        config("retention.ms")["value"],
        "1234567",
        "validate_only changed nothing"
    );
    assert_eq!(config("retention.ms")["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(
        config("retention.bytes")["source"],
        "DEFAULT_CONFIG",
        "deleted: back to default"
    );
    let table = stdout_of(&shardctl(&engine, "topic", &["describe", "audit"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("retention.ms") && l.contains("DYNAMIC_TOPIC_CONFIG")),
        "{table}"
    );

    let listed = json(&shardctl(&engine, "topic", &["list", "--output", "json"]));
    let audit = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "audit")
        .cloned();
    assert_eq!(audit.unwrap()["partitions"], 2, "{listed}");

    // An idempotent producer writes 5 records to partition 0.
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &engine.bootstrap(),
            "-t",
            "audit",
            "-P",
            "-p",
            "0",
            "-X",
            "enable.idempotence=true",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat installed (scripts/test-all installs it)");
    kcat.stdin.take().unwrap().write_all(b"a\nb\nc\nd\ne\n").unwrap();
    assert!(kcat.wait().unwrap().success());

    let producers = json(&shardctl(
        &engine,
        "partition",
        &["producers", "audit", "0", "--output", "json"],
    ));
    let rows = producers["producers"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{producers}");
    assert!(rows[0]["producer_id"].as_i64().unwrap() >= 0, "{producers}");

    let deleted = json(&shardctl(
        &engine,
        "partition",
        &["delete-records", "audit", "0", "--before", "2", "--output", "json"],
    ));
    assert_eq!(deleted["low_watermark"], 2, "{deleted}");
    refused_with(
        &shardctl(
            &engine,
            "partition",
            &["delete-records", "audit", "0", "--before", "99"],
        ),
        "OffsetOutOfRange",
    );
    let consumed = Command::new("kcat")
        .args([
            "-b",
            &engine.bootstrap(),
            "-t",
            "audit",
            "-p",
            "0",
            "-C",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %s\n",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout),
        "2 c\n3 d\n4 e\n",
        "reads start at the low watermark"
    );

    let elections = json(&shardctl(
        &engine,
        "partition",
        &["elect-leaders", "audit", "--output", "json"],
    ));
    let results: Vec<&str> = elections["elections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["not needed", "not needed"], "{elections}");

    let reassignments = json(&shardctl(&engine, "partition", &["reassignments", "--output", "json"]));
    assert_eq!(reassignments["reassignments"], serde_json::json!([]));
    refused_with(
        &shardctl(&engine, "partition", &["move", "audit", "0", "--replicas", "2,3"]),
        "InvalidReplicaAssignment",
    );

    let status = json(&shardctl(&engine, "cluster", &["status", "--output", "json"]));
    let brokers = status["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 2, "one broker per shard: {status}");
    assert_eq!(status["controller"], 1, "{status}");
    assert_eq!(status["under_replicated_partitions"], 0, "{status}");
    let leaders: i64 = brokers.iter().map(|b| b["leaders"].as_i64().unwrap()).sum();
    assert_eq!(
        leaders,
        status["partitions"].as_i64().unwrap(),
        "every partition has a leader: {status}"
    );
    let text = stdout_of(&shardctl(&engine, "cluster", &["status"]));
    assert!(text.contains("BROKER") && text.contains("0 under-replicated"), "{text}");
}

#[test]
fn top_shows_each_shard_once_and_as_json() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let http = engine.http_addr.unwrap().to_string();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shardctl"))
            .args(["top", "--http", &http, "--iterations", "1", "--interval-ms", "200"])
            .args(extra)
            .output()
            .unwrap()
    };
    let view = json(&run(&["--output", "json"]));
    let shards = view["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "{view}");
    for (index, shard) in shards.iter().enumerate() {
        assert_eq!(shard["shard"], index);
        assert!(shard["requests_per_second"].as_f64().unwrap() >= 0.0, "{view}");
        assert!(shard["connections"].is_i64(), "{view}");
    }
    let text = stdout_of(&run(&[]));
    assert!(text.contains("SHARD") && text.contains("REQUESTS_PER_SECOND"), "{text}");
    let unreachable = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["top", "--http", "127.0.0.1:1", "--iterations", "1"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
}
