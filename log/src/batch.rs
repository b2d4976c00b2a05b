//! Kafka RecordBatch v2: the unit the log stores, byte for byte as the client sent it.
//!
//! ```text
//!  byte  0        8        12       16  17       21     23        27            35            43           51       53        57      61
//!        +--------+--------+--------+---+--------+------+---------+-------------+-------------+------------+--------+---------+-------+----------
//!        | base   | batch  | leader |mag| crc32c | attr | last    | base        | max         | producer   | prod.  | base    | record| records
//!        | offset | length | epoch  |=2 |        |      | offset Δ| timestamp   | timestamp   | id         | epoch  | sequence| count | ...
//!        | i64    | i32    | i32    |i8 | u32    | i16  | i32     | i64         | i64         | i64        | i16    | i32     | i32   |
//!        +--------+--------+--------+---+--------+------+---------+-------------+-------------+------------+--------+---------+-------+----------
//!                  \_ bytes after this field (total size - 12)   \______________ CRC-32C (Castagnoli) covers byte 21 to the end ___________/
//! ```
//! All integers are big-endian, as on the Kafka wire. The broker owns bytes 0..8
//! (base offset) and 12..16 (partition leader epoch); neither is covered by the
//! CRC, so assigning an offset or stamping a leader's epoch in place never
//! invalidates a batch (and a replicated batch is checked with the same CRC
//! the producer computed). Batches are stored as sent: compressed ones
//! (attributes bits 0..2) are never decompressed.
//!
//! ## What a valid batch is (`validate`), and why
//! A header is only worth what the records behind it prove, since the log
//! moves its offsets by `last offset Δ + 1` per batch: a 61-byte batch that
//! claims 2^31 - 1 records would otherwise move a partition by 2^31 offsets.
//! - length ≥ 49 and within the bytes given; magic 2; a known codec;
//! - `record count` ≥ 1 and `last offset Δ` = `record count` - 1, as Kafka
//!   requires of magic 2;
//! - timestamps: when both are set (not -1), max timestamp ≥ base timestamp;
//! - the CRC-32C over attributes..end matches;
//! - **uncompressed**: the records are walked (`record.rs`): exactly `record
//!   count` records, each filling exactly its length, record `i` carrying
//!   offset Δ `i`, nothing left over; with CreateTime and a max timestamp
//!   set, no record's timestamp is above it;
//! - **compressed** (never decompressed here): `record count` × 7 bytes (the
//!   smallest record) must fit in what the section could decompress to at
//!   the codec's largest possible expansion ([`Codec::expansion_max`]). That
//!   refuses a header claiming far more records than its bytes can hold; a
//!   compressed batch can still claim up to `i32::MAX` records when its
//!   section is large enough, and the log's segment roll (see `log.rs`)
//!   keeps any such batch within what an index can address.
//!
//! Kafka additionally rewrites an inconsistent max timestamp in place; the
//! log refuses such a batch instead, as it never rewrites covered bytes.
//!
//! ## Stored batches: what compaction leaves (`validate_stored`)
//! The cleaner (`cleaner.rs`) rewrites batches keeping their base offset and
//! last offset Δ, so the log's offsets still run on, but it removes
//! records: a stored batch may hold fewer records than offsets (`record
//! count` from 0 to `last offset Δ` + 1), its records carrying strictly
//! increasing offset Δs no larger than the last. It may also carry a delete
//! horizon (attributes bit 6, KIP-534): its base timestamp is then the time
//! after which its tombstones may go, not a record's time, and may lie past
//! the max timestamp (record timestamps stay base + Δ: the cleaner
//! re-encodes the Δs). Everything read back from disk or from a leader is
//! checked this way ([`Form::Stored`]); what a producer sends is checked as
//! above ([`Form::Appended`]). Such a batch still moves the offsets only
//! within its segment: recovery bounds every stored batch by its segment's
//! base and the next segment's base.

use crate::error::BatchError;
use crate::offset::Offset;
use crate::record::{self, Layout, Records, RECORD_BYTES_MIN};

/// Size of the fixed batch header, pinned: a layout change must be deliberate.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the length field's coverage starts: base offset + batch length.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only magic value accepted.
pub const MAGIC_V2: i8 = 2;

const OFFSET_BASE: usize = 0;
const OFFSET_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
pub(crate) const OFFSET_MAGIC: usize = 16;
/// Attribute bit 3: timestamp type LogAppendTime.
pub(crate) const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;
const _: () = assert!(OFFSET_RECORD_COUNT + 4 == BATCH_HEADER_BYTES);

/// Attributes bit 3: the batch's timestamps are the broker's LogAppendTime.
const ATTRIBUTES_LOG_APPEND_TIME: i16 = ATTRIBUTE_LOG_APPEND_TIME;
/// Attributes bit 6 (KIP-534): the base timestamp is the batch's delete
/// horizon, set by the cleaner.
pub(crate) const ATTRIBUTE_DELETE_HORIZON: i16 = 0x40;
/// Where the records section starts.
const OFFSET_RECORDS: usize = BATCH_HEADER_BYTES;

/// Which rules a batch is checked against (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Sent by a producer: one record per offset, deltas 0, 1, 2, ...
    Appended,
    /// Read back from the log or a leader's: possibly compacted.
    Stored,
}
/// Timestamp value meaning "none".
const NO_TIMESTAMP: i64 = -1;

/// Compression codec named by attributes bits 0..2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Records are stored uncompressed.
    None,
    /// gzip.
    Gzip,
    /// snappy (xerial framing, as Kafka clients write it).
    Snappy,
    /// lz4 frame.
    Lz4,
    /// zstd.
    Zstd,
}

impl Codec {
    fn from_attributes(attributes: i16) -> Option<Codec> {
        match attributes & 0x07 {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// Most bytes one byte of this codec's output can decompress to: a
    /// sound ceiling from each format's shortest encoding of a long run.
    pub fn expansion_max(self) -> usize {
        match self {
            Codec::None => 1,
            // deflate: a 258-byte match in as little as 2 bits.
            Codec::Gzip => 1032,
            // snappy: a copy of at most 64 bytes takes at least 3 bytes.
            Codec::Snappy => 22,
            // lz4: each further 255 bytes of a match cost one length byte.
            Codec::Lz4 => 256,
            // zstd: an RLE block, 3 header bytes and 1 byte, stands for up to 128 KiB.
            Codec::Zstd => 32_768,
        }
    }

    /// Lower-case name as Kafka tools print it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// The decoded fixed header of one batch. Reading it never touches the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as stored: broker-assigned once appended).
    pub base_offset: Offset,
    /// Value of the length field: bytes after it.
    pub batch_length: i32,
    /// Partition leader epoch (broker-owned).
    pub partition_leader_epoch: i32,
    /// CRC-32C stored in the header.
    pub crc: u32,
    /// Attributes (codec, timestamp type, transactional, control).
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// First record's timestamp (ms).
    pub base_timestamp_ms: i64,
    /// Largest record timestamp (ms).
    pub max_timestamp_ms: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// First sequence number, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

fn be_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(i64::from_be_bytes(raw))
}

fn be_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(i32::from_be_bytes(raw))
}

fn be_i16(bytes: &[u8], at: usize) -> Option<i16> {
    let raw: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
    Some(i16::from_be_bytes(raw))
}

impl BatchHeader {
    /// Decodes the fixed header; `None` when fewer than 61 bytes are given.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: Offset(be_i64(bytes, OFFSET_BASE)?),
            batch_length: be_i32(bytes, OFFSET_LENGTH)?,
            partition_leader_epoch: be_i32(bytes, OFFSET_LEADER_EPOCH)?,
            crc: u32::from_be_bytes(bytes.get(OFFSET_CRC..OFFSET_CRC + 4)?.try_into().ok()?),
            attributes: be_i16(bytes, OFFSET_ATTRIBUTES)?,
            last_offset_delta: be_i32(bytes, OFFSET_LAST_OFFSET_DELTA)?,
            base_timestamp_ms: be_i64(bytes, OFFSET_BASE_TIMESTAMP)?,
            max_timestamp_ms: be_i64(bytes, OFFSET_MAX_TIMESTAMP)?,
            producer_id: be_i64(bytes, OFFSET_PRODUCER_ID)?,
            producer_epoch: be_i16(bytes, OFFSET_PRODUCER_EPOCH)?,
            base_sequence: be_i32(bytes, OFFSET_BASE_SEQUENCE)?,
            record_count: be_i32(bytes, OFFSET_RECORD_COUNT)?,
        })
    }

    /// Whole size of the batch in bytes (header included).
    pub fn total_bytes(&self) -> usize {
        // batch_length was checked non-negative by `validate` or `scan`; a negative
        // value here maps to 0 and fails the caller's size checks.
        usize::try_from(self.batch_length).unwrap_or(0) + LOG_OVERHEAD_BYTES
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0 + i64::from(self.last_offset_delta))
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0 + 1)
    }

    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Compression codec, `None` for reserved codec ids.
    pub fn codec(&self) -> Option<Codec> {
        Codec::from_attributes(self.attributes)
    }

    /// Whether the batch is a transaction control batch.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch belongs to a transaction (attribute bit 4): its
    /// records may yet be aborted.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// The delete horizon the cleaner set (KIP-534): after it, the batch's
    /// tombstones may be removed. `None` when it was never set.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(self.base_timestamp_ms)
    }

    /// Whether the batch's records are compressed (or of an unknown codec).
    pub fn is_compressed(&self) -> bool {
        self.codec() != Some(Codec::None)
    }

    /// Whether the broker stamped the batch (timestamp type LogAppendTime,
    /// attribute bit 3): every record's timestamp is then the max timestamp.
    pub fn log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }
}

/// CRC-32C over attributes to end of the batch.
pub fn compute_crc(batch: &[u8]) -> Option<u32> {
    batch.get(OFFSET_ATTRIBUTES..).map(crc32c::crc32c)
}

/// Validates the batch at the start of `bytes` and returns its header.
///
/// Checks, in order, everything [`validate_header_only`] checks, the CRC-32C,
/// and for an uncompressed batch its records (see the module doc).
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    check(bytes, Form::Appended)
}

/// As [`validate`], for a batch read back from a log (this one's, or a
/// leader's): it may be compacted (see the module doc).
pub fn validate_stored(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    check(bytes, Form::Stored)
}

pub(crate) fn check(bytes: &[u8], form: Form) -> Result<BatchHeader, BatchError> {
    let header = check_header(bytes, form)?;
    let total_bytes = header.total_bytes();
    let batch = bytes.get(..total_bytes).ok_or(BatchError::Truncated {
        needed_bytes: total_bytes,
        available_bytes: bytes.len(),
    })?;
    let computed = compute_crc(batch).ok_or(BatchError::BadLength {
        batch_length: header.batch_length,
    })?;
    if computed != header.crc {
        return Err(BatchError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    if let Some(records) = records_of(batch, &header, form) {
        check_records(records, &header)?;
    }
    Ok(header)
}

/// Walks the records of an uncompressed batch against its header.
fn check_records(records: Records<'_>, header: &BatchHeader) -> Result<(), BatchError> {
    let check_timestamps =
        header.max_timestamp_ms != NO_TIMESTAMP && header.attributes & ATTRIBUTES_LOG_APPEND_TIME == 0;
    let mut count = 0i32;
    for record in records {
        let record = record?;
        count += 1;
        let timestamp_ms = header.base_timestamp_ms.checked_add(record.timestamp_delta_ms);
        if check_timestamps && timestamp_ms.is_none_or(|ts| ts > header.max_timestamp_ms) {
            return Err(BatchError::BadTimestamp {
                timestamp_ms: timestamp_ms.unwrap_or(i64::MAX),
                max_timestamp_ms: header.max_timestamp_ms,
            });
        }
    }
    assert_eq!(count, header.record_count, "the record walk reads exactly the count");
    Ok(())
}

/// The records of a batch whose header is `header`, if it is uncompressed
/// (`batch` holds the whole batch; a compressed batch's records are not
/// readable without decompressing it).
/// A stored batch may be compacted: its records' offset Δs may have gaps.
pub fn uncompressed_records<'a>(batch: &'a [u8], header: &BatchHeader) -> Option<Records<'a>> {
    records_of(batch, header, Form::Stored)
}

fn records_of<'a>(batch: &'a [u8], header: &BatchHeader, form: Form) -> Option<Records<'a>> {
    if header.is_compressed() {
        return None;
    }
    let section = batch.get(OFFSET_RECORDS..header.total_bytes())?;
    let layout = match form {
        Form::Appended => Layout::Dense,
        Form::Stored => Layout::Sparse {
            last_offset_delta: header.last_offset_delta,
        },
    };
    Some(Records::new(section, header.record_count, layout))
}

/// Every check of [`validate`] except the CRC: for walking batches that were
/// already checked when they were appended or recovered.
pub fn validate_header_only(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    check_header(bytes, Form::Appended)
}

/// As [`validate_header_only`], for a batch read back from a log: it may
/// be compacted (see the module doc).
pub fn validate_stored_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    check_header(bytes, Form::Stored)
}

fn check_header(bytes: &[u8], form: Form) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes).ok_or(BatchError::Truncated {
        needed_bytes: BATCH_HEADER_BYTES,
        available_bytes: bytes.len(),
    })?;
    let min_length = BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES;
    let length_ok = usize::try_from(header.batch_length).is_ok_and(|len| len >= min_length);
    if !length_ok {
        return Err(BatchError::BadLength {
            batch_length: header.batch_length,
        });
    }
    let total_bytes = header.total_bytes();
    if total_bytes > bytes.len() {
        return Err(BatchError::Truncated {
            needed_bytes: total_bytes,
            available_bytes: bytes.len(),
        });
    }
    let magic = bytes.get(OFFSET_MAGIC).copied().map(|b| b as i8);
    if magic != Some(MAGIC_V2) {
        return Err(BatchError::BadMagic {
            magic: magic.unwrap_or(-1),
        });
    }
    let count_fits = match form {
        Form::Appended => header.record_count > 0 && i64::from(header.record_count) == header.offset_count(),
        Form::Stored => header.record_count >= 0 && i64::from(header.record_count) <= header.offset_count(),
    };
    if header.last_offset_delta < 0 || !count_fits {
        return Err(BatchError::BadRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let Some(codec) = header.codec() else {
        return Err(BatchError::UnknownCodec {
            attributes: header.attributes,
        });
    };
    // A delete horizon stands in the base timestamp of a stored batch.
    let horizon = form == Form::Stored && header.delete_horizon_ms().is_some();
    let timestamps_set =
        !horizon && header.base_timestamp_ms != NO_TIMESTAMP && header.max_timestamp_ms != NO_TIMESTAMP;
    if timestamps_set && header.max_timestamp_ms < header.base_timestamp_ms {
        return Err(BatchError::BadTimestamp {
            timestamp_ms: header.base_timestamp_ms,
            max_timestamp_ms: header.max_timestamp_ms,
        });
    }
    // The fewest bytes `record_count` records take, against the most the
    // section could hold once decompressed.
    let section_bytes = total_bytes - BATCH_HEADER_BYTES;
    let records_bytes_min = usize::try_from(header.record_count)
        .unwrap_or(usize::MAX)
        .saturating_mul(RECORD_BYTES_MIN);
    if records_bytes_min > section_bytes.saturating_mul(codec.expansion_max()) {
        return Err(BatchError::TooManyRecords {
            record_count: header.record_count,
            section_bytes,
        });
    }
    Ok(header)
}

/// Writes `base_offset` into the header of the batch at the start of `batch`.
///
/// # Panics
/// If `batch` is shorter than a header: callers pass only validated batches.
pub fn set_base_offset(batch: &mut [u8], base_offset: Offset) {
    let field = batch.get_mut(OFFSET_BASE..OFFSET_BASE + 8);
    assert!(
        field.is_some(),
        "set_base_offset on a buffer shorter than a batch header"
    );
    if let Some(field) = field {
        field.copy_from_slice(&base_offset.0.to_be_bytes());
    }
}

/// Writes the partition leader epoch into the header (not covered by the CRC).
///
/// # Panics
/// If `batch` is shorter than a header.
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    let field = batch.get_mut(OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4);
    assert!(
        field.is_some(),
        "set_leader_epoch on a buffer shorter than a batch header"
    );
    if let Some(field) = field {
        field.copy_from_slice(&epoch.to_be_bytes());
    }
}

/// Builds a valid batch of `spec.record_count` records (see [`BatchSpec::payload`]).
///
/// Used by tests, benchmarks and tools that need batches without a Kafka client.
pub fn build_batch(spec: &BatchSpec<'_>) -> Vec<u8> {
    if spec.attributes & 0x07 != 0 {
        return frame_batch(spec, spec.payload);
    }
    let count = usize::try_from(spec.record_count).unwrap_or(0);
    let len = spec.payload.len();
    let mut section = Vec::new();
    for index in 0..count {
        let value = spec.payload.get(index * len / count..(index + 1) * len / count);
        let delta = i32::try_from(index).unwrap_or(i32::MAX);
        record::put_record(&mut section, delta, None, Some(value.unwrap_or_default()));
    }
    frame_batch(spec, &section)
}

/// Builds an uncompressed batch with one record per value (null keys, no
/// headers), every record stamped `timestamp_ms`: the broker's own batches.
///
/// # Panics
/// If `values` is empty or holds more than `i32::MAX` values.
pub fn build_batch_from_values(timestamp_ms: i64, values: &[&[u8]]) -> Vec<u8> {
    let record_count = i32::try_from(values.len()).unwrap_or(0);
    assert!(record_count > 0, "a batch holds 1 ..= i32::MAX records");
    let mut section = Vec::new();
    for (index, value) in values.iter().enumerate() {
        record::put_record(
            &mut section,
            i32::try_from(index).unwrap_or(i32::MAX),
            None,
            Some(value),
        );
    }
    frame_batch(&BatchSpec::plain(record_count, timestamp_ms, &[]), &section)
}

/// Stamps a whole, checked `batch` with LogAppendTime at `max_timestamp_ms`
/// (the attribute bit and the max timestamp, both under the CRC, which is
/// computed again), as a Kafka broker does for such a topic. A slice shorter
/// than a batch header is left alone.
pub fn stamp_log_append_time(batch: &mut [u8], max_timestamp_ms: i64) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    let Some(&[high, low]) = batch.get(OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2) else {
        return;
    };
    let attributes = i16::from_be_bytes([high, low]) | ATTRIBUTE_LOG_APPEND_TIME;
    if let Some(field) = batch.get_mut(OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2) {
        field.copy_from_slice(&attributes.to_be_bytes());
    }
    if let Some(field) = batch.get_mut(OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8) {
        field.copy_from_slice(&max_timestamp_ms.to_be_bytes());
    }
    let crc = compute_crc(batch).unwrap_or(0);
    if let Some(field) = batch.get_mut(OFFSET_CRC..OFFSET_CRC + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
}

/// Whether `batch`'s bytes already carry `header`'s LogAppendTime stamp
/// (a replicated batch does: its leader wrote it).
pub(crate) fn carries_stamp(batch: &[u8], header: &BatchHeader) -> bool {
    let attributes = batch.get(OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2);
    let max_timestamp = batch.get(OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8);
    attributes == Some(&header.attributes.to_be_bytes()[..])
        && max_timestamp == Some(&header.max_timestamp_ms.to_be_bytes()[..])
}

/// A batch of one record per entry of `timestamp_deltas_ms` (each record's
/// timestamp is `base_timestamp_ms` + its delta; the max timestamp is the
/// largest), with `attributes`; for tests of lookups by time.
pub fn build_batch_with_timestamps(base_timestamp_ms: i64, timestamp_deltas_ms: &[i64], attributes: i16) -> Vec<u8> {
    let record_count = i32::try_from(timestamp_deltas_ms.len()).unwrap_or(0);
    assert!(record_count > 0, "a batch holds 1 ..= i32::MAX records");
    let mut section = Vec::new();
    for (index, delta) in timestamp_deltas_ms.iter().enumerate() {
        let value = index.to_be_bytes();
        record::put_record_at(
            &mut section,
            i32::try_from(index).unwrap_or(i32::MAX),
            *delta,
            None,
            Some(&value),
        );
    }
    let spec = BatchSpec {
        attributes,
        ..BatchSpec::plain(record_count, base_timestamp_ms, &[])
    };
    let mut out = frame_batch(&spec, &section);
    let max_timestamp_ms = base_timestamp_ms + timestamp_deltas_ms.iter().copied().max().unwrap_or(0);
    if let Some(field) = out.get_mut(OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8) {
        field.copy_from_slice(&max_timestamp_ms.to_be_bytes());
    }
    let crc = compute_crc(&out).unwrap_or(0);
    if let Some(field) = out.get_mut(OFFSET_CRC..OFFSET_CRC + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    out
}

/// One record of [`build_batch_with_headers`]: its key, value and headers
/// (name, value).
#[derive(Debug, Clone, Copy)]
pub struct HeaderedRecord<'a> {
    /// The key (none: a null key).
    pub key: Option<&'a [u8]>,
    /// The value (none: a null value, a tombstone).
    pub value: Option<&'a [u8]>,
    /// The headers, in order.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Builds an uncompressed batch of `records` (offset deltas 0, 1, ..., all
/// stamped `timestamp_ms`): the broker's batch for messages that arrived
/// over another protocol (MQTT).
///
/// # Panics
/// If `records` is empty or holds more than `i32::MAX` records (a batch
/// holds at least one; the caller bounds how many it gathers).
pub fn build_batch_with_headers(timestamp_ms: i64, records: &[HeaderedRecord<'_>]) -> Vec<u8> {
    let record_count = i32::try_from(records.len()).unwrap_or(0);
    assert!(record_count > 0, "a batch holds 1..=i32::MAX records");
    let mut section = Vec::with_capacity(records.iter().map(|r| r.value.map_or(0, <[u8]>::len) + 64).sum());
    for (offset_delta, record) in (0..record_count).zip(records) {
        record::put_record_with_headers(&mut section, offset_delta, record.key, record.value, record.headers);
    }
    frame_batch(&BatchSpec::plain(record_count, timestamp_ms, &[]), &section)
}

/// A record's key and value (`None`: null) for [`build_keyed_batch`].
pub type KeyedRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds an uncompressed batch of one record per `(key, value)` (a `None`
/// value is a tombstone), every record stamped `timestamp_ms`: keyed
/// records for compacted topics, the broker's own and the tests'.
///
/// # Panics
/// If `records` is empty or holds more than `i32::MAX` records.
pub fn build_keyed_batch(timestamp_ms: i64, records: &[KeyedRecord<'_>]) -> Vec<u8> {
    build_keyed_batch_as(&BatchSpec::plain(1, timestamp_ms, &[]), records)
}

/// [`build_keyed_batch`] with the header fields of `spec`: timestamp,
/// attributes, producer id, epoch and base sequence (the broker's own
/// transaction markers). `spec.record_count`, `spec.base_offset` and
/// `spec.payload` are not used: the records are `records`.
///
/// # Panics
/// If `records` is empty or holds more than `i32::MAX` records.
pub fn build_keyed_batch_as(spec: &BatchSpec<'_>, records: &[KeyedRecord<'_>]) -> Vec<u8> {
    let record_count = i32::try_from(records.len()).unwrap_or(0);
    assert!(record_count > 0, "a batch holds 1..=i32::MAX records");
    let mut section = Vec::with_capacity(records.iter().map(|(_, v)| v.map_or(0, <[u8]>::len) + 64).sum());
    for (offset_delta, (key, value)) in (0..record_count).zip(records) {
        record::put_record_with_headers(&mut section, offset_delta, *key, *value, &[]);
    }
    let spec = BatchSpec {
        base_offset: Offset(0),
        record_count,
        payload: &[],
        ..*spec
    };
    let batch = frame_batch(&spec, &section);
    assert_eq!(
        BatchHeader::parse(&batch).map(|h| (h.attributes, h.record_count)),
        Some((spec.attributes, record_count)),
        "the header is the spec's"
    );
    batch
}

/// The header for `spec` in front of `section`, with its CRC-32C.
fn frame_batch(spec: &BatchSpec<'_>, section: &[u8]) -> Vec<u8> {
    let header = BatchHeader {
        base_offset: spec.base_offset,
        batch_length: 0,
        partition_leader_epoch: -1,
        crc: 0,
        attributes: spec.attributes,
        last_offset_delta: spec.record_count - 1,
        base_timestamp_ms: spec.timestamp_ms,
        max_timestamp_ms: spec.timestamp_ms,
        producer_id: spec.producer_id,
        producer_epoch: spec.producer_epoch,
        base_sequence: spec.base_sequence,
        record_count: spec.record_count,
    };
    frame(&header, section)
}

/// `header`'s fields in front of `section`; the batch length and the
/// CRC-32C are computed here (the ones in `header` are ignored).
pub(crate) fn frame(header: &BatchHeader, section: &[u8]) -> Vec<u8> {
    let total_bytes = BATCH_HEADER_BYTES + section.len();
    let mut out = Vec::with_capacity(total_bytes);
    out.extend_from_slice(&header.base_offset.0.to_be_bytes());
    let batch_length = i32::try_from(total_bytes - LOG_OVERHEAD_BYTES).unwrap_or(i32::MAX);
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.record_count.to_be_bytes());
    assert_eq!(out.len(), BATCH_HEADER_BYTES, "the header is its pinned size");
    out.extend_from_slice(section);
    let crc = compute_crc(&out).unwrap_or(0);
    if let Some(field) = out.get_mut(OFFSET_CRC..OFFSET_CRC + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    out
}

/// Inputs to [`build_batch`]; a struct so same-typed fields cannot be swapped.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec<'a> {
    /// Base offset to write (the log overwrites it on append).
    pub base_offset: Offset,
    /// Number of records the header claims (≥ 1).
    pub record_count: i32,
    /// Base and max timestamp (ms).
    pub timestamp_ms: i64,
    /// Attributes (codec bits etc.).
    pub attributes: i16,
    /// Producer id (-1 when not idempotent).
    pub producer_id: i64,
    /// Producer epoch (-1 when not idempotent).
    pub producer_epoch: i16,
    /// Base sequence (-1 when not idempotent).
    pub base_sequence: i32,
    /// Uncompressed (codec bits 0): the bytes spread, in order, over the
    /// values of `record_count` Kafka records that `build_batch` frames.
    /// Compressed: the records section itself, stored as given (the log never
    /// decompresses, so any bytes will do).
    pub payload: &'a [u8],
}

impl<'a> BatchSpec<'a> {
    /// A plain batch of `record_count` records carrying `payload`.
    pub fn plain(record_count: i32, timestamp_ms: i64, payload: &'a [u8]) -> BatchSpec<'a> {
        BatchSpec {
            base_offset: Offset(0),
            record_count,
            timestamp_ms,
            attributes: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_batch(&BatchSpec::plain(3, 1_700_000_000_000, b"hello records"))
    }

    #[test]
    fn a_batch_with_headers_gives_them_back() {
        let headers: [(&str, &[u8]); 2] = [("mqtt.topic", b"a/b"), ("x", b"")];
        let records = [
            HeaderedRecord {
                key: Some(b"k"),
                value: Some(b"v"),
                headers: &headers,
            },
            HeaderedRecord {
                key: None,
                value: Some(b"second"),
                headers: &[],
            },
        ];
        let batch = build_batch_with_headers(7, &records);
        let header = validate(&batch).unwrap();
        assert_eq!((header.record_count, header.offset_count()), (2, 2));
        let mut walked = uncompressed_records(&batch, &header).unwrap();
        let record = walked.next().unwrap().unwrap();
        assert_eq!((record.key, record.value), (Some(&b"k"[..]), Some(&b"v"[..])));
        assert_eq!(record.headers.get(b"mqtt.topic"), Some(Some(&b"a/b"[..])));
        assert_eq!(record.headers.get(b"x"), Some(Some(&b""[..])));
        assert_eq!(record.headers.get(b"y"), None);
        assert_eq!(record.headers.count(), 2);
        let second = walked.next().unwrap().unwrap();
        assert_eq!(
            (second.offset_delta, second.key, second.value),
            (1, None, Some(&b"second"[..]))
        );
        assert_eq!(second.headers.count(), 0);
        assert!(walked.next().is_none());
    }

    #[test]
    fn built_batch_validates_and_reports_its_fields() {
        let batch = sample();
        let header = validate(&batch).unwrap();
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.record_count, 3);
        assert_eq!(header.offset_count(), 3);
        assert_eq!(header.codec(), Some(Codec::None));
        assert_eq!(header.max_timestamp_ms, 1_700_000_000_000);
    }

    #[test]
    fn base_offset_and_epoch_are_outside_the_crc() {
        let mut batch = sample();
        set_base_offset(&mut batch, Offset(12345));
        set_leader_epoch(&mut batch, 7);
        let header = validate(&batch).unwrap();
        assert_eq!(header.base_offset, Offset(12345));
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.next_offset(), Offset(12348));
    }

    #[test]
    fn each_kind_of_bad_batch_gets_its_error() {
        let good = sample();
        let mut bad_magic = good.clone();
        bad_magic[OFFSET_MAGIC] = 1;
        assert!(matches!(validate(&bad_magic), Err(BatchError::BadMagic { magic: 1 })));

        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0x40;
        assert!(matches!(validate(&bad_crc), Err(BatchError::BadCrc { .. })));

        assert!(matches!(
            validate(&good[..good.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(validate(&good[..10]), Err(BatchError::Truncated { .. })));

        let mut overflow = good.clone();
        overflow[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(validate(&overflow), Err(BatchError::Truncated { .. })));

        let mut negative = good.clone();
        negative[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&negative),
            Err(BatchError::BadLength { batch_length: -5 })
        ));

        let mut zero = good.clone();
        zero[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&0i32.to_be_bytes());
        assert!(matches!(
            validate(&zero),
            Err(BatchError::BadLength { batch_length: 0 })
        ));

        assert!(matches!(validate(&[]), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn record_count_must_match_offset_delta() {
        let mut batch = sample();
        batch[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&batch).unwrap();
        batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate(&batch), Err(BatchError::BadRecordCount { .. })));
    }

    #[test]
    fn compressed_codecs_are_recognised_without_decoding() {
        for (bits, codec) in [(1, Codec::Gzip), (2, Codec::Snappy), (3, Codec::Lz4), (4, Codec::Zstd)] {
            let mut spec = BatchSpec::plain(1, 0, b"opaque compressed bytes");
            spec.attributes = bits;
            let batch = build_batch(&spec);
            assert_eq!(validate(&batch).unwrap().codec(), Some(codec));
        }
        let mut spec = BatchSpec::plain(1, 0, b"x");
        spec.attributes = 6;
        assert!(matches!(
            validate(&build_batch(&spec)),
            Err(BatchError::UnknownCodec { .. })
        ));
    }

    /// Rewrites header fields of `batch` and fixes up its CRC.
    fn patched(mut batch: Vec<u8>, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        patch(&mut batch);
        let crc = compute_crc(&batch).unwrap();
        batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn set_count(batch: &mut [u8], record_count: i32) {
        batch[OFFSET_RECORD_COUNT..OFFSET_RECORD_COUNT + 4].copy_from_slice(&record_count.to_be_bytes());
        batch[OFFSET_LAST_OFFSET_DELTA..OFFSET_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(record_count - 1).to_be_bytes());
    }

    #[test]
    fn a_header_claiming_records_the_batch_does_not_hold_is_refused() {
        // The issue's batch: 61 bytes, i32::MAX records claimed, none there.
        let lying = patched(build_batch(&BatchSpec::plain(1, 0, b"")), |b| {
            b.truncate(BATCH_HEADER_BYTES);
            b[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&49i32.to_be_bytes());
            set_count(b, i32::MAX);
        });
        assert_eq!(lying.len(), 61);
        assert!(matches!(validate(&lying), Err(BatchError::TooManyRecords { .. })));
        assert!(matches!(
            validate_header_only(&lying),
            Err(BatchError::TooManyRecords { .. })
        ));
        // One record more than there are, with the counts consistent.
        let one_more = patched(sample(), |b| set_count(b, 4));
        assert!(matches!(
            validate(&one_more),
            Err(BatchError::BadRecords { record: 3, .. })
        ));
        let one_less = patched(sample(), |b| set_count(b, 2));
        assert!(matches!(
            validate(&one_less),
            Err(BatchError::BadRecords { record: 2, .. })
        ));
    }

    #[test]
    fn timestamps_must_not_exceed_the_max_timestamp() {
        let base_above_max = patched(sample(), |b| {
            b[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&5i64.to_be_bytes());
        });
        assert!(matches!(
            validate_header_only(&base_above_max),
            Err(BatchError::BadTimestamp {
                max_timestamp_ms: 5,
                ..
            })
        ));
        // A record 10 ms after the base, under a max equal to the base.
        let mut section = Vec::new();
        record::put_record(&mut section, 0, None, Some(b"a"));
        section[2] = 20; // timestamp delta +10 (zig-zag)
        let mut late = frame_batch(&BatchSpec::plain(1, 1_000, &[]), &section);
        assert!(matches!(
            validate(&late),
            Err(BatchError::BadTimestamp {
                timestamp_ms: 1_010,
                max_timestamp_ms: 1_000
            })
        ));
        late = patched(late, |b| {
            b[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&1_010i64.to_be_bytes());
        });
        assert!(validate(&late).is_ok(), "a max that covers every record is fine");
        let unset = patched(sample(), |b| {
            b[OFFSET_BASE_TIMESTAMP..OFFSET_BASE_TIMESTAMP + 8].copy_from_slice(&(-1i64).to_be_bytes());
            b[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&(-1i64).to_be_bytes());
        });
        assert!(validate(&unset).is_ok(), "no timestamps at all is not checked");
    }

    #[test]
    fn a_compressed_batch_may_claim_only_what_its_codec_can_expand_to() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let section = [7u8; 10];
            let fits = i32::try_from(section.len() * codec.expansion_max() / RECORD_BYTES_MIN).unwrap();
            let mut spec = BatchSpec::plain(fits, 0, &section);
            spec.attributes = match codec {
                Codec::Gzip => 1,
                Codec::Snappy => 2,
                Codec::Lz4 => 3,
                _ => 4,
            };
            assert!(validate(&build_batch(&spec)).is_ok(), "{codec:?}: {fits} records");
            spec.record_count = fits + 1;
            assert!(
                matches!(validate(&build_batch(&spec)), Err(BatchError::TooManyRecords { .. })),
                "{codec:?}: {} records",
                fits + 1
            );
        }
    }

    #[test]
    fn built_batches_frame_real_records() {
        let batch = build_batch(&BatchSpec::plain(3, 7, b"abcdefg"));
        let header = validate(&batch).unwrap();
        let values: Vec<&[u8]> = uncompressed_records(&batch, &header)
            .unwrap()
            .map(|r| r.unwrap().value.unwrap())
            .collect();
        assert_eq!(values, vec![&b"ab"[..], b"cd", b"efg"]);
        let from_values = build_batch_from_values(7, &[b"x", b"yz"]);
        let header = validate(&from_values).unwrap();
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
    }

    #[test]
    fn crc_is_castagnoli_not_ieee() {
        // CRC-32C check value for "123456789" is 0xE3069283 (IEEE would be 0xCBF43926).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }
}
