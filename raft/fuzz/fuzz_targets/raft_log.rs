//! The metadata Raft log file (`raft.log`: magic, then CRC-32C frames of
//! FlatBuffers records; drawn in raft/src/log_store.rs), opened as a restart
//! opens it.
//!
//! Input: byte 0 is flags (bit 0: fix every frame's CRC first), the rest is
//! the file.
//!
//! Checks: opening either fails with an error or cuts a torn tail and
//! leaves exactly the kept bytes; opening again finds the same state and
//! cuts nothing; the state re-encoded by the purge encoder opens to the
//! same entries, purge point, commit point and vote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_raft::fuzz_api::{open_log, rewrite_log, LogState};
use shardline_raft_fuzz::{input, Scratch, MAGIC_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some(file) = input(data, MAGIC_BYTES, false) else {
        return;
    };
    let scratch = Scratch::new("raft-log");
    scratch.write("raft.log", &file);
    let Ok(opened) = open_log(scratch.path()) else {
        return;
    };
    assert_eq!(
        opened.file_bytes + opened.bytes_cut,
        file.len() as u64,
        "recovery must cut exactly the torn tail"
    );
    let reopened = open_log(scratch.path()).expect("a recovered log opens again");
    let settled = LogState { bytes_cut: 0, ..opened };
    assert_eq!(reopened, settled, "a second open must find what the first left");

    rewrite_log(scratch.path()).expect("rewrite what was read");
    let rewritten = open_log(scratch.path()).expect("a rewritten log opens");
    assert_eq!(
        LogState {
            file_bytes: settled.file_bytes,
            ..rewritten
        },
        settled,
        "the rewritten log must hold what was read"
    );
});
