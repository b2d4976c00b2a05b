//! Partition replication between brokers: the follower's fetcher and the
//! leader's in-sync-replica upkeep. Both run on the shard that owns the
//! partition on this broker.
//!
//! ## Follower
//! When the metadata image makes this broker a follower of a partition (or
//! names a new leader epoch), `follow` starts under the partition's new
//! generation and runs until the generation changes:
//! 1. connect to the leader's Kafka listener (its address is in the image);
//! 2. truncate: ask the leader, with OffsetForLeaderEpoch, where this log's
//!    latest leader epoch ends on the leader, and cut this log there if it is
//!    longer (what the new leader never had is dropped, as in Kafka's KIP-101);
//! 3. fetch in a loop with `replica_id` = this broker: every batch is appended
//!    byte for byte (offsets and epochs as the leader stamped them), and the
//!    leader's high watermark, bounded by this log's end, becomes this
//!    replica's. Each fetch offset tells the leader how far this copy goes.
//!
//! Errors (leader gone, connection reset, NOT_LEADER, a fenced epoch) back off
//! and retry; the metadata image decides when to stop.
//!
//! ## Leader
//! `maintain_isr` looks at every partition this shard leads a few times per
//! `replica_lag_time_max_ms`: an in-sync follower that has not been caught up
//! for that long leaves the ISR; a replica whose log reaches the leader's end
//! joins it. Changes go through the metadata group (`alter_isr`, fenced by
//! leader epoch); the partition applies them when the image arrives.

use std::{rc::Rc, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic},
        offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
        ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
        RequestHeader, ResponseHeader, TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
    ResponseError,
};
use shardline_log::Offset;

use crate::{
    partition::{Partition, Role},
    shard::{PartitionKey, Shard},
};

/// Fetch version followers speak (the highest the leader serves).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version followers speak (v3 carries replica_id).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
/// How long a follower fetch parks on the leader when there is nothing new.
const FETCH_WAIT_MAX_MS: i32 = 500;
/// Bytes a follower asks for per fetch.
const FETCH_BYTES_MAX: i32 = 8 << 20;
/// Largest response a follower accepts (a fetch answer is bounded by
/// FETCH_BYTES_MAX plus one batch past it).
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Pause after a failed connect or fetch before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Bound on connecting to a leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one request/response exchange (a parked fetch waits up to
/// FETCH_WAIT_MAX_MS on the leader).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka client connection of a follower to a leader.
struct LeaderConnection {
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
}

impl LeaderConnection {
    async fn connect(address: &str, node_id: i32) -> Result<LeaderConnection, String> {
        let stream = glommio::timer::timeout(CONNECT_TIMEOUT, async { TcpStream::connect(address).await })
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(LeaderConnection {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(format!("shardline-replica-{node_id}")),
        })
    }

    /// One request/response exchange; returns the response body.
    async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, String> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, Req::header_version(version))
            .map_err(|e| format!("encoding request header: {e}"))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| format!("encoding request: {e}"))?;
        let length = i32::try_from(frame.len() - 4).map_err(|_| "request too large".to_string())?;
        if let Some(prefix) = frame.get_mut(..4) {
            prefix.copy_from_slice(&length.to_be_bytes());
        }
        let stream = &mut self.stream;
        let body = glommio::timer::timeout(CALL_TIMEOUT, async {
            stream.write_all(&frame).await.map_err(std::io::Error::other)?;
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await.map_err(std::io::Error::other)?;
            let length = usize::try_from(i32::from_be_bytes(prefix))
                .ok()
                .filter(|l| *l <= RESPONSE_BYTES_MAX)
                .ok_or_else(|| std::io::Error::other("response length out of bounds"))?;
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await.map_err(std::io::Error::other)?;
            Ok(body)
        })
        .await
        .map_err(|e| format!("exchange with leader: {e}"))?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, Resp::header_version(version))
            .map_err(|e| format!("decoding response header: {e}"))?;
        if header.correlation_id != correlation_id {
            return Err(format!(
                "response correlation id {} for request {correlation_id}",
                header.correlation_id
            ));
        }
        let response = Resp::decode(&mut body, version).map_err(|e| format!("decoding response: {e}"))?;
        if body.has_remaining() {
            return Err(format!("{} bytes left after the response", body.remaining()));
        }
        Ok(response)
    }
}

/// Whether the fetcher started under `generation` should go on, and the
/// leader it follows.
fn current_leader(partition: &Partition, generation: u64) -> Option<i32> {
    let state = partition.replica.borrow();
    match state.role {
        Role::Follower { leader } if state.generation == generation => Some(leader),
        _ => None,
    }
}

/// Follows the partition's leader until the partition's generation changes.
pub(crate) async fn follow(shard: Rc<Shard>, key: PartitionKey, partition: Rc<Partition>, generation: u64) {
    let (topic, index) = key;
    let node_id = shard.node_id();
    let mut connection: Option<(i32, LeaderConnection)> = None;
    let mut last_error: Option<String> = None;
    while let Some(leader) = current_leader(&partition, generation) {
        if shard.is_shutting_down() {
            return;
        }
        if connection.as_ref().is_none_or(|(l, _)| *l != leader) {
            let address = shard
                .image()
                .brokers
                .get(&leader)
                .map(|b| format!("{}:{}", b.host, b.port));
            let Some(address) = address else {
                glommio::timer::sleep(RETRY_BACKOFF).await;
                continue;
            };
            match LeaderConnection::connect(&address, node_id).await {
                Ok(c) => connection = Some((leader, c)),
                Err(e) => {
                    note_error(&mut last_error, &topic, index, e);
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            }
        }
        let Some((_, conn)) = connection.as_mut() else { continue };
        let replica = FollowedReplica {
            topic: &topic,
            index,
            partition: &partition,
            node_id,
            generation,
        };
        let step = if partition.replica.borrow().needs_truncation {
            replica.truncate(conn).await
        } else {
            replica.fetch_once(conn).await
        };
        match step {
            Ok(()) => last_error = None,
            Err(e) => {
                note_error(&mut last_error, &topic, index, e);
                connection = None;
                glommio::timer::sleep(RETRY_BACKOFF).await;
            }
        }
    }
    tracing::debug!(%topic, partition = index, generation, "follower fetcher stopped");
}

/// Logs a fetcher error once per distinct message (a dead leader would
/// otherwise log ten lines a second).
fn note_error(last: &mut Option<String>, topic: &str, index: i32, error: String) {
    if last.as_deref() != Some(error.as_str()) {
        tracing::info!(%topic, partition = index, %error, "follower fetch failed; retrying");
        *last = Some(error);
    }
}

/// One partition this broker follows, under one generation of its role.
struct FollowedReplica<'a> {
    topic: &'a str,
    index: i32,
    partition: &'a Partition,
    node_id: i32,
    generation: u64,
}

impl FollowedReplica<'_> {
    fn topic_name(&self) -> TopicName {
        TopicName(StrBytes::from_string(self.topic.to_string()))
    }

    /// Asks the leader where this log's latest epoch ends there and
    /// truncates to it if this log is longer.
    async fn truncate(&self, conn: &mut LeaderConnection) -> Result<(), String> {
        let (topic, index, partition) = (self.topic, self.index, self.partition);
        let Some(latest) = partition.log.latest_epoch() else {
            // Nothing stored: nothing can diverge.
            partition.replica.borrow_mut().needs_truncation = false;
            return Ok(());
        };
        let mut request = OffsetForLeaderEpochRequest::default();
        request.replica_id = BrokerId(self.node_id);
        let mut p = OffsetForLeaderPartition::default();
        p.partition = index;
        p.current_leader_epoch = partition.role().1;
        p.leader_epoch = latest;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = self.topic_name();
        t.partitions = vec![p];
        request.topics = vec![t];
        let response: OffsetForLeaderEpochResponse = conn
            .call(ApiKey::OffsetForLeaderEpoch, OFFSET_FOR_LEADER_EPOCH_VERSION, &request)
            .await?;
        let answer = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or("empty OffsetForLeaderEpoch response")?;
        if answer.error_code != 0 {
            return Err(format!("OffsetForLeaderEpoch error {}", error_name(answer.error_code)));
        }
        if current_leader(partition, self.generation).is_none() {
            return Ok(());
        }
        let log_end = partition.log.log_end();
        // UNDEFINED (-1): the leader has no epoch as old as ours; keep what is
        // below our high watermark, which every in-sync replica had.
        let cut = if answer.end_offset < 0 {
            partition.high_watermark()
        } else {
            Offset(answer.end_offset)
        };
        if cut < log_end {
            let end = partition
                .truncate_to(cut)
                .await
                .map_err(|e| format!("truncating: {e}"))?;
            tracing::info!(%topic, partition = index, from = log_end.0, to = end.0, our_epoch = latest,
                leader_epoch = answer.leader_epoch, "follower truncated to the leader's log");
        }
        partition.replica.borrow_mut().needs_truncation = false;
        Ok(())
    }

    /// One fetch from the leader; appends what came back.
    async fn fetch_once(&self, conn: &mut LeaderConnection) -> Result<(), String> {
        let partition = self.partition;
        let fetch_offset = partition.log.log_end();
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(self.node_id);
        request.max_wait_ms = FETCH_WAIT_MAX_MS;
        request.min_bytes = 1;
        request.max_bytes = FETCH_BYTES_MAX;
        request.session_id = 0;
        request.session_epoch = -1;
        let mut p = FetchPartition::default();
        p.partition = self.index;
        p.current_leader_epoch = partition.role().1;
        p.fetch_offset = fetch_offset.0;
        p.last_fetched_epoch = -1;
        p.log_start_offset = partition.log.log_start().0;
        p.partition_max_bytes = FETCH_BYTES_MAX;
        let mut t = FetchTopic::default();
        t.topic = self.topic_name();
        t.partitions = vec![p];
        request.topics = vec![t];
        let response: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &request).await?;
        if response.error_code != 0 {
            return Err(format!("fetch error {}", error_name(response.error_code)));
        }
        let data = response
            .responses
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .ok_or("empty fetch response")?;
        if data.error_code != 0 {
            return Err(format!("fetch error {}", error_name(data.error_code)));
        }
        // The image may have moved on while the fetch was parked on the leader.
        if current_leader(partition, self.generation).is_none() || partition.log.log_end() != fetch_offset {
            return Ok(());
        }
        if let Some(records) = data.records.filter(|r| !r.is_empty()) {
            partition
                .append_replicated(records)
                .await
                .map_err(|e| format!("appending replicated batches: {e}"))?;
        }
        partition.follow_high_watermark(Offset(data.high_watermark));
        Ok(())
    }
}

fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("{code}"),
    }
}

/// Keeps the ISR of every partition this shard leads up to date. Runs until
/// shutdown.
pub(crate) async fn maintain_isr(shard: Rc<Shard>) {
    let lag_max = Duration::from_millis(shard.config.replica_lag_time_max_ms);
    let tick = (lag_max / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    while !shard.is_shutting_down() {
        glommio::timer::sleep(tick).await;
        let image = shard.image();
        let alive = |node: i32| image.brokers.get(&node).is_some_and(|b| !b.fenced);
        for ((topic, index), partition) in shard.open_partitions() {
            let Some((leader_epoch, isr)) = partition.desired_isr(lag_max, alive) else {
                continue;
            };
            partition.set_isr_change_in_flight(true);
            let meta = shard.meta.clone();
            let partition = Rc::clone(&partition);
            glommio::spawn_local(async move {
                tracing::info!(%topic, partition = index, leader_epoch, isr = ?isr, "proposing ISR change");
                if let Err(e) = meta.alter_isr(&topic, index, leader_epoch, isr).await {
                    tracing::info!(%topic, partition = index, error = %e, "ISR change refused");
                }
                // The image carrying the change (if any) updates the partition;
                // allow the next proposal either way.
                partition.set_isr_change_in_flight(false);
            })
            .detach();
        }
    }
}
