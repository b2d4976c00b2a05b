//! What the tests of `shardctl`'s broker commands share: running the real
//! binary against an engine process, and reading what it printed.
#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "test code: a panic is a test failure; each test binary uses part of this"
)]

use std::process::{Command, Output};

use shardline_testkit::Engine;

/// `shardctl COMMAND ARGS... --bootstrap <engine>`.
pub fn shardctl(engine: &Engine, command: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .arg(command)
        .args(args)
        .args(["--bootstrap", &engine.bootstrap()])
        .output()
        .unwrap()
}

/// [`Engine::start_secured`] with nothing more.
pub fn secured_engine(dir: &std::path::Path, users_file: &str) -> Engine {
    Engine::start_secured(dir, users_file, &[])
}

/// What a successful run printed; a failed run fails the test with its output.
pub fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "shardctl failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
