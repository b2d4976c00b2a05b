//! Delayed delivery: records that consumers may not see before their time.
//! Owns the per-topic rules (`shardline.delivery.delay.ms`,
//! `shardline.delivery.delay.max.ms` and the `shardline.deliver.at` record
//! header) and each partition's *delivery bound*; both live on the shard
//! that owns the partition (`Partition` holds them).
//!
//! ## The rule
//! Every stored batch has a delivery time, a pure function of its bytes:
//!
//! ```text
//! deliver_at(batch) = max( max_timestamp + shardline.delivery.delay.ms,
//!                          each record's shardline.deliver.at, capped at
//!                          its timestamp + shardline.delivery.delay.max.ms )
//! ```
//!
//! and consumers see the longest prefix of the partition's batches whose
//! delivery time has come: the delivery bound is the offset of the first
//! batch not yet due. Consumer fetches (and ListOffsets latest) stop there
//! like they stop at the last stable offset; read_committed consumers at
//! the smaller of the two. Followers copy past it (it is not a replication
//! bound). So order is kept per partition, which is stronger than per key;
//! the cost is that a record delayed by an hour holds back the records
//! after it in its partition for that hour.
//!
//! Because the time is a function of stored bytes and the clock, nothing
//! needs to be written for it: after a restart, a leadership change or a
//! config change the bound is found again by reading forward from the log
//! start, and records not yet due are still not due. [`DeliveryBound`]
//! only caches where the last look stopped and the delivery time of the
//! batch it stopped at, so an ordinary fetch costs one comparison; it is
//! moved forward lazily, when a consumer asks, by at most
//! [`DELIVERY_SCAN_BATCHES_MAX`] batches per look.
//!
//! ## The header
//! `shardline.deliver.at` holds the epoch milliseconds as ASCII decimal
//! (`b"1767787200000"`), what any client can put in a header. It is read
//! only on topics that set `shardline.delivery.delay.max.ms` above 0 (others
//! never walk their records for it), and only in uncompressed batches: the
//! broker does not decompress, so a compressed batch is delayed by the
//! topic delay alone. A produce naming a time that is not decimal, or more
//! than the max after the record's timestamp (the broker's time on
//! LogAppendTime topics), is refused with INVALID_RECORD naming each such
//! record (KIP-467), and nothing of it is stored.

use std::collections::BTreeMap;

use bytes::Bytes;
use shardline_log::{uncompressed_records, BatchHeader, LogError, Offset, ReadBatches};

use crate::{
    error::EngineError,
    record_walk::{refusals, Seen},
};

/// The record header naming a record's delivery time.
pub(crate) const DELIVER_AT_HEADER: &str = "shardline.deliver.at";

/// Topic config: every record waits this long after its timestamp.
pub(crate) const DELAY_CONFIG: &str = "shardline.delivery.delay.ms";

/// Topic config: the longest delay a `shardline.deliver.at` header may ask;
/// absent or 0: the header is not read.
pub(crate) const DELAY_MAX_CONFIG: &str = "shardline.delivery.delay.max.ms";

/// Most batches one look at the bound reads past (bounds the work one
/// fetch can make the owner shard do; the next look goes on from there).
pub(crate) const DELIVERY_SCAN_BATCHES_MAX: usize = 16_384;

/// Bytes asked of the log per read while looking.
const SCAN_READ_BYTES: usize = 1 << 20;

/// Longest decimal a header value may be (i64's digits).
const DELIVER_AT_DIGITS_MAX: usize = 19;

/// A topic's delivery rules; `None` from [`DeliveryRules::of`] for a topic
/// without delays (its consumers read to the high watermark as ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryRules {
    /// `shardline.delivery.delay.ms`.
    delay_ms: i64,
    /// `shardline.delivery.delay.max.ms`; 0: headers are not read.
    header_max_ms: i64,
    /// The topic stamps LogAppendTime: at produce, a record's timestamp
    /// will be the broker's.
    log_append_time: bool,
}

impl DeliveryRules {
    /// The rules a topic's configs set.
    pub(crate) fn of(configs: &BTreeMap<String, String>) -> Option<DeliveryRules> {
        let value = |key: &str| configs.get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(0);
        let rules = DeliveryRules {
            delay_ms: value(DELAY_CONFIG),
            header_max_ms: value(DELAY_MAX_CONFIG),
            log_append_time: configs.get("message.timestamp.type").map(String::as_str) == Some("LogAppendTime"),
        };
        (rules.delay_ms > 0 || rules.header_max_ms > 0).then_some(rules)
    }

    /// When the stored `batch` (with its parsed `header`) may be delivered.
    pub(crate) fn deliver_at_ms(&self, header: &BatchHeader, batch: &[u8]) -> i64 {
        let mut at_ms = header.max_timestamp_ms.saturating_add(self.delay_ms);
        if self.header_max_ms == 0 || header.is_control() {
            return at_ms;
        }
        let Some(records) = uncompressed_records(batch, header) else {
            return at_ms;
        };
        for record in records {
            let Ok(record) = record else { break };
            let timestamp_ms = if header.log_append_time() {
                header.max_timestamp_ms
            } else {
                header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms)
            };
            if let Some(Ok(asked_ms)) = record.headers.get(DELIVER_AT_HEADER.as_bytes()).map(parse_deliver_at) {
                // Capped as at produce, for records stored before the
                // topic read headers (never checked).
                at_ms = at_ms.max(asked_ms.min(timestamp_ms.saturating_add(self.header_max_ms)));
            }
        }
        at_ms
    }

    /// Checks the `shardline.deliver.at` headers of a produce's records
    /// (the batches a client sent) at the broker's time `now_ms`.
    pub(crate) fn check(&self, records: &Bytes, now_ms: i64) -> Result<(), EngineError> {
        if self.header_max_ms == 0 {
            return Ok(());
        }
        let errors = refusals(records, |header, seen| {
            let Seen::Record(record) = seen else {
                return None;
            };
            let value = record.headers.get(DELIVER_AT_HEADER.as_bytes())?;
            let asked_ms = match parse_deliver_at(value) {
                Ok(asked_ms) => asked_ms,
                Err(why) => return Some(why),
            };
            let timestamp_ms = if self.log_append_time {
                now_ms
            } else {
                header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms)
            };
            (asked_ms.saturating_sub(timestamp_ms) > self.header_max_ms).then(|| {
                format!(
                    "{DELIVER_AT_HEADER}={asked_ms} is more than {DELAY_MAX_CONFIG}={} after the record's timestamp {timestamp_ms}",
                    self.header_max_ms
                )
            })
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(EngineError::RecordsRefused(errors))
        }
    }
}

/// A `shardline.deliver.at` value: epoch milliseconds in ASCII decimal.
fn parse_deliver_at(value: Option<&[u8]>) -> Result<i64, String> {
    let digits = value.unwrap_or_default();
    let decimal = !digits.is_empty() && digits.len() <= DELIVER_AT_DIGITS_MAX && digits.iter().all(u8::is_ascii_digit);
    decimal
        .then(|| std::str::from_utf8(digits).ok()?.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| format!("{DELIVER_AT_HEADER} must be epoch milliseconds in ASCII decimal"))
}

/// Where consumers of one partition stop: the first batch not yet due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryBound {
    /// The first offset not known to be due (a batch boundary).
    bound: Offset,
    /// The delivery time of the batch at `bound`, once read, and the
    /// offset after that batch.
    due: Option<(i64, Offset)>,
}

/// What a look at the bound found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Everything stored is due.
    AllDue,
    /// The batch at the bound is due then.
    DueAt(i64),
    /// The look stopped at its budget: look again at once.
    Unfinished,
}

impl DeliveryBound {
    /// Nothing known: the next look reads from the log start.
    pub(crate) fn unknown() -> DeliveryBound {
        DeliveryBound {
            bound: Offset(0),
            due: None,
        }
    }

    /// The bound as last found.
    pub(crate) fn bound(&self) -> Offset {
        self.bound
    }

    /// The log was truncated to `end` (a follower's divergent tail): the
    /// bound may not stand past it.
    pub(crate) fn truncated(&mut self, end: Offset) {
        if self.bound >= end {
            self.bound = end;
            self.due = None;
        }
    }

    /// Moves the bound past every batch due at `now_ms`, reading batches
    /// from the log with `read(from)` (whole batches from `from` up to the
    /// log end), at most [`DELIVERY_SCAN_BATCHES_MAX`] of them.
    pub(crate) fn look(
        &mut self,
        rules: &DeliveryRules,
        log_start: Offset,
        log_end: Offset,
        now_ms: i64,
        mut read: impl FnMut(Offset) -> Result<ReadBatches, LogError>,
    ) -> Look {
        if self.bound < log_start {
            // Retention removed what the bound stood on.
            self.bound = log_start;
            self.due = None;
        }
        if self.bound > log_end {
            self.truncated(log_end);
        }
        let mut batches = 0usize;
        loop {
            if let Some((due_ms, next)) = self.due {
                if due_ms > now_ms {
                    return Look::DueAt(due_ms);
                }
                // Due now: step past the batch at the bound.
                self.bound = next.min(log_end);
                self.due = None;
            }
            if self.bound >= log_end {
                return Look::AllDue;
            }
            if batches >= DELIVERY_SCAN_BATCHES_MAX {
                return Look::Unfinished;
            }
            let Ok(found) = read(self.bound) else {
                // Unreadable here: consumers reading here fail the same way.
                return Look::AllDue;
            };
            let start = self.bound;
            for (header, batch) in crate::record_walk::stored_batches(&found.chunks) {
                batches += 1;
                let due_ms = rules.deliver_at_ms(&header, batch);
                if due_ms > now_ms {
                    self.bound = self.bound.max(header.base_offset);
                    self.due = Some((due_ms, header.next_offset()));
                    return Look::DueAt(due_ms);
                }
                self.bound = self.bound.max(header.next_offset());
            }
            self.bound = self.bound.max(found.next_offset);
            if self.bound <= start {
                return Look::AllDue;
            }
        }
    }
}

/// Reads for a look: whole batches from `from` to the log end.
pub(crate) fn scan_read(log: &shardline_log::Log, from: Offset) -> Result<ReadBatches, LogError> {
    log.read(from, SCAN_READ_BYTES, log.log_end())
}

/// What a consumer of one partition may see now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsumerView {
    /// The high watermark, capped at the delivery bound.
    pub(crate) high_watermark: Offset,
    /// The last stable offset, capped at the delivery bound.
    pub(crate) last_stable_offset: Offset,
    /// When more may become visible by time alone (a long-polling fetch
    /// wakes then); `None`: only an append or a marker can show more.
    pub(crate) due_ms: Option<i64>,
}

impl ConsumerView {
    /// The view of a partition whose bound `look` found at `bound`.
    pub(crate) fn capped(
        high_watermark: Offset,
        last_stable_offset: Offset,
        bound: Offset,
        look: Look,
        now_ms: i64,
    ) -> ConsumerView {
        ConsumerView {
            high_watermark: high_watermark.min(bound),
            last_stable_offset: last_stable_offset.min(bound),
            due_ms: match look {
                Look::AllDue => None,
                Look::DueAt(due_ms) => Some(due_ms),
                Look::Unfinished => Some(now_ms),
            },
        }
    }
}

/// How long a long-polling fetch sleeps: until its `deadline`, or until the
/// earliest time one of its partitions shows more (`due_ms`, epoch ms).
pub(crate) fn sleep_for(
    deadline: std::time::Duration,
    due_ms: impl IntoIterator<Item = Option<i64>>,
    now_ms: i64,
) -> std::time::Duration {
    due_ms.into_iter().flatten().min().map_or(deadline, |due_ms| {
        let wait_ms = u64::try_from(due_ms.saturating_sub(now_ms)).unwrap_or(0);
        deadline.min(std::time::Duration::from_millis(wait_ms))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use shardline_log::{build_batch_from_values, build_batch_with_headers, set_base_offset, HeaderedRecord};

    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A log of batches in memory, each placed at consecutive offsets.
    struct Batches(Vec<Bytes>);

    impl Batches {
        fn new(batches: Vec<Vec<u8>>) -> Batches {
            let mut offset = 0i64;
            Batches(
                batches
                    .into_iter()
                    .map(|mut batch| {
                        set_base_offset(&mut batch, Offset(offset));
                        offset = BatchHeader::parse(&batch).unwrap().next_offset().0;
                        Bytes::from(batch)
                    })
                    .collect(),
            )
        }

        fn end(&self) -> Offset {
            self.0
                .last()
                .map_or(Offset(0), |b| BatchHeader::parse(b).unwrap().next_offset())
        }

        /// At most two batches per read, so looks span reads.
        fn read(&self, from: Offset) -> Result<ReadBatches, LogError> {
            let first = self
                .0
                .partition_point(|b| BatchHeader::parse(b).unwrap().next_offset() <= from);
            let chunks: Vec<Bytes> = self.0.iter().skip(first).take(2).cloned().collect();
            let next_offset = chunks
                .last()
                .map_or(from, |b| BatchHeader::parse(b).unwrap().next_offset());
            Ok(ReadBatches { chunks, next_offset })
        }
    }

    fn plain(timestamp_ms: i64, records: usize) -> Vec<u8> {
        let values: Vec<&[u8]> = (0..records).map(|_| b"v".as_slice()).collect();
        build_batch_from_values(timestamp_ms, &values)
    }

    fn deliver_at(timestamp_ms: i64, at_ms: &str) -> Vec<u8> {
        let headers = [(DELIVER_AT_HEADER, at_ms.as_bytes())];
        build_batch_with_headers(
            timestamp_ms,
            &[HeaderedRecord {
                key: None,
                value: Some(b"later"),
                headers: &headers,
            }],
        )
    }

    fn look(bound: &mut DeliveryBound, rules: &DeliveryRules, log: &Batches, now_ms: i64) -> Look {
        bound.look(rules, Offset(0), log.end(), now_ms, |from| log.read(from))
    }

    #[test]
    fn topics_without_delays_have_no_rules() {
        assert_eq!(DeliveryRules::of(&configs(&[])), None);
        assert_eq!(DeliveryRules::of(&configs(&[(DELAY_CONFIG, "0")])), None);
        assert!(DeliveryRules::of(&configs(&[(DELAY_CONFIG, "10")])).is_some());
        assert!(DeliveryRules::of(&configs(&[(DELAY_MAX_CONFIG, "10")])).is_some());
    }

    #[test]
    fn a_topic_delay_releases_batches_in_order_as_time_passes() {
        let rules = DeliveryRules::of(&configs(&[(DELAY_CONFIG, "1000")])).unwrap();
        // Batches at 100 (2 records), 200, 150 (a late timestamp), 300.
        let log = Batches::new(vec![plain(100, 2), plain(200, 1), plain(150, 1), plain(300, 1)]);
        let mut bound = DeliveryBound::unknown();
        assert_eq!(look(&mut bound, &rules, &log, 1_000), Look::DueAt(1_100));
        assert_eq!(bound.bound(), Offset(0));
        assert_eq!(look(&mut bound, &rules, &log, 1_100), Look::DueAt(1_200));
        assert_eq!(bound.bound(), Offset(2));
        // The batch at 150 is due at 1150 but waits behind the one at 200.
        assert_eq!(look(&mut bound, &rules, &log, 1_199), Look::DueAt(1_200));
        assert_eq!(bound.bound(), Offset(2));
        assert_eq!(look(&mut bound, &rules, &log, 1_250), Look::DueAt(1_300));
        assert_eq!(bound.bound(), Offset(4));
        assert_eq!(look(&mut bound, &rules, &log, 5_000), Look::AllDue);
        assert_eq!(bound.bound(), Offset(5));
        // Found again from nothing (a restart) the same way.
        let mut again = DeliveryBound::unknown();
        assert_eq!(look(&mut again, &rules, &log, 1_250), Look::DueAt(1_300));
        assert_eq!(again.bound(), Offset(4));
    }

    #[test]
    fn a_header_holds_back_its_record_and_those_after_it() {
        let rules = DeliveryRules::of(&configs(&[(DELAY_MAX_CONFIG, "60000")])).unwrap();
        let log = Batches::new(vec![
            plain(100, 1),
            deliver_at(100, "5000"),
            plain(100, 3),
            deliver_at(100, "999999999"),
        ]);
        let mut bound = DeliveryBound::unknown();
        assert_eq!(look(&mut bound, &rules, &log, 200), Look::DueAt(5_000));
        assert_eq!(bound.bound(), Offset(1));
        // A time past the max is capped at timestamp + max.
        assert_eq!(look(&mut bound, &rules, &log, 5_000), Look::DueAt(60_100));
        assert_eq!(bound.bound(), Offset(5));
        assert_eq!(look(&mut bound, &rules, &log, 60_100), Look::AllDue);
        assert_eq!(bound.bound(), Offset(6));
    }

    #[test]
    fn headers_are_not_read_without_a_max() {
        let rules = DeliveryRules::of(&configs(&[(DELAY_CONFIG, "10")])).unwrap();
        let log = Batches::new(vec![deliver_at(100, "5000")]);
        let mut bound = DeliveryBound::unknown();
        assert_eq!(look(&mut bound, &rules, &log, 110), Look::AllDue);
        let batch = Bytes::from(deliver_at(100, "not a time"));
        assert!(rules.check(&batch, 100).is_ok());
    }

    #[test]
    fn bad_or_too_far_header_times_are_refused_by_record() {
        let rules = DeliveryRules::of(&configs(&[(DELAY_MAX_CONFIG, "1000")])).unwrap();
        assert!(rules.check(&Bytes::from(deliver_at(100, "1100")), 100).is_ok());
        for (value, why) in [("1101", "more than"), ("12x", "ASCII decimal"), ("", "ASCII decimal")] {
            let Err(EngineError::RecordsRefused(errors)) = rules.check(&Bytes::from(deliver_at(100, value)), 100)
            else {
                panic!("{value} refused");
            };
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].0, 0);
            assert!(errors[0].1.contains(why), "{}", errors[0].1);
        }
        // LogAppendTime: measured from the broker's time.
        let stamped = DeliveryRules::of(&configs(&[
            (DELAY_MAX_CONFIG, "1000"),
            ("message.timestamp.type", "LogAppendTime"),
        ]))
        .unwrap();
        assert!(stamped.check(&Bytes::from(deliver_at(0, "5000")), 4_500).is_ok());
    }

    #[test]
    fn retention_and_truncation_move_the_bound() {
        let rules = DeliveryRules::of(&configs(&[(DELAY_CONFIG, "1000")])).unwrap();
        let log = Batches::new(vec![plain(100, 1), plain(200, 1), plain(300, 1)]);
        let mut bound = DeliveryBound::unknown();
        assert_eq!(look(&mut bound, &rules, &log, 1_250), Look::DueAt(1_300));
        assert_eq!(bound.bound(), Offset(2));
        bound.truncated(Offset(1));
        assert_eq!(bound.bound(), Offset(1));
        assert_eq!(look(&mut bound, &rules, &log, 1_250), Look::DueAt(1_300));
        assert_eq!(bound.bound(), Offset(2));
        let reads = std::cell::Cell::new(0);
        let mut counted = |from| {
            reads.set(reads.get() + 1);
            log.read(from)
        };
        assert_eq!(
            bound.look(&rules, Offset(0), log.end(), 1_250, &mut counted),
            Look::DueAt(1_300)
        );
        assert_eq!(reads.get(), 0, "a known due time costs no read");
    }

    #[test]
    fn a_fetch_sleeps_until_the_first_due_time() {
        let deadline = std::time::Duration::from_millis(500);
        assert_eq!(sleep_for(deadline, [None, None], 1_000), deadline);
        let due = [None, Some(1_300), Some(1_200)];
        assert_eq!(sleep_for(deadline, due, 1_000), std::time::Duration::from_millis(200));
        assert_eq!(sleep_for(deadline, [Some(900)], 1_000), std::time::Duration::ZERO);
        assert_eq!(sleep_for(deadline, [Some(9_000)], 1_000), deadline);
        let view = ConsumerView::capped(Offset(10), Offset(8), Offset(9), Look::DueAt(5), 1);
        assert_eq!((view.high_watermark, view.last_stable_offset), (Offset(9), Offset(8)));
    }

    #[test]
    fn a_look_stops_at_its_budget_and_goes_on() {
        let rules = DeliveryRules::of(&configs(&[(DELAY_CONFIG, "1")])).unwrap();
        let batches: Vec<Vec<u8>> = (0..DELIVERY_SCAN_BATCHES_MAX + 10).map(|_| plain(0, 1)).collect();
        let log = Batches::new(batches);
        let mut bound = DeliveryBound::unknown();
        assert_eq!(look(&mut bound, &rules, &log, 10), Look::Unfinished);
        assert!(bound.bound().0 >= i64::try_from(DELIVERY_SCAN_BATCHES_MAX).unwrap() - 2);
        assert_eq!(look(&mut bound, &rules, &log, 10), Look::AllDue);
        assert_eq!(bound.bound(), log.end());
    }
}
