//! What the hand-written hot-path codecs cost next to kafka-protocol's.
//!
//! ```text
//! cargo run --release -p shardline-net --example codec_cost
//! ```
//!
//! - Produce v9 decode, one partition with a 16 KiB record set: net's
//!   zero-copy decoder vs kafka-protocol's `ProduceRequest::decode`;
//! - a Fetch v12 response carrying 1 MiB of records as 64 batches of 16 KiB:
//!   net's hand framing (`encode_response_pieces`: headers written, slices
//!   passed by reference) vs kafka-protocol's encoder, which needs the
//!   records as one `Bytes` (so they are concatenated first) and copies them
//!   into its output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a measurement program: a failure should stop it loudly"
)]

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchResponse as ReferenceFetch, ProduceRequest as ReferenceProduce, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardline_net::{decode_request_body, ProduceRequest};

fn time_per_op(label: &str, iterations: u32, mut op: impl FnMut()) {
    for _ in 0..iterations / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        op();
    }
    let nanos = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{label:<58} {nanos:>10.0} ns/op");
}

fn main() {
    // Produce v9, 16 KiB of records.
    let records = Bytes::from(vec![7u8; 16 << 10]);
    let produce = ReferenceProduce::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let mut body = BytesMut::new();
    produce.encode(&mut body, 9).unwrap();
    let body = body.freeze();
    time_per_op("Produce v9 decode, 16 KiB records: shardline-net", 1_000_000, || {
        black_box(ProduceRequest::decode(black_box(&body), 9).unwrap());
    });
    time_per_op("Produce v9 decode, 16 KiB records: kafka-protocol", 1_000_000, || {
        let mut input = black_box(body.clone());
        black_box(ReferenceProduce::decode(&mut input, 9).unwrap());
    });

    // Fetch request decode (shape walk + kafka-protocol) for reference.
    let fetch_request = {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::FetchRequest;
        let mut out = BytesMut::new();
        FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(
                    (0..8)
                        .map(|partition| FetchPartition::default().with_partition(partition))
                        .collect(),
                )])
            .encode(&mut out, 12)
            .unwrap();
        out.freeze()
    };
    time_per_op(
        "Fetch v12 request decode, 8 partitions: shape walk + k-p",
        1_000_000,
        || {
            black_box(decode_request_body(1, 12, black_box(&fetch_request)).unwrap());
        },
    );
    time_per_op(
        "Fetch v12 request decode, 8 partitions: kafka-protocol",
        1_000_000,
        || {
            let mut input = black_box(fetch_request.clone());
            black_box(kafka_protocol::messages::FetchRequest::decode(&mut input, 12).unwrap());
        },
    );

    // Fetch v12 response, 64 x 16 KiB.
    let arena = Bytes::from(vec![3u8; 1 << 20]);
    let slices: Vec<Bytes> = (0..64)
        .map(|index| arena.slice(index * (16 << 10)..(index + 1) * (16 << 10)))
        .collect();
    time_per_op(
        "Fetch v12 response, 1 MiB records: shardline-net framing",
        200_000,
        || {
            let response = shardline_net::FetchResponse {
                topics: vec![shardline_net::FetchTopicResponse {
                    name: "orders".into(),
                    partitions: vec![shardline_net::FetchPartitionResponse {
                        records: slices.clone(),
                        ..shardline_net::FetchPartitionResponse::default()
                    }],
                }],
                ..shardline_net::FetchResponse::default()
            };
            black_box(
                shardline_net::encode_response_pieces(1, 12, 7, shardline_net::ResponseBody::Fetch(response)).unwrap(),
            );
        },
    );
    time_per_op(
        "Fetch v12 response, 1 MiB records: concat + kafka-protocol",
        2_000,
        || {
            let mut concatenated = BytesMut::with_capacity(1 << 20);
            for slice in &slices {
                concatenated.extend_from_slice(slice);
            }
            let concatenated = concatenated.freeze();
            let response = ReferenceFetch::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![PartitionData::default().with_records(Some(concatenated))])]);
            let mut out = BytesMut::new();
            ResponseKind::Fetch(response).encode(&mut out, 12).unwrap();
            black_box(out);
        },
    );
}
