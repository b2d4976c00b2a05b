//! # `shardline-groups`: the consumer-group rules as a plain state machine
//!
//! Kafka's classic group protocol for one group — JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, session expiry, rebalance deadlines — and the
//! group's committed offsets (plain, pending and held inside transactions),
//! with the replay that rebuilds groups from what a coordinator stored.
//!
//! The state machine ([`Group`]) takes `now` and one event per call and
//! *returns* what follows: an answer at once, or a [`Ticket`] for a parked
//! JoinGroup or SyncGroup plus, from any call, the [`Answer`]s owed to
//! tickets parked earlier. It holds no channel, socket, file or clock;
//! member ids come from a [`MemberIds`] the caller owns and seeds. So the
//! engine (`engine/src/coordinator`) keeps the parked requests and the log
//! writes and applies the returned answers, and the simulator
//! (`sim/src/groups.rs`) drives the very same rules on virtual time with a
//! seeded id source, replaying a seed byte for byte.
//!
//! Refusals are a small enum ([`Refusal`]); the engine turns them into
//! Kafka error codes in `engine/src/error.rs`. The stored facts replay
//! rebuilds from ([`Stored`], [`GroupSnapshot`], [`CommittedOffset`]) are
//! plain types; their byte layout belongs to the engine
//! (`engine/src/coordinator/record.rs`).
//!
//! Invariants asserted in release builds, after every transition of a
//! group (`Group::check`): a generation never goes back; in
//! CompletingRebalance and Stable the leader is a member; in Stable every
//! member holds an assignment of the current generation and nothing waits
//! on a SyncGroup; an accepted commit names the current generation (or is a
//! simple commit of a group without members); a partition's stored offset
//! never moves to an earlier log entry; every table stays within its bound.
//!
//! ## Where its state lives
//! A [`Group`] belongs to whoever drives it: in the engine, the shard that
//! owns the group's `__consumer_offsets` partition (`!Send` there, never
//! locked); in the simulator, the run's one thread.

mod group;
mod stored;

pub use group::{
    Answer, Group, GroupState, JoinAnswer, JoinRequest, JoinStep, Member, MemberIds, Refusal, StoredOffset, SyncAnswer,
    SyncStep, Ticket, GROUP_MEMBERS_MAX, GROUP_OFFSETS_MAX, INITIAL_REBALANCE_DELAY, PENDING_MEMBERS_MAX,
    REBALANCE_TIMEOUT_MAX, SESSION_TIMEOUT_MAX, SESSION_TIMEOUT_MIN,
};
pub use stored::{replay_entry, CommittedOffset, GroupSnapshot, MemberSnapshot, Stored};
