//! The bench's one error type: every failure ends the run with a message and a non-zero exit.

use std::{fmt, io, path::PathBuf, time::Duration};

use kafka_protocol::error::ParseResponseErrorCode;

/// Exit code for a failed run (a usage error exits with clap's 2).
pub const EXIT_FAILURE: i32 = 1;

/// Why a run failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BenchError {
    /// A flag value that cannot work.
    Usage(String),
    /// No TCP connection to a broker.
    Connect {
        /// The address tried.
        address: String,
        /// What the OS said.
        source: io::Error,
    },
    /// A socket read or write failed.
    Io {
        /// The broker.
        address: String,
        /// What the bench was doing.
        context: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The broker closed the connection.
    Closed {
        /// The broker.
        address: String,
        /// What the bench was waiting for.
        context: String,
    },
    /// The broker did not answer in time.
    Timeout {
        /// The broker.
        address: String,
        /// What the bench was waiting for.
        context: String,
        /// How long it waited.
        waited: Duration,
    },
    /// Bytes from the broker that do not parse.
    Protocol {
        /// The broker.
        address: String,
        /// What was wrong.
        detail: String,
    },
    /// The broker answered with a Kafka error code.
    Broker {
        /// The API (Produce, Fetch, …).
        api: &'static str,
        /// Which topic/partition, if any.
        subject: String,
        /// The Kafka error code.
        code: i16,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },
    /// The broker lacks an API version the bench needs.
    Unsupported(String),
    /// The fsync probe could not use its directory.
    Disk {
        /// The file or directory.
        path: PathBuf,
        /// What the bench was doing.
        context: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// Writing the report failed.
    Report {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A worker thread ended without reporting (a bug).
    Internal(String),
}

impl BenchError {
    /// An I/O failure on a broker socket, mapped to the clearest variant.
    pub fn from_io(address: &str, context: impl Into<String>, source: io::Error, waited: Duration) -> BenchError {
        let context = context.into();
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => BenchError::Timeout {
                address: address.to_string(),
                context,
                waited,
            },
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                BenchError::Closed {
                    address: address.to_string(),
                    context,
                }
            }
            _ => BenchError::Io {
                address: address.to_string(),
                context,
                source,
            },
        }
    }

    /// A Kafka error code in a response, or `Ok` for 0.
    pub fn check_code(
        api: &'static str,
        subject: impl FnOnce() -> String,
        code: i16,
        message: Option<&str>,
    ) -> Result<(), BenchError> {
        if code == 0 {
            return Ok(());
        }
        Err(BenchError::Broker {
            api,
            subject: subject(),
            code,
            message: message.map(str::to_string),
        })
    }
}

/// Kafka's name for an error code (e.g. "UnknownTopicOrPartition").
pub fn code_name(code: i16) -> String {
    match code.err() {
        Some(error) => format!("{error:?}"),
        None => "NONE".to_string(),
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(message) => write!(f, "{message}"),
            BenchError::Connect { address, source } => {
                write!(
                    f,
                    "cannot connect to broker {address}: {source} (is a broker running and listening there?)"
                )
            }
            BenchError::Io {
                address,
                context,
                source,
            } => write!(f, "broker {address}: {context}: {source}"),
            BenchError::Closed { address, context } => {
                write!(f, "broker {address} closed the connection while {context}")
            }
            BenchError::Timeout {
                address,
                context,
                waited,
            } => {
                write!(f, "broker {address} did not answer within {waited:?} while {context}")
            }
            BenchError::Protocol { address, detail } => {
                write!(f, "broker {address} sent a malformed response: {detail}")
            }
            BenchError::Broker {
                api,
                subject,
                code,
                message,
            } => {
                write!(f, "{api} failed for {subject}: error {code} ({})", code_name(*code))?;
                if let Some(message) = message.as_deref().filter(|m| !m.is_empty()) {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            BenchError::Unsupported(message) => write!(f, "{message}"),
            BenchError::Disk { path, context, source } => {
                write!(f, "fsync probe: {context} {}: {source}", path.display())
            }
            BenchError::Report { path, source } => write!(f, "cannot write {}: {source}", path.display()),
            BenchError::Internal(message) => write!(f, "internal error: {message}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Connect { source, .. }
            | BenchError::Io { source, .. }
            | BenchError::Disk { source, .. }
            | BenchError::Report { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_name_the_code() {
        let error = BenchError::check_code("Produce", || "bench/0".to_string(), 3, Some("no such topic")).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("Produce failed for bench/0: error 3 (UnknownTopicOrPartition)"),
            "{text}"
        );
        assert!(text.contains("no such topic"));
        assert!(BenchError::check_code("Produce", String::new, 0, None).is_ok());
    }

    #[test]
    fn io_errors_map_to_clear_variants() {
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            BenchError::from_io("a:1", "x", eof, Duration::ZERO),
            BenchError::Closed { .. }
        ));
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(matches!(
            BenchError::from_io("a:1", "x", timeout, Duration::ZERO),
            BenchError::Timeout { .. }
        ));
    }
}
