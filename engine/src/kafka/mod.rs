//! The Kafka APIs, one module each, on top of the shard: the `net::Handler`
//! the connection loop calls. Every handler answers a whole request; partition
//! work runs on the partition's owner shard.

mod acls;
mod admin;
mod alter_configs;
pub(crate) mod brokers;
pub(crate) mod cluster;
mod configs;
mod credentials;
mod epochs;
mod fetch;
mod fetch_session;
mod groups;
mod leaders;
mod metadata;
mod offsets;
mod partition_admin;
mod produce;
mod slow;
mod transactions;

use std::{cell::Cell, future::Future, rc::Rc, sync::Arc, time::Instant};

use kafka_protocol::{
    messages::{ResponseKind, TopicName},
    protocol::StrBytes,
};
use shardline_net::{Handler, Request, RequestBody, ResponseBody};

pub(crate) use fetch_session::{FetchSessionCounts, FetchSessions};

use crate::{
    acl::{Access, Authorizer, Session},
    error::EngineError,
    shard::{Shard, ShardProbe},
};

/// The engine's answer to every request of one connection, on the shard
/// that accepted it.
pub(crate) struct KafkaHandler {
    shard: Rc<Shard>,
    /// Requests being handled on this shard (shutdown waits for them).
    in_flight: Rc<Cell<usize>>,
    /// The listener this connection came through: answers naming brokers
    /// give that listener's addresses.
    listener: Rc<str>,
    /// Who the connection is and what it may do: every API checks here.
    access: Rc<Access>,
    /// The connection, as its fetch sessions know it (closed with it).
    fetch_connection: FetchConnection,
}

/// A connection's place in its shard's fetch session table: its sessions
/// go when it does.
struct FetchConnection {
    shard: Rc<Shard>,
    id: fetch_session::ConnectionId,
}

impl FetchConnection {
    fn open(shard: &Rc<Shard>) -> FetchConnection {
        let id = shard.fetch_sessions.borrow_mut().connection_opened();
        FetchConnection {
            shard: Rc::clone(shard),
            id,
        }
    }
}

impl Drop for FetchConnection {
    fn drop(&mut self) {
        self.shard.fetch_sessions.borrow_mut().connection_closed(self.id);
    }
}

impl KafkaHandler {
    /// What makes the handler of each connection of one listener on one
    /// shard, given the connection's session.
    pub(crate) fn for_listener(
        shard: Rc<Shard>,
        in_flight: Rc<Cell<usize>>,
        listener: Rc<str>,
        authorizer: Rc<Authorizer>,
    ) -> Rc<dyn Fn(Rc<Session>) -> KafkaHandler> {
        Rc::new(move |session| KafkaHandler {
            shard: Rc::clone(&shard),
            in_flight: Rc::clone(&in_flight),
            listener: Rc::clone(&listener),
            access: Rc::new(Access {
                authorizer: Rc::clone(&authorizer),
                session,
            }),
            fetch_connection: FetchConnection::open(&shard),
        })
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    fn new(counter: &Rc<Cell<usize>>) -> InFlight {
        counter.set(counter.get() + 1);
        InFlight(Rc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Handler for KafkaHandler {
    /// Answers one request; counts it by API and version, and its latency
    /// (decode to answer) by API, in the shard's probe, and runs it under
    /// its API so the error codes it answers are counted under it.
    fn handle(&self, request: Request) -> impl Future<Output = Option<ResponseBody>> {
        let shard = Rc::clone(&self.shard);
        let guard = InFlight::new(&self.in_flight);
        let listener = Rc::clone(&self.listener);
        let access = Rc::clone(&self.access);
        let connection = self.fetch_connection.id;
        let api = crate::metrics::probe::api_slot(request.header.api_key);
        shard.probe.count_request(api, request.header.api_version);
        let slow = slow::SlowWatch::new(&request, shard.config.slow_request_ms);
        let started = Instant::now();
        let answer = crate::metrics::with_api(
            api,
            Self::answer(Rc::clone(&shard), request, listener, access, connection),
        );
        async move {
            let _guard = guard;
            let response = answer.await;
            let elapsed = started.elapsed();
            shard.probe.record_latency(api, elapsed);
            slow.check(elapsed, response.as_ref());
            response
        }
    }
}

impl KafkaHandler {
    /// The API's own handler; each checks what `access` may do.
    async fn answer(
        shard: Rc<Shard>,
        request: Request,
        listener: Rc<str>,
        access: Rc<Access>,
        connection: fetch_session::ConnectionId,
    ) -> Option<ResponseBody> {
        let version = request.header.api_version;
        let kafka = |kind: ResponseKind| Some(ResponseBody::Kafka(kind));
        let access = &*access;
        match request.body {
            RequestBody::Produce(req) => produce::handle(&shard, access, req).await,
            RequestBody::Fetch(req) => Some(fetch::handle(&shard, access, connection, req).await),
            RequestBody::ApiVersions(_) => kafka(cluster::api_versions()),
            RequestBody::Metadata(req) => kafka(metadata::handle(&shard, access, req, &listener).await),
            RequestBody::CreateTopics(req) => kafka(admin::create_topics(&shard, access, req).await),
            RequestBody::DeleteTopics(req) => kafka(admin::delete_topics(&shard, access, req).await),
            RequestBody::CreatePartitions(req) => kafka(admin::create_partitions(&shard, access, req).await),
            RequestBody::ListOffsets(req) => kafka(offsets::handle(&shard, access, req, version).await),
            RequestBody::DescribeConfigs(req) => kafka(configs::describe(&shard, access, req, version)),
            RequestBody::DescribeCluster(req) => kafka(cluster::describe_cluster(&shard, access, req, &listener)),
            RequestBody::InitProducerId(req) => kafka(cluster::init_producer_id(&shard, access, req, version).await),
            RequestBody::FindCoordinator(req) => {
                kafka(groups::find_coordinator(&shard, access, req, version, &listener))
            }
            RequestBody::JoinGroup(req) => {
                let client_id = request.header.client_id.clone();
                kafka(groups::join_group(&shard, access, req, version, client_id).await)
            }
            RequestBody::SyncGroup(req) => kafka(groups::sync_group(&shard, access, req, version).await),
            RequestBody::Heartbeat(req) => kafka(groups::heartbeat(&shard, access, req).await),
            RequestBody::LeaveGroup(req) => kafka(groups::leave_group(&shard, access, req, version).await),
            RequestBody::OffsetCommit(req) => kafka(groups::offset_commit(&shard, access, req, version).await),
            RequestBody::OffsetFetch(req) => kafka(groups::offset_fetch(&shard, access, req, version).await),
            RequestBody::ListGroups(req) => kafka(groups::list_groups(&shard, access, req, version).await),
            RequestBody::DescribeGroups(req) => kafka(groups::describe_groups(&shard, access, req, version).await),
            RequestBody::DeleteGroups(req) => kafka(groups::delete_groups(&shard, access, req).await),
            RequestBody::OffsetDelete(req) => kafka(groups::offset_delete(&shard, access, req).await),
            RequestBody::OffsetForLeaderEpoch(req) => kafka(epochs::handle(&shard, access, req).await),
            RequestBody::CreateAcls(req) => kafka(acls::create(&shard, access, req).await),
            RequestBody::DescribeAcls(req) => kafka(acls::describe(&shard, access, req)),
            RequestBody::DeleteAcls(req) => kafka(acls::delete(&shard, access, req).await),
            RequestBody::DescribeUserScramCredentials(req) => kafka(credentials::describe(&shard, access, req)),
            RequestBody::AlterUserScramCredentials(req) => kafka(credentials::alter(&shard, access, req).await),
            RequestBody::AddPartitionsToTxn(req) => {
                kafka(transactions::add_partitions(&shard, access, req, version).await)
            }
            RequestBody::AddOffsetsToTxn(req) => kafka(transactions::add_offsets(&shard, access, req, version).await),
            RequestBody::EndTxn(req) => kafka(transactions::end_txn(&shard, access, req, version).await),
            RequestBody::WriteTxnMarkers(req) => kafka(transactions::write_txn_markers(&shard, access, req).await),
            RequestBody::DescribeTransactions(req) => {
                kafka(transactions::describe_transactions(&shard, access, req).await)
            }
            RequestBody::ListTransactions(req) => {
                kafka(transactions::list_transactions(&shard, access, req, version).await)
            }
            RequestBody::TxnOffsetCommit(req) => {
                kafka(transactions::txn_offset_commit(&shard, access, req, version).await)
            }
            RequestBody::IncrementalAlterConfigs(req) => kafka(alter_configs::incremental(&shard, access, req).await),
            RequestBody::AlterConfigs(req) => kafka(alter_configs::legacy(&shard, access, req).await),
            RequestBody::DescribeLogDirs(req) => kafka(partition_admin::describe_log_dirs(&shard, access, req).await),
            RequestBody::DeleteRecords(req) => kafka(partition_admin::delete_records(&shard, access, req).await),
            RequestBody::DescribeProducers(req) => {
                kafka(partition_admin::describe_producers(&shard, access, req).await)
            }
            RequestBody::ElectLeaders(req) => kafka(leaders::elect_leaders(&shard, access, req).await),
            RequestBody::ListPartitionReassignments(req) => {
                kafka(leaders::list_partition_reassignments(&shard, access, req))
            }
            RequestBody::AlterPartitionReassignments(req) => {
                kafka(leaders::alter_partition_reassignments(&shard, access, req).await)
            }
            // Authentication happens before a connection is served
            // (`sasl`): here it is over, or the listener has none.
            RequestBody::SaslHandshake(_) => kafka(crate::sasl::handshake_out_of_turn()),
            RequestBody::SaslAuthenticate(_) => kafka(crate::sasl::authenticate_out_of_turn()),
        }
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Per topic named, in order: whether `access` may do `operation` on it
/// (the refusal to answer its partitions with, if not).
pub(crate) fn topics_allowed<'a>(
    shard: &Shard,
    access: &Access,
    operation: shardline_raft::AclOperation,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<Result<(), EngineError>> {
    let image = shard.image();
    names
        .into_iter()
        .map(|name| access.check(&image, operation, crate::acl::Resource::Topic(name)))
        .collect()
}

/// A topic's answers, or — when the topic was refused (`topics_allowed`)
/// and its partitions were not asked — `count` refusals.
pub(crate) fn refused_or<R>(
    answers: Vec<Result<R, EngineError>>,
    allowed: &Result<(), EngineError>,
    count: usize,
) -> Vec<Result<R, EngineError>> {
    match allowed {
        Ok(()) => answers,
        Err(refused) => {
            let EngineError::NotAuthorized(kind) = refused else {
                unreachable!("Access::check refuses with NotAuthorized only, not {refused}")
            };
            (0..count).map(|_| Err(EngineError::NotAuthorized(*kind))).collect()
        }
    }
}

/// Kafka error code of a result: 0 on success.
pub(crate) fn code_of<T>(result: &Result<T, EngineError>) -> i16 {
    match result {
        Ok(_) => 0,
        Err(e) => crate::error::kafka_code(e),
    }
}

/// After a metadata change committed at `epoch`, waits until every shard has
/// applied it, so the next request on any connection sees the change.
pub(crate) async fn wait_all_shards(shard: &Rc<Shard>, epoch: u64) {
    let waits = (0..shard.shard_count)
        .map(|owner| shard.invoke_on(owner, move |s: Rc<Shard>| async move { s.wait_for_epoch(epoch).await }));
    let _ = futures_util::future::join_all(waits).await;
}

/// One partition's question for [`on_owners`]: topic, partition index and
/// what to ask.
pub(crate) type Question<Q> = (String, i32, Q);

/// Where an entry sits in its request: (topic position, partition position).
pub(crate) type Slot = (usize, usize);

/// A question with its place in the request.
pub(crate) type Placed<Q> = (Slot, Question<Q>);

/// Entries grouped by the shard that owns their partition, and the entries
/// whose partition has no owner on this broker, with the reason.
pub(crate) struct ByOwner<Q> {
    pub(crate) owners: std::collections::HashMap<usize, Vec<Placed<Q>>>,
    pub(crate) unowned: Vec<(Slot, EngineError)>,
}

/// Splits placed entries by owner shard, under this shard's image; counts a
/// forwarded request when any part is owned elsewhere (one cross-core round
/// trip per other owner follows).
pub(crate) fn split_by_owner<Q>(shard: &Shard, entries: impl IntoIterator<Item = Placed<Q>>) -> ByOwner<Q> {
    let mut split = ByOwner {
        owners: std::collections::HashMap::new(),
        unowned: Vec::new(),
    };
    for (slot, (name, index, question)) in entries {
        match shard.owner_of(&name, index) {
            Ok(owner) => split
                .owners
                .entry(owner)
                .or_default()
                .push((slot, (name, index, question))),
            Err(e) => split.unowned.push((slot, e)),
        }
    }
    if split.owners.keys().any(|owner| *owner != shard.id) {
        ShardProbe::count(&shard.probe.forwarded_partition_requests);
    }
    split
}

/// Answers `questions[t][p]` by running `lookup` on the shard owning each
/// partition (one cross-shard message per owner), under this shard's image
/// epoch; returns the answers in the same shape and order. An owner yields
/// between lookups when its time slice is up, so a request naming many
/// partitions cannot hold a shard.
pub(crate) async fn on_owners<Q, R>(
    shard: &Rc<Shard>,
    questions: Vec<Vec<Question<Q>>>,
    lookup: fn(&Shard, &str, i32, Q) -> Result<R, EngineError>,
) -> Vec<Vec<Result<R, EngineError>>>
where
    Q: Send + 'static,
    R: Send + 'static,
{
    let epoch = epoch_of(shard);
    let mut answers: Vec<Vec<Option<Result<R, EngineError>>>> =
        questions.iter().map(|t| t.iter().map(|_| None).collect()).collect();
    let placed = questions.into_iter().enumerate().flat_map(|(ti, topic)| {
        topic
            .into_iter()
            .enumerate()
            .map(move |(pi, question)| ((ti, pi), question))
    });
    let split = split_by_owner(shard, placed);
    let mut fill = |(ti, pi): Slot, answer: Result<R, EngineError>| {
        let slot = answers.get_mut(ti).and_then(|t| t.get_mut(pi));
        assert!(slot.as_ref().is_some_and(|s| s.is_none()), "each slot is answered once");
        if let Some(slot) = slot {
            *slot = Some(answer);
        }
    };
    for (slot, error) in split.unowned {
        fill(slot, Err(error));
    }
    let parts = split.owners.into_iter().map(|(owner, items)| {
        let keys: Vec<Slot> = items.iter().map(|(k, _)| *k).collect();
        let work = shard.invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            let mut out = Vec::with_capacity(items.len());
            for (_, (name, index, question)) in items {
                out.push(lookup(&s, &name, index, question));
                glommio::yield_if_needed().await;
            }
            out
        });
        async move { (keys, work.await) }
    });
    for (keys, answer) in futures_util::future::join_all(parts).await {
        let owner_answers: Vec<Result<R, EngineError>> = match answer {
            Ok(owner_answers) => owner_answers,
            Err(_) => keys.iter().map(|_| Err(EngineError::ShardUnavailable)).collect(),
        };
        assert_eq!(
            owner_answers.len(),
            keys.len(),
            "an owner answers every question it got"
        );
        for (slot, answer) in keys.into_iter().zip(owner_answers) {
            fill(slot, answer);
        }
    }
    answers
        .into_iter()
        .map(|t| {
            t.into_iter()
                .map(|a| a.unwrap_or(Err(EngineError::ShardUnavailable)))
                .collect()
        })
        .collect()
}

/// The current image's epoch, for stamping routed work.
pub(crate) fn epoch_of(shard: &Shard) -> u64 {
    let image: Arc<_> = shard.image();
    image.epoch
}

/// Wall-clock time now, in ms since the UNIX epoch (0 before it).
pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
