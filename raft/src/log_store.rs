//! The on-disk Raft log (`<data_dir>/raft.log`) and, because openraft puts
//! the vote next to the log, the vote (`vote.rs`).
//!
//! ```text
//!  raft.log
//!  0            8                   8 + 8 + len0
//!  ┌────────────┬───────┬────────┬───────────────┬───────┬────────┬──────────
//!  │ "SLRLOG01" │ len0  │ crc0   │ LogRecord 0   │ len1  │ crc1   │ LogRecord 1 …
//!  │ magic, 8 B │ u32LE │ u32 LE │ FlatBuffers   │ u32LE │ u32 LE │
//!  └────────────┴───────┴────────┴───────────────┴───────┴────────┴──────────
//!  len    payload length, 1..=256 MiB          crc  CRC-32C of the payload
//!
//!  LogRecord.body (schema/log.fbs) is one of
//!   Entry      a Raft entry: log id (term, leader node, index) + payload
//!              (blank | command | membership); indexes strictly consecutive
//!   Purged     every entry ≤ log_id is gone (in a snapshot); first record
//!              of a file rewritten by a purge
//!   Committed  the latest committed log id openraft reported (a hint for
//!              restart; not fsynced on its own, it rides on the next fsync)
//! ```
//!
//! ## Write path
//! Append-only. `append` writes all given entries with one `write`, then
//! `fdatasync`, and only then calls openraft's `LogFlushed` callback. A
//! write that fails part-way (a full disk) is undone: the file is cut back
//! to its last whole frame and synced, so no partial frame is left for a
//! later append to land behind. A failed `fdatasync` (or a failed undo)
//! leaves the page cache's state unknown: the log then refuses every write
//! until the node restarts and recovery reads what is on disk.
//! `truncate` (a follower dropping a conflicting suffix) cuts the file at the
//! first removed entry's frame and fsyncs. `purge` (after a snapshot)
//! rewrites the file: magic, a `Purged` marker, the latest `Committed`
//! marker and the surviving entries go to `raft.log.tmp`, which is fsynced
//! and renamed over `raft.log`, then the directory is fsynced. The log stays
//! small: openraft purges after every snapshot (every N entries), keeping N.
//!
//! ## Open
//! The whole file is read (it is small, see above). Frames are walked from
//! the start. At the first one whose length is out of range, that runs past
//! the end of the file, or whose CRC does not match, the rest of the file is
//! searched for a valid frame (any position where a whole frame with a
//! matching CRC starts):
//! - none: a **torn tail** — a write the crash cut short. The file is cut
//!   there (and fsynced) and everything before it is kept;
//! - one: **corruption** — something was written and fsynced after the bad
//!   bytes, so cutting would drop fsynced entries. Open fails with
//!   `Corrupt` (naming the offset) and the file is left as it is.
//!
//! A frame with a matching CRC that does not decode, or an entry whose index
//! does not follow the previous one, is corruption and an error too. So is a
//! hole between the purge point and the entries kept (`first_index`): the
//! first entry kept must be the one right after the purge point, or entry 0
//! when nothing was purged — openraft reads that entry at start-up and
//! could not start, and the next purge would write a file that does not
//! open. The writer never makes one: `append` refuses an entry that does
//! not continue the log, and `rewrite` asserts it before writing.
//!
//! ## Memory
//! Live entries are also kept in memory (`BTreeMap` by index), so reads
//! never touch the disk. The same bound as the file applies.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    fs::{File, OpenOptions},
    io::Write,
    ops::RangeBounds,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use openraft::storage::LogFlushed;
use planus::ReadAsRoot;

use crate::{
    codec::{encode_frame, entry_from_fb, entry_to_fb, log_id_from_fb, log_id_to_fb, read_frame, FrameRead},
    error::MetaError,
    files::write_atomically,
    generated::shardline::meta as fb,
    types::{storage_error, Entry, LogId, StorageError, TypeConfig, Vote},
    vote::VoteFile,
};

/// Magic at the start of the log file; the last two characters are the
/// format version.
pub(crate) const LOG_MAGIC: [u8; 8] = *b"SLRLOG01";

/// File name of the log inside the metadata directory.
pub(crate) const LOG_FILE_NAME: &str = "raft.log";

/// What opening the log found, for logging and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogRecovery {
    /// Live entries read.
    pub(crate) entries: usize,
    /// Bytes cut from the end (a torn tail), 0 if none.
    pub(crate) bytes_cut: u64,
}

/// The log state behind the lock.
#[derive(Debug)]
struct LogInner {
    path: PathBuf,
    /// Opened for appending.
    file: File,
    /// Bytes in the file.
    length_bytes: u64,
    /// Live entries by index.
    entries: BTreeMap<u64, Entry>,
    /// File offset of each live entry's frame, by index.
    offsets: BTreeMap<u64, u64>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
    vote_file: VoteFile,
    vote: Option<Vote>,
    /// Why the log refuses writes: a failed fdatasync or a failed undo.
    failed: Option<String>,
    /// Test seam: the next write fails this way.
    #[cfg(test)]
    fault: Option<Fault>,
}

/// A failure a test injects into the next write of the log file.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The write stores only this many bytes, then fails (a full disk).
    ShortWrite(usize),
    /// The write succeeds and the fdatasync after it fails.
    Sync,
}

/// The log store openraft writes through; clones share one log (the log
/// reader openraft asks for is a clone).
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

fn record_bytes(body: fb::LogRecordBody) -> Vec<u8> {
    let mut builder = planus::Builder::new();
    let mut frame = Vec::new();
    encode_frame(builder.finish(fb::LogRecord { body: Some(body) }, None), &mut frame);
    frame
}

fn entry_record(entry: &Entry) -> Vec<u8> {
    record_bytes(fb::LogRecordBody::Entry(Box::new(entry_to_fb(entry))))
}

fn purged_record(log_id: &LogId) -> Vec<u8> {
    record_bytes(fb::LogRecordBody::Purged(Box::new(fb::PurgedMarker {
        log_id: Some(log_id_to_fb(log_id)),
    })))
}

fn committed_record(log_id: &LogId) -> Vec<u8> {
    record_bytes(fb::LogRecordBody::Committed(Box::new(fb::CommittedMarker {
        log_id: Some(log_id_to_fb(log_id)),
    })))
}

fn io_error(context: &str, path: &Path, error: std::io::Error) -> MetaError {
    MetaError::io(format!("{context} {}", path.display()), error)
}

fn log_storage_error(verb: openraft::ErrorVerb, error: &MetaError) -> StorageError {
    storage_error(openraft::ErrorSubject::Logs, verb, error)
}

/// The index the entry after `last_entry` (the index of the last entry kept,
/// if any) must have in a log purged up to `last_purged`: the next one, or
/// the first after the purge point, or 0 — openraft starts a log nothing was
/// purged from by reading entry 0.
fn first_index(last_entry: Option<u64>, last_purged: Option<LogId>) -> u64 {
    match (last_entry, last_purged) {
        (Some(index), _) => index + 1,
        (None, Some(purged)) => purged.index + 1,
        (None, None) => 0,
    }
}

impl LogInner {
    /// The index the next appended entry must have.
    fn next_index(&self) -> u64 {
        first_index(self.entries.last_key_value().map(|(index, _)| *index), self.last_purged)
    }

    fn last_log_id(&self) -> Option<LogId> {
        match self.entries.last_key_value() {
            Some((_, entry)) => Some(entry.log_id),
            None => self.last_purged,
        }
    }

    fn sync(&mut self) -> Result<(), MetaError> {
        #[cfg(test)]
        if self.fault.take_if(|fault| *fault == Fault::Sync).is_some() {
            return Err(io_error("fdatasync", &self.path, std::io::Error::other("injected")));
        }
        self.file
            .sync_data()
            .map_err(|error| io_error("fdatasync", &self.path, error))
    }

    /// Refuses writes once a failure left the file's state unknown.
    fn check_writable(&self) -> Result<(), MetaError> {
        match &self.failed {
            Some(reason) => Err(MetaError::Raft(format!(
                "the metadata raft log refuses writes after a failure ({reason}); restart the node"
            ))),
            None => Ok(()),
        }
    }

    /// Marks the log failed because of `error`.
    fn fail(&mut self, error: &MetaError) {
        tracing::error!(path = %self.path.display(), %error, "metadata raft log write failed; refusing writes until restart");
        self.failed.get_or_insert_with(|| error.to_string());
    }

    /// After a failed write: cuts the file back to its last whole frame
    /// (`length_bytes`) and syncs that, so no partial frame stays for a later
    /// append to land behind. If that fails too, the log fails.
    fn undo_write(&mut self) {
        let undone = self
            .file
            .set_len(self.length_bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|error| io_error("cut back a failed write of", &self.path, error));
        if let Err(error) = undone {
            self.fail(&error);
        }
    }

    /// Appends `bytes` at the end of the file (not synced); a failure is
    /// undone before it is returned.
    fn write_end(&mut self, bytes: &[u8]) -> Result<(), MetaError> {
        let written = self.write_end_once(bytes);
        if written.is_err() {
            self.undo_write();
        }
        written
    }

    fn write_end_once(&mut self, bytes: &[u8]) -> Result<(), MetaError> {
        #[cfg(test)]
        if let Some(Fault::ShortWrite(stored)) = self.fault.take_if(|fault| matches!(fault, Fault::ShortWrite(_))) {
            let part = bytes.get(..stored).unwrap_or(bytes);
            self.file
                .write_all(part)
                .map_err(|error| io_error("append to", &self.path, error))?;
            return Err(io_error("append to", &self.path, std::io::Error::other("injected")));
        }
        self.file
            .write_all(bytes)
            .map_err(|error| io_error("append to", &self.path, error))
    }

    fn append(&mut self, entries: Vec<Entry>) -> Result<(), MetaError> {
        self.check_writable()?;
        let mut buffer = Vec::new();
        let mut new_offsets = Vec::with_capacity(entries.len());
        let mut expected = self.next_index();
        for entry in &entries {
            let index = entry.log_id.index;
            if expected != index {
                return Err(MetaError::Raft(format!(
                    "append of entry {index} would leave a hole (next is {expected})"
                )));
            }
            new_offsets.push((index, self.length_bytes + buffer.len() as u64));
            buffer.extend_from_slice(&entry_record(entry));
            expected = index + 1;
        }
        self.write_end(&buffer)?;
        if let Err(error) = self.sync() {
            self.fail(&error);
            self.undo_write();
            return Err(error);
        }
        self.length_bytes += buffer.len() as u64;
        for entry in entries {
            self.entries.insert(entry.log_id.index, entry);
        }
        self.offsets.extend(new_offsets);
        assert_eq!(self.entries.len(), self.offsets.len());
        Ok(())
    }

    fn truncate(&mut self, since: LogId) -> Result<(), MetaError> {
        self.check_writable()?;
        let Some(&offset) = self.offsets.get(&since.index) else {
            // Nothing at or after `since` (openraft may truncate past the end).
            assert!(self.entries.range(since.index..).next().is_none());
            return Ok(());
        };
        if self.committed.is_some_and(|committed| committed.index >= since.index) {
            return Err(MetaError::Raft(format!(
                "truncate since {since} would remove committed entries (committed {:?})",
                self.committed
            )));
        }
        let cut = self
            .file
            .set_len(offset)
            .map_err(|error| io_error("truncate", &self.path, error))
            .and_then(|()| self.sync());
        if let Err(error) = cut {
            self.fail(&error);
            return Err(error);
        }
        self.length_bytes = offset;
        self.entries.split_off(&since.index);
        self.offsets.split_off(&since.index);
        assert!(self.offsets.values().all(|&entry_offset| entry_offset < offset));
        Ok(())
    }

    fn purge(&mut self, upto: LogId) -> Result<(), MetaError> {
        self.check_writable()?;
        if self.last_purged.is_some_and(|purged| purged >= upto) {
            return Ok(());
        }
        let kept_entries = self.entries.split_off(&(upto.index + 1));
        self.entries = kept_entries;
        self.last_purged = Some(upto);
        self.rewrite()
    }

    /// Rewrites the file from memory: magic, `Purged`, `Committed`, entries.
    fn rewrite(&mut self) -> Result<(), MetaError> {
        // Open refuses a file whose entries do not continue from its purge
        // point; memory came from such a check and from checked appends.
        let first = self.entries.first_key_value().map(|(index, _)| *index);
        assert!(
            first.is_none_or(|first| first == first_index(None, self.last_purged)),
            "kept entries continue from the purge point"
        );
        assert!(
            self.entries
                .keys()
                .zip(self.entries.keys().skip(1))
                .all(|(a, b)| a + 1 == *b),
            "kept entries have no hole"
        );
        let mut contents = Vec::from(LOG_MAGIC);
        if let Some(purged) = &self.last_purged {
            contents.extend_from_slice(&purged_record(purged));
        }
        if let Some(committed) = &self.committed {
            contents.extend_from_slice(&committed_record(committed));
        }
        let mut offsets = BTreeMap::new();
        for (index, entry) in &self.entries {
            offsets.insert(*index, contents.len() as u64);
            contents.extend_from_slice(&entry_record(entry));
        }
        // The entries in memory are already purged: a failure here leaves
        // them ahead of the file, so the log fails.
        let rewritten = write_atomically(&self.path, &contents).and_then(|()| open_for_append(&self.path));
        self.file = match rewritten {
            Ok(file) => file,
            Err(error) => {
                self.fail(&error);
                return Err(error);
            }
        };
        self.length_bytes = contents.len() as u64;
        self.offsets = offsets;
        Ok(())
    }

    fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), MetaError> {
        let Some(committed) = committed else {
            return Ok(());
        };
        if self.committed.is_some_and(|current| current >= committed) {
            return Ok(());
        }
        self.check_writable()?;
        // No fsync: losing the hint only means re-applying less on restart.
        let record = committed_record(&committed);
        self.write_end(&record)?;
        self.length_bytes += record.len() as u64;
        self.committed = Some(committed);
        Ok(())
    }
}

fn open_for_append(path: &Path) -> Result<File, MetaError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|error| io_error("open", path, error))
}

/// One record of the log file, as [`inspect_log`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecordInfo {
    /// Byte offset of the record's frame in `raft.log`.
    pub offset: u64,
    /// Bytes of the frame (header included).
    pub length_bytes: u64,
    /// What the record is.
    pub kind: LogRecordKind,
    /// The log id's term (for markers: of the id they name).
    pub term: u64,
    /// The log index (for markers: of the id they name).
    pub index: u64,
}

/// Kinds of log file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRecordKind {
    /// A blank entry (a new leader's first).
    Blank,
    /// A state machine command.
    Command,
    /// A membership change.
    Membership,
    /// Everything up to `index` was purged.
    Purged,
    /// Entries up to `index` were committed.
    Committed,
}

/// What [`inspect_log`] found in a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInspection {
    /// Every valid record, in file order.
    pub records: Vec<LogRecordInfo>,
    /// Bytes up to the end of the last valid record.
    pub valid_bytes: u64,
    /// Bytes in the file.
    pub file_bytes: u64,
    /// Why the bytes after `valid_bytes` are not a record (a torn tail),
    /// `None` if the file ends cleanly.
    pub torn: Option<String>,
}

/// The result of walking a log file.
pub(crate) struct Scan {
    entries: BTreeMap<u64, Entry>,
    offsets: BTreeMap<u64, u64>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
    inspection: LogInspection,
}

/// Walks the frames of a log file. Stops at the first torn frame; errors on
/// corruption (see the module doc).
pub(crate) fn scan(path: &Path, contents: &[u8]) -> Result<Scan, MetaError> {
    if contents.get(..LOG_MAGIC.len()) != Some(&LOG_MAGIC[..]) {
        return Err(MetaError::corrupt(path, 0, "not a Shardline raft log (bad magic)"));
    }
    let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut offsets = BTreeMap::new();
    let mut last_purged: Option<LogId> = None;
    let mut committed: Option<LogId> = None;
    let mut records = Vec::new();
    let mut offset = LOG_MAGIC.len();
    let mut torn = None;
    loop {
        let (payload, frame_offset) = match read_frame(contents, offset) {
            FrameRead::End => break,
            FrameRead::Torn { reason } => {
                if let Some(valid) = valid_frame_after(contents, offset) {
                    return Err(MetaError::corrupt(
                        path,
                        offset as u64,
                        format!(
                            "{reason}, but a valid frame starts at byte {valid}: damage before fsynced \
                             entries, not a torn tail"
                        ),
                    ));
                }
                torn = Some(reason);
                break;
            }
            FrameRead::Frame { payload, next } => {
                let frame_offset = offset;
                offset = next;
                (payload, frame_offset as u64)
            }
        };
        let corrupt = |reason: String| MetaError::corrupt(path, frame_offset, reason);
        let record = fb::LogRecordRef::read_as_root(payload)
            .and_then(fb::LogRecord::try_from)
            .map_err(|error| corrupt(error.to_string()))?;
        let (kind, log_id) = match record.body.ok_or_else(|| corrupt("record without a body".into()))? {
            fb::LogRecordBody::Entry(entry) => {
                let entry = entry_from_fb(*entry).map_err(|error| corrupt(error.to_string()))?;
                let index = entry.log_id.index;
                let last = entries.last_key_value().map(|(last, _)| *last);
                let expected = first_index(last, last_purged);
                if expected != index {
                    let context = match (last, last_purged) {
                        (Some(last), _) => format!("entry {last} is before it"),
                        (None, Some(purged)) => format!("the log is purged up to {purged}"),
                        (None, None) => "nothing was purged, so the log starts at entry 0".to_string(),
                    };
                    return Err(corrupt(format!(
                        "entry {index} where {expected} was expected ({context}): a hole in the log"
                    )));
                }
                let previous = entries.last_key_value().map(|(_, previous)| previous.log_id);
                if let Some(previous) = previous.or(last_purged) {
                    if previous.leader_id > entry.log_id.leader_id {
                        return Err(corrupt(format!(
                            "entry {} has an older leader than {previous} before it",
                            entry.log_id
                        )));
                    }
                }
                let kind = match &entry.payload {
                    openraft::EntryPayload::Blank => LogRecordKind::Blank,
                    openraft::EntryPayload::Normal(_) => LogRecordKind::Command,
                    openraft::EntryPayload::Membership(_) => LogRecordKind::Membership,
                };
                let log_id = entry.log_id;
                offsets.insert(index, frame_offset);
                entries.insert(index, entry);
                (kind, log_id)
            }
            fb::LogRecordBody::Purged(marker) => {
                let log_id = log_id_from_fb(
                    marker
                        .log_id
                        .ok_or_else(|| corrupt("purge marker without log id".into()))?,
                );
                entries.retain(|index, _| *index > log_id.index);
                offsets.retain(|index, _| *index > log_id.index);
                if last_purged.is_none_or(|purged| purged < log_id) {
                    last_purged = Some(log_id);
                }
                // Log ids order by leader first: a marker can move the purge
                // point to a lower index than the entries it kept.
                if let (Some((first, kept)), Some(purged)) = (entries.first_key_value(), last_purged) {
                    if *first != first_index(None, Some(purged)) || kept.log_id.leader_id < purged.leader_id {
                        return Err(corrupt(format!(
                            "purge marker {log_id} leaves entry {} after the purge point {purged}: the entries \
                             kept must continue from it without a hole",
                            kept.log_id
                        )));
                    }
                }
                (LogRecordKind::Purged, log_id)
            }
            fb::LogRecordBody::Committed(marker) => {
                let log_id = log_id_from_fb(
                    marker
                        .log_id
                        .ok_or_else(|| corrupt("commit marker without log id".into()))?,
                );
                if committed.is_none_or(|current| current < log_id) {
                    committed = Some(log_id);
                }
                (LogRecordKind::Committed, log_id)
            }
        };
        records.push(LogRecordInfo {
            offset: frame_offset,
            length_bytes: offset as u64 - frame_offset,
            kind,
            term: log_id.leader_id.term,
            index: log_id.index,
        });
    }
    // A commit hint beyond what survived is dropped (it cannot happen when
    // entries are fsynced before they commit, but a hint is only a hint).
    let last_log_id = entries.last_key_value().map(|(_, entry)| entry.log_id).or(last_purged);
    let committed = committed.filter(|committed| Some(*committed) <= last_log_id);
    assert!(
        entries
            .first_key_value()
            .is_none_or(|(first, _)| *first == first_index(None, last_purged)),
        "every entry kept was checked to continue the log from the purge point"
    );
    Ok(Scan {
        entries,
        offsets,
        last_purged,
        committed,
        inspection: LogInspection {
            records,
            valid_bytes: offset as u64,
            file_bytes: contents.len() as u64,
            torn,
        },
    })
}

/// The first position after `damaged` where a whole frame with a matching
/// CRC starts, if any (see the module doc: then the damage is not a torn tail).
fn valid_frame_after(contents: &[u8], damaged: usize) -> Option<usize> {
    ((damaged + 1)..contents.len()).find(|at| matches!(read_frame(contents, *at), FrameRead::Frame { .. }))
}

/// Reads the Raft log of a metadata directory without changing it (for
/// offline inspection: `shardctl`, tests). Errors like opening would on
/// corruption; a torn tail is reported in [`LogInspection::torn`].
pub fn inspect_log(data_dir: &Path) -> Result<LogInspection, MetaError> {
    let path = data_dir.join(LOG_FILE_NAME);
    let contents = std::fs::read(&path).map_err(|error| io_error("read", &path, error))?;
    Ok(scan(&path, &contents)?.inspection)
}

impl LogStore {
    /// Opens (or creates) the log of `dir`, cutting a torn tail.
    pub(crate) fn open(dir: &Path) -> Result<(LogStore, LogRecovery), MetaError> {
        let path = dir.join(LOG_FILE_NAME);
        if !path.exists() {
            write_atomically(&path, &LOG_MAGIC)?;
        }
        let contents = std::fs::read(&path).map_err(|error| io_error("read", &path, error))?;
        let scan = scan(&path, &contents)?;
        let file = open_for_append(&path)?;
        let kept_length = scan.inspection.valid_bytes;
        let mut recovery = LogRecovery {
            entries: scan.entries.len(),
            bytes_cut: 0,
        };
        if let Some(reason) = &scan.inspection.torn {
            recovery.bytes_cut = scan.inspection.file_bytes - kept_length;
            tracing::warn!(
                path = %path.display(),
                offset = kept_length,
                bytes_cut = recovery.bytes_cut,
                %reason,
                "metadata raft log has a torn tail; cutting it"
            );
            file.set_len(kept_length)
                .map_err(|error| io_error("truncate", &path, error))?;
            file.sync_data().map_err(|error| io_error("fdatasync", &path, error))?;
        }

        let vote_file = VoteFile::new(dir);
        let vote = vote_file.load()?;
        let inner = LogInner {
            path,
            file,
            length_bytes: kept_length,
            entries: scan.entries,
            offsets: scan.offsets,
            last_purged: scan.last_purged,
            committed: scan.committed,
            vote_file,
            vote,
            failed: None,
            #[cfg(test)]
            fault: None,
        };
        Ok((
            LogStore {
                inner: Arc::new(Mutex::new(inner)),
            },
            recovery,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A poisoned lock needs a panic on this thread, and panics abort.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl openraft::RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.lock();
        Ok(inner.entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl openraft::storage::RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<openraft::LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        Ok(openraft::LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner
            .vote_file
            .save(vote)
            .map_err(|error| storage_error(openraft::ErrorSubject::Vote, openraft::ErrorVerb::Write, &error))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.lock()
            .save_committed(committed)
            .map_err(|error| log_storage_error(openraft::ErrorVerb::Write, &error))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let inner = self.lock();
        // Never report a commit beyond the log (or the purge point).
        Ok(inner
            .committed
            .filter(|committed| Some(*committed) <= inner.last_log_id()))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let result = self.lock().append(entries.into_iter().collect());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let storage = log_storage_error(openraft::ErrorVerb::Write, &error);
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(storage)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock()
            .truncate(log_id)
            .map_err(|error| log_storage_error(openraft::ErrorVerb::Delete, &error))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock()
            .purge(log_id)
            .map_err(|error| log_storage_error(openraft::ErrorVerb::Delete, &error))
    }
}

#[cfg(feature = "fuzzing")]
impl LogStore {
    /// Rewrites the file from what is in memory (the encoder `purge` uses),
    /// for the round trip of the `raft_log` fuzz target.
    pub(crate) fn rewrite_for_fuzzing(&self) -> Result<(), MetaError> {
        self.lock().rewrite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use openraft::{storage::RaftLogStorage, RaftLogReader};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: openraft::EntryPayload::Normal(Command::DeleteTopic {
                name: format!("topic-{index}"),
            }),
        }
    }

    fn append_direct(store: &LogStore, entries: Vec<Entry>) {
        store.lock().append(entries).unwrap();
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.lock().entries.keys().copied().collect()
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovery, LogRecovery::default());
        append_direct(&store, (0..5).map(|index| entry(1, index)).collect());
        append_direct(&store, vec![entry(2, 5)]);
        drop(store);
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(recovery.entries, 6);
        assert_eq!(indexes(&store), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(store.lock().entries.get(&5), Some(&entry(2, 5)));
    }

    #[test]
    fn holes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, vec![entry(1, 0)]);
        assert!(store.lock().append(vec![entry(1, 2)]).is_err());
    }

    #[test]
    fn torn_tail_is_cut_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, (0..3).map(|index| entry(1, index)).collect());
        let two_entries_end = store.lock().offsets.get(&2).copied().unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        for cut in two_entries_end as usize..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (store, recovery) = LogStore::open(dir.path()).unwrap();
            assert_eq!(indexes(&store), vec![0, 1], "cut at {cut}");
            assert_eq!(recovery.bytes_cut, cut as u64 - two_entries_end);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), two_entries_end);
            // And the cut log takes appends again.
            append_direct(&store, vec![entry(1, 2)]);
        }
    }

    #[test]
    fn garbage_after_the_log_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, (0..3).map(|index| entry(1, index)).collect());
        drop(store);
        let path = dir.path().join(LOG_FILE_NAME);
        let mut contents = std::fs::read(&path).unwrap();
        let good_length = contents.len() as u64;
        contents.extend_from_slice(&[0xAB; 100]);
        std::fs::write(&path, &contents).unwrap();
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![0, 1, 2]);
        assert_eq!(recovery.bytes_cut, 100);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_length);
    }

    #[test]
    fn a_failed_append_leaves_no_partial_frame_to_hide_later_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, (0..3).map(|index| entry(1, index)).collect());
        let path = dir.path().join(LOG_FILE_NAME);
        let good_length = std::fs::metadata(&path).unwrap().len();
        // The disk fills part-way through the next frame.
        store.lock().fault = Some(Fault::ShortWrite(10));
        assert!(store.lock().append(vec![entry(1, 3)]).is_err());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            good_length,
            "nothing partial is left"
        );
        // Space is back: the same entry and one more are appended and fsynced.
        append_direct(&store, vec![entry(1, 3)]);
        append_direct(&store, vec![entry(1, 4)]);
        drop(store);
        let (store, recovery) = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            indexes(&store),
            vec![0, 1, 2, 3, 4],
            "fsynced entries survive the reopen"
        );
        assert_eq!(recovery.bytes_cut, 0);
    }

    #[test]
    fn a_failed_fsync_refuses_writes_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, (0..3).map(|index| entry(1, index)).collect());
        store.lock().fault = Some(Fault::Sync);
        assert!(store.lock().append(vec![entry(1, 3)]).is_err());
        assert!(
            store.lock().append(vec![entry(1, 3)]).is_err(),
            "what the page cache holds is unknown after a failed fsync"
        );
        drop(store);
        let (store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![0, 1, 2]);
        append_direct(&store, vec![entry(1, 3)]);
    }

    #[test]
    fn a_damaged_frame_followed_by_valid_frames_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, (0..5).map(|index| entry(1, index)).collect());
        let damaged_at = store.lock().offsets.get(&2).copied().unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE_NAME);
        let mut contents = std::fs::read(&path).unwrap();
        contents[damaged_at as usize + 12] ^= 0x40; // a payload byte of entry 2
        std::fs::write(&path, &contents).unwrap();
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, MetaError::Corrupt { offset, .. } if *offset == damaged_at),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), contents, "fsynced entries are not cut");
    }

    /// A file of `records` (each a whole frame) after the magic.
    fn write_log(dir: &Path, records: &[Vec<u8>]) -> Vec<u8> {
        let mut contents = Vec::from(LOG_MAGIC);
        for record in records {
            contents.extend_from_slice(record);
        }
        std::fs::write(dir.join(LOG_FILE_NAME), &contents).unwrap();
        contents
    }

    #[test]
    fn kept_entries_that_do_not_continue_from_the_purge_point_are_corruption() {
        let dir = tempfile::tempdir().unwrap();
        // Entries 2..=6, then "purged up to 0": the marker keeps them all,
        // and nothing stands for entry 1. The fuzzer's reproducer
        // (raft/fuzz/corpus/raft_log/repro-purge-marker-leaves-a-hole) has
        // this shape; once opened, the next purge wrote a file that did not
        // open again.
        let mut records: Vec<Vec<u8>> = (2..=6).map(|index| entry_record(&entry(1, index))).collect();
        records.push(purged_record(&entry(1, 0).log_id));
        let contents = write_log(dir.path(), &records);
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, MetaError::Corrupt { offset, .. } if *offset == LOG_MAGIC.len() as u64),
            "the error names the first entry's frame: {error}"
        );
        assert!(error.to_string().contains("entry 2 where 0 was expected"), "{error}");
        assert_eq!(
            std::fs::read(dir.path().join(LOG_FILE_NAME)).unwrap(),
            contents,
            "left as it is"
        );

        // Entries after a purge marker continue from it, or the file is refused.
        let purged = purged_record(&entry(1, 3).log_id);
        write_log(dir.path(), &[purged.clone(), entry_record(&entry(1, 5))]);
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, MetaError::Corrupt { offset, .. } if *offset == (LOG_MAGIC.len() + purged.len()) as u64),
            "{error}"
        );
        // A later marker with a newer leader but a lower index than the
        // purge point moves the purge point back below the entries kept.
        let mut records = vec![purged_record(&entry(1, 5).log_id)];
        records.extend((6..=8).map(|index| entry_record(&entry(1, index))));
        let before_second: usize = LOG_MAGIC.len() + records.iter().map(Vec::len).sum::<usize>();
        records.push(purged_record(&entry(2, 3).log_id));
        write_log(dir.path(), &records);
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&error, MetaError::Corrupt { offset, .. } if *offset == before_second as u64),
            "{error}"
        );
        // A marker after entries may drop a prefix of them: what is left
        // still continues from it.
        let mut records: Vec<Vec<u8>> = (0..=6).map(|index| entry_record(&entry(1, index))).collect();
        records.push(purged_record(&entry(1, 3).log_id));
        write_log(dir.path(), &records);
        let (store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![4, 5, 6]);
    }

    #[test]
    fn a_log_nothing_was_purged_from_starts_at_entry_0() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        // openraft reads entry 0 at start-up when nothing was purged: a log
        // starting later could not be started from.
        assert!(store.lock().append(vec![entry(1, 2)]).is_err());
        append_direct(&store, vec![entry(1, 0), entry(1, 1)]);
        drop(store);
        let (store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![0, 1]);
    }

    #[test]
    fn bad_magic_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE_NAME), b"NOTALOG!").unwrap();
        assert!(matches!(LogStore::open(dir.path()), Err(MetaError::Corrupt { .. })));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn truncate_purge_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        append_direct(&store, (0..10).map(|index| entry(1, index)).collect());
        store.save_committed(Some(entry(1, 6).log_id)).await.unwrap();
        store.truncate(entry(1, 8).log_id).await.unwrap();
        assert_eq!(indexes(&store), (0..8).collect::<Vec<_>>());
        store.purge(entry(1, 4).log_id).await.unwrap();
        assert_eq!(indexes(&store), vec![5, 6, 7]);
        append_direct(&store, vec![entry(2, 8)]);
        // Truncating committed entries is refused.
        assert!(store.truncate(entry(1, 6).log_id).await.is_err());
        drop(store);

        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&store), vec![5, 6, 7, 8]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(1, 4).log_id));
        assert_eq!(state.last_log_id, Some(entry(2, 8).log_id));
        assert_eq!(store.read_committed().await.unwrap(), Some(entry(1, 6).log_id));
        let read = store.try_get_log_entries(6..8).await.unwrap();
        assert_eq!(read, vec![entry(1, 6), entry(1, 7)]);

        // Purging past the end leaves no entries but remembers the point.
        store.purge(entry(2, 20).log_id).await.unwrap();
        drop(store);
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(2, 20).log_id));
        assert_eq!(state.last_log_id, Some(entry(2, 20).log_id));
        append_direct(&store, vec![entry(3, 21)]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn vote_is_saved_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), None);
        store.save_vote(&Vote::new(5, 1)).await.unwrap();
        drop(store);
        let (mut store, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(5, 1)));
    }
}
