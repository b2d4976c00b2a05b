//! The subscriber feed of one shard: while any local connection subscribes,
//! one tail task per partition of the mapped Kafka topic reads what is new
//! past the high watermark it last saw, from the shard that owns the
//! partition (by message, `Shard::invoke_on`), and hands each message to
//! the local subscribers whose filters match it (`MqttShard::dispatch`).
//!
//! ```text
//!  shard s (subscribers)                         owner of partition p
//!  tail task p ──invoke_on(read from offset)──►  nothing past offset yet: wait on a FetchWatch
//!                                                (the next high-watermark move, at most
//!                                                FEED_WAIT_MAX), as a parked Fetch; then
//!                                                Partition::read up to the high watermark
//!              ◄──────── batches (Bytes) ───────
//! ```
//!
//! One cross-shard round trip per wake: the owner parks the read itself
//! rather than answer "nothing" and be asked again when its watch fires.
//! A partition another node leads is read from its leader as a Kafka
//! consumer would (`remote.rs`: a Fetch parked there up to the same
//! [`FEED_WAIT_MAX`]), so every node's subscribers see every message.
//!
//! A feed starts at each partition's high watermark when the first local
//! subscription is made (before its SUBACK), so a subscriber sees every
//! message committed after its SUBACK; earlier ones (a persistent
//! session's offline messages, retained messages) are sent by the
//! connection itself. Each tail task records how far it has handed its
//! partition out ([`Feed::dispatched`]): what a persistent session's
//! cursors move up to. The tail tasks stop once no local connection
//! subscribes to anything.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    rc::Rc,
    time::Duration,
};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::Semaphore;
use shardline_log::Offset;

use super::{
    mapping::{self, Message, Skipped},
    Remote,
};
use crate::{
    error::EngineError,
    kafka::brokers::KafkaBroker,
    partition::{FetchWatch, Partition},
    remote::{self, Lender, Place},
    shard::Shard,
};

/// Bytes one read of a partition returns at most (whole batches; the first
/// is returned whatever its size): bounds what a tail task holds at once.
const FEED_READ_BYTES_MAX: usize = 1 << 20;

/// Longest a tail task stays parked without news, so it notices a shutdown,
/// an unsubscribe or a moved partition.
const FEED_WAIT_MAX: Duration = Duration::from_millis(500);

/// Pause before retrying a partition whose owner cannot be reached (no
/// leader yet, a moved partition).
pub(crate) const FEED_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// One shard's feed.
pub(crate) struct Feed {
    /// Whether tail tasks run.
    running: Cell<bool>,
    /// Bumped at every start: tail tasks of an older start stop.
    generation: Cell<u64>,
    /// One start at a time.
    starting: Semaphore,
    /// Records with no MQTT topic and compressed batches the feed skipped.
    skipped_records: Cell<u64>,
    /// Per partition, the offset before which every message was handed to
    /// the matching subscribers (queued, or waited on until they were
    /// dropped); empty while the feed is stopped.
    dispatched: RefCell<BTreeMap<i32, Offset>>,
    /// Partitions of the mapped topic the running tail tasks cover (0..n).
    partitions: Cell<usize>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed {
            running: Cell::new(false),
            generation: Cell::new(0),
            starting: Semaphore::new(1),
            skipped_records: Cell::new(0),
            dispatched: RefCell::new(BTreeMap::new()),
            partitions: Cell::new(0),
        }
    }
}

impl Feed {
    /// Per partition, how far the feed has handed messages out.
    pub(crate) fn dispatched(&self) -> BTreeMap<i32, Offset> {
        self.dispatched.borrow().clone()
    }

    /// Records that the tail task of `generation` has handed out
    /// `partition` up to `offset` (a tail task of an older start records
    /// nothing).
    fn dispatched_to(&self, generation: u64, partition: i32, offset: Offset) {
        if self.generation.get() == generation && self.running.get() {
            self.dispatched.borrow_mut().insert(partition, offset);
        }
    }
}

/// What a read of a partition found.
pub(crate) struct Read {
    /// Where the read started (the log start if the asked offset fell off it).
    pub(crate) from: Offset,
    /// Whole batches from the one holding `from` on.
    pub(crate) chunks: Vec<Bytes>,
}

impl Read {
    /// The messages read, in order, into `out`; returns the offset after the
    /// last whole batch (`from` when there is none).
    fn messages(&self, out: &mut Vec<Message>, skipped: &mut Skipped) -> Offset {
        self.chunks.iter().fold(self.from, |next, chunk| {
            next.max(mapping::messages(chunk, self.from, out, skipped))
        })
    }
}

/// Starts the tail tasks of `shard` if they are not running, each
/// positioned at its partition's high watermark; returns once they are.
pub(crate) async fn ensure_running(shard: &Rc<Shard>) -> Result<(), EngineError> {
    let feed = &shard.mqtt.feed;
    let _permit = feed
        .starting
        .acquire_permit(1)
        .await
        .map_err(|_| EngineError::ShuttingDown)?;
    if feed.running.get() {
        return Ok(());
    }
    let partitions = mapping::ensure_topic(shard).await?;
    let topic = shard.config.mqtt_kafka_topic.clone();
    let mut starts = Vec::with_capacity(partitions);
    for index in 0..partitions {
        let index = i32::try_from(index).map_err(|_| EngineError::UnknownTopicOrPartition)?;
        let name = topic.clone();
        let high_watermark = match remote::place_of(shard, &topic, index)? {
            Place::Local(owner) => {
                shard
                    .invoke_on(owner, move |s: Rc<Shard>| async move {
                        super::served_partition(&s, &name, index)
                            .await
                            .map(|p| p.high_watermark())
                    })
                    .await??
            }
            Place::Remote(leader) => remote::high_watermark(shard, &leader, &name, index).await?,
        };
        starts.push((index, high_watermark));
    }
    let generation = feed.generation.get().wrapping_add(1);
    feed.generation.set(generation);
    feed.running.set(true);
    *feed.dispatched.borrow_mut() = starts.iter().copied().collect();
    feed.partitions.set(partitions);
    for (index, start) in starts {
        glommio::spawn_local(tail(Rc::clone(shard), generation, index, start)).detach();
    }
    tracing::debug!(shard = shard.id, partitions, "MQTT feed started");
    Ok(())
}

/// Whether the tail tasks of `generation` should go on.
fn should_run(shard: &Shard, generation: u64) -> bool {
    let feed = &shard.mqtt.feed;
    if shard.is_shutting_down() || feed.generation.get() != generation || !feed.running.get() {
        return false;
    }
    if !shard.mqtt.has_subscribers() {
        feed.running.set(false);
        feed.dispatched.borrow_mut().clear();
        return false;
    }
    true
}

/// Feeds the local subscribers from partition `index`, from `start` on.
async fn tail(shard: Rc<Shard>, generation: u64, index: i32, start: Offset) {
    let topic = shard.config.mqtt_kafka_topic.clone();
    let mut offset = start;
    let mut messages: Vec<Message> = Vec::new();
    let mut stalled = Vec::new();
    let mut remote = Vec::new();
    // The connection to the partition's leader while another node leads it.
    let mut held = remote::Held::default();
    while should_run(&shard, generation) {
        if index == 0 {
            feed_added_partitions(&shard, generation);
        }
        let read = match read_parked(&shard, &mut held, &topic, index, offset).await {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(partition = index, %error, "MQTT feed read failed; retrying");
                glommio::timer::sleep(FEED_RETRY_INTERVAL).await;
                continue;
            }
        };
        if read.chunks.is_empty() {
            // Nothing within FEED_WAIT_MAX: look at should_run, then ask again.
            offset = read.from;
            shard.mqtt.feed.dispatched_to(generation, index, offset);
            continue;
        }
        let mut skipped = Skipped::default();
        let next = read.messages(&mut messages, &mut skipped);
        if next <= offset {
            // Chunks that hold no whole batch (never written by this log):
            // wait for news rather than spin on them.
            tracing::warn!(partition = index, offset = offset.0, "MQTT feed read no whole batch");
            glommio::timer::sleep(FEED_WAIT_MAX).await;
            continue;
        }
        offset = next;
        let feed = &shard.mqtt.feed;
        feed.skipped_records
            .set(feed.skipped_records.get() + skipped.untopical + skipped.compressed);
        let at = super::FedAt {
            me: shard.id,
            node_id: shard.node_id(),
            partition: index,
            now_ms: crate::kafka::unix_now_ms(),
        };
        for message in messages.drain(..) {
            shard.mqtt.dispatch(at, &message, &mut stalled, &mut remote);
            if !stalled.is_empty() {
                // A full subscriber queue holds the partition's feed (its order
                // holds), for a bounded time.
                shard.mqtt.wait_for_room(&mut stalled).await;
            }
        }
        shard.mqtt.feed.dispatched_to(generation, index, offset);
        if !remote.is_empty() {
            send_remote(&shard, &mut remote).await;
        }
        glommio::yield_if_needed().await;
    }
}

/// Reads partition `index` of `topic` from `offset` up to the high
/// watermark wherever it is led; when nothing is there yet, the read parks
/// (at most [`FEED_WAIT_MAX`]) until something is, on the owner shard or,
/// as a Fetch, on the leader of another node (through `held`, the caller's
/// own connection to it).
pub(crate) async fn read_parked(
    shard: &Rc<Shard>,
    held: &mut remote::Held,
    topic: &str,
    index: i32,
    offset: Offset,
) -> Result<Read, EngineError> {
    match remote::place_of(shard, topic, index)? {
        Place::Local(owner) => {
            let name = topic.to_string();
            shard
                .invoke_on(owner, move |s: Rc<Shard>| async move {
                    read_when_there(&s, &name, index, offset).await
                })
                .await?
        }
        Place::Remote(leader) => {
            read_on_leader(
                shard,
                &mut Lender::Own(held),
                &leader,
                topic,
                index,
                offset,
                FEED_WAIT_MAX,
            )
            .await
        }
    }
}

/// While the feed of `generation` runs (called by partition 0's tail task,
/// at least every [`FEED_WAIT_MAX`]): starts a tail task for each
/// partition added to the mapped topic since, from its first offset, so
/// every message in it is fed (a partition added after the feed started
/// holds only messages committed after every current subscription).
fn feed_added_partitions(shard: &Rc<Shard>, generation: u64) {
    let feed = &shard.mqtt.feed;
    let known = feed.partitions.get();
    let now = shard
        .image()
        .topics
        .get(&shard.config.mqtt_kafka_topic)
        .map_or(0, |topic| topic.partitions.len());
    if now <= known || feed.generation.get() != generation {
        return;
    }
    feed.partitions.set(now);
    for index in known..now {
        let Ok(index) = i32::try_from(index) else {
            return;
        };
        feed.dispatched.borrow_mut().insert(index, Offset(0));
        glommio::spawn_local(tail(Rc::clone(shard), generation, index, Offset(0))).detach();
    }
    assert_eq!(feed.partitions.get(), now, "the feed covers every partition it knows");
    tracing::info!(
        shard = shard.id,
        from = known,
        to = now,
        "MQTT feed covers added partitions"
    );
}

/// Hands the deliveries picked for shared subscriptions' members on other
/// shards to those shards, one message per shard, in order.
async fn send_remote(shard: &Rc<Shard>, remote: &mut Vec<Remote>) {
    let mut by_shard: BTreeMap<usize, Vec<Remote>> = BTreeMap::new();
    for delivery in remote.drain(..) {
        by_shard.entry(delivery.shard).or_default().push(delivery);
    }
    for (target, deliveries) in by_shard {
        let sent = shard
            .invoke_on(
                target,
                move |s: Rc<Shard>| async move { s.mqtt.deliver_remote(deliveries) },
            )
            .await;
        if let Err(error) = sent {
            tracing::debug!(target, %error, "MQTT shared-subscription deliveries not handed over");
        }
    }
}

/// Reads messages of partition `index` of the mapped topic from `offset`
/// (or the log start, if retention removed it) towards the high watermark,
/// at most [`FEED_READ_BYTES_MAX`] at once, into `out`; returns the offset
/// to read from next (where it started when there is nothing new).
pub(crate) async fn read_messages(
    shard: &Rc<Shard>,
    index: i32,
    offset: Offset,
    out: &mut Vec<Message>,
) -> Result<Offset, EngineError> {
    let topic = shard.config.mqtt_kafka_topic.clone();
    let read = match remote::place_of(shard, &topic, index)? {
        Place::Local(owner) => {
            shard
                .invoke_on(owner, move |s: Rc<Shard>| async move {
                    read_from(&*s.partition(&topic, index)?, offset)
                })
                .await??
        }
        Place::Remote(leader) => {
            read_on_leader(shard, &mut Lender::Pool, &leader, &topic, index, offset, Duration::ZERO).await?
        }
    };
    Ok(read.messages(out, &mut Skipped::default()))
}

/// Reads partition `index` of `topic` from `offset` on its leader on
/// another node (`remote.rs`), as [`read_from`] reads on the owner,
/// waiting there up to `max_wait` when nothing is new.
pub(crate) async fn read_on_leader(
    shard: &Shard,
    lender: &mut Lender<'_>,
    leader: &KafkaBroker,
    topic: &str,
    index: i32,
    offset: Offset,
    max_wait: Duration,
) -> Result<Read, EngineError> {
    let fetched = remote::fetch(
        shard,
        lender,
        leader,
        topic,
        index,
        offset,
        max_wait,
        FEED_READ_BYTES_MAX,
    )
    .await?;
    Ok(Read {
        from: fetched.from,
        chunks: fetched.records.into_iter().collect(),
    })
}

/// On the owner: [`read_from`], first waiting (at most
/// [`FEED_WAIT_MAX`]) for the high watermark to pass `offset` when nothing
/// is there yet.
async fn read_when_there(shard: &Shard, topic: &str, index: i32, offset: Offset) -> Result<Read, EngineError> {
    let partition = shard.partition(topic, index)?;
    if partition.high_watermark() <= offset.max(partition.log.log_start()) {
        let (watch, fired) = FetchWatch::new();
        partition.watch(&watch);
        futures_lite::future::or(
            async {
                let _: Result<(), oneshot::Canceled> = fired.await;
            },
            glommio::timer::sleep(FEED_WAIT_MAX),
        )
        .await;
    }
    read_from(&partition, offset)
}

/// On the owner: batches of `partition` from `offset` (or the log start,
/// if retention removed `offset`) up to the high watermark, at most
/// [`FEED_READ_BYTES_MAX`].
pub(crate) fn read_from(partition: &Partition, offset: Offset) -> Result<Read, EngineError> {
    let high_watermark = partition.high_watermark();
    let from = offset.max(partition.log.log_start()).min(high_watermark);
    if from >= high_watermark {
        return Ok(Read {
            from,
            chunks: Vec::new(),
        });
    }
    let read = partition.read(from, FEED_READ_BYTES_MAX, high_watermark)?;
    Ok(Read {
        from,
        chunks: read.chunks,
    })
}
