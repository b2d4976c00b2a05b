//! The session's rules, driven with made-up times and packets.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use shardline_net::mqtt::{
    Ack, AckKind, ConnAck, Connect, Disconnect, MqttDecodeError, Packet, PacketId, Properties, PropertyFields, Publish,
    QoS, SubAck, Subscribe, SubscriptionOptions, Version,
};

use shardline_log::Offset;

use super::{
    Action, Awaiting, Event, Session, SessionLimits, SESSION_SAVE_INTERVAL, SUBSCRIPTIONS_MAX, TOPIC_ALIAS_MAX,
};
use crate::mqtt::{
    mapping::Publication,
    reason::Refusal,
    stored::{StoredInflight, StoredSession},
    topic_acl::TopicAccess,
    Delivery, Position, Subscription,
};

fn limits() -> SessionLimits {
    SessionLimits {
        packet_bytes_max: 1 << 20,
        assigned_client_id: "assigned-1".to_string(),
        auth_required: false,
        topic_acl: None,
    }
}

fn connect(version: Version, client_id: &str, clean_start: bool, keep_alive_s: u16) -> Packet {
    Packet::Connect(Box::new(Connect {
        version,
        clean_start,
        keep_alive_s,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }))
}

fn connected(version: Version, now: Instant) -> Session {
    let mut session = Session::new(now, limits());
    let actions = session.handle(now, Event::Packet(connect(version, "dev-1", true, 10)));
    assert_eq!(actions.len(), 1, "{actions:?}");
    let actions = session.handle(now, Event::Claimed { stored: None });
    assert!(matches!(actions[..], [Action::Send(Packet::ConnAck(_))]), "{actions:?}");
    session
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn subscribe(filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id(7),
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|(f, qos)| {
                (
                    f.to_string(),
                    SubscriptionOptions {
                        qos: *qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                )
            })
            .collect(),
    })
}

/// Handles `event` (a SUBSCRIBE) and, when the session asks for the
/// subscriptions to be made, says they were: the actions of both.
fn subscribed(session: &mut Session, now: Instant, event: Event) -> Vec<Action> {
    let mut actions = session.handle(now, event);
    if actions.iter().any(|action| matches!(action, Action::Subscribe { .. })) {
        actions.extend(session.handle(now, Event::Subscribed { refused: Vec::new() }));
    }
    actions
}

fn closes(actions: &[Action]) -> bool {
    matches!(actions.last(), Some(Action::Close { .. }))
}

#[test]
fn connect_claims_the_id_then_acknowledges() {
    let now = Instant::now();
    let mut session = Session::new(now, limits());
    let actions = session.handle(now, Event::Packet(connect(Version::V311, "dev-1", false, 30)));
    assert_eq!(
        actions,
        vec![Action::Claim {
            client_id: "dev-1".to_string(),
            clean_start: false,
        }]
    );
    assert!(session.is_persistent(), "3.1.1 clean session 0");
    let actions = session.handle(now, Event::Claimed { stored: None });
    let Action::Send(Packet::ConnAck(connack)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!((connack.code, connack.session_present), (0, false));
    assert_eq!(session.version(), Some(Version::V311));
}

#[test]
fn an_empty_client_id_needs_a_clean_session_in_311_and_is_assigned_in_5() {
    let now = Instant::now();
    let mut session = Session::new(now, limits());
    let actions = session.handle(now, Event::Packet(connect(Version::V311, "", false, 0)));
    assert_eq!(
        actions[0],
        Action::Send(Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0x02,
            properties: Properties::default()
        }))
    );
    assert!(closes(&actions) && session.is_closed());

    let mut session = Session::new(now, limits());
    let actions = session.handle(now, Event::Packet(connect(Version::V311, "", true, 0)));
    assert_eq!(
        actions[0],
        Action::Claim {
            client_id: "assigned-1".to_string(),
            clean_start: true,
        }
    );

    let mut session = Session::new(now, limits());
    session.handle(now, Event::Packet(connect(Version::V5, "", false, 0)));
    let actions = session.handle(now, Event::Claimed { stored: None });
    let Action::Send(Packet::ConnAck(connack)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(connack.properties.assigned_client_id.as_deref(), Some("assigned-1"));
    assert_eq!(connack.properties.receive_maximum, Some(64));
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let actions = session.handle(now, Event::Packet(connect(Version::V5, "dev-1", true, 10)));
    assert_eq!(
        actions[0],
        Action::Send(Packet::Disconnect(Disconnect {
            reason: 0x82,
            properties: Properties::default()
        }))
    );
    assert!(closes(&actions));
    assert!(
        session.handle(now, Event::Packet(Packet::PingReq)).is_empty(),
        "closed stays closed"
    );
}

#[test]
fn keep_alive_allows_one_and_a_half_periods() {
    let start = Instant::now();
    let mut session = connected(Version::V311, start);
    assert_eq!(session.deadline(), Some(start + Duration::from_secs(15)));
    assert!(session.handle(start + Duration::from_secs(14), Event::Tick).is_empty());
    // A packet moves the deadline.
    let later = start + Duration::from_secs(14);
    assert_eq!(
        session.handle(later, Event::Packet(Packet::PingReq)),
        vec![Action::Send(Packet::PingResp)]
    );
    assert!(session.handle(start + Duration::from_secs(28), Event::Tick).is_empty());
    let actions = session.handle(start + Duration::from_secs(29), Event::Tick);
    assert!(closes(&actions), "{actions:?}");
}

#[test]
fn v5_keep_alive_timeout_says_why() {
    let start = Instant::now();
    let mut session = connected(Version::V5, start);
    let actions = session.handle(start + Duration::from_secs(16), Event::Tick);
    let Action::Send(Packet::Disconnect(disconnect)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(disconnect.reason, 0x8d);
}

#[test]
fn qos1_is_acknowledged_only_after_the_append() {
    let now = Instant::now();
    let mut session = connected(Version::V311, now);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".to_string(),
        packet_id: Some(id(3)),
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    });
    let actions = session.handle(now, Event::Packet(publish));
    assert!(
        matches!(&actions[..], [Action::Append { packet_id: Some(_), .. }]),
        "{actions:?}"
    );
    let actions = session.handle(
        now,
        Event::Appended {
            packet_id: Some(id(3)),
            qos: QoS::AtLeastOnce,
            outcome: Ok(()),
        },
    );
    assert_eq!(
        actions,
        vec![Action::Send(Packet::Ack(Ack {
            kind: AckKind::PubAck,
            packet_id: id(3),
            reason: 0,
            properties: Properties::default()
        }))]
    );
    // A failed append in 3.1.1 (no negative PUBACK) closes the connection.
    let actions = session.handle(
        now,
        Event::Appended {
            packet_id: Some(id(4)),
            qos: QoS::AtLeastOnce,
            outcome: Err(std::sync::Arc::new(crate::error::EngineError::ShardUnavailable)),
        },
    );
    assert!(closes(&actions));
}

/// The actions are one PUBREC and nothing else.
fn assert_pubrec_alone(actions: &[Action]) {
    assert!(
        matches!(
            actions,
            [Action::Send(Packet::Ack(Ack {
                kind: AckKind::PubRec,
                ..
            }))]
        ),
        "{actions:?}"
    );
}

#[test]
fn qos2_is_received_once_and_released() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "a".to_string(),
        packet_id: Some(id(9)),
        properties: Properties::default(),
        payload: Bytes::new(),
    });
    let actions = session.handle(now, Event::Packet(publish.clone()));
    assert!(
        matches!(
            &actions[..],
            [Action::Append {
                message: Publication {
                    qos: QoS::ExactlyOnce,
                    ..
                },
                ..
            }]
        ),
        "{actions:?}"
    );
    let appended = Event::Appended {
        packet_id: Some(id(9)),
        qos: QoS::ExactlyOnce,
        outcome: Ok(()),
    };
    let pubrec = Action::Send(Packet::Ack(Ack {
        kind: AckKind::PubRec,
        packet_id: id(9),
        reason: 0,
        properties: Properties::default(),
    }));
    assert_eq!(session.handle(now, appended), vec![pubrec]);
    // Sent again before PUBREL: not appended again, acknowledged again.
    assert_pubrec_alone(&session.handle(now, Event::Packet(publish)));
    let pubrel = |n| {
        Event::Packet(Packet::Ack(Ack {
            kind: AckKind::PubRel,
            packet_id: id(n),
            reason: 0,
            properties: Properties::default(),
        }))
    };
    let pubcomp = |n, reason| {
        vec![Action::Send(Packet::Ack(Ack {
            kind: AckKind::PubComp,
            packet_id: id(n),
            reason,
            properties: Properties::default(),
        }))]
    };
    assert_eq!(session.handle(now, pubrel(9)), pubcomp(9, 0));
    assert_eq!(session.handle(now, pubrel(9)), pubcomp(9, 0x92), "no longer pending");
}

#[test]
fn appends_under_way_together_are_acknowledged_in_order_and_a_qos2_repeat_once() {
    let now = Instant::now();
    let mut session = connected(Version::V311, now);
    let publish = |n, qos| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: "t".to_string(),
            packet_id: Some(id(n)),
            properties: Properties::default(),
            payload: Bytes::new(),
        })
    };
    // Three publications read before any append ended: three appends.
    for (n, qos) in [(1, QoS::AtLeastOnce), (2, QoS::ExactlyOnce), (3, QoS::AtLeastOnce)] {
        let actions = session.handle(now, Event::Packet(publish(n, qos)));
        assert!(matches!(&actions[..], [Action::Append { .. }]), "{actions:?}");
    }
    // The QoS 2 one again while its append is under way: not appended twice.
    assert_eq!(session.handle(now, Event::Packet(publish(2, QoS::ExactlyOnce))), vec![]);
    let mut acks = Vec::new();
    for (n, qos) in [(1, QoS::AtLeastOnce), (2, QoS::ExactlyOnce), (3, QoS::AtLeastOnce)] {
        acks.extend(session.handle(
            now,
            Event::Appended {
                packet_id: Some(id(n)),
                qos,
                outcome: Ok(()),
            },
        ));
    }
    let sent: Vec<(AckKind, PacketId)> = acks
        .iter()
        .map(|action| match action {
            Action::Send(Packet::Ack(ack)) => (ack.kind, ack.packet_id),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (AckKind::PubAck, id(1)),
            (AckKind::PubRec, id(2)),
            (AckKind::PubAck, id(3))
        ]
    );
    // Now it awaits its PUBREL: a repeat is acknowledged again, not appended.
    assert_pubrec_alone(&session.handle(now, Event::Packet(publish(2, QoS::ExactlyOnce))));
}

#[test]
fn subscribe_grants_the_qos_asked_and_refuses_bad_filters_one_by_one() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let actions = subscribed(
        &mut session,
        now,
        Event::Packet(subscribe(&[
            ("a/+", QoS::ExactlyOnce),
            ("a/#/b", QoS::AtMostOnce),
            ("$share/g/a", QoS::AtMostOnce),
            ("$share/g", QoS::AtMostOnce),
        ])),
    );
    assert_eq!(
        actions,
        vec![
            Action::Subscribe {
                filters: vec![
                    Subscription {
                        filter: "a/+".to_string(),
                        qos: QoS::ExactlyOnce,
                        retain_as_published: false,
                        no_local: false,
                        id: None,
                    },
                    Subscription {
                        filter: "$share/g/a".to_string(),
                        qos: QoS::AtMostOnce,
                        retain_as_published: false,
                        no_local: false,
                        id: None,
                    }
                ],
                // A share gets no retained messages.
                retained_for: vec![("a/+".to_string(), QoS::ExactlyOnce)],
            },
            Action::Send(Packet::SubAck(SubAck {
                packet_id: id(7),
                properties: Properties::default(),
                codes: vec![2, 0x8f, 0, 0x8f]
            }))
        ]
    );
}

#[test]
fn subscriptions_are_bounded() {
    let now = Instant::now();
    let mut session = connected(Version::V311, now);
    for i in 0..SUBSCRIPTIONS_MAX {
        let filter = format!("t/{i}");
        subscribed(
            &mut session,
            now,
            Event::Packet(subscribe(&[(&filter, QoS::AtMostOnce)])),
        );
    }
    let actions = subscribed(
        &mut session,
        now,
        Event::Packet(subscribe(&[("one/more", QoS::AtMostOnce)])),
    );
    let Some(Action::Send(Packet::SubAck(suback))) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(suback.codes, vec![0x80]);
}

#[test]
fn qos1_deliveries_take_packet_ids_until_the_window_is_full() {
    let now = Instant::now();
    let mut session = Session::new(now, limits());
    let mut packet = connect(Version::V5, "sub", true, 0);
    if let Packet::Connect(connect) = &mut packet {
        connect.properties.receive_maximum = Some(2);
    }
    session.handle(now, Event::Packet(packet));
    let delivery = || Delivery {
        topic: std::rc::Rc::from("a"),
        payload: Bytes::from_static(b"p"),
        qos: QoS::AtLeastOnce,
        retain: false,
        position: None,
        properties: None,
        expiry_left_s: None,
        subscription_ids: Vec::new(),
    };
    let first = session.handle(now, Event::Delivery(delivery()));
    let second = session.handle(now, Event::Delivery(delivery()));
    let ids: Vec<u16> = [first, second]
        .iter()
        .map(|actions| match &actions[0] {
            Action::Send(Packet::Publish(p)) => p.packet_id.unwrap().get(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(!session.takes_deliveries());
    let ack = Packet::Ack(Ack {
        kind: AckKind::PubAck,
        packet_id: id(1),
        reason: 0,
        properties: Properties::default(),
    });
    session.handle(now, Event::Packet(ack));
    assert!(session.takes_deliveries());
}

fn ack(kind: AckKind, n: u16, reason: u8) -> Event {
    Event::Packet(Packet::Ack(Ack {
        kind,
        packet_id: id(n),
        reason,
        properties: Properties::default(),
    }))
}

fn sent_ack(kind: AckKind, n: u16, reason: u8) -> Vec<Action> {
    vec![Action::Send(Packet::Ack(Ack {
        kind,
        packet_id: id(n),
        reason,
        properties: Properties::default(),
    }))]
}

#[test]
fn qos2_deliveries_go_publish_pubrec_pubrel_pubcomp() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let delivery = Delivery {
        topic: std::rc::Rc::from("a"),
        payload: Bytes::from_static(b"p"),
        qos: QoS::ExactlyOnce,
        retain: false,
        position: None,
        properties: None,
        expiry_left_s: None,
        subscription_ids: Vec::new(),
    };
    let actions = session.handle(now, Event::Delivery(delivery));
    let [Action::Send(Packet::Publish(publish))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!((publish.qos, publish.packet_id), (QoS::ExactlyOnce, Some(id(1))));
    // A PUBACK is the wrong answer to a QoS 2 delivery: ignored.
    assert_eq!(session.handle(now, ack(AckKind::PubAck, 1, 0)), vec![]);
    assert_eq!(
        session.handle(now, ack(AckKind::PubRec, 1, 0)),
        sent_ack(AckKind::PubRel, 1, 0)
    );
    // A repeated PUBREC gets the PUBREL again.
    assert_eq!(
        session.handle(now, ack(AckKind::PubRec, 1, 0)),
        sent_ack(AckKind::PubRel, 1, 0)
    );
    assert_eq!(session.handle(now, ack(AckKind::PubComp, 1, 0)), vec![]);
    // Done: the identifier is free, an unknown PUBREC is answered 0x92.
    assert_eq!(
        session.handle(now, ack(AckKind::PubRec, 1, 0)),
        sent_ack(AckKind::PubRel, 1, 0x92)
    );
    let again = Delivery {
        topic: std::rc::Rc::from("a"),
        payload: Bytes::new(),
        qos: QoS::ExactlyOnce,
        retain: false,
        position: None,
        properties: None,
        expiry_left_s: None,
        subscription_ids: Vec::new(),
    };
    session.handle(now, Event::Delivery(again));
    // A failed PUBREC (v5) ends the exchange with no PUBREL.
    assert_eq!(session.handle(now, ack(AckKind::PubRec, 2, 0x80)), vec![]);
    assert_eq!(session.handle(now, ack(AckKind::PubComp, 2, 0)), vec![]);
    assert!(!session.is_closed());
}

#[test]
fn retain_handling_decides_when_retained_messages_are_sent() {
    let now = Instant::now();
    let subscribe_with = |retain_handling, retain_as_published| {
        Event::Packet(Packet::Subscribe(Subscribe {
            packet_id: id(7),
            properties: Properties::default(),
            filters: vec![(
                "r/#".to_string(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published,
                    retain_handling,
                },
            )],
        }))
    };
    let retained_for = |actions: &[Action]| match &actions[0] {
        Action::Subscribe {
            filters, retained_for, ..
        } => (filters[0].retain_as_published, retained_for.len()),
        other => panic!("{other:?}"),
    };
    let mut v5 = connected(Version::V5, now);
    // 1: only for a new subscription.
    assert_eq!(
        retained_for(&subscribed(&mut v5, now, subscribe_with(1, true))),
        (true, 1)
    );
    assert_eq!(
        retained_for(&subscribed(&mut v5, now, subscribe_with(1, true))),
        (true, 0)
    );
    // 0: every time; 2: never.
    assert_eq!(
        retained_for(&subscribed(&mut v5, now, subscribe_with(0, false))),
        (false, 1)
    );
    assert_eq!(
        retained_for(&subscribed(&mut v5, now, subscribe_with(2, false))),
        (false, 0)
    );
    // 3.1.1 has neither option: always sent, never retain-as-published.
    let mut v311 = connected(Version::V311, now);
    assert_eq!(
        retained_for(&subscribed(&mut v311, now, subscribe_with(2, true))),
        (false, 1)
    );
}

#[test]
fn packets_only_a_server_sends_are_protocol_errors() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let actions = session.handle(now, Event::Packet(Packet::PingResp));
    let Action::Send(Packet::Disconnect(disconnect)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(disconnect.reason, 0x82);
}

#[test]
fn takeover_and_bad_bytes_close_with_their_reason() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let actions = session.handle(now, Event::TakenOver);
    let Action::Send(Packet::Disconnect(disconnect)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(disconnect.reason, 0x8e);

    let mut session = connected(Version::V311, now);
    let actions = session.refuse(Refusal::Decode(MqttDecodeError::TopicName));
    assert_eq!(actions.len(), 1, "3.1.1 has no DISCONNECT from the server");
    assert!(closes(&actions));

    let mut session = Session::new(now, limits());
    let actions = session.refuse(Refusal::Decode(MqttDecodeError::UnsupportedVersion { level: 3 }));
    assert!(matches!(
        &actions[0],
        Action::Send(Packet::ConnAck(ConnAck { code: 0x01, .. }))
    ));
}

#[test]
fn a_silent_connection_is_closed_without_a_connack() {
    let start = Instant::now();
    let mut session = Session::new(start, limits());
    assert_eq!(session.deadline(), Some(start + super::CONNECT_WAIT_MAX));
    let actions = session.handle(start + super::CONNECT_WAIT_MAX, Event::Tick);
    assert!(matches!(&actions[..], [Action::Close { .. }]), "{actions:?}");
}

#[test]
fn a_client_disconnect_closes_quietly() {
    let now = Instant::now();
    let mut session = connected(Version::V311, now);
    let actions = session.handle(
        now,
        Event::Packet(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default(),
        })),
    );
    assert_eq!(actions, vec![Action::Close { why: None }]);
}

fn connect_with_will(version: Version, qos: QoS) -> Packet {
    let mut packet = connect(version, "dev-w", true, 10);
    if let Packet::Connect(connect) = &mut packet {
        connect.will = Some(shardline_net::mqtt::Will {
            topic: "dev/w/status".to_string(),
            payload: Bytes::from_static(b"gone"),
            qos,
            retain: false,
            properties: Properties::default(),
        });
    }
    packet
}

#[test]
fn the_will_is_kept_unless_the_client_disconnects_normally() {
    let now = Instant::now();
    // Lost connection (or any server-side close): the will is published.
    let mut session = Session::new(now, limits());
    session.handle(now, Event::Packet(connect_with_will(Version::V311, QoS::AtLeastOnce)));
    session.handle(now + Duration::from_secs(16), Event::Tick);
    let (will, delay) = session.take_will().unwrap();
    assert_eq!((will.topic.as_str(), delay), ("dev/w/status", Duration::ZERO));
    assert!(session.take_will().is_none(), "once");
    // A normal DISCONNECT discards it.
    let mut session = Session::new(now, limits());
    session.handle(now, Event::Packet(connect_with_will(Version::V5, QoS::AtMostOnce)));
    let normal = Disconnect {
        reason: 0,
        properties: Properties::default(),
    };
    session.handle(now, Event::Packet(Packet::Disconnect(normal)));
    assert!(session.take_will().is_none());
    // v5 DISCONNECT 0x04 asks for it.
    let mut session = Session::new(now, limits());
    session.handle(now, Event::Packet(connect_with_will(Version::V5, QoS::AtMostOnce)));
    let with_will = Disconnect {
        reason: 0x04,
        properties: Properties::default(),
    };
    session.handle(now, Event::Packet(Packet::Disconnect(with_will)));
    assert!(session.take_will().is_some());
}

/// A v5 session with a Session Expiry Interval of `expiry_s`, connected
/// and claimed with `stored`; returns it and the actions of the claim.
fn persistent(now: Instant, expiry_s: u32, stored: Option<StoredSession>) -> (Session, Vec<Action>) {
    let mut session = Session::new(now, limits());
    let mut packet = connect(Version::V5, "dev-p", false, 0);
    if let Packet::Connect(connect) = &mut packet {
        connect.properties.session_expiry_s = Some(expiry_s);
    }
    session.handle(now, Event::Packet(packet));
    let actions = session.handle(now, Event::Claimed { stored });
    (session, actions)
}

fn logged(topic: &str, qos: QoS, partition: i32, offset: i64) -> Delivery {
    Delivery {
        topic: std::rc::Rc::from(topic),
        payload: Bytes::from_static(b"m"),
        qos,
        retain: false,
        position: Some(Position {
            partition,
            offset: Offset(offset),
        }),
        properties: None,
        expiry_left_s: None,
        subscription_ids: Vec::new(),
    }
}

/// The session as a [`Action::Save`] among `actions` would store it.
fn saved(session: &mut Session, actions: &[Action]) -> Option<StoredSession> {
    actions
        .contains(&Action::Save)
        .then(|| session.snapshot().expect("a persistent session"))
}

#[test]
fn a_persistent_session_saves_its_subscriptions_at_once_and_its_cursors_within_the_interval() {
    let now = Instant::now();
    let (mut session, actions) = persistent(now, 3600, None);
    assert!(matches!(
        &actions[..],
        [Action::Send(Packet::ConnAck(ConnAck {
            session_present: false,
            ..
        }))]
    ));
    assert!(session.is_persistent());
    let actions = subscribed(
        &mut session,
        now,
        Event::Packet(subscribe(&[("a/#", QoS::AtLeastOnce)])),
    );
    let stored = saved(&mut session, &actions).expect("a new subscription is saved before its SUBACK is written");
    assert_eq!(stored.subscriptions.len(), 1);
    assert_eq!(stored.expiry_s, 3600);

    session.advance_cursors([(0, Offset(10)), (1, Offset(4))].into_iter().collect());
    let actions = session.handle(now, Event::Delivery(logged("a/b", QoS::AtLeastOnce, 0, 12)));
    assert!(
        matches!(&actions[..], [Action::Send(Packet::Publish(_))]),
        "{actions:?}"
    );
    // Already handed over (a replay overlapping the feed): dropped.
    assert!(session
        .handle(now, Event::Delivery(logged("a/b", QoS::AtLeastOnce, 0, 12)))
        .is_empty());
    let actions = session.handle(now + Duration::from_millis(999), Event::Tick);
    assert!(saved(&mut session, &actions).is_none());
    let actions = session.handle(now + SESSION_SAVE_INTERVAL, Event::Tick);
    let stored = saved(&mut session, &actions).expect("saved within the interval");
    assert_eq!(stored.cursors, [(0, Offset(13)), (1, Offset(4))].into_iter().collect());
    assert_eq!(
        stored.inflight,
        vec![StoredInflight {
            packet_id: id(1),
            awaiting: Awaiting::Acknowledgement,
            position: Some(Position {
                partition: 0,
                offset: Offset(12)
            }),
        }]
    );
    // Nothing changed since: nothing to save.
    let actions = session.handle(now + 3 * SESSION_SAVE_INTERVAL, Event::Tick);
    assert!(saved(&mut session, &actions).is_none());
    // Cursors never go back.
    session.advance_cursors([(0, Offset(5))].into_iter().collect());
    assert_eq!(session.snapshot().unwrap().cursors.get(&0), Some(&Offset(13)));
}

#[test]
fn a_session_that_ends_with_its_connection_is_never_saved() {
    let now = Instant::now();
    let mut session = connected(Version::V311, now);
    assert!(!session.is_persistent());
    let actions = subscribed(
        &mut session,
        now,
        Event::Packet(subscribe(&[("a/#", QoS::AtLeastOnce)])),
    );
    assert!(!actions.contains(&Action::Save));
    session.handle(now, Event::Delivery(logged("a/b", QoS::AtLeastOnce, 0, 1)));
    assert!(!session
        .handle(now + 2 * SESSION_SAVE_INTERVAL, Event::Tick)
        .contains(&Action::Save));
    assert!(session.snapshot().is_none());
}

#[test]
fn a_resumed_session_sends_its_deliveries_in_flight_again_then_replays() {
    let now = Instant::now();
    let stored = StoredSession {
        version: Version::V5,
        expiry_s: 60,
        saved_at_ms: 1,
        claim: Default::default(),
        kafka_topic: "mqtt".to_string(),
        subscriptions: vec![
            Subscription {
                filter: "a/#".to_string(),
                qos: QoS::ExactlyOnce,
                retain_as_published: false,
                no_local: false,
                id: None,
            },
            Subscription {
                filter: "$share/g/b".to_string(),
                qos: QoS::AtLeastOnce,
                retain_as_published: false,
                no_local: false,
                id: None,
            },
        ],
        cursors: [(0, Offset(20))].into_iter().collect(),
        inflight: vec![
            StoredInflight {
                packet_id: id(3),
                awaiting: Awaiting::Receipt,
                position: Some(Position {
                    partition: 0,
                    offset: Offset(18),
                }),
            },
            StoredInflight {
                packet_id: id(4),
                awaiting: Awaiting::Completion,
                position: Some(Position {
                    partition: 0,
                    offset: Offset(19),
                }),
            },
            // A retained delivery: not sent again.
            StoredInflight {
                packet_id: id(5),
                awaiting: Awaiting::Acknowledgement,
                position: None,
            },
        ],
        releases_pending: vec![id(9)],
    };
    let (mut session, actions) = persistent(now, 60, Some(stored.clone()));
    let Action::Send(Packet::ConnAck(connack)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert!(connack.session_present);
    assert_eq!(
        actions[1],
        Action::Subscribe {
            filters: stored.subscriptions.clone(),
            retained_for: Vec::new(),
        },
        "subscriptions come back without retained messages"
    );
    assert_eq!(
        actions[2],
        Action::Redeliver {
            packet_id: id(3),
            position: Position {
                partition: 0,
                offset: Offset(18)
            },
        }
    );
    assert_eq!(actions[3], sent_ack(AckKind::PubRel, 4, 0)[0]);
    assert_eq!(
        actions[4],
        Action::Replay {
            cursors: stored.cursors.clone(),
            filters: vec![stored.subscriptions[0].clone()],
        },
        "shares are not replayed"
    );
    assert_eq!(actions.len(), 5);

    let actions = session.handle(
        now,
        Event::Redelivery {
            packet_id: id(3),
            message: Some((std::sync::Arc::from("a/x"), Bytes::from_static(b"again"))),
        },
    );
    let [Action::Send(Packet::Publish(publish))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert!(publish.dup, "sent again with DUP");
    assert_eq!((publish.packet_id, publish.qos), (Some(id(3)), QoS::ExactlyOnce));
    // The client completes both exchanges; a PUBREL for the stored
    // identifier is answered as known.
    assert_eq!(
        session.handle(now, ack(AckKind::PubRec, 3, 0)),
        sent_ack(AckKind::PubRel, 3, 0)
    );
    assert!(session.handle(now, ack(AckKind::PubComp, 3, 0)).is_empty());
    assert!(session.handle(now, ack(AckKind::PubComp, 4, 0)).is_empty());
    assert_eq!(
        session.handle(now, ack(AckKind::PubRel, 9, 0)),
        sent_ack(AckKind::PubComp, 9, 0)
    );
    let stored = session.snapshot().unwrap();
    assert!(stored.inflight.is_empty() && stored.releases_pending.is_empty());
}

#[test]
fn a_message_gone_from_the_log_is_not_sent_again() {
    let now = Instant::now();
    let stored = StoredSession {
        version: Version::V311,
        expiry_s: 60,
        saved_at_ms: 1,
        claim: Default::default(),
        kafka_topic: "mqtt".to_string(),
        subscriptions: Vec::new(),
        cursors: Default::default(),
        inflight: vec![StoredInflight {
            packet_id: id(3),
            awaiting: Awaiting::Acknowledgement,
            position: Some(Position {
                partition: 0,
                offset: Offset(1),
            }),
        }],
        releases_pending: Vec::new(),
    };
    let (mut session, _) = persistent(now, 60, Some(stored));
    let actions = session.handle(
        now,
        Event::Redelivery {
            packet_id: id(3),
            message: None,
        },
    );
    assert!(actions.is_empty());
    assert!(session.snapshot().unwrap().inflight.is_empty());
}

#[test]
fn disconnect_may_shorten_the_session_expiry_but_not_start_one() {
    let now = Instant::now();
    let (mut session, _) = persistent(now, 60, None);
    let mut disconnect = Disconnect {
        reason: 0,
        properties: Properties::default(),
    };
    disconnect.properties.session_expiry_s = Some(0);
    session.handle(now, Event::Packet(Packet::Disconnect(disconnect.clone())));
    assert!(!session.is_persistent(), "ends with its connection now");

    let mut session = connected(Version::V5, now);
    disconnect.properties.session_expiry_s = Some(60);
    let actions = session.handle(now, Event::Packet(Packet::Disconnect(disconnect)));
    let Action::Send(Packet::Disconnect(refused)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(refused.reason, 0x82);
}

fn publish_v5(topic: &str, alias: Option<u16>) -> Event {
    let properties = PropertyFields {
        topic_alias: alias,
        ..PropertyFields::default()
    }
    .into();
    Event::Packet(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.to_string(),
        packet_id: None,
        properties,
        payload: Bytes::from_static(b"p"),
    }))
}

fn appended_topic(actions: &[Action]) -> Option<&str> {
    match actions {
        [Action::Append { message, .. }] => Some(&message.topic),
        _ => None,
    }
}

#[test]
fn topic_aliases_are_set_then_used_and_bad_ones_close() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let actions = session.handle(now, publish_v5("s/long/topic", Some(3)));
    assert_eq!(appended_topic(&actions), Some("s/long/topic"));
    let actions = session.handle(now, publish_v5("", Some(3)));
    assert_eq!(
        appended_topic(&actions),
        Some("s/long/topic"),
        "the alias stands for the topic"
    );
    let actions = session.handle(now, publish_v5("s/other", Some(3)));
    assert_eq!(appended_topic(&actions), Some("s/other"), "an alias may be set again");
    assert_eq!(
        appended_topic(&session.handle(now, publish_v5("", Some(3)))),
        Some("s/other")
    );
    for bad in [publish_v5("", Some(4)), publish_v5("t", Some(TOPIC_ALIAS_MAX + 1))] {
        let mut session = connected(Version::V5, now);
        let actions = session.handle(now, bad);
        let Action::Send(Packet::Disconnect(disconnect)) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(disconnect.reason, 0x94, "Topic Alias invalid");
    }
}

#[test]
fn subscription_ids_and_no_local_are_kept_and_a_no_local_share_is_refused() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let Packet::Subscribe(mut subscribe) = subscribe(&[("a/#", QoS::AtLeastOnce)]) else {
        unreachable!()
    };
    subscribe.properties.subscription_ids = vec![9];
    subscribe.filters[0].1.no_local = true;
    let actions = session.handle(now, Event::Packet(Packet::Subscribe(subscribe.clone())));
    let Action::Subscribe { filters, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!((filters[0].id, filters[0].no_local), (Some(9), true));

    subscribe.filters[0].0 = "$share/g/a/#".to_string();
    let actions = session.handle(now, Event::Packet(Packet::Subscribe(subscribe.clone())));
    let Action::Send(Packet::Disconnect(disconnect)) = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(disconnect.reason, 0x82, "No Local on a share is a protocol error");

    let mut session = connected(Version::V5, now);
    subscribe.filters[0] = ("a/#".to_string(), subscribe.filters[0].1);
    subscribe.properties.subscription_ids = vec![0];
    let actions = session.handle(now, Event::Packet(Packet::Subscribe(subscribe)));
    assert!(closes(&actions), "subscription identifier 0: {actions:?}");
}

#[test]
fn v5_deliveries_carry_the_message_properties_and_3_1_1_ones_do_not() {
    let now = Instant::now();
    let props = crate::mqtt::mapping::MessageProperties {
        payload_format: Some(1),
        expiry_s: Some(60),
        content_type: Some("text/plain".to_string()),
        response_topic: Some("replies/1".to_string()),
        correlation_data: Some(Bytes::from_static(b"c-1")),
        user: vec![("k".to_string(), "v".to_string())],
    };
    let delivery = || Delivery {
        properties: Some(std::rc::Rc::new(props.clone())),
        expiry_left_s: Some(42),
        subscription_ids: vec![9, 11],
        ..Delivery::plain(std::rc::Rc::from("a"), Bytes::from_static(b"p"), QoS::AtMostOnce, false)
    };
    let mut v5 = connected(Version::V5, now);
    let actions = v5.handle(now, Event::Delivery(delivery()));
    let [Action::Send(Packet::Publish(publish))] = &actions[..] else {
        panic!("{actions:?}")
    };
    let p = &publish.properties;
    assert_eq!(p.message_expiry_s, Some(42), "what is left of the expiry");
    assert_eq!(p.response_topic.as_deref(), Some("replies/1"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"c-1"[..]));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.payload_format, Some(1));
    assert_eq!(p.user_properties, vec![("k".to_string(), "v".to_string())]);
    assert_eq!(p.subscription_ids, vec![9, 11]);

    let mut v311 = connected(Version::V311, now);
    let actions = v311.handle(now, Event::Delivery(delivery()));
    let [Action::Send(Packet::Publish(publish))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(publish.properties, Properties::default());
}

#[test]
fn with_authentication_the_claim_waits_for_good_credentials() {
    let now = Instant::now();
    let limits = SessionLimits {
        auth_required: true,
        ..limits()
    };
    let mut packet = connect(Version::V5, "dev-a", true, 0);
    if let Packet::Connect(connect) = &mut packet {
        connect.username = Some("device".to_string());
        connect.password = Some(Bytes::from_static(b"pw"));
    }
    let mut session = Session::new(now, limits.clone());
    let actions = session.handle(now, Event::Packet(packet.clone()));
    assert_eq!(
        actions,
        vec![Action::Authenticate {
            user: Some("device".to_string()),
            password: Some(Bytes::from_static(b"pw")),
        }]
    );
    let actions = session.handle(
        now,
        Event::Authenticated {
            user: Some("device".to_string()),
        },
    );
    assert!(matches!(&actions[..], [Action::Claim { .. }]), "{actions:?}");

    for (version, code) in [(Version::V5, 0x86), (Version::V311, 0x04)] {
        let mut session = Session::new(now, limits.clone());
        session.handle(now, Event::Packet(connect(version, "dev-b", true, 0)));
        let actions = session.handle(now, Event::Authenticated { user: None });
        let Action::Send(Packet::ConnAck(connack)) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(connack.code, code, "{version:?}");
        assert!(closes(&actions) && session.is_closed());
    }
}

#[test]
fn a_will_waits_for_its_delay_or_the_session_end_whichever_is_sooner() {
    let now = Instant::now();
    for (will_delay_s, expiry_s, expected_s) in [(30, 10, 10), (5, 300, 5), (30, 0, 0), (0, 300, 0)] {
        let mut packet = connect_with_will(Version::V5, QoS::AtLeastOnce);
        if let Packet::Connect(connect) = &mut packet {
            connect.properties.session_expiry_s = Some(expiry_s);
            if let Some(will) = &mut connect.will {
                will.properties.will_delay_s = Some(will_delay_s);
            }
        }
        let mut session = Session::new(now, limits());
        session.handle(now, Event::Packet(packet));
        session.handle(now, Event::Claimed { stored: None });
        session.handle(now, Event::TakenOver);
        let (_, delay) = session.take_will().unwrap();
        assert_eq!(
            delay,
            Duration::from_secs(expected_s),
            "delay {will_delay_s}, expiry {expiry_s}"
        );
    }
}

#[test]
fn a_share_that_cannot_be_joined_is_refused_in_the_suback_and_forgotten() {
    let now = Instant::now();
    let mut session = connected(Version::V5, now);
    let actions = session.handle(
        now,
        Event::Packet(subscribe(&[
            ("a/#", QoS::AtLeastOnce),
            ("$share/g/b", QoS::AtLeastOnce),
        ])),
    );
    assert!(
        matches!(&actions[..], [Action::Subscribe { .. }]),
        "the SUBACK waits for the subscriptions: {actions:?}"
    );
    let actions = session.handle(
        now,
        Event::Subscribed {
            refused: vec!["$share/g/b".to_string()],
        },
    );
    let [Action::Send(Packet::SubAck(suback))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(suback.codes, vec![1, 0x97], "the share: quota exceeded");
    let unsubscribe = Packet::Unsubscribe(shardline_net::mqtt::Unsubscribe {
        packet_id: id(8),
        properties: Properties::default(),
        filters: vec!["$share/g/b".to_string(), "a/#".to_string()],
    });
    let actions = session.handle(now, Event::Packet(unsubscribe));
    let Some(Action::Send(Packet::UnsubAck(unsuback))) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!(
        unsuback.codes,
        vec![0x11, 0],
        "the refused share was never a subscription"
    );
}

#[test]
fn the_acl_file_refuses_publishes_and_skips_deliveries_it_does_not_allow() {
    let now = Instant::now();
    let acl = std::sync::Arc::new(
        crate::mqtt::TopicAcl::parse("topic write out/#\ntopic read in/#\npattern readwrite own/%c\n").unwrap(),
    );
    let publish = |topic: &str, qos: QoS, n: u16| {
        Event::Packet(Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_string(),
            packet_id: (qos != QoS::AtMostOnce).then(|| id(n)),
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        }))
    };
    let delivery = |topic: &str| Delivery {
        topic: std::rc::Rc::from(topic),
        payload: Bytes::from_static(b"p"),
        qos: QoS::AtMostOnce,
        retain: false,
        position: None,
        properties: None,
        expiry_left_s: None,
        subscription_ids: Vec::new(),
    };
    for version in [Version::V5, Version::V311] {
        let limits = SessionLimits {
            topic_acl: Some(std::sync::Arc::clone(&acl)),
            ..limits()
        };
        let mut session = Session::new(now, limits);
        session.handle(now, Event::Packet(connect(version, "dev-1", true, 0)));
        session.handle(now, Event::Claimed { stored: None });
        let allowed = session.handle(now, publish("out/a", QoS::AtLeastOnce, 1));
        assert!(matches!(&allowed[..], [Action::Append { .. }]), "{allowed:?}");
        let own = session.handle(now, publish("own/dev-1", QoS::AtMostOnce, 0));
        assert!(matches!(&own[..], [Action::Append { .. }]), "{own:?}");
        // Refused: v5 0x87; 3.1.1 acknowledged (no negative PUBACK) and dropped.
        let code = if version == Version::V5 { 0x87 } else { 0 };
        assert_eq!(
            session.handle(now, publish("in/a", QoS::AtLeastOnce, 2)),
            sent_ack(AckKind::PubAck, 2, code)
        );
        assert_eq!(
            session.handle(now, publish("in/a", QoS::ExactlyOnce, 3)),
            sent_ack(AckKind::PubRec, 3, code)
        );
        assert!(session.handle(now, publish("in/a", QoS::AtMostOnce, 0)).is_empty());
        assert!(!session.is_closed());
        // Deliveries: only readable topics go out.
        let read = session.handle(now, Event::Delivery(delivery("in/x")));
        assert!(matches!(&read[..], [Action::Send(Packet::Publish(_))]), "{read:?}");
        assert!(session.handle(now, Event::Delivery(delivery("out/x"))).is_empty());
        assert!(session.topic_allowed("own/dev-1", TopicAccess::Write));
        assert!(!session.topic_allowed("own/dev-2", TopicAccess::Write));
    }
}

#[test]
fn a_scram_login_goes_connect_auth_auth_connack_and_may_reauthenticate() {
    use shardline_net::mqtt::Auth;
    let now = Instant::now();
    let required = SessionLimits {
        auth_required: true,
        ..limits()
    };
    let scram_connect = |method: &str| {
        let mut packet = connect(Version::V5, "dev-s", true, 0);
        if let Packet::Connect(connect) = &mut packet {
            connect.properties.auth_method = Some(method.to_string());
            connect.properties.auth_data = Some(Bytes::from_static(b"client-first"));
        }
        Event::Packet(packet)
    };
    let auth = |reason: u8, method: &str, data: &'static [u8]| {
        Event::Packet(Packet::Auth(Auth {
            reason,
            properties: PropertyFields {
                auth_method: Some(method.to_string()),
                auth_data: Some(Bytes::from_static(data)),
                ..PropertyFields::default()
            }
            .into(),
        }))
    };
    let mut session = Session::new(now, required.clone());
    let actions = session.handle(now, scram_connect("SCRAM-SHA-512"));
    assert_eq!(
        actions,
        vec![Action::ScramStart {
            mechanism: crate::sasl::Mechanism::ScramSha512,
            client_first: Bytes::from_static(b"client-first"),
        }]
    );
    let actions = session.handle(
        now,
        Event::ScramChallenge {
            server_first: Some(b"server-first".to_vec()),
        },
    );
    let [Action::Send(Packet::Auth(challenge))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(challenge.reason, 0x18);
    assert_eq!(challenge.properties.auth_data.as_deref(), Some(&b"server-first"[..]));
    // The wait for the client's answer is CONNECT's.
    assert_eq!(session.deadline(), Some(now + super::CONNECT_WAIT_MAX));
    let actions = session.handle(now, auth(0x18, "SCRAM-SHA-512", b"client-final"));
    assert_eq!(
        actions,
        vec![Action::ScramFinish {
            client_final: Bytes::from_static(b"client-final")
        }]
    );
    let outcome = Some(("device".to_string(), b"v=sig".to_vec()));
    let actions = session.handle(now, Event::ScramFinished { outcome });
    assert!(matches!(&actions[..], [Action::Claim { .. }]), "{actions:?}");
    let actions = session.handle(now, Event::Claimed { stored: None });
    let [Action::Send(Packet::ConnAck(connack))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(connack.code, 0);
    assert_eq!(connack.properties.auth_method.as_deref(), Some("SCRAM-SHA-512"));
    assert_eq!(connack.properties.auth_data.as_deref(), Some(&b"v=sig"[..]));
    // Re-authentication: the same user gets AUTH 0x00; another is refused.
    let actions = session.handle(now, auth(0x19, "SCRAM-SHA-512", b"again"));
    assert!(matches!(&actions[..], [Action::ScramStart { .. }]), "{actions:?}");
    session.handle(
        now,
        Event::ScramChallenge {
            server_first: Some(b"s".to_vec()),
        },
    );
    session.handle(now, auth(0x18, "SCRAM-SHA-512", b"f"));
    let outcome = Some(("device".to_string(), b"v=again".to_vec()));
    let actions = session.handle(now, Event::ScramFinished { outcome });
    let [Action::Send(Packet::Auth(done))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (done.reason, done.properties.auth_data.as_deref()),
        (0, Some(&b"v=again"[..]))
    );
    session.handle(now, auth(0x19, "SCRAM-SHA-512", b"again"));
    session.handle(
        now,
        Event::ScramChallenge {
            server_first: Some(b"s".to_vec()),
        },
    );
    session.handle(now, auth(0x18, "SCRAM-SHA-512", b"f"));
    let outcome = Some(("intruder".to_string(), b"v=x".to_vec()));
    let actions = session.handle(now, Event::ScramFinished { outcome });
    assert_eq!(
        actions[0],
        Action::Send(Packet::Disconnect(Disconnect {
            reason: 0x86,
            properties: Properties::default()
        }))
    );
    // A bad proof: CONNACK 0x86; an unknown method: 0x8C; another method: 0x82.
    let mut bad = Session::new(now, required.clone());
    bad.handle(now, scram_connect("SCRAM-SHA-256"));
    bad.handle(
        now,
        Event::ScramChallenge {
            server_first: Some(b"s".to_vec()),
        },
    );
    bad.handle(now, auth(0x18, "SCRAM-SHA-256", b"f"));
    let actions = bad.handle(now, Event::ScramFinished { outcome: None });
    assert!(
        matches!(&actions[0], Action::Send(Packet::ConnAck(c)) if c.code == 0x86),
        "{actions:?}"
    );
    let mut unknown = Session::new(now, required.clone());
    let actions = unknown.handle(now, scram_connect("SCRAM-MD5"));
    assert!(
        matches!(&actions[0], Action::Send(Packet::ConnAck(c)) if c.code == 0x8c),
        "{actions:?}"
    );
    let mut switched = Session::new(now, required);
    switched.handle(now, scram_connect("SCRAM-SHA-256"));
    switched.handle(
        now,
        Event::ScramChallenge {
            server_first: Some(b"s".to_vec()),
        },
    );
    let actions = switched.handle(now, auth(0x18, "SCRAM-SHA-512", b"f"));
    assert!(
        matches!(&actions[0], Action::Send(Packet::ConnAck(c)) if c.code == 0x82),
        "{actions:?}"
    );
    // Without --mqtt-auth password there are no users: the method is not offered.
    let mut open = Session::new(now, limits());
    let actions = open.handle(now, scram_connect("SCRAM-SHA-256"));
    assert!(
        matches!(&actions[0], Action::Send(Packet::ConnAck(c)) if c.code == 0x8c),
        "{actions:?}"
    );
}
