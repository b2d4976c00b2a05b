//! `--fsync-probe`: the disk's write + fdatasync latency, measured in the same run as the load so a
//! result can be read against what the machine can do at best.
//!
//! For each block size it appends a block to a scratch file and calls `fdatasync` (Rust's
//! `File::sync_data`), timing the pair, [`PROBE_ITERATIONS_MAX`] times or for
//! [`PROBE_TIME_MAX`], whichever ends first. The file is created in the probed directory and
//! removed afterwards. It runs before the load, so the two do not disturb each other.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{error::BenchError, latency::LatencyHistogram};

/// Block sizes probed: a small record's write and a typical batch's.
pub const PROBE_BLOCK_BYTES: [usize; 2] = [4 << 10, 64 << 10];
/// Iterations per block size: two thousand give a p99.9 from two samples
/// (issue 11 states the fsync-always tail against fdatasync's p99.9).
pub const PROBE_ITERATIONS_MAX: u32 = 2000;
/// Time bound per block size, for slow disks.
pub const PROBE_TIME_MAX: Duration = Duration::from_secs(3);

/// The probe's result for one block size.
#[derive(Debug, Clone)]
pub struct ProbeLine {
    /// Bytes written before each fdatasync.
    pub block_bytes: usize,
    /// Iterations done.
    pub iterations: u32,
    /// Latency of write + fdatasync.
    pub latency: LatencyHistogram,
    /// Wall time of all iterations.
    pub elapsed: Duration,
}

/// The probe's result.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Directory probed.
    pub dir: PathBuf,
    /// One line per block size.
    pub lines: Vec<ProbeLine>,
}

impl ProbeResult {
    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let lines: Vec<Value> = self
            .lines
            .iter()
            .map(|line| {
                let summary = line.latency.summary();
                let ms = |us: u64| us as f64 / 1000.0;
                let seconds = line.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
                let mebibytes = line.block_bytes as f64 * f64::from(line.iterations) / f64::from(1u32 << 20);
                json!({
                    "block_bytes": line.block_bytes,
                    "iterations": line.iterations,
                    "p50_ms": ms(summary.percentile_us("p50").unwrap_or(0)),
                    "p99_ms": ms(summary.percentile_us("p99").unwrap_or(0)),
                    "p99_9_ms": ms(summary.percentile_us("p99.9").unwrap_or(0)),
                    "max_ms": ms(summary.max_us),
                    "mib_per_s": mebibytes / seconds,
                })
            })
            .collect();
        json!({ "dir": self.dir.display().to_string(), "results": lines })
    }
}

/// Runs the probe in `dir`.
pub fn run(dir: &Path) -> Result<ProbeResult, BenchError> {
    let disk_error = |context: &'static str| {
        let path = dir.to_path_buf();
        move |source| BenchError::Disk { path, context, source }
    };
    let mut lines = Vec::with_capacity(PROBE_BLOCK_BYTES.len());
    for block_bytes in PROBE_BLOCK_BYTES {
        let scratch = tempfile::Builder::new()
            .prefix(".bench-fsync-probe-")
            .tempfile_in(dir)
            .map_err(disk_error("creating a scratch file in"))?;
        let mut file: &File = scratch.as_file();
        let block: Vec<u8> = (0..block_bytes).map(|i| (i % 251) as u8).collect();
        let mut latency = LatencyHistogram::new();
        let started = Instant::now();
        let mut iterations = 0;
        while iterations < PROBE_ITERATIONS_MAX && started.elapsed() < PROBE_TIME_MAX {
            let before = Instant::now();
            file.write_all(&block)
                .map_err(disk_error("writing to a scratch file in"))?;
            file.sync_data().map_err(disk_error("fdatasync of a scratch file in"))?;
            latency.record(before.elapsed());
            iterations += 1;
        }
        let elapsed = started.elapsed();
        scratch.close().map_err(disk_error("removing the scratch file in"))?;
        lines.push(ProbeLine {
            block_bytes,
            iterations,
            latency,
            elapsed,
        });
    }
    Ok(ProbeResult {
        dir: dir.to_path_buf(),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_measures_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let result = run(dir.path()).unwrap();
        assert_eq!(result.lines.len(), 2);
        for line in &result.lines {
            assert!(line.iterations > 0);
            assert_eq!(line.latency.summary().count, u64::from(line.iterations));
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "scratch files removed"
        );
        let json = result.to_json();
        assert_eq!(json["results"][1]["block_bytes"], 65536);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let error = run(Path::new("/nonexistent/bench-probe")).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/bench-probe"), "{error}");
    }
}
