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
//!
//! ## Across nodes
//! Every node's feed reads every partition, so a share with members on
//! several nodes would get each message once per node. Each node with a
//! member records it in `__mqtt_shares` (`membership.rs`), and the share's
//! home shard on each node keeps a [`View`]: the other nodes with members
//! (registered, not fenced). Of the member nodes, one delivers each
//! partition's messages ([`deliverer`]); the others skip them:
//!
//! ```text
//!  member nodes, sorted: n_0 < n_1 < … < n_{k-1}   (this node always among them)
//!  deliverer of partition p for share "Name/filter" = n_i,  i = (p + crc32c("Name/filter")) mod k
//! ```
//!
//! Every node that sees the same member nodes picks the same deliverer, so
//! each message goes to the share once. Views are refreshed at different
//! moments on different nodes; to prefer a duplicate to a loss while they
//! differ, a node keeps delivering the partitions a replaced view gave it
//! for [`SHARE_HANDOVER_GRACE`] after it learns the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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

/// How long a node keeps delivering the partitions of a share that a
/// replaced view gave it: longer than every other node takes to see the
/// same change (one refresh, `membership::SHARE_VIEW_REFRESH_INTERVAL`, and
/// the read it makes), so that while views differ a partition gets two
/// deliverers rather than none.
pub(crate) const SHARE_HANDOVER_GRACE: Duration = Duration::from_secs(2);

/// Replaced views one share keeps within their grace, at most: a share
/// whose member nodes change more often than this within the grace drops
/// the oldest (its partitions may then go undelivered until the other
/// nodes' views catch up).
pub(crate) const SHARE_VIEWS_REPLACED_MAX: usize = 4;

/// What spreads the partitions of the share `share` ("Name/filter") over
/// its member nodes: `crc32c(share)`, the same on every node.
pub(crate) fn share_seed(share: &str) -> u32 {
    crc32c::crc32c(share.as_bytes())
}

/// The node that delivers the messages of `partition` for the share whose
/// [`share_seed`] is `seed` when the nodes with members are `me` and
/// `others`: the same answer on every node that sees the same nodes. The
/// feed asks it for every message a share matches, so it allocates nothing.
pub(crate) fn deliverer(seed: u32, partition: i32, me: i32, others: &BTreeSet<i32>) -> i32 {
    // The member nodes in order are `others` with `me` put in its place.
    let below_me = others.range(..me).count();
    let count = others.len() + usize::from(!others.contains(&me));
    let spread = u64::try_from(partition).unwrap_or(0) + u64::from(seed);
    let at = usize::try_from(spread % u64::try_from(count).unwrap_or(1)).unwrap_or(0);
    let picked = match at.cmp(&below_me) {
        std::cmp::Ordering::Equal => me,
        std::cmp::Ordering::Less => others.iter().nth(at).copied().unwrap_or(me),
        std::cmp::Ordering::Greater => others
            .iter()
            .filter(|node| **node != me)
            .nth(at - 1)
            .copied()
            .unwrap_or(me),
    };
    assert!(count >= 1, "this node is a member node");
    assert!(
        picked == me || others.contains(&picked),
        "the deliverer is a member node"
    );
    picked
}

/// Which other nodes have members of one share, as this node last read
/// them, and the views that replaced ones still count for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// Other nodes with a member (registered, not fenced).
    others: BTreeSet<i32>,
    /// Replaced views and until when (unix ms) each still counts.
    replaced: Vec<(BTreeSet<i32>, i64)>,
    /// Whether the view was ever read (before: this node alone delivers;
    /// that guess is not kept once a read replaces it).
    read: bool,
}

impl View {
    /// Whether node `me` delivers the messages of `partition` for the share
    /// whose [`share_seed`] is `seed` at `now_ms`: the current view picks it, or a replaced one within
    /// its grace did.
    pub(crate) fn delivers(&self, seed: u32, partition: i32, me: i32, now_ms: i64) -> bool {
        deliverer(seed, partition, me, &self.others) == me
            || self
                .replaced
                .iter()
                .any(|(others, until_ms)| now_ms < *until_ms && deliverer(seed, partition, me, others) == me)
    }

    /// Takes `others` as the current view at `now_ms`; the view it replaces
    /// counts for [`SHARE_HANDOVER_GRACE`] more.
    pub(crate) fn update(&mut self, others: BTreeSet<i32>, now_ms: i64) {
        self.replaced.retain(|(_, until_ms)| now_ms < *until_ms);
        if !std::mem::replace(&mut self.read, true) {
            self.others = others;
            return;
        }
        if others == self.others {
            return;
        }
        let grace_ms = i64::try_from(SHARE_HANDOVER_GRACE.as_millis()).unwrap_or(i64::MAX);
        let old = std::mem::replace(&mut self.others, others);
        if self.replaced.len() >= SHARE_VIEWS_REPLACED_MAX {
            self.replaced.remove(0);
        }
        self.replaced.push((old, now_ms.saturating_add(grace_ms)));
        assert!(
            self.replaced.len() <= SHARE_VIEWS_REPLACED_MAX,
            "replaced views bounded"
        );
    }
}

/// One share: its members, in the order they joined, whose turn is next,
/// and which nodes deliver which partitions.
#[derive(Debug, Default)]
struct Share {
    members: Vec<Member>,
    next: usize,
    view: View,
    /// Its [`share_seed`], computed once.
    seed: u32,
}

/// The shares homed on one shard, by (share name, filter).
#[derive(Debug, Default)]
pub(crate) struct Shares {
    shares: BTreeMap<(String, String), Share>,
    /// The shares this node's record in `__mqtt_shares` says it has members
    /// of (or may say: a record left by an earlier run), until a tombstone
    /// is stored.
    recorded: BTreeSet<(String, String)>,
}

impl Shares {
    /// Whether no share is homed here.
    pub(crate) fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Whether this shard has a member of the share.
    pub(crate) fn has_members(&self, name: &str, filter: &str) -> bool {
        self.shares.contains_key(&(name.to_string(), filter.to_string()))
    }

    /// Whether this node's record says (or may say) it has members.
    pub(crate) fn is_recorded(&self, name: &str, filter: &str) -> bool {
        self.recorded.contains(&(name.to_string(), filter.to_string()))
    }

    /// Notes whether this node's record says it has members of the share.
    pub(crate) fn set_recorded(&mut self, name: &str, filter: &str, recorded: bool) {
        let key = (name.to_string(), filter.to_string());
        if recorded {
            self.recorded.insert(key);
        } else {
            self.recorded.remove(&key);
        }
    }

    /// The shares with members here, or with a record to settle.
    pub(crate) fn keys(&self) -> Vec<(String, String)> {
        let mut keys: BTreeSet<(String, String)> = self.shares.keys().cloned().collect();
        keys.extend(self.recorded.iter().cloned());
        keys.into_iter().collect()
    }

    /// Whether the share has members here and its view was read.
    pub(crate) fn is_view_read(&self, name: &str, filter: &str) -> bool {
        self.shares
            .get(&(name.to_string(), filter.to_string()))
            .is_some_and(|share| share.view.read)
    }

    /// Takes `others` as the nodes with members of the share, at `now_ms`.
    pub(crate) fn set_view(&mut self, name: &str, filter: &str, others: BTreeSet<i32>, now_ms: i64) {
        if let Some(share) = self.shares.get_mut(&(name.to_string(), filter.to_string())) {
            share.view.update(others, now_ms);
        }
    }

    /// Adds `member` to the share (or regrants it); false when the share is
    /// new and this shard is home to its maximum.
    pub(crate) fn join(&mut self, name: &str, filter: &str, member: Member) -> bool {
        let key = (name.to_string(), filter.to_string());
        if !self.shares.contains_key(&key) && self.shares.len() >= SHARES_PER_SHARD_MAX {
            return false;
        }
        let share = self.shares.entry(key).or_insert_with(|| Share {
            seed: share_seed(&format!("{name}/{filter}")),
            ..Share::default()
        });
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
    /// this message of `partition` (each share's next in turn), added to
    /// `out`; shares whose view says another node (not `me`) delivers the
    /// partition's messages are left out.
    pub(crate) fn pick(&mut self, topic: &str, partition: i32, me: i32, now_ms: i64, out: &mut Vec<Member>) {
        for ((_, filter), share) in &mut self.shares {
            if !filter_matches(filter, topic) {
                continue;
            }
            if !share.view.delivers(share.seed, partition, me, now_ms) {
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
        shares.pick(topic, 0, 1, 0, &mut out);
        out
    }

    fn nodes(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    /// The member nodes (each seeing all the others) that deliver
    /// `partition` for `share`.
    fn deliverers(share: &str, partition: i32, members: &BTreeSet<i32>) -> Vec<i32> {
        members
            .iter()
            .copied()
            .filter(|me| {
                let mut view = View::default();
                let others: BTreeSet<i32> = members.iter().copied().filter(|n| n != me).collect();
                view.update(others, 0);
                // Past the grace of the empty view it replaced.
                view.delivers(share_seed(share), partition, *me, i64::MAX)
            })
            .collect()
    }

    #[test]
    fn the_deliverer_is_the_sorted_member_nodes_indexed_by_partition_and_seed() {
        // The layout the module essay draws, computed the plain way.
        for mask in 0u32..(1 << 6) {
            let others: BTreeSet<i32> = (0..6).filter(|bit| mask & (1 << bit) != 0).map(|bit| bit + 1).collect();
            for me in 1..=7 {
                let mut sorted: Vec<i32> = others.iter().copied().filter(|node| *node != me).collect();
                sorted.push(me);
                sorted.sort_unstable();
                for seed in [0, 1, 7, u32::MAX] {
                    for partition in 0..24 {
                        let at = (u64::try_from(partition).unwrap() + u64::from(seed)) % sorted.len() as u64;
                        assert_eq!(
                            deliverer(seed, partition, me, &others),
                            sorted[usize::try_from(at).unwrap()],
                            "others {others:?} me {me} seed {seed} partition {partition}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_partition_has_exactly_one_deliverer_for_every_membership() {
        // Every non-empty set of nodes 1..=6, every partition up to 24,
        // a few shares.
        for mask in 1u32..(1 << 6) {
            let members: BTreeSet<i32> = (0..6).filter(|bit| mask & (1 << bit) != 0).map(|bit| bit + 1).collect();
            for share in ["g/#", "group/sensors/+", "x/y"] {
                for partition in 0..24 {
                    assert_eq!(
                        deliverers(share, partition, &members).len(),
                        1,
                        "{share} partition {partition} members {members:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn partitions_spread_over_member_nodes() {
        let members = nodes(&[1, 2, 3]);
        let mut per_node = BTreeMap::new();
        for partition in 0..6 {
            for node in deliverers("g/#", partition, &members) {
                *per_node.entry(node).or_insert(0) += 1;
            }
        }
        assert_eq!(per_node.values().copied().collect::<Vec<i32>>(), vec![2, 2, 2]);
    }

    #[test]
    fn one_node_alone_delivers_everything() {
        let mut view = View::default();
        assert!((0..64).all(|partition| view.delivers(share_seed("g/#"), partition, 7, 0)));
        // The first read replaces that guess with no grace.
        view.update(nodes(&[8]), 0);
        assert!(view.replaced.is_empty());
        assert!((0..64).any(|partition| !view.delivers(share_seed("g/#"), partition, 7, 0)));
    }

    #[test]
    fn a_replaced_view_counts_for_its_grace() {
        let grace_ms = i64::try_from(SHARE_HANDOVER_GRACE.as_millis()).unwrap();
        let share = "g/#";
        // Node 1 alone delivers every partition; then node 2 joins.
        let mut view = View::default();
        view.update(nodes(&[]), 0);
        view.update(nodes(&[2]), 1_000);
        let handed: Vec<i32> = (0..16)
            .filter(|p| deliverer(share_seed(share), *p, 1, &nodes(&[2])) == 2)
            .collect();
        assert!(!handed.is_empty());
        for partition in &handed {
            assert!(
                view.delivers(share_seed(share), *partition, 1, 1_000 + grace_ms - 1),
                "within the grace"
            );
            assert!(
                !view.delivers(share_seed(share), *partition, 1, 1_000 + grace_ms),
                "after it"
            );
        }
        // The same view again replaces nothing.
        view.update(nodes(&[2]), 5_000);
        assert!(view.replaced.is_empty());
        // Views changing fast keep a bounded history.
        for i in 0..10 {
            view.update(nodes(&[2, 3 + i]), 6_000);
        }
        assert_eq!(view.replaced.len(), SHARE_VIEWS_REPLACED_MAX);
    }

    #[test]
    fn a_share_skips_partitions_another_node_delivers() {
        let mut shares = Shares::default();
        let a = member(0, 1);
        shares.join("g", "#", a);
        shares.set_view("g", "#", nodes(&[2]), 0);
        let past_grace = i64::MAX;
        let mut ours = 0;
        for partition in 0..16 {
            let mut out = Vec::new();
            shares.pick("t", partition, 1, past_grace, &mut out);
            let expected = deliverer(share_seed("g/#"), partition, 1, &nodes(&[2])) == 1;
            assert_eq!(out.len(), usize::from(expected), "partition {partition}");
            ours += out.len();
        }
        assert!(ours > 0 && ours < 16, "{ours}");
        assert!(shares.has_members("g", "#") && !shares.is_recorded("g", "#"));
        shares.set_recorded("g", "#", true);
        shares.leave("g", "#", a.holder);
        assert_eq!(
            shares.keys(),
            vec![("g".to_string(), "#".to_string())],
            "the record is left to settle"
        );
    }

    /// Whether `node` delivers `partition` of `share` when the member nodes
    /// changed from `before` to `after` at time 10 and it is now 11:
    /// `seen` says whether it has read the change yet (a node that joined
    /// has; one that left delivers nothing).
    fn delivers_during_change(
        share: &str,
        partition: i32,
        node: i32,
        before: &BTreeSet<i32>,
        after: &BTreeSet<i32>,
        seen: bool,
    ) -> bool {
        if !after.contains(&node) {
            return false;
        }
        let others = |set: &BTreeSet<i32>| set.iter().copied().filter(|n| *n != node).collect::<BTreeSet<i32>>();
        let mut view = View::default();
        if before.contains(&node) {
            view.update(others(before), 0);
        }
        if seen || !before.contains(&node) {
            view.update(others(after), 10);
        }
        view.delivers(share_seed(share), partition, node, 11)
    }

    proptest::proptest! {
        /// While the nodes' views of one change differ (each staying node
        /// has seen it or not), a node joining leaves no partition without
        /// a deliverer; a node leaving leaves none once every node has
        /// seen it, and until then only the partitions it delivered.
        #[test]
        fn a_change_leaves_no_partition_without_a_deliverer(
            before in proptest::collection::btree_set(1i32..8, 1..5),
            changed in 1i32..8,
            seen_mask in 0u32..256,
            partition in 0i32..64,
            share in "[a-z]{1,6}/[a-z#+/]{1,8}",
        ) {
            let mut after = before.clone();
            let joined = after.insert(changed);
            if !joined {
                after.remove(&changed);
            }
            proptest::prop_assume!(!after.is_empty());
            let all: BTreeSet<i32> = before.union(&after).copied().collect();
            let count = |mask: u32| {
                all.iter()
                    .filter(|node| {
                        let seen = mask & (1 << **node) != 0;
                        delivers_during_change(&share, partition, **node, &before, &after, seen)
                    })
                    .count()
            };
            // Everyone has seen the change: a deliverer (two within the
            // grace, one after: the exhaustive test above).
            proptest::prop_assert!(count(u32::MAX) >= 1);
            let left_one_it_delivered = !joined && deliverer(share_seed(&share), partition, changed, &before) == changed;
            if !left_one_it_delivered {
                proptest::prop_assert!(count(seen_mask) >= 1);
            }
        }
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
