//! The connection loop on real loopback sockets inside a glommio executor:
//! ordering, concurrency, acks=0, Fetch pass-through, and bad input that must
//! end one connection and leave the others serving.
//!
//! Every wait is bounded by `WAIT`, every loop by a count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse as ReferenceFetchResponse,
    MetadataRequest, MetadataResponse, ProduceRequest as ReferenceProduceRequest,
    ProduceResponse as ReferenceProduceResponse, RequestHeader as ReferenceHeader, ResponseHeader, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use shardline_net::{
    api_versions_response, serve_connection, ConnectionActivity, ConnectionConfig, ConnectionShare,
    FetchPartitionResponse, FetchResponse, FetchTopicResponse, Handler, NetError, ProducePartitionResponse,
    ProduceResponse, ProduceTopicResponse, Request, RequestBody, RequestMemory, ResponseBody, SUPPORTED_APIS,
};

/// Upper bound of any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// Connections one test server accepts before it stops accepting.
const CONNECTIONS_MAX: usize = 16;

fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    shardline_testkit::run_on_shard(test);
}

/// `future`, or `None` after `WAIT`.
async fn bounded<T>(future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(WAIT).await;
        None
    })
    .await
}

/// The handler under test. Metadata answers carry the request's correlation
/// id as `throttle_time_ms`, so order is visible in the response body too.
#[derive(Default)]
struct TestHandler {
    /// Correlation ids in the order their handlers finished.
    finished: RefCell<Vec<i32>>,
    /// Handlers running right now, and the most seen at once.
    running: Cell<usize>,
    running_max: Cell<usize>,
    /// Record slices a Fetch answer carries.
    fetch_records: Vec<Bytes>,
}

impl Handler for TestHandler {
    // `async fn` implements the trait's `-> impl Future` method.
    async fn handle(&self, request: Request) -> Option<ResponseBody> {
        self.running.set(self.running.get() + 1);
        self.running_max.set(self.running_max.get().max(self.running.get()));
        if request.header.client_id.as_deref() == Some("slow") {
            glommio::timer::sleep(Duration::from_millis(150)).await;
        } else if request.header.client_id.as_deref() == Some("a-bit-slow") {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        self.running.set(self.running.get() - 1);
        self.finished.borrow_mut().push(request.header.correlation_id);
        match request.body {
            RequestBody::Metadata(_) => Some(ResponseBody::Kafka(ResponseKind::Metadata(
                MetadataResponse::default().with_throttle_time_ms(request.header.correlation_id),
            ))),
            RequestBody::ApiVersions(_) => {
                Some(ResponseBody::Kafka(ResponseKind::ApiVersions(api_versions_response(0))))
            }
            RequestBody::Produce(produce) => {
                if produce.acks == 0 {
                    return None;
                }
                Some(ResponseBody::Produce(ProduceResponse {
                    topics: produce
                        .topics
                        .iter()
                        .map(|topic| ProduceTopicResponse {
                            name: topic.name.clone(),
                            partitions: topic
                                .partitions
                                .iter()
                                .map(|partition| ProducePartitionResponse {
                                    index: partition.index,
                                    base_offset: partition.records.as_ref().map_or(-1, |records| records.len() as i64),
                                    ..ProducePartitionResponse::default()
                                })
                                .collect(),
                        })
                        .collect(),
                    throttle_time_ms: 0,
                }))
            }
            RequestBody::Fetch(_) => Some(ResponseBody::Fetch(FetchResponse {
                topics: vec![FetchTopicResponse {
                    name: "orders".into(),
                    partitions: vec![FetchPartitionResponse {
                        partition_index: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 0,
                        records: self.fetch_records.clone(),
                        ..FetchPartitionResponse::default()
                    }],
                }],
                ..FetchResponse::default()
            })),
            _ => None,
        }
    }
}

/// A server on 127.0.0.1 serving up to `CONNECTIONS_MAX` connections; each
/// connection's result is recorded in accept order.
struct Server {
    address: SocketAddr,
    results: Rc<RefCell<Vec<Result<(), NetError>>>>,
}

impl Server {
    fn start(handler: Rc<TestHandler>, config: ConnectionConfig) -> Server {
        Server::start_with_memory(handler, config, 256 << 20)
    }

    /// A server whose connections share a request budget of `memory_bytes`.
    fn start_with_memory(handler: Rc<TestHandler>, config: ConnectionConfig, memory_bytes: usize) -> Server {
        let memory = RequestMemory::new(memory_bytes);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let results = Rc::new(RefCell::new(Vec::new()));
        let server_results = Rc::clone(&results);
        glommio::spawn_local(async move {
            for _ in 0..CONNECTIONS_MAX {
                let Ok(stream) = listener.accept().await else {
                    return;
                };
                let handler = Rc::clone(&handler);
                let results = Rc::clone(&server_results);
                let config = config.clone();
                let share = ConnectionShare {
                    request_memory: Rc::clone(&memory),
                    activity: ConnectionActivity::new(std::time::Instant::now()),
                };
                glommio::spawn_local(async move {
                    let result = serve_connection(stream, handler, &config, &share).await;
                    results.borrow_mut().push(result);
                })
                .detach();
            }
        })
        .detach();
        Server { address, results }
    }

    async fn connect(&self) -> TcpStream {
        bounded(TcpStream::connect(self.address))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    /// Waits until `count` connections have ended.
    async fn wait_for_results(&self, count: usize) {
        for _ in 0..(WAIT.as_millis() / 5) {
            if self.results.borrow().len() >= count {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        panic!("{count} connections did not end in time");
    }
}

fn header(api_key: i16, version: i16, correlation_id: i32, client_id: &str) -> BytesMut {
    let header_version = ApiKey::try_from(api_key)
        .map(|key| key.request_header_version(version))
        .unwrap_or(1);
    let mut out = BytesMut::new();
    out.put_i32(0); // length, patched by `finish`
    ReferenceHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())))
        .encode(&mut out, header_version)
        .unwrap();
    out
}

fn finish(mut frame: BytesMut) -> Vec<u8> {
    let length = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&length.to_be_bytes());
    frame.to_vec()
}

fn metadata_frame(version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut frame = header(ApiKey::Metadata as i16, version, correlation_id, client_id);
    MetadataRequest::default()
        .with_topics(None)
        .encode(&mut frame, version)
        .unwrap();
    finish(frame)
}

fn api_versions_frame(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut frame = header(ApiKey::ApiVersions as i16, version, correlation_id, "client");
    if version <= 3 {
        let request = if version >= 3 {
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("test"))
                .with_client_software_version(StrBytes::from_static_str("1"))
        } else {
            ApiVersionsRequest::default()
        };
        request.encode(&mut frame, version).unwrap();
    } else {
        frame.extend_from_slice(&[0, 0, 0]); // a body net must not look at
    }
    finish(frame)
}

fn produce_frame(version: i16, correlation_id: i32, acks: i16, records: &[u8]) -> Vec<u8> {
    let mut frame = header(ApiKey::Produce as i16, version, correlation_id, "producer");
    ReferenceProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(4)
                .with_records(Some(Bytes::copy_from_slice(records)))])])
        .encode(&mut frame, version)
        .unwrap();
    finish(frame)
}

fn fetch_frame(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut frame = header(ApiKey::Fetch as i16, version, correlation_id, "consumer");
    FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 24)
        .encode(&mut frame, version)
        .unwrap();
    finish(frame)
}

/// Reads one response frame; `None` on end of stream, reset or timeout.
async fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    bounded(async {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await.ok()?;
        let length = i32::from_be_bytes(prefix);
        let mut payload = vec![0u8; usize::try_from(length).ok()?];
        stream.read_exact(&mut payload).await.ok()?;
        Some(Bytes::from(payload))
    })
    .await
    .flatten()
}

/// True when the server closed the connection (end of stream or reset)
/// within `WAIT`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut scratch = [0u8; 256];
    for _ in 0..64 {
        match bounded(stream.read(&mut scratch)).await {
            None => return false,
            Some(Ok(0)) | Some(Err(_)) => return true,
            Some(Ok(_)) => continue,
        }
    }
    false
}

fn decode_response<T: Decodable>(mut frame: Bytes, header_version: i16, version: i16) -> (i32, T) {
    let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
    let body = T::decode(&mut frame, version).unwrap();
    assert!(!frame.has_remaining(), "trailing bytes in response");
    (header.correlation_id, body)
}

async fn expect_metadata_answer(stream: &mut TcpStream, version: i16, correlation_id: i32) {
    let frame = read_frame(stream).await.expect("a metadata response");
    let header_version = MetadataResponse::header_version(version);
    let (received, body): (i32, MetadataResponse) = decode_response(frame, header_version, version);
    assert_eq!(received, correlation_id);
    assert_eq!(body.throttle_time_ms, correlation_id);
}

#[test]
fn pipelined_requests_are_answered_in_order_while_handlers_run_concurrently() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let server = Server::start(Rc::clone(&handler), ConnectionConfig::default());
        let mut client = server.connect().await;
        let mut batch = metadata_frame(12, 1, "slow");
        batch.extend(metadata_frame(12, 2, "fast"));
        batch.extend(metadata_frame(3, 3, "a-bit-slow"));
        batch.extend(metadata_frame(9, 4, "fast"));
        client.write_all(&batch).await.unwrap();
        expect_metadata_answer(&mut client, 12, 1).await;
        expect_metadata_answer(&mut client, 12, 2).await;
        expect_metadata_answer(&mut client, 3, 3).await;
        expect_metadata_answer(&mut client, 9, 4).await;
        assert_eq!(
            *handler.finished.borrow(),
            vec![2, 4, 3, 1],
            "handlers ran concurrently"
        );
        assert!(handler.running_max.get() >= 2);
        // A clean close after the answers ends the connection with Ok.
        client.shutdown(std::net::Shutdown::Write).await.unwrap();
        assert!(closed_by_server(&mut client).await);
        server.wait_for_results(1).await;
        assert!(server.results.borrow()[0].is_ok());
    });
}

#[test]
fn no_more_than_in_flight_max_requests_are_read_ahead() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let config = ConnectionConfig::default().with_in_flight_max(3);
        let server = Server::start(Rc::clone(&handler), config);
        let mut client = server.connect().await;
        let mut batch = Vec::new();
        for correlation_id in 0..12 {
            batch.extend(metadata_frame(4, correlation_id, "a-bit-slow"));
        }
        client.write_all(&batch).await.unwrap();
        for correlation_id in 0..12 {
            expect_metadata_answer(&mut client, 4, correlation_id).await;
        }
        assert_eq!(handler.running_max.get(), 3);
    });
}

#[test]
fn connections_wait_for_the_shards_request_memory_and_all_are_served() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        // Room for one request frame at a time across every connection.
        let frame_bytes = metadata_frame(12, 1, "slow").len() - 4;
        let server = Server::start_with_memory(Rc::clone(&handler), ConnectionConfig::default(), frame_bytes + 3);
        let mut first = server.connect().await;
        let mut second = server.connect().await;
        first.write_all(&metadata_frame(12, 1, "slow")).await.unwrap();
        second.write_all(&metadata_frame(12, 2, "slow")).await.unwrap();
        expect_metadata_answer(&mut first, 12, 1).await;
        expect_metadata_answer(&mut second, 12, 2).await;
        assert_eq!(handler.running_max.get(), 1, "the second waited for the first's bytes");
        assert_eq!(*handler.finished.borrow(), vec![1, 2]);
    });
}

#[test]
fn requests_sent_before_a_half_close_are_all_answered() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let server = Server::start(Rc::clone(&handler), ConnectionConfig::default());
        let mut client = server.connect().await;
        let mut batch = metadata_frame(5, 10, "slow");
        batch.extend(metadata_frame(5, 11, "fast"));
        client.write_all(&batch).await.unwrap();
        client.shutdown(std::net::Shutdown::Write).await.unwrap();
        expect_metadata_answer(&mut client, 5, 10).await;
        expect_metadata_answer(&mut client, 5, 11).await;
        assert!(closed_by_server(&mut client).await);
        server.wait_for_results(1).await;
        assert!(server.results.borrow()[0].is_ok());
    });
}

#[test]
fn produce_with_acks_zero_gets_no_response_and_acks_one_does() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let server = Server::start(Rc::clone(&handler), ConnectionConfig::default());
        let mut client = server.connect().await;
        for version in [3, 7, 9] {
            let mut batch = produce_frame(version, 100, 0, b"fire-and-forget");
            batch.extend(produce_frame(version, 101, 1, b"acknowledged"));
            batch.extend(metadata_frame(12, 102, "fast"));
            client.write_all(&batch).await.unwrap();
            let frame = read_frame(&mut client).await.expect("produce response");
            let header_version = ReferenceProduceResponse::header_version(version);
            let (correlation_id, response): (i32, ReferenceProduceResponse) =
                decode_response(frame, header_version, version);
            assert_eq!(correlation_id, 101, "acks=0 produced no response");
            let partition = &response.responses[0].partition_responses[0];
            assert_eq!(
                (partition.index, partition.base_offset),
                (4, b"acknowledged".len() as i64)
            );
            expect_metadata_answer(&mut client, 12, 102).await;
        }
    });
}

#[test]
fn fetch_record_slices_reach_the_client_intact() {
    run(|| async {
        let big = Bytes::from((0..300_000u32).map(|index| (index % 253) as u8).collect::<Vec<_>>());
        let small = Bytes::from_static(b"small-batch");
        let handler = Rc::new(TestHandler {
            fetch_records: vec![small.clone(), big.clone(), small.clone()],
            ..TestHandler::default()
        });
        let server = Server::start(Rc::clone(&handler), ConnectionConfig::default());
        let mut client = server.connect().await;
        for version in [4, 11, 12] {
            let mut batch = fetch_frame(version, 7);
            batch.extend(fetch_frame(version, 8));
            client.write_all(&batch).await.unwrap();
            for correlation_id in [7, 8] {
                let frame = read_frame(&mut client).await.expect("fetch response");
                let header_version = ReferenceFetchResponse::header_version(version);
                let (received, response): (i32, ReferenceFetchResponse) =
                    decode_response(frame, header_version, version);
                assert_eq!(received, correlation_id);
                let records = response.responses[0].partitions[0].records.clone().unwrap();
                let expected: Vec<u8> = [&small[..], &big[..], &small[..]].concat();
                assert!(records[..] == expected[..], "v{version}: records byte-identical");
            }
        }
    });
}

/// Opens a well-behaved connection, breaks another with `bad`, checks that
/// the bad one is closed with the expected error and the good one still
/// answers.
async fn bad_input_closes_only_its_connection(bad: Vec<u8>, half_close: bool, expected: fn(&NetError) -> bool) {
    let handler = Rc::new(TestHandler::default());
    let server = Server::start(
        Rc::clone(&handler),
        ConnectionConfig::default().with_max_frame_bytes(1 << 20),
    );
    let mut good = server.connect().await;
    good.write_all(&metadata_frame(12, 1, "fast")).await.unwrap();
    expect_metadata_answer(&mut good, 12, 1).await;

    let mut bad_client = server.connect().await;
    bad_client.write_all(&bad).await.unwrap();
    if half_close {
        bad_client.shutdown(std::net::Shutdown::Write).await.unwrap();
    }
    assert!(closed_by_server(&mut bad_client).await, "bad connection closed");
    server.wait_for_results(1).await;
    {
        let results = server.results.borrow();
        let error = results[0].as_ref().expect_err("bad connection ends with an error");
        assert!(expected(error), "unexpected error: {error:?}");
        assert!(error.is_bad_input());
    }

    good.write_all(&metadata_frame(12, 2, "fast")).await.unwrap();
    expect_metadata_answer(&mut good, 12, 2).await;
    assert_eq!(server.results.borrow().len(), 1, "the good connection is still open");
}

#[test]
fn oversize_length_prefix_closes_that_connection_only() {
    run(|| async {
        let bad = (2i32 << 20).to_be_bytes().to_vec();
        bad_input_closes_only_its_connection(
            bad,
            false,
            |error| matches!(error, NetError::FrameLength { length, .. } if *length == 2 << 20),
        )
        .await;
    });
}

#[test]
fn negative_length_prefix_closes_that_connection_only() {
    run(|| async {
        bad_input_closes_only_its_connection((-5i32).to_be_bytes().to_vec(), false, |error| {
            matches!(error, NetError::FrameLength { length: -5, .. })
        })
        .await;
    });
}

#[test]
fn garbage_closes_that_connection_only() {
    run(|| async {
        // A plausible length, then a frame too short to hold a header.
        let mut bad = 3i32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"\xde\xad\xbe");
        bad_input_closes_only_its_connection(bad, false, |error| matches!(error, NetError::Header(_))).await;
    });
}

#[test]
fn a_body_that_does_not_parse_closes_that_connection_only() {
    run(|| async {
        // Metadata v1 whose topic array claims 2^31 - 1 entries.
        let mut frame = header(ApiKey::Metadata as i16, 1, 5, "evil");
        frame.put_i32(i32::MAX);
        bad_input_closes_only_its_connection(finish(frame), false, |error| {
            matches!(error, NetError::Body { api_key: 3, .. })
        })
        .await;
    });
}

#[test]
fn truncated_frame_closes_that_connection_only() {
    run(|| async {
        let mut bad = metadata_frame(12, 9, "cut");
        bad.truncate(bad.len() - 3);
        bad_input_closes_only_its_connection(bad, true, |error| matches!(error, NetError::FrameTruncated { .. })).await;
    });
}

#[test]
fn unknown_api_key_closes_that_connection_only() {
    run(|| async {
        let bad = finish(header(1000, 0, 3, "who"));
        bad_input_closes_only_its_connection(bad, false, |error| {
            matches!(
                error,
                NetError::UnsupportedApi {
                    api_key: 1000,
                    api_version: 0
                }
            )
        })
        .await;
    });
}

#[test]
fn unsupported_version_of_a_known_api_closes_the_connection() {
    run(|| async {
        let bad = produce_frame(10, 3, 1, b"x");
        bad_input_closes_only_its_connection(bad, false, |error| {
            matches!(
                error,
                NetError::UnsupportedApi {
                    api_key: 0,
                    api_version: 10
                }
            )
        })
        .await;
    });
}

#[test]
fn api_versions_v99_gets_a_v0_error_response_and_the_connection_stays_open() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let server = Server::start(Rc::clone(&handler), ConnectionConfig::default());
        let mut client = server.connect().await;
        client.write_all(&api_versions_frame(99, 41)).await.unwrap();
        let frame = read_frame(&mut client).await.expect("ApiVersions error response");
        let (correlation_id, response): (i32, ApiVersionsResponse) = decode_response(frame, 0, 0);
        assert_eq!(correlation_id, 41);
        assert_eq!(response.error_code, 35);
        let listed: Vec<(i16, i16, i16)> = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.min_version, api.max_version))
            .collect();
        assert_eq!(listed, SUPPORTED_APIS);
        assert!(handler.finished.borrow().is_empty(), "net answered, not the handler");

        // The client downgrades and carries on, on the same connection.
        for version in 0..=3 {
            client
                .write_all(&api_versions_frame(version, 42 + i32::from(version)))
                .await
                .unwrap();
            let frame = read_frame(&mut client).await.expect("ApiVersions response");
            let (correlation_id, response): (i32, ApiVersionsResponse) = decode_response(frame, 0, version);
            assert_eq!(correlation_id, 42 + i32::from(version));
            assert_eq!(response.error_code, 0);
            assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
        }
        assert!(server.results.borrow().is_empty());
    });
}
