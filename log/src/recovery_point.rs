//! `recovery-point`: how far into the active segment a partition's data is
//! known to be fsynced, so recovery can tell a torn tail from damage.
//!
//! After a power cut, the bytes past the last completed fdatasync can come
//! back in any mix (write-back is not in order, and a page can be torn at
//! sector granularity): a torn batch followed by a whole one is normal there,
//! and is a torn tail to cut. Before that point the bytes were durable, so a
//! bad batch followed by valid ones is damage in the middle (bit rot, a bad
//! sector) and what follows it is kept. The recovery point is that boundary,
//! as Kafka's recovery-point checkpoint is. It is written at most every
//! `RECOVERY_POINT_INTERVAL` after a sync of the active segment, when the
//! log closes, and before a truncation lowers it; it may lag the durable
//! end, which only widens the region treated as a possible torn tail.
//!
//! ```text
//! recovery-point (24 bytes, big-endian, overwritten in place)
//! 0         4                 12                20        24
//! | magic   | segment base    | synced position | crc32c  |
//! | "SLRP"  | i64             | u64             | u32     |
//! ```
//!
//! `segment base` names the segment the position is in; `synced position`
//! is a byte position in that segment's file up to which every byte was
//! fsynced. The CRC-32C (Castagnoli) covers bytes 0..20. A missing, torn or
//! unreadable file means "nothing known": the active segment is then
//! treated as unsynced from its start (the safe reading after a power cut).

use std::path::{Path, PathBuf};

use crate::offset::{Offset, Position};

/// File name in the partition directory.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";

const MAGIC: [u8; 4] = *b"SLRP";

/// Bytes of the encoded file.
pub(crate) const RECOVERY_POINT_BYTES: usize = 24;

const _: () = assert!(RECOVERY_POINT_BYTES == 4 + 8 + 8 + 4);

/// How far a segment's data is known fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// The segment the position is in (its base offset).
    pub segment_base: Offset,
    /// Every byte of that segment's file before this was fsynced.
    pub synced: Position,
}

impl RecoveryPoint {
    /// The 24-byte file contents.
    pub(crate) fn encode(&self) -> [u8; RECOVERY_POINT_BYTES] {
        let mut out = [0u8; RECOVERY_POINT_BYTES];
        let (magic, rest) = out.split_at_mut(4);
        magic.copy_from_slice(&MAGIC);
        let (base, rest) = rest.split_at_mut(8);
        base.copy_from_slice(&self.segment_base.0.to_be_bytes());
        let (synced, crc) = rest.split_at_mut(8);
        synced.copy_from_slice(&self.synced.0.to_be_bytes());
        let covered = crc32c::crc32c(
            &[
                &MAGIC[..],
                &self.segment_base.0.to_be_bytes(),
                &self.synced.0.to_be_bytes(),
            ]
            .concat(),
        );
        crc.copy_from_slice(&covered.to_be_bytes());
        let decoded = RecoveryPoint::decode(&out);
        assert_eq!(decoded, Some(*self), "a recovery point reads back as written");
        out
    }

    /// Reads file contents; `None` unless they are exactly one intact record
    /// (bytes from disk: never trusted further).
    pub fn decode(bytes: &[u8]) -> Option<RecoveryPoint> {
        let bytes: &[u8; RECOVERY_POINT_BYTES] = bytes.try_into().ok()?;
        let (covered, crc) = bytes.split_at(20);
        let crc = u32::from_be_bytes(crc.try_into().ok()?);
        if covered.get(..4)? != MAGIC || crc32c::crc32c(covered) != crc {
            return None;
        }
        let segment_base = Offset(i64::from_be_bytes(covered.get(4..12)?.try_into().ok()?));
        let synced = Position(u64::from_be_bytes(covered.get(12..20)?.try_into().ok()?));
        (segment_base.0 >= 0).then_some(RecoveryPoint { segment_base, synced })
    }

    /// Where every byte of the segment at `base` is known fsynced: up to the
    /// point in that segment, nothing in a later one, all of an earlier one.
    pub fn synced_in(point: Option<RecoveryPoint>, base: Offset) -> Position {
        match point {
            Some(point) if point.segment_base == base => point.synced,
            Some(point) if point.segment_base > base => Position(u64::MAX),
            _ => Position(0),
        }
    }
}

/// The recovery point file of the partition directory `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(RECOVERY_POINT_FILE)
}

/// The recovery point stored in `dir`, if there is an intact one.
pub fn read(dir: &Path) -> Option<RecoveryPoint> {
    std::fs::read(path(dir)).ok().as_deref().and_then(RecoveryPoint::decode)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn round_trips_and_refuses_any_damage() {
        let point = RecoveryPoint {
            segment_base: Offset(1_000),
            synced: Position(4_096),
        };
        let bytes = point.encode();
        assert_eq!(RecoveryPoint::decode(&bytes), Some(point));
        for at in 0..RECOVERY_POINT_BYTES {
            let mut flipped = bytes;
            flipped[at] ^= 0x10;
            assert_eq!(RecoveryPoint::decode(&flipped), None, "a flipped byte {at} is refused");
        }
        assert_eq!(RecoveryPoint::decode(&bytes[..23]), None);
        assert_eq!(RecoveryPoint::decode(&[0u8; RECOVERY_POINT_BYTES]), None);
    }

    #[test]
    fn a_point_covers_its_segment_up_to_it_and_earlier_segments_whole() {
        let point = Some(RecoveryPoint {
            segment_base: Offset(100),
            synced: Position(77),
        });
        assert_eq!(RecoveryPoint::synced_in(point, Offset(100)), Position(77));
        assert_eq!(RecoveryPoint::synced_in(point, Offset(0)), Position(u64::MAX));
        assert_eq!(RecoveryPoint::synced_in(point, Offset(200)), Position(0));
        assert_eq!(RecoveryPoint::synced_in(None, Offset(0)), Position(0));
    }
}
