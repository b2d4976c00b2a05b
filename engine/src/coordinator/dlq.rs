//! Dead-letter delivery: a record a consumer group keeps failing is moved to
//! `<topic>.dlq` and the group's committed offset past it, with unmodified
//! clients. Lives on the group's coordinator shard, beside its groups.
//!
//! ## How failures are counted
//! A consumer that fails on a record and crashes (or closes) without
//! committing leaves the group's committed offset at that record; the next
//! member given the partition asks OffsetFetch and is handed the same
//! offset again. So the coordinator counts, per (group, topic, partition),
//! the group generations in which OffsetFetch handed out the same committed
//! offset X (once per generation: an admin tool describing the group, or a
//! client asking twice, adds nothing). A commit that moves the offset starts
//! the count again. When the count reaches the source topic's
//! `shardline.dlq.max.deliveries` and a record exists at X, the coordinator
//! copies that record to `<topic>.dlq` (created on first use with the
//! source's partition count and replication factor, where the principal may
//! create it; partition `p mod` its count), waits until the copy is
//! replicated, commits X+1 for the group (stored like any commit) and
//! answers the OffsetFetch with X+1: the consumer goes on past it. The
//! count is cleared as the move starts, so concurrent fetches move the
//! record once and a failed move (logged; the offset answered as stored)
//! is tried again only after as many handouts. No record at X (X is the
//! partition's end, or not yet delivered: `delivery.rs`) moves nothing.
//!
//! The record is read and the copy written where their partitions are
//! led: on this node by message, on another node as a Kafka client of its
//! leader (`remote.rs`: a Fetch up to the high watermark, a Produce with
//! acks=-1).
//!
//! The counts are kept in memory on the coordinator shard, bounded by
//! [`DELIVERY_COUNTS_MAX`]; they do not survive a coordinator restart or
//! move (the count starts again).
//!
//! ## The copy
//! The record at X (or the first after X, where a compacted log has a
//! gap; a transaction marker there moves nothing; the commit is then past
//! that record) with its key, value, timestamp and headers, and three
//! more headers: `shardline.dlq.reason` (why), `shardline.dlq.source`
//! (`topic/partition/offset`) and `shardline.dlq.group`. A compressed batch
//! is not decompressed by the broker: its copy carries those headers, a
//! null key and value, and `shardline.dlq.compressed: true`.

use std::{collections::HashMap, rc::Rc, time::Duration};

use bytes::Bytes;
use shardline_log::{build_batch_with_headers, uncompressed_records, BatchHeader, HeaderedRecord, Offset};
use shardline_raft::{AclOperation, MetadataImage, NewTopic};

use super::{record::CommittedOffset, store, Entry, FetchedOffset};
use crate::{
    acl::Access,
    error::EngineError,
    remote::{self, Lender, Place},
    shard::Shard,
};

/// Topic config: handouts of one committed offset that move its record to
/// `<topic>.dlq`; absent or 0: never.
pub(crate) const MAX_DELIVERIES_CONFIG: &str = "shardline.dlq.max.deliveries";

/// The suffix of a dead-letter topic's name.
pub(crate) const DLQ_SUFFIX: &str = ".dlq";

/// (group, topic, partition) counts one coordinator shard keeps; past it
/// new partitions are not counted (and never dead-lettered) until some
/// count is forgotten.
pub(crate) const DELIVERY_COUNTS_MAX: usize = 65_536;

/// How long moving a record waits for the copy to be replicated.
const COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes a read of the source partition on another node asks for: one, so
/// the leader answers just the batch holding the offset (a fetch returns at
/// least one whole batch, KIP-74), as the local read does.
const COPY_READ_BYTES_MAX: usize = 1;

/// Longest topic name Kafka accepts (the `.dlq` name must fit).
const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// One partition's count: the offset handed out, in how many generations,
/// and the last generation counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count {
    offset: i64,
    deliveries: u32,
    generation: i32,
}

/// Handouts of committed offsets, per (group, topic, partition).
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounts {
    counts: HashMap<(String, String, i32), Count>,
}

impl DeliveryCounts {
    /// OffsetFetch handed `offset` to `group` in `generation`: returns how
    /// many generations have been handed this same offset, this one counted.
    pub(crate) fn handed_out(&mut self, group: &str, topic: &str, partition: i32, offset: i64, generation: i32) -> u32 {
        let key = (group.to_string(), topic.to_string(), partition);
        let full = self.counts.len() >= DELIVERY_COUNTS_MAX;
        let count = match self.counts.get_mut(&key) {
            Some(count) => count,
            None if full => return 0,
            None => self.counts.entry(key).or_insert(Count {
                offset,
                deliveries: 0,
                generation: generation.wrapping_sub(1),
            }),
        };
        if count.offset != offset {
            *count = Count {
                offset,
                deliveries: 0,
                generation: generation.wrapping_sub(1),
            };
        }
        if count.generation != generation {
            count.generation = generation;
            count.deliveries = count.deliveries.saturating_add(1);
        }
        let deliveries = count.deliveries;
        assert!(self.counts.len() <= DELIVERY_COUNTS_MAX, "delivery counts bounded");
        deliveries
    }

    /// The record was moved (or the group is gone): count afresh.
    pub(crate) fn forget(&mut self, group: &str, topic: &str, partition: i32) {
        self.counts.remove(&(group.to_string(), topic.to_string(), partition));
    }
}

/// What the principal asking OffsetFetch may do with dead-letter topics,
/// decided on the shard it is connected to (the ACLs travel no further):
/// the source topics whose `.dlq` it may write (and create, if missing),
/// with their `shardline.dlq.max.deliveries`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Permits {
    max_deliveries: HashMap<String, u32>,
}

impl Permits {
    /// Every topic with dead-lettering on whose `.dlq` `access` may write,
    /// of the `wanted` partitions' topics (`None`: of every topic).
    pub(crate) fn of(image: &MetadataImage, access: &Access, wanted: Option<&[(String, i32)]>) -> Permits {
        let asked = |name: &str| wanted.is_none_or(|wanted| wanted.iter().any(|(t, _)| t == name));
        let max_deliveries = image
            .topics
            .iter()
            .filter(|(name, _)| asked(name))
            .filter_map(|(name, topic)| {
                let max = topic.configs.get(MAX_DELIVERIES_CONFIG)?.parse::<u32>().ok()?;
                let dlq = dlq_name(name)?;
                let writable = access
                    .check(image, AclOperation::Write, crate::acl::Resource::Topic(&dlq))
                    .is_ok();
                let exists_or_creatable =
                    image.topics.contains_key(&dlq) || access.may_create_topic(image, &dlq).is_ok();
                (max > 0 && writable && exists_or_creatable).then(|| (name.clone(), max))
            })
            .collect();
        Permits { max_deliveries }
    }
}

/// `<topic>.dlq`, if that is a valid topic name.
fn dlq_name(topic: &str) -> Option<String> {
    let name = format!("{topic}{DLQ_SUFFIX}");
    (name.len() <= TOPIC_NAME_LENGTH_MAX && !topic.ends_with(DLQ_SUFFIX)).then_some(name)
}

/// After OffsetFetch, on the coordinator shard: counts each handed-out
/// offset and moves the records that reached their topic's max, answering
/// the offset past them instead. A move that fails is logged and the
/// offset answered as stored (the count starts again).
pub(crate) async fn after_fetch(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    mut found: Vec<FetchedOffset>,
    permits: &Permits,
) -> Vec<FetchedOffset> {
    if permits.max_deliveries.is_empty() {
        return found;
    }
    let generation = shard
        .coordinator
        .with_group(index, group, false, |g| g.generation())
        .unwrap_or(0);
    for (topic, partition, answer) in &mut found {
        let Some(max) = permits.max_deliveries.get(topic.as_str()) else {
            continue;
        };
        let Ok(Some(committed)) = answer else { continue };
        let deliveries =
            shard
                .coordinator
                .dlq
                .borrow_mut()
                .handed_out(group, topic, *partition, committed.offset, generation);
        if deliveries < *max {
            continue;
        }
        let reason = format!(
            "offset {} handed to group {group} in {deliveries} generations without a commit ({MAX_DELIVERIES_CONFIG}={max})",
            committed.offset
        );
        // Counted afresh from here: a fetch arriving while this one moves
        // the record does not move it again, and a failed move is tried
        // again after as many handouts.
        shard.coordinator.dlq.borrow_mut().forget(group, topic, *partition);
        match move_record(shard, index, group, topic, *partition, committed.offset, &reason).await {
            Ok(Some(next)) => {
                tracing::info!(%group, %topic, partition = *partition, offset = committed.offset, "record moved to the dead-letter topic");
                committed.offset = next;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%group, %topic, partition = *partition, offset = committed.offset, error = %e,
                "moving a record to the dead-letter topic failed; its count starts again"),
        }
    }
    found
}

/// Copies the record at `offset` to `<topic>.dlq` and commits `offset + 1`
/// for the group; `None` when there is no record there to move (the
/// offset is at the partition's end).
async fn move_record(
    shard: &Rc<Shard>,
    index: i32,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    reason: &str,
) -> Result<Option<i64>, EngineError> {
    let dlq = dlq_name(topic).ok_or_else(|| EngineError::InvalidRequest(format!("{topic} has no dead-letter name")))?;
    let copy = match remote::place_of(shard, topic, partition)? {
        Place::Local(owner) => {
            let (topic, group, reason) = (topic.to_string(), group.to_string(), reason.to_string());
            shard
                .invoke_on(owner, move |s: Rc<Shard>| async move {
                    copy_of(&s, &topic, partition, offset, &group, &reason)
                })
                .await??
        }
        Place::Remote(leader) => {
            let fetched = remote::fetch(
                shard,
                &mut Lender::Pool,
                &leader,
                topic,
                partition,
                Offset(offset),
                Duration::ZERO,
                COPY_READ_BYTES_MAX,
            )
            .await?;
            // The leader answers from its log start when `offset` fell off
            // it: nothing to move then (the group is past it anyway).
            (fetched.from == Offset(offset))
                .then(|| copy_in(fetched.records.as_slice(), topic, partition, offset, group, reason))
                .flatten()
        }
    };
    let Some((copy, moved)) = copy else { return Ok(None) };
    ensure_topic(shard, topic, &dlq).await?;
    let partitions = shard.image().topics.get(&dlq).map_or(1, |t| t.partitions.len().max(1));
    let dlq_partition = partition.rem_euclid(i32::try_from(partitions).unwrap_or(1));
    match remote::place_of(shard, &dlq, dlq_partition)? {
        Place::Local(owner) => {
            shard
                .invoke_on(owner, move |s: Rc<Shard>| async move {
                    s.partition(&dlq, dlq_partition)?
                        .append_internal(Bytes::from(copy), COPY_TIMEOUT)
                        .await
                })
                .await??;
        }
        Place::Remote(leader) => {
            remote::produce(shard, &leader, &dlq, dlq_partition, Bytes::from(copy), COPY_TIMEOUT).await?;
        }
    }
    let next = moved.saturating_add(1);
    let committed = CommittedOffset {
        offset: next,
        leader_epoch: -1,
        commit_timestamp_ms: crate::kafka::unix_now_ms(),
        metadata: Some("moved to the dead-letter topic".into()),
    };
    let entry = Entry::OffsetCommit {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
        committed: committed.clone(),
    };
    let log_offset = store(shard, index, &[entry]).await?;
    let _ = shard.coordinator.with_group(index, group, false, |g| {
        g.apply_commit(topic, partition, committed, log_offset);
    });
    Ok(Some(next))
}

/// Creates `<topic>.dlq` if missing, like the source (its partitions and
/// replication factor), and waits until every shard knows it.
async fn ensure_topic(shard: &Rc<Shard>, topic: &str, dlq: &str) -> Result<(), EngineError> {
    let image = shard.image();
    if image.topics.contains_key(dlq) {
        return Ok(());
    }
    let source = image.topics.get(topic).ok_or(EngineError::UnknownTopicOrPartition)?;
    let new = NewTopic {
        name: dlq.to_string(),
        partitions: i32::try_from(source.partitions.len()).unwrap_or(1).max(1),
        replication_factor: source
            .partitions
            .first()
            .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(1).max(1)),
        configs: std::collections::BTreeMap::new(),
        assignments: Vec::new(),
    };
    drop(image);
    match shard.meta.create_topic(new).await {
        Ok(_) | Err(shardline_raft::MetaError::TopicExists(_)) => {}
        Err(e) => return Err(EngineError::Meta(e)),
    }
    crate::kafka::wait_all_shards(shard, shard.meta.image().epoch).await;
    Ok(())
}

/// On the source partition's owner: the dead-letter copy of the first
/// record at or after `offset` (there are gaps in compacted logs) and that
/// record's offset, or `None` if consumers see no record there.
fn copy_of(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    group: &str,
    reason: &str,
) -> Result<Option<(Vec<u8>, i64)>, EngineError> {
    let source = shard.partition(topic, partition)?;
    let end = source.consumer_view().high_watermark;
    if offset >= end.0 || offset < source.log.log_start().0 {
        return Ok(None);
    }
    let read = source.read(Offset(offset), 1, end)?;
    Ok(copy_in(&read.chunks, topic, partition, offset, group, reason))
}

/// The dead-letter copy of the first record at or after `offset` in
/// `chunks` (whole batches read from the source partition, below its high
/// watermark) and that record's offset; `None` if there is none or it is a
/// transaction marker.
fn copy_in(
    chunks: &[Bytes],
    topic: &str,
    partition: i32,
    offset: i64,
    group: &str,
    reason: &str,
) -> Option<(Vec<u8>, i64)> {
    let origin = format!("{topic}/{partition}");
    crate::record_walk::stored_batches(chunks)
        .find(|(header, _)| header.next_offset().0 > offset)
        .filter(|(header, _)| !header.is_control())
        .map(|(header, batch)| copy_from_batch(&header, batch, offset, &origin, group, reason))
}

/// The copy of the first record at or after `offset` of `batch` (see the
/// file's essay), and its offset (a compressed batch's: `offset`, or its
/// base offset if later).
fn copy_from_batch(
    header: &BatchHeader,
    batch: &[u8],
    offset: i64,
    origin: &str,
    group: &str,
    reason: &str,
) -> (Vec<u8>, i64) {
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("shardline.dlq.reason".into(), reason.as_bytes().to_vec()),
        ("shardline.dlq.group".into(), group.as_bytes().to_vec()),
    ];
    let mut key = None;
    let mut value = None;
    let mut timestamp_ms = header.max_timestamp_ms;
    let mut moved = offset.max(header.base_offset.0);
    let offset_of = |delta: i32| header.base_offset.0.saturating_add(i64::from(delta));
    let record = uncompressed_records(batch, header)
        .and_then(|mut records| records.find_map(|r| r.ok().filter(|r| offset_of(r.offset_delta) >= offset)));
    match record {
        Some(record) => {
            moved = offset_of(record.offset_delta);
            key = record.key;
            value = record.value;
            if !header.log_append_time() {
                timestamp_ms = header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms);
            }
            for (name, value) in record.headers {
                headers.push((
                    String::from_utf8_lossy(name).into_owned(),
                    value.unwrap_or_default().to_vec(),
                ));
            }
        }
        None => headers.push(("shardline.dlq.compressed".into(), b"true".to_vec())),
    }
    headers.push(("shardline.dlq.source".into(), format!("{origin}/{moved}").into_bytes()));
    let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    let copy = build_batch_with_headers(
        timestamp_ms,
        &[HeaderedRecord {
            key,
            value,
            headers: &borrowed,
        }],
    );
    (copy, moved)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use shardline_log::{set_base_offset, Record};

    use super::*;

    #[test]
    fn a_handout_counts_once_per_generation_until_the_offset_moves() {
        let mut counts = DeliveryCounts::default();
        assert_eq!(counts.handed_out("g", "t", 0, 5, 1), 1);
        assert_eq!(
            counts.handed_out("g", "t", 0, 5, 1),
            1,
            "the same generation asks again"
        );
        assert_eq!(counts.handed_out("g", "t", 0, 5, 2), 2);
        assert_eq!(counts.handed_out("g", "t", 1, 5, 2), 1, "per partition");
        assert_eq!(counts.handed_out("other", "t", 0, 5, 2), 1, "per group");
        assert_eq!(counts.handed_out("g", "t", 0, 5, 4), 3);
        assert_eq!(counts.handed_out("g", "t", 0, 6, 5), 1, "a commit moved it");
        counts.forget("g", "t", 0);
        assert_eq!(counts.handed_out("g", "t", 0, 6, 5), 1);
    }

    #[test]
    fn counts_are_bounded() {
        let mut counts = DeliveryCounts::default();
        for partition in 0..i32::try_from(DELIVERY_COUNTS_MAX).unwrap() {
            assert_eq!(counts.handed_out("g", "t", partition, 0, 1), 1);
        }
        assert_eq!(counts.handed_out("g", "t", -1, 0, 1), 0, "not counted when full");
        assert_eq!(counts.handed_out("g", "t", 0, 0, 2), 2, "known ones still counted");
    }

    #[test]
    fn permits_follow_the_acls_of_the_asking_principal() {
        use shardline_raft::{AclBinding, AclPatternType, AclPermission, AclResourceType, TopicMeta};

        use crate::acl::{Authorizer, Session};

        let topic = |name: &str, max: Option<&str>| {
            let configs = max
                .map(|m| (MAX_DELIVERIES_CONFIG.to_string(), m.to_string()))
                .into_iter()
                .collect();
            let meta = TopicMeta {
                name: name.to_string(),
                id: [0; 16],
                partitions: Vec::new(),
                configs,
            };
            (name.to_string(), meta)
        };
        let allow = |principal: &str, name: &str, operation: AclOperation| AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: name.to_string(),
            pattern_type: AclPatternType::Literal,
            principal: principal.to_string(),
            host: "*".to_string(),
            operation,
            permission: AclPermission::Allow,
        };
        let mut image = MetadataImage::default();
        image.topics.extend([
            topic("orders", Some("3")),
            topic("payments", Some("2")),
            topic("plain", None),
            topic("off", Some("0")),
        ]);
        image.acls.extend([
            allow("User:alice", "orders.dlq", AclOperation::Write),
            allow("User:alice", "orders.dlq", AclOperation::Create),
            // Write alone: payments.dlq does not exist and may not be created.
            allow("User:alice", "payments.dlq", AclOperation::Write),
        ]);
        let access = |who: &str| Access {
            authorizer: Rc::new(Authorizer::new(true, [], false)),
            session: Rc::new(Session::new(None, Some(who))),
        };
        let alice = Permits::of(&image, &access("alice"), None);
        assert_eq!(alice.max_deliveries, HashMap::from([("orders".to_string(), 3)]));
        assert!(Permits::of(&image, &access("bob"), None).max_deliveries.is_empty());
        let asked = [("plain".to_string(), 0)];
        assert!(Permits::of(&image, &access("alice"), Some(&asked))
            .max_deliveries
            .is_empty());
        // Once payments.dlq exists, Write is enough.
        image.topics.extend([topic("payments.dlq", None)]);
        let alice = Permits::of(&image, &access("alice"), None);
        assert_eq!(alice.max_deliveries.get("payments"), Some(&2));
        // Without an authorizer every principal may.
        let open = Access {
            authorizer: Rc::new(Authorizer::new(false, [], true)),
            session: Rc::new(Session::new(None, None)),
        };
        assert_eq!(Permits::of(&image, &open, None).max_deliveries.len(), 2);
    }

    #[test]
    fn dlq_names_fit_and_do_not_nest() {
        assert_eq!(dlq_name("orders").as_deref(), Some("orders.dlq"));
        assert_eq!(dlq_name("orders.dlq"), None);
        assert_eq!(dlq_name(&"x".repeat(246)), None);
    }

    #[test]
    fn the_copy_keeps_the_record_and_says_where_it_came_from() {
        let original = [("trace", b"abc".as_slice())];
        let records = [
            HeaderedRecord {
                key: Some(b"k0"),
                value: Some(b"fine"),
                headers: &[],
            },
            HeaderedRecord {
                key: Some(b"k1"),
                value: Some(b"poison"),
                headers: &original,
            },
        ];
        let mut batch = build_batch_with_headers(1_000, &records);
        set_base_offset(&mut batch, Offset(40));
        let header = BatchHeader::parse(&batch).unwrap();
        let (copy, moved) = copy_from_batch(&header, &batch, 41, "t/3", "g", "failed");
        assert_eq!(moved, 41);
        // A gap (a compacted log): the first record after it is moved.
        let (_, moved) = copy_from_batch(&header, &batch, 39, "t/3", "g", "failed");
        assert_eq!(moved, 40);
        let copy_header = BatchHeader::parse(&copy).unwrap();
        let copied: Vec<Record<'_>> = uncompressed_records(&copy, &copy_header)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(copied.len(), 1);
        assert_eq!(copied[0].key, Some(b"k1".as_slice()));
        assert_eq!(copied[0].value, Some(b"poison".as_slice()));
        let headers: Vec<(&[u8], Option<&[u8]>)> = copied[0].headers.collect();
        assert!(headers.contains(&(b"shardline.dlq.source".as_slice(), Some(b"t/3/41".as_slice()))));
        assert!(headers.contains(&(b"shardline.dlq.reason".as_slice(), Some(b"failed".as_slice()))));
        assert!(headers.contains(&(b"trace".as_slice(), Some(b"abc".as_slice()))));
    }
}
