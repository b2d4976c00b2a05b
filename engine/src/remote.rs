//! Reaching a partition another node leads, for work this broker does on
//! a client's behalf: MQTT publishes, feeds and tables (`mqtt/`), and the
//! dead-letter moves of consumer groups (`coordinator/dlq.rs`).
//!
//! [`place_of`] says where a partition is led now: on this node (its
//! shard, reached by message, `Shard::invoke_on`), or on another node,
//! reached as a Kafka client of that node's leading shard over the
//! inter-broker listener (`inter_broker.rs`: the listener's TLS and SASL
//! login):
//!
//! ```text
//!  this node, shard s                          node n, the partition's leading shard
//!  append ─────────────────Produce acks=-1───►  appended, durable and replicated as a
//!                        ◄── error code ─────   client's acks=all produce
//!  read ───────────────────Fetch (consumer)──►  up to the high watermark, parked up
//!                        ◄── batches ────────   to max_wait when nothing is new
//!  high watermark ─────────ListOffsets -1────►  the high watermark
//! ```
//!
//! So an append is stored exactly as on the leader's node, and a read sees
//! only what no leader change can take back. The remote broker authorizes
//! these requests as the inter-broker principal; the client's own rights
//! were checked here, where it asked. Codes the leader answers become
//! engine errors in one place (`error::from_remote_code`).
//!
//! State: each shard keeps a pool of idle connections per leader address
//! ([`Pool`], at most [`IDLE_CONNECTIONS_MAX`] each), taken by one request
//! at a time and put back after a whole exchange; a connection that failed
//! is dropped. A task parked on its leader most of the time (an MQTT feed's
//! tail task) keeps a connection of its own instead ([`Held`]). Nothing
//! here is shared between shards.

use std::{cell::RefCell, collections::HashMap, time::Duration};

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        produce_request::{PartitionProduceData, TopicProduceData},
        BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest,
        ProduceResponse, TopicName,
    },
    protocol::Request,
    ResponseError,
};
use shardline_log::Offset;

use crate::{
    error::{from_remote_code, EngineError},
    inter_broker::LeaderConnection,
    kafka::brokers::{kafka_broker, KafkaBroker},
    shard::Shard,
};

/// Idle connections a shard keeps to one leader address, at most.
const IDLE_CONNECTIONS_MAX: usize = 4;
/// Produce version spoken to a leader (flexible, with record errors).
const PRODUCE_VERSION: i16 = 9;
/// Fetch version spoken to a leader (as the follower fetcher speaks).
const FETCH_VERSION: i16 = 12;
/// ListOffsets version spoken to a leader.
const LIST_OFFSETS_VERSION: i16 = 7;

/// Where a partition is led now.
pub(crate) enum Place {
    /// On this node, by this shard.
    Local(usize),
    /// On another node: its leading shard's inter-broker address.
    Remote(KafkaBroker),
}

/// Where partition `index` of `topic` is led, from this shard's image.
/// A broker out of quorum trusts no image (`Shard::out_of_quorum`).
pub(crate) fn place_of(shard: &Shard, topic: &str, index: i32) -> Result<Place, EngineError> {
    match shard.owner_of(topic, index) {
        Ok(owner) => return Ok(Place::Local(owner)),
        Err(EngineError::NotLeader) if !shard.out_of_quorum() => {}
        Err(error) => return Err(error),
    }
    let image = shard.image();
    let partition = image
        .topics
        .get(topic)
        .and_then(|t| usize::try_from(index).ok().and_then(|i| t.partitions.get(i)))
        .ok_or(EngineError::UnknownTopicOrPartition)?;
    if partition.leader == shard.node_id() {
        // Led here, on a shard this node does not have (an image ahead of
        // the node's restart with fewer shards): not servable.
        return Err(EngineError::NotLeader);
    }
    kafka_broker(&image, partition.leader, partition.shard, shard.inter_broker.listener())
        .map(Place::Remote)
        .ok_or(EngineError::LeaderNotAvailable)
}

/// One shard's idle connections to other nodes' leaders.
#[derive(Default)]
pub(crate) struct Pool {
    idle: RefCell<HashMap<(String, u16), Vec<LeaderConnection>>>,
}

impl Pool {
    fn take(&self, to: &KafkaBroker) -> Option<LeaderConnection> {
        self.idle
            .borrow_mut()
            .get_mut(&(to.host.clone(), to.port))
            .and_then(Vec::pop)
    }

    fn put_back(&self, to: &KafkaBroker, connection: LeaderConnection) {
        let mut idle = self.idle.borrow_mut();
        let connections = idle.entry((to.host.clone(), to.port)).or_default();
        if connections.len() < IDLE_CONNECTIONS_MAX {
            connections.push(connection);
        }
        assert!(connections.len() <= IDLE_CONNECTIONS_MAX, "the idle pool is bounded");
    }
}

/// A connection one task keeps for itself across its exchanges (a feed's
/// tail task, parked on its leader most of the time, would otherwise take
/// a pooled one for every wait).
#[derive(Default)]
pub(crate) struct Held {
    connection: Option<((String, u16), LeaderConnection)>,
}

/// Where an exchange takes its connection from and gives it back to.
pub(crate) enum Lender<'a> {
    /// The shard's pool.
    Pool,
    /// A task's own.
    Own(&'a mut Held),
}

impl Lender<'_> {
    fn take(&mut self, pool: &Pool, to: &KafkaBroker) -> Option<LeaderConnection> {
        match self {
            Lender::Pool => pool.take(to),
            Lender::Own(held) => held
                .connection
                .take()
                .filter(|(address, _)| address.0 == to.host && address.1 == to.port)
                .map(|(_, connection)| connection),
        }
    }

    fn give_back(&mut self, pool: &Pool, to: &KafkaBroker, connection: LeaderConnection) {
        match self {
            Lender::Pool => pool.put_back(to, connection),
            Lender::Own(held) => held.connection = Some(((to.host.clone(), to.port), connection)),
        }
    }
}

/// Whether a request may be sent twice.
#[derive(Clone, Copy, PartialEq)]
enum Repeat {
    /// A read: tried once more on a fresh connection when an idle one had
    /// gone stale (its leader restarted, say).
    Safe,
    /// An append: never sent twice, since a lost answer does not say it was
    /// not stored; the caller reports the failure (the MQTT client resends).
    Never,
}

/// One exchange with the leader at `to`, on an idle connection of
/// `lender`'s if there is one.
async fn call<R: Request>(
    shard: &Shard,
    lender: &mut Lender<'_>,
    to: &KafkaBroker,
    version: i16,
    request: &R,
    repeat: Repeat,
) -> Result<R::Response, EngineError> {
    let pool = &shard.remote;
    let unreachable = |why: String| {
        tracing::debug!(host = %to.host, port = to.port, %why, "MQTT: a partition's leader not reached");
        EngineError::LeaderNotAvailable
    };
    if let Some(mut connection) = lender.take(pool, to) {
        match connection.call(version, request).await {
            Ok(answer) => {
                lender.give_back(pool, to, connection);
                return Ok(answer);
            }
            Err(why) if repeat == Repeat::Never => return Err(unreachable(why)),
            Err(_) => {}
        }
    }
    let mut connection = shard
        .inter_broker
        .connect(&to.host, to.port, shard.node_id())
        .await
        .map_err(unreachable)?;
    let answer = connection.call(version, request).await.map_err(unreachable)?;
    lender.give_back(pool, to, connection);
    Ok(answer)
}

/// The error of a code a leader answered, `Ok` for 0.
fn outcome(code: i16) -> Result<(), EngineError> {
    match code {
        0 => Ok(()),
        code => Err(from_remote_code(code)),
    }
}

/// Appends `batch` (one record batch) to partition `index` of `topic` on
/// its leader at `to`, with acks=-1: `Ok` once it is durable and in every
/// in-sync replica, as for a local append.
pub(crate) async fn produce(
    shard: &Shard,
    to: &KafkaBroker,
    topic: &str,
    index: i32,
    batch: Bytes,
    timeout: Duration,
) -> Result<(), EngineError> {
    let mut partition = PartitionProduceData::default();
    partition.index = index;
    partition.records = Some(batch);
    let mut data = TopicProduceData::default();
    data.name = TopicName(crate::kafka::str_bytes(topic));
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    request.topic_data = vec![data];
    let response: ProduceResponse =
        call(shard, &mut Lender::Pool, to, PRODUCE_VERSION, &request, Repeat::Never).await?;
    let code = response
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == index)
        .map_or(ResponseError::UnknownServerError.code(), |p| p.error_code);
    outcome(code)
}

/// What a leader answered a read with.
pub(crate) struct Fetched {
    /// Where the read started (the log start if the asked offset fell off it).
    pub(crate) from: Offset,
    /// Whole batches from the one holding `from` on (maybe none).
    pub(crate) records: Option<Bytes>,
}

/// Reads partition `index` of `topic` from `offset` on its leader at `to`,
/// as a consumer (up to the high watermark), at most `max_bytes` (one
/// batch at least), parked there up to `max_wait` while nothing is new. An
/// offset below the log start reads from the log start.
#[allow(clippy::too_many_arguments, reason = "one Fetch's fields")]
pub(crate) async fn fetch(
    shard: &Shard,
    lender: &mut Lender<'_>,
    to: &KafkaBroker,
    topic: &str,
    index: i32,
    offset: Offset,
    max_wait: Duration,
    max_bytes: usize,
) -> Result<Fetched, EngineError> {
    let mut from = offset;
    // Twice at most: once more from the log start after OFFSET_OUT_OF_RANGE.
    for _ in 0..2 {
        let request = fetch_request(topic, index, from, max_wait, max_bytes);
        let answer: FetchResponse = call(shard, lender, to, FETCH_VERSION, &request, Repeat::Safe).await?;
        outcome(answer.error_code)?;
        let data = answer
            .responses
            .into_iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == index)
            .ok_or(EngineError::Remote(ResponseError::UnknownServerError.code()))?;
        let log_start = Offset(data.log_start_offset);
        if data.error_code == ResponseError::OffsetOutOfRange.code() && log_start > from {
            from = log_start;
            continue;
        }
        outcome(data.error_code)?;
        return Ok(Fetched {
            from,
            records: data.records.filter(|records| !records.is_empty()),
        });
    }
    Err(EngineError::Remote(ResponseError::OffsetOutOfRange.code()))
}

/// A consumer's Fetch (no session) of partition `index` of `topic` from
/// `offset`.
fn fetch_request(topic: &str, index: i32, offset: Offset, max_wait: Duration, max_bytes: usize) -> FetchRequest {
    let max_bytes = i32::try_from(max_bytes).unwrap_or(i32::MAX);
    let mut partition = FetchPartition::default();
    partition.partition = index;
    partition.current_leader_epoch = -1;
    partition.fetch_offset = offset.0;
    partition.last_fetched_epoch = -1;
    partition.log_start_offset = -1;
    partition.partition_max_bytes = max_bytes;
    let mut wanted = FetchTopic::default();
    wanted.topic = TopicName(crate::kafka::str_bytes(topic));
    wanted.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
    request.min_bytes = 1;
    request.max_bytes = max_bytes;
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = vec![wanted];
    request
}

/// The high watermark of partition `index` of `topic` on its leader at `to`.
pub(crate) async fn high_watermark(
    shard: &Shard,
    to: &KafkaBroker,
    topic: &str,
    index: i32,
) -> Result<Offset, EngineError> {
    let mut partition = ListOffsetsPartition::default();
    partition.partition_index = index;
    partition.current_leader_epoch = -1;
    partition.timestamp = -1;
    let mut wanted = ListOffsetsTopic::default();
    wanted.name = TopicName(crate::kafka::str_bytes(topic));
    wanted.partitions = vec![partition];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![wanted];
    let response: ListOffsetsResponse = call(
        shard,
        &mut Lender::Pool,
        to,
        LIST_OFFSETS_VERSION,
        &request,
        Repeat::Safe,
    )
    .await?;
    let data = response
        .topics
        .into_iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == index)
        .ok_or(EngineError::Remote(ResponseError::UnknownServerError.code()))?;
    outcome(data.error_code)?;
    Ok(Offset(data.offset))
}
