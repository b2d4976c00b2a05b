//! The sparse index file of a sealed segment (`<base>.index`, 24-byte
//! entries, each with its own CRC-32C; drawn in log/src/index.rs).
//!
//! A fixed, valid partition directory is written — a sealed segment of 60
//! batches at base 0 and an active segment after it — with the input as the
//! sealed segment's index file. Byte 0 is flags (bit 0: recompute the CRC of
//! every whole 24-byte entry first, so entries that lie about offsets and
//! positions reach the decoder's other checks); the rest is the index file.
//!
//! Checks: the data is intact, so whatever the index says, the log opens,
//! serves exactly the batches written, finds the batch holding every
//! offset, answers every time lookup as a scan of all batches would, and
//! does all of that again after a close and reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_log::{Log, Offset, TimestampOffset};
use shardline_log_fuzz::{index_case, read_all, run, segment_file, small_config, Scratch, FLAG_FIX_CRC};

/// Bytes of one index entry, and of its checksummed part.
const ENTRY_BYTES: usize = 24;
const ENTRY_CHECKED_BYTES: usize = 20;

/// Every offset of every batch is found in the batch that holds it.
fn check_offset_lookups(log: &Log, batches: &[Vec<u8>]) {
    for batch in batches {
        let header = shardline_log::validate(batch).expect("written batches are valid");
        for offset in header.base_offset.0..=header.last_offset().0 {
            let read = log
                .read(Offset(offset), 1, log.log_end())
                .unwrap_or_else(|error| panic!("read at {offset}: {error}"));
            let first = read.chunks.first().expect("a read inside the log returns a batch");
            let served = shardline_log::validate(first).expect("served batches are valid");
            assert_eq!(
                served.base_offset, header.base_offset,
                "offset {offset} found in the wrong batch"
            );
        }
    }
}

/// Time lookups agree with a scan of every batch: the first batch whose
/// max timestamp is at or after the time (one timestamp per batch here, so
/// its first record, read unless the batch is compressed).
fn check_time_lookups(log: &Log, batches: &[Vec<u8>]) {
    let headers: Vec<_> = batches
        .iter()
        .map(|batch| shardline_log::validate(batch).expect("valid"))
        .collect();
    for timestamp_ms in (990..1_210).chain([5_000, 5_001, i64::MIN, i64::MAX]) {
        let expected = headers
            .iter()
            .find(|header| header.max_timestamp_ms >= timestamp_ms)
            .map(|header| TimestampOffset {
                offset: header.base_offset,
                timestamp_ms: header.max_timestamp_ms,
                exact: header.codec() == Some(shardline_log::Codec::None),
            });
        let found = log.offset_for_timestamp(timestamp_ms).expect("time lookup");
        assert_eq!(found, expected, "time lookup for {timestamp_ms}");
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, index)) = input.split_first() else {
        return;
    };
    let mut index = index.to_vec();
    if flags & FLAG_FIX_CRC != 0 {
        for entry in index.chunks_exact_mut(ENTRY_BYTES) {
            let crc = crc32c::crc32c(&entry[..ENTRY_CHECKED_BYTES]);
            entry[ENTRY_CHECKED_BYTES..].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let data = index_case();
    let scratch = Scratch::new("log");
    let dir = scratch.path();
    std::fs::write(segment_file(dir, Offset(0), "log"), data.sealed.concat()).expect("write segment");
    std::fs::write(segment_file(dir, Offset(0), "index"), &index).expect("write index");
    std::fs::write(segment_file(dir, data.active_base, "log"), &data.active).expect("write segment");
    let mut all = data.sealed.clone();
    all.push(data.active.clone());
    run(async {
        for _ in 0..2 {
            let log = Log::open(dir, small_config())
                .await
                .expect("intact data must open whatever its index says");
            assert_eq!(read_all(&log), all, "served batches differ from the written ones");
            check_offset_lookups(&log, &all);
            check_time_lookups(&log, &all);
            log.close().await.expect("close");
        }
    });
});
