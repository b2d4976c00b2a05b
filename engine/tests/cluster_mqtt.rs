//! MQTT on a three-node cluster: clients of different nodes share one log.
//!
//! The mapped topic's partitions are led by every node, so a publish through
//! one node is stored on the partitions' leaders wherever they are, a
//! subscriber on another node is fed from them, a Kafka consumer reads the
//! same records, a retained message set through one node reaches a
//! subscriber of another, and a persistent session saved through one node
//! resumes through another — also after the node that led its partition of
//! `__mqtt_sessions` is killed. A Kafka producer's retained message is
//! stored where `__mqtt_retained` is led and reaches a third node.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{
    cluster::{Cluster, REPLICATED_FLAGS},
    mqtt::{
        connect_frame, connect_packet, drive_v4, prefixed, publish_qos1_packet, read_packet, remaining_length,
        try_read_packet, wait_for_all, Received, ANSWER_WAIT,
    },
};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};

/// Partitions of the mapped topic: enough for every node to lead some.
const PARTITIONS: i32 = 6;
/// Bound on the cluster forming and on a partition's leader being replaced.
const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// A rumqttc 3.1.1 client with a persistent session (clean session 0),
/// driven on its own thread; what it receives goes to `received`. Returns
/// once the broker has answered CONNECT (and, with `subscribe`, SUBACK).
fn persistent_subscriber(addr: SocketAddr, id: &str, subscribe: Option<&str>, received: &Received) -> rumqttc::Client {
    subscriber(addr, id, false, subscribe, received)
}

/// A rumqttc 3.1.1 client (clean session `clean`), as
/// [`persistent_subscriber`].
fn subscriber(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    subscribe: Option<&str>,
    received: &Received,
) -> rumqttc::Client {
    let mut options = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_clean_session(clean);
    let (client, connection) = rumqttc::Client::new(options, 64);
    let (subscribed, suback) = std::sync::mpsc::channel();
    drive_v4(connection, received.clone(), subscribed);
    if let Some(filter) = subscribe {
        client.subscribe(filter, rumqttc::QoS::AtLeastOnce).unwrap();
        suback.recv_timeout(ANSWER_WAIT).expect("a SUBACK");
    }
    client
}

/// PUBLISHes at QoS 1 (with RETAIN when asked) through `addr` until a
/// PUBACK comes, on a fresh 3.1.1 connection each try: while a killed
/// leader is being replaced the broker refuses (3.1.1: closes).
fn publish_until_acknowledged(addr: SocketAddr, topic: &str, payload: &[u8], retain: bool) {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let attempt = || -> std::io::Result<()> {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(ANSWER_WAIT))?;
            stream.write_all(&connect_packet(4, "cm-pub"))?;
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack)?;
            let mut packet = publish_qos1_packet(topic, 1, payload);
            if retain {
                packet[0] |= 0x01;
            }
            stream.write_all(&packet)?;
            let mut puback = [0u8; 4];
            stream.read_exact(&mut puback)?;
            if connack == [0x20, 2, 0, 0] && puback == [0x40, 2, 0, 1] {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "CONNACK {connack:02x?}, PUBACK {puback:02x?}"
                )))
            }
        };
        match attempt() {
            Ok(()) => return,
            Err(error) => {
                assert!(Instant::now() < deadline, "no PUBACK from {addr} for {topic}: {error}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Every record of the mapped topic a Kafka consumer reads from the start,
/// as (key, value), once it has read `count` of them (bounded).
fn kafka_records(cluster: &Cluster, count: usize) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("group.id", "cluster-mqtt-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset("mqtt", partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + CLUSTER_WAIT;
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let text = |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
            records.push((text(message.key()), text(message.payload())));
        }
    }
    records
}

#[test]
fn mqtt_clients_of_different_nodes_share_one_log_and_their_sessions() {
    let mut cluster = Cluster::start_with_mqtt(REPLICATED_FLAGS);
    cluster.wait_ready(CLUSTER_WAIT);
    cluster.create_topic("mqtt", PARTITIONS, &[]);
    // One partition of sessions, so the test knows whose leader to kill.
    cluster.create_topic("__mqtt_sessions", 1, &[("cleanup.policy", "compact")]);
    cluster.wait_full_isr("mqtt", PARTITIONS, CLUSTER_WAIT);
    let leaders: BTreeSet<i32> = cluster.partition_leaders("mqtt").into_iter().collect();
    assert!(
        leaders.len() > 1,
        "the mapped topic's partitions are led by one node only: {leaders:?}"
    );

    // A subscriber on node 2, a publisher on node 1: every message of
    // every partition, whichever node leads it.
    let received = Received::default();
    let subscriber = persistent_subscriber(cluster.mqtt_addr(2), "cm-sub", Some("cm/#"), &received);
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..24 {
        let (topic, payload) = (format!("cm/{}", i % 8), format!("live-{i}"));
        publish_until_acknowledged(cluster.mqtt_addr(1), &topic, payload.as_bytes(), false);
        expected.push((topic, payload.into_bytes()));
    }
    let wanted: Vec<(&str, &[u8], u8)> = expected.iter().map(|(t, p)| (t.as_str(), p.as_slice(), 1)).collect();
    wait_for_all(&received, &wanted);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.lock().unwrap().len(), 24, "each message once");

    // A Kafka consumer reads the same records (key: the MQTT topic).
    let records = kafka_records(&cluster, 24);
    let stored: BTreeSet<(String, String)> = records.into_iter().collect();
    for (topic, payload) in &expected {
        let record = (topic.clone(), String::from_utf8(payload.clone()).unwrap());
        assert!(stored.contains(&record), "{record:?} not read by Kafka: {stored:?}");
    }

    // A retained message set through node 3 reaches a subscriber of node 1.
    publish_until_acknowledged(cluster.mqtt_addr(3), "cm/retained", b"kept", true);
    let late = Received::default();
    let late_subscriber = persistent_subscriber(cluster.mqtt_addr(1), "cm-late", Some("cm/retained"), &late);
    wait_for_all(&late, &[("cm/retained", b"kept", 1)]);
    let _ = late_subscriber.disconnect();

    // The session saved through node 2 resumes through node 3, with what
    // was published while it was away, without a new SUBSCRIBE.
    subscriber.disconnect().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..6 {
        publish_until_acknowledged(
            cluster.mqtt_addr(1),
            &format!("cm/{i}"),
            format!("away-{i}").as_bytes(),
            false,
        );
    }
    let resumed = Received::default();
    let subscriber = persistent_subscriber(cluster.mqtt_addr(3), "cm-sub", None, &resumed);
    let away: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("cm/{i}"), format!("away-{i}").into_bytes()))
        .collect();
    let wanted: Vec<(&str, &[u8], u8)> = away.iter().map(|(t, p)| (t.as_str(), p.as_slice(), 1)).collect();
    wait_for_all(&resumed, &wanted);
    subscriber.disconnect().unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // The node leading the session's partition dies; the session, saved on
    // every replica, resumes through a node that lives, with what was
    // published meanwhile.
    let sessions_leader = cluster.partition_leader("__mqtt_sessions", 0);
    cluster.kill9(sessions_leader);
    let alive: Vec<i32> = (1..=3).filter(|node| *node != sessions_leader).collect();
    for i in 0..4 {
        publish_until_acknowledged(
            cluster.mqtt_addr(alive[0]),
            &format!("cm/{i}"),
            format!("after-{i}").as_bytes(),
            false,
        );
    }
    let after = Received::default();
    let subscriber = persistent_subscriber(cluster.mqtt_addr(alive[1]), "cm-sub", None, &after);
    let lost: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("cm/{i}"), format!("after-{i}").into_bytes()))
        .collect();
    let wanted: Vec<(&str, &[u8], u8)> = lost.iter().map(|(t, p)| (t.as_str(), p.as_slice(), 1)).collect();
    wait_for_all(&after, &wanted);
    let _ = subscriber.disconnect();
}

/// A v5 connection with client id `id` that resumes its session (clean
/// start 0, Session Expiry Interval one hour), after its CONNACK.
fn v5_persistent(addr: SocketAddr, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    let mut payload = Vec::new();
    prefixed(&mut payload, id.as_bytes());
    let expiry = [0x11, 0, 0, 0x0e, 0x10];
    stream.write_all(&connect_frame(5, 0x00, &expiry, &payload)).unwrap();
    let (kind, body) = read_packet(&mut stream);
    assert_eq!((kind, body[1]), (0x20, 0), "CONNACK accepted: {body:02x?}");
    stream
}

/// A v5 SUBSCRIBE of `filter` at QoS 1, packet id `id`.
fn v5_subscribe(stream: &mut TcpStream, filter: &str, id: u16) {
    let mut body = id.to_be_bytes().to_vec();
    body.push(0);
    prefixed(&mut body, filter.as_bytes());
    body.push(1);
    let mut packet = vec![0x82];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    stream.write_all(&packet).unwrap();
}

#[test]
fn a_connection_through_another_node_takes_the_session_over() {
    let mut cluster = Cluster::start_with_mqtt(REPLICATED_FLAGS);
    cluster.wait_ready(CLUSTER_WAIT);
    cluster.create_topic("mqtt", PARTITIONS, &[]);
    cluster.create_topic("__mqtt_sessions", 1, &[("cleanup.policy", "compact")]);
    cluster.wait_full_isr("__mqtt_sessions", 1, CLUSTER_WAIT);
    // The first connection, through node 1, saves its session (before its
    // SUBACK).
    let mut first = v5_persistent(cluster.mqtt_addr(1), "cm-twice");
    v5_subscribe(&mut first, "cm/a", 1);
    let (kind, _) = read_packet(&mut first);
    assert_eq!(kind, 0x90, "SUBACK");
    // The same client id through node 2 takes the session up (it is
    // present) and stores it under its newer claim before its CONNACK; node
    // 1 follows the sessions' table and closes the first connection as taken
    // over (DISCONNECT 0x8E) with nothing more from either client.
    let mut second = v5_persistent(cluster.mqtt_addr(2), "cm-twice");
    expect_taken_over(&mut first);
    v5_subscribe(&mut second, "cm/b", 1);
    let (kind, _) = read_packet(&mut second);
    assert_eq!(kind, 0x90, "SUBACK");
    // The second connection still serves: a publish through node 3 reaches it.
    publish_until_acknowledged(cluster.mqtt_addr(3), "cm/b", b"still", false);
    let (kind, body) = read_packet(&mut second);
    assert_eq!(kind & 0xf0, 0x30, "PUBLISH: {body:02x?}");
    assert!(body.ends_with(b"still"), "{body:02x?}");
    // A clean start through node 3 removes the session under a newer claim:
    // the second connection is taken over too.
    let mut third = TcpStream::connect(cluster.mqtt_addr(3)).unwrap();
    third.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    let mut payload = Vec::new();
    prefixed(&mut payload, b"cm-twice");
    third.write_all(&connect_frame(5, 0x02, &[], &payload)).unwrap();
    let (kind, body) = read_packet(&mut third);
    assert_eq!(
        (kind, body[0], body[1]),
        (0x20, 0, 0),
        "CONNACK, no session present: {body:02x?}"
    );
    expect_taken_over(&mut second);
}

/// Reads `stream` until its DISCONNECT, within [`ANSWER_WAIT`]: Session
/// taken over (0x8E).
fn expect_taken_over(stream: &mut TcpStream) {
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut disconnect = None;
    while Instant::now() < deadline {
        match try_read_packet(stream) {
            Ok((0xe0, body)) => {
                disconnect = Some(body);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let body = disconnect.expect("a DISCONNECT for the connection taken over");
    assert_eq!(body.first(), Some(&0x8e), "Session taken over: {body:02x?}");
}

/// Messages published for the share test, over several MQTT topics (so
/// several partitions, led by different nodes).
const SHARED_MESSAGES: usize = 48;
/// Longer than a view refresh and the handover grace after it, so every
/// node knows both member nodes before publishing.
const SHARE_VIEWS_SETTLE: Duration = Duration::from_secs(3);

#[test]
fn a_share_with_members_on_two_nodes_gets_each_message_once() {
    let mut cluster = Cluster::start_with_mqtt(REPLICATED_FLAGS);
    cluster.wait_ready(CLUSTER_WAIT);
    cluster.create_topic("mqtt", PARTITIONS, &[]);
    cluster.wait_full_isr("mqtt", PARTITIONS, CLUSTER_WAIT);
    let leaders: BTreeSet<i32> = cluster.partition_leaders("mqtt").into_iter().collect();
    assert!(
        leaders.len() > 1,
        "the mapped topic's partitions are led by one node only: {leaders:?}"
    );
    // One member of the share through node 1, one through node 2.
    let (first, second) = (Received::default(), Received::default());
    let filter = "$share/workers/cs/#";
    let member_1 = subscriber(cluster.mqtt_addr(1), "cs-member-1", true, Some(filter), &first);
    let member_2 = subscriber(cluster.mqtt_addr(2), "cs-member-2", true, Some(filter), &second);
    std::thread::sleep(SHARE_VIEWS_SETTLE);
    // A publisher through node 3, on twelve MQTT topics.
    let mut expected: BTreeSet<(String, Vec<u8>)> = BTreeSet::new();
    for i in 0..SHARED_MESSAGES {
        let (topic, payload) = (format!("cs/{}", i % 12), format!("shared-{i}"));
        publish_until_acknowledged(cluster.mqtt_addr(3), &topic, payload.as_bytes(), false);
        expected.insert((topic, payload.into_bytes()));
    }
    let all = || -> Vec<(String, Vec<u8>)> {
        let mut got: Vec<(String, Vec<u8>)> = first
            .lock()
            .unwrap()
            .iter()
            .map(|(t, p, _)| (t.clone(), p.clone()))
            .collect();
        got.extend(second.lock().unwrap().iter().map(|(t, p, _)| (t.clone(), p.clone())));
        got
    };
    let deadline = Instant::now() + ANSWER_WAIT;
    while all().len() < SHARED_MESSAGES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for a second copy, if one were coming.
    std::thread::sleep(Duration::from_millis(500));
    let got = all();
    let distinct: BTreeSet<(String, Vec<u8>)> = got.iter().cloned().collect();
    assert_eq!(distinct, expected, "every message reached the share");
    assert_eq!(
        got.len(),
        SHARED_MESSAGES,
        "each message once across the members ({} through node 1, {} through node 2)",
        first.lock().unwrap().len(),
        second.lock().unwrap().len()
    );
    let (through_1, through_2) = (first.lock().unwrap().len(), second.lock().unwrap().len());
    assert!(
        through_1 > 0 && through_2 > 0,
        "both members got some: {through_1} and {through_2}"
    );
    let _ = member_1.disconnect();
    let _ = member_2.disconnect();
}

#[test]
fn a_kafka_producer_on_one_node_sets_a_retained_message_led_by_another() {
    let mut cluster = Cluster::start_with_mqtt(REPLICATED_FLAGS);
    cluster.wait_ready(CLUSTER_WAIT);
    // The mapped topic led by node 1, the retained messages by node 2.
    cluster.create_topic_assigned("mqtt", &[vec![1, 2, 3]], &[]);
    cluster.create_topic_assigned("__mqtt_retained", &[vec![2, 3, 1]], &[("cleanup.policy", "compact")]);
    cluster.wait_full_isr("mqtt", 1, CLUSTER_WAIT);
    cluster.wait_full_isr("__mqtt_retained", 1, CLUSTER_WAIT);
    assert_eq!(cluster.partition_leader("mqtt", 0), 1);
    assert_eq!(cluster.partition_leader("__mqtt_retained", 0), 2);
    let kafka = cluster.kafka_addr(1).to_string();
    let (ok, output) =
        common::python_script_output("mqtt_retained.py", &["produce", &kafka, "cr/a", "far", "confluent"]);
    assert!(ok, "produce failed:\n{output}\nnode 1:\n{}", cluster.log_tail(1));
    // A subscriber of node 3 gets it, RETAIN set.
    let mqtt = cluster.mqtt_addr(3).to_string();
    let (ok, output) = common::python_script_output("mqtt_retained.py", &["retained", &mqtt, "cr/#"]);
    assert!(ok, "subscriber failed:\n{output}");
    assert!(
        output.contains("cr/a|far|1|-|-|color=blue"),
        "{output}\nnode 3:\n{}",
        cluster.log_tail(3)
    );
}

/// A clean v5 connection (clean start, no session kept) with client id
/// `id` through `addr`, after its CONNACK.
fn v5_clean(addr: SocketAddr, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    let mut payload = Vec::new();
    prefixed(&mut payload, id.as_bytes());
    stream.write_all(&connect_frame(5, 0x02, &[], &payload)).unwrap();
    let (kind, body) = read_packet(&mut stream);
    assert_eq!(
        (kind, body[0], body[1]),
        (0x20, 0, 0),
        "CONNACK, no session: {body:02x?}"
    );
    stream
}

#[test]
fn clean_connections_with_one_client_id_through_two_nodes_do_not_both_stay() {
    let mut cluster = Cluster::start_with_mqtt(REPLICATED_FLAGS);
    cluster.wait_ready(CLUSTER_WAIT);
    cluster.create_topic("mqtt", PARTITIONS, &[]);
    cluster.create_topic("__mqtt_sessions", 1, &[("cleanup.policy", "compact")]);
    cluster.wait_full_isr("__mqtt_sessions", 1, CLUSTER_WAIT);
    // Nothing is ever stored for this client id: the claims alone tell the
    // nodes apart.
    let mut first = v5_clean(cluster.mqtt_addr(1), "cm-clean");
    let mut second = v5_clean(cluster.mqtt_addr(2), "cm-clean");
    expect_taken_over(&mut first);
    let mut third = v5_clean(cluster.mqtt_addr(3), "cm-clean");
    expect_taken_over(&mut second);
    // The newest still serves.
    v5_subscribe(&mut third, "cm/clean", 1);
    let (kind, _) = read_packet(&mut third);
    assert_eq!(kind, 0x90, "SUBACK");
}
