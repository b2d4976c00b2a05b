//! The metrics text formats, written by hand: Prometheus text 0.0.4 (the
//! default) and OpenMetrics 1.0 (when the scraper's Accept header asks for
//! `application/openmetrics-text`).
//!
//! ```text
//! Prometheus 0.0.4                                OpenMetrics 1.0
//! ───────────────────────────────────────────     ───────────────────────────────────────────
//! # HELP shardline_requests_total Requests ...    # HELP shardline_requests Requests ...
//! # TYPE shardline_requests_total counter         # TYPE shardline_requests counter
//! shardline_requests_total{shard="0",api="Fe..    shardline_requests_total{shard="0",api="Fe..
//! # HELP shardline_connections_open Open ...      # HELP shardline_connections_open Open ...
//! # TYPE shardline_connections_open gauge         # TYPE shardline_connections_open gauge
//! shardline_connections_open{shard="0"} 3         shardline_connections_open{shard="0"} 3
//! # HELP shardline_request_latency_seconds ...    (same)
//! # TYPE shardline_request_latency_seconds histogram
//! ..._bucket{shard="0",api="Produce",le="0.00005"} 0  le: the bound in seconds, plain decimal
//! ..._bucket{shard="0",api="Produce",le="+Inf"} 7    buckets cumulative, +Inf always last
//! ..._sum{shard="0",api="Produce"} 0.0123          seconds
//! ..._count{shard="0",api="Produce"} 7             = the +Inf bucket
//! (end of body)                                   # EOF
//! ```
//!
//! A family is written whole (its HELP, its TYPE, then every sample of it,
//! all shards together): both formats want a family's samples contiguous.
//! Counter families are named with `_total` in their HELP and TYPE lines in
//! the Prometheus format (what client libraries write) and without it in
//! OpenMetrics (where `_total` is the sample's suffix only); the samples
//! are the same. Label values escape `\`, `"` and newline as `\\`, `\"` and
//! `\n`; HELP text escapes `\` and newline (and `"` in OpenMetrics). Names
//! and label names are static strings of this crate, checked by tests.
//! Values are integers written as such, or seconds as an `f64` in plain
//! decimal (Rust's `Display`: shortest round-trip digits, no exponent); the
//! one number OpenMetrics wants in a canonical form, `+Inf`, is written so.

use std::fmt::Write;

use super::histogram::HistogramSnapshot;

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` at all (Prometheus lists it first when
    /// it can read it), else the Prometheus text format.
    pub(crate) fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The response's Content-Type.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only goes up; samples are named `<name>_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

/// A label set: (name, value) pairs, in the order written.
pub(crate) type Labels<'a> = &'a [(&'a str, &'a str)];

/// A scrape's body being written.
#[derive(Debug)]
pub(crate) struct Exposition {
    format: Format,
    out: String,
    /// The family being written: its base name and kind.
    current: Option<(&'static str, Kind)>,
}

impl Exposition {
    pub(crate) fn new(format: Format) -> Exposition {
        Exposition {
            format,
            out: String::with_capacity(64 << 10),
            current: None,
        }
    }

    /// Starts a family named `name` (without `_total` for a counter).
    pub(crate) fn family(&mut self, name: &'static str, kind: Kind, help: &str) {
        assert!(valid_name(name), "metric name {name:?}");
        assert!(
            !(kind == Kind::Counter && name.ends_with("_total")),
            "counter families are named without _total"
        );
        self.current = Some((name, kind));
        let suffix = match (kind, self.format) {
            (Kind::Counter, Format::Prometheus) => "_total",
            _ => "",
        };
        let kind_name = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name}{suffix} {}", escape_help(help, self.format));
        let _ = writeln!(self.out, "# TYPE {name}{suffix} {kind_name}");
    }

    /// One sample of the current counter or gauge family.
    pub(crate) fn sample(&mut self, labels: Labels<'_>, value: u64) {
        self.sample_text(labels, &value.to_string());
    }

    /// One sample of a gauge that can be negative (a leader id of -1).
    pub(crate) fn sample_signed(&mut self, labels: Labels<'_>, value: i64) {
        self.sample_text(labels, &value.to_string());
    }

    /// One sample in seconds (or any fractional value).
    pub(crate) fn sample_float(&mut self, labels: Labels<'_>, value: f64) {
        self.sample_text(labels, &float(value));
    }

    fn sample_text(&mut self, labels: Labels<'_>, value: &str) {
        let Some((name, kind)) = self.current else {
            panic!("a sample outside a family");
        };
        assert!(kind != Kind::Histogram, "histograms are written whole");
        let suffix = if kind == Kind::Counter { "_total" } else { "" };
        self.line(name, suffix, labels, None, value);
    }

    /// One histogram of the current histogram family: cumulative buckets
    /// with `le` in seconds, +Inf, the sum in seconds and the count.
    pub(crate) fn histogram(&mut self, labels: Labels<'_>, histogram: &HistogramSnapshot) {
        let Some((name, Kind::Histogram)) = self.current else {
            panic!("a histogram outside a histogram family");
        };
        assert_eq!(
            histogram.counts.len(),
            histogram.bounds_us.len() + 1,
            "one bucket per bound and +Inf"
        );
        let mut cumulative = 0u64;
        for (index, count) in histogram.counts.iter().enumerate() {
            cumulative = cumulative.wrapping_add(*count);
            let le = match histogram.bounds_us.get(index) {
                Some(bound_us) => float(micros_to_seconds(*bound_us)),
                None => "+Inf".to_string(),
            };
            self.line(name, "_bucket", labels, Some(&le), &cumulative.to_string());
        }
        assert_eq!(cumulative, histogram.count(), "+Inf counts everything");
        self.line(name, "_sum", labels, None, &float(micros_to_seconds(histogram.sum_us)));
        self.line(name, "_count", labels, None, &cumulative.to_string());
    }

    fn line(&mut self, name: &str, suffix: &str, labels: Labels<'_>, le: Option<&str>, value: &str) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            let le = le.map(|le| ("le", le));
            for (i, (label, text)) in labels.iter().copied().chain(le).enumerate() {
                debug_assert!(valid_name(label) && !label.starts_with("__"), "label name {label:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, text);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// The body: in OpenMetrics, with its `# EOF` terminator.
    pub(crate) fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

fn micros_to_seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// A float as both formats read it: plain decimal, with the special values
/// spelled as the formats spell them.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric names; label names are the same
/// without `:`, and every one here is plain lower case).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str, format: Format) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> HistogramSnapshot {
        HistogramSnapshot {
            bounds_us: &[100, 2_500],
            counts: vec![1, 2, 3],
            sum_us: 1_500_000,
        }
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_has_no_terminator() {
        let mut page = Exposition::new(Format::Prometheus);
        page.family("shardline_requests", Kind::Counter, "Requests served.");
        page.sample(&[("shard", "0"), ("api", "Produce")], 7);
        page.family("shardline_connections_open", Kind::Gauge, "Open connections.");
        page.sample(&[], 3);
        page.family("shardline_raft_leader", Kind::Gauge, "Leader id.");
        page.sample_signed(&[], -1);
        assert_eq!(
            page.finish(),
            "# HELP shardline_requests_total Requests served.\n\
             # TYPE shardline_requests_total counter\n\
             shardline_requests_total{shard=\"0\",api=\"Produce\"} 7\n\
             # HELP shardline_connections_open Open connections.\n\
             # TYPE shardline_connections_open gauge\n\
             shardline_connections_open 3\n\
             # HELP shardline_raft_leader Leader id.\n\
             # TYPE shardline_raft_leader gauge\n\
             shardline_raft_leader -1\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let mut page = Exposition::new(Format::OpenMetrics);
        page.family("shardline_requests", Kind::Counter, "Requests \"served\".");
        page.sample(&[("shard", "1")], 2);
        let body = page.finish();
        assert_eq!(
            body,
            "# HELP shardline_requests Requests \\\"served\\\".\n\
             # TYPE shardline_requests counter\n\
             shardline_requests_total{shard=\"1\"} 2\n\
             # EOF\n"
        );
        assert!(body.ends_with("# EOF\n") && body.matches("# EOF").count() == 1);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut page = Exposition::new(Format::Prometheus);
        page.family(
            "shardline_consumer_group_lag",
            Kind::Gauge,
            "back\\slash\nnewline \"quoted\"",
        );
        page.sample(&[("group", "a\"b\\c\nd"), ("topic", "été")], 1);
        let body = page.finish();
        assert!(
            body.contains("# HELP shardline_consumer_group_lag back\\\\slash\\nnewline \"quoted\"\n"),
            "{body}"
        );
        assert!(
            body.contains("shardline_consumer_group_lag{group=\"a\\\"b\\\\c\\nd\",topic=\"été\"} 1\n"),
            "{body}"
        );
        assert_eq!(body.lines().count(), 3, "an escaped newline never breaks a line");
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_seconds_and_end_with_inf() {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut page = Exposition::new(format);
            page.family("shardline_request_latency_seconds", Kind::Histogram, "Latency.");
            page.histogram(&[("api", "Fetch")], &histogram());
            let body = page.finish();
            let expected = "# HELP shardline_request_latency_seconds Latency.\n\
                 # TYPE shardline_request_latency_seconds histogram\n\
                 shardline_request_latency_seconds_bucket{api=\"Fetch\",le=\"0.0001\"} 1\n\
                 shardline_request_latency_seconds_bucket{api=\"Fetch\",le=\"0.0025\"} 3\n\
                 shardline_request_latency_seconds_bucket{api=\"Fetch\",le=\"+Inf\"} 6\n\
                 shardline_request_latency_seconds_sum{api=\"Fetch\"} 1.5\n\
                 shardline_request_latency_seconds_count{api=\"Fetch\"} 6\n";
            assert!(body.starts_with(expected), "{format:?}:\n{body}");
        }
    }

    #[test]
    fn the_engine_bounds_print_as_plain_seconds() {
        let printed: Vec<String> = super::super::histogram::LATENCY_BOUNDS_US
            .iter()
            .map(|us| float(micros_to_seconds(*us)))
            .collect();
        assert_eq!(printed.first().map(String::as_str), Some("0.00005"));
        assert_eq!(printed.get(4).map(String::as_str), Some("0.001"));
        assert_eq!(printed.last().map(String::as_str), Some("10"));
        for text in &printed {
            assert!(text.parse::<f64>().is_ok(), "{text}");
        }
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert!(Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("shardline_requests"));
        assert!(!valid_name("1abc") && !valid_name("a-b") && !valid_name(""));
    }
}
