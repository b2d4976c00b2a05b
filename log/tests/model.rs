//! Model test: random sequences of append, roll, read, flush, truncate,
//! retention and crash-then-recover, checked against an in-memory model.
//!
//! A crash drops the log without a sync and then damages the tail of the last
//! segment file at a random point past the durable data: it truncates the file
//! there or writes garbage there. After recovery every batch the model says
//! was durable must read back byte for byte, whatever survived past it must be a
//! prefix of what was appended, and nothing else may be served.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 1000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{os::unix::fs::FileExt, path::Path, rc::Rc};

use bytes::Bytes;
use common::{read_all, run, ManualClock};
use proptest::prelude::*;
use shardline_log::{
    build_batch, parse_log_name, set_base_offset, validate_header_only, BatchSpec, Durability, Log, LogConfig,
    LogError, Offset,
};

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the file at this fraction of the damageable range.
    Truncate(u16),
    /// Overwrite `len` bytes derived from `seed` at this fraction.
    Garbage { at: u16, len: u16, seed: u8 },
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: Vec<(i32, u16)>,
        timestamp_step_ms: u16,
    },
    Roll,
    Read {
        at: u16,
        bytes_max: u16,
    },
    Flush,
    Truncate {
        at: u16,
    },
    Retention {
        advance_ms: u32,
    },
    Crash(Damage),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((1i32..6, 0u16..3000), 1..4), 0u16..500)
            .prop_map(|(batches, timestamp_step_ms)| Op::Append { batches, timestamp_step_ms }),
        1 => Just(Op::Roll),
        3 => (any::<u16>(), 1u16..20_000).prop_map(|(at, bytes_max)| Op::Read { at, bytes_max }),
        1 => Just(Op::Flush),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => (0u32..20_000).prop_map(|advance_ms| Op::Retention { advance_ms }),
        2 => prop_oneof![
            any::<u16>().prop_map(Damage::Truncate),
            (any::<u16>(), 1u16..300, any::<u8>()).prop_map(|(at, len, seed)| Damage::Garbage { at, len, seed }),
        ].prop_map(Op::Crash),
    ]
}

/// What the log must hold: batches (with assigned offsets) from the start.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<(Offset, Offset, Vec<u8>)>,
    start: Offset,
    end: Offset,
    durable: Offset,
}

impl Model {
    fn truncate(&mut self, end: Offset) {
        self.batches.retain(|(base, _, _)| *base < end);
        assert!(
            self.batches.last().is_none_or(|(_, next, _)| *next == end),
            "cut must fall on a batch boundary"
        );
        self.end = end;
        self.durable = self.durable.min(end);
    }

    fn drop_before(&mut self, start: Offset) {
        assert!(start >= self.start, "log start went backwards");
        assert!(
            start == self.end || self.batches.iter().any(|(base, _, _)| *base == start),
            "log start {start} is not a batch boundary"
        );
        self.batches.retain(|(base, _, _)| *base >= start);
        self.start = start;
    }

    fn stored(&self) -> Vec<Vec<u8>> {
        self.batches.iter().map(|(_, _, b)| b.clone()).collect()
    }
}

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 << 10,
        index_interval_bytes: 512,
        durability,
        retention_ms_max: Some(30_000),
        retention_bytes_max: Some(48 << 10),
        write_bytes_max: 8 << 10,
        ..LogConfig::default()
    }
}

/// Damages the last segment file somewhere at or after the first non-durable batch.
fn damage_tail(dir: &Path, durable: Offset, damage: &Damage) {
    let last = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            parse_log_name(&name).map(|base| (base, dir.join(name)))
        })
        .max()
        .unwrap();
    let bytes = std::fs::read(&last.1).unwrap();
    // Walk to the first batch that is not durable, and to the end of the data.
    let mut position = 0usize;
    let mut durable_position = None;
    while let Ok(header) = validate_header_only(&bytes[position..]) {
        if durable_position.is_none() && header.next_offset() > durable {
            durable_position = Some(position);
        }
        position += header.total_bytes();
    }
    let data_end = position;
    let from = durable_position.unwrap_or(data_end);
    // Damage lands anywhere from there to a little past the data.
    let span = (data_end - from) + 256;
    let file = std::fs::OpenOptions::new().write(true).open(&last.1).unwrap();
    match *damage {
        Damage::Truncate(at) => {
            let cut = from + span * usize::from(at) / usize::from(u16::MAX);
            file.set_len(cut as u64).unwrap();
        }
        Damage::Garbage { at, len, seed } => {
            let at = from + span * usize::from(at) / usize::from(u16::MAX);
            let garbage: Vec<u8> = (0..len)
                .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8) | 1)
                .collect();
            file.write_all_at(&garbage, at as u64).unwrap();
        }
    }
}

fn check_all(log: &Log, model: &Model) {
    assert_eq!(log.log_start(), model.start, "log start");
    assert_eq!(log.log_end(), model.end, "log end");
    assert!(log.durable_end() >= model.durable, "durable end went backwards");
    assert_eq!(read_all(log), model.stored(), "stored batches");
}

async fn run_case(dir: std::path::PathBuf, durability: Durability, ops: Vec<Op>) {
    let clock = Rc::new(ManualClock::default());
    clock.0.set(1_000_000);
    let mut log = Log::open_with_clock(&dir, config(durability), clock.clone())
        .await
        .unwrap();
    let mut model = Model::default();
    let mut timestamp_ms = 1_000_000i64;
    for op in ops {
        match op {
            Op::Append {
                batches,
                timestamp_step_ms,
            } => {
                timestamp_ms += i64::from(timestamp_step_ms);
                let mut records = Vec::new();
                let mut expected = Vec::new();
                let mut next = model.end;
                for (count, payload_bytes) in batches {
                    let payload: Vec<u8> = (0..payload_bytes)
                        .map(|i| (i as u8).wrapping_mul(7) ^ count as u8)
                        .collect();
                    let mut batch = build_batch(&BatchSpec::plain(count, timestamp_ms, &payload));
                    records.extend_from_slice(&batch);
                    set_base_offset(&mut batch, next);
                    let base = next;
                    next = Offset(next.0 + i64::from(count));
                    expected.push((base, next, batch));
                }
                let info = log.append(Bytes::from(records)).await.unwrap();
                assert_eq!(info.base_offset, model.end);
                assert_eq!(info.last_offset, Offset(next.0 - 1));
                model.batches.extend(expected);
                model.end = next;
                if durability == Durability::Always {
                    assert!(info.durable);
                    model.durable = model.end;
                }
            }
            Op::Roll => {
                log.roll().await.unwrap();
                model.durable = model.end; // sealing syncs
            }
            Op::Read { at, bytes_max } => {
                let span = (model.end.0 - model.start.0) as u64;
                let from = Offset(model.start.0 + (span * u64::from(at) / u64::from(u16::MAX)) as i64);
                let read = log.read(from, usize::from(bytes_max), log.log_end()).unwrap();
                let got: Vec<u8> = read.chunks.iter().flat_map(|c| c.iter().copied()).collect();
                if from == model.end {
                    assert!(got.is_empty());
                    continue;
                }
                let first = model
                    .batches
                    .iter()
                    .position(|(b, n, _)| *b <= from && from < *n)
                    .unwrap();
                let mut expected = Vec::new();
                let mut next = from;
                for (_, n, bytes) in &model.batches[first..] {
                    if !expected.is_empty() && expected.len() + bytes.len() > usize::from(bytes_max) {
                        break;
                    }
                    expected.extend_from_slice(bytes);
                    next = *n;
                }
                assert_eq!(got, expected, "read of {from} with {bytes_max} bytes");
                assert_eq!(read.next_offset, next);
                if from < model.start {
                    unreachable!();
                }
            }
            Op::Flush => {
                assert_eq!(log.flush().await.unwrap(), model.end);
                model.durable = model.end;
            }
            Op::Truncate { at } => {
                let span = (model.end.0 - model.start.0) as u64;
                let target = Offset(model.start.0 + (span * u64::from(at) / u64::from(u16::MAX)) as i64);
                let new_end = log.truncate_to(target).await.unwrap();
                let expected = model
                    .batches
                    .iter()
                    .find(|(b, n, _)| *b <= target && target < *n)
                    .map_or(model.end, |(b, _, _)| *b);
                assert_eq!(new_end, expected.min(model.end));
                model.truncate(new_end);
                model.durable = model.end; // truncation syncs
                if model.end < model.start {
                    model.start = model.end;
                }
            }
            Op::Retention { advance_ms } => {
                clock.0.set(clock.0.get() + i64::from(advance_ms));
                log.apply_retention().await.unwrap();
                model.drop_before(log.log_start());
            }
            Op::Crash(damage) => {
                let before_end = model.end;
                drop(log);
                damage_tail(&dir, model.durable, &damage);
                log = Log::open_with_clock(&dir, config(durability), clock.clone())
                    .await
                    .unwrap();
                let recovered = log.log_end();
                assert!(
                    recovered >= model.durable,
                    "lost durable data: recovered {recovered}, durable {}",
                    model.durable
                );
                assert!(recovered <= before_end, "recovered more than was appended");
                model.truncate(recovered);
                model.durable = recovered; // recovery syncs what it keeps
            }
        }
        check_all(&log, &model);
    }
    // Reads outside the log are errors, not data.
    assert!(matches!(
        log.read(Offset(model.end.0 + 1), 100, log.log_end()),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_across_crashes(
        always in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let durability = if always { Durability::Always } else { Durability::Never };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || run_case(path, durability, ops));
    }
}
