//! What the metadata group decides for a partition's leadership and ISR.
//!
//! These are the controller's rules, as pure functions from one
//! [`Placement`] to the next; the metadata state machine (`raft`) applies
//! them to its image and the simulator's controller model to its own. A
//! leader change always bumps the leader epoch; nothing else does here.
//! Every change a rule makes bumps the partition epoch (once per rule
//! applied); a rule that changes nothing keeps it.
//!
//! - A fenced broker leaves every ISR it is in, unless it is the last
//!   member (so the partition comes back when it does: no unclean
//!   election); if it led, the first replica, in preference order, that is
//!   in the ISR and not fenced takes over, or nobody.
//! - A broker returning (registering or unfenced) leads every leaderless
//!   partition whose ISR holds it.
//! - A broker registering again has restarted: writes it had not synced may
//!   be gone, so it must not go on leading under the epoch it led before
//!   (its followers hold records it lost, and it would write others at the
//!   same offsets under the same epoch, where no truncation can see them).
//!   It is treated as fenced, then returning: leadership moves to another
//!   in-sync replica, or back to it under a new epoch.
//! - A leader's ISR change is accepted only under its current leader epoch
//!   and the current partition epoch (KIP-497: a change based on an older
//!   state of the partition — a duplicated or retried proposal — is refused,
//!   not applied to a state its proposer never saw), must hold the leader,
//!   name replicas only, once each, and admit no fenced newcomer.

use crate::{
    replica::IsrProposal,
    types::{NodeId, Placement},
};

/// Why the metadata group refuses an ISR change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrRefusal {
    /// The proposer does not lead under that epoch any more (or never did).
    StaleLeaderEpoch,
    /// The partition changed since the state the proposal was based on
    /// (Kafka's INVALID_UPDATE_VERSION).
    StalePartitionEpoch,
    /// The proposed ISR does not hold the leader.
    LeaderNotInIsr,
    /// A broker appears twice.
    Duplicate,
    /// A broker that is not a replica.
    NotAReplica(NodeId),
    /// A broker not in the ISR now, fenced or not registered.
    FencedNewcomer(NodeId),
}

/// The leader the metadata group picks: the first replica in preference
/// order that is in the ISR and `usable`.
pub fn elect_leader(replicas: &[NodeId], isr: &[NodeId], usable: impl Fn(NodeId) -> bool) -> Option<NodeId> {
    let leader = replicas
        .iter()
        .copied()
        .find(|replica| isr.contains(replica) && usable(*replica));
    assert!(leader.is_none_or(|l| isr.contains(&l) && replicas.contains(&l)));
    leader
}

/// `placement` with its leader replaced by `leader` (epoch + 1).
fn with_leader(placement: &Placement, leader: Option<NodeId>) -> Placement {
    Placement {
        leader,
        leader_epoch: placement.leader_epoch.next(),
        ..placement.clone()
    }
}

/// `after`, a rule's decision from `before`, with the partition epoch that
/// goes with it: the next one if anything changed, else `before`'s.
///
/// # Panics
/// If `after` is inconsistent, or came with a partition epoch of its own.
fn stamped(before: &Placement, mut after: Placement) -> Placement {
    assert_eq!(
        after.partition_epoch, before.partition_epoch,
        "only stamped() moves the partition epoch"
    );
    if !after.same_state(before) {
        after.partition_epoch = before.partition_epoch.next();
    }
    after.assert_consistent();
    assert!(
        after.same_state(before) == (after.partition_epoch == before.partition_epoch),
        "the partition epoch moves exactly when the partition changes"
    );
    after
}

/// The placement after broker `node` is fenced; `fenced` tells which
/// brokers are fenced now (`node` among them).
///
/// # Panics
/// If `placement` or the result is inconsistent.
pub fn on_fence(placement: &Placement, node: NodeId, fenced: impl Fn(NodeId) -> bool) -> Placement {
    placement.assert_consistent();
    let mut after = placement.clone();
    if after.isr.contains(&node) && after.isr.len() > 1 {
        after.isr.retain(|member| *member != node);
    }
    if after.leader == Some(node) {
        let next = elect_leader(&after.replicas, &after.isr, |replica| {
            replica != node && !fenced(replica)
        });
        after = with_leader(&after, next);
    }
    let after = stamped(placement, after);
    assert_ne!(after.leader, Some(node), "a fenced broker leads nothing");
    after
}

/// The placement after broker `node` returns (registers or is unfenced).
pub fn on_return(placement: &Placement, node: NodeId) -> Placement {
    placement.assert_consistent();
    let after = if placement.leader.is_none() && placement.isr.contains(&node) {
        with_leader(placement, Some(node))
    } else {
        placement.clone()
    };
    stamped(placement, after)
}

/// The placement after broker `node` registers again (it restarted):
/// [`on_fence`], then [`on_return`]. The epoch always moves on where it led.
pub fn on_restart(placement: &Placement, node: NodeId, fenced: impl Fn(NodeId) -> bool) -> Placement {
    let after = on_return(&on_fence(placement, node, fenced), node);
    assert!(
        placement.leader != Some(node) || after.leader_epoch > placement.leader_epoch,
        "a restarted leader never leads on under its old epoch"
    );
    after
}

/// The placement after a leader's ISR change, or why it is refused.
/// `newcomer_allowed` says whether a broker may join (registered and not
/// fenced). The ISR is kept in replicas order, so equal sets are equal lists.
pub fn on_isr_change(
    placement: &Placement,
    proposal: &IsrProposal,
    newcomer_allowed: impl Fn(NodeId) -> bool,
) -> Result<Placement, IsrRefusal> {
    placement.assert_consistent();
    if placement.leader != Some(proposal.leader) || placement.leader_epoch != proposal.leader_epoch {
        return Err(IsrRefusal::StaleLeaderEpoch);
    }
    if placement.partition_epoch != proposal.partition_epoch {
        return Err(IsrRefusal::StalePartitionEpoch);
    }
    if !proposal.isr.contains(&proposal.leader) {
        return Err(IsrRefusal::LeaderNotInIsr);
    }
    let mut requested = proposal.isr.clone();
    requested.sort_unstable();
    requested.dedup();
    if requested.len() != proposal.isr.len() {
        return Err(IsrRefusal::Duplicate);
    }
    if let Some(stranger) = requested.iter().find(|member| !placement.replicas.contains(member)) {
        return Err(IsrRefusal::NotAReplica(*stranger));
    }
    if let Some(newcomer) = requested
        .iter()
        .find(|member| !placement.isr.contains(member) && !newcomer_allowed(**member))
    {
        return Err(IsrRefusal::FencedNewcomer(*newcomer));
    }
    let isr: Vec<NodeId> = placement
        .replicas
        .iter()
        .copied()
        .filter(|replica| requested.contains(replica))
        .collect();
    let after = stamped(
        placement,
        Placement {
            isr,
            ..placement.clone()
        },
    );
    assert_eq!(
        after.leader_epoch, placement.leader_epoch,
        "an ISR change keeps the leader epoch"
    );
    Ok(after)
}
