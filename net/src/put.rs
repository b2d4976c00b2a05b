//! The writing half of `cursor.rs`: Kafka primitive types appended to a
//! `BytesMut`, in the same two encodings (see the table in `cursor.rs`).
//! Lengths that do not fit their prefix are an [`EncodeError::TooLarge`],
//! never a silent truncation.

use bytes::{BufMut, BytesMut};

use crate::cursor::Encoding;
use crate::error::EncodeError;

/// Appends `value` as an unsigned varint (1..=5 bytes).
pub(crate) fn put_unsigned_varint(out: &mut BytesMut, value: u32) {
    let mut rest = value;
    while rest >= 0x80 {
        out.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// Appends a compact length (`length + 1`, 0 meaning null).
fn put_compact_length(out: &mut BytesMut, length: Option<usize>, field: &'static str) -> Result<(), EncodeError> {
    match length {
        None => put_unsigned_varint(out, 0),
        Some(length) => {
            let Some(plus_one) = u32::try_from(length).ok().and_then(|length| length.checked_add(1)) else {
                return Err(EncodeError::TooLarge { field, bytes: length });
            };
            put_unsigned_varint(out, plus_one);
        }
    }
    Ok(())
}

/// Appends a string (`None` = null).
pub(crate) fn put_nullable_str(
    out: &mut BytesMut,
    encoding: Encoding,
    value: Option<&str>,
    field: &'static str,
) -> Result<(), EncodeError> {
    match encoding {
        Encoding::Flexible => put_compact_length(out, value.map(str::len), field)?,
        Encoding::Classic => match value {
            None => out.put_i16(-1),
            Some(text) => {
                let Ok(length) = i16::try_from(text.len()) else {
                    return Err(EncodeError::TooLarge {
                        field,
                        bytes: text.len(),
                    });
                };
                out.put_i16(length);
            }
        },
    }
    if let Some(text) = value {
        out.put_slice(text.as_bytes());
    }
    Ok(())
}

/// Appends a non-null string.
pub(crate) fn put_str(
    out: &mut BytesMut,
    encoding: Encoding,
    value: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_nullable_str(out, encoding, Some(value), field)
}

/// Appends an array's item count (`None` = null array).
pub(crate) fn put_array_len(
    out: &mut BytesMut,
    encoding: Encoding,
    count: Option<usize>,
    field: &'static str,
) -> Result<(), EncodeError> {
    match encoding {
        Encoding::Flexible => put_compact_length(out, count, field),
        Encoding::Classic => {
            let prefix = match count {
                None => -1,
                Some(count) => match i32::try_from(count) {
                    Ok(count) => count,
                    Err(_) => return Err(EncodeError::TooLarge { field, bytes: count }),
                },
            };
            out.put_i32(prefix);
            Ok(())
        }
    }
}

/// Appends the length prefix of a bytes field (`None` = null); the bytes
/// themselves are written by the caller.
pub(crate) fn put_bytes_len(
    out: &mut BytesMut,
    encoding: Encoding,
    length: Option<usize>,
    field: &'static str,
) -> Result<(), EncodeError> {
    // Same prefixes as an array: int32 or compact `length + 1`.
    put_array_len(out, encoding, length, field)
}

/// Appends an empty tagged-field section in flexible versions.
pub(crate) fn put_empty_tagged_fields(out: &mut BytesMut, encoding: Encoding) {
    if encoding == Encoding::Flexible {
        out.put_u8(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::Cursor;

    #[test]
    fn written_values_read_back() {
        let mut out = BytesMut::new();
        for encoding in [Encoding::Classic, Encoding::Flexible] {
            put_str(&mut out, encoding, "topic", "s").unwrap();
            put_nullable_str(&mut out, encoding, None, "n").unwrap();
            put_array_len(&mut out, encoding, Some(0), "a").unwrap();
            put_bytes_len(&mut out, encoding, Some(2), "b").unwrap();
            out.put_slice(b"xy");
            put_empty_tagged_fields(&mut out, encoding);
        }
        let frame = out.freeze();
        let mut cursor = Cursor::new(&frame);
        for encoding in [Encoding::Classic, Encoding::Flexible] {
            assert_eq!(cursor.str(encoding, "s").unwrap(), "topic");
            assert_eq!(cursor.nullable_str(encoding, "n").unwrap(), None);
            assert_eq!(cursor.array_len(encoding, 1, "a").unwrap(), 0);
            assert_eq!(&cursor.nullable_bytes(encoding, "b").unwrap().unwrap()[..], b"xy");
            cursor.skip_tagged_fields(encoding, "t").unwrap();
        }
        assert_eq!(cursor.remaining(), 0);
    }

    #[test]
    fn oversize_classic_string_is_an_error() {
        let long = "x".repeat(usize::from(u16::MAX));
        let mut out = BytesMut::new();
        assert!(put_str(&mut out, Encoding::Classic, &long, "s").is_err());
        assert!(put_str(&mut out, Encoding::Flexible, &long, "s").is_ok());
    }
}
