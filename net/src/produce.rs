//! Produce, v3–v9, by hand: the request's record sets stay in the frame.
//!
//! ```text
//! ProduceRequest                      v3..=v8 (classic)        v9 (flexible)
//! +--------------------------------+
//! | transactional_id               | nullable string          compact nullable string
//! | acks: i16                      |
//! | timeout_ms: i32                |
//! | topic_data: array of           | int32 count              uvarint count+1
//! |   name                         | string                   compact string
//! |   partition_data: array of     | int32 count              uvarint count+1
//! |     index: i32                 |
//! |     records                    | nullable bytes (int32)   compact nullable bytes
//! |     <tagged fields>            | -                        skipped
//! |   <tagged fields>              | -                        skipped
//! | <tagged fields>                | -                        skipped
//! +--------------------------------+
//!
//! ProduceResponse
//! +--------------------------------+
//! | responses: array of            | int32 count              uvarint count+1
//! |   name                         | string                   compact string
//! |   partition_responses: array of|
//! |     index: i32                 |
//! |     error_code: i16            |
//! |     base_offset: i64           |
//! |     log_append_time_ms: i64    |
//! |     log_start_offset: i64      | v5+
//! |     record_errors: array of    | v8+ (KIP-467)
//! |       batch_index: i32         |
//! |       message: nullable str    |
//! |       <tagged fields>          | -                        empty
//! |     error_message: nullable str| v8+
//! |     <tagged fields>            | -                        empty
//! |   <tagged fields>              | -                        empty
//! | throttle_time_ms: i32          |
//! | <tagged fields>                | -                        empty
//! +--------------------------------+
//! ```
//!
//! `records` is a Kafka RecordBatch set; net neither decodes nor copies it:
//! it is a [`Bytes::slice`] of the received frame, validated by the log.

use bytes::{BufMut, Bytes, BytesMut};

use crate::apis;
use crate::cursor::{count_entries, Cursor, Encoding};
use crate::error::{DecodeError, EncodeError};
use crate::put::{put_array_len, put_empty_tagged_fields, put_nullable_str, put_str};

/// Lowest Produce version net decodes.
pub(crate) const PRODUCE_VERSION_MIN: i16 = 3;
/// Highest Produce version net decodes (v10+ add tagged response fields and
/// v13 topic ids; not needed by the clients we target).
pub(crate) const PRODUCE_VERSION_MAX: i16 = 9;

/// Smallest encoding of one topic entry (empty name, empty partition array):
/// bounds the topic count by the bytes left before anything is allocated.
fn topic_bytes_min(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Classic => 2 + 4,
        Encoding::Flexible => 1 + 1 + 1,
    }
}

/// Smallest encoding of one partition entry (index, null records).
fn partition_bytes_min(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Classic => 4 + 4,
        Encoding::Flexible => 4 + 1 + 1,
    }
}

/// A decoded Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// Transactional id, or `None` for a non-transactional producer.
    pub transactional_id: Option<String>,
    /// 0 = no response at all, 1 = leader only, -1 = all in-sync replicas.
    pub acks: i16,
    /// How long the client waits for the acks.
    pub timeout_ms: i32,
    /// Record sets by topic.
    pub topics: Vec<ProduceTopic>,
}

/// One topic of a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    /// Topic name.
    pub name: String,
    /// Record sets by partition.
    pub partitions: Vec<ProducePartition>,
}

/// One partition of a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    /// Partition index.
    pub index: i32,
    /// The RecordBatch bytes as sent: a zero-copy slice of the request frame,
    /// not validated here. `None` when the client sent null.
    pub records: Option<Bytes>,
}

impl ProduceRequest {
    /// Decodes a Produce body (the frame after its header) of `version`
    /// (3..=9). Record sets are slices of `body`; trailing bytes after the
    /// last field are ignored, as Kafka does.
    pub fn decode(body: &Bytes, version: i16) -> Result<ProduceRequest, DecodeError> {
        ProduceRequest::decode_within(body, version, usize::MAX)
    }

    /// [`ProduceRequest::decode`], refusing a request that names more than
    /// `entries_max` partition entries in all (before allocating for them).
    pub(crate) fn decode_within(body: &Bytes, version: i16, entries_max: usize) -> Result<ProduceRequest, DecodeError> {
        if !(PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX).contains(&version) {
            return Err(DecodeError::Invalid {
                field: "produce.version",
                reason: "outside 3..=9",
            });
        }
        let encoding = Encoding::from_flexible(apis::is_flexible(apis::PRODUCE, version));
        let mut cursor = Cursor::new(body);
        let transactional_id = cursor
            .nullable_str(encoding, "produce.transactional_id")?
            .map(str::to_owned);
        let acks = cursor.i16("produce.acks")?;
        let timeout_ms = cursor.i32("produce.timeout_ms")?;
        let topic_count = cursor.array_len(encoding, topic_bytes_min(encoding), "produce.topic_data")?;
        let mut entries = count_entries(0, topic_count, entries_max, "produce.topic_data")?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name = cursor.str(encoding, "produce.topic.name")?.to_owned();
            let partition_count =
                cursor.array_len(encoding, partition_bytes_min(encoding), "produce.topic.partition_data")?;
            entries = count_entries(entries, partition_count, entries_max, "produce.topic.partition_data")?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                let index = cursor.i32("produce.partition.index")?;
                let records = cursor.nullable_bytes(encoding, "produce.partition.records")?;
                cursor.skip_tagged_fields(encoding, "produce.partition.tagged_fields")?;
                partitions.push(ProducePartition { index, records });
            }
            cursor.skip_tagged_fields(encoding, "produce.topic.tagged_fields")?;
            topics.push(ProduceTopic { name, partitions });
        }
        cursor.skip_tagged_fields(encoding, "produce.tagged_fields")?;
        Ok(ProduceRequest {
            transactional_id,
            acks,
            timeout_ms,
            topics,
        })
    }
}

/// The answer to a Produce request (not sent at all when `acks` is 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceResponse {
    /// Results by topic.
    pub topics: Vec<ProduceTopicResponse>,
    /// Time the client should back off for quota reasons (0 = none).
    pub throttle_time_ms: i32,
}

/// Results for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceTopicResponse {
    /// Topic name, as in the request.
    pub name: String,
    /// Results by partition.
    pub partitions: Vec<ProducePartitionResponse>,
}

/// Result for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// Partition index.
    pub index: i32,
    /// Kafka error code, 0 for success.
    pub error_code: i16,
    /// Offset assigned to the first record, -1 on error.
    pub base_offset: i64,
    /// Broker append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// The partition's log start offset (sent from v5), -1 if unknown.
    pub log_start_offset: i64,
    /// The records that made the batch be refused (sent from v8, KIP-467).
    pub record_errors: Vec<RecordError>,
    /// Why the partition's data was refused (sent from v8).
    pub error_message: Option<String>,
}

/// One record that made its batch be refused (KIP-467).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The record's index in the partition's records.
    pub batch_index: i32,
    /// What was wrong with it.
    pub message: Option<String>,
}

impl Default for ProducePartitionResponse {
    fn default() -> Self {
        ProducePartitionResponse {
            index: 0,
            error_code: 0,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
            error_message: None,
        }
    }
}

impl ProduceResponse {
    /// Appends the body for `version` (3..=9) to `out`.
    pub(crate) fn encode(&self, out: &mut BytesMut, version: i16) -> Result<(), EncodeError> {
        assert!((PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX).contains(&version));
        let encoding = Encoding::from_flexible(apis::is_flexible(apis::PRODUCE, version));
        put_array_len(out, encoding, Some(self.topics.len()), "produce_response.responses")?;
        for topic in &self.topics {
            put_str(out, encoding, &topic.name, "produce_response.topic.name")?;
            put_array_len(
                out,
                encoding,
                Some(topic.partitions.len()),
                "produce_response.topic.partition_responses",
            )?;
            for partition in &topic.partitions {
                out.put_i32(partition.index);
                out.put_i16(partition.error_code);
                out.put_i64(partition.base_offset);
                out.put_i64(partition.log_append_time_ms);
                if version >= 5 {
                    out.put_i64(partition.log_start_offset);
                }
                if version >= 8 {
                    put_array_len(
                        out,
                        encoding,
                        Some(partition.record_errors.len()),
                        "produce_response.partition.record_errors",
                    )?;
                    for error in &partition.record_errors {
                        out.put_i32(error.batch_index);
                        put_nullable_str(
                            out,
                            encoding,
                            error.message.as_deref(),
                            "produce_response.partition.record_errors.message",
                        )?;
                        put_empty_tagged_fields(out, encoding);
                    }
                    put_nullable_str(
                        out,
                        encoding,
                        partition.error_message.as_deref(),
                        "produce_response.partition.error_message",
                    )?;
                }
                put_empty_tagged_fields(out, encoding);
            }
            put_empty_tagged_fields(out, encoding);
        }
        out.put_i32(self.throttle_time_ms);
        put_empty_tagged_fields(out, encoding);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest as Reference, ProduceResponse as ReferenceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn reference_request(with_nulls: bool) -> Reference {
        let batch_a = Bytes::from((0..300u32).map(|index| index as u8).collect::<Vec<_>>());
        let batch_b = Bytes::from_static(b"\x00\x01second-batch");
        Reference::default()
            .with_transactional_id(with_nulls.then(|| StrBytes::from_static_str("txn-1").into()))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch_a)),
                        PartitionProduceData::default()
                            .with_index(7)
                            .with_records(if with_nulls { None } else { Some(Bytes::new()) }),
                    ]),
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("événements")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(3)
                        .with_records(Some(batch_b))]),
            ])
    }

    fn encode_reference(request: &Reference, version: i16) -> Bytes {
        let mut out = BytesMut::new();
        request.encode(&mut out, version).unwrap();
        out.freeze()
    }

    fn assert_matches_reference(decoded: &ProduceRequest, reference: &Reference, body: &Bytes) {
        assert_eq!(
            decoded.transactional_id.as_deref(),
            reference.transactional_id.as_ref().map(|id| id.as_str())
        );
        assert_eq!(decoded.acks, reference.acks);
        assert_eq!(decoded.timeout_ms, reference.timeout_ms);
        assert_eq!(decoded.topics.len(), reference.topic_data.len());
        let body_range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        for (topic, expected) in decoded.topics.iter().zip(&reference.topic_data) {
            assert_eq!(topic.name, expected.name.as_str());
            assert_eq!(topic.partitions.len(), expected.partition_data.len());
            for (partition, expected) in topic.partitions.iter().zip(&expected.partition_data) {
                assert_eq!(partition.index, expected.index);
                assert_eq!(partition.records, expected.records, "byte-identical records");
                if let Some(records) = partition.records.as_ref().filter(|records| !records.is_empty()) {
                    let start = records.as_ptr() as usize;
                    assert!(
                        body_range.contains(&start) && body_range.contains(&(start + records.len() - 1)),
                        "records must be a slice of the frame, not a copy"
                    );
                }
            }
        }
    }

    #[test]
    fn decodes_v3_v7_v9_against_kafka_protocol_encoder() {
        for version in [3, 7, 9] {
            for with_nulls in [false, true] {
                let reference = reference_request(with_nulls);
                let body = encode_reference(&reference, version);
                let decoded = ProduceRequest::decode(&body, version).unwrap();
                assert_matches_reference(&decoded, &reference, &body);
            }
        }
    }

    #[test]
    fn a_request_naming_more_entries_than_allowed_is_refused_unread() {
        // Two topics and three partitions: five entries.
        let body = encode_reference(&reference_request(false), 7);
        assert!(ProduceRequest::decode_within(&body, 7, 5).is_ok());
        let refused = ProduceRequest::decode_within(&body, 7, 4).unwrap_err();
        assert!(refused.to_string().contains("--max-request-entries"), "{refused}");
        assert!(ProduceRequest::decode_within(&body, 7, 1).is_err());
    }

    #[test]
    fn decodes_every_supported_version() {
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let reference = reference_request(false);
            let body = encode_reference(&reference, version);
            let decoded = ProduceRequest::decode(&body, version).unwrap();
            assert_matches_reference(&decoded, &reference, &body);
        }
    }

    #[test]
    fn v9_skips_unknown_tagged_fields_everywhere() {
        let mut reference = reference_request(false);
        reference.unknown_tagged_fields.insert(5, Bytes::from_static(b"top"));
        reference.topic_data[0]
            .unknown_tagged_fields
            .insert(9, Bytes::from_static(b"topic-level"));
        reference.topic_data[0].partition_data[0]
            .unknown_tagged_fields
            .insert(1, Bytes::from_static(b"p"));
        let body = encode_reference(&reference, 9);
        let decoded = ProduceRequest::decode(&body, 9).unwrap();
        assert_matches_reference(&decoded, &reference, &body);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for version in [3, 9] {
            let body = encode_reference(&reference_request(true), version);
            for length in 0..body.len() {
                assert!(
                    ProduceRequest::decode(&body.slice(..length), version).is_err(),
                    "v{version} {length}"
                );
            }
        }
    }

    #[test]
    fn huge_counts_are_rejected_before_allocation() {
        let mut body = BytesMut::new();
        body.put_i16(-1);
        body.put_i16(1);
        body.put_i32(0);
        body.put_i32(i32::MAX);
        assert!(ProduceRequest::decode(&body.freeze(), 3).is_err());
        assert!(ProduceRequest::decode(&Bytes::new(), 2).is_err());
        assert!(ProduceRequest::decode(&Bytes::new(), 10).is_err());
    }

    fn sample_response() -> ProduceResponse {
        ProduceResponse {
            topics: vec![
                ProduceTopicResponse {
                    name: "orders".into(),
                    partitions: vec![
                        ProducePartitionResponse {
                            index: 0,
                            error_code: 0,
                            base_offset: 1_000,
                            log_append_time_ms: -1,
                            log_start_offset: 12,
                            ..ProducePartitionResponse::default()
                        },
                        ProducePartitionResponse {
                            index: 9,
                            error_code: 3,
                            ..ProducePartitionResponse::default()
                        },
                        ProducePartitionResponse {
                            index: 4,
                            error_code: 32,
                            record_errors: vec![
                                RecordError {
                                    batch_index: 2,
                                    message: Some("too old".into()),
                                },
                                RecordError {
                                    batch_index: 5,
                                    message: None,
                                },
                            ],
                            error_message: Some("2 records out of bounds".into()),
                            ..ProducePartitionResponse::default()
                        },
                    ],
                },
                ProduceTopicResponse {
                    name: "empty".into(),
                    partitions: vec![],
                },
            ],
            throttle_time_ms: 25,
        }
    }

    #[test]
    fn response_decodes_with_kafka_protocol_for_every_version() {
        let response = sample_response();
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let mut out = BytesMut::new();
            response.encode(&mut out, version).unwrap();
            let mut bytes = out.freeze();
            let decoded = ReferenceResponse::decode(&mut bytes, version).unwrap();
            assert!(bytes.is_empty(), "v{version}: no trailing bytes");
            assert_eq!(decoded.throttle_time_ms, 25);
            assert_eq!(decoded.responses.len(), 2);
            for (topic, expected) in decoded.responses.iter().zip(&response.topics) {
                assert_eq!(topic.name.as_str(), expected.name);
                assert_eq!(topic.partition_responses.len(), expected.partitions.len());
                for (partition, expected) in topic.partition_responses.iter().zip(&expected.partitions) {
                    assert_eq!(partition.index, expected.index);
                    assert_eq!(partition.error_code, expected.error_code);
                    assert_eq!(partition.base_offset, expected.base_offset);
                    assert_eq!(partition.log_append_time_ms, expected.log_append_time_ms);
                    let log_start = if version >= 5 { expected.log_start_offset } else { -1 };
                    assert_eq!(partition.log_start_offset, log_start);
                    if version >= 8 {
                        let errors: Vec<(i32, Option<&str>)> = partition
                            .record_errors
                            .iter()
                            .map(|e| (e.batch_index, e.batch_index_error_message.as_ref().map(|m| m.as_str())))
                            .collect();
                        let expected_errors: Vec<(i32, Option<&str>)> = expected
                            .record_errors
                            .iter()
                            .map(|e| (e.batch_index, e.message.as_deref()))
                            .collect();
                        assert_eq!(errors, expected_errors);
                        assert_eq!(
                            partition.error_message.as_ref().map(|m| m.as_str()),
                            expected.error_message.as_deref()
                        );
                    } else {
                        assert!(partition.record_errors.is_empty());
                    }
                }
            }
            // Byte-for-byte what kafka-protocol's broker-side encoder writes.
            let mut reference_out = BytesMut::new();
            decoded.encode(&mut reference_out, version).unwrap();
            let mut ours = BytesMut::new();
            response.encode(&mut ours, version).unwrap();
            assert_eq!(ours, reference_out, "v{version}");
        }
    }
}
