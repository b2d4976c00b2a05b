//! A bounds-checked reader over one received frame, and the Kafka primitive
//! types it reads.
//!
//! Every integer is big-endian. "Flexible" versions (KIP-482) replace the
//! length prefixes with unsigned varints holding `length + 1` (0 = null) and
//! end every struct with a tagged-field section.
//!
//! ```text
//! int8/16/32/64     1/2/4/8 bytes, big-endian two's complement
//! boolean           1 byte, 0 = false, anything else = true
//! uuid              16 bytes (skipped by size)
//! unsigned varint   1..=5 bytes, 7 bits each, least significant group first,
//!                   high bit set = "another byte follows"
//!
//!                   classic (non-flexible)              compact (flexible)
//! string            int16 length, then bytes            uvarint length+1, then bytes
//! nullable string   int16 length (-1 = null)            uvarint length+1 (0 = null)
//! bytes             int32 length, then bytes            uvarint length+1, then bytes
//! nullable bytes    int32 length (-1 = null)            uvarint length+1 (0 = null)
//! array             int32 count (-1 = null), items      uvarint count+1 (0 = null), items
//!
//! tagged fields (flexible only, at the end of every struct):
//! +------------------+-----------------+------------------+--------------+-----
//! | count: uvarint   | tag: uvarint    | size: uvarint    | size bytes   | ...
//! +------------------+-----------------+------------------+--------------+-----
//! ```
//!
//! The cursor never indexes unchecked: each read either returns the value and
//! advances, or returns a [`DecodeError`] naming the field. Byte fields come
//! back as [`Bytes::slice`]s of the frame (no copy).

use bytes::Bytes;

use crate::error::DecodeError;

/// Longest unsigned varint Kafka writes for a 32-bit value.
const UNSIGNED_VARINT_BYTES_MAX: usize = 5;

/// Which length encoding a version uses (see the table above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// int16 / int32 length prefixes, no tagged fields.
    Classic,
    /// uvarint `length + 1` prefixes and tagged fields (KIP-482).
    Flexible,
}

impl Encoding {
    /// `Flexible` when `flexible` is true.
    pub(crate) fn from_flexible(flexible: bool) -> Self {
        if flexible {
            Encoding::Flexible
        } else {
            Encoding::Classic
        }
    }
}

/// A bounds-checked read position inside one frame.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    frame: &'a Bytes,
    position: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `frame`.
    pub(crate) fn new(frame: &'a Bytes) -> Self {
        Cursor { frame, position: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.frame.len().saturating_sub(self.position)
    }

    /// The frame from the cursor on (zero-copy).
    pub(crate) fn rest_bytes(&self) -> Bytes {
        self.frame.slice(self.position.min(self.frame.len())..)
    }

    fn rest(&self) -> &'a [u8] {
        let frame: &'a [u8] = self.frame;
        frame.get(self.position..).unwrap_or_default()
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let rest = self.rest();
        let Some(chunk) = rest.first_chunk::<N>() else {
            return Err(DecodeError::Truncated {
                field,
                needed_bytes: N,
                remaining_bytes: rest.len(),
            });
        };
        self.position += N;
        Ok(*chunk)
    }

    /// Skips `count` bytes.
    pub(crate) fn skip(&mut self, count: usize, field: &'static str) -> Result<(), DecodeError> {
        let remaining = self.remaining();
        if count > remaining {
            return Err(DecodeError::Truncated {
                field,
                needed_bytes: count,
                remaining_bytes: remaining,
            });
        }
        self.position += count;
        Ok(())
    }

    /// The next `count` bytes as a zero-copy slice of the frame.
    pub(crate) fn slice(&mut self, count: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.position;
        self.skip(count, field)?;
        Ok(self.frame.slice(start..start + count))
    }

    /// The next `count` bytes, borrowed.
    fn borrow(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest();
        let Some(taken) = rest.get(..count) else {
            return Err(DecodeError::Truncated {
                field,
                needed_bytes: count,
                remaining_bytes: rest.len(),
            });
        };
        self.position += count;
        Ok(taken)
    }

    pub(crate) fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.fixed::<1>(field)?))
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.fixed::<2>(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.fixed::<4>(field)?))
    }

    /// A boolean: one byte, non-zero is true (as Kafka and kafka-protocol read it).
    #[cfg(test)]
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.fixed::<1>(field)? != [0])
    }

    /// An unsigned varint of at most five bytes. Stricter than Kafka's reader
    /// only for encodings no encoder emits (a fifth byte with the high bit set
    /// or with bits beyond 32).
    pub(crate) fn unsigned_varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for index in 0..UNSIGNED_VARINT_BYTES_MAX {
            let [byte] = self.fixed::<1>(field)?;
            let group = u32::from(byte & 0x7f);
            if index == UNSIGNED_VARINT_BYTES_MAX - 1 && byte > 0x0f {
                return Err(DecodeError::Invalid {
                    field,
                    reason: "unsigned varint longer than 32 bits",
                });
            }
            value |= group << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid {
            field,
            reason: "unsigned varint longer than 5 bytes",
        })
    }

    /// A length prefix: `Ok(None)` for null, otherwise the length, which is
    /// checked against the bytes left (`per_item_bytes_min` bytes per unit).
    fn length(
        &mut self,
        encoding: Encoding,
        classic_width: ClassicWidth,
        per_item_bytes_min: usize,
        field: &'static str,
    ) -> Result<Option<usize>, DecodeError> {
        let length: i64 = match (encoding, classic_width) {
            (Encoding::Classic, ClassicWidth::Int16) => i64::from(self.i16(field)?),
            (Encoding::Classic, ClassicWidth::Int32) => i64::from(self.i32(field)?),
            (Encoding::Flexible, _) => i64::from(self.unsigned_varint(field)?) - 1,
        };
        if length == -1 {
            return Ok(None);
        }
        let Ok(length) = usize::try_from(length) else {
            return Err(DecodeError::Invalid {
                field,
                reason: "negative length",
            });
        };
        let remaining = self.remaining();
        if length.saturating_mul(per_item_bytes_min) > remaining {
            return Err(DecodeError::Truncated {
                field,
                needed_bytes: length.saturating_mul(per_item_bytes_min),
                remaining_bytes: remaining,
            });
        }
        Ok(Some(length))
    }

    /// A nullable string (borrowed; UTF-8 checked).
    pub(crate) fn nullable_str(
        &mut self,
        encoding: Encoding,
        field: &'static str,
    ) -> Result<Option<&'a str>, DecodeError> {
        let Some(length) = self.length(encoding, ClassicWidth::Int16, 1, field)? else {
            return Ok(None);
        };
        let raw = self.borrow(length, field)?;
        match std::str::from_utf8(raw) {
            Ok(text) => Ok(Some(text)),
            Err(_) => Err(DecodeError::Invalid {
                field,
                reason: "not UTF-8",
            }),
        }
    }

    /// A nullable string as a zero-copy slice of the frame (UTF-8 checked).
    pub(crate) fn nullable_str_bytes(
        &mut self,
        encoding: Encoding,
        field: &'static str,
    ) -> Result<Option<Bytes>, DecodeError> {
        let Some(length) = self.length(encoding, ClassicWidth::Int16, 1, field)? else {
            return Ok(None);
        };
        let slice = self.slice(length, field)?;
        if std::str::from_utf8(&slice).is_err() {
            return Err(DecodeError::Invalid {
                field,
                reason: "not UTF-8",
            });
        }
        Ok(Some(slice))
    }

    /// A non-null string.
    pub(crate) fn str(&mut self, encoding: Encoding, field: &'static str) -> Result<&'a str, DecodeError> {
        match self.nullable_str(encoding, field)? {
            Some(text) => Ok(text),
            None => Err(DecodeError::Invalid {
                field,
                reason: "null where a string is required",
            }),
        }
    }

    /// Nullable bytes, as a zero-copy slice of the frame.
    pub(crate) fn nullable_bytes(
        &mut self,
        encoding: Encoding,
        field: &'static str,
    ) -> Result<Option<Bytes>, DecodeError> {
        let Some(length) = self.length(encoding, ClassicWidth::Int32, 1, field)? else {
            return Ok(None);
        };
        self.slice(length, field).map(Some)
    }

    /// A nullable array's item count. Each item must occupy at least
    /// `item_bytes_min` (≥ 1) bytes, so a count larger than the bytes left is
    /// rejected here, before anyone allocates for it.
    pub(crate) fn nullable_array_len(
        &mut self,
        encoding: Encoding,
        item_bytes_min: usize,
        field: &'static str,
    ) -> Result<Option<usize>, DecodeError> {
        self.length(encoding, ClassicWidth::Int32, item_bytes_min.max(1), field)
    }

    /// A non-null array's item count (see [`Cursor::nullable_array_len`]).
    pub(crate) fn array_len(
        &mut self,
        encoding: Encoding,
        item_bytes_min: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        match self.nullable_array_len(encoding, item_bytes_min, field)? {
            Some(count) => Ok(count),
            None => Err(DecodeError::Invalid {
                field,
                reason: "null where an array is required",
            }),
        }
    }

    /// Skips a tagged-field section when `encoding` is flexible; does nothing
    /// for classic versions.
    pub(crate) fn skip_tagged_fields(&mut self, encoding: Encoding, field: &'static str) -> Result<(), DecodeError> {
        if encoding == Encoding::Classic {
            return Ok(());
        }
        // Each field takes at least two bytes (tag and size), so the count is
        // bounded by the bytes left and the loop by the frame size.
        let count = self.unsigned_varint(field)?;
        for _ in 0..count {
            let _tag = self.unsigned_varint(field)?;
            let size = self.unsigned_varint(field)?;
            let Ok(size) = usize::try_from(size) else {
                return Err(DecodeError::Invalid {
                    field,
                    reason: "tagged field size overflows usize",
                });
            };
            self.skip(size, field)?;
        }
        Ok(())
    }
}

/// Width of a classic (non-flexible) length prefix.
#[derive(Debug, Clone, Copy)]
enum ClassicWidth {
    /// Strings.
    Int16,
    /// Bytes and arrays.
    Int32,
}

/// Adds `count` entries to `entries`; more than `entries_max` in all is an
/// error naming `field`.
pub(crate) fn count_entries(
    entries: usize,
    count: usize,
    entries_max: usize,
    field: &'static str,
) -> Result<usize, DecodeError> {
    let total = entries.saturating_add(count);
    if total > entries_max {
        return Err(DecodeError::Invalid {
            field,
            reason: "the request names more entries than the broker accepts in one request (--max-request-entries)",
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_width_integers_big_endian() {
        let frame = Bytes::from_static(&[0x80, 0x01, 0x02, 0x00, 0x00, 0x00, 0x03, 1]);
        let mut cursor = Cursor::new(&frame);
        assert_eq!(cursor.i8("a").unwrap(), -128);
        assert_eq!(cursor.i16("b").unwrap(), 0x0102);
        assert_eq!(cursor.i32("c").unwrap(), 3);
        assert!(cursor.bool("d").unwrap());
        assert_eq!(cursor.remaining(), 0);
        assert!(matches!(cursor.i8("e"), Err(DecodeError::Truncated { field: "e", .. })));
    }

    #[test]
    fn unsigned_varint_round_trips_and_rejects_overlong() {
        for value in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut encoded = Vec::new();
            let mut rest = value;
            while rest >= 0x80 {
                encoded.push((rest as u8) | 0x80);
                rest >>= 7;
            }
            encoded.push(rest as u8);
            let frame = Bytes::from(encoded);
            let mut cursor = Cursor::new(&frame);
            assert_eq!(cursor.unsigned_varint("v").unwrap(), value);
            assert_eq!(cursor.remaining(), 0);
        }
        let frame = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert!(Cursor::new(&frame).unsigned_varint("v").is_err());
        let frame = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x8f, 0x00]);
        assert!(Cursor::new(&frame).unsigned_varint("v").is_err());
    }

    #[test]
    fn strings_and_bytes_in_both_encodings() {
        let frame = Bytes::from_static(&[0, 2, b'h', b'i', 0xff, 0xff, 3, b'y', b'o', 0]);
        let mut cursor = Cursor::new(&frame);
        assert_eq!(cursor.str(Encoding::Classic, "s").unwrap(), "hi");
        assert_eq!(cursor.nullable_str(Encoding::Classic, "n").unwrap(), None);
        assert_eq!(cursor.str(Encoding::Flexible, "c").unwrap(), "yo");
        assert_eq!(cursor.nullable_bytes(Encoding::Flexible, "b").unwrap(), None);

        let frame = Bytes::from_static(&[0, 0, 0, 3, 7, 8, 9]);
        let mut cursor = Cursor::new(&frame);
        let slice = cursor.nullable_bytes(Encoding::Classic, "r").unwrap().unwrap();
        assert_eq!(&slice[..], &[7, 8, 9]);
        assert_eq!(slice.as_ptr(), frame[4..].as_ptr(), "bytes are a slice of the frame");
    }

    #[test]
    fn array_counts_beyond_the_bytes_left_are_rejected() {
        let frame = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        let mut cursor = Cursor::new(&frame);
        assert!(matches!(
            cursor.array_len(Encoding::Classic, 1, "topics"),
            Err(DecodeError::Truncated { field: "topics", .. })
        ));
        let frame = Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(matches!(
            Cursor::new(&frame).array_len(Encoding::Classic, 1, "topics"),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn tagged_fields_are_skipped_only_when_flexible() {
        let frame = Bytes::from_static(&[2, 0, 1, 9, 5, 0, 42]);
        let mut cursor = Cursor::new(&frame);
        cursor.skip_tagged_fields(Encoding::Classic, "t").unwrap();
        assert_eq!(cursor.position(), 0);
        cursor.skip_tagged_fields(Encoding::Flexible, "t").unwrap();
        assert_eq!(cursor.position(), 6);
        let frame = Bytes::from_static(&[1, 0, 9]);
        assert!(Cursor::new(&frame).skip_tagged_fields(Encoding::Flexible, "t").is_err());
    }
}
