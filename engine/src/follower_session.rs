//! The follower's side of an incremental fetch session (KIP-227): what each
//! Fetch to a leader names, so that a follower copying many partitions
//! over one connection sends only the partitions whose fetch offset (or
//! leader epoch) moved, and the leader answers only those where something
//! happened.
//!
//! One [`FollowerSession`] per follower fetcher connection (`replica.rs`,
//! `run_feed`), on the shard that runs the fetcher. The leader keeps its
//! half in its shard's session table (`kafka/fetch_session.rs`) and ties it
//! to the connection, so a new connection always starts with a full fetch.
//!
//! Why this is safe for replication: the leader reads every partition of
//! the session on each fetch at the offset it last heard, and a follower's
//! fetch offset only changes when it appends, which it then sends; so the
//! leader learns every follower's log end exactly as with full fetches
//! (it is what moves the high watermark). A partition whose high watermark
//! or log start moved is in the answer, so the follower's copies follow.
//! Any top-level error or lost connection sends the next fetch in full.
//!
//! A plain state machine: it takes what the fetcher wants and the leader's
//! answers, and says what to send; no socket, no clock.

use std::collections::HashMap;

use crate::shard::PartitionKey;

/// What a fetch asks of one partition: a change in any field is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    pub(crate) fetch_offset: i64,
    pub(crate) current_leader_epoch: i32,
    pub(crate) log_start_offset: i64,
}

/// The session fields and partitions of the next Fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NextFetch {
    pub(crate) session_id: i32,
    pub(crate) session_epoch: i32,
    /// Partitions to name (all of them in a full fetch).
    pub(crate) send: Vec<PartitionKey>,
    /// Partitions the leader's session should drop.
    pub(crate) forget: Vec<PartitionKey>,
}

/// The follower's view of its session with one leader connection.
#[derive(Debug, Default)]
pub(crate) struct FollowerSession {
    /// The leader's id for the session (0: none yet).
    session_id: i32,
    /// The epoch of the next fetch (0: a full fetch that opens a session).
    next_epoch: i32,
    /// What the leader's session holds, as last sent.
    held: HashMap<PartitionKey, Asked>,
    /// Whether a fetch was built and not yet answered.
    in_flight: bool,
}

impl FollowerSession {
    /// What the next Fetch names, given everything the fetcher copies now.
    pub(crate) fn next(&mut self, wanted: &[(PartitionKey, Asked)]) -> NextFetch {
        assert!(!self.in_flight, "one fetch at a time per session");
        self.in_flight = true;
        if self.next_epoch == 0 {
            self.held = wanted.iter().cloned().collect();
            return NextFetch {
                session_id: self.session_id,
                session_epoch: 0,
                send: wanted.iter().map(|(key, _)| key.clone()).collect(),
                forget: Vec::new(),
            };
        }
        let wanted_keys: HashMap<&PartitionKey, &Asked> = wanted.iter().map(|(k, a)| (k, a)).collect();
        let mut forget: Vec<PartitionKey> = self
            .held
            .keys()
            .filter(|key| !wanted_keys.contains_key(key))
            .cloned()
            .collect();
        forget.sort_unstable();
        for key in &forget {
            self.held.remove(key);
        }
        let mut send = Vec::new();
        for (key, asked) in wanted {
            if self.held.get(key) != Some(asked) {
                self.held.insert(key.clone(), *asked);
                send.push(key.clone());
            }
        }
        assert_eq!(self.held.len(), wanted_keys.len(), "the session holds what is wanted");
        NextFetch {
            session_id: self.session_id,
            session_epoch: self.next_epoch,
            send,
            forget,
        }
    }

    /// The leader answered the fetch without a top-level error, under
    /// `session_id` (0: no session, or the session was closed).
    pub(crate) fn answered(&mut self, session_id: i32) {
        assert!(self.in_flight, "an answer follows a fetch");
        self.in_flight = false;
        if session_id == 0 {
            self.reset();
        } else if self.next_epoch == 0 {
            self.session_id = session_id;
            self.next_epoch = 1;
        } else {
            self.next_epoch = if self.next_epoch == i32::MAX {
                1
            } else {
                self.next_epoch + 1
            };
        }
    }

    /// The leader refused the session at the top: an unknown id starts
    /// afresh; a wrong epoch closes the session with the next (full) fetch,
    /// which opens another.
    pub(crate) fn refused(&mut self, id_not_found: bool) {
        if id_not_found {
            self.reset();
        } else {
            self.start_over();
        }
    }

    /// The next fetch is full: it closes this session and opens another
    /// (after an answer the fetcher could not take whole).
    pub(crate) fn start_over(&mut self) {
        let session_id = self.session_id;
        self.reset();
        self.session_id = session_id;
    }

    /// The fetch failed (a lost connection): the next one is full and
    /// opens a new session.
    pub(crate) fn reset(&mut self) {
        *self = FollowerSession::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: i32) -> PartitionKey {
        ("t".to_string(), index)
    }

    fn asked(offset: i64) -> Asked {
        Asked {
            fetch_offset: offset,
            current_leader_epoch: 1,
            log_start_offset: 0,
        }
    }

    #[test]
    fn a_session_sends_everything_once_then_only_what_moved() {
        let mut session = FollowerSession::default();
        let wanted = vec![(key(0), asked(0)), (key(1), asked(0)), (key(2), asked(0))];
        let first = session.next(&wanted);
        assert_eq!((first.session_id, first.session_epoch, first.send.len()), (0, 0, 3));
        session.answered(77);
        let quiet = session.next(&wanted);
        assert_eq!((quiet.session_id, quiet.session_epoch), (77, 1));
        assert!(quiet.send.is_empty() && quiet.forget.is_empty());
        session.answered(77);
        // Partition 1 appended; partition 2 left; partition 3 joined.
        let moved = vec![(key(0), asked(0)), (key(1), asked(5)), (key(3), asked(0))];
        let next = session.next(&moved);
        assert_eq!(next.session_epoch, 2);
        assert_eq!(next.send, vec![key(1), key(3)]);
        assert_eq!(next.forget, vec![key(2)]);
        session.answered(77);
        // A new leader epoch is a change too.
        let mut fenced = moved.clone();
        fenced[0].1.current_leader_epoch = 2;
        assert_eq!(session.next(&fenced).send, vec![key(0)]);
    }

    #[test]
    fn no_session_or_an_error_means_a_full_fetch_next() {
        let mut session = FollowerSession::default();
        let wanted = vec![(key(0), asked(0))];
        let _ = session.next(&wanted);
        session.answered(0);
        assert_eq!(session.next(&wanted).session_epoch, 0, "the leader made no session");
        session.answered(9);
        let _ = session.next(&wanted);
        session.reset();
        let next = session.next(&wanted);
        assert_eq!((next.session_id, next.session_epoch, next.send.len()), (0, 0, 1));
        session.answered(9);
        // A wrong epoch: the next full fetch closes session 9.
        let _ = session.next(&wanted);
        session.refused(false);
        let next = session.next(&wanted);
        assert_eq!((next.session_id, next.session_epoch, next.send.len()), (9, 0, 1));
        // An unknown id: start afresh.
        session.refused(true);
        assert_eq!(session.next(&wanted).session_id, 0);
    }
}
