//! Partition replication between brokers: the follower's fetcher and the
//! leader's in-sync-replica upkeep. Both run on the shard that owns the
//! partition on this broker.
//!
//! ## Follower
//! When the metadata image makes this broker a follower of a partition (or
//! names a new leader epoch), the partition joins this shard's fetcher for
//! that leader shard (`Fetchers::follow`), under the partition's new role
//! generation. One fetcher per (shard, leader broker, leader's shard) copies
//! all of them over one connection to that leader shard's own Kafka port
//! (the broker's shared port if shards share one), until none is left:
//! 1. truncate: for partitions new to it, ask the leader with one
//!    OffsetForLeaderEpoch where each log's latest leader epoch ends on the
//!    leader, and cut the logs where `shardline_replication::truncation_point`
//!    says (what the new leader never had is dropped, as in Kafka's KIP-101);
//! 2. fetch in a loop with `replica_id` = this broker, every followed
//!    partition in one Fetch: batches are appended byte for byte (offsets and
//!    epochs as the leader stamped them), and the leader's high watermark,
//!    bounded by the local log's end, becomes the replica's. Each fetch
//!    offset tells the leader how far this copy goes. The fetches use an
//!    incremental fetch session (KIP-227, `follower_session.rs`): after the
//!    first, a Fetch names only the partitions whose fetch offset or epoch
//!    moved, and the leader answers only those where something happened.
//!
//! A partition whose generation changed (new leader, new epoch, deleted)
//! leaves its fetcher at the next round. Connection errors back off and
//! retry; a partition-level error (NOT_LEADER, a fenced epoch) skips that
//! partition until the image moves it.
//!
//! ## Leader
//! `maintain_isr` looks at every partition this shard leads a few times per
//! `replica_lag_time_max_ms`: an in-sync follower that has not been caught up
//! for that long leaves the ISR; a replica whose log reaches the leader's end
//! joins it (the decision is `shardline_replication::ReplicaState::desired_isr`).
//! Changes go through the metadata group (`alter_isr`, fenced by leader
//! epoch and by the partition epoch the change was based on, so a retried
//! or duplicated change is never applied to a later state of the
//! partition); the partition applies them when the image arrives.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    rc::Rc,
    time::Duration,
};

use kafka_protocol::{
    messages::{
        fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
        offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
        BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    },
    protocol::StrBytes,
    ResponseError,
};
use shardline_log::Offset;
use shardline_replication::{truncation_point, EpochEnd, IsrAnswer, LeaderEpoch};

use crate::{
    follower_session::{Asked, FollowerSession},
    inter_broker::LeaderConnection,
    kafka::brokers::kafka_broker,
    partition::{Partition, Role},
    shard::{PartitionKey, Shard},
};

/// Fetch version followers speak (the highest the leader serves).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version followers speak (v3 carries replica_id).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
/// How long a follower fetch parks on the leader when there is nothing new.
const FETCH_WAIT_MAX_MS: i32 = 500;
/// Bytes a follower asks for per fetch, over all its partitions of one leader.
const FETCH_BYTES_MAX: i32 = 8 << 20;
/// Bytes a follower asks for per partition in one fetch (one hot partition
/// does not starve the others; at least one batch comes back anyway).
const PARTITION_FETCH_BYTES_MAX: i32 = 1 << 20;
/// Pause after a failed connect or fetch before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Whether the fetcher started under `generation` should go on, and the
/// leader it follows.
fn current_leader(partition: &Partition, generation: u64) -> Option<i32> {
    let state = partition.replica.borrow();
    match state.role() {
        Role::Follower { leader } if state.generation() == generation => Some(leader.0),
        _ => None,
    }
}

/// A partition this broker follows, under one generation of its role.
#[derive(Clone)]
struct Followed {
    topic: String,
    index: i32,
    partition: Rc<Partition>,
    generation: u64,
}

impl Followed {
    fn is_current(&self, leader: i32) -> bool {
        current_leader(&self.partition, self.generation) == Some(leader)
    }
}

/// The partitions one shard copies from one leader shard: one connection,
/// one Fetch (and one OffsetForLeaderEpoch) for all of them.
#[derive(Default)]
struct LeaderFeed {
    partitions: RefCell<Vec<Followed>>,
}

/// Where a feed fetches from: the leader broker and the shard there that
/// owns the feed's partitions (reached on its own port when it has one, so
/// the leader serves the fetch with no cross-core hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LeaderShard {
    pub(crate) leader: i32,
    pub(crate) shard: u32,
}

/// A shard's follower fetchers, one per leader shard it follows partitions
/// of. Lives on the shard.
#[derive(Default)]
pub(crate) struct Fetchers {
    by_leader: RefCell<HashMap<LeaderShard, Rc<LeaderFeed>>>,
}

impl Fetchers {
    /// Starts copying `partition` from `source` under role `generation`,
    /// in the fetcher for that leader shard (started if there is none).
    pub(crate) fn follow(
        &self,
        shard: &Rc<Shard>,
        source: LeaderShard,
        (topic, index): PartitionKey,
        partition: Rc<Partition>,
        generation: u64,
    ) {
        let existing = self.by_leader.borrow().get(&source).cloned();
        let started = existing.is_some();
        let feed = existing.unwrap_or_default();
        {
            let mut partitions = feed.partitions.borrow_mut();
            partitions.retain(|f| !(f.topic == topic && f.index == index));
            partitions.push(Followed {
                topic,
                index,
                partition,
                generation,
            });
        }
        if !started {
            // The partition is in the feed before its fetcher can first look.
            self.by_leader.borrow_mut().insert(source, Rc::clone(&feed));
            glommio::spawn_local(run_feed(Rc::clone(shard), source, feed)).detach();
        }
    }
}

/// Copies every partition of `feed` from `source` until none is followed
/// from it any more (or shutdown).
async fn run_feed(shard: Rc<Shard>, source: LeaderShard, feed: Rc<LeaderFeed>) {
    let node_id = shard.node_id();
    let leader = source.leader;
    let mut connection: Option<LeaderConnection> = None;
    // The fetch session of `connection` (the leader ties it to the connection).
    let mut session = FollowerSession::default();
    let mut last_error: Option<String> = None;
    loop {
        let followed: Vec<Followed> = {
            let mut partitions = feed.partitions.borrow_mut();
            partitions.retain(|f| f.is_current(leader));
            if partitions.is_empty() || shard.is_shutting_down() {
                // No await between this check and the removal: a partition
                // added from now on starts a new fetcher.
                let mut by_leader = shard.fetchers.by_leader.borrow_mut();
                if by_leader.get(&source).is_some_and(|f| Rc::ptr_eq(f, &feed)) {
                    by_leader.remove(&source);
                }
                tracing::debug!(leader, leader_shard = source.shard, "follower fetcher stopped");
                return;
            }
            partitions.clone()
        };
        if connection.is_none() {
            let inter_broker = &shard.inter_broker;
            let address = kafka_broker(&shard.image(), leader, source.shard, inter_broker.listener());
            let connected = match address {
                Some(address) => inter_broker.connect(&address.host, address.port, node_id).await,
                None => Err(format!(
                    "broker {leader} registers no listener {} in the metadata image",
                    inter_broker.listener()
                )),
            };
            match connected {
                Ok(c) => {
                    connection = Some(c);
                    session.reset();
                }
                Err(e) => {
                    note_error(&mut last_error, leader, e);
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else { continue };
        let (diverging, caught_up): (Vec<Followed>, Vec<Followed>) = followed
            .into_iter()
            .partition(|f| f.partition.replica.borrow().needs_truncation());
        let step = if diverging.is_empty() {
            fetch_once(conn, &mut session, node_id, leader, &caught_up).await
        } else {
            truncate(conn, node_id, leader, &diverging).await
        };
        match step {
            Ok(()) => last_error = None,
            Err(e) => {
                note_error(&mut last_error, leader, e);
                connection = None;
                session.reset();
                glommio::timer::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

/// Logs a fetcher error once per distinct message (a dead leader would
/// otherwise log ten lines a second).
fn note_error(last: &mut Option<String>, leader: i32, error: String) {
    if last.as_deref() != Some(error.as_str()) {
        tracing::info!(leader, %error, "follower fetch failed; retrying");
        *last = Some(error);
    }
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Asks the leader, in one OffsetForLeaderEpoch, where each partition's
/// latest epoch ends there, and truncates each log that is longer.
async fn truncate(
    conn: &mut LeaderConnection,
    node_id: i32,
    leader: i32,
    diverging: &[Followed],
) -> Result<(), String> {
    let mut asked: Vec<(&Followed, i32)> = Vec::new();
    for f in diverging {
        match f.partition.log.latest_epoch() {
            Some(latest) => asked.push((f, latest)),
            // Nothing stored: nothing can diverge.
            None => f.partition.replica.borrow_mut().truncation_done(),
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let mut request = OffsetForLeaderEpochRequest::default();
    request.replica_id = BrokerId(node_id);
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for (f, latest) in &asked {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = f.index;
        p.current_leader_epoch = f.partition.role().1;
        p.leader_epoch = *latest;
        topics.entry(f.topic.as_str()).or_default().push(p);
    }
    request.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = OffsetForLeaderTopic::default();
            t.topic = topic_name(name);
            t.partitions = partitions;
            t
        })
        .collect();
    let response: OffsetForLeaderEpochResponse = conn.call(OFFSET_FOR_LEADER_EPOCH_VERSION, &request).await?;
    for topic in &response.topics {
        for answer in &topic.partitions {
            let Some((f, latest)) = asked
                .iter()
                .find(|(f, _)| f.topic == topic.topic.0.as_str() && f.index == answer.partition)
            else {
                continue;
            };
            if answer.error_code != 0 {
                tracing::debug!(topic = %f.topic, partition = f.index, error = %error_name(answer.error_code),
                    "OffsetForLeaderEpoch refused; retrying");
                continue;
            }
            if !f.is_current(leader) {
                continue;
            }
            let log_end = f.partition.log.log_end();
            let leader_answer = if answer.end_offset < 0 {
                EpochEnd::Undefined
            } else {
                EpochEnd::Found {
                    epoch: LeaderEpoch(answer.leader_epoch),
                    end: Offset(answer.end_offset),
                }
            };
            let own_end = f
                .partition
                .log
                .end_offset_for_epoch(answer.leader_epoch)
                .map(|(_, end)| end);
            let truncation = truncation_point(
                LeaderEpoch(*latest),
                leader_answer,
                own_end,
                f.partition.high_watermark(),
                log_end,
            );
            if let Some(cut) = truncation.cut {
                let end = f
                    .partition
                    .truncate_to(cut)
                    .await
                    .map_err(|e| format!("truncating: {e}"))?;
                tracing::info!(topic = %f.topic, partition = f.index, from = log_end.0, to = end.0,
                    our_epoch = latest, leader_epoch = answer.leader_epoch, "follower truncated to the leader's log");
            }
            if !truncation.ask_again {
                f.partition.replica.borrow_mut().truncation_done();
            }
        }
    }
    Ok(())
}

/// One Fetch from the leader for every caught-up partition (naming, in a
/// session, only those whose fetch changed); appends what came back (the
/// partitions' appends run concurrently: each log syncs on its own).
async fn fetch_once(
    conn: &mut LeaderConnection,
    session: &mut FollowerSession,
    node_id: i32,
    leader: i32,
    followed: &[Followed],
) -> Result<(), String> {
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(node_id);
    request.max_wait_ms = FETCH_WAIT_MAX_MS;
    request.min_bytes = 1;
    request.max_bytes = FETCH_BYTES_MAX;
    // Every followed partition with what this fetch asks of it.
    let asked: Vec<(&Followed, Asked)> = followed
        .iter()
        .map(|f| {
            let asked = Asked {
                fetch_offset: f.partition.fetch_offset().0,
                current_leader_epoch: f.partition.role().1,
                log_start_offset: f.partition.log.log_start().0,
            };
            (f, asked)
        })
        .collect();
    let wanted: Vec<(PartitionKey, Asked)> = asked
        .iter()
        .map(|(f, asked)| ((f.topic.clone(), f.index), *asked))
        .collect();
    let next = session.next(&wanted);
    request.session_id = next.session_id;
    request.session_epoch = next.session_epoch;
    let send: std::collections::HashSet<&PartitionKey> = next.send.iter().collect();
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (f, asked) in &asked {
        if !send.contains(&(f.topic.clone(), f.index)) {
            continue;
        }
        let mut p = FetchPartition::default();
        p.partition = f.index;
        p.current_leader_epoch = asked.current_leader_epoch;
        p.fetch_offset = asked.fetch_offset;
        p.last_fetched_epoch = -1;
        p.log_start_offset = asked.log_start_offset;
        p.partition_max_bytes = PARTITION_FETCH_BYTES_MAX;
        topics.entry(f.topic.as_str()).or_default().push(p);
    }
    request.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = FetchTopic::default();
            t.topic = topic_name(name);
            t.partitions = partitions;
            t
        })
        .collect();
    let fetch_offsets: Vec<(&Followed, Offset)> = asked
        .iter()
        .map(|(f, asked)| (*f, Offset(asked.fetch_offset)))
        .collect();
    let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &next.forget {
        forgotten.entry(topic.as_str()).or_default().push(*index);
    }
    request.forgotten_topics_data = forgotten
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = ForgottenTopic::default();
            t.topic = topic_name(name);
            t.partitions = partitions;
            t
        })
        .collect();
    let response: FetchResponse = conn.call(FETCH_VERSION, &request).await?;
    if response.error_code == ResponseError::FetchSessionIdNotFound.code()
        || response.error_code == ResponseError::InvalidFetchSessionEpoch.code()
    {
        // The leader lost or refused the session: fetch in full next time.
        tracing::debug!(leader, error = %error_name(response.error_code), "follower fetch session refused");
        session.refused(response.error_code == ResponseError::FetchSessionIdNotFound.code());
        return Ok(());
    }
    if response.error_code != 0 {
        return Err(format!("fetch error {}", error_name(response.error_code)));
    }
    session.answered(response.session_id);
    let mut appends = Vec::new();
    let mut answered: std::collections::HashSet<(&str, i32)> = std::collections::HashSet::new();
    for topic in response.responses {
        for data in topic.partitions {
            let Some((f, fetch_offset)) = fetch_offsets
                .iter()
                .find(|(f, _)| f.topic == topic.topic.0.as_str() && f.index == data.partition_index)
            else {
                continue;
            };
            // A partition answered twice is taken once (the first answer).
            if !answered.insert((f.topic.as_str(), f.index)) {
                continue;
            }
            if data.error_code != 0 {
                // NOT_LEADER, a fenced epoch…: the metadata image will move this
                // partition elsewhere; the others go on.
                tracing::debug!(topic = %f.topic, partition = f.index, error = %error_name(data.error_code),
                    "follower fetch refused for a partition");
                continue;
            }
            // The image may have moved on while the fetch was parked on the
            // leader; a log whose sync failed (visible end below its log end)
            // takes nothing more. The leader's session believes this answer
            // was taken: the next fetch is full, so nothing it said is lost.
            if !f.is_current(leader) || f.partition.log.log_end() != *fetch_offset {
                session.start_over();
                continue;
            }
            let partition = Rc::clone(&f.partition);
            let records = data.records.filter(|r| !r.is_empty());
            let high_watermark = Offset(data.high_watermark);
            let leader_log_start = Offset(data.log_start_offset);
            appends.push(async move {
                if let Some(records) = records {
                    partition
                        .append_replicated(records)
                        .await
                        .map_err(|e| format!("appending replicated batches: {e}"))?;
                }
                partition.follow_high_watermark(high_watermark);
                // DeleteRecords on the leader: the follower's low watermark
                // follows it (durably), as Kafka's followers' log start does.
                let log = &partition.log;
                if leader_log_start > log.log_start() {
                    log.delete_records_before(leader_log_start.min(log.log_end()))
                        .await
                        .map_err(|e| format!("following the leader's log start: {e}"))?;
                }
                Ok::<(), String>(())
            });
        }
    }
    for result in futures_util::future::join_all(appends).await {
        result?;
    }
    Ok(())
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
        let quorum_lost = shard.out_of_quorum();
        for ((topic, index), partition) in shard.open_partitions() {
            partition.set_quorum_lost(quorum_lost);
            if quorum_lost {
                // No ISR change could commit; the others decide now.
                continue;
            }
            let Some(proposal) = partition.desired_isr(lag_max, alive) else {
                continue;
            };
            let (leader_epoch, partition_epoch) = (proposal.leader_epoch, proposal.partition_epoch);
            let isr: Vec<i32> = proposal.isr.iter().map(|node| node.0).collect();
            partition.isr_change_proposed(&proposal);
            let meta = shard.meta.clone();
            let partition = Rc::clone(&partition);
            glommio::spawn_local(async move {
                tracing::info!(
                    %topic,
                    partition = index,
                    %leader_epoch,
                    %partition_epoch,
                    isr = ?isr,
                    "proposing ISR change"
                );
                let answer = match meta.alter_isr(&topic, index, leader_epoch, partition_epoch, isr).await {
                    Ok(()) => IsrAnswer::Accepted,
                    Err(e) => {
                        tracing::info!(%topic, partition = index, error = %e, "ISR change refused or not confirmed");
                        isr_change_answer(&e)
                    }
                };
                // The image carrying the change (if any) updates the partition;
                // allow the next proposal either way. Until that image (or a
                // refusal), the high watermark waits for the replicas the
                // change adds, and an unconfirmed change is proposed again
                // (`ReplicaState::isr_change_answered`).
                partition.isr_change_answered(answer);
            })
            .detach();
        }
    }
}

/// What an error from the metadata group says of an ISR change: refused on
/// its merits, refused because the partition moved on to a newer leader
/// epoch or partition epoch (a retried forward whose first copy was taken
/// included), or (no quorum, a timeout, a lost forward) unknown.
fn isr_change_answer(error: &shardline_raft::MetaError) -> IsrAnswer {
    use shardline_raft::MetaError;
    match error {
        MetaError::StaleLeaderEpoch { .. } | MetaError::StalePartitionEpoch { .. } => IsrAnswer::Stale,
        MetaError::InvalidIsr { .. } | MetaError::UnknownTopic(_) | MetaError::UnknownPartition { .. } => {
            IsrAnswer::Refused
        }
        _ => IsrAnswer::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use shardline_raft::{MetaError, PartitionEpoch};

    use super::*;

    #[test]
    fn metadata_answers_tell_the_leader_what_became_of_its_isr_change() {
        let stale_partition = MetaError::StalePartitionEpoch {
            topic: "t".into(),
            partition: 0,
            partition_epoch: PartitionEpoch(4),
        };
        // A retried forward whose first copy was taken answers this too:
        // it says nothing of that first copy.
        assert_eq!(isr_change_answer(&stale_partition), IsrAnswer::Stale);
        let stale_leader = MetaError::StaleLeaderEpoch {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: 3,
        };
        assert_eq!(isr_change_answer(&stale_leader), IsrAnswer::Stale);
        let invalid = MetaError::InvalidIsr {
            topic: "t".into(),
            partition: 0,
            reason: "r".into(),
        };
        assert_eq!(isr_change_answer(&invalid), IsrAnswer::Refused);
        assert_eq!(
            isr_change_answer(&MetaError::NotLeader { leader: None }),
            IsrAnswer::Unknown,
            "no quorum: it may still be taken"
        );
        assert_eq!(isr_change_answer(&MetaError::ShuttingDown), IsrAnswer::Unknown);
    }
}
