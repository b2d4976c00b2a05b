//! # MQTT on the same shards and the same log
//!
//! MQTT 3.1.1 and 5.0 clients connect to `--mqtt-listen`; every shard
//! accepts on that one socket, so the kernel spreads MQTT connections over
//! the shards. A message a device publishes is appended, as a Kafka record,
//! to the partition of the mapped Kafka topic that holds its MQTT topic
//! (`mapping.rs`), on the shard that owns that partition, exactly like a
//! Kafka produce with acks=all; subscribers are fed from the log, so a
//! record a Kafka client writes there reaches MQTT subscribers too.
//! docs/mqtt.md has the whole picture; this is who owns what.
//!
//! ## Where the state lives
//! - **A connection** (`connection.rs`) is a task on the shard that
//!   accepted it: its socket, its [`session::Session`] (the protocol state
//!   machine, no I/O inside) and its bounded delivery queue.
//! - **[`MqttShard`]**, one per shard inside `Shard`, `!Send`, no locks:
//!   - the connections of this shard (to deliver to them and to close them
//!     on takeover), at most `connections_max`;
//!   - the **client-id owners** homed on this shard: client id C lives on
//!     shard `crc32c(C) mod shards`. A CONNECT claims C there by message
//!     (`Shard::invoke_on`); the home shard answers with the connection
//!     that held C before, which is then told, on its own shard and by
//!     message, that it was taken over. So client ids are unique across
//!     shards without any shared table;
//!   - the **feed** (`feed.rs`): while any connection of this shard holds
//!     a subscription, one tail task per partition of the mapped topic reads
//!     new records from the partition's owner (by message, like a Fetch,
//!     parked on the owner's fetch watch when there is nothing new) and
//!     hands each message to the matching local subscribers. Each shard
//!     reads each partition once, however many subscribers it has.
//!   - the **shares** homed on this shard (`shared.rs`): a shared
//!     subscription `$share/N/F` lives on shard `crc32c("N/F") mod shards`,
//!     whose feed picks one member per message and hands it to the
//!     member's shard by message. In a cluster, the nodes with members of
//!     a share split the partitions between them, so the share gets each
//!     message once (`membership.rs` keeps which nodes have members);
//!   - the parts of the three compacted tables (`compacted.rs`) homed on
//!     this shard (partition p's on shard p mod shards, whoever leads p):
//!     the nodes with members of each share (`membership.rs`), retained messages (`retained.rs`) and
//!     persistent sessions (`sessions.rs`; a session's bytes are drawn in
//!     `stored.rs`). A resumed session reads the messages it missed from
//!     the log, from its cursors (`connection.rs`): nothing is copied per
//!     subscriber.
//! - **Partitions** stay where the metadata image placed them; MQTT reaches
//!   them only through `Shard::invoke_on`, never through a lock, and those
//!   another node leads as a Kafka client of that node (`crate::remote`: one
//!   pool of idle inter-broker connections per shard).

mod aliases;
mod compacted;
mod connection;
mod feed;
mod listener;
mod mapping;
mod membership;
mod publish;
mod reason;
pub(crate) mod retained;
mod session;
mod sessions;
mod shared;
pub(crate) mod stored;
mod topic_acl;

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, HashMap},
    rc::Rc,
    time::Duration,
};

use bytes::Bytes;
use glommio::{channels::local_channel::LocalSender, sync::Semaphore, GlommioError, ResourceType};
use shardline_log::Offset;
use shardline_net::mqtt::{filter_matches, shared_filter, QoS};

use self::{
    mapping::{Message, MessageProperties},
    stored::Claim,
};
use crate::{error::EngineError, partition::Partition, shard::Shard};

pub(crate) use listener::{accept_loop, bind, describe, MqttSocket};
pub(crate) use membership::upkeep as share_upkeep;
#[cfg(feature = "fuzzing")]
pub(crate) use session::Awaiting;
pub(crate) use topic_acl::{TopicAcl, ACL_FILE_BYTES_MAX};

/// Messages waiting in one subscriber's delivery queue, at most. The feed
/// waits for room (up to [`DELIVERY_STALL_MAX`]) when it is full.
pub(crate) const DELIVERY_QUEUE_MAX: usize = 1024;

/// Longest the feed waits for room in a full subscriber's delivery queue;
/// a subscriber that stays full that long is disconnected (v5: reason
/// 0x97) rather than hold up the shard's other subscribers or let the
/// shard buffer without bound.
pub(crate) const DELIVERY_STALL_MAX: Duration = Duration::from_secs(2);

/// Retained messages one shard keeps (for the topics of the partitions it
/// owns), at most: a retained PUBLISH for a new topic beyond it is stored
/// in the log but not retained (and logged).
pub(crate) const RETAINED_TOPICS_MAX: usize = 10_000;

/// Control messages (takeover, overflow, shutdown) queued for one
/// connection; one is enough to close it, the rest are dropped.
const CONTROL_QUEUE_MAX: usize = 4;

/// Longest a connection taking over a client id waits for the connection
/// that held it to end (and save its session).
const TAKEOVER_WAIT_MAX: Duration = Duration::from_secs(5);

/// Where a message is in the log: a partition of the mapped topic and an
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) partition: i32,
    pub(crate) offset: Offset,
}

/// Per partition, the deliveries the feed queued (or is waiting to queue)
/// for one connection that the connection has not taken yet. Shared by the
/// shard's table and the connection's task (one thread).
pub(crate) type Unsent = RefCell<BTreeMap<i32, u32>>;

/// A message on its way to one subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The MQTT topic.
    pub(crate) topic: Rc<str>,
    /// The payload (a slice of the log's mapped segment).
    pub(crate) payload: Bytes,
    /// The QoS to deliver at (min of published and granted).
    pub(crate) qos: QoS,
    /// Its RETAIN flag: set on a retained message sent for a new
    /// subscription, and on a live one published retained to a v5
    /// subscription with Retain As Published.
    pub(crate) retain: bool,
    /// Where it is in the log, for a delivery to the connection's own
    /// subscriptions (`None` for retained and shared deliveries).
    pub(crate) position: Option<Position>,
    /// Its v5 properties (sent to v5 subscribers).
    pub(crate) properties: Option<Rc<MessageProperties>>,
    /// Seconds left of its Message Expiry Interval, if it has one.
    pub(crate) expiry_left_s: Option<u32>,
    /// The identifiers of the subscriptions it matched (v5).
    pub(crate) subscription_ids: Vec<u32>,
}

impl Delivery {
    /// A delivery of `payload` on `topic` with no position and no v5
    /// properties (retained messages).
    pub(crate) fn plain(topic: Rc<str>, payload: Bytes, qos: QoS, retain: bool) -> Delivery {
        Delivery {
            topic,
            payload,
            qos,
            retain,
            position: None,
            properties: None,
            expiry_left_s: None,
            subscription_ids: Vec::new(),
        }
    }
}

/// One subscription of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The topic filter.
    pub(crate) filter: String,
    /// The granted QoS (deliveries go at the lower of it and the
    /// published QoS).
    pub(crate) qos: QoS,
    /// v5 Retain As Published: live deliveries keep the published RETAIN
    /// flag (otherwise it is cleared).
    pub(crate) retain_as_published: bool,
    /// v5 No Local: not the connection's own publications.
    pub(crate) no_local: bool,
    /// v5 Subscription Identifier, sent with what it matches.
    pub(crate) id: Option<u32>,
}

/// What a connection is told from outside its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Its client id was claimed by a newer connection.
    TakenOver,
    /// Its delivery queue overflowed.
    FellBehind,
    /// The broker is stopping.
    ShuttingDown,
}

/// A connection of this shard, as the shard sees it.
struct Local {
    /// Its subscriptions (the session holds the same list).
    filters: Vec<Subscription>,
    deliveries: Rc<LocalSender<Delivery>>,
    control: LocalSender<Control>,
    /// Deliveries with a position not yet taken by the connection.
    unsent: Rc<Unsent>,
    /// Closed when the connection has ended (and saved its session).
    ended: Rc<Semaphore>,
    /// Its client id, once claimed (for No Local).
    client_id: Option<Bytes>,
    /// Whether its session is persistent: only then are `unsent`
    /// deliveries counted (its cursors need them).
    persistent: bool,
    /// Its claim on its session across nodes, once numbered.
    claim: Option<Claim>,
}

impl Subscription {
    /// The share name and filter of a shared subscription (`$share/...`).
    pub(crate) fn shared(&self) -> Option<(&str, &str)> {
        shared_filter(&self.filter)
    }
}

impl Local {
    /// Queues `delivery`, or adds it to `stalled` when the queue is full
    /// (dropped when the connection is closing).
    fn offer(&self, connection: u64, delivery: Delivery, stalled: &mut Vec<Stalled>) {
        if let (Some(position), true) = (delivery.position, self.persistent) {
            *self.unsent.borrow_mut().entry(position.partition).or_insert(0) += 1;
        }
        if let Err(GlommioError::WouldBlock(ResourceType::Channel(delivery))) = self.deliveries.try_send(delivery) {
            stalled.push(Stalled {
                deliveries: Rc::clone(&self.deliveries),
                delivery,
                connection,
            });
        }
    }
}

/// A delivery that found its subscriber's queue full: the feed waits for
/// room before it goes on (so the subscriber's order holds).
pub(crate) struct Stalled {
    deliveries: Rc<LocalSender<Delivery>>,
    delivery: Delivery,
    connection: u64,
}

/// Which connection, on which shard, holds a client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The shard the connection lives on.
    pub(crate) shard: usize,
    /// The connection's id on that shard.
    pub(crate) connection: u64,
}

/// What one shard counts about its MQTT work (read by a metrics scrape on
/// the shard's own thread: plain cells, no atomics).
#[derive(Debug, Default)]
pub(crate) struct MqttCounts {
    /// Connections taken and served.
    pub(crate) accepted: Cell<u64>,
    /// Connections closed on arrival: the shard served its share of
    /// `--max-connections`.
    pub(crate) refused: Cell<u64>,
    /// PUBLISHes (and wills) stored in the log.
    pub(crate) published: Cell<u64>,
    /// Append rounds (each one batch and durable wait per partition).
    pub(crate) append_rounds: Cell<u64>,
    /// PUBLISHes written to subscribers.
    pub(crate) delivered: Cell<u64>,
    /// Subscribers disconnected because their delivery queue stayed full.
    pub(crate) subscribers_dropped: Cell<u64>,
    /// Persistent sessions resumed.
    pub(crate) sessions_resumed: Cell<u64>,
    /// Persistent sessions saved (each an append to the sessions topic).
    pub(crate) sessions_saved: Cell<u64>,
    /// Offline messages not sent to a resumed session (beyond its bound).
    pub(crate) offline_dropped: Cell<u64>,
}

impl MqttCounts {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &Cell<u64>, n: u64) {
        counter.set(counter.get().saturating_add(n));
    }
}

/// One shard's MQTT state (see the module essay).
pub(crate) struct MqttShard {
    connections: RefCell<HashMap<u64, Local>>,
    next_connection: Cell<u64>,
    /// Connections this shard serves at most (its share of
    /// `--max-connections`).
    connections_max: usize,
    /// Client ids homed here and who holds each; at most one entry per MQTT
    /// connection of the whole broker.
    holders: RefCell<HashMap<String, Holder>>,
    /// The subscriber feed.
    pub(crate) feed: feed::Feed,
    /// Retained messages of topics whose partition of the retained topic
    /// this shard owns, by topic; at most [`RETAINED_TOPICS_MAX`]
    /// (`retained.rs`).
    retained: compacted::Table<retained::Retained>,
    /// Persistent sessions whose partition of the sessions topic this shard
    /// owns, by client id; at most [`sessions::SESSIONS_STORED_MAX`]
    /// (`sessions.rs`).
    sessions: compacted::Table<stored::StoredSession>,
    /// The shared subscriptions homed on this shard (`shared.rs`).
    shares: RefCell<shared::Shares>,
    /// Which nodes have members of the shares whose partition of the
    /// shares topic this shard owns; at most
    /// [`membership::SHARE_RECORDS_MAX`] (`membership.rs`).
    share_records: compacted::Table<membership::ShareRecord>,
    /// One store of this node's share records at a time (`membership::settle`).
    share_settling: Semaphore,
    /// Counters for metrics.
    pub(crate) counts: MqttCounts,
}

/// Where and when the feed hands out a message: the feed's shard (`me`),
/// its node, the message's partition and the time (unix ms).
#[derive(Debug, Clone, Copy)]
struct FedAt {
    me: usize,
    node_id: i32,
    partition: i32,
    now_ms: i64,
}

/// A delivery the feed picked for a shared subscription's member on
/// another shard, in a form that crosses threads.
pub(crate) struct Remote {
    /// The member's shard.
    shard: usize,
    /// The member's connection there.
    connection: u64,
    topic: String,
    payload: Bytes,
    qos: QoS,
    properties: Option<Box<MessageProperties>>,
    expiry_left_s: Option<u32>,
    subscription_id: Option<u32>,
}

impl MqttShard {
    pub(crate) fn new(connections_max: usize) -> MqttShard {
        assert!(connections_max >= 1, "a shard takes at least one MQTT connection");
        MqttShard {
            connections: RefCell::new(HashMap::new()),
            next_connection: Cell::new(0),
            connections_max,
            holders: RefCell::new(HashMap::new()),
            feed: feed::Feed::default(),
            retained: compacted::Table::default(),
            sessions: compacted::Table::default(),
            shares: RefCell::new(shared::Shares::default()),
            share_records: compacted::Table::default(),
            share_settling: Semaphore::new(1),
            counts: MqttCounts::default(),
        }
    }

    /// Queues `delivery` for one connection of this shard (closing it when
    /// its queue is full).
    fn deliver_to(&self, connection: u64, delivery: Delivery) {
        if let Some(local) = self.connections.borrow().get(&connection) {
            if local.deliveries.try_send(delivery).is_err() {
                MqttCounts::add(&self.counts.subscribers_dropped, 1);
                let _ = local.control.try_send(Control::FellBehind);
            }
        }
    }

    /// Registers a new connection: its id and its count of unsent
    /// deliveries; `None` when the shard serves its maximum.
    fn open(&self, deliveries: LocalSender<Delivery>, control: LocalSender<Control>) -> Option<(u64, Rc<Unsent>)> {
        let mut connections = self.connections.borrow_mut();
        if connections.len() >= self.connections_max {
            MqttCounts::add(&self.counts.refused, 1);
            return None;
        }
        MqttCounts::add(&self.counts.accepted, 1);
        let id = self.next_connection.get();
        self.next_connection.set(id.wrapping_add(1));
        let unsent = Rc::new(Unsent::default());
        connections.insert(
            id,
            Local {
                filters: Vec::new(),
                deliveries: Rc::new(deliveries),
                control,
                unsent: Rc::clone(&unsent),
                ended: Rc::new(Semaphore::new(0)),
                client_id: None,
                persistent: false,
                claim: None,
            },
        );
        assert!(connections.len() <= self.connections_max, "MQTT connections bounded");
        Some((id, unsent))
    }

    /// Records the client id `connection` claimed, and whether its session
    /// is persistent.
    fn set_client_id(&self, connection: u64, client_id: &str, persistent: bool) {
        if let Some(local) = self.connections.borrow_mut().get_mut(&connection) {
            local.client_id = Some(Bytes::copy_from_slice(client_id.as_bytes()));
            local.persistent = persistent;
        }
    }

    /// Records the claim `connection` took on its session.
    fn set_claim(&self, connection: u64, claim: Claim) {
        if let Some(local) = self.connections.borrow_mut().get_mut(&connection) {
            local.claim = Some(claim);
        }
    }

    /// On the client id's home shard: a record another node wrote under
    /// `claim` has been folded; the local connection holding `client_id`,
    /// if its own claim is older, is taken over.
    async fn claimed_elsewhere(&self, shard: &Rc<Shard>, client_id: &str, claim: Claim) {
        assert_eq!(home_shard(client_id, shard.shard_count), shard.id, "asked at home");
        assert_ne!(claim.node_id, shard.node_id(), "a claim of another node");
        let Some(holder) = self.holders.borrow().get(client_id).copied() else {
            return;
        };
        let told = shard
            .invoke_on(holder.shard, move |s: Rc<Shard>| async move {
                s.mqtt.superseded(holder.connection, claim);
            })
            .await;
        if let Err(error) = told {
            tracing::debug!(client_id, %error, "MQTT takeover through another node not passed on");
        }
    }

    /// On the connection's shard: `connection` is taken over if its claim
    /// is older than `claim` (one not yet numbered learns at its first save).
    fn superseded(&self, connection: u64, claim: Claim) {
        let connections = self.connections.borrow();
        let Some(local) = connections.get(&connection) else {
            return;
        };
        if local.claim.is_some_and(|held| held < claim) {
            tracing::info!(
                connection,
                ?claim,
                "MQTT session claimed through another node; taken over"
            );
            let _ = local.control.try_send(Control::TakenOver);
        }
    }

    fn close(&self, connection: u64) {
        if let Some(local) = self.connections.borrow_mut().remove(&connection) {
            local.ended.close();
        }
    }

    /// Per partition the feed of this shard reads, the offset before which
    /// it has handed `connection` everything it matches: where the feed has
    /// got to, for partitions with no delivery waiting for the connection.
    fn progress(&self, connection: u64) -> BTreeMap<i32, Offset> {
        let connections = self.connections.borrow();
        let Some(local) = connections.get(&connection) else {
            return BTreeMap::new();
        };
        let unsent = local.unsent.borrow();
        self.feed
            .dispatched()
            .into_iter()
            .filter(|(partition, _)| unsent.get(partition).copied().unwrap_or(0) == 0)
            .collect()
    }

    /// Adds (or regrants) filters of a connection.
    fn subscribe(&self, connection: u64, filters: Vec<Subscription>) {
        let mut connections = self.connections.borrow_mut();
        let Some(local) = connections.get_mut(&connection) else {
            return;
        };
        for subscription in filters {
            match local.filters.iter_mut().find(|s| s.filter == subscription.filter) {
                Some(existing) => *existing = subscription,
                None => local.filters.push(subscription),
            }
        }
        assert!(
            local.filters.len() <= session::SUBSCRIPTIONS_MAX,
            "the session bounds its subscriptions"
        );
    }

    fn unsubscribe(&self, connection: u64, filters: &[String]) {
        if let Some(local) = self.connections.borrow_mut().get_mut(&connection) {
            local.filters.retain(|s| !filters.contains(&s.filter));
        }
    }

    /// MQTT connections open on this shard.
    pub(crate) fn open_connections(&self) -> u64 {
        u64::try_from(self.connections.borrow().len()).unwrap_or(u64::MAX)
    }

    /// Whether any connection of this shard subscribes to anything.
    fn has_subscribers(&self) -> bool {
        !self.shares.borrow().is_empty()
            || self
                .connections
                .borrow()
                .values()
                .any(|local| !local.filters.is_empty())
    }

    /// Hands a message to every local subscriber with a matching filter,
    /// once each, at the highest QoS granted among its matching filters
    /// (capped by the QoS it was published at). Deliveries whose
    /// subscriber's queue is full are added to `stalled`, for the feed to
    /// wait on ([`MqttShard::wait_for_room`]). Then, for every share homed
    /// here whose filter matches and whose view says this node
    /// (`at.node_id`) delivers `at.partition`, the member whose turn it is
    /// gets it: a member of this shard (`at.me`) like a local subscriber,
    /// one of another shard through `remote`.
    fn dispatch(&self, at: FedAt, message: &Message, stalled: &mut Vec<Stalled>, remote: &mut Vec<Remote>) {
        // An expired message goes to nobody (v5 §3.3.2.3.3).
        let Ok(expiry_left_s) = message.expiry_left_s(at.now_ms) else {
            return;
        };
        self.dispatch_shared(at, message, expiry_left_s, stalled, remote);
        for (&connection, local) in self.connections.borrow().iter() {
            let client_id = local.client_id.as_deref();
            if let Some(delivery) = delivery_for(&local.filters, client_id, at.partition, message, expiry_left_s) {
                local.offer(connection, delivery, stalled);
            }
        }
    }

    fn dispatch_shared(
        &self,
        at: FedAt,
        message: &Message,
        expiry_left_s: Option<u32>,
        stalled: &mut Vec<Stalled>,
        remote: &mut Vec<Remote>,
    ) {
        let FedAt {
            me,
            node_id,
            partition,
            now_ms,
        } = at;
        let mut members = Vec::new();
        self.shares
            .borrow_mut()
            .pick(&message.topic, partition, node_id, now_ms, &mut members);
        for member in members {
            let qos = member.qos.min(message.qos);
            if member.holder.shard != me {
                remote.push(Remote {
                    shard: member.holder.shard,
                    connection: member.holder.connection,
                    topic: message.topic.to_string(),
                    payload: message.payload.clone(),
                    qos,
                    properties: message.properties.as_deref().cloned().map(Box::new),
                    expiry_left_s,
                    subscription_id: member.subscription_id,
                });
                continue;
            }
            let connections = self.connections.borrow();
            let Some(local) = connections.get(&member.holder.connection) else {
                continue;
            };
            let delivery = Delivery {
                properties: message.properties.clone(),
                expiry_left_s,
                subscription_ids: member.subscription_id.into_iter().collect(),
                ..Delivery::plain(Rc::clone(&message.topic), message.payload.clone(), qos, false)
            };
            local.offer(member.holder.connection, delivery, stalled);
        }
    }

    /// On a member's shard: queues the deliveries the home shard of their
    /// shares picked for its connections.
    fn deliver_remote(&self, deliveries: Vec<Remote>) {
        for remote in deliveries {
            let delivery = Delivery {
                properties: remote.properties.map(|props| Rc::new(*props)),
                expiry_left_s: remote.expiry_left_s,
                subscription_ids: remote.subscription_id.into_iter().collect(),
                ..Delivery::plain(Rc::from(remote.topic), remote.payload, remote.qos, false)
            };
            self.deliver_to(remote.connection, delivery);
        }
    }

    /// Waits (at most [`DELIVERY_STALL_MAX`] each) until every stalled
    /// delivery is queued; a subscriber whose queue stays full is told to
    /// close.
    async fn wait_for_room(&self, stalled: &mut Vec<Stalled>) {
        for Stalled {
            deliveries,
            delivery,
            connection,
        } in stalled.drain(..)
        {
            // An error: the connection closed meanwhile.
            let queued = futures_lite::future::or(async { Some(deliveries.send(delivery).await) }, async {
                glommio::timer::sleep(DELIVERY_STALL_MAX).await;
                None
            })
            .await;
            if queued.is_none() {
                tracing::warn!(
                    connection,
                    stalled_s = DELIVERY_STALL_MAX.as_secs(),
                    "disconnecting an MQTT subscriber: its delivery queue stayed full"
                );
                if let Some(local) = self.connections.borrow_mut().get_mut(&connection) {
                    MqttCounts::add(&self.counts.subscribers_dropped, 1);
                    // Fed nothing more while it closes.
                    local.filters.clear();
                    let _ = local.control.try_send(Control::FellBehind);
                }
            }
        }
    }

    /// On the client id's home shard: `holder` now holds `client_id`;
    /// returns who held it before.
    fn claim(&self, client_id: String, holder: Holder) -> Option<Holder> {
        self.holders.borrow_mut().insert(client_id, holder)
    }

    /// On the client id's home shard: `holder` lets `client_id` go (unless
    /// a newer connection took it meanwhile).
    fn release(&self, client_id: &str, holder: Holder) {
        let mut holders = self.holders.borrow_mut();
        if holders.get(client_id) == Some(&holder) {
            holders.remove(client_id);
        }
    }

    /// On the client id's home shard: whether a connection holds it now.
    fn is_held(&self, client_id: &str) -> bool {
        self.holders.borrow().contains_key(client_id)
    }

    /// On the old connection's shard: tells it it was taken over and waits
    /// (at most [`TAKEOVER_WAIT_MAX`]) until it has ended, so its session
    /// is saved before the new connection loads it.
    async fn take_over(&self, connection: u64) {
        let ended = {
            let connections = self.connections.borrow();
            let Some(local) = connections.get(&connection) else {
                return;
            };
            let _ = local.control.try_send(Control::TakenOver);
            Rc::clone(&local.ended)
        };
        let waited = futures_lite::future::or(async { ended.acquire(1).await.is_err() }, async {
            glommio::timer::sleep(TAKEOVER_WAIT_MAX).await;
            false
        })
        .await;
        if !waited {
            tracing::warn!(connection, "an MQTT connection taken over did not end in time");
        }
    }

    /// At shutdown: tells every connection to close.
    pub(crate) fn close_all(&self) {
        for local in self.connections.borrow().values() {
            let _ = local.control.try_send(Control::ShuttingDown);
        }
    }
}

/// Longest MQTT waits for a partition of its Kafka topics to be served on
/// its owner: a topic MQTT has just created opens there a moment after the
/// metadata names it.
const PARTITION_WAIT_MAX: Duration = Duration::from_secs(5);

/// Pause between looks at a partition not served yet.
const PARTITION_WAIT_INTERVAL: Duration = Duration::from_millis(10);

/// On the partition's owner: partition `index` of `topic`, waiting (up to
/// [`PARTITION_WAIT_MAX`]) while it is not served here yet.
pub(crate) async fn served_partition(shard: &Shard, topic: &str, index: i32) -> Result<Rc<Partition>, EngineError> {
    let deadline = std::time::Instant::now() + PARTITION_WAIT_MAX;
    loop {
        match shard.partition(topic, index) {
            Err(EngineError::NotLeader | EngineError::LeaderNotAvailable) if std::time::Instant::now() < deadline => {
                glommio::timer::sleep(PARTITION_WAIT_INTERVAL).await;
            }
            served => return served,
        }
    }
}

/// The delivery of `message` (at its offset of `partition`, with
/// `expiry_left_s` of its expiry left) to the connection of `client_id`
/// subscribed with `filters`, if any of them matches: once, at the highest
/// QoS granted among the matching filters (capped by the QoS it was
/// published at), with RETAIN kept if any of them asked for it, and the
/// identifiers of all of them. A No Local filter does not match the
/// connection's own publications.
fn delivery_for(
    filters: &[Subscription],
    client_id: Option<&[u8]>,
    partition: i32,
    message: &Message,
    expiry_left_s: Option<u32>,
) -> Option<Delivery> {
    let own = client_id.is_some() && message.publisher.as_deref() == client_id;
    let mut matching = filters
        .iter()
        .filter(|subscription| !(own && subscription.no_local) && filter_matches(&subscription.filter, &message.topic))
        .peekable();
    matching.peek()?;
    let mut subscription_ids = Vec::new();
    let (granted, retain_as_published) = matching.fold((QoS::AtMostOnce, false), |(qos, rap), s| {
        subscription_ids.extend(s.id);
        (qos.max(s.qos), rap || s.retain_as_published)
    });
    Some(Delivery {
        position: Some(Position {
            partition,
            offset: message.offset,
        }),
        properties: message.properties.clone(),
        expiry_left_s,
        subscription_ids,
        ..Delivery::plain(
            Rc::clone(&message.topic),
            message.payload.clone(),
            granted.min(message.qos),
            message.retain && retain_as_published,
        )
    })
}

/// The shard a client id's holder is recorded on.
fn home_shard(client_id: &str, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    usize::try_from(crc32c::crc32c(client_id.as_bytes())).unwrap_or(0) % shards
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn message(publisher: &'static [u8]) -> Message {
        Message {
            offset: Offset(5),
            topic: Rc::from("a/b"),
            payload: Bytes::from_static(b"p"),
            qos: QoS::ExactlyOnce,
            retain: false,
            publisher: Some(Bytes::from_static(publisher)),
            timestamp_ms: 0,
            properties: None,
        }
    }

    fn subscription(filter: &str, qos: QoS, no_local: bool, id: Option<u32>) -> Subscription {
        Subscription {
            filter: filter.to_string(),
            qos,
            retain_as_published: false,
            no_local,
            id,
        }
    }

    #[test]
    fn one_delivery_per_connection_with_every_matching_id_and_no_local_honoured() {
        let filters = [
            subscription("a/#", QoS::AtLeastOnce, true, Some(1)),
            subscription("a/+", QoS::ExactlyOnce, false, Some(2)),
            subscription("x/#", QoS::ExactlyOnce, false, Some(3)),
        ];
        let delivery = delivery_for(&filters, Some(b"other"), 0, &message(b"me"), None).unwrap();
        assert_eq!(
            (delivery.qos, delivery.subscription_ids.clone()),
            (QoS::ExactlyOnce, vec![1, 2])
        );
        assert_eq!(
            delivery.position,
            Some(Position {
                partition: 0,
                offset: Offset(5)
            })
        );
        // Its own publication: the No Local filter does not match.
        let own = delivery_for(&filters, Some(b"me"), 0, &message(b"me"), None).unwrap();
        assert_eq!(own.subscription_ids, vec![2]);
        let only_no_local = [subscription("a/#", QoS::AtLeastOnce, true, None)];
        assert!(delivery_for(&only_no_local, Some(b"me"), 0, &message(b"me"), None).is_none());
    }
}
