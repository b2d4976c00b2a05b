//! `shardctl user add/list/delete` as the real binary against a real engine
//! run with `--authorizer acl`: a user added through the metadata group logs
//! in (SASL PLAIN, checked against its SCRAM-SHA-256 credential), keeps its
//! credential across a restart, and is refused once deleted; a user that is
//! no super user may not manage users.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::process::{Command, Output};

mod common;

use common::{secured_engine, stdout_of};

/// `shardctl ARGS... --bootstrap ADDRESS`, logged in as `user`, with
/// `new_password` for `user add`.
fn shardctl(address: &str, (user, password): (&str, &str), new_password: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .args(args)
        .args(["--bootstrap", address])
        .env("SHARDCTL_SASL_USER", user)
        .env("SHARDCTL_SASL_PASSWORD", password)
        .env("SHARDCTL_NEW_PASSWORD", new_password)
        .output()
        .unwrap()
}

fn stderr_of(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn users_are_added_listed_kept_across_a_restart_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = secured_engine(dir.path(), "admin:admin-secret\n");
    let address = engine.listener_addr("SASL").to_string();
    let admin = ("admin", "admin-secret");
    let carol = ("carol", "carol-secret");

    let added = stdout_of(&shardctl(&address, admin, "carol-secret", &["user", "add", "carol"]));
    assert!(
        added.contains("stored SCRAM-SHA-256, SCRAM-SHA-512 credentials for carol"),
        "{added}"
    );
    let listed = stdout_of(&shardctl(&address, admin, "", &["user", "list"]));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(
        rows.iter()
            .all(|row| row.starts_with("carol ") && row.ends_with(" 4096")),
        "{listed}"
    );

    // carol logs in (her password is right) but is no super user.
    let refused = stderr_of(&shardctl(&address, carol, "", &["user", "list"]));
    assert!(refused.contains("ClusterAuthorizationFailed"), "{refused}");
    let wrong = stderr_of(&shardctl(&address, ("carol", "nope"), "", &["acl", "list"]));
    assert!(wrong.contains("SaslAuthenticationFailed"), "{wrong}");
    // Bounds are the broker's: too few iterations never leave the tool.
    let few = stderr_of(&shardctl(
        &address,
        admin,
        "x",
        &["user", "add", "erin", "--iterations", "100"],
    ));
    assert!(few.contains("--iterations"), "{few}");

    // Credentials are metadata: a restart (kill -9) keeps them.
    engine.restart();
    let refused = stderr_of(&shardctl(&address, carol, "", &["acl", "list"]));
    assert!(
        refused.contains("ClusterAuthorizationFailed"),
        "carol still logs in: {refused}"
    );

    let deleted = stdout_of(&shardctl(&address, admin, "", &["user", "delete", "carol"]));
    assert!(
        deleted.contains("deleted SCRAM-SHA-256, SCRAM-SHA-512 credentials of carol"),
        "{deleted}"
    );
    let gone = stderr_of(&shardctl(&address, carol, "", &["acl", "list"]));
    assert!(gone.contains("SaslAuthenticationFailed"), "{gone}");
    let unknown = stderr_of(&shardctl(&address, admin, "", &["user", "list", "carol"]));
    assert!(unknown.contains("ResourceNotFound"), "{unknown}");
}
