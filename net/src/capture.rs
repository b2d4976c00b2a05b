//! Request capture: a testing aid that writes every request frame a
//! connection receives to a directory, to seed the fuzz corpora with what
//! real clients send (`scripts/fuzz seeds`, see net/fuzz/README.md).
//!
//! Off unless [`ConnectionConfig::capture_dir`](crate::ConnectionConfig) is
//! set; then the connection loop calls [`record`] once per frame, and the
//! only cost when it is off is that one `None` check. Writes are plain
//! blocking `std::fs` writes on the shard: acceptable for tests, never for
//! serving.
//!
//! ```text
//! <capture_dir>/<api key>-v<api version>-<hash of the frame, 16 hex>.bin
//!   contents: the frame without its 4-byte length prefix (header + body),
//!   exactly what `decode_request` is given
//! ```
//! Identical frames land in one file. A frame too short for an API key and
//! version is named `short-<hash>.bin`.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

/// Most frames one process writes: a long test run sends hundreds of
/// thousands of requests, and the seed script keeps a few hundred.
const CAPTURED_FRAMES_MAX: usize = 20_000;

/// Largest frame written: seeds are for shapes, not bulk; a fuzz input this
/// big would run slowly anyway.
const CAPTURED_FRAME_BYTES_MAX: usize = 256 << 10;

/// Frames written so far by this process, across shards.
static CAPTURED_FRAMES: AtomicUsize = AtomicUsize::new(0);

/// Writes `frame` into `dir` under a name derived from its API key, version
/// and contents. Failures are logged, never returned: capture must not
/// change what the connection does.
pub(crate) fn record(dir: &Path, frame: &[u8]) {
    if frame.len() > CAPTURED_FRAME_BYTES_MAX {
        return;
    }
    if CAPTURED_FRAMES.fetch_add(1, Ordering::Relaxed) >= CAPTURED_FRAMES_MAX {
        return;
    }
    let mut hasher = DefaultHasher::new();
    frame.hash(&mut hasher);
    let hash = hasher.finish();
    let name = match frame {
        [k0, k1, v0, v1, ..] => format!(
            "{:02}-v{:02}-{hash:016x}.bin",
            i16::from_be_bytes([*k0, *k1]),
            i16::from_be_bytes([*v0, *v1])
        ),
        _ => format!("short-{hash:016x}.bin"),
    };
    let path = dir.join(name);
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, frame));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "request capture: could not write a frame");
    }
}
