//! MQTT clients for the tests: a raw 3.1.1 / 5.0 packet writer and reader
//! on a `std` `TcpStream` (exact bytes, for what a library would not send),
//! and rumqttc connections driven on threads of their own.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers: a panic is a test failure; not every test binary uses every helper"
)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Longest a test waits for an answer that should come at once (a bound
/// against hangs, not a timed assertion).
pub const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// What a rumqttc subscriber received: (topic, payload, QoS 0..=2).
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>, u8)>>>;

/// One step of a rumqttc connection, whichever version.
pub enum Step {
    Publish(String, Vec<u8>, u8),
    SubAck,
    Other,
    End,
}

/// A CONNECT with keep alive 60 s at protocol level `level`: CONNECT flags
/// `flags`, the v5 properties `properties` (their bytes; a 3.1.1 CONNECT
/// has none), then `payload` (the client id and what the flags announce).
pub fn connect_frame(level: u8, flags: u8, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
    if level == 5 {
        body.push(u8::try_from(properties.len()).unwrap());
        body.extend_from_slice(properties);
    }
    body.extend_from_slice(payload);
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// Appends `field` as an MQTT string (or binary data): its length, then it.
pub fn prefixed(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
    out.extend_from_slice(field);
}

/// CONNECT with clean start, keep alive 60 s, client id `id`, at protocol
/// level `level` (4: 3.1.1, 5: 5.0, anything else to test refusals).
pub fn connect_packet(level: u8, id: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    prefixed(&mut payload, id.as_bytes());
    connect_frame(level, 0x02, &[], &payload)
}

/// A successful CONNACK: 3.1.1 (4 bytes), or 5.0 with its properties.
pub fn assert_connack_ok(bytes: &[u8]) -> usize {
    assert_eq!(bytes[0], 0x20, "CONNACK: {bytes:02x?}");
    let length = usize::from(bytes[1]);
    assert_eq!(bytes[3], 0, "accepted: {bytes:02x?}");
    2 + length
}

/// Connects at `level` and returns the open stream after its CONNACK.
pub fn connected(addr: SocketAddr, level: u8, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    stream.write_all(&connect_packet(level, id)).unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    let mut rest = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut rest).unwrap();
    let mut whole = header.to_vec();
    whole.extend_from_slice(&rest);
    assert_connack_ok(&whole);
    stream
}

/// Reads one packet: its first byte and its body.
pub fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    try_read_packet(stream).unwrap()
}

/// Reads one packet, or says why it could not.
pub fn try_read_packet(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let mut length = 0usize;
    for shift in 0..4 {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        length |= usize::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok((first[0], body))
}

/// A 3.1.1 PUBLISH of `payload` to `topic` at QoS 1, packet id `id`.
pub fn publish_qos1_packet(topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    prefixed(&mut body, topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x32];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// PUBLISHes `payload` to `topic` at QoS 1 (packet id `id`) on a 3.1.1
/// connection and waits for its PUBACK.
pub fn publish_qos1(stream: &mut TcpStream, topic: &str, id: u16, payload: &[u8]) {
    stream.write_all(&publish_qos1_packet(topic, id, payload)).unwrap();
    let mut puback = [0u8; 4];
    stream.read_exact(&mut puback).unwrap();
    assert_eq!(puback[..2], [0x40, 2], "PUBACK");
}

/// The remaining-length varint of MQTT's fixed header.
pub fn remaining_length(mut length: usize, out: &mut Vec<u8>) {
    loop {
        let byte = u8::try_from(length % 128).unwrap();
        length /= 128;
        if length == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Runs `next` on a thread of its own until the connection ends or the
/// test's bound passes, recording what it receives.
pub fn drive(
    mut next: impl FnMut() -> Step + Send + 'static,
    received: Received,
    subscribed: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + ANSWER_WAIT;
        while std::time::Instant::now() < deadline {
            match next() {
                Step::Publish(topic, payload, qos) => received.lock().unwrap().push((topic, payload, qos)),
                Step::SubAck => {
                    let _ = subscribed.send(());
                }
                Step::Other => {}
                Step::End => return,
            }
        }
    });
}

/// Drives a rumqttc 3.1.1 connection (see [`drive`]).
pub fn drive_v4(mut connection: rumqttc::Connection, received: Received, subscribed: std::sync::mpsc::Sender<()>) {
    use rumqttc::{Event, Packet, RecvTimeoutError};
    let next = move || match connection.recv_timeout(Duration::from_millis(200)) {
        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => Step::Publish(p.topic, p.payload.to_vec(), p.qos as u8),
        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => Step::SubAck,
        Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => Step::Other,
        Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => Step::End,
    };
    drive(next, received, subscribed);
}

/// Drives a rumqttc 5.0 connection (see [`drive`]).
pub fn drive_v5(mut connection: rumqttc::v5::Connection, received: Received, subscribed: std::sync::mpsc::Sender<()>) {
    use rumqttc::v5::{mqttbytes::v5::Packet, Event, RecvTimeoutError};
    let next = move || match connection.recv_timeout(Duration::from_millis(200)) {
        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => Step::Publish(
            String::from_utf8_lossy(&p.topic).into_owned(),
            p.payload.to_vec(),
            p.qos as u8,
        ),
        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => Step::SubAck,
        Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => Step::Other,
        Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => Step::End,
    };
    drive(next, received, subscribed);
}

/// Waits until `received` holds every item of `expected`.
pub fn wait_for_all(received: &Received, expected: &[(&str, &[u8], u8)]) {
    let deadline = std::time::Instant::now() + ANSWER_WAIT;
    loop {
        let got = received.lock().unwrap().clone();
        let all = expected
            .iter()
            .all(|(topic, payload, qos)| got.contains(&(topic.to_string(), payload.to_vec(), *qos)));
        if all {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {expected:?}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
