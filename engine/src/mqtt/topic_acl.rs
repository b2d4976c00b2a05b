//! Per-MQTT-topic access rules (`--mqtt-acl-file`), in mosquitto's
//! `acl_file` format and with its meaning, so a mosquitto user's file works
//! unchanged. Plain data and pure functions: the file's text is read once
//! at start (`runtime.rs`), parsed here, and shared read-only by every
//! shard (`Arc`); each check is a walk over a few rules.
//!
//! ```text
//! # a comment (a line whose first character is '#'); blank lines are skipped
//! topic [read|write|readwrite|deny] FILTER     rules before any `user` line: anonymous clients
//! user NAME                                    starts NAME's section (NAME may hold spaces)
//! topic [read|write|readwrite|deny] FILTER     ... rules of NAME
//! pattern [read|write|readwrite|deny] FILTER   every client, wherever the line is; a level that
//!                                              is exactly %c is the client id, %u the user name
//! ```
//!
//! Without an access word the rule grants `readwrite` (so `topic read` alone
//! names the topic "read", as in mosquitto). FILTER is everything after the
//! access word, spaces included, and may use `+` and `#`.
//!
//! A check of (client, topic, read or write), as mosquitto's default check:
//! 1. the client's own rules — its user's section, or the anonymous rules
//!    when it has no user name; a user without a section has none — `deny`
//!    rules first, then the rest in file order: the first whose filter
//!    matches the topic denies (`deny`) or allows (its access covers the
//!    operation); a matching rule without the access is passed over;
//! 2. the same over the `pattern` rules, with `%c` and `%u` put in; a
//!    client whose id or user name holds `+` or `#` gets nothing from them,
//!    nor does a rule with `%u` for a client without a user name;
//! 3. nothing allowed: denied.
//!
//! A topic starting with `$` is matched only by a filter starting with `$`.
//! SUBSCRIBE is not checked against the rules (mosquitto grants every
//! subscription and checks read access on each message it would deliver):
//! the connection checks each delivery (`session.rs`).

use std::{collections::HashMap, fmt};

use shardline_net::mqtt::{filter_matches, valid_topic_filter};

/// Rules one file may hold: each delivered message is checked against a
/// user's rules and the patterns, so the count bounds that work (and the
/// memory the rules hold).
pub(crate) const ACL_RULES_MAX: usize = 10_000;

/// Largest ACL file read (checked before reading).
pub(crate) const ACL_FILE_BYTES_MAX: u64 = 1 << 20;

/// What a client wants to do on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicAccess {
    /// Receive its messages (a delivery, a retained message).
    Read,
    /// Publish to it (a PUBLISH, a will).
    Write,
}

/// What one rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Deny,
    Read,
    Write,
    ReadWrite,
}

impl Grant {
    fn covers(self, access: TopicAccess) -> bool {
        matches!(
            (self, access),
            (Grant::ReadWrite, _) | (Grant::Read, TopicAccess::Read) | (Grant::Write, TopicAccess::Write)
        )
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    grant: Grant,
    filter: String,
}

/// Who asks: the client id and, when the client logged in, its user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AclClient<'a> {
    /// The user of a login that checked (`None`: anonymous).
    pub(crate) user: Option<&'a str>,
    /// The client identifier (or the one assigned).
    pub(crate) client_id: &'a str,
}

/// The rules of one ACL file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TopicAcl {
    /// Rules before the first `user` line; `deny` ones first.
    anonymous: Vec<Rule>,
    /// Each user's rules; `deny` ones first.
    users: HashMap<String, Vec<Rule>>,
    /// The `pattern` rules; `deny` ones first.
    patterns: Vec<Rule>,
}

/// Why an ACL file is refused: its line (from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AclFileError {
    /// The line, counted from 1 (0: the file as a whole).
    pub(crate) line: usize,
    /// What is wrong with it.
    pub(crate) why: String,
}

impl fmt::Display for AclFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.why)
        } else {
            write!(f, "line {}: {}", self.line, self.why)
        }
    }
}

impl TopicAcl {
    /// Parses the text of an ACL file.
    pub(crate) fn parse(text: &str) -> Result<TopicAcl, AclFileError> {
        let mut acl = TopicAcl::default();
        let mut user: Option<String> = None;
        let mut rules = 0usize;
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let refuse = |why: String| AclFileError { line: line_number, why };
            let line = raw.trim_end();
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim_start();
            let Some((keyword, rest)) = split_word(line) else {
                continue;
            };
            match keyword {
                "user" => {
                    let name = rest.trim();
                    if name.is_empty() {
                        return Err(refuse("`user` without a user name".to_string()));
                    }
                    acl.users.entry(name.to_string()).or_default();
                    user = Some(name.to_string());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(refuse)?;
                    rules += 1;
                    if rules > ACL_RULES_MAX {
                        return Err(refuse(format!("more than {ACL_RULES_MAX} rules")));
                    }
                    let list = match (keyword, &user) {
                        ("pattern", _) => &mut acl.patterns,
                        (_, None) => &mut acl.anonymous,
                        (_, Some(name)) => acl.users.entry(name.clone()).or_default(),
                    };
                    list.push(rule);
                }
                other => {
                    return Err(refuse(format!(
                        "`{other}` is not `topic`, `pattern` or `user` (nor a comment, which starts with `#`)"
                    )))
                }
            }
        }
        // `deny` rules are checked first (stable: the rest keep file order).
        for list in std::iter::once(&mut acl.anonymous)
            .chain(std::iter::once(&mut acl.patterns))
            .chain(acl.users.values_mut())
        {
            list.sort_by_key(|rule| rule.grant != Grant::Deny);
        }
        assert!(
            acl.anonymous.len() + acl.patterns.len() <= ACL_RULES_MAX,
            "rules bounded"
        );
        Ok(acl)
    }

    /// Whether `client` may `access` the topic name `topic`.
    pub(crate) fn allows(&self, client: AclClient<'_>, topic: &str, access: TopicAccess) -> bool {
        assert!(!topic.is_empty(), "a topic name has at least one character");
        let own = match client.user {
            Some(user) => self.users.get(user).map(Vec::as_slice),
            None => Some(self.anonymous.as_slice()),
        };
        if let Some(decision) =
            own.and_then(|rules| decide(rules.iter().map(|r| (r.grant, r.filter.as_str())), topic, access))
        {
            return decision;
        }
        if self.patterns.is_empty() {
            return false;
        }
        let dangerous = |name: &str| name.contains(['+', '#']);
        if dangerous(client.client_id) || client.user.is_some_and(dangerous) {
            return false;
        }
        let substituted = self
            .patterns
            .iter()
            .filter_map(|rule| Some((rule.grant, substitute(&rule.filter, client)?)));
        let decision = decide_owned(substituted, topic, access);
        decision.unwrap_or(false)
    }
}

/// The first word of `line` and the rest after the spaces that follow it.
fn split_word(line: &str) -> Option<(&str, &str)> {
    if line.is_empty() {
        return None;
    }
    Some(match line.split_once([' ', '\t']) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (line, ""),
    })
}

/// A rule's `[ACCESS] FILTER`.
fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = split_word(rest).ok_or_else(|| "a rule without a topic".to_string())?;
    let grant = match first {
        "read" => Some(Grant::Read),
        "write" => Some(Grant::Write),
        "readwrite" => Some(Grant::ReadWrite),
        "deny" => Some(Grant::Deny),
        _ => None,
    };
    let (grant, filter) = match (grant, after.trim()) {
        // One word only: it is the topic, granted read and write.
        (_, "") => (Grant::ReadWrite, first),
        (Some(grant), filter) => (grant, filter),
        (None, _) => return Err(format!("`{first}` is not an access (read, write, readwrite or deny)")),
    };
    if !valid_topic_filter(filter) {
        return Err(format!("`{filter}` is not a valid topic filter"));
    }
    Ok(Rule {
        grant,
        filter: filter.to_string(),
    })
}

/// `filter` with each level that is exactly `%c` or `%u` replaced by the
/// client id or user name; `None` when a level needs a name the client
/// lacks (or one that is empty or holds a `/`, which could not stand for
/// one level).
fn substitute(filter: &str, client: AclClient<'_>) -> Option<String> {
    if !filter.contains('%') {
        return Some(filter.to_string());
    }
    let one_level = |name: &str| !name.is_empty() && !name.contains('/');
    let mut levels = Vec::new();
    for level in filter.split('/') {
        levels.push(match level {
            "%c" if one_level(client.client_id) => client.client_id,
            "%u" => client.user.filter(|user| one_level(user))?,
            "%c" => return None,
            other => other,
        });
    }
    Some(levels.join("/"))
}

/// The decision of the first rule (`deny` ones come first) whose filter
/// matches `topic` and that denies or covers `access`; `None`: none does.
fn decide<'a>(rules: impl Iterator<Item = (Grant, &'a str)>, topic: &str, access: TopicAccess) -> Option<bool> {
    for (grant, filter) in rules {
        if !matches(filter, topic) {
            continue;
        }
        if grant == Grant::Deny {
            return Some(false);
        }
        if grant.covers(access) {
            return Some(true);
        }
    }
    None
}

/// [`decide`] over substituted filters.
fn decide_owned(rules: impl Iterator<Item = (Grant, String)>, topic: &str, access: TopicAccess) -> Option<bool> {
    for (grant, filter) in rules {
        if let Some(decision) = decide(std::iter::once((grant, filter.as_str())), topic, access) {
            return Some(decision);
        }
    }
    None
}

/// Whether `filter` matches `topic`, a `$` topic only by a `$` filter.
fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    filter_matches(filter, topic)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;

    const FILE: &str = "\
# anonymous clients
topic read public/#

user alice
topic write sensors/#
topic read alerts/#
topic deny alerts/secret
user bob smith
topic readwrite bob/stuff
pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
";

    fn anonymous(client_id: &str) -> AclClient<'_> {
        AclClient { user: None, client_id }
    }

    fn user<'a>(user: &'a str, client_id: &'a str) -> AclClient<'a> {
        AclClient {
            user: Some(user),
            client_id,
        }
    }

    #[test]
    fn users_get_their_section_anonymous_clients_the_first() {
        let acl = TopicAcl::parse(FILE).unwrap();
        let alice = user("alice", "a1");
        assert!(acl.allows(alice, "sensors/kitchen/temp", TopicAccess::Write));
        assert!(!acl.allows(alice, "sensors/kitchen/temp", TopicAccess::Read));
        assert!(acl.allows(alice, "alerts/fire", TopicAccess::Read));
        assert!(!acl.allows(alice, "alerts/fire", TopicAccess::Write));
        // The deny rule goes first even though it comes last.
        assert!(!acl.allows(alice, "alerts/secret", TopicAccess::Read));
        // Anonymous rules are not alice's.
        assert!(!acl.allows(alice, "public/news", TopicAccess::Read));
        assert!(acl.allows(anonymous("x"), "public/news", TopicAccess::Read));
        assert!(!acl.allows(anonymous("x"), "public/news", TopicAccess::Write));
        assert!(!acl.allows(anonymous("x"), "sensors/a", TopicAccess::Write));
        // A user name with a space; a user without a section has only patterns.
        assert!(acl.allows(user("bob smith", "b"), "bob/stuff", TopicAccess::Write));
        assert!(!acl.allows(user("carol", "c"), "public/news", TopicAccess::Read));
    }

    #[test]
    fn patterns_put_in_the_client_id_and_user_name() {
        let acl = TopicAcl::parse(FILE).unwrap();
        let alice = user("alice", "dev7");
        assert!(acl.allows(alice, "devices/dev7/temp", TopicAccess::Write));
        assert!(acl.allows(anonymous("dev7"), "devices/dev7/temp", TopicAccess::Read));
        assert!(!acl.allows(alice, "devices/dev8/temp", TopicAccess::Write));
        assert!(!acl.allows(alice, "devices/dev7/locked", TopicAccess::Write));
        assert!(acl.allows(alice, "users/alice/inbox", TopicAccess::Read));
        assert!(!acl.allows(alice, "users/bob/inbox", TopicAccess::Read));
        // %u needs a user name.
        assert!(!acl.allows(anonymous("alice"), "users/alice/inbox", TopicAccess::Read));
        // A wildcard in the id or name gets nothing from patterns.
        assert!(!acl.allows(anonymous("#"), "devices/#/x", TopicAccess::Read));
        assert!(!acl.allows(user("+", "d"), "users/+/inbox", TopicAccess::Read));
        // A '/' in the id cannot stand for one level.
        assert!(!acl.allows(anonymous("a/b"), "devices/a/b/x", TopicAccess::Write));
    }

    #[test]
    fn dollar_topics_need_a_dollar_filter() {
        let acl = TopicAcl::parse("topic read #\ntopic read $SYS/#\n").unwrap();
        assert!(acl.allows(anonymous("x"), "a/b", TopicAccess::Read));
        assert!(acl.allows(anonymous("x"), "$SYS/load", TopicAccess::Read));
        let no_sys = TopicAcl::parse("topic read #\n").unwrap();
        assert!(!no_sys.allows(anonymous("x"), "$SYS/load", TopicAccess::Read));
    }

    #[test]
    fn a_rule_without_access_grants_both_and_filters_keep_spaces() {
        let acl = TopicAcl::parse("topic readwrite a b/c\ntopic read\ntopic deny  x/#  \n").unwrap();
        assert!(acl.allows(anonymous("x"), "a b/c", TopicAccess::Write));
        assert!(acl.allows(anonymous("x"), "read", TopicAccess::Read));
        assert!(!acl.allows(anonymous("x"), "x/y", TopicAccess::Read));
        assert_eq!(acl.anonymous[0].grant, Grant::Deny, "deny first");
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let cases = [
            ("topic read a/#\nfrobnicate x\n", 2),
            ("user\n", 1),
            ("# ok\ntopic read a/#/b\n", 2),
            ("topic\n", 1),
            ("\n\ntopic reed a/b\n", 3),
            ("pattern write a+/b\n", 1),
            // A topic with a space needs its access word (as in mosquitto).
            ("topic a b/c\n", 1),
        ];
        for (text, line) in cases {
            let error = TopicAcl::parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
        let many = "topic read a\n".repeat(ACL_RULES_MAX + 1);
        assert_eq!(TopicAcl::parse(&many).unwrap_err().line, ACL_RULES_MAX + 1);
    }

    #[test]
    fn an_empty_file_denies_everything() {
        let acl = TopicAcl::parse("# nothing\n\n").unwrap();
        assert!(!acl.allows(anonymous("x"), "a", TopicAccess::Read));
        assert!(!acl.allows(user("u", "x"), "a", TopicAccess::Write));
    }
}
