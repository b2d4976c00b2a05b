//! The HTTP endpoint (`--http-listen`) of a real engine process: `/metrics`
//! read by a real Prometheus parser during a real client workload, `/health`
//! and `/ready`, what wrong or hostile HTTP gets, and the refusal of a port
//! in use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{call, python_script_output, Engine};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use shardline_testkit::{http_exchange, http_request};

/// Connections the endpoint serves at once (`http::HTTP_CONNECTIONS_MAX`).
const HTTP_CONNECTIONS_MAX: usize = 16;
/// Largest request head (`http::HTTP_HEAD_BYTES_MAX`).
const HTTP_HEAD_BYTES_MAX: usize = 8 << 10;

/// Whether the engine still serves Kafka: ApiVersions and Metadata answer.
fn kafka_answers(engine: &Engine) {
    let versions = call(engine.addr, 3, &ApiVersionsRequest::default()).unwrap();
    assert_eq!(versions.error_code, 0);
    call(engine.addr, 12, &MetadataRequest::default()).unwrap();
}

#[test]
fn a_prometheus_parser_reads_what_the_clients_did() {
    let engine = Engine::start(&["--shards", "2"]);
    let ready = engine.wait_http_ready();
    assert!(ready.contains("all 2 shards"), "{ready}");
    let http = engine.http_addr.unwrap().to_string();
    let (ok, output) = python_script_output("metrics_scrape.py", &[&engine.bootstrap(), &http, "2"]);
    assert!(ok, "{output}\n---- engine log ----\n{}", engine.log());
    assert!(output.contains("metrics agree with the clients"), "{output}");
}

#[test]
fn health_and_ready_answer_once_started() {
    let engine = Engine::start(&["--shards", "2"]);
    let ready = engine.wait_http_ready();
    assert!(ready.starts_with("ready: metadata leader 1"), "{ready}");
    let health = engine.http_get("/health");
    assert_eq!(health.status, 200, "{}", health.body_text());
    assert_eq!(health.body_text(), "ok: all 2 shards answered\n");
    assert_eq!(health.header("connection"), Some("close"));
    let metrics = engine.http_get("/metrics?x=1");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = metrics.body_text();
    assert_eq!(
        metrics.header("content-length").unwrap().parse::<usize>().unwrap(),
        metrics.body.len()
    );
    assert!(body.contains("shardline_shard_up{shard=\"1\"} 1\n"), "{body}");
    assert!(body.contains("# TYPE shardline_requests_total counter\n"), "{body}");
    // OpenMetrics when asked for.
    let addr = engine.http_addr.unwrap();
    let open = http_request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    );
    assert_eq!(open.status, 200);
    assert!(open
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = open.body_text();
    assert!(
        text.ends_with("# EOF\n") && text.contains("# TYPE shardline_requests counter\n"),
        "{text}"
    );
    // HEAD: the headers alone.
    let head = http_request(addr, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// Metric names (`shardline_…`, `process_…`) in `text`, as written there.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["shardline_", "process_"] {
        for (start, _) in text.match_indices(prefix) {
            let before = text[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/') {
                continue;
            }
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Not a metric: a crate path or filter (`shardline_engine::`, `shardline_engine=debug`), or the
            // bare prefix.
            let after = text[start + name.len()..].chars().next();
            if name.len() > prefix.len() && !matches!(after, Some(':' | '=')) {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn the_dashboard_and_the_docs_name_only_metrics_that_exist() {
    let engine = Engine::start(&["--shards", "2"]);
    engine.wait_http_ready();
    let body = engine.http_get("/metrics").body_text();
    // Every family's TYPE line is written, with or without samples.
    let families: std::collections::BTreeSet<String> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect();
    let exists = |name: &str| {
        families.contains(name)
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| families.contains(base)))
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dashboard = std::fs::read_to_string(root.join("docs/grafana/shardline.json")).unwrap();
    for name in metric_names(&dashboard) {
        assert!(exists(&name), "the dashboard uses {name}, which /metrics does not have");
    }
    let operations = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let documented = metric_names(&operations);
    for family in &families {
        assert!(documented.contains(family), "docs/operations.md does not list {family}");
    }
    for name in documented
        .iter()
        .filter(|name| name.starts_with("shardline_") || name.starts_with("process_"))
    {
        assert!(
            exists(name),
            "docs/operations.md lists {name}, which /metrics does not have"
        );
    }
}

#[test]
fn wrong_and_hostile_http_gets_an_error_and_kafka_is_unhurt() {
    let mut engine = Engine::start(&["--shards", "2"]);
    engine.wait_http_ready();
    let addr = engine.http_addr.unwrap();
    assert_eq!(engine.http_get("/nope").status, 404);
    assert_eq!(engine.http_get("/").status, 404);
    let post = http_request(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    for garbage in [
        &b"\x00\x01\x02\x03\x04\r\n\r\n"[..],
        b"GET /metrics SPDY/3\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x00\x00\x00\x10\x00\x12\x00\x03\x00\x00\x00\x01\x00\x04test",
    ] {
        let response = http_request(addr, garbage);
        assert_eq!(response.status, 400, "{garbage:?}: {}", response.body_text());
    }
    // A head larger than the bound: 431, whatever follows.
    let mut oversize = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    oversize.extend(std::iter::repeat_n(b'a', HTTP_HEAD_BYTES_MAX * 4));
    oversize.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http_request(addr, &oversize).status, 431);
    let many_headers: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /metrics HTTP/1.1\r\n{many_headers}\r\n");
    assert_eq!(http_request(addr, many.as_bytes()).status, 431);
    // A client that connects and goes away without a byte costs nothing.
    drop(TcpStream::connect(addr).unwrap());
    kafka_answers(&engine);

    // More connections than the bound, all idle: the extra ones are closed
    // at once, the rest wait for their heads; Kafka is served meanwhile.
    let idle: Vec<TcpStream> = (0..HTTP_CONNECTIONS_MAX)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Let shard 0 accept them all before the next one.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let refused = http_exchange(addr, b"GET /health HTTP/1.1\r\n\r\n");
    assert!(
        refused.is_empty(),
        "closed at once: {:?}",
        String::from_utf8_lossy(&refused)
    );
    assert!(started.elapsed() < Duration::from_secs(3), "not after a timeout");
    kafka_answers(&engine);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until shard 0 has seen them close, a new connection may still be refused.
    while !http_exchange(addr, b"GET /health HTTP/1.1\r\n\r\n").starts_with(b"HTTP/1.1 200 OK\r\n") {
        assert!(
            Instant::now() < deadline,
            "the endpoint serves again once the idle ones closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A head sent a byte at a time is still read.
    let mut slow = TcpStream::connect(addr).unwrap();
    for byte in b"GET /health HTTP/1.1\r\n\r\n" {
        slow.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    assert!(engine.is_running());
    kafka_answers(&engine);
    let log = engine.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(engine.terminate().map(|status| status.success()), Some(true));
}

#[test]
fn a_head_that_never_ends_is_answered_408_after_the_read_timeout() {
    let engine = Engine::start(&["--shards", "1"]);
    engine.wait_http_ready();
    let started = Instant::now();
    let response = http_request(engine.http_addr.unwrap(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(response.status, 408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    kafka_answers(&engine);
}

#[test]
fn an_http_port_in_use_stops_the_start_before_the_data_dir_is_touched() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let port = common::free_port_run(1);
    let output = std::process::Command::new(common::engine_binary())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "1",
            "--http-listen",
            &taken,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--http-listen") && stderr.contains(&taken),
        "the error names the flag and the address: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!data_dir.exists(), "nothing was written");
    // A bad value is a usage error, before anything else.
    let usage = std::process::Command::new(common::engine_binary())
        .args(["--http-listen", "nowhere"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--http-listen"));
    assert!(!data_dir.exists());
}

#[test]
fn the_endpoint_can_be_turned_off() {
    let engine = Engine::start(&["--shards", "1", "--http-listen", "off"]);
    assert_eq!(engine.http_addr, None);
    kafka_answers(&engine);
    assert!(engine.log().contains("http=off"), "{}", engine.log());
}

#[test]
fn a_second_engine_cannot_share_the_http_port() {
    let first = Engine::start(&["--shards", "1"]);
    let http: SocketAddr = first.http_addr.unwrap();
    let (exited, output) = common::run_engine_briefly(
        &[],
        &[
            "--listen",
            &format!("127.0.0.1:{}", common::free_port_run(1)),
            "--shards",
            "1",
            "--http-listen",
            &http.to_string(),
        ],
        "engine starting",
        Duration::from_secs(30),
    );
    assert!(exited.is_some_and(|status| !status.success()), "{output}");
    assert!(output.contains(&http.to_string()), "{output}");
    assert_eq!(first.http_get("/health").status, 200, "the first one still serves");
}
