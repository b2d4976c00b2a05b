//! The bench's one error type: every failure says what was being done and on
//! which path, and keeps its source.

use std::{fmt, path::PathBuf};

use shardline_log::LogError;

/// Why a bench run stopped.
pub(crate) enum BenchError {
    /// A flag is out of range or malformed.
    Config(String),
    /// A file-system or io_uring operation failed.
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The partition log refused an operation.
    Log { context: &'static str, source: LogError },
    /// The glommio executor could not be built.
    Executor(String),
    /// A result that cannot be right (e.g. the log's end offset does not match
    /// the appends made): the figures of this run must not be trusted.
    Invariant(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Config(message) => write!(f, "bad arguments: {message}"),
            BenchError::Io { context, path, source } => {
                write!(f, "{context} ({}): {source}", path.display())
            }
            BenchError::Log { context, source } => write!(f, "{context}: {source}"),
            BenchError::Executor(message) => write!(
                f,
                "cannot start the glommio executor: {message} (check --cpu, and that `ulimit -l` exceeds --io-memory)"
            ),
            BenchError::Invariant(message) => write!(f, "result check failed: {message}"),
        }
    }
}

// `main` returns `Result<(), BenchError>`; Rust prints the error with `Debug`,
// so `Debug` is the readable message, not a struct dump.
impl fmt::Debug for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Io { source, .. } => Some(source),
            BenchError::Log { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Maps an `io::Error` (or anything convertible, such as a `GlommioError`) to
/// [`BenchError::Io`] with its context and path.
pub(crate) fn io_error<E: Into<std::io::Error>>(
    context: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(E) -> BenchError {
    let path = path.into();
    move |source| BenchError::Io {
        context,
        path,
        source: source.into(),
    }
}

/// Maps a [`LogError`] to [`BenchError::Log`] with its context.
pub(crate) fn log_error(context: &'static str) -> impl FnOnce(LogError) -> BenchError {
    move |source| BenchError::Log { context, source }
}
