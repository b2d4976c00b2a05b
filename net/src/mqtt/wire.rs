//! MQTT primitives: the fixed header, the variable byte integer, two-byte
//! integers, length-prefixed strings and binary data. Every reader refuses
//! to read past the end of its input and returns a [`MqttDecodeError`]
//! instead; nothing here panics on input bytes.
//!
//! ```text
//!  fixed header (every packet):
//!  +-------------+-------------+----------------------------------+
//!  | bits 7..4   | bits 3..0   | remaining length                 |
//!  | packet type | flags       | variable byte integer, 1-4 bytes |
//!  +-------------+-------------+----------------------------------+
//!  variable byte integer: 7 bits per byte, least significant group first,
//!  bit 7 set = another byte follows; at most 4 bytes (268,435,455).
//!
//!  two-byte integer:   u16, big endian
//!  four-byte integer:  u32, big endian
//!  UTF-8 string:       u16 length (big endian), then that many bytes of
//!                      well-formed UTF-8 without U+0000
//!  binary data:        u16 length (big endian), then that many bytes
//! ```

use bytes::Bytes;

use super::MqttDecodeError;

/// Largest value a variable byte integer holds (four bytes of seven bits).
pub(crate) const VARIABLE_INTEGER_MAX: u32 = 268_435_455;

/// Reads MQTT primitives from a `Bytes` (slices of it are shared, not copied).
pub(crate) struct Reader {
    bytes: Bytes,
}

impl Reader {
    pub(crate) fn new(bytes: Bytes) -> Reader {
        Reader { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next `count` bytes, shared with the input.
    pub(crate) fn take(&mut self, count: usize, field: &'static str) -> Result<Bytes, MqttDecodeError> {
        if count > self.bytes.len() {
            return Err(MqttDecodeError::Malformed {
                field,
                reason: "runs past the end of the packet",
            });
        }
        Ok(self.bytes.split_to(count))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.bytes)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, MqttDecodeError> {
        let byte = self.take(1, field)?;
        byte.first().copied().ok_or(MqttDecodeError::Malformed {
            field,
            reason: "runs past the end of the packet",
        })
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, MqttDecodeError> {
        let high = self.u8(field)?;
        let low = self.u8(field)?;
        Ok(u16::from_be_bytes([high, low]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, MqttDecodeError> {
        let high = self.u16(field)?;
        let low = self.u16(field)?;
        Ok((u32::from(high) << 16) | u32::from(low))
    }

    pub(crate) fn variable_integer(&mut self, field: &'static str) -> Result<u32, MqttDecodeError> {
        let mut value = 0u32;
        for index in 0..4u32 {
            let byte = self.u8(field)?;
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(MqttDecodeError::Malformed {
            field,
            reason: "variable byte integer longer than four bytes",
        })
    }

    /// Binary data: a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, MqttDecodeError> {
        let length = self.u16(field)?;
        self.take(usize::from(length), field)
    }

    /// A UTF-8 string: well-formed UTF-8 and no U+0000 (MQTT-1.5.4-1, -2).
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, MqttDecodeError> {
        let bytes = self.binary(field)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| MqttDecodeError::Malformed {
            field,
            reason: "not well-formed UTF-8",
        })?;
        if text.contains('\u{0}') {
            return Err(MqttDecodeError::Malformed {
                field,
                reason: "contains U+0000",
            });
        }
        Ok(text.to_string())
    }
}

/// Appends `value` as a variable byte integer.
///
/// # Panics
/// If `value` is above [`VARIABLE_INTEGER_MAX`] (the encoder's own bound).
pub(crate) fn put_variable_integer(out: &mut Vec<u8>, value: u32) {
    assert!(value <= VARIABLE_INTEGER_MAX, "variable byte integers hold 28 bits");
    let mut rest = value;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Bytes `value` takes as a variable byte integer.
pub(crate) fn variable_integer_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends binary data (two-byte length, bytes).
///
/// # Panics
/// If `bytes` is longer than 65,535 bytes: callers bound what they encode.
pub(crate) fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = u16::try_from(bytes.len());
    assert!(length.is_ok(), "MQTT strings and binary data hold at most 65,535 bytes");
    out.extend_from_slice(&length.unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a UTF-8 string (two-byte length, bytes).
pub(crate) fn put_string(out: &mut Vec<u8>, text: &str) {
    put_binary(out, text.as_bytes());
}

/// Frames `body` behind a fixed header with `first_byte` (type and flags).
///
/// # Panics
/// If the body is longer than a remaining length can say.
pub(crate) fn frame(first_byte: u8, body: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.reserve(1 + variable_integer_len(length) + body.len());
    out.push(first_byte);
    put_variable_integer(out, length);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn variable_integers_round_trip_at_their_edges() {
        for value in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARIABLE_INTEGER_MAX] {
            let mut out = Vec::new();
            put_variable_integer(&mut out, value);
            assert_eq!(out.len(), variable_integer_len(value));
            assert_eq!(Reader::new(Bytes::from(out)).variable_integer("v").unwrap(), value);
        }
        let five = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(Reader::new(five).variable_integer("v").is_err());
    }

    #[test]
    fn strings_refuse_bad_utf8_and_nul() {
        assert!(Reader::new(Bytes::from_static(&[0, 2, 0xc3, 0x28]))
            .string("s")
            .is_err());
        assert!(Reader::new(Bytes::from_static(&[0, 1, 0])).string("s").is_err());
        assert!(Reader::new(Bytes::from_static(&[0, 3, b'a'])).string("s").is_err());
        assert_eq!(Reader::new(Bytes::from_static(&[0, 1, b'a'])).string("s").unwrap(), "a");
    }
}
