//! Durable file helpers for the metadata directory: adapters over the log
//! crate's `durable` module, the one implementation of crash-safe writes in
//! the workspace (plain `std::fs`: these run on the raft thread, which is not
//! a shard).
//!
//! A small file (vote, snapshot, node id, a rewritten raft log) is replaced
//! atomically: the new contents go to `<name>.tmp`, which is fsynced, renamed
//! over `<name>`, and then the directory is fsynced so the rename itself
//! survives a crash.

use std::path::Path;

use shardline_log::{durable, LogError};

use crate::error::MetaError;

#[cfg(test)]
pub(crate) use shardline_log::durable::temporary_path;

fn meta_error(error: LogError) -> MetaError {
    match error {
        LogError::Io { context, path, source } => MetaError::io(format!("{context} {}", path.display()), source),
        other => {
            let message = other.to_string();
            MetaError::io(message.clone(), std::io::Error::other(message))
        }
    }
}

/// Replaces `path` with `contents` durably (temp file, fsync, rename, fsync
/// of the directory). After a crash `path` holds either the old or the new
/// contents, never a mix.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), MetaError> {
    durable::write_file_atomically(path, contents).map_err(meta_error)
}

/// Creates a directory and any missing parents, each entry made durable.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), MetaError> {
    durable::create_dir_durably(dir).map_err(meta_error)
}

/// Reads a whole file, `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, MetaError> {
    durable::read_if_exists(path).map_err(meta_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn errors_keep_the_path_and_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(&dir.path().join("vote"), b"one").unwrap();
        assert_eq!(
            read_if_exists(&dir.path().join("vote")).unwrap().as_deref(),
            Some(&b"one"[..])
        );
        let error = write_atomically(&dir.path().join("missing/vote"), b"x").unwrap_err();
        assert!(matches!(&error, MetaError::Io { context, source }
            if context.contains("missing/vote.tmp") && source.kind() == std::io::ErrorKind::NotFound));
    }
}
