//! State machine commands: what a normal Raft log entry carries, and what
//! applying one answers.
//!
//! Commands are encoded as the FlatBuffers table `CommandEnvelope`
//! (`schema/command.fbs`). Everything random or time-dependent (topic ids,
//! the cluster id) is chosen by the proposer and carried in the command, so
//! that apply is a pure function of the image and the command.

use std::collections::BTreeMap;

use crate::{
    acl::{acl_from_fb, acl_to_fb, AclBinding},
    codec::{uuid_from_fb, uuid_to_fb, DecodeError},
    credential::{credential_from_fb, credential_to_fb, ScramCredential, ScramMechanism},
    error::MetaError,
    generated::shardline::meta as fb,
    image::{BrokerInfo, NewTopic, PartitionEpoch, TopicMeta},
};

/// One state machine command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Sets the cluster id of a new group (ignored once one is set).
    InitCluster {
        /// 22-character cluster id.
        cluster_id: String,
    },
    /// Registers a broker, or updates its address and shard count.
    RegisterBroker(BrokerInfo),
    /// Creates a topic with the id the proposer chose.
    CreateTopic {
        /// What was asked for.
        topic: NewTopic,
        /// Random topic id chosen by the proposer.
        id: [u8; 16],
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Grows a topic to `total` partitions.
    CreatePartitions {
        /// Topic name.
        name: String,
        /// New partition count.
        total: i32,
        /// Replicas of each new partition given by hand; empty: placed by
        /// the state machine.
        assignments: Vec<Vec<i32>>,
    },
    /// Sets (`Some`) or deletes (`None`) topic configs.
    AlterTopicConfigs {
        /// Topic name.
        name: String,
        /// Changes by key.
        changes: BTreeMap<String, Option<String>>,
    },
    /// Fences a broker whose heartbeats stopped (proposed by the leader's
    /// liveness ticker).
    FenceBroker {
        /// The broker.
        node_id: i32,
    },
    /// Unfences a broker that is heard from again.
    UnfenceBroker {
        /// The broker.
        node_id: i32,
    },
    /// A partition leader sets its in-sync replicas.
    AlterIsr(IsrChange),
    /// Every partition whose preferred replica (its first) is unfenced and
    /// in sync but not leading gets it back as leader (proposed by the
    /// leader's liveness ticker after failovers).
    ElectPreferredLeaders,
    /// Starts moving a partition to other replicas (`Some`), or cancels
    /// the move in progress (`None`).
    ReassignPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// The new replicas, in preference order; `None` cancels.
        target: Option<Vec<i32>>,
    },
    /// Adds ACL bindings, all or none (refused past [`ACLS_MAX`](crate::ACLS_MAX)).
    CreateAcls(Vec<AclBinding>),
    /// Removes these exact ACL bindings (the proposer resolved the filters).
    DeleteAcls(Vec<AclBinding>),
    /// Sets (replacing) and removes SCRAM credentials, all or none.
    AlterScramCredentials {
        /// Credentials to set.
        upsertions: Vec<ScramCredential>,
        /// (user, mechanism) to remove; each must exist.
        deletions: Vec<(String, ScramMechanism)>,
    },
}

/// An ISR change, valid only for the leader, leader epoch and partition
/// epoch it was made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IsrChange {
    /// Topic name.
    pub(crate) topic: String,
    /// Partition index.
    pub(crate) partition: i32,
    /// The broker making the change: must be the partition's leader.
    pub(crate) leader: i32,
    /// The leader epoch the change was made under: must be current.
    pub(crate) leader_epoch: i32,
    /// The partition epoch the change was based on: must be current.
    /// `None` only in commands written before partition epochs, which are
    /// applied as they were then (leader epoch checked only), so an old
    /// log replays to the image it made.
    pub(crate) partition_epoch: Option<PartitionEpoch>,
    /// The new in-sync replicas.
    pub(crate) isr: Vec<i32>,
}

/// What applying one entry answered: the affected topic for topic commands,
/// nothing for the others, or the deterministic rejection.
#[derive(Debug)]
pub(crate) struct CommandResponse(pub(crate) Result<Option<TopicMeta>, MetaError>);

impl CommandResponse {
    /// The answer to blank and membership entries.
    pub(crate) fn none() -> Self {
        CommandResponse(Ok(None))
    }
}

/// Most replicas one hand-given replica list may name.
const ASSIGNED_REPLICAS_MAX: usize = 128;

/// Hand-given replica lists as FlatBuffers; `None` when there are none.
fn assignments_to_fb(assignments: &[Vec<i32>]) -> Option<Vec<fb::ReplicaList>> {
    (!assignments.is_empty()).then(|| {
        assignments
            .iter()
            .map(|nodes| fb::ReplicaList {
                nodes: Some(nodes.clone()),
            })
            .collect()
    })
}

/// Hand-given replica lists from FlatBuffers, bounded.
fn assignments_from_fb(lists: Option<Vec<fb::ReplicaList>>, field: &str) -> Result<Vec<Vec<i32>>, DecodeError> {
    let lists = lists.unwrap_or_default();
    if lists.len() > usize::try_from(crate::validate::PARTITIONS_PER_TOPIC_MAX).unwrap_or(usize::MAX) {
        return Err(DecodeError::new(format!("{field} names {} partitions", lists.len())));
    }
    lists
        .into_iter()
        .map(|list| {
            let nodes = list.nodes.unwrap_or_default();
            if nodes.len() > ASSIGNED_REPLICAS_MAX {
                return Err(DecodeError::new(format!("{field}: a list of {} replicas", nodes.len())));
            }
            Ok(nodes)
        })
        .collect()
}

fn config_entries_to_fb<'a>(entries: impl Iterator<Item = (&'a String, Option<&'a String>)>) -> Vec<fb::ConfigEntry> {
    entries
        .map(|(key, value)| fb::ConfigEntry {
            key: Some(key.clone()),
            value: value.cloned(),
        })
        .collect()
}

pub(crate) fn broker_to_fb(broker: &BrokerInfo) -> fb::Broker {
    fb::Broker {
        node_id: broker.node_id,
        host: Some(broker.host.clone()),
        port: broker.port,
        shards: broker.shards,
        fenced: broker.fenced,
        shard_ports: (!broker.shard_ports.is_empty()).then(|| broker.shard_ports.clone()),
        listeners: (!broker.listeners.is_empty()).then(|| {
            broker
                .listeners
                .iter()
                .map(|listener| fb::Listener {
                    name: Some(listener.name.clone()),
                    host: Some(listener.host.clone()),
                    port: listener.port,
                    shard_ports: (!listener.shard_ports.is_empty()).then(|| listener.shard_ports.clone()),
                })
                .collect()
        }),
    }
}

pub(crate) fn broker_from_fb(broker: fb::Broker) -> Result<BrokerInfo, DecodeError> {
    Ok(BrokerInfo {
        node_id: broker.node_id,
        host: broker.host.ok_or_else(|| DecodeError::missing("Broker.host"))?,
        port: broker.port,
        shards: broker.shards,
        fenced: broker.fenced,
        shard_ports: broker.shard_ports.unwrap_or_default(),
        listeners: broker
            .listeners
            .unwrap_or_default()
            .into_iter()
            .map(|listener| {
                Ok(crate::image::BrokerListener {
                    name: listener.name.ok_or_else(|| DecodeError::missing("Listener.name"))?,
                    host: listener.host.ok_or_else(|| DecodeError::missing("Listener.host"))?,
                    port: listener.port,
                    shard_ports: listener.shard_ports.unwrap_or_default(),
                })
            })
            .collect::<Result<_, DecodeError>>()?,
    })
}

/// Encodes the command as a `CommandEnvelope` table (the owned form, to be
/// nested in a log entry).
pub(crate) fn command_to_fb(command: &Command) -> fb::CommandEnvelope {
    let body = match command {
        Command::InitCluster { cluster_id } => fb::Command::InitCluster(Box::new(fb::InitCluster {
            cluster_id: Some(cluster_id.clone()),
        })),
        Command::RegisterBroker(broker) => fb::Command::RegisterBroker(Box::new(fb::RegisterBroker {
            broker: Some(Box::new(broker_to_fb(broker))),
        })),
        Command::CreateTopic { topic, id } => fb::Command::CreateTopic(Box::new(fb::CreateTopic {
            name: Some(topic.name.clone()),
            id: Some(uuid_to_fb(id)),
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            configs: Some(config_entries_to_fb(
                topic.configs.iter().map(|(key, value)| (key, Some(value))),
            )),
            assignments: assignments_to_fb(&topic.assignments),
        })),
        Command::DeleteTopic { name } => fb::Command::DeleteTopic(Box::new(fb::DeleteTopic {
            name: Some(name.clone()),
        })),
        Command::CreatePartitions {
            name,
            total,
            assignments,
        } => fb::Command::CreatePartitions(Box::new(fb::CreatePartitions {
            assignments: assignments_to_fb(assignments),
            name: Some(name.clone()),
            total: *total,
        })),
        Command::AlterTopicConfigs { name, changes } => {
            fb::Command::AlterTopicConfigs(Box::new(fb::AlterTopicConfigs {
                name: Some(name.clone()),
                changes: Some(config_entries_to_fb(
                    changes.iter().map(|(key, value)| (key, value.as_ref())),
                )),
            }))
        }
        Command::FenceBroker { node_id } => fb::Command::FenceBroker(Box::new(fb::FenceBroker { node_id: *node_id })),
        Command::UnfenceBroker { node_id } => {
            fb::Command::UnfenceBroker(Box::new(fb::UnfenceBroker { node_id: *node_id }))
        }
        Command::AlterIsr(change) => fb::Command::AlterIsr(Box::new(fb::AlterIsr {
            topic: Some(change.topic.clone()),
            partition: change.partition,
            leader: change.leader,
            leader_epoch: change.leader_epoch,
            isr: Some(change.isr.clone()),
            partition_epoch: change.partition_epoch.map(|epoch| epoch.0),
        })),
        Command::ElectPreferredLeaders => fb::Command::ElectPreferredLeaders(Box::new(fb::ElectPreferredLeaders {})),
        Command::ReassignPartition {
            topic,
            partition,
            target,
        } => fb::Command::ReassignPartition(Box::new(fb::ReassignPartition {
            topic: Some(topic.clone()),
            partition: *partition,
            replicas: target.clone(),
            cancel: target.is_none(),
        })),
        Command::CreateAcls(acls) => fb::Command::CreateAcls(Box::new(fb::CreateAcls {
            acls: Some(acls.iter().map(acl_to_fb).collect()),
        })),
        Command::DeleteAcls(acls) => fb::Command::DeleteAcls(Box::new(fb::DeleteAcls {
            acls: Some(acls.iter().map(acl_to_fb).collect()),
        })),
        Command::AlterScramCredentials { upsertions, deletions } => {
            fb::Command::AlterScramCredentials(Box::new(fb::AlterScramCredentials {
                upsertions: Some(upsertions.iter().map(credential_to_fb).collect()),
                deletions: Some(
                    deletions
                        .iter()
                        .map(|(user, mechanism)| fb::ScramDeletion {
                            user: Some(user.clone()),
                            mechanism: mechanism.code(),
                        })
                        .collect(),
                ),
            }))
        }
    };
    fb::CommandEnvelope { command: Some(body) }
}

/// Decodes a `CommandEnvelope` read from an untrusted buffer.
pub(crate) fn command_from_fb(envelope: fb::CommandEnvelope) -> Result<Command, DecodeError> {
    let name = |name: Option<String>, field: &'static str| name.ok_or_else(|| DecodeError::missing(field));
    match envelope
        .command
        .ok_or_else(|| DecodeError::missing("CommandEnvelope.command"))?
    {
        fb::Command::InitCluster(init) => Ok(Command::InitCluster {
            cluster_id: name(init.cluster_id, "InitCluster.cluster_id")?,
        }),
        fb::Command::RegisterBroker(register) => {
            let broker = register
                .broker
                .ok_or_else(|| DecodeError::missing("RegisterBroker.broker"))?;
            Ok(Command::RegisterBroker(broker_from_fb(*broker)?))
        }
        fb::Command::CreateTopic(create) => {
            let mut configs = BTreeMap::new();
            for entry in create.configs.unwrap_or_default() {
                let key = name(entry.key, "ConfigEntry.key")?;
                let value = entry.value.ok_or_else(|| DecodeError::missing("ConfigEntry.value"))?;
                if configs.insert(key, value).is_some() {
                    return Err(DecodeError::new("CreateTopic.configs has a key twice"));
                }
            }
            Ok(Command::CreateTopic {
                topic: NewTopic {
                    name: name(create.name, "CreateTopic.name")?,
                    partitions: create.partitions,
                    replication_factor: create.replication_factor,
                    configs,
                    assignments: assignments_from_fb(create.assignments, "CreateTopic.assignments")?,
                },
                id: uuid_from_fb(create.id.ok_or_else(|| DecodeError::missing("CreateTopic.id"))?),
            })
        }
        fb::Command::DeleteTopic(delete) => Ok(Command::DeleteTopic {
            name: name(delete.name, "DeleteTopic.name")?,
        }),
        fb::Command::CreatePartitions(create) => Ok(Command::CreatePartitions {
            name: name(create.name, "CreatePartitions.name")?,
            total: create.total,
            assignments: assignments_from_fb(create.assignments, "CreatePartitions.assignments")?,
        }),
        fb::Command::AlterTopicConfigs(alter) => {
            let mut changes = BTreeMap::new();
            for entry in alter.changes.unwrap_or_default() {
                let key = name(entry.key, "ConfigEntry.key")?;
                if changes.insert(key, entry.value).is_some() {
                    return Err(DecodeError::new("AlterTopicConfigs.changes has a key twice"));
                }
            }
            Ok(Command::AlterTopicConfigs {
                name: name(alter.name, "AlterTopicConfigs.name")?,
                changes,
            })
        }
        fb::Command::FenceBroker(fence) => Ok(Command::FenceBroker { node_id: fence.node_id }),
        fb::Command::UnfenceBroker(unfence) => Ok(Command::UnfenceBroker {
            node_id: unfence.node_id,
        }),
        fb::Command::AlterIsr(alter) => Ok(Command::AlterIsr(IsrChange {
            topic: name(alter.topic, "AlterIsr.topic")?,
            partition: alter.partition,
            leader: alter.leader,
            leader_epoch: alter.leader_epoch,
            partition_epoch: alter.partition_epoch.map(PartitionEpoch),
            isr: alter.isr.ok_or_else(|| DecodeError::missing("AlterIsr.isr"))?,
        })),
        fb::Command::ElectPreferredLeaders(_) => Ok(Command::ElectPreferredLeaders),
        fb::Command::ReassignPartition(reassign) => {
            let target = match (reassign.cancel, reassign.replicas) {
                (true, None) => None,
                (false, Some(replicas)) => Some(replicas),
                _ => return Err(DecodeError::new("ReassignPartition: replicas and cancel disagree")),
            };
            Ok(Command::ReassignPartition {
                topic: name(reassign.topic, "ReassignPartition.topic")?,
                partition: reassign.partition,
                target,
            })
        }
        fb::Command::CreateAcls(create) => Ok(Command::CreateAcls(acls_from_fb(create.acls)?)),
        fb::Command::DeleteAcls(delete) => Ok(Command::DeleteAcls(acls_from_fb(delete.acls)?)),
        fb::Command::AlterScramCredentials(alter) => {
            let upsertions = alter.upsertions.unwrap_or_default();
            let deletions = alter.deletions.unwrap_or_default();
            if upsertions.len() + deletions.len() > crate::credential::SCRAM_CREDENTIALS_MAX {
                return Err(DecodeError::new("too many SCRAM credential changes in one command"));
            }
            Ok(Command::AlterScramCredentials {
                upsertions: upsertions
                    .into_iter()
                    .map(credential_from_fb)
                    .collect::<Result<_, _>>()?,
                deletions: deletions
                    .into_iter()
                    .map(|deletion| {
                        let user = deletion
                            .user
                            .ok_or_else(|| DecodeError::missing("ScramDeletion.user"))?;
                        let mechanism = ScramMechanism::from_code(deletion.mechanism)
                            .ok_or_else(|| DecodeError::new("ScramDeletion.mechanism has an unknown code"))?;
                        Ok((user, mechanism))
                    })
                    .collect::<Result<_, DecodeError>>()?,
            })
        }
    }
}

/// The ACLs of a command, at most [`ACLS_MAX`](crate::ACLS_MAX) of them.
fn acls_from_fb(acls: Option<Vec<fb::Acl>>) -> Result<Vec<AclBinding>, DecodeError> {
    let acls = acls.ok_or_else(|| DecodeError::missing("Acls.acls"))?;
    if acls.len() > crate::acl::ACLS_MAX {
        return Err(DecodeError::new(format!("{} ACLs in one command", acls.len())));
    }
    acls.into_iter().map(acl_from_fb).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_owned(), "1000".to_owned());
        let mut changes = BTreeMap::new();
        changes.insert("retention.ms".to_owned(), None);
        changes.insert("segment.bytes".to_owned(), Some("1048576".to_owned()));
        vec![
            Command::InitCluster {
                cluster_id: "abc".into(),
            },
            Command::RegisterBroker(BrokerInfo {
                node_id: 3,
                host: "h".into(),
                port: 9092,
                shards: 4,
                fenced: false,
                shard_ports: Vec::new(),
                listeners: Vec::new(),
            }),
            Command::CreateTopic {
                topic: NewTopic {
                    name: "t".into(),
                    partitions: 3,
                    replication_factor: -1,
                    configs,
                    assignments: Vec::new(),
                },
                id: [9; 16],
            },
            Command::DeleteTopic { name: "t".into() },
            Command::CreatePartitions {
                name: "t".into(),
                total: 7,
                assignments: Vec::new(),
            },
            Command::AlterTopicConfigs {
                name: "t".into(),
                changes,
            },
            Command::FenceBroker { node_id: 2 },
            Command::UnfenceBroker { node_id: 2 },
            Command::AlterIsr(IsrChange {
                topic: "t".into(),
                partition: 1,
                leader: 2,
                leader_epoch: 5,
                partition_epoch: Some(PartitionEpoch(9)),
                isr: vec![2, 3],
            }),
            Command::AlterIsr(IsrChange {
                topic: "t".into(),
                partition: 1,
                leader: 2,
                leader_epoch: 5,
                partition_epoch: None,
                isr: vec![2],
            }),
            Command::ElectPreferredLeaders,
            Command::ReassignPartition {
                topic: "t".into(),
                partition: 2,
                target: Some(vec![3, 1]),
            },
            Command::ReassignPartition {
                topic: "t".into(),
                partition: 0,
                target: None,
            },
            Command::CreateAcls(vec![
                crate::acl::tests::sample_acl("User:a", "app-"),
                crate::acl::tests::sample_acl("User:*", "*"),
            ]),
            Command::DeleteAcls(vec![crate::acl::tests::sample_acl("User:a", "app-")]),
            Command::AlterScramCredentials {
                upsertions: vec![crate::credential::tests::sample_credential(
                    "carol",
                    ScramMechanism::Sha256,
                )],
                deletions: vec![("dave".into(), ScramMechanism::Sha512)],
            },
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for command in samples() {
            let decoded = command_from_fb(command_to_fb(&command)).unwrap();
            assert_eq!(decoded, command);
        }
    }

    #[test]
    fn missing_fields_are_errors() {
        let envelope = fb::CommandEnvelope { command: None };
        assert!(command_from_fb(envelope).is_err());
        let envelope = fb::CommandEnvelope {
            command: Some(fb::Command::DeleteTopic(Box::new(fb::DeleteTopic { name: None }))),
        };
        assert!(command_from_fb(envelope).is_err());
    }
}
