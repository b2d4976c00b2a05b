//! Listeners, TLS and SASL against real clients (librdkafka through
//! confluent-kafka and the rdkafka crate, kafka-python) and raw frames. Certificates are made here
//! at test time (rcgen); every network call goes to 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::{python_script_output, run_engine_briefly, Engine, KafkaConnection};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and what it signed, written as PEM files into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn ca_file(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// Signs a certificate for `common_name` (valid for 127.0.0.1 and
    /// localhost) and writes `<stem>.pem` and `<stem>.key`.
    fn issue(&self, stem: &str, common_name: &str) -> (String, String) {
        self.issue_valid(stem, common_name, false)
    }

    /// [`Pki::issue`], valid only in 2020 (expired) when `expired`.
    fn issue_valid(&self, stem: &str, common_name: &str, expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_path = self.path(&format!("{stem}.pem"));
        let key_path = self.path(&format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path.display().to_string(), key_path.display().to_string())
    }
}

fn client(client: &str, bootstrap: &str, expect: &str, settings: &[String]) -> String {
    let mut args = vec![client, bootstrap, expect];
    args.extend(settings.iter().map(String::as_str));
    let (ok, output) = python_script_output("secure_client.py", &args);
    assert!(ok, "{client} {expect} on {bootstrap} {settings:?}:\n{output}");
    output
}

/// The rdkafka crate (librdkafka built by cargo, with SSL) with `settings`:
/// 20 messages produced with acks=all to a new `secure-` topic and read back.
fn rust_rdkafka_roundtrip(bootstrap: &str, settings: &[String]) {
    use rdkafka::{
        consumer::{BaseConsumer, Consumer},
        producer::{BaseProducer, BaseRecord, Producer},
        ClientConfig, Message,
    };
    const COUNT: usize = 20;
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for setting in settings {
        let (key, value) = setting.split_once('=').unwrap();
        config.set(key, value);
    }
    let topic = format!("secure-rust-{}", std::process::id());
    let producer: BaseProducer = config.clone().set("acks", "all").create().unwrap();
    for i in 0..COUNT {
        let value = format!("value-{i}");
        producer
            .send(BaseRecord::<str, str>::to(&topic).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(20)).unwrap();
    let consumer: BaseConsumer = config
        .set("group.id", format!("{topic}-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < COUNT && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            seen.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    let mut expected: Vec<String> = (0..COUNT).map(|i| format!("value-{i}")).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "the rdkafka crate read back what it produced");
}

fn ssl_settings(ca: &str) -> Vec<String> {
    vec!["security.protocol=SSL".into(), format!("ssl.ca.location={ca}")]
}

/// Waits (bounded) until the engine's log holds `text`.
fn wait_for_log(engine: &Engine, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.log().contains(text) {
        assert!(Instant::now() < deadline, "no `{text}` in the log:\n{}", engine.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tls_engine(pki: &Pki, extra: &[&str]) -> Engine {
    let (cert, key) = pki.issue("server", "shardline-server");
    let mut args = vec![
        "--shards",
        "2",
        "--fsync",
        "never",
        "--auto-create-topics",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    Engine::start_with_listeners(&[("SECURE", "SSL")], &args)
}

#[test]
fn librdkafka_and_kafka_python_produce_and_consume_over_ssl() {
    let pki = Pki::new("test CA");
    let engine = tls_engine(&pki, &[]);
    let bootstrap = engine.listener_addr("SECURE").to_string();
    // Both shards' ports are on the SSL listener: Metadata answered with
    // that listener's addresses, or the clients could not reach shard 1.
    client("confluent", &bootstrap, "roundtrip", &ssl_settings(&pki.ca_file()));
    client("kafka-python", &bootstrap, "roundtrip", &ssl_settings(&pki.ca_file()));
    let log = engine.log();
    assert!(log.contains("SECURE=SSL://127.0.0.1"), "{log}");
}

#[test]
fn a_client_trusting_another_ca_is_refused_and_others_still_served() {
    let pki = Pki::new("test CA");
    let engine = tls_engine(&pki, &[]);
    let bootstrap = engine.listener_addr("SECURE").to_string();
    let stranger = Pki::new("another CA");
    client("confluent", &bootstrap, "refused", &ssl_settings(&stranger.ca_file()));
    // A plaintext client on the TLS port is refused too.
    client("kafka-python", &bootstrap, "refused", &[]);
    client("confluent", &bootstrap, "roundtrip", &ssl_settings(&pki.ca_file()));
}

/// kcat (Debian's, librdkafka 2.0.2) over SSL; bytes that are not a TLS
/// handshake, and an expired client certificate, are refused while kcat is
/// still served.
#[test]
fn kcat_over_ssl_while_garbage_and_expired_certificates_are_refused() {
    use std::io::{Read, Write};
    let pki = Pki::new("test CA");
    let ca = pki.ca_file();
    let engine = tls_engine(&pki, &["--tls-client-auth", "requested", "--tls-ca", &ca]);
    let bootstrap = engine.listener_addr("SECURE").to_string();
    let kcat = |args: &[&str], input: &[u8]| {
        let mut child = std::process::Command::new("kcat")
            // Debian's librdkafka (built with OpenSSL), not a copy cargo's
            // build put on the library path.
            .env_remove("LD_LIBRARY_PATH")
            .args([
                "-b",
                &bootstrap,
                "-X",
                "security.protocol=ssl",
                "-X",
                &format!("ssl.ca.location={ca}"),
            ])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kcat installed (scripts/test-all installs it)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "kcat {args:?}: {text}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let consume = [
        "-t",
        "kcat-ssl",
        "-C",
        "-e",
        "-o",
        "beginning",
        "-f",
        "%k=%s\n",
        "-m",
        "10",
    ];
    kcat(&["-t", "kcat-ssl", "-P", "-K:"], b"a:1\nb:2\n");
    assert_eq!(kcat(&consume, b""), "a=1\nb=2\n");

    // Not a TLS handshake: an HTTP request, then random-looking bytes.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3][..],
    ] {
        let mut stream = std::net::TcpStream::connect(&bootstrap).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(garbage).unwrap();
        let mut answer = Vec::new();
        // A TLS alert at most, then the close (or a reset).
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.len() < 64, "{answer:?}");
    }

    // An expired client certificate from the right CA is refused ...
    let (cert, key) = pki.issue_valid("expired", "expired-client", true);
    let mut settings = ssl_settings(&ca);
    settings.push(format!("ssl.certificate.location={cert}"));
    settings.push(format!("ssl.key.location={key}"));
    client("confluent", &bootstrap, "refused", &settings);
    // ... and the listener still serves.
    kcat(&["-t", "kcat-ssl", "-P", "-K:"], b"c:3\n");
    assert_eq!(kcat(&consume, b""), "a=1\nb=2\nc=3\n");
    assert!(
        !engine.log().contains("principal=CN=expired-client"),
        "{}",
        engine.log()
    );
}

#[test]
fn a_required_client_certificate_is_checked_and_names_the_principal() {
    let pki = Pki::new("test CA");
    let ca = pki.ca_file();
    let engine = tls_engine(&pki, &["--tls-client-auth", "required", "--tls-ca", &ca]);
    let bootstrap = engine.listener_addr("SECURE").to_string();
    client("confluent", &bootstrap, "refused", &ssl_settings(&ca));
    let (cert, key) = pki.issue("client", "test-client");
    let mut settings = ssl_settings(&ca);
    settings.push(format!("ssl.certificate.location={cert}"));
    settings.push(format!("ssl.key.location={key}"));
    client("confluent", &bootstrap, "roundtrip", &settings);
    // A certificate from another CA is no better than none.
    let stranger = Pki::new("another CA");
    let (cert, key) = stranger.issue("client", "mallory");
    let mut settings = ssl_settings(&ca);
    settings.push(format!("ssl.certificate.location={cert}"));
    settings.push(format!("ssl.key.location={key}"));
    client("kafka-python", &bootstrap, "refused", &settings);
    let log = engine.log();
    assert!(log.contains("principal=CN=test-client"), "{log}");
    assert!(!log.contains("principal=CN=mallory"), "{log}");
}

#[test]
fn sighup_makes_new_connections_get_the_new_certificate() {
    let pki = Pki::new("test CA");
    let engine = tls_engine(&pki, &[]);
    let address = engine.listener_addr("SECURE").to_string();
    let served = || {
        let (ok, output) = python_script_output("secure_client.py", &["peer-cert", &address, &pki.ca_file()]);
        assert!(ok, "{output}");
        output
    };
    assert!(served().contains("shardline-server"));
    pki.issue("server", "renewed-server");
    engine.signal(libc::SIGHUP);
    wait_for_log(&engine, "reloaded the TLS certificate");
    assert!(served().contains("renewed-server"), "{}", engine.log());
    // A broken file keeps the old certificate serving.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    engine.signal(libc::SIGHUP);
    wait_for_log(&engine, "TLS reload failed");
    assert!(served().contains("renewed-server"));
}

#[test]
fn mqtt_over_tls_serves_mosquitto_clients_and_refuses_plaintext() {
    let pki = Pki::new("test CA");
    let port = common::free_port_run(1);
    let tls_listen = format!("127.0.0.1:{port}");
    let engine = tls_engine(&pki, &["--mqtt-tls-listen", &tls_listen]);
    let port = port.to_string();
    let mosquitto = |program: &str, args: &[&str]| {
        let mut command = std::process::Command::new(program);
        command.args(["-h", "127.0.0.1", "-p", &port, "--cafile", &pki.ca_file(), "-q", "1"]);
        command.args(args);
        command
    };
    // A subscriber and a publisher over TLS: the message arrives.
    let mut subscriber = mosquitto("mosquitto_sub", &["-t", "tls/#", "-C", "1", "-W", "20", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The subscriber may not have subscribed yet: publish until it has a
    // message (it exits after one), within its own 20 s bound.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && subscriber.try_wait().unwrap().is_none() {
        let status = mosquitto("mosquitto_pub", &["-t", "tls/a", "-m", "over-tls"])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub over TLS:\n{}", engine.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let output = subscriber.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", engine.log());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().next(),
        Some("tls/a over-tls")
    );
    // Plaintext MQTT on the TLS port: no CONNACK, the connection closes.
    let mut plain = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain
        .write_all(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p'])
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(answer.first() != Some(&0x20), "no CONNACK in plaintext: {answer:02x?}");
    // And a wrong CA: the client refuses the server.
    let other = Pki::new("other CA");
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile", &other.ca_file()])
        .args(["-t", "tls/a", "-m", "x"])
        .status()
        .unwrap();
    assert!(!status.success(), "a server the client's CA did not sign is refused");
}

#[test]
fn a_non_loopback_listener_without_authentication_needs_allow_insecure() {
    let wait = Duration::from_secs(30);
    // Refused before anything is bound.
    let (exited, output) = run_engine_briefly(&[], &["--listen", "0.0.0.0:0"], "engine starting", wait);
    assert!(exited.is_some_and(|status| !status.success()), "{output}");
    assert!(
        output.contains("--allow-insecure") && output.contains("0.0.0.0"),
        "{output}"
    );
    let (exited, output) = run_engine_briefly(
        &[],
        &[
            "--listener",
            "OPEN=SSL://0.0.0.0:0",
            "--tls-cert",
            "x",
            "--tls-key",
            "y",
        ],
        "engine starting",
        wait,
    );
    assert!(
        exited.is_some(),
        "TLS without client certificates authenticates no one:\n{output}"
    );
    assert!(output.contains("--allow-insecure"), "{output}");
    // With the flag it starts, and says so. In a network namespace of its
    // own (made by unshare, gone with the process): no interface but a
    // loopback that is down, so nothing outside can reach what it binds.
    let (exited, output) = run_engine_briefly(
        &["unshare", "--net"],
        &["--listen", "0.0.0.0:0", "--allow-insecure", "--shards", "1"],
        "shardline engine starting",
        wait,
    );
    assert!(exited.is_none(), "{output}");
    assert!(output.contains("--allow-insecure: listener PLAINTEXT"), "{output}");
}

// ---- SASL ----

const USERS: &str = "# test users\nalice:alice-secret\nbob:b=b:pw\n";

fn sasl_engine(dir: &Path, pki: &Pki) -> Engine {
    sasl_engine_with(dir, pki, &[])
}

/// [`sasl_engine`] with `extra` flags.
fn sasl_engine_with(dir: &Path, pki: &Pki, extra: &[&str]) -> Engine {
    let users = dir.join("users");
    std::fs::write(&users, USERS).unwrap();
    let (cert, key) = pki.issue("server", "shardline-server");
    let users = users.display().to_string();
    let mut flags = vec![
        "--shards",
        "2",
        "--fsync",
        "never",
        "--auto-create-topics",
        "--sasl-users-file",
        &users,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    flags.extend_from_slice(extra);
    Engine::start_with_listeners(&[("SASL", "SASL_PLAINTEXT"), ("SASLTLS", "SASL_SSL")], &flags)
}

/// A PLAIN login over raw frames; returns the session lifetime the broker
/// gave (SaslAuthenticate v1+).
fn plain_login(connection: &mut KafkaConnection, user: &str, password: &str) -> std::io::Result<(i16, i64)> {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let answer = connection.request(1, &request)?;
    if answer.error_code != 0 {
        return Ok((answer.error_code, 0));
    }
    let token = format!("\0{user}\0{password}");
    let login = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(token.into_bytes()));
    let answer = connection.request(2, &login)?;
    Ok((answer.error_code, answer.session_lifetime_ms))
}

/// KIP-368: with `--sasl-session-lifetime-ms` a login holds that long. A
/// client that re-authenticates on its connection (librdkafka does) keeps
/// it; one that does not is closed at its first request after the lifetime;
/// a re-authentication as another user or with another mechanism is
/// refused and closes the connection.
#[test]
fn sasl_sessions_expire_and_clients_re_authenticate() {
    const LIFETIME_MS: i64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let mut engine = sasl_engine_with(dir.path(), &pki, &["--sasl-session-lifetime-ms", "2000"]);
    let address = engine.listener_addr("SASL");
    let lifetime = Duration::from_millis(u64::try_from(LIFETIME_MS).unwrap());

    // Re-authenticated before the end: the connection goes on serving.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert_eq!(
        plain_login(&mut connection, "alice", "alice-secret").unwrap(),
        (0, LIFETIME_MS)
    );
    std::thread::sleep(lifetime / 2);
    assert_eq!(
        plain_login(&mut connection, "alice", "alice-secret").unwrap(),
        (0, LIFETIME_MS)
    );
    std::thread::sleep(lifetime * 3 / 4);
    assert!(connection.request(12, &MetadataRequest::default()).is_ok(), "renewed");
    // Not re-authenticated: the next request after the lifetime closes it.
    std::thread::sleep(lifetime + Duration::from_millis(200));
    assert!(connection.request(12, &MetadataRequest::default()).is_err());

    // Re-authentication as another user: SASL_AUTHENTICATION_FAILED, closed.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert_eq!(plain_login(&mut connection, "alice", "alice-secret").unwrap().0, 0);
    assert_eq!(plain_login(&mut connection, "bob", "b=b:pw").unwrap().0, 58);
    assert!(connection.is_closed_by_peer());
    // ... or with another mechanism: ILLEGAL_SASL_STATE, closed.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert_eq!(plain_login(&mut connection, "alice", "alice-secret").unwrap().0, 0);
    assert_eq!(handshake(&mut connection, "SCRAM-SHA-256"), 34);
    assert!(connection.is_closed_by_peer());

    // librdkafka re-authenticates by itself: a producer spread over three
    // lifetimes delivers everything, with SCRAM-SHA-512.
    client(
        "confluent",
        &address.to_string(),
        "slow-roundtrip",
        &sasl_settings("SCRAM-SHA-512", "alice", "alice-secret"),
    );
    let log = engine.log();
    let renewals = log.matches("SASL re-authentication").count();
    assert!(renewals >= 3, "the raw renewal and librdkafka's: {renewals}\n{log}");
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("shardline_net::conn") && line.contains("session expired"))
            .count(),
        1,
        "only the raw connection that did not renew expired:\n{log}"
    );
    assert!(engine.is_running());
}

fn sasl_settings(mechanism: &str, user: &str, password: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_PLAINTEXT".into(),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ]
}

fn check_mechanism(mechanism: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let engine = sasl_engine(dir.path(), &pki);
    let bootstrap = engine.listener_addr("SASL").to_string();
    for library in ["confluent", "kafka-python"] {
        client(
            library,
            &bootstrap,
            "roundtrip",
            &sasl_settings(mechanism, "alice", "alice-secret"),
        );
        client(
            library,
            &bootstrap,
            "refused",
            &sasl_settings(mechanism, "alice", "wrong"),
        );
        client(
            library,
            &bootstrap,
            "refused",
            &sasl_settings(mechanism, "nobody", "alice-secret"),
        );
    }
    // A password with `=` and `:` in it.
    client(
        "confluent",
        &bootstrap,
        "roundtrip",
        &sasl_settings(mechanism, "bob", "b=b:pw"),
    );
    let log = engine.log();
    assert!(log.contains("authentication refused: invalid credentials"), "{log}");
}

#[test]
fn sasl_plain_good_and_bad_passwords() {
    check_mechanism("PLAIN");
}

#[test]
fn sasl_scram_sha_256_good_and_bad_passwords() {
    check_mechanism("SCRAM-SHA-256");
}

#[test]
fn sasl_scram_sha_512_good_and_bad_passwords() {
    check_mechanism("SCRAM-SHA-512");
}

#[test]
fn sasl_ssl_with_scram_sha_512() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let engine = sasl_engine(dir.path(), &pki);
    let bootstrap = engine.listener_addr("SASLTLS").to_string();
    let settings = |password: &str| {
        let mut settings = sasl_settings("SCRAM-SHA-512", "alice", password);
        settings[0] = "security.protocol=SASL_SSL".into();
        settings.push(format!("ssl.ca.location={}", pki.ca_file()));
        settings
    };
    for library in ["confluent", "kafka-python"] {
        client(library, &bootstrap, "roundtrip", &settings("alice-secret"));
        client(library, &bootstrap, "refused", &settings("wrong"));
    }
}

fn handshake(connection: &mut KafkaConnection, mechanism: &'static str) -> i16 {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    connection.request(1, &request).unwrap().error_code
}

#[test]
fn malformed_or_early_sasl_requests_get_an_error_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let mut engine = sasl_engine(dir.path(), &pki);
    let address = engine.listener_addr("SASL");

    // ApiVersions is answered before authentication and lists the SASL APIs.
    let mut connection = KafkaConnection::connect(address).unwrap();
    let versions = connection.request(3, &ApiVersionsRequest::default()).unwrap();
    for key in [17, 36] {
        assert!(
            versions.api_keys.iter().any(|api| api.api_key == key),
            "API {key} advertised"
        );
    }
    // Garbage in SaslAuthenticate: SASL_AUTHENTICATION_FAILED, then closed.
    assert_eq!(handshake(&mut connection, "SCRAM-SHA-256"), 0);
    let garbage = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\xff\x00,,n="));
    let answer = connection.request(2, &garbage).unwrap();
    assert_eq!(answer.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(connection.is_closed_by_peer());

    // A mechanism not offered: UNSUPPORTED_SASL_MECHANISM, then closed.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert_eq!(handshake(&mut connection, "GSSAPI"), 33);
    assert!(connection.is_closed_by_peer());

    // SaslAuthenticate before SaslHandshake: ILLEGAL_SASL_STATE.
    let mut connection = KafkaConnection::connect(address).unwrap();
    let early = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0x"));
    assert_eq!(connection.request(1, &early).unwrap().error_code, 34);
    assert!(connection.is_closed_by_peer());

    // Any other API before authenticating: closed without an answer.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert!(connection.request(4, &MetadataRequest::default()).is_err());

    // A SaslAuthenticate frame cut short, and one whose length is past the
    // bound for unauthenticated frames: closed.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert_eq!(handshake(&mut connection, "PLAIN"), 0);
    let mut frame = connection.frame(1, &early).unwrap();
    frame.truncate(frame.len() - 3);
    let length = i32::try_from(frame.len() - 4).unwrap();
    frame[..4].copy_from_slice(&length.to_be_bytes());
    connection.send_raw(&frame).unwrap();
    assert!(connection.is_closed_by_peer());
    let mut connection = KafkaConnection::connect(address).unwrap();
    connection.send_raw(&(10i32 << 20).to_be_bytes()).unwrap();
    assert!(connection.is_closed_by_peer());

    // The broker still serves: a good PLAIN login over raw frames.
    let mut connection = KafkaConnection::connect(address).unwrap();
    assert_eq!(handshake(&mut connection, "PLAIN"), 0);
    let login = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0alice-secret"));
    assert_eq!(connection.request(2, &login).unwrap().error_code, 0);
    let metadata = connection.request(12, &MetadataRequest::default()).unwrap();
    assert_eq!(metadata.brokers.len(), 2, "one broker per shard");
    let ports: Vec<i32> = metadata.brokers.iter().map(|b| b.port).collect();
    assert!(
        ports.contains(&i32::from(address.port())),
        "Metadata names the SASL listener's ports: {ports:?}"
    );
    // A second handshake on an authenticated connection: ILLEGAL_SASL_STATE.
    assert_eq!(handshake(&mut connection, "PLAIN"), 34);
    assert!(engine.is_running());
    engine.terminate();
}

/// Reads until the peer closes the connection (a reset counts: a server
/// closing with unread bytes resets) or 15 s pass; returns every byte that
/// came before the close.
fn read_until_closed(stream: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => Ok(received),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(received),
        Err(error) => Err(error),
    }
}

/// A peer Hello (raft/src/peer_auth.rs): magic, version 1, padding, the
/// claimed node id, a nonce.
fn raft_hello(node_id: u64) -> Vec<u8> {
    let mut hello = b"SLRH\x01\0\0\0".to_vec();
    hello.extend_from_slice(&node_id.to_be_bytes());
    hello.extend_from_slice(&[7; 16]);
    hello
}

/// Issue 13 section 4: a three-node cluster whose raft peers prove the
/// cluster secret forms, replicates and moves leadership as before, while
/// strangers on a raft port — a member's id without the secret, a
/// non-member's id, a plain frame, a silent socket — are refused, logged,
/// and change nothing.
#[test]
fn raft_peers_prove_the_cluster_secret_and_strangers_change_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("raft-secret");
    std::fs::write(
        &secret,
        "f3a1c09b7d2e4f6a8b0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708\n",
    )
    .unwrap();
    let secret = secret.display().to_string();
    let mut cluster =
        common::cluster::Cluster::start(&["--shards", "1", "--fsync", "never", "--raft-secret-file", &secret]);
    cluster.wait_ready(Duration::from_secs(30));
    cluster.create_topic("guarded", 2, &[]);
    cluster.wait_full_isr("guarded", 2, Duration::from_secs(30));
    let target = cluster.raft_addr(1);

    // A member's id without the secret: the node proves itself, then
    // refuses the proof that cannot be right.
    let mut impostor = std::net::TcpStream::connect(target).unwrap();
    impostor.write_all(&raft_hello(2)).unwrap();
    let challenge = {
        use std::io::Read;
        let mut challenge = [0u8; 64];
        impostor.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        impostor.read_exact(&mut challenge).unwrap();
        challenge
    };
    assert_eq!(&challenge[..4], b"SLRC");
    assert_eq!(u64::from_be_bytes(challenge[8..16].try_into().unwrap()), 1);
    let mut proof = b"SLRP\x01\0\0\0".to_vec();
    proof.extend_from_slice(&[0xAB; 32]);
    impostor.write_all(&proof).unwrap();
    assert_eq!(read_until_closed(&mut impostor).unwrap(), b"");

    // A non-member's id: closed before any challenge.
    let mut stranger = std::net::TcpStream::connect(target).unwrap();
    stranger.write_all(&raft_hello(9)).unwrap();
    assert_eq!(read_until_closed(&mut stranger).unwrap(), b"");

    // A CRC-framed request as an unauthenticated peer would send it.
    let mut plain = std::net::TcpStream::connect(target).unwrap();
    let payload = b"not a handshake at all, but a frame";
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    frame.extend_from_slice(payload);
    plain.write_all(&frame).unwrap();
    assert_eq!(read_until_closed(&mut plain).unwrap(), b"");

    // A silent socket is closed after the handshake deadline (5 s).
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(target).unwrap();
    assert_eq!(read_until_closed(&mut silent).unwrap(), b"");
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());

    let log = cluster.log(1);
    assert!(log.contains("peer handshake failed"), "{}", cluster.log_tail(1));
    assert!(log.contains("not a member"), "{}", cluster.log_tail(1));
    assert!(log.contains("no handshake in time"), "{}", cluster.log_tail(1));
    cluster.assert_none_exited();
    // Nothing changed: the topic is still there, in sync on every node.
    cluster.wait_full_isr("guarded", 2, Duration::from_secs(30));
}

/// How the brokers of a secure test cluster authenticate to each other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BrokerAuth {
    /// SASL_SSL with SCRAM-SHA-512 as `User:broker`.
    Scram,
    /// SSL with client certificates required: `User:CN=broker`.
    MutualTls,
}

/// Issue 13: the secure three-node cluster of docs/security.md. Clients and
/// brokers share one listener (BROKER): SASL_SSL with SCRAM-SHA-512, or SSL
/// with client certificates required. Followers fetch through it as the
/// broker principal, after checking each leader's certificate against the
/// cluster CA; raft peers prove the cluster secret; the authorizer is on.
/// The harness's own PLAINTEXT listener (loopback) is `User:ANONYMOUS`,
/// granted Describe only, so it can watch the ISR but not fetch as a
/// follower. shardctl administers over the secure listener.
fn a_secure_cluster_replicates(auth: BrokerAuth) {
    let pki = Pki::new("cluster CA");
    let (cert, key) = pki.issue("broker", "broker");
    let (admin_cert, admin_key) = pki.issue("admin", "admin");
    let (alice_cert, alice_key) = pki.issue("alice", "alice");
    let stranger_ca = Pki::new("another CA");
    let (stranger_cert, stranger_key) = stranger_ca.issue("stranger", "broker");
    let ca = pki.ca_file();
    let users = pki.path("users");
    std::fs::write(&users, "admin:admin-secret\nbroker:broker-secret\nalice:alice-secret\n").unwrap();
    let users = users.display().to_string();
    let secret = pki.path("raft-secret");
    std::fs::write(
        &secret,
        "5e0c1b2a3948576675849302a1b2c3d4e5f60718293a4b5c6d7e8f9001122334\n",
    )
    .unwrap();
    let secret = secret.display().to_string();
    let mut flags = vec![
        "--shards",
        "1",
        "--fsync",
        "never",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca,
        "--inter-broker-listener",
        "BROKER",
        "--authorizer",
        "acl",
        "--raft-secret-file",
        &secret,
        "--auto-create-topics",
        "--default-replication-factor",
        "3",
    ];
    let (protocol, alice, admin_env, settings, wrong) = match auth {
        BrokerAuth::Scram => {
            flags.extend([
                "--sasl-users-file",
                &users,
                "--inter-broker-user",
                "broker",
                "--super-user",
                "User:admin",
                "--super-user",
                "User:broker",
            ]);
            let settings = vec![
                "security.protocol=SASL_SSL".to_string(),
                format!("ssl.ca.location={ca}"),
                "sasl.mechanism=SCRAM-SHA-512".to_string(),
                "sasl.username=alice".to_string(),
                "sasl.password=alice-secret".to_string(),
            ];
            let mut wrong = settings.clone();
            wrong[4] = "sasl.password=broker-secret".to_string();
            let admin_env = vec![
                ("SHARDCTL_TLS_CA", ca.clone()),
                ("SHARDCTL_SASL_USER", "admin".to_string()),
                ("SHARDCTL_SASL_PASSWORD", "admin-secret".to_string()),
            ];
            ("SASL_SSL", "User:alice", admin_env, settings, wrong)
        }
        BrokerAuth::MutualTls => {
            flags.extend([
                "--tls-client-auth",
                "required",
                "--super-user",
                "User:CN=admin",
                "--super-user",
                "User:CN=broker",
            ]);
            let with_identity = |cert: &str, key: &str| {
                vec![
                    "security.protocol=SSL".to_string(),
                    format!("ssl.ca.location={ca}"),
                    format!("ssl.certificate.location={cert}"),
                    format!("ssl.key.location={key}"),
                ]
            };
            let admin_env = vec![
                ("SHARDCTL_TLS_CA", ca.clone()),
                ("SHARDCTL_TLS_CERT", admin_cert.clone()),
                ("SHARDCTL_TLS_KEY", admin_key.clone()),
            ];
            (
                "SSL",
                "User:CN=alice",
                admin_env,
                with_identity(&alice_cert, &alice_key),
                with_identity(&stranger_cert, &stranger_key),
            )
        }
    };
    let mut cluster = common::cluster::Cluster::start_with_listeners(&[("BROKER", protocol)], &flags);
    cluster.wait_ready(Duration::from_secs(30));
    let bootstrap = cluster.listener_addr(1, "BROKER").to_string();
    let admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--bootstrap", &bootstrap]);
        let env: Vec<(&str, &str)> = admin_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let output = common::shardctl_with_env(&all, &env);
        assert!(
            output.status.success(),
            "shardctl {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    admin(&[
        "acl",
        "create",
        "--principal",
        "User:ANONYMOUS",
        "--operation",
        "Describe",
        "--topic",
        "*",
    ]);
    for (operation, resource) in [("All", "--topic"), ("Read", "--group")] {
        admin(&[
            "acl",
            "create",
            "--principal",
            alice,
            "--operation",
            operation,
            resource,
            "secure-",
            "--prefixed",
        ]);
    }
    admin(&[
        "topic",
        "create",
        "guarded",
        "--partitions",
        "2",
        "--replication-factor",
        "3",
    ]);
    // Every follower caught up: each authenticated to its leaders as the broker.
    cluster.wait_full_isr("guarded", 2, Duration::from_secs(30));

    // alice, with the three client families: acks=all on a new topic replicated
    // three ways, then read back; a wrong password or a certificate from
    // another CA is refused.
    let all_bootstrap = cluster.listener_bootstrap("BROKER");
    for library in ["confluent", "kafka-python"] {
        client(library, &all_bootstrap, "roundtrip", &settings);
    }
    rust_rdkafka_roundtrip(&all_bootstrap, &settings);
    client("confluent", &all_bootstrap, "refused", &wrong);

    // A process that is no authenticated broker cannot fetch as one.
    let leader = cluster.partition_leader("guarded", 0);
    let mut anonymous = KafkaConnection::connect(cluster.kafka_addr(leader)).unwrap();
    let mut partition = kafka_protocol::messages::fetch_request::FetchPartition::default();
    partition.partition = 0;
    partition.partition_max_bytes = 1 << 20;
    let mut fetched = kafka_protocol::messages::fetch_request::FetchTopic::default();
    fetched.topic = kafka_protocol::messages::TopicName(StrBytes::from_static_str("guarded"));
    fetched.partitions = vec![partition];
    let mut fetch = kafka_protocol::messages::FetchRequest::default();
    fetch.replica_id = kafka_protocol::messages::BrokerId(if leader == 1 { 2 } else { 1 });
    fetch.max_wait_ms = 0;
    fetch.topics = vec![fetched];
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    assert_eq!(
        anonymous.request(12, &fetch).unwrap().error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );
    cluster.assert_none_exited();
    for node_id in cluster.node_ids() {
        let log = cluster.log(node_id);
        assert!(
            !log.contains("logging in to") && !log.contains("TLS with"),
            "node {node_id}: {}",
            cluster.log_tail(node_id)
        );
    }
    cluster.wait_full_isr("guarded", 2, Duration::from_secs(30));
}

#[test]
fn a_secure_cluster_with_scram_between_brokers() {
    a_secure_cluster_replicates(BrokerAuth::Scram);
}

#[test]
fn a_secure_cluster_with_mutual_tls_between_brokers() {
    a_secure_cluster_replicates(BrokerAuth::MutualTls);
}
