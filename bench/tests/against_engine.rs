//! `bench` against a real engine process, and against nothing at all.
//!
//! The engine binary belongs to another package, so `CARGO_BIN_EXE_engine` is not available
//! here. The test finds it next to its own executable (`target/<profile>/engine`, the test being
//! `target/<profile>/deps/against_engine-…`), and builds it with
//! `cargo build -p shardline-engine --bin engine` if it is missing (Cargo releases its build lock
//! before running tests, so the nested build does not deadlock). `SHARDLINE_ENGINE_BIN` overrides
//! the path. `cargo test --workspace` builds the engine binary itself, so there it is always
//! current; with `-p shardline-bench` alone an existing binary is used as it is.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a started engine may take to accept connections.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one bench run in these tests (a 3 s run plus setup and drain).
const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

fn engine_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHARDLINE_ENGINE_BIN") {
        return PathBuf::from(path);
    }
    let test_exe = std::env::current_exe().unwrap();
    let profile_dir = test_exe.parent().unwrap().parent().unwrap().to_path_buf();
    let engine = profile_dir.join("engine");
    if !engine.exists() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace)
            .args(["build", "-p", "shardline-engine", "--bin", "engine", "--target-dir"])
            .arg(profile_dir.parent().unwrap());
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            command.arg("--release");
        }
        let status = command.status().expect("running cargo build for the engine");
        assert!(status.success(), "cargo build -p shardline-engine failed: {status}");
    }
    assert!(engine.exists(), "engine binary not found at {}", engine.display());
    engine
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An engine process on a free port with a temporary data directory; killed on drop.
struct Engine {
    addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Engine {
    fn start() -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log_path = dir.path().join("engine.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(engine_binary())
            .args(["--listen", &addr.to_string(), "--fsync", "never", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting the engine");
        let mut engine = Engine {
            addr,
            child,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + ENGINE_START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = engine.child.try_wait().unwrap() {
                panic!("engine exited during start ({status}):\n{}", engine.log());
            }
            assert!(
                Instant::now() < deadline,
                "engine did not accept within {ENGINE_START_TIMEOUT:?}:\n{}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        engine
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- engine log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct BenchRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the bench binary, killing it if it outlives `BENCH_TIMEOUT`.
fn bench(args: &[&str]) -> BenchRun {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bench");
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout_pipe.read_to_string(&mut text).unwrap();
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).unwrap();
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BENCH_TIMEOUT {
            let _ = child.kill();
            panic!("bench did not finish within {BENCH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    BenchRun {
        status,
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
        took: started.elapsed(),
    }
}

fn field<'a>(json: &'a Value, pointer: &str) -> &'a Value {
    json.pointer(pointer)
        .unwrap_or_else(|| panic!("JSON has no {pointer}:\n{json:#}"))
}

#[test]
fn end_to_end_run_against_the_engine_writes_a_complete_json() {
    let engine = Engine::start();
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("out.json");
    let brokers = engine.addr.to_string();
    let probe_dir = out.path().to_str().unwrap().to_string();
    let run = bench(&[
        "--brokers",
        &brokers,
        "--topic",
        "bench-it",
        "--partitions",
        "2",
        "--rate",
        "2000",
        "--consumers",
        "1",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--json",
        json_path.to_str().unwrap(),
        "--fsync-probe",
        &probe_dir,
        "--broker-version",
        "it-test",
        "--shards",
        "2",
        "--fsync",
        "never",
    ]);
    assert!(
        run.status.success(),
        "bench failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("publish") && run.stdout.contains("end-to-end"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("measuring"),
        "a progress line was printed:\n{}",
        run.stderr
    );

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for pointer in [
        "/schema",
        "/tool_version",
        "/started_at_unix_ms",
        "/host/hostname",
        "/host/kernel",
        "/host/cores",
        "/host/cpu_model",
        "/broker/bootstrap",
        "/broker/api_versions/0/used",
        "/flags/brokers",
        "/flags/topic",
        "/flags/partitions",
        "/flags/producers",
        "/flags/consumers",
        "/flags/message_size",
        "/flags/batch_bytes",
        "/flags/linger_ms",
        "/flags/acks",
        "/flags/compression",
        "/flags/keys",
        "/flags/rate",
        "/flags/duration_s",
        "/flags/warmup_s",
        "/flags/json",
        "/flags/fsync_probe",
        "/workload",
        "/topic/partitions",
        "/window/measured_s",
        "/produce/messages_per_s",
        "/produce/mb_per_s",
        "/produce/messages_not_sent",
        "/consume/messages_per_s",
        "/consume/mb_per_s",
    ] {
        field(&json, pointer);
    }
    assert_eq!(field(&json, "/broker/version"), "it-test");
    assert_eq!(field(&json, "/broker/shards"), 2);
    assert_eq!(field(&json, "/broker/fsync"), "never");
    assert_eq!(field(&json, "/workload"), "end-to-end");
    assert_eq!(field(&json, "/topic/partitions"), 2);
    assert!(field(&json, "/host/cores").as_u64().unwrap() > 0);

    for histogram in ["publish", "end_to_end", "send_delay"] {
        for stat in [
            "count",
            "min_ms",
            "mean_ms",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "p99_99_ms",
            "max_ms",
        ] {
            let value = field(&json, &format!("/latency_ms/{histogram}/{stat}"));
            assert!(value.as_f64().is_some_and(|v| v >= 0.0), "{histogram}.{stat} = {value}");
        }
        let p50 = field(&json, &format!("/latency_ms/{histogram}/p50_ms"))
            .as_f64()
            .unwrap();
        let max = field(&json, &format!("/latency_ms/{histogram}/max_ms"))
            .as_f64()
            .unwrap();
        assert!(p50 <= max);
    }
    let acknowledged = field(&json, "/produce/messages_acknowledged").as_u64().unwrap();
    let consumed = field(&json, "/consume/messages_consumed").as_u64().unwrap();
    let measured = field(&json, "/latency_ms/publish/count").as_u64().unwrap();
    let measured_e2e = field(&json, "/latency_ms/end_to_end/count").as_u64().unwrap();
    assert!(
        acknowledged > 0 && consumed > 0 && measured > 0 && measured_e2e > 0,
        "{json:#}"
    );
    // 2 s measured at 2000 msg/s: 4000 messages are meant for the window, 6000 for the run.
    assert_eq!(measured, 4000, "every message of the window is measured once");
    assert_eq!(acknowledged, 6000);
    assert_eq!(
        consumed, acknowledged,
        "the consumer read everything that was acknowledged"
    );
    assert_eq!(field(&json, "/produce/messages_unacknowledged"), 0);
    let probe = field(&json, "/fsync_probe/results");
    assert_eq!(probe.as_array().unwrap().len(), 2);
    assert!(field(&json, "/fsync_probe/results/0/iterations").as_u64().unwrap() > 0);
    field(&json, "/fsync_probe/results/0/p50_ms");
    field(&json, "/fsync_probe/results/1/p99_ms");

    // A broker answering with an error code: the topic does not exist.
    let missing = bench(&[
        "--brokers",
        &brokers,
        "--topic",
        "no-such-topic",
        "--duration",
        "1s",
        "--quiet",
    ]);
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no-such-topic does not exist"),
        "{}",
        missing.stderr
    );
    assert!(!missing.stderr.contains("panicked"), "{}", missing.stderr);
}

#[test]
fn nothing_listening_fails_fast_with_a_clear_message() {
    let port = free_port(); // bound and released: nothing listens there now
    let run = bench(&["--brokers", &format!("127.0.0.1:{port}"), "--duration", "1s"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot connect to broker 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert!(run.stdout.is_empty(), "no table on failure: {}", run.stdout);
}
