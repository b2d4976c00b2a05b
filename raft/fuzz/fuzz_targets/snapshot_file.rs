//! The metadata group's snapshot file (`snapshot`: magic, one CRC-32C frame
//! of a FlatBuffers SnapshotFile holding the meta and the image; drawn in
//! raft/src/snapshot.rs), opened as a restart opens it.
//!
//! Input: byte 0 is flags (bit 0: fix the frame's CRC first), the rest is
//! the file.
//!
//! Checks: opening fails with an error or gives a snapshot whose image
//! passed every invariant check; saved again (image re-encoded from its
//! decoded form), it opens to the same meta and image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_raft::fuzz_api::{open_snapshot, resave_snapshot};
use shardline_raft_fuzz::check_resave;

fuzz_target!(|data: &[u8]| check_resave(data, "snapshot", open_snapshot, resave_snapshot));
