//! The history check every cluster fault test ends with (issue 16 §3).
//!
//! A test's clients record what happened while the faults ran: which
//! messages producers handed over, every delivery report (acknowledged at a
//! partition and offset, or failed), and every message a consumer was
//! served (`Observation`). Afterwards the test reads each partition back in
//! full (the final log) and [`check`] compares:
//!
//! - the final log of each partition is dense from offset 0 and holds only
//!   messages the test sent, each on its own partition, none twice;
//! - every acknowledged message is in it exactly once, at the partition and
//!   offset its acknowledgement named;
//! - every message a consumer was served during the faults is in it at the
//!   offset the consumer saw: no consumer read a record that was later lost
//!   or replaced (a read above the high watermark would show here);
//! - each consumer saw each partition's offsets rising.
//!
//! A message whose delivery failed may be in the log at most once (the
//! client cannot know whether it was appended). Messages are `msg-{seq}`;
//! the test says which partition `seq` belongs on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Mismatches listed in a failure message.
const SHOWN_MAX: usize = 20;

/// The payload of message `seq`.
pub fn payload(seq: usize) -> String {
    format!("msg-{seq}")
}

/// The `seq` of a payload this test wrote, if it is one.
pub fn parse_payload(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes).ok()?.strip_prefix("msg-")?.parse().ok()
}

/// One message served to a consumer during the test.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Which consumer (its offsets are checked to rise on their own).
    pub consumer: usize,
    pub partition: i32,
    pub offset: i64,
    /// The payload's `seq`, or `None` if it was not one of this test's.
    pub seq: Option<usize>,
}

/// A delivery report's outcome: (partition, offset), or the error.
pub type Outcome = Result<(i32, i64), String>;

/// One delivery report: the message's `seq` and its outcome.
pub type Delivery = (usize, Outcome);

/// One message of the final log: (partition, offset, payload).
pub type Stored = (i32, i64, Vec<u8>);

/// What the clients recorded.
pub struct History<'a> {
    /// Every message handed to a producer.
    pub sent: &'a BTreeSet<usize>,
    /// Every delivery report: `seq` and (partition, offset) or the error.
    pub reports: &'a [Delivery],
    /// Every message consumers were served while the test ran.
    pub observed: &'a [Observation],
    /// The partition each message was sent to.
    pub partition_of: &'a dyn Fn(usize) -> i32,
}

/// Counts of a history that passed.
#[derive(Debug, Default)]
pub struct Verdict {
    pub sent: usize,
    pub acknowledged: usize,
    /// Failed deliveries by error.
    pub failed: BTreeMap<String, usize>,
    /// Failed deliveries found in the log all the same.
    pub failed_found: usize,
    pub stored: usize,
    /// Messages consumers were served during the test.
    pub observed: usize,
}

/// Checks `history` against `log` (every partition read from offset 0 to
/// its high watermark, in read order); fails the test on the first broken
/// rule, listing up to `SHOWN_MAX` examples. Prints and returns the counts.
pub fn check(history: &History<'_>, log: &[Stored]) -> Verdict {
    // Exactly one report per message sent.
    let mut outcome_of: HashMap<usize, &Outcome> = HashMap::new();
    for (seq, outcome) in history.reports {
        assert!(history.sent.contains(seq), "report for unsent message {seq}");
        assert!(
            outcome_of.insert(*seq, outcome).is_none(),
            "two reports for message {seq}"
        );
    }
    assert_eq!(outcome_of.len(), history.sent.len(), "one report per message sent");

    // The final log: dense per partition, only sent messages, each on its
    // partition, none twice.
    let mut stored_at: HashMap<(i32, i64), usize> = HashMap::new();
    let mut found_at: HashMap<usize, Vec<(i32, i64)>> = HashMap::new();
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, bytes) in log {
        let expected = next_offset.entry(*partition).or_insert(0);
        assert_eq!(
            offset, expected,
            "partition {partition}: offset {offset} where {expected} was next (offsets are dense from 0)"
        );
        *expected += 1;
        let seq = parse_payload(bytes).unwrap_or_else(|| {
            panic!(
                "{partition}:{offset}: payload {:?} was not sent by this test",
                String::from_utf8_lossy(bytes)
            )
        });
        assert!(
            history.sent.contains(&seq),
            "{partition}:{offset}: message {seq} was never sent"
        );
        assert_eq!(
            *partition,
            (history.partition_of)(seq),
            "message {seq} on the wrong partition"
        );
        stored_at.insert((*partition, *offset), seq);
        found_at.entry(seq).or_default().push((*partition, *offset));
    }
    let mut duplicated: Vec<(usize, Vec<(i32, i64)>)> = found_at
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(seq, places)| (*seq, places.clone()))
        .collect();
    duplicated.sort_unstable();
    assert!(
        duplicated.is_empty(),
        "{} messages are stored more than once, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(SHOWN_MAX)]
    );

    // Every acknowledged message exactly where its acknowledgement said.
    let mut verdict = Verdict {
        sent: history.sent.len(),
        stored: log.len(),
        observed: history.observed.len(),
        ..Verdict::default()
    };
    let mut lost = Vec::new();
    let mut misplaced = Vec::new();
    for seq in history.sent {
        match outcome_of[seq] {
            Ok((partition, offset)) => {
                verdict.acknowledged += 1;
                match found_at.get(seq).map(Vec::as_slice) {
                    None => lost.push((*seq, *partition, *offset)),
                    Some([place]) if place == &(*partition, *offset) => {}
                    Some(places) => misplaced.push((*seq, (*partition, *offset), places.to_vec())),
                }
            }
            Err(error) => {
                *verdict.failed.entry(error.clone()).or_default() += 1;
                if found_at.contains_key(seq) {
                    verdict.failed_found += 1;
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged messages are missing, e.g. (seq, partition, offset) {:?}",
        lost.len(),
        &lost[..lost.len().min(SHOWN_MAX)]
    );
    assert!(
        misplaced.is_empty(),
        "{} acknowledged messages are not at their acknowledged offset, e.g. (seq, acknowledged, found) {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(SHOWN_MAX)]
    );

    // What consumers saw is what stayed; each saw offsets rise.
    let mut vanished = Vec::new();
    let mut last_seen: HashMap<(usize, i32), i64> = HashMap::new();
    let mut backwards = Vec::new();
    for seen in history.observed {
        if stored_at.get(&(seen.partition, seen.offset)).copied() != seen.seq {
            vanished.push(seen.clone());
        }
        if let Some(previous) = last_seen.insert((seen.consumer, seen.partition), seen.offset) {
            if previous >= seen.offset {
                backwards.push((seen.consumer, seen.partition, previous, seen.offset));
            }
        }
    }
    assert!(
        vanished.is_empty(),
        "{} messages served to consumers are not in the final log at that offset (served, then lost or \
         replaced), e.g. {:?}",
        vanished.len(),
        &vanished[..vanished.len().min(SHOWN_MAX)]
    );
    assert!(
        backwards.is_empty(),
        "{} times a consumer was served an offset at or below one it had (consumer, partition, before, after): {:?}",
        backwards.len(),
        &backwards[..backwards.len().min(SHOWN_MAX)]
    );
    let failed: usize = verdict.failed.values().sum();
    println!(
        "history: {} sent, {} acknowledged, {failed} failed ({} of those stored), {} stored, \
         {} served to consumers during the test: checked",
        verdict.sent, verdict.acknowledged, verdict.failed_found, verdict.stored, verdict.observed
    );
    if !verdict.failed.is_empty() {
        println!("delivery failures by error: {:?}", verdict.failed);
    }
    verdict
}
