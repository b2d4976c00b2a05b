//! Appending MQTT publications to the log, many at a time.
//!
//! A connection hands over every publication it has read and not yet
//! appended (at most [`APPEND_ROUND_MAX`]) as one round: the round is split
//! by partition, each partition's share goes to the shard that owns it in
//! one message, and there becomes as few record batches as the topic's
//! `max.message.bytes` allows, appended in order through the same
//! `Partition::produce` an acks=all Kafka produce uses. One round costs
//! one cross-shard message and one durable wait per partition, however
//! many publications it holds, so a publisher that sends faster than the
//! disk syncs gets more per sync instead of a growing queue (group commit
//! at the connection, as a Kafka client's linger gives at the producer).
//!
//! A partition another node leads gets its share forwarded there as a
//! Kafka produce with acks=-1 (`remote.rs`), batch by batch in order.
//!
//! Order: a connection has one round under way at a time, and a round
//! keeps each partition's publications in the order they arrived, so
//! messages of one MQTT topic (one partition) are stored in publish order.
//! Outcomes come back in the round's order, one per publication. A
//! retained publication is acknowledged once it is also its topic's
//! retained message (`retained.rs`).

use std::{collections::BTreeMap, rc::Rc, sync::Arc, time::Duration};

use super::{
    mapping::{self, Publication},
    MqttCounts,
};
use crate::{
    error::EngineError,
    kafka::brokers::KafkaBroker,
    remote::{self, Place},
    shard::Shard,
};

/// Publications one round appends at most: bounds the batch a connection
/// builds and the acknowledgements it writes at once.
pub(crate) const APPEND_ROUND_MAX: usize = 64;

/// Bytes of publications (as records) a connection gathers into one round
/// before it stops adding more: with [`APPEND_ROUND_MAX`], bounds what a
/// round holds.
pub(crate) const APPEND_ROUND_BYTES_MAX: usize = 1 << 20;

/// Longest an append waits for the in-sync replicas.
pub(crate) const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What one publication's append said; one error may answer many.
pub(crate) type Outcome = Result<(), Arc<EngineError>>;

/// Appends `round` (in order per partition) and waits until it is durable
/// as an acks=all produce would; retained publications then become their
/// topics' retained messages on the partitions' owners. Returns one
/// outcome per publication, in `round`'s order.
pub(crate) async fn append_round(shard: &Rc<Shard>, round: Vec<Publication>) -> Vec<Outcome> {
    assert!(
        !round.is_empty() && round.len() <= APPEND_ROUND_MAX,
        "a round holds 1..=APPEND_ROUND_MAX publications"
    );
    let count = round.len();
    let partitions = match mapping::ensure_topic(shard).await {
        Ok(partitions) => partitions,
        Err(error) => return vec![Err(Arc::new(error)); count],
    };
    let retained: Vec<(usize, Publication)> = round
        .iter()
        .enumerate()
        .filter(|(_, publication)| publication.retain)
        .map(|(at, publication)| (at, publication.clone()))
        .collect();
    let mut shares: BTreeMap<i32, (Vec<usize>, Vec<Publication>)> = BTreeMap::new();
    for (at, publication) in round.into_iter().enumerate() {
        let share = shares
            .entry(mapping::partition_of(&publication.topic, partitions))
            .or_default();
        share.0.push(at);
        share.1.push(publication);
    }
    let appends = shares
        .into_iter()
        .map(|(index, (places, share))| async move { (places, append_share(shard, index, share).await) });
    let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
    for (places, answers) in futures_util::future::join_all(appends).await {
        assert_eq!(places.len(), answers.len(), "one outcome per publication of a share");
        for (at, answer) in places.into_iter().zip(answers) {
            if let Some(slot) = outcomes.get_mut(at) {
                *slot = Some(answer);
            }
        }
    }
    let mut outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
    assert_eq!(outcomes.len(), count, "every publication of a round has an outcome");
    let counts = &shard.mqtt.counts;
    MqttCounts::add(&counts.append_rounds, 1);
    let stored = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    MqttCounts::add(&counts.published, u64::try_from(stored).unwrap_or(u64::MAX));
    // Retained ones, once in the log, become their topics' retained
    // messages, in publish order (retained.rs).
    for (at, publication) in retained {
        let Some(outcome @ Ok(())) = outcomes.get_mut(at) else {
            continue;
        };
        let topic = publication.topic.clone();
        if let Err(error) = super::retained::store(shard, publication, crate::kafka::unix_now_ms()).await {
            tracing::debug!(%topic, %error, "retained message not stored");
            *outcome = Err(Arc::new(error));
        }
    }
    outcomes
}

/// Appends one partition's share of a round where the partition is led:
/// on its owning shard here, or forwarded to its leader on another node.
async fn append_share(shard: &Rc<Shard>, index: i32, share: Vec<Publication>) -> Vec<Outcome> {
    let count = share.len();
    let name = shard.config.mqtt_kafka_topic.clone();
    let owner = match remote::place_of(shard, &name, index) {
        Ok(Place::Local(owner)) => owner,
        Ok(Place::Remote(leader)) => return append_share_on(shard, &leader, &name, index, &share).await,
        Err(error) => return vec![Err(Arc::new(error)); count],
    };
    let epoch = crate::kafka::epoch_of(shard);
    let answer = shard
        .invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            let partition = match super::served_partition(&s, &name, index).await {
                Ok(partition) => partition,
                Err(error) => return vec![Err(Arc::new(error)); share.len()],
            };
            let timestamp_ms = crate::kafka::unix_now_ms();
            let mut outcomes = Vec::with_capacity(share.len());
            for run in mapping::runs(&share, partition.max_message_bytes()) {
                let batch = mapping::batch_of(run, timestamp_ms);
                let bytes = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                let outcome = partition
                    .produce(batch, -1, APPEND_TIMEOUT)
                    .await
                    .map(|_| ())
                    .map_err(Arc::new);
                if outcome.is_ok() {
                    s.probe
                        .count_produced(u64::try_from(run.len()).unwrap_or(u64::MAX), bytes);
                }
                outcomes.extend(std::iter::repeat_n(outcome, run.len()));
            }
            outcomes
        })
        .await;
    match answer {
        Ok(outcomes) => outcomes,
        Err(error) => vec![Err(Arc::new(error)); count],
    }
}

/// Appends one partition's share on its leader on another node, batch by
/// batch in order, as an acks=all Kafka produce; a batch that fails fails
/// the rest (they are not sent, so order holds when the client resends).
async fn append_share_on(
    shard: &Shard,
    leader: &KafkaBroker,
    topic: &str,
    index: i32,
    share: &[Publication],
) -> Vec<Outcome> {
    let max_message_bytes = shard
        .image()
        .topics
        .get(topic)
        .map_or(crate::shard::MAX_MESSAGE_BYTES_DEFAULT, |t| {
            crate::shard::max_message_bytes_of(&t.configs)
        });
    let timestamp_ms = crate::kafka::unix_now_ms();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(share.len());
    for run in mapping::runs(share, max_message_bytes) {
        let outcome = match outcomes.last() {
            Some(Err(error)) => Err(Arc::clone(error)),
            _ => remote::produce(
                shard,
                leader,
                topic,
                index,
                mapping::batch_of(run, timestamp_ms),
                APPEND_TIMEOUT,
            )
            .await
            .map_err(Arc::new),
        };
        outcomes.extend(std::iter::repeat_n(outcome, run.len()));
    }
    assert_eq!(outcomes.len(), share.len(), "one outcome per publication");
    outcomes
}
