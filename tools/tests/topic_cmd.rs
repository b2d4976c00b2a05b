//! `shardctl topic create/list/describe/delete` as the real binary against a
//! real engine process (through the workspace's one harness), and kcat
//! producing to the topic the tool made: the README's first steps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::{
    io::Write,
    process::{Command, Stdio},
};

mod common;

use common::{shardctl, stdout_of};
use shardline_testkit::Engine;

#[test]
fn topics_are_created_listed_described_used_and_deleted() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);

    let created = stdout_of(&shardctl(
        &engine,
        "topic",
        &[
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
    ));
    assert!(created.contains("created orders (3 partitions"), "{created}");

    // A second create of the same name is the broker's refusal, exit 2.
    let again = shardctl(&engine, "topic", &["create", "orders"]);
    assert_eq!(again.status.code(), Some(2));
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(refusal.contains("TopicAlreadyExists"), "{refusal}");

    let listed = stdout_of(&shardctl(&engine, "topic", &["list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with("orders "))
        .expect("orders listed");
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[1..], ["3", "1"], "partitions and replicas: {row}");

    let described = stdout_of(&shardctl(&engine, "topic", &["describe", "orders"]));
    let partitions: Vec<i32> = described
        .lines()
        .filter(|l| l.starts_with("orders "))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(partitions, [0, 1, 2], "{described}");

    // A real client uses what the tool made.
    let mut kcat = Command::new("kcat")
        .args(["-b", &engine.bootstrap(), "-t", "orders", "-P", "-p", "1"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat installed (scripts/test-all installs it)");
    kcat.stdin.take().unwrap().write_all(b"first\nsecond\n").unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat produced to the new topic");

    assert!(stdout_of(&shardctl(&engine, "topic", &["delete", "orders"])).contains("deleted orders"));
    let gone = shardctl(&engine, "topic", &["describe", "orders"]);
    assert_eq!(gone.status.code(), Some(2), "a deleted topic is not described");
    let missing = shardctl(&engine, "topic", &["delete", "no-such-topic"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("UnknownTopicOrPartition"));
}
