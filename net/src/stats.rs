//! Per-thread byte counters of the Kafka connections, for the engine's
//! metrics.
//!
//! A connection lives on the shard that accepted it, and a shard is one
//! thread, so the counters are plain `Cell`s in a `thread_local!`: counting
//! costs an add per socket read or write, never a lock or a shared atomic.
//! [`thread_stats`] copies the calling thread's counters out (the engine
//! calls it on each shard when a metrics scrape asks); nothing resets them.
//!
//! Counted where the connection loop reads and writes its stream
//! (`conn.rs`, `StreamHalf`): Kafka bytes as the protocol sees them, so on
//! a TLS listener the plaintext inside TLS, without the record overhead.
//! The SASL exchange is counted too; bytes of a TLS handshake are not.

use std::cell::Cell;

/// A copy of one thread's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Bytes read from Kafka connections.
    pub bytes_received: u64,
    /// Bytes written to Kafka connections.
    pub bytes_sent: u64,
}

struct Counters {
    bytes_received: Cell<u64>,
    bytes_sent: Cell<u64>,
}

thread_local! {
    static COUNTERS: Counters = const {
        Counters {
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
        }
    };
}

/// The calling thread's counters so far.
pub fn thread_stats() -> NetStats {
    COUNTERS.with(|c| NetStats {
        bytes_received: c.bytes_received.get(),
        bytes_sent: c.bytes_sent.get(),
    })
}

/// Counts `bytes` read from a connection.
pub(crate) fn record_received(bytes: usize) {
    COUNTERS.with(|c| c.bytes_received.set(c.bytes_received.get().wrapping_add(bytes as u64)));
}

/// Counts `bytes` written to a connection.
pub(crate) fn record_sent(bytes: usize) {
    COUNTERS.with(|c| c.bytes_sent.set(c.bytes_sent.get().wrapping_add(bytes as u64)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_thread() {
        std::thread::spawn(|| {
            record_received(5);
            record_received(6);
            record_sent(7);
            assert_eq!(
                thread_stats(),
                NetStats {
                    bytes_received: 11,
                    bytes_sent: 7
                }
            );
        })
        .join()
        .unwrap();
        assert_eq!(thread_stats(), NetStats::default());
    }
}
