//! A broker: its tick (fetch, sync, ISR upkeep, heartbeat), the images it
//! applies, and what it answers followers, producers and consumers.

use shardline_replication::IsrAnswer;

use super::*;

impl Cluster {
    // ---- brokers ----

    pub(super) fn deliver(&mut self, message: Message) -> Result<(), Violation> {
        let line = format!(
            "t={} {:?} -> {:?}: {:?}",
            self.now, message.from, message.to, message.body
        );
        self.note(line);
        match message.to {
            Endpoint::Controller => self.controller_receive(message.from, message.body),
            Endpoint::Client(client) => self.client_receive(client, message.body),
            Endpoint::Node(node) => {
                if !self.nodes.get(node).is_some_and(|n| n.alive) {
                    return Ok(());
                }
                self.node_receive(node, message.from, message.body)
            }
        }
    }

    pub(super) fn node_tick(&mut self, node: usize) -> Result<(), Violation> {
        let now = self.now;
        let ticks = {
            let Some(n) = self.nodes.get_mut(node) else {
                return Ok(());
            };
            n.ticks += 1;
            n.ticks
        };
        if ticks % HEARTBEAT_TICKS == 0 {
            let incarnation = self.nodes.get(node).map_or(0, |n| n.incarnation);
            self.send(
                Endpoint::Node(node),
                Endpoint::Controller,
                Body::Heartbeat { incarnation },
            );
        }
        for partition in 0..PARTITIONS {
            let sync_fails = self.rng.chance(self.config.sync_failure_per_mille);
            let Some(n) = self.nodes.get_mut(node) else {
                return Ok(());
            };
            let alive_view = n.image.as_ref().map(|i| i.fenced.clone()).unwrap_or_default();
            let stalled = now < n.disk_stalled_until_ms;
            let (Some(Some(replica)), Some(log)) = (n.replicas.get_mut(partition), n.logs.get_mut(partition)) else {
                continue;
            };
            match replica.state.role() {
                Role::Leader => {
                    // Group commit: one sync for what was appended since the
                    // last (none while the disk stalls).
                    if !stalled && log.durable_end() < log.log_end() && log.sync(sync_fails).is_err() {
                        let line = format!("t={now} n{} p{partition}: leader's sync failed", node + 1);
                        self.note(line);
                    }
                    self.leader_progress(node, partition);
                    self.maintain_isr(node, partition, &alive_view);
                }
                Role::Follower { leader } => {
                    let due = replica.outstanding.is_none_or(|o| o.deadline <= now);
                    if !due || stalled {
                        // A fetcher whose append still waits on its disk's
                        // sync sends nothing.
                        continue;
                    }
                    // The sync the stall held back ends the append first: a
                    // follower fetches from what it keeps through a crash.
                    if log.durable_end() < log.log_end() && log.sync(sync_fails).is_err() {
                        if sync_fails {
                            let line = format!("t={now} n{} p{partition}: follower's sync failed", node + 1);
                            self.note(line);
                        }
                        continue;
                    }
                    let request = self.request_id();
                    let Some(n) = self.nodes.get_mut(node) else { continue };
                    let (Some(Some(replica)), Some(log)) = (n.replicas.get_mut(partition), n.logs.get(partition))
                    else {
                        continue;
                    };
                    let current = replica.state.leader_epoch();
                    let body = if replica.state.needs_truncation() {
                        match log.latest_epoch() {
                            None => {
                                replica.state.truncation_done();
                                Body::Fetch {
                                    partition,
                                    request,
                                    current,
                                    offset: replica.state.fetch_offset(log.durable_end(), log.log_end()),
                                }
                            }
                            Some(asked) => Body::EpochQuery {
                                partition,
                                request,
                                current,
                                asked,
                            },
                        }
                    } else {
                        Body::Fetch {
                            partition,
                            request,
                            current,
                            offset: replica.state.fetch_offset(log.durable_end(), log.log_end()),
                        }
                    };
                    replica.outstanding = Some(Outstanding {
                        request,
                        deadline: now + FOLLOWER_REQUEST_TIMEOUT_MS,
                        generation: replica.state.generation(),
                    });
                    self.send(Endpoint::Node(node), Endpoint::Node(node_index(leader)), body);
                }
                Role::Offline => {}
            }
        }
        Ok(())
    }

    /// Leader: moves the high watermark and answers the acks=all waiters it
    /// passed or whose time ran out.
    pub(super) fn leader_progress(&mut self, node: usize, partition: usize) {
        let now = self.now;
        let min_isr = self.min_isr;
        let Some(n) = self.nodes.get_mut(node) else { return };
        let (Some(Some(replica)), Some(log)) = (n.replicas.get_mut(partition), n.logs.get(partition)) else {
            return;
        };
        replica.state.advance_high_watermark(log.durable_end(), log.log_end());
        let high_watermark = replica.state.high_watermark();
        let isr = replica.state.isr().len();
        let (done, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut replica.waiters)
            .into_iter()
            .partition(|w| w.end <= high_watermark || w.deadline <= now);
        replica.waiters = waiting;
        for waiter in done {
            let answer = if waiter.end > high_watermark {
                Err(ProduceError::TimedOut)
            } else if isr < min_isr {
                Err(ProduceError::NotEnoughReplicas)
            } else {
                Ok(waiter.offset)
            };
            self.send(
                Endpoint::Node(node),
                Endpoint::Client(waiter.client),
                Body::ProduceAnswer {
                    request: waiter.request,
                    answer,
                },
            );
        }
    }

    pub(super) fn maintain_isr(&mut self, node: usize, partition: usize, fenced: &[bool]) {
        let now = self.now;
        let Some(Some(replica)) = self.nodes.get_mut(node).and_then(|n| n.replicas.get_mut(partition)) else {
            return;
        };
        if replica.isr_change.is_some_and(|(_, deadline)| deadline <= now) {
            // No answer: the outcome is unknown.
            replica.isr_change = None;
            replica.state.isr_change_answered(IsrAnswer::Unknown);
        }
        let alive = |n: NodeId| !fenced.get(node_index(n)).copied().unwrap_or(true);
        let lag_max = Duration::from_millis(REPLICA_LAG_MAX_MS);
        let Some(proposal) = replica.state.desired_isr(moment(now), lag_max, alive) else {
            return;
        };
        replica.state.isr_change_proposed(&proposal);
        self.next_request += 1;
        let request = self.next_request;
        if let Some(Some(replica)) = self.nodes.get_mut(node).and_then(|n| n.replicas.get_mut(partition)) {
            replica.isr_change = Some((request, now + ISR_CHANGE_TIMEOUT_MS));
        }
        self.send(
            Endpoint::Node(node),
            Endpoint::Controller,
            Body::AlterIsr {
                partition,
                request,
                proposal,
            },
        );
    }

    pub(super) fn apply_image(&mut self, node: usize, image: Image) -> Result<(), Violation> {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(node) else {
            return Ok(());
        };
        if n.image.as_ref().is_some_and(|i| i.version >= image.version)
            || image.incarnations.get(node) != Some(&n.incarnation)
        {
            return Ok(());
        }
        let mut leaders = Vec::new();
        let mut refused_waiters = Vec::new();
        for (partition, placement) in image.placements.iter().enumerate() {
            let (Some(Some(replica)), Some(log)) = (n.replicas.get_mut(partition), n.logs.get(partition)) else {
                continue;
            };
            let change = replica.state.apply_placement(placement, log.log_end(), moment(now));
            if change != RoleChange::None {
                replica.outstanding = None;
                replica.isr_change = None;
            }
            match change {
                RoleChange::BecameLeader => leaders.push((partition, replica.state.leader_epoch())),
                RoleChange::None => {}
                RoleChange::StartFollowing { .. } | RoleChange::StoppedLeading => {
                    refused_waiters.append(&mut replica.waiters);
                }
            }
        }
        n.image = Some(image);
        for waiter in refused_waiters {
            self.send(
                Endpoint::Node(node),
                Endpoint::Client(waiter.client),
                Body::ProduceAnswer {
                    request: waiter.request,
                    answer: Err(ProduceError::NotLeader),
                },
            );
        }
        for (partition, epoch) in leaders {
            self.note(format!("t={now} n{} leads p{partition} at epoch {epoch}", node + 1));
            self.checker.became_leader(partition, epoch, node)?;
        }
        for partition in 0..PARTITIONS {
            self.leader_progress(node, partition);
        }
        Ok(())
    }

    pub(super) fn node_receive(&mut self, node: usize, from: Endpoint, body: Body) -> Result<(), Violation> {
        match body {
            Body::Image(image) => self.apply_image(node, image),
            Body::AlterIsrAnswer {
                partition,
                request,
                answer,
            } => {
                if let Some(Some(replica)) = self.nodes.get_mut(node).and_then(|n| n.replicas.get_mut(partition)) {
                    if replica.isr_change.is_some_and(|(current, _)| current == request) {
                        replica.isr_change = None;
                        replica.state.isr_change_answered(answer);
                    }
                }
                Ok(())
            }
            Body::Fetch {
                partition,
                request,
                current,
                offset,
            } => {
                let answer = self.serve_follower_fetch(node, from, partition, current, offset);
                self.leader_progress(node, partition);
                self.send(
                    Endpoint::Node(node),
                    from,
                    Body::FetchAnswer {
                        partition,
                        request,
                        offset,
                        answer,
                    },
                );
                Ok(())
            }
            Body::EpochQuery {
                partition,
                request,
                current,
                asked,
            } => {
                let answer = self.with_replica(node, partition, |replica, log| {
                    replica.state.check_leader_epoch(Some(current))?;
                    Ok(match log.end_offset_for_epoch(asked) {
                        Some((epoch, end)) => EpochEnd::Found { epoch, end },
                        None => EpochEnd::Undefined,
                    })
                });
                let answer = answer.unwrap_or(Err(EpochRefusal::NotLeader));
                self.send(
                    Endpoint::Node(node),
                    from,
                    Body::EpochAnswer {
                        partition,
                        request,
                        answer,
                    },
                );
                Ok(())
            }
            Body::FetchAnswer {
                partition,
                request,
                offset,
                answer,
            } => {
                self.follower_fetched(node, from, partition, (request, offset), answer);
                Ok(())
            }
            Body::EpochAnswer {
                partition,
                request,
                answer,
            } => {
                self.follower_truncate(node, from, partition, request, answer);
                Ok(())
            }
            Body::Produce {
                partition,
                request,
                record,
            } => {
                self.produce(node, from, partition, request, record);
                Ok(())
            }
            Body::Consume {
                partition,
                request,
                offset,
            } => {
                let entries = self
                    .with_replica(node, partition, |replica, log| {
                        (replica.state.role() == Role::Leader && offset <= replica.state.high_watermark())
                            .then(|| log.read(offset, FETCH_RECORDS_MAX, replica.state.high_watermark()))
                    })
                    .flatten();
                self.send(
                    Endpoint::Node(node),
                    from,
                    Body::ConsumeAnswer {
                        partition,
                        request,
                        offset,
                        entries,
                    },
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn with_replica<T>(
        &mut self,
        node: usize,
        partition: usize,
        f: impl FnOnce(&mut Replica, &mut SimLog) -> T,
    ) -> Option<T> {
        let n = self.nodes.get_mut(node)?;
        match (n.replicas.get_mut(partition), n.logs.get_mut(partition)) {
            (Some(Some(replica)), Some(log)) => Some(f(replica, log)),
            _ => None,
        }
    }

    pub(super) fn serve_follower_fetch(
        &mut self,
        node: usize,
        from: Endpoint,
        partition: usize,
        current: LeaderEpoch,
        offset: Offset,
    ) -> Result<(Vec<Entry>, Offset), EpochRefusal> {
        let Endpoint::Node(follower) = from else {
            return Err(EpochRefusal::NotLeader);
        };
        let now = self.now;
        self.with_replica(node, partition, |replica, log| {
            replica.state.check_leader_epoch(Some(current))?;
            if offset > log.log_end() {
                // The engine answers OFFSET_OUT_OF_RANGE; the follower retries.
                return Err(EpochRefusal::Unknown);
            }
            replica
                .state
                .record_follower_fetch(node_id(follower), offset, log.log_end(), moment(now));
            replica.state.advance_high_watermark(log.durable_end(), log.log_end());
            Ok((
                log.read(offset, FETCH_RECORDS_MAX, log.log_end()),
                replica.state.high_watermark(),
            ))
        })
        .unwrap_or(Err(EpochRefusal::NotLeader))
    }

    /// Whether `request` is the follower's current one to `from`'s broker
    /// under the same role generation; clears it if so.
    pub(super) fn take_outstanding(replica: &mut Replica, from: Endpoint, request: u64) -> bool {
        let leader = match replica.state.role() {
            Role::Follower { leader } => node_index(leader),
            _ => return false,
        };
        let current = replica
            .outstanding
            .is_some_and(|o| o.request == request && o.generation == replica.state.generation());
        if current && from == Endpoint::Node(leader) {
            replica.outstanding = None;
            return true;
        }
        false
    }

    pub(super) fn follower_fetched(
        &mut self,
        node: usize,
        from: Endpoint,
        partition: usize,
        (request, offset): (u64, Offset),
        answer: Result<(Vec<Entry>, Offset), EpochRefusal>,
    ) {
        let sync_fails = self.rng.chance(self.config.sync_failure_per_mille);
        let now = self.now;
        let stalled = self.nodes.get(node).is_some_and(|n| now < n.disk_stalled_until_ms);
        let note = self.with_replica(node, partition, |replica, log| {
            if !Cluster::take_outstanding(replica, from, request) || replica.state.needs_truncation() {
                return None;
            }
            let Ok((entries, high_watermark)) = answer else {
                return None;
            };
            if entries.is_empty() || offset != log.log_end() {
                replica.state.follow_high_watermark(high_watermark, log.log_end());
                return None;
            }
            let mut failed = None;
            for entry in entries {
                if log.append(entry).is_err() {
                    failed = Some("append refused (failed log)");
                    break;
                }
            }
            // A stalled disk holds the sync back; the fetcher syncs before
            // it fetches again (the tick).
            if failed.is_none() && !stalled && log.sync(sync_fails).is_err() {
                failed = Some("sync failed");
            }
            replica.state.follow_high_watermark(high_watermark, log.log_end());
            failed.map(|why| format!("t={now} n{} p{partition}: follower {why}", node + 1))
        });
        if let Some(Some(line)) = note {
            self.note(line);
        }
    }

    pub(super) fn follower_truncate(
        &mut self,
        node: usize,
        from: Endpoint,
        partition: usize,
        request: u64,
        answer: Result<EpochEnd, EpochRefusal>,
    ) {
        let now = self.now;
        let cut = self.with_replica(node, partition, |replica, log| {
            if !Cluster::take_outstanding(replica, from, request) || !replica.state.needs_truncation() {
                return None;
            }
            let answer = answer.ok()?;
            let own_end = match answer {
                EpochEnd::Found { epoch, .. } => log.end_offset_for_epoch(epoch).map(|(_, end)| end),
                EpochEnd::Undefined => None,
            };
            let asked = log.latest_epoch()?;
            let truncation = truncation_point(asked, answer, own_end, replica.state.high_watermark(), log.log_end());
            let before = log.log_end();
            if let Some(cut) = truncation.cut {
                let end = log.truncate(cut);
                replica.state.truncated(end);
            }
            if !truncation.ask_again {
                replica.state.truncation_done();
            }
            truncation.cut.map(|cut| (before, cut))
        });
        if let Some(Some((before, cut))) = cut {
            if let Some(verified) = self.nodes.get_mut(node).and_then(|n| n.verified.get_mut(partition)) {
                *verified = 0;
            }
            self.note(format!(
                "t={now} n{} p{partition} truncates {before} -> {cut}",
                node + 1
            ));
        }
    }

    pub(super) fn produce(&mut self, node: usize, from: Endpoint, partition: usize, request: u64, record: Record) {
        let Endpoint::Client(client) = from else { return };
        let now = self.now;
        let min_isr = self.min_isr;
        let answer = self
            .with_replica(node, partition, |replica, log| {
                let Some(epoch) = replica.state.leading_epoch() else {
                    return Some(Err(ProduceError::NotLeader));
                };
                if replica.state.isr().len() < min_isr {
                    return Some(Err(ProduceError::NotEnoughReplicas));
                }
                // Idempotence: a retried record already in the log is not
                // appended again; it is answered once it is replicated.
                let existing = log
                    .entries()
                    .iter()
                    .position(|e| e.record.producer == record.producer && e.record.sequence == record.sequence);
                let offset = match existing {
                    Some(index) => Offset(i64::try_from(index).unwrap_or(i64::MAX)),
                    None => match log.append(Entry {
                        epoch,
                        record,
                        torn: false,
                    }) {
                        Ok(offset) => offset,
                        Err(_) => return Some(Err(ProduceError::Disk)),
                    },
                };
                replica.waiters.push(Waiter {
                    end: Offset(offset.0 + 1),
                    offset,
                    client,
                    request,
                    deadline: now + PRODUCE_TIMEOUT_MS,
                });
                None
            })
            .unwrap_or(Some(Err(ProduceError::NotLeader)));
        match answer {
            Some(answer) => self.send(Endpoint::Node(node), from, Body::ProduceAnswer { request, answer }),
            None => self.leader_progress(node, partition),
        }
    }
}
