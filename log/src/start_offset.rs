//! `log-start-offset`: the partition's low watermark set by DeleteRecords,
//! kept across restarts.
//!
//! Retention moves the log start by deleting whole segments; DeleteRecords
//! may move it into the middle of a segment. This file records that offset,
//! so records below it stay unreadable after a restart even though the
//! segment holding them is still on disk. It is replaced atomically
//! ([`crate::durable::write_file_atomically`]): after a crash it holds the
//! old or the new offset, never a torn one.
//!
//! ```text
//! log-start-offset (16 bytes, big-endian)
//! 0         4                 12        16
//! | magic   | log start       | crc32c  |
//! | "SLSO"  | i64             | u32     |
//! ```
//!
//! The CRC-32C (Castagnoli) covers bytes 0..12. A missing file means "no
//! low watermark beyond the first segment"; a damaged one is reported and
//! read the same way (records reappear, nothing is lost).
//!
//! The cleaner keeps its checkpoint (`cleaner-checkpoint`, the first offset
//! it has not yet taken into a key map, `cleaner.rs`) in the same layout
//! with its own magic, "SLCC": an [`OffsetFile`] each.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use crate::{error::LogError, offset::Offset};

/// A small file holding one offset, in the layout above.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OffsetFile {
    /// File name in the partition directory.
    pub(crate) name: &'static str,
    /// Its first four bytes.
    pub(crate) magic: [u8; 4],
    /// What a damaged one means, for the warning.
    pub(crate) damaged: &'static str,
}

/// DeleteRecords' low watermark.
pub(crate) const START_OFFSET: OffsetFile = OffsetFile {
    name: START_OFFSET_FILE,
    magic: *b"SLSO",
    damaged: "log start offset file is damaged; records below it may be served again",
};

/// File name in the partition directory.
pub(crate) const START_OFFSET_FILE: &str = "log-start-offset";

/// Bytes of the encoded file.
pub(crate) const START_OFFSET_BYTES: usize = 16;

const _: () = assert!(START_OFFSET_BYTES == 4 + 8 + 4);

/// The file's contents for `offset`.
#[cfg(test)]
pub(crate) fn encode(offset: Offset) -> [u8; START_OFFSET_BYTES] {
    encode_with(START_OFFSET.magic, offset)
}

/// Reads file contents; `None` unless they are exactly one intact record.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Option<Offset> {
    decode_with(START_OFFSET.magic, bytes)
}

fn encode_with(magic_bytes: [u8; 4], offset: Offset) -> [u8; START_OFFSET_BYTES] {
    assert!(offset.0 >= 0, "a log start offset is not negative");
    let mut out = [0u8; START_OFFSET_BYTES];
    let (covered, crc) = out.split_at_mut(12);
    let (magic, value) = covered.split_at_mut(4);
    magic.copy_from_slice(&magic_bytes);
    value.copy_from_slice(&offset.0.to_be_bytes());
    let sum = crc32c::crc32c(covered);
    crc.copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        decode_with(magic_bytes, &out),
        Some(offset),
        "an offset file reads back as written"
    );
    out
}

fn decode_with(magic: [u8; 4], bytes: &[u8]) -> Option<Offset> {
    let bytes: &[u8; START_OFFSET_BYTES] = bytes.try_into().ok()?;
    let (covered, crc) = bytes.split_at(12);
    let crc = u32::from_be_bytes(crc.try_into().ok()?);
    if covered.get(..4)? != magic || crc32c::crc32c(covered) != crc {
        return None;
    }
    let offset = i64::from_be_bytes(covered.get(4..12)?.try_into().ok()?);
    (offset >= 0).then_some(Offset(offset))
}

#[cfg(test)]
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(START_OFFSET_FILE)
}

/// The low watermark stored in `dir`: `Offset(0)` when there is none (or it
/// cannot be read, which is logged).
pub(crate) fn read(dir: &Path) -> Offset {
    read_file(dir, START_OFFSET)
}

/// Stores `offset` as the low watermark of `dir`, durably.
pub(crate) fn write(dir: &Path, offset: Offset) -> Result<(), LogError> {
    write_file(dir, START_OFFSET, offset)
}

/// The offset `kind` stores in `dir`: `Offset(0)` when there is none (or it
/// cannot be read, which is logged).
pub(crate) fn read_file(dir: &Path, kind: OffsetFile) -> Offset {
    let file = dir.join(kind.name);
    match crate::durable::read_if_exists(&file) {
        Ok(None) => Offset(0),
        Ok(Some(bytes)) => decode_with(kind.magic, &bytes).unwrap_or_else(|| {
            tracing::warn!(path = %file.display(), "{}", kind.damaged);
            Offset(0)
        }),
        Err(e) => {
            tracing::warn!(path = %file.display(), error = %e, "cannot read an offset file");
            Offset(0)
        }
    }
}

/// Stores `offset` in `kind`'s file in `dir`, durably.
pub(crate) fn write_file(dir: &Path, kind: OffsetFile, offset: Offset) -> Result<(), LogError> {
    crate::durable::write_file_atomically(&dir.join(kind.name), &encode_with(kind.magic, offset))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn round_trips_and_refuses_any_damage() {
        let bytes = encode(Offset(123_456));
        assert_eq!(decode(&bytes), Some(Offset(123_456)));
        for at in 0..START_OFFSET_BYTES {
            let mut flipped = bytes;
            flipped[at] ^= 0x04;
            assert_eq!(decode(&flipped), None, "a flipped byte {at} is refused");
        }
        assert_eq!(decode(&bytes[..15]), None);
        assert_eq!(decode(&[0u8; START_OFFSET_BYTES]), None);
    }

    #[test]
    fn a_missing_file_is_offset_zero_and_a_written_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Offset(0));
        write(dir.path(), Offset(77)).unwrap();
        assert_eq!(read(dir.path()), Offset(77));
        std::fs::write(path(dir.path()), b"garbage").unwrap();
        assert_eq!(read(dir.path()), Offset(0));
    }
}
