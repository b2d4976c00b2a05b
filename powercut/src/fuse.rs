//! FUSE requests → [`Model`] calls. One `LossyFs` serves one mount
//! (generation); after a cut its requests fail with EIO.
//!
//! Three choices here decide whether the model sees what the disk would:
//! - The kernel's FUSE *writeback cache* is not requested (fuser does not ask
//!   for `FUSE_WRITEBACK_CACHE`), so every `write(2)` — and every io_uring
//!   write, which the kernel runs as one — reaches `write` below before it
//!   returns. With the writeback cache the kernel would hold dirty pages and
//!   send them later, and a cut could not tell what the process had written.
//! - Files are opened *without* `FOPEN_DIRECT_IO`: their pages live in the
//!   kernel's page cache, so `mmap` works (the log maps segments with
//!   memmap2) and a mapping sees every write as soon as it returns.
//!   `FOPEN_KEEP_CACHE` keeps that cache across opens; nothing but the kernel
//!   changes these files while mounted.
//! - `fsync` and `fsyncdir` are answered (never ENOSYS: the kernel would
//!   then skip every later sync and call it a success). `flush` (each
//!   `close`) makes nothing durable, as on a disk.

use std::{
    ffi::OsStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{Attr, FsResult, Ino, Model};

/// How long the kernel may cache names and attributes. Only the kernel
/// changes this file system while it is mounted, so any value is coherent;
/// a remount is a new superblock with an empty cache.
const TTL: Duration = Duration::from_secs(1);

/// Blocks reported by `statfs` (of 4 KiB): 1 TiB, so nothing refuses to
/// write for lack of space; the model's real bound is the test's memory.
const STATFS_BLOCKS: u64 = 1 << 28;

pub(crate) struct LossyFs {
    pub(crate) model: Arc<Mutex<Model>>,
    pub(crate) generation: u64,
}

impl LossyFs {
    /// Runs `f` on the model if the power is on for this mount.
    fn with<T>(&self, f: impl FnOnce(&mut Model) -> FsResult<T>) -> Result<T, Errno> {
        let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        model.powered(self.generation).map_err(Errno::from_i32)?;
        f(&mut model).map_err(Errno::from_i32)
    }
}

impl LossyFs {
    /// Creates a file or directory owned by the caller; its attributes.
    fn create_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        is_dir: bool,
        perm: u16,
    ) -> Result<Attr, Errno> {
        self.with(|m| {
            let ino = m.create(parent.0, name, is_dir, perm, req.uid(), req.gid())?;
            m.attr(ino)
        })
    }
}

fn file_attr(attr: Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.ctime,
        kind: if attr.is_dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: attr.perm,
        nlink: attr.links,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn entry(reply: ReplyEntry, result: Result<Attr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &file_attr(attr), Generation(0)),
        Err(errno) => reply.error(errno),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

/// The permission bits a create asks for.
fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.with(|m| m.lookup(parent.0, name).and_then(|ino| m.attr(ino))),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|m| m.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &file_attr(attr)),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.with(|m| {
            if let Some(size) = size {
                m.set_size(ino.0, size)?;
            }
            if let Some(mode) = mode {
                m.set_perm(ino.0, perm(mode, 0))?;
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(time)) => m.set_mtime(ino.0, time)?,
                Some(TimeOrNow::Now) => m.set_mtime(ino.0, SystemTime::now())?,
                None => {}
            }
            m.attr(ino.0)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &file_attr(attr)),
            Err(errno) => reply.error(errno),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        entry(reply, self.create_node(req, parent, name, false, perm(mode, umask)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        entry(reply, self.create_node(req, parent, name, true, perm(mode, umask)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.remove(parent.0, name, true)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        empty(
            reply,
            self.with(|m| m.rename(parent.0, name, new_parent.0, new_name, no_replace)),
        );
    }

    fn link(&self, _req: &Request, ino: INodeNo, new_parent: INodeNo, new_name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.with(|m| {
                m.link(ino.0, new_parent.0, new_name)?;
                m.attr(ino.0)
            }),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| m.attr(ino.0)) {
            Ok(attr) if attr.is_dir => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(errno) => reply.error(errno),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_node(req, parent, name, false, perm(mode, umask)) {
            Ok(attr) => reply.created(
                &TTL,
                &file_attr(attr),
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|m| m.read(ino.0, offset, u64::from(size))) {
            Ok(bytes) => reply.data(&bytes),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Ok(written) = u32::try_from(data.len()) else {
            reply.error(Errno::EINVAL);
            return;
        };
        match self.with(|m| m.write(ino.0, offset, data)) {
            Ok(()) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        empty(reply, self.with(|_| Ok(())));
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.sync_file(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| m.attr(ino.0)) {
            Ok(attr) if attr.is_dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.with(|m| m.entries(ino.0)) {
            Ok(entries) => entries,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        let dots = [(ino.0, true, ".".into()), (ino.0, true, "..".into())];
        let all = dots.into_iter().chain(entries);
        for (index, (entry_ino, is_dir, name)) in all.enumerate().skip(offset as usize) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            let entry_ino: Ino = entry_ino;
            if reply.add(INodeNo(entry_ino), index as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.sync_dir(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.with(|_| Ok(())) {
            Ok(()) => reply.statfs(
                STATFS_BLOCKS,
                STATFS_BLOCKS,
                STATFS_BLOCKS,
                1 << 20,
                1 << 20,
                4096,
                255,
                4096,
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(|m| m.fallocate(ino.0, offset, length, mode)));
    }

    fn lseek(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let Ok(from) = u64::try_from(offset) else {
            reply.error(Errno::EINVAL);
            return;
        };
        match self.with(|m| m.seek(ino.0, from, whence)) {
            Ok(at) => match i64::try_from(at) {
                Ok(at) => reply.offset(at),
                Err(_) => reply.error(Errno::EOVERFLOW),
            },
            Err(errno) => reply.error(errno),
        }
    }
}
