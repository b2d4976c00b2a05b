//! `shardctl top`: a live view of what each shard of a broker is doing, from
//! two scrapes of its `/metrics` (`--http`, the engine's `--http-listen`):
//! per shard, requests per second, p50 and p99 request latency over the
//! interval (from the `shardline_request_latency_seconds` histogram's
//! bucket increments, all APIs but Fetch, whose long-poll waits would hide
//! everything else), requests in flight, open connections, and bytes in and
//! out per second.
//!
//! The refresh is bounded: every `--interval-ms` (at least
//! [`INTERVAL_MS_MIN`]), `--iterations` times (default: until interrupted;
//! with `--output json`, once). On a terminal each refresh redraws the
//! screen.

use std::{collections::BTreeMap, io::IsTerminal, time::Duration};

use clap::Args;

use crate::{
    error::ToolError,
    prometheus_text::{self, Sample},
    report::{OutputFormat, Report, Table, Value, Verdict},
};

/// Shortest refresh accepted: a scrape makes every shard copy its counters.
const INTERVAL_MS_MIN: u64 = 200;
/// Shards shown (a broker has at most a few hundred).
const SHARDS_SHOWN_MAX: usize = 1024;

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The broker's HTTP endpoint (its --http-listen).
    #[arg(long, default_value = "127.0.0.1:9644")]
    http: String,
    /// Time between two refreshes.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Refreshes before exiting (default: until interrupted; 1 with --output json).
    #[arg(long)]
    iterations: Option<u64>,
}

/// One shard's counters at one scrape.
#[derive(Debug, Default, Clone)]
struct ShardCounters {
    requests: f64,
    /// Cumulative latency buckets (upper bound in seconds → count), Fetch excluded.
    buckets: BTreeMap<OrderedBound, f64>,
    in_flight: f64,
    connections: f64,
    received_bytes: f64,
    sent_bytes: f64,
}

/// A bucket bound that sorts (the page's bounds are finite or +Inf, never NaN).
#[derive(Debug, Clone, Copy)]
struct OrderedBound(f64);

impl PartialEq for OrderedBound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn counters(samples: &[Sample]) -> BTreeMap<u32, ShardCounters> {
    let mut shards: BTreeMap<u32, ShardCounters> = BTreeMap::new();
    for sample in samples {
        let Some(shard) = sample.label("shard").and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if shards.len() >= SHARDS_SHOWN_MAX && !shards.contains_key(&shard) {
            continue;
        }
        let entry = shards.entry(shard).or_default();
        match sample.name.as_str() {
            "shardline_requests_total" => entry.requests += sample.value,
            "shardline_request_latency_seconds_bucket" if sample.label("api") != Some("Fetch") => {
                let bound = match sample.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(bound) => bound,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                *entry.buckets.entry(OrderedBound(bound)).or_default() += sample.value;
            }
            "shardline_requests_in_flight" => entry.in_flight = sample.value,
            "shardline_connections_open" => entry.connections = sample.value,
            "shardline_network_received_bytes_total" => entry.received_bytes = sample.value,
            "shardline_network_sent_bytes_total" => entry.sent_bytes = sample.value,
            _ => {}
        }
    }
    shards
}

/// The bound below which `quantile` of the interval's requests finished
/// (the upper bound of the bucket holding it), `None` without requests.
fn quantile(before: &ShardCounters, after: &ShardCounters, quantile: f64) -> Option<f64> {
    let increments: Vec<(f64, f64)> = after
        .buckets
        .iter()
        .map(|(bound, count)| (bound.0, count - before.buckets.get(bound).copied().unwrap_or(0.0)))
        .collect();
    let total = increments.last().map(|(_, count)| *count)?;
    if total <= 0.0 {
        return None;
    }
    increments
        .iter()
        .find(|(_, count)| *count >= total * quantile)
        .map(|(bound, _)| *bound)
}

fn latency_ms(seconds: Option<f64>) -> Value {
    match seconds {
        Some(s) if s.is_finite() => Value::Float(s * 1000.0),
        Some(_) => Value::text(">10s"),
        None => Value::Null,
    }
}

fn view(before: &BTreeMap<u32, ShardCounters>, after: &BTreeMap<u32, ShardCounters>, seconds: f64) -> Table {
    let mut table = Table::new(
        "shards",
        &[
            "shard",
            "requests_per_second",
            "p50_ms",
            "p99_ms",
            "in_flight",
            "connections",
            "in_bytes_per_second",
            "out_bytes_per_second",
        ],
    );
    for (shard, now) in after {
        let then = before.get(shard).cloned().unwrap_or_default();
        let rate = |a: f64, b: f64| Value::Float(((a - b) / seconds).max(0.0));
        table.row(vec![
            Value::from(i64::from(*shard)),
            rate(now.requests, then.requests),
            latency_ms(quantile(&then, now, 0.5)),
            latency_ms(quantile(&then, now, 0.99)),
            Value::Int(now.in_flight as i64),
            Value::Int(now.connections as i64),
            rate(now.received_bytes, then.received_bytes),
            rate(now.sent_bytes, then.sent_bytes),
        ]);
    }
    table
}

pub(crate) fn run(args: &TopArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let interval = Duration::from_millis(args.interval_ms.max(INTERVAL_MS_MIN));
    let iterations = match (args.iterations, report.format()) {
        (Some(n), _) => Some(n.max(1)),
        (None, OutputFormat::Json) => Some(1),
        (None, OutputFormat::Table) => None,
    };
    let redraw = report.format() == OutputFormat::Table && std::io::stdout().is_terminal();
    let mut before = counters(&prometheus_text::parse(&prometheus_text::fetch(&args.http)?));
    let mut done = 0u64;
    while iterations.is_none_or(|n| done < n) {
        let started = std::time::Instant::now();
        std::thread::sleep(interval);
        let after = counters(&prometheus_text::parse(&prometheus_text::fetch(&args.http)?));
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        let last = iterations.is_some_and(|n| done + 1 == n);
        match report.format() {
            OutputFormat::Table => {
                if redraw {
                    report.line(format_args!("\x1b[2J\x1b[H"))?;
                }
                report.line(format_args!(
                    "shardctl top: {} every {} ms (latency: all APIs but Fetch)",
                    args.http,
                    interval.as_millis()
                ))?;
                report.table(&view(&before, &after, seconds))?;
                report.flush()?;
            }
            // One object: the last refresh.
            OutputFormat::Json if last => report.table(&view(&before, &after, seconds))?,
            OutputFormat::Json => {}
        }
        before = after;
        done += 1;
    }
    Ok(Verdict::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
        }
    }

    #[test]
    fn rates_and_quantiles_come_from_the_increments() {
        let bucket = "shardline_request_latency_seconds_bucket";
        let at = |requests: f64, fast: f64, slow: f64, fetch: f64| {
            counters(&[
                sample(
                    "shardline_requests_total",
                    &[("shard", "0"), ("api", "Produce")],
                    requests,
                ),
                sample(bucket, &[("shard", "0"), ("api", "Produce"), ("le", "0.001")], fast),
                sample(
                    bucket,
                    &[("shard", "0"), ("api", "Produce"), ("le", "0.1")],
                    fast + slow,
                ),
                sample(
                    bucket,
                    &[("shard", "0"), ("api", "Produce"), ("le", "+Inf")],
                    fast + slow,
                ),
                sample(bucket, &[("shard", "0"), ("api", "Fetch"), ("le", "+Inf")], fetch),
            ])
        };
        let before = at(100.0, 50.0, 0.0, 10.0);
        let after = at(300.0, 148.0, 2.0, 500.0);
        let p50 = quantile(&before[&0], &after[&0], 0.5).unwrap();
        let p99 = quantile(&before[&0], &after[&0], 0.99).unwrap();
        assert_eq!((p50, p99), (0.001, 0.1), "98 of 100 under 1 ms; Fetch left out");
        let table = view(&before, &after, 2.0);
        assert_eq!(table.lines_for_test()[1].split_whitespace().nth(1), Some("100.00"));
        assert_eq!(quantile(&before[&0], &before[&0], 0.5), None, "no requests, no latency");
    }
}
