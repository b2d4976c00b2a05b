//! The metadata group's vote file (`vote`: magic, one CRC-32C frame of a
//! FlatBuffers VoteRecord; drawn in raft/src/vote.rs).
//!
//! Input: byte 0 is flags (bit 0: fix the frame's CRC first), the rest is
//! the file.
//!
//! Checks: loading fails with an error or gives a vote; a loaded vote saved
//! by the vote encoder loads back as the same vote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_raft::fuzz_api::{load_vote, resave_vote};
use shardline_raft_fuzz::check_resave;

fuzz_target!(|data: &[u8]| check_resave(data, "vote", load_vote, resave_vote));
