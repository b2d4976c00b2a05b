//! The open-loop rate schedule: when each message is meant to be sent.
//!
//! With `--rate R` and `P` producers, producer `p` owns messages `p, p + P, p + 2P, …` of one global
//! sequence, and message `n` of that sequence is due at `start + n / R` seconds. The time a message
//! was *meant* to go out is fixed by this schedule alone, never by when the producer got around to
//! it: a producer that falls behind (broker stall, full in-flight window, slow scheduler) sends the
//! overdue messages at once, and each keeps its own intended time, so the latency recorded for it
//! includes the time it spent waiting. That is what keeps coordinated omission out of the numbers.
//!
//! With `--rate 0` (as fast as possible) there is no schedule: a message's intended time is the
//! moment it is created, and latencies are then service times (closed loop, bounded by the
//! in-flight window).

use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The intended send times of one producer's messages.
#[derive(Debug, Clone, Copy)]
pub struct RateSchedule {
    start: Instant,
    /// Messages per second over all producers; 0 = unlimited.
    rate_total: u64,
    /// Number of producers sharing the rate.
    stride: u64,
    /// This producer's index among them.
    offset: u64,
}

impl RateSchedule {
    /// The schedule of producer `producer_index` of `producers`, sharing `rate_total` messages/s.
    ///
    /// # Panics
    /// If `producer_index >= producers` (a caller bug).
    pub fn new(start: Instant, rate_total: u64, producers: u64, producer_index: u64) -> RateSchedule {
        assert!(
            producer_index < producers,
            "producer index {producer_index} of {producers}"
        );
        RateSchedule {
            start,
            rate_total,
            stride: producers,
            offset: producer_index,
        }
    }

    /// Whether messages are sent as fast as possible (`--rate 0`).
    pub fn is_unlimited(&self) -> bool {
        self.rate_total == 0
    }

    /// Intended send time of this producer's message `index`; `None` when unlimited.
    pub fn intended(&self, index: u64) -> Option<Instant> {
        if self.rate_total == 0 {
            return None;
        }
        let global = u128::from(index) * u128::from(self.stride) + u128::from(self.offset);
        let nanos = global * NANOS_PER_SECOND / u128::from(self.rate_total);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.start.checked_add(Duration::from_nanos(nanos))
    }
}

/// A message the pacer says is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Index of the message in this producer's sequence.
    pub index: u64,
    /// When it was meant to be sent (its latency counts from here).
    pub intended: Instant,
}

/// Hands out due messages in order, until the end of the schedule.
#[derive(Debug)]
pub struct Pacer {
    schedule: RateSchedule,
    next_index: u64,
    /// Messages intended at or after this instant are not part of the run.
    end: Instant,
    /// At most this many messages (`--prefill`), if set.
    limit: Option<u64>,
}

impl Pacer {
    /// A pacer for messages intended before `end`.
    pub fn new(schedule: RateSchedule, end: Instant) -> Pacer {
        Pacer {
            schedule,
            next_index: 0,
            end,
            limit: None,
        }
    }

    /// A pacer that also stops after `limit` messages (filling a topic with a count).
    pub fn with_limit(schedule: RateSchedule, end: Instant, limit: u64) -> Pacer {
        Pacer {
            limit: Some(limit),
            ..Pacer::new(schedule, end)
        }
    }

    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|limit| self.next_index >= limit)
    }

    /// The next message if it is due at `now` (its intended time is not in the future), else `None`.
    ///
    /// An overdue message is returned at once, with its original intended time: this is the
    /// catch-up after a stall.
    pub fn poll_due(&mut self, now: Instant) -> Option<Due> {
        if self.limit_reached() {
            return None;
        }
        let intended = match self.schedule.intended(self.next_index) {
            Some(intended) => intended,
            None => now, // unlimited: created now, meant for now
        };
        if intended > now || intended >= self.end {
            return None;
        }
        let due = Due {
            index: self.next_index,
            intended,
        };
        self.next_index += 1;
        Some(due)
    }

    /// When the next message becomes due (`None` if the schedule is over or unlimited).
    pub fn next_intended(&self) -> Option<Instant> {
        if self.limit_reached() {
            return None;
        }
        self.schedule
            .intended(self.next_index)
            .filter(|intended| *intended < self.end)
    }

    /// Whether every message of the schedule has been handed out (for unlimited, whether `now` is past the end).
    pub fn is_finished(&self, now: Instant) -> bool {
        if self.limit_reached() {
            return true;
        }
        match self.schedule.intended(self.next_index) {
            Some(intended) => intended >= self.end,
            None => now >= self.end,
        }
    }

    /// Messages of the schedule not handed out (when unlimited: 0, or what is left of the limit).
    pub fn remaining(&self) -> u64 {
        let left_of_limit = self.limit.map(|limit| limit.saturating_sub(self.next_index));
        if self.schedule.is_unlimited() {
            return left_of_limit.unwrap_or(0);
        }
        // Bounded search: the count of indexes whose intended time is before `end`.
        let span = self.end.saturating_duration_since(self.schedule.start).as_nanos();
        let global_before_end = (span * u128::from(self.schedule.rate_total)).div_ceil(NANOS_PER_SECOND);
        let offset = u128::from(self.schedule.offset);
        let mine = if global_before_end > offset {
            (global_before_end - offset).div_ceil(u128::from(self.schedule.stride))
        } else {
            0
        };
        let left_of_schedule = u64::try_from(mine).unwrap_or(u64::MAX).saturating_sub(self.next_index);
        left_of_limit.map_or(left_of_schedule, |left| left.min(left_of_schedule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn intended_times_follow_the_rate() {
        let start = Instant::now();
        let schedule = RateSchedule::new(start, 1000, 1, 0);
        assert_eq!(schedule.intended(0), Some(start));
        assert_eq!(schedule.intended(1), Some(start + MS));
        assert_eq!(schedule.intended(999), Some(start + 999 * MS));
        assert_eq!(schedule.intended(1000), Some(start + Duration::from_secs(1)));

        // 3 msg/s: 333_333_333 ns apart, rounding down, never drifting.
        let schedule = RateSchedule::new(start, 3, 1, 0);
        assert_eq!(schedule.intended(1), Some(start + Duration::from_nanos(333_333_333)));
        assert_eq!(schedule.intended(3), Some(start + Duration::from_secs(1)));
        assert_eq!(
            schedule.intended(3_000_000),
            Some(start + Duration::from_secs(1_000_000))
        );
    }

    #[test]
    fn producers_interleave_on_one_global_schedule() {
        let start = Instant::now();
        let first = RateSchedule::new(start, 1000, 2, 0);
        let second = RateSchedule::new(start, 1000, 2, 1);
        assert_eq!(first.intended(0), Some(start));
        assert_eq!(second.intended(0), Some(start + MS));
        assert_eq!(first.intended(1), Some(start + 2 * MS));
        assert_eq!(second.intended(1), Some(start + 3 * MS));
    }

    #[test]
    fn pacer_hands_out_only_due_messages() {
        let start = Instant::now();
        let mut pacer = Pacer::new(RateSchedule::new(start, 1000, 1, 0), start + Duration::from_secs(1));
        assert_eq!(
            pacer.poll_due(start),
            Some(Due {
                index: 0,
                intended: start
            })
        );
        assert_eq!(pacer.poll_due(start), None, "message 1 is due 1 ms later");
        assert_eq!(pacer.next_intended(), Some(start + MS));
        assert_eq!(
            pacer.poll_due(start + MS),
            Some(Due {
                index: 1,
                intended: start + MS
            })
        );
    }

    #[test]
    fn catch_up_after_a_stall_sends_at_once_but_keeps_intended_times() {
        let start = Instant::now();
        let mut pacer = Pacer::new(RateSchedule::new(start, 1000, 1, 0), start + Duration::from_secs(1));
        assert!(pacer.poll_due(start).is_some());
        // The producer stalls for 100 ms; when it wakes, messages 1..=100 are all overdue.
        let woke = start + 100 * MS;
        let mut caught_up = Vec::new();
        while let Some(due) = pacer.poll_due(woke) {
            caught_up.push(due);
        }
        assert_eq!(caught_up.len(), 100, "all overdue messages are released immediately");
        for (n, due) in caught_up.iter().enumerate() {
            let index = n as u64 + 1;
            assert_eq!(due.index, index);
            assert_eq!(
                due.intended,
                start + Duration::from_millis(index),
                "intended time is kept"
            );
        }
        assert_eq!(pacer.next_intended(), Some(start + 101 * MS));
    }

    #[test]
    fn schedule_ends_at_end() {
        let start = Instant::now();
        let end = start + 10 * MS;
        let mut pacer = Pacer::new(RateSchedule::new(start, 1000, 1, 0), end);
        assert_eq!(pacer.remaining(), 10);
        let mut count = 0;
        while pacer.poll_due(end + Duration::from_secs(5)).is_some() {
            count += 1;
            assert!(count <= 10);
        }
        assert_eq!(count, 10, "messages intended at 0..9 ms; 10 ms is the end");
        assert!(pacer.is_finished(end));
        assert_eq!(pacer.remaining(), 0);
        assert_eq!(pacer.next_intended(), None);

        // Two producers share 10 messages: 5 each.
        let second = Pacer::new(RateSchedule::new(start, 1000, 2, 1), end);
        assert_eq!(second.remaining(), 5);
    }

    #[test]
    fn unlimited_rate_means_now() {
        let start = Instant::now();
        let end = start + Duration::from_secs(1);
        let mut pacer = Pacer::new(RateSchedule::new(start, 0, 1, 0), end);
        let now = start + 5 * MS;
        assert_eq!(
            pacer.poll_due(now),
            Some(Due {
                index: 0,
                intended: now
            })
        );
        assert_eq!(
            pacer.poll_due(now),
            Some(Due {
                index: 1,
                intended: now
            })
        );
        assert_eq!(pacer.next_intended(), None);
        assert!(!pacer.is_finished(now));
        assert!(pacer.is_finished(end));
        assert_eq!(pacer.poll_due(end), None);
    }

    #[test]
    fn a_limit_ends_the_schedule_early() {
        let start = Instant::now();
        let end = start + Duration::from_secs(60);
        let mut pacer = Pacer::with_limit(RateSchedule::new(start, 0, 1, 0), end, 3);
        assert_eq!(pacer.remaining(), 3);
        assert!(!pacer.is_finished(start));
        let handed: Vec<_> = std::iter::from_fn(|| pacer.poll_due(start)).collect();
        assert_eq!(handed.len(), 3);
        assert!(pacer.is_finished(start), "finished by count, long before the end");
        assert_eq!(pacer.remaining(), 0);
        // With a rate, the limit and the schedule both bound what is left.
        let paced = Pacer::with_limit(RateSchedule::new(start, 1000, 1, 0), start + 10 * MS, 4);
        assert_eq!(paced.remaining(), 4);
        let paced = Pacer::with_limit(RateSchedule::new(start, 1000, 1, 0), start + 2 * MS, 4);
        assert_eq!(paced.remaining(), 2);
    }
}
