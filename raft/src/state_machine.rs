//! The metadata state machine: the image, applying committed commands to it,
//! and building / installing snapshots.
//!
//! Apply is a pure function of (image, entry): no clock, no randomness, no
//! I/O, so every replica computes the same image and the same rejections.
//! Each command is checked completely before anything is changed, so a
//! rejected command leaves the image as it was (only `epoch` and
//! `controller_id` move, as for every entry).
//!
//! ## Placement
//! Only unfenced brokers get new replicas.
//! - Leader of a new partition: the unfenced broker leading the fewest
//!   partitions, ties to the lowest node id. Replicas: the leader, then the
//!   next unfenced brokers in node-id order (wrapping), `replication_factor`
//!   in all. The ISR starts as all replicas.
//! - Shard of each replica: on the leader, the shard leading the fewest
//!   partitions (then hosting the fewest replicas); on a follower, the shard
//!   hosting the fewest replicas (then leading the fewest); ties to the
//!   lowest index. With one replica both are "fewest partitions".
//! - A broker that re-registers with fewer shards: every replica it hosts on
//!   a shard that no longer exists moves, in (topic name, partition index)
//!   order, the k-th to shard `k % shards`; where it leads, the leader epoch
//!   is bumped.
//!
//! ## Leadership
//! - `FenceBroker { n }`: `n` is fenced; where `n` leads, it leaves the ISR
//!   (unless it is the last member) and the first replica that is in the
//!   ISR and unfenced leads (leader epoch + 1), or nobody (`-1`, epoch + 1);
//!   where `n` follows in the ISR, it leaves it (unless it is the last).
//! - `UnfenceBroker { n }` and `RegisterBroker(n)`: `n` is unfenced and
//!   leads every leaderless partition whose ISR holds it (epoch + 1).
//!   `RegisterBroker(n)` of a broker registered before means it restarted:
//!   first it is treated as fenced (it leaves ISRs unless last, and what it
//!   led moves on, epoch + 1), so it never leads on under an epoch whose
//!   unsynced writes it may have lost.
//! - `AlterIsr`: the partition's leader, at its current leader epoch and
//!   partition epoch, sets the ISR (a subset of the replicas holding the
//!   leader; a broker it adds must be unfenced). No leader epoch bump.
//!
//! ## Partition epochs
//! Every command that changes a partition's leader, leader epoch, shard,
//! ISR, replicas, their shards or its reassignment bumps its partition
//! epoch by one ([`apply_command`] compares each partition before and
//! after, so no change can forget it; asserted). An `AlterIsr` names the
//! partition epoch it was based on and is refused unless it is still the
//! partition's: a duplicated or retried proposal, or one made before a
//! fence or a return, is never applied to a state its leader did not see
//! (KIP-497; docs/reliability.md, simulation bug 6).
//!
//! These three rules are `shardline_replication::election`'s (shared with
//! the simulator); this file applies their decisions to the image.
//!
//! The state itself is persisted through snapshots (`snapshot.rs`) plus the
//! log: on open the state machine starts from the snapshot file and openraft
//! re-applies the committed entries after it.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Cursor,
    sync::Arc,
};

use shardline_replication::{
    election::{self, IsrRefusal},
    IsrProposal, LeaderEpoch, NodeId, PartitionEpoch, Placement,
};
use tokio::sync::watch;

use crate::{
    command::{Command, CommandResponse, IsrChange},
    error::MetaError,
    image::{BrokerInfo, MetadataImage, NewTopic, PartitionMeta, Reassignment, TopicMeta, NO_LEADER},
    snapshot::{decode_image, encode_image, LoadedSnapshot, SnapshotStore, StoredSnapshot},
    types::{storage_error, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig},
    validate::{
        collision_key, validate_topic_config, validate_topic_name, CONFIG_ENTRIES_MAX, PARTITIONS_PER_TOPIC_MAX,
    },
};

/// Most shards one broker may register. Shard indexes are `u32`, but a
/// machine with more cores than this is not one broker's worth of shards.
pub const SHARDS_PER_BROKER_MAX: u32 = 4096;

/// Longest broker host name (DNS names are at most 253 characters).
pub const BROKER_HOST_LENGTH_MAX: usize = 253;

/// Partition counts used to balance placement.
#[derive(Debug, Default)]
struct Load {
    /// Partitions led, by broker.
    led_by_broker: BTreeMap<i32, usize>,
    /// Partitions led, by (broker, shard).
    led_by_shard: BTreeMap<(i32, u32), usize>,
    /// Replicas hosted (led or followed), by (broker, shard).
    hosted_by_shard: BTreeMap<(i32, u32), usize>,
}

impl Load {
    fn of(image: &MetadataImage) -> Load {
        let mut load = Load::default();
        for partition in image.topics.values().flat_map(|topic| topic.partitions.iter()) {
            for (broker, shard) in partition.replicas.iter().zip(partition.replica_shards.iter()) {
                load.count_replica(*broker, *shard, *broker == partition.leader);
            }
        }
        load
    }

    fn count_replica(&mut self, broker: i32, shard: u32, leads: bool) {
        *self.hosted_by_shard.entry((broker, shard)).or_default() += 1;
        if leads {
            *self.led_by_broker.entry(broker).or_default() += 1;
            *self.led_by_shard.entry((broker, shard)).or_default() += 1;
        }
    }

    /// The shard of `broker` (with `shards` shards) for a new replica.
    fn pick_shard(&self, broker: i32, shards: u32, leads: bool) -> u32 {
        let led = |shard: u32| self.led_by_shard.get(&(broker, shard)).copied().unwrap_or(0);
        let hosted = |shard: u32| self.hosted_by_shard.get(&(broker, shard)).copied().unwrap_or(0);
        // min_by_key keeps the first minimum: ties go to the lowest index.
        let shard = if leads {
            (0..shards).min_by_key(|shard| (led(*shard), hosted(*shard)))
        } else {
            (0..shards).min_by_key(|shard| (hosted(*shard), led(*shard)))
        };
        shard.unwrap_or(0)
    }

    /// Places one new partition on the unfenced brokers.
    ///
    /// # Panics
    /// If `replication_factor` is 0 or exceeds the unfenced brokers: callers
    /// validate it first.
    fn place(&mut self, brokers: &BTreeMap<i32, BrokerInfo>, index: i32, replication_factor: usize) -> PartitionMeta {
        let eligible: Vec<&BrokerInfo> = brokers.values().filter(|broker| !broker.fenced).collect();
        assert!(replication_factor >= 1 && replication_factor <= eligible.len());
        // min_by_key keeps the first minimum: ties go to the lowest node id.
        let leader_position = eligible
            .iter()
            .enumerate()
            .min_by_key(|(_, broker)| self.led_by_broker.get(&broker.node_id).copied().unwrap_or(0))
            .map_or(0, |(position, _)| position);
        let chosen: Vec<i32> = eligible
            .iter()
            .cycle()
            .skip(leader_position)
            .take(replication_factor)
            .map(|broker| broker.node_id)
            .collect();
        let partition = self.place_on(brokers, index, &chosen);
        assert_eq!(partition.replicas.len(), replication_factor);
        partition
    }

    /// Places one new partition on `replicas` (checked: distinct,
    /// registered), the first leading; each replica's shard is picked by
    /// load.
    fn place_on(&mut self, brokers: &BTreeMap<i32, BrokerInfo>, index: i32, replicas: &[i32]) -> PartitionMeta {
        assert!(!replicas.is_empty(), "a partition has a replica");
        let mut replica_shards = Vec::with_capacity(replicas.len());
        for (position, node_id) in replicas.iter().enumerate() {
            let shards = brokers.get(node_id).map_or(1, |broker| broker.shards);
            assert!(shards >= 1, "broker {node_id} registered with zero shards");
            let leads = position == 0;
            let shard = self.pick_shard(*node_id, shards, leads);
            self.count_replica(*node_id, shard, leads);
            replica_shards.push(shard);
        }
        let partition = PartitionMeta {
            index,
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            shard: replica_shards.first().copied().unwrap_or(0),
            isr: replicas.to_vec(),
            replicas: replicas.to_vec(),
            leader_epoch: 0,
            replica_shards,
            reassignment: None,
            partition_epoch: PartitionEpoch(0),
        };
        assert_partition_consistent(&partition);
        partition
    }
}

/// Checks replica lists given by hand for new partitions `first_index..`:
/// each names distinct, registered, unfenced brokers, and all have the
/// same length (`replication_factor` if given). Returns that length.
fn check_assignments(
    image: &MetadataImage,
    topic: &str,
    first_index: i32,
    assignments: &[Vec<i32>],
    replication_factor: Option<usize>,
) -> Result<usize, MetaError> {
    let expected = replication_factor
        .or_else(|| assignments.first().map(Vec::len))
        .unwrap_or(0);
    for (index, replicas) in (first_index..).zip(assignments) {
        let refuse = |reason: String| MetaError::InvalidReassignment {
            topic: topic.to_owned(),
            partition: index,
            reason,
        };
        let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
        if replicas.is_empty() || distinct.len() != replicas.len() {
            return Err(refuse(format!(
                "the replicas {replicas:?} must be distinct and not empty"
            )));
        }
        if replicas.len() != expected {
            return Err(refuse(format!(
                "{} replicas where the topic's partitions have {expected}",
                replicas.len()
            )));
        }
        if let Some(unknown) = replicas
            .iter()
            .find(|b| image.brokers.get(b).is_none_or(|broker| broker.fenced))
        {
            return Err(refuse(format!("broker {unknown} is not registered or is fenced")));
        }
    }
    assert!(expected >= 1 || assignments.is_empty(), "a checked list is not empty");
    Ok(expected)
}

/// The invariants every partition of an applied image keeps.
///
/// # Panics
/// If one is broken: apply keeps them and `decode_image` refuses images
/// without them, so a break is a bug in this file.
fn assert_partition_consistent(partition: &PartitionMeta) {
    assert_eq!(
        partition.replicas.len(),
        partition.replica_shards.len(),
        "partition {}: replicas and replica shards differ in length",
        partition.index
    );
    assert!(
        !partition.isr.is_empty() && partition.isr.iter().all(|member| partition.replicas.contains(member)),
        "partition {}: ISR {:?} is empty or not within replicas {:?}",
        partition.index,
        partition.isr,
        partition.replicas
    );
    assert!(
        partition.leader == NO_LEADER
            || (partition.isr.contains(&partition.leader)
                && partition.shard_on(partition.leader) == Some(partition.shard)),
        "partition {}: leader {} on shard {} is not an ISR member on that shard",
        partition.index,
        partition.leader,
        partition.shard
    );
    if let Some(reassignment) = &partition.reassignment {
        let mut ends: Vec<i32> = reassignment.from.clone();
        ends.extend(reassignment.adding());
        assert_eq!(
            partition.replicas, ends,
            "partition {}: replicas are not the reassignment's from followed by what it adds",
            partition.index
        );
    }
}

fn check_configs<'a>(
    entries: impl ExactSizeIterator<Item = (&'a String, Option<&'a String>)>,
) -> Result<(), MetaError> {
    if entries.len() > CONFIG_ENTRIES_MAX {
        return Err(MetaError::InvalidConfig {
            key: String::new(),
            value: None,
            reason: format!("more than {CONFIG_ENTRIES_MAX} configs in one request"),
        });
    }
    for (key, value) in entries {
        validate_topic_config(key, value.map(String::as_str))?;
    }
    Ok(())
}

fn topic_mut<'a>(image: &'a mut MetadataImage, name: &str) -> Result<&'a mut TopicMeta, MetaError> {
    image
        .topics
        .get_mut(name)
        .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))
}

fn check_partition_count(requested: i32, current: usize) -> Result<(), MetaError> {
    let current = i32::try_from(current).unwrap_or(i32::MAX);
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&requested) || requested <= current {
        return Err(MetaError::InvalidPartitions { requested, current });
    }
    Ok(())
}

fn unfenced_brokers(image: &MetadataImage) -> usize {
    image.brokers.values().filter(|broker| !broker.fenced).count()
}

/// Checks a replication factor against the unfenced brokers.
fn check_replication_factor(image: &MetadataImage, requested: i16) -> Result<usize, MetaError> {
    let replicas = match requested {
        -1 => 1,
        requested => usize::try_from(requested).unwrap_or(0),
    };
    let brokers = unfenced_brokers(image);
    if replicas < 1 || replicas > brokers {
        return Err(MetaError::InvalidReplicationFactor { requested, brokers });
    }
    Ok(replicas)
}

/// Makes `leader` (a replica, or [`NO_LEADER`]) the partition's leader and
/// bumps its leader epoch.
fn change_leader(partition: &mut PartitionMeta, leader: i32) {
    partition.leader = leader;
    partition.leader_epoch = partition.leader_epoch.wrapping_add(1);
    if let Some(shard) = partition.shard_on(leader) {
        partition.shard = shard;
    }
    assert!(leader == NO_LEADER || partition.shard_on(leader) == Some(partition.shard));
}

fn every_partition_mut(image: &mut MetadataImage) -> impl Iterator<Item = &mut PartitionMeta> {
    image.topics.values_mut().flat_map(|topic| topic.partitions.iter_mut())
}

/// `node_id` leads every leaderless partition whose ISR holds it.
fn take_back_leaderless(image: &mut MetadataImage, node_id: i32) {
    for partition in every_partition_mut(image) {
        let after = election::on_return(&placement_of(partition), NodeId(node_id));
        apply_placement(partition, &after);
    }
}

/// A partition as replication's election rules see it.
fn placement_of(partition: &PartitionMeta) -> Placement {
    Placement {
        leader: (partition.leader != NO_LEADER).then_some(NodeId(partition.leader)),
        leader_epoch: LeaderEpoch(partition.leader_epoch),
        partition_epoch: partition.partition_epoch,
        replicas: partition.replicas.iter().copied().map(NodeId).collect(),
        isr: partition.isr.iter().copied().map(NodeId).collect(),
    }
}

/// Writes an election rule's decision back into the image: the ISR, and a
/// new leader through [`change_leader`] (which moves the partition's shard
/// and bumps the epoch the rule bumped). The partition epoch the rule
/// stamped is not copied: [`apply_command`] moves it, once per command.
fn apply_placement(partition: &mut PartitionMeta, after: &Placement) {
    partition.isr = after.isr.iter().map(|node| node.0).collect();
    let leader = after.leader.map_or(NO_LEADER, |node| node.0);
    if after.leader_epoch != LeaderEpoch(partition.leader_epoch) {
        change_leader(partition, leader);
    }
    assert_eq!(
        (partition.leader, partition.leader_epoch),
        (leader, after.leader_epoch.0),
        "partition {}: the image took the rule's leader and epoch",
        partition.index
    );
    assert_partition_consistent(partition);
}

/// Whether `partition` should move to its preferred replica: the first
/// replica is not leading, is unfenced and is in sync.
pub(crate) fn prefers_another_leader(brokers: &BTreeMap<i32, BrokerInfo>, partition: &PartitionMeta) -> bool {
    partition.replicas.first().is_some_and(|preferred| {
        *preferred != partition.leader
            && partition.isr.contains(preferred)
            && brokers.get(preferred).is_some_and(|b| !b.fenced)
    })
}

/// Gives every partition that [`prefers_another_leader`] its preferred
/// replica as leader (leader epoch + 1).
fn elect_preferred_leaders(image: &mut MetadataImage) {
    let brokers = image.brokers.clone();
    for partition in every_partition_mut(image) {
        if prefers_another_leader(&brokers, partition) {
            if let Some(preferred) = partition.replicas.first().copied() {
                change_leader(partition, preferred);
                assert_partition_consistent(partition);
            }
        }
    }
}

fn register_broker(image: &mut MetadataImage, broker: &BrokerInfo) -> Result<Option<TopicMeta>, MetaError> {
    let invalid = |reason: String| MetaError::InvalidBroker {
        node_id: broker.node_id,
        reason,
    };
    if broker.node_id < 0 {
        return Err(invalid("node ids are not negative".to_owned()));
    }
    if broker.shards < 1 || broker.shards > SHARDS_PER_BROKER_MAX {
        return Err(invalid(format!("shards must be between 1 and {SHARDS_PER_BROKER_MAX}")));
    }
    if broker.host.is_empty() || broker.host.len() > BROKER_HOST_LENGTH_MAX {
        return Err(invalid(format!("host must be 1 to {BROKER_HOST_LENGTH_MAX} bytes")));
    }
    if !broker.shard_ports.is_empty() && broker.shard_ports.len() != usize::try_from(broker.shards).unwrap_or(0) {
        return Err(invalid(format!(
            "{} shard ports for {} shards (one per shard, or none)",
            broker.shard_ports.len(),
            broker.shards
        )));
    }
    if broker.listeners.len() > crate::image::BROKER_LISTENERS_MAX {
        return Err(invalid(format!(
            "{} listeners, at most {}",
            broker.listeners.len(),
            crate::image::BROKER_LISTENERS_MAX
        )));
    }
    for listener in &broker.listeners {
        if listener.name.is_empty() || listener.name.len() > BROKER_HOST_LENGTH_MAX {
            return Err(invalid(format!(
                "listener names must be 1 to {BROKER_HOST_LENGTH_MAX} bytes"
            )));
        }
        if listener.host.is_empty() || listener.host.len() > BROKER_HOST_LENGTH_MAX {
            return Err(invalid(format!(
                "listener {} host must be 1 to {BROKER_HOST_LENGTH_MAX} bytes",
                listener.name
            )));
        }
        if !listener.shard_ports.is_empty() && listener.shard_ports.len() != usize::try_from(broker.shards).unwrap_or(0)
        {
            return Err(invalid(format!(
                "listener {} has {} shard ports for {} shards (one per shard, or none)",
                listener.name,
                listener.shard_ports.len(),
                broker.shards
            )));
        }
    }
    // A broker registers at start: it is alive, so unfenced. Registered
    // before, it has restarted and may have lost writes it had not synced:
    // it leads nothing on under the epoch it led before
    // (`election::on_restart`; the take-back below is its second half).
    let restarted = image.brokers.contains_key(&broker.node_id);
    let registered = BrokerInfo {
        fenced: false,
        ..broker.clone()
    };
    image.brokers.insert(broker.node_id, registered);
    if restarted {
        let fenced: BTreeSet<i32> = image.brokers.values().filter(|b| b.fenced).map(|b| b.node_id).collect();
        for partition in every_partition_mut(image) {
            if partition.isr.contains(&broker.node_id) || partition.leader == broker.node_id {
                let after = election::on_fence(&placement_of(partition), NodeId(broker.node_id), |node| {
                    fenced.contains(&node.0)
                });
                apply_placement(partition, &after);
            }
        }
    }

    // Re-place the replicas on shards that no longer exist, round-robin.
    let mut moved: u32 = 0;
    for partition in every_partition_mut(image) {
        let Some(position) = partition.replicas.iter().position(|replica| *replica == broker.node_id) else {
            continue;
        };
        let Some(shard) = partition.replica_shards.get_mut(position) else {
            continue;
        };
        if *shard >= broker.shards {
            *shard = moved % broker.shards;
            moved = moved.wrapping_add(1);
            if partition.leader == broker.node_id {
                partition.shard = *shard;
                partition.leader_epoch = partition.leader_epoch.wrapping_add(1);
            }
            assert_partition_consistent(partition);
        }
    }
    take_back_leaderless(image, broker.node_id);
    assert!(image
        .topics
        .values()
        .flat_map(|topic| topic.partitions.iter())
        .filter_map(|partition| partition.shard_on(broker.node_id))
        .all(|shard| shard < broker.shards));
    Ok(None)
}

fn registered_broker(image: &mut MetadataImage, node_id: i32) -> Result<&mut BrokerInfo, MetaError> {
    image.brokers.get_mut(&node_id).ok_or_else(|| MetaError::InvalidBroker {
        node_id,
        reason: "no broker with this id is registered".to_owned(),
    })
}

fn fence_broker(image: &mut MetadataImage, node_id: i32) -> Result<Option<TopicMeta>, MetaError> {
    let broker = registered_broker(image, node_id)?;
    if broker.fenced {
        return Ok(None);
    }
    broker.fenced = true;
    let fenced: BTreeSet<i32> = image
        .brokers
        .values()
        .filter(|broker| broker.fenced)
        .map(|broker| broker.node_id)
        .collect();
    for partition in every_partition_mut(image) {
        if !partition.isr.contains(&node_id) && partition.leader != node_id {
            continue;
        }
        let after = election::on_fence(&placement_of(partition), NodeId(node_id), |node| {
            fenced.contains(&node.0)
        });
        apply_placement(partition, &after);
        assert_ne!(partition.leader, node_id);
    }
    Ok(None)
}

fn unfence_broker(image: &mut MetadataImage, node_id: i32) -> Result<Option<TopicMeta>, MetaError> {
    let broker = registered_broker(image, node_id)?;
    broker.fenced = false;
    take_back_leaderless(image, node_id);
    Ok(None)
}

fn alter_isr(image: &mut MetadataImage, change: &IsrChange) -> Result<Option<TopicMeta>, MetaError> {
    let invalid = |reason: String| MetaError::InvalidIsr {
        topic: change.topic.clone(),
        partition: change.partition,
        reason,
    };
    let topic = image
        .topics
        .get(&change.topic)
        .ok_or_else(|| MetaError::UnknownTopic(change.topic.clone()))?;
    let partition = usize::try_from(change.partition)
        .ok()
        .and_then(|position| topic.partitions.get(position))
        .ok_or_else(|| MetaError::UnknownPartition {
            topic: change.topic.clone(),
            partition: change.partition,
        })?;
    let stale = MetaError::StaleLeaderEpoch {
        topic: change.topic.clone(),
        partition: change.partition,
        leader: partition.leader,
        leader_epoch: partition.leader_epoch,
    };
    if change.leader == NO_LEADER {
        return Err(stale);
    }
    let proposal = IsrProposal {
        leader: NodeId(change.leader),
        leader_epoch: LeaderEpoch(change.leader_epoch),
        // A command from before partition epochs is checked as it was then.
        partition_epoch: change.partition_epoch.unwrap_or(partition.partition_epoch),
        isr: change.isr.iter().copied().map(NodeId).collect(),
    };
    let decided = election::on_isr_change(&placement_of(partition), &proposal, |node| {
        image.brokers.get(&node.0).is_some_and(|broker| !broker.fenced)
    })
    .map_err(|refusal| match refusal {
        IsrRefusal::StaleLeaderEpoch => stale,
        IsrRefusal::StalePartitionEpoch => MetaError::StalePartitionEpoch {
            topic: change.topic.clone(),
            partition: change.partition,
            partition_epoch: partition.partition_epoch,
        },
        IsrRefusal::LeaderNotInIsr => invalid(format!("the ISR must hold the leader {}", change.leader)),
        IsrRefusal::Duplicate => invalid("a broker appears twice".to_owned()),
        IsrRefusal::NotAReplica(stranger) => invalid(format!(
            "broker {stranger} is not a replica (replicas {:?})",
            partition.replicas
        )),
        IsrRefusal::FencedNewcomer(newcomer) => invalid(format!("broker {newcomer} is fenced or not registered")),
    })?;
    let isr: Vec<i32> = decided.isr.iter().map(|node| node.0).collect();
    let brokers = image.brokers.clone();
    let topic = topic_mut(image, &change.topic)?;
    if let Some(partition) = usize::try_from(change.partition)
        .ok()
        .and_then(|position| topic.partitions.get_mut(position))
    {
        partition.isr = isr;
        finish_reassignment_if_in_sync(&brokers, partition);
        assert_partition_consistent(partition);
    }
    Ok(None)
}

/// After the ISR shrank around a reassignment: a leader no longer in it
/// hands over to the first unfenced ISR member (leader epoch + 1), or to
/// nobody.
fn keep_leader_in_isr(brokers: &BTreeMap<i32, BrokerInfo>, partition: &mut PartitionMeta) {
    if partition.isr.contains(&partition.leader) {
        return;
    }
    let isr: Vec<NodeId> = partition.isr.iter().copied().map(NodeId).collect();
    let next = election::elect_leader(&isr, &isr, |node| brokers.get(&node.0).is_some_and(|b| !b.fenced));
    change_leader(partition, next.map_or(NO_LEADER, |node| node.0));
}

/// Completes a partition's reassignment once every broker of its target is
/// in sync: the replicas become the target, the ISR keeps the members in
/// it, and a leader that is not in it hands over to the first in-sync,
/// unfenced broker of the target (leader epoch + 1).
fn finish_reassignment_if_in_sync(brokers: &BTreeMap<i32, BrokerInfo>, partition: &mut PartitionMeta) {
    let Some(reassignment) = partition.reassignment.clone() else {
        return;
    };
    if !reassignment.to.iter().all(|broker| partition.isr.contains(broker)) {
        return;
    }
    let replica_shards: Vec<u32> = reassignment
        .to
        .iter()
        .map(|broker| partition.shard_on(*broker))
        .collect::<Option<Vec<u32>>>()
        .unwrap_or_else(|| panic!("partition {}: a target broker holds no replica", partition.index));
    partition.isr = reassignment.to.clone();
    partition.replicas = reassignment.to.clone();
    partition.replica_shards = replica_shards;
    partition.reassignment = None;
    keep_leader_in_isr(brokers, partition);
    assert!(partition.reassignment.is_none() && partition.replicas == partition.isr);
}

/// Starts (`Some`) or cancels (`None`) a partition's reassignment.
fn reassign_partition(
    image: &mut MetadataImage,
    topic_name: &str,
    index: i32,
    target: Option<&[i32]>,
) -> Result<Option<TopicMeta>, MetaError> {
    let refuse = |reason: String| MetaError::InvalidReassignment {
        topic: topic_name.to_owned(),
        partition: index,
        reason,
    };
    let load = Load::of(image);
    let brokers = image.brokers.clone();
    let topic = topic_mut(image, topic_name)?;
    let partition = usize::try_from(index)
        .ok()
        .and_then(|position| topic.partitions.get_mut(position))
        .ok_or_else(|| MetaError::UnknownPartition {
            topic: topic_name.to_owned(),
            partition: index,
        })?;
    let Some(target) = target else {
        let Some(reassignment) = partition.reassignment.clone() else {
            return Err(MetaError::NoReassignmentInProgress {
                topic: topic_name.to_owned(),
                partition: index,
            });
        };
        // Back to `from`: the brokers it added leave (and the ISR and the
        // leadership with them), unless none of `from` is in sync any more.
        let isr: Vec<i32> = partition
            .isr
            .iter()
            .copied()
            .filter(|member| reassignment.from.contains(member))
            .collect();
        if isr.is_empty() {
            return Err(refuse(
                "no broker of the replicas before the move is in sync: cancelling would lose data".to_owned(),
            ));
        }
        let shards: Vec<u32> = reassignment
            .from
            .iter()
            .filter_map(|b| partition.shard_on(*b))
            .collect();
        assert_eq!(
            shards.len(),
            reassignment.from.len(),
            "every original replica is still placed"
        );
        partition.replicas = reassignment.from.clone();
        partition.replica_shards = shards;
        partition.isr = isr;
        partition.reassignment = None;
        keep_leader_in_isr(&brokers, partition);
        assert_partition_consistent(partition);
        return Ok(Some(topic.clone()));
    };
    if partition.reassignment.is_some() {
        return Err(refuse("a reassignment is in progress: cancel it first".to_owned()));
    }
    let distinct: BTreeSet<i32> = target.iter().copied().collect();
    if target.is_empty() || distinct.len() != target.len() {
        return Err(refuse(format!(
            "the replicas {target:?} must be distinct and not empty"
        )));
    }
    if let Some(unknown) = target
        .iter()
        .find(|b| brokers.get(b).is_none_or(|broker| broker.fenced))
    {
        return Err(refuse(format!("broker {unknown} is not registered or is fenced")));
    }
    if target == partition.replicas.as_slice() {
        return Ok(Some(topic.clone()));
    }
    let from = partition.replicas.clone();
    for broker in target.iter().filter(|b| !from.contains(b)) {
        let shards = brokers.get(broker).map_or(1, |b| b.shards);
        partition.replicas.push(*broker);
        partition.replica_shards.push(load.pick_shard(*broker, shards, false));
    }
    partition.reassignment = Some(Reassignment {
        from,
        to: target.to_vec(),
    });
    // Dropping replicas, or only reordering them: in sync already.
    finish_reassignment_if_in_sync(&brokers, partition);
    assert_partition_consistent(partition);
    Ok(Some(topic.clone()))
}

fn create_topic(image: &mut MetadataImage, topic: &NewTopic, id: &[u8; 16]) -> Result<Option<TopicMeta>, MetaError> {
    validate_topic_name(&topic.name)?;
    if image.topics.contains_key(&topic.name) {
        return Err(MetaError::TopicExists(topic.name.clone()));
    }
    let key = collision_key(&topic.name);
    if let Some(existing) = image.topics.keys().find(|existing| collision_key(existing) == key) {
        return Err(MetaError::TopicNameCollision {
            topic: topic.name.clone(),
            existing: existing.clone(),
        });
    }
    check_partition_count(topic.partitions, 0)?;
    let replicas = if topic.assignments.is_empty() {
        check_replication_factor(image, topic.replication_factor)?
    } else {
        if usize::try_from(topic.partitions).ok() != Some(topic.assignments.len()) {
            return Err(MetaError::InvalidPartitions {
                requested: topic.partitions,
                current: 0,
            });
        }
        let wanted = usize::try_from(topic.replication_factor).ok();
        check_assignments(image, &topic.name, 0, &topic.assignments, wanted)?
    };
    check_configs(topic.configs.iter().map(|(key, value)| (key, Some(value))))?;
    if id == &[0; 16] || image.topic_by_id(id).is_some() {
        // The proposer draws 128 random bits; either case is a proposer bug.
        return Err(MetaError::Raft(format!("topic id {id:02x?} is zero or already in use")));
    }

    let mut load = Load::of(image);
    let partitions = (0..topic.partitions)
        .zip(topic.assignments.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(index, assigned)| match assigned {
            Some(replicas) => load.place_on(&image.brokers, index, replicas),
            None => load.place(&image.brokers, index, replicas),
        })
        .collect();
    let created = TopicMeta {
        name: topic.name.clone(),
        id: *id,
        partitions,
        configs: topic.configs.clone(),
    };
    image.topics.insert(created.name.clone(), created.clone());
    Ok(Some(created))
}

fn create_partitions(
    image: &mut MetadataImage,
    name: &str,
    total: i32,
    assignments: &[Vec<i32>],
) -> Result<Option<TopicMeta>, MetaError> {
    let topic = image
        .topics
        .get(name)
        .ok_or_else(|| MetaError::UnknownTopic(name.to_owned()))?;
    let current = topic.partitions.len();
    check_partition_count(total, current)?;
    let replication_factor = topic
        .partitions
        .first()
        .map_or(1, |partition| partition.replicas.len().max(1));
    let first_new = i32::try_from(current).unwrap_or(i32::MAX);
    let replicas = if assignments.is_empty() {
        check_replication_factor(image, i16::try_from(replication_factor).unwrap_or(i16::MAX))?
    } else {
        if i32::try_from(assignments.len()).ok() != Some(total - first_new) {
            return Err(MetaError::InvalidPartitions {
                requested: total,
                current: first_new,
            });
        }
        check_assignments(image, name, first_new, assignments, Some(replication_factor))?
    };
    let mut load = Load::of(image);
    let added: Vec<PartitionMeta> = (first_new..total)
        .zip(assignments.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(index, assigned)| match assigned {
            Some(listed) => load.place_on(&image.brokers, index, listed),
            None => load.place(&image.brokers, index, replicas),
        })
        .collect();
    let topic = topic_mut(image, name)?;
    topic.partitions.extend(added);
    assert_eq!(topic.partitions.len(), usize::try_from(total).unwrap_or(0));
    Ok(Some(topic.clone()))
}

fn alter_topic_configs(
    image: &mut MetadataImage,
    name: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Option<TopicMeta>, MetaError> {
    if !image.topics.contains_key(name) {
        return Err(MetaError::UnknownTopic(name.to_owned()));
    }
    check_configs(changes.iter().map(|(key, value)| (key, value.as_ref())))?;
    let topic = topic_mut(image, name)?;
    for (key, value) in changes {
        match value {
            Some(value) => topic.configs.insert(key.clone(), value.clone()),
            None => topic.configs.remove(key),
        };
    }
    Ok(Some(topic.clone()))
}

/// Applies one command to the image, and bumps the partition epoch of
/// every partition it changed. On `Err` the image is unchanged.
pub(crate) fn apply_command(image: &mut MetadataImage, command: &Command) -> Result<Option<TopicMeta>, MetaError> {
    // A copy of the topics per command: the state machine already copies
    // the whole image per entry (copy on write), and metadata writes are rare.
    let before = image.topics.clone();
    let answer = apply_command_to_partitions(image, command);
    stamp_partition_epochs(&before, image);
    // The answer shows the epochs just stamped (a deleted topic as it was).
    answer.map(|topic| topic.map(|topic| image.topics.get(&topic.name).cloned().unwrap_or(topic)))
}

/// Bumps the partition epoch of every partition of `image` that differs
/// from its state in `before` (same topic id), once.
///
/// # Panics
/// If a partition epoch moved outside this function (a change that
/// stamped itself would be stamped twice, or one that moved it back).
fn stamp_partition_epochs(before: &BTreeMap<String, TopicMeta>, image: &mut MetadataImage) {
    for topic in image.topics.values_mut() {
        let Some(was) = before.get(&topic.name).filter(|was| was.id == topic.id) else {
            continue;
        };
        for (partition, previous) in topic.partitions.iter_mut().zip(&was.partitions) {
            assert_eq!(
                partition.partition_epoch, previous.partition_epoch,
                "partition {}-{}: only apply_command moves the partition epoch",
                topic.name, partition.index
            );
            let changed = partition != previous;
            if changed {
                partition.partition_epoch = previous.partition_epoch.next();
            }
            assert!(
                changed == (partition.partition_epoch > previous.partition_epoch),
                "partition {}-{}: the partition epoch moves exactly when the partition changes",
                topic.name,
                partition.index
            );
        }
    }
}

/// Applies one command to the image, partition epochs aside.
fn apply_command_to_partitions(image: &mut MetadataImage, command: &Command) -> Result<Option<TopicMeta>, MetaError> {
    match command {
        Command::InitCluster { cluster_id } => {
            if image.cluster_id.is_empty() && !cluster_id.is_empty() {
                image.cluster_id = cluster_id.clone();
            }
            Ok(None)
        }
        Command::RegisterBroker(broker) => register_broker(image, broker),
        Command::CreateTopic { topic, id } => create_topic(image, topic, id),
        Command::DeleteTopic { name } => image
            .topics
            .remove(name)
            .map(Some)
            .ok_or_else(|| MetaError::UnknownTopic(name.clone())),
        Command::CreatePartitions {
            name,
            total,
            assignments,
        } => create_partitions(image, name, *total, assignments),
        Command::AlterTopicConfigs { name, changes } => alter_topic_configs(image, name, changes),
        Command::FenceBroker { node_id } => fence_broker(image, *node_id),
        Command::UnfenceBroker { node_id } => unfence_broker(image, *node_id),
        Command::AlterIsr(change) => alter_isr(image, change),
        Command::ElectPreferredLeaders => {
            elect_preferred_leaders(image);
            Ok(None)
        }
        Command::ReassignPartition {
            topic,
            partition,
            target,
        } => reassign_partition(image, topic, *partition, target.as_deref()),
        Command::CreateAcls(acls) => create_acls(image, acls).map(|()| None),
        Command::AlterScramCredentials { upsertions, deletions } => {
            alter_scram_credentials(image, upsertions, deletions).map(|()| None)
        }
        Command::DeleteAcls(acls) => {
            for acl in acls {
                image.acls.remove(acl);
            }
            Ok(None)
        }
    }
}

/// Sets `upsertions` and removes `deletions`, all or none: each credential
/// valid, each deletion of one that exists, no (user, mechanism) twice, and
/// the credentials within [`SCRAM_CREDENTIALS_MAX`](crate::SCRAM_CREDENTIALS_MAX).
fn alter_scram_credentials(
    image: &mut MetadataImage,
    upsertions: &[crate::ScramCredential],
    deletions: &[(String, crate::ScramMechanism)],
) -> Result<(), MetaError> {
    let invalid = |reason: String| MetaError::InvalidCredential { reason };
    let mut named = std::collections::BTreeSet::new();
    for credential in upsertions {
        credential.validate().map_err(invalid)?;
        if !named.insert((credential.user.as_str(), credential.mechanism)) {
            return Err(invalid(format!(
                "{} {} named twice",
                credential.user,
                credential.mechanism.name()
            )));
        }
    }
    for (user, mechanism) in deletions {
        if !named.insert((user.as_str(), *mechanism)) {
            return Err(invalid(format!("{user} {} named twice", mechanism.name())));
        }
        if !image.scram_credentials.contains_key(&(user.clone(), *mechanism)) {
            return Err(invalid(format!("{user} has no {} credential", mechanism.name())));
        }
    }
    let added = upsertions
        .iter()
        .filter(|c| !image.scram_credentials.contains_key(&(c.user.clone(), c.mechanism)))
        .count();
    let after = (image.scram_credentials.len() + added).saturating_sub(deletions.len());
    if after > crate::credential::SCRAM_CREDENTIALS_MAX {
        return Err(invalid(format!(
            "{after} credentials would pass the limit of {}",
            crate::credential::SCRAM_CREDENTIALS_MAX
        )));
    }
    for key in deletions {
        image.scram_credentials.remove(key);
    }
    for credential in upsertions {
        image
            .scram_credentials
            .insert((credential.user.clone(), credential.mechanism), credential.clone());
    }
    assert!(
        image.scram_credentials.len() <= crate::credential::SCRAM_CREDENTIALS_MAX,
        "the credential table is bounded"
    );
    Ok(())
}

/// Adds `acls` to the image, all or none: each must be valid and the set
/// must stay within [`ACLS_MAX`](crate::ACLS_MAX).
fn create_acls(image: &mut MetadataImage, acls: &[crate::AclBinding]) -> Result<(), MetaError> {
    for acl in acls {
        acl.validate().map_err(|reason| MetaError::InvalidAcl { reason })?;
    }
    let new: std::collections::BTreeSet<&crate::AclBinding> =
        acls.iter().filter(|acl| !image.acls.contains(*acl)).collect();
    if image.acls.len() + new.len() > crate::acl::ACLS_MAX {
        return Err(MetaError::InvalidAcl {
            reason: format!(
                "{} ACLs exist and {} more would pass the limit of {}",
                image.acls.len(),
                new.len(),
                crate::acl::ACLS_MAX
            ),
        });
    }
    image.acls.extend(new.into_iter().cloned());
    assert!(image.acls.len() <= crate::acl::ACLS_MAX, "the ACL set is bounded");
    Ok(())
}

/// The state machine openraft drives. Lives on the raft thread.
pub(crate) struct StateMachine {
    /// The current image; copied on write when readers still hold it.
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    /// Every applied change goes out here.
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    /// Distinguishes snapshots built at the same log id.
    snapshot_sequence: u64,
}

impl StateMachine {
    /// Opens the state machine from the snapshot in `snapshots` (if any) and
    /// publishes its image.
    pub(crate) fn open(
        snapshots: Arc<SnapshotStore>,
        loaded: Option<LoadedSnapshot>,
        publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    ) -> StateMachine {
        let (image, last_applied, last_membership) = match loaded {
            Some((meta, image)) => (image, meta.last_log_id, meta.last_membership),
            None => (MetadataImage::empty(), None, StoredMembership::default()),
        };
        let state_machine = StateMachine {
            image: Arc::new(image),
            last_applied,
            last_membership,
            snapshots,
            publisher,
            snapshot_sequence: 0,
        };
        state_machine.publish();
        state_machine
    }

    fn publish(&self) {
        self.publisher.send_replace(Arc::clone(&self.image));
    }

    fn apply_entry(&mut self, entry: Entry) -> CommandResponse {
        let image = Arc::make_mut(&mut self.image);
        assert!(
            self.last_applied
                .is_none_or(|applied| applied.index < entry.log_id.index),
            "entry {} applied after {:?}",
            entry.log_id,
            self.last_applied
        );
        self.last_applied = Some(entry.log_id);
        image.epoch = entry.log_id.index;
        if entry.log_id.leader_id.term > 0 {
            image.controller_id = i32::try_from(entry.log_id.leader_id.node_id).unwrap_or(-1);
        }
        match entry.payload {
            openraft::EntryPayload::Blank => CommandResponse::none(),
            openraft::EntryPayload::Normal(command) => CommandResponse(apply_command(image, &command)),
            openraft::EntryPayload::Membership(membership) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                CommandResponse::none()
            }
        }
    }
}

/// Builds a snapshot of the image as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    sequence: u64,
}

impl openraft::RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let image_bytes = encode_image(&self.image);
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, self.sequence),
            None => format!("0-0-{}", self.sequence),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, image_bytes };
        let snapshot = stored.to_snapshot();
        self.snapshots.save(stored).map_err(|error| {
            storage_error(
                openraft::ErrorSubject::Snapshot(Some(snapshot.meta.signature())),
                openraft::ErrorVerb::Write,
                &error,
            )
        })?;
        tracing::info!(snapshot = %snapshot.meta, "metadata snapshot written");
        Ok(snapshot)
    }
}

impl openraft::storage::RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let epoch_before = self.image.epoch;
        let responses: Vec<CommandResponse> = entries.into_iter().map(|entry| self.apply_entry(entry)).collect();
        if self.image.epoch > epoch_before {
            self.publish();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshot_sequence += 1;
        SnapshotBuilder {
            image: Arc::clone(&self.image),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: Arc::clone(&self.snapshots),
            sequence: self.snapshot_sequence,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || openraft::ErrorSubject::Snapshot(Some(meta.signature()));
        let image_bytes = snapshot.into_inner();
        let image =
            decode_image(&image_bytes).map_err(|error| storage_error(subject(), openraft::ErrorVerb::Read, &error))?;
        let expected_epoch = meta.last_log_id.map_or(0, |log_id| log_id.index);
        if image.epoch != expected_epoch {
            let error = MetaError::Raft(format!(
                "snapshot image has epoch {} but ends at index {expected_epoch}",
                image.epoch
            ));
            return Err(storage_error(subject(), openraft::ErrorVerb::Read, &error));
        }
        self.snapshots
            .save(StoredSnapshot {
                meta: meta.clone(),
                image_bytes,
            })
            .map_err(|error| storage_error(subject(), openraft::ErrorVerb::Write, &error))?;
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publish();
        tracing::info!(snapshot = %meta, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshots.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: i32, shards: u32) -> BrokerInfo {
        BrokerInfo {
            node_id,
            host: "localhost".into(),
            port: 9092,
            shards,
            fenced: false,
            shard_ports: Vec::new(),
            listeners: Vec::new(),
        }
    }

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        }
    }

    fn id(seed: u8) -> [u8; 16] {
        [seed; 16]
    }

    fn image_with_broker(shards: u32) -> MetadataImage {
        let mut image = MetadataImage::empty();
        apply_command(&mut image, &Command::RegisterBroker(broker(1, shards))).unwrap();
        image
    }

    fn shards_of(topic: &TopicMeta) -> Vec<u32> {
        topic.partitions.iter().map(|partition| partition.shard).collect()
    }

    /// CreateTopics and CreatePartitions with replicas given by hand: each
    /// partition on exactly its list, the first leading; lists that repeat
    /// a broker, name an unknown or fenced one, differ in length, or do not
    /// match the counts are refused and change nothing.
    #[test]
    fn replicas_given_by_hand_are_placed_as_given() {
        let mut image = MetadataImage::empty();
        for node in 1..=3 {
            apply_command(&mut image, &Command::RegisterBroker(broker(node, 2))).unwrap();
        }
        let topic = NewTopic {
            assignments: vec![vec![2, 3], vec![3, 1], vec![1, 2]],
            ..new_topic("placed", 3)
        };
        let created = apply_command(&mut image, &Command::CreateTopic { topic, id: id(1) })
            .unwrap()
            .unwrap();
        let placed: Vec<(Vec<i32>, i32)> = created
            .partitions
            .iter()
            .map(|p| (p.replicas.clone(), p.leader))
            .collect();
        assert_eq!(placed, vec![(vec![2, 3], 2), (vec![3, 1], 3), (vec![1, 2], 1)]);
        let grown = apply_command(
            &mut image,
            &Command::CreatePartitions {
                name: "placed".into(),
                total: 4,
                assignments: vec![vec![3, 2]],
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(grown.partitions[3].replicas, vec![3, 2]);
        assert_eq!(grown.partitions[3].leader, 3);

        apply_command(&mut image, &Command::FenceBroker { node_id: 3 }).unwrap();
        let before = image.clone();
        for (partitions, assignments) in [
            (2, vec![vec![1, 1], vec![2, 1]]),
            (2, vec![vec![1, 9], vec![2, 1]]),
            (2, vec![vec![1, 3], vec![2, 1]]),
            (2, vec![vec![1, 2], vec![2]]),
            (3, vec![vec![1, 2], vec![2, 1]]),
            (1, vec![vec![]]),
        ] {
            let topic = NewTopic {
                assignments: assignments.clone(),
                ..new_topic("refused", partitions)
            };
            let refused = apply_command(&mut image, &Command::CreateTopic { topic, id: id(2) });
            assert!(
                matches!(
                    refused,
                    Err(MetaError::InvalidReassignment { .. } | MetaError::InvalidPartitions { .. })
                ),
                "{assignments:?}: {refused:?}"
            );
        }
        let refused = apply_command(
            &mut image,
            &Command::CreatePartitions {
                name: "placed".into(),
                total: 6,
                assignments: vec![vec![1, 2]],
            },
        );
        assert!(
            matches!(refused, Err(MetaError::InvalidPartitions { .. })),
            "{refused:?}"
        );
        assert_eq!(image, before, "refusals change nothing");
    }

    #[test]
    fn partitions_spread_over_shards_least_loaded_first() {
        let mut image = image_with_broker(4);
        let command = Command::CreateTopic {
            topic: new_topic("a", 6),
            id: id(1),
        };
        let a = apply_command(&mut image, &command).unwrap().unwrap();
        assert_eq!(shards_of(&a), vec![0, 1, 2, 3, 0, 1]);
        // Shards 2 and 3 hold one partition, 0 and 1 hold two.
        let command = Command::CreateTopic {
            topic: new_topic("b", 3),
            id: id(2),
        };
        let b = apply_command(&mut image, &command).unwrap().unwrap();
        assert_eq!(shards_of(&b), vec![2, 3, 0]);
        for partition in &b.partitions {
            assert_eq!(partition.leader, 1);
            assert_eq!(partition.replicas, vec![1]);
            assert_eq!(partition.leader_epoch, 0);
        }
    }

    #[test]
    fn leaders_spread_over_brokers() {
        let mut image = MetadataImage::empty();
        for node_id in [3, 1, 2] {
            apply_command(&mut image, &Command::RegisterBroker(broker(node_id, 2))).unwrap();
        }
        let mut topic = new_topic("t", 6);
        topic.replication_factor = 2;
        let created = apply_command(&mut image, &Command::CreateTopic { topic, id: id(1) })
            .unwrap()
            .unwrap();
        let leaders: Vec<i32> = created.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        let replicas: Vec<Vec<i32>> = created.partitions.iter().map(|p| p.replicas.clone()).collect();
        assert_eq!(replicas[2], vec![3, 1]);
        // Each broker leads one partition on each of its two shards (leader
        // balance first; follower replicas fill in where they can).
        assert_eq!(shards_of(&created), vec![0, 1, 1, 1, 0, 0]);
        let load = Load::of(&image);
        assert_eq!(load.led_by_shard.len(), 6);
        assert!(load.led_by_shard.values().all(|led| *led == 1));
        assert_eq!(load.hosted_by_shard.values().sum::<usize>(), 12);
    }

    fn three_brokers_with_rf3(shards: u32, partitions: i32) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for node_id in 1..=3 {
            apply_command(&mut image, &Command::RegisterBroker(broker(node_id, shards))).unwrap();
        }
        let topic = NewTopic {
            replication_factor: 3,
            ..new_topic("t", partitions)
        };
        apply_command(&mut image, &Command::CreateTopic { topic, id: id(1) }).unwrap();
        image
    }

    fn partition(image: &MetadataImage, index: i32) -> PartitionMeta {
        image.partition("t", index).unwrap().clone()
    }

    fn fence(image: &mut MetadataImage, node_id: i32) {
        apply_command(image, &Command::FenceBroker { node_id }).unwrap();
    }

    #[test]
    fn rf3_places_distinct_brokers_all_in_sync() {
        let image = three_brokers_with_rf3(2, 6);
        for p in &image.topic("t").unwrap().partitions {
            let distinct: BTreeSet<i32> = p.replicas.iter().copied().collect();
            assert_eq!(distinct.len(), 3);
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.replicas[0], p.leader);
            assert_eq!(p.replica_shards.len(), 3);
            assert!(p.replica_shards.iter().all(|shard| *shard < 2));
            assert_eq!(p.shard_on(p.leader), Some(p.shard));
        }
        let leaders: Vec<i32> = image.topic("t").unwrap().partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        // Four replicas too many for three brokers; fenced ones do not count.
        let mut image = image;
        let too_many = NewTopic {
            replication_factor: 4,
            ..new_topic("u", 1)
        };
        let error = apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: too_many,
                id: id(2),
            },
        )
        .unwrap_err();
        assert!(matches!(error, MetaError::InvalidReplicationFactor { brokers: 3, .. }));
        fence(&mut image, 3);
        let three = NewTopic {
            replication_factor: 3,
            ..new_topic("u", 1)
        };
        let error = apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: three,
                id: id(2),
            },
        )
        .unwrap_err();
        assert!(matches!(error, MetaError::InvalidReplicationFactor { brokers: 2, .. }));
        let error = apply_command(
            &mut image,
            &Command::CreatePartitions {
                name: "t".into(),
                total: 7,
                assignments: Vec::new(),
            },
        )
        .unwrap_err();
        assert!(matches!(
            error,
            MetaError::InvalidReplicationFactor {
                requested: 3,
                brokers: 2
            }
        ));
        let two = NewTopic {
            replication_factor: 2,
            ..new_topic("u", 4)
        };
        let created = apply_command(&mut image, &Command::CreateTopic { topic: two, id: id(2) })
            .unwrap()
            .unwrap();
        assert!(created.partitions.iter().all(|p| !p.replicas.contains(&3)));
    }

    #[test]
    fn fencing_the_leader_moves_leadership_down_the_isr() {
        let mut image = three_brokers_with_rf3(2, 3);
        let before = partition(&image, 0);
        assert_eq!((before.leader, before.replicas.clone()), (1, vec![1, 2, 3]));
        fence(&mut image, 1);
        assert!(image.brokers[&1].fenced);
        let after = partition(&image, 0);
        assert_eq!(after.leader, 2);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert_eq!(after.isr, vec![2, 3]);
        assert_eq!(Some(after.shard), after.shard_on(2));
        // Partition 1 (led by 2) only loses 1 from its ISR: no epoch bump.
        let other = partition(&image, 1);
        assert_eq!((other.leader, other.leader_epoch), (2, 0));
        assert_eq!(other.isr, vec![2, 3]);
        // Fencing again changes nothing.
        let fenced_once = image.clone();
        fence(&mut image, 1);
        assert_eq!(image.topics, fenced_once.topics);
    }

    /// Found by the simulator (docs/reliability.md, bug 2): a leader that
    /// restarted before its session timed out led on under its old epoch
    /// without the unsynced records its followers had copied.
    #[test]
    fn a_broker_registering_again_leads_nothing_under_its_old_epoch() {
        let mut image = three_brokers_with_rf3(2, 3);
        let before = partition(&image, 0);
        assert_eq!((before.leader, before.leader_epoch), (1, 0));
        apply_command(&mut image, &Command::RegisterBroker(broker(1, 2))).unwrap();
        let after = partition(&image, 0);
        assert_eq!((after.leader, after.leader_epoch), (2, 1), "leadership moved on");
        assert_eq!(after.isr, vec![2, 3], "it rejoins once caught up");
        assert!(!image.brokers[&1].fenced);
        // Where it only followed, the leader and epoch stay.
        let other = partition(&image, 1);
        assert_eq!((other.leader, other.leader_epoch), (2, 0));
        // Alone in the ISR, it leads again, under a new epoch.
        let mut single = MetadataImage::empty();
        apply_command(&mut single, &Command::RegisterBroker(broker(1, 1))).unwrap();
        apply_command(
            &mut single,
            &Command::CreateTopic {
                topic: new_topic("t", 1),
                id: id(1),
            },
        )
        .unwrap();
        apply_command(&mut single, &Command::RegisterBroker(broker(1, 1))).unwrap();
        let alone = partition(&single, 0);
        assert_eq!((alone.leader, alone.leader_epoch, alone.isr.clone()), (1, 2, vec![1]));
    }

    #[test]
    fn preferred_leaders_return_only_when_unfenced_and_in_sync() {
        let mut image = three_brokers_with_rf3(2, 3);
        let before = partition(&image, 0);
        assert_eq!(before.replicas.first(), Some(&1));
        fence(&mut image, 1);
        assert_eq!(partition(&image, 0).leader, 2);
        // Fenced and out of the ISR: nothing moves.
        apply_command(&mut image, &Command::ElectPreferredLeaders).unwrap();
        assert_eq!(partition(&image, 0).leader, 2);
        // Unfenced but still out of the ISR: nothing moves either.
        apply_command(&mut image, &Command::UnfenceBroker { node_id: 1 }).unwrap();
        apply_command(&mut image, &Command::ElectPreferredLeaders).unwrap();
        let p = partition(&image, 0);
        assert_eq!(p.leader, 2);
        assert!(!p.isr.contains(&1));
        // Back in sync (its leader says so): leadership returns, epoch + 1.
        let epoch = p.leader_epoch;
        set_isr(&mut image, "t", vec![2, 3, 1]);
        apply_command(&mut image, &Command::ElectPreferredLeaders).unwrap();
        let p = partition(&image, 0);
        assert_eq!((p.leader, p.leader_epoch), (1, epoch + 1));
        assert_eq!(Some(p.shard), p.shard_on(1));
        // Already preferred everywhere: applying again changes nothing.
        let settled = image.clone();
        apply_command(&mut image, &Command::ElectPreferredLeaders).unwrap();
        assert_eq!(image.topics, settled.topics);
        assert!(image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .all(|p| !prefers_another_leader(&image.brokers, p)));
    }

    #[test]
    fn fencing_every_isr_member_leaves_the_partition_offline_until_one_returns() {
        let mut image = three_brokers_with_rf3(2, 3);
        fence(&mut image, 1);
        fence(&mut image, 2);
        let p = partition(&image, 0);
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
        let epoch = p.leader_epoch;
        fence(&mut image, 3);
        let p = partition(&image, 0);
        assert_eq!(p.leader, NO_LEADER);
        assert!(!p.is_online());
        assert_eq!(p.isr, vec![3], "the last in-sync replica stays");
        assert_eq!(p.leader_epoch, epoch + 1);
        // Broker 1 comes back: it is not in the ISR, so it leads nothing.
        apply_command(&mut image, &Command::UnfenceBroker { node_id: 1 }).unwrap();
        assert_eq!(partition(&image, 0).leader, NO_LEADER);
        // Broker 3 comes back: it leads again.
        apply_command(&mut image, &Command::UnfenceBroker { node_id: 3 }).unwrap();
        let p = partition(&image, 0);
        assert_eq!(p.leader, 3);
        assert_eq!(p.leader_epoch, epoch + 2);
        assert_eq!(Some(p.shard), p.shard_on(3));
        assert!(!image.brokers[&3].fenced);
        // Registering also unfences.
        fence(&mut image, 3);
        assert_eq!(partition(&image, 0).leader, NO_LEADER);
        apply_command(&mut image, &Command::RegisterBroker(broker(3, 2))).unwrap();
        assert!(!image.brokers[&3].fenced);
        assert_eq!(partition(&image, 0).leader, 3);
        // Unknown brokers cannot be fenced.
        let error = apply_command(&mut image, &Command::FenceBroker { node_id: 9 }).unwrap_err();
        assert!(matches!(error, MetaError::InvalidBroker { node_id: 9, .. }));
    }

    #[test]
    fn alter_isr_checks_leader_epoch_and_membership() {
        let mut image = three_brokers_with_rf3(2, 1);
        // A change based on the partition as `image` has it.
        let change_of = |image: &MetadataImage, leader: i32, leader_epoch: i32, isr: Vec<i32>| {
            Command::AlterIsr(IsrChange {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch,
                partition_epoch: Some(partition(image, 0).partition_epoch),
                isr,
            })
        };
        let first = change_of(&image, 1, 0, vec![3, 1]);
        apply_command(&mut image, &first).unwrap();
        let change = |leader: i32, leader_epoch: i32, isr: Vec<i32>| change_of(&image, leader, leader_epoch, isr);
        assert_eq!(partition(&image, 0).isr, vec![1, 3], "kept in replicas order");
        assert_eq!(partition(&image, 0).leader_epoch, 0);
        let before = image.clone();
        type IsExpected = fn(&MetaError) -> bool;
        let cases: Vec<(Command, IsExpected)> = vec![
            (change(1, 1, vec![1]), |e| {
                matches!(
                    e,
                    MetaError::StaleLeaderEpoch {
                        leader: 1,
                        leader_epoch: 0,
                        ..
                    }
                )
            }),
            (change(2, 0, vec![2]), |e| {
                matches!(e, MetaError::StaleLeaderEpoch { .. })
            }),
            (change(1, 0, vec![2, 3]), |e| matches!(e, MetaError::InvalidIsr { .. })),
            (change(1, 0, vec![1, 4]), |e| matches!(e, MetaError::InvalidIsr { .. })),
            (change(1, 0, vec![1, 1]), |e| matches!(e, MetaError::InvalidIsr { .. })),
            (change(1, 0, vec![]), |e| matches!(e, MetaError::InvalidIsr { .. })),
            (
                Command::AlterIsr(IsrChange {
                    topic: "t".into(),
                    partition: 5,
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: Some(PartitionEpoch(0)),
                    isr: vec![1],
                }),
                |e| matches!(e, MetaError::UnknownPartition { partition: 5, .. }),
            ),
            (
                Command::AlterIsr(IsrChange {
                    topic: "nope".into(),
                    partition: 0,
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: Some(PartitionEpoch(0)),
                    isr: vec![1],
                }),
                |e| matches!(e, MetaError::UnknownTopic(_)),
            ),
        ];
        for (command, expected) in cases {
            let error = apply_command(&mut image, &command).unwrap_err();
            assert!(expected(&error), "{command:?} gave {error:?}");
            assert_eq!(image, before, "a rejected {command:?} changed the image");
        }
        // A fenced broker cannot be added back, but can stay.
        fence(&mut image, 2);
        let readd = change_of(&image, 1, 0, vec![1, 2, 3]);
        let error = apply_command(&mut image, &readd).unwrap_err();
        assert!(matches!(error, MetaError::InvalidIsr { .. }));
        let shrink = change_of(&image, 1, 0, vec![1]);
        apply_command(&mut image, &shrink).unwrap();
        assert_eq!(partition(&image, 0).isr, vec![1]);
    }

    /// docs/reliability.md, simulation bug 6: a proposal taken once and
    /// delivered again (a retried forward, a duplicate) after the ISR moved
    /// on was applied again, its leader epoch still current. Every change
    /// moves the partition epoch, and a change must name the current one.
    #[test]
    fn a_change_based_on_an_older_partition_epoch_is_refused() {
        let mut image = three_brokers_with_rf3(2, 1);
        let start = partition(&image, 0);
        assert_eq!((start.leader, start.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!(start.partition_epoch, PartitionEpoch(0), "a new partition");
        set_isr(&mut image, "t", vec![1, 3]);
        let shrunk = partition(&image, 0);
        assert_eq!(shrunk.partition_epoch, PartitionEpoch(1));
        // The leader proposes adding 2 back; the metadata group takes it.
        let grow = Command::AlterIsr(IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: shrunk.leader_epoch,
            partition_epoch: Some(shrunk.partition_epoch),
            isr: vec![1, 2, 3],
        });
        let answer = apply_command(&mut image, &grow).unwrap();
        assert!(answer.is_none());
        assert_eq!(partition(&image, 0).partition_epoch, PartitionEpoch(2));
        // 2 is fenced (ISR {1, 3}), then its late copy of the change comes.
        fence(&mut image, 2);
        apply_command(&mut image, &Command::UnfenceBroker { node_id: 2 }).unwrap();
        let fenced = partition(&image, 0);
        assert_eq!(
            (fenced.isr.clone(), fenced.partition_epoch),
            (vec![1, 3], PartitionEpoch(3))
        );
        assert_eq!(fenced.leader_epoch, shrunk.leader_epoch, "the leader epoch never moved");
        let before = image.clone();
        let error = apply_command(&mut image, &grow).unwrap_err();
        assert!(
            matches!(
                error,
                MetaError::StalePartitionEpoch {
                    partition_epoch: PartitionEpoch(3),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(image, before, "refused: nothing changed");
        // An unfence that changes no partition leaves its epoch alone.
        assert_eq!(partition(&image, 0).partition_epoch, PartitionEpoch(3));
        // A command from before partition epochs is checked by leader epoch
        // only, as when it was written: an old log replays to the same image.
        let legacy = Command::AlterIsr(IsrChange {
            partition_epoch: None,
            ..match grow {
                Command::AlterIsr(change) => change,
                _ => unreachable!(),
            }
        });
        apply_command(&mut image, &legacy).unwrap();
        let p = partition(&image, 0);
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1, 2, 3], PartitionEpoch(4)));
    }

    /// Every kind of change to a partition moves its partition epoch by one
    /// per command, and nothing else does.
    #[test]
    fn partition_epochs_move_with_every_change_and_only_then() {
        let mut image = three_brokers_with_rf3(2, 3);
        let epochs = |image: &MetadataImage| -> Vec<i32> {
            image
                .topic("t")
                .unwrap()
                .partitions
                .iter()
                .map(|p| p.partition_epoch.0)
                .collect()
        };
        assert_eq!(epochs(&image), vec![0, 0, 0]);
        let leaders: Vec<i32> = image.topic("t").unwrap().partitions.iter().map(|p| p.leader).collect();
        fence(&mut image, 1);
        let after_fence = epochs(&image);
        for (index, epoch) in after_fence.iter().enumerate() {
            assert_eq!(
                *epoch, 1,
                "partition {index} (led by {}): 1 left its ISR",
                leaders[index]
            );
        }
        apply_command(&mut image, &Command::ElectPreferredLeaders).unwrap();
        assert_eq!(epochs(&image), after_fence, "1 is not in sync: nothing moved");
        apply_command(
            &mut image,
            &Command::AlterTopicConfigs {
                name: "t".into(),
                changes: BTreeMap::from([("retention.ms".to_owned(), Some("5".to_owned()))]),
            },
        )
        .unwrap();
        assert_eq!(epochs(&image), after_fence, "configs are not the partition's state");
        // A restart moves what it touches, once per command.
        apply_command(&mut image, &Command::RegisterBroker(broker(2, 2))).unwrap();
        let restarted = epochs(&image);
        for (index, (before, after)) in after_fence.iter().zip(&restarted).enumerate() {
            let p = &image.topic("t").unwrap().partitions[index];
            assert!(*after == before + 1, "partition {index}: {before} -> {after} ({p:?})");
        }
        let snapshot = decode_image(&encode_image(&image)).unwrap();
        assert_eq!(epochs(&snapshot), restarted, "kept by snapshots");
    }

    #[test]
    fn new_fields_survive_a_snapshot_round_trip() {
        let mut image = three_brokers_with_rf3(3, 4);
        fence(&mut image, 1);
        fence(&mut image, 2);
        fence(&mut image, 3);
        apply_command(&mut image, &Command::UnfenceBroker { node_id: 2 }).unwrap();
        let decoded = decode_image(&encode_image(&image)).unwrap();
        assert_eq!(decoded, image);
        assert!(decoded.brokers[&1].fenced);
        assert!(decoded.topic("t").unwrap().partitions.iter().any(|p| !p.is_online()));
    }

    /// Three brokers of two shards and topic "one": 1 partition, 1 replica.
    fn three_brokers_with_rf1() -> MetadataImage {
        let mut image = MetadataImage::empty();
        for node_id in 1..=3 {
            apply_command(&mut image, &Command::RegisterBroker(broker(node_id, 2))).unwrap();
        }
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("one", 1),
                id: id(7),
            },
        )
        .unwrap();
        image
    }

    fn reassign(image: &mut MetadataImage, topic: &str, target: Option<Vec<i32>>) -> Result<(), MetaError> {
        apply_command(
            image,
            &Command::ReassignPartition {
                topic: topic.into(),
                partition: 0,
                target,
            },
        )
        .map(|_| ())
    }

    fn set_isr(image: &mut MetadataImage, topic: &str, isr: Vec<i32>) {
        let p = image.partition(topic, 0).unwrap().clone();
        apply_command(
            image,
            &Command::AlterIsr(IsrChange {
                topic: topic.into(),
                partition: 0,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: Some(p.partition_epoch),
                isr,
            }),
        )
        .unwrap();
        let after = image.partition(topic, 0).unwrap();
        assert!(after.partition_epoch > p.partition_epoch || *after == p);
    }

    #[test]
    fn a_reassignment_adds_followers_and_completes_once_they_are_in_sync() {
        let mut image = three_brokers_with_rf1();
        let before = image.partition("one", 0).unwrap().clone();
        let from = before.leader;
        let others: Vec<i32> = (1..=3).filter(|b| *b != from).collect();
        reassign(&mut image, "one", Some(others.clone())).unwrap();
        let moving = image.partition("one", 0).unwrap().clone();
        assert_eq!(
            moving.replicas,
            [vec![from], others.clone()].concat(),
            "from, then the added"
        );
        assert_eq!(moving.isr, vec![from], "added replicas start out of sync");
        assert_eq!((moving.leader, moving.leader_epoch), (from, before.leader_epoch));
        assert_eq!(moving.reassignment.as_ref().unwrap().adding(), others);
        assert_eq!(moving.reassignment.as_ref().unwrap().removing(), vec![from]);
        let again = reassign(&mut image, "one", Some(vec![from]));
        assert!(
            matches!(again, Err(MetaError::InvalidReassignment { .. })),
            "one at a time"
        );

        set_isr(&mut image, "one", vec![from, others[0]]);
        assert!(
            image.partition("one", 0).unwrap().reassignment.is_some(),
            "not all in sync yet"
        );
        set_isr(&mut image, "one", vec![from, others[0], others[1]]);
        let moved = image.partition("one", 0).unwrap().clone();
        assert_eq!(moved.replicas, others);
        assert_eq!(moved.isr, others);
        assert!(moved.reassignment.is_none());
        assert_eq!(
            moved.leader, others[0],
            "the leader left: the first of the target leads"
        );
        assert_eq!(moved.leader_epoch, before.leader_epoch + 1);
        assert_eq!(Some(moved.shard), moved.shard_on(others[0]));
    }

    #[test]
    fn a_reassignment_is_cancelled_back_to_where_it_started() {
        let mut image = three_brokers_with_rf1();
        let before = image.partition("one", 0).unwrap().clone();
        let other = (1..=3).find(|b| *b != before.leader).unwrap();
        let none = reassign(&mut image, "one", None);
        assert!(matches!(none, Err(MetaError::NoReassignmentInProgress { .. })));
        reassign(&mut image, "one", Some(vec![other])).unwrap();
        reassign(&mut image, "one", None).unwrap();
        let after = image.partition("one", 0).unwrap();
        assert_eq!(
            after,
            &PartitionMeta {
                partition_epoch: PartitionEpoch(2),
                ..before
            },
            "as if nothing happened, but for the two changes' partition epochs"
        );
    }

    #[test]
    fn reordering_or_dropping_replicas_completes_at_once_and_bad_targets_are_refused() {
        let mut image = three_brokers_with_rf3(2, 1);
        let before = partition(&image, 0);
        reassign(&mut image, "t", Some(before.replicas.clone())).unwrap();
        assert_eq!(partition(&image, 0), before, "the current replicas: nothing to do");
        let mut reversed = before.replicas.clone();
        reversed.reverse();
        reversed.pop();
        reassign(&mut image, "t", Some(reversed.clone())).unwrap();
        let after = partition(&image, 0);
        assert_eq!(after.replicas, reversed);
        assert!(after.reassignment.is_none());
        for bad in [vec![], vec![2, 2], vec![9], vec![1, 2, 3, 4]] {
            let refused = reassign(&mut image, "t", Some(bad.clone()));
            assert!(matches!(refused, Err(MetaError::InvalidReassignment { .. })), "{bad:?}");
        }
        fence(&mut image, 3);
        let fenced = reassign(&mut image, "t", Some(vec![3]));
        assert!(matches!(fenced, Err(MetaError::InvalidReassignment { .. })));
        let decoded = decode_image(&encode_image(&image)).unwrap();
        assert_eq!(decoded, image);
    }

    #[test]
    fn a_reassignment_in_progress_survives_a_snapshot() {
        let mut image = three_brokers_with_rf1();
        reassign(&mut image, "one", Some(vec![1, 2, 3])).unwrap();
        assert!(image.partition("one", 0).unwrap().reassignment.is_some());
        let decoded = decode_image(&encode_image(&image)).unwrap();
        assert_eq!(decoded, image);
    }

    #[test]
    fn fewer_shards_move_follower_replicas_without_epoch_bumps() {
        let mut image = three_brokers_with_rf3(4, 8);
        let before = image.topic("t").unwrap().partitions.clone();
        apply_command(&mut image, &Command::RegisterBroker(broker(2, 1))).unwrap();
        for (p, was) in image.topic("t").unwrap().partitions.iter().zip(&before) {
            assert_eq!(p.shard_on(2), Some(0));
            if was.leader == 2 {
                // Registering again is a restart: what it led moves on.
                assert_eq!((p.leader_epoch, p.leader == 2), (was.leader_epoch + 1, false), "{p:?}");
            } else {
                assert_eq!((p.leader, p.leader_epoch), (was.leader, was.leader_epoch), "{p:?}");
            }
        }
    }

    #[test]
    fn fewer_shards_replace_round_robin_and_bump_epochs() {
        let mut image = image_with_broker(4);
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("a", 8),
                id: id(1),
            },
        )
        .unwrap();
        apply_command(&mut image, &Command::RegisterBroker(broker(1, 2))).unwrap();
        let a = image.topic("a").unwrap();
        // Partitions on shards 2,3 (indexes 2,3,6,7) move to 0,1,0,1.
        assert_eq!(shards_of(a), vec![0, 1, 0, 1, 0, 1, 0, 1]);
        // Registering again is a restart: the only broker stops leading and
        // takes every partition back (epoch + 2), the moved ones included.
        let epochs: Vec<i32> = a.partitions.iter().map(|p| p.leader_epoch).collect();
        assert_eq!(epochs, vec![2; 8]);
        // More shards later: nothing moves.
        apply_command(&mut image, &Command::RegisterBroker(broker(1, 8))).unwrap();
        assert_eq!(shards_of(image.topic("a").unwrap()), vec![0, 1, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn every_validation_error() {
        let mut image = image_with_broker(2);
        let created = Command::CreateTopic {
            topic: new_topic("t", 1),
            id: id(1),
        };
        apply_command(&mut image, &created).unwrap();
        let before = image.clone();

        type IsExpected = fn(&MetaError) -> bool;
        let cases: Vec<(Command, IsExpected)> = vec![
            (
                Command::CreateTopic {
                    topic: new_topic("t", 1),
                    id: id(2),
                },
                |e| matches!(e, MetaError::TopicExists(_)),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("bad name", 1),
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidTopicName(_)),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", 0),
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", PARTITIONS_PER_TOPIC_MAX + 1),
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: NewTopic {
                        replication_factor: 2,
                        ..new_topic("u", 1)
                    },
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidReplicationFactor { brokers: 1, .. }),
            ),
            (
                Command::CreateTopic {
                    topic: NewTopic {
                        replication_factor: 0,
                        ..new_topic("u", 1)
                    },
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidReplicationFactor { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: NewTopic {
                        configs: [("cleanup.policy".to_owned(), "shred".to_owned())].into(),
                        ..new_topic("u", 1)
                    },
                    id: id(2),
                },
                |e| matches!(e, MetaError::InvalidConfig { .. }),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", 1),
                    id: id(1),
                },
                |e| matches!(e, MetaError::Raft(_)),
            ),
            (
                Command::CreateTopic {
                    topic: new_topic("u", 1),
                    id: [0; 16],
                },
                |e| matches!(e, MetaError::Raft(_)),
            ),
            (Command::DeleteTopic { name: "nope".into() }, |e| {
                matches!(e, MetaError::UnknownTopic(_))
            }),
            (
                Command::CreatePartitions {
                    name: "nope".into(),
                    total: 3,
                    assignments: Vec::new(),
                },
                |e| matches!(e, MetaError::UnknownTopic(_)),
            ),
            (
                Command::CreatePartitions {
                    name: "t".into(),
                    total: 1,
                    assignments: Vec::new(),
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::CreatePartitions {
                    name: "t".into(),
                    total: -5,
                    assignments: Vec::new(),
                },
                |e| matches!(e, MetaError::InvalidPartitions { .. }),
            ),
            (
                Command::AlterTopicConfigs {
                    name: "nope".into(),
                    changes: BTreeMap::new(),
                },
                |e| matches!(e, MetaError::UnknownTopic(_)),
            ),
            (
                Command::AlterTopicConfigs {
                    name: "t".into(),
                    changes: [
                        ("retention.ms".to_owned(), Some("5".to_owned())),
                        ("bogus".to_owned(), None),
                    ]
                    .into(),
                },
                |e| matches!(e, MetaError::InvalidConfig { .. }),
            ),
            (Command::RegisterBroker(broker(2, 0)), |e| {
                matches!(e, MetaError::InvalidBroker { .. })
            }),
            (Command::RegisterBroker(broker(-1, 1)), |e| {
                matches!(e, MetaError::InvalidBroker { .. })
            }),
        ];
        for (command, expected) in cases {
            let error = apply_command(&mut image, &command).unwrap_err();
            assert!(expected(&error), "{command:?} gave {error:?}");
            assert_eq!(image, before, "a rejected {command:?} changed the image");
        }

        // '.' vs '_' collision.
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("a.b", 1),
                id: id(3),
            },
        )
        .unwrap();
        let error = apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("a_b", 1),
                id: id(4),
            },
        )
        .unwrap_err();
        assert!(matches!(error, MetaError::TopicNameCollision { .. }));
    }

    #[test]
    fn no_brokers_means_no_topics() {
        let mut image = MetadataImage::empty();
        let error = apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("t", 1),
                id: id(1),
            },
        )
        .unwrap_err();
        assert!(matches!(error, MetaError::InvalidReplicationFactor { brokers: 0, .. }));
    }

    #[test]
    fn alter_sets_and_deletes() {
        let mut image = image_with_broker(1);
        let mut topic = new_topic("t", 1);
        topic.configs.insert("retention.ms".into(), "100".into());
        apply_command(&mut image, &Command::CreateTopic { topic, id: id(1) }).unwrap();
        let changes = [
            ("retention.ms".to_owned(), None),
            ("shardline.fsync".to_owned(), Some("interval:10".to_owned())),
        ]
        .into();
        let altered = apply_command(
            &mut image,
            &Command::AlterTopicConfigs {
                name: "t".into(),
                changes,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            altered.configs,
            [("shardline.fsync".to_owned(), "interval:10".to_owned())].into()
        );
    }

    #[test]
    fn create_partitions_grows_and_balances() {
        let mut image = image_with_broker(3);
        apply_command(
            &mut image,
            &Command::CreateTopic {
                topic: new_topic("t", 2),
                id: id(1),
            },
        )
        .unwrap();
        let grown = apply_command(
            &mut image,
            &Command::CreatePartitions {
                name: "t".into(),
                total: 5,
                assignments: Vec::new(),
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(shards_of(&grown), vec![0, 1, 2, 0, 1]);
        let indexes: Vec<i32> = grown.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut image = MetadataImage::empty();
        apply_command(
            &mut image,
            &Command::InitCluster {
                cluster_id: "one".into(),
            },
        )
        .unwrap();
        apply_command(
            &mut image,
            &Command::InitCluster {
                cluster_id: "two".into(),
            },
        )
        .unwrap();
        assert_eq!(image.cluster_id, "one");
    }

    #[test]
    fn scram_credentials_change_all_or_none() {
        use crate::credential::tests::sample_credential;
        use crate::ScramMechanism::{Sha256, Sha512};
        let mut image = MetadataImage::empty();
        let alter = |upsertions, deletions| Command::AlterScramCredentials { upsertions, deletions };
        apply_command(
            &mut image,
            &alter(
                vec![sample_credential("carol", Sha256), sample_credential("carol", Sha512)],
                vec![],
            ),
        )
        .unwrap();
        assert_eq!(image.scram_credentials.len(), 2);
        let missing = apply_command(
            &mut image,
            &alter(vec![sample_credential("dave", Sha256)], vec![("erin".into(), Sha256)]),
        );
        assert!(matches!(missing, Err(MetaError::InvalidCredential { .. })));
        assert_eq!(image.scram_credentials.len(), 2, "a refused command changes nothing");
        let twice = alter(vec![sample_credential("dave", Sha256)], vec![("dave".into(), Sha256)]);
        assert!(apply_command(&mut image, &twice).is_err());
        apply_command(&mut image, &alter(vec![], vec![("carol".into(), Sha256)])).unwrap();
        let left: Vec<_> = image.scram_credentials.keys().cloned().collect();
        assert_eq!(left, vec![("carol".to_owned(), Sha512)]);
    }

    #[test]
    fn acls_are_a_bounded_set_created_all_or_none() {
        use crate::acl::tests::sample_acl;
        let mut image = MetadataImage::empty();
        let alice = sample_acl("User:alice", "app-");
        let bob = sample_acl("User:bob", "orders");
        apply_command(&mut image, &Command::CreateAcls(vec![alice.clone(), bob.clone()])).unwrap();
        apply_command(&mut image, &Command::CreateAcls(vec![alice.clone()])).unwrap();
        assert_eq!(image.acls.len(), 2, "creating a binding twice keeps one");

        let invalid = sample_acl("nobody", "x");
        let error = apply_command(
            &mut image,
            &Command::CreateAcls(vec![sample_acl("User:c", "c"), invalid]),
        );
        assert!(matches!(error, Err(MetaError::InvalidAcl { .. })));
        assert_eq!(image.acls.len(), 2, "a refused command adds nothing");

        let many: Vec<_> = (0..crate::acl::ACLS_MAX)
            .map(|i| sample_acl("User:many", &format!("t{i}")))
            .collect();
        let error = apply_command(&mut image, &Command::CreateAcls(many)).unwrap_err();
        assert!(matches!(error, MetaError::InvalidAcl { .. }), "{error}");
        assert_eq!(image.acls.len(), 2);

        apply_command(
            &mut image,
            &Command::DeleteAcls(vec![bob, sample_acl("User:absent", "x")]),
        )
        .unwrap();
        assert_eq!(image.acls.iter().collect::<Vec<_>>(), vec![&alice]);
    }
}
