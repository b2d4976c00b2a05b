//! One partition served by this shard: its log, idempotent-producer state and
//! the long-poll fetches waiting for its next append. Lives on its owner shard.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use futures_channel::oneshot;
use shardline_log::{validate_header_only, Log, LogConfig, LogError, Offset, ReadBatches};

use crate::{
    error::EngineError,
    producer::{ProducerStates, SequenceCheck},
};

/// Long-poll fetches waiting on one partition; past this the oldest are woken
/// early (they re-read and wait again), so a flood of idle consumers cannot
/// grow the list without bound.
pub(crate) const WAITERS_MAX: usize = 1024;

/// Name of the file in a partition directory holding its topic id, so a
/// deleted-and-recreated topic never picks up the old topic's data.
const TOPIC_ID_FILE: &str = "topic-id";

/// Settings taken from topic configs when the partition is opened.
#[derive(Debug, Clone)]
pub(crate) struct PartitionSettings {
    /// `max.message.bytes`: largest batch accepted.
    pub(crate) max_message_bytes: usize,
    /// Leader epoch reported to clients.
    pub(crate) leader_epoch: i32,
}

/// Result of a produce to one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pub(crate) base_offset: Offset,
    pub(crate) log_start: Offset,
}

/// A partition open on this shard.
pub(crate) struct Partition {
    pub(crate) topic_id: [u8; 16],
    pub(crate) log: Log,
    pub(crate) settings: PartitionSettings,
    pub(crate) dir: PathBuf,
    producers: RefCell<ProducerStates>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

/// Directory of a partition under the data directory.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join("partitions").join(format!("{topic}-{index}"))
}

impl Partition {
    /// Opens (recovering) the partition's log and rebuilds producer state.
    pub(crate) async fn open(
        dir: PathBuf,
        topic_id: [u8; 16],
        config: LogConfig,
        settings: PartitionSettings,
    ) -> Result<Partition, EngineError> {
        let id_file = dir.join(TOPIC_ID_FILE);
        let hex: String = topic_id.iter().map(|b| format!("{b:02x}")).collect();
        match std::fs::read_to_string(&id_file) {
            Ok(stored) if stored.trim() == hex => {}
            Ok(_) => {
                tracing::warn!(dir = %dir.display(), "partition directory belongs to an older topic of the same name; removing it");
                remove_dir(&dir)?;
            }
            Err(_) => {}
        }
        std::fs::create_dir_all(&dir).map_err(|source| io_err("creating partition directory", &dir, source))?;
        if !id_file.exists() {
            std::fs::write(&id_file, &hex).map_err(|source| io_err("writing topic id", &id_file, source))?;
        }
        let log = Log::open(&dir, config).await?;
        let mut producers = ProducerStates::default();
        log.for_each_batch_header(|header| producers.replay(header))?;
        Ok(Partition {
            topic_id,
            log,
            settings,
            dir,
            producers: RefCell::new(producers),
            waiters: RefCell::new(Vec::new()),
        })
    }

    /// Appends one produce request's records for this partition: exactly one
    /// batch, checked against `max.message.bytes` and the producer's sequence.
    pub(crate) async fn produce(&self, records: Bytes) -> Result<Produced, EngineError> {
        let header = validate_header_only(&records).map_err(|e| EngineError::Log(LogError::InvalidBatch(e)))?;
        if header.total_bytes() != records.len() {
            return Err(EngineError::InvalidRecord(
                "a produce request must carry exactly one record batch per partition".into(),
            ));
        }
        if records.len() > self.settings.max_message_bytes {
            return Err(EngineError::MessageTooLarge {
                batch_bytes: records.len(),
                max_message_bytes: self.settings.max_message_bytes,
            });
        }
        let check = self.producers.borrow_mut().check(&header);
        match check {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate { base_offset, .. } => {
                return Ok(Produced {
                    base_offset,
                    log_start: self.log.log_start(),
                });
            }
            SequenceCheck::DuplicateInFlight => return Err(EngineError::DuplicateSequence),
            SequenceCheck::OutOfOrder { expected, got } => {
                return Err(EngineError::OutOfOrderSequence { expected, got })
            }
            SequenceCheck::Fenced { .. } => return Err(EngineError::ProducerFenced),
        }
        match self.log.append(records).await {
            Ok(info) => {
                self.producers
                    .borrow_mut()
                    .complete(&header, info.base_offset, info.last_offset);
                self.wake_waiters();
                Ok(Produced {
                    base_offset: info.base_offset,
                    log_start: info.log_start,
                })
            }
            Err(e) => {
                self.producers.borrow_mut().abort(&header);
                Err(e.into())
            }
        }
    }

    /// Whole batches from `from`, at most `bytes_max` (at least one batch).
    pub(crate) fn read(&self, from: Offset, bytes_max: usize) -> Result<ReadBatches, EngineError> {
        Ok(self.log.read(from, bytes_max, self.log.log_end())?)
    }

    /// Resolves at the next append (or when the partition closes).
    pub(crate) fn watch(&self) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_canceled());
        if waiters.len() >= WAITERS_MAX {
            // Wake the oldest early; it re-reads and waits again.
            let oldest = waiters.remove(0);
            let _ = oldest.send(());
        }
        waiters.push(sender);
        receiver
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }

    /// Flushes and closes the log; wakes every waiter.
    pub(crate) async fn close(&self) {
        if let Err(e) = self.log.close().await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing partition log");
        }
        self.wake_waiters();
    }
}

pub(crate) fn remove_dir(dir: &Path) -> Result<(), EngineError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_err("removing partition directory", dir, source)),
    }
}

fn io_err(context: &'static str, path: &Path, source: std::io::Error) -> EngineError {
    EngineError::Log(LogError::Io {
        context,
        path: path.to_path_buf(),
        source,
    })
}
