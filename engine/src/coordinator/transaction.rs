//! The transaction coordinator's rules (KIP-98) for the transactional ids of
//! one `__transaction_state` partition: a state machine that takes `now`
//! and requests and answers with the state to store next. It does no I/O
//! and reads no clock; `transactions.rs` drives it (stores, writes markers,
//! answers clients).
//!
//! ## States of one transactional id
//! ```text
//!              InitProducerId (epoch + 1)
//!   Empty ───────────────────────────────► Empty
//!     │ AddPartitionsToTxn / AddOffsetsToTxn
//!     ▼
//!   Ongoing ──EndTxn(commit)──► PrepareCommit ──markers written──► CompleteCommit
//!     │ ──EndTxn(abort)───────► PrepareAbort ──markers written───► CompleteAbort
//!     │ ──timeout, or InitProducerId of a new instance (epoch + 1)──► PrepareAbort
//!   Complete* ──AddPartitionsToTxn──► Ongoing (a new transaction)
//! ```
//! A transition is *decided* here, *stored* by the driver (durable and
//! replicated in the partition's log) and only then *installed*
//! ([`TransactionTable::stored`]). While one is being stored the id is
//! pending and every other request for it is answered
//! CONCURRENT_TRANSACTIONS (clients retry). A Prepare* state is the commit
//! point: once stored, the transaction ends that way whatever crashes, since
//! a coordinator that loads a Prepare* state writes its markers again.
//!
//! ## Invariants (asserted)
//! - A producer id's epoch never goes down.
//! - Empty and Complete* states hold no partitions and no groups.
//! - A transition is installed only if it was decided (the id was pending).

use std::collections::{BTreeSet, HashMap};

use crate::{
    error::TxnError,
    producer::{ProducerEpoch, ProducerId},
};

/// Transactional ids one coordinator partition holds; a new id past it is
/// refused with COORDINATOR_NOT_AVAILABLE (as groups are).
pub(crate) const TRANSACTIONS_PER_PARTITION_MAX: usize = 10_000;
/// Partitions one transaction may write to: bounds the markers one EndTxn
/// writes and the size of its stored state (well under a batch's 1 MiB).
pub(crate) const PARTITIONS_PER_TRANSACTION_MAX: usize = 4096;
/// Consumer groups one transaction may commit offsets for.
pub(crate) const GROUPS_PER_TRANSACTION_MAX: usize = 64;
/// Longest `transaction.timeout.ms` accepted (Kafka's broker default for
/// `transaction.max.timeout.ms`, 15 minutes).
pub(crate) const TRANSACTION_TIMEOUT_MS_MAX: i32 = 900_000;
/// An id with no transaction open and no change for this long is forgotten
/// (Kafka's `transactional.id.expiration.ms` default, 7 days): the table's
/// bound is then on ids in use, not on every id ever seen.
pub(crate) const TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Where a transactional id is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The stored code (`record.rs`, kind 7).
    pub(crate) fn code(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Kafka's name of the state (DescribeTransactions, ListTransactions).
    pub(crate) fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether no transaction is open (nothing held, nothing to write).
    fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }

    /// Whether markers are (to be) written.
    pub(crate) fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// Everything stored about one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnMetadata {
    pub(crate) transactional_id: String,
    pub(crate) producer_id: ProducerId,
    pub(crate) producer_epoch: ProducerEpoch,
    pub(crate) timeout_ms: i32,
    pub(crate) state: TxnState,
    /// When the open transaction began (ms since the UNIX epoch).
    pub(crate) started_ms: i64,
    /// When this state was stored (ms since the UNIX epoch; stamped by the
    /// driver as it stores): ids idle for long are forgotten.
    pub(crate) updated_ms: i64,
    /// Partitions the transaction wrote to (markers go there).
    pub(crate) partitions: BTreeSet<(String, i32)>,
    /// Groups it committed offsets for (their coordinators learn the outcome).
    pub(crate) groups: BTreeSet<String>,
}

impl TxnMetadata {
    /// The same id with its open transaction ended (markers written).
    pub(crate) fn completed(&self) -> TxnMetadata {
        assert!(self.state.is_prepared(), "only a prepared transaction completes");
        let state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        TxnMetadata {
            state,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            ..self.clone()
        }
    }

    /// The same id one epoch later (a new id at epoch 0 when the epoch is
    /// exhausted), which fences every older instance.
    fn bumped(&self, fresh: ProducerId) -> TxnMetadata {
        let (producer_id, producer_epoch) = if self.producer_epoch.0 >= i16::MAX - 1 {
            (fresh, ProducerEpoch(0))
        } else {
            (self.producer_id, ProducerEpoch(self.producer_epoch.0 + 1))
        };
        TxnMetadata {
            producer_id,
            producer_epoch,
            ..self.clone()
        }
    }
}

/// What InitProducerId does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InitStep {
    /// Store this (Empty) state, then answer with its producer id and epoch.
    Store(TxnMetadata),
    /// An older instance left a transaction open: store this PrepareAbort
    /// state (epoch bumped, so the old instance is fenced), write its abort
    /// markers, complete it, then answer with its producer id and epoch.
    AbortFirst(TxnMetadata),
}

/// What EndTxn does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndStep {
    /// Store this Prepare* state, then write markers and complete.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn already done the same way: answer OK.
    AlreadyDone,
}

/// The producer a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Producer {
    pub(crate) id: ProducerId,
    pub(crate) epoch: ProducerEpoch,
}

#[derive(Debug, Clone)]
struct Slot {
    meta: TxnMetadata,
    /// A decided transition is being stored.
    pending: bool,
}

/// The transactional ids of one coordinator partition.
#[derive(Debug, Default)]
pub(crate) struct TransactionTable {
    ids: HashMap<String, Slot>,
}

impl TransactionTable {
    /// Replay: the stored state of an id (the last one stored wins).
    pub(crate) fn restore(&mut self, meta: TxnMetadata) {
        if let Some(slot) = self.ids.get(&meta.transactional_id) {
            if slot.meta.producer_id == meta.producer_id && slot.meta.producer_epoch > meta.producer_epoch {
                tracing::warn!(id = %meta.transactional_id, "stored transaction state goes back an epoch: kept the newer");
                return;
            }
        }
        let id = meta.transactional_id.clone();
        self.ids.insert(id, Slot { meta, pending: false });
    }

    /// Replay: the id was deleted.
    pub(crate) fn forget(&mut self, transactional_id: &str) {
        self.ids.remove(transactional_id);
    }

    pub(crate) fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.ids.get(transactional_id).map(|slot| &slot.meta)
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Every id's state (ListTransactions).
    pub(crate) fn all(&self) -> impl Iterator<Item = &TxnMetadata> {
        self.ids.values().map(|slot| &slot.meta)
    }

    /// InitProducerId. `fresh` is a new producer id, used for a new id or
    /// when the epoch is exhausted; `expected` is the producer the client
    /// says it is (KIP-360, InitProducerId v3+), if any.
    pub(crate) fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<Producer>,
        now_ms: i64,
        fresh: ProducerId,
    ) -> Result<InitStep, TxnError> {
        if !(1..=TRANSACTION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let Some(slot) = self.ids.get_mut(transactional_id) else {
            if self.ids.len() >= TRANSACTIONS_PER_PARTITION_MAX {
                return Err(TxnError::CoordinatorNotAvailable);
            }
            let meta = TxnMetadata {
                transactional_id: transactional_id.to_string(),
                producer_id: fresh,
                producer_epoch: ProducerEpoch(0),
                timeout_ms,
                state: TxnState::Empty,
                started_ms: now_ms,
                updated_ms: now_ms,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
            };
            self.ids.insert(
                transactional_id.to_string(),
                Slot {
                    meta: meta.clone(),
                    pending: true,
                },
            );
            return Ok(InitStep::Store(meta));
        };
        if slot.pending || slot.meta.state.is_prepared() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if let Some(expected) = expected {
            let current = (slot.meta.producer_id, slot.meta.producer_epoch);
            if (expected.id, expected.epoch) != current {
                return Err(TxnError::ProducerFenced);
            }
        }
        let mut next = slot.meta.bumped(fresh);
        next.timeout_ms = timeout_ms;
        let step = if slot.meta.state == TxnState::Ongoing {
            next.state = TxnState::PrepareAbort;
            InitStep::AbortFirst(next)
        } else {
            next.state = TxnState::Empty;
            // Idle already; cleared anyway, whatever a stored state said.
            next.partitions.clear();
            next.groups.clear();
            InitStep::Store(next)
        };
        slot.pending = true;
        Ok(step)
    }

    /// AddPartitionsToTxn: `None` when every partition is in the
    /// transaction already (nothing to store).
    pub(crate) fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer: Producer,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.add(transactional_id, producer, now_ms, |next| {
            next.partitions.extend(partitions.iter().cloned());
            if next.partitions.len() > PARTITIONS_PER_TRANSACTION_MAX {
                return Err(TxnError::TooManyPartitions);
            }
            Ok(())
        })
    }

    /// AddOffsetsToTxn: the group's offsets will be committed (or not) with
    /// the transaction.
    pub(crate) fn add_group(
        &mut self,
        transactional_id: &str,
        producer: Producer,
        group: &str,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.add(transactional_id, producer, now_ms, |next| {
            next.groups.insert(group.to_string());
            if next.groups.len() > GROUPS_PER_TRANSACTION_MAX {
                return Err(TxnError::TooManyPartitions);
            }
            Ok(())
        })
    }

    fn add(
        &mut self,
        transactional_id: &str,
        producer: Producer,
        now_ms: i64,
        grow: impl FnOnce(&mut TxnMetadata) -> Result<(), TxnError>,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let slot = self.checked(transactional_id, producer)?;
        if slot.meta.state.is_prepared() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let mut next = slot.meta.clone();
        if next.state != TxnState::Ongoing {
            // A new transaction: nothing of an earlier one (stored states
            // are not trusted to have cleared it).
            next.partitions.clear();
            next.groups.clear();
            next.state = TxnState::Ongoing;
            next.started_ms = now_ms;
        }
        grow(&mut next)?;
        if next == slot.meta {
            return Ok(None);
        }
        slot.pending = true;
        Ok(Some(next))
    }

    /// EndTxn.
    pub(crate) fn end(
        &mut self,
        transactional_id: &str,
        producer: Producer,
        commit: bool,
    ) -> Result<EndStep, TxnError> {
        let slot = self.checked(transactional_id, producer)?;
        let state = slot.meta.state;
        match (state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = slot.meta.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                slot.pending = true;
                Ok(EndStep::Prepare(next))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(EndStep::AlreadyDone),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(TxnError::ConcurrentTransactions),
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// Ongoing transactions past their timeout at `now_ms`, each turned into
    /// a PrepareAbort with its epoch bumped (fencing the producer that left
    /// it open, as Kafka does) and marked pending: the driver stores them
    /// and writes their markers.
    pub(crate) fn expired(&mut self, now_ms: i64) -> Vec<TxnMetadata> {
        let mut out = Vec::new();
        for slot in self.ids.values_mut() {
            let meta = &slot.meta;
            let deadline_ms = meta.started_ms.saturating_add(i64::from(meta.timeout_ms));
            if slot.pending || meta.state != TxnState::Ongoing || now_ms < deadline_ms {
                continue;
            }
            // An exhausted epoch keeps its producer id: the abort still
            // happens, only the fencing by epoch cannot.
            let mut next = meta.bumped(meta.producer_id);
            next.state = TxnState::PrepareAbort;
            slot.pending = true;
            out.push(next);
        }
        out
    }

    /// Ids with nothing open whose last change is older than
    /// `expiration_ms` at `now_ms`, marked pending for the driver to delete
    /// (a tombstone stored, then [`forget`](Self::forget)).
    pub(crate) fn expirable(&mut self, now_ms: i64, expiration_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .ids
            .iter_mut()
            .filter(|(_, slot)| {
                !slot.pending
                    && slot.meta.state.is_idle()
                    && slot.meta.updated_ms.saturating_add(expiration_ms) <= now_ms
            })
            .map(|(id, slot)| {
                slot.pending = true;
                id.clone()
            })
            .collect();
        assert!(expired.len() <= self.ids.len(), "only known ids expire");
        expired
    }

    /// Prepared transactions whose markers are not being written (after a
    /// load, or a failed attempt), marked pending for the driver to finish.
    pub(crate) fn unfinished(&mut self) -> Vec<TxnMetadata> {
        self.ids
            .values_mut()
            .filter(|slot| !slot.pending && slot.meta.state.is_prepared())
            .map(|slot| {
                slot.pending = true;
                slot.meta.clone()
            })
            .collect()
    }

    /// A decided transition is stored: install it (the id stays pending
    /// when `keep_pending`, for the markers still to write).
    pub(crate) fn stored(&mut self, next: TxnMetadata, keep_pending: bool) {
        let slot = self.ids.get_mut(&next.transactional_id);
        assert!(
            slot.as_ref().is_some_and(|s| s.pending),
            "only a decided transition is installed"
        );
        let Some(slot) = slot else { return };
        if slot.meta.producer_id == next.producer_id {
            assert!(
                next.producer_epoch >= slot.meta.producer_epoch,
                "an epoch never goes down"
            );
        }
        if next.state.is_idle() {
            assert!(
                next.partitions.is_empty() && next.groups.is_empty(),
                "an idle id holds nothing"
            );
        }
        slot.meta = next;
        slot.pending = keep_pending;
    }

    /// Storing a decided transition failed: the id keeps its state. A new
    /// id that was never stored is dropped.
    pub(crate) fn store_failed(&mut self, transactional_id: &str, never_stored: bool) {
        if never_stored {
            self.ids.remove(transactional_id);
            return;
        }
        if let Some(slot) = self.ids.get_mut(transactional_id) {
            assert!(slot.pending, "only a pending id fails to store");
            slot.pending = false;
        }
    }

    /// The id, checked against the producer a request names.
    fn checked(&mut self, transactional_id: &str, producer: Producer) -> Result<&mut Slot, TxnError> {
        let slot = self
            .ids
            .get_mut(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if slot.meta.producer_id != producer.id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if slot.meta.producer_epoch != producer.epoch {
            return Err(TxnError::ProducerFenced);
        }
        if slot.pending {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use proptest::prelude::*;

    use super::*;

    const ID: &str = "app-1";
    const FRESH: ProducerId = ProducerId(1000);

    fn init(table: &mut TransactionTable, now_ms: i64) -> TxnMetadata {
        let step = table.init_producer_id(ID, 60_000, None, now_ms, FRESH).unwrap();
        let InitStep::Store(meta) = step else {
            panic!("{step:?}")
        };
        table.stored(meta.clone(), false);
        meta
    }

    fn producer(meta: &TxnMetadata) -> Producer {
        Producer {
            id: meta.producer_id,
            epoch: meta.producer_epoch,
        }
    }

    #[test]
    fn a_transaction_commits_through_prepare_and_complete() {
        let mut table = TransactionTable::default();
        let meta = init(&mut table, 0);
        assert_eq!((meta.producer_id, meta.producer_epoch), (FRESH, ProducerEpoch(0)));
        let me = producer(&meta);
        let next = table.add_partitions(ID, me, &[("t".into(), 0)], 10).unwrap().unwrap();
        assert_eq!(next.state, TxnState::Ongoing);
        assert_eq!(
            table.add_partitions(ID, me, &[("t".into(), 1)], 10),
            Err(TxnError::ConcurrentTransactions),
            "pending while stored"
        );
        table.stored(next, false);
        assert_eq!(table.add_partitions(ID, me, &[("t".into(), 0)], 11).unwrap(), None);
        let EndStep::Prepare(prepared) = table.end(ID, me, true).unwrap() else {
            panic!()
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        table.stored(prepared.clone(), true);
        assert_eq!(table.end(ID, me, true), Err(TxnError::ConcurrentTransactions));
        table.stored(prepared.completed(), false);
        assert_eq!(table.end(ID, me, true), Ok(EndStep::AlreadyDone));
        assert_eq!(table.end(ID, me, false), Err(TxnError::InvalidTxnState));
        assert!(table.get(ID).unwrap().partitions.is_empty());
    }

    #[test]
    fn a_new_instance_fences_the_old_and_aborts_its_transaction() {
        let mut table = TransactionTable::default();
        let old = producer(&init(&mut table, 0));
        let next = table.add_partitions(ID, old, &[("t".into(), 0)], 10).unwrap().unwrap();
        table.stored(next, false);
        let step = table.init_producer_id(ID, 60_000, None, 20, FRESH).unwrap();
        let InitStep::AbortFirst(abort) = step else {
            panic!("{step:?}")
        };
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(abort.producer_epoch, ProducerEpoch(1));
        assert_eq!(
            abort.partitions.len(),
            1,
            "markers go to the old transaction's partitions"
        );
        table.stored(abort.clone(), true);
        table.stored(abort.completed(), false);
        assert_eq!(
            table.add_partitions(ID, old, &[("t".into(), 0)], 30),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(table.end(ID, old, true), Err(TxnError::ProducerFenced));
        let other = Producer {
            id: ProducerId(5),
            epoch: ProducerEpoch(1),
        };
        assert_eq!(table.end(ID, other, true), Err(TxnError::InvalidProducerIdMapping));
    }

    #[test]
    fn an_open_transaction_expires_with_its_epoch_bumped() {
        let mut table = TransactionTable::default();
        let me = producer(&init(&mut table, 0));
        let next = table
            .add_partitions(ID, me, &[("t".into(), 0)], 1_000)
            .unwrap()
            .unwrap();
        table.stored(next, false);
        assert!(table.expired(60_999).is_empty());
        let expired = table.expired(61_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].state, TxnState::PrepareAbort);
        assert_eq!(expired[0].producer_epoch, ProducerEpoch(1));
        assert!(table.expired(70_000).is_empty(), "pending: not expired twice");
        table.stored(expired[0].clone(), true);
        table.stored(expired[0].completed(), false);
        assert_eq!(table.end(ID, me, true), Err(TxnError::ProducerFenced));
    }

    #[test]
    fn a_loaded_prepared_transaction_is_finished() {
        let mut table = TransactionTable::default();
        let mut meta = init(&mut table, 0);
        meta.state = TxnState::PrepareCommit;
        meta.partitions.insert(("t".into(), 3));
        table.restore(meta.clone());
        assert_eq!(table.unfinished(), vec![meta.clone()]);
        assert!(table.unfinished().is_empty(), "handed out once");
        table.stored(meta.completed(), false);
        assert_eq!(table.get(ID).unwrap().state, TxnState::CompleteCommit);
    }

    #[test]
    fn idle_ids_expire_and_busy_ones_do_not() {
        let mut table = TransactionTable::default();
        let me = producer(&init(&mut table, 0));
        assert!(table.expirable(999, 1000).is_empty());
        let next = table.add_partitions(ID, me, &[("t".into(), 0)], 10).unwrap().unwrap();
        table.stored(next, false);
        assert!(table.expirable(1_000_000, 1000).is_empty(), "a transaction is open");
        let EndStep::Prepare(prepared) = table.end(ID, me, false).unwrap() else {
            panic!()
        };
        table.stored(prepared.clone(), true);
        let mut done = prepared.completed();
        done.updated_ms = 2_000;
        table.stored(done, false);
        assert!(table.expirable(2_999, 1000).is_empty());
        assert_eq!(table.expirable(3_000, 1000), vec![ID.to_string()]);
        assert_eq!(
            table.add_partitions(ID, me, &[("t".into(), 0)], 3_001),
            Err(TxnError::ConcurrentTransactions)
        );
        table.forget(ID);
        assert!(table.get(ID).is_none());
    }

    #[test]
    fn bad_timeouts_and_full_tables_are_refused() {
        let mut table = TransactionTable::default();
        for timeout in [0, -1, TRANSACTION_TIMEOUT_MS_MAX + 1] {
            assert_eq!(
                table.init_producer_id(ID, timeout, None, 0, FRESH),
                Err(TxnError::InvalidTransactionTimeout)
            );
        }
        for i in 0..TRANSACTIONS_PER_PARTITION_MAX {
            let id = format!("id-{i}");
            let InitStep::Store(meta) = table.init_producer_id(&id, 1000, None, 0, FRESH).unwrap() else {
                panic!()
            };
            table.stored(meta, false);
        }
        assert_eq!(
            table.init_producer_id("one-more", 1000, None, 0, FRESH),
            Err(TxnError::CoordinatorNotAvailable)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Init { expected_ok: bool },
        Add(i32),
        End(bool),
        Expire(i64),
        Finish,
        Fail,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(|expected_ok| Op::Init { expected_ok }),
            (0i32..4).prop_map(Op::Add),
            any::<bool>().prop_map(Op::End),
            (0i64..200_000).prop_map(Op::Expire),
            Just(Op::Finish),
            Just(Op::Fail),
        ]
    }

    proptest! {
        /// Random requests against one id, each decided transition either
        /// stored or failed: the epoch never goes down, idle states hold
        /// nothing, and only the errors the rules name come out.
        #[test]
        fn the_rules_hold_under_any_sequence(ops in prop::collection::vec(op(), 1..120)) {
            let mut table = TransactionTable::default();
            let mut client: Option<Producer> = None;
            // (decided state, prepared, answer to InitProducerId)
            let mut decided: Option<(TxnMetadata, bool, bool)> = None;
            let mut last = (ProducerId(-1), ProducerEpoch(-1));
            let mut now_ms = 0i64;
            for op in ops {
                now_ms += 1;
                match op {
                    Op::Init { expected_ok } if decided.is_none() => {
                        let expected = if expected_ok { client } else { None };
                        let existed = table.get(ID).is_some();
                        match table.init_producer_id(ID, 60_000, expected, now_ms, FRESH) {
                            Ok(InitStep::Store(meta)) => decided = Some((meta, false, true)),
                            Ok(InitStep::AbortFirst(meta)) => decided = Some((meta, true, true)),
                            Err(e) => prop_assert!(existed && matches!(e, TxnError::ConcurrentTransactions | TxnError::ProducerFenced)),
                        }
                    }
                    Op::Add(p) if decided.is_none() => {
                        if let Some(me) = client {
                            match table.add_partitions(ID, me, &[("t".into(), p)], now_ms) {
                                Ok(Some(meta)) => decided = Some((meta, false, false)),
                                Ok(None) => {}
                                Err(e) => prop_assert!(matches!(e, TxnError::ConcurrentTransactions | TxnError::ProducerFenced)),
                            }
                        }
                    }
                    Op::End(commit) if decided.is_none() => {
                        if let Some(me) = client {
                            if let Ok(EndStep::Prepare(meta)) = table.end(ID, me, commit) {
                                decided = Some((meta, true, false));
                            }
                        }
                    }
                    Op::Expire(after) if decided.is_none() => {
                        now_ms += after;
                        if let Some(meta) = table.expired(now_ms).pop() {
                            decided = Some((meta, true, false));
                        }
                    }
                    Op::Finish => {
                        if let Some((meta, prepared, init)) = decided.take() {
                            table.stored(meta.clone(), prepared);
                            if prepared {
                                table.stored(meta.completed(), false);
                            }
                            if init {
                                client = Some(producer(&meta));
                            }
                        }
                    }
                    Op::Fail => {
                        if let Some((meta, _, _)) = decided.take() {
                            let never_stored = client.is_none() && meta.producer_epoch == ProducerEpoch(0) && meta.state == TxnState::Empty;
                            table.store_failed(ID, never_stored);
                        }
                    }
                    _ => {}
                }
                if let Some(meta) = table.get(ID) {
                    if meta.producer_id == last.0 {
                        prop_assert!(meta.producer_epoch >= last.1, "the epoch never goes down");
                    }
                    last = (meta.producer_id, meta.producer_epoch);
                    if meta.state.is_idle() {
                        prop_assert!(meta.partitions.is_empty() && meta.groups.is_empty());
                    }
                }
            }
        }
    }
}
