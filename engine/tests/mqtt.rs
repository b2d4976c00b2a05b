//! MQTT against a real engine: paho-mqtt and rumqttc (3.1.1 and 5.0), kafka-python
//! on one log, mosquitto's command-line clients, and hand-made bad packets
//! that must close only their own connection, with the v5 reason code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use common::{
    mqtt::{
        connect_frame, connect_packet, connected, drive_v4, drive_v5, prefixed, publish_qos1, publish_qos1_packet,
        read_packet, remaining_length, try_read_packet, wait_for_all, Received, ANSWER_WAIT,
    },
    python_script_output, raw_exchange, run_engine_briefly, Engine,
};

fn mqtt_addr(engine: &Engine) -> SocketAddr {
    engine.mqtt_addr.expect("the harness gives every engine an MQTT port")
}

/// Sends `bytes` on an established stream and returns everything the
/// server sends until it closes the connection.
fn send_until_closed(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buffer[..n]),
            Err(e) => panic!("the server did not close the connection within {ANSWER_WAIT:?}: {e}; got {out:02x?}"),
        }
    }
}

/// A QoS 1 publish on a fresh 3.1.1 connection is acknowledged: the
/// broker still serves.
fn assert_still_serving(addr: SocketAddr, id: &str) {
    let mut stream = connected(addr, 4, id);
    // PUBLISH QoS 1 to "ok", packet id 1, payload "x".
    stream.write_all(&[0x32, 7, 0, 2, b'o', b'k', 0, 1, b'x']).unwrap();
    let mut puback = [0u8; 4];
    stream.read_exact(&mut puback).unwrap();
    assert_eq!(puback, [0x40, 2, 0, 1], "PUBACK");
}

#[test]
fn paho_and_kafka_clients_share_one_log() {
    let engine = Engine::start(&["--shards", "2"]);
    let mqtt = mqtt_addr(&engine).to_string();
    let (ok, output) = python_script_output("mqtt_clients.py", &[&mqtt, &engine.bootstrap()]);
    assert!(ok, "mqtt_clients.py failed:\n{output}\nengine log:\n{}", engine.log());
}

#[test]
fn shared_subscriptions_spread_messages_over_their_members() {
    let engine = Engine::start(&["--shards", "2"]);
    let mqtt = mqtt_addr(&engine).to_string();
    let (ok, output) = python_script_output("mqtt_shared.py", &[&mqtt]);
    assert!(ok, "mqtt_shared.py failed:\n{output}\nengine log:\n{}", engine.log());
}

#[test]
fn rumqttc_clients_publish_and_subscribe_at_every_qos() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::QoS;
    let engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    let (host, port) = (addr.ip().to_string(), addr.port());
    // A 3.1.1 subscriber at QoS 2 and a 5.0 one at QoS 1.
    let (v4_sub, v4_connection) = rumqttc::Client::new(rumqttc::MqttOptions::new("rq-v4-sub", &host, port), 64);
    let (v5_sub, v5_connection) = rumqttc::v5::Client::new(rumqttc::v5::MqttOptions::new("rq-v5-sub", &host, port), 64);
    let (v4_got, v5_got) = (Received::default(), Received::default());
    let (subscribed, suback) = std::sync::mpsc::channel();
    drive_v4(v4_connection, v4_got.clone(), subscribed.clone());
    drive_v5(v5_connection, v5_got.clone(), subscribed.clone());
    v4_sub.subscribe("rq/#", QoS::ExactlyOnce).unwrap();
    v5_sub.subscribe("rq/#", QoS5::AtLeastOnce).unwrap();
    for _ in 0..2 {
        suback.recv_timeout(ANSWER_WAIT).expect("a SUBACK");
    }
    // A 3.1.1 publisher at QoS 0, 1, 2 and a 5.0 one at QoS 2.
    let (v4_pub, v4_pub_connection) = rumqttc::Client::new(rumqttc::MqttOptions::new("rq-v4-pub", &host, port), 64);
    let (v5_pub, v5_pub_connection) =
        rumqttc::v5::Client::new(rumqttc::v5::MqttOptions::new("rq-v5-pub", &host, port), 64);
    let (ignored, _) = std::sync::mpsc::channel();
    drive_v4(v4_pub_connection, Received::default(), ignored.clone());
    drive_v5(v5_pub_connection, Received::default(), ignored);
    v4_pub
        .publish("rq/a", QoS::AtMostOnce, false, b"zero".to_vec())
        .unwrap();
    v4_pub
        .publish("rq/a", QoS::AtLeastOnce, false, b"one".to_vec())
        .unwrap();
    v4_pub
        .publish("rq/b", QoS::ExactlyOnce, false, b"two".to_vec())
        .unwrap();
    v5_pub
        .publish("rq/c", QoS5::ExactlyOnce, false, b"five".to_vec())
        .unwrap();
    // Each at the lower of the published and the granted QoS.
    wait_for_all(
        &v4_got,
        &[
            ("rq/a", b"zero", 0),
            ("rq/a", b"one", 1),
            ("rq/b", b"two", 2),
            ("rq/c", b"five", 2),
        ],
    );
    wait_for_all(
        &v5_got,
        &[
            ("rq/a", b"zero", 0),
            ("rq/a", b"one", 1),
            ("rq/b", b"two", 1),
            ("rq/c", b"five", 1),
        ],
    );
    // Once each (QoS 2 above all).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(v4_got.lock().unwrap().len(), 4, "{:?}", v4_got.lock().unwrap());
    assert_eq!(v5_got.lock().unwrap().len(), 4, "{:?}", v5_got.lock().unwrap());
    for client in [v4_sub, v4_pub] {
        let _ = client.disconnect();
    }
    for client in [v5_sub, v5_pub] {
        let _ = client.disconnect();
    }
}

#[test]
fn mosquitto_clients_publish_and_subscribe() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let port = mqtt_addr(&engine).port().to_string();
    // Subscriber: exits after one message (-C 1), bounded by -W.
    let subscriber = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "m/+",
            "-C",
            "1",
            "-W",
            "20",
            "-v",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto-clients installed (scripts/test-clients installs them)");
    // Its subscription is in place once the shard's feed has started.
    for _ in 0..400 {
        if engine.log().contains("MQTT feed started") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", "m/one", "-m", "hello"])
        .status()
        .unwrap();
    assert!(status.success());
    let output = subscriber.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "m/one hello\n",
        "{}",
        engine.log()
    );
}

#[test]
fn bad_packets_close_only_their_connection_with_the_reason() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never", "--mqtt-max-packet-bytes", "4096"]);
    let addr = mqtt_addr(&engine);
    // A packet before CONNECT: closed, nothing said.
    assert_eq!(raw_exchange(addr, &[0xc0, 0], ANSWER_WAIT), Vec::<u8>::new());
    // A protocol name other than MQTT: closed without a CONNACK.
    let mut wrong_name = connect_packet(4, "x");
    wrong_name[4] = b'X';
    assert_eq!(raw_exchange(addr, &wrong_name, ANSWER_WAIT), Vec::<u8>::new());
    // Protocol level 3 (MQTT 3.1): CONNACK "unacceptable protocol version".
    assert_eq!(
        raw_exchange(addr, &connect_packet(3, "x"), ANSWER_WAIT),
        vec![0x20, 2, 0, 1]
    );
    // An empty client id with a kept session (3.1.1): "identifier rejected".
    let mut kept = connect_packet(4, "");
    kept[9] = 0; // connect flags: no clean session
    assert_eq!(raw_exchange(addr, &kept, ANSWER_WAIT), vec![0x20, 2, 0, 2]);

    // v5, after CONNECT: each ends with DISCONNECT and its reason code.
    let cases: [(&str, Vec<u8>, u8); 4] = [
        // PUBLISH QoS 3.
        ("qos3", vec![0x36, 6, 0, 1, b'a', 0, 1, 0], 0x81),
        // PUBLISH to a wildcard topic.
        ("wildcard", vec![0x30, 5, 0, 2, b'a', b'#', 0], 0x90),
        // A packet announcing more than --mqtt-max-packet-bytes.
        ("oversize", vec![0x30, 0x80, 0x80, 0x01], 0x95),
        // A second CONNECT.
        ("second", connect_packet(5, "again"), 0x82),
    ];
    for (name, packet, reason) in cases {
        let stream = connected(addr, 5, &format!("bad-{name}"));
        let answer = send_until_closed(stream, &packet);
        assert_eq!(answer, vec![0xe0, 1, reason], "{name}");
    }
    // 3.1.1 has no server DISCONNECT: QoS 3 just closes.
    let stream = connected(addr, 4, "bad-311");
    assert_eq!(
        send_until_closed(stream, &[0x36, 5, 0, 1, b'a', 0, 1]),
        Vec::<u8>::new()
    );
    // Invalid UTF-8 in a topic (v5): malformed.
    let stream = connected(addr, 5, "bad-utf8");
    assert_eq!(
        send_until_closed(stream, &[0x30, 5, 0, 2, 0xc3, 0x28, 0]),
        vec![0xe0, 1, 0x81]
    );
    // And the broker goes on serving everyone else.
    assert_still_serving(addr, "good");
    let log = engine.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_over() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    // Several pairs, so that with two shards some pairs land on different
    // shards and the takeover crosses cores.
    for pair in 0..4 {
        let id = format!("device-{pair}");
        let old = connected(addr, 5, &id);
        let _new = connected(addr, 5, &id);
        // The old one is told why and closed.
        assert_eq!(send_until_closed(old, &[]), vec![0xe0, 1, 0x8e], "pair {pair}");
    }
    assert_still_serving(addr, "after-takeover");
}

#[test]
fn a_lost_connection_publishes_its_will() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    let mut subscriber = connected(addr, 4, "will-watcher");
    // SUBSCRIBE packet id 1 to "will/#" at QoS 0; the SUBACK grants 0.
    subscriber
        .write_all(&[0x82, 11, 0, 1, 0, 6, b'w', b'i', b'l', b'l', b'/', b'#', 0])
        .unwrap();
    let mut suback = [0u8; 5];
    subscriber.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);
    // A 3.1.1 CONNECT with a will (flags: will, clean session) on "will/d", then the socket drops.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 60, 0, 1, b'd'];
    body.extend_from_slice(&[0, 6, b'w', b'i', b'l', b'l', b'/', b'd', 0, 4, b'g', b'o', b'n', b'e']);
    let mut connect = vec![0x10, u8::try_from(body.len()).unwrap()];
    connect.extend_from_slice(&body);
    let mut device = TcpStream::connect(addr).unwrap();
    device.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    device.write_all(&connect).unwrap();
    let mut connack = [0u8; 4];
    device.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    drop(device);
    // PUBLISH QoS 0 "will/d" "gone".
    let mut publish = [0u8; 14];
    subscriber.read_exact(&mut publish).unwrap();
    assert_eq!(
        publish,
        [0x30, 12, 0, 6, b'w', b'i', b'l', b'l', b'/', b'd', b'g', b'o', b'n', b'e']
    );
}

#[test]
fn a_new_subscriber_gets_the_retained_message() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    let mut publisher = connected(addr, 4, "retainer");
    // PUBLISH QoS 1, RETAIN, "r/a", packet id 1, "on" (replaced by "off" below).
    publisher
        .write_all(&[0x33, 9, 0, 3, b'r', b'/', b'a', 0, 1, b'o', b'n'])
        .unwrap();
    publisher
        .write_all(&[0x33, 10, 0, 3, b'r', b'/', b'a', 0, 2, b'o', b'f', b'f'])
        .unwrap();
    let mut pubacks = [0u8; 8];
    publisher.read_exact(&mut pubacks).unwrap();
    assert_eq!(pubacks, [0x40, 2, 0, 1, 0x40, 2, 0, 2]);
    // A later subscriber (v5) to "r/+" at QoS 1 gets SUBACK, then "off" with RETAIN set.
    let mut subscriber = connected(addr, 5, "late");
    subscriber
        .write_all(&[0x82, 9, 0, 7, 0, 0, 3, b'r', b'/', b'+', 1])
        .unwrap();
    let mut suback = [0u8; 6];
    subscriber.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 4, 0, 7, 0, 1]);
    // PUBLISH QoS 1 + RETAIN (0x33), topic "r/a", packet id 1, no properties, "off".
    let mut publish = [0u8; 13];
    subscriber.read_exact(&mut publish).unwrap();
    assert_eq!(publish, [0x33, 11, 0, 3, b'r', b'/', b'a', 0, 1, 0, b'o', b'f', b'f']);
}

#[test]
fn publications_sent_together_are_stored_and_acknowledged_in_order() {
    const PUBLICATIONS: u16 = 300;
    let engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    let mut subscriber = connected(addr, 4, "order-watcher");
    // SUBSCRIBE packet id 1 to "seq/#" at QoS 0.
    subscriber
        .write_all(&[0x82, 10, 0, 1, 0, 5, b's', b'e', b'q', b'/', b'#', 0])
        .unwrap();
    assert_eq!(read_packet(&mut subscriber), (0x90, vec![0, 1, 0]));
    // One write: 300 QoS 1 PUBLISHes over three topics (payload: the
    // packet id), then DISCONNECT right behind them.
    let mut burst = Vec::new();
    for n in 1..=PUBLICATIONS {
        let topic = format!("seq/{}", n % 3);
        burst.extend_from_slice(&publish_qos1_packet(&topic, n, &n.to_be_bytes()));
    }
    burst.extend_from_slice(&[0xe0, 0]);
    let publisher = connected(addr, 4, "burst");
    let acks = send_until_closed(publisher, &burst);
    // Every PUBLISH acknowledged, in the order sent, before the close.
    let expected: Vec<u8> = (1..=PUBLICATIONS)
        .flat_map(|n| {
            let [high, low] = n.to_be_bytes();
            [0x40, 2, high, low]
        })
        .collect();
    assert_eq!(acks, expected, "PUBACKs in publish order");
    // Each topic's messages reach the subscriber in publish order.
    let mut last = [0u16; 3];
    for _ in 0..PUBLICATIONS {
        let (kind, body) = read_packet(&mut subscriber);
        assert_eq!(kind, 0x30, "a QoS 0 delivery");
        let topic_bytes = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = std::str::from_utf8(&body[2..2 + topic_bytes]).unwrap();
        let n = u16::from_be_bytes([body[2 + topic_bytes], body[3 + topic_bytes]]);
        let stream = usize::from(n % 3);
        assert_eq!(topic, format!("seq/{stream}"));
        assert!(n > last[stream], "{topic}: {n} after {}", last[stream]);
        last[stream] = n;
    }
    assert_eq!(last.iter().max(), Some(&PUBLICATIONS));
    // The metrics say how many append rounds carried them: read in one go,
    // they go many to a round.
    let total = |name: &str| engine.metric_total(name);
    assert_eq!(total("shardline_mqtt_published_total"), u64::from(PUBLICATIONS));
    let rounds = total("shardline_mqtt_append_rounds_total");
    assert!((1..=u64::from(PUBLICATIONS / 2)).contains(&rounds), "{rounds} rounds");
    assert_eq!(total("shardline_mqtt_delivered_total"), u64::from(PUBLICATIONS));
    assert!(total("shardline_mqtt_connections_accepted_total") >= 2);
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_and_the_others_get_everything() {
    const MESSAGES: u32 = 6_000;
    const PAYLOAD_BYTES: usize = 4_000;
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    // SUBSCRIBE packet id 1 to "flood" at QoS 0.
    let subscribe = [0x82, 10, 0, 1, 0, 5, b'f', b'l', b'o', b'o', b'd', 0];
    let mut stuck = connected(addr, 4, "stuck");
    stuck.write_all(&subscribe).unwrap();
    assert_eq!(read_packet(&mut stuck), (0x90, vec![0, 1, 0]));
    let mut reader = connected(addr, 4, "reader");
    reader.write_all(&subscribe).unwrap();
    assert_eq!(read_packet(&mut reader), (0x90, vec![0, 1, 0]));
    // 6,000 QoS 0 messages of 4 kB (24 MB: more than the stuck subscriber's
    // socket buffers and delivery queue hold), numbered in their first bytes.
    let writer = std::thread::spawn(move || {
        let mut publisher = connected(addr, 4, "flooder");
        for n in 0..MESSAGES {
            let mut body = vec![0, 5, b'f', b'l', b'o', b'o', b'd'];
            body.extend_from_slice(&n.to_be_bytes());
            body.resize(7 + PAYLOAD_BYTES, 0);
            let mut packet = vec![0x30];
            remaining_length(body.len(), &mut packet);
            packet.extend_from_slice(&body);
            publisher.write_all(&packet).unwrap();
        }
        publisher.write_all(&[0xe0, 0]).unwrap();
    });
    // The reading subscriber gets every message, in order, although the
    // other one stopped reading (it holds the feed up for a bounded time).
    for n in 0..MESSAGES {
        let (kind, body) =
            try_read_packet(&mut reader).unwrap_or_else(|e| panic!("message {n}: {e}; engine log:\n{}", engine.log()));
        assert_eq!(kind, 0x30);
        assert_eq!(&body[..7], b"\0\x05flood", "topic");
        assert_eq!(u32::from_be_bytes(body[7..11].try_into().unwrap()), n, "in order");
    }
    writer.join().unwrap();
    // The stuck one was disconnected: what its socket holds, then the end.
    let mut drained = 0usize;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match stuck.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) => panic!("the stuck subscriber was not disconnected: {e} after {drained} bytes"),
        }
    }
    assert!(
        drained < usize::try_from(MESSAGES).unwrap() * PAYLOAD_BYTES,
        "it did not get everything"
    );
    assert!(
        engine.log().contains("delivery queue"),
        "the engine says why:\n{}",
        engine.log()
    );
    assert_still_serving(addr, "after-flood");
}

#[test]
fn retained_messages_survive_a_restart() {
    let mut engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    let mut publisher = connected(addr, 4, "keeper");
    // Retained QoS 1: "k/a" = "on", "k/b" = "x", then "k/b" cleared (empty payload).
    publisher
        .write_all(&[0x33, 9, 0, 3, b'k', b'/', b'a', 0, 1, b'o', b'n'])
        .unwrap();
    publisher
        .write_all(&[0x33, 8, 0, 3, b'k', b'/', b'b', 0, 2, b'x'])
        .unwrap();
    publisher.write_all(&[0x33, 7, 0, 3, b'k', b'/', b'b', 0, 3]).unwrap();
    let mut pubacks = [0u8; 12];
    publisher.read_exact(&mut pubacks).unwrap();
    assert_eq!(pubacks, [0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3]);
    drop(publisher);
    engine.restart();
    // A new subscriber to "k/#" gets "k/a" = "on" with RETAIN, and nothing for "k/b".
    let mut subscriber = connected(addr, 4, "after-restart");
    subscriber
        .write_all(&[0x82, 8, 0, 1, 0, 3, b'k', b'/', b'#', 1])
        .unwrap();
    assert_eq!(read_packet(&mut subscriber), (0x90, vec![0, 1, 1]));
    let (kind, body) = read_packet(&mut subscriber);
    assert_eq!(kind, 0x33, "PUBLISH QoS 1 with RETAIN: {body:02x?}");
    assert_eq!(&body[..5], b"\0\x03k/a");
    assert_eq!(&body[7..], b"on");
    subscriber.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut more = [0u8; 1];
    assert!(
        subscriber.read(&mut more).is_err(),
        "only the one retained message is left"
    );
    assert!(engine.log().contains("MQTT table loaded"), "{}", engine.log());
}

/// CONNECT at `level` with client id `id`, clean start as given, keep alive
/// 60 s and, for 5.0, a Session Expiry Interval of `expiry_s`.
fn connect_session_packet(level: u8, id: &str, clean_start: bool, expiry_s: u32) -> Vec<u8> {
    let flags = if clean_start { 0x02 } else { 0x00 };
    let mut expiry = vec![0x11];
    expiry.extend_from_slice(&expiry_s.to_be_bytes());
    let mut payload = Vec::new();
    prefixed(&mut payload, id.as_bytes());
    connect_frame(level, flags, &expiry, &payload)
}

/// Connects (see [`connect_session_packet`]); returns the stream and the
/// CONNACK's session-present flag.
fn session_connected(addr: SocketAddr, level: u8, id: &str, clean_start: bool, expiry_s: u32) -> (TcpStream, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    stream
        .write_all(&connect_session_packet(level, id, clean_start, expiry_s))
        .unwrap();
    let (kind, body) = read_packet(&mut stream);
    assert_eq!((kind, body[1]), (0x20, 0), "CONNACK accepted: {body:02x?}");
    (stream, body[0] & 1 == 1)
}

/// A QoS 1 PUBLISH a v5 subscriber received: (DUP, packet id, payload);
/// its topic is `topic`.
fn received_qos1_v5(stream: &mut TcpStream, topic: &str) -> (bool, u16, Vec<u8>) {
    let (kind, body) = read_packet(stream);
    assert_eq!(kind & 0xf6, 0x32, "PUBLISH QoS 1: {kind:02x} {body:02x?}");
    let topic_end = 2 + topic.len();
    assert_eq!(&body[2..topic_end], topic.as_bytes());
    let id = u16::from_be_bytes([body[topic_end], body[topic_end + 1]]);
    // No properties (one zero byte), then the payload.
    assert_eq!(body[topic_end + 2], 0);
    (kind & 0x08 != 0, id, body[topic_end + 3..].to_vec())
}

/// Sends the PUBACK of delivery `id`.
fn acknowledge(stream: &mut TcpStream, id: u16) {
    let mut puback = vec![0x40, 2];
    puback.extend_from_slice(&id.to_be_bytes());
    stream.write_all(&puback).unwrap();
}

#[test]
fn a_rumqttc_persistent_session_gets_what_was_published_while_it_was_away_across_a_restart() {
    use rumqttc::QoS;
    let mut engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    let (host, port) = (addr.ip().to_string(), addr.port());
    let options = || {
        let mut options = rumqttc::MqttOptions::new("ps-sub", &host, port);
        options.set_clean_session(false);
        options
    };
    let (subscriber, connection) = rumqttc::Client::new(options(), 64);
    let (subscribed, suback) = std::sync::mpsc::channel();
    drive_v4(connection, Received::default(), subscribed);
    subscriber.subscribe("ps/#", QoS::AtLeastOnce).unwrap();
    suback.recv_timeout(ANSWER_WAIT).expect("a SUBACK");
    subscriber.disconnect().unwrap();
    // Published while the subscriber is away: two at QoS 1, one at QoS 0
    // (not kept for an offline client), and one that no filter matches.
    let mut publisher = connected(addr, 4, "ps-pub");
    publish_qos1(&mut publisher, "ps/a", 1, b"two");
    publish_qos1(&mut publisher, "ps/b", 2, b"three");
    publish_qos1(&mut publisher, "other", 3, b"unmatched");
    publisher
        .write_all(&[0x30, 8, 0, 4, b'p', b's', b'/', b'a', b'z', b'0'])
        .unwrap();
    drop(publisher);
    engine.restart();
    // The session is back without a new SUBSCRIBE: the offline messages,
    // then live ones.
    let (subscriber, connection) = rumqttc::Client::new(options(), 64);
    let received = Received::default();
    let (ignored, _) = std::sync::mpsc::channel();
    drive_v4(connection, received.clone(), ignored);
    wait_for_all(&received, &[("ps/a", b"two", 1), ("ps/b", b"three", 1)]);
    let mut publisher = connected(addr, 4, "ps-pub");
    publish_qos1(&mut publisher, "ps/a", 1, b"four");
    wait_for_all(
        &received,
        &[("ps/a", b"two", 1), ("ps/b", b"three", 1), ("ps/a", b"four", 1)],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.lock().unwrap().len(), 3, "{:?}", received.lock().unwrap());
    assert_eq!(engine.metric_total("shardline_mqtt_sessions_resumed_total"), 1);
    // Its end saves it.
    subscriber.disconnect().unwrap();
    let deadline = std::time::Instant::now() + ANSWER_WAIT;
    while engine.metric_total("shardline_mqtt_sessions_saved_total") == 0 {
        assert!(std::time::Instant::now() < deadline, "no session saved");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_persistent_session_sends_an_unacknowledged_message_again_and_survives_a_crash() {
    let mut engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    let (mut subscriber, present) = session_connected(addr, 5, "dup-sub", false, 300);
    assert!(!present, "a new session");
    // SUBSCRIBE packet id 1, no properties, "u/#" at QoS 1.
    subscriber
        .write_all(&[0x82, 9, 0, 1, 0, 0, 3, b'u', b'/', b'#', 1])
        .unwrap();
    assert_eq!(read_packet(&mut subscriber), (0x90, vec![0, 1, 0, 1]));
    let mut publisher = connected(addr, 4, "dup-pub");
    publish_qos1(&mut publisher, "u/x", 1, b"m1");
    let (dup, id, payload) = received_qos1_v5(&mut subscriber, "u/x");
    assert_eq!((dup, payload.as_slice()), (false, &b"m1"[..]));
    // Gone without a PUBACK: the same message comes again, DUP set, same id.
    drop(subscriber);
    let (mut subscriber, present) = session_connected(addr, 5, "dup-sub", false, 300);
    assert!(present, "the session is resumed");
    assert_eq!(received_qos1_v5(&mut subscriber, "u/x"), (true, id, b"m1".to_vec()));
    acknowledge(&mut subscriber, id);
    publish_qos1(&mut publisher, "u/x", 2, b"m2");
    let (_, id, payload) = received_qos1_v5(&mut subscriber, "u/x");
    assert_eq!(payload, b"m2");
    acknowledge(&mut subscriber, id);
    // The process dies with the subscriber connected: nothing published
    // after what it acknowledged is lost (what it acknowledged within the
    // last save interval may come again).
    engine.restart();
    let mut publisher = connected(addr, 4, "dup-pub");
    publish_qos1(&mut publisher, "u/x", 3, b"m3");
    let (mut subscriber, present) = session_connected(addr, 5, "dup-sub", false, 300);
    assert!(present, "the session survived the crash");
    let mut got = Vec::new();
    while !got.contains(&b"m3".to_vec()) {
        let (_, id, payload) = received_qos1_v5(&mut subscriber, "u/x");
        assert!([&b"m1"[..], b"m2", b"m3"].contains(&payload.as_slice()), "{payload:?}");
        acknowledge(&mut subscriber, id);
        got.push(payload);
    }
    // A clean start ends the session for good.
    drop(subscriber);
    let (subscriber, present) = session_connected(addr, 5, "dup-sub", true, 0);
    assert!(!present);
    drop(subscriber);
    std::thread::sleep(Duration::from_millis(200));
    let (_subscriber, present) = session_connected(addr, 5, "dup-sub", false, 300);
    assert!(!present, "nothing left after a clean start");
}

#[test]
fn a_clean_stop_saves_sessions_so_nothing_comes_twice() {
    let mut engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    let (mut subscriber, _) = session_connected(addr, 5, "kept", false, 300);
    subscriber
        .write_all(&[0x82, 9, 0, 1, 0, 0, 3, b'k', b'/', b'#', 1])
        .unwrap();
    assert_eq!(read_packet(&mut subscriber), (0x90, vec![0, 1, 0, 1]));
    let mut publisher = connected(addr, 4, "kept-pub");
    for (id, payload) in [(1, b"a1"), (2, b"a2"), (3, b"a3")] {
        publish_qos1(&mut publisher, "k/x", id, payload);
        let (_, packet_id, got) = received_qos1_v5(&mut subscriber, "k/x");
        assert_eq!(got, payload);
        acknowledge(&mut subscriber, packet_id);
    }
    // Stopped cleanly right away (well within the save interval): the
    // session's end is saved before the partitions close.
    engine.restart_gracefully();
    let (mut subscriber, present) = session_connected(addr, 5, "kept", false, 300);
    assert!(present);
    let mut publisher = connected(addr, 4, "kept-pub");
    publish_qos1(&mut publisher, "k/x", 4, b"a4");
    let (_, _, got) = received_qos1_v5(&mut subscriber, "k/x");
    assert_eq!(got, b"a4", "nothing already acknowledged comes again");
}

/// v5 CONNECT, clean start 0, keep alive 60 s, Session Expiry 300 s,
/// client id `id`, and a QoS 0 will on `topic` saying `payload` after
/// `will_delay_s`.
fn connect_with_delayed_will(id: &str, topic: &str, payload: &[u8], will_delay_s: u32) -> Vec<u8> {
    let mut body = Vec::new();
    prefixed(&mut body, id.as_bytes());
    // The will's properties: Will Delay Interval.
    body.extend_from_slice(&[5, 0x18]);
    body.extend_from_slice(&will_delay_s.to_be_bytes());
    prefixed(&mut body, topic.as_bytes());
    prefixed(&mut body, payload);
    // Flags: will (QoS 0); properties: Session Expiry Interval 300 s.
    connect_frame(5, 0x04, &[0x11, 0, 0, 1, 44], &body)
}

#[test]
fn a_delayed_will_waits_and_is_dropped_when_the_client_comes_back() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    let mut watcher = connected(addr, 4, "will-delay-watcher");
    // SUBSCRIBE packet id 1 to "wd/#" at QoS 0.
    watcher
        .write_all(&[0x82, 9, 0, 1, 0, 4, b'w', b'd', b'/', b'#', 0])
        .unwrap();
    assert_eq!(read_packet(&mut watcher), (0x90, vec![0, 1, 0]));
    let lose = |id: &str, topic: &str, payload: &[u8]| {
        let mut device = TcpStream::connect(addr).unwrap();
        device.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
        device
            .write_all(&connect_with_delayed_will(id, topic, payload, 1))
            .unwrap();
        assert_eq!(read_packet(&mut device).0, 0x20, "CONNACK");
        drop(device);
    };
    // Back within the delay: that will is never published.
    lose("wd-back", "wd/back", b"gone");
    let (_back, present) = session_connected(addr, 5, "wd-back", false, 300);
    assert!(present);
    // Not back: published after its delay.
    lose("wd-away", "wd/away", b"gone");
    let lost_at = std::time::Instant::now();
    let (kind, body) = read_packet(&mut watcher);
    assert_eq!(kind, 0x30, "the will: {body:02x?}");
    assert_eq!(&body[2..9], b"wd/away", "only the will of the client that stayed away");
    assert!(
        lost_at.elapsed() >= Duration::from_millis(900),
        "not before its delay: {:?}",
        lost_at.elapsed()
    );
    watcher.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    assert!(try_read_packet(&mut watcher).is_err(), "and nothing for wd/back");
}

#[test]
fn a_session_expires_after_its_interval() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    let (mut subscriber, _) = session_connected(addr, 5, "short", false, 1);
    subscriber
        .write_all(&[0x82, 9, 0, 1, 0, 0, 3, b'e', b'/', b'#', 1])
        .unwrap();
    assert_eq!(read_packet(&mut subscriber), (0x90, vec![0, 1, 0, 1]));
    // DISCONNECT (normal, no properties).
    subscriber.write_all(&[0xe0, 0]).unwrap();
    drop(subscriber);
    let (again, present) = session_connected(addr, 5, "short", false, 1);
    assert!(present, "within its interval");
    drop(again);
    std::thread::sleep(Duration::from_millis(2500));
    let (_late, present) = session_connected(addr, 5, "short", false, 1);
    assert!(!present, "expired");
}

/// CONNECT at `level`, clean start, client id `id`, with a user name and,
/// if given, a password.
fn connect_with_credentials(level: u8, id: &str, user: &str, password: Option<&str>) -> Vec<u8> {
    let flags = 0x02 | 0x80 | if password.is_some() { 0x40 } else { 0 };
    let mut payload = Vec::new();
    for field in [Some(id), Some(user), password].into_iter().flatten() {
        prefixed(&mut payload, field.as_bytes());
    }
    connect_frame(level, flags, &[], &payload)
}

/// A 2-shard engine with `--mqtt-auth password` for the users `users`
/// (`NAME:PASSWORD` lines) and `extra` flags; the directory holds the
/// users file (and outlives the engine: it is dropped second).
fn start_with_mqtt_users(users: &str, extra: &[&str]) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, users).unwrap();
    let path = path.display().to_string();
    let mut args = vec!["--shards", "2", "--fsync", "never", "--mqtt-auth", "password"];
    args.extend(["--sasl-users-file", &path]);
    args.extend(extra);
    (Engine::start(&args), dir)
}

#[test]
fn with_password_authentication_only_known_users_connect() {
    let (engine, _dir) = start_with_mqtt_users("device:s3cret\n", &[]);
    let addr = mqtt_addr(&engine);
    // The right password: CONNACK 0, and the connection serves.
    let mut good = TcpStream::connect(addr).unwrap();
    good.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    good.write_all(&connect_with_credentials(4, "d1", "device", Some("s3cret")))
        .unwrap();
    assert_eq!(read_packet(&mut good), (0x20, vec![0, 0]));
    publish_qos1(&mut good, "auth/ok", 1, b"x");
    // A wrong password, an unknown user, no password, no user name at all:
    // refused with the version's code, and closed.
    let refusals: [(u8, Vec<u8>, Vec<u8>); 4] = [
        (
            4,
            connect_with_credentials(4, "d2", "device", Some("wrong")),
            vec![0x20, 2, 0, 0x04],
        ),
        (
            5,
            connect_with_credentials(5, "d3", "nobody", Some("s3cret")),
            vec![0x20, 3, 0, 0x86, 0],
        ),
        (
            4,
            connect_with_credentials(4, "d4", "device", None),
            vec![0x20, 2, 0, 0x04],
        ),
        (5, connect_packet(5, "d5"), vec![0x20, 3, 0, 0x86, 0]),
    ];
    for (level, connect, expected) in refusals {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
        assert_eq!(send_until_closed(stream, &connect), expected, "level {level}");
    }
    // mosquitto's clients with -u/-P.
    let port = addr.port().to_string();
    let publish = |password: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", "auth/m", "-m", "hi"])
            .args(["-u", "device", "-P", password])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(publish("s3cret"), "the right password publishes");
    assert!(!publish("nope"), "a wrong one does not");
}

#[test]
fn a_silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let engine = Engine::start(&["--shards", "1", "--fsync", "never"]);
    let addr = mqtt_addr(&engine);
    // v5 CONNECT, clean start, keep alive 1 s, no properties, client id "ka".
    let connect = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 1, 0, 0, 2, b'k', b'a',
    ];
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    stream.write_all(&connect).unwrap();
    let (kind, _) = read_packet(&mut stream);
    assert_eq!(kind, 0x20, "CONNACK");
    // A PINGREQ keeps it alive past the first deadline.
    std::thread::sleep(Duration::from_millis(1000));
    stream.write_all(&[0xc0, 0]).unwrap();
    assert_eq!(read_packet(&mut stream), (0xd0, vec![]), "PINGRESP");
    let quiet_since = std::time::Instant::now();
    // Then silence: DISCONNECT 0x8D (keep alive timeout), then the close.
    assert_eq!(send_until_closed(stream, &[]), vec![0xe0, 1, 0x8d]);
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "not before 1.5 keep-alives: {waited:?}"
    );
}

/// PUBLISH "acl/t" QoS 1 (packet id 1) on a v5 connection; returns the
/// PUBACK's reason code.
fn v5_puback_code(stream: &mut TcpStream) -> u8 {
    // Topic "acl/t", packet id 1, no properties, payload "x".
    stream
        .write_all(&[0x32, 11, 0, 5, b'a', b'c', b'l', b'/', b't', 0, 1, 0, b'x'])
        .unwrap();
    let (kind, body) = read_packet(stream);
    assert_eq!(kind, 0x40, "PUBACK: {body:02x?}");
    body.get(2).copied().unwrap_or(0)
}

/// SUBSCRIBE "acl/#" at QoS 1 (packet id 2) on a v5 connection; returns
/// the SUBACK's code.
fn v5_suback_code(stream: &mut TcpStream) -> u8 {
    stream
        .write_all(&[0x82, 11, 0, 2, 0, 0, 5, b'a', b'c', b'l', b'/', b'#', 1])
        .unwrap();
    let (kind, body) = read_packet(stream);
    assert_eq!(kind, 0x90, "SUBACK: {body:02x?}");
    body[3]
}

#[test]
fn acls_on_the_mapped_kafka_topic_govern_publishing_and_subscribing() {
    let dir = tempfile::tempdir().unwrap();
    let users = "admin:admin-secret\nwriter:w\nreader:r\nstranger:s\n";
    let engine = Engine::start_secured(dir.path(), users, &["--mqtt-auth", "password"]);
    let bootstrap = engine.listener_addr("SASL").to_string();
    let admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--bootstrap", &bootstrap]);
        let env = [
            ("SHARDCTL_SASL_USER", "admin"),
            ("SHARDCTL_SASL_PASSWORD", "admin-secret"),
        ];
        let output = common::shardctl_with_env(&all, &env);
        assert!(output.status.success(), "shardctl {args:?}: {output:?}");
    };
    admin(&["topic", "create", "mqtt", "--partitions", "2"]);
    let acl = ["acl", "create", "--topic", "mqtt", "--operation"];
    admin(&[&acl[..], &["Write", "--principal", "User:writer"]].concat());
    admin(&[&acl[..], &["Read", "--principal", "User:reader"]].concat());
    let addr = mqtt_addr(&engine);
    let login = |level: u8, id: &str, user: &str, password: &str| {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
        stream
            .write_all(&connect_with_credentials(level, id, user, Some(password)))
            .unwrap();
        assert_eq!(read_packet(&mut stream).0, 0x20, "CONNACK");
        stream
    };
    let mut writer = login(5, "acl-w", "writer", "w");
    let mut reader = login(5, "acl-r", "reader", "r");
    let mut stranger = login(5, "acl-s", "stranger", "s");
    assert_eq!(v5_suback_code(&mut reader), 1, "Read lets the reader subscribe");
    assert_eq!(v5_suback_code(&mut stranger), 0x87, "no ACL: not authorized");
    assert_eq!(v5_suback_code(&mut writer), 0x87, "Write alone does not let one read");
    assert_eq!(v5_puback_code(&mut writer), 0, "Write lets the writer publish");
    // The reader gets the writer's message.
    let (kind, body) = read_packet(&mut reader);
    assert_eq!((kind & 0xf0, &body[2..7]), (0x30, &b"acl/t"[..]));
    acknowledge(&mut reader, u16::from_be_bytes([body[7], body[8]]));
    assert_eq!(v5_puback_code(&mut reader), 0x87, "Read alone does not let one publish");
    // 3.1.1 has no negative PUBACK: a refused QoS 1 PUBLISH closes.
    let stranger_311 = login(4, "acl-s4", "stranger", "s");
    let answer = send_until_closed(
        stranger_311,
        &[0x32, 10, 0, 5, b'a', b'c', b'l', b'/', b't', 0, 1, b'x'],
    );
    assert!(answer.is_empty(), "closed without a PUBACK: {answer:02x?}");
}

#[test]
fn mqtt_can_be_turned_off() {
    let engine = Engine::start(&["--shards", "1", "--mqtt-listen", "off"]);
    assert_eq!(engine.mqtt_addr, None);
    assert!(engine.log().contains("mqtt=off"), "{}", engine.log());
}

/// A rumqttc 3.1.1 subscriber logged in as `user`, subscribed to `filter`
/// at QoS 1 (its SUBACK waited for); what it receives lands in the result.
fn logged_in_subscriber(
    addr: SocketAddr,
    id: &str,
    user: &str,
    password: &str,
    filter: &str,
) -> (rumqttc::Client, Received) {
    let mut options = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, password);
    let (client, connection) = rumqttc::Client::new(options, 64);
    let received = Received::default();
    let (subscribed, suback) = std::sync::mpsc::channel();
    drive_v4(connection, received.clone(), subscribed);
    client.subscribe(filter, rumqttc::QoS::AtLeastOnce).unwrap();
    suback.recv_timeout(ANSWER_WAIT).expect("a SUBACK");
    (client, received)
}

#[test]
fn an_mqtt_acl_file_governs_each_topic_as_mosquitto_does() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "# mosquitto's acl_file format\n\
         topic read public/#\n\
         user alice\n\
         topic write sensors/#\n\
         topic read alerts/#\n\
         topic write users/#\n\
         user bob\n\
         topic write alerts/#\n\
         topic read sensors/#\n\
         user admin\n\
         topic read #\n\
         pattern readwrite clients/%c/#\n\
         pattern read users/%u/#\n",
    )
    .unwrap();
    let acl = acl.display().to_string();
    let (engine, _users) = start_with_mqtt_users("alice:a\nbob:b\nadmin:x\n", &["--mqtt-acl-file", &acl]);
    let addr = mqtt_addr(&engine);
    // Every subscription is granted (mosquitto checks reading per message).
    let (admin, everything) = logged_in_subscriber(addr, "admin-sub", "admin", "x", "#");
    let (bob, bobs) = logged_in_subscriber(addr, "bob-sub", "bob", "b", "#");
    let port = addr.port().to_string();
    let publish = |user: &str, password: &str, id: &str, topic: &str| {
        let output = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-i",
                id,
                "-t",
                topic,
                "-m",
                topic,
            ])
            .args(["-u", user, "-P", password])
            .output()
            .expect("mosquitto-clients installed");
        assert!(output.status.success(), "{topic}: {output:?}");
    };
    // 3.1.1 (mosquitto_pub's default): a refused QoS 1 PUBLISH is
    // acknowledged and dropped, as mosquitto does.
    publish("alice", "a", "alice-pub", "sensors/t1");
    publish("alice", "a", "alice-pub", "alerts/a1");
    publish("alice", "a", "alice-pub", "clients/alice-pub/x");
    publish("alice", "a", "alice-pub", "users/bob/inbox");
    publish("alice", "a", "alice-pub", "users/carol/inbox");
    publish("bob", "b", "bob-pub", "alerts/b1");
    publish("bob", "b", "bob-pub", "sensors/b2");
    publish("bob", "b", "bob-pub", "clients/alice-pub/y");
    // v5: a refused QoS 1 PUBLISH gets PUBACK 0x87; the connection serves on.
    let mut alice_v5 = TcpStream::connect(addr).unwrap();
    alice_v5.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    alice_v5
        .write_all(&connect_with_credentials(5, "alice-v5", "alice", Some("a")))
        .unwrap();
    assert_eq!(read_packet(&mut alice_v5).0, 0x20, "CONNACK");
    assert_eq!(v5_puback_code(&mut alice_v5), 0x87, "alice may not write acl/t");
    publish("alice", "a", "alice-pub", "sensors/end");
    // Only what was allowed was stored: a reader of everything sees it.
    let stored: [(&str, &[u8], u8); 6] = [
        ("sensors/t1", b"sensors/t1", 1),
        ("clients/alice-pub/x", b"clients/alice-pub/x", 1),
        ("users/bob/inbox", b"users/bob/inbox", 1),
        ("users/carol/inbox", b"users/carol/inbox", 1),
        ("alerts/b1", b"alerts/b1", 1),
        ("sensors/end", b"sensors/end", 1),
    ];
    wait_for_all(&everything, &stored);
    // bob's `#` gets only what he may read: sensors/#, and users/bob/# by %u.
    wait_for_all(
        &bobs,
        &[
            ("sensors/t1", b"sensors/t1", 1),
            ("users/bob/inbox", b"users/bob/inbox", 1),
            ("sensors/end", b"sensors/end", 1),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(everything.lock().unwrap().len(), 6, "{:?}", everything.lock().unwrap());
    assert_eq!(bobs.lock().unwrap().len(), 3, "{:?}", bobs.lock().unwrap());
    // A retained message goes on subscribe only to those who may read it.
    let retained = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-r", "-i", "alice-pub"])
        .args(["-t", "users/carol/kept", "-m", "kept", "-u", "alice", "-P", "a"])
        .status()
        .unwrap();
    assert!(retained.success());
    let (admin_late, admin_late_got) = logged_in_subscriber(addr, "admin-late", "admin", "x", "users/+/kept");
    let (bob_late, bob_late_got) = logged_in_subscriber(addr, "bob-late", "bob", "b", "users/+/kept");
    wait_for_all(&admin_late_got, &[("users/carol/kept", b"kept", 1)]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        bob_late_got.lock().unwrap().is_empty(),
        "{:?}",
        bob_late_got.lock().unwrap()
    );
    for client in [admin, bob, admin_late, bob_late] {
        let _ = client.disconnect();
    }
}

#[test]
fn a_bad_mqtt_acl_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read a/#\ntopic sometimes b\n").unwrap();
    let acl = acl.display().to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--mqtt-acl-file",
        &acl,
    ];
    let (exited, output) = run_engine_briefly(&[], &args, "MQTT listener listening", Duration::from_secs(20));
    assert!(exited.is_some_and(|status| !status.success()), "{output}");
    assert!(
        output.contains("--mqtt-acl-file") && output.contains("line 2") && output.contains("sometimes"),
        "{output}"
    );
}

#[test]
fn v5_enhanced_authentication_logs_in_with_scram() {
    let (engine, _dir) = start_with_mqtt_users("device:s3cret\n", &[]);
    let mqtt = mqtt_addr(&engine).to_string();
    // SCRAM-SHA-256 and -512 with re-authentication, a wrong password
    // (0x86), an unknown method (0x8C), a switched method (0x82), AUTH
    // before CONNECT: tests/python/mqtt_scram.py.
    let (ok, output) = python_script_output("mqtt_scram.py", &[&mqtt, "device", "s3cret"]);
    assert!(ok, "{output}\n{}", engine.log());
}

/// The retained messages a new paho v5 subscriber of `filter` gets, one
/// `topic|payload|retain|expiry|content type|user properties` line each
/// (`mqtt_retained.py retained`).
fn retained_seen(engine: &Engine, filter: &str) -> Vec<String> {
    let mqtt = mqtt_addr(engine).to_string();
    let (ok, output) = python_script_output("mqtt_retained.py", &["retained", &mqtt, filter]);
    assert!(
        ok,
        "mqtt_retained.py retained failed:\n{output}\nengine log:\n{}",
        engine.log()
    );
    let stdout = output
        .strip_prefix("stdout:\n")
        .and_then(|rest| rest.split("\nstderr:").next())
        .unwrap_or("");
    stdout.lines().map(str::to_string).collect()
}

/// The expiry a `retained_seen` line reports, in seconds.
fn expiry_of(line: &str) -> u32 {
    line.split('|').nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_retained_message_keeps_its_v5_properties_and_expiry_across_a_restart() {
    const EXPIRY_S: u32 = 20;
    let mut engine = Engine::start(&["--shards", "2"]);
    let mqtt = mqtt_addr(&engine).to_string();
    let set_at = std::time::Instant::now();
    let expiry = EXPIRY_S.to_string();
    let (ok, output) = python_script_output("mqtt_retained.py", &["publish", &mqtt, "props/a", "21.5", &expiry]);
    assert!(ok, "publish failed:\n{output}\nengine log:\n{}", engine.log());
    std::thread::sleep(Duration::from_millis(1_500));
    let seen = retained_seen(&engine, "props/#");
    assert_eq!(seen.len(), 1, "one retained message: {seen:?}");
    assert!(
        seen[0].starts_with("props/a|21.5|1|") && seen[0].ends_with("|text/plain|site=north,site=south"),
        "RETAIN, content type and user properties in order: {seen:?}"
    );
    let first = expiry_of(&seen[0]);
    assert!(first < EXPIRY_S, "the expiry left is smaller: {seen:?}");
    engine.restart();
    let seen = retained_seen(&engine, "props/a");
    assert_eq!(seen.len(), 1, "kept across the restart: {seen:?}\n{}", engine.log());
    assert!(seen[0].ends_with("|text/plain|site=north,site=south"), "{seen:?}");
    assert!(expiry_of(&seen[0]) <= first, "the expiry still counts down: {seen:?}");
    // Once the expiry has passed, a new subscriber gets nothing.
    let passed = Duration::from_secs(u64::from(EXPIRY_S) + 1);
    std::thread::sleep(passed.saturating_sub(set_at.elapsed()));
    let seen = retained_seen(&engine, "props/#");
    assert!(seen.is_empty(), "an expired retained message is not sent: {seen:?}");
}

#[test]
fn a_kafka_producer_sets_and_clears_a_retained_message() {
    let mut engine = Engine::start(&["--shards", "2"]);
    let kafka = engine.bootstrap();
    // An MQTT publication creates the mapped topic the producer writes to.
    publish_qos1(&mut connected(mqtt_addr(&engine), 4, "creator"), "kr/created", 1, b"-");
    let produce = |engine: &Engine, topic: &str, payload: &str, client: &str| {
        let (ok, output) = python_script_output("mqtt_retained.py", &["produce", &kafka, topic, payload, client]);
        assert!(ok, "produce failed:\n{output}\nengine log:\n{}", engine.log());
    };
    produce(&engine, "kr/a", "on", "kafka-python");
    produce(&engine, "kr/b", "x", "confluent");
    let mut seen = retained_seen(&engine, "kr/#");
    seen.sort();
    assert_eq!(
        seen,
        vec!["kr/a|on|1|-|-|color=blue", "kr/b|x|1|-|-|color=blue"],
        "RETAIN set, the producer's own header as a user property"
    );
    // An empty value clears; what is set survives a restart.
    produce(&engine, "kr/b", "", "kafka-python");
    engine.restart();
    let seen = retained_seen(&engine, "kr/#");
    assert_eq!(seen, vec!["kr/a|on|1|-|-|color=blue"], "{}", engine.log());
}

/// A QoS 0 PUBLISH a v5 subscriber received: (topic name, Topic Alias,
/// payload).
fn received_aliased(stream: &mut TcpStream) -> (String, Option<u16>, Vec<u8>) {
    let (kind, body) = read_packet(stream);
    assert_eq!(kind & 0xf6, 0x30, "PUBLISH QoS 0: {kind:02x} {body:02x?}");
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
    let properties_len = usize::from(body[2 + topic_len]);
    assert!(properties_len < 0x80, "a one-byte property length: {body:02x?}");
    let properties = &body[3 + topic_len..3 + topic_len + properties_len];
    let alias = match properties {
        [] => None,
        [0x23, high, low] => Some(u16::from_be_bytes([*high, *low])),
        other => panic!("only a Topic Alias expected: {other:02x?}"),
    };
    (topic, alias, body[3 + topic_len + properties_len..].to_vec())
}

#[test]
fn the_server_sends_topic_aliases_within_the_clients_maximum() {
    let engine = Engine::start(&["--shards", "2"]);
    let addr = mqtt_addr(&engine);
    // A v5 CONNECT announcing Topic Alias Maximum 2 (property 0x22).
    let mut payload = Vec::new();
    prefixed(&mut payload, b"aliased-raw");
    let mut subscriber = TcpStream::connect(addr).unwrap();
    subscriber.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    subscriber
        .write_all(&connect_frame(5, 0x02, &[0x22, 0, 2], &payload))
        .unwrap();
    let (kind, body) = read_packet(&mut subscriber);
    assert_eq!((kind, body[1]), (0x20, 0), "CONNACK accepted: {body:02x?}");
    // SUBSCRIBE packet id 1, no properties, "al/#" at QoS 0.
    subscriber
        .write_all(&[0x82, 10, 0, 1, 0, 0, 4, b'a', b'l', b'/', b'#', 0])
        .unwrap();
    assert_eq!(read_packet(&mut subscriber), (0x90, vec![0, 1, 0, 0]));
    let mut publisher = connected(addr, 4, "alias-source");
    let mut id = 0;
    let mut deliver = |topic: &str| {
        id += 1;
        publish_qos1(&mut publisher, topic, id, topic.as_bytes());
        let (name, alias, payload) = received_aliased(&mut subscriber);
        assert_eq!(payload, topic.as_bytes());
        assert!(
            alias.is_some_and(|alias| (1..=2).contains(&alias)),
            "an alias within 2: {alias:?}"
        );
        (name, alias)
    };
    assert_eq!(
        deliver("al/1"),
        ("al/1".to_string(), Some(1)),
        "named with its new alias"
    );
    assert_eq!(deliver("al/1"), (String::new(), Some(1)), "then the alias alone");
    assert_eq!(deliver("al/2"), ("al/2".to_string(), Some(2)));
    assert_eq!(deliver("al/2"), (String::new(), Some(2)));
    // The table is full: al/1, least recently used, gives its alias up.
    assert_eq!(deliver("al/3"), ("al/3".to_string(), Some(1)));
    assert_eq!(deliver("al/3"), (String::new(), Some(1)));
    assert_eq!(deliver("al/2"), (String::new(), Some(2)));
    assert_eq!(deliver("al/1"), ("al/1".to_string(), Some(1)));
    // paho v5 resolves the aliases: every message arrives with its full topic.
    let mqtt = addr.to_string();
    let (ok, output) = python_script_output("mqtt_retained.py", &["aliases", &mqtt]);
    assert!(
        ok,
        "mqtt_retained.py aliases failed:\n{output}\nengine log:\n{}",
        engine.log()
    );
}

/// Partitions added to the mapped topic while subscribers are fed are fed
/// too: a subscriber connected before the topic grows gets every message,
/// whichever partition its MQTT topic hashes to now.
#[test]
fn partitions_added_to_the_mapped_topic_are_fed_at_once() {
    use rdkafka::{
        admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication},
        client::DefaultClientContext,
        config::ClientConfig,
        consumer::Consumer,
    };
    use rumqttc::QoS;
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", engine.addr.to_string())
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let topic = NewTopic::new("mqtt", 1, TopicReplication::Fixed(1));
    for result in futures_executor::block_on(admin.create_topics([&topic], &options)).unwrap() {
        result.unwrap();
    }
    let addr = mqtt_addr(&engine);
    let (host, port) = (addr.ip().to_string(), addr.port());
    let (subscriber, connection) = rumqttc::Client::new(rumqttc::MqttOptions::new("grow-sub", &host, port), 256);
    let got = Received::default();
    let (subscribed, suback) = std::sync::mpsc::channel();
    drive_v4(connection, got.clone(), subscribed);
    subscriber.subscribe("grow/#", QoS::AtLeastOnce).unwrap();
    suback.recv_timeout(ANSWER_WAIT).expect("a SUBACK");
    // The feed runs over one partition; the topic now has four.
    let grow = NewPartitions::new("mqtt", 4);
    for result in futures_executor::block_on(admin.create_partitions([&grow], &options)).unwrap() {
        result.unwrap();
    }
    // Once the engine serves the four, publications spread over them.
    let metadata: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", engine.addr.to_string())
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + ANSWER_WAIT;
    while metadata
        .fetch_metadata(Some("mqtt"), Duration::from_secs(5))
        .map_or(0, |m| m.topics().first().map_or(0, |t| t.partitions().len()))
        < 4
    {
        assert!(std::time::Instant::now() < deadline, "mqtt never had four partitions");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut publisher = connected(addr, 4, "grow-pub");
    let payloads: Vec<(String, Vec<u8>)> = (0..32)
        .map(|i| (format!("grow/{i}"), format!("m{i}").into_bytes()))
        .collect();
    for (id, (topic, payload)) in (1u16..).zip(&payloads) {
        publish_qos1(&mut publisher, topic, id, payload);
    }
    let expected: Vec<(&str, &[u8], u8)> = payloads
        .iter()
        .map(|(topic, payload)| (topic.as_str(), payload.as_slice(), 1))
        .collect();
    wait_for_all(&got, &expected);
    let _ = subscriber.disconnect();
}
