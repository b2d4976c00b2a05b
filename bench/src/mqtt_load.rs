//! `bench --protocol mqtt`: open-loop MQTT load. `--producers` publishers
//! send to `--topic` at `--rate` messages/s in all, each message carrying
//! its intended send time; `--consumers` subscribers (each subscribed to
//! the topic, so every message is delivered to each: fan-out) measure
//! publish → deliver latency from that intended time, so a broker that
//! falls behind is charged for the wait (no coordinated omission). With
//! `--qos 1` publishers also measure the PUBACK latency. Publishers and
//! subscribers run in this process, so one monotonic clock times both.
//!
//! Threads: one per subscriber; one writer per publisher and, at QoS 1, one
//! PUBACK reader beside it. Each keeps its own histogram and merges it at
//! the end.

use std::{
    collections::HashMap,
    net::{TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    cli::Args,
    error::BenchError,
    latency::{LatencyHistogram, LatencySummary},
    mqtt::{self, Incoming},
    run::RunClock,
    schedule::{Pacer, RateSchedule},
};

/// Wait before the schedule starts, so every connection is set up first.
const START_DELAY: Duration = Duration::from_millis(300);
/// Bound on connecting and on each exchange of the set-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A subscriber's socket read timeout: how often it looks at the clock.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// QoS 1 publications a publisher keeps unacknowledged before it waits.
const IN_FLIGHT_MAX: usize = 10_000;
/// Bytes at the front of every payload: intended send time (ns since the
/// UNIX epoch, from the run's anchor) and the message's index.
const PAYLOAD_HEADER_BYTES: usize = 16;

/// The start line: every subscriber has subscribed (or failed) before the
/// schedule, and its clock, are fixed.
struct Start {
    subscribed: std::sync::Barrier,
    go: std::sync::Barrier,
    clock: std::sync::OnceLock<RunClock>,
}

impl Start {
    /// Waits for the others, then for the clock (set between the two
    /// barriers, so always there).
    fn wait(&self) -> Option<RunClock> {
        self.subscribed.wait();
        self.go.wait();
        self.clock.get().copied()
    }
}

/// What one run measured.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    deliver: Mutex<LatencyHistogram>,
    ack: Mutex<LatencyHistogram>,
    publishers_done: AtomicBool,
}

fn connect(address: &str, client_id: &str) -> Result<TcpStream, BenchError> {
    let connect_error = |source| BenchError::Connect {
        address: address.to_string(),
        source,
    };
    let resolved = address
        .to_socket_addrs()
        .map_err(connect_error)?
        .next()
        .ok_or_else(|| connect_error(std::io::Error::other("no address")))?;
    let mut stream = TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT).map_err(connect_error)?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
    mqtt::send(&mut stream, &mqtt::connect(client_id), address)?;
    match mqtt::read_packet(&mut stream, address)? {
        Some(Incoming::ConnAck(0)) => Ok(stream),
        other => Err(BenchError::Protocol {
            address: address.to_string(),
            detail: format!("CONNECT of {client_id} answered {other:?}"),
        }),
    }
}

/// A subscriber: subscribe, then count and time deliveries until every
/// expected message arrived or the drain deadline.
fn subscriber(args: &Args, index: u32, totals: &Totals, start: &Start) -> Result<(), BenchError> {
    let address = args.brokers.first().map_or("", String::as_str);
    let connected = connect(address, &format!("bench-sub-{}-{index}", std::process::id())).and_then(|mut stream| {
        mqtt::send(&mut stream, &mqtt::subscribe(1, &args.topic, args.qos), address)?;
        match mqtt::read_packet(&mut stream, address)? {
            Some(Incoming::SubAck(1, granted)) if granted != 0x80 => Ok(stream),
            other => Err(BenchError::Protocol {
                address: address.to_string(),
                detail: format!("SUBSCRIBE answered {other:?}"),
            }),
        }
    });
    let clock = start
        .wait()
        .ok_or_else(|| BenchError::Usage("the run's clock was not set".into()))?;
    let mut stream = connected?;
    let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
    let window_ns = (
        clock.anchor.unix_ns(clock.window.start),
        clock.anchor.unix_ns(clock.window.end),
    );
    let mut histogram = LatencyHistogram::new();
    let mut delivered = 0u64;
    while Instant::now() < clock.drain_deadline {
        if totals.publishers_done.load(Ordering::Acquire) && delivered >= totals.sent.load(Ordering::Acquire) {
            break;
        }
        let packet = match mqtt::read_packet(&mut stream, address) {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(BenchError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => return Err(error),
        };
        if let Incoming::Publish { packet_id, payload, .. } = packet {
            if let Some(id) = packet_id {
                mqtt::send(&mut stream, &mqtt::puback(id), address)?;
            }
            let now_ns = clock.anchor.unix_ns(Instant::now());
            let Some(sent_ns) = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                continue;
            };
            if (window_ns.0..window_ns.1).contains(&sent_ns) {
                delivered += 1;
                histogram.record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
            }
        }
    }
    let _ = mqtt::send(&mut stream, &mqtt::disconnect(), address);
    totals.delivered.fetch_add(delivered, Ordering::AcqRel);
    totals
        .deliver
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .add(&histogram);
    Ok(())
}

/// A publisher: its share of the schedule, then (QoS 1) the last PUBACKs.
fn publisher(args: &Args, index: u32, clock: RunClock, totals: &Totals) -> Result<(), BenchError> {
    let address = args.brokers.first().map_or("", String::as_str).to_string();
    let mut stream = connect(&address, &format!("bench-pub-{}-{index}", std::process::id()))?;
    let in_flight: Arc<Mutex<HashMap<u16, Instant>>> = Arc::default();
    let acks_done = Arc::new(AtomicBool::new(false));
    let reader = if args.qos > 0 {
        let mut reading = stream.try_clone().map_err(|source| BenchError::Io {
            address: address.clone(),
            context: "cloning the socket".to_string(),
            source,
        })?;
        let _ = reading.set_read_timeout(Some(POLL_INTERVAL));
        let (in_flight, acks_done, address, window) = (
            Arc::clone(&in_flight),
            Arc::clone(&acks_done),
            address.clone(),
            clock.window,
        );
        Some(std::thread::spawn(
            move || -> Result<(LatencyHistogram, u64), BenchError> {
                let mut histogram = LatencyHistogram::new();
                let mut acked = 0u64;
                while Instant::now() < clock.drain_deadline {
                    let empty = in_flight.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
                    if acks_done.load(Ordering::Acquire) && empty {
                        break;
                    }
                    match mqtt::read_packet(&mut reading, &address) {
                        Ok(Some(Incoming::PubAck(id))) => {
                            let sent = in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                            if let Some(intended) = sent.filter(|intended| window.contains(*intended)) {
                                acked += 1;
                                histogram.record_since(intended, Instant::now());
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(BenchError::Io { source, .. })
                            if matches!(
                                source.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok((histogram, acked))
            },
        ))
    } else {
        None
    };
    let schedule = RateSchedule::new(clock.start, args.rate, u64::from(args.producers), u64::from(index));
    let mut pacer = Pacer::new(schedule, clock.window.end);
    let mut payload = vec![0u8; args.message_size.max().max(PAYLOAD_HEADER_BYTES)];
    let mut packet_id = 0u16;
    let mut sent = 0u64;
    let mut last_send = Instant::now();
    while !pacer.is_finished(Instant::now()) {
        let now = Instant::now();
        while let Some(due) = pacer.poll_due(now) {
            let size = args
                .message_size
                .sample(due.index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .max(PAYLOAD_HEADER_BYTES);
            let body = payload.get_mut(..size).unwrap_or_default();
            if let Some(field) = body.get_mut(..8) {
                field.copy_from_slice(&clock.anchor.unix_ns(due.intended).to_be_bytes());
            }
            if let Some(field) = body.get_mut(8..16) {
                field.copy_from_slice(&due.index.to_be_bytes());
            }
            if args.qos > 0 {
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                while in_flight.lock().unwrap_or_else(PoisonError::into_inner).len() >= IN_FLIGHT_MAX {
                    std::thread::sleep(Duration::from_micros(100));
                }
                in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(packet_id, due.intended);
            }
            mqtt::send(
                &mut stream,
                &mqtt::publish(&args.topic, args.qos, packet_id, body),
                &address,
            )?;
            last_send = Instant::now();
            if clock.window.contains(due.intended) {
                sent += 1;
            }
        }
        match pacer.next_intended() {
            Some(next) => std::thread::sleep(next.saturating_duration_since(Instant::now())),
            None => break,
        }
        if last_send.elapsed() > Duration::from_secs(20) {
            mqtt::send(&mut stream, &mqtt::pingreq(), &address)?;
            last_send = Instant::now();
        }
    }
    totals.sent.fetch_add(sent, Ordering::AcqRel);
    acks_done.store(true, Ordering::Release);
    if let Some(reader) = reader {
        let (histogram, acked) = reader.join().map_err(|_| BenchError::Protocol {
            address: address.clone(),
            detail: "the PUBACK reader panicked".to_string(),
        })??;
        totals.acked.fetch_add(acked, Ordering::AcqRel);
        totals
            .ack
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(&histogram);
    }
    let _ = mqtt::send(&mut stream, &mqtt::disconnect(), &address);
    Ok(())
}

fn summary_json(summary: &LatencySummary) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert("count".into(), json!(summary.count));
    out.insert("min_us".into(), json!(summary.min_us));
    out.insert("mean_us".into(), json!(summary.mean_us));
    out.insert("max_us".into(), json!(summary.max_us));
    for (label, _) in crate::latency::PERCENTILES {
        out.insert(format!("{label}_us"), json!(summary.percentile_us(label)));
    }
    serde_json::Value::Object(out)
}

fn summary_line(name: &str, summary: &LatencySummary) -> String {
    let ms = |us: Option<u64>| us.map_or_else(|| "-".to_string(), |us| format!("{:.3}", us as f64 / 1000.0));
    format!(
        "{name:<18} p50 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({} samples)",
        ms(summary.percentile_us("p50")),
        ms(summary.percentile_us("p99")),
        ms(summary.percentile_us("p99.9")),
        ms(Some(summary.max_us)),
        summary.count
    )
}

/// The whole MQTT run: subscribers first, then the publishers' schedule,
/// then the report.
pub fn run(args: &Args) -> Result<(), BenchError> {
    let totals = Totals::default();
    let subscribers = usize::try_from(args.consumers).unwrap_or(0);
    let start = Start {
        subscribed: std::sync::Barrier::new(subscribers + 1),
        go: std::sync::Barrier::new(subscribers + 1),
        clock: std::sync::OnceLock::new(),
    };
    let result = std::thread::scope(|scope| -> Result<RunClock, BenchError> {
        let (totals, start) = (&totals, &start);
        let subscribers: Vec<_> = (0..args.consumers)
            .map(|index| scope.spawn(move || subscriber(args, index, totals, start)))
            .collect();
        start.subscribed.wait();
        let clock = RunClock::new(Instant::now() + START_DELAY, args.warmup, args.duration);
        let _ = start.clock.set(clock);
        start.go.wait();
        let publishers: Vec<_> = (0..args.producers)
            .map(|index| scope.spawn(move || publisher(args, index, clock, totals)))
            .collect();
        let mut first_error = None;
        for handle in publishers {
            let joined = handle
                .join()
                .unwrap_or_else(|_| Err(BenchError::Usage("a publisher panicked".into())));
            if let Err(error) = joined {
                first_error.get_or_insert(error);
            }
        }
        totals.publishers_done.store(true, Ordering::Release);
        for handle in subscribers {
            let joined = handle
                .join()
                .unwrap_or_else(|_| Err(BenchError::Usage("a subscriber panicked".into())));
            if let Err(error) = joined {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(clock), Err)
    });
    result?;
    let sent = totals.sent.load(Ordering::Acquire);
    let expected = sent * u64::from(args.consumers);
    let delivered = totals.delivered.load(Ordering::Acquire);
    let acked = totals.acked.load(Ordering::Acquire);
    let deliver = totals.deliver.lock().unwrap_or_else(PoisonError::into_inner).summary();
    let ack = totals.ack.lock().unwrap_or_else(PoisonError::into_inner).summary();
    let seconds = args.duration.as_secs_f64();
    if !args.quiet {
        println!(
            "mqtt qos {}: {} publishers, {} subscribers, {} msg/s asked, {} B messages, {:.1} s measured",
            args.qos,
            args.producers,
            args.consumers,
            args.rate,
            args.message_size.max(),
            seconds
        );
        println!(
            "sent {sent} ({:.0} msg/s), acknowledged {acked}, delivered {delivered} of {expected} ({:.0} msg/s)",
            sent as f64 / seconds,
            delivered as f64 / seconds
        );
        println!("{}", summary_line("publish→deliver", &deliver));
        if args.qos > 0 {
            println!("{}", summary_line("publish→PUBACK", &ack));
        }
    }
    if let Some(path) = &args.json {
        let report = json!({
            "protocol": "mqtt",
            "qos": args.qos,
            "broker": args.brokers.first(),
            "topic": args.topic,
            "publishers": args.producers,
            "subscribers": args.consumers,
            "rate": args.rate,
            "message_bytes": args.message_size.max(),
            "duration_s": seconds,
            "sent": sent,
            "acknowledged": acked,
            "delivered": delivered,
            "expected_deliveries": expected,
            "deliver_latency": summary_json(&deliver),
            "ack_latency": summary_json(&ack),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap_or_default()).map_err(|source| {
            BenchError::Io {
                address: path.display().to_string(),
                context: "writing the JSON report".to_string(),
                source,
            }
        })?;
    }
    Ok(())
}
