//! The tool's error enum: failures to *run* a command (exit status 2), as
//! opposed to a command that ran and found corruption (exit status 1).

use std::{fmt, io, path::PathBuf};

/// Why a command could not do its work. Each variant keeps what caused it.
#[derive(Debug)]
pub(crate) enum ToolError {
    /// The partition directory given on the command line does not exist.
    MissingDirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The path given as a partition directory is not a directory.
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The directory holds no segment file (`<base_offset>.log`).
    NoSegments {
        /// The directory.
        path: PathBuf,
    },
    /// Reading a file or directory failed; `context` says what the tool was doing.
    Io {
        /// What the tool was doing, e.g. "reading segment".
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing the report to standard output failed (e.g. the pipe was closed).
    Output(io::Error),
    /// Talking to the broker failed: connecting, sending, or reading an
    /// answer; `context` says which request.
    Broker {
        /// What the tool was asking, e.g. "DescribeGroups".
        context: &'static str,
        /// The broker address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The broker answered with an error code, or the request cannot be done
    /// in the group's state; the message says which.
    Refused(String),
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::MissingDirectory { path } => {
                write!(f, "partition directory {} does not exist", path.display())
            }
            ToolError::NotADirectory { path } => write!(
                f,
                "{} is not a directory; give the partition directory that holds the <base_offset>.log files",
                path.display()
            ),
            ToolError::NoSegments { path } => write!(
                f,
                "no segment files (<base_offset>.log) in {}; is it a partition directory?",
                path.display()
            ),
            ToolError::Io { context, path, source } => write!(f, "{context} {}: {source}", path.display()),
            ToolError::Output(source) => write!(f, "writing to standard output: {source}"),
            ToolError::Broker { context, addr, reason } => write!(f, "{context} to {addr}: {reason}"),
            ToolError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ToolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ToolError::Io { source, .. } | ToolError::Output(source) => Some(source),
            _ => None,
        }
    }
}

/// Wraps an `io::Error` from reading `path` with what the tool was doing.
pub(crate) fn io_error<'a>(
    context: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> ToolError + 'a {
    move |source| ToolError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}
