//! How should a Fetch response made of many pieces reach a glommio socket?
//!
//! glommio 0.9's `TcpStream` has no vectored write, so the choices are:
//!
//! - `each`: one `write_all` per piece (no copy, one `send` per piece);
//! - `copy-all`: copy every piece into one buffer, one `write_all`;
//! - `hybrid-N`: copy pieces shorter than N into a staging buffer (flushed
//!   at 256 KiB), write pieces of N or more from where they are (the
//!   algorithm of `conn::write_frames`);
//! - `sendmsg`: one `sendmsg(2)` with an iovec per piece and `MSG_DONTWAIT`,
//!   falling back to glommio's write when the socket is full (needs
//!   `unsafe`). Not `writev(2)`: glommio leaves accepted sockets in blocking
//!   mode and passes `MSG_DONTWAIT` per call, so a plain `writev` would
//!   block the whole shard.
//!
//! Each run sends the same responses over loopback from a server executor on
//! CPU 0 to a client executor on CPU 1 that reads and discards them, and
//! reports throughput and the server thread's CPU time per response.
//!
//! ```text
//! cargo run --release -p shardline-net --example write_strategies [MiB per run, default 256] [rounds, default 5]
//! ```
//!
//! Rounds interleave the strategies so background load spreads over all of
//! them; the table shows the median of the rounds.
//!
//! ```text
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a measurement program: a failure should stop it loudly"
)]

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

/// Source of record slices, large enough that copies are not L2-hot.
const ARENA_BYTES: usize = 256 << 20;
const STAGING_FLUSH_BYTES: usize = 256 << 10;

#[derive(Clone, Copy, Debug)]
enum Strategy {
    Each,
    CopyAll,
    Hybrid(usize),
    Sendmsg,
}

impl Strategy {
    fn name(self) -> String {
        match self {
            Strategy::Each => "each".into(),
            Strategy::CopyAll => "copy-all".into(),
            Strategy::Hybrid(threshold) => format!("hybrid-{}K", threshold >> 10),
            Strategy::Sendmsg => "sendmsg".into(),
        }
    }
}

/// A response shape: per partition, a small header piece, then record slices.
#[derive(Clone, Copy, Debug)]
struct Shape {
    name: &'static str,
    partitions: usize,
    batches_per_partition: usize,
    batch_bytes: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "200 partitions x 1 KiB",
        partitions: 200,
        batches_per_partition: 1,
        batch_bytes: 1 << 10,
    },
    Shape {
        name: "16 partitions x 4 x 16 KiB",
        partitions: 16,
        batches_per_partition: 4,
        batch_bytes: 16 << 10,
    },
    Shape {
        name: "8 partitions x 64 KiB",
        partitions: 8,
        batches_per_partition: 1,
        batch_bytes: 64 << 10,
    },
    Shape {
        name: "8 partitions x 192 KiB",
        partitions: 8,
        batches_per_partition: 1,
        batch_bytes: 192 << 10,
    },
    Shape {
        name: "4 partitions x 1 MiB",
        partitions: 4,
        batches_per_partition: 1,
        batch_bytes: 1 << 20,
    },
];

const STRATEGIES: &[Strategy] = &[
    Strategy::Each,
    Strategy::CopyAll,
    Strategy::Hybrid(16 << 10),
    Strategy::Hybrid(64 << 10),
    Strategy::Hybrid(128 << 10),
    Strategy::Hybrid(256 << 10),
    Strategy::Hybrid(1 << 20),
    Strategy::Sendmsg,
];

fn response(arena: &Bytes, shape: Shape, cursor: &mut usize) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    pieces.push(Bytes::from(vec![1u8; 30])); // response header + top level
    for _ in 0..shape.partitions {
        pieces.push(Bytes::from(vec![2u8; 45])); // partition header
        for _ in 0..shape.batches_per_partition {
            if *cursor + shape.batch_bytes > arena.len() {
                *cursor = 0;
            }
            pieces.push(arena.slice(*cursor..*cursor + shape.batch_bytes));
            *cursor += shape.batch_bytes;
        }
    }
    pieces
}

async fn write_response(stream: &mut TcpStream, staging: &mut Vec<u8>, pieces: &[Bytes], strategy: Strategy) {
    match strategy {
        Strategy::Each => {
            for piece in pieces {
                stream.write_all(piece).await.unwrap();
            }
        }
        Strategy::CopyAll => {
            staging.clear();
            for piece in pieces {
                staging.extend_from_slice(piece);
            }
            stream.write_all(staging).await.unwrap();
            staging.clear();
        }
        Strategy::Hybrid(threshold) => {
            for piece in pieces {
                if piece.len() >= threshold {
                    if !staging.is_empty() {
                        stream.write_all(staging).await.unwrap();
                        staging.clear();
                    }
                    stream.write_all(piece).await.unwrap();
                } else {
                    staging.extend_from_slice(piece);
                    if staging.len() >= STAGING_FLUSH_BYTES {
                        stream.write_all(staging).await.unwrap();
                        staging.clear();
                    }
                }
            }
            if !staging.is_empty() {
                stream.write_all(staging).await.unwrap();
                staging.clear();
            }
        }
        Strategy::Sendmsg => sendmsg_all(stream, pieces).await,
    }
}

async fn sendmsg_all(stream: &mut TcpStream, pieces: &[Bytes]) {
    let fd = stream.as_raw_fd();
    let mut index = 0;
    let mut offset = 0;
    while index < pieces.len() {
        let mut iovecs: Vec<libc::iovec> = pieces[index..]
            .iter()
            .take(1024)
            .enumerate()
            .map(|(position, piece)| {
                let skip = if position == 0 { offset } else { 0 };
                libc::iovec {
                    iov_base: piece[skip..].as_ptr() as *mut libc::c_void,
                    iov_len: piece.len() - skip,
                }
            })
            .collect();
        // SAFETY: a zeroed msghdr is valid; it points at `iovecs`, which
        // points into live `Bytes` borrowed for the duration of the call.
        let sent = unsafe {
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_iov = iovecs.as_mut_ptr();
            header.msg_iovlen = iovecs.len();
            libc::sendmsg(fd, &header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        let mut sent = if sent < 0 {
            let error = std::io::Error::last_os_error();
            assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock, "{error}");
            // Socket full: let glommio wait for room and send part of the piece.
            stream.write(&pieces[index][offset..]).await.unwrap()
        } else {
            sent as usize
        };
        while sent > 0 {
            let left = pieces[index].len() - offset;
            if sent >= left {
                sent -= left;
                index += 1;
                offset = 0;
            } else {
                offset += sent;
                sent = 0;
            }
        }
    }
}

fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    // SAFETY: zero-initialised and filled above.
    let usage = unsafe { usage.assume_init() };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// One measurement.
#[derive(Clone, Copy, Default)]
struct Sample {
    mib_per_second: f64,
    micros_per_response: f64,
    cpu_micros_per_response: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let run_mib: usize = std::env::args().nth(1).map_or(256, |arg| arg.parse().unwrap());
    let rounds: usize = std::env::args().nth(2).map_or(5, |arg| arg.parse().unwrap());
    let (address_tx, address_rx) = std::sync::mpsc::channel();

    let server = LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(512 << 10)
        .name("server")
        .spawn(move || async move {
            let arena = Bytes::from((0..ARENA_BYTES).map(|index| (index % 251) as u8).collect::<Vec<_>>());
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            address_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut staging = Vec::with_capacity(STAGING_FLUSH_BYTES);
            let mut cursor = 0;
            let mut samples = vec![vec![Vec::<Sample>::new(); STRATEGIES.len()]; SHAPES.len()];
            for _ in 0..rounds {
                for (shape_index, &shape) in SHAPES.iter().enumerate() {
                    for (strategy_index, &strategy) in STRATEGIES.iter().enumerate() {
                        let mut stream = listener.accept().await.unwrap();
                        stream.set_nodelay(true).unwrap();
                        let response_bytes: usize = response(&arena, shape, &mut 0).iter().map(Bytes::len).sum();
                        let responses = ((run_mib << 20) / response_bytes).max(16);
                        stream
                            .write_all(&(responses * response_bytes).to_be_bytes())
                            .await
                            .unwrap();
                        let cpu_start = thread_cpu();
                        let start = Instant::now();
                        for _ in 0..responses {
                            let pieces = response(&arena, shape, &mut cursor);
                            write_response(&mut stream, &mut staging, &pieces, strategy).await;
                        }
                        let mut ack = [0u8; 1];
                        stream.read_exact(&mut ack).await.unwrap();
                        let elapsed = start.elapsed();
                        let cpu = thread_cpu() - cpu_start;
                        samples[shape_index][strategy_index].push(Sample {
                            mib_per_second: (responses * response_bytes) as f64
                                / (1 << 20) as f64
                                / elapsed.as_secs_f64(),
                            micros_per_response: elapsed.as_secs_f64() * 1e6 / responses as f64,
                            cpu_micros_per_response: cpu.as_secs_f64() * 1e6 / responses as f64,
                        });
                    }
                }
            }
            println!(
                "{:<28} {:<12} {:>8} {:>12} {:>18}",
                "shape", "strategy", "MiB/s", "µs/response", "server CPU µs/resp"
            );
            for (shape_index, shape) in SHAPES.iter().enumerate() {
                for (strategy_index, strategy) in STRATEGIES.iter().enumerate() {
                    let runs = &samples[shape_index][strategy_index];
                    println!(
                        "{:<28} {:<12} {:>8.0} {:>12.1} {:>18.1}",
                        shape.name,
                        strategy.name(),
                        median(runs.iter().map(|sample| sample.mib_per_second).collect()),
                        median(runs.iter().map(|sample| sample.micros_per_response).collect()),
                        median(runs.iter().map(|sample| sample.cpu_micros_per_response).collect()),
                    );
                }
            }
        })
        .unwrap();

    let address = address_rx.recv().unwrap();
    let client = LocalExecutorBuilder::new(Placement::Fixed(1))
        .io_memory(512 << 10)
        .name("client")
        .spawn(move || async move {
            let mut buffer = vec![0u8; 1 << 20];
            for _ in 0..rounds * SHAPES.len() * STRATEGIES.len() {
                let mut stream = TcpStream::connect(address).await.unwrap();
                let mut total = [0u8; 8];
                stream.read_exact(&mut total).await.unwrap();
                let mut left = usize::from_be_bytes(total);
                while left > 0 {
                    let read = stream.read(&mut buffer[..left.min(1 << 20)]).await.unwrap();
                    assert!(read > 0, "server closed early");
                    left -= read;
                }
                stream.write_all(&[1]).await.unwrap();
            }
        })
        .unwrap();
    client.join().unwrap();
    server.join().unwrap();
}
