//! The stamp printed above every result: when, where, on what disk, built how.

use std::path::{Path, PathBuf};

/// What a reader needs to judge a figure from this run.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// Start of the run, UTC, ISO 8601.
    pub(crate) date_utc: String,
    pub(crate) hostname: String,
    /// `uname -r`.
    pub(crate) kernel: String,
    pub(crate) cpu_model: String,
    pub(crate) cores: usize,
    /// Device, file system, mount point and options of the scratch directory.
    pub(crate) device: String,
    pub(crate) filesystem: String,
    pub(crate) mount_point: String,
    pub(crate) mount_options: String,
    /// `release` or `debug`.
    pub(crate) profile: &'static str,
}

impl Machine {
    /// Reads everything from `/proc`; a value that cannot be read is `unknown`
    /// rather than an error, so a missing detail never stops a measurement.
    pub(crate) fn probe(dir: &Path) -> Machine {
        let unknown = || "unknown".to_string();
        let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).ok();
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map_or_else(unknown, |(_, model)| model.trim().to_string());
        // The machine's CPUs, not the ones this process may use: under `taskset` (the perf harness
        // pins its tools) available_parallelism counts only the allowed CPUs.
        let cores = match cpuinfo.lines().filter(|line| line.starts_with("processor")).count() {
            0 => std::thread::available_parallelism().map_or(0, |n| n.get()),
            counted => counted,
        };
        let mount = read("/proc/mounts").and_then(|mounts| mount_of(&mounts, dir));
        let (device, filesystem, mount_point, mount_options) =
            mount.unwrap_or_else(|| (unknown(), unknown(), unknown(), unknown()));
        Machine {
            date_utc: utc_now(),
            hostname: read("/proc/sys/kernel/hostname").unwrap_or_else(unknown),
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(unknown),
            cpu_model,
            cores,
            device,
            filesystem,
            mount_point,
            mount_options,
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
        }
    }

    /// One line, as `docs/benchmarks.md` records it.
    pub(crate) fn header_line(&self) -> String {
        format!(
            "date {} | host {} | kernel {} | cpu {} x{} | disk {} {} on {} ({}) | build {}",
            self.date_utc,
            self.hostname,
            self.kernel,
            self.cpu_model,
            self.cores,
            self.device,
            self.filesystem,
            self.mount_point,
            self.mount_options,
            self.profile
        )
    }
}

/// The `/proc/mounts` entry whose mount point is the longest prefix of `dir`:
/// (device, file system type, mount point, options).
fn mount_of(mounts: &str, dir: &Path) -> Option<(String, String, String, String)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let mount_point = unescape_mount(fields.next()?);
            let filesystem = fields.next()?;
            let options = fields.next()?;
            dir.starts_with(&mount_point).then(|| {
                (
                    device.to_string(),
                    filesystem.to_string(),
                    mount_point,
                    options.to_string(),
                )
            })
        })
        .max_by_key(|(_, _, mount_point, _)| mount_point.components().count())
        .map(|(device, filesystem, mount_point, options)| {
            (device, filesystem, mount_point.display().to_string(), options)
        })
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount(field: &str) -> PathBuf {
    PathBuf::from(
        field
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\"),
    )
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(seconds)
}

fn format_utc(unix_seconds: u64) -> String {
    let days = i64::try_from(unix_seconds / 86_400).unwrap_or(0);
    let in_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_format() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn the_longest_mount_prefix_wins() {
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\n/dev/vdb /work\\040dir xfs rw 0 0\n";
        let found = mount_of(mounts, Path::new("/work dir/perf/out"));
        assert_eq!(found.map(|m| m.1), Some("xfs".to_string()));
        let found = mount_of(mounts, Path::new("/tmp/x"));
        assert_eq!(found.map(|m| m.0), Some("/dev/vda".to_string()));
    }
}
