//! The walk a follower runs over its leader's Fetch and OffsetForLeaderEpoch
//! responses before kafka-protocol decodes them (`check_response`): real
//! responses pass whole, every cut-short one and every count larger than the
//! bytes behind it is refused, and so is a response naming more entries than
//! the bound — without allocating for the count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData},
        offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
        FetchResponse, OffsetForLeaderEpochResponse, TopicName,
    },
    protocol::{Encodable, StrBytes},
};
use shardline_net::{check_response, DecodeError};

const FETCH: i16 = 1;
const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
const ENTRIES_MAX: usize = 10_000;

fn encode(message: &impl Encodable, version: i16) -> Bytes {
    let mut body = BytesMut::new();
    message.encode(&mut body, version).unwrap();
    body.freeze()
}

fn fetch_response(topics: usize, partitions: usize) -> FetchResponse {
    let mut response = FetchResponse::default();
    response.responses = (0..topics)
        .map(|t| {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
            topic.partitions = (0..partitions)
                .map(|p| {
                    let mut data = PartitionData::default();
                    data.partition_index = p as i32;
                    data.high_watermark = 7;
                    let mut aborted = AbortedTransaction::default();
                    aborted.producer_id = kafka_protocol::messages::ProducerId(3);
                    data.aborted_transactions = Some(vec![aborted]);
                    data.records = Some(Bytes::from(vec![p as u8; 90]));
                    data
                })
                .collect();
            topic
        })
        .collect();
    response
}

fn epoch_response(topics: usize, partitions: usize) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    response.topics = (0..topics)
        .map(|t| {
            let mut topic = OffsetForLeaderTopicResult::default();
            topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
            topic.partitions = (0..partitions)
                .map(|p| {
                    let mut answer = EpochEndOffset::default();
                    answer.partition = p as i32;
                    answer.end_offset = 100;
                    answer
                })
                .collect();
            topic
        })
        .collect();
    response
}

#[test]
fn real_responses_pass_whole_and_every_cut_short_one_is_refused() {
    let cases = [
        (FETCH, 12, encode(&fetch_response(2, 3), 12)),
        (FETCH, 4, encode(&fetch_response(2, 3), 4)),
        (OFFSET_FOR_LEADER_EPOCH, 3, encode(&epoch_response(2, 3), 3)),
        (OFFSET_FOR_LEADER_EPOCH, 4, encode(&epoch_response(2, 3), 4)),
    ];
    for (api_key, version, body) in cases {
        let consumed = check_response(api_key, version, &body, ENTRIES_MAX).unwrap();
        assert_eq!(consumed, body.len(), "api {api_key} v{version} walked to its end");
        for cut in 0..body.len() {
            assert!(
                check_response(api_key, version, &body.slice(..cut), ENTRIES_MAX).is_err(),
                "api {api_key} v{version} cut to {cut} of {} bytes",
                body.len()
            );
        }
    }
}

#[test]
fn a_count_larger_than_the_bytes_behind_it_is_refused() {
    // Fetch v12 (flexible): throttle, error, session id, then a compact
    // array count of 2^31 - 2 topics (uvarint of 2^31 - 1) and nothing else.
    let mut body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    let refused = check_response(FETCH, 12, &Bytes::from(body), ENTRIES_MAX);
    assert!(matches!(refused, Err(DecodeError::Truncated { .. })), "{refused:?}");
    // OffsetForLeaderEpoch v3 (classic): throttle, then i32::MAX topics.
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(check_response(OFFSET_FOR_LEADER_EPOCH, 3, &Bytes::from(body), ENTRIES_MAX).is_err());
}

#[test]
fn more_entries_than_the_bound_are_refused() {
    let body = encode(&epoch_response(1, 40), 3);
    assert!(check_response(OFFSET_FOR_LEADER_EPOCH, 3, &body, 41).is_ok());
    assert!(matches!(
        check_response(OFFSET_FOR_LEADER_EPOCH, 3, &body, 40),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn apis_without_a_response_schema_are_refused() {
    assert!(check_response(3, 12, &Bytes::new(), ENTRIES_MAX).is_err());
}
