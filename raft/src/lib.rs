//! `raft`: the metadata Raft group (topics, partitions, placement).
//!
//! Not built yet: this crate arrives with the engine (issue 3).
