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
//! another node, and it closes as taken over (v5 DISCONNECT 0x8E). The
//! connection on the first node learns it at its next save (within
//! [`super::session::SESSION_SAVE_INTERVAL`] of a change, or at its end),
//! not at once as on one node.

use std::rc::Rc;

use bytes::Bytes;
use shardline_log::Record;

use super::{
    compacted::{self, Entry, Stored, Table},
    stored::{Claim, StoredSession},
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

/// Removes the stored session of `client_id`, if there is one; returns its
/// claim.
pub(crate) async fn remove(shard: &Rc<Shard>, client_id: &str) -> Result<Option<Claim>, EngineError> {
    let Some(stored) = compacted::get::<StoredSession>(shard, client_id).await? else {
        return Ok(None);
    };
    compacted::store::<StoredSession>(shard, client_id.to_string(), None).await?;
    Ok(Some(stored.claim))
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
        return Ok((None, Claim::after(None, node_id)));
    };
    let claim = Claim::after(Some(stored.claim), node_id);
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
    Ok((Some(stored), claim))
}
