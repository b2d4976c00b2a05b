//! Command-line flags, their bounds, and the durability modes under test.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use shardline_log::Durability;

use crate::error::BenchError;

/// Every record is 1 KiB: a batch of N KiB holds N records.
pub(crate) const RECORD_BYTES: u64 = 1024;
/// `interval` mode: fdatasync at least this often (ms) ...
pub(crate) const INTERVAL_MS: u64 = 10;
/// ... and after at most this many unsynced bytes (4 MiB).
pub(crate) const INTERVAL_BYTES: u64 = 4 << 20;
/// Largest batch accepted: 64 MiB stays far below the 128 MiB segment and
/// keeps one buffer copy per append cheap next to the machine's RAM.
const BATCH_BYTES_MAX: u64 = 64 << 20;
/// Appends in flight: at most the log's own queue bound (`pending_appends_max`).
const CONCURRENCY_MAX: usize = 1024;
/// Rounds per case: more only splits the same budget finer.
const ROUNDS_MAX: u32 = 16;
/// Time cap of one case: 10 minutes is already longer than any sane run.
const SECONDS_PER_CASE_MAX: f64 = 600.0;
/// Bytes budget of one side of one case: 16 GiB keeps a typo from filling the disk.
const BYTES_PER_CASE_MAX: u64 = 16 << 30;

/// Partition-log append throughput and latency against a raw io_uring
/// sequential write + fdatasync loop on the same disk.
#[derive(Debug, Clone, Parser)]
#[command(name = "log-bench", version)]
pub(crate) struct Args {
    /// Scratch directory on the disk under test; emptied before and removed after the run.
    /// It must be new, or hold only what an earlier log-bench left there.
    #[arg(long, default_value = "perf/out/log-bench")]
    pub(crate) dir: PathBuf,

    /// Batch sizes as record payload bytes (1 KiB records, so a multiple of 1 KiB), comma-separated.
    /// Suffixes K/KiB, M/MiB, G/GiB are binary. Each batch adds a 61-byte header.
    #[arg(long, value_delimiter = ',', default_value = "16384,1048576", value_parser = parse_size)]
    pub(crate) batch_bytes: Vec<u64>,

    /// Durability modes: always (fdatasync per append), interval (every 10 ms or 4 MiB), never.
    #[arg(long, value_delimiter = ',', default_value = "always,interval,never", value_parser = parse_mode)]
    pub(crate) modes: Vec<Mode>,

    /// Appends in flight at once (the log coalesces them into one write and, in
    /// `always` mode, one fdatasync).
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,

    /// Bytes each side (log, raw) writes per case in `interval` and `never` modes.
    /// The default, 512 MiB, makes the log roll its 128 MiB segment four times.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub(crate) bytes_per_case: u64,

    /// Bytes each side writes per case in `always` mode (an fdatasync per write is slow).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub(crate) always_bytes_per_case: u64,

    /// Time cap per side per case, in seconds (each round gets its share); a side
    /// that reaches it stops early and its rate is computed over what it wrote.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds_per_case: f64,

    /// Each case is split into this many rounds; rounds alternate log→raw and
    /// raw→log so drift in the disk or background load hits both sides alike.
    #[arg(long, default_value_t = 8)]
    pub(crate) rounds: u32,

    /// Segment size of the log (default: the log's own, 128 MiB). Raise it past
    /// the bytes per case to measure the log without segment rolls.
    #[arg(long, value_parser = parse_size)]
    pub(crate) segment_bytes: Option<u64>,

    /// CPU the executor is pinned to, or `unbound`.
    #[arg(long, default_value = "0")]
    pub(crate) cpu: CpuChoice,

    /// io_uring registered-buffer memory of the executor, in bytes (memlock is 8 MiB here).
    #[arg(long, default_value = "512KiB", value_parser = parse_size)]
    pub(crate) io_memory: u64,

    /// Skip the O_DIRECT (DmaFile) context figure of `always` mode.
    #[arg(long)]
    pub(crate) no_direct: bool,

    /// Also write every figure, with the machine stamp, as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

impl Args {
    /// Checks every bound, so no loop can run unbounded and no flag is silently odd.
    pub(crate) fn validate(&self) -> Result<(), BenchError> {
        let bad = |message: String| Err(BenchError::Config(message));
        if self.batch_bytes.is_empty() || self.modes.is_empty() {
            return bad("--batch-bytes and --modes need at least one value".into());
        }
        for &bytes in &self.batch_bytes {
            if bytes == 0 || bytes % RECORD_BYTES != 0 || bytes > BATCH_BYTES_MAX {
                return bad(format!(
                    "--batch-bytes {bytes}: must be a positive multiple of {RECORD_BYTES} (1 KiB records), at most {BATCH_BYTES_MAX}"
                ));
            }
        }
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return bad(format!("--concurrency must be 1..={CONCURRENCY_MAX}"));
        }
        if self.rounds == 0 || self.rounds > ROUNDS_MAX {
            return bad(format!("--rounds must be 1..={ROUNDS_MAX}"));
        }
        if !(self.seconds_per_case > 0.0 && self.seconds_per_case <= SECONDS_PER_CASE_MAX) {
            return bad(format!("--seconds-per-case must be in (0, {SECONDS_PER_CASE_MAX}]"));
        }
        for (flag, bytes) in [
            ("--bytes-per-case", self.bytes_per_case),
            ("--always-bytes-per-case", self.always_bytes_per_case),
        ] {
            if bytes == 0 || bytes > BYTES_PER_CASE_MAX {
                return bad(format!("{flag} must be 1..={BYTES_PER_CASE_MAX}"));
            }
        }
        if let Some(bytes) = self.segment_bytes {
            let smallest =
                self.batch_bytes.iter().max().copied().unwrap_or(0) + shardline_log::BATCH_HEADER_BYTES as u64;
            if bytes < smallest || bytes > u64::from(u32::MAX) {
                return bad(format!(
                    "--segment-bytes must hold the largest batch ({smallest} bytes) and be at most 4 GiB"
                ));
            }
        }
        if self.io_memory < 64 << 10 || self.io_memory > 1 << 30 {
            return bad("--io-memory must be 64 KiB..=1 GiB".into());
        }
        Ok(())
    }

    /// Bytes one side writes in a case of `mode`.
    pub(crate) fn bytes_for(&self, mode: Mode) -> u64 {
        match mode {
            Mode::Always => self.always_bytes_per_case,
            Mode::Interval | Mode::Never => self.bytes_per_case,
        }
    }

    /// Time cap of one side in one round.
    pub(crate) fn round_time_cap(&self) -> Duration {
        Duration::from_secs_f64(self.seconds_per_case / f64::from(self.rounds))
    }
}

/// A durability mode, applied alike to the log and to the raw loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// fdatasync after every write; an append resolves after it.
    Always,
    /// fdatasync every `INTERVAL_MS` or `INTERVAL_BYTES`, whichever comes first.
    Interval,
    /// No fdatasync while writing (one, untimed, at the end of a side).
    Never,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Always => "always",
            Mode::Interval => "interval",
            Mode::Never => "never",
        }
    }

    /// The fsync policy in words, for the header legend and the JSON.
    pub(crate) fn fsync_policy(self) -> String {
        match self {
            Mode::Always => "fdatasync after every write (log: group commit per write)".into(),
            Mode::Interval => format!(
                "fdatasync every {INTERVAL_MS} ms or {} MiB written, whichever first",
                INTERVAL_BYTES >> 20
            ),
            Mode::Never => "no fdatasync while writing (the log still fdatasyncs a segment when it rolls)".into(),
        }
    }

    pub(crate) fn durability(self) -> Durability {
        match self {
            Mode::Always => Durability::Always,
            Mode::Interval => Durability::Interval {
                interval_ms: INTERVAL_MS,
                bytes: INTERVAL_BYTES,
            },
            Mode::Never => Durability::Never,
        }
    }
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    match text.trim() {
        "always" => Ok(Mode::Always),
        "interval" => Ok(Mode::Interval),
        "never" => Ok(Mode::Never),
        other => Err(format!("unknown mode `{other}` (expected always, interval or never)")),
    }
}

/// Where the executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuChoice {
    /// Pinned to this CPU (`Placement::Fixed`), as a shard would be.
    Fixed(usize),
    /// Left to the scheduler (`Placement::Unbound`).
    Unbound,
}

impl std::str::FromStr for CpuChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "unbound" => Ok(CpuChoice::Unbound),
            number => number
                .parse::<usize>()
                .map(CpuChoice::Fixed)
                .map_err(|_| format!("--cpu `{number}`: expected a CPU number or `unbound`")),
        }
    }
}

impl std::fmt::Display for CpuChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuChoice::Fixed(cpu) => write!(f, "pinned to CPU {cpu}"),
            CpuChoice::Unbound => write!(f, "unbound"),
        }
    }
}

/// Parses `16384`, `16K`, `16KiB`, `1M`, `1MiB`, `2G`, `2GiB` (binary units).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a byte count such as 16384, 16KiB or 1MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        other => return Err(format!("`{text}`: unknown unit `{other}` (use K/KiB, M/MiB, G/GiB)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("16384"), Ok(16384));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn default_flags_are_valid() {
        let args = Args::parse_from(["log-bench"]);
        assert!(args.validate().is_ok());
        assert_eq!(args.batch_bytes, vec![16384, 1 << 20]);
        assert_eq!(args.modes, vec![Mode::Always, Mode::Interval, Mode::Never]);
        assert_eq!(args.cpu, CpuChoice::Fixed(0));
    }
}
