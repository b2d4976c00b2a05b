//! `shardctl group list/describe/reset-offsets` as the real binary against a
//! real engine process, with Debian's kcat (librdkafka 2.0.2) as the producer
//! and as an active group member.
//!
//! The engine runs through the workspace's one test harness
//! (`shardline-testkit`), which finds or builds the engine binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod common;

use common::{shardctl, stdout_of};
use shardline_testkit::Engine;

/// Bound on the engine's start and on every wait for the group to settle.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Produces `count` messages to one partition with kcat.
fn produce(engine: &Engine, topic: &str, partition: i32, count: usize) {
    let mut child = Command::new("kcat")
        .args([
            "-b",
            &engine.bootstrap(),
            "-t",
            topic,
            "-P",
            "-p",
            &partition.to_string(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat installed (scripts/test-all installs it)");
    let lines: String = (0..count).map(|i| format!("message-{i}\n")).collect();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// The describe table's rows: (topic, partition) → (committed, log end, lag).
fn offsets_table(describe: &str, topic: &str) -> Vec<(i32, String, String, String)> {
    describe
        .lines()
        .filter(|line| line.starts_with(topic))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[1].parse().unwrap(),
                fields[2].to_string(),
                fields[3].to_string(),
                fields[4].to_string(),
            )
        })
        .collect()
}

#[test]
fn list_describe_and_reset_offsets_against_a_running_engine() {
    let engine = Engine::start(&[
        "--shards",
        "2",
        "--fsync",
        "never",
        "--auto-create-topics",
        "--default-partitions",
        "3",
    ]);
    for partition in 0..3 {
        produce(&engine, "orders", partition, usize::try_from(partition).unwrap() + 2);
    }

    // A group that does not exist yet: describe shows it Dead, reset creates it.
    let described = stdout_of(&shardctl(&engine, "group", &["describe", "auditors"]));
    assert!(described.contains("state=Dead"), "{described}");
    let reset = stdout_of(&shardctl(
        &engine,
        "group",
        &["reset-offsets", "auditors", "--to", "earliest", "--topic", "orders"],
    ));
    assert_eq!(reset.lines().count(), 4, "{reset}");

    let listed = stdout_of(&shardctl(&engine, "group", &["list"]));
    assert!(
        listed.lines().any(|l| l.starts_with("auditors") && l.contains("Empty")),
        "{listed}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&stdout_of(&shardctl(&engine, "group", &["list", "--output", "json"]))).unwrap();
    let groups = listed["groups"].as_array().unwrap();
    assert!(
        groups.iter().any(|g| g["group"] == "auditors" && g["state"] == "Empty"),
        "{listed}"
    );

    let described = stdout_of(&shardctl(&engine, "group", &["describe", "auditors"]));
    assert!(
        described.contains("state=Empty") && described.contains("members=0"),
        "{described}"
    );
    let rows = offsets_table(&described, "orders");
    let expected: Vec<(i32, String, String, String)> = (0..3)
        .map(|p| (p, "0".into(), (p + 2).to_string(), (p + 2).to_string()))
        .collect();
    assert_eq!(rows, expected, "{described}");

    // Without --topic: the partitions the group has commits for.
    stdout_of(&shardctl(
        &engine,
        "group",
        &["reset-offsets", "auditors", "--to", "latest"],
    ));
    let rows = offsets_table(
        &stdout_of(&shardctl(&engine, "group", &["describe", "auditors"])),
        "orders",
    );
    assert!(
        rows.iter()
            .all(|(_, committed, end, lag)| committed == end && lag == "0"),
        "{rows:?}"
    );

    // An offset beyond a partition's end is clamped into it.
    stdout_of(&shardctl(&engine, "group", &["reset-offsets", "auditors", "--to", "3"]));
    let rows = offsets_table(
        &stdout_of(&shardctl(&engine, "group", &["describe", "auditors"])),
        "orders",
    );
    let committed: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(committed, ["2", "3", "3"], "{rows:?}");

    // An active group: describe shows its member and assignment; reset is refused.
    let mut member = Command::new("kcat")
        .args(["-b", &engine.bootstrap(), "-G", "live-readers", "orders", "-q"])
        .args(["-X", "session.timeout.ms=6000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    let described = loop {
        let described = stdout_of(&shardctl(&engine, "group", &["describe", "live-readers"]));
        if described.contains("state=Stable") && described.contains("assigned=orders:0,1,2") {
            break described;
        }
        assert!(Instant::now() < deadline, "group never became stable:\n{described}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        described.contains("members=1") && described.contains("protocol_type=consumer"),
        "{described}"
    );
    let refused = shardctl(
        &engine,
        "group",
        &["reset-offsets", "live-readers", "--to", "earliest", "--topic", "orders"],
    );
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("stop its consumers"), "{stderr}");
    let _ = member.kill();
    let _ = member.wait();

    // Bad input: an unparsable target, an unreachable broker.
    let bad = shardctl(&engine, "group", &["reset-offsets", "auditors", "--to", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    let unreachable = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["group", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
}
