//! Fetch responses, v4–v12, framed by hand so record sets go out untouched.
//!
//! ```text
//! FetchResponse                          v4..=v11 (classic)      v12 (flexible)
//! +-------------------------------------+
//! | throttle_time_ms: i32               |
//! | error_code: i16                     | v7+
//! | session_id: i32                     | v7+
//! | responses: array of                 | int32 count             uvarint count+1
//! |   topic                             | string                  compact string
//! |   partitions: array of              |
//! |     partition_index: i32            |
//! |     error_code: i16                 |
//! |     high_watermark: i64             |
//! |     last_stable_offset: i64         |
//! |     log_start_offset: i64           | v5+
//! |     aborted_transactions            | nullable array          compact nullable array
//! |       producer_id: i64              |
//! |       first_offset: i64             |
//! |       <tagged fields>               | -                       empty
//! |     preferred_read_replica: i32     | v11+
//! |     records: length prefix          | int32 (sum of slices)   uvarint (sum of slices)+1
//! |     ...record slices, in order...   | written as given, never copied by the encoder
//! |     <tagged fields>                 | -                       empty
//! |   <tagged fields>                   | -                       empty
//! | <tagged fields>                     | -                       empty
//! +-------------------------------------+
//! ```
//!
//! The encoder writes every field except the records into small owned
//! buffers and appends each record slice as its own piece of the
//! [`ResponseFrame`](crate::frame::ResponseFrame); `conn.rs` decides how the
//! pieces reach the socket (see docs/kafka-wire.md for the measurements).
//! Fields that the negotiated version does not have are left out, whatever
//! their value.

use bytes::{BufMut, Bytes};

use crate::apis;
use crate::cursor::Encoding;
use crate::error::EncodeError;
use crate::frame::FrameBuilder;
use crate::put::{put_array_len, put_bytes_len, put_empty_tagged_fields, put_str};

/// Lowest Fetch version net answers.
pub(crate) const FETCH_VERSION_MIN: i16 = 4;
/// Highest Fetch version net answers (v13 switches to topic ids).
pub(crate) const FETCH_VERSION_MAX: i16 = 12;

/// The answer to a Fetch request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponse {
    /// Quota back-off asked of the client (0 = none).
    pub throttle_time_ms: i32,
    /// Top-level error code (sent from v7), 0 for success.
    pub error_code: i16,
    /// Fetch session id (sent from v7); 0 = no session.
    pub session_id: i32,
    /// Results by topic.
    pub topics: Vec<FetchTopicResponse>,
}

/// Results for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchTopicResponse {
    /// Topic name.
    pub name: String,
    /// Results by partition.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// Result for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// Partition index.
    pub partition_index: i32,
    /// Kafka error code, 0 for success.
    pub error_code: i16,
    /// Offset after the last committed record.
    pub high_watermark: i64,
    /// Last stable offset (= high watermark without transactions).
    pub last_stable_offset: i64,
    /// Log start offset (sent from v5).
    pub log_start_offset: i64,
    /// Aborted transactions in the returned range; `None` (null) when the
    /// request was read-uncommitted or there are none to report.
    pub aborted_transactions: Option<Vec<AbortedTransaction>>,
    /// Replica the client should fetch from instead (sent from v11), -1 = none.
    pub preferred_read_replica: i32,
    /// Whole RecordBatches, in offset order, as slices of the log's mapped
    /// segments. They are concatenated on the wire without being copied by
    /// the encoder; an empty list sends an empty (not null) record set.
    pub records: Vec<Bytes>,
}

impl Default for FetchPartitionResponse {
    fn default() -> Self {
        FetchPartitionResponse {
            partition_index: 0,
            error_code: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: None,
            preferred_read_replica: -1,
            records: Vec::new(),
        }
    }
}

/// An aborted transaction inside the fetched range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    /// Producer that aborted.
    pub producer_id: i64,
    /// First offset of the aborted transaction.
    pub first_offset: i64,
}

impl FetchResponse {
    /// Total bytes of record slices in the response.
    pub fn records_bytes(&self) -> usize {
        self.topics
            .iter()
            .flat_map(|topic| &topic.partitions)
            .flat_map(|partition| &partition.records)
            .map(Bytes::len)
            .sum()
    }

    /// Appends the body for `version` (4..=12) to `frame`, the record slices
    /// as pieces of their own.
    pub(crate) fn encode(self, frame: &mut FrameBuilder, version: i16) -> Result<(), EncodeError> {
        assert!((FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version));
        let encoding = Encoding::from_flexible(apis::is_flexible(apis::FETCH, version));
        let out = frame.buf();
        out.put_i32(self.throttle_time_ms);
        if version >= 7 {
            out.put_i16(self.error_code);
            out.put_i32(self.session_id);
        }
        put_array_len(out, encoding, Some(self.topics.len()), "fetch_response.responses")?;
        for topic in self.topics {
            let out = frame.buf();
            put_str(out, encoding, &topic.name, "fetch_response.topic")?;
            put_array_len(out, encoding, Some(topic.partitions.len()), "fetch_response.partitions")?;
            for partition in topic.partitions {
                encode_partition(frame, partition, version, encoding)?;
            }
            put_empty_tagged_fields(frame.buf(), encoding);
        }
        put_empty_tagged_fields(frame.buf(), encoding);
        Ok(())
    }
}

fn encode_partition(
    frame: &mut FrameBuilder,
    partition: FetchPartitionResponse,
    version: i16,
    encoding: Encoding,
) -> Result<(), EncodeError> {
    let out = frame.buf();
    out.put_i32(partition.partition_index);
    out.put_i16(partition.error_code);
    out.put_i64(partition.high_watermark);
    out.put_i64(partition.last_stable_offset);
    if version >= 5 {
        out.put_i64(partition.log_start_offset);
    }
    let aborted = partition.aborted_transactions.as_deref();
    put_array_len(
        out,
        encoding,
        aborted.map(<[AbortedTransaction]>::len),
        "fetch_response.aborted_transactions",
    )?;
    for transaction in aborted.unwrap_or_default() {
        out.put_i64(transaction.producer_id);
        out.put_i64(transaction.first_offset);
        put_empty_tagged_fields(out, encoding);
    }
    if version >= 11 {
        out.put_i32(partition.preferred_read_replica);
    }
    let records_bytes: usize = partition.records.iter().map(Bytes::len).sum();
    put_bytes_len(out, encoding, Some(records_bytes), "fetch_response.records")?;
    for slice in partition.records {
        frame.push_shared(slice);
    }
    put_empty_tagged_fields(frame.buf(), encoding);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse as Reference;
    use kafka_protocol::protocol::Decodable;

    fn batch(seed: u8, length: usize) -> Bytes {
        Bytes::from(
            (0..length)
                .map(|index| seed.wrapping_add(index as u8))
                .collect::<Vec<_>>(),
        )
    }

    fn sample(records: &[Bytes]) -> FetchResponse {
        FetchResponse {
            throttle_time_ms: 3,
            error_code: 0,
            session_id: 0,
            topics: vec![
                FetchTopicResponse {
                    name: "orders".into(),
                    partitions: vec![
                        FetchPartitionResponse {
                            partition_index: 0,
                            high_watermark: 500,
                            last_stable_offset: 500,
                            log_start_offset: 10,
                            records: records.to_vec(),
                            ..FetchPartitionResponse::default()
                        },
                        FetchPartitionResponse {
                            partition_index: 1,
                            error_code: 1,
                            aborted_transactions: Some(vec![AbortedTransaction {
                                producer_id: 77,
                                first_offset: 40,
                            }]),
                            ..FetchPartitionResponse::default()
                        },
                    ],
                },
                FetchTopicResponse {
                    name: "quiet".into(),
                    partitions: vec![],
                },
            ],
        }
    }

    #[test]
    fn decodes_with_kafka_protocol_for_every_version_and_records_are_not_copied() {
        let records = vec![batch(1, 70_000), batch(2, 61), batch(3, 1 << 17)];
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let response = sample(&records);
            let mut builder = FrameBuilder::new(42, apis::response_header_version(apis::FETCH, version).unwrap());
            response.clone().encode(&mut builder, version).unwrap();
            let frame = builder.finish().unwrap();

            // Every record slice is a piece of the frame, by pointer.
            for slice in &records {
                assert!(
                    frame
                        .pieces
                        .iter()
                        .any(|piece| piece.as_ptr() == slice.as_ptr() && piece.len() == slice.len()),
                    "v{version}: record slice passed through"
                );
            }

            let wire = Bytes::from(frame.to_vec());
            let length = i32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            assert_eq!(length, wire.len() - 4);
            let mut body = wire.slice(4..);
            let header = kafka_protocol::messages::ResponseHeader::decode(
                &mut body,
                apis::response_header_version(apis::FETCH, version).unwrap(),
            )
            .unwrap();
            assert_eq!(header.correlation_id, 42);
            let decoded = Reference::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: no trailing bytes");
            assert_eq!(decoded.throttle_time_ms, 3);
            assert_eq!(decoded.responses.len(), 2);
            let partitions = &decoded.responses[0].partitions;
            assert_eq!(decoded.responses[0].topic.as_str(), "orders");
            assert_eq!(partitions[0].high_watermark, 500);
            assert_eq!(partitions[0].log_start_offset, if version >= 5 { 10 } else { -1 });
            assert_eq!(partitions[0].preferred_read_replica, -1);
            assert_eq!(partitions[0].aborted_transactions, None);
            let concatenated: Vec<u8> = records.iter().flat_map(|slice| slice.iter().copied()).collect();
            assert_eq!(partitions[0].records.as_deref(), Some(&concatenated[..]));
            assert_eq!(partitions[1].error_code, 1);
            let aborted = partitions[1].aborted_transactions.as_ref().unwrap();
            assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (77, 40));
            assert_eq!(partitions[1].records.as_deref(), Some(&[][..]), "empty, not null");
            assert!(decoded.responses[1].partitions.is_empty());
        }
    }

    #[test]
    fn session_fields_only_from_v7() {
        for version in [6, 7] {
            let response = FetchResponse {
                error_code: 5,
                session_id: 99,
                ..FetchResponse::default()
            };
            let mut builder = FrameBuilder::new(1, 0);
            response.encode(&mut builder, version).unwrap();
            let wire = Bytes::from(builder.finish().unwrap().to_vec());
            let mut body = wire.slice(8..);
            let decoded = Reference::decode(&mut body, version).unwrap();
            if version >= 7 {
                assert_eq!((decoded.error_code, decoded.session_id), (5, 99));
            } else {
                assert_eq!((decoded.error_code, decoded.session_id), (0, 0));
            }
        }
    }
}
