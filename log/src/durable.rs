//! Crash-safe file and directory operations: the one place where small
//! metadata files (a segment's index, a partition's topic id, the metadata
//! group's vote, snapshot and node id) are written and directories created,
//! moved and made durable.
//!
//! The rules, as POSIX file systems need them:
//! - **A file's contents** survive a crash only after `fsync` of the file.
//! - **A name** (a created, renamed or removed entry) survives only after
//!   `fsync` of the directory holding it; a new directory's own entry lives
//!   in its parent.
//! - **Replacing** a file: write `<name>.tmp`, fsync it, rename it over
//!   `<name>`, fsync the directory. After a crash `<name>` holds the old or
//!   the new contents, never a mix or nothing (an empty `topic-id` after a
//!   crash once made start-up delete a whole partition).
//!
//! These are blocking `std::fs` calls, for the metadata thread, for start-up,
//! and for a shard through its executor's blocking pool
//! (`glommio::executor().spawn_blocking`); the log's writer syncs its own
//! segment directory through io_uring instead (`segment.rs`, `sync_dir`).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::error::{io_error, LogError};

/// The temporary name [`write_file_atomically`] writes first: `<name>.tmp`
/// (the log and the metadata group remove leftover `*.tmp` files on open).
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, making the entries created, renamed or removed in it
/// durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("syncing directory", dir))
}

/// Replaces `path` with `contents` durably: temp file, fsync, rename, fsync
/// of the directory. After a crash `path` holds either the old or the new
/// contents.
pub fn write_file_atomically(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let temporary = temporary_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(io_error("creating", &temporary))?;
    file.write_all(contents).map_err(io_error("writing", &temporary))?;
    file.sync_all().map_err(io_error("syncing", &temporary))?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error("renaming into place", path))?;
    sync_dir(parent_of(path))
}

/// Creates `dir` and any missing parents, each made durable: the entry of
/// every directory created is synced in its parent before this returns.
pub fn create_dir_durably(dir: &Path) -> Result<(), LogError> {
    let mut missing = Vec::new();
    let mut probe = dir;
    // Bounded by the depth of `dir`: each step goes one level up.
    while !probe.exists() {
        missing.push(probe.to_path_buf());
        match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error("creating directory", dir))?;
    // Outermost first: each new entry is synced in a parent that is itself
    // durable (or already was).
    for created in missing.iter().rev() {
        sync_dir(parent_of(created))?;
    }
    Ok(())
}

/// Moves `from` to `to` (a file or a whole directory) and syncs both
/// parents, so after a crash it is in one place, never lost.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), LogError> {
    fs::rename(from, to).map_err(io_error("moving", from))?;
    sync_dir(parent_of(to))?;
    if parent_of(from) != parent_of(to) {
        sync_dir(parent_of(from))?;
    }
    Ok(())
}

/// Reads a whole small file; `None` if it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error("reading", path)(error)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic-id");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        write_file_atomically(&path, b"one").unwrap();
        write_file_atomically(&path, b"two").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!temporary_path(&path).exists());
        assert_eq!(temporary_path(&path), dir.path().join("topic-id.tmp"));
    }

    #[test]
    fn nested_directories_are_created_and_a_whole_tree_moves() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("data/partitions/orders-0");
        create_dir_durably(&deep).unwrap();
        create_dir_durably(&deep).unwrap();
        write_file_atomically(&deep.join("topic-id"), b"x").unwrap();
        let aside = dir.path().join("data/quarantine");
        create_dir_durably(&aside).unwrap();
        rename_durably(&deep, &aside.join("orders-0-1")).unwrap();
        assert!(!deep.exists());
        assert_eq!(fs::read(aside.join("orders-0-1/topic-id")).unwrap(), b"x");
    }

    #[test]
    fn failures_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/file");
        let error = write_file_atomically(&missing, b"x").unwrap_err();
        assert!(error.to_string().contains("file.tmp"), "{error}");
    }
}
