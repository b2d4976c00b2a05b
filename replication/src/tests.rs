//! Model tests of the rules: random event sequences against the invariants
//! the crate promises (the `assert!`s inside run on every step too).

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use std::time::Duration;

use proptest::prelude::*;
use shardline_log::Offset;

use crate::{
    election::{self, IsrRefusal},
    truncation_point, EpochEnd, EpochRefusal, IsrAnswer, IsrProposal, LeaderEpoch, Moment, NodeId, PartitionEpoch,
    Placement, ReplicaState, Role, RoleChange,
};

const LAG_MAX: Duration = Duration::from_millis(100);

fn ms(value: u64) -> Moment {
    Moment(Duration::from_millis(value))
}

/// A placement of replicas 1, 2, 3 (its partition epoch: its leader epoch).
fn placement(leader: i32, epoch: i32, isr: &[i32]) -> Placement {
    Placement {
        leader: Some(NodeId(leader)),
        leader_epoch: LeaderEpoch(epoch),
        partition_epoch: PartitionEpoch(epoch),
        replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        isr: isr.iter().copied().map(NodeId).collect(),
    }
}

/// One event a leader sees.
#[derive(Debug, Clone)]
enum LeaderEvent {
    /// The leader appended `count` records; `synced` of its unsynced ones became durable.
    Append { count: i64, synced: bool },
    /// Follower 2 or 3 fetched from (its log end) some offset up to the leader's end.
    Fetch { follower: i32, behind: i64 },
    /// Time passes.
    Tick { by_ms: u64 },
    /// The leader proposes its desired ISR and the metadata group takes it.
    AlterIsr,
}

fn leader_event() -> impl Strategy<Value = LeaderEvent> {
    prop_oneof![
        (1i64..5, any::<bool>()).prop_map(|(count, synced)| LeaderEvent::Append { count, synced }),
        (2i32..4, 0i64..6).prop_map(|(follower, behind)| LeaderEvent::Fetch { follower, behind }),
        (1u64..80).prop_map(|by_ms| LeaderEvent::Tick { by_ms }),
        Just(LeaderEvent::AlterIsr),
    ]
}

proptest! {
    /// A leader's high watermark never passes its durable end nor an
    /// in-sync follower's log end, never moves back, and its proposals keep
    /// it in its ISR.
    #[test]
    fn leader_high_watermark_model(events in proptest::collection::vec(leader_event(), 1..200)) {
        let mut state = ReplicaState::new(NodeId(1), ms(0));
        let mut placed = placement(1, 0, &[1, 2, 3]);
        prop_assert_eq!(state.apply_placement(&placed, Offset(0), ms(0)), RoleChange::BecameLeader);
        let (mut now, mut log_end, mut durable_end) = (0u64, 0i64, 0i64);
        let mut follower_end = [0i64; 4];
        for event in events {
            let hw_before = state.high_watermark();
            match event {
                LeaderEvent::Append { count, synced } => {
                    log_end += count;
                    if synced {
                        durable_end = log_end;
                    }
                }
                LeaderEvent::Fetch { follower, behind } => {
                    // A follower's log end never moves back while it follows one leader.
                    let fetch = (log_end - behind).max(follower_end[follower as usize]);
                    follower_end[follower as usize] = fetch;
                    state.record_follower_fetch(NodeId(follower), Offset(fetch), Offset(log_end), ms(now));
                }
                LeaderEvent::Tick { by_ms } => now += by_ms,
                LeaderEvent::AlterIsr => {
                    if let Some(proposal) = state.desired_isr(ms(now), LAG_MAX, |_| true) {
                        prop_assert!(proposal.isr.contains(&NodeId(1)));
                        state.isr_change_proposed(&proposal);
                        state.isr_change_answered(IsrAnswer::Accepted);
                        placed = election::on_isr_change(&placed, &proposal, |_| true).unwrap();
                        prop_assert_eq!(state.apply_placement(&placed, Offset(log_end), ms(now)), RoleChange::None);
                    }
                }
            }
            state.advance_high_watermark(Offset(durable_end), Offset(log_end));
            let hw = state.high_watermark();
            prop_assert!(hw >= hw_before, "moved back");
            prop_assert!(hw.0 <= durable_end);
            for member in state.isr() {
                if member.0 != 1 && hw > hw_before {
                    prop_assert!(hw.0 <= follower_end[member.0 as usize], "passed member {}", member);
                }
            }
        }
    }

    /// The metadata group's rules keep every placement consistent, bump
    /// the epoch exactly when the leader changes, and never let a fenced
    /// broker lead.
    #[test]
    fn election_model(steps in proptest::collection::vec((0u8..3, 1i32..4), 1..100)) {
        let mut placed = placement(1, 0, &[1, 2, 3]);
        let mut fenced = [false; 4];
        for (kind, node) in steps {
            let before = placed.clone();
            placed = match kind {
                0 => {
                    fenced[node as usize] = true;
                    election::on_fence(&placed, NodeId(node), |n| fenced[n.0 as usize])
                }
                1 => {
                    fenced[node as usize] = false;
                    election::on_return(&placed, NodeId(node))
                }
                _ => {
                    // A shrink proposed by the leader down to itself and `node`.
                    let Some(leader) = placed.leader else { continue };
                    let isr = if node == leader.0 { vec![leader] } else { vec![leader, NodeId(node)] };
                    let proposal = IsrProposal {
                        leader,
                        leader_epoch: placed.leader_epoch,
                        partition_epoch: placed.partition_epoch,
                        isr,
                    };
                    match election::on_isr_change(&placed, &proposal, |n| !fenced[n.0 as usize]) {
                        Ok(after) => after,
                        Err(IsrRefusal::FencedNewcomer(n)) => { prop_assert!(fenced[n.0 as usize]); continue }
                        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                }
            };
            placed.assert_consistent();
            prop_assert!(placed.leader_epoch >= before.leader_epoch);
            prop_assert_eq!(placed.leader != before.leader, placed.leader_epoch != before.leader_epoch);
            // The partition epoch moves exactly when the partition changes.
            prop_assert_eq!(placed.same_state(&before), placed.partition_epoch == before.partition_epoch);
            prop_assert!(placed.partition_epoch >= before.partition_epoch);
            if let Some(leader) = placed.leader {
                prop_assert!(!fenced[leader.0 as usize] || placed.leader == before.leader);
            }
        }
    }

    /// A cut is always inside the log and never below zero.
    #[test]
    fn truncation_point_stays_inside_the_log(end in -1i64..50, hw in 0i64..50, log_end in 0i64..50, own in proptest::option::of(0i64..50)) {
        let answer = if end < 0 { EpochEnd::Undefined } else { EpochEnd::Found { epoch: LeaderEpoch(1), end: Offset(end) } };
        let hw = Offset(hw.min(log_end));
        let truncation = truncation_point(LeaderEpoch(2), answer, own.map(Offset), hw, Offset(log_end));
        if let Some(cut) = truncation.cut {
            prop_assert!(cut < Offset(log_end) && cut >= Offset(0));
            if let (Some(own), true) = (own, end >= 0) {
                prop_assert!(cut.0 <= own.max(0), "never past the follower's own end of the epoch");
            }
        } else {
            prop_assert!(!truncation.ask_again);
        }
    }
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_rejoins_once_caught_up() {
    let mut state = ReplicaState::new(NodeId(1), ms(0));
    let placed = placement(1, 3, &[1, 2, 3]);
    state.apply_placement(&placed, Offset(10), ms(0));
    state.record_follower_fetch(NodeId(2), Offset(10), Offset(10), ms(50));
    assert_eq!(
        state.desired_isr(ms(90), LAG_MAX, |_| true),
        None,
        "within the lag bound"
    );
    let shrink = state.desired_isr(ms(150), LAG_MAX, |_| true).unwrap();
    assert_eq!(shrink.isr, vec![NodeId(1), NodeId(2)], "3 never fetched");
    let placed = election::on_isr_change(&placed, &shrink, |_| true).unwrap();
    state.apply_placement(&placed, Offset(10), ms(150));
    state.advance_high_watermark(Offset(10), Offset(10));
    assert_eq!(state.high_watermark(), Offset(10));
    state.record_follower_fetch(NodeId(2), Offset(10), Offset(10), ms(155));
    state.record_follower_fetch(NodeId(3), Offset(9), Offset(10), ms(160));
    let grow = state.desired_isr(ms(160), LAG_MAX, |_| true);
    assert_eq!(grow, None, "3 is behind the high watermark");
    state.record_follower_fetch(NodeId(3), Offset(10), Offset(10), ms(170));
    assert_eq!(
        state.desired_isr(ms(170), LAG_MAX, |n| n != NodeId(3)),
        None,
        "not alive"
    );
    let grow = state.desired_isr(ms(170), LAG_MAX, |_| true).unwrap();
    assert_eq!(grow.isr, vec![NodeId(1), NodeId(2), NodeId(3)]);
    let stale = IsrProposal {
        leader_epoch: LeaderEpoch(2),
        ..grow
    };
    assert_eq!(
        election::on_isr_change(&placed, &stale, |_| true),
        Err(IsrRefusal::StaleLeaderEpoch)
    );
}

#[test]
fn leader_epochs_are_checked_and_followers_follow() {
    let mut state = ReplicaState::new(NodeId(2), ms(0));
    assert_eq!(state.check_leader_epoch(None), Err(EpochRefusal::NotLeader));
    let change = state.apply_placement(&placement(1, 4, &[1, 2]), Offset(5), ms(0));
    assert_eq!(change, RoleChange::StartFollowing { generation: 1 });
    assert!(state.needs_truncation());
    assert_eq!(state.role(), Role::Follower { leader: NodeId(1) });
    state.follow_high_watermark(Offset(9), Offset(5));
    assert_eq!(state.high_watermark(), Offset(5), "bounded by the log end");
    assert_eq!(
        state.apply_placement(&placement(2, 5, &[1, 2]), Offset(5), ms(1)),
        RoleChange::BecameLeader
    );
    assert_eq!(
        state.check_leader_epoch(Some(LeaderEpoch(4))),
        Err(EpochRefusal::Fenced)
    );
    assert_eq!(
        state.check_leader_epoch(Some(LeaderEpoch(6))),
        Err(EpochRefusal::Unknown)
    );
    assert_eq!(state.check_leader_epoch(Some(LeaderEpoch(5))), Ok(LeaderEpoch(5)));
}

#[test]
fn fencing_the_last_isr_member_leaves_the_partition_leaderless_until_it_returns() {
    let placed = placement(1, 0, &[1]);
    let fenced = election::on_fence(&placed, NodeId(1), |_| true);
    assert_eq!(
        (fenced.leader, fenced.leader_epoch, fenced.isr.clone()),
        (None, LeaderEpoch(1), vec![NodeId(1)])
    );
    assert_eq!(election::on_return(&fenced, NodeId(2)), fenced, "2 is not in sync");
    let back = election::on_return(&fenced, NodeId(1));
    assert_eq!((back.leader, back.leader_epoch), (Some(NodeId(1)), LeaderEpoch(2)));
}

#[test]
#[should_panic(expected = "leader epoch went back")]
fn an_older_epoch_is_refused() {
    let mut state = ReplicaState::new(NodeId(2), ms(0));
    state.apply_placement(&placement(1, 4, &[1, 2]), Offset(0), ms(0));
    state.apply_placement(&placement(1, 3, &[1, 2]), Offset(0), ms(0));
}

/// Found by the simulator (seed 50, docs/reliability.md): the leader
/// proposed adding 1 to its ISR {2}; the metadata group took it, but the
/// leader, cut off from the metadata group, never saw the new ISR and went
/// on acknowledging with the high watermark of {2} alone. Fenced, it was
/// replaced by 1 — which did not have those records. While an addition is
/// pending, the high watermark waits for it too.
#[test]
fn the_high_watermark_waits_for_a_pending_isr_addition() {
    let mut state = ReplicaState::new(NodeId(2), ms(0));
    let mut placed = Placement {
        leader: Some(NodeId(2)),
        leader_epoch: LeaderEpoch(2),
        partition_epoch: PartitionEpoch(7),
        replicas: vec![NodeId(2), NodeId(3), NodeId(1)],
        isr: vec![NodeId(2)],
    };
    state.apply_placement(&placed, Offset(40), ms(0));
    state.record_follower_fetch(NodeId(1), Offset(42), Offset(42), ms(10));
    let grow = state.desired_isr(ms(10), LAG_MAX, |_| true).unwrap();
    assert_eq!(grow.isr, vec![NodeId(2), NodeId(1)]);
    state.isr_change_proposed(&grow);
    // The leader appends and syncs 4 more records; 1 has not fetched them.
    state.advance_high_watermark(Offset(46), Offset(46));
    assert_eq!(state.high_watermark(), Offset(42), "1 may already be in the ISR");
    state.isr_change_answered(IsrAnswer::Accepted);
    state.advance_high_watermark(Offset(46), Offset(46));
    assert_eq!(state.high_watermark(), Offset(42), "accepted, not yet seen");
    placed = election::on_isr_change(&placed, &grow, |_| true).unwrap();
    state.apply_placement(&placed, Offset(46), ms(30));
    state.record_follower_fetch(NodeId(1), Offset(46), Offset(46), ms(40));
    state.advance_high_watermark(Offset(46), Offset(46));
    assert_eq!(state.high_watermark(), Offset(46));

    // A refused proposal stops holding the high watermark at once.
    let mut state = ReplicaState::new(NodeId(2), ms(0));
    let placed = Placement {
        isr: vec![NodeId(2)],
        ..placed
    };
    state.apply_placement(&placed, Offset(0), ms(0));
    state.record_follower_fetch(NodeId(3), Offset(0), Offset(0), ms(1));
    let grow = state.desired_isr(ms(1), LAG_MAX, |_| true).unwrap();
    state.isr_change_proposed(&grow);
    state.advance_high_watermark(Offset(5), Offset(5));
    assert_eq!(state.high_watermark(), Offset(0));
    state.isr_change_answered(IsrAnswer::Refused);
    state.advance_high_watermark(Offset(5), Offset(5));
    assert_eq!(state.high_watermark(), Offset(5));
}

/// Found by the simulator (seed 312): a leader that crashed and registered
/// again before it was fenced led on under the same epoch, without the
/// unsynced records its followers had copied; it wrote others at those
/// offsets under that epoch, and no truncation could tell them apart.
#[test]
fn a_restarted_leader_never_leads_on_under_its_old_epoch() {
    let placed = placement(1, 0, &[1, 2, 3]);
    let after = election::on_restart(&placed, NodeId(1), |_| false);
    assert_eq!((after.leader, after.leader_epoch), (Some(NodeId(2)), LeaderEpoch(1)));
    assert_eq!(after.isr, vec![NodeId(2), NodeId(3)], "it rejoins once caught up");
    let alone = placement(1, 4, &[1]);
    let after = election::on_restart(&alone, NodeId(1), |_| false);
    assert_eq!((after.leader, after.leader_epoch), (Some(NodeId(1)), LeaderEpoch(6)));
    let follower = election::on_restart(&placed, NodeId(3), |_| false);
    assert_eq!(
        (follower.leader, follower.leader_epoch),
        (Some(NodeId(1)), LeaderEpoch(0))
    );
}

/// Found by the simulator (seed 494), Kafka's KIP-279: the follower led
/// epoch 1 and wrote from offset 8; the new leader has epoch 0 up to 11 and
/// no epoch 1. Cutting at the leader's 11 kept the follower's epoch-1
/// records at 8..10: the cut is the smaller of both ends of epoch 0.
#[test]
fn truncation_takes_the_smaller_end_of_the_answered_epoch() {
    let answer = EpochEnd::Found {
        epoch: LeaderEpoch(0),
        end: Offset(11),
    };
    let truncation = truncation_point(LeaderEpoch(1), answer, Some(Offset(8)), Offset(5), Offset(10));
    assert_eq!(truncation.cut, Some(Offset(8)));
    assert!(
        truncation.ask_again,
        "its epoch-0 records may end later than the leader's too"
    );
    let same = truncation_point(
        LeaderEpoch(0),
        EpochEnd::Found {
            epoch: LeaderEpoch(0),
            end: Offset(6),
        },
        Some(Offset(8)),
        Offset(5),
        Offset(8),
    );
    assert_eq!((same.cut, same.ask_again), (Some(Offset(6)), false));
    let undefined = truncation_point(LeaderEpoch(3), EpochEnd::Undefined, None, Offset(5), Offset(8));
    assert_eq!((undefined.cut, undefined.ask_again), (Some(Offset(5)), false));
}

/// Found by the simulator (seed 1788): a follower whose sync failed still
/// fetched from its log end, so the leader counted records the follower
/// lost at its next crash — and it was still in the ISR, then elected.
#[test]
fn a_follower_reports_only_what_it_keeps() {
    let mut state = ReplicaState::new(NodeId(3), ms(0));
    state.apply_placement(&placement(1, 1, &[1, 3]), Offset(30), ms(0));
    assert_eq!(state.fetch_offset(Offset(28), Offset(30)), Offset(28));
}

/// Found by the simulator (seeds 18048 and 23963): a leader cut off from the
/// metadata group stopped waiting for a pending addition — after a
/// timeout, after its resent proposal was refused as stale, or once the
/// added replica was fenced — while the first copy had been (or was still
/// to be) taken. The addition stays pending until a placement or a refusal
/// on the merits settles it, and an unanswered proposal is sent again.
#[test]
fn a_pending_addition_outlives_timeouts_stale_refusals_and_fencing() {
    let mut state = ReplicaState::new(NodeId(1), ms(0));
    let placed = placement(1, 1, &[1]);
    state.apply_placement(&placed, Offset(25), ms(0));
    state.record_follower_fetch(NodeId(3), Offset(25), Offset(25), ms(1));
    let grow = state.desired_isr(ms(1), LAG_MAX, |_| true).unwrap();
    assert_eq!(grow.isr, vec![NodeId(1), NodeId(3)]);
    state.isr_change_proposed(&grow);
    state.isr_change_answered(IsrAnswer::Unknown);
    let again = state.desired_isr(ms(1_000), LAG_MAX, |_| false).unwrap();
    assert_eq!(again, grow, "the same change, sent again");
    state.isr_change_proposed(&again);
    state.isr_change_answered(IsrAnswer::Stale);
    assert_eq!(state.desired_isr(ms(2_000), LAG_MAX, |_| false), None);
    state.advance_high_watermark(Offset(26), Offset(26));
    assert_eq!(
        state.high_watermark(),
        Offset(25),
        "3 may be in the ISR the metadata group has"
    );
}

/// Found by the simulator (seed 23963, docs/reliability.md bug 6): a
/// proposal to add 2 was delivered twice; the first copy was taken, 2 was
/// fenced (leaving the ISR), and the late copy — same leader, same leader
/// epoch — put 2 back in the ISR behind the leader's back. A change names
/// the partition epoch it was based on, and every change moves it, so the
/// late copy is refused.
#[test]
fn a_change_based_on_an_older_partition_epoch_is_refused() {
    let placed = placement(1, 3, &[1, 3]);
    let grow = IsrProposal {
        leader: NodeId(1),
        leader_epoch: LeaderEpoch(3),
        partition_epoch: placed.partition_epoch,
        isr: vec![NodeId(1), NodeId(2), NodeId(3)],
    };
    let grown = election::on_isr_change(&placed, &grow, |_| true).unwrap();
    assert_eq!(grown.partition_epoch, placed.partition_epoch.next());
    assert_eq!(
        grown.leader_epoch, placed.leader_epoch,
        "an ISR change keeps the leader epoch"
    );
    let fenced = election::on_fence(&grown, NodeId(2), |n| n == NodeId(2));
    assert_eq!(fenced.isr, vec![NodeId(1), NodeId(3)]);
    assert_eq!(fenced.partition_epoch, grown.partition_epoch.next());
    assert_eq!(
        election::on_isr_change(&fenced, &grow, |_| true),
        Err(IsrRefusal::StalePartitionEpoch),
        "the late copy"
    );
    assert_eq!(
        election::on_isr_change(&grown, &grow, |_| true),
        Err(IsrRefusal::StalePartitionEpoch),
        "a copy right after the first"
    );
    // A rule that changes nothing keeps the partition epoch.
    assert_eq!(election::on_return(&fenced, NodeId(2)), fenced);
}

/// The leader's side of bug 6: a placement with a newer partition epoch
/// settles a pending proposal (taken and shown there, or never to be
/// taken), whatever its ISR; a stale refusal proposes nothing more until
/// such a placement comes.
#[test]
fn a_newer_partition_epoch_settles_a_pending_change() {
    let mut state = ReplicaState::new(NodeId(1), ms(0));
    let placed = placement(1, 3, &[1, 3]);
    state.apply_placement(&placed, Offset(10), ms(0));
    state.record_follower_fetch(NodeId(2), Offset(10), Offset(10), ms(1));
    state.record_follower_fetch(NodeId(3), Offset(10), Offset(10), ms(1));
    let grow = state.desired_isr(ms(1), LAG_MAX, |_| true).unwrap();
    assert_eq!(
        grow.partition_epoch, placed.partition_epoch,
        "based on the placement it saw"
    );
    state.isr_change_proposed(&grow);
    state.isr_change_answered(IsrAnswer::Stale);
    assert_eq!(
        state.desired_isr(ms(2), LAG_MAX, |_| true),
        None,
        "nothing until the placement that moved on"
    );
    state.advance_high_watermark(Offset(12), Offset(12));
    assert_eq!(state.high_watermark(), Offset(10), "2 may be in sync");
    // The metadata group took the change, then 2 left again (fenced).
    let grown = election::on_isr_change(&placed, &grow, |_| true).unwrap();
    let shrunk = election::on_fence(&grown, NodeId(2), |n| n == NodeId(2));
    assert_eq!(shrunk.isr, placed.isr, "the same ISR as before the change");
    state.apply_placement(&shrunk, Offset(12), ms(3));
    state.record_follower_fetch(NodeId(3), Offset(12), Offset(12), ms(4));
    state.advance_high_watermark(Offset(12), Offset(12));
    assert_eq!(state.high_watermark(), Offset(12), "settled: 2 is out, and stays out");
    let again = state.desired_isr(ms(4), LAG_MAX, |n| n != NodeId(2));
    assert_eq!(again, None);
    state.record_follower_fetch(NodeId(2), Offset(12), Offset(12), ms(5));
    let regrow = state.desired_isr(ms(5), LAG_MAX, |_| true).unwrap();
    assert_eq!(
        regrow.partition_epoch, shrunk.partition_epoch,
        "proposed against the new state"
    );
}

#[test]
#[should_panic(expected = "partition epoch went back")]
fn an_older_partition_epoch_is_refused() {
    let mut state = ReplicaState::new(NodeId(2), ms(0));
    let placed = placement(1, 4, &[1, 2]);
    state.apply_placement(&placed, Offset(0), ms(0));
    let older = Placement {
        partition_epoch: PartitionEpoch(3),
        ..placed
    };
    state.apply_placement(&older, Offset(0), ms(0));
}

/// Every epoch a change makes has a successor in turn (`MAX` itself is
/// never reached, and decoding refuses it), so the one before `MAX` is the
/// end of the line.
#[test]
#[should_panic(expected = "has no successor")]
fn every_partition_epoch_a_change_makes_has_a_successor() {
    let last = PartitionEpoch(i32::MAX - 2).next();
    assert!(last < PartitionEpoch::MAX);
    last.next();
}
