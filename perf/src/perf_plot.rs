//! # `perf-plot`: SVG charts of `bench` results
//!
//! The perf scripts (`perf/scripts/`) leave one `bench --json` file per run in
//! a directory per scenario; this binary turns a set of such directories into
//! the SVG charts shown in `docs/benchmarks.md`. It reads only the bench's own
//! JSON (schema 1, see `docs/bench.md`), so a chart can always be redrawn from
//! the recorded baselines in `perf/baselines/` without measuring again.
//!
//! Two charts:
//! - `curve`: publish latency (p50, p99, p99.9) against the throughput the
//!   broker achieved, one line per series and percentile (a series keeps its
//!   colour; p50 thin, p99 thick, p99.9 dashed), points in the order of the
//!   offered rate (`flags.rate`). Runs with `--rate 0` (as fast as
//!   possible: service times, not open-loop latency) are left out.
//! - `shards`: throughput, publish p99 and the broker's CPU (cores, from the
//!   perf scripts' `<run>.cpu.json` beside each result) per shard count
//!   (`broker.shards`), a bar at the median of the runs and a dot per run, so
//!   the spread between repeated runs stays visible.
//!
//! A series is `LABEL=DIR`: every `*.json` file in DIR or its subdirectories
//! (two levels down; `*.cpu.json` and `data-*` directories left out) is one
//! run. Files that are not bench results (no `schema` 1) are skipped with a
//! note on stderr rather than failing the chart.

use std::{
    error::Error,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
};

use clap::{Parser, Subcommand};
use plotters::{
    coord::{types::RangedCoordf64, Shift},
    prelude::*,
};
use serde_json::Value;

/// Chart size in SVG pixels: wide enough for a legend beside four series.
const CHART_SIZE: (u32, u32) = (960, 560);
/// How deep `LABEL=DIR` is searched for results: a scenario's `<series>/<point>.json` layout.
const DIRECTORY_DEPTH_MAX: usize = 2;
/// Colours of successive series (a colour-blind-safe qualitative palette).
const SERIES_COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

#[derive(Debug, Parser)]
#[command(about = "SVG charts of bench JSON results (see docs/benchmarks.md)")]
struct Args {
    #[command(subcommand)]
    chart: Chart,
}

#[derive(Debug, Subcommand)]
enum Chart {
    /// Publish latency p50/p99/p99.9 against achieved msg/s, one line per series and percentile.
    Curve(ChartArgs),
    /// Throughput, publish p99 and broker CPU per shard count (median bar, one dot per run).
    Shards(ChartArgs),
}

#[derive(Debug, clap::Args)]
struct ChartArgs {
    /// SVG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Chart title.
    #[arg(long)]
    title: String,
    /// `LABEL=DIR`: every bench JSON file under DIR is one run of this series (repeatable).
    #[arg(long = "series", required = true)]
    series: Vec<SeriesArg>,
}

/// One `--series LABEL=DIR`.
#[derive(Debug, Clone)]
struct SeriesArg {
    label: String,
    dir: PathBuf,
}

impl FromStr for SeriesArg {
    type Err = String;

    fn from_str(text: &str) -> Result<SeriesArg, String> {
        match text.split_once('=') {
            Some((label, dir)) if !label.is_empty() && !dir.is_empty() => Ok(SeriesArg {
                label: label.to_string(),
                dir: PathBuf::from(dir),
            }),
            _ => Err(format!("expected LABEL=DIR, got {text:?}")),
        }
    }
}

/// What a chart needs from one bench JSON file.
#[derive(Debug, Clone)]
struct Run {
    /// `flags.rate`: offered msg/s, 0 = as fast as possible.
    rate_offered: u64,
    /// `broker.shards` as recorded (None if the bench was not told).
    shards: Option<u64>,
    /// `produce.messages_per_s`: acknowledged in the measured window.
    messages_per_s: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_p99_9_ms: f64,
    /// Broker CPU in cores over the measured window, from the perf scripts' `<run>.cpu.json`
    /// beside the result (`broker_share` × `cores`), if there is one.
    broker_cores: Option<f64>,
}

/// A series: its label and its runs.
#[derive(Debug)]
struct Series {
    label: String,
    runs: Vec<Run>,
}

type Failure = Box<dyn Error>;
/// One figure of a run for a bar panel (None: the run does not have it).
type Metric = dyn Fn(&Run) -> Option<f64>;

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match args.chart {
        Chart::Curve(chart) => load(&chart.series).and_then(|series| draw_curve(&chart.out, &chart.title, &series)),
        Chart::Shards(chart) => load(&chart.series).and_then(|series| draw_shards(&chart.out, &chart.title, &series)),
    };
    match outcome {
        Ok(path) => {
            println!("perf-plot: wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("perf-plot: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load(series: &[SeriesArg]) -> Result<Vec<Series>, Failure> {
    let mut loaded = Vec::with_capacity(series.len());
    for arg in series {
        let runs = read_runs(&arg.dir)?;
        if runs.is_empty() {
            return Err(format!("series {:?}: no bench JSON in {}", arg.label, arg.dir.display()).into());
        }
        loaded.push(Series {
            label: arg.label.clone(),
            runs,
        });
    }
    Ok(loaded)
}

fn read_runs(dir: &Path) -> Result<Vec<Run>, Failure> {
    let mut paths = Vec::new();
    collect_json(dir, DIRECTORY_DEPTH_MAX, &mut paths)?;
    paths.sort();
    let mut runs = Vec::with_capacity(paths.len());
    for path in paths {
        let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        match run_of(&value) {
            Some(mut run) => {
                run.broker_cores = broker_cores_of(&path.with_extension("cpu.json"));
                runs.push(run);
            }
            None => eprintln!(
                "perf-plot: skipping {} (not a bench result with produce latency)",
                path.display()
            ),
        }
    }
    Ok(runs)
}

/// Every `*.json` under `dir` (down to `depth` levels), except the perf scripts' `*.cpu.json`
/// companions and brokers' `data-*` directories.
fn collect_json(dir: &Path, depth: usize, paths: &mut Vec<PathBuf>) -> Result<(), Failure> {
    for entry in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if depth > 0 && !name.starts_with("data-") {
                collect_json(&path, depth - 1, paths)?;
            }
        } else if name.ends_with(".json") && !name.ends_with(".cpu.json") {
            paths.push(path);
        }
    }
    Ok(())
}

/// The chart's view of one bench result; None if it is not one (or has no produce side).
fn run_of(value: &Value) -> Option<Run> {
    if value.get("schema").and_then(Value::as_u64) != Some(1) {
        return None;
    }
    let number = |pointer: &str| value.pointer(pointer).and_then(Value::as_f64);
    let shards = value.pointer("/broker/shards").and_then(|shards| match shards {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    Some(Run {
        rate_offered: value.pointer("/flags/rate").and_then(Value::as_u64)?,
        shards,
        messages_per_s: number("/produce/messages_per_s")?,
        latency_p50_ms: number("/latency_ms/publish/p50_ms")?,
        latency_p99_ms: number("/latency_ms/publish/p99_ms")?,
        latency_p99_9_ms: number("/latency_ms/publish/p99_9_ms")?,
        broker_cores: None,
    })
}

/// Broker CPU (cores) from a perf script's CPU file; None if it is missing or incomplete.
fn broker_cores_of(path: &Path) -> Option<f64> {
    let value: Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    let share = value.get("broker_share").and_then(Value::as_f64)?;
    let cores = value.get("cores").and_then(Value::as_f64)?;
    Some(share * cores)
}

/// Axis labels: whole numbers without decimals, others with one.
fn tick_label(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn colour_of(index: usize) -> RGBColor {
    SERIES_COLOURS
        .get(index % SERIES_COLOURS.len())
        .copied()
        .unwrap_or(BLACK)
}

/// Which percentile a curve line shows, and how it is drawn: the series keeps its colour, the
/// percentile its stroke (p50 thin, p99 thick, p99.9 dashed).
#[derive(Debug, Clone, Copy)]
enum Percentile {
    P50,
    P99,
    P99_9,
}

impl Percentile {
    const ALL: [Percentile; 3] = [Percentile::P50, Percentile::P99, Percentile::P99_9];

    fn name(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P99 => "p99",
            Percentile::P99_9 => "p99.9",
        }
    }

    fn of(self, run: &Run) -> f64 {
        match self {
            Percentile::P50 => run.latency_p50_ms,
            Percentile::P99 => run.latency_p99_ms,
            Percentile::P99_9 => run.latency_p99_9_ms,
        }
    }

    fn style(self, colour: RGBColor) -> ShapeStyle {
        match self {
            Percentile::P50 => ShapeStyle::from(colour).stroke_width(1),
            Percentile::P99 => ShapeStyle::from(colour).stroke_width(3),
            Percentile::P99_9 => ShapeStyle::from(colour.mix(0.8)).stroke_width(1),
        }
    }
}

/// Dash and gap of the p99.9 lines, in pixels.
const DASH_PIXELS: (u32, u32) = (6, 4);
/// Headroom above the highest point, as a factor on the log axis: room for the legend.
const CURVE_HEADROOM: f64 = 15.0;

fn draw_curve(out: &Path, title: &str, series: &[Series]) -> Result<PathBuf, Failure> {
    // Open-loop points only, in order of offered rate.
    let lines: Vec<(&str, Vec<&Run>)> = series
        .iter()
        .map(|s| {
            let mut runs: Vec<&Run> = s.runs.iter().filter(|r| r.rate_offered > 0).collect();
            runs.sort_by_key(|r| r.rate_offered);
            (s.label.as_str(), runs)
        })
        .collect();
    let all = lines.iter().flat_map(|(_, runs)| runs.iter());
    let (mut x_max, mut y_min, mut y_max) = (0.0f64, f64::MAX, 0.0f64);
    for run in all {
        x_max = x_max.max(run.messages_per_s);
        for percentile in Percentile::ALL {
            let y = percentile.of(run);
            if y > 0.0 {
                y_min = y_min.min(y);
                y_max = y_max.max(y);
            }
        }
    }
    if x_max <= 0.0 || y_max <= 0.0 {
        return Err("no open-loop (rate > 0) runs with latency to plot".into());
    }
    let root = SVGBackend::new(out, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..x_max * 1.05, (y_min * 0.8..y_max * CURVE_HEADROOM).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (acknowledged msg/s)")
        .y_desc("publish latency (ms, log scale)")
        .x_label_formatter(&|x| format!("{}k", (x / 1000.0).round()))
        .y_label_formatter(&|y| tick_label(*y))
        .draw()?;
    for (index, (label, runs)) in lines.iter().enumerate() {
        let colour = colour_of(index);
        for percentile in Percentile::ALL {
            let style = percentile.style(colour);
            let points: Vec<(f64, f64)> = runs.iter().map(|r| (r.messages_per_s, percentile.of(r))).collect();
            match percentile {
                Percentile::P99_9 => {
                    chart.draw_series(DashedLineSeries::new(
                        points.clone(),
                        DASH_PIXELS.0,
                        DASH_PIXELS.1,
                        style,
                    ))?;
                }
                Percentile::P50 | Percentile::P99 => {
                    let drawn = chart.draw_series(LineSeries::new(points.clone(), style))?;
                    // One legend entry per series (its colour), on the p99 line.
                    if matches!(percentile, Percentile::P99) {
                        let legend_style = style;
                        drawn
                            .label(label.to_string())
                            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], legend_style));
                    }
                }
            }
            chart.draw_series(points.into_iter().map(|point| Circle::new(point, 3, style.filled())))?;
        }
    }
    // One legend entry per percentile (its stroke), in grey.
    for percentile in Percentile::ALL {
        let style = percentile.style(RGBColor(90, 90, 90));
        let dashed = matches!(percentile, Percentile::P99_9);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
            .label(format!("{} (all series)", percentile.name()))
            .legend(move |(x, y)| {
                // Three pieces, touching for a solid stroke, apart for the dashed one.
                let pieces: [(i32, i32); 3] = if dashed {
                    [(0, 5), (9, 14), (18, 22)]
                } else {
                    [(0, 8), (8, 15), (15, 22)]
                };
                let [first, second, third] = pieces;
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(first.0, 0), (first.1, 0)], style)
                    + PathElement::new(vec![(second.0, 0), (second.1, 0)], style)
                    + PathElement::new(vec![(third.0, 0), (third.1, 0)], style)
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(out.to_path_buf())
}

/// Median of a non-empty list (mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values.get(middle).copied()
    } else {
        Some((values.get(middle.checked_sub(1)?)? + values.get(middle)?) / 2.0)
    }
}

fn draw_shards(out: &Path, title: &str, series: &[Series]) -> Result<PathBuf, Failure> {
    let mut shard_counts: Vec<u64> = series
        .iter()
        .flat_map(|s| s.runs.iter().filter_map(|r| r.shards))
        .collect();
    shard_counts.sort_unstable();
    shard_counts.dedup();
    if shard_counts.is_empty() {
        return Err("no run records broker.shards (pass --shards to bench)".into());
    }
    let root = SVGBackend::new(out, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((1, 3));
    let throughput = |r: &Run| Some(r.messages_per_s / 1000.0);
    let p99 = |r: &Run| Some(r.latency_p99_ms);
    let cores = |r: &Run| r.broker_cores;
    let metrics: [(&str, &Metric); 3] = [
        ("throughput (k msg/s)", &throughput),
        ("publish p99 (ms)", &p99),
        ("broker CPU (cores)", &cores),
    ];
    for (panel, (name, metric)) in panels.iter().zip(metrics) {
        draw_shard_panel(panel, series, &shard_counts, name, metric)?;
    }
    root.present()?;
    Ok(out.to_path_buf())
}

fn draw_shard_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    series: &[Series],
    shard_counts: &[u64],
    metric_name: &str,
    metric: &Metric,
) -> Result<(), Failure> {
    let y_max = series
        .iter()
        .flat_map(|s| s.runs.iter().filter_map(metric))
        .fold(0.0f64, f64::max);
    let slots = shard_counts.len() as f64;
    let mut chart: ChartContext<SVGBackend, Cartesian2d<RangedCoordf64, RangedCoordf64>> = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..slots - 0.5, 0.0..(y_max * 1.2).max(f64::MIN_POSITIVE))?;
    let labels: Vec<String> = shard_counts
        .iter()
        .map(|n| format!("{n} shard{}", if *n == 1 { "" } else { "s" }))
        .collect();
    let x_label = |x: &f64| {
        let nearest = x.round();
        if (x - nearest).abs() > 0.01 || nearest < 0.0 {
            return String::new();
        }
        // The slot index is a small non-negative integer here.
        labels.get(nearest as usize).cloned().unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(shard_counts.len() * 2 + 1)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|y| tick_label(*y))
        .y_desc(metric_name)
        .draw()?;
    let group_width = 0.8;
    let bar_width = group_width / series.len().max(1) as f64;
    for (series_index, s) in series.iter().enumerate() {
        let colour = colour_of(series_index);
        for (slot, shards) in shard_counts.iter().enumerate() {
            let mut values: Vec<f64> = s
                .runs
                .iter()
                .filter(|r| r.shards == Some(*shards))
                .filter_map(metric)
                .collect();
            let Some(middle) = median(&mut values) else { continue };
            let left = slot as f64 - group_width / 2.0 + bar_width * series_index as f64;
            let bar = Rectangle::new(
                [(left + bar_width * 0.1, 0.0), (left + bar_width * 0.9, middle)],
                colour.mix(0.6).filled(),
            );
            let element = chart.draw_series(std::iter::once(bar))?;
            if slot == 0 {
                element
                    .label(s.label.clone())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.mix(0.6).filled()));
            }
            let centre = left + bar_width / 2.0;
            chart.draw_series(
                values
                    .iter()
                    .map(|v| Circle::new((centre, *v), 3, ShapeStyle::from(BLACK).filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
