//! Topic aliases the server sends a v5 client (MQTT 5.0 §3.3.2.3.4): when
//! the client's CONNECT allows them (Topic Alias Maximum above 0), a
//! delivery's topic is sent in full with an alias the first time, then as
//! an empty topic with the alias alone.
//!
//! ```text
//!  delivery on T:  T has alias a      ──► PUBLISH topic "", Topic Alias a   (a becomes most recent)
//!                  T new, table short ──► PUBLISH topic T,  Topic Alias n+1 (n aliases so far)
//!                  T new, table full  ──► PUBLISH topic T,  Topic Alias a of the least recently
//!                                         used topic, which loses it (the client remaps a to T)
//! ```
//!
//! Aliases belong to one connection: a new connection starts with none.
//! The table holds at most the client's Topic Alias Maximum and
//! [`OUTBOUND_TOPIC_ALIASES_MAX`] entries, so replacing the least recently
//! used one is a scan of at most that many.

use std::collections::HashMap;

/// Topic aliases the server assigns per connection at most, whatever the
/// client's Topic Alias Maximum allows: bounds the table.
pub(crate) const OUTBOUND_TOPIC_ALIASES_MAX: u16 = 64;

/// The aliases assigned on one connection.
#[derive(Debug, Default)]
pub(crate) struct OutboundAliases {
    /// Aliases to assign at most (0: none).
    max: u16,
    /// Topic → (its alias, when it was last used).
    assigned: HashMap<String, (u16, u64)>,
    /// Counts uses: the recency of each entry.
    clock: u64,
}

impl OutboundAliases {
    /// A table for a client whose CONNECT said Topic Alias Maximum
    /// `client_max` (`None` or 0: the client takes none).
    pub(crate) fn new(client_max: Option<u16>) -> OutboundAliases {
        OutboundAliases {
            max: client_max.unwrap_or(0).min(OUTBOUND_TOPIC_ALIASES_MAX),
            ..OutboundAliases::default()
        }
    }

    /// The topic name and alias to send a delivery on `topic` with: the
    /// alias alone (an empty name) when `topic` has one, else the name with
    /// a new alias (or none when the client takes no aliases).
    pub(crate) fn assign(&mut self, topic: &str) -> (String, Option<u16>) {
        if self.max == 0 {
            return (topic.to_string(), None);
        }
        self.clock = self.clock.saturating_add(1);
        let now = self.clock;
        if let Some((alias, used)) = self.assigned.get_mut(topic) {
            *used = now;
            return (String::new(), Some(*alias));
        }
        let alias = if self.assigned.len() < usize::from(self.max) {
            u16::try_from(self.assigned.len() + 1).unwrap_or(self.max)
        } else {
            let oldest = self
                .assigned
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(topic, (alias, _))| (topic.clone(), *alias));
            let Some((oldest, alias)) = oldest else {
                return (topic.to_string(), None);
            };
            self.assigned.remove(&oldest);
            alias
        };
        assert!(alias >= 1 && alias <= self.max, "an alias within the client's maximum");
        self.assigned.insert(topic.to_string(), (alias, now));
        assert!(
            self.assigned.len() <= usize::from(self.max),
            "the alias table is bounded"
        );
        (topic.to_string(), Some(alias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_named_once_then_sent_by_its_alias() {
        let mut aliases = OutboundAliases::new(Some(2));
        assert_eq!(aliases.assign("a"), ("a".to_string(), Some(1)));
        assert_eq!(aliases.assign("b"), ("b".to_string(), Some(2)));
        assert_eq!(aliases.assign("a"), (String::new(), Some(1)));
        // Full: "b" is the least recently used, "c" takes its alias.
        assert_eq!(aliases.assign("c"), ("c".to_string(), Some(2)));
        assert_eq!(aliases.assign("c"), (String::new(), Some(2)));
        assert_eq!(
            aliases.assign("b"),
            ("b".to_string(), Some(1)),
            "\"a\" was least recent"
        );
        assert_eq!(aliases.assign("c"), (String::new(), Some(2)));
    }

    #[test]
    fn no_aliases_for_a_client_that_takes_none_and_never_above_the_bound() {
        let mut none = OutboundAliases::new(None);
        assert_eq!(none.assign("a"), ("a".to_string(), None));
        assert_eq!(none.assign("a"), ("a".to_string(), None));
        let mut many = OutboundAliases::new(Some(u16::MAX));
        for i in 0..1_000 {
            let (_, alias) = many.assign(&format!("t/{}", i % 100));
            assert!(alias.is_some_and(|alias| (1..=OUTBOUND_TOPIC_ALIASES_MAX).contains(&alias)));
        }
    }
}
