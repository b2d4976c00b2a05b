//! The simulated network: every message is delivered after a random delay
//! (so messages between the same two ends can overtake each other), may be
//! lost or delivered twice, and is dropped if its directed link is cut.
//! Cuts are per direction, so links can be asymmetric.

use std::collections::BTreeSet;

use crate::rng::Pcg32;

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Endpoint {
    /// A broker, by index (node id = index + 1).
    Node(usize),
    /// The metadata group (modelled as one always-available party).
    Controller,
    /// A producer or consumer, by index.
    Client(usize),
}

/// The network's fault settings for one run (drawn from the seed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetworkFaults {
    pub(crate) loss_per_mille: u32,
    pub(crate) duplicate_per_mille: u32,
    /// A message is slow (100–400 ms) this often.
    pub(crate) slow_per_mille: u32,
    pub(crate) delay_ms_max: u64,
}

/// Longest a slow message takes.
const SLOW_DELAY_MS_MAX: u64 = 400;

#[derive(Debug, Default)]
pub(crate) struct Network {
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(Endpoint, Endpoint)>,
}

impl Network {
    /// Delays (in ms) for each copy of a message sent now from `from` to
    /// `to`: none if the link is cut or the message is lost, two if it is
    /// duplicated.
    pub(crate) fn route(&self, from: Endpoint, to: Endpoint, faults: NetworkFaults, rng: &mut Pcg32) -> Vec<u64> {
        if self.cut.contains(&(from, to)) || rng.chance(faults.loss_per_mille) {
            return Vec::new();
        }
        let copies = if rng.chance(faults.duplicate_per_mille) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                if rng.chance(faults.slow_per_mille) {
                    rng.between(100, SLOW_DELAY_MS_MAX)
                } else {
                    rng.between(1, faults.delay_ms_max)
                }
            })
            .collect()
    }

    pub(crate) fn cut(&mut self, from: Endpoint, to: Endpoint) {
        self.cut.insert((from, to));
    }

    /// Cuts `node` off from every other node and the controller, both ways.
    pub(crate) fn isolate(&mut self, node: Endpoint, others: &[Endpoint]) {
        for other in others {
            if *other != node {
                self.cut.insert((node, *other));
                self.cut.insert((*other, node));
            }
        }
    }

    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }
}
