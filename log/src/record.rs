//! Kafka Record v2: the records section of an *uncompressed* RecordBatch
//! (`batch.rs` draws the batch header in front of it). The log never stores a
//! record on its own; it walks them only to check that a batch holds what its
//! header claims, and frames them for the batches the broker and the tests
//! build themselves.
//!
//! ```text
//!  one record, repeated `record count` times, back to back to the end of the batch:
//!  +--------+------------+-----------+--------+--------+-----+--------+-------+--------+-------------------------+
//!  | length | attributes | timestamp | offset | key    | key | value  | value | header | headers                 |
//!  | varint | i8         | Δ varlong | Δ vint | length |     | length |       | count  | (key length varint ≥ 0, |
//!  |        | (unused)   |           |        | vint   |     | vint   |       | vint   |  key, value length      |
//!  |        |            |           |        | (-1 =  |     | (-1 =  |       | (≥ 0)  |  varint ≥ -1, value)*   |
//!  |        |            |           |        |  null) |     |  null) |       |        |                         |
//!  +--------+------------+-----------+--------+--------+-----+--------+-------+--------+-------------------------+
//!  length: bytes after the length field, to the end of this record
//! ```
//! `varint` and `varlong` are zig-zag LEB128, as Kafka (and Protocol Buffers)
//! write them: at most 5 bytes for a 32-bit varint, 10 for a 64-bit varlong.
//!
//! A batch is well-formed, as Kafka's `DefaultRecord.readFrom` and its batch
//! iterator require, when its section holds exactly `record count` records,
//! each consuming exactly its `length`, with nothing left over; here record
//! `i` must also carry offset Δ `i` (Kafka requires it of compressed batches,
//! and every client writes it) so that the header's offsets are the records'.

use crate::error::BatchError;

/// Fewest bytes one record can take: a one-byte length, attributes, and one
/// byte each for timestamp Δ 0, offset Δ 0, a null key, a null value and no
/// headers.
pub(crate) const RECORD_BYTES_MIN: usize = 7;

/// Longest zig-zag LEB128 encoding of a 32-bit varint.
const VARINT_BYTES_MAX: usize = 5;
/// Longest zig-zag LEB128 encoding of a 64-bit varlong.
const VARLONG_BYTES_MAX: usize = 10;

/// One record of a batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the record minus the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp of the record minus the batch's base timestamp (ms).
    pub timestamp_delta_ms: i64,
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The record's headers, as checked when the record was walked.
    pub headers: Headers<'a>,
}

/// The headers of one record: `(key, value)` pairs in order, borrowed from
/// the batch (a header value may be null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    /// The encoded headers, already checked by the record walk.
    bytes: &'a [u8],
    /// How many are left in `bytes`.
    count: i32,
}

impl<'a> Headers<'a> {
    /// The value of the first header named `key`, if there is one.
    pub fn get(self, key: &[u8]) -> Option<Option<&'a [u8]>> {
        self.into_iter().find(|(name, _)| *name == key).map(|(_, value)| value)
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.count <= 0 {
            return None;
        }
        let mut cursor = Cursor { bytes: self.bytes };
        let key_length = usize::try_from(cursor.varint()?).ok()?;
        let key = cursor.take(key_length)?;
        let value = cursor.nullable_bytes()?;
        self.bytes = cursor.bytes;
        self.count -= 1;
        Some((key, value))
    }
}

/// Reads zig-zag varints and byte runs from the front of a slice, refusing to
/// read past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(count)?;
        self.bytes = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    /// A zig-zag LEB128 integer of at most `bytes_max` bytes.
    fn zigzag(&mut self, bytes_max: usize) -> Option<i64> {
        let mut raw = 0u64;
        for index in 0..bytes_max {
            let byte = self.byte()?;
            raw |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        i32::try_from(self.zigzag(VARINT_BYTES_MAX)?).ok()
    }

    fn varlong(&mut self) -> Option<i64> {
        self.zigzag(VARLONG_BYTES_MAX)
    }

    /// A length-prefixed byte run: `None` inside `Some` for length -1 (null).
    fn nullable_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            length => Some(Some(self.take(usize::try_from(length).ok()?)?)),
        }
    }
}

/// The records of one uncompressed batch, in order. Each item is a record
/// or the first framing fault (after which the iterator ends).
pub struct Records<'a> {
    cursor: Cursor<'a>,
    /// Records the header claims.
    record_count: i32,
    /// Records read so far.
    read: i32,
    /// Which offset deltas the records may carry.
    layout: Layout,
    /// Offset delta of the record read last (-1 before the first).
    previous_delta: i32,
    failed: bool,
}

/// Which offset deltas the records of a batch may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// As a producer writes them: record `i` carries offset Δ `i`.
    Dense,
    /// As compaction leaves them (`cleaner.rs`): strictly increasing, none
    /// past the header's last offset Δ (gaps are records the cleaner
    /// removed).
    Sparse {
        /// The header's last offset Δ.
        last_offset_delta: i32,
    },
}

impl<'a> Records<'a> {
    /// Walks `section`, the bytes after a batch header, as `record_count` records.
    pub(crate) fn new(section: &'a [u8], record_count: i32, layout: Layout) -> Records<'a> {
        Records {
            cursor: Cursor { bytes: section },
            record_count,
            read: 0,
            layout,
            previous_delta: -1,
            failed: false,
        }
    }

    fn fault(&mut self, reason: &'static str) -> Option<Result<Record<'a>, BatchError>> {
        self.failed = true;
        Some(Err(BatchError::BadRecords {
            record: self.read,
            reason,
        }))
    }

    fn parse_body(body: &'a [u8]) -> Result<Record<'a>, &'static str> {
        let mut body = Cursor { bytes: body };
        body.byte().ok_or("no attributes")?;
        let timestamp_delta_ms = body.varlong().ok_or("bad timestamp delta")?;
        let offset_delta = body.varint().ok_or("bad offset delta")?;
        let key = body.nullable_bytes().ok_or("bad key length")?;
        let value = body.nullable_bytes().ok_or("bad value length")?;
        let header_count = body.varint().ok_or("bad header count")?;
        if header_count < 0 {
            return Err("negative header count");
        }
        let headers_start = body.bytes;
        // Every header takes at least two bytes, so the body bounds this loop.
        for _ in 0..header_count {
            let key_length = body.varint().ok_or("bad header key length")?;
            let key_length = usize::try_from(key_length).map_err(|_| "null header key")?;
            body.take(key_length).ok_or("header key past the record's end")?;
            body.nullable_bytes().ok_or("bad header value length")?;
        }
        if !body.bytes.is_empty() {
            return Err("bytes left over after the record's headers");
        }
        Ok(Record {
            offset_delta,
            timestamp_delta_ms,
            key,
            value,
            headers: Headers {
                bytes: headers_start,
                count: header_count,
            },
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.read == self.record_count {
            if !self.cursor.bytes.is_empty() {
                return self.fault("bytes left over after the last record");
            }
            return None;
        }
        let Some(length) = self.cursor.varint() else {
            return self.fault("bad record length");
        };
        let Some(body) = usize::try_from(length).ok().and_then(|l| self.cursor.take(l)) else {
            return self.fault("record length past the batch's end");
        };
        let record = match Self::parse_body(body) {
            Ok(record) => record,
            Err(reason) => return self.fault(reason),
        };
        match self.layout {
            Layout::Dense if record.offset_delta != self.read => {
                return self.fault("offset delta is not the record's index");
            }
            Layout::Sparse { last_offset_delta }
                if record.offset_delta <= self.previous_delta || record.offset_delta > last_offset_delta =>
            {
                return self.fault("offset deltas do not increase within the batch");
            }
            Layout::Dense | Layout::Sparse { .. } => {}
        }
        self.previous_delta = record.offset_delta;
        self.read += 1;
        Some(Ok(record))
    }
}

/// Appends `value` as a zig-zag LEB128 varint/varlong.
pub(crate) fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_zigzag(out, -1),
        Some(bytes) => {
            put_zigzag(out, i64::try_from(bytes.len()).unwrap_or(i64::MAX));
            out.extend_from_slice(bytes);
        }
    }
}

/// Appends one record (timestamp Δ 0, no headers) to a records section.
pub(crate) fn put_record(out: &mut Vec<u8>, offset_delta: i32, key: Option<&[u8]>, value: Option<&[u8]>) {
    put_record_full(out, offset_delta, 0, key, value, &[]);
}

/// Appends one record with timestamp Δ `timestamp_delta_ms` (no headers).
pub(crate) fn put_record_at(
    out: &mut Vec<u8>,
    offset_delta: i32,
    timestamp_delta_ms: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    put_record_full(out, offset_delta, timestamp_delta_ms, key, value, &[]);
}

/// Appends one record (timestamp Δ 0) with `headers` to a records section.
pub(crate) fn put_record_with_headers(
    out: &mut Vec<u8>,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) {
    put_record_full(out, offset_delta, 0, key, value, headers);
}

/// Appends `record` again, its offset Δ, key, value and headers as they
/// were and its timestamp Δ now `timestamp_delta_ms` (the cleaner's copy
/// of a kept record, `cleaner.rs`).
pub(crate) fn put_record_copy(out: &mut Vec<u8>, record: &Record<'_>, timestamp_delta_ms: i64) {
    let header_bytes = record.headers.bytes;
    let mut body = Vec::with_capacity(
        record.value.map_or(0, <[u8]>::len) + record.key.map_or(0, <[u8]>::len) + header_bytes.len() + 24,
    );
    body.push(0); // attributes
    put_zigzag(&mut body, timestamp_delta_ms);
    put_zigzag(&mut body, i64::from(record.offset_delta));
    put_nullable(&mut body, record.key);
    put_nullable(&mut body, record.value);
    put_zigzag(&mut body, i64::from(record.headers.count));
    body.extend_from_slice(header_bytes);
    put_zigzag(out, i64::try_from(body.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(&body);
}

/// Appends one record: timestamp Δ, key, value and headers.
fn put_record_full(
    out: &mut Vec<u8>,
    offset_delta: i32,
    timestamp_delta_ms: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) {
    let mut body = Vec::with_capacity(value.map_or(0, <[u8]>::len) + key.map_or(0, <[u8]>::len) + 16);
    body.push(0); // attributes
    put_zigzag(&mut body, timestamp_delta_ms);
    put_zigzag(&mut body, i64::from(offset_delta));
    put_nullable(&mut body, key);
    put_nullable(&mut body, value);
    put_zigzag(&mut body, i64::try_from(headers.len()).unwrap_or(i64::MAX));
    for (name, header_value) in headers {
        put_nullable(&mut body, Some(name.as_bytes()));
        put_nullable(&mut body, Some(header_value));
    }
    put_zigzag(out, i64::try_from(body.len()).unwrap_or(i64::MAX));
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn section(values: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (delta, value) in values.iter().enumerate() {
            put_record(&mut out, delta as i32, None, Some(value));
        }
        out
    }

    fn walk(section: &[u8], count: i32) -> Result<Vec<Record<'_>>, BatchError> {
        Records::new(section, count, Layout::Dense).collect()
    }

    #[test]
    fn zigzag_round_trips_at_the_edges() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_zigzag(&mut out, value);
            assert!(out.len() <= VARLONG_BYTES_MAX);
            assert_eq!(Cursor { bytes: &out }.varlong(), Some(value), "{value}");
        }
        let mut big = Vec::new();
        put_zigzag(&mut big, i64::from(i32::MAX) + 1);
        assert_eq!(Cursor { bytes: &big }.varint(), None, "a varint beyond i32 is refused");
    }

    #[test]
    fn framed_records_walk_back_with_their_values() {
        let bytes = section(&[b"one", b"", b"three"]);
        let records = walk(&bytes, 3).unwrap();
        let values: Vec<_> = records.iter().map(|r| r.value.unwrap()).collect();
        assert_eq!(values, vec![&b"one"[..], b"", b"three"]);
        assert!(records.iter().all(|r| r.key.is_none() && r.timestamp_delta_ms == 0));
        let mut empty = Vec::new();
        put_record(&mut empty, 0, None, None);
        assert_eq!(empty.len(), RECORD_BYTES_MIN, "the smallest record");
    }

    #[test]
    fn a_count_the_bytes_do_not_hold_is_a_fault() {
        let bytes = section(&[b"a", b"b"]);
        let fault = |count| walk(&bytes, count).unwrap_err();
        assert_eq!(
            fault(3),
            BatchError::BadRecords {
                record: 2,
                reason: "bad record length"
            }
        );
        assert_eq!(
            fault(1),
            BatchError::BadRecords {
                record: 1,
                reason: "bytes left over after the last record"
            }
        );
        assert!(matches!(
            walk(&[], i32::MAX),
            Err(BatchError::BadRecords { record: 0, .. })
        ));
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        let mut bytes = Vec::new();
        put_record(&mut bytes, 0, None, Some(b"x"));
        put_record(&mut bytes, 5, None, Some(b"y"));
        assert_eq!(
            walk(&bytes, 2).unwrap_err(),
            BatchError::BadRecords {
                record: 1,
                reason: "offset delta is not the record's index"
            }
        );
    }

    #[test]
    fn a_record_must_fill_exactly_its_length() {
        let mut bytes = section(&[b"abc"]);
        bytes[0] += 2; // the length now claims two bytes more than the body has
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            walk(&bytes, 1),
            Err(BatchError::BadRecords {
                reason: "bytes left over after the record's headers",
                ..
            })
        ));
        let short = section(&[b"abc"]);
        assert!(walk(&short[..short.len() - 1], 1).is_err());
    }

    #[test]
    fn headers_are_walked_and_a_null_header_key_is_refused() {
        let mut body = vec![0u8];
        put_zigzag(&mut body, 0);
        put_zigzag(&mut body, 0);
        put_nullable(&mut body, Some(b"k"));
        put_nullable(&mut body, Some(b"v"));
        put_zigzag(&mut body, 1); // one header
        put_nullable(&mut body, Some(b"hk"));
        put_nullable(&mut body, None);
        let mut bytes = Vec::new();
        put_zigzag(&mut bytes, body.len() as i64);
        bytes.extend_from_slice(&body);
        let record = walk(&bytes, 1).unwrap()[0];
        assert_eq!((record.key, record.value), (Some(&b"k"[..]), Some(&b"v"[..])));

        let header_at = body.len() - 4;
        body[header_at] = 1; // header key length -1 (zig-zag 1)
        body.remove(header_at + 1);
        body.remove(header_at + 1);
        let mut bytes = Vec::new();
        put_zigzag(&mut bytes, body.len() as i64);
        bytes.extend_from_slice(&body);
        assert!(matches!(
            walk(&bytes, 1),
            Err(BatchError::BadRecords {
                reason: "null header key",
                ..
            })
        ));
    }
}
