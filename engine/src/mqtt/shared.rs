//! Shared subscriptions: `$share/{ShareName}/{filter}` (MQTT 5.0 §4.8.2;
//! taken from 3.1.1 clients too, as mosquitto does). Every member of a
//! share gets a subscription's messages between them: each message matching
//! the filter goes to one member, not to all.
//!
//! ```text
//!  member on shard m ──SUBSCRIBE $share/g/f──► invoke_on(home of "g/f") join
//!  home shard's feed: message on topic T matching f ──► pick(T): the next member,
//!                      round robin ──► local: its delivery queue;
//!                                      other shard: invoke_on(m) deliver_to
//! ```
//!
//! One share lives on one shard, its home (crc32c of "ShareName/filter"
//! mod shards): that shard alone picks, so each message goes to exactly one
//! member however many shards the members are on, with no lock and no
//! agreement between shards. The home shard's feed runs while it is home to
//! any share. This module is the table, without I/O: members join and
//! leave, and `pick` says who gets a message.

use std::collections::BTreeMap;

use shardline_net::mqtt::{filter_matches, QoS};

use super::Holder;

/// Shares one shard is home to, at most: a SUBSCRIBE to one more is
/// refused (quota exceeded).
pub(crate) const SHARES_PER_SHARD_MAX: usize = 1024;

/// One member of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its connection.
    pub(crate) holder: Holder,
    /// The QoS granted to it.
    pub(crate) qos: QoS,
    /// Its v5 Subscription Identifier for the share.
    pub(crate) subscription_id: Option<u32>,
}

/// One share: its members, in the order they joined, and whose turn is next.
#[derive(Debug, Default)]
struct Share {
    members: Vec<Member>,
    next: usize,
}

/// The shares homed on one shard, by (share name, filter).
#[derive(Debug, Default)]
pub(crate) struct Shares {
    shares: BTreeMap<(String, String), Share>,
}

impl Shares {
    /// Whether no share is homed here.
    pub(crate) fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Adds `member` to the share (or regrants it); false when the share is
    /// new and this shard is home to its maximum.
    pub(crate) fn join(&mut self, name: &str, filter: &str, member: Member) -> bool {
        let key = (name.to_string(), filter.to_string());
        if !self.shares.contains_key(&key) && self.shares.len() >= SHARES_PER_SHARD_MAX {
            return false;
        }
        let share = self.shares.entry(key).or_default();
        match share.members.iter_mut().find(|m| m.holder == member.holder) {
            Some(existing) => existing.qos = member.qos,
            None => share.members.push(member),
        }
        assert!(self.shares.len() <= SHARES_PER_SHARD_MAX, "shares bounded");
        true
    }

    /// Takes `holder` out of the share; a share left empty ends.
    pub(crate) fn leave(&mut self, name: &str, filter: &str, holder: Holder) {
        let key = (name.to_string(), filter.to_string());
        let Some(share) = self.shares.get_mut(&key) else {
            return;
        };
        share.members.retain(|m| m.holder != holder);
        if share.members.is_empty() {
            self.shares.remove(&key);
        }
    }

    /// The member of every share whose filter matches `topic` that gets
    /// this message (each share's next in turn), added to `out`.
    pub(crate) fn pick(&mut self, topic: &str, out: &mut Vec<Member>) {
        for ((_, filter), share) in &mut self.shares {
            if !filter_matches(filter, topic) {
                continue;
            }
            assert!(!share.members.is_empty(), "an empty share ends");
            let at = share.next % share.members.len();
            share.next = at + 1;
            if let Some(member) = share.members.get(at) {
                out.push(*member);
            }
        }
    }
}

/// The shard a share lives on.
pub(crate) fn home_of(name: &str, filter: &str, shards: usize) -> usize {
    super::home_shard(&format!("{name}/{filter}"), shards)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, reason = "test code")]
    use super::*;

    fn member(shard: usize, connection: u64) -> Member {
        Member {
            holder: Holder { shard, connection },
            qos: QoS::AtLeastOnce,
            subscription_id: None,
        }
    }

    fn picked(shares: &mut Shares, topic: &str) -> Vec<Member> {
        let mut out = Vec::new();
        shares.pick(topic, &mut out);
        out
    }

    #[test]
    fn each_message_goes_to_one_member_in_turn() {
        let mut shares = Shares::default();
        let (a, b, c) = (member(0, 1), member(1, 1), member(1, 2));
        for m in [a, b, c] {
            assert!(shares.join("g", "s/+", m));
        }
        let turns: Vec<Member> = (0..6).flat_map(|_| picked(&mut shares, "s/x")).collect();
        assert_eq!(turns, vec![a, b, c, a, b, c]);
        assert!(picked(&mut shares, "other").is_empty());
        // Another share of the same filter gets its own copy.
        assert!(shares.join("h", "s/+", c));
        assert_eq!(picked(&mut shares, "s/y"), vec![a, c]);
    }

    #[test]
    fn leaving_members_and_empty_shares() {
        let mut shares = Shares::default();
        let (a, b) = (member(0, 1), member(0, 2));
        shares.join("g", "#", a);
        shares.join("g", "#", b);
        // Joining again regrants, it does not add a second turn.
        shares.join(
            "g",
            "#",
            Member {
                qos: QoS::AtMostOnce,
                ..a
            },
        );
        shares.leave("g", "#", b.holder);
        let turns: Vec<Member> = (0..3).flat_map(|_| picked(&mut shares, "t")).collect();
        assert_eq!(turns.len(), 3);
        assert!(turns.iter().all(|m| m.holder == a.holder && m.qos == QoS::AtMostOnce));
        shares.leave("g", "#", a.holder);
        assert!(shares.is_empty());
        // Leaving what is not there is nothing.
        shares.leave("g", "#", a.holder);
    }

    #[test]
    fn a_shard_is_home_to_a_bounded_number_of_shares() {
        let mut shares = Shares::default();
        for i in 0..SHARES_PER_SHARD_MAX {
            assert!(shares.join(&format!("g{i}"), "#", member(0, 1)));
        }
        assert!(!shares.join("one-more", "#", member(0, 1)));
        // A member joining an existing share is not a new share.
        assert!(shares.join("g0", "#", member(0, 2)));
    }
}
