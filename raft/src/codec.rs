//! FlatBuffers conversions of the openraft types (log ids, votes,
//! memberships, snapshot meta, log entries) and the frame every file of the
//! metadata directory is made of.
//!
//! ## The frame
//! ```text
//!  0        4          8                      8 + len
//!  ┌────────┬──────────┬──────────────────────┐
//!  │ len    │ crc32c   │ payload              │
//!  │ u32 LE │ u32 LE   │ len bytes            │
//!  └────────┴──────────┴──────────────────────┘
//!  len    payload length, 1..=FRAME_PAYLOAD_BYTES_MAX
//!  crc32c CRC-32C (Castagnoli) of the payload bytes
//!  payload one FlatBuffers buffer (which table depends on the file)
//! ```
//! Bytes read from disk or from a peer are untrusted: every decoder here
//! returns a `Result` and never panics (a proptest feeds them random bytes).

use std::{collections::BTreeMap, collections::BTreeSet, fmt};

use crate::{
    command::{command_from_fb, command_to_fb},
    generated::shardline::meta as fb,
    types::{Entry, LogId, Membership, Node, SnapshotMeta, StoredMembership, Vote},
};

/// Bytes of a frame header (`len` + `crc32c`).
pub(crate) const FRAME_HEADER_BYTES: usize = 8;
const _: () = assert!(FRAME_HEADER_BYTES == 2 * std::mem::size_of::<u32>());

/// Largest frame payload accepted. The biggest frame is a snapshot: about
/// 100 bytes per partition, so 256 MiB is over two million partitions. A
/// length above it is a torn or garbage header, not data.
pub(crate) const FRAME_PAYLOAD_BYTES_MAX: u32 = 256 * 1024 * 1024;

/// Why bytes (from disk or a peer) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    reason: String,
}

impl DecodeError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        DecodeError { reason: reason.into() }
    }

    /// A required field was absent.
    pub(crate) fn missing(field: &'static str) -> Self {
        DecodeError {
            reason: format!("missing field {field}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DecodeError {}

impl From<planus::Error> for DecodeError {
    fn from(error: planus::Error) -> Self {
        DecodeError::new(format!("invalid FlatBuffers data: {error}"))
    }
}

/// Appends one frame holding `payload` to `out`.
///
/// # Panics
/// If the payload is empty or larger than [`FRAME_PAYLOAD_BYTES_MAX`]: the
/// encoders in this crate never produce either.
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    assert!(
        (1..=FRAME_PAYLOAD_BYTES_MAX).contains(&length),
        "frame payload of {} bytes",
        payload.len()
    );
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is at one position of a byte stream of frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameRead<'a> {
    /// A whole frame whose checksum matches; the next one starts at `next`.
    Frame { payload: &'a [u8], next: usize },
    /// No bytes left.
    End,
    /// Bytes that are not a whole, valid frame: a torn write or garbage.
    Torn { reason: String },
}

fn read_u32_le(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let field: [u8; 4] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(field))
}

/// Reads the frame that starts at `offset`.
pub(crate) fn read_frame(bytes: &[u8], offset: usize) -> FrameRead<'_> {
    let remaining = bytes.len().saturating_sub(offset);
    if remaining == 0 {
        return FrameRead::End;
    }
    let (Some(length), Some(crc_stored)) = (read_u32_le(bytes, offset), read_u32_le(bytes, offset + 4)) else {
        return FrameRead::Torn {
            reason: format!("{remaining} bytes, less than a frame header"),
        };
    };
    if length == 0 || length > FRAME_PAYLOAD_BYTES_MAX {
        return FrameRead::Torn {
            reason: format!("frame length {length} out of range"),
        };
    }
    let start = offset + FRAME_HEADER_BYTES;
    let Some(payload) = usize::try_from(length)
        .ok()
        .and_then(|length| start.checked_add(length))
        .and_then(|end| bytes.get(start..end))
    else {
        return FrameRead::Torn {
            reason: format!(
                "frame of {length} bytes but only {} left",
                remaining - FRAME_HEADER_BYTES
            ),
        };
    };
    let crc_computed = crc32c::crc32c(payload);
    if crc_computed != crc_stored {
        return FrameRead::Torn {
            reason: format!("crc32c {crc_computed:#010x} does not match stored {crc_stored:#010x}"),
        };
    }
    FrameRead::Frame {
        payload,
        next: start + payload.len(),
    }
}

pub(crate) fn uuid_to_fb(id: &[u8; 16]) -> fb::Uuid {
    let value = u128::from_be_bytes(*id);
    fb::Uuid {
        high: (value >> 64) as u64,
        low: value as u64,
    }
}

pub(crate) fn uuid_from_fb(id: fb::Uuid) -> [u8; 16] {
    ((u128::from(id.high) << 64) | u128::from(id.low)).to_be_bytes()
}

pub(crate) fn log_id_to_fb(log_id: &LogId) -> fb::LogId {
    fb::LogId {
        term: log_id.leader_id.term,
        node_id: log_id.leader_id.node_id,
        index: log_id.index,
    }
}

pub(crate) fn log_id_from_fb(log_id: fb::LogId) -> LogId {
    LogId::new(
        openraft::CommittedLeaderId::new(log_id.term, log_id.node_id),
        log_id.index,
    )
}

pub(crate) fn vote_to_fb(vote: &Vote) -> fb::Vote {
    fb::Vote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub(crate) fn vote_from_fb(vote: fb::Vote) -> Vote {
    if vote.committed {
        Vote::new_committed(vote.term, vote.node_id)
    } else {
        Vote::new(vote.term, vote.node_id)
    }
}

pub(crate) fn membership_to_fb(membership: &Membership) -> fb::Membership {
    fb::Membership {
        configs: Some(
            membership
                .get_joint_config()
                .iter()
                .map(|voters| fb::VoterSet {
                    voters: Some(voters.iter().copied().collect()),
                })
                .collect(),
        ),
        nodes: Some(
            membership
                .nodes()
                .map(|(node_id, node)| fb::RaftNode {
                    node_id: *node_id,
                    addr: Some(node.addr.clone()),
                })
                .collect(),
        ),
    }
}

/// Most voter sets in a membership: one, or two during a joint change.
const VOTER_SETS_MAX: usize = 2;

pub(crate) fn membership_from_fb(membership: fb::Membership) -> Result<Membership, DecodeError> {
    let configs_fb = membership.configs.unwrap_or_default();
    if configs_fb.len() > VOTER_SETS_MAX {
        return Err(DecodeError::new(format!(
            "{} voter sets in a membership",
            configs_fb.len()
        )));
    }
    let mut configs = Vec::with_capacity(configs_fb.len());
    for voter_set in configs_fb {
        let voters: BTreeSet<u64> = voter_set.voters.unwrap_or_default().into_iter().collect();
        if voters.is_empty() {
            return Err(DecodeError::new("empty voter set in a membership"));
        }
        configs.push(voters);
    }
    let mut nodes = BTreeMap::new();
    for node in membership.nodes.unwrap_or_default() {
        if nodes
            .insert(node.node_id, Node::new(node.addr.unwrap_or_default()))
            .is_some()
        {
            return Err(DecodeError::new(format!("node {} twice in a membership", node.node_id)));
        }
    }
    for voter in configs.iter().flatten() {
        if !nodes.contains_key(voter) {
            return Err(DecodeError::new(format!(
                "voter {voter} is not among the membership's nodes"
            )));
        }
    }
    Ok(Membership::new(configs, nodes))
}

pub(crate) fn stored_membership_to_fb(stored: &StoredMembership) -> fb::StoredMembership {
    fb::StoredMembership {
        log_id: stored.log_id().as_ref().map(log_id_to_fb),
        membership: Some(Box::new(membership_to_fb(stored.membership()))),
    }
}

pub(crate) fn stored_membership_from_fb(stored: fb::StoredMembership) -> Result<StoredMembership, DecodeError> {
    let membership = stored
        .membership
        .ok_or_else(|| DecodeError::missing("StoredMembership.membership"))?;
    Ok(StoredMembership::new(
        stored.log_id.map(log_id_from_fb),
        membership_from_fb(*membership)?,
    ))
}

pub(crate) fn snapshot_meta_to_fb(meta: &SnapshotMeta) -> fb::SnapshotMeta {
    fb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_fb),
        last_membership: Some(Box::new(stored_membership_to_fb(&meta.last_membership))),
        snapshot_id: Some(meta.snapshot_id.clone()),
    }
}

pub(crate) fn snapshot_meta_from_fb(meta: fb::SnapshotMeta) -> Result<SnapshotMeta, DecodeError> {
    let last_membership = meta
        .last_membership
        .ok_or_else(|| DecodeError::missing("SnapshotMeta.last_membership"))?;
    Ok(SnapshotMeta {
        last_log_id: meta.last_log_id.map(log_id_from_fb),
        last_membership: stored_membership_from_fb(*last_membership)?,
        snapshot_id: meta
            .snapshot_id
            .ok_or_else(|| DecodeError::missing("SnapshotMeta.snapshot_id"))?,
    })
}

pub(crate) fn entry_to_fb(entry: &Entry) -> fb::LogEntry {
    let payload = match &entry.payload {
        openraft::EntryPayload::Blank => fb::EntryPayload::Blank(Box::new(fb::BlankPayload {})),
        openraft::EntryPayload::Normal(command) => fb::EntryPayload::Normal(Box::new(command_to_fb(command))),
        openraft::EntryPayload::Membership(membership) => {
            fb::EntryPayload::Membership(Box::new(membership_to_fb(membership)))
        }
    };
    fb::LogEntry {
        log_id: Some(log_id_to_fb(&entry.log_id)),
        payload: Some(payload),
    }
}

pub(crate) fn entry_from_fb(entry: fb::LogEntry) -> Result<Entry, DecodeError> {
    let log_id = log_id_from_fb(entry.log_id.ok_or_else(|| DecodeError::missing("LogEntry.log_id"))?);
    let payload = match entry.payload.ok_or_else(|| DecodeError::missing("LogEntry.payload"))? {
        fb::EntryPayload::Blank(_) => openraft::EntryPayload::Blank,
        fb::EntryPayload::Normal(envelope) => openraft::EntryPayload::Normal(command_from_fb(*envelope)?),
        fb::EntryPayload::Membership(membership) => {
            let membership = membership_from_fb(*membership)?;
            if membership.get_joint_config().is_empty() {
                return Err(DecodeError::new("membership entry without voters"));
            }
            openraft::EntryPayload::Membership(membership)
        }
    };
    Ok(Entry { log_id, payload })
}

/// Encodes one log entry as a standalone `LogEntry` buffer.
#[cfg(test)]
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut builder = planus::Builder::new();
    builder.finish(entry_to_fb(entry), None).to_vec()
}

/// Decodes a standalone `LogEntry` buffer.
#[cfg(test)]
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    use planus::ReadAsRoot;
    let entry = fb::LogEntry::try_from(fb::LogEntryRef::read_as_root(bytes)?)?;
    entry_from_fb(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut stream = Vec::new();
        encode_frame(b"hello", &mut stream);
        encode_frame(b"world!", &mut stream);
        let FrameRead::Frame { payload, next } = read_frame(&stream, 0) else {
            panic!("first frame")
        };
        assert_eq!(payload, b"hello");
        let FrameRead::Frame { payload, next } = read_frame(&stream, next) else {
            panic!("second frame")
        };
        assert_eq!(payload, b"world!");
        assert_eq!(read_frame(&stream, next), FrameRead::End);

        // Cut anywhere inside the second frame: torn.
        for cut in 14..stream.len() {
            assert!(
                matches!(read_frame(&stream[..cut], 13), FrameRead::Torn { .. }),
                "cut {cut}"
            );
        }
        // A flipped payload bit: torn.
        let mut damaged = stream.clone();
        damaged[10] ^= 1;
        assert!(matches!(read_frame(&damaged, 0), FrameRead::Torn { .. }));
        // Zeros (preallocated space) are not an empty frame.
        assert!(matches!(read_frame(&[0; 16], 0), FrameRead::Torn { .. }));
    }

    #[test]
    fn uuid_round_trips() {
        let id: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        assert_eq!(uuid_from_fb(uuid_to_fb(&id)), id);
    }

    #[test]
    fn entries_round_trip() {
        let log_id = LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
        let mut nodes = BTreeMap::new();
        nodes.insert(1, Node::new("a:1"));
        nodes.insert(2, Node::new("b:2"));
        let mut voters = BTreeSet::new();
        voters.insert(1);
        let entries = [
            Entry {
                log_id,
                payload: openraft::EntryPayload::Blank,
            },
            Entry {
                log_id,
                payload: openraft::EntryPayload::Normal(Command::DeleteTopic { name: "x".into() }),
            },
            Entry {
                log_id,
                payload: openraft::EntryPayload::Membership(Membership::new(vec![voters], nodes)),
            },
        ];
        for entry in entries {
            let decoded = decode_entry(&encode_entry(&entry)).unwrap();
            assert_eq!(decoded, entry);
        }
    }

    #[test]
    fn membership_with_unknown_voter_is_rejected() {
        let membership = fb::Membership {
            configs: Some(vec![fb::VoterSet { voters: Some(vec![5]) }]),
            nodes: Some(vec![]),
        };
        assert!(membership_from_fb(membership).is_err());
    }
}
