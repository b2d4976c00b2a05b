//! Persistent sessions, stored in the compacted internal Kafka topic
//! [`SESSIONS_KAFKA_TOPIC`] (`compacted.rs`): key the client id, value the
//! [`StoredSession`] (`stored.rs`), a tombstone when the session ends.
//!
//! A connection whose session is persistent saves it when its
//! subscriptions change (before the SUBACK), at most
//! [`super::session::SESSION_SAVE_INTERVAL`] after its cursors or
//! deliveries in flight change, and when it ends — whatever ends it, short
//! of the process dying. A connection taking over a client id waits until
//! the one before has ended (and saved), then loads what it saved. A
//! session found expired when loaded is removed and not resumed.
//!
//! Across the nodes of a cluster, a client id's connections are told apart
//! by their claims (`stored.rs`): a connection that takes up a session
//! claims one past the claim stored, and a save whose claim is older than
//! the stored one is refused — its connection was taken over through
//! another node, and it closes as taken over (v5 DISCONNECT 0x8E). Every
//! node follows the table's changes as they are made (`compacted::follow`):
//! a record written under another node's claim closes, as taken over, the
//! local connection that holds the client id under an older claim. A
//! connection resuming a session that another node's connection saved
//! stores it under its own claim before its CONNACK, and in a cluster a
//! connection that finds no session stored, or removes one with a clean
//! start, writes a tombstone naming its claim (`stored::CLAIM_HEADER`), so
//! the first node learns of either within about one Fetch round trip to
//! the table's leader.

use std::{collections::BTreeMap, rc::Rc};

use bytes::Bytes;
use shardline_log::Record;

use super::{
    compacted::{self, Entry, Stored, Table},
    stored::{Claim, StoredSession, CLAIM_HEADER},
    MqttShard,
};
use crate::{error::EngineError, shard::Shard};

/// The internal Kafka topic of persistent sessions.
pub(crate) const SESSIONS_KAFKA_TOPIC: &str = "__mqtt_sessions";

/// Persistent sessions one shard keeps at most (for the client ids of the
/// partitions it owns): a session beyond it is stored but not kept, and so
/// not resumed (logged).
pub(crate) const SESSIONS_STORED_MAX: usize = 100_000;

impl Entry for StoredSession {
    const TOPIC: &'static str = SESSIONS_KAFKA_TOPIC;
    const ENTRIES_MAX: usize = SESSIONS_STORED_MAX;

    fn table(mqtt: &MqttShard) -> &Table<StoredSession> {
        &mqtt.sessions
    }

    fn decode(record: &Record<'_>) -> Option<StoredSession> {
        let value = record.value?;
        match StoredSession::decode(value) {
            Ok(stored) => Some(stored),
            Err(error) => {
                tracing::warn!(%error, "a stored MQTT session is not resumed");
                None
            }
        }
    }

    fn encode(&self) -> (Bytes, Vec<(&'static str, Bytes)>) {
        (Bytes::from(StoredSession::encode(self)), Vec::new())
    }

    /// A session saved by a connection whose claim is older than the stored
    /// one's does not replace it: that connection was taken over.
    fn supersedes(&self, stored: &StoredSession) -> bool {
        self.claim >= stored.claim
    }

    const FOLLOWED: bool = true;

    fn claim(record: &Record<'_>, value: Option<&StoredSession>) -> Option<Claim> {
        match value {
            Some(stored) => Some(stored.claim),
            None => Claim::from_header(record.headers.get(CLAIM_HEADER.as_bytes()).flatten()?),
        }
    }

    /// Each client id goes to its home shard, which closes the connection
    /// holding it here if that connection's claim is older.
    fn claimed_elsewhere(shard: &Rc<Shard>, claims: Vec<(String, Claim)>) {
        let shard = Rc::clone(shard);
        glommio::spawn_local(async move {
            let mut by_home: BTreeMap<usize, Vec<(String, Claim)>> = BTreeMap::new();
            for (client_id, claim) in claims {
                by_home
                    .entry(super::home_shard(&client_id, shard.shard_count))
                    .or_default()
                    .push((client_id, claim));
            }
            for (home, claims) in by_home {
                let told = shard
                    .invoke_on(home, move |s: Rc<Shard>| async move {
                        for (client_id, claim) in claims {
                            s.mqtt.claimed_elsewhere(&s, &client_id, claim).await;
                        }
                    })
                    .await;
                if let Err(error) = told {
                    tracing::debug!(home, %error, "MQTT claims of other nodes not passed on");
                }
            }
        })
        .detach();
    }
}

/// Saves `session` as the session of `client_id`, by the connection that
/// holds `claim`, stamped `now_ms`; `false` when a connection with a newer
/// claim (through another node) holds the session now, and nothing was
/// saved.
pub(crate) async fn save(
    shard: &Rc<Shard>,
    client_id: &str,
    mut session: StoredSession,
    claim: Claim,
    now_ms: i64,
) -> Result<bool, EngineError> {
    session.saved_at_ms = now_ms;
    session.claim = claim;
    session.kafka_topic.clone_from(&shard.config.mqtt_kafka_topic);
    match compacted::store(shard, client_id.to_string(), Some(session)).await? {
        Stored::Kept => Ok(true),
        Stored::NotKept => {
            tracing::warn!(
                client_id,
                "MQTT session stored but not kept: the shard keeps its maximum of sessions"
            );
            Ok(true)
        }
        Stored::Refused => Ok(false),
    }
}

/// Removes the stored session of `client_id`, if there is one.
pub(crate) async fn remove(shard: &Rc<Shard>, client_id: &str) -> Result<(), EngineError> {
    if compacted::get::<StoredSession>(shard, client_id).await?.is_some() {
        compacted::store::<StoredSession>(shard, client_id.to_string(), None).await?;
    }
    Ok(())
}

/// For a connection on node `node_id` that starts clean at `now_ms`:
/// removes the stored session of `client_id`, if there is one, under the
/// claim the connection takes ([`Claim::after`]), which the removal names
/// so that a connection holding the client id through another node is
/// closed. In a cluster the claim is written even when nothing is stored.
pub(crate) async fn remove_claiming(
    shard: &Rc<Shard>,
    client_id: &str,
    node_id: i32,
    now_ms: i64,
) -> Result<Claim, EngineError> {
    let stored = compacted::get::<StoredSession>(shard, client_id).await?;
    let claim = Claim::after(stored.as_ref().map(|stored| stored.claim), node_id, now_ms);
    if stored.is_some() || shard.config.peers.is_some() {
        write_claim(shard, client_id, claim).await?;
    }
    Ok(claim)
}

/// Stores a removal of `client_id`'s session that names `claim`: read by
/// every node's tail of the table (`compacted::follow`), it closes an older
/// connection holding the client id there.
async fn write_claim(shard: &Rc<Shard>, client_id: &str, claim: Claim) -> Result<(), EngineError> {
    let header = Bytes::copy_from_slice(&claim.to_header());
    compacted::remove_with_headers::<StoredSession>(shard, client_id.to_string(), vec![(CLAIM_HEADER, header)]).await?;
    Ok(())
}

/// The session stored for `client_id` that can be resumed at `now_ms`
/// (one that has expired is removed instead; the cursors of one stored
/// for another mapped topic are dropped), and the claim of the connection
/// on node `node_id` taking it up: one past the claim stored, if any.
pub(crate) async fn resume(
    shard: &Rc<Shard>,
    client_id: &str,
    node_id: i32,
    now_ms: i64,
) -> Result<(Option<StoredSession>, Claim), EngineError> {
    let Some(mut stored) = compacted::get::<StoredSession>(shard, client_id).await? else {
        let claim = Claim::after(None, node_id, now_ms);
        if shard.config.peers.is_some() {
            // Nothing stored: a connection holding the client id through
            // another node learns of this one from the claim alone.
            write_claim(shard, client_id, claim).await?;
        }
        return Ok((None, claim));
    };
    let claim = Claim::after(Some(stored.claim), node_id, now_ms);
    if stored.expired_at(now_ms) {
        tracing::debug!(client_id, "MQTT session expired");
        remove(shard, client_id).await?;
        return Ok((None, claim));
    }
    if stored.kafka_topic != shard.config.mqtt_kafka_topic {
        // Offsets of another topic: only a PUBREL can still be sent again.
        stored.cursors.clear();
        stored
            .inflight
            .retain(|inflight| inflight.awaiting == super::session::Awaiting::Completion);
    }
    if stored.claim.node_id != node_id && shard.config.peers.is_some() {
        // Another node's connection saved it, and may hold it still: the
        // claim stored now closes that connection (`compacted::follow`).
        if !save(shard, client_id, stored.clone(), claim, now_ms).await? {
            tracing::info!(client_id, ?claim, "MQTT session claimed through another node meanwhile");
        }
    }
    Ok((Some(stored), claim))
}
