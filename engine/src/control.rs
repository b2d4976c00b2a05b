//! Transaction markers: Kafka's control batches, written by the broker into
//! a partition's log when a transaction that wrote to it commits or aborts.
//!
//! A marker is one RecordBatch v2 (`shardline_log::batch`) of one record,
//! with attribute bit 5 (control) and bit 4 (transactional) set, the
//! transaction's producer id and epoch, and no sequence. Clients read the
//! record's key to tell a commit from an abort (librdkafka and the Java
//! consumer both do), so the layout is Kafka's, byte for byte:
//!
//! ```text
//! batch header (61 bytes, batch.rs): attributes = 0x0030 (control | transactional),
//!   producer id = the transaction's, producer epoch = the coordinator's
//!   (possibly bumped) epoch, base sequence = -1, one record, offset delta 0
//! record key   (4 bytes, big-endian):  version i16 = 0 | type i16 (0 abort, 1 commit)
//! record value (6 bytes, big-endian):  version i16 = 0 | coordinator epoch i32
//! ```
//!
//! The batch's own CRC-32C (over attributes..end) checks the whole marker;
//! [`parse`] reads a stored one, refusing anything that is not exactly this
//! shape with an error rather than a guess.

use bytes::Bytes;
use shardline_log::{build_keyed_batch_as, uncompressed_records, BatchHeader, BatchSpec};

use crate::producer::{ProducerEpoch, ProducerId};

/// Attribute bit 4: the batch belongs to a transaction.
pub(crate) const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch is a control batch (a marker).
pub(crate) const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Control record key type of an abort marker.
const TYPE_ABORT: i16 = 0;
/// Control record key type of a commit marker.
const TYPE_COMMIT: i16 = 1;
/// Bytes of a control record key and value.
const KEY_BYTES: usize = 4;
const VALUE_BYTES: usize = 6;

/// Which way a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Commit,
    Abort,
}

/// A marker as read back from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) producer_id: ProducerId,
    pub(crate) producer_epoch: ProducerEpoch,
    pub(crate) outcome: Outcome,
    pub(crate) coordinator_epoch: i32,
}

/// Why stored bytes are not a marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ControlError {
    /// The batch is not a control batch, or its records cannot be read.
    NotControl(&'static str),
    /// The control record's key or value is not Kafka's layout.
    BadRecord(&'static str),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::NotControl(why) => write!(f, "not a control batch: {why}"),
            ControlError::BadRecord(why) => write!(f, "control record unreadable: {why}"),
        }
    }
}

/// The control batch for `marker`, stamped `timestamp_ms` (the log writes
/// its offset and leader epoch on append).
pub(crate) fn build(marker: &Marker, timestamp_ms: i64) -> Bytes {
    let kind = match marker.outcome {
        Outcome::Commit => TYPE_COMMIT,
        Outcome::Abort => TYPE_ABORT,
    };
    let key: Vec<u8> = [0i16.to_be_bytes(), kind.to_be_bytes()].concat();
    let value: Vec<u8> = [&0i16.to_be_bytes()[..], &marker.coordinator_epoch.to_be_bytes()[..]].concat();
    assert_eq!(
        (key.len(), value.len()),
        (KEY_BYTES, VALUE_BYTES),
        "Kafka's control record sizes"
    );
    let spec = BatchSpec {
        attributes: ATTRIBUTE_CONTROL | ATTRIBUTE_TRANSACTIONAL,
        producer_id: marker.producer_id.0,
        producer_epoch: marker.producer_epoch.0,
        base_sequence: -1,
        ..BatchSpec::plain(1, timestamp_ms, &[])
    };
    let batch = build_keyed_batch_as(&spec, &[(Some(&key), Some(&value))]);
    let built = Bytes::from(batch);
    assert_eq!(parse(&built).ok(), Some(*marker), "a built marker reads back as itself");
    built
}

/// Whether a stored batch is part of a transaction (data or marker).
pub(crate) fn is_transactional(header: &BatchHeader) -> bool {
    header.attributes & ATTRIBUTE_TRANSACTIONAL != 0 && header.producer_id >= 0
}

/// Reads the marker of a stored control batch (`batch` is the whole batch,
/// its CRC already checked by the log).
pub(crate) fn parse(batch: &[u8]) -> Result<Marker, ControlError> {
    let header = BatchHeader::parse(batch).ok_or(ControlError::NotControl("shorter than a header"))?;
    if !header.is_control() {
        return Err(ControlError::NotControl("control attribute not set"));
    }
    let mut records =
        uncompressed_records(batch, &header).ok_or(ControlError::NotControl("compressed control batch"))?;
    let record = records
        .next()
        .ok_or(ControlError::BadRecord("no record"))?
        .map_err(|_| ControlError::BadRecord("record framing"))?;
    let key = record.key.ok_or(ControlError::BadRecord("null key"))?;
    if key.len() < KEY_BYTES {
        return Err(ControlError::BadRecord("key shorter than 4 bytes"));
    }
    let kind = i16::from_be_bytes([key.get(2).copied().unwrap_or(0), key.get(3).copied().unwrap_or(0)]);
    let outcome = match kind {
        TYPE_COMMIT => Outcome::Commit,
        TYPE_ABORT => Outcome::Abort,
        _ => return Err(ControlError::BadRecord("unknown control type")),
    };
    let coordinator_epoch = record
        .value
        .and_then(|v| v.get(2..6))
        .and_then(|raw| <[u8; 4]>::try_from(raw).ok())
        .map_or(-1, i32::from_be_bytes);
    Ok(Marker {
        producer_id: ProducerId(header.producer_id),
        producer_epoch: ProducerEpoch(header.producer_epoch),
        outcome,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;
    use shardline_log::build_keyed_batch;

    #[test]
    fn markers_round_trip_and_the_log_accepts_them() {
        for outcome in [Outcome::Commit, Outcome::Abort] {
            let marker = Marker {
                producer_id: ProducerId(77),
                producer_epoch: ProducerEpoch(3),
                outcome,
                coordinator_epoch: 9,
            };
            let batch = build(&marker, 1_000);
            let header = shardline_log::validate(&batch).unwrap();
            assert!(header.is_control());
            assert!(is_transactional(&header));
            assert_eq!(header.base_sequence, -1);
            assert_eq!(parse(&batch).unwrap(), marker);
        }
    }

    #[test]
    fn data_batches_are_not_markers() {
        let batch = build_keyed_batch(0, &[(Some(b"k"), Some(b"v"))]);
        assert!(matches!(parse(&batch), Err(ControlError::NotControl(_))));
        for cut in 0..batch.len() {
            let _ = parse(&batch[..cut]);
        }
    }
}
