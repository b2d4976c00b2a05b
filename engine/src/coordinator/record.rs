//! The coordinators' own record format: committed offsets and group
//! metadata, stored in the `__consumer_offsets` partitions, and transaction
//! state, stored in the `__transaction_state` partitions.
//!
//! Each write is one Kafka RecordBatch v2 (uncompressed, no producer id, see
//! `shardline_log::batch`), so the log validates and stores it like any other
//! batch and `shardctl log dump` reads those partitions. The batch's records
//! are real Kafka records (framed by the log's `record.rs`: timestamp Δ 0,
//! no headers); each record's value is one entry, and its key is the entry
//! that would delete it (the offset tombstone of its group, topic and
//! partition; the group tombstone of its group), so the log's cleaner
//! (`shardline_log`, `cleanup.policy=compact`) keeps the latest entry per
//! key. A tombstone entry is written as its key with a null value — a Kafka
//! tombstone, which the cleaner removes after `delete.retention.ms`.
//! Batches written before keys were (null key, tombstones as values) read
//! the same way; they are never compacted away, only superseded.
//!
//! ```text
//! entry (big-endian):
//!  byte 0         1        2                6                10
//!       +---------+--------+----------------+----------------+---------------------+
//!       | version | kind   | crc32c         | body length    | body                |
//!       | u8 = 1  | u8     | u32            | u32            | body length bytes   |
//!       +---------+--------+----------------+----------------+---------------------+
//!       crc32c (Castagnoli) covers bytes 0..2 and 6..end (everything but itself)
//!
//! body by kind (str = u16 length + UTF-8; nstr = the same, length 0xFFFF = null;
//!               bytes = u32 length + bytes):
//!   1 offset commit     group str | topic str | partition i32 | offset i64
//!                       | leader epoch i32 | commit timestamp ms i64 | metadata nstr
//!   2 offset tombstone  group str | topic str | partition i32
//!   3 group metadata    group str | protocol type str | protocol nstr | generation i32
//!                       | leader nstr | member count u16 | members:
//!                         member id str | instance id nstr | client id str | client host str
//!                         | session timeout ms i32 | rebalance timeout ms i32
//!                         | subscription bytes | assignment bytes
//!   4 group tombstone   group str
//!   5 txn offset commit group str | producer id i64 | topic str | partition i32 | offset i64
//!                       | leader epoch i32 | commit timestamp ms i64 | metadata nstr
//!                       (an offset committed inside a transaction: pending until
//!                       the transaction ends)
//!   6 txn offset tombstone  group str | producer id i64 | topic str | partition i32
//!   7 transaction       transactional id str | producer id i64 | producer epoch i16
//!                       | timeout ms i32 | state u8 (0 empty, 1 ongoing, 2 prepare commit,
//!                         3 prepare abort, 4 complete commit, 5 complete abort)
//!                       | started ms i64 | updated ms i64
//!                       | partition count u32 | (topic str | partition i32)…
//!                       | group count u32 | group str…
//!   8 transaction tombstone  transactional id str
//! ```
//!
//! A transaction's committed offsets (kind 5) are keyed apart from plain
//! commits, by producer too, so compaction can never let an aborted one
//! shadow a committed offset; when the transaction ends, one batch turns
//! them into plain commits (commit) and deletes them (kind 6), atomically.
//!
//! Replay applies entries in log order; the last entry per key wins (offsets
//! are keyed by group, topic and partition; metadata by group). A tombstone
//! removes the key. An entry with an unknown version or kind, a bad CRC or a
//! body that does not parse is an error for the whole batch: the log's own
//! CRC already covered it, so it means a bug or a format from the future, and
//! the coordinator does not guess: replay logs the error and skips the batch.

use bytes::Bytes;
use shardline_log::{build_keyed_batch, uncompressed_records, validate_stored};

use super::transaction::{TxnMetadata, TxnState};
use crate::producer::{ProducerEpoch, ProducerId};

/// The only entry format version written and read.
pub(crate) const ENTRY_VERSION: u8 = 1;
/// Bytes before an entry's body: version, kind, crc, body length.
pub(crate) const ENTRY_HEADER_BYTES: usize = 10;
const _: () = assert!(ENTRY_HEADER_BYTES == 1 + 1 + 4 + 4);

const KIND_OFFSET_COMMIT: u8 = 1;
const KIND_OFFSET_TOMBSTONE: u8 = 2;
const KIND_GROUP_METADATA: u8 = 3;
const KIND_GROUP_TOMBSTONE: u8 = 4;
const KIND_TXN_OFFSET_COMMIT: u8 = 5;
const KIND_TXN_OFFSET_TOMBSTONE: u8 = 6;
const KIND_TRANSACTION: u8 = 7;
const KIND_TRANSACTION_TOMBSTONE: u8 = 8;

/// Null marker of a nullable string's u16 length.
const NULL_STRING: u16 = u16::MAX;

/// Why stored coordinator bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// The enclosing record batch is not valid.
    Batch(String),
    /// A Kafka record or an entry ends before its declared length.
    Truncated(&'static str),
    /// An entry written by a format version this build does not know.
    UnknownVersion(u8),
    /// An entry kind this build does not know.
    UnknownKind(u8),
    /// An entry whose CRC does not match its bytes.
    BadCrc { stored: u32, computed: u32 },
    /// A field that does not make sense (negative length, bad UTF-8, …).
    Invalid(&'static str),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Batch(why) => write!(f, "coordinator batch invalid: {why}"),
            RecordError::Truncated(field) => write!(f, "coordinator entry truncated at {field}"),
            RecordError::UnknownVersion(v) => write!(f, "coordinator entry version {v} unknown"),
            RecordError::UnknownKind(k) => write!(f, "coordinator entry kind {k} unknown"),
            RecordError::BadCrc { stored, computed } => {
                write!(f, "coordinator entry crc {stored:#010x} != computed {computed:#010x}")
            }
            RecordError::Invalid(field) => write!(f, "coordinator entry field {field} invalid"),
        }
    }
}

// The plain values stored (a committed offset, a group's metadata) are
// the group rules' own; this file owns their bytes.
pub(crate) use shardline_groups::{CommittedOffset, GroupSnapshot, MemberSnapshot};

/// One stored fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        committed: CommittedOffset,
    },
    OffsetTombstone {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(GroupSnapshot),
    GroupTombstone {
        group: String,
    },
    /// An offset committed inside producer `producer_id`'s transaction.
    TxnOffsetCommit {
        group: String,
        producer_id: i64,
        topic: String,
        partition: i32,
        committed: CommittedOffset,
    },
    TxnOffsetTombstone {
        group: String,
        producer_id: i64,
        topic: String,
        partition: i32,
    },
    /// A transactional id's state (`transaction.rs`).
    Transaction(TxnMetadata),
    TransactionTombstone {
        transactional_id: String,
    },
}

impl Entry {
    fn kind(&self) -> u8 {
        match self {
            Entry::OffsetCommit { .. } => KIND_OFFSET_COMMIT,
            Entry::OffsetTombstone { .. } => KIND_OFFSET_TOMBSTONE,
            Entry::Group(_) => KIND_GROUP_METADATA,
            Entry::GroupTombstone { .. } => KIND_GROUP_TOMBSTONE,
            Entry::TxnOffsetCommit { .. } => KIND_TXN_OFFSET_COMMIT,
            Entry::TxnOffsetTombstone { .. } => KIND_TXN_OFFSET_TOMBSTONE,
            Entry::Transaction(_) => KIND_TRANSACTION,
            Entry::TransactionTombstone { .. } => KIND_TRANSACTION_TOMBSTONE,
        }
    }

    /// The record key of the entry: the tombstone of what it sets.
    pub(crate) fn key(&self) -> Vec<u8> {
        let tombstone = match self {
            Entry::OffsetCommit {
                group,
                topic,
                partition,
                ..
            }
            | Entry::OffsetTombstone {
                group,
                topic,
                partition,
            } => Entry::OffsetTombstone {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
            },
            Entry::Group(GroupSnapshot { group, .. }) | Entry::GroupTombstone { group } => {
                Entry::GroupTombstone { group: group.clone() }
            }
            Entry::TxnOffsetCommit {
                group,
                producer_id,
                topic,
                partition,
                ..
            }
            | Entry::TxnOffsetTombstone {
                group,
                producer_id,
                topic,
                partition,
            } => Entry::TxnOffsetTombstone {
                group: group.clone(),
                producer_id: *producer_id,
                topic: topic.clone(),
                partition: *partition,
            },
            Entry::Transaction(TxnMetadata { transactional_id, .. })
            | Entry::TransactionTombstone { transactional_id } => Entry::TransactionTombstone {
                transactional_id: transactional_id.clone(),
            },
        };
        tombstone.encode()
    }

    /// Whether the entry deletes its key (written as a null value).
    fn is_tombstone(&self) -> bool {
        matches!(
            self,
            Entry::OffsetTombstone { .. }
                | Entry::GroupTombstone { .. }
                | Entry::TxnOffsetTombstone { .. }
                | Entry::TransactionTombstone { .. }
        )
    }

    /// The entry as bytes (header and body).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Entry::OffsetCommit {
                group,
                topic,
                partition,
                committed,
            } => {
                put_str(&mut body, group);
                put_str(&mut body, topic);
                body.extend_from_slice(&partition.to_be_bytes());
                put_committed(&mut body, committed);
            }
            Entry::OffsetTombstone {
                group,
                topic,
                partition,
            } => {
                put_str(&mut body, group);
                put_str(&mut body, topic);
                body.extend_from_slice(&partition.to_be_bytes());
            }
            Entry::Group(snapshot) => {
                put_str(&mut body, &snapshot.group);
                put_str(&mut body, &snapshot.protocol_type);
                put_nullable_str(&mut body, snapshot.protocol.as_deref());
                body.extend_from_slice(&snapshot.generation.to_be_bytes());
                put_nullable_str(&mut body, snapshot.leader.as_deref());
                let count = u16::try_from(snapshot.members.len()).unwrap_or(u16::MAX);
                body.extend_from_slice(&count.to_be_bytes());
                for member in snapshot.members.iter().take(usize::from(count)) {
                    put_str(&mut body, &member.member_id);
                    put_nullable_str(&mut body, member.instance_id.as_deref());
                    put_str(&mut body, &member.client_id);
                    put_str(&mut body, &member.client_host);
                    body.extend_from_slice(&member.session_timeout_ms.to_be_bytes());
                    body.extend_from_slice(&member.rebalance_timeout_ms.to_be_bytes());
                    put_bytes(&mut body, &member.subscription);
                    put_bytes(&mut body, &member.assignment);
                }
            }
            Entry::GroupTombstone { group } => put_str(&mut body, group),
            Entry::TxnOffsetCommit {
                group,
                producer_id,
                topic,
                partition,
                committed,
            } => {
                put_str(&mut body, group);
                body.extend_from_slice(&producer_id.to_be_bytes());
                put_str(&mut body, topic);
                body.extend_from_slice(&partition.to_be_bytes());
                put_committed(&mut body, committed);
            }
            Entry::TxnOffsetTombstone {
                group,
                producer_id,
                topic,
                partition,
            } => {
                put_str(&mut body, group);
                body.extend_from_slice(&producer_id.to_be_bytes());
                put_str(&mut body, topic);
                body.extend_from_slice(&partition.to_be_bytes());
            }
            Entry::Transaction(txn) => {
                put_str(&mut body, &txn.transactional_id);
                body.extend_from_slice(&txn.producer_id.0.to_be_bytes());
                body.extend_from_slice(&txn.producer_epoch.0.to_be_bytes());
                body.extend_from_slice(&txn.timeout_ms.to_be_bytes());
                body.push(txn.state.code());
                body.extend_from_slice(&txn.started_ms.to_be_bytes());
                body.extend_from_slice(&txn.updated_ms.to_be_bytes());
                body.extend_from_slice(&u32::try_from(txn.partitions.len()).unwrap_or(u32::MAX).to_be_bytes());
                for (topic, partition) in &txn.partitions {
                    put_str(&mut body, topic);
                    body.extend_from_slice(&partition.to_be_bytes());
                }
                body.extend_from_slice(&u32::try_from(txn.groups.len()).unwrap_or(u32::MAX).to_be_bytes());
                for group in &txn.groups {
                    put_str(&mut body, group);
                }
            }
            Entry::TransactionTombstone { transactional_id } => put_str(&mut body, transactional_id),
        }
        let body_length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + body.len());
        out.push(ENTRY_VERSION);
        out.push(self.kind());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body_length.to_be_bytes());
        out.extend_from_slice(&body);
        let crc = entry_crc(&out);
        if let Some(field) = out.get_mut(2..6) {
            field.copy_from_slice(&crc.to_be_bytes());
        }
        out
    }

    /// Reads one entry; the whole input must be the entry.
    pub(crate) fn decode(input: &[u8]) -> Result<Entry, RecordError> {
        let mut reader = Reader { input };
        let version = reader.u8("version")?;
        if version != ENTRY_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let kind = reader.u8("kind")?;
        let stored = reader.u32("crc")?;
        let body_length =
            usize::try_from(reader.u32("body length")?).map_err(|_| RecordError::Invalid("body length"))?;
        if reader.input.len() != body_length {
            return Err(RecordError::Truncated("body"));
        }
        let computed = entry_crc(input);
        if stored != computed {
            return Err(RecordError::BadCrc { stored, computed });
        }
        let entry = match kind {
            KIND_OFFSET_COMMIT => Entry::OffsetCommit {
                group: reader.str("group")?,
                topic: reader.str("topic")?,
                partition: reader.i32("partition")?,
                committed: reader.committed()?,
            },
            KIND_OFFSET_TOMBSTONE => Entry::OffsetTombstone {
                group: reader.str("group")?,
                topic: reader.str("topic")?,
                partition: reader.i32("partition")?,
            },
            KIND_GROUP_METADATA => {
                let group = reader.str("group")?;
                let protocol_type = reader.str("protocol type")?;
                let protocol = reader.nullable_str("protocol")?;
                let generation = reader.i32("generation")?;
                let leader = reader.nullable_str("leader")?;
                let count = reader.u16("member count")?;
                let mut members = Vec::new();
                for _ in 0..count {
                    members.push(MemberSnapshot {
                        member_id: reader.str("member id")?,
                        instance_id: reader.nullable_str("instance id")?,
                        client_id: reader.str("client id")?,
                        client_host: reader.str("client host")?,
                        session_timeout_ms: reader.i32("session timeout")?,
                        rebalance_timeout_ms: reader.i32("rebalance timeout")?,
                        subscription: reader.bytes("subscription")?,
                        assignment: reader.bytes("assignment")?,
                    });
                }
                Entry::Group(GroupSnapshot {
                    group,
                    protocol_type,
                    protocol,
                    generation,
                    leader,
                    members,
                })
            }
            KIND_GROUP_TOMBSTONE => Entry::GroupTombstone {
                group: reader.str("group")?,
            },
            KIND_TXN_OFFSET_COMMIT => Entry::TxnOffsetCommit {
                group: reader.str("group")?,
                producer_id: reader.i64("producer id")?,
                topic: reader.str("topic")?,
                partition: reader.i32("partition")?,
                committed: reader.committed()?,
            },
            KIND_TXN_OFFSET_TOMBSTONE => Entry::TxnOffsetTombstone {
                group: reader.str("group")?,
                producer_id: reader.i64("producer id")?,
                topic: reader.str("topic")?,
                partition: reader.i32("partition")?,
            },
            KIND_TRANSACTION => {
                let transactional_id = reader.str("transactional id")?;
                let producer_id = ProducerId(reader.i64("producer id")?);
                let producer_epoch = ProducerEpoch(i16::from_be_bytes(reader.array("producer epoch")?));
                let timeout_ms = reader.i32("timeout")?;
                let state = TxnState::from_code(reader.u8("state")?).ok_or(RecordError::Invalid("state"))?;
                let started_ms = reader.i64("started")?;
                let updated_ms = reader.i64("updated")?;
                let mut partitions = std::collections::BTreeSet::new();
                for _ in 0..reader.u32("partition count")? {
                    partitions.insert((reader.str("topic")?, reader.i32("partition")?));
                }
                let mut groups = std::collections::BTreeSet::new();
                for _ in 0..reader.u32("group count")? {
                    groups.insert(reader.str("group")?);
                }
                Entry::Transaction(TxnMetadata {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    timeout_ms,
                    state,
                    started_ms,
                    updated_ms,
                    partitions,
                    groups,
                })
            }
            KIND_TRANSACTION_TOMBSTONE => Entry::TransactionTombstone {
                transactional_id: reader.str("transactional id")?,
            },
            other => return Err(RecordError::UnknownKind(other)),
        };
        if !reader.input.is_empty() {
            return Err(RecordError::Invalid("bytes after the body"));
        }
        Ok(entry)
    }
}

fn entry_crc(entry: &[u8]) -> u32 {
    let head = entry.get(..2).unwrap_or_default();
    let tail = entry.get(6..).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(head), tail)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Longer strings are cut at a character boundary: Kafka strings are i16-length anyway.
    let mut end = text.len().min(usize::from(NULL_STRING - 1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.get(..end).unwrap_or_default();
    out.extend_from_slice(&u16::try_from(cut.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(cut.as_bytes());
}

fn put_nullable_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => put_str(out, text),
        None => out.extend_from_slice(&NULL_STRING.to_be_bytes()),
    }
}

/// A committed offset's fields: offset i64 | leader epoch i32 | commit
/// timestamp ms i64 | metadata nstr (kinds 1 and 5).
fn put_committed(out: &mut Vec<u8>, committed: &CommittedOffset) {
    out.extend_from_slice(&committed.offset.to_be_bytes());
    out.extend_from_slice(&committed.leader_epoch.to_be_bytes());
    out.extend_from_slice(&committed.commit_timestamp_ms.to_be_bytes());
    put_nullable_str(out, committed.metadata.as_deref());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A bounds-checked reader over an entry.
struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        if self.input.len() < count {
            return Err(RecordError::Truncated(field));
        }
        let (head, rest) = self.input.split_at(count);
        self.input = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn nullable_str(&mut self, field: &'static str) -> Result<Option<String>, RecordError> {
        let length = self.u16(field)?;
        if length == NULL_STRING {
            return Ok(None);
        }
        let raw = self.take(usize::from(length), field)?;
        std::str::from_utf8(raw)
            .map(|text| Some(text.to_string()))
            .map_err(|_| RecordError::Invalid(field))
    }

    fn str(&mut self, field: &'static str) -> Result<String, RecordError> {
        self.nullable_str(field)?.ok_or(RecordError::Invalid(field))
    }

    /// What [`put_committed`] wrote.
    fn committed(&mut self) -> Result<CommittedOffset, RecordError> {
        Ok(CommittedOffset {
            offset: self.i64("offset")?,
            leader_epoch: self.i32("leader epoch")?,
            commit_timestamp_ms: self.i64("commit timestamp")?,
            metadata: self.nullable_str("metadata")?,
        })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        let length = usize::try_from(self.u32(field)?).map_err(|_| RecordError::Invalid(field))?;
        Ok(Bytes::copy_from_slice(self.take(length, field)?))
    }
}

/// A record batch holding `entries` (at least one), stamped `timestamp_ms`:
/// each keyed by [`Entry::key`], a tombstone with a null value.
pub(crate) fn encode_batch(entries: &[Entry], timestamp_ms: i64) -> Bytes {
    assert!(!entries.is_empty(), "a coordinator batch holds at least one entry");
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries
        .iter()
        .map(|entry| (entry.key(), (!entry.is_tombstone()).then(|| entry.encode())))
        .collect();
    let records: Vec<shardline_log::KeyedRecord<'_>> = encoded
        .iter()
        .map(|(key, value)| (Some(key.as_slice()), value.as_deref()))
        .collect();
    Bytes::from(build_keyed_batch(timestamp_ms, &records))
}

/// The entries of one stored batch (validated: header, CRC-32C, records,
/// each entry's CRC), each with its offset Δ in the batch (a compacted
/// batch has gaps).
pub(crate) fn decode_batch(batch: &[u8]) -> Result<Vec<(i32, Entry)>, RecordError> {
    let header = validate_stored(batch).map_err(|e| RecordError::Batch(e.to_string()))?;
    let records = uncompressed_records(batch, &header).ok_or(RecordError::Invalid("compressed batch"))?;
    let mut entries = Vec::new();
    for record in records {
        let record = record.map_err(|e| RecordError::Batch(e.to_string()))?;
        let entry = match (record.value, record.key) {
            (Some(value), _) => Entry::decode(value)?,
            // A Kafka tombstone: its key is the tombstone entry.
            (None, Some(key)) => Some(Entry::decode(key)?)
                .filter(Entry::is_tombstone)
                .ok_or(RecordError::Invalid("tombstone key"))?,
            (None, None) => return Err(RecordError::Invalid("value")),
        };
        entries.push((record.offset_delta, entry));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use proptest::prelude::*;

    use super::*;

    fn samples() -> Vec<Entry> {
        vec![
            Entry::OffsetCommit {
                group: "readers".into(),
                topic: "orders".into(),
                partition: 3,
                committed: CommittedOffset {
                    offset: 42,
                    leader_epoch: -1,
                    commit_timestamp_ms: 1_700_000_000_000,
                    metadata: Some("checkpoint".into()),
                },
            },
            Entry::OffsetCommit {
                group: "readers".into(),
                topic: "orders".into(),
                partition: 4,
                committed: CommittedOffset {
                    offset: i64::MAX,
                    leader_epoch: 7,
                    commit_timestamp_ms: 0,
                    metadata: None,
                },
            },
            Entry::OffsetTombstone {
                group: "readers".into(),
                topic: "orders".into(),
                partition: 3,
            },
            Entry::Group(GroupSnapshot {
                group: "readers".into(),
                protocol_type: "consumer".into(),
                protocol: Some("range".into()),
                generation: 5,
                leader: Some("m-1".into()),
                members: vec![MemberSnapshot {
                    member_id: "m-1".into(),
                    instance_id: Some("static-1".into()),
                    client_id: "rdkafka".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 6000,
                    rebalance_timeout_ms: 30_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"assign"),
                }],
            }),
            Entry::GroupTombstone { group: "gone".into() },
            Entry::TxnOffsetCommit {
                group: "readers".into(),
                producer_id: 99,
                topic: "orders".into(),
                partition: 2,
                committed: CommittedOffset {
                    offset: 12,
                    leader_epoch: 3,
                    commit_timestamp_ms: 5,
                    metadata: None,
                },
            },
            Entry::TxnOffsetTombstone {
                group: "readers".into(),
                producer_id: 99,
                topic: "orders".into(),
                partition: 2,
            },
            Entry::Transaction(TxnMetadata {
                transactional_id: "app-1".into(),
                producer_id: ProducerId(99),
                producer_epoch: ProducerEpoch(4),
                timeout_ms: 60_000,
                state: TxnState::PrepareCommit,
                started_ms: 1_700_000_000_000,
                updated_ms: 1_700_000_000_500,
                partitions: [("orders".to_string(), 0), ("orders".to_string(), 5)].into(),
                groups: ["readers".to_string()].into(),
            }),
            Entry::TransactionTombstone {
                transactional_id: "app-1".into(),
            },
        ]
    }

    #[test]
    fn entries_round_trip_through_a_batch_the_log_accepts() {
        let entries = samples();
        let batch = encode_batch(&entries, 1_700_000_000_000);
        let header = shardline_log::validate(&batch).unwrap();
        assert_eq!(header.record_count, i32::try_from(entries.len()).unwrap());
        assert_eq!(header.total_bytes(), batch.len());
        // Transactional offsets and transactions are keyed apart: by group,
        // producer, topic and partition; by transactional id.
        assert_eq!(entries[5].key(), entries[6].key());
        assert_ne!(entries[5].key(), entries[0].key());
        assert_eq!(entries[7].key(), entries[8].key());
        let decoded: Vec<Entry> = decode_batch(&batch).unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(decoded, entries);
        // Keys: offsets by group, topic and partition; groups by group.
        assert_eq!(entries[0].key(), entries[2].key());
        assert_ne!(entries[0].key(), entries[1].key());
        assert_eq!(
            entries[3].key(),
            Entry::GroupTombstone {
                group: "readers".into()
            }
            .key()
        );
    }

    #[test]
    fn batches_written_before_keys_still_decode() {
        let values: Vec<Vec<u8>> = samples().iter().map(Entry::encode).collect();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let old = shardline_log::build_batch_from_values(1, &values);
        let decoded: Vec<Entry> = decode_batch(&old).unwrap().into_iter().map(|(_, e)| e).collect();
        assert_eq!(decoded, samples());
    }

    #[test]
    fn each_entry_round_trips_alone() {
        for entry in samples() {
            assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn a_flipped_bit_in_an_entry_is_a_crc_error() {
        let entry = samples().remove(0).encode();
        for at in (0..entry.len()).filter(|at| !(2..6).contains(at)) {
            let mut bad = entry.clone();
            bad[at] ^= 0x10;
            assert!(Entry::decode(&bad).is_err(), "flip at {at} went unnoticed");
        }
        let mut future = entry.clone();
        future[0] = 2;
        assert_eq!(Entry::decode(&future), Err(RecordError::UnknownVersion(2)));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Entry::decode(&input);
            let _ = decode_batch(&input);
        }

        #[test]
        fn decoding_mutated_batches_never_panics(at in any::<usize>(), value in any::<u8>(), cut in any::<usize>()) {
            let mut batch = encode_batch(&samples(), 1).to_vec();
            let length = batch.len();
            batch[at % length] = value;
            batch.truncate(cut % (length + 1));
            let _ = decode_batch(&batch);
            // Records region mutated with the batch CRC fixed up: reaches the entry parser.
            let mut body = encode_batch(&samples(), 1).to_vec();
            let records = length - shardline_log::BATCH_HEADER_BYTES;
            body[shardline_log::BATCH_HEADER_BYTES + at % records] = value;
            let crc = shardline_log::compute_crc(&body).unwrap();
            body[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = decode_batch(&body);
        }
    }
}
