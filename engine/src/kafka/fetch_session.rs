//! Incremental fetch sessions (KIP-227): the broker remembers what a
//! fetcher asked for, so a fetch of many partitions need not name them all
//! every time, and its answer need not repeat the ones where nothing moved.
//!
//! ## Where the state lives
//! One [`FetchSessions`] table per shard, in `Shard::fetch_sessions`. A
//! session belongs to the connection that created it, and so to the shard
//! that serves that connection: it is found only by requests on the same
//! connection (another connection naming its id is told
//! FETCH_SESSION_ID_NOT_FOUND, as if it did not exist) and it is removed
//! when that connection closes. A client that reconnects, perhaps to
//! another shard, starts a new session — clients do that anyway after a
//! disconnect. The partitions a session names may live on any shard; they
//! are read by message from the owners as every fetch is (`fetch.rs`). No
//! session state ever crosses shards.
//!
//! ## The protocol, as this table plays it
//! ```text
//! session_id  epoch   meaning                              answer
//! 0           -1      full fetch, no session               every partition, session_id 0
//! 0           0       full fetch, open a session           every partition, the new id (0 if none could be made)
//! id          0       close `id`, full fetch, open another as above
//! id          -1      close `id`, full fetch, no session   every partition, session_id 0
//! id          n > 0   incremental: the request names only  the partitions with records, an error,
//!                     added or changed partitions, and     or a high watermark, last stable offset
//!                     `forgotten_topics_data` the removed  or log start that moved since the
//!                                                          last answer; session_id `id`
//! ```
//! An incremental request whose `id` is unknown (or another connection's)
//! is answered FETCH_SESSION_ID_NOT_FOUND; one whose epoch is not the one
//! the session expects, INVALID_FETCH_SESSION_EPOCH. Both answer no
//! partition and make the client start over with a full fetch. An
//! incremental fetch reads every partition of the session at the offset the
//! session last heard for it (that is how a follower's unchanged fetch
//! offset still counts toward the high watermark), and a partition whose
//! records went out moves to the end of the session's order, so that under
//! `max_bytes` the partitions take turns. A session left with no partition
//! is closed and its answer is sessionless.
//!
//! ## Bounds
//! At most [`FETCH_SESSIONS_PER_SHARD_MAX`] sessions per shard (Kafka's
//! `max.incremental.fetch.session.cache.slots`, default 1,000 per broker),
//! at most [`FETCH_SESSIONS_PER_CONNECTION_MAX`] per connection, at most
//! [`FETCH_SESSION_PARTITIONS_MAX`] partitions per session. When the table
//! is full, a new session takes the slot of the least recently used one
//! if that one has been idle for [`FETCH_SESSION_EVICTABLE_IDLE_MS`]; a
//! follower's new session may also take the least recently used consumer's
//! (replication comes first). Otherwise no session is made and the fetch is
//! answered in full with session_id 0: the client goes on sessionless. A
//! connection opening more sessions than its bound loses its own least
//! recently used one. A session that would grow past its partition bound is
//! closed and the request answered FETCH_SESSION_ID_NOT_FOUND (Kafka has no
//! code for "too big"; the client then fetches in full, and gets no session
//! for so many partitions).
//!
//! The table is a plain state machine: it takes requests and `now_ms` and
//! says what to read and what to answer; it owns no socket and reads no
//! clock.

use std::collections::{BTreeMap, HashMap};

use crate::{error::FetchSessionError, shard::PartitionKey};

/// Most sessions one shard keeps (Kafka's default for a whole broker, here
/// per shard: a session costs ≈ 100 bytes per partition, so the table stays
/// within tens of MiB even with every session at a few hundred partitions).
pub(crate) const FETCH_SESSIONS_PER_SHARD_MAX: usize = 1_000;

/// Most sessions one connection holds. A client keeps one per broker
/// connection; the slack covers a client that opens a new session without
/// closing its old one (it loses the old one, not someone else's).
pub(crate) const FETCH_SESSIONS_PER_CONNECTION_MAX: usize = 4;

/// Most partitions one session names: bounds the memory one session holds
/// (a full fetch naming more is answered without a session).
pub(crate) const FETCH_SESSION_PARTITIONS_MAX: usize = 10_000;

/// How long a session must go unused before a new one may take its slot
/// in a full table: twice the longest long-poll a fetch may park for
/// (`FETCH_WAIT_MAX_MS`, 30 s), so a live fetcher is never pushed out by
/// newcomers.
pub(crate) const FETCH_SESSION_EVICTABLE_IDLE_MS: u64 = 60_000;

/// A session's id on the wire: never 0 (0 means "no session").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) i32);

/// The epoch a request carries: 0 opens a session, -1 closes or avoids
/// one, 1.. number a session's incremental requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionEpoch(pub(crate) i32);

impl SessionEpoch {
    /// Opens (or re-opens) a session.
    pub(crate) const INITIAL: SessionEpoch = SessionEpoch(0);
    /// A full fetch without a session.
    pub(crate) const FINAL: SessionEpoch = SessionEpoch(-1);

    /// The epoch that follows this one: 1 after `i32::MAX`, as Kafka's.
    pub(crate) fn next(self) -> SessionEpoch {
        if self.0 < 0 {
            SessionEpoch::FINAL
        } else if self.0 == i32::MAX {
            SessionEpoch(1)
        } else {
            SessionEpoch(self.0 + 1)
        }
    }
}

/// A connection, as the table tells them apart (handed out by
/// [`FetchSessions::connection_opened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnectionId(pub(crate) u64);

/// Who asks: the connection, and whether it is a follower broker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker {
    pub(crate) connection: ConnectionId,
    pub(crate) follower: bool,
}

/// What a request asks of one partition (kept by the session between
/// requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) fetch_offset: i64,
    pub(crate) partition_max_bytes: i32,
    pub(crate) current_leader_epoch: i32,
}

/// The session fields of a Fetch request and the partitions it names.
#[derive(Debug, Clone)]
pub(crate) struct FetchAsk {
    pub(crate) session_id: SessionId,
    pub(crate) epoch: SessionEpoch,
    /// In request order; a partition named twice counts once (the first).
    pub(crate) partitions: Vec<(PartitionKey, Wanted)>,
    pub(crate) forgotten: Vec<PartitionKey>,
}

/// Whether an answer must list every partition read or may leave out those
/// where nothing moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    Full,
    Incremental,
}

/// What to read and how to answer, handed back with the reads to
/// [`FetchSessions::answered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The session to answer under (0: none).
    pub(crate) session_id: SessionId,
    pub(crate) kind: AnswerKind,
}

/// The table's verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Answer this error at the top, no partition, session_id 0.
    Refuse(FetchSessionError),
    /// Read these partitions, in this order, then ask `answered`.
    Read {
        ticket: Ticket,
        partitions: Vec<(PartitionKey, Wanted)>,
    },
}

/// The marks of a partition an answer gives (what a client keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    pub(crate) high_watermark: i64,
    pub(crate) last_stable_offset: i64,
    pub(crate) log_start: i64,
}

/// What the read of one partition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOutcome {
    pub(crate) has_records: bool,
    pub(crate) failed: bool,
    pub(crate) marks: Marks,
}

/// One partition of a session.
#[derive(Debug, Clone)]
struct Cached {
    wanted: Wanted,
    /// Its place in the session's order (keys of `Session::order`).
    place: u64,
    /// The marks last answered; `None` before the first answer and after an
    /// error (so the partition is answered again once the error clears).
    answered: Option<Marks>,
}

#[derive(Debug)]
struct Session {
    owner: ConnectionId,
    follower: bool,
    /// The epoch the next incremental request must carry.
    next_epoch: SessionEpoch,
    last_used_ms: u64,
    partitions: HashMap<PartitionKey, Cached>,
    /// Read order: place → partition.
    order: BTreeMap<u64, PartitionKey>,
    next_place: u64,
}

impl Session {
    fn new(asker: Asker, now_ms: u64) -> Session {
        Session {
            owner: asker.connection,
            follower: asker.follower,
            next_epoch: SessionEpoch::INITIAL.next(),
            last_used_ms: now_ms,
            partitions: HashMap::new(),
            order: BTreeMap::new(),
            next_place: 0,
        }
    }

    /// Adds `key` at the end, or changes what is wanted of it in place.
    fn upsert(&mut self, key: PartitionKey, wanted: Wanted) {
        if let Some(cached) = self.partitions.get_mut(&key) {
            cached.wanted = wanted;
            return;
        }
        let place = self.take_place();
        self.order.insert(place, key.clone());
        self.partitions.insert(
            key,
            Cached {
                wanted,
                place,
                answered: None,
            },
        );
    }

    fn forget(&mut self, key: &PartitionKey) {
        if let Some(cached) = self.partitions.remove(key) {
            self.order.remove(&cached.place);
        }
    }

    /// Moves `key` to the end of the read order.
    fn move_to_back(&mut self, key: &PartitionKey) {
        let place = self.take_place();
        if let Some(cached) = self.partitions.get_mut(key) {
            self.order.remove(&cached.place);
            cached.place = place;
            self.order.insert(place, key.clone());
        }
    }

    fn take_place(&mut self) -> u64 {
        let place = self.next_place;
        self.next_place += 1;
        place
    }

    fn in_order(&self) -> Vec<(PartitionKey, Wanted)> {
        self.order
            .values()
            .filter_map(|key| self.partitions.get(key).map(|c| (key.clone(), c.wanted)))
            .collect()
    }

    fn check(&self) {
        assert_eq!(self.partitions.len(), self.order.len(), "every partition has one place");
        assert!(self.next_epoch.0 > 0, "a session expects a positive epoch");
    }
}

/// Counts of what the table did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FetchSessionCounts {
    pub(crate) created: u64,
    pub(crate) incremental: u64,
    pub(crate) evicted: u64,
    /// Sessions asked for but not made (full table, too many partitions).
    pub(crate) not_made: u64,
    pub(crate) open: u64,
}

/// One shard's fetch sessions.
#[derive(Debug)]
pub(crate) struct FetchSessions {
    sessions: HashMap<SessionId, Session>,
    /// State of the id generator (xorshift64; never 0).
    id_state: u64,
    next_connection: u64,
    counts: FetchSessionCounts,
}

impl FetchSessions {
    /// An empty table whose session ids are drawn from `seed` (ids need
    /// not be secret: a session answers only its own connection).
    pub(crate) fn new(seed: u64) -> FetchSessions {
        FetchSessions {
            sessions: HashMap::new(),
            id_state: seed | 1,
            next_connection: 0,
            counts: FetchSessionCounts::default(),
        }
    }

    /// A new connection's id.
    pub(crate) fn connection_opened(&mut self) -> ConnectionId {
        self.next_connection += 1;
        ConnectionId(self.next_connection)
    }

    /// Drops every session of a closed connection.
    pub(crate) fn connection_closed(&mut self, connection: ConnectionId) {
        self.sessions.retain(|_, s| s.owner != connection);
    }

    pub(crate) fn counts(&self) -> FetchSessionCounts {
        FetchSessionCounts {
            open: u64::try_from(self.sessions.len()).unwrap_or(u64::MAX),
            ..self.counts
        }
    }

    /// What to read for `ask` from `asker` at `now_ms`, and how to answer.
    pub(crate) fn begin(&mut self, now_ms: u64, asker: Asker, ask: FetchAsk) -> Plan {
        let full = ask.epoch == SessionEpoch::INITIAL || ask.epoch == SessionEpoch::FINAL;
        let plan = if full {
            self.begin_full(now_ms, asker, ask)
        } else {
            self.begin_incremental(now_ms, asker, ask)
        };
        assert!(
            self.sessions.len() <= FETCH_SESSIONS_PER_SHARD_MAX,
            "the table keeps its bound"
        );
        plan
    }

    fn begin_full(&mut self, now_ms: u64, asker: Asker, ask: FetchAsk) -> Plan {
        // A full fetch closes the session it names (if it is this
        // connection's: another's is not this request's to close).
        if self
            .sessions
            .get(&ask.session_id)
            .is_some_and(|s| s.owner == asker.connection)
        {
            self.sessions.remove(&ask.session_id);
        }
        let mut session_id = SessionId(0);
        if ask.epoch == SessionEpoch::INITIAL && !ask.partitions.is_empty() {
            match self.create(now_ms, asker, &ask.partitions) {
                Some(id) => session_id = id,
                None => self.counts.not_made += 1,
            }
        }
        Plan::Read {
            ticket: Ticket {
                session_id,
                kind: AnswerKind::Full,
            },
            partitions: ask.partitions,
        }
    }

    fn begin_incremental(&mut self, now_ms: u64, asker: Asker, ask: FetchAsk) -> Plan {
        let Some(session) = self
            .sessions
            .get_mut(&ask.session_id)
            .filter(|s| s.owner == asker.connection)
        else {
            return Plan::Refuse(FetchSessionError::IdNotFound);
        };
        if session.next_epoch != ask.epoch {
            return Plan::Refuse(FetchSessionError::InvalidEpoch);
        }
        for key in &ask.forgotten {
            session.forget(key);
        }
        for (key, wanted) in ask.partitions {
            session.upsert(key, wanted);
        }
        if session.partitions.len() > FETCH_SESSION_PARTITIONS_MAX {
            self.sessions.remove(&ask.session_id);
            self.counts.evicted += 1;
            return Plan::Refuse(FetchSessionError::IdNotFound);
        }
        if session.partitions.is_empty() {
            self.sessions.remove(&ask.session_id);
            return Plan::Read {
                ticket: Ticket {
                    session_id: SessionId(0),
                    kind: AnswerKind::Full,
                },
                partitions: Vec::new(),
            };
        }
        session.next_epoch = ask.epoch.next();
        session.last_used_ms = now_ms;
        session.check();
        self.counts.incremental += 1;
        Plan::Read {
            ticket: Ticket {
                session_id: ask.session_id,
                kind: AnswerKind::Incremental,
            },
            partitions: session.in_order(),
        }
    }

    /// A new session holding `partitions`, if the bounds allow one.
    fn create(&mut self, now_ms: u64, asker: Asker, partitions: &[(PartitionKey, Wanted)]) -> Option<SessionId> {
        if partitions.len() > FETCH_SESSION_PARTITIONS_MAX {
            return None;
        }
        let own: Vec<(SessionId, u64)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == asker.connection)
            .map(|(id, s)| (*id, s.last_used_ms))
            .collect();
        if own.len() >= FETCH_SESSIONS_PER_CONNECTION_MAX {
            if let Some((id, _)) = own.iter().min_by_key(|(id, used)| (*used, *id)) {
                self.evict(*id);
            }
        }
        if self.sessions.len() >= FETCH_SESSIONS_PER_SHARD_MAX {
            let victim = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    now_ms.saturating_sub(s.last_used_ms) >= FETCH_SESSION_EVICTABLE_IDLE_MS
                        || (asker.follower && !s.follower)
                })
                .min_by_key(|(id, s)| (s.last_used_ms, **id))
                .map(|(id, _)| *id)?;
            self.evict(victim);
        }
        let id = self.fresh_id();
        let mut session = Session::new(asker, now_ms);
        for (key, wanted) in partitions {
            if !session.partitions.contains_key(key) {
                session.upsert(key.clone(), *wanted);
            }
        }
        session.check();
        self.sessions.insert(id, session);
        self.counts.created += 1;
        Some(id)
    }

    fn evict(&mut self, id: SessionId) {
        if self.sessions.remove(&id).is_some() {
            self.counts.evicted += 1;
        }
    }

    /// An id no session has, never 0.
    fn fresh_id(&mut self) -> SessionId {
        loop {
            let mut x = self.id_state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.id_state = x;
            let id = SessionId(i32::try_from(x & 0x7fff_ffff).unwrap_or(1));
            if id.0 != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Which of the partitions read (in the order [`Plan::Read`] gave) the
    /// answer includes; remembers what the answer tells the client.
    pub(crate) fn answered(&mut self, ticket: Ticket, outcomes: &[(PartitionKey, ReadOutcome)]) -> Vec<bool> {
        let Some(session) = self.sessions.get_mut(&ticket.session_id) else {
            // No session (or it went while the fetch was parked): every
            // partition read is answered, which is never wrong.
            return outcomes.iter().map(|_| true).collect();
        };
        let mut include = Vec::with_capacity(outcomes.len());
        let mut to_back = Vec::new();
        for (key, outcome) in outcomes {
            let Some(cached) = session.partitions.get_mut(key) else {
                // Forgotten by a later request while this one was parked.
                include.push(true);
                continue;
            };
            let moved = cached.answered != Some(outcome.marks);
            cached.answered = (!outcome.failed).then_some(outcome.marks);
            if outcome.has_records {
                to_back.push(key.clone());
            }
            include.push(match ticket.kind {
                AnswerKind::Full => true,
                AnswerKind::Incremental => outcome.has_records || outcome.failed || moved,
            });
        }
        for key in &to_back {
            session.move_to_back(key);
        }
        session.check();
        assert_eq!(include.len(), outcomes.len(), "one verdict per partition read");
        include
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN: ConnectionId = ConnectionId(1);
    const CONSUMER: Asker = Asker {
        connection: CONN,
        follower: false,
    };

    fn key(topic: &str, index: i32) -> PartitionKey {
        (topic.to_string(), index)
    }

    fn wanted(offset: i64) -> Wanted {
        Wanted {
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn ask(id: SessionId, epoch: i32, partitions: &[(PartitionKey, i64)], forgotten: &[PartitionKey]) -> FetchAsk {
        FetchAsk {
            session_id: id,
            epoch: SessionEpoch(epoch),
            partitions: partitions.iter().map(|(k, o)| (k.clone(), wanted(*o))).collect(),
            forgotten: forgotten.to_vec(),
        }
    }

    fn quiet(hw: i64) -> ReadOutcome {
        ReadOutcome {
            has_records: false,
            failed: false,
            marks: Marks {
                high_watermark: hw,
                last_stable_offset: hw,
                log_start: 0,
            },
        }
    }

    fn read(plan: Plan) -> (Ticket, Vec<(PartitionKey, Wanted)>) {
        match plan {
            Plan::Read { ticket, partitions } => (ticket, partitions),
            Plan::Refuse(e) => panic!("refused: {e:?}"),
        }
    }

    /// Opens a session over `partitions` (all at offset 0, high watermark 10).
    fn open(table: &mut FetchSessions, asker: Asker, partitions: &[PartitionKey], now_ms: u64) -> SessionId {
        let named: Vec<(PartitionKey, i64)> = partitions.iter().map(|k| (k.clone(), 0)).collect();
        let (ticket, read_list) = read(table.begin(now_ms, asker, ask(SessionId(0), 0, &named, &[])));
        assert_eq!(ticket.kind, AnswerKind::Full);
        assert_ne!(ticket.session_id, SessionId(0), "a session was made");
        let outcomes: Vec<_> = read_list.iter().map(|(k, _)| (k.clone(), quiet(10))).collect();
        assert!(table.answered(ticket, &outcomes).iter().all(|i| *i));
        ticket.session_id
    }

    #[test]
    fn sessionless_fetches_make_no_session() {
        let mut table = FetchSessions::new(7);
        let (ticket, partitions) = read(table.begin(0, CONSUMER, ask(SessionId(0), -1, &[(key("t", 0), 5)], &[])));
        assert_eq!(ticket.session_id, SessionId(0));
        assert_eq!(partitions, vec![(key("t", 0), wanted(5))]);
        assert_eq!(table.counts().open, 0);
    }

    #[test]
    fn epochs_must_follow_one_another() {
        let mut table = FetchSessions::new(7);
        let id = open(&mut table, CONSUMER, &[key("t", 0)], 0);
        assert_eq!(
            table.begin(1, CONSUMER, ask(id, 2, &[], &[])),
            Plan::Refuse(FetchSessionError::InvalidEpoch)
        );
        let (ticket, _) = read(table.begin(1, CONSUMER, ask(id, 1, &[], &[])));
        assert_eq!(ticket.kind, AnswerKind::Incremental);
        // The same epoch twice (a retried request) is refused too.
        assert_eq!(
            table.begin(2, CONSUMER, ask(id, 1, &[], &[])),
            Plan::Refuse(FetchSessionError::InvalidEpoch)
        );
        assert!(matches!(
            table.begin(2, CONSUMER, ask(id, 2, &[], &[])),
            Plan::Read { .. }
        ));
        assert_eq!(SessionEpoch(i32::MAX).next(), SessionEpoch(1));
    }

    #[test]
    fn unknown_and_foreign_sessions_are_not_found() {
        let mut table = FetchSessions::new(7);
        assert_eq!(
            table.begin(0, CONSUMER, ask(SessionId(42), 1, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
        let id = open(&mut table, CONSUMER, &[key("t", 0)], 0);
        let other = Asker {
            connection: ConnectionId(2),
            follower: false,
        };
        assert_eq!(
            table.begin(1, other, ask(id, 1, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
        // Nor may another connection close it.
        let _ = table.begin(1, other, ask(id, -1, &[], &[]));
        assert!(matches!(
            table.begin(1, CONSUMER, ask(id, 1, &[], &[])),
            Plan::Read { .. }
        ));
        table.connection_closed(CONN);
        assert_eq!(
            table.begin(2, CONSUMER, ask(id, 2, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
    }

    #[test]
    fn incremental_reads_the_whole_session_and_answers_what_moved() {
        let mut table = FetchSessions::new(7);
        let (a, b, c) = (key("t", 0), key("t", 1), key("u", 0));
        let id = open(&mut table, CONSUMER, &[a.clone(), b.clone(), c.clone()], 0);
        // Only `a` changed its offset; every partition is still read, `a`
        // at its new offset.
        let (ticket, partitions) = read(table.begin(1, CONSUMER, ask(id, 1, &[(a.clone(), 3)], &[])));
        assert_eq!(
            partitions,
            vec![(a.clone(), wanted(3)), (b.clone(), wanted(0)), (c.clone(), wanted(0))]
        );
        let mut with_records = quiet(10);
        with_records.has_records = true;
        let mut moved = quiet(12);
        let mut failed = quiet(10);
        failed.failed = true;
        moved.marks.log_start = 0;
        let include = table.answered(
            ticket,
            &[(a.clone(), with_records), (b.clone(), moved), (c.clone(), quiet(10))],
        );
        assert_eq!(
            include,
            vec![true, true, false],
            "records and a moved mark are answered, the rest not"
        );
        // `a` sent records: it goes to the back of the order.
        let (ticket, partitions) = read(table.begin(2, CONSUMER, ask(id, 2, &[], &[])));
        let order: Vec<PartitionKey> = partitions.into_iter().map(|(k, _)| k).collect();
        assert_eq!(order, vec![b.clone(), c.clone(), a.clone()]);
        // An error is answered, and answered again by its marks once it clears.
        let include = table.answered(
            ticket,
            &[(b.clone(), quiet(12)), (c.clone(), failed), (a.clone(), quiet(10))],
        );
        assert_eq!(include, vec![false, true, false]);
        let (ticket, _) = read(table.begin(3, CONSUMER, ask(id, 3, &[], &[])));
        let include = table.answered(
            ticket,
            &[(b.clone(), quiet(12)), (c.clone(), quiet(10)), (a.clone(), quiet(10))],
        );
        assert_eq!(include, vec![false, true, false]);
        // The last stable offset moving alone is news too.
        let (ticket, _) = read(table.begin(4, CONSUMER, ask(id, 4, &[], &[])));
        let mut lso = quiet(12);
        lso.marks.last_stable_offset = 11;
        let include = table.answered(ticket, &[(b, lso), (c, quiet(10)), (a, quiet(10))]);
        assert_eq!(include, vec![true, false, false]);
    }

    #[test]
    fn forgotten_partitions_leave_and_an_empty_session_closes() {
        let mut table = FetchSessions::new(7);
        let (a, b) = (key("t", 0), key("t", 1));
        let id = open(&mut table, CONSUMER, &[a.clone(), b.clone()], 0);
        let (_, partitions) = read(table.begin(1, CONSUMER, ask(id, 1, &[], std::slice::from_ref(&a))));
        assert_eq!(partitions, vec![(b.clone(), wanted(0))]);
        // Forget the last one: the session closes, the answer is sessionless.
        let (ticket, partitions) = read(table.begin(2, CONSUMER, ask(id, 2, &[], &[b])));
        assert_eq!(ticket.session_id, SessionId(0));
        assert!(partitions.is_empty());
        assert_eq!(table.counts().open, 0);
        assert_eq!(
            table.begin(3, CONSUMER, ask(id, 3, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
    }

    #[test]
    fn a_full_fetch_closes_the_session_it_names() {
        let mut table = FetchSessions::new(7);
        let id = open(&mut table, CONSUMER, &[key("t", 0)], 0);
        let (ticket, _) = read(table.begin(1, CONSUMER, ask(id, 0, &[(key("t", 0), 0)], &[])));
        assert_ne!(ticket.session_id, id, "a new session replaces it");
        assert_eq!(table.counts().open, 1);
        let (ticket, _) = read(table.begin(2, CONSUMER, ask(ticket.session_id, -1, &[(key("t", 0), 0)], &[])));
        assert_eq!(ticket.session_id, SessionId(0));
        assert_eq!(table.counts().open, 0);
    }

    #[test]
    fn a_full_table_evicts_only_idle_sessions_for_consumers() {
        let mut table = FetchSessions::new(7);
        let asker = |n: u64, follower: bool| Asker {
            connection: ConnectionId(n),
            follower,
        };
        let ids: Vec<SessionId> = (0..FETCH_SESSIONS_PER_SHARD_MAX)
            .map(|n| open(&mut table, asker(n as u64 + 10, false), &[key("t", 0)], n as u64))
            .collect();
        assert_eq!(table.counts().open, FETCH_SESSIONS_PER_SHARD_MAX as u64);
        // Every session is fresh: a newcomer goes sessionless.
        let named = [(key("t", 0), 0)];
        let (ticket, _) = read(table.begin(2_000, asker(1, false), ask(SessionId(0), 0, &named, &[])));
        assert_eq!(ticket.session_id, SessionId(0));
        assert_eq!(table.counts().not_made, 1);
        // A follower takes the least recently used consumer's slot.
        let (ticket, _) = read(table.begin(2_000, asker(2, true), ask(SessionId(0), 0, &named, &[])));
        assert_ne!(ticket.session_id, SessionId(0));
        assert_eq!(
            table.begin(2_001, asker(10, false), ask(ids[0], 1, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
        // Once the oldest has idled long enough, a consumer takes its slot.
        let later = 1 + FETCH_SESSION_EVICTABLE_IDLE_MS;
        let (ticket, _) = read(table.begin(later, asker(3, false), ask(SessionId(0), 0, &named, &[])));
        assert_ne!(ticket.session_id, SessionId(0));
        assert_eq!(
            table.begin(later, asker(11, false), ask(ids[1], 1, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
        assert_eq!(table.counts().evicted, 2);
        assert_eq!(table.counts().open, FETCH_SESSIONS_PER_SHARD_MAX as u64);
    }

    #[test]
    fn a_connection_keeps_a_bounded_number_of_sessions() {
        let mut table = FetchSessions::new(7);
        let ids: Vec<SessionId> = (0..=FETCH_SESSIONS_PER_CONNECTION_MAX)
            .map(|n| open(&mut table, CONSUMER, &[key("t", 0)], n as u64))
            .collect();
        assert_eq!(table.counts().open, FETCH_SESSIONS_PER_CONNECTION_MAX as u64);
        assert_eq!(
            table.begin(100, CONSUMER, ask(ids[0], 1, &[], &[])),
            Plan::Refuse(FetchSessionError::IdNotFound),
            "its oldest went"
        );
    }

    #[test]
    fn a_session_cannot_grow_past_its_bound() {
        let mut table = FetchSessions::new(7);
        let id = open(&mut table, CONSUMER, &[key("t", 0)], 0);
        let many: Vec<(PartitionKey, i64)> = (0..FETCH_SESSION_PARTITIONS_MAX as i32)
            .map(|i| (key("u", i), 0))
            .collect();
        assert_eq!(
            table.begin(1, CONSUMER, ask(id, 1, &many, &[])),
            Plan::Refuse(FetchSessionError::IdNotFound)
        );
        assert_eq!(table.counts().open, 0);
        // So many in a full fetch: answered without a session.
        let (ticket, _) = read(table.begin(
            2,
            CONSUMER,
            ask(SessionId(0), 0, &[many, vec![(key("t", 0), 0)]].concat(), &[]),
        ));
        assert_eq!(ticket.session_id, SessionId(0));
    }

    mod model {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        /// A session as the model sees it.
        #[derive(Debug, Clone)]
        struct Modelled {
            owner: u64,
            next_epoch: i32,
            last_used_ms: u64,
            partitions: BTreeMap<PartitionKey, (i64, Option<Marks>)>,
        }

        #[derive(Debug, Clone)]
        enum Step {
            Open {
                conn: u64,
                partitions: Vec<(i32, i64)>,
            },
            Incremental {
                conn: u64,
                pick: usize,
                epoch_off: i32,
                adds: Vec<(i32, i64)>,
                forgets: Vec<i32>,
            },
            Close {
                conn: u64,
                pick: usize,
            },
        }

        fn step() -> impl Strategy<Value = Step> {
            let partitions = || prop::collection::vec((0i32..6, 0i64..4), 0..4);
            prop_oneof![
                (0u64..3, partitions()).prop_map(|(conn, partitions)| Step::Open { conn, partitions }),
                (
                    0u64..3,
                    0usize..8,
                    prop_oneof![4 => Just(0i32), 1 => -1i32..2],
                    partitions(),
                    prop::collection::vec(0i32..6, 0..3)
                )
                    .prop_map(|(conn, pick, epoch_off, adds, forgets)| Step::Incremental {
                        conn,
                        pick,
                        epoch_off,
                        adds,
                        forgets
                    }),
                (0u64..3, 0usize..8).prop_map(|(conn, pick)| Step::Close { conn, pick }),
            ]
        }

        fn key(index: i32) -> PartitionKey {
            ("t".to_string(), index)
        }

        fn named(partitions: &[(i32, i64)]) -> Vec<(PartitionKey, Wanted)> {
            let mut seen = std::collections::HashSet::new();
            partitions
                .iter()
                .filter(|(p, _)| seen.insert(*p))
                .map(|(p, offset)| (key(*p), wanted(*offset)))
                .collect()
        }

        fn marks(seed: i64) -> ReadOutcome {
            ReadOutcome {
                has_records: seed % 5 == 0,
                failed: seed % 7 == 0,
                marks: Marks {
                    high_watermark: seed % 3,
                    last_stable_offset: seed % 3,
                    log_start: 0,
                },
            }
        }

        /// Answers a plan the way the model expects, checking the verdicts.
        fn answer(
            table: &mut FetchSessions,
            sessions: &mut BTreeMap<SessionId, Modelled>,
            ticket: Ticket,
            read: &[(PartitionKey, Wanted)],
            seed: i64,
        ) {
            let outcomes: Vec<(PartitionKey, ReadOutcome)> = read
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), marks(seed + i as i64)))
                .collect();
            let include = table.answered(ticket, &outcomes);
            let Some(model) = sessions.get_mut(&ticket.session_id) else {
                assert!(include.iter().all(|i| *i));
                return;
            };
            for ((k, outcome), included) in outcomes.iter().zip(include) {
                let cached = model.partitions.get_mut(k).expect("only session partitions are read");
                let expected = ticket.kind == AnswerKind::Full
                    || outcome.has_records
                    || outcome.failed
                    || cached.1 != Some(outcome.marks);
                assert_eq!(included, expected, "{k:?} {outcome:?} cached {:?}", cached.1);
                cached.1 = (!outcome.failed).then_some(outcome.marks);
            }
        }

        proptest! {
            /// Against a model of every session: what each request reads,
            /// which errors it gets, and which partitions its answer lists.
            #[test]
            fn the_table_matches_a_model(steps in prop::collection::vec(step(), 1..120)) {
                let mut table = FetchSessions::new(3);
                let mut sessions: BTreeMap<SessionId, Modelled> = BTreeMap::new();
                for (now, step) in steps.into_iter().enumerate() {
                    let now_ms = now as u64;
                    let seed = now as i64;
                    let ids: Vec<SessionId> = sessions.keys().copied().collect();
                    match step {
                        Step::Open { conn, partitions } => {
                            let asker = Asker { connection: ConnectionId(conn), follower: false };
                            let asked = named(&partitions);
                            let plan = table.begin(now_ms, asker, FetchAsk { session_id: SessionId(0), epoch: SessionEpoch::INITIAL, partitions: asked.clone(), forgotten: Vec::new() });
                            let Plan::Read { ticket, partitions: read } = plan else { panic!("a full fetch is never refused") };
                            prop_assert_eq!(&read, &asked);
                            if asked.is_empty() {
                                prop_assert_eq!(ticket.session_id, SessionId(0));
                            } else {
                                prop_assert!(ticket.session_id != SessionId(0));
                                let own: Vec<(u64, SessionId)> = sessions.iter().filter(|(_, s)| s.owner == conn).map(|(id, s)| (s.last_used_ms, *id)).collect();
                                if own.len() >= FETCH_SESSIONS_PER_CONNECTION_MAX {
                                    let oldest = own.iter().min().map(|(_, id)| *id).unwrap();
                                    sessions.remove(&oldest);
                                }
                                let partitions = asked.iter().map(|(k, w)| (k.clone(), (w.fetch_offset, None))).collect();
                                sessions.insert(ticket.session_id, Modelled { owner: conn, next_epoch: 1, last_used_ms: now_ms, partitions });
                            }
                            answer(&mut table, &mut sessions, ticket, &read, seed);
                        }
                        Step::Incremental { conn, pick, epoch_off, adds, forgets } => {
                            let asker = Asker { connection: ConnectionId(conn), follower: false };
                            let id = ids.get(pick).copied().unwrap_or(SessionId(12345));
                            let model = sessions.get(&id).filter(|s| s.owner == conn).cloned();
                            let epoch = SessionEpoch(model.as_ref().map_or(1, |m| m.next_epoch) + epoch_off);
                            if epoch == SessionEpoch::INITIAL || epoch == SessionEpoch::FINAL {
                                // A full fetch: `Open` and `Close` cover those.
                                continue;
                            }
                            let added = named(&adds);
                            let forgotten: Vec<PartitionKey> = forgets.iter().map(|p| key(*p)).collect();
                            let plan = table.begin(now_ms, asker, FetchAsk { session_id: id, epoch, partitions: added.clone(), forgotten: forgotten.clone() });
                            let Some(mut model) = model else {
                                prop_assert_eq!(plan, Plan::Refuse(FetchSessionError::IdNotFound));
                                continue;
                            };
                            if epoch_off != 0 {
                                prop_assert_eq!(plan, Plan::Refuse(FetchSessionError::InvalidEpoch));
                                continue;
                            }
                            for k in &forgotten {
                                model.partitions.remove(k);
                            }
                            for (k, w) in &added {
                                let answered = model.partitions.get(k).and_then(|c| c.1);
                                model.partitions.insert(k.clone(), (w.fetch_offset, answered));
                            }
                            let Plan::Read { ticket, partitions: read } = plan else { panic!("expected a read") };
                            if model.partitions.is_empty() {
                                prop_assert_eq!(ticket.session_id, SessionId(0));
                                prop_assert!(read.is_empty());
                                sessions.remove(&id);
                                continue;
                            }
                            prop_assert_eq!(ticket, Ticket { session_id: id, kind: AnswerKind::Incremental });
                            let mut got: Vec<(PartitionKey, i64)> = read.iter().map(|(k, w)| (k.clone(), w.fetch_offset)).collect();
                            got.sort();
                            let expected: Vec<(PartitionKey, i64)> = model.partitions.iter().map(|(k, c)| (k.clone(), c.0)).collect();
                            prop_assert_eq!(got, expected, "an incremental fetch reads the whole session");
                            model.next_epoch = SessionEpoch(model.next_epoch).next().0;
                            model.last_used_ms = now_ms;
                            sessions.insert(id, model);
                            answer(&mut table, &mut sessions, ticket, &read, seed);
                        }
                        Step::Close { conn, pick } => {
                            let asker = Asker { connection: ConnectionId(conn), follower: false };
                            let Some(id) = ids.get(pick).copied() else { continue };
                            let plan = table.begin(now_ms, asker, FetchAsk { session_id: id, epoch: SessionEpoch::FINAL, partitions: Vec::new(), forgotten: Vec::new() });
                            let closed = matches!(plan, Plan::Read { ticket: Ticket { session_id: SessionId(0), .. }, .. });
                            prop_assert!(closed, "a closing fetch is answered without a session");
                            if sessions.get(&id).is_some_and(|s| s.owner == conn) {
                                sessions.remove(&id);
                            }
                        }
                    }
                    prop_assert_eq!(table.counts().open, sessions.len() as u64);
                }
            }
        }
    }
}
