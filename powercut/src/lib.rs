//! # `shardline-powercut`: a file system that loses power
//!
//! A test-only FUSE file system that behaves like a disk behind a volatile
//! cache, so a test can cut the power under a real engine process and see
//! what a real power cut would leave: every change not covered by a
//! completed `fsync`/`fdatasync` — file bytes, file sizes, directory
//! entries — is lost, or torn (see [`Tear`]).
//!
//! ```text
//!   engine process ──syscalls / io_uring / mmap──► kernel FUSE ──/dev/fuse──► LossyFs (this crate, a thread of the test)
//!                                                                                 │
//!                                                        Model: per inode, current state + durable state + unsynced changes
//! ```
//!
//! ## Why FUSE
//! The engine writes through io_uring and reads through `mmap`, so an
//! `LD_PRELOAD` shim sees none of its I/O; a seam under the log's file I/O
//! would not cover the metadata group's files or the engine's own, and would
//! test the seam rather than the syscalls. device-mapper (`dm-flakey`,
//! `dm-log-writes`) and `nbd` would cut a real block device, but neither
//! exists on these machines. The kernel turns every I/O on a FUSE file —
//! io_uring writes and `fdatasync` included — into a request to this
//! process. See `docs/reliability.md`.
//!
//! ## Use
//! ```no_run
//! # fn main() -> Result<(), shardline_powercut::MountError> {
//! use shardline_powercut::{LossyMount, Tear};
//! let mut disk = LossyMount::mount(std::path::Path::new("/tmp/mnt"))?;
//! // ... run a process with its data under /tmp/mnt ...
//! disk.cut(); // the instant of the cut: from now on every request fails (EIO)
//! // ... kill -9 the process ...
//! let report = disk.power_on(Tear::Prefix, 42)?; // what survived is mounted again
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! Mounting needs root (it calls `mount(2)` on `/dev/fuse` itself; no
//! `fusermount` binary is needed) and a kernel with FUSE. Everything lives
//! in this process's memory: a test's data must fit.

mod data;
mod fuse;
mod model;
mod rng;

use std::{
    fmt,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

pub use model::{Counters, CutReport, Names, Tear};
pub use rng::SplitMix64;

use crate::{fuse::LossyFs, model::Model};

/// How long an old session's thread may take to end after its connection
/// was aborted and its mount detached.
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the kernel lists FUSE connections (the `fusectl` file system).
const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

/// The seed a power-cut test runs with: `POWERCUT_SEED` if set (to replay a
/// run), else one from the clock. Tests print it.
pub fn seed_from_env() -> u64 {
    std::env::var("POWERCUT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64)
        })
}

/// Why the file system could not be mounted or unmounted.
#[derive(Debug)]
pub struct MountError {
    pub context: String,
    pub source: std::io::Error,
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (the power-cut file system needs root, /dev/fuse and `fuse` in /proc/filesystems)",
            self.context, self.source
        )
    }
}

impl std::error::Error for MountError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn mount_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MountError {
    let context = context.into();
    move |source| MountError { context, source }
}

/// Cuts the power of one [`LossyMount`] from any thread.
#[derive(Clone)]
pub struct PowerSwitch(Arc<Mutex<Model>>);

impl PowerSwitch {
    /// As [`LossyMount::cut`].
    pub fn cut(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).freeze();
    }
}

/// A lossy file system mounted at a directory; unmounted when dropped.
pub struct LossyMount {
    mountpoint: PathBuf,
    model: Arc<Mutex<Model>>,
    session: Option<fuser::BackgroundSession>,
    /// The kernel's id of the live FUSE connection (its `fusectl` directory).
    connection: u64,
}

impl LossyMount {
    /// Mounts an empty lossy file system at `mountpoint`, an existing
    /// directory; names are durable once their directory is synced.
    pub fn mount(mountpoint: &Path) -> Result<LossyMount, MountError> {
        LossyMount::mount_with(mountpoint, Names::DirectorySync)
    }

    /// As [`LossyMount::mount`], with the given rule for names.
    pub fn mount_with(mountpoint: &Path, names: Names) -> Result<LossyMount, MountError> {
        let mut mount = LossyMount {
            mountpoint: mountpoint.to_path_buf(),
            model: Arc::new(Mutex::new(Model::new(names))),
            session: None,
            connection: 0,
        };
        mount.start_session()?;
        Ok(mount)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests served so far, by kind (over every mount of this file system).
    pub fn counters(&self) -> Counters {
        self.model().counters()
    }

    /// The power goes off now: from this instant every request fails with
    /// EIO, so nothing more becomes durable. Kill the processes using the
    /// mount next, then [`LossyMount::power_on`].
    pub fn cut(&self) {
        self.model().freeze();
    }

    /// A handle that cuts the power from another thread (at a random moment
    /// while the main thread drives load).
    pub fn switch(&self) -> PowerSwitch {
        PowerSwitch(Arc::clone(&self.model))
    }

    /// Detaches the dead mount, decides what survived (`tear`, `seed`), and
    /// mounts that at the same place. Cuts first if [`LossyMount::cut`] was
    /// not called.
    pub fn power_on(&mut self, tear: Tear, seed: u64) -> Result<CutReport, MountError> {
        self.cut();
        self.stop_session()?;
        let report = self.model().cut(tear, seed);
        self.start_session()?;
        Ok(report)
    }

    fn start_session(&mut self) -> Result<(), MountError> {
        let generation = self.model().generation();
        let filesystem = LossyFs {
            model: Arc::clone(&self.model),
            generation,
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("shardline-powercut".to_string()),
            fuser::MountOption::Subtype("powercut".to_string()),
            // The kernel checks permissions from the attributes we return.
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(filesystem, &self.mountpoint, &config)
            .map_err(mount_error(format!("mounting FUSE at {}", self.mountpoint.display())))?;
        self.session = Some(session);
        let dev = std::fs::metadata(&self.mountpoint)
            .map_err(mount_error(format!("stat of mount {}", self.mountpoint.display())))?
            .dev();
        // fusectl names a connection by the kernel's dev_t: major << 20 | minor.
        self.connection = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
        Ok(())
    }

    /// Aborts the FUSE connection (every request in flight or to come fails,
    /// as on a device that vanished), detaches the mount even if a killed
    /// process still holds files in it, and waits for the session's thread.
    fn stop_session(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        abort_connection(self.connection);
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())
            .map_err(|e| mount_error("mount path")(std::io::Error::other(e)))?;
        // SAFETY: umount2 with a NUL-terminated path we own.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINVAL) {
                return Err(mount_error(format!("unmounting {}", self.mountpoint.display()))(error));
            }
        }
        let deadline = Instant::now() + SESSION_END_TIMEOUT;
        while !session.guard.is_finished() {
            if Instant::now() > deadline {
                return Err(mount_error(format!(
                    "FUSE session of {} still running {SESSION_END_TIMEOUT:?} after its connection was aborted",
                    self.mountpoint.display()
                ))(std::io::Error::from(std::io::ErrorKind::TimedOut)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Dropping the session tries one more (plain) unmount of the path,
        // which is no longer a mount point: harmless, and done before any
        // new mount appears there.
        drop(session);
        Ok(())
    }
}

/// Writes `abort` for connection `id` in fusectl, mounting fusectl first if
/// it is not. Best effort: without it the detached mount ends when its last
/// open file is closed, and the model refuses the old generation anyway.
fn abort_connection(id: u64) {
    let abort = Path::new(FUSECTL_DIR).join(id.to_string()).join("abort");
    if !abort.exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "fusectl", FUSECTL_DIR])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = std::fs::write(&abort, b"1");
}

impl Drop for LossyMount {
    fn drop(&mut self) {
        self.cut();
        let _ = self.stop_session();
    }
}
