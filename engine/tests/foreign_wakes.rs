//! Tasks woken from another shard's thread, the pattern of every cross-shard
//! reply: a task on one executor awaits a channel that a task on another
//! executor completes, and its `JoinHandle` is dropped right after it ends.
//! glommio 0.9.0 could free such a task twice (a foreign waker drop lowered
//! the reference count to zero and raised it again; the owner could destroy
//! the task in between). With a spin widened into that window the upstream
//! code aborted with `double free or corruption` within seconds; the patched
//! copy in third_party/glommio never lowers the count on a foreign thread.
//! This runs the pattern for a bounded time and count; it fails by aborting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::time::{Duration, Instant};

use futures_channel::oneshot;
use glommio::{channels::shared_channel, LocalExecutorBuilder, Placement};

/// How long the two executors trade replies.
const STRESS_TIME: Duration = Duration::from_secs(3);
/// Replies in flight per round.
const ROUND_REPLIES: usize = 64;
/// Rounds at most, whatever the time.
const ROUNDS_MAX: u64 = 200_000;

#[test]
fn replies_from_another_executor_never_free_a_task_twice() {
    let (requests, incoming) = shared_channel::new_bounded::<oneshot::Sender<u64>>(4 * ROUND_REPLIES);
    let replier = LocalExecutorBuilder::new(Placement::Unbound)
        .spin_before_park(Duration::from_millis(1))
        .spawn(move || async move {
            let incoming = incoming.connect().await;
            let mut replies = 0u64;
            while let Some(reply) = incoming.recv().await {
                let _ = reply.send(replies);
                replies += 1;
            }
            replies
        })
        .unwrap();
    let asker = LocalExecutorBuilder::new(Placement::Unbound)
        .spin_before_park(Duration::from_millis(1))
        .spawn(move || async move {
            let requests = requests.connect().await;
            let deadline = Instant::now() + STRESS_TIME;
            let mut rounds = 0u64;
            while Instant::now() < deadline && rounds < ROUNDS_MAX {
                let mut handles = Vec::with_capacity(ROUND_REPLIES);
                for _ in 0..ROUND_REPLIES {
                    let (reply, answer) = oneshot::channel();
                    requests.send(reply).await.unwrap();
                    handles.push(glommio::spawn_local(async move { answer.await.unwrap_or(0) }).detach());
                }
                for handle in handles {
                    // Completed, then its handle dropped at once.
                    let _ = handle.await;
                }
                rounds += 1;
            }
            rounds
        })
        .unwrap();
    let rounds = asker.join().unwrap();
    let replies = replier.join().unwrap();
    assert!(rounds > 0);
    assert_eq!(replies, rounds * ROUND_REPLIES as u64, "every request was answered");
}
