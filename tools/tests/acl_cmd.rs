//! `shardctl acl create/list/delete` as the real binary, logged in with
//! SASL PLAIN, against a real engine run with `--authorizer acl`: bindings
//! are made, filtered, refused to a principal that is not a super user,
//! kept across a restart (they live in the metadata Raft group) and deleted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

use std::process::{Command, Output};

mod common;

use common::{secured_engine, stdout_of};

/// `shardctl acl ARGS... --bootstrap ADDRESS`, logged in as `user`.
fn acl(address: &str, user: &str, password: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardctl"))
        .arg("acl")
        .args(args)
        .args(["--bootstrap", address])
        .env("SHARDCTL_SASL_USER", user)
        .env("SHARDCTL_SASL_PASSWORD", password)
        .output()
        .unwrap()
}

/// The binding lines of a `list` or `delete` output (after its header).
fn bindings(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .skip_while(|line| !line.starts_with("PRINCIPAL"))
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn acls_are_created_listed_kept_across_a_restart_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = secured_engine(dir.path(), "admin:admin-secret\nbob:bob-secret\n");
    let address = engine.listener_addr("SASL").to_string();
    let admin = |args: &[&str]| acl(&address, "admin", "admin-secret", args);

    let created = stdout_of(&admin(&[
        "create",
        "--principal",
        "User:bob",
        "--operation",
        "Read",
        "--operation",
        "describe",
        "--topic",
        "logs-",
        "--prefixed",
    ]));
    assert_eq!(created.lines().count(), 2, "{created}");
    assert!(
        created.contains("created Allow Read on Topic logs- (Prefixed) for User:bob"),
        "{created}"
    );
    stdout_of(&admin(&[
        "create",
        "--principal",
        "User:bob",
        "--operation",
        "Read",
        "--group",
        "bobs",
        "--deny",
    ]));

    let all = bindings(&stdout_of(&admin(&["list"])));
    assert_eq!(all.len(), 3, "{all:?}");
    let topics = bindings(&stdout_of(&admin(&[
        "list",
        "--topic",
        "logs-",
        "--pattern",
        "prefixed",
    ])));
    assert_eq!(topics.len(), 2, "{topics:?}");
    assert!(topics
        .iter()
        .all(|b| b[0] == "User:bob" && b[2] == "Topic" && b[4] == "Prefixed"));
    let applying = bindings(&stdout_of(&admin(&[
        "list",
        "--topic",
        "logs-app",
        "--pattern",
        "match",
    ])));
    assert_eq!(applying.len(), 2, "MATCH finds the prefix binding: {applying:?}");
    let denies = bindings(&stdout_of(&admin(&["list", "--deny"])));
    assert_eq!(denies.len(), 1, "{denies:?}");
    assert_eq!(denies[0][2..], ["Group", "bobs", "Literal", "Read", "Deny"]);

    // bob is no super user: the broker refuses him ACLs (CLUSTER_AUTHORIZATION_FAILED).
    let refused = acl(&address, "bob", "bob-secret", &["list"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("ClusterAuthorizationFailed"), "{stderr}");
    // A wrong password never gets that far.
    let wrong = acl(&address, "admin", "nope", &["list"]);
    assert_eq!(wrong.status.code(), Some(2));

    // The bindings are metadata: a restart (kill -9) keeps them.
    engine.restart();
    let kept = bindings(&stdout_of(&admin(&["list"])));
    assert_eq!(kept, all, "ACLs survive a restart");

    // delete needs a resource or a principal, then removes what matches.
    assert_eq!(admin(&["delete"]).status.code(), Some(2));
    let deleted = stdout_of(&admin(&[
        "delete",
        "--principal",
        "User:bob",
        "--topic",
        "logs-",
        "--pattern",
        "any",
    ]));
    assert!(deleted.starts_with("deleted 2 ACL bindings"), "{deleted}");
    let left = bindings(&stdout_of(&admin(&["list"])));
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0][3], "bobs");
}
