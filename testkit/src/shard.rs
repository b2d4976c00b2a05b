//! Running test code as a shard runs: on a single-threaded glommio
//! executor, unbound to any CPU, with a small registered-buffer pool (512
//! KiB, under the default 8 MiB memlock limit of an unprivileged user).

use std::future::Future;

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

/// Registered-buffer memory of a test executor.
const TEST_IO_MEMORY_BYTES: usize = 512 << 10;

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(TEST_IO_MEMORY_BYTES)
        .make()
        .expect("glommio executor")
}

/// Runs `f` on a fresh glommio executor, as a shard would.
pub fn run_on_shard<T: 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F) -> T {
    executor().run(f())
}

thread_local! {
    /// The executor [`run_on_shard_reused`] runs every call on this thread on.
    static EXECUTOR: LocalExecutor = executor();
}

/// Runs `f` on this thread's one glommio executor, reused by every call, for
/// tests that run thousands of cases. A fresh executor per case
/// ([`run_on_shard`]) leaks file descriptors: glommio 0.9 leaks an eventfd
/// for every executor it drops, and closes a file dropped without `close`
/// only on its executor's next I/O cycle, which a finished executor never
/// has. Tasks a case leaves behind run on in the next call.
pub fn run_on_shard_reused<T: 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F) -> T {
    EXECUTOR.with(|executor| executor.run(f()))
}
