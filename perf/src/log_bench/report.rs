//! The results table (an aligned Markdown table, readable in a terminal and
//! pasteable into `docs/benchmarks.md`) and the JSON record.

use std::fmt::Write as _;

use crate::{
    args::{Args, Mode},
    machine::Machine,
    sides::SideResult,
};

/// Quantiles reported for every side.
const QUANTILES: [(&str, f64); 3] = [("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)];

/// Both sides of one (batch size, mode) case.
pub(crate) struct CaseResult {
    /// Record payload per batch (records × 1 KiB).
    pub(crate) payload_bytes: u64,
    /// Bytes of one batch as stored: payload + 61-byte header.
    pub(crate) wire_bytes: u64,
    pub(crate) mode: Mode,
    pub(crate) log: SideResult,
    pub(crate) raw: SideResult,
    /// Batches the raw loop puts in one write (1 unless --concurrency > 1).
    pub(crate) batches_per_raw_write: u64,
    /// O_DIRECT context figure (`always` only).
    pub(crate) direct: Option<SideResult>,
}

impl CaseResult {
    /// Log throughput over raw throughput.
    pub(crate) fn ratio(&self) -> f64 {
        let raw = self.raw.mib_per_s();
        if raw > 0.0 {
            self.log.mib_per_s() / raw
        } else {
            0.0
        }
    }
}

/// `16 KiB`, `1 MiB`, or bytes.
pub(crate) fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.trailing_zeros() >= 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.trailing_zeros() >= 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn micros(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Rows of cells, padded to the widest cell per column.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, width))| {
                if c < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if index == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(c, width)| {
                    if c < 2 {
                        "-".repeat(*width)
                    } else {
                        format!("{}:", "-".repeat(width.saturating_sub(1)))
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", rule.join(" | "));
        }
    }
    out
}

/// The main table: log against raw, per case.
pub(crate) fn table(cases: &[CaseResult]) -> String {
    let mut rows = vec![[
        "batch",
        "mode",
        "log MiB/s",
        "raw MiB/s",
        "ratio",
        "log p50 µs",
        "log p99 µs",
        "log p99.9 µs",
        "raw p50 µs",
        "raw p99 µs",
        "raw p99.9 µs",
        "fsyncs log/raw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<String>>()];
    for case in cases {
        let mut row = vec![
            size_label(case.payload_bytes),
            case.mode.name().to_string(),
            format!("{:.1}", case.log.mib_per_s()),
            format!("{:.1}", case.raw.mib_per_s()),
            format!("{:.2}", case.ratio()),
        ];
        for side in [&case.log, &case.raw] {
            row.extend(QUANTILES.iter().map(|(_, q)| micros(side.quantile_us(*q))));
        }
        row.push(format!("{}/{}", case.log.fsyncs, case.raw.fsyncs));
        rows.push(row);
    }
    aligned(&rows)
}

/// The O_DIRECT context figures, if any were taken.
pub(crate) fn direct_table(cases: &[CaseResult]) -> Option<String> {
    let mut rows = vec![[
        "batch",
        "mode",
        "O_DIRECT MiB/s",
        "write bytes",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "log/O_DIRECT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<String>>()];
    for case in cases {
        let Some(direct) = &case.direct else { continue };
        let mut row = vec![
            size_label(case.payload_bytes),
            case.mode.name().to_string(),
            format!("{:.1}", direct.mib_per_s()),
            format!("{}", direct.bytes.checked_div(direct.appends).unwrap_or(0)),
        ];
        row.extend(QUANTILES.iter().map(|(_, q)| micros(direct.quantile_us(*q))));
        let ratio = if direct.mib_per_s() > 0.0 {
            case.log.mib_per_s() / direct.mib_per_s()
        } else {
            0.0
        };
        row.push(format!("{ratio:.2}"));
        rows.push(row);
    }
    (rows.len() > 1).then(|| aligned(&rows))
}

/// Per-case detail that does not fit the table: appends, time, means, maxima.
pub(crate) fn details(cases: &[CaseResult]) -> String {
    let mut out = String::new();
    for case in cases {
        for (name, side) in [("log", &case.log), ("raw", &case.raw)] {
            let _ = writeln!(
                out,
                "  {:>7} {:<8} {name}: {} appends, {:.1} MiB in {:.2} s, mean {} µs, max {} µs, {} fsyncs{}{}",
                size_label(case.payload_bytes),
                case.mode.name(),
                side.appends,
                side.bytes as f64 / f64::from(1u32 << 20),
                side.elapsed.as_secs_f64(),
                micros(side.latency_ns.mean() / 1000.0),
                micros(side.max_us()),
                side.fsyncs,
                if side.rolls > 0 {
                    format!(", {} segment roll(s) (their syncs not counted)", side.rolls)
                } else {
                    String::new()
                },
                if side.capped_rounds > 0 {
                    format!(" ({} round(s) stopped by the time cap)", side.capped_rounds)
                } else {
                    String::new()
                }
            );
        }
    }
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A finite number, or null (JSON has no NaN).
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".into()
    }
}

fn json_side(side: &SideResult) -> String {
    let quantiles: Vec<String> = QUANTILES
        .iter()
        .map(|(name, q)| format!("\"{name}_us\": {}", json_number(side.quantile_us(*q))))
        .collect();
    format!(
        "{{\"bytes\": {}, \"appends\": {}, \"seconds\": {}, \"mib_per_s\": {}, {}, \"mean_us\": {}, \"max_us\": {}, \"fsyncs\": {}, \"segment_rolls\": {}, \"capped_rounds\": {}}}",
        side.bytes,
        side.appends,
        json_number(side.elapsed.as_secs_f64()),
        json_number(side.mib_per_s()),
        quantiles.join(", "),
        json_number(side.latency_ns.mean() / 1000.0),
        json_number(side.max_us()),
        side.fsyncs,
        side.rolls,
        side.capped_rounds
    )
}

/// The whole run as one JSON document, stamped with the machine and settings.
pub(crate) fn json(machine: &Machine, args: &Args, cases: &[CaseResult]) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"bench\": \"log-bench\",");
    let _ = writeln!(
        out,
        "  \"machine\": {{\"date_utc\": {}, \"hostname\": {}, \"kernel\": {}, \"cpu_model\": {}, \"cores\": {}, \"device\": {}, \"filesystem\": {}, \"mount_point\": {}, \"mount_options\": {}, \"profile\": {}}},",
        json_string(&machine.date_utc),
        json_string(&machine.hostname),
        json_string(&machine.kernel),
        json_string(&machine.cpu_model),
        machine.cores,
        json_string(&machine.device),
        json_string(&machine.filesystem),
        json_string(&machine.mount_point),
        json_string(&machine.mount_options),
        json_string(machine.profile)
    );
    let _ = writeln!(
        out,
        "  \"settings\": {{\"dir\": {}, \"concurrency\": {}, \"rounds\": {}, \"seconds_per_case\": {}, \"bytes_per_case\": {}, \"always_bytes_per_case\": {}, \"cpu\": {}, \"io_memory\": {}, \"segment_bytes\": {}, \"record_bytes\": 1024}},",
        json_string(&args.dir.display().to_string()),
        args.concurrency,
        args.rounds,
        json_number(args.seconds_per_case),
        args.bytes_per_case,
        args.always_bytes_per_case,
        json_string(&args.cpu.to_string()),
        args.io_memory,
        args.segment_bytes
            .unwrap_or(shardline_log::LogConfig::default().segment_bytes_max)
    );
    out.push_str("  \"cases\": [\n");
    for (index, case) in cases.iter().enumerate() {
        let direct = case.direct.as_ref().map_or_else(|| "null".to_string(), json_side);
        let _ = write!(
            out,
            "    {{\"payload_bytes\": {}, \"wire_bytes\": {}, \"mode\": {}, \"fsync_policy\": {}, \"ratio\": {}, \"batches_per_raw_write\": {},\n     \"log\": {},\n     \"raw\": {},\n     \"direct\": {}}}",
            case.payload_bytes,
            case.wire_bytes,
            json_string(case.mode.name()),
            json_string(&case.mode.fsync_policy()),
            json_number(case.ratio()),
            case.batches_per_raw_write,
            json_side(&case.log),
            json_side(&case.raw),
            direct
        );
        out.push_str(if index + 1 < cases.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_labelled() {
        assert_eq!(size_label(16384), "16 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(1500), "1500 B");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["a".to_string(), "b".to_string(), "num".to_string()],
            vec!["long".to_string(), "x".to_string(), "1".to_string()],
        ];
        let text = aligned(&rows);
        assert_eq!(text, "| a    | b | num |\n| ---- | - | --: |\n| long | x |   1 |\n");
    }
}
