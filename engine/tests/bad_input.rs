//! Malformed and hostile input against a real engine: each bad connection is
//! closed (or answered with the protocol's error) and a normal client is
//! served afterwards, with stored data intact.
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
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{raw_exchange, Engine};
use kafka_protocol::{
    messages::{
        produce_request::{PartitionProduceData, TopicProduceData},
        ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
};
use shardline_log::{build_batch, BatchSpec};

const WAIT: Duration = Duration::from_secs(3);

fn frame(api_key: i16, version: i16, correlation_id: i32, body: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut payload = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = api_key;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("bad-input-test"));
    let header_version = if api_key == ApiKey::Produce as i16 {
        ProduceRequest::header_version(version)
    } else {
        1
    };
    header.encode(&mut payload, header_version).unwrap();
    body(&mut payload);
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(&payload);
    out
}

fn produce_frame(topic: &str, records: Vec<u8>, version: i16) -> Vec<u8> {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(records));
    let mut topic_data = TopicProduceData::default();
    topic_data.name = TopicName(StrBytes::from_string(topic.to_string()));
    topic_data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![topic_data];
    frame(ApiKey::Produce as i16, version, 7, |buf| {
        request.encode(buf, version).unwrap()
    })
}

fn read_response(stream: &mut TcpStream) -> Bytes {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    Bytes::from(body)
}

fn produce_error(engine: &Engine, records: Vec<u8>) -> (i16, i64) {
    let version = 7;
    let mut stream = TcpStream::connect(engine.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&produce_frame("victim", records, version)).unwrap();
    let mut body = read_response(&mut stream);
    let header = ResponseHeader::decode(&mut body, ProduceRequest::header_version(version) - 1).unwrap();
    assert_eq!(header.correlation_id, 7);
    let response = ProduceResponse::decode(&mut body, version).unwrap();
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn good_batch(n: u8) -> Vec<u8> {
    build_batch(&BatchSpec::plain(1, 1_700_000_000_000, &[n; 64]))
}

/// Produces one good batch and checks the log end moved by one.
fn assert_serving(engine: &Engine, expected_offset: i64) {
    let (error, offset) = produce_error(engine, good_batch(9));
    assert_eq!(error, 0, "a normal client is served");
    assert_eq!(offset, expected_offset);
}

#[test]
fn garbage_oversize_and_truncated_frames_close_only_their_connection() {
    let engine = Engine::start(&["--shards", "2", "--auto-create-topics", "--max-frame-bytes", "1048576"]);
    assert_serving(&engine, 0);
    // A connection that stays open and well-behaved throughout.
    let mut bystander = TcpStream::connect(engine.addr).unwrap();
    bystander.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // Garbage: a length prefix followed by noise that is no request header.
    let mut garbage = 64i32.to_be_bytes().to_vec();
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(91)));
    assert!(
        raw_exchange(engine.addr, &garbage, WAIT).is_empty(),
        "garbage gets no answer"
    );
    // Oversize and negative length prefixes.
    assert!(raw_exchange(engine.addr, &(512i32 << 20).to_be_bytes(), WAIT).is_empty());
    assert!(raw_exchange(engine.addr, &(-1i32).to_be_bytes(), WAIT).is_empty());
    // A frame that ends early: the peer closes mid-frame.
    let whole = produce_frame("victim", good_batch(1), 7);
    assert!(raw_exchange(engine.addr, &whole[..whole.len() / 2], Duration::from_millis(300)).is_empty());
    // An unknown API key.
    let unknown = frame(9999, 0, 1, |_| {});
    assert!(raw_exchange(engine.addr, &unknown, WAIT).is_empty());

    bystander.write_all(&produce_frame("victim", good_batch(2), 7)).unwrap();
    let mut body = read_response(&mut bystander);
    let _ = ResponseHeader::decode(&mut body, 0).unwrap();
    let response = ProduceResponse::decode(&mut body, 7).unwrap();
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    assert_serving(&engine, 2);
    assert!(engine.log().contains("WARN"), "bad connections are logged");
}

#[test]
fn bad_crc_is_corrupt_message_and_nothing_is_stored() {
    let engine = Engine::start(&["--shards", "1", "--auto-create-topics"]);
    assert_serving(&engine, 0);
    let mut bad = good_batch(3);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(produce_error(&engine, bad).0, 2, "CORRUPT_MESSAGE");
    let mut wrong_magic = good_batch(4);
    wrong_magic[16] = 1;
    assert_ne!(produce_error(&engine, wrong_magic).0, 0);
    let mut two = good_batch(5);
    two.extend(good_batch(6));
    assert_eq!(
        produce_error(&engine, two).0,
        87,
        "INVALID_RECORD: one batch per partition"
    );
    assert_serving(&engine, 1);
}

#[test]
fn api_versions_with_an_unknown_version_gets_the_v0_error_response() {
    let engine = Engine::start(&["--shards", "1"]);
    let request = frame(ApiKey::ApiVersions as i16, 99, 42, |_| {});
    let reply = raw_exchange(engine.addr, &request, WAIT);
    assert!(reply.len() >= 10, "got {} bytes", reply.len());
    let mut body = Bytes::from(reply);
    let _length = body.get_i32();
    assert_eq!(body.get_i32(), 42, "correlation id");
    assert_eq!(body.get_i16(), 35, "UNSUPPORTED_VERSION");
}

/// A 61-byte batch whose header claims `i32::MAX` records with none behind
/// it, with a correct CRC-32C (issue #12: 70 of these aborted the engine, and
/// recovery aborted on them again at every start).
fn lying_batch() -> Vec<u8> {
    let mut out = Vec::with_capacity(61);
    out.put_i64(0); // base offset
    out.put_i32(49); // batch length: the header only
    out.put_i32(-1); // leader epoch
    out.put_i8(2); // magic
    out.put_u32(0); // crc, filled below
    out.put_i16(0); // attributes: uncompressed
    out.put_i32(i32::MAX - 1); // last offset delta
    out.put_i64(1_700_000_000_000); // base timestamp
    out.put_i64(1_700_000_000_000); // max timestamp
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(i32::MAX); // record count
    let crc = shardline_log::compute_crc(&out).unwrap();
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[test]
fn a_batch_whose_header_lies_is_refused_and_the_engine_restarts_on_its_data() {
    let mut engine = Engine::start(&["--shards", "1", "--auto-create-topics"]);
    assert_serving(&engine, 0);
    for _ in 0..70 {
        let (error, _) = produce_error(&engine, lying_batch());
        assert!(
            error == 2 || error == 87,
            "CORRUPT_MESSAGE or INVALID_RECORD for a lying header, got {error}"
        );
    }
    assert!(engine.is_running(), "the engine survives lying headers");
    assert_serving(&engine, 1);
    engine.restart();
    assert_serving(&engine, 2);
    assert!(engine.is_running());
}
