//! What the bench prints and writes: the live progress line (stderr), the final table (stdout)
//! and the JSON result (`--json FILE`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal, Write},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

use crate::{
    cli::Args,
    keys::{KeySpace, SpreadCounts},
    latency::{LatencyHistogram, LatencySummary, PERCENTILES},
    probe::ProbeResult,
    run::{Shared, Stats, Volume},
    wire::ApiTable,
};

/// Bumped when a JSON field changes meaning or disappears. 2: `consume.compressed_batches_skipped`
/// became `consume.compressed_batches` (compressed batches are now decompressed and read), and with
/// `--prefill` `window.measured_s` ends when the consumers have read the fill.
pub const JSON_SCHEMA_VERSION: u32 = 2;

/// The machine the bench ran on.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Online CPUs.
    pub cores: usize,
    /// CPU model name.
    pub cpu_model: String,
}

impl HostInfo {
    /// Reads /proc (Linux); fields it cannot read are "unknown".
    pub fn collect() -> HostInfo {
        let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).ok();
        let cpu_model = read("/proc/cpuinfo")
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        HostInfo {
            hostname: read("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".to_string()),
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".to_string()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
        }
    }
}

/// What `--prefill` wrote before the measured run (not timed: its rate is no measurement).
#[derive(Debug, Clone)]
pub struct FillReport {
    /// The fill's producers' statistics, merged.
    pub stats: Stats,
    /// Messages per key and partition written by the fill.
    pub spread: SpreadCounts,
    /// From the fill's start to its last acknowledgement.
    pub elapsed: Duration,
    /// Each partition's log end after the fill: the consumers read up to here.
    pub end_offsets: BTreeMap<i32, i64>,
    /// Records between the consumers' start offsets and `end_offsets`, over all partitions.
    pub target_messages: u64,
}

/// Everything the final report needs.
pub struct RunReport<'a> {
    /// The flags.
    pub args: &'a Args,
    /// The machine.
    pub host: HostInfo,
    /// The broker's API table as negotiated.
    pub apis: ApiTable,
    /// Bootstrap broker that answered.
    pub bootstrap: String,
    /// The topic's partition ids, in partition-index order.
    pub partition_ids: Vec<i32>,
    /// Whether the bench created the topic.
    pub topic_created: bool,
    /// All workers' statistics of the measured run, merged.
    pub stats: Stats,
    /// Consumer threads that ran.
    pub consumer_threads: usize,
    /// The keys, if the run had any.
    pub key_space: Option<Arc<KeySpace>>,
    /// Messages per key and partition (of the fill with `--prefill`, else of the run).
    pub spread: SpreadCounts,
    /// `--prefill`'s fill.
    pub fill: Option<FillReport>,
    /// Length of the measured window (with `--prefill`: up to when the consumers had read the fill).
    pub window: Duration,
    /// Whole run, from the schedule start to the last worker's end.
    pub elapsed: Duration,
    /// The fsync probe's result, if run.
    pub probe: Option<ProbeResult>,
    /// Unix time (ms) the run started.
    pub started_unix_ms: u64,
}

/// Unix time now, in ms.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn rate(volume: Volume, window: Duration) -> (f64, f64) {
    let seconds = window.as_secs_f64();
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    (volume.messages as f64 / seconds, volume.bytes as f64 / seconds / 1e6)
}

/// Uncompressed over sent batch bytes; null before any batch.
fn compression_ratio(uncompressed: u64, sent: u64) -> Value {
    if sent == 0 {
        Value::Null
    } else {
        json!(uncompressed as f64 / sent as f64)
    }
}

/// Count, min, mean, percentiles and max in ms; the latency fields are null without samples.
fn summary_json(summary: &LatencySummary) -> Value {
    let value = |us: f64| {
        if summary.count == 0 {
            Value::Null
        } else {
            json!(us / 1000.0)
        }
    };
    let mut object = serde_json::Map::new();
    object.insert("count".into(), json!(summary.count));
    object.insert("min_ms".into(), value(summary.min_us as f64));
    object.insert("mean_ms".into(), value(summary.mean_us));
    for ((label, _), us) in PERCENTILES.iter().zip(summary.percentiles_us) {
        // "p99.9" → "p99_9_ms": keys that need no quoting in jq.
        object.insert(format!("{}_ms", label.replace('.', "_")), value(us as f64));
    }
    object.insert("max_ms".into(), value(summary.max_us as f64));
    Value::Object(object)
}

impl RunReport<'_> {
    /// The JSON result.
    pub fn to_json(&self) -> Value {
        let args = self.args;
        let stats = &self.stats;
        let (produce_rate, produce_mb) = rate(stats.acknowledged_in_window, self.window);
        let (consume_rate, consume_mb) = rate(stats.consumed_in_window, self.window);
        let apis: Vec<Value> = self
            .apis
            .apis
            .iter()
            .map(|api| {
                json!({"api": api.name, "key": api.key, "min": api.broker_min, "max": api.broker_max, "used": api.used})
            })
            .collect();
        let producing = args.measures_producers();
        let consuming = args.consumers > 0;
        let fill = self.fill.as_ref().map(|fill| {
            let (messages_per_s, mb_per_s) = rate(fill.stats.acknowledged, fill.elapsed);
            json!({
                "messages": fill.stats.acknowledged.messages,
                "bytes": fill.stats.acknowledged.bytes,
                "elapsed_s": fill.elapsed.as_secs_f64(),
                "messages_per_s": messages_per_s,
                "mb_per_s": mb_per_s,
                "requests": fill.stats.produce_requests,
                "messages_not_sent": fill.stats.not_sent,
                "batch_bytes_uncompressed": fill.stats.batch_bytes_uncompressed,
                "batch_bytes_sent": fill.stats.batch_bytes_sent,
                "compression_ratio": compression_ratio(fill.stats.batch_bytes_uncompressed, fill.stats.batch_bytes_sent),
                "end_offsets": fill.end_offsets.iter().map(|(partition, end)| json!({"partition": partition, "offset": end})).collect::<Vec<_>>(),
                "messages_to_consume": fill.target_messages,
            })
        });
        let caught_up = self
            .fill
            .as_ref()
            .map(|_| stats.consumers_caught_up == self.consumer_threads as u64 && self.consumer_threads > 0);
        json!({
            "schema": JSON_SCHEMA_VERSION,
            "tool": "shardline-bench",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "started_at_unix_ms": self.started_unix_ms,
            "host": {
                "hostname": self.host.hostname,
                "kernel": self.host.kernel,
                "cores": self.host.cores,
                "cpu_model": self.host.cpu_model,
            },
            "broker": {
                "bootstrap": self.bootstrap,
                "version": args.broker_version,
                "shards": args.shards,
                "fsync": args.fsync,
                "api_versions": apis,
            },
            "flags": args.to_json(),
            "workload": args.workload(),
            "topic": {"name": args.topic, "partitions": self.partition_ids.len(), "created": self.topic_created},
            "window": {
                "warmup_s": args.warmup.as_secs_f64(),
                "measured_s": self.window.as_secs_f64(),
                "elapsed_s": self.elapsed.as_secs_f64(),
            },
            "produce": if producing { json!({
                "messages_sent": stats.sent.messages,
                "messages_acknowledged": stats.acknowledged.messages,
                "messages_acknowledged_in_window": stats.acknowledged_in_window.messages,
                "bytes_acknowledged_in_window": stats.acknowledged_in_window.bytes,
                "messages_per_s": produce_rate,
                "mb_per_s": produce_mb,
                "requests": stats.produce_requests,
                "messages_not_sent": stats.not_sent,
                "messages_unacknowledged": stats.unacknowledged,
                "batch_bytes_uncompressed": stats.batch_bytes_uncompressed,
                "batch_bytes_sent": stats.batch_bytes_sent,
                "compression_ratio": compression_ratio(stats.batch_bytes_uncompressed, stats.batch_bytes_sent),
            }) } else { Value::Null },
            "consume": if consuming { json!({
                "messages_consumed": stats.consumed.messages,
                "messages_consumed_in_window": stats.consumed_in_window.messages,
                "bytes_consumed_in_window": stats.consumed_in_window.bytes,
                "messages_per_s": consume_rate,
                "mb_per_s": consume_mb,
                "fetch_requests": stats.fetch_requests,
                "empty_fetches": stats.empty_fetches,
                "foreign_records": stats.foreign_records,
                "compressed_batches": stats.compressed_batches,
                "batch_bytes_fetched": stats.batch_bytes_fetched,
                "caught_up": caught_up,
            }) } else { Value::Null },
            "latency_ms": {
                "publish": if producing { summary_json(&stats.publish.summary()) } else { Value::Null },
                "end_to_end": if consuming && self.fill.is_none() { summary_json(&stats.end_to_end.summary()) } else { Value::Null },
                "send_delay": if producing { summary_json(&stats.send_delay.summary()) } else { Value::Null },
                "fetch": if consuming { summary_json(&stats.fetch.summary()) } else { Value::Null },
            },
            "keys": self.key_space.as_ref().zip(self.spread.key_spread()).map(|(keys, spread)| spread.to_json(keys, &self.partition_ids)),
            "prefill": fill,
            "fsync_probe": self.probe.as_ref().map(ProbeResult::to_json),
        })
    }

    /// The readable table for stdout.
    pub fn table(&self) -> String {
        let args = self.args;
        let stats = &self.stats;
        let mut out = String::new();
        let rate_text = if args.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{} msg/s", args.rate)
        };
        let _ = writeln!(
            out,
            "shardline bench: {} on topic {} ({} partitions{}) at {}",
            args.workload(),
            args.topic,
            self.partition_ids.len(),
            if self.topic_created { ", created" } else { "" },
            self.bootstrap
        );
        let keys_text = if args.keys == 0 {
            "no keys".to_string()
        } else {
            format!("keys {} {}", args.keys, args.key_distribution)
        };
        let content_text = format!(
            "message {} B ({}), compression {}, {keys_text}",
            args.message_size, args.payload, args.compression
        );
        if args.measures_producers() {
            let _ = writeln!(
                out,
                "  {} producer(s), {} consumer(s), {content_text}, rate {rate_text}, acks {}, batch {} B, linger {} ms",
                args.producers, args.consumers, args.acks, args.batch_bytes, args.linger_ms,
            );
        } else if args.prefill > 0 {
            let _ = writeln!(
                out,
                "  prefill {} messages by {} producer(s), {content_text}, acks {}, batch {} B; {} consumer(s) from {}",
                args.prefill, args.producers, args.acks, args.batch_bytes, args.consumers, args.consume_from
            );
        } else {
            let _ = writeln!(out, "  {} consumer(s) from {}", args.consumers, args.consume_from);
        }
        let unknown = || "?".to_string();
        let _ = writeln!(
            out,
            "  broker version {}, shards {}, fsync {}; measured {:.1} s after {:.1} s warm-up",
            args.broker_version.clone().unwrap_or_else(unknown),
            args.shards.map_or_else(unknown, |s| s.to_string()),
            args.fsync.clone().unwrap_or_else(unknown),
            self.window.as_secs_f64(),
            args.warmup.as_secs_f64()
        );
        let _ = writeln!(out);
        let header_percentiles: String = PERCENTILES.iter().map(|(label, _)| format!("{label:>9}")).collect();
        let _ = writeln!(
            out,
            "{:<20}{:>10}{:>11}{:>8}{header_percentiles}{:>9}   (latency ms)",
            "", "count", "msg/s", "MB/s", "max"
        );
        let line = |out: &mut String, name: &str, histogram: &LatencyHistogram, volume: Option<Volume>| {
            let summary = histogram.summary();
            let (messages, mb) = volume.map_or((f64::NAN, f64::NAN), |v| rate(v, self.window));
            let cell = |us: u64| {
                if summary.count == 0 {
                    format!("{:>9}", "-")
                } else {
                    format!("{:>9.3}", ms(us))
                }
            };
            let percentiles: String = summary.percentiles_us.iter().map(|&us| cell(us)).collect();
            let throughput = if volume.is_some() {
                format!("{messages:>11.1}{mb:>8.2}")
            } else {
                format!("{:>11}{:>8}", "", "")
            };
            let _ = writeln!(
                out,
                "{name:<20}{:>10}{throughput}{percentiles}{}",
                summary.count,
                cell(summary.max_us)
            );
        };
        let producing = args.measures_producers();
        if producing {
            line(&mut out, "publish", &stats.publish, Some(stats.acknowledged_in_window));
        }
        if args.consumers > 0 && self.fill.is_none() {
            line(
                &mut out,
                "end-to-end",
                &stats.end_to_end,
                Some(stats.consumed_in_window),
            );
        }
        if args.consumers > 0 {
            // With --prefill this is the consume line; otherwise its throughput is end-to-end's.
            let volume = self.fill.as_ref().map(|_| stats.consumed_in_window);
            line(&mut out, "fetch (per request)", &stats.fetch, volume);
        }
        if producing {
            line(&mut out, "send delay", &stats.send_delay, None);
        }
        let _ = writeln!(out);
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let compression_line = |out: &mut String, stats: &Stats| {
            if args.compression != crate::compression::Compression::None {
                let _ = writeln!(
                    out,
                    "compression {}: {:.2} MB of batches sent for {:.2} MB uncompressed (ratio {:.2})",
                    args.compression,
                    mb(stats.batch_bytes_sent),
                    mb(stats.batch_bytes_uncompressed),
                    stats.batch_bytes_uncompressed as f64 / stats.batch_bytes_sent.max(1) as f64
                );
            }
        };
        if let Some(fill) = &self.fill {
            let _ = writeln!(
                out,
                "prefill (not timed): {} messages, {:.2} MB written in {:.1} s in {} requests; {} to consume",
                fill.stats.acknowledged.messages,
                mb(fill.stats.acknowledged.bytes),
                fill.elapsed.as_secs_f64(),
                fill.stats.produce_requests,
                fill.target_messages
            );
            compression_line(&mut out, &fill.stats);
        }
        if producing {
            let _ = writeln!(
                out,
                "produced: {} sent, {} acknowledged in {} requests; {} not sent, {} unacknowledged",
                stats.sent.messages,
                stats.acknowledged.messages,
                stats.produce_requests,
                stats.not_sent,
                stats.unacknowledged
            );
            compression_line(&mut out, stats);
        }
        if let (Some(keys), Some(spread)) = (&self.key_space, self.spread.key_spread()) {
            let (hottest_index, hottest_messages) = spread.hottest.first().copied().unwrap_or((0, 0));
            let _ = writeln!(
                out,
                "keys ({}): {} of {} keys sent; the hottest, {}, carries {:.1} % of messages, the hottest 1 % of keys \
                 {:.1} %; busiest partition {:.2}× the mean",
                keys.distribution(),
                spread.distinct_sent,
                keys.len(),
                String::from_utf8_lossy(keys.name(hottest_index)),
                spread.share(hottest_messages) * 100.0,
                spread.share(spread.top_one_percent_messages) * 100.0,
                spread.partition_max_over_mean.unwrap_or(f64::NAN)
            );
        }
        if args.consumers > 0 {
            let _ = writeln!(
                out,
                "consumed: {} records in {} fetches ({} empty), {:.2} MB in batches of which {} compressed; {} records \
                 not from a bench",
                stats.consumed.messages,
                stats.fetch_requests,
                stats.empty_fetches,
                mb(stats.batch_bytes_fetched),
                stats.compressed_batches,
                stats.foreign_records
            );
        }
        if let Some(probe) = &self.probe {
            for probe_line in &probe.lines {
                let summary = probe_line.latency.summary();
                let _ = writeln!(
                    out,
                    "fsync probe ({}): {:>2} KiB write + fdatasync p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, \
                     max {:.3} ms ({} iterations)",
                    probe.dir.display(),
                    probe_line.block_bytes >> 10,
                    ms(summary.percentile_us("p50").unwrap_or(0)),
                    ms(summary.percentile_us("p99").unwrap_or(0)),
                    ms(summary.percentile_us("p99.9").unwrap_or(0)),
                    ms(summary.max_us),
                    probe_line.iterations
                );
            }
        }
        out
    }
}

/// What the progress line shows.
#[derive(Debug, Clone, Copy)]
pub struct ProgressShows {
    /// Producer throughput and publish p99.
    pub produce: bool,
    /// Consumer throughput and Fetch p99.
    pub consume: bool,
    /// End-to-end p99 (consumers reading what this run's producers write).
    pub end_to_end: bool,
}

/// The live progress line on stderr, about once a second.
pub struct Progress {
    interactive: bool,
    enabled: bool,
    /// Replaces the phase read from the clock (the fill says "filling").
    label: Option<&'static str>,
    shows: ProgressShows,
    last_at: Instant,
    last_acknowledged: (u64, u64),
    last_consumed: u64,
}

impl Progress {
    /// A progress line, showing producer and/or consumer rates; on a terminal it rewrites itself,
    /// otherwise it prints one line per update.
    pub fn new(enabled: bool, start: Instant, label: Option<&'static str>, shows: ProgressShows) -> Progress {
        Progress {
            interactive: std::io::stderr().is_terminal(),
            enabled,
            label,
            shows,
            last_at: start,
            last_acknowledged: (0, 0),
            last_consumed: 0,
        }
    }

    /// Prints one update.
    pub fn update(&mut self, shared: &Shared) {
        if !self.enabled {
            return;
        }
        let (producing, consuming) = (self.shows.produce, self.shows.consume);
        let now = Instant::now();
        let interval = now.saturating_duration_since(self.last_at).as_secs_f64().max(1e-3);
        let acknowledged = (
            shared.acknowledged_messages.load(std::sync::atomic::Ordering::Relaxed),
            shared.acknowledged_bytes.load(std::sync::atomic::Ordering::Relaxed),
        );
        let consumed = shared.consumed_messages.load(std::sync::atomic::Ordering::Relaxed);
        let clock = shared.clock;
        let elapsed = now.saturating_duration_since(clock.start).as_secs_f64();
        let phase = if let Some(label) = self.label {
            label
        } else if clock.in_warmup(now) {
            "warm-up"
        } else if now < clock.window.end {
            "measuring"
        } else {
            "draining"
        };
        let mut text = format!("[{elapsed:6.1}s] {phase:<9}");
        if producing {
            let messages = acknowledged.0.saturating_sub(self.last_acknowledged.0) as f64 / interval;
            let mb = acknowledged.1.saturating_sub(self.last_acknowledged.1) as f64 / interval / 1e6;
            let _ = write!(text, " | produce {messages:>9.0} msg/s {mb:>7.2} MB/s");
        }
        if consuming {
            let messages = consumed.saturating_sub(self.last_consumed) as f64 / interval;
            let _ = write!(text, " | consume {messages:>9.0} msg/s");
        }
        let stats = shared.merged_stats();
        let p99 = |histogram: &LatencyHistogram| {
            histogram
                .quantile(0.99)
                .map_or_else(|| "-".to_string(), |p| format!("{:.3} ms", p.as_secs_f64() * 1e3))
        };
        if producing {
            let _ = write!(text, " | publish p99 {}", p99(&stats.publish));
        }
        if consuming {
            if self.shows.end_to_end {
                let _ = write!(text, " | e2e p99 {}", p99(&stats.end_to_end));
            }
            let _ = write!(text, " | fetch p99 {}", p99(&stats.fetch));
        }
        let mut stderr = std::io::stderr().lock();
        if self.interactive {
            let _ = write!(stderr, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(stderr, "{text}");
        }
        let _ = stderr.flush();
        self.last_at = now;
        self.last_acknowledged = acknowledged;
        self.last_consumed = consumed;
    }

    /// Ends the line (on a terminal).
    pub fn finish(&self) {
        if self.enabled && self.interactive {
            eprintln!();
        }
    }
}
