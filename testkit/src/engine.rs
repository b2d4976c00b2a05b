//! An engine process: started on a run of free ports with its own data
//! directory and log file, stopped (SIGTERM, then SIGKILL) when dropped.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    http::{http_request, HttpResponse},
    ports::free_port_run,
};

/// The `engine` binary the tests run: `SHARDLINE_ENGINE_BIN` if set, else
/// `target/<profile>/engine` beside the running test (`target/<profile>/deps/…`),
/// built with `cargo build -p shardline-engine --bin engine` when missing
/// (Cargo releases its build lock before running tests, so this does not
/// deadlock). `cargo test --workspace` builds it first, so there it is
/// always current; a crate tested alone uses an existing binary as it is.
pub fn engine_binary() -> PathBuf {
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

/// CPUs in a `--cpus` list such as `0-3` or `0,2,5-6`.
fn cpu_list_len(list: &str) -> usize {
    list.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().unwrap() - a.trim().parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// How long a started engine may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Engine {
    pub addr: SocketAddr,
    /// The HTTP endpoint (`/metrics`, `/health`, `/ready`): a free port of
    /// its own unless the test passed `--http-listen` (`None`: `off`).
    pub http_addr: Option<SocketAddr>,
    /// The MQTT listener: a free port of its own unless the test passed
    /// `--mqtt-listen` (`None`: `off`), never the default 1883.
    pub mqtt_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

/// A log file for an engine on `port` that no earlier engine wrote (ports
/// are reused between tests and runs; a stale log would be read as this
/// engine's).
fn fresh_log_path(port: u16) -> PathBuf {
    let path = std::env::temp_dir().join(format!("shardline-engine-{port}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The value after `flag` in `args`, if it is there.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Shards an engine started with `args` runs: `--shards N`, else one per
/// CPU of `--cpus`, else one per online CPU (the engine's own defaults).
pub fn shard_count(args: &[String]) -> usize {
    if let Some(n) = flag_value(args, "--shards") {
        return n.parse().unwrap();
    }
    if let Some(cpus) = flag_value(args, "--cpus") {
        return cpu_list_len(&cpus);
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Engine {
    /// Starts an engine with a fresh data directory and extra flags.
    pub fn start(extra: &[&str]) -> Engine {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut engine = Engine::start_in(&data_dir, extra);
        engine._tmp = Some(tmp);
        engine
    }

    /// Starts an engine on an existing data directory.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Engine {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let port = free_port_run(shard_count(&extra));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Engines run concurrently: never the default 127.0.0.1:9644.
        let http_addr = match flag_value(&extra, "--http-listen") {
            Some(value) if value.eq_ignore_ascii_case("off") => None,
            Some(value) => Some(value.parse().unwrap()),
            None => {
                // Free now, as the Kafka run is: not one of those.
                let kafka = u32::from(port)..u32::from(port) + u32::try_from(shard_count(&extra)).unwrap();
                let http_port = std::iter::repeat_with(|| free_port_run(1))
                    .find(|candidate| !kafka.contains(&u32::from(*candidate)))
                    .unwrap();
                let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
                extra.extend(["--http-listen".to_string(), http.to_string()]);
                Some(http)
            }
        };
        // The same for MQTT: a free port that is none of the above.
        let mqtt_addr = match flag_value(&extra, "--mqtt-listen") {
            Some(value) if value.eq_ignore_ascii_case("off") || value.eq_ignore_ascii_case("none") => None,
            Some(value) => Some(value.parse().unwrap()),
            None => {
                let kafka = u32::from(port)..u32::from(port) + u32::try_from(shard_count(&extra)).unwrap();
                let mqtt_port = std::iter::repeat_with(|| free_port_run(1))
                    .find(|candidate| {
                        !kafka.contains(&u32::from(*candidate)) && http_addr.map(|a| a.port()) != Some(*candidate)
                    })
                    .unwrap();
                let mqtt: SocketAddr = format!("127.0.0.1:{mqtt_port}").parse().unwrap();
                extra.extend(["--mqtt-listen".to_string(), mqtt.to_string()]);
                Some(mqtt)
            }
        };
        let mut engine = Engine {
            addr,
            http_addr,
            mqtt_addr,
            data_dir: data_dir.to_path_buf(),
            child: None,
            // Beside the system temp dir, not the data dir: a test may fill the data dir's disk.
            log_path: fresh_log_path(port),
            _tmp: None,
            extra,
        };
        engine.spawn();
        engine
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(self.data_dir.parent().unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut args = vec![
            "--listen".to_string(),
            self.addr.to_string(),
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let child = Command::new(engine_binary())
            .args(&args)
            .env("RUST_LOG", "info,shardline_engine=debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("engine binary");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("engine exited during start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "engine did not accept within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts an engine with one SASL_PLAINTEXT listener named `SASL`, the
    /// users of `users_file` (`NAME:PASSWORD` lines, written into `dir` as a
    /// `--sasl-users-file`), `--authorizer acl` and `User:admin` as its super
    /// user, two shards, no fsync, and then `extra`.
    pub fn start_secured(dir: &std::path::Path, users_file: &str, extra: &[&str]) -> Engine {
        let users = dir.join("users");
        std::fs::write(&users, users_file).unwrap();
        let users = users.display().to_string();
        let mut args = vec![
            "--shards",
            "2",
            "--fsync",
            "never",
            "--sasl-users-file",
            &users,
            "--authorizer",
            "acl",
            "--super-user",
            "User:admin",
        ];
        args.extend_from_slice(extra);
        Engine::start_with_listeners(&[("SASL", "SASL_PLAINTEXT")], &args)
    }

    /// Starts an engine with a fresh data directory, `--listen` (the
    /// PLAINTEXT listener the harness waits for) and one named listener per
    /// `(name, protocol)` of `listeners` on 127.0.0.1, each on a run of free
    /// ports (shard k on its port + k); [`Engine::listener_addr`] gives them.
    pub fn start_with_listeners(listeners: &[(&str, &str)], extra: &[&str]) -> Engine {
        let shards = shard_count(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut args: Vec<String> = Vec::new();
        for (name, protocol) in listeners {
            let port = free_port_run(shards);
            args.push("--listener".to_string());
            args.push(format!("{name}={protocol}://127.0.0.1:{port}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Engine::start(&args)
    }

    /// Shard 0's address of the listener named `name` (as passed to
    /// [`Engine::start_with_listeners`]).
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let prefix = format!("{name}=");
        let spec = self
            .extra
            .iter()
            .filter_map(|arg| arg.strip_prefix(&prefix))
            .next()
            .unwrap_or_else(|| panic!("no listener {name} among {:?}", self.extra));
        let (_, address) = spec.split_once("://").unwrap();
        address.parse().unwrap()
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the engine process.
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("engine running");
        // SAFETY: plain kill(2) on our own child's pid.
        let result = unsafe { libc::kill(child.id() as i32, signal) };
        assert_eq!(result, 0, "kill({signal})");
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The engine's log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.wait_port_closed();
        }
    }

    /// Every shard's Kafka address (shard k on the --listen port + k).
    pub fn shard_addrs(&self) -> Vec<SocketAddr> {
        (0..shard_count(&self.extra))
            .map(|k| SocketAddr::new(self.addr.ip(), self.addr.port() + u16::try_from(k).unwrap()))
            .collect()
    }

    /// The sum of every series of metric `name` (a per-shard counter, say)
    /// on `/metrics`, once the engine is ready.
    pub fn metric_total(&self, name: &str) -> u64 {
        self.wait_http_ready();
        let metrics = String::from_utf8_lossy(&self.http_get("/metrics").body).into_owned();
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// `GET path` on the engine's HTTP endpoint.
    pub fn http_get(&self, path: &str) -> HttpResponse {
        let addr = self.http_addr.expect("the engine's HTTP endpoint is on");
        http_request(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
    }

    /// Waits (bounded) until `/ready` answers 200; returns its body.
    pub fn wait_http_ready(&self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let response = self.http_get("/ready");
            if response.status == 200 {
                return response.body_text();
            }
            assert!(
                Instant::now() < deadline,
                "/ready still answers {} after {START_TIMEOUT:?}: {}\n{}",
                response.status,
                response.body_text(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The kernel tears down a killed process's io_uring asynchronously, and
    /// until then its listeners still take (and then reset) connections.
    /// Wait until every shard's port (and the HTTP port) refuses, so a
    /// restart can bind them.
    fn wait_port_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in self.shard_addrs().into_iter().chain(self.http_addr) {
            while Instant::now() < deadline {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.wait_port_closed();
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().ok();
                self.wait_port_closed();
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the engine with SIGTERM (a clean stop) and starts it again on
    /// the same data directory and port.
    pub fn restart_gracefully(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// Starts the engine again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Stops the engine (SIGTERM) and returns what each shard logged as it
    /// stopped: (partition, group) client requests it forwarded to another
    /// shard, by shard.
    pub fn forwarded_at_shutdown(&mut self) -> Vec<(u64, u64)> {
        self.terminate();
        let field = |line: &str, name: &str| -> Option<u64> {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            line.get(start..)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let log = self.log();
        let mut shards: Vec<(u64, u64, u64)> = log
            .lines()
            .filter(|line| line.contains("shard stopped"))
            .map(|line| {
                let parsed = (|| {
                    Some((
                        field(line, "shard")?,
                        field(line, "forwarded_partition_requests")?,
                        field(line, "forwarded_group_requests")?,
                    ))
                })();
                parsed.unwrap_or_else(|| panic!("unreadable shutdown line {line:?} in:\n{log}"))
            })
            .collect();
        shards.sort_unstable();
        assert_eq!(
            shards.len(),
            shard_count(&self.extra),
            "one shutdown line per shard:\n{log}"
        );
        shards
            .into_iter()
            .map(|(_, partition, group)| (partition, group))
            .collect()
    }

    /// Exit status if the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let status = self.exit_status();
            eprintln!("---- engine log (process exit status: {status:?}) ----\n{}", self.log());
        }
        self.terminate();
    }
}

/// Sends raw bytes on a fresh connection and returns whatever comes back
/// before the peer closes or `wait` passes.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Runs the engine binary with exactly `args` (plus a fresh data directory,
/// and `--http-listen off` and `--mqtt-listen off` unless `args` name them:
/// tests run concurrently and the default ports are one each) through `wrapper` (e.g.
/// `["unshare", "--net"]`, or none) until it exits or its output shows
/// `until`, at most `wait`; then stops it (SIGTERM, then SIGKILL). Returns
/// the exit status if it exited by itself, and everything it printed. For
/// tests of refused starts.
pub fn run_engine_briefly(
    wrapper: &[&str],
    args: &[&str],
    until: &str,
    wait: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("engine.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let engine = engine_binary();
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(&engine);
            command
        }
        None => Command::new(&engine),
    };
    if !args.contains(&"--http-listen") {
        command.args(["--http-listen", "off"]);
    }
    if !args.contains(&"--mqtt-listen") {
        command.args(["--mqtt-listen", "off"]);
    }
    let mut child = command
        .args(args)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("engine binary");
    let deadline = Instant::now() + wait;
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if read().contains(until) || Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exited.is_none() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let stop_deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < stop_deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    (exited, read())
}
