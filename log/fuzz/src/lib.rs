//! Helpers shared by the log's fuzz targets: one glommio executor per
//! process, a fresh scratch directory per input (`Scratch`, from
//! `fuzz-support`, which also enforces libFuzzer's malloc limit), checksum
//! fix-up (so the fuzzer gets past the CRCs it cannot forge), and the
//! checks every read of a log must pass. Only `shardline-log`'s public API
//! is used.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
pub use shardline_fuzz_support::Scratch;
use shardline_log::{
    build_batch, compute_crc, set_base_offset, validate, validate_stored, BadRange, BatchError, BatchHeader, BatchSpec,
    Durability, Log, LogConfig, LogError, Offset, BATCH_HEADER_BYTES,
};

/// Bit of an input's first byte: recompute the CRC of every batch (or index
/// entry) before use, so the input reaches the code behind the checksum.
pub const FLAG_FIX_CRC: u8 = 1;

/// Bytes of the batch header before the length field's coverage (base
/// offset and length), as `batch.rs` draws it.
const LOG_OVERHEAD_BYTES: usize = 12;
/// Where the CRC field of a batch header is, and where its coverage starts.
const CRC_AT: usize = 17;
const CRC_COVERAGE_FROM: usize = 21;

thread_local! {
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::new(Placement::Unbound)
        // Small registered-buffer pool: stays under the 8 MiB memlock limit.
        .io_memory(512 << 10)
        .make()
        .expect("glommio executor for the fuzz target");
}

/// Runs `future` to completion on this thread's glommio executor (one per
/// process: making an io_uring executor per input would dominate the run).
pub fn run<T>(future: impl Future<Output = T>) -> T {
    EXECUTOR.with(|executor| executor.run(future))
}

/// Settings that make the paths under test happen on small inputs: an
/// index entry every 128 bytes, segments of 64 KiB, no fsync waits.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 128,
        durability: Durability::Never,
        retention_ms_max: None,
        ..LogConfig::default()
    }
}

/// Where each batch of a run of batches starts and ends, by their length
/// fields alone (no other check), as far as whole batches go.
pub fn batch_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let mut at = 0;
    while let Some(field) = bytes.get(at + 8..at + LOG_OVERHEAD_BYTES) {
        let length = i32::from_be_bytes(field.try_into().expect("four bytes"));
        let Ok(length) = usize::try_from(length) else { break };
        let end = at + LOG_OVERHEAD_BYTES + length;
        if length + LOG_OVERHEAD_BYTES < BATCH_HEADER_BYTES || end > bytes.len() {
            break;
        }
        bounds.push((at, end));
        at = end;
    }
    bounds
}

/// Splits an input into its flag byte and its batches, with the batches'
/// CRCs fixed when the flag asks for it ([`FLAG_FIX_CRC`]).
pub fn batch_input(data: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (&flags, rest) = data.split_first()?;
    let mut bytes = rest.to_vec();
    if flags & FLAG_FIX_CRC != 0 {
        fix_batch_crcs(&mut bytes);
    }
    Some((flags, bytes))
}

/// Recomputes the CRC of every whole batch in `bytes` (see [`batch_bounds`]).
pub fn fix_batch_crcs(bytes: &mut [u8]) {
    for (start, end) in batch_bounds(bytes) {
        let batch = &mut bytes[start..end];
        let crc = compute_crc(batch).expect("a whole batch header");
        batch[CRC_AT..CRC_COVERAGE_FROM].copy_from_slice(&crc.to_be_bytes());
    }
}

/// The batches at the start of `bytes` that `validate` accepts (what an
/// append takes), in order, with their byte ranges; stops at the first it
/// refuses.
pub fn valid_batches(bytes: &[u8]) -> Vec<(BatchHeader, std::ops::Range<usize>)> {
    batches_passing(bytes, validate)
}

/// As [`valid_batches`] with `validate_stored` (what recovery keeps: a
/// stored batch may be compacted, with fewer records than offsets).
pub fn stored_batches(bytes: &[u8]) -> Vec<(BatchHeader, std::ops::Range<usize>)> {
    batches_passing(bytes, validate_stored)
}

fn batches_passing(
    bytes: &[u8],
    check: fn(&[u8]) -> Result<BatchHeader, BatchError>,
) -> Vec<(BatchHeader, std::ops::Range<usize>)> {
    let mut batches = Vec::new();
    let mut at = 0;
    while let Ok(header) = check(&bytes[at..]) {
        let end = at + header.total_bytes();
        batches.push((header, at..end));
        at = end;
    }
    batches
}

/// Every stored batch from the log start to its end, checked on the way:
/// each read makes progress, everything served is a whole batch that
/// passes `validate_stored` (CRC included), and offsets run on without a gap from
/// the log start to the log end.
pub fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let (batches, damaged) = read_all_around_damage(log);
    assert!(damaged.is_empty(), "no damaged range expected here: {damaged:?}");
    batches
}

/// As [`read_all`], but offsets in a range recovery found damaged are
/// skipped: a read there must fail naming a range that holds the offset
/// asked for (and at least one offset), and reading goes on after it.
/// Returns the batches and the ranges skipped, in order.
pub fn read_all_around_damage(log: &Log) -> (Vec<Vec<u8>>, Vec<BadRange>) {
    let mut batches = Vec::new();
    let mut damaged = Vec::new();
    let end = log.log_end();
    let mut from = log.log_start();
    while from < end {
        let read = match log.read(from, 1 << 20, end) {
            Ok(read) => read,
            Err(LogError::CorruptRange { range, .. }) => {
                assert!(range.holds(from), "a damaged range {range:?} named for {from:?}");
                assert!(range.next_offset <= end, "a damaged range {range:?} past the log end");
                from = range.next_offset;
                damaged.push(range);
                continue;
            }
            Err(error) => panic!("read at {from:?} inside [{:?}, {end:?}): {error}", log.log_start()),
        };
        assert!(read.next_offset > from, "a read at {from:?} made no progress");
        let mut expected = from;
        for chunk in &read.chunks {
            let mut at = 0;
            while at < chunk.len() {
                let header =
                    validate_stored(&chunk[at..]).unwrap_or_else(|error| panic!("served a bad batch: {error}"));
                assert_eq!(header.base_offset, expected, "served offsets must run on");
                expected = header.next_offset();
                batches.push(chunk[at..at + header.total_bytes()].to_vec());
                at += header.total_bytes();
            }
        }
        assert_eq!(
            expected, read.next_offset,
            "next_offset must follow the last batch served"
        );
        from = read.next_offset;
    }
    assert_eq!(from, end, "reading ends at the log end");
    (batches, damaged)
}

/// `batch` with its broker-owned fields (base offset, leader epoch) zeroed,
/// to compare what was stored with what was sent.
pub fn without_broker_fields(batch: &[u8]) -> Vec<u8> {
    let mut copy = batch.to_vec();
    shardline_log::set_base_offset(&mut copy, Offset(0));
    shardline_log::set_leader_epoch(&mut copy, 0);
    copy
}

/// `<base>.log` or `<base>.index` in `dir`, named as the log names them.
pub fn segment_file(dir: &Path, base: Offset, extension: &str) -> PathBuf {
    dir.join(format!("{:020}.{extension}", base.0))
}

/// Batches in the sealed segment of [`index_case`].
const INDEX_CASE_SEALED_BATCHES: usize = 60;

/// The partition directory the `index_file` target writes around each
/// input: a sealed segment's batches (offsets assigned from 0) and the
/// active segment's one batch after them.
pub struct IndexCase {
    /// The sealed segment's batches, in order.
    pub sealed: Vec<Vec<u8>>,
    /// The active segment's batch.
    pub active: Vec<u8>,
    /// Base offset of the active segment.
    pub active_base: Offset,
}

/// The one [`IndexCase`] (built once).
pub fn index_case() -> &'static IndexCase {
    static CASE: OnceLock<IndexCase> = OnceLock::new();
    CASE.get_or_init(|| {
        let mut next = Offset(0);
        let mut sealed = Vec::new();
        for i in 0..INDEX_CASE_SEALED_BATCHES {
            let records = 1 + (i % 4) as i32;
            // Timestamps that go up and down, so the time index matters.
            let timestamp_ms = 1_000 + ((i * 7_919) % 200) as i64;
            let payload = vec![i as u8; (i * 37) % 300];
            let mut batch = build_batch(&BatchSpec::plain(records, timestamp_ms, &payload));
            set_base_offset(&mut batch, next);
            next = Offset(next.0 + i64::from(records));
            sealed.push(batch);
        }
        let mut active = build_batch(&BatchSpec::plain(1, 5_000, b"active"));
        set_base_offset(&mut active, next);
        IndexCase {
            sealed,
            active,
            active_base: next,
        }
    })
}
