//! Shutdown, restart, a damaged data directory and a full disk, against a
//! real engine process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use common::Engine;
use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
};
use shardline_log::{build_batch, BatchSpec};

/// A connection speaking raw Kafka frames (versions fixed per API).
struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

const PRODUCE_VERSION: i16 = 7;
const FETCH_VERSION: i16 = 11;

impl Client {
    fn connect(engine: &Engine) -> Client {
        let stream = TcpStream::connect(engine.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            stream,
            correlation_id: 0,
        }
    }

    fn call(&mut self, api: ApiKey, version: i16, header_version: i16, body: impl Encodable) -> Bytes {
        self.correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_static_str("lifecycle-test"));
        let mut payload = BytesMut::new();
        header.encode(&mut payload, header_version).unwrap();
        body.encode(&mut payload, version).unwrap();
        let mut frame = Vec::new();
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut response = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut response).unwrap();
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, 0).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        response
    }

    /// Produces one batch to partition 0; returns (error code, base offset).
    fn produce(&mut self, topic: &str, records: Vec<u8>) -> (i16, i64) {
        let mut partition = PartitionProduceData::default();
        partition.records = Some(Bytes::from(records));
        let mut data = TopicProduceData::default();
        data.name = TopicName(StrBytes::from_string(topic.to_string()));
        data.partition_data = vec![partition];
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 10_000;
        request.topic_data = vec![data];
        let header_version = ProduceRequest::header_version(PRODUCE_VERSION);
        let mut body = self.call(ApiKey::Produce, PRODUCE_VERSION, header_version, request);
        let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Fetches partition 0 from `offset`; returns (error code, high watermark, record bytes).
    fn fetch(&mut self, topic: &str, offset: i64) -> (i16, i64, Bytes) {
        let mut partition = FetchPartition::default();
        partition.fetch_offset = offset;
        partition.partition_max_bytes = 8 << 20;
        let mut fetch_topic = FetchTopic::default();
        fetch_topic.topic = TopicName(StrBytes::from_string(topic.to_string()));
        fetch_topic.partitions = vec![partition];
        let mut request = FetchRequest::default();
        request.max_wait_ms = 0;
        request.min_bytes = 0;
        request.max_bytes = 64 << 20;
        request.topics = vec![fetch_topic];
        let header_version = FetchRequest::header_version(FETCH_VERSION);
        let mut body = self.call(ApiKey::Fetch, FETCH_VERSION, header_version, request);
        let response = FetchResponse::decode(&mut body, FETCH_VERSION).unwrap();
        let p = &response.responses[0].partitions[0];
        (p.error_code, p.high_watermark, p.records.clone().unwrap_or_default())
    }
}

fn batch(seed: u8, bytes: usize) -> Vec<u8> {
    build_batch(&BatchSpec::plain(1, 1_700_000_000_000, &vec![seed; bytes]))
}

/// Offsets of the batches in fetched bytes, walked by header.
fn batch_offsets(mut bytes: &[u8]) -> Vec<i64> {
    let mut out = Vec::new();
    while let Ok(header) = shardline_log::validate(bytes) {
        out.push(header.base_offset.0);
        bytes = &bytes[header.total_bytes()..];
    }
    out
}

fn read_all(client: &mut Client, topic: &str) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut next = 0;
    loop {
        let (error, high, records) = client.fetch(topic, next);
        assert_eq!(error, 0);
        let got = batch_offsets(&records);
        if got.is_empty() {
            assert_eq!(next, high, "reads stop only at the end");
            return offsets;
        }
        next = *got.last().unwrap() + 1;
        offsets.extend(got);
    }
}

#[test]
fn sigterm_flushes_everything_written_under_fsync_never() {
    let mut engine = Engine::start(&["--shards", "2", "--fsync", "never", "--auto-create-topics"]);
    let mut client = Client::connect(&engine);
    for i in 0..200u8 {
        let (error, offset) = client.produce("flushed", batch(i, 1000));
        assert_eq!((error, offset), (0, i64::from(i)));
    }
    drop(client);
    let status = engine.terminate().unwrap();
    assert!(status.success(), "graceful exit, got {status}");
    assert!(engine.log().contains("shardline engine stopped"));
    engine.restart();
    let mut client = Client::connect(&engine);
    assert_eq!(read_all(&mut client, "flushed"), (0..200).collect::<Vec<_>>());
}

#[test]
fn an_empty_topic_id_after_a_crash_quarantines_the_partition_instead_of_deleting_it() {
    let mut engine = Engine::start(&["--shards", "1", "--auto-create-topics"]);
    let mut client = Client::connect(&engine);
    for i in 0..5u8 {
        assert_eq!(client.produce("orders", batch(i, 100)), (0, i64::from(i)));
    }
    drop(client);
    engine.kill9();
    // What a power cut did to the old unsynced write: the name, no contents.
    let dir = engine.data_dir.join("partitions/orders-0");
    std::fs::write(dir.join("topic-id"), b"").unwrap();
    let segment = std::fs::read(dir.join("00000000000000000000.log")).unwrap();

    engine.restart();
    let mut client = Client::connect(&engine);
    assert_eq!(
        client.produce("orders", batch(9, 100)),
        (0, 0),
        "the partition starts empty"
    );
    let quarantine: Vec<_> = std::fs::read_dir(engine.data_dir.join("quarantine"))
        .expect("a quarantine directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert!(quarantine[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("orders-0-"));
    assert_eq!(
        std::fs::read(quarantine[0].join("00000000000000000000.log")).unwrap(),
        segment,
        "the acknowledged data is kept, not deleted"
    );
    assert!(engine.log().contains("partition directory quarantined"));
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Tmpfs {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "this test mounts a small tmpfs to fill the disk: it needs root (CI runs as root)"
    );
    Tmpfs(dir.to_path_buf())
}

#[test]
fn a_full_disk_is_an_error_to_the_client_and_reads_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small-disk");
    let _tmpfs = mount_tmpfs(&mount, "6m");
    let data_dir = mount.join("data");
    let flags = [
        "--shards",
        "1",
        "--fsync",
        "always",
        "--auto-create-topics",
        "--segment-bytes",
        "1048576",
    ];
    let mut engine = Engine::start_in(&data_dir, &flags);
    let mut client = Client::connect(&engine);
    let mut acked = Vec::new();
    let mut storage_errors = 0;
    for i in 0..400u32 {
        let (error, offset) = client.produce("fills", batch(i as u8, 64 << 10));
        match error {
            0 => acked.push(offset),
            56 => storage_errors += 1, // KAFKA_STORAGE_ERROR
            other => panic!("unexpected error code {other} at message {i}"),
        }
        if storage_errors >= 5 {
            break;
        }
    }
    assert!(storage_errors > 0, "6 MiB must fill up under 400 × 64 KiB");
    assert!(acked.len() > 10, "some writes fit before the disk filled");
    // Reads keep being served, and hold exactly what was acknowledged.
    assert_eq!(read_all(&mut client, "fills"), acked);
    drop(client);
    // And a restart on the full disk recovers the same log.
    engine.restart();
    assert_eq!(engine.exit_status(), None, "engine died after restart on a full disk");
    let mut client = Client::connect(&engine);
    assert_eq!(read_all(&mut client, "fills"), acked);
    // Nothing on disk is corrupt.
    let verify = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/shardctl"))
        .args(["log", "verify"])
        .arg(data_dir.join("partitions/fills-0"))
        .output();
    if let Ok(out) = verify {
        assert!(
            out.status.success(),
            "shardctl log verify: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    drop(engine);
}
