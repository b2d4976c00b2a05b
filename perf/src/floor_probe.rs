//! # `floor-probe`: the smallest request/response this machine allows
//!
//! A broker's tail latency means little until it is set against what the
//! machine itself does to the smallest possible server. This probe is that
//! server and its client, with nothing else in the way:
//!
//! - `floor-probe serve`: one thread, blocking sockets, one connection at a
//!   time. It reads a request of `--request-bytes` (1 KiB by default, the
//!   message size of the broker runs it is compared with) and answers with
//!   the request's first 16 bytes. No runtime, no allocation per request, no
//!   parsing.
//! - `floor-probe load`: an open-loop client of the same shape as `bench`.
//!   Request *n* is meant to be sent at `start + n / rate`; a sending thread
//!   sleeps on the kernel timer until then and writes it (late requests go at
//!   once and keep their intended time), a reading thread blocked in `read(2)`
//!   timestamps each reply. Latency runs from the intended send time to the
//!   reply, so a stall of the server, the client or the machine cannot hide
//!   (coordinated omission). HdrHistogram, 1 µs … 1 h, 3 significant digits;
//!   warm-up requests are sent and answered but not recorded.
//!
//! Pinned the way the perf harness pins brokers (server on CPU 0, client on
//! CPU 1, `taskset`), its tails are the floor this VM allows: timer wake-ups,
//! cross-core wake-ups, loopback TCP and the hypervisor's hiccups, with no
//! broker work at all. No broker can beat it; issue 11 judges the broker's
//! publish p99.9 against 2 × this probe's p99.9 measured in the same run.
//!
//! The throughput floor, for consume figures: `floor-probe stream-serve`
//! writes zeros to a connection in 1 MiB chunks from one blocking thread,
//! and `floor-probe stream-load` reads them and counts the bytes of its
//! measured window: what one loopback TCP stream carries on this VM with no
//! broker work, pinned the same way (`just perf-consume` sets a consumer's
//! MB/s against it).
//!
//! The request carries what the reply echoes: bytes 0..8 the sequence number,
//! bytes 8..16 the intended send time as nanoseconds after the client's
//! schedule start, both big-endian; the rest is zeros. The client checks that
//! replies come back in order and carry the times it sent.
//!
//! `load --json FILE` writes the subset of `bench --json` (schema 1) that the
//! perf harness reads, so the harness's tables read both: the round trip is
//! `latency_ms.publish`, requests are `produce.messages_*`.
//!
//! Bounds: the schedule is `rate × (warmup + duration)` requests; every read
//! and write wakes every 200 ms to check a deadline of the window plus 5 s;
//! the server drops a connection silent for 60 s.

// The machine stamp is log-bench's; the binary's root is this file.
#[path = "log_bench/machine.rs"]
mod machine;

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::machine::Machine;

/// Reply size: the request's sequence number and intended send time, echoed.
const REPLY_BYTES: usize = 16;
/// Smallest request: it must carry what the reply echoes.
const REQUEST_BYTES_MIN: usize = REPLY_BYTES;
/// Largest request: 1 MiB is far above the message sizes this is compared with.
const REQUEST_BYTES_MAX: usize = 1 << 20;
/// Highest rate: above the ≈ 290 k sends/s one loopback stream manages here (design note §3).
const RATE_MAX: u64 = 1_000_000;
/// Longest warm-up or measured window: one hour.
const WINDOW_S_MAX: f64 = 3600.0;
/// After the last intended send time, replies are awaited this long at most.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// A blocked read or write wakes this often to check its deadline.
const IO_POLL: Duration = Duration::from_millis(200);
/// The server drops a connection silent this long, so a vanished client cannot hold its one thread.
const SERVER_IDLE_MAX: Duration = Duration::from_secs(60);
/// Histogram range in µs (1 µs … 1 h) and precision, as `bench` uses.
const LATENCY_US_LOW: u64 = 1;
const LATENCY_US_HIGH: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;
/// The schedule starts this long after the connection is up, so the first sends are not late by
/// construction.
const START_DELAY: Duration = Duration::from_millis(20);
/// The progress line's period.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Largest `write(2)` / `read(2)` of the stream probe.
const STREAM_CHUNK_BYTES_MAX: usize = 64 << 20;

/// The smallest request/response server and an open-loop client for it: the latency floor.
#[derive(Debug, Parser)]
#[command(name = "floor-probe", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer each request with its first 16 bytes: one thread, blocking, one connection at a time,
    /// until killed.
    Serve {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Request size in bytes (the client must use the same).
        #[arg(long, default_value_t = 1024)]
        request_bytes: usize,
    },
    /// Open-loop requests at a fixed rate, latency from the intended send time to the reply.
    Load(LoadArgs),
    /// The throughput floor: write zeros to each connection as fast as one blocking thread can,
    /// one connection at a time, until the client closes it; until killed.
    StreamServe {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Bytes per `write(2)`.
        #[arg(long, default_value_t = 1 << 20)]
        chunk_bytes: usize,
    },
    /// Read a `stream-serve` connection for a warm-up, then count the bytes of the measured window.
    StreamLoad(StreamArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct StreamArgs {
    /// The server (`floor-probe stream-serve`).
    #[arg(long)]
    connect: SocketAddr,
    /// Bytes per `read(2)`.
    #[arg(long, default_value_t = 1 << 20)]
    chunk_bytes: usize,
    /// Seconds read before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Write the result as JSON (`stream.mb_per_s` and the machine stamp).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
struct LoadArgs {
    /// The server (`floor-probe serve`).
    #[arg(long)]
    connect: SocketAddr,
    /// Requests per second, open loop.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Request size in bytes (as the server's).
    #[arg(long, default_value_t = 1024)]
    request_bytes: usize,
    /// Seconds sent and answered before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Write the result as JSON (the fields of `bench --json` the perf harness reads).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let outcome = match Args::parse().command {
        Command::Serve { listen, request_bytes } => serve(listen, request_bytes),
        Command::Load(args) => load(&args),
        Command::StreamServe { listen, chunk_bytes } => stream_serve(listen, chunk_bytes),
        Command::StreamLoad(args) => stream_load(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("floor-probe: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `value` of the byte-count flag `--flag` lies in `min..=max`.
fn check_bytes(flag: &str, value: usize, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("--{flag} {value}: use {min} to {max}"))
    }
}

fn check_request_bytes(request_bytes: usize) -> Result<(), String> {
    check_bytes("request-bytes", request_bytes, REQUEST_BYTES_MIN, REQUEST_BYTES_MAX)
}

/// The listener of `serve` and `stream-serve`, and the address it got.
fn listen_on(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("listener address: {e}"))?;
    Ok((listener, bound))
}

/// The warm-up and measured windows of `--warmup-s` and `--duration-s`.
fn windows(warmup_s: f64, duration_s: f64) -> Result<(Duration, Duration), String> {
    let window = |name: &str, seconds: f64| {
        if seconds.is_finite() && (0.0..=WINDOW_S_MAX).contains(&seconds) {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(format!("--{name} {seconds}: use 0 to {WINDOW_S_MAX} s"))
        }
    };
    let warmup = window("warmup-s", warmup_s)?;
    let duration = window("duration-s", duration_s)?;
    if duration.is_zero() {
        return Err("--duration-s must be above 0".into());
    }
    Ok((warmup, duration))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write_json(path: &std::path::Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("encoding the JSON result: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
}

fn serve(listen: SocketAddr, request_bytes: usize) -> Result<(), String> {
    check_request_bytes(request_bytes)?;
    let (listener, bound) = listen_on(listen)?;
    println!("floor-probe: serving {request_bytes} B requests with {REPLY_BYTES} B replies on {bound}");
    let mut request = vec![0u8; request_bytes];
    // Runs until the process is killed; each connection ends at EOF, on an error, or after
    // SERVER_IDLE_MAX of silence.
    for stream in listener.incoming() {
        match stream.and_then(|stream| answer(stream, &mut request)) {
            Ok(answered) => println!("floor-probe: connection closed after {answered} requests"),
            Err(e) => eprintln!("floor-probe: connection ended: {e}"),
        }
    }
    Ok(())
}

/// Serves one connection until EOF: read a whole request, write its first REPLY_BYTES back.
fn answer(mut stream: TcpStream, request: &mut [u8]) -> io::Result<u64> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SERVER_IDLE_MAX))?;
    stream.set_write_timeout(Some(SERVER_IDLE_MAX))?;
    let mut answered = 0u64;
    loop {
        match stream.read_exact(request) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(answered),
            Err(e) => return Err(e),
        }
        let reply = request
            .first_chunk::<REPLY_BYTES>()
            .ok_or_else(|| io::Error::other("request shorter than a reply"))?;
        stream.write_all(reply)?;
        answered += 1;
    }
}

fn check_chunk_bytes(chunk_bytes: usize) -> Result<(), String> {
    check_bytes("chunk-bytes", chunk_bytes, 1, STREAM_CHUNK_BYTES_MAX)
}

fn stream_serve(listen: SocketAddr, chunk_bytes: usize) -> Result<(), String> {
    check_chunk_bytes(chunk_bytes)?;
    let (listener, bound) = listen_on(listen)?;
    println!("floor-probe: streaming {chunk_bytes} B writes on {bound}");
    let chunk = vec![0u8; chunk_bytes];
    // Until the process is killed; each connection ends when the client closes it, on an error,
    // or when a write blocks for SERVER_IDLE_MAX.
    for stream in listener.incoming() {
        let written = stream.and_then(|mut stream| {
            stream.set_write_timeout(Some(SERVER_IDLE_MAX))?;
            let mut written = 0u64;
            loop {
                match stream.write(&chunk) {
                    Ok(0) => return Ok(written),
                    Ok(n) => written += n as u64,
                    Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                        return Ok(written)
                    }
                    Err(e) => return Err(e),
                }
            }
        });
        match written {
            Ok(bytes) => println!("floor-probe: stream closed after {bytes} bytes"),
            Err(e) => eprintln!("floor-probe: stream ended: {e}"),
        }
    }
    Ok(())
}

fn stream_load(args: &StreamArgs) -> Result<(), String> {
    check_chunk_bytes(args.chunk_bytes)?;
    let (warmup, duration) = windows(args.warmup_s, args.duration_s)?;
    let machine = Machine::probe(std::path::Path::new("."));
    let started_at_unix_ms = now_unix_ms();
    let mut stream = TcpStream::connect_timeout(&args.connect, Duration::from_secs(5)).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `floor-probe stream-serve` running?)",
            args.connect
        )
    })?;
    stream
        .set_read_timeout(Some(IO_POLL))
        .map_err(|e| format!("read timeout: {e}"))?;
    let mut buffer = vec![0u8; args.chunk_bytes];
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut in_window = 0u64;
    // Bounded by `end`: every read wakes within IO_POLL.
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Err("the server closed the stream early".to_owned()),
            Ok(n) if now >= measure_from => in_window += n as u64,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("reading the stream: {e}")),
        }
    }
    let seconds = duration.as_secs_f64();
    let mb_per_s = in_window as f64 / seconds / 1e6;
    println!(
        "floor-probe stream: {mb_per_s:.1} MB/s over {seconds:.1} s ({in_window} bytes, {} B reads) | {}",
        args.chunk_bytes,
        machine.header_line()
    );
    if let Some(path) = &args.json {
        let value = json!({
            "schema": 1,
            "tool": "floor-probe",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "started_at_unix_ms": started_at_unix_ms,
            "host": {
                "hostname": machine.hostname,
                "kernel": machine.kernel,
                "cores": machine.cores,
                "cpu_model": machine.cpu_model,
            },
            "workload": "stream",
            "flags": {
                "connect": args.connect.to_string(),
                "chunk_bytes": args.chunk_bytes,
                "warmup_s": warmup.as_secs_f64(),
                "duration_s": seconds,
            },
            "window": { "warmup_s": warmup.as_secs_f64(), "measured_s": seconds },
            "stream": { "bytes_in_window": in_window, "mb_per_s": mb_per_s },
        });
        write_json(path, &value)?;
    }
    Ok(())
}

/// The client's schedule: request n is due `n / rate` after the start; the first `warmup` is not
/// recorded, the next `duration` is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    rate: u64,
    warmup: Duration,
    duration: Duration,
    /// Requests in the whole schedule (warm-up and measured window).
    total: u64,
}

impl Plan {
    fn new(args: &LoadArgs) -> Result<Plan, String> {
        check_request_bytes(args.request_bytes)?;
        if !(1..=RATE_MAX).contains(&args.rate) {
            return Err(format!("--rate {}: use 1 to {RATE_MAX} requests/s", args.rate));
        }
        let (warmup, duration) = windows(args.warmup_s, args.duration_s)?;
        let total_nanos = (warmup + duration).as_nanos() * u128::from(args.rate) / 1_000_000_000;
        let total = u64::try_from(total_nanos).map_err(|_| "schedule too long".to_string())?;
        Ok(Plan {
            rate: args.rate,
            warmup,
            duration,
            total,
        })
    }

    /// When request `sequence` is due, after the schedule's start.
    fn offset(&self, sequence: u64) -> Duration {
        let nanos = u128::from(sequence) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Is a request due at `offset` inside the measured window?
    fn measured(&self, offset: Duration) -> bool {
        offset >= self.warmup && offset < self.warmup + self.duration
    }

    /// After the schedule's start, nothing is awaited past this.
    fn deadline(&self) -> Duration {
        self.warmup + self.duration + DRAIN_MAX
    }
}

/// Bytes 0..8: sequence number; 8..16: intended send time, ns after the schedule's start.
fn encode_header(request: &mut [u8], sequence: u64, offset: Duration) -> Result<(), String> {
    let header = request
        .first_chunk_mut::<REPLY_BYTES>()
        .ok_or("request shorter than its header")?;
    let (sequence_bytes, offset_bytes) = header.split_at_mut(8);
    let offset_nanos = u64::try_from(offset.as_nanos()).map_err(|_| "offset too large")?;
    sequence_bytes.copy_from_slice(&sequence.to_be_bytes());
    offset_bytes.copy_from_slice(&offset_nanos.to_be_bytes());
    Ok(())
}

fn decode_header(reply: &[u8; REPLY_BYTES]) -> (u64, Duration) {
    let (sequence, offset) = reply.split_at(8);
    let word = |bytes: &[u8]| bytes.try_into().map_or(u64::MAX, u64::from_be_bytes);
    (word(sequence), Duration::from_nanos(word(offset)))
}

fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(LATENCY_US_LOW, LATENCY_US_HIGH, SIGNIFICANT_DIGITS) {
        Ok(histogram) => histogram,
        // The bounds are constants hdrhistogram accepts; this arm cannot run.
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

fn record_us(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(LATENCY_US_LOW);
    histogram.saturating_record(us);
}

/// Requests sent and replies read so far, for the progress line.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
}

/// What one load run measured.
struct Measured {
    round_trip: Histogram<u64>,
    send_delay: Histogram<u64>,
    elapsed: Duration,
}

fn load(args: &LoadArgs) -> Result<(), String> {
    let plan = Plan::new(args)?;
    let machine = Machine::probe(std::path::Path::new("."));
    let started_at_unix_ms = now_unix_ms();
    let measured = run_load(args, plan)?;
    print!("{}", table(args, &machine, &measured));
    if let Some(path) = &args.json {
        let value = result_json(args, &plan, &machine, started_at_unix_ms, &measured);
        write_json(path, &value)?;
        eprintln!("floor-probe: wrote {}", path.display());
    }
    Ok(())
}

/// Connects, runs the sending and reading threads over the schedule, prints progress.
fn run_load(args: &LoadArgs, plan: Plan) -> Result<Measured, String> {
    let stream = TcpStream::connect_timeout(&args.connect, Duration::from_secs(5)).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `floor-probe serve` running?)",
            args.connect
        )
    })?;
    stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    stream
        .set_read_timeout(Some(IO_POLL))
        .map_err(|e| format!("read timeout: {e}"))?;
    stream
        .set_write_timeout(Some(IO_POLL))
        .map_err(|e| format!("write timeout: {e}"))?;
    let reader_stream = stream.try_clone().map_err(|e| format!("cloning the socket: {e}"))?;
    let counters = Arc::new(Counters::default());
    let start = Instant::now() + START_DELAY;
    let request_bytes = args.request_bytes;
    let sender = {
        let counters = Arc::clone(&counters);
        thread::spawn(move || send_all(stream, request_bytes, plan, start, &counters))
    };
    let reader = {
        let counters = Arc::clone(&counters);
        thread::spawn(move || read_all(reader_stream, plan, start, &counters))
    };
    // Both threads stop by the plan's deadline; the progress loop waits a little past it at most.
    let give_up = start + plan.deadline() + DRAIN_MAX;
    let mut next_progress = start + PROGRESS_EVERY;
    let mut last = (0u64, 0u64);
    while !(sender.is_finished() && reader.is_finished()) && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now >= next_progress {
            let counts = (
                counters.sent.load(Ordering::Relaxed),
                counters.answered.load(Ordering::Relaxed),
            );
            if !args.quiet {
                eprintln!("{}", progress_line(&plan, now - start, counts, last));
            }
            last = counts;
            next_progress += PROGRESS_EVERY;
        }
    }
    if !(sender.is_finished() && reader.is_finished()) {
        return Err("the load threads did not stop by their deadline".into());
    }
    let send_delay = sender.join().map_err(|_| "the sending thread panicked".to_string())??;
    let round_trip = reader.join().map_err(|_| "the reading thread panicked".to_string())??;
    Ok(Measured {
        round_trip,
        send_delay,
        elapsed: start.elapsed(),
    })
}

/// `[   3.0s] measuring | sent 5000 req/s | answered 5000 req/s`: the phase words are the ones
/// `bench` prints, which the perf harness's CPU sampler reads.
fn progress_line(plan: &Plan, elapsed: Duration, counts: (u64, u64), last: (u64, u64)) -> String {
    let phase = if elapsed < plan.warmup {
        "warm-up"
    } else if elapsed < plan.warmup + plan.duration {
        "measuring"
    } else {
        "draining"
    };
    let period = PROGRESS_EVERY.as_secs_f64();
    format!(
        "[{:>6.1}s] {phase:<9} | sent {:>8.0} req/s | answered {:>8.0} req/s",
        elapsed.as_secs_f64(),
        counts.0.saturating_sub(last.0) as f64 / period,
        counts.1.saturating_sub(last.1) as f64 / period,
    )
}

/// The sending thread: each request at its intended time (at once if late). Returns the send
/// delay (intended time → written) of the measured requests.
fn send_all(
    mut stream: TcpStream,
    request_bytes: usize,
    plan: Plan,
    start: Instant,
    counters: &Counters,
) -> Result<Histogram<u64>, String> {
    let mut request = vec![0u8; request_bytes];
    let mut send_delay = histogram();
    let deadline = start + plan.deadline();
    for sequence in 0..plan.total {
        let offset = plan.offset(sequence);
        let intended = start + offset;
        let now = Instant::now();
        if intended > now {
            thread::sleep(intended - now);
        }
        encode_header(&mut request, sequence, offset)?;
        write_fully(&mut stream, &request, deadline).map_err(|e| format!("sending request {sequence}: {e}"))?;
        if plan.measured(offset) {
            record_us(&mut send_delay, intended.elapsed());
        }
        counters.sent.store(sequence + 1, Ordering::Relaxed);
    }
    Ok(send_delay)
}

/// The reading thread: every reply, in order, timestamped as soon as `read(2)` returns it.
/// Returns the round trip (intended send time → reply read) of the measured requests.
fn read_all(mut stream: TcpStream, plan: Plan, start: Instant, counters: &Counters) -> Result<Histogram<u64>, String> {
    let mut reply = [0u8; REPLY_BYTES];
    let mut round_trip = histogram();
    let deadline = start + plan.deadline();
    for expected in 0..plan.total {
        read_fully(&mut stream, &mut reply, deadline).map_err(|e| format!("reading reply {expected}: {e}"))?;
        let now = Instant::now();
        let (sequence, offset) = decode_header(&reply);
        if sequence != expected || offset != plan.offset(expected) {
            return Err(format!(
                "reply {sequence} (sent at +{offset:?}) arrived when {expected} was due: the server must echo \
                 requests in order"
            ));
        }
        if plan.measured(offset) {
            record_us(&mut round_trip, now.saturating_duration_since(start + offset));
        }
        counters.answered.store(expected + 1, Ordering::Relaxed);
    }
    Ok(round_trip)
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// write_all that survives the socket's IO_POLL timeouts (keeping what was written) until `deadline`.
fn write_fully(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed")),
            Ok(written) => bytes = bytes.get(written..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) && Instant::now() < deadline => {}
            Err(e) if timed_out(&e) => return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// read_exact that survives the socket's IO_POLL timeouts (keeping what was read) until `deadline`.
fn read_fully(stream: &mut TcpStream, buffer: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match stream.read(rest) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
            Ok(read) => filled += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) && Instant::now() < deadline => {}
            Err(e) if timed_out(&e) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply by the deadline")),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `{count, min_ms, mean_ms, p50_ms, …, max_ms}` as `bench --json` writes a histogram.
fn summary(histogram: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    if histogram.is_empty() {
        return json!({"count": 0, "min_ms": null, "mean_ms": null, "p50_ms": null, "p90_ms": null,
            "p99_ms": null, "p99_9_ms": null, "p99_99_ms": null, "max_ms": null});
    }
    let at = |quantile: f64| ms(histogram.value_at_quantile(quantile));
    json!({
        "count": histogram.len(),
        "min_ms": ms(histogram.min()),
        "mean_ms": histogram.mean() / 1000.0,
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "p99_9_ms": at(0.999),
        "p99_99_ms": at(0.9999),
        "max_ms": ms(histogram.max()),
    })
}

fn result_json(args: &LoadArgs, plan: &Plan, machine: &Machine, started_at_unix_ms: u64, measured: &Measured) -> Value {
    let in_window = measured.round_trip.len();
    let seconds = plan.duration.as_secs_f64();
    json!({
        "schema": 1,
        "tool": "floor-probe",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "started_at_unix_ms": started_at_unix_ms,
        "host": {
            "hostname": machine.hostname,
            "kernel": machine.kernel,
            "cores": machine.cores,
            "cpu_model": machine.cpu_model,
        },
        "broker": {
            "bootstrap": args.connect.to_string(),
            "version": "floor-probe serve (one thread, blocking)",
            "shards": null,
            "fsync": null,
        },
        "flags": {
            "connect": args.connect.to_string(),
            "rate": plan.rate,
            "request_bytes": args.request_bytes,
            "reply_bytes": REPLY_BYTES,
            "warmup_s": plan.warmup.as_secs_f64(),
            "duration_s": seconds,
        },
        "workload": "request-response",
        "window": {
            "warmup_s": plan.warmup.as_secs_f64(),
            "measured_s": seconds,
            "elapsed_s": measured.elapsed.as_secs_f64(),
        },
        // Named as bench names them, so the harness reads both: a request is a "message".
        "produce": {
            "messages_sent": plan.total,
            "messages_acknowledged": plan.total,
            "messages_acknowledged_in_window": in_window,
            "bytes_acknowledged_in_window": in_window * args.request_bytes as u64,
            "messages_per_s": in_window as f64 / seconds,
            "mb_per_s": (in_window * args.request_bytes as u64) as f64 / seconds / 1e6,
            "requests": plan.total,
            "messages_not_sent": 0,
            "messages_unacknowledged": 0,
        },
        "consume": null,
        "latency_ms": {
            "publish": summary(&measured.round_trip),
            "end_to_end": null,
            "send_delay": summary(&measured.send_delay),
        },
        "fsync_probe": null,
    })
}

fn table(args: &LoadArgs, machine: &Machine, measured: &Measured) -> String {
    let mut out = format!(
        "floor-probe | {}\n  {} B requests, {REPLY_BYTES} B replies to {}, rate {} req/s open loop; measured {} s after \
         {} s warm-up\n\n",
        machine.header_line(),
        args.request_bytes,
        args.connect,
        args.rate,
        args.duration_s,
        args.warmup_s,
    );
    out.push_str(&format!(
        "{:<12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   (latency ms)\n",
        "", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    ));
    for (name, histogram) in [
        ("round trip", &measured.round_trip),
        ("send delay", &measured.send_delay),
    ] {
        let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        out.push_str(&format!(
            "{name:<12} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
            histogram.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            at(0.9999),
            histogram.max() as f64 / 1000.0,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rate: u64, warmup_s: f64, duration_s: f64) -> LoadArgs {
        LoadArgs {
            connect: SocketAddr::from(([127, 0, 0, 1], 1)),
            rate,
            request_bytes: 1024,
            warmup_s,
            duration_s,
            json: None,
            quiet: true,
        }
    }

    #[test]
    fn the_schedule_spaces_requests_and_splits_warmup_from_the_window() -> Result<(), String> {
        let plan = Plan::new(&args(4000, 0.5, 1.0))?;
        assert_eq!(plan.total, 6000);
        assert_eq!(plan.offset(0), Duration::ZERO);
        assert_eq!(plan.offset(3), Duration::from_micros(750));
        assert!(!plan.measured(plan.offset(1999)));
        assert!(plan.measured(plan.offset(2000)));
        assert!(plan.measured(plan.offset(5999)));
        assert!(!plan.measured(plan.offset(6000)));
        Ok(())
    }

    #[test]
    fn flags_out_of_range_are_refused() {
        assert!(Plan::new(&args(0, 1.0, 1.0)).is_err());
        assert!(Plan::new(&args(RATE_MAX + 1, 1.0, 1.0)).is_err());
        assert!(Plan::new(&args(1000, -1.0, 1.0)).is_err());
        assert!(Plan::new(&args(1000, 1.0, 0.0)).is_err());
        assert!(Plan::new(&args(1000, 1.0, f64::NAN)).is_err());
        let mut small = args(1000, 1.0, 1.0);
        small.request_bytes = REQUEST_BYTES_MIN - 1;
        assert!(Plan::new(&small).is_err());
    }

    #[test]
    fn the_header_round_trips() -> Result<(), String> {
        let mut request = vec![0u8; 1024];
        encode_header(&mut request, 77, Duration::from_nanos(123_456_789))?;
        let reply: [u8; REPLY_BYTES] = *request.first_chunk().ok_or("short")?;
        assert_eq!(decode_header(&reply), (77, Duration::from_nanos(123_456_789)));
        assert!(encode_header(&mut [0u8; 8], 1, Duration::ZERO).is_err());
        Ok(())
    }

    /// The server and the client against each other over loopback: every request is answered and
    /// every measured one is recorded.
    #[test]
    fn a_short_run_against_the_server_records_every_measured_request() -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let server = thread::spawn(move || -> io::Result<u64> {
            let (stream, _) = listener.accept()?;
            answer(stream, &mut [0u8; 1024])
        });
        let mut load_args = args(2000, 0.1, 0.2);
        load_args.connect = address;
        let plan = Plan::new(&load_args)?;
        let measured = run_load(&load_args, plan)?;
        assert_eq!(measured.round_trip.len(), 400);
        assert_eq!(measured.send_delay.len(), 400);
        assert!(measured.round_trip.min() >= LATENCY_US_LOW);
        // The client's socket closed when run_load returned: the server sees EOF.
        let answered = server
            .join()
            .map_err(|_| "server panicked")?
            .map_err(|e| e.to_string())?;
        assert_eq!(answered, plan.total);
        Ok(())
    }
}
