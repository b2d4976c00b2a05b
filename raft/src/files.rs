//! Durable file helpers for the metadata directory (plain `std::fs`: these
//! run on the raft thread, which is not a shard).
//!
//! A small file (vote, snapshot, node id) is replaced atomically: the new
//! contents go to `<name>.tmp`, which is fsynced, renamed over `<name>`, and
//! then the directory is fsynced so the rename itself survives a crash.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::error::MetaError;

/// Fsyncs a directory so that creations, renames and deletions inside it are
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), MetaError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| MetaError::io(format!("fsync directory {}", dir.display()), error))
}

/// The temporary name `write_atomically` writes first.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `contents` durably (temp file, fsync, rename, fsync
/// of the directory). After a crash `path` holds either the old or the new
/// contents, never a mix.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), MetaError> {
    let temporary = temporary_path(path);
    let context = |what: &str| format!("{what} {}", temporary.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|error| MetaError::io(context("create"), error))?;
    file.write_all(contents)
        .map_err(|error| MetaError::io(context("write"), error))?;
    file.sync_all()
        .map_err(|error| MetaError::io(context("fsync"), error))?;
    drop(file);
    fs::rename(&temporary, path)
        .map_err(|error| MetaError::io(format!("rename {} to {}", temporary.display(), path.display()), error))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    sync_dir(dir)
}

/// Reads a whole file, `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, MetaError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(MetaError::io(format!("read {}", path.display()), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vote");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!temporary_path(&path).exists());
    }
}
