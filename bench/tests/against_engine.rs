//! `bench` against a real engine process, and against nothing at all.
//!
//! The engine runs as a process through the workspace's one test harness (`shardline-testkit`,
//! which finds or builds the engine binary): the bench stays a pure client.
//!
//! What the bench writes is also read back by a real client, librdkafka (the `rdkafka` crate):
//! every codec's batches, and the partition of every key against librdkafka's own murmur2
//! partitioner.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::{
    collections::BTreeMap,
    io::Read,
    net::TcpListener,
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
    ClientContext, Offset, TopicPartitionList,
};
use serde_json::Value;
use shardline_testkit::Engine;

/// Upper bound for one bench run in these tests (a 3 s run plus setup and drain).
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for librdkafka reading a topic back, or delivering a few messages.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An engine of two shards, no fsync, through the workspace's test harness.
fn start_engine() -> Engine {
    Engine::start(&["--shards", "2", "--fsync", "never"])
}

struct BenchRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Fails the test, with everything the bench printed, unless `run` succeeded.
fn assert_succeeded(run: &BenchRun, what: &str) {
    assert!(
        run.status.success(),
        "{what}: bench failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// Runs the bench binary, killing it if it outlives `BENCH_TIMEOUT`.
fn bench(args: &[&str]) -> BenchRun {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bench");
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout_pipe.read_to_string(&mut text).unwrap();
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).unwrap();
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BENCH_TIMEOUT {
            let _ = child.kill();
            panic!("bench did not finish within {BENCH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    BenchRun {
        status,
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
        took: started.elapsed(),
    }
}

/// The `--json` document a run wrote.
fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn field<'a>(json: &'a Value, pointer: &str) -> &'a Value {
    json.pointer(pointer)
        .unwrap_or_else(|| panic!("JSON has no {pointer}:\n{json:#}"))
}

#[test]
fn end_to_end_run_against_the_engine_writes_a_complete_json() {
    let engine = start_engine();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("out.json");
    let brokers = engine.addr.to_string();
    let probe_dir = out.path().to_str().unwrap().to_string();
    let run = bench(&[
        "--brokers",
        &brokers,
        "--topic",
        "bench-it",
        "--partitions",
        "2",
        "--rate",
        "2000",
        "--consumers",
        "1",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--json",
        json_path.to_str().unwrap(),
        "--fsync-probe",
        &probe_dir,
        "--broker-version",
        "it-test",
        "--shards",
        "2",
        "--fsync",
        "never",
    ]);
    assert_succeeded(&run, "end to end");
    assert!(
        run.stdout.contains("publish") && run.stdout.contains("end-to-end"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("measuring"),
        "a progress line was printed:\n{}",
        run.stderr
    );

    let json = read_json(&json_path);
    for pointer in [
        "/schema",
        "/tool_version",
        "/started_at_unix_ms",
        "/host/hostname",
        "/host/kernel",
        "/host/cores",
        "/host/cpu_model",
        "/broker/bootstrap",
        "/broker/api_versions/0/used",
        "/flags/brokers",
        "/flags/topic",
        "/flags/partitions",
        "/flags/producers",
        "/flags/consumers",
        "/flags/message_size",
        "/flags/batch_bytes",
        "/flags/linger_ms",
        "/flags/acks",
        "/flags/compression",
        "/flags/keys",
        "/flags/rate",
        "/flags/duration_s",
        "/flags/warmup_s",
        "/flags/json",
        "/flags/fsync_probe",
        "/workload",
        "/topic/partitions",
        "/window/measured_s",
        "/produce/messages_per_s",
        "/produce/mb_per_s",
        "/produce/messages_not_sent",
        "/consume/messages_per_s",
        "/consume/mb_per_s",
        "/consume/batch_bytes_fetched",
        "/consume/compressed_batches",
        "/produce/batch_bytes_sent",
        "/produce/compression_ratio",
        "/latency_ms/fetch/p99_ms",
        "/flags/payload",
        "/flags/key_distribution",
        "/flags/prefill",
    ] {
        field(&json, pointer);
    }
    assert_eq!(field(&json, "/schema"), 2);
    assert_eq!(field(&json, "/keys"), &Value::Null, "no keys, no spread");
    assert_eq!(field(&json, "/prefill"), &Value::Null);
    assert_eq!(
        field(&json, "/produce/compression_ratio"),
        1.0,
        "none: batches sent as built"
    );
    assert_eq!(field(&json, "/consume/compressed_batches"), 0);
    assert_eq!(field(&json, "/broker/version"), "it-test");
    assert_eq!(field(&json, "/broker/shards"), 2);
    assert_eq!(field(&json, "/broker/fsync"), "never");
    assert_eq!(field(&json, "/workload"), "end-to-end");
    assert_eq!(field(&json, "/topic/partitions"), 2);
    assert!(field(&json, "/host/cores").as_u64().unwrap() > 0);

    for histogram in ["publish", "end_to_end", "send_delay"] {
        for stat in [
            "count",
            "min_ms",
            "mean_ms",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "p99_99_ms",
            "max_ms",
        ] {
            let value = field(&json, &format!("/latency_ms/{histogram}/{stat}"));
            assert!(value.as_f64().is_some_and(|v| v >= 0.0), "{histogram}.{stat} = {value}");
        }
        let p50 = field(&json, &format!("/latency_ms/{histogram}/p50_ms"))
            .as_f64()
            .unwrap();
        let max = field(&json, &format!("/latency_ms/{histogram}/max_ms"))
            .as_f64()
            .unwrap();
        assert!(p50 <= max);
    }
    let acknowledged = field(&json, "/produce/messages_acknowledged").as_u64().unwrap();
    let consumed = field(&json, "/consume/messages_consumed").as_u64().unwrap();
    let measured = field(&json, "/latency_ms/publish/count").as_u64().unwrap();
    let measured_e2e = field(&json, "/latency_ms/end_to_end/count").as_u64().unwrap();
    assert!(
        acknowledged > 0 && consumed > 0 && measured > 0 && measured_e2e > 0,
        "{json:#}"
    );
    // 2 s measured at 2000 msg/s: 4000 messages are meant for the window, 6000 for the run.
    assert_eq!(measured, 4000, "every message of the window is measured once");
    assert_eq!(acknowledged, 6000);
    assert_eq!(
        consumed, acknowledged,
        "the consumer read everything that was acknowledged"
    );
    assert_eq!(field(&json, "/produce/messages_unacknowledged"), 0);
    let probe = field(&json, "/fsync_probe/results");
    assert_eq!(probe.as_array().unwrap().len(), 2);
    assert!(field(&json, "/fsync_probe/results/0/iterations").as_u64().unwrap() > 0);
    field(&json, "/fsync_probe/results/0/p50_ms");
    field(&json, "/fsync_probe/results/1/p99_ms");

    // A broker answering with an error code: the topic does not exist.
    let missing = bench(&[
        "--brokers",
        &brokers,
        "--topic",
        "no-such-topic",
        "--duration",
        "1s",
        "--quiet",
    ]);
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no-such-topic does not exist"),
        "{}",
        missing.stderr
    );
    assert!(!missing.stderr.contains("panicked"), "{}", missing.stderr);
}

#[test]
fn nothing_listening_fails_fast_with_a_clear_message() {
    let port = free_port(); // bound and released: nothing listens there now
    let run = bench(&["--brokers", &format!("127.0.0.1:{port}"), "--duration", "1s"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot connect to broker 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(run.stdout.is_empty(), "no table on failure: {}", run.stdout);
}

/// The records librdkafka reads from every partition of `topic` from the start, until `expected`
/// arrived: (partition, key, value).
fn read_with_librdkafka(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<(i32, Option<Vec<u8>>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // librdkafka wants a group id even for assign(); nothing is joined or committed.
        .set("group.id", "bench-read-back")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        assert!(
            Instant::now() < deadline,
            "librdkafka read {} of {expected} records of {topic}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => records.push((
                message.partition(),
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
            )),
            // A retried connection is an event, not a failure; missing records fail at the deadline.
            Some(Err(error)) => eprintln!("librdkafka consumer event: {error}"),
            None => {}
        }
    }
    records
}

/// One delivery report: the key and the partition librdkafka chose, or why delivery failed.
type Delivery = Result<(Vec<u8>, i32), String>;

/// Collects every delivery report.
#[derive(Clone, Default)]
struct PartitionsChosen(Arc<Mutex<Vec<Delivery>>>);

impl ClientContext for PartitionsChosen {}

impl ProducerContext for PartitionsChosen {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(message) => Ok((message.key().unwrap_or_default().to_vec(), message.partition())),
            Err((error, _)) => Err(error.to_string()),
        };
        self.0.lock().unwrap().push(report);
    }
}

/// The partition librdkafka's `murmur2_random` partitioner (the Java client's default for keyed
/// messages) picks for each key, found by producing each key once to `topic`.
fn librdkafka_murmur2_partitions(brokers: &str, topic: &str, keys: &[Vec<u8>]) -> BTreeMap<Vec<u8>, i32> {
    let chosen = PartitionsChosen::default();
    let producer: BaseProducer<PartitionsChosen> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "20000")
        .create_with_context(chosen.clone())
        .unwrap();
    for key in keys {
        producer
            .send(BaseRecord::to(topic).key(key).payload("murmur2 check"))
            .map_err(|(error, _)| error)
            .unwrap();
    }
    producer.flush(CLIENT_TIMEOUT).unwrap();
    let reports = chosen.0.lock().unwrap().clone();
    assert_eq!(reports.len(), keys.len());
    reports.into_iter().map(Result::unwrap).collect()
}

/// Every codec, with keys drawn from a Zipf distribution and text values: the engine accepts the
/// batches, the bench's own consumer decompresses and counts every record, librdkafka reads the
/// same records back, and every key sits on the partition librdkafka's murmur2 partitioner picks.
#[test]
fn every_codec_and_zipf_keys_are_accepted_and_read_back_by_librdkafka() {
    let engine = start_engine();
    let brokers = engine.addr.to_string();
    let out = tempfile::tempdir().unwrap();
    let mut placements: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let json_path = out.path().join(format!("{codec}.json"));
        let run = bench(&[
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--partitions",
            "3",
            "--rate",
            "2000",
            "--consumers",
            "1",
            "--warmup",
            "0.5s",
            "--duration",
            "1s",
            "--compression",
            codec,
            "--payload",
            "text",
            "--message-size",
            "200..600",
            "--keys",
            "50",
            "--key-distribution",
            "zipf:1.1",
            "--quiet",
            "--json",
            json_path.to_str().unwrap(),
        ]);
        assert_succeeded(&run, codec);
        assert!(run.stdout.contains(&format!("compression {codec}:")), "{}", run.stdout);
        assert!(run.stdout.contains("keys (zipf:1.1)"), "{}", run.stdout);
        let json = read_json(&json_path);
        // 1.5 s at 2000 msg/s: 3000 messages, 2000 of them in the 1 s window.
        assert_eq!(field(&json, "/produce/messages_acknowledged"), 3000, "{codec}");
        assert_eq!(
            field(&json, "/consume/messages_consumed"),
            3000,
            "{codec}: every record read"
        );
        assert_eq!(field(&json, "/latency_ms/end_to_end/count"), 2000, "{codec}");
        assert_eq!(field(&json, "/consume/foreign_records"), 0, "{codec}");
        let compressed = field(&json, "/consume/compressed_batches").as_u64().unwrap();
        assert!(compressed > 0, "{codec}: the consumer decompressed batches");
        let ratio = field(&json, "/produce/compression_ratio").as_f64().unwrap();
        assert!(ratio > 1.2, "{codec}: text compresses, ratio {ratio}");
        assert_eq!(field(&json, "/flags/compression"), codec);
        // The key spread: 50 keys, key-0 the hottest (≈ 23 % of draws at s = 1.1), all counted.
        assert_eq!(field(&json, "/keys/count"), 50);
        assert_eq!(field(&json, "/keys/distribution"), "zipf:1.1");
        assert_eq!(field(&json, "/keys/messages"), 3000);
        assert_eq!(field(&json, "/keys/hottest/0/key"), "key-0", "{codec}");
        let top_share = field(&json, "/keys/hottest/0/share").as_f64().unwrap();
        assert!((0.15..0.32).contains(&top_share), "{codec}: key-0 share {top_share}");
        let per_partition: u64 = field(&json, "/keys/partitions")
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["messages"].as_u64().unwrap())
            .sum();
        assert_eq!(per_partition, 3000);
        assert!(field(&json, "/keys/partition_max_over_mean").as_f64().unwrap() >= 1.0);

        // librdkafka reads the same records: bench values, keyed, one partition per key.
        let records = read_with_librdkafka(&brokers, &topic, 3, 3000);
        for (partition, key, value) in records {
            assert!(value.starts_with(b"SLBENCH1"), "{codec}: a bench value");
            assert!(value.len() >= 200 && value.len() <= 600, "{codec}: {} B", value.len());
            let key = key.expect("every record has a key");
            assert!(key.starts_with(b"key-"), "{codec}");
            let first = *placements.entry(key.clone()).or_insert(partition);
            assert_eq!(first, partition, "{codec}: one partition per key");
        }
    }
    // The same keys through librdkafka's murmur2 partitioner land where the bench put them.
    let keys: Vec<Vec<u8>> = placements.keys().cloned().collect();
    assert!(keys.len() > 10, "most of the 50 keys were drawn: {}", keys.len());
    let chosen = librdkafka_murmur2_partitions(&brokers, "codec-gzip", &keys);
    assert_eq!(chosen, placements, "bench and librdkafka partition keys alike");
    assert!(
        placements.values().collect::<std::collections::BTreeSet<_>>().len() > 1,
        "keys spread over partitions"
    );
}

/// `--prefill`: the fill is written untimed, then the consumer's read of it is measured and ends
/// when everything is read, well before `--duration`.
#[test]
fn prefill_measures_reading_the_fill_back() {
    let engine = start_engine();
    let brokers = engine.addr.to_string();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("prefill.json");
    let run = bench(&[
        "--brokers",
        &brokers,
        "--topic",
        "prefill-it",
        "--partitions",
        "2",
        "--prefill",
        "20000",
        "--consumers",
        "1",
        "--compression",
        "lz4",
        "--message-size",
        "256",
        "--warmup",
        "0s",
        "--duration",
        "30s",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert_succeeded(&run, "prefill");
    assert!(run.stderr.contains("filling"), "{}", run.stderr);
    assert!(
        run.stdout.contains("prefill (not timed): 20000 messages"),
        "{}",
        run.stdout
    );
    let json = read_json(&json_path);
    assert_eq!(field(&json, "/workload"), "consume-prefilled");
    assert_eq!(field(&json, "/produce"), &Value::Null, "producers only filled");
    assert_eq!(field(&json, "/prefill/messages"), 20000);
    assert_eq!(field(&json, "/prefill/messages_to_consume"), 20000);
    assert!(field(&json, "/prefill/compression_ratio").as_f64().unwrap() > 2.0);
    assert_eq!(field(&json, "/consume/messages_consumed"), 20000);
    assert_eq!(field(&json, "/consume/messages_consumed_in_window"), 20000);
    assert_eq!(field(&json, "/consume/caught_up"), true);
    assert!(field(&json, "/consume/compressed_batches").as_u64().unwrap() > 0);
    let measured = field(&json, "/window/measured_s").as_f64().unwrap();
    assert!(
        measured > 0.0 && measured < 30.0,
        "ends when the fill is read: {measured} s"
    );
    let rate = field(&json, "/consume/messages_per_s").as_f64().unwrap();
    assert!(
        (rate * measured - 20000.0).abs() < 1.0,
        "throughput is the fill over the measured time: {rate} msg/s × {measured} s"
    );
    assert!(field(&json, "/latency_ms/fetch/count").as_u64().unwrap() > 0);
    assert!(field(&json, "/latency_ms/fetch/p50_ms").as_f64().unwrap() > 0.0);
    assert_eq!(field(&json, "/latency_ms/end_to_end"), &Value::Null);
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`: returns the
/// paths of the CA, the certificate and its key.
fn make_certificates(dir: &std::path::Path, ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "bench-test-server");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let path = |file: &str| dir.join(file).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

/// `--tls-ca`: producers (pipelined, split connections) and a consumer run over the engine's SSL
/// listener and lose nothing; a bench trusting another CA fails at connect with a clear message.
#[test]
fn tls_runs_produce_and_consume_over_an_ssl_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path(), "bench-test-ca");
    let engine = Engine::start_with_listeners(
        &[("SECURE", "SSL")],
        &[
            "--shards",
            "2",
            "--fsync",
            "never",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let brokers = engine.listener_addr("SECURE").to_string();
    let json_path = dir.path().join("tls.json");
    let run = bench(&[
        "--brokers",
        &brokers,
        "--tls-ca",
        &ca,
        "--topic",
        "over-tls",
        "--partitions",
        "4",
        "--producers",
        "2",
        "--consumers",
        "1",
        "--batch-bytes",
        "65536",
        "--rate",
        "20000",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert_succeeded(&run, "bench over TLS");
    let json = read_json(&json_path);
    let sent = field(&json, "/produce/messages_sent").as_u64().unwrap();
    assert!(sent > 10_000, "{sent} messages in 3 s at 20 k/s");
    assert_eq!(field(&json, "/produce/messages_acknowledged").as_u64().unwrap(), sent);
    assert_eq!(field(&json, "/consume/messages_consumed").as_u64().unwrap(), sent);

    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certificates(other.path(), "another-ca");
    let refused = bench(&[
        "--brokers",
        &brokers,
        "--tls-ca",
        &other_ca,
        "--topic",
        "over-tls",
        "--duration",
        "1s",
    ]);
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("UnknownIssuer") || refused.stderr.contains("certificate"),
        "{}",
        refused.stderr
    );
    assert!(refused.took < Duration::from_secs(20), "{:?}", refused.took);
}

/// Debian's mosquitto on a free loopback port, stopped when dropped.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's package, installed by scripts/test-clients)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, _dir: dir }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bench --protocol mqtt` drives another MQTT broker than the engine, as a
/// pure client must: two publishers, three subscribers (each gets every
/// message), at QoS 0 and 1; every message sent in the window is delivered
/// to every subscriber (and at QoS 1 acknowledged), with latencies reported.
#[test]
fn mqtt_runs_fan_out_against_mosquitto_at_qos_0_and_1() {
    let broker = Mosquitto::start();
    let address = format!("127.0.0.1:{}", broker.port);
    for qos in ["0", "1"] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("mqtt.json");
        let run = bench(&[
            "--protocol",
            "mqtt",
            "--qos",
            qos,
            "--brokers",
            &address,
            "--topic",
            "bench/fan-out",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--rate",
            "500",
            "--warmup",
            "500ms",
            "--duration",
            "2s",
            "--message-size",
            "100",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_succeeded(&run, &format!("mqtt qos {qos}"));
        let report = read_json(&json);
        let sent = field(&report, "/sent").as_u64().unwrap();
        assert!((800..=1200).contains(&sent), "about 2 s at 500 msg/s: {sent}");
        assert_eq!(field(&report, "/delivered").as_u64().unwrap(), 3 * sent, "{report}");
        assert_eq!(field(&report, "/deliver_latency/count").as_u64().unwrap(), 3 * sent);
        assert!(field(&report, "/deliver_latency/p99_us").as_u64().unwrap() > 0);
        let acked = field(&report, "/acknowledged").as_u64().unwrap();
        assert_eq!(acked, if qos == "1" { sent } else { 0 }, "{report}");
        assert!(run.stdout.contains("publish→deliver"), "{}", run.stdout);
    }
}
