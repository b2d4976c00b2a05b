//! The metadata group's model: fencing, returns, restarts, ISR changes, and
//! the image it sends every broker.

use shardline_replication::{election::IsrRefusal, IsrAnswer};

use super::*;

impl Cluster {
    // ---- the metadata group ----

    /// Whether the metadata group has a quorum now. When a quorum loss
    /// ends, the new active controller gives every broker a fresh session
    /// (as KRaft's does), so the outage alone fences no one.
    fn quorum(&mut self) -> bool {
        if self.now < self.controller.quorum_lost_until_ms {
            return false;
        }
        if std::mem::take(&mut self.controller.quorum_lost) {
            let now = self.now;
            for seen in &mut self.controller.last_heartbeat {
                *seen = now;
            }
            self.note(format!("t={now} the metadata group has its quorum again"));
        }
        true
    }

    pub(super) fn controller_tick(&mut self) -> Result<(), Violation> {
        if !self.quorum() {
            return Ok(());
        }
        let nodes = self.nodes.len();
        for node in 0..nodes {
            let silent = self
                .now
                .saturating_sub(self.controller.last_heartbeat.get(node).copied().unwrap_or(0));
            if silent > SESSION_TIMEOUT_MS && !self.controller.fenced.get(node).copied().unwrap_or(true) {
                self.decide(node, true, format!("fence n{}", node + 1), |p, n, fenced| {
                    election::on_fence(p, n, fenced)
                })?;
            }
        }
        self.broadcast_image();
        Ok(())
    }

    /// Marks `node` fenced (or not), applies `rule` to every partition's
    /// placement (given the node and who is fenced now), and commits.
    fn decide(
        &mut self,
        node: usize,
        fenced_now: bool,
        what: String,
        rule: impl Fn(&Placement, NodeId, &dyn Fn(NodeId) -> bool) -> Placement,
    ) -> Result<(), Violation> {
        if let Some(fenced) = self.controller.fenced.get_mut(node) {
            *fenced = fenced_now;
        }
        let fenced = self.controller.fenced.clone();
        let is_fenced = |n: NodeId| fenced.get(node_index(n)).copied().unwrap_or(true);
        for placement in &mut self.controller.placements {
            *placement = rule(placement, node_id(node), &is_fenced);
        }
        self.commit(what)
    }

    /// A new version of the image, checked: every partition epoch moved
    /// with its partition.
    pub(super) fn commit(&mut self, what: String) -> Result<(), Violation> {
        self.controller.version = MetadataEpoch(self.controller.version.0 + 1);
        let placements: Vec<String> = self
            .controller
            .placements
            .iter()
            .map(|p| {
                format!(
                    "{{leader {:?} epoch {} isr {:?} partition epoch {}}}",
                    p.leader.map(|n| n.0),
                    p.leader_epoch,
                    p.isr.iter().map(|n| n.0).collect::<Vec<_>>(),
                    p.partition_epoch
                )
            })
            .collect();
        self.note(format!(
            "t={} metadata v{}: {what} -> {}",
            self.now,
            self.controller.version.0,
            placements.join(" ")
        ));
        for (partition, placement) in self.controller.placements.iter().enumerate() {
            self.checker.placement_committed(partition, placement)?;
        }
        Ok(())
    }

    pub(super) fn broadcast_image(&mut self) {
        let image = Image {
            version: self.controller.version,
            placements: self.controller.placements.clone(),
            fenced: self.controller.fenced.clone(),
            incarnations: self.controller.incarnations.clone(),
        };
        for node in 0..self.nodes.len() {
            self.send(Endpoint::Controller, Endpoint::Node(node), Body::Image(image.clone()));
        }
    }

    pub(super) fn controller_receive(&mut self, from: Endpoint, body: Body) -> Result<(), Violation> {
        let Endpoint::Node(node) = from else { return Ok(()) };
        if !self.quorum() {
            // No quorum: heartbeats, registrations and ISR changes go
            // unanswered (brokers retry).
            return Ok(());
        }
        match body {
            Body::Heartbeat { incarnation } => {
                if let Some(seen) = self.controller.last_heartbeat.get_mut(node) {
                    *seen = self.now;
                }
                let known = self.controller.incarnations.get(node).copied().unwrap_or(0);
                if incarnation > known {
                    if let Some(i) = self.controller.incarnations.get_mut(node) {
                        *i = incarnation;
                    }
                    let what = format!("n{} registers (incarnation {incarnation})", node + 1);
                    self.decide(node, false, what, |p, n, fenced| election::on_restart(p, n, fenced))?;
                    self.broadcast_image();
                } else if self.controller.fenced.get(node).copied().unwrap_or(false) {
                    self.decide(node, false, format!("unfence n{}", node + 1), |p, n, _| {
                        election::on_return(p, n)
                    })?;
                    self.broadcast_image();
                }
            }
            Body::AlterIsr {
                partition,
                request,
                proposal,
            } => {
                let fenced = self.controller.fenced.clone();
                let Some(placement) = self.controller.placements.get(partition) else {
                    return Ok(());
                };
                let decided = election::on_isr_change(placement, &proposal, |n| {
                    !fenced.get(node_index(n)).copied().unwrap_or(true)
                });
                let answer = match &decided {
                    Ok(_) => IsrAnswer::Accepted,
                    Err(IsrRefusal::StaleLeaderEpoch | IsrRefusal::StalePartitionEpoch) => IsrAnswer::Stale,
                    Err(
                        IsrRefusal::LeaderNotInIsr
                        | IsrRefusal::Duplicate
                        | IsrRefusal::NotAReplica(_)
                        | IsrRefusal::FencedNewcomer(_),
                    ) => IsrAnswer::Refused,
                };
                match decided {
                    Ok(after) => {
                        if let Some(p) = self.controller.placements.get_mut(partition) {
                            *p = after;
                        }
                        self.commit(format!("p{partition} ISR change from n{}", node + 1))?;
                        self.broadcast_image();
                    }
                    Err(refusal) => self.note(format!("t={} p{partition} ISR change refused: {refusal:?}", self.now)),
                }
                self.send(
                    Endpoint::Controller,
                    from,
                    Body::AlterIsrAnswer {
                        partition,
                        request,
                        answer,
                    },
                );
            }
            _ => {}
        }
        Ok(())
    }
}
