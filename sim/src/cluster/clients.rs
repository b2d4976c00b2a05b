//! Producers (acks=all, idempotent, one record in flight) and consumers
//! (reading up to the high watermark from the leader).

use super::*;

impl Cluster {
    // ---- clients ----

    pub(super) fn client_tick(&mut self, client: usize) {
        let now = self.now;
        let Some(c) = self.clients.get(client) else { return };
        if c.pending.is_some_and(|(_, deadline, _, _)| deadline > now) {
            return;
        }
        let kind = c.kind;
        let retry = c.pending;
        let partition = self.rng.index(PARTITIONS);
        let request = self.request_id();
        match kind {
            ClientKind::Producer => {
                let (partition, record) = match retry {
                    Some((_, _, partition, Some(record))) => (partition, record),
                    _ => {
                        let Some(c) = self.clients.get_mut(client) else { return };
                        if c.next_sequence >= RECORDS_PER_PRODUCER {
                            return;
                        }
                        self.next_value += 1;
                        let record = Record {
                            producer: u32::try_from(client).unwrap_or(u32::MAX),
                            sequence: c.next_sequence,
                            value: self.next_value,
                        };
                        c.next_sequence += 1;
                        (partition, record)
                    }
                };
                self.client_send(client, request, partition, Some(record));
            }
            ClientKind::Consumer => self.client_send(client, request, partition, None),
        }
    }

    pub(super) fn client_send(&mut self, client: usize, request: u64, partition: usize, record: Option<Record>) {
        let now = self.now;
        let leader = self.controller.placements.get(partition).and_then(|p| p.leader);
        let Some(c) = self.clients.get_mut(client) else { return };
        c.pending = Some((request, now + CLIENT_REQUEST_TIMEOUT_MS, partition, record));
        let Some(leader) = leader else { return };
        let to = Endpoint::Node(node_index(leader));
        let body = match record {
            Some(record) => Body::Produce {
                partition,
                request,
                record,
            },
            None => Body::Consume {
                partition,
                request,
                offset: c.positions.get(partition).copied().unwrap_or(Offset(0)),
            },
        };
        self.send(Endpoint::Client(client), to, body);
    }

    pub(super) fn client_receive(&mut self, client: usize, body: Body) -> Result<(), Violation> {
        let Some(c) = self.clients.get_mut(client) else {
            return Ok(());
        };
        let Some((pending, _, partition, record)) = c.pending else {
            return Ok(());
        };
        match body {
            Body::ProduceAnswer { request, answer } if request == pending => {
                match answer {
                    Ok(offset) => {
                        c.pending = None;
                        if let Some(record) = record {
                            self.checker.acked(partition, offset, record)?;
                        }
                    }
                    Err(_) => {
                        // Retry the same record (same sequence) at the next tick.
                        c.pending = Some((pending, self.now, partition, record));
                    }
                }
                Ok(())
            }
            Body::ConsumeAnswer {
                partition,
                request,
                offset,
                entries,
            } if request == pending => {
                c.pending = None;
                let Some(entries) = entries else { return Ok(()) };
                let Some(position) = c.positions.get_mut(partition) else {
                    return Ok(());
                };
                if offset != *position {
                    return Ok(());
                }
                *position = Offset(offset.0 + i64::try_from(entries.len()).unwrap_or(0));
                self.checker.consumed(partition, offset, &entries)
            }
            _ => Ok(()),
        }
    }
}
