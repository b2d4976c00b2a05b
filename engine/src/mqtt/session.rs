//! One MQTT connection's protocol state, as a state machine without I/O:
//! it takes the time and an [`Event`] (a packet, a message from the log,
//! the outcome of an append, a tick, a takeover) and returns the
//! [`Action`]s the connection task carries out in order (send a packet,
//! claim the client id, append a message, change subscriptions, close).
//! No socket, file or clock is touched here, so the rules are unit-tested
//! with made-up times.
//!
//! Lives in its connection's task, on the shard that accepted the socket.
//!
//! ```text
//!  AwaitingConnect ──CONNECT ok──► Connected ──DISCONNECT / refusal / takeover──► Closed
//!        │           (Claim; the CONNACK     (every event after Closed: no action)
//!        │            follows Claimed)
//!        └──bad CONNECT──► Closed (CONNACK with a failure code, when the version has one)
//!
//!  v5 SCRAM login (still AwaitingConnect, within CONNECT_WAIT_MAX):
//!  CONNECT(method, client-first) ─ScramStart─► AUTH 0x18(server-first) out
//!  AUTH 0x18(client-final) in ─ScramFinish─► Claim ─► CONNACK(method, server-final)
//!  re-authentication once Connected: AUTH 0x19 in, the same two steps, AUTH 0x00 out
//! ```
//!
//! A persistent session (3.1.1 clean session 0; 5.0 a Session Expiry
//! Interval above 0) is saved as a [`StoredSession`]: its subscriptions,
//! a cursor per partition of the mapped topic (every matching message
//! before it was handed to the client), the deliveries in flight by their
//! place in the log, and the QoS 2 identifiers awaiting PUBREL. Nothing is
//! copied out of the log: a resumed session sends its deliveries in flight
//! again (DUP) and then what its subscriptions matched from its cursors on
//! (`Action::Replay`), so a message published while the client was away is
//! read from the log like any other.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use shardline_net::mqtt::{
    valid_topic_filter, Ack, AckKind, Auth, ConnAck, Connect, Disconnect, Packet, PacketId, Properties, PropertyFields,
    Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, Version, Will, AUTH_CONTINUE, AUTH_REAUTHENTICATE,
    AUTH_SUCCESS,
};

use super::{
    aliases::OutboundAliases,
    mapping::{MessageProperties, Publication},
    reason::{self, FilterRefusal, Refusal},
    stored::{StoredInflight, StoredSession},
    topic_acl::{AclClient, TopicAccess, TopicAcl},
    Delivery, Position, Subscription,
};
use crate::{error::EngineError, sasl::Mechanism};

/// Subscriptions one connection may hold: bounds the shard's subscription
/// table and the work of matching each message (every filter of every
/// local subscriber is tried).
pub(crate) const SUBSCRIPTIONS_MAX: usize = 64;

/// QoS 1 messages sent to one subscriber and not yet acknowledged, at most
/// (lowered to the client's Receive Maximum): the rest wait in the delivery
/// queue. A window of W carries W messages per round trip to the
/// subscriber and back; 1,024 keeps up with 100,000 messages a second at a
/// 10 ms round trip (64 did not keep up with 20,000 a second on a loaded
/// machine). Only identifiers are kept per message in flight.
pub(crate) const INFLIGHT_OUT_MAX: usize = 1024;

/// How long a new connection has to send its CONNECT: bounds how long a
/// silent socket holds one of the shard's connection slots.
pub(crate) const CONNECT_WAIT_MAX: Duration = Duration::from_secs(10);

/// The v5 DISCONNECT reason that asks the server to publish the will.
const DISCONNECT_WITH_WILL: u8 = 0x04;

/// QoS 2 publications received and not yet released (PUBREL) per
/// connection: announced to v5 clients as Receive Maximum; one more is a
/// protocol error (v5: DISCONNECT 0x93).
pub(crate) const RELEASES_PENDING_MAX: usize = 64;

/// Longest a change to a persistent session's cursors or deliveries in
/// flight waits to be saved: what a crash can make the session send again.
/// A change of its subscriptions is saved at once.
pub(crate) const SESSION_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The Session Expiry Interval that means "never" (and what a 3.1.1 clean
/// session 0 gets).
pub(crate) const SESSION_NEVER_EXPIRES_S: u32 = u32::MAX;

/// Topic aliases a v5 client may set on this connection (announced in
/// CONNACK as Topic Alias Maximum): bounds the alias table.
pub(crate) const TOPIC_ALIAS_MAX: u16 = 64;

/// The largest Subscription Identifier (MQTT 5.0 §3.8.2.1.2).
const SUBSCRIPTION_ID_MAX: u32 = 268_435_455;

/// Longest client identifier accepted (3.1.1 obliges servers to take 23
/// bytes; longer ones are allowed, within reason).
pub(crate) const CLIENT_ID_BYTES_MAX: usize = 256;

/// What the server announces and enforces for every connection.
#[derive(Debug, Clone)]
pub(crate) struct SessionLimits {
    /// Largest packet accepted (`--mqtt-max-packet-bytes`).
    pub(crate) packet_bytes_max: u32,
    /// The client id given to a v5 client that sent an empty one.
    pub(crate) assigned_client_id: String,
    /// Whether a CONNECT must carry a user name and password that check,
    /// or a v5 SCRAM exchange (`--mqtt-auth password`).
    pub(crate) auth_required: bool,
    /// The per-topic rules of `--mqtt-acl-file` (`None`: no file, no check).
    pub(crate) topic_acl: Option<Arc<TopicAcl>>,
}

/// What a QoS 1 or 2 delivery in flight awaits from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// QoS 1: its PUBACK.
    Acknowledgement,
    /// QoS 2: its PUBREC (then the server sends PUBREL).
    Receipt,
    /// QoS 2: its PUBCOMP, after the server's PUBREL.
    Completion,
}

/// Something that happened to the connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// A packet from the client.
    Packet(Packet),
    /// A message from the log matching this connection's subscriptions.
    Delivery(Delivery),
    /// The append of a PUBLISH ended.
    Appended {
        /// The publication's identifier (QoS 1 and 2), to acknowledge.
        packet_id: Option<PacketId>,
        /// The QoS it was published at (PUBACK for 1, PUBREC for 2).
        qos: QoS,
        /// What the append said (one error may answer every message of
        /// a batch, hence shared).
        outcome: Result<(), Arc<EngineError>>,
    },
    /// Time passed (the keep-alive deadline may have gone by).
    Tick,
    /// A newer connection claimed this one's client id.
    TakenOver,
    /// The subscriber's delivery queue overflowed.
    FellBehind,
    /// The broker is stopping.
    ShuttingDown,
    /// The outcome of an [`Action::Subscribe`]: the shared subscriptions
    /// among its filters that could not be joined (their share's home shard
    /// holds its maximum of shares).
    Subscribed {
        /// The refused `$share/...` filters.
        refused: Vec<String>,
    },
    /// The outcome of an [`Action::ScramStart`]: the server-first message
    /// to send, or `None` when the client-first message is refused.
    ScramChallenge {
        /// The server-first message.
        server_first: Option<Vec<u8>>,
    },
    /// The outcome of an [`Action::ScramFinish`]: the user and the
    /// server-final message, or `None` when the proof does not check.
    ScramFinished {
        /// The authenticated user and the server-final message.
        outcome: Option<(String, Vec<u8>)>,
    },
    /// The outcome of an [`Action::Authenticate`]: the user, or `None` when
    /// the credentials do not check.
    Authenticated {
        /// The authenticated user.
        user: Option<String>,
    },
    /// The client id is this connection's ([`Action::Claim`] done): the
    /// session stored under it, when the client asked to resume one and
    /// one is stored (and not expired).
    Claimed {
        /// The stored session.
        stored: Option<StoredSession>,
    },
    /// The replay of a resumed session ended: every message of a partition
    /// before its offset here that the subscriptions match has been handed
    /// to the session or dropped by a bound; the cursors move up to them.
    Progress(BTreeMap<i32, shardline_log::Offset>),
    /// The message of a delivery in flight of a resumed session, read back
    /// from the log (`None`: gone, e.g. removed by retention).
    Redelivery {
        /// Its identifier.
        packet_id: PacketId,
        /// Its topic and payload.
        message: Option<(Arc<str>, bytes::Bytes)>,
    },
}

/// What the connection task does next, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write this packet.
    Send(Packet),
    /// Check the CONNECT's user name and password; an
    /// [`Event::Authenticated`] follows before anything else.
    Authenticate {
        /// The user name (`None`: none sent).
        user: Option<String>,
        /// The password (`None`: none sent).
        password: Option<bytes::Bytes>,
    },
    /// Start a SCRAM exchange (v5 enhanced authentication, at CONNECT or
    /// a re-authentication) from the client-first message; an
    /// [`Event::ScramChallenge`] follows before anything else.
    ScramStart {
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        mechanism: Mechanism,
        /// The client-first message (the Authentication Data).
        client_first: bytes::Bytes,
    },
    /// Check the client-final message of the exchange under way; an
    /// [`Event::ScramFinished`] follows before anything else.
    ScramFinish {
        /// The client-final message (the Authentication Data).
        client_final: bytes::Bytes,
    },
    /// Take the client id for this connection (closing an older one
    /// elsewhere, and waiting until it has saved its session), remove the
    /// stored session when `clean_start`, else load it; then hand the
    /// session [`Event::Claimed`] before anything else.
    Claim {
        /// The client identifier.
        client_id: String,
        /// Whether the client asked for a new session.
        clean_start: bool,
    },
    /// Append a message to the log; an [`Event::Appended`] follows. Several
    /// may be under way at once; their [`Event::Appended`]s come in the
    /// order of the appends.
    Append {
        /// The message.
        message: Publication,
        /// The identifier to acknowledge (QoS 1 and 2).
        packet_id: Option<PacketId>,
    },
    /// Add (or replace) these filters in the shard's subscription table
    /// (join the shares among them), queue the retained messages matching
    /// `retained_for`, then hand the session [`Event::Subscribed`]; the
    /// SUBACK follows it.
    Subscribe {
        /// The subscriptions made or replaced.
        filters: Vec<Subscription>,
        /// Filters (with granted QoS) whose retained messages are sent now
        /// (v5 Retain Handling 0, or 1 for a new subscription; always in 3.1.1).
        retained_for: Vec<(String, QoS)>,
    },
    /// Remove these filters from the shard's subscription table.
    Unsubscribe {
        /// The filters.
        filters: Vec<String>,
    },
    /// Store this persistent session: its [`Session::snapshot`] once the
    /// actions before this one are carried out.
    Save,
    /// Read back the message at `position` for a delivery in flight of a
    /// resumed session; an [`Event::Redelivery`] follows.
    Redeliver {
        /// Its identifier.
        packet_id: PacketId,
        /// Where it is in the log.
        position: Position,
    },
    /// Read what `filters` match from `cursors` on (QoS 1 and 2 only, up to
    /// the offline bound) and hand it to the session as deliveries, then
    /// [`Event::Progress`] to where the reading stopped.
    Replay {
        /// Where to start, per partition.
        cursors: BTreeMap<i32, shardline_log::Offset>,
        /// The session's own (not shared) subscriptions.
        filters: Vec<Subscription>,
    },
    /// Close the connection (after writing what came before).
    Close {
        /// Why, or `None` for a client's DISCONNECT.
        why: Option<String>,
    },
}

/// Where a v5 enhanced authentication (AUTH) exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enhanced {
    /// None under way.
    Idle,
    /// The server-first message is being made ([`Action::ScramStart`]).
    Challenging,
    /// AUTH 0x18 with server-first was sent; the client's AUTH 0x18 with
    /// client-final is awaited (bounded by [`CONNECT_WAIT_MAX`] at CONNECT,
    /// by the keep alive when re-authenticating).
    AwaitingFinal,
    /// The client-final message is being checked ([`Action::ScramFinish`]).
    Finishing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingConnect,
    Connected,
    Closed,
}

/// One connection's MQTT state.
#[derive(Debug)]
pub(crate) struct Session {
    phase: Phase,
    limits: SessionLimits,
    /// Known once CONNECT arrived.
    version: Option<Version>,
    /// 1.5 × the client's keep alive, `None` for no keep alive.
    keep_alive_grace: Option<Duration>,
    /// When the connection was accepted.
    accepted_at: Instant,
    /// When the last packet arrived.
    last_packet_at: Instant,
    /// The client's identifier (or the one assigned).
    client_id: String,
    /// The largest packet the client accepts.
    client_packet_bytes_max: u32,
    /// QoS 1 deliveries in flight at most (min of the client's Receive
    /// Maximum and [`INFLIGHT_OUT_MAX`]).
    inflight_out_max: usize,
    /// QoS 1 and 2 deliveries sent and not yet complete, with what each
    /// awaits from the client and where its message is in the log.
    inflight_out: BTreeMap<PacketId, (Awaiting, Option<Position>)>,
    /// The next packet identifier to try for a delivery.
    next_packet_id: u16,
    /// Filters and granted QoS, at most [`SUBSCRIPTIONS_MAX`].
    subscriptions: Vec<Subscription>,
    /// The will of CONNECT, until a normal DISCONNECT discards it.
    will: Option<Will>,
    /// QoS 2 publications appended and acknowledged with PUBREC, waiting
    /// for their PUBREL; with `receiving`, at most [`RELEASES_PENDING_MAX`].
    releases_pending: BTreeSet<PacketId>,
    /// QoS 2 publications being appended (no PUBREC yet).
    receiving: BTreeSet<PacketId>,
    /// Seconds the session outlives its connection (0: it ends with it).
    expiry_s: u32,
    /// Per partition of the mapped topic: every matching message before
    /// this offset was handed to the client (kept for a persistent session).
    cursors: BTreeMap<i32, shardline_log::Offset>,
    /// A persistent session's state changed since its last save.
    dirty: bool,
    /// When the next save is due (set while `dirty`).
    save_due: Option<Instant>,
    /// The change is one to save at once (subscriptions).
    save_now: bool,
    /// The client sent an empty id and got one assigned.
    id_assigned: bool,
    /// A resumed session's offline messages are being sent: the cursors
    /// move only with them until [`Event::Progress`] ends the replay.
    replaying: bool,
    /// The client id, shared with every publication's record.
    client_arc: Arc<str>,
    /// v5 topic aliases the client set, at most [`TOPIC_ALIAS_MAX`].
    aliases: BTreeMap<u16, String>,
    /// v5 topic aliases this server sends the client (`aliases.rs`).
    outbound_aliases: OutboundAliases,
    /// A CONNECT whose credentials are being checked: the claim that
    /// follows if they do.
    authenticating: Option<Action>,
    /// The authenticated user (`--mqtt-auth password`, or SCRAM).
    user: Option<String>,
    /// The v5 Authentication Method of CONNECT (SCRAM), which every AUTH
    /// of the connection must name.
    auth_method: Option<String>,
    /// Where an AUTH exchange stands.
    enhanced: Enhanced,
    /// The server-final message, for the CONNACK of a SCRAM login.
    auth_reply: Option<Vec<u8>>,
    /// The SUBACK of a SUBSCRIBE whose [`Action::Subscribe`] is being
    /// carried out, and the filter of each of its codes.
    suback_pending: Option<(SubAck, Vec<String>)>,
}

impl Session {
    pub(crate) fn new(now: Instant, limits: SessionLimits) -> Session {
        assert!(limits.packet_bytes_max > 0, "a packet bound of at least one byte");
        Session {
            phase: Phase::AwaitingConnect,
            limits,
            version: None,
            keep_alive_grace: None,
            accepted_at: now,
            last_packet_at: now,
            client_id: String::new(),
            client_packet_bytes_max: u32::MAX,
            inflight_out_max: INFLIGHT_OUT_MAX,
            inflight_out: BTreeMap::new(),
            next_packet_id: 1,
            subscriptions: Vec::new(),
            will: None,
            releases_pending: BTreeSet::new(),
            receiving: BTreeSet::new(),
            expiry_s: 0,
            cursors: BTreeMap::new(),
            dirty: false,
            save_due: None,
            save_now: false,
            id_assigned: false,
            replaying: false,
            client_arc: Arc::from(""),
            aliases: BTreeMap::new(),
            outbound_aliases: OutboundAliases::default(),
            authenticating: None,
            user: None,
            auth_method: None,
            enhanced: Enhanced::Idle,
            auth_reply: None,
            suback_pending: None,
        }
    }

    /// Whether the session outlives its connection.
    pub(crate) fn is_persistent(&self) -> bool {
        self.expiry_s > 0
    }

    /// The client id (once CONNECT arrived).
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether `--mqtt-acl-file` lets this client `access` `topic` (always,
    /// without the file): the user of its login, if any, and its client id.
    pub(crate) fn topic_allowed(&self, topic: &str, access: TopicAccess) -> bool {
        let Some(acl) = &self.limits.topic_acl else {
            return true;
        };
        let client = AclClient {
            user: self.user.as_deref(),
            client_id: &self.client_id,
        };
        acl.allows(client, topic, access)
    }

    /// Moves each cursor up to `progress` (see [`Event::Progress`]); a
    /// partition without a cursor gets one there. Also for a closed session,
    /// before its last [`Session::snapshot`].
    pub(crate) fn advance_cursors(&mut self, progress: BTreeMap<i32, shardline_log::Offset>) {
        if !self.is_persistent() || self.replaying {
            // While replaying, the feed's progress says nothing of what the
            // replay has still to send.
            return;
        }
        for (partition, offset) in progress {
            let cursor = self.cursors.entry(partition).or_insert(shardline_log::Offset(-1));
            if *cursor < offset {
                *cursor = offset;
                self.dirty = true;
            }
        }
    }

    /// The session to store now (its `saved_at_ms` is 0 and its claim the
    /// default: the task sets both), if it is persistent.
    pub(crate) fn snapshot(&mut self) -> Option<StoredSession> {
        if !self.is_persistent() || self.version.is_none() {
            return None;
        }
        self.dirty = false;
        self.save_due = None;
        let inflight: Vec<StoredInflight> = self
            .inflight_out
            .iter()
            .map(|(&packet_id, &(awaiting, position))| StoredInflight {
                packet_id,
                awaiting,
                position,
            })
            .collect();
        Some(StoredSession {
            version: self.version.unwrap_or(Version::V311),
            expiry_s: self.expiry_s,
            saved_at_ms: 0,
            claim: Default::default(),
            kafka_topic: String::new(),
            subscriptions: self.subscriptions.clone(),
            cursors: self.cursors.clone(),
            inflight,
            releases_pending: self.releases_pending.iter().copied().collect(),
        })
    }

    /// The will to publish now that the connection has ended, if there is
    /// one: every end but a client's normal DISCONNECT publishes it (MQTT
    /// 3.1.1 §3.1.2.5, 5.0 §3.1.2.5; v5 DISCONNECT 0x04 asks for it).
    /// Returns it once, with how long to wait before publishing it (v5
    /// Will Delay Interval, cut to the Session Expiry Interval: the will goes
    /// when the session ends if that is sooner, §3.1.3.2.2).
    pub(crate) fn take_will(&mut self) -> Option<(Will, Duration)> {
        let will = self.will.take()?;
        let delay_s = will.properties.will_delay_s.unwrap_or(0).min(self.expiry_s);
        Some((will, Duration::from_secs(u64::from(delay_s))))
    }

    /// The protocol level, once CONNECT arrived.
    pub(crate) fn version(&self) -> Option<Version> {
        self.version
    }

    /// Whether the connection is closed (no more actions will come).
    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether a delivery could be sent now (a QoS 1 one needs a free slot).
    pub(crate) fn takes_deliveries(&self) -> bool {
        self.phase == Phase::Connected && self.inflight_out.len() < self.inflight_out_max
    }

    /// When the keep-alive grace (or the wait for CONNECT) runs out, if
    /// there is such a time.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        // A save is due only while connected.
        let save_due = self.save_due.filter(|_| self.phase == Phase::Connected);
        match (self.liveness_deadline(), save_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The keep-alive (or CONNECT) deadline alone.
    fn liveness_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingConnect => Some(self.accepted_at + CONNECT_WAIT_MAX),
            Phase::Connected => self.keep_alive_grace.map(|grace| self.last_packet_at + grace),
            Phase::Closed => None,
        }
    }

    /// Handles one event at `now`.
    pub(crate) fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        let mut actions = match event {
            Event::Packet(packet) => {
                self.last_packet_at = now;
                self.on_packet(packet)
            }
            Event::Delivery(delivery) => self.on_delivery(delivery),
            Event::Claimed { stored } => self.on_claimed(stored),
            Event::Authenticated { user } => self.on_authenticated(user),
            Event::ScramChallenge { server_first } => self.on_scram_challenge(server_first),
            Event::ScramFinished { outcome } => self.on_scram_finished(outcome),
            Event::Subscribed { refused } => self.on_subscribed(&refused),
            Event::Progress(progress) => {
                self.replaying = false;
                self.advance_cursors(progress);
                Vec::new()
            }
            Event::Redelivery { packet_id, message } => self.on_redelivery(packet_id, message),
            Event::Appended {
                packet_id,
                qos,
                outcome,
            } => self.on_appended(packet_id, qos, outcome),
            Event::Tick => match self.liveness_deadline() {
                Some(deadline) if now >= deadline && self.phase == Phase::AwaitingConnect => {
                    self.phase = Phase::Closed;
                    vec![Action::Close {
                        why: Some("no CONNECT (or AUTH answer) in time".to_string()),
                    }]
                }
                Some(deadline) if now >= deadline => self.refuse(Refusal::KeepAliveTimeout),
                _ => Vec::new(),
            },
            Event::TakenOver => self.refuse(Refusal::TakenOver),
            Event::FellBehind => self.refuse(Refusal::SlowSubscriber),
            Event::ShuttingDown => self.refuse(Refusal::ServerShuttingDown),
        };
        if self.phase == Phase::Connected && self.is_persistent() && self.dirty {
            if std::mem::take(&mut self.save_now) {
                self.save_due = Some(now);
            }
            let due = *self.save_due.get_or_insert(now + SESSION_SAVE_INTERVAL);
            if now >= due {
                self.save_due = None;
                actions.push(Action::Save);
            }
        }
        assert!(
            self.inflight_out.len() <= self.inflight_out_max,
            "deliveries in flight stay within the bound"
        );
        assert!(self.subscriptions.len() <= SUBSCRIPTIONS_MAX, "subscriptions bounded");
        assert!(
            self.releases_pending.len() + self.receiving.len() <= RELEASES_PENDING_MAX,
            "QoS 2 publications pending bounded"
        );
        assert!(
            self.releases_pending.is_disjoint(&self.receiving),
            "a QoS 2 identifier is either being appended or awaiting release"
        );
        actions
    }

    /// A packet that did not decode: the connection ends.
    pub(crate) fn refuse(&mut self, refusal: Refusal) -> Vec<Action> {
        let why = Some(refusal.to_string());
        let phase = std::mem::replace(&mut self.phase, Phase::Closed);
        let mut actions = Vec::new();
        match (phase, self.version) {
            (Phase::AwaitingConnect, _) => {
                let version = self.version.unwrap_or(Version::V311);
                if let Some(code) = reason::connack_code(&refusal, version) {
                    actions.push(Action::Send(Packet::ConnAck(ConnAck {
                        session_present: false,
                        code,
                        properties: Properties::default(),
                    })));
                }
            }
            (Phase::Connected, Some(Version::V5)) => actions.push(Action::Send(Packet::Disconnect(Disconnect {
                reason: reason::disconnect_code(&refusal),
                properties: Properties::default(),
            }))),
            _ => {}
        }
        actions.push(Action::Close { why });
        actions
    }

    fn on_packet(&mut self, packet: Packet) -> Vec<Action> {
        match (self.phase, packet) {
            (Phase::AwaitingConnect, Packet::Connect(connect)) => self.on_connect(*connect),
            (_, Packet::Auth(auth)) if self.version.is_some() => self.on_auth(auth),
            (Phase::AwaitingConnect, _) => self.refuse(Refusal::Decode(
                shardline_net::mqtt::MqttDecodeError::FirstPacketNotConnect,
            )),
            (_, Packet::Connect(_)) => self.refuse(Refusal::SecondConnect),
            (_, Packet::Publish(publish)) => self.on_publish(publish),
            (_, Packet::Ack(ack)) if matches!(ack.kind, AckKind::PubAck | AckKind::PubRec | AckKind::PubComp) => {
                self.on_delivery_ack(&ack)
            }
            (_, Packet::Ack(ack)) if ack.kind == AckKind::PubRel => {
                let found = self.releases_pending.remove(&ack.packet_id);
                self.dirty |= found;
                vec![Action::Send(Packet::Ack(Ack {
                    kind: AckKind::PubComp,
                    packet_id: ack.packet_id,
                    reason: reason::packet_id_code(found, self.version.unwrap_or(Version::V311)),
                    properties: Properties::default(),
                }))]
            }
            (_, Packet::Subscribe(subscribe)) => self.on_subscribe(subscribe),
            (_, Packet::Unsubscribe(unsubscribe)) => self.on_unsubscribe(unsubscribe),
            (_, Packet::PingReq) => vec![Action::Send(Packet::PingResp)],
            (_, Packet::Disconnect(disconnect)) => {
                if let Some(expiry_s) = disconnect.properties.session_expiry_s {
                    // v5 §3.14.2.2.2: a session that was to end with its
                    // connection cannot be made to outlive it here.
                    if self.expiry_s == 0 && expiry_s > 0 {
                        return self.refuse(Refusal::UnexpectedPacket("session expiry set at DISCONNECT"));
                    }
                    self.expiry_s = expiry_s;
                }
                if disconnect.reason != DISCONNECT_WITH_WILL {
                    self.will = None;
                }
                self.phase = Phase::Closed;
                vec![Action::Close { why: None }]
            }
            (_, other) => self.refuse(Refusal::UnexpectedPacket(other.name())),
        }
    }

    fn on_connect(&mut self, connect: Connect) -> Vec<Action> {
        self.version = Some(connect.version);
        let client_id = if connect.client_id.is_empty() {
            // 3.1.1: an empty id only with a clean session (MQTT-3.1.3-7);
            // 5.0: the server assigns one.
            if connect.version == Version::V311 && !connect.clean_start {
                return self.refuse(Refusal::ClientIdRejected);
            }
            self.limits.assigned_client_id.clone()
        } else {
            connect.client_id.clone()
        };
        if client_id.len() > CLIENT_ID_BYTES_MAX {
            return self.refuse(Refusal::ClientIdRejected);
        }
        self.will = connect.will;
        self.client_arc = Arc::from(client_id.as_str());
        self.client_id = client_id.clone();
        self.keep_alive_grace =
            (connect.keep_alive_s > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive_s) * 1500));
        if let Some(max) = connect.properties.maximum_packet_size {
            self.client_packet_bytes_max = max;
        }
        if connect.version == Version::V5 {
            self.outbound_aliases = OutboundAliases::new(connect.properties.topic_alias_maximum);
        }
        if let Some(receive_maximum) = connect.properties.receive_maximum {
            self.inflight_out_max = usize::from(receive_maximum).clamp(1, INFLIGHT_OUT_MAX);
        }
        self.expiry_s = match connect.version {
            Version::V311 if connect.clean_start => 0,
            Version::V311 => SESSION_NEVER_EXPIRES_S,
            Version::V5 => connect.properties.session_expiry_s.unwrap_or(0),
        };
        self.id_assigned = connect.client_id.is_empty();
        let claim = Action::Claim {
            client_id,
            clean_start: connect.clean_start,
        };
        if let Some(method) = connect.properties.auth_method.clone() {
            // v5 enhanced authentication: SCRAM against the same users as
            // passwords (so only with --mqtt-auth password).
            let mechanism = Mechanism::from_name(&method)
                .filter(|mechanism| *mechanism != Mechanism::Plain && self.limits.auth_required);
            let Some(mechanism) = mechanism else {
                return self.refuse(Refusal::BadAuthenticationMethod);
            };
            self.authenticating = Some(claim);
            self.auth_method = Some(method);
            self.enhanced = Enhanced::Challenging;
            return vec![Action::ScramStart {
                mechanism,
                client_first: connect.properties.auth_data.clone().unwrap_or_default(),
            }];
        }
        if self.limits.auth_required {
            // Still awaiting the CONNECT's outcome: a refusal is a CONNACK.
            self.authenticating = Some(claim);
            return vec![Action::Authenticate {
                user: connect.username,
                password: connect.password,
            }];
        }
        self.phase = Phase::Connected;
        vec![claim]
    }

    /// The CONNECT's credentials were checked.
    fn on_authenticated(&mut self, user: Option<String>) -> Vec<Action> {
        let Some(claim) = self.authenticating.take() else {
            // Not asked for: a bug of the task, not of the client.
            unreachable!("Authenticated follows an Authenticate action");
        };
        assert_eq!(self.phase, Phase::AwaitingConnect, "authenticating before the claim");
        let Some(user) = user else {
            return self.refuse(Refusal::BadCredentials);
        };
        self.user = Some(user);
        self.phase = Phase::Connected;
        vec![claim]
    }

    /// An AUTH from the client: the client-final message of the exchange
    /// under way (0x18), or a re-authentication (0x19) once connected. It
    /// must name the method of CONNECT; anything else is a protocol error
    /// (MQTT 5.0 §4.12).
    fn on_auth(&mut self, auth: Auth) -> Vec<Action> {
        let Some(method) = self.auth_method.clone() else {
            return self.refuse(Refusal::ProtocolError(
                "AUTH without an Authentication Method in CONNECT",
            ));
        };
        if auth.properties.auth_method.as_deref() != Some(method.as_str()) {
            return self.refuse(Refusal::ProtocolError("AUTH with another Authentication Method"));
        }
        let data = auth.properties.auth_data.clone().unwrap_or_default();
        match (auth.reason, self.enhanced, self.phase) {
            (AUTH_CONTINUE, Enhanced::AwaitingFinal, _) => {
                self.enhanced = Enhanced::Finishing;
                vec![Action::ScramFinish { client_final: data }]
            }
            (AUTH_REAUTHENTICATE, Enhanced::Idle, Phase::Connected) => {
                let Some(mechanism) = Mechanism::from_name(&method) else {
                    unreachable!("CONNECT's method was checked to be a SCRAM mechanism");
                };
                self.enhanced = Enhanced::Challenging;
                vec![Action::ScramStart {
                    mechanism,
                    client_first: data,
                }]
            }
            _ => self.refuse(Refusal::ProtocolError("AUTH out of turn")),
        }
    }

    /// The server-first message is made (or the client-first refused).
    fn on_scram_challenge(&mut self, server_first: Option<Vec<u8>>) -> Vec<Action> {
        assert_eq!(self.enhanced, Enhanced::Challenging, "a challenge answers ScramStart");
        let (Some(server_first), Some(method)) = (server_first, self.auth_method.clone()) else {
            return self.refuse(Refusal::BadCredentials);
        };
        self.enhanced = Enhanced::AwaitingFinal;
        vec![Action::Send(Packet::Auth(Auth {
            reason: AUTH_CONTINUE,
            properties: PropertyFields {
                auth_method: Some(method),
                auth_data: Some(bytes::Bytes::from(server_first)),
                ..PropertyFields::default()
            }
            .into(),
        }))]
    }

    /// The client-final message was checked: at CONNECT, the claim (the
    /// CONNACK carries server-final); re-authenticating, AUTH 0x00 with
    /// server-final, if the user is the same.
    fn on_scram_finished(&mut self, outcome: Option<(String, Vec<u8>)>) -> Vec<Action> {
        assert_eq!(self.enhanced, Enhanced::Finishing, "ScramFinished answers ScramFinish");
        let Some((user, server_final)) = outcome else {
            return self.refuse(Refusal::BadCredentials);
        };
        self.enhanced = Enhanced::Idle;
        if self.phase == Phase::AwaitingConnect {
            let Some(claim) = self.authenticating.take() else {
                unreachable!("a SCRAM login at CONNECT holds its claim");
            };
            self.user = Some(user);
            self.auth_reply = Some(server_final);
            self.phase = Phase::Connected;
            return vec![claim];
        }
        if self.user.as_deref() != Some(user.as_str()) {
            // A re-authentication proves the same user, not another.
            return self.refuse(Refusal::BadCredentials);
        }
        vec![Action::Send(Packet::Auth(Auth {
            reason: AUTH_SUCCESS,
            properties: PropertyFields {
                auth_method: self.auth_method.clone(),
                auth_data: Some(bytes::Bytes::from(server_final)),
                ..PropertyFields::default()
            }
            .into(),
        }))]
    }

    /// The client id is this connection's: the CONNACK, and a stored
    /// session's subscriptions, deliveries in flight and offline messages.
    fn on_claimed(&mut self, stored: Option<StoredSession>) -> Vec<Action> {
        let version = self.version.unwrap_or(Version::V311);
        let client_id = self.client_id.clone();
        let auth_data = self.auth_reply.take().map(bytes::Bytes::from);
        let properties = match version {
            Version::V311 => Properties::default(),
            Version::V5 => PropertyFields {
                // A SCRAM login: its method and server-final.
                auth_method: auth_data.as_ref().and(self.auth_method.clone()),
                auth_data,
                assigned_client_id: self.id_assigned.then_some(client_id),
                maximum_packet_size: Some(self.limits.packet_bytes_max),
                receive_maximum: Some(u16::try_from(RELEASES_PENDING_MAX).unwrap_or(u16::MAX)),
                topic_alias_maximum: Some(TOPIC_ALIAS_MAX),
                wildcard_available: Some(1),
                subscription_ids_available: Some(1),
                shared_available: Some(1),
                ..PropertyFields::default()
            }
            .into(),
        };
        let mut actions = vec![Action::Send(Packet::ConnAck(ConnAck {
            session_present: stored.is_some(),
            code: 0,
            properties,
        }))];
        let Some(stored) = stored else {
            return actions;
        };
        assert!(
            self.subscriptions.is_empty() && self.inflight_out.is_empty(),
            "a session is resumed once, before anything else"
        );
        self.subscriptions = stored.subscriptions;
        self.cursors = stored.cursors;
        self.releases_pending = stored.releases_pending.into_iter().collect();
        if !self.subscriptions.is_empty() {
            actions.push(Action::Subscribe {
                filters: self.subscriptions.clone(),
                retained_for: Vec::new(),
            });
        }
        // Deliveries in flight go again, in identifier order, as far as the
        // client's window takes them (the rest are dropped: their cursors are
        // past them). Retained and shared ones are not sent again.
        for inflight in stored.inflight {
            if self.inflight_out.len() >= self.inflight_out_max {
                break;
            }
            match (inflight.awaiting, inflight.position) {
                (Awaiting::Completion, position) => {
                    self.inflight_out
                        .insert(inflight.packet_id, (Awaiting::Completion, position));
                    actions.push(Action::Send(Packet::Ack(Ack {
                        kind: AckKind::PubRel,
                        packet_id: inflight.packet_id,
                        reason: 0,
                        properties: Properties::default(),
                    })));
                }
                (awaiting, Some(position)) => {
                    self.inflight_out.insert(inflight.packet_id, (awaiting, Some(position)));
                    actions.push(Action::Redeliver {
                        packet_id: inflight.packet_id,
                        position,
                    });
                }
                (_, None) => {}
            }
        }
        let filters: Vec<Subscription> = self
            .subscriptions
            .iter()
            .filter(|s| s.shared().is_none())
            .cloned()
            .collect();
        if !filters.is_empty() {
            self.replaying = true;
            actions.push(Action::Replay {
                cursors: self.cursors.clone(),
                filters,
            });
        }
        self.dirty = true;
        actions
    }

    /// A delivery in flight of a resumed session, read back: sent again with
    /// DUP set and its old identifier.
    fn on_redelivery(&mut self, packet_id: PacketId, message: Option<(Arc<str>, bytes::Bytes)>) -> Vec<Action> {
        let Some(&(awaiting, _)) = self.inflight_out.get(&packet_id) else {
            return Vec::new();
        };
        let qos = match awaiting {
            Awaiting::Acknowledgement => QoS::AtLeastOnce,
            Awaiting::Receipt => QoS::ExactlyOnce,
            // PUBREL was sent again instead.
            Awaiting::Completion => return Vec::new(),
        };
        let Some((topic, payload)) = message.filter(|(topic, _)| self.topic_allowed(topic, TopicAccess::Read)) else {
            // Gone from the log, or no longer readable under --mqtt-acl-file.
            self.inflight_out.remove(&packet_id);
            self.dirty = true;
            return Vec::new();
        };
        vec![Action::Send(Packet::Publish(Publish {
            dup: true,
            qos,
            retain: false,
            topic: topic.to_string(),
            packet_id: Some(packet_id),
            properties: Properties::default(),
            payload,
        }))]
    }

    fn on_publish(&mut self, mut publish: Publish) -> Vec<Action> {
        if let Some(alias) = publish.properties.topic_alias {
            // v5 §3.3.2.3.4: a topic with an alias sets it, an empty topic uses it.
            if alias == 0 || alias > TOPIC_ALIAS_MAX {
                return self.refuse(Refusal::TopicAliasInvalid);
            }
            if publish.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(topic) => publish.topic.clone_from(topic),
                    None => return self.refuse(Refusal::TopicAliasInvalid),
                }
            } else {
                self.aliases.insert(alias, publish.topic.clone());
            }
        }
        assert!(
            !publish.topic.is_empty(),
            "the codec gives an empty topic only with an alias"
        );
        assert!(
            self.aliases.len() <= usize::from(TOPIC_ALIAS_MAX),
            "topic aliases bounded"
        );
        if !publish.properties.subscription_ids.is_empty() {
            return self.refuse(Refusal::UnexpectedPacket("subscription identifier in PUBLISH"));
        }
        assert_eq!(
            publish.packet_id.is_some(),
            publish.qos != QoS::AtMostOnce,
            "the codec gives QoS 1 and 2 an identifier, QoS 0 none"
        );
        if !self.topic_allowed(&publish.topic, TopicAccess::Write) {
            return self.refuse_publish(publish.qos, publish.packet_id);
        }
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, publish.packet_id) {
            if self.releases_pending.contains(&id) {
                // Sent again before its PUBREL: stored once, acknowledged again.
                return vec![Action::Send(Packet::Ack(Ack {
                    kind: AckKind::PubRec,
                    packet_id: id,
                    reason: 0,
                    properties: Properties::default(),
                }))];
            }
            if self.receiving.contains(&id) {
                // Sent again while its append is under way: that append's
                // PUBREC answers both.
                return Vec::new();
            }
            if self.releases_pending.len() + self.receiving.len() >= RELEASES_PENDING_MAX {
                return self.refuse(Refusal::ReceiveMaximumExceeded);
            }
            self.receiving.insert(id);
        }
        vec![Action::Append {
            message: Publication {
                properties: MessageProperties::of(&publish.properties),
                topic: publish.topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
                client_id: Arc::clone(&self.client_arc),
            },
            packet_id: publish.packet_id,
        }]
    }

    /// A PUBLISH `--mqtt-acl-file` does not let the client make: not
    /// stored. QoS 0: dropped, nobody told. v5: PUBACK (PUBREC) 0x87.
    /// 3.1.1 has no negative acknowledgement: acknowledged and dropped, as
    /// mosquitto does, rather than closed as for a failed append (a client
    /// that republishes after reconnecting would be refused again, forever).
    fn refuse_publish(&mut self, qos: QoS, packet_id: Option<PacketId>) -> Vec<Action> {
        let Some(packet_id) = packet_id else {
            return Vec::new();
        };
        let version = self.version.unwrap_or(Version::V311);
        let kind = match qos {
            QoS::ExactlyOnce => AckKind::PubRec,
            QoS::AtMostOnce | QoS::AtLeastOnce => AckKind::PubAck,
        };
        if kind == AckKind::PubRec && version == Version::V311 {
            // Its PUBREL is answered like any other (PUBCOMP).
            if self.releases_pending.len() + self.receiving.len() >= RELEASES_PENDING_MAX {
                return self.refuse(Refusal::ReceiveMaximumExceeded);
            }
            self.releases_pending.insert(packet_id);
            self.dirty = true;
        }
        vec![Action::Send(Packet::Ack(Ack {
            kind,
            packet_id,
            reason: reason::topic_refused_ack_code(version),
            properties: Properties::default(),
        }))]
    }

    fn on_appended(
        &mut self,
        packet_id: Option<PacketId>,
        qos: QoS,
        outcome: Result<(), Arc<EngineError>>,
    ) -> Vec<Action> {
        let Some(packet_id) = packet_id else {
            // QoS 0: nobody is told (the connection task counts failures).
            return Vec::new();
        };
        let kind = match qos {
            QoS::ExactlyOnce => AckKind::PubRec,
            QoS::AtMostOnce | QoS::AtLeastOnce => AckKind::PubAck,
        };
        if kind == AckKind::PubRec {
            let was_receiving = self.receiving.remove(&packet_id);
            assert!(was_receiving, "a QoS 2 append ends once, after it began");
            if outcome.is_ok() {
                self.releases_pending.insert(packet_id);
                self.dirty = true;
            }
        }
        match (self.version, outcome) {
            (Some(Version::V5), outcome) => vec![Action::Send(Packet::Ack(Ack {
                kind,
                packet_id,
                reason: reason::puback_code(&outcome),
                properties: Properties::default(),
            }))],
            (_, Ok(())) => vec![Action::Send(Packet::Ack(Ack {
                kind,
                packet_id,
                reason: 0,
                properties: Properties::default(),
            }))],
            // 3.1.1 has no negative PUBACK or PUBREC: the client republishes after
            // reconnecting.
            (_, Err(error)) => self.refuse(Refusal::Append(error)),
        }
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) -> Vec<Action> {
        let version = self.version.unwrap_or(Version::V311);
        let subscription_id = match subscribe.properties.subscription_ids[..] {
            [] => None,
            [id] if (1..=SUBSCRIPTION_ID_MAX).contains(&id) => Some(id),
            [_] => return self.refuse(Refusal::ProtocolError("subscription identifier 0")),
            _ => return self.refuse(Refusal::ProtocolError("two subscription identifiers in SUBSCRIBE")),
        };
        if subscribe
            .filters
            .iter()
            .any(|(filter, options)| options.no_local && filter.starts_with("$share/"))
        {
            // v5 §3.8.3.1.
            return self.refuse(Refusal::ProtocolError("No Local on a shared subscription"));
        }
        let mut granted = Vec::new();
        let mut retained_for = Vec::new();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let filters_in_order: Vec<String> = subscribe.filters.iter().map(|(filter, _)| filter.clone()).collect();
        for (filter, options) in subscribe.filters {
            let subscription = Subscription {
                filter,
                qos: options.qos,
                // 3.1.1 has no such option: its deliveries never carry RETAIN.
                retain_as_published: version == Version::V5 && options.retain_as_published,
                no_local: version == Version::V5 && options.no_local,
                id: subscription_id,
            };
            let shared = subscription.filter.starts_with("$share/");
            let valid = if shared {
                subscription.shared().is_some()
            } else {
                valid_topic_filter(&subscription.filter)
            };
            let outcome = if !valid {
                Err(FilterRefusal::Invalid)
            } else if let Some(existing) = self.subscriptions.iter_mut().find(|s| s.filter == subscription.filter) {
                *existing = subscription.clone();
                Ok(false)
            } else if self.subscriptions.len() < SUBSCRIPTIONS_MAX {
                self.subscriptions.push(subscription.clone());
                Ok(true)
            } else {
                Err(FilterRefusal::Quota)
            };
            if let Ok(new) = outcome {
                // v5 §3.3.1.3 Retain Handling: 0 always, 1 a new subscription only, 2 never.
                // A share gets no retained messages (v5 §4.8.2).
                let send_retained = !shared
                    && (version == Version::V311
                        || options.retain_handling == 0
                        || (options.retain_handling == 1 && new));
                if send_retained {
                    retained_for.push((subscription.filter.clone(), subscription.qos));
                }
                granted.push(subscription.clone());
            }
            codes.push(reason::suback_code(outcome.map(|_| subscription.qos), version));
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::default(),
            codes,
        };
        if granted.is_empty() {
            return vec![Action::Send(Packet::SubAck(suback))];
        }
        // The SUBACK waits for the subscriptions to be made (Subscribed).
        assert!(self.suback_pending.is_none(), "one SUBSCRIBE is carried out at a time");
        self.suback_pending = Some((suback, filters_in_order));
        vec![Action::Subscribe {
            filters: granted,
            retained_for,
        }]
    }

    /// The subscriptions of an [`Action::Subscribe`] are made, but for the
    /// shares in `refused`: those leave the session, their SUBACK code says
    /// so (v5 0x97 quota exceeded, 3.1.1 0x80), and the SUBACK goes out.
    fn on_subscribed(&mut self, refused: &[String]) -> Vec<Action> {
        self.subscriptions.retain(|s| !refused.contains(&s.filter));
        self.dirty = true;
        self.save_now = true;
        // Restored subscriptions of a resumed session have no SUBACK.
        let Some((mut suback, filters)) = self.suback_pending.take() else {
            return Vec::new();
        };
        assert_eq!(suback.codes.len(), filters.len(), "one code per filter");
        let version = self.version.unwrap_or(Version::V311);
        for (code, filter) in suback.codes.iter_mut().zip(&filters) {
            if refused.contains(filter) {
                *code = reason::suback_code(Err(FilterRefusal::Quota), version);
            }
        }
        vec![Action::Send(Packet::SubAck(suback))]
    }

    /// A SUBSCRIBE the connection's principal may not make (no Read on the
    /// mapped Kafka topic): every filter refused, nothing subscribed.
    pub(crate) fn deny_subscribe(&mut self, now: Instant, subscribe: &Subscribe) -> Vec<Action> {
        if self.phase != Phase::Connected {
            return Vec::new();
        }
        // A packet all the same: the keep alive counts it.
        self.last_packet_at = now;
        let version = self.version.unwrap_or(Version::V311);
        let codes = subscribe
            .filters
            .iter()
            .map(|_| reason::suback_code(Err(FilterRefusal::NotAuthorized), version))
            .collect();
        vec![Action::Send(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            properties: Properties::default(),
            codes,
        }))]
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Vec<Action> {
        let mut codes = Vec::new();
        for filter in &unsubscribe.filters {
            let before = self.subscriptions.len();
            self.subscriptions.retain(|s| s.filter != *filter);
            let removed = self.subscriptions.len() < before;
            self.dirty |= removed;
            self.save_now |= removed;
            codes.push(reason::unsuback_code(removed));
        }
        if self.version != Some(Version::V5) {
            codes.clear();
        }
        vec![
            Action::Unsubscribe {
                filters: unsubscribe.filters,
            },
            Action::Send(Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                properties: Properties::default(),
                codes,
            })),
        ]
    }

    /// The client's PUBACK (QoS 1), PUBREC or PUBCOMP (QoS 2) for a
    /// delivery: QoS 2 goes PUBLISH → PUBREC → PUBREL → PUBCOMP (MQTT
    /// 3.1.1 §4.3.3, 5.0 §4.3.3). An identifier not in flight, or an ack
    /// of the wrong kind for it, is ignored (a late duplicate), except that
    /// a PUBREC is always answered with a PUBREL (v5: 0x92 when unknown).
    fn on_delivery_ack(&mut self, ack: &Ack) -> Vec<Action> {
        let awaiting = self.inflight_out.get(&ack.packet_id).map(|&(awaiting, _)| awaiting);
        let pubrel = |reason| {
            vec![Action::Send(Packet::Ack(Ack {
                kind: AckKind::PubRel,
                packet_id: ack.packet_id,
                reason,
                properties: Properties::default(),
            }))]
        };
        match (ack.kind, awaiting) {
            (AckKind::PubAck, Some(Awaiting::Acknowledgement)) | (AckKind::PubComp, Some(Awaiting::Completion)) => {
                self.inflight_out.remove(&ack.packet_id);
                self.dirty = true;
                Vec::new()
            }
            // v5: a PUBREC with a failure code ends the exchange there.
            (AckKind::PubRec, Some(Awaiting::Receipt)) if ack.reason >= 0x80 => {
                self.inflight_out.remove(&ack.packet_id);
                self.dirty = true;
                Vec::new()
            }
            (AckKind::PubRec, Some(Awaiting::Receipt | Awaiting::Completion)) => {
                if let Some(entry) = self.inflight_out.get_mut(&ack.packet_id) {
                    entry.0 = Awaiting::Completion;
                }
                self.dirty = true;
                pubrel(reason::packet_id_code(true, self.version.unwrap_or(Version::V311)))
            }
            (AckKind::PubRec, _) => pubrel(reason::packet_id_code(false, self.version.unwrap_or(Version::V311))),
            _ => Vec::new(),
        }
    }

    fn on_delivery(&mut self, delivery: Delivery) -> Vec<Action> {
        if self.phase != Phase::Connected {
            return Vec::new();
        }
        if let (Some(position), true) = (delivery.position, self.is_persistent()) {
            let cursor = self.cursors.entry(position.partition).or_insert(position.offset);
            if position.offset < *cursor {
                // Already handed over (a replay overlapping the live feed).
                return Vec::new();
            }
            *cursor = shardline_log::Offset(position.offset.0.saturating_add(1));
            self.dirty = true;
        }
        // Matched, but not readable under --mqtt-acl-file: skipped (its
        // cursor moved past it all the same).
        if !self.topic_allowed(&delivery.topic, TopicAccess::Read) {
            return Vec::new();
        }
        let packet_id = match delivery.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => {
                if self.inflight_out.len() >= self.inflight_out_max {
                    // The task only hands deliveries over when one fits.
                    return self.refuse(Refusal::SlowSubscriber);
                }
                let id = self.free_packet_id();
                let awaiting = if delivery.qos == QoS::ExactlyOnce {
                    Awaiting::Receipt
                } else {
                    Awaiting::Acknowledgement
                };
                self.inflight_out.insert(id, (awaiting, delivery.position));
                Some(id)
            }
        };
        let mut properties = Properties::default();
        if self.version == Some(Version::V5) {
            if let Some(props) = &delivery.properties {
                props.fill(&mut properties, delivery.expiry_left_s);
            }
            properties.subscription_ids = delivery.subscription_ids;
        }
        let publish = Publish {
            dup: false,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: delivery.topic.to_string(),
            packet_id,
            properties,
            payload: delivery.payload,
        };
        // A packet larger than the client accepts is dropped (v5 §3.1.2.11.4).
        let size = publish.topic.len() + publish.payload.len() + 16;
        if u32::try_from(size).map_or(true, |size| size > self.client_packet_bytes_max) {
            if let Some(id) = packet_id {
                self.inflight_out.remove(&id);
            }
            return Vec::new();
        }
        // Aliased only once it is sure to be sent: the client learns an
        // alias from the packet that names its topic.
        let mut publish = publish;
        let (topic, alias) = self.outbound_aliases.assign(&publish.topic);
        publish.topic = topic;
        publish.properties.topic_alias = alias;
        vec![Action::Send(Packet::Publish(publish))]
    }

    /// The next identifier not in flight (one exists: fewer than 65,535
    /// are ever in flight).
    fn free_packet_id(&mut self) -> PacketId {
        assert!(
            self.inflight_out.len() < usize::from(u16::MAX),
            "a free packet id exists"
        );
        loop {
            let candidate = PacketId::new(self.next_packet_id);
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = candidate.filter(|id| !self.inflight_out.contains_key(id)) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
