//! The file system as a disk with a volatile cache in front of it: every
//! inode has a *current* state (what processes see now) and a *durable* one
//! (what a power cut leaves), and the changes between them in order.
//!
//! | what | becomes durable on | until then, a cut |
//! | --- | --- | --- |
//! | a file's bytes and size (write, truncate, fallocate, punch hole) | `fsync` / `fdatasync` of that file | loses them, or keeps some (see [`Tear`]) |
//! | a directory's entries (create, mkdir, unlink, rmdir, rename, link) | `fsync` of that directory | loses them, or keeps a prefix of them |
//!
//! That is what POSIX promises and no more: `fsync` of a new file does not
//! make its name durable (ext4 happens to commit it in the same journal
//! transaction; XFS, btrfs and others need the directory synced), and a
//! rename between two directories is two changes that can survive one
//! without the other. Permissions and times are not modelled as volatile.
//!
//! Nothing here touches the kernel: `fuse.rs` turns FUSE requests into these
//! calls, and the unit tests below drive the model directly.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    ffi::{OsStr, OsString},
    fmt,
    time::SystemTime,
};

use crate::{
    data::{FileData, SECTOR_BYTES},
    rng::SplitMix64,
};

pub(crate) type Ino = u64;
/// The root directory's inode (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: Ino = 1;

/// An errno for the kernel.
pub(crate) type FsResult<T> = Result<T, libc::c_int>;

/// Unsynced changes one file may hold before the oldest half is written back
/// as the kernel would (dirty pages do reach the disk eventually). Keeps a
/// never-synced file from growing the journal without bound; a real machine
/// may write back at any time, so this loses no generality.
const UNSYNCED_FILE_OPS_MAX: usize = 4096;
/// Bytes of unsynced writes one file may hold before the same write-back.
const UNSYNCED_FILE_BYTES_MAX: u64 = 64 << 20;
/// Unsynced entry changes one directory may hold before the same write-back.
const UNSYNCED_DIR_OPS_MAX: usize = 4096;

/// What a cut does with changes that were never synced. A cut picks one for
/// the whole file system; every choice inside it comes from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// Nothing is lost: the disk had written everything back. A cut with
    /// this is a plain `kill -9`.
    KeepAll,
    /// Every unsynced change is lost: each file and directory is exactly as
    /// its last fsync left it.
    Lose,
    /// In-order write-back interrupted: each file keeps a random prefix of
    /// its unsynced changes and the next write is torn (a random subset of
    /// its 512-byte sectors reached the disk); each directory keeps a random
    /// prefix of its unsynced entry changes.
    Prefix,
    /// Out-of-order write-back: every sector of every unsynced write, and
    /// every unsynced truncate or hole punch, independently survives or not;
    /// each file ends at its synced size or at its latest one; directories as
    /// with `Prefix`.
    Scatter,
}

impl Tear {
    /// Every kind that loses something, for a caller picking one at random.
    pub const ALL: [Tear; 3] = [Tear::Lose, Tear::Prefix, Tear::Scatter];
}

/// When a directory entry (a name) becomes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Names {
    /// When its directory is fsynced, and only then: POSIX's promise, and
    /// what the power-cut tests hold the engine to.
    #[default]
    DirectorySync,
    /// When anything is fsynced: every name change made so far is committed
    /// with the next `fsync` of any file or directory, as ext4's journal does
    /// (its transaction carries every pending metadata change). File bytes
    /// still need their own file's sync. Useful to find the faults a missing
    /// directory sync would otherwise hide.
    Journaled,
}

/// One unsynced change to a file's bytes or size.
#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetSize(u64),
    PunchHole { offset: u64, len: u64 },
}

impl FileOp {
    fn apply(&self, data: &mut FileData) {
        match self {
            FileOp::Write { offset, data: bytes } => data.write(*offset, bytes),
            FileOp::SetSize(size) => data.set_size(*size),
            FileOp::PunchHole { offset, len } => data.punch_hole(*offset, *len),
        }
    }

    /// Applies a write sector by sector, each sector with probability 1/2;
    /// any other change whole or not at all.
    fn apply_torn(&self, data: &mut FileData, rng: &mut SplitMix64) {
        let FileOp::Write { offset, data: bytes } = self else {
            if rng.coin() {
                self.apply(data);
            }
            return;
        };
        let mut done = 0usize;
        while done < bytes.len() {
            let position = offset + done as u64;
            let n = ((SECTOR_BYTES - position % SECTOR_BYTES) as usize).min(bytes.len() - done);
            if rng.coin() {
                if let Some(sector) = bytes.get(done..done + n) {
                    data.write(position, sector);
                }
            }
            done += n;
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            FileOp::Write { data, .. } => data.len() as u64,
            FileOp::SetSize(_) | FileOp::PunchHole { .. } => 0,
        }
    }
}

#[derive(Default)]
struct FileNode {
    current: FileData,
    durable: FileData,
    /// Changes since the last fsync, oldest first: `durable` + these = `current`.
    unsynced: VecDeque<FileOp>,
    unsynced_bytes: u64,
}

impl FileNode {
    fn change(&mut self, op: FileOp) {
        op.apply(&mut self.current);
        self.unsynced_bytes += op.bytes();
        self.unsynced.push_back(op);
        if self.unsynced.len() > UNSYNCED_FILE_OPS_MAX || self.unsynced_bytes > UNSYNCED_FILE_BYTES_MAX {
            for _ in 0..self.unsynced.len() / 2 {
                if let Some(op) = self.unsynced.pop_front() {
                    self.unsynced_bytes -= op.bytes();
                    op.apply(&mut self.durable);
                }
            }
        }
    }

    fn sync(&mut self) {
        self.durable = self.current.clone();
        self.unsynced.clear();
        self.unsynced_bytes = 0;
    }

    /// What survives a cut, and a word on how it was decided.
    fn survivor(&self, tear: Tear, rng: &mut SplitMix64) -> (FileData, String) {
        let mut data = self.durable.clone();
        let n = self.unsynced.len();
        let how = match tear {
            Tear::KeepAll => {
                data = self.current.clone();
                "all kept".to_string()
            }
            Tear::Lose => "all lost".to_string(),
            Tear::Prefix => {
                let kept = rng.up_to(n as u64) as usize;
                for op in self.unsynced.iter().take(kept) {
                    op.apply(&mut data);
                }
                match self.unsynced.get(kept) {
                    Some(op) => {
                        op.apply_torn(&mut data, rng);
                        format!("first {kept} kept, the next torn")
                    }
                    None => "all kept".to_string(),
                }
            }
            Tear::Scatter => {
                for op in &self.unsynced {
                    op.apply_torn(&mut data, rng);
                }
                let size = if rng.coin() {
                    self.durable.size()
                } else {
                    self.current.size()
                };
                data.set_size(size);
                "sectors kept at random".to_string()
            }
        };
        let note = format!(
            "{n} unsynced change(s), {} B written: {how}; size {} → {} (synced {})",
            self.unsynced_bytes,
            self.current.size(),
            data.size(),
            self.durable.size()
        );
        (data, note)
    }
}

/// One unsynced change to a directory's entries: a create or link inserts,
/// an unlink removes, a rename inside the directory does both at once.
#[derive(Clone, Debug)]
struct DirOp {
    remove: Option<OsString>,
    insert: Option<(OsString, Ino)>,
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<OsString, Ino>) {
        if let Some(name) = &self.remove {
            entries.remove(name);
        }
        if let Some((name, ino)) = &self.insert {
            entries.insert(name.clone(), *ino);
        }
    }
}

#[derive(Default)]
struct DirNode {
    current: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
    unsynced: VecDeque<DirOp>,
}

impl DirNode {
    fn change(&mut self, op: DirOp) {
        op.apply(&mut self.current);
        self.unsynced.push_back(op);
        if self.unsynced.len() > UNSYNCED_DIR_OPS_MAX {
            for _ in 0..self.unsynced.len() / 2 {
                if let Some(op) = self.unsynced.pop_front() {
                    op.apply(&mut self.durable);
                }
            }
        }
    }

    fn sync(&mut self) {
        self.durable = self.current.clone();
        self.unsynced.clear();
    }

    fn survivor(&self, tear: Tear, rng: &mut SplitMix64) -> (BTreeMap<OsString, Ino>, usize) {
        let mut entries = self.durable.clone();
        let kept = match tear {
            Tear::KeepAll => self.unsynced.len(),
            Tear::Lose => 0,
            Tear::Prefix | Tear::Scatter => rng.up_to(self.unsynced.len() as u64) as usize,
        };
        for op in self.unsynced.iter().take(kept) {
            op.apply(&mut entries);
        }
        (entries, kept)
    }
}

enum Body {
    File(FileNode),
    Dir(DirNode),
}

struct Inode {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Current entries naming this inode.
    links: u32,
}

impl Inode {
    fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode {
            body,
            perm,
            uid,
            gid,
            mtime: now,
            ctime: now,
            links: 0,
        }
    }

    fn file(&mut self) -> FsResult<&mut FileNode> {
        match &mut self.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(libc::EISDIR),
        }
    }

    fn dir(&mut self) -> FsResult<&mut DirNode> {
        match &mut self.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn touch(&mut self) {
        self.mtime = SystemTime::now();
        self.ctime = self.mtime;
    }
}

/// What `stat` shows of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) ino: Ino,
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
    pub(crate) blocks: u64,
    pub(crate) perm: u16,
    pub(crate) links: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
}

/// Requests seen since the file system was created, by kind: lets a test
/// check that the engine's syncs really reach this layer (a file system that
/// answered FSYNC with ENOSYS would make the kernel skip every later one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub writes: u64,
    pub write_bytes: u64,
    /// `fsync` and `fdatasync` of files.
    pub file_syncs: u64,
    /// `fsync` of directories.
    pub dir_syncs: u64,
    pub cuts: u64,
}

/// What a cut did, path by path, for the reader of a failing test.
#[derive(Clone, Debug)]
pub struct CutReport {
    pub seed: u64,
    pub tear: Tear,
    /// One line per file or directory that had unsynced changes.
    pub lines: Vec<String>,
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "power cut (seed {:#x}, {:?}):", self.seed, self.tear)?;
        if self.lines.is_empty() {
            writeln!(f, "  nothing was unsynced")?;
        }
        for line in &self.lines {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The whole file system.
pub(crate) struct Model {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    /// Power is off: every request fails with EIO until `cut` brings it back.
    frozen: bool,
    /// Bumped by every cut; a FUSE session of an older mount is refused.
    generation: u64,
    counters: Counters,
    names: Names,
}

impl Model {
    pub(crate) fn new(names: Names) -> Model {
        let mut inodes = BTreeMap::new();
        let mut root = Inode::new(Body::Dir(DirNode::default()), 0o755, 0, 0);
        root.links = 1;
        inodes.insert(ROOT, root);
        Model {
            inodes,
            next_ino: ROOT + 1,
            frozen: false,
            generation: 0,
            counters: Counters::default(),
            names,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// EIO unless the power is on and `generation` is the live mount's.
    pub(crate) fn powered(&self, generation: u64) -> FsResult<()> {
        if self.frozen || generation != self.generation {
            return Err(libc::EIO);
        }
        Ok(())
    }

    fn inode(&mut self, ino: Ino) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    pub(crate) fn attr(&self, ino: Ino) -> FsResult<Attr> {
        let inode = self.inodes.get(&ino).ok_or(libc::ENOENT)?;
        let (is_dir, size, blocks, links) = match &inode.body {
            Body::File(file) => (false, file.current.size(), file.current.blocks(), inode.links),
            Body::Dir(_) => (true, 4096, 8, inode.links.max(1) + 1),
        };
        Ok(Attr {
            ino,
            is_dir,
            size,
            blocks,
            perm: inode.perm,
            links,
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime,
            ctime: inode.ctime,
        })
    }

    pub(crate) fn lookup(&mut self, parent: Ino, name: &OsStr) -> FsResult<Ino> {
        self.inode(parent)?
            .dir()?
            .current
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    /// Creates a file or directory named `name` in `parent`.
    pub(crate) fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        is_dir: bool,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> FsResult<Ino> {
        let dir = self.inode(parent)?.dir()?;
        if dir.current.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = if is_dir {
            Body::Dir(DirNode::default())
        } else {
            Body::File(FileNode::default())
        };
        self.inodes.insert(ino, Inode::new(body, perm, uid, gid));
        self.link_name(parent, name, ino)?;
        Ok(ino)
    }

    fn link_name(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> FsResult<()> {
        self.change_dir(parent, None, Some((name, ino)))?;
        self.inode(ino)?.links += 1;
        Ok(())
    }

    /// Records one change of directory `dir`'s entries: `remove` a name,
    /// `insert` one, or both at once (a rename inside the directory).
    fn change_dir(&mut self, dir: Ino, remove: Option<&OsStr>, insert: Option<(&OsStr, Ino)>) -> FsResult<()> {
        let inode = self.inode(dir)?;
        inode.touch();
        inode.dir()?.change(DirOp {
            remove: remove.map(OsStr::to_os_string),
            insert: insert.map(|(name, ino)| (name.to_os_string(), ino)),
        });
        Ok(())
    }

    /// The kind check shared by unlink, rmdir and a rename over `ino`: a
    /// directory only where one is expected, and only if empty.
    fn check_replaceable(&mut self, ino: Ino, expect_dir: bool) -> FsResult<()> {
        match (&self.inode(ino)?.body, expect_dir) {
            (Body::Dir(_), false) => Err(libc::EISDIR),
            (Body::File(_), true) => Err(libc::ENOTDIR),
            (Body::Dir(dir), true) if !dir.current.is_empty() => Err(libc::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    pub(crate) fn link(&mut self, ino: Ino, parent: Ino, name: &OsStr) -> FsResult<()> {
        if matches!(self.inode(ino)?.body, Body::Dir(_)) {
            return Err(libc::EPERM);
        }
        if self.inode(parent)?.dir()?.current.contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.link_name(parent, name, ino)
    }

    /// Removes `name` from `parent`: a file (`rmdir` false) or an empty
    /// directory (`rmdir` true).
    pub(crate) fn remove(&mut self, parent: Ino, name: &OsStr, rmdir: bool) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        self.check_replaceable(ino, rmdir)?;
        self.change_dir(parent, Some(name), None)?;
        let inode = self.inode(ino)?;
        inode.links = inode.links.saturating_sub(1);
        inode.ctime = SystemTime::now();
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        no_replace: bool,
    ) -> FsResult<()> {
        let ino = self.lookup(parent, name)?;
        let moving_dir = matches!(self.inode(ino)?.body, Body::Dir(_));
        if moving_dir && self.is_inside(new_parent, ino) {
            return Err(libc::EINVAL);
        }
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            self.check_replaceable(target, moving_dir)?;
            let target = self.inode(target)?;
            target.links = target.links.saturating_sub(1);
        }
        if parent == new_parent {
            self.change_dir(parent, Some(name), Some((new_name, ino)))?;
        } else {
            self.change_dir(parent, Some(name), None)?;
            self.change_dir(new_parent, None, Some((new_name, ino)))?;
        }
        self.inode(ino)?.ctime = SystemTime::now();
        Ok(())
    }

    /// Whether directory `dir` is `ancestor` or lies below it.
    fn is_inside(&self, dir: Ino, ancestor: Ino) -> bool {
        let mut seen = BTreeSet::new();
        let mut queue = vec![ancestor];
        while let Some(at) = queue.pop() {
            if at == dir {
                return true;
            }
            if !seen.insert(at) {
                continue;
            }
            if let Some(Inode { body: Body::Dir(d), .. }) = self.inodes.get(&at) {
                queue.extend(d.current.values().copied());
            }
        }
        false
    }

    pub(crate) fn entries(&mut self, dir: Ino) -> FsResult<Vec<(Ino, bool, OsString)>> {
        let names: Vec<(OsString, Ino)> = self
            .inode(dir)?
            .dir()?
            .current
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        Ok(names
            .into_iter()
            .map(|(name, ino)| {
                let is_dir = matches!(self.inodes.get(&ino), Some(Inode { body: Body::Dir(_), .. }));
                (ino, is_dir, name)
            })
            .collect())
    }

    pub(crate) fn read(&mut self, ino: Ino, offset: u64, len: u64) -> FsResult<Vec<u8>> {
        Ok(self.inode(ino)?.file()?.current.read(offset, len))
    }

    pub(crate) fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> FsResult<()> {
        self.counters.writes += 1;
        self.counters.write_bytes += data.len() as u64;
        let inode = self.inode(ino)?;
        inode.touch();
        inode.file()?.change(FileOp::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    pub(crate) fn set_size(&mut self, ino: Ino, size: u64) -> FsResult<()> {
        let inode = self.inode(ino)?;
        inode.touch();
        let file = inode.file()?;
        if file.current.size() != size {
            file.change(FileOp::SetSize(size));
        }
        Ok(())
    }

    pub(crate) fn set_perm(&mut self, ino: Ino, perm: u16) -> FsResult<()> {
        let inode = self.inode(ino)?;
        inode.perm = perm;
        inode.ctime = SystemTime::now();
        Ok(())
    }

    pub(crate) fn set_mtime(&mut self, ino: Ino, mtime: SystemTime) -> FsResult<()> {
        self.inode(ino)?.mtime = mtime;
        Ok(())
    }

    /// `fallocate(2)`: plain (grow), `PUNCH_HOLE | KEEP_SIZE`, `ZERO_RANGE`
    /// (± `KEEP_SIZE`); other modes are EOPNOTSUPP.
    pub(crate) fn fallocate(&mut self, ino: Ino, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        let end = offset.checked_add(len).ok_or(libc::EFBIG)?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let inode = self.inode(ino)?;
        inode.touch();
        let file = inode.file()?;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => {}
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => file.change(FileOp::PunchHole { offset, len }),
            libc::FALLOC_FL_ZERO_RANGE => file.change(FileOp::PunchHole { offset, len }),
            _ => return Err(libc::EOPNOTSUPP),
        }
        if !keep_size && end > file.current.size() {
            file.change(FileOp::SetSize(end));
        }
        Ok(())
    }

    /// `SEEK_DATA` / `SEEK_HOLE` (the kernel answers the other whences itself).
    pub(crate) fn seek(&mut self, ino: Ino, offset: u64, whence: i32) -> FsResult<u64> {
        let file = self.inode(ino)?.file()?;
        match whence {
            libc::SEEK_DATA => file.current.seek_data(offset).ok_or(libc::ENXIO),
            libc::SEEK_HOLE => file.current.seek_hole(offset).ok_or(libc::ENXIO),
            _ => Err(libc::EINVAL),
        }
    }

    /// `fsync` / `fdatasync` of a file: its bytes and size become durable.
    pub(crate) fn sync_file(&mut self, ino: Ino) -> FsResult<()> {
        self.counters.file_syncs += 1;
        self.inode(ino)?.file()?.sync();
        self.commit_names();
        Ok(())
    }

    /// With [`Names::Journaled`], every directory's entries become durable.
    fn commit_names(&mut self) {
        if self.names == Names::Journaled {
            for inode in self.inodes.values_mut() {
                if let Body::Dir(dir) = &mut inode.body {
                    dir.sync();
                }
            }
        }
    }

    /// `fsync` of a directory: its entries become durable.
    pub(crate) fn sync_dir(&mut self, ino: Ino) -> FsResult<()> {
        self.counters.dir_syncs += 1;
        self.inode(ino)?.dir()?.sync();
        self.commit_names();
        Ok(())
    }

    /// The power goes off now: every later request fails with EIO.
    pub(crate) fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Power comes back: each inode keeps what its tear leaves of its
    /// unsynced changes, inodes no surviving name reaches are gone, and the
    /// file system is up again under a new generation.
    pub(crate) fn cut(&mut self, tear: Tear, seed: u64) -> CutReport {
        let mut rng = SplitMix64::new(seed);
        let paths = self.current_paths();
        let path = |ino: Ino| {
            paths
                .get(&ino)
                .cloned()
                .unwrap_or_else(|| format!("(unlinked inode {ino})"))
        };
        let mut lines = Vec::new();
        let mut survived_files: BTreeMap<Ino, FileData> = BTreeMap::new();
        let mut survived_dirs: BTreeMap<Ino, BTreeMap<OsString, Ino>> = BTreeMap::new();
        for (&ino, inode) in &self.inodes {
            match &inode.body {
                Body::File(file) => {
                    let (data, note) = file.survivor(tear, &mut rng);
                    if !file.unsynced.is_empty() {
                        lines.push(format!("file {}: {note}", path(ino)));
                    }
                    survived_files.insert(ino, data);
                }
                Body::Dir(dir) => {
                    let (entries, kept) = dir.survivor(tear, &mut rng);
                    if !dir.unsynced.is_empty() {
                        let lost: Vec<String> = dir
                            .current
                            .keys()
                            .filter(|name| !entries.contains_key(*name))
                            .map(|name| name.to_string_lossy().into_owned())
                            .collect();
                        let back: Vec<String> = entries
                            .keys()
                            .filter(|name| !dir.current.contains_key(*name))
                            .map(|name| name.to_string_lossy().into_owned())
                            .collect();
                        lines.push(format!(
                            "dir {}: {} unsynced entry change(s), first {kept} kept; names lost: [{}]; unlinked names back: [{}]",
                            path(ino),
                            dir.unsynced.len(),
                            lost.join(", "),
                            back.join(", ")
                        ));
                    }
                    survived_dirs.insert(ino, entries);
                }
            }
        }
        // Keep what the surviving names reach from the root; a directory
        // reached twice (a torn rename) keeps its first name only.
        let mut links: BTreeMap<Ino, u32> = BTreeMap::from([(ROOT, 1)]);
        let mut reached_dirs: BTreeMap<Ino, BTreeMap<OsString, Ino>> = BTreeMap::new();
        let mut queue = VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let Some(mut entries) = survived_dirs.remove(&dir) else {
                continue;
            };
            let mut dropped = Vec::new();
            for (name, ino) in entries.iter() {
                let is_dir = survived_dirs.contains_key(ino) || reached_dirs.contains_key(ino) || *ino == dir;
                let count = links.entry(*ino).or_insert(0);
                if is_dir && *count > 0 {
                    dropped.push(name.clone());
                    continue;
                }
                *count += 1;
                if is_dir {
                    queue.push_back(*ino);
                }
            }
            for name in dropped {
                entries.remove(&name);
            }
            reached_dirs.insert(dir, entries);
        }
        // Directories never reached are gone with everything only they named.
        let mut survived_dirs = reached_dirs;
        self.inodes.retain(|ino, _| links.contains_key(ino));
        for (ino, inode) in &mut self.inodes {
            inode.links = links.get(ino).copied().unwrap_or(0);
            match &mut inode.body {
                Body::File(file) => {
                    let data = survived_files.remove(ino).unwrap_or_default();
                    *file = FileNode {
                        current: data.clone(),
                        durable: data,
                        ..FileNode::default()
                    };
                }
                Body::Dir(dir) => {
                    let entries = survived_dirs.remove(ino).unwrap_or_default();
                    *dir = DirNode {
                        current: entries.clone(),
                        durable: entries,
                        ..DirNode::default()
                    };
                }
            }
        }
        self.frozen = false;
        self.generation += 1;
        self.counters.cuts += 1;
        CutReport { seed, tear, lines }
    }

    /// Every inode's current path from the root (the first one found).
    fn current_paths(&self) -> BTreeMap<Ino, String> {
        let mut paths = BTreeMap::from([(ROOT, "/".to_string())]);
        let mut queue = VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let Some(Inode { body: Body::Dir(d), .. }) = self.inodes.get(&dir) else {
                continue;
            };
            let prefix = paths.get(&dir).cloned().unwrap_or_default();
            for (name, ino) in &d.current {
                if paths.contains_key(ino) {
                    continue;
                }
                let sep = if prefix.ends_with('/') { "" } else { "/" };
                paths.insert(*ino, format!("{prefix}{sep}{}", name.to_string_lossy()));
                queue.push_back(*ino);
            }
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn file(model: &mut Model, parent: Ino, n: &str) -> Ino {
        model.create(parent, name(n), false, 0o644, 0, 0).unwrap()
    }

    #[test]
    fn only_synced_bytes_and_synced_names_survive_a_lossy_cut() {
        let mut m = Model::new(Names::DirectorySync);
        let a = file(&mut m, ROOT, "a");
        m.write(a, 0, b"synced").unwrap();
        m.sync_file(a).unwrap();
        m.sync_dir(ROOT).unwrap();
        m.write(a, 6, b" lost").unwrap();
        let b = file(&mut m, ROOT, "b");
        m.write(b, 0, b"file synced, name not").unwrap();
        m.sync_file(b).unwrap();
        m.freeze();
        assert_eq!(m.powered(0), Err(libc::EIO));
        let report = m.cut(Tear::Lose, 7);
        assert!(m.powered(1).is_ok() && m.powered(0).is_err(), "a new generation");
        assert_eq!(m.read(a, 0, 100).unwrap(), b"synced");
        assert_eq!(m.lookup(ROOT, name("b")), Err(libc::ENOENT));
        let text = report.to_string();
        assert!(text.contains("names lost: [b]"), "{text}");
        assert!(text.contains("file /a: 1 unsynced"), "{text}");
    }

    #[test]
    fn a_synced_name_of_an_unsynced_file_survives_empty() {
        let mut m = Model::new(Names::DirectorySync);
        let id = file(&mut m, ROOT, "topic-id");
        m.write(id, 0, b"0123abcd").unwrap();
        m.sync_dir(ROOT).unwrap();
        m.freeze();
        m.cut(Tear::Lose, 1);
        let id = m.lookup(ROOT, name("topic-id")).unwrap();
        assert_eq!(m.attr(id).unwrap().size, 0);
    }

    #[test]
    fn unsynced_unlinks_and_renames_come_back_and_synced_ones_do_not() {
        let mut m = Model::new(Names::DirectorySync);
        let sub = m.create(ROOT, name("d"), true, 0o755, 0, 0).unwrap();
        m.sync_dir(ROOT).unwrap();
        for n in ["x", "y", "z.tmp"] {
            file(&mut m, sub, n);
        }
        m.sync_dir(sub).unwrap();
        m.remove(sub, name("x"), false).unwrap();
        m.sync_dir(sub).unwrap();
        m.remove(sub, name("y"), false).unwrap();
        m.rename(sub, name("z.tmp"), sub, name("z"), false).unwrap();
        m.freeze();
        m.cut(Tear::Lose, 3);
        let names: Vec<OsString> = m.entries(sub).unwrap().into_iter().map(|e| e.2).collect();
        assert_eq!(names, vec![OsString::from("y"), OsString::from("z.tmp")]);
    }

    #[test]
    fn torn_cuts_keep_only_sectors_that_were_written_and_replay_by_seed() {
        for tear in [Tear::Prefix, Tear::Scatter] {
            for seed in 0..200u64 {
                let mut m = Model::new(Names::DirectorySync);
                let f = file(&mut m, ROOT, "f");
                m.write(f, 0, &[1; 2048]).unwrap();
                m.sync_file(f).unwrap();
                m.sync_dir(ROOT).unwrap();
                m.write(f, 2048, &[2; 3000]).unwrap();
                m.fallocate(f, 0, 512, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .unwrap();
                m.write(f, 5048, &[3; 1000]).unwrap();
                m.freeze();
                let text = m.cut(tear, seed).to_string();
                let bytes = m.read(f, 0, 1 << 20).unwrap();
                assert!(bytes.len() >= 2048 && bytes.len() <= 6048, "{tear:?} {seed}: {text}");
                for (i, b) in bytes.iter().enumerate() {
                    let allowed: &[u8] = match i {
                        0..512 => &[0, 1],
                        512..2048 => &[1],
                        2048..5048 => &[0, 2],
                        _ => &[0, 3],
                    };
                    assert!(allowed.contains(b), "{tear:?} seed {seed}: byte {i} = {b}\n{text}");
                }
                // The same seed decides the same way.
                let mut again = Model::new(Names::DirectorySync);
                let g = file(&mut again, ROOT, "f");
                again.write(g, 0, &[1; 2048]).unwrap();
                again.sync_file(g).unwrap();
                again.sync_dir(ROOT).unwrap();
                again.write(g, 2048, &[2; 3000]).unwrap();
                again
                    .fallocate(g, 0, 512, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .unwrap();
                again.write(g, 5048, &[3; 1000]).unwrap();
                again.freeze();
                again.cut(tear, seed);
                assert_eq!(again.read(g, 0, 1 << 20).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn a_directory_whose_name_was_lost_takes_its_synced_files_with_it() {
        let mut m = Model::new(Names::DirectorySync);
        let p = m.create(ROOT, name("partitions"), true, 0o755, 0, 0).unwrap();
        m.sync_dir(ROOT).unwrap();
        let t = m.create(p, name("t-0"), true, 0o755, 0, 0).unwrap();
        let seg = file(&mut m, t, "0.log");
        m.write(seg, 0, b"acknowledged").unwrap();
        m.sync_file(seg).unwrap();
        m.sync_dir(t).unwrap();
        m.freeze();
        let text = m.cut(Tear::Lose, 0).to_string();
        assert!(m.entries(p).unwrap().is_empty());
        assert!(
            text.contains("dir /partitions: 1 unsynced entry change(s), first 0 kept; names lost: [t-0]"),
            "{text}"
        );
        assert_eq!(m.attr(seg), Err(libc::ENOENT), "unreachable inodes are gone");
    }

    #[test]
    fn journaled_names_are_committed_by_any_sync_but_bytes_are_not() {
        let mut m = Model::new(Names::Journaled);
        let d = m.create(ROOT, name("d"), true, 0o755, 0, 0).unwrap();
        let id = file(&mut m, d, "topic-id");
        m.write(id, 0, b"id").unwrap();
        let other = file(&mut m, ROOT, "other");
        m.sync_file(other).unwrap();
        m.freeze();
        m.cut(Tear::Lose, 0);
        let d = m.lookup(ROOT, name("d")).unwrap();
        let id = m.lookup(d, name("topic-id")).unwrap();
        assert_eq!(m.attr(id).unwrap().size, 0, "the name survived, its bytes did not");
    }

    #[test]
    fn unsynced_changes_past_the_bound_are_written_back() {
        let mut m = Model::new(Names::DirectorySync);
        let f = file(&mut m, ROOT, "f");
        m.sync_dir(ROOT).unwrap();
        for i in 0..=UNSYNCED_FILE_OPS_MAX as u64 {
            m.write(f, i, &[1]).unwrap();
        }
        m.freeze();
        m.cut(Tear::Lose, 0);
        let size = m.attr(f).unwrap().size;
        assert_eq!(
            size,
            UNSYNCED_FILE_OPS_MAX as u64 / 2,
            "the oldest half reached the disk"
        );
    }
}
