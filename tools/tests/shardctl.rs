//! `shardctl log dump` and `shardctl log verify`, run as the real binary against
//! partition directories written by the real `Log`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use bytes::Bytes;
use shardline_log::{
    build_batch, parse_log_name, validate, BatchError, BatchSpec, Durability, Log, LogConfig, Offset,
    BATCH_HEADER_BYTES,
};
use shardline_testkit::run_on_shard as run;

/// Batches appended by [`write_log`].
const BATCH_COUNT: usize = 100;

/// What [`write_log`] appended: one entry per batch, in order.
#[derive(Debug, Clone)]
struct Appended {
    base_offset: Offset,
    last_offset: Offset,
    codec: &'static str,
}

/// Writes a multi-segment log: 100 batches of about 2 KiB into 64 KiB
/// segments, with 1 to 4 records each; every tenth batch claims gzip and an
/// idempotent producer, so the dump has more than one codec to show.
fn write_log(dir: &Path) -> Vec<Appended> {
    let dir = dir.to_path_buf();
    run(move || async move {
        let config = LogConfig {
            segment_bytes_max: 64 << 10,
            durability: Durability::Never,
            retention_ms_max: None,
            ..LogConfig::default()
        };
        let log = Log::open(&dir, config).await.unwrap();
        let mut appended = Vec::new();
        for i in 0..BATCH_COUNT {
            let payload: Vec<u8> = (0..2000 + i % 7 * 13).map(|j| ((i * 31 + j) % 251) as u8).collect();
            let records = (i % 4) as i32 + 1;
            let mut spec = BatchSpec::plain(records, 1_700_000_000_000 + i as i64, &payload);
            let codec = if i % 10 == 3 {
                spec.attributes = 1;
                spec.producer_id = 4242;
                spec.producer_epoch = 7;
                spec.base_sequence = i as i32;
                "gzip"
            } else {
                "none"
            };
            let info = log.append(Bytes::from(build_batch(&spec))).await.unwrap();
            appended.push(Appended {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                codec,
            });
        }
        log.close().await.unwrap();
        appended
    })
}

/// Segment files of `dir` in base-offset order.
fn segment_files(dir: &Path) -> Vec<(Offset, PathBuf)> {
    let mut segments: Vec<(Offset, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| Some((parse_log_name(path.file_name()?.to_str()?)?, path)))
        .collect();
    segments.sort();
    segments
}

/// `(position, base offset, size)` of every batch of a segment file, found by
/// walking it with the log crate's own validation up to the zero fill.
fn batches_in(path: &Path) -> Vec<(u64, Offset, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut batches = Vec::new();
    let mut position = 0;
    while let Ok(header) = validate(&bytes[position..]) {
        batches.push((position as u64, header.base_offset, header.total_bytes()));
        position += header.total_bytes();
    }
    assert!(
        bytes[position..].iter().all(|b| *b == 0),
        "a fresh log ends in zero fill"
    );
    batches
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn shardctl(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A freshly written log with at least one sealed segment in the middle.
fn healthy_log() -> (tempfile::TempDir, Vec<Appended>, Vec<(Offset, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    let appended = write_log(dir.path());
    let segments = segment_files(dir.path());
    assert!(
        segments.len() >= 3,
        "want sealed segments on both sides of one: {segments:?}"
    );
    (dir, appended, segments)
}

/// The middle batch of segment `which`, whose payload byte [`corrupt_middle_batch`] flips.
struct Damaged {
    position: u64,
    end_position: u64,
    first_offset: Offset,
    last_offset: Offset,
}

/// Flips a payload byte of the middle batch of segment `which`.
fn corrupt_middle_batch(segments: &[(Offset, PathBuf)], which: usize) -> Damaged {
    let path = &segments[which].1;
    let batches = batches_in(path);
    assert!(batches.len() >= 3, "{batches:?}");
    let middle = batches.len() / 2;
    let (position, first_offset, size) = batches[middle];
    flip_byte(path, position + BATCH_HEADER_BYTES as u64 + 100);
    Damaged {
        position,
        end_position: position + size as u64,
        first_offset,
        last_offset: Offset(batches[middle + 1].1 .0 - 1),
    }
}

#[test]
fn verify_passes_on_a_healthy_multi_segment_log() {
    let (dir, appended, segments) = healthy_log();
    let bytes: usize = segments
        .iter()
        .flat_map(|(_, path)| batches_in(path))
        .map(|(_, _, size)| size)
        .sum();
    let records: i64 = appended.iter().map(|a| a.last_offset.0 - a.base_offset.0 + 1).sum();
    let last = appended.last().unwrap().last_offset;

    let output = shardctl(&["log", "verify"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout(&output),
        format!(
            "ok: segments={} batches={BATCH_COUNT} records={records} bytes={bytes} offsets=0..{last}\n",
            segments.len()
        )
    );
    assert_eq!(stderr(&output), "");
}

/// Runs `verify` on a log with the middle batch of segment `which` damaged
/// and checks that it names that batch's positions and offsets, and counts
/// every other batch as valid.
fn assert_verify_names_the_damaged_range(which: usize) {
    let (dir, appended, segments) = healthy_log();
    let damaged = corrupt_middle_batch(&segments, which);

    let output = shardctl(&["log", "verify"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout(&output);
    let expected = format!(
        "corrupt: file={} positions={}..{} offsets={}..{} reason=CRC-32C mismatch",
        segments[which].1.display(),
        damaged.position,
        damaged.end_position,
        damaged.first_offset,
        damaged.last_offset
    );
    assert!(report.starts_with(&expected), "{report}");
    assert_eq!(report.lines().count(), 2, "one problem, then the summary: {report}");
    let last = appended.last().unwrap().last_offset;
    let summary = format!("valid: segments={} batches={} ", segments.len(), BATCH_COUNT - 1);
    assert!(report.lines().nth(1).unwrap().starts_with(&summary), "{report}");
    assert!(
        report.ends_with(&format!(" offsets=0..{last} problems=1\n")),
        "{report}"
    );
}

#[test]
fn verify_names_the_range_of_a_flipped_byte_in_a_sealed_segment() {
    assert_verify_names_the_damaged_range(1);
}

#[test]
fn verify_names_the_range_of_a_flipped_byte_in_the_active_segment() {
    let segments = segment_files(healthy_log().0.path()).len();
    assert_verify_names_the_damaged_range(segments - 1);
}

#[test]
fn verify_catches_a_flipped_base_offset_which_the_crc_does_not_cover() {
    let (dir, _, segments) = healthy_log();
    let path = &segments[1].1;
    let batches = batches_in(path);
    let (position, base_offset, _) = batches[1];
    flip_byte(path, position + 7); // lowest byte of the big-endian base offset

    let output = shardctl(&["log", "verify"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let expected = format!(
        "corrupt: file={} positions={position}..{} offsets={base_offset}..{} reason=batch starts at offset {}, expected {base_offset} (kept on disk, never served)\n",
        path.display(),
        batches[2].0,
        batches[2].1 .0 - 1,
        base_offset.0 ^ 0x5a
    );
    assert!(stdout(&output).starts_with(&expected), "{}", stdout(&output));
}

#[test]
fn verify_rejects_non_zero_bytes_after_the_data_of_the_active_segment() {
    let (dir, appended, segments) = healthy_log();
    let path = &segments.last().unwrap().1;
    let data_end: u64 = batches_in(path).iter().map(|(_, _, size)| *size as u64).sum();
    assert!(
        data_end + 500 < fs::metadata(path).unwrap().len(),
        "the active segment has zero fill"
    );
    flip_byte(path, data_end + 300);
    let next_offset = appended.last().unwrap().last_offset.0 + 1;

    let output = shardctl(&["log", "verify"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout(&output);
    let expected = format!(
        "corrupt: file={} first_bad_offset={next_offset} position={data_end} reason=",
        path.display()
    );
    assert!(report.starts_with(&expected), "{report}");
    assert!(
        report.contains(&format!(
            "reason=not a batch and not zero fill: {} (first non-zero byte at position {})\n",
            BatchError::BadLength { batch_length: 0 },
            data_end + 300
        )),
        "{report}"
    );
}

#[test]
fn verify_catches_a_missing_segment_file() {
    let (dir, _, segments) = healthy_log();
    fs::remove_file(&segments[1].1).unwrap();

    let output = shardctl(&["log", "verify"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let expected = format!(
        "corrupt: file={} first_bad_offset={} position=0 reason=segment file starts at offset {}",
        segments[2].1.display(),
        segments[1].0,
        segments[2].0
    );
    assert!(stdout(&output).starts_with(&expected), "{}", stdout(&output));
}

#[test]
fn dump_lists_every_batch_with_its_codec_and_crc() {
    let (dir, appended, segments) = healthy_log();
    let output = shardctl(&["log", "dump"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = stdout(&output);
    let batch_lines: Vec<&str> = report.lines().filter(|line| line.starts_with("  offsets=")).collect();
    assert_eq!(batch_lines.len(), BATCH_COUNT, "{report}");
    for (line, batch) in batch_lines.iter().zip(&appended) {
        let offsets = format!("  offsets={}..{} ", batch.base_offset, batch.last_offset);
        assert!(line.starts_with(&offsets), "{line} should start with {offsets}");
        assert!(line.contains(&format!(" codec={} ", batch.codec)), "{line}");
        assert!(line.ends_with(" crc=ok"), "{line}");
    }
    assert!(
        report.contains("codec=gzip producer_id=4242 producer_epoch=7 base_sequence=3 "),
        "{report}"
    );
    for (_, path) in &segments {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(report.contains(&format!("segment {name}: ")), "{report}");
    }
    let end_lines: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("  end of data"))
        .collect();
    assert_eq!(end_lines.len(), segments.len(), "{report}");
    assert!(end_lines.last().unwrap().ends_with("are zero fill"), "{report}");
    assert!(report.ends_with(" problems=0\n"), "{report}");
}

#[test]
fn dump_marks_the_flipped_batch_bad_and_goes_on() {
    let (dir, _, segments) = healthy_log();
    let damaged = corrupt_middle_batch(&segments, 1);

    let output = shardctl(&["log", "dump"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout(&output);
    let bad: Vec<&str> = report.lines().filter(|line| line.contains("crc=BAD")).collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert!(
        bad[0].starts_with(&format!("  offsets={}..", damaged.first_offset))
            && bad[0].contains(&format!(" position={} ", damaged.position)),
        "{}",
        bad[0]
    );
    assert!(
        bad[0].contains(" stored=0x") && bad[0].contains(" computed=0x"),
        "{}",
        bad[0]
    );
    let ok_lines = report.lines().filter(|line| line.ends_with(" crc=ok")).count();
    assert_eq!(ok_lines, BATCH_COUNT - 1, "the dump goes on past the bad batch");
    assert!(report.ends_with(" problems=1\n"), "{report}");
}

#[test]
fn dump_resumes_after_garbage_at_the_next_valid_batch() {
    let (dir, _, segments) = healthy_log();
    let path = &segments[1].1;
    let batches = batches_in(path);
    let (position, _, _) = batches[2];
    // A batch length of -1: the walk must search for the next batch.
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize + 8..position as usize + 12].copy_from_slice(&(-1i32).to_be_bytes());
    fs::write(path, bytes).unwrap();

    let output = shardctl(&["log", "dump"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = stdout(&output);
    assert!(
        report.contains(&format!(
            "  ! position {position} (a batch starting at offset {} was expected): ",
            batches[2].1
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "; resumed at position {}, the next valid batch (offset {})\n",
            batches[3].0, batches[3].1
        )),
        "{report}"
    );
    let ok_lines = report.lines().filter(|line| line.ends_with(" crc=ok")).count();
    assert_eq!(ok_lines, BATCH_COUNT - 1, "every other batch is listed");
    assert!(
        !report.contains("  ! segment file starts"),
        "the next file is not blamed: {report}"
    );
}

#[test]
fn a_missing_directory_exits_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-partition");
    for command in ["verify", "dump"] {
        let output = shardctl(&["log", command], &missing);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert_eq!(stdout(&output), "");
        assert_eq!(
            stderr(&output),
            format!(
                "shardctl: error: partition directory {} does not exist\n",
                missing.display()
            )
        );
    }
}

#[test]
fn an_empty_directory_and_a_usage_error_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = shardctl(&["log", "verify"], dir.path());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("no segment files"), "{output:?}");

    let output = Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(["log", "verify"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("DIR"), "{output:?}");
}
