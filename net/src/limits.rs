//! What a shard bounds and watches across the connections it serves.
//!
//! - [`RequestMemory`]: the bytes of request frames all connections of one
//!   shard may hold at once, from the moment a frame's length is read until
//!   its handler has answered (Kafka's `queued.max.request.bytes`). A
//!   connection whose next frame does not fit waits before reading its body,
//!   so a flood of large requests slows the flooders (TCP backpressure) and
//!   cannot exhaust the shard's memory; every other connection keeps its
//!   turn (waiters are served in order).
//! - [`ConnectionActivity`]: when a connection last received a request and
//!   how many it has unanswered, so the shard can close idle connections.
//!
//! Both live on the shard that accepted the connections (`Rc`, no locks).

use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

use glommio::sync::{Semaphore, StaticPermit};

/// The shard-wide budget of request bytes. One per shard, shared by every
/// connection it serves.
pub struct RequestMemory {
    semaphore: Rc<Semaphore>,
    bytes_max: usize,
}

impl RequestMemory {
    /// A budget of `bytes_max` bytes (at least one frame of the largest size
    /// the connections accept: the caller checks `max_frame_bytes` against
    /// it).
    pub fn new(bytes_max: usize) -> Rc<RequestMemory> {
        assert!(bytes_max > 0, "a request memory budget holds something");
        Rc::new(RequestMemory {
            semaphore: Rc::new(Semaphore::new(u64::try_from(bytes_max).unwrap_or(u64::MAX))),
            bytes_max,
        })
    }

    /// The budget, in bytes.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Bytes held by requests right now.
    pub fn held_bytes(&self) -> usize {
        let available = usize::try_from(self.semaphore.available()).unwrap_or(usize::MAX);
        self.bytes_max.saturating_sub(available)
    }

    /// Waits until `frame_bytes` fit, then holds them until the permit is
    /// dropped. A frame larger than the whole budget holds the whole budget
    /// (it then runs alone).
    pub(crate) async fn hold(&self, frame_bytes: usize) -> Option<StaticPermit> {
        let units = u64::try_from(frame_bytes.min(self.bytes_max)).unwrap_or(u64::MAX);
        let permit = self.semaphore.acquire_static_permit(units).await.ok();
        assert!(self.held_bytes() <= self.bytes_max, "the budget is never overdrawn");
        permit
    }
}

/// What the shard sees of one connection. Updated by the connection loop.
#[derive(Debug)]
pub struct ConnectionActivity {
    /// When the last request frame arrived (or the connection was accepted).
    last_request_at: Cell<Instant>,
    /// Requests read and not yet answered.
    unanswered: Cell<usize>,
}

impl ConnectionActivity {
    /// A connection accepted at `now`.
    pub fn new(now: Instant) -> Rc<ConnectionActivity> {
        Rc::new(ConnectionActivity {
            last_request_at: Cell::new(now),
            unanswered: Cell::new(0),
        })
    }

    /// How long the connection has been idle at `now`: no request for that
    /// long and none unanswered. `None` while requests are being served.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        (self.unanswered.get() == 0).then(|| now.saturating_duration_since(self.last_request_at.get()))
    }

    /// Requests read and not yet answered.
    pub fn unanswered(&self) -> usize {
        self.unanswered.get()
    }

    pub(crate) fn request_read(&self, now: Instant) {
        self.last_request_at.set(now);
        self.unanswered.set(self.unanswered.get() + 1);
    }

    pub(crate) fn answered(&self, count: usize) {
        assert!(count <= self.unanswered.get(), "answered more than was read");
        self.unanswered.set(self.unanswered.get() - count);
    }
}

/// What a connection shares with the shard serving it.
#[derive(Clone)]
pub struct ConnectionShare {
    /// The shard's request byte budget.
    pub request_memory: Rc<RequestMemory>,
    /// This connection's activity, read by the shard.
    pub activity: Rc<ConnectionActivity>,
}

impl ConnectionShare {
    /// A connection with a budget of its own (tests and tools).
    pub fn standalone(bytes_max: usize) -> ConnectionShare {
        ConnectionShare {
            request_memory: RequestMemory::new(bytes_max),
            activity: ConnectionActivity::new(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn activity_is_idle_only_with_nothing_unanswered() {
        let start = Instant::now();
        let activity = ConnectionActivity::new(start);
        let later = start + Duration::from_secs(5);
        assert_eq!(activity.idle_for(later), Some(Duration::from_secs(5)));
        activity.request_read(later);
        assert_eq!(activity.idle_for(later + Duration::from_secs(9)), None);
        activity.answered(1);
        assert_eq!(
            activity.idle_for(later + Duration::from_secs(9)),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn request_memory_holds_and_releases() {
        glommio::LocalExecutor::default().run(async {
            let memory = RequestMemory::new(100);
            let first = memory.hold(60).await;
            assert_eq!(memory.held_bytes(), 60);
            let huge = memory.semaphore.try_acquire_static_permit(50);
            assert!(huge.is_err(), "60 + 50 does not fit in 100");
            drop(first);
            assert_eq!(memory.held_bytes(), 0);
            let whole = memory.hold(1_000).await;
            assert_eq!(memory.held_bytes(), 100, "a frame beyond the budget takes all of it");
            drop(whole);
        });
    }
}
