//! Python clients (kafka-python, confluent-kafka) and kcat against a real engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::process::Command;

use common::{run_python_script, Engine};

/// Runs a client script against a 2-shard engine; every request it sends for
/// a partition or a group reaches the owning shard directly (one broker per
/// shard in Metadata), so no shard forwards any.
fn run_script_on_two_shards(script: &str) {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    run_python_script(script, &engine.bootstrap());
    assert_eq!(engine.forwarded_at_shutdown(), vec![(0, 0), (0, 0)], "{script}");
}

#[test]
fn kafka_python_admin_produce_consume() {
    run_script_on_two_shards("kafka_python_basic.py");
}

#[test]
fn kafka_python_group_consumer_with_auto_commit() {
    run_script_on_two_shards("kafka_python_group.py");
}

#[test]
fn confluent_kafka_idempotent_zstd_produce_consume() {
    run_script_on_two_shards("confluent_basic.py");
}

#[test]
fn kafka_python_transactions() {
    run_script_on_two_shards("kafka_python_transactions.py");
}

#[test]
fn confluent_kafka_transactions() {
    run_script_on_two_shards("confluent_transactions.py");
}

#[test]
fn kcat_lists_the_broker() {
    let engine = Engine::start(&["--shards", "1", "--auto-create-topics"]);
    // Debian's kcat links librdkafka 2.0.2: an old client.
    let produce = Command::new("kcat")
        .args(["-b", &engine.bootstrap(), "-t", "kcat-topic", "-P", "-K:"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"a:1\nb:2\nc:3\n")?;
            child.wait()
        })
        .expect("kcat installed (scripts/test-all installs it)");
    assert!(produce.success());
    let list = Command::new("kcat")
        .args(["-b", &engine.bootstrap(), "-L"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    assert!(text.contains("1 brokers"), "{text}");
    assert!(text.contains("topic \"kcat-topic\""), "{text}");
    let consume = Command::new("kcat")
        .args([
            "-b",
            &engine.bootstrap(),
            "-t",
            "kcat-topic",
            "-C",
            "-e",
            "-f",
            "%k=%s\n",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&consume.stdout);
    assert_eq!(text, "a=1\nb=2\nc=3\n");
}

/// Delayed delivery (`shardline.delivery.delay.ms`, `shardline.deliver.at`)
/// seen by unmodified confluent-kafka and kafka-python consumers.
#[test]
fn delayed_delivery_with_unmodified_clients() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    for phase in ["topic-delay", "header-delay"] {
        let (ok, output) = common::python_script_output("delivery_confluent.py", &[&engine.bootstrap(), phase]);
        assert!(ok, "{phase}: {output}");
    }
    run_python_script("delivery_kafka_python.py", &engine.bootstrap());
    engine.terminate();
}

/// Records not yet due when the engine is killed are still not due after it
/// restarts, and arrive in order at their time.
#[test]
fn delayed_records_stay_pending_through_a_restart() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "always"]);
    let (ok, output) = common::python_script_output("delivery_confluent.py", &[&engine.bootstrap(), "before-restart"]);
    assert!(ok, "{output}");
    engine.restart();
    let (ok, output) = common::python_script_output("delivery_confluent.py", &[&engine.bootstrap(), "after-restart"]);
    assert!(ok, "{output}");
}

/// Dead-letter delivery (`shardline.dlq.max.deliveries`): a consumer that
/// crashes on a poison record that many times with confluent-kafka and with
/// kafka-python; the record lands in `<topic>.dlq` and the group goes on.
#[test]
fn dead_letter_delivery_with_unmodified_clients() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    for client in ["confluent", "kafka-python"] {
        let (ok, output) = common::python_script_output("delivery_dlq.py", &[&engine.bootstrap(), client]);
        assert!(ok, "{client}: {output}");
    }
    engine.terminate();
}
