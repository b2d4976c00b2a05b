//! What the engine's integration tests share: the engine-process harness
//! (`shardline-testkit`, shared with the tools and bench tests), the cluster
//! harness, and running the Python client scripts.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers"
)]

pub mod cluster;
pub mod history;
pub mod mqtt;
pub mod netns;
pub mod workload;

use std::path::{Path, PathBuf};

pub use shardline_testkit::{
    call, engine_binary, free_port_run, http_request, node_of, raw_exchange, run_engine_briefly, shard_count, Engine,
    HttpResponse, KafkaConnection,
};

/// Runs `target/debug/shardctl` with `args` and `env` (scripts/test-all
/// builds the workspace first, as lifecycle.rs relies on too).
pub fn shardctl_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/shardctl");
    std::process::Command::new(&binary)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (build the workspace first)", binary.display()))
}

/// [`shardctl_with_env`] with nothing added to the environment.
pub fn shardctl(args: &[&str]) -> std::process::Output {
    shardctl_with_env(args, &[])
}

/// Path of the Python interpreter of the project's test venv (made by scripts/test-all).
pub fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `bash scripts/test-all` (it creates the venv)",
        python.display()
    );
    python
}

/// Runs `engine/tests/python/<script>` with the venv's Python and
/// `bootstrap` as its argument; fails the test with its output unless it
/// exits 0.
pub fn run_python_script(script: &str, bootstrap: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let output = std::process::Command::new(venv_python())
        .arg(&path)
        .arg(bootstrap)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `engine/tests/python/<script>` with the venv's Python and `args`;
/// returns (exit success, stdout + stderr).
pub fn python_script_output(script: &str, args: &[&str]) -> (bool, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let output = std::process::Command::new(venv_python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
