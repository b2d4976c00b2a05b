//! Kafka RecordBatch v2, written by the producers and read by the consumers.
//!
//! The bench builds its own batches (it must not depend on `shardline-log`), and the layout is the
//! one `log/src/batch.rs` draws:
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
//! All fixed-width integers are big-endian. Each record after the header is
//!
//! ```text
//!  length      attributes  timestampDelta  offsetDelta  keyLength  key     valueLength  value    headerCount  headers
//!  varint      i8 (=0)     varlong         varint       varint     bytes   varint       bytes    varint       (varint key len, key,
//!  (bytes after                                         (-1: null)         (-1: null)                          varint value len, value)*
//!   this field)
//! ```
//! where varint/varlong are zig-zag encoded LEB128 (Protocol Buffers style), as Kafka writes them.
//!
//! Bench batches carry no producer id (-1), no sequence (-1) and CreateTime timestamps; with
//! `--compression` their records section is compressed as Kafka specifies (`compression.rs`).
//! Their records have no headers; the intended send time travels in the first bytes of each value
//! (see [`ValueHeader`]).

use std::{fmt, io};

use crate::compression::{Compression, Compressor, Decompressor, DECOMPRESSED_RECORDS_BYTES_MAX};

/// Size of the fixed batch header, pinned so a layout change cannot slip in.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the coverage of the length field starts: base offset + batch length.
const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format the bench writes and reads.
const MAGIC_V2: i8 = 2;

const OFFSET_BASE: usize = 0;
const OFFSET_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
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
const _: () = assert!(OFFSET_ATTRIBUTES == OFFSET_CRC + 4);
const _: () = assert!(OFFSET_LENGTH + 4 == LOG_OVERHEAD_BYTES);

/// Attributes bit 5: a transaction control batch (no user records).
const ATTRIBUTES_CONTROL: i16 = 0x20;

/// Longest zig-zag LEB128 encoding of an i64.
const VARLONG_BYTES_MAX: usize = 10;

/// The first bytes of every value the bench produces: a marker and the message's intended send time.
///
/// ```text
///  byte 0         8                     16
///       +---------+---------------------+--------------------
///       | marker  | intended send time  | filler up to --message-size
///       | 8 bytes | u64 BE, ns since    |
///       | "SLBENCH1" the UNIX epoch     |
///       +---------+---------------------+--------------------
/// ```
/// Wall-clock nanoseconds (not a process-local instant) so that a consumer in another bench process
/// on the same host can read them too; within one process the bench derives them from one monotonic
/// clock, so same-process latencies never see a wall-clock step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueHeader {
    /// Intended send time of the message, ns since the UNIX epoch.
    pub intended_unix_ns: u64,
}

impl ValueHeader {
    /// Size of the header at the start of every bench value.
    pub const BYTES: usize = 16;
    /// Marks a value written by this tool.
    pub const MARKER: [u8; 8] = *b"SLBENCH1";

    /// The 16 header bytes.
    pub fn encode(&self) -> [u8; ValueHeader::BYTES] {
        let mut out = [0u8; ValueHeader::BYTES];
        let (marker, time) = out.split_at_mut(ValueHeader::MARKER.len());
        marker.copy_from_slice(&ValueHeader::MARKER);
        time.copy_from_slice(&self.intended_unix_ns.to_be_bytes());
        out
    }

    /// Reads the header from the start of a value; `None` if the value was not written by the bench.
    pub fn decode(value: &[u8]) -> Option<ValueHeader> {
        let marker = value.get(..ValueHeader::MARKER.len())?;
        if marker != ValueHeader::MARKER {
            return None;
        }
        let time: [u8; 8] = value
            .get(ValueHeader::MARKER.len()..ValueHeader::BYTES)?
            .try_into()
            .ok()?;
        Some(ValueHeader {
            intended_unix_ns: u64::from_be_bytes(time),
        })
    }
}

/// Accumulates records of one partition into one RecordBatch v2.
///
/// The header is written as zeros first and filled in by [`BatchBuilder::finish`], which also computes
/// the CRC, so records are encoded exactly once, straight into the final buffer.
#[derive(Debug)]
pub struct BatchBuilder {
    bytes: Vec<u8>,
    record_count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    /// An empty batch whose timestamps are relative to `base_timestamp_ms` (the first record's).
    pub fn new(base_timestamp_ms: i64, capacity_bytes: usize) -> BatchBuilder {
        let mut bytes = Vec::with_capacity(capacity_bytes.max(BATCH_HEADER_BYTES));
        bytes.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            bytes,
            record_count: 0,
            base_timestamp_ms,
            max_timestamp_ms: base_timestamp_ms,
        }
    }

    /// Bytes the batch would have if finished now.
    pub fn encoded_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes one record with these sizes would add to this batch (its length prefix included).
    pub fn record_bytes(&self, timestamp_ms: i64, key_len: Option<usize>, value_len: usize) -> usize {
        let body = record_body_bytes(
            timestamp_ms.saturating_sub(self.base_timestamp_ms),
            self.record_count,
            key_len,
            value_len,
        );
        varint_bytes(i64::try_from(body).unwrap_or(i64::MAX)) + body
    }

    /// Appends one record whose value is the concatenation of `value_parts`.
    ///
    /// # Panics
    /// If a key or value is longer than `i32::MAX` bytes (the caller bounds sizes far below that).
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_parts: &[&[u8]]) {
        let value_len: usize = value_parts.iter().map(|part| part.len()).sum();
        let timestamp_delta = timestamp_ms.saturating_sub(self.base_timestamp_ms);
        let body = record_body_bytes(timestamp_delta, self.record_count, key.map(<[u8]>::len), value_len);
        let start = self.bytes.len();
        put_varint(&mut self.bytes, i64::try_from(body).unwrap_or(i64::MAX));
        let body_start = self.bytes.len();
        self.bytes.push(0); // record attributes: unused, always 0
        put_varint(&mut self.bytes, timestamp_delta);
        put_varint(&mut self.bytes, i64::from(self.record_count));
        match key {
            Some(key) => {
                put_varint(&mut self.bytes, length_i64(key.len()));
                self.bytes.extend_from_slice(key);
            }
            None => put_varint(&mut self.bytes, -1),
        }
        put_varint(&mut self.bytes, length_i64(value_len));
        for part in value_parts {
            self.bytes.extend_from_slice(part);
        }
        put_varint(&mut self.bytes, 0); // no headers
        assert_eq!(self.bytes.len() - body_start, body, "record body size mismatch");
        assert!(self.bytes.len() > start);
        self.record_count += 1;
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
    }

    /// Compresses the records section with `compressor`'s codec, writes the header and CRC, and
    /// returns the finished batch. An error comes from the codec only.
    ///
    /// # Panics
    /// If the batch holds no record (an empty batch is invalid on the wire) or is over 2 GiB.
    pub fn finish(self, compressor: &mut Compressor) -> io::Result<Vec<u8>> {
        assert!(self.record_count > 0, "a record batch needs at least one record");
        let codec = compressor.codec();
        let mut bytes = if codec == Compression::None {
            self.bytes
        } else {
            let records = self.bytes.get(BATCH_HEADER_BYTES..).unwrap_or_default();
            let mut compressed = Vec::with_capacity(BATCH_HEADER_BYTES + records.len() / 2);
            compressed.resize(BATCH_HEADER_BYTES, 0);
            compressor.compress_into(records, &mut compressed)?;
            compressed
        };
        let header = BatchHeaderFields {
            attributes: codec.attribute_bits(),
            record_count: self.record_count,
            base_timestamp_ms: self.base_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
        };
        header.write(&mut bytes);
        Ok(bytes)
    }
}

/// The header fields a finished bench batch sets; the rest are fixed (no producer id, sequence or
/// leader epoch; base offset 0 until the broker assigns one).
struct BatchHeaderFields {
    attributes: i16,
    record_count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchHeaderFields {
    /// Writes the header over the first [`BATCH_HEADER_BYTES`] of `bytes`, then the CRC-32C.
    fn write(&self, bytes: &mut [u8]) {
        assert!(bytes.len() > BATCH_HEADER_BYTES, "a batch has records after its header");
        let batch_length = i32::try_from(bytes.len() - LOG_OVERHEAD_BYTES).unwrap_or(i32::MAX);
        assert!(usize::try_from(batch_length).is_ok_and(|n| n + LOG_OVERHEAD_BYTES == bytes.len()));
        let mut header = [0u8; BATCH_HEADER_BYTES];
        put_at(&mut header, OFFSET_BASE, &0i64.to_be_bytes());
        put_at(&mut header, OFFSET_LENGTH, &batch_length.to_be_bytes());
        put_at(&mut header, OFFSET_LEADER_EPOCH, &(-1i32).to_be_bytes());
        put_at(&mut header, OFFSET_MAGIC, &MAGIC_V2.to_be_bytes());
        put_at(&mut header, OFFSET_ATTRIBUTES, &self.attributes.to_be_bytes());
        put_at(
            &mut header,
            OFFSET_LAST_OFFSET_DELTA,
            &(self.record_count - 1).to_be_bytes(),
        );
        put_at(
            &mut header,
            OFFSET_BASE_TIMESTAMP,
            &self.base_timestamp_ms.to_be_bytes(),
        );
        put_at(&mut header, OFFSET_MAX_TIMESTAMP, &self.max_timestamp_ms.to_be_bytes());
        put_at(&mut header, OFFSET_PRODUCER_ID, &(-1i64).to_be_bytes());
        put_at(&mut header, OFFSET_PRODUCER_EPOCH, &(-1i16).to_be_bytes());
        put_at(&mut header, OFFSET_BASE_SEQUENCE, &(-1i32).to_be_bytes());
        put_at(&mut header, OFFSET_RECORD_COUNT, &self.record_count.to_be_bytes());
        put_at(bytes, 0, &header);
        let crc = crc32c::crc32c(bytes.get(OFFSET_ATTRIBUTES..).unwrap_or_default());
        put_at(bytes, OFFSET_CRC, &crc.to_be_bytes());
    }
}

fn put_at(target: &mut [u8], at: usize, bytes: &[u8]) {
    let slot = target.get_mut(at..at + bytes.len());
    assert!(slot.is_some(), "header field at {at} outside the batch");
    if let Some(slot) = slot {
        slot.copy_from_slice(bytes);
    }
}

fn length_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Bytes of a record after its length prefix.
fn record_body_bytes(timestamp_delta: i64, offset_delta: i32, key_len: Option<usize>, value_len: usize) -> usize {
    let key_bytes = match key_len {
        Some(len) => varint_bytes(length_i64(len)) + len,
        None => varint_bytes(-1),
    };
    1 + varint_bytes(timestamp_delta)
        + varint_bytes(i64::from(offset_delta))
        + key_bytes
        + varint_bytes(length_i64(value_len))
        + value_len
        + varint_bytes(0)
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Bytes of `value` as a zig-zag varint/varlong.
pub fn varint_bytes(value: i64) -> usize {
    let mut raw = zigzag(value);
    let mut bytes = 1;
    while raw >= 0x80 {
        raw >>= 7;
        bytes += 1;
    }
    bytes
}

/// Appends `value` as a zig-zag varint/varlong.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = zigzag(value);
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Why bytes from the broker are not a readable batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchDecodeError {
    /// A field or record runs past the end of its batch.
    Truncated { what: &'static str },
    /// A batch length below the header size.
    BadLength { batch_length: i32 },
    /// Not a v2 batch.
    BadMagic { magic: i8 },
    /// The stored CRC-32C does not match the batch.
    CrcMismatch { stored: u32, computed: u32 },
    /// A varint longer than 10 bytes, or a negative length other than -1.
    BadVarint { what: &'static str },
    /// Attributes name a codec Kafka does not define (bits 5..7).
    UnknownCodec { attributes: i16 },
    /// The codec could not decompress the records section.
    Decompress { codec: &'static str, detail: String },
    /// The records section inflates beyond the bound.
    DecompressedTooLarge { limit: usize },
}

impl fmt::Display for BatchDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchDecodeError::Truncated { what } => write!(f, "record batch truncated inside {what}"),
            BatchDecodeError::BadLength { batch_length } => write!(f, "record batch length {batch_length} is invalid"),
            BatchDecodeError::BadMagic { magic } => write!(f, "record batch magic {magic} (only v2 is read)"),
            BatchDecodeError::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            BatchDecodeError::BadVarint { what } => write!(f, "malformed varint in {what}"),
            BatchDecodeError::UnknownCodec { attributes } => {
                write!(f, "record batch attributes {attributes:#06x} name no known codec")
            }
            BatchDecodeError::Decompress { codec, detail } => write!(f, "{codec} records do not decompress: {detail}"),
            BatchDecodeError::DecompressedTooLarge { limit } => {
                write!(f, "compressed records inflate beyond the {limit} byte bound")
            }
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], BatchDecodeError> {
        let end = self
            .position
            .checked_add(len)
            .ok_or(BatchDecodeError::Truncated { what })?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(BatchDecodeError::Truncated { what })?;
        self.position = end;
        Ok(slice)
    }

    fn varint(&mut self, what: &'static str) -> Result<i64, BatchDecodeError> {
        let mut raw: u64 = 0;
        for index in 0..VARLONG_BYTES_MAX {
            let byte = *self
                .take(1, what)?
                .first()
                .ok_or(BatchDecodeError::Truncated { what })?;
            raw |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(unzigzag(raw));
            }
        }
        Err(BatchDecodeError::BadVarint { what })
    }

    /// A varint length followed by that many bytes; -1 means null.
    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, BatchDecodeError> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| BatchDecodeError::BadVarint { what })?;
        self.take(len, what).map(Some)
    }
}

fn be_field<const N: usize>(bytes: &[u8], at: usize, what: &'static str) -> Result<[u8; N], BatchDecodeError> {
    bytes
        .get(at..at + N)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(BatchDecodeError::Truncated { what })
}

/// One batch as found in a Fetch response, its header decoded, its records not yet.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Attributes (codec bits, control bit).
    pub attributes: i16,
    /// Records the header claims.
    pub record_count: i32,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Offset after the last record of the batch.
    pub fn next_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
            .saturating_add(1)
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Result<Compression, BatchDecodeError> {
        Compression::from_attributes(self.attributes).ok_or(BatchDecodeError::UnknownCodec {
            attributes: self.attributes,
        })
    }

    /// Whether this is a transaction control batch.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTES_CONTROL != 0
    }

    /// Checks the CRC-32C over attributes .. end.
    pub fn verify_crc(&self) -> Result<(), BatchDecodeError> {
        let stored = u32::from_be_bytes(be_field(self.bytes, OFFSET_CRC, "crc")?);
        let covered = self
            .bytes
            .get(OFFSET_ATTRIBUTES..)
            .ok_or(BatchDecodeError::Truncated { what: "crc" })?;
        let computed = crc32c::crc32c(covered);
        if stored == computed {
            Ok(())
        } else {
            Err(BatchDecodeError::CrcMismatch { stored, computed })
        }
    }

    /// The records of the batch: read in place when uncompressed, else decompressed into `scratch`
    /// (reused between batches) by `decompressor`, at most [`DECOMPRESSED_RECORDS_BYTES_MAX`].
    pub fn records<'s>(
        &self,
        decompressor: &mut Decompressor,
        scratch: &'s mut Vec<u8>,
    ) -> Result<RecordIter<'s>, BatchDecodeError>
    where
        'a: 's,
    {
        let section = self.bytes.get(BATCH_HEADER_BYTES..).unwrap_or_default();
        let bytes: &'s [u8] = match self.compression()? {
            Compression::None => section,
            codec => {
                decompressor.decompress_into(codec, section, scratch, DECOMPRESSED_RECORDS_BYTES_MAX)?;
                scratch
            }
        };
        Ok(RecordIter {
            reader: Reader { bytes, position: 0 },
            remaining: self.record_count.max(0),
        })
    }
}

/// Walks the batches of a Fetch response's record set.
///
/// A batch cut off at the end of the set is normal (a broker may return a partial batch at its size
/// limit) and ends the walk without an error; anything else malformed is an error.
pub struct BatchIter<'a> {
    rest: &'a [u8],
}

/// The batches in `records`, first to last.
pub fn batches(records: &[u8]) -> BatchIter<'_> {
    BatchIter { rest: records }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchView<'a>, BatchDecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < BATCH_HEADER_BYTES {
            return None; // empty, or a partial header at the end of the set
        }
        let batch_length = match be_field::<4>(self.rest, OFFSET_LENGTH, "batch length") {
            Ok(raw) => i32::from_be_bytes(raw),
            Err(error) => return Some(Err(error)),
        };
        let total = match usize::try_from(batch_length) {
            Ok(len) if len + LOG_OVERHEAD_BYTES >= BATCH_HEADER_BYTES => len + LOG_OVERHEAD_BYTES,
            _ => {
                self.rest = &[];
                return Some(Err(BatchDecodeError::BadLength { batch_length }));
            }
        };
        let Some(bytes) = self.rest.get(..total) else {
            self.rest = &[];
            return None; // a partial batch at the end of the set
        };
        self.rest = self.rest.get(total..).unwrap_or_default();
        Some(parse_header(bytes))
    }
}

fn parse_header(bytes: &[u8]) -> Result<BatchView<'_>, BatchDecodeError> {
    let magic = i8::from_be_bytes(be_field(bytes, OFFSET_MAGIC, "magic")?);
    if magic != MAGIC_V2 {
        return Err(BatchDecodeError::BadMagic { magic });
    }
    Ok(BatchView {
        base_offset: i64::from_be_bytes(be_field(bytes, OFFSET_BASE, "base offset")?),
        last_offset_delta: i32::from_be_bytes(be_field(bytes, OFFSET_LAST_OFFSET_DELTA, "last offset delta")?),
        attributes: i16::from_be_bytes(be_field(bytes, OFFSET_ATTRIBUTES, "attributes")?),
        record_count: i32::from_be_bytes(be_field(bytes, OFFSET_RECORD_COUNT, "record count")?),
        bytes,
    })
}

/// One record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Timestamp minus the batch's base timestamp (ms).
    pub timestamp_delta: i64,
    /// Offset minus the batch's base offset.
    pub offset_delta: i64,
    /// The key, if not null.
    pub key: Option<&'a [u8]>,
    /// The value, if not null.
    pub value: Option<&'a [u8]>,
}

/// Iterates the records of one batch (its records section, decompressed if it was compressed).
pub struct RecordIter<'a> {
    reader: Reader<'a>,
    remaining: i32,
}

impl<'a> RecordIter<'a> {
    fn read_record(&mut self) -> Result<RecordView<'a>, BatchDecodeError> {
        let length = self.reader.varint("record length")?;
        let length = usize::try_from(length).map_err(|_| BatchDecodeError::BadVarint { what: "record length" })?;
        let body = self.reader.take(length, "record")?;
        let mut record = Reader {
            bytes: body,
            position: 0,
        };
        record.take(1, "record attributes")?;
        let timestamp_delta = record.varint("timestamp delta")?;
        let offset_delta = record.varint("offset delta")?;
        let key = record.nullable_bytes("key")?;
        let value = record.nullable_bytes("value")?;
        let header_count = record.varint("header count")?;
        let header_count =
            usize::try_from(header_count).map_err(|_| BatchDecodeError::BadVarint { what: "header count" })?;
        // Each header takes at least 2 bytes, so this bound follows from the record length.
        if header_count > body.len() {
            return Err(BatchDecodeError::BadVarint { what: "header count" });
        }
        for _ in 0..header_count {
            record.nullable_bytes("header key")?;
            record.nullable_bytes("header value")?;
        }
        Ok(RecordView {
            timestamp_delta,
            offset_delta,
            key,
            value,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, BatchDecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let result = self.read_record();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression as KafkaCompression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use proptest::prelude::*;

    /// (timestamp ms, key, value)
    type TestRecord = (i64, Option<Vec<u8>>, Vec<u8>);

    fn build(records: &[TestRecord]) -> Vec<u8> {
        build_with(records, Compression::None)
    }

    fn build_with(records: &[TestRecord], codec: Compression) -> Vec<u8> {
        let base = records.first().map_or(0, |r| r.0);
        let mut builder = BatchBuilder::new(base, 1024);
        for (timestamp, key, value) in records {
            let predicted = builder.record_bytes(*timestamp, key.as_ref().map(Vec::len), value.len());
            let before = builder.encoded_bytes();
            builder.append(*timestamp, key.as_deref(), &[value]);
            assert_eq!(builder.encoded_bytes() - before, predicted);
        }
        builder.finish(&mut Compressor::new(codec).unwrap()).unwrap()
    }

    /// (offset delta, timestamp delta, key, value) as our reader returns them.
    type ReadRecord = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

    /// Our reader's records of the single batch in `bytes`.
    fn read_back(bytes: &[u8]) -> Vec<ReadRecord> {
        let views: Vec<_> = batches(bytes).collect();
        assert_eq!(views.len(), 1);
        let view = views[0].clone().unwrap();
        view.verify_crc().unwrap();
        let mut scratch = Vec::new();
        view.records(&mut Decompressor::new(), &mut scratch)
            .unwrap()
            .map(|record| {
                let record = record.unwrap();
                (
                    record.offset_delta,
                    record.timestamp_delta,
                    record.key.map(<[u8]>::to_vec),
                    record.value.map(<[u8]>::to_vec),
                )
            })
            .collect()
    }

    fn kafka_codec(codec: Compression) -> KafkaCompression {
        match codec {
            Compression::None => KafkaCompression::None,
            Compression::Gzip => KafkaCompression::Gzip,
            Compression::Snappy => KafkaCompression::Snappy,
            Compression::Lz4 => KafkaCompression::Lz4,
            Compression::Zstd => KafkaCompression::Zstd,
        }
    }

    #[test]
    fn header_size_is_pinned() {
        assert_eq!(BATCH_HEADER_BYTES, 61);
        assert_eq!(ValueHeader::BYTES, 16);
    }

    #[test]
    fn varints_match_kafka_examples() {
        // Zig-zag: 0 → 0, -1 → 1, 1 → 2, -64 → 127, 64 → 128 (two bytes).
        for (value, encoded) in [
            (0i64, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (300, vec![0xd8, 0x04]),
            (
                i64::MIN,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, encoded, "{value}");
            assert_eq!(varint_bytes(value), encoded.len());
            let mut reader = Reader {
                bytes: &out,
                position: 0,
            };
            assert_eq!(reader.varint("test").unwrap(), value);
        }
    }

    #[test]
    fn overlong_varint_is_an_error_not_a_panic() {
        let bytes = [0xffu8; 11];
        let mut reader = Reader {
            bytes: &bytes,
            position: 0,
        };
        assert_eq!(reader.varint("x"), Err(BatchDecodeError::BadVarint { what: "x" }));
    }

    #[test]
    fn kafka_protocol_decodes_our_batch() {
        let header = ValueHeader {
            intended_unix_ns: 1_700_000_000_123_456_789,
        }
        .encode();
        let mut builder = BatchBuilder::new(1_700_000_000_123, 256);
        builder.append(1_700_000_000_123, Some(b"key-1"), &[&header, b"hello"]);
        builder.append(1_700_000_000_125, None, &[&header, b"world!"]);
        let bytes = builder
            .finish(&mut Compressor::new(Compression::None).unwrap())
            .unwrap();

        let mut buf = Bytes::from(bytes.clone());
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(set.compression, KafkaCompression::None);
        assert_eq!(set.version, 2);
        assert_eq!(set.records.len(), 2);
        let first = &set.records[0];
        assert_eq!(first.offset, 0);
        assert_eq!(first.timestamp, 1_700_000_000_123);
        assert_eq!(first.timestamp_type, TimestampType::Creation);
        assert_eq!(first.key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(first.producer_id, -1);
        assert_eq!(first.sequence, -1);
        let value = first.value.as_deref().unwrap();
        assert_eq!(
            ValueHeader::decode(value).unwrap().intended_unix_ns,
            1_700_000_000_123_456_789
        );
        assert_eq!(&value[16..], b"hello");
        let second = &set.records[1];
        assert_eq!(second.offset, 1);
        assert_eq!(second.timestamp, 1_700_000_000_125);
        assert_eq!(second.key, None);

        let infos = RecordBatchDecoder::decode_batch_info(&mut Bytes::from(bytes)).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].record_count, 2);
    }

    #[test]
    fn crc_is_castagnoli_and_checked() {
        let mut bytes = build(&[(5, None, b"abc".to_vec())]);
        let view = batches(&bytes).next().unwrap().unwrap();
        view.verify_crc().unwrap();
        // Known-answer for CRC-32C (the IEEE CRC-32 of this string is 0xcbf43926).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let view = batches(&bytes).next().unwrap().unwrap();
        assert!(matches!(view.verify_crc(), Err(BatchDecodeError::CrcMismatch { .. })));
    }

    #[test]
    fn partial_trailing_batch_ends_the_walk() {
        let one = build(&[(1, None, b"a".to_vec())]);
        let mut set = one.clone();
        set.extend_from_slice(&one[..one.len() - 3]);
        let found: Vec<_> = batches(&set).collect();
        assert_eq!(found.len(), 1);
        assert!(found[0].is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut bytes = vec![0u8; 80];
        bytes[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            batches(&bytes).next(),
            Some(Err(BatchDecodeError::BadLength { .. }))
        ));
        bytes[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&68i32.to_be_bytes());
        assert!(matches!(
            batches(&bytes).next(),
            Some(Err(BatchDecodeError::BadMagic { magic: 0 }))
        ));
        bytes[OFFSET_MAGIC] = 2;
        bytes[OFFSET_RECORD_COUNT + 3] = 3;
        let view = batches(&bytes).next().unwrap().unwrap();
        let mut scratch = Vec::new();
        let mut decompressor = Decompressor::new();
        assert!(view
            .records(&mut decompressor, &mut scratch)
            .unwrap()
            .any(|r| r.is_err()));
        // Codec bits Kafka does not define, and a "compressed" section that is not.
        bytes[OFFSET_ATTRIBUTES + 1] = 6;
        let view = batches(&bytes).next().unwrap().unwrap();
        assert!(matches!(
            view.records(&mut decompressor, &mut scratch),
            Err(BatchDecodeError::UnknownCodec { attributes: 6 })
        ));
        bytes[OFFSET_ATTRIBUTES + 1] = Compression::Zstd.attribute_bits() as u8;
        let view = batches(&bytes).next().unwrap().unwrap();
        assert!(matches!(
            view.records(&mut decompressor, &mut scratch),
            Err(BatchDecodeError::Decompress { codec: "zstd", .. })
        ));
    }

    fn sample_records() -> Vec<TestRecord> {
        (0..200i64)
            .map(|i| {
                let key = (i % 3 != 0).then(|| format!("key-{}", i % 17).into_bytes());
                let value = format!("value {i} {}", "the quick brown fox ".repeat((i % 9) as usize)).into_bytes();
                (1_700_000_000_000 + i * 3, key, value)
            })
            .collect()
    }

    #[test]
    fn compressed_batches_round_trip_and_the_reference_decoder_agrees() {
        let records = sample_records();
        let plain = build(&records);
        for codec in Compression::ALL {
            let bytes = build_with(&records, codec);
            let view = batches(&bytes).next().unwrap().unwrap();
            assert_eq!(view.compression().unwrap(), codec);
            assert_eq!(view.record_count, 200);
            assert_eq!(view.next_offset(), 200);
            if codec != Compression::None {
                assert!(
                    bytes.len() * 2 < plain.len(),
                    "{codec}: {} of {}",
                    bytes.len(),
                    plain.len()
                );
            }
            // Only the codec bits and the records section differ from the uncompressed batch.
            assert_eq!(view.attributes, codec.attribute_bits());
            assert_eq!(
                bytes[OFFSET_LAST_OFFSET_DELTA..BATCH_HEADER_BYTES],
                plain[OFFSET_LAST_OFFSET_DELTA..BATCH_HEADER_BYTES]
            );
            // Ours.
            let read = read_back(&bytes);
            assert_eq!(read.len(), records.len());
            for (index, ((offset, delta, key, value), expected)) in read.iter().zip(&records).enumerate() {
                assert_eq!(*offset, index as i64);
                assert_eq!(*delta, expected.0 - records[0].0);
                assert_eq!(key, &expected.1);
                assert_eq!(value.as_deref(), Some(&expected.2[..]));
            }
            // kafka-protocol's decoder, with its own codec framing (and the C liblz4).
            let set = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).unwrap();
            assert_eq!(set.compression, kafka_codec(codec), "{codec}");
            assert_eq!(set.records.len(), records.len());
            for (record, expected) in set.records.iter().zip(&records) {
                assert_eq!(record.timestamp, expected.0);
                assert_eq!(record.key.as_deref(), expected.1.as_deref());
                assert_eq!(record.value.as_deref(), Some(&expected.2[..]));
            }
        }
    }

    #[test]
    fn batches_another_encoder_compressed_are_read() {
        // kafka-protocol frames snappy the Java client's way (snappy-java) and writes LZ4 frames with
        // the C liblz4: the bench must read what other clients write, not only its own output.
        let records: Vec<Record> = sample_records()
            .into_iter()
            .enumerate()
            .map(|(index, (timestamp, key, value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                // kafka-protocol starts a new batch where offset - sequence changes.
                sequence: index as i32,
                timestamp,
                key: key.map(Bytes::from),
                value: Some(Bytes::from(value)),
                headers: Default::default(),
            })
            .collect();
        for codec in Compression::ALL {
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: kafka_codec(codec),
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
            if codec == Compression::Snappy {
                assert_eq!(&buf[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + 8], b"\x82SNAPPY\x00");
            }
            let read = read_back(&buf);
            assert_eq!(read.len(), records.len(), "{codec}");
            for (got, expected) in read.iter().zip(&records) {
                assert_eq!(got.2.as_deref(), expected.key.as_deref(), "{codec}");
                assert_eq!(got.3.as_deref(), expected.value.as_deref(), "{codec}");
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(
            (0i64..100_000, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::collection::vec(any::<u8>(), 0..300)),
            1..20,
        ), codec in proptest::sample::select(Compression::ALL.to_vec())) {
            let base = 1_600_000_000_000i64;
            let records: Vec<_> = records.into_iter().map(|(t, k, v)| (base + t, k, v)).collect();
            let bytes = build_with(&records, codec);
            // Our reader.
            let views: Vec<_> = batches(&bytes).collect();
            prop_assert_eq!(views.len(), 1);
            let view = views[0].clone().unwrap();
            view.verify_crc().unwrap();
            prop_assert_eq!(view.compression().unwrap(), codec);
            prop_assert_eq!(view.record_count as usize, records.len());
            prop_assert_eq!(view.next_offset(), records.len() as i64);
            let mut scratch = Vec::new();
            let mut decompressor = Decompressor::new();
            for (index, (record, expected)) in view.records(&mut decompressor, &mut scratch).unwrap().zip(&records).enumerate() {
                let record = record.unwrap();
                prop_assert_eq!(record.offset_delta, index as i64);
                prop_assert_eq!(record.timestamp_delta, expected.0 - records[0].0);
                prop_assert_eq!(record.key, expected.1.as_deref());
                prop_assert_eq!(record.value, Some(&expected.2[..]));
            }
            // The reference decoder (it checks the CRC too).
            let set = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).unwrap();
            prop_assert_eq!(set.records.len(), records.len());
            for (index, (record, expected)) in set.records.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, index as i64);
                prop_assert_eq!(record.timestamp, expected.0);
                prop_assert_eq!(record.key.as_deref(), expected.1.as_deref());
                prop_assert_eq!(record.value.as_deref(), Some(&expected.2[..]));
            }
        }
    }
}
