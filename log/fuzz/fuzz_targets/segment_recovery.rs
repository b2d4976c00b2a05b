//! Segment recovery: the input becomes the segment files of a partition
//! directory, which is then opened as after a crash and read end to end.
//!
//! Input: byte 0 is flags (bit 0: fix the CRC of every batch first; bit 1:
//! split the bytes at a batch boundary into two segments, a sealed one at
//! base 0 and an active one named after the base offset its first batch
//! header claims), the rest is segment data.
//!
//! Checks: opening either fails with an error or gives a log whose every
//! offset from start to end is served as whole, valid batches without a
//! gap, or lies in a range recovery found damaged (a read there fails
//! naming it); with one segment, every batch before the first bad one is kept
//! (recovery may cut a torn tail, never acknowledged data before it); the
//! recovered log takes an append, and after a close and reopen serves the
//! same batches plus the new one.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardline_log::{build_batch, BatchSpec, Log, Offset};
use shardline_log_fuzz::{
    batch_bounds, batch_input, read_all_around_damage, run, small_config, stored_batches, Scratch,
};

/// Bit of byte 0: write two segments instead of one.
const FLAG_TWO_SEGMENTS: u8 = 2;

fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}

/// The batches a recovery must keep in a single segment at base 0: those
/// that validate as stored batches with offsets running on from 0, up to
/// the first that does not.
fn kept_prefix_bytes(bytes: &[u8]) -> usize {
    let mut next = Offset(0);
    let mut end = 0;
    for (header, range) in stored_batches(bytes) {
        if header.base_offset != next {
            break;
        }
        next = header.next_offset();
        end = range.end;
    }
    end
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, bytes)) = batch_input(data) else {
        return;
    };
    let scratch = Scratch::new("log");
    let dir = scratch.path();
    let bounds = batch_bounds(&bytes);
    let split = if flags & FLAG_TWO_SEGMENTS != 0 && bounds.len() >= 2 {
        let at = bounds[bounds.len() / 2].0;
        let second_base = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        (second_base > 0).then_some((at, second_base))
    } else {
        None
    };
    match split {
        Some((at, second_base)) => {
            std::fs::write(dir.join(segment_name(0)), &bytes[..at]).expect("write segment");
            std::fs::write(dir.join(segment_name(second_base)), &bytes[at..]).expect("write segment");
        }
        None => std::fs::write(dir.join(segment_name(0)), &bytes).expect("write segment"),
    }
    let must_keep = split.is_none().then(|| kept_prefix_bytes(&bytes));
    run(async move {
        let Ok(log) = Log::open(dir, small_config()).await else {
            return;
        };
        let (stored, damaged) = read_all_around_damage(&log);
        if let Some(must_keep) = must_keep {
            let served: Vec<u8> = stored.concat();
            assert!(
                served.len() >= must_keep && served[..must_keep] == bytes[..must_keep],
                "recovery dropped valid batches before the first bad one ({} of {must_keep} bytes kept)",
                served.len()
            );
        }
        let end = log.log_end();
        let extra = build_batch(&BatchSpec::plain(2, 1_700_000_000_000, b"after recovery"));
        let info = log
            .append(Bytes::from(extra.clone()))
            .await
            .expect("a recovered log takes appends");
        assert_eq!(info.base_offset, end);
        log.close().await.expect("close");
        drop(log);

        let log = Log::open(dir, small_config()).await.expect("reopen a recovered log");
        let (again, damaged_again) = read_all_around_damage(&log);
        assert_eq!(damaged_again, damaged, "reopening changed what is found damaged");
        assert_eq!(again.len(), stored.len() + 1, "reopening changed what is served");
        assert_eq!(again[..stored.len()], stored[..]);
        let mut expected_extra = extra;
        shardline_log::set_base_offset(&mut expected_extra, end);
        assert_eq!(again[stored.len()], expected_extra);
        log.close().await.expect("close");
    });
    drop(scratch);
});
