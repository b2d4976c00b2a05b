//! # `shardline-log`: the partition log
//!
//! One partition is one directory of segments. This crate owns everything
//! inside that directory: the segment files (`<base_offset>.log`, Kafka
//! RecordBatch v2 bytes exactly as clients sent them, with the broker-assigned
//! base offset — and, from a leader, its leader epoch — written into each
//! header), their sparse offset/time indexes (`<base_offset>.index`), the
//! in-memory leader epoch cache, recovery after a crash, retention and
//! truncation.
//!
//! ## Where its state lives
//! A [`Log`] is `!Send`: it is created, written and read on the one shard (one
//! glommio executor, one core) that owns the partition. Other shards never touch
//! it; they send that shard a message. Inside a log, one writer task serialises
//! every mutation (appends, rolls, flushes, truncation, retention); readers run
//! synchronously on the same thread and get zero-copy slices of memory-mapped
//! segments whose bytes never change: they stay valid after retention
//! deletes the file or truncation replaces it.
//!
//! ## Guarantees
//! - An append is validated (magic, length, CRC-32C over attributes..end,
//!   and a header its records bear out: `batch.rs`) without decompressing;
//!   an invalid batch is rejected whole with a [`BatchError`] and nothing is
//!   stored. A segment rolls before its offsets leave its index's range.
//! - With [`Durability::Always`] an append resolves only after `fdatasync`, and
//!   concurrent appends share one sync. [`Log::durable_end`] is reported
//!   separately from [`Log::log_end`].
//! - After a crash, opening the log keeps every fsynced batch and cuts a torn
//!   tail of the active segment (zeroed durably, so torn data is never
//!   served). Damage followed by valid batches is not a torn tail: it is kept
//!   on disk as a [`BadRange`], never served, and the batches after it stay
//!   (`recovery.rs`).
//! - Names are durable before data in them is acknowledged as durable: the
//!   log directory is created durably, new segments' names are synced, and
//!   small metadata files (indexes) are replaced atomically by [`durable`],
//!   the one crash-safe file helper of the workspace.
//! - [`Log::delete_records_before`] (Kafka's DeleteRecords) moves the log
//!   start into the middle of a segment; the new start is stored durably
//!   (`start_offset.rs`) before segments wholly below it are deleted, so it
//!   survives a restart.
//! - Nothing read from disk is indexed unchecked or asserted on; broken
//!   internal invariants are `assert!`s, kept in release builds (the process
//!   aborts).
//!
//! ## Replication
//! Kafka-style leader/follower replication needs three things from the log:
//! - [`Log::append_with_epoch`]: a leader's append, which also writes its
//!   leader epoch into every batch (outside the CRC, like the base offset).
//! - [`Log::append_replicated`]: a follower's append of whole batches copied
//!   from the leader, stored byte for byte with their offsets and epochs. They
//!   must continue the log exactly ([`LogError::OffsetMismatch`] otherwise,
//!   nothing stored); a partial batch at the end of a Fetch response is left
//!   out. Durability and group commit are those of `append`.
//! - The leader epoch cache (`epoch.rs`): where each epoch starts, derived
//!   from the stored batch headers, rebuilt on open, and kept in step with
//!   appends, [`Log::truncate_to`] and retention. [`Log::end_offset_for_epoch`]
//!   answers OffsetsForLeaderEpoch, so a follower knows where to truncate
//!   before fetching.
//!
//! The byte layouts are drawn at the top of `batch.rs` (the record batch),
//! `record.rs` (a record) and `index.rs` (the index); `segment.rs` explains
//! the write path and the mapping rules that keep readers safe from SIGBUS,
//! and `sigbus.rs` the guard that turns a fault the rules cannot prevent (a
//! disk I/O error under a mapping) into a failed read of one segment;
//! `recovery.rs` how a torn tail is told from damage; `epoch.rs` the epoch
//! cache's rules. `docs/storage.md` has the whole picture.
//!
//! ## Counters
//! [`thread_stats`] reads the calling thread's counters of fdatasyncs (with
//! a latency histogram), bytes appended and bytes read (`stats.rs`): plain
//! per-thread cells, since a log lives on one shard's thread. The engine's
//! metrics endpoint reads them on each shard.

mod batch;
mod cleaner;
pub mod durable;
mod epoch;
mod error;
mod index;
mod log;
mod offset;
mod record;
mod recovery;
pub mod recovery_point;
mod segment;
mod sigbus;
mod start_offset;
mod stats;

pub use batch::{
    build_batch, build_batch_from_values, build_batch_with_headers, build_batch_with_timestamps, build_keyed_batch,
    build_keyed_batch_as, compute_crc, set_base_offset, set_leader_epoch, stamp_log_append_time, uncompressed_records,
    validate, validate_header_only, validate_stored, validate_stored_header, BatchHeader, BatchSpec, Codec,
    HeaderedRecord, KeyedRecord, BATCH_HEADER_BYTES,
};
pub use cleaner::{AbortedRange, CleanReport, CleanerConfig, TransactionOutcomes};
pub use epoch::EpochStart;
pub use error::{BatchError, LogError};
pub use log::{AppendInfo, Clock, Durability, Log, LogConfig, ReadBatches, SystemClock, TimestampOffset, WritePath};
pub use offset::{Offset, Position};
pub use record::{Headers, Record, Records};
pub use recovery::{find_next_batch, scan_segment, BadRange, SegmentBounds, SegmentScan, TornTail};
pub use recovery_point::RecoveryPoint;
pub use segment::parse_log_name;
pub use stats::{thread_stats, LogStats, SYNC_BUCKETS, SYNC_BUCKET_BOUNDS_US};
