//! MQTT topic names and topic filters: what a PUBLISH may name, what a
//! SUBSCRIBE may ask for, and whether a filter matches a name (MQTT 5.0
//! §4.7, the same rules in 3.1.1 §4.7).
//!
//! ```text
//!  name:    levels separated by '/', e.g. "sensors/kitchen/temp"; no '+' or '#'
//!  filter:  levels of a name, or '+' (exactly one level), or '#' (this level
//!           and every one below, last level only): "sensors/+/temp", "sensors/#"
//!  "$..."   names starting with '$' (e.g. "$SYS/...") are the server's: a filter
//!           whose first level is '+' or '#' does not match them
//!  shared:  "$share/{ShareName}/{filter}": a share name of at least one character
//!           without '/', '+' or '#', then a valid filter (MQTT 5.0 §4.8.2)
//! ```
//!
//! Pure functions, no state: used by the codec to refuse bad names and
//! filters, and by the engine's subscription table to match.

/// Whether `name` is a valid topic name for a PUBLISH: at least one
/// character, no wildcard, no U+0000 (the codec already refused it), at
/// most 65,535 bytes (the string's length prefix bounds it).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#'])
}

/// Whether `filter` is a valid topic filter: at least one character, `+`
/// only as a whole level, `#` only as the whole last level.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// The share name and the filter of a shared subscription's filter
/// (`$share/{ShareName}/{filter}`); `None` when `filter` is not one or is
/// not a valid one.
pub fn shared_filter(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (name, inner) = rest.split_once('/')?;
    let valid_name = !name.is_empty() && !name.contains(['+', '#']);
    (valid_name && valid_topic_filter(inner)).then_some((name, inner))
}

/// Whether the topic filter `filter` (valid) matches the topic name `name`
/// (valid).
pub fn filter_matches(filter: &str, name: &str) -> bool {
    // A wildcard in the first level does not reach the server's own topics.
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut names = name.split('/');
    for level in filter.split('/') {
        match level {
            // "sport/#" also matches "sport" itself (the parent level).
            "#" => return true,
            "+" => {
                if names.next().is_none() {
                    return false;
                }
            }
            _ => {
                if names.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    names.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_wildcards_and_emptiness() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("$SYS/broker"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a+b"));
    }

    #[test]
    fn shared_filters_name_a_share_and_a_filter() {
        assert_eq!(shared_filter("$share/g/a/+"), Some(("g", "a/+")));
        assert_eq!(shared_filter("$share/workers/#"), Some(("workers", "#")));
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
            "$share/g/a#",
            "a/b",
            "$SYS/a",
        ] {
            assert_eq!(shared_filter(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_place_wildcards_on_whole_levels() {
        for good in ["#", "+", "a/#", "a/+/b", "+/+", "/+", "a//b", "$SYS/#"] {
            assert!(valid_topic_filter(good), "{good}");
        }
        for bad in ["", "a#", "a/#/b", "a/b+", "#/a", "a/+b", "##"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        // §4.7.1.2: "sport/tennis/player1/#".
        let filter = "sport/tennis/player1/#";
        assert!(filter_matches(filter, "sport/tennis/player1"));
        assert!(filter_matches(filter, "sport/tennis/player1/ranking"));
        assert!(filter_matches(filter, "sport/tennis/player1/score/wimbledon"));
        assert!(!filter_matches(filter, "sport/tennis/player2"));
        assert!(filter_matches("sport/#", "sport"));
        assert!(filter_matches("#", "anything/at/all"));
        // §4.7.1.3: "+".
        assert!(filter_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!filter_matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!filter_matches("sport/+", "sport"));
        assert!(filter_matches("sport/+", "sport/"));
        assert!(filter_matches("+/+", "/finance"));
        assert!(filter_matches("/+", "/finance"));
        assert!(!filter_matches("+", "/finance"));
        // Exact levels, empty levels.
        assert!(filter_matches("a/b", "a/b"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(!filter_matches("a/b/c", "a/b"));
        assert!(filter_matches("a//b", "a//b"));
    }

    #[test]
    fn wildcards_at_the_root_skip_dollar_topics() {
        assert!(!filter_matches("#", "$SYS/uptime"));
        assert!(!filter_matches("+/uptime", "$SYS/uptime"));
        assert!(filter_matches("$SYS/#", "$SYS/uptime"));
        assert!(filter_matches("$SYS/+", "$SYS/uptime"));
        assert!(filter_matches("a/#", "a/$x"));
    }
}
