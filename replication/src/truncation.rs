//! Where a follower cuts its log before following a new leader epoch.
//!
//! The follower asks the leader (OffsetForLeaderEpoch) about the newest
//! epoch in its own log; the leader answers with the largest epoch it has
//! that is not newer, and the offset where that epoch ends in the leader's
//! log (the start of its next epoch, or its log end) — or UNDEFINED when it
//! has no epoch that old.

use shardline_log::Offset;

use crate::types::LeaderEpoch;

/// The leader's OffsetForLeaderEpoch answer for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnd {
    /// The leader has no epoch as old as the one asked about (-1 / -1).
    Undefined,
    /// `epoch` (≤ the one asked about) ends at `end` in the leader's log.
    Found { epoch: LeaderEpoch, end: Offset },
}

/// What a follower does with the leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Cut the log here (`< log_end`); `None`: nothing to cut.
    pub cut: Option<Offset>,
    /// Ask again before fetching: the leader answered about an older epoch
    /// than the one asked, so after this cut the follower's (new) latest
    /// epoch may still end later in its log than in the leader's.
    pub ask_again: bool,
}

/// Where the follower cuts its log after asking the leader about `asked`,
/// the newest epoch in its own log.
///
/// - `answer`: the leader's answer;
/// - `own_end`: where the follower's own log says the answered epoch ends
///   (its `end_offset_for_epoch(answered epoch)`), `None` when it has no
///   epoch that old;
/// - `high_watermark`, `log_end`: the follower's.
///
/// KIP-101 cut at the leader's end offset. That alone is wrong when the
/// leader answers about an older epoch than asked (KIP-279): the follower's
/// records of the newer epoch may start *below* that offset, written by a
/// leader whose records the new leader never had, and they would stay. So
/// the cut is the smaller of the two logs' ends for the answered epoch, and
/// the follower asks again.
pub fn truncation_point(
    asked: LeaderEpoch,
    answer: EpochEnd,
    own_end: Option<Offset>,
    high_watermark: Offset,
    log_end: Offset,
) -> Truncation {
    let (cut, older) = match answer {
        // The leader has no epoch as old as ours: keep what is below our
        // high watermark, which every in-sync replica had.
        EpochEnd::Undefined => (high_watermark, false),
        EpochEnd::Found { epoch, end } => {
            // (The answer comes off the wire: an epoch newer than asked is
            // not asserted against, only not asked about again.)
            // The follower has no epoch that old: nothing above its high
            // watermark can be trusted.
            (end.min(own_end.unwrap_or(high_watermark)), epoch < asked)
        }
    };
    let cut = cut.max(Offset(0));
    let cut = (cut < log_end).then_some(cut);
    let truncation = Truncation {
        cut,
        ask_again: cut.is_some() && older,
    };
    assert!(truncation.cut.is_none_or(|c| c < log_end && c >= Offset(0)));
    truncation
}
