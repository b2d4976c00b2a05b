//! The codec against hand-made bad packets, and encode → decode round trips
//! of random packets (proptest), for both protocol levels.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const MAX: usize = 1 << 20;

fn decode(bytes: &[u8], version: Option<Version>) -> Result<Option<(Packet, usize)>, MqttDecodeError> {
    decode_packet(&Bytes::copy_from_slice(bytes), version, MAX)
}

fn connect_v(level: u8) -> Vec<u8> {
    // CONNECT, "MQTT", level, clean start, keep alive 60, [no properties], client id "c".
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&[0, 1, b'c']);
    let mut out = vec![0x10, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(&body);
    out
}

#[test]
fn connect_decodes_for_both_levels() {
    for (level, version) in [(4, Version::V311), (5, Version::V5)] {
        let bytes = connect_v(level);
        let (packet, used) = decode(&bytes, None).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Packet::Connect(connect) = packet else {
            panic!("not CONNECT")
        };
        assert_eq!(connect.version, version);
        assert_eq!(connect.client_id, "c");
        assert_eq!(connect.keep_alive_s, 60);
        assert!(connect.clean_start);
    }
}

#[test]
fn partial_input_asks_for_more() {
    let bytes = connect_v(4);
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut], None).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn bad_versions_and_names_are_refused() {
    let mut bytes = connect_v(4);
    bytes[8] = 3;
    assert_eq!(
        decode(&bytes, None),
        Err(MqttDecodeError::UnsupportedVersion { level: 3 })
    );
    let mut bytes = connect_v(4);
    bytes[4] = b'X';
    assert_eq!(decode(&bytes, None), Err(MqttDecodeError::ProtocolName));
    let mut bytes = connect_v(4);
    bytes[9] |= 0x01; // reserved connect flag
    assert!(matches!(decode(&bytes, None), Err(MqttDecodeError::Malformed { .. })));
}

#[test]
fn the_first_packet_must_be_connect() {
    assert_eq!(decode(&[0xc0, 0], None), Err(MqttDecodeError::FirstPacketNotConnect));
    assert_eq!(
        decode(&[0xc0, 0], Some(Version::V311)).unwrap().unwrap().0,
        Packet::PingReq
    );
}

#[test]
fn an_empty_topic_name_needs_a_topic_alias_in_5() {
    // PUBLISH QoS 0, empty topic, properties: Topic Alias 3, payload "x".
    let Ok(Some((Packet::Publish(publish), _))) = decode(&[0x30, 7, 0, 0, 3, 0x23, 0, 3, b'x'], Some(Version::V5))
    else {
        panic!("an aliased PUBLISH decodes");
    };
    assert_eq!((publish.topic.as_str(), publish.properties.topic_alias), ("", Some(3)));
    // Without the alias (v5), and in 3.1.1: no topic.
    assert_eq!(
        decode(&[0x30, 4, 0, 0, 0, b'x'], Some(Version::V5)),
        Err(MqttDecodeError::TopicName)
    );
    assert_eq!(
        decode(&[0x30, 3, 0, 0, b'x'], Some(Version::V311)),
        Err(MqttDecodeError::TopicName)
    );
}

#[test]
fn qos_3_wildcards_and_reserved_flags_are_refused() {
    // PUBLISH QoS 3, topic "a".
    assert!(matches!(
        decode(&[0x36, 5, 0, 1, b'a', 0, 1], Some(Version::V311)),
        Err(MqttDecodeError::Malformed { field: "QoS", .. })
    ));
    // PUBLISH QoS 0 to "a/+".
    assert_eq!(
        decode(&[0x30, 5, 0, 3, b'a', b'/', b'+'], Some(Version::V311)),
        Err(MqttDecodeError::TopicName)
    );
    assert_eq!(
        decode(&[0x30, 3, 0, 1, b'#'], Some(Version::V311)),
        Err(MqttDecodeError::TopicName)
    );
    // SUBSCRIBE with flags 0 instead of 2.
    assert!(matches!(
        decode(&[0x80, 6, 0, 1, 0, 1, b'a', 0], Some(Version::V311)),
        Err(MqttDecodeError::Malformed { .. })
    ));
    // PINGREQ with a flag.
    assert!(matches!(
        decode(&[0xc1, 0], Some(Version::V311)),
        Err(MqttDecodeError::Malformed { .. })
    ));
    // SUBSCRIBE asking for QoS 3.
    assert!(decode(&[0x82, 6, 0, 1, 0, 1, b'a', 3], Some(Version::V311)).is_err());
    // Reserved packet type 0.
    assert!(decode(&[0x00, 0], Some(Version::V311)).is_err());
}

#[test]
fn invalid_utf8_is_refused() {
    // PUBLISH QoS 0 to a topic of bytes C3 28.
    assert!(matches!(
        decode(&[0x30, 4, 0, 2, 0xc3, 0x28], Some(Version::V311)),
        Err(MqttDecodeError::Malformed { .. })
    ));
}

#[test]
fn oversize_packets_are_refused_from_the_fixed_header() {
    // A PUBLISH announcing 2 MiB: refused before the body arrives.
    let bytes = [0x30, 0x80, 0x80, 0x80, 0x01];
    assert!(matches!(
        decode(&bytes, Some(Version::V311)),
        Err(MqttDecodeError::PacketTooLarge { .. })
    ));
    // A remaining length of five bytes.
    assert!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], Some(Version::V311)).is_err());
}

#[test]
fn v5_properties_are_checked() {
    // PUBLISH QoS 0 "a", properties: session expiry (not allowed in PUBLISH).
    let bytes = [0x30, 9, 0, 1, b'a', 5, 0x11, 0, 0, 0, 1];
    assert!(matches!(
        decode(&bytes, Some(Version::V5)),
        Err(MqttDecodeError::Protocol { .. })
    ));
    // Content type twice.
    let bytes = [0x30, 11, 0, 1, b'a', 7, 0x03, 0, 0, 0x03, 0, 0, 0];
    assert!(decode(&bytes, Some(Version::V5)).is_err());
    // Property length past the packet.
    assert!(decode(&[0x30, 4, 0, 1, b'a', 9], Some(Version::V5)).is_err());
}

#[test]
fn auth_is_v5_only_and_carries_one_of_its_three_reasons() {
    let v5 = Some(Version::V5);
    // Remaining length 0: success, no properties.
    let (packet, used) = decode(&[0xf0, 0], v5).unwrap().unwrap();
    assert_eq!(used, 2);
    assert_eq!(
        packet,
        Packet::Auth(Auth {
            reason: AUTH_SUCCESS,
            properties: Properties::default()
        })
    );
    // Continue, with the method and data.
    let bytes = [0xf0, 13, 0x18, 11, 0x15, 0, 5, b'S', b'C', b'R', b'A', b'M', 0x16, 0, 0];
    let Packet::Auth(auth) = decode(&bytes[..15], v5).unwrap().unwrap().0 else {
        panic!("not AUTH")
    };
    assert_eq!(
        (auth.reason, auth.properties.auth_method.as_deref()),
        (0x18, Some("SCRAM"))
    );
    assert_eq!(auth.properties.auth_data.as_deref(), Some(&b""[..]));
    // Another reason code, a property AUTH may not carry, reserved flags, 3.1.1.
    assert!(matches!(
        decode(&[0xf0, 1, 0x87], v5),
        Err(MqttDecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode(&[0xf0, 4, 0x18, 2, 0x24, 1], v5),
        Err(MqttDecodeError::Protocol { .. } | MqttDecodeError::Malformed { .. })
    ));
    assert!(matches!(decode(&[0xf1, 0], v5), Err(MqttDecodeError::Malformed { .. })));
    assert!(matches!(
        decode(&[0xf0, 0], Some(Version::V311)),
        Err(MqttDecodeError::Malformed { .. })
    ));
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V311), Just(Version::V5)]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|id| PacketId::new(id).unwrap())
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9$]{1,8}(/[a-z0-9]{0,8}){0,3}"
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![topic(), Just("#".to_string()), Just("a/+/c".to_string())]
}

fn properties(version: Version, user: bool) -> BoxedStrategy<Properties> {
    if version == Version::V311 {
        return Just(Properties::default()).boxed();
    }
    (
        proptest::option::of("[a-z ]{0,12}"),
        proptest::collection::vec(("[a-z]{0,6}", "[a-z]{0,6}"), 0..3),
    )
        .prop_map(move |(reason, users)| {
            PropertyFields {
                reason_string: reason,
                user_properties: if user { users } else { Vec::new() },
                ..PropertyFields::default()
            }
            .into()
        })
        .boxed()
}

fn publish_properties(version: Version) -> BoxedStrategy<Properties> {
    if version == Version::V311 {
        return Just(Properties::default()).boxed();
    }
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of("[a-z/]{0,12}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::collection::vec(("[a-z]{0,6}", "[a-z]{0,6}"), 0..3),
    )
        .prop_map(|(format, expiry, content, correlation, users)| {
            PropertyFields {
                payload_format: format,
                message_expiry_s: expiry,
                content_type: content,
                correlation_data: correlation.map(Bytes::from),
                user_properties: users,
                ..PropertyFields::default()
            }
            .into()
        })
        .boxed()
}

fn publish(version: Version) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        packet_id(),
        publish_properties(version),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
            Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties,
                payload: Bytes::from(payload),
            })
        })
}

fn connect(version: Version) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        "[a-zA-Z0-9]{0,23}",
        proptest::option::of((
            topic(),
            proptest::collection::vec(any::<u8>(), 0..8),
            qos(),
            any::<bool>(),
        )),
        proptest::option::of("[a-z]{0,8}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::option::of(1u32..),
    )
        .prop_map(
            move |(clean_start, keep_alive_s, client_id, will, username, password, session_expiry)| {
                // 3.1.1 sends no password without a user name.
                let password = password.filter(|_| version == Version::V5 || username.is_some());
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive_s,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain)| Will {
                        topic,
                        payload: Bytes::from(payload),
                        qos,
                        retain,
                        properties: Properties::default(),
                    }),
                    username,
                    password: password.map(Bytes::from),
                    properties: PropertyFields {
                        session_expiry_s: session_expiry.filter(|_| version == Version::V5),
                        ..PropertyFields::default()
                    }
                    .into(),
                }))
            },
        )
}

fn control(version: Version) -> impl Strategy<Value = Packet> {
    let options = (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        let v5 = version == Version::V5;
        SubscriptionOptions {
            qos,
            no_local: nl && v5,
            retain_as_published: rap && v5,
            retain_handling: if v5 { rh } else { 0 },
        }
    });
    let ack_kind = prop_oneof![
        Just(AckKind::PubAck),
        Just(AckKind::PubRec),
        Just(AckKind::PubRel),
        Just(AckKind::PubComp)
    ];
    let v5 = version == Version::V5;
    prop_oneof![
        (packet_id(), proptest::collection::vec((filter(), options), 1..4)).prop_map(|(packet_id, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties: Properties::default(),
                filters,
            })
        }),
        (
            packet_id(),
            properties(version, true),
            proptest::collection::vec(any::<u8>(), 1..4)
        )
            .prop_map(|(packet_id, properties, codes)| Packet::SubAck(SubAck {
                packet_id,
                properties,
                codes
            })),
        (packet_id(), proptest::collection::vec(filter(), 1..4)).prop_map(|(packet_id, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: Properties::default(),
                filters,
            })
        }),
        (
            packet_id(),
            properties(version, true),
            proptest::collection::vec(any::<u8>(), 0..4)
        )
            .prop_map(move |(packet_id, properties, codes)| Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                codes: if v5 { codes } else { Vec::new() }
            })),
        (ack_kind, packet_id(), any::<u8>(), properties(version, true)).prop_map(
            move |(kind, packet_id, reason, properties)| Packet::Ack(Ack {
                kind,
                packet_id,
                reason: if v5 { reason } else { 0 },
                properties,
            })
        ),
        (any::<bool>(), any::<u8>(), properties(version, false)).prop_map(
            move |(session_present, code, properties)| Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties
            })
        ),
        (any::<u8>(), properties(version, true)).prop_map(move |(reason, properties)| {
            Packet::Disconnect(Disconnect {
                reason: if v5 { reason } else { 0 },
                properties,
            })
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
    ]
}

/// AUTH (v5 only): a reason it may carry, and method and data or none.
fn auth() -> impl Strategy<Value = Packet> {
    (
        prop_oneof![Just(AUTH_SUCCESS), Just(AUTH_CONTINUE), Just(AUTH_REAUTHENTICATE)],
        proptest::option::of(("SCRAM-SHA-(256|512)", proptest::collection::vec(any::<u8>(), 0..48))),
        proptest::option::of("[a-z ]{0,12}"),
    )
        .prop_map(|(reason, method, reason_string)| {
            let (auth_method, auth_data) = method.map_or((None, None), |(m, d)| (Some(m), Some(Bytes::from(d))));
            Packet::Auth(Auth {
                reason,
                properties: PropertyFields {
                    auth_method,
                    auth_data,
                    reason_string,
                    ..PropertyFields::default()
                }
                .into(),
            })
        })
}

fn any_packet() -> impl Strategy<Value = (Version, Packet)> {
    version().prop_flat_map(|version| {
        let auth = if version == Version::V5 {
            auth().boxed()
        } else {
            // 3.1.1 has no AUTH: another control packet in its place.
            control(version).boxed()
        };
        prop_oneof![publish(version), connect(version), control(version), auth]
            .prop_map(move |packet| (version, packet))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_gives_the_packet_back((version, packet) in any_packet()) {
        let mut bytes = Vec::new();
        encode_packet(&packet, version, &mut bytes);
        let context = match packet {
            Packet::Connect(_) => None,
            _ => Some(version),
        };
        let (decoded, used) = decode_packet(&Bytes::from(bytes.clone()), context, MAX).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), v5 in any::<bool>()) {
        let version = if v5 { Version::V5 } else { Version::V311 };
        let input = Bytes::from(bytes);
        for context in [None, Some(version)] {
            if let Ok(Some((_, used))) = decode_packet(&input, context, 48) {
                prop_assert!(used <= input.len() && used <= 48);
            }
        }
    }
}
