//! Access control lists as the metadata group stores them: Kafka's ACL
//! bindings (principal, host, resource pattern, operation, permission),
//! with Kafka's numeric codes, their bounds, and their FlatBuffers form.
//!
//! The group only stores bindings; deciding what a binding allows is the
//! engine's (`engine/src/acl`). A binding is a value: the image holds a set
//! of them, creating one that exists changes nothing and deleting one that
//! does not exist changes nothing, as in Kafka.
//!
//! ```text
//! table Acl (image.fbs)     Kafka code of each enum field, int8
//!   principal: string        "User:alice", "User:*"
//!   host: string             "10.0.0.7", "*"
//!   resource_type: int8      2 Topic, 3 Group, 4 Cluster, 5 TransactionalId
//!   resource_name: string    "orders", "app-", "*", "kafka-cluster"
//!   pattern_type: int8       3 Literal, 4 Prefixed
//!   operation: int8          2 All ... 12 IdempotentWrite
//!   permission: int8         2 Deny, 3 Allow
//! ```

use crate::{codec::DecodeError, generated::shardline::meta as fb};

/// Most ACL bindings the image holds: each is checked (in the worst case)
/// by every authorization, so the set is bounded like every other table.
/// Kafka clusters with more than a few thousand ACLs are rare.
pub const ACLS_MAX: usize = 10_000;

/// Longest principal (`Type:name`) a binding may name, in bytes.
pub const ACL_PRINCIPAL_LENGTH_MAX: usize = 1024;

/// Longest host a binding may name, in bytes (an IPv6 address with a zone
/// fits many times over).
pub const ACL_HOST_LENGTH_MAX: usize = 255;

/// Longest resource name a binding may name, in bytes (topic names stop at
/// 249; group and transactional ids are client strings).
pub const ACL_RESOURCE_NAME_LENGTH_MAX: usize = 1024;

/// The one name of the cluster resource, as in Kafka.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal, $text:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Kafka's numeric code.
            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)+
                }
            }

            /// The value with Kafka's code `code`, if it is one of these.
            pub fn from_code(code: i8) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Kafka's name (as its tools print it).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value named `name`, ignoring case and `_`.
            pub fn from_name(name: &str) -> Option<$name> {
                let wanted: String = name.chars().filter(|c| *c != '_').collect();
                Self::ALL.iter().copied().find(|value| value.name().eq_ignore_ascii_case(&wanted))
            }
        }
    };
}

kafka_enum! {
    /// What kind of resource a binding is about.
    AclResourceType {
        /// A topic.
        Topic = 2, "Topic";
        /// A consumer group.
        Group = 3, "Group";
        /// The cluster (one resource, [`CLUSTER_RESOURCE_NAME`]).
        Cluster = 4, "Cluster";
        /// A transactional id.
        TransactionalId = 5, "TransactionalId";
    }
}

kafka_enum! {
    /// How a binding's resource name matches.
    AclPatternType {
        /// The name exactly; `*` matches every name.
        Literal = 3, "Literal";
        /// Every name starting with it.
        Prefixed = 4, "Prefixed";
    }
}

kafka_enum! {
    /// What a binding allows or denies.
    AclOperation {
        /// Every operation.
        All = 2, "All";
        /// Consume; commit and fetch group offsets.
        Read = 3, "Read";
        /// Produce.
        Write = 4, "Write";
        /// Create topics.
        Create = 5, "Create";
        /// Delete topics, groups.
        Delete = 6, "Delete";
        /// Add partitions; change ACLs (on the cluster).
        Alter = 7, "Alter";
        /// See that it exists and its metadata.
        Describe = 8, "Describe";
        /// Inter-broker requests (follower fetches).
        ClusterAction = 9, "ClusterAction";
        /// Read configs.
        DescribeConfigs = 10, "DescribeConfigs";
        /// Change configs.
        AlterConfigs = 11, "AlterConfigs";
        /// Idempotent producer ids.
        IdempotentWrite = 12, "IdempotentWrite";
    }
}

kafka_enum! {
    /// Whether a binding allows or denies.
    AclPermission {
        /// Refuses; wins over any allow.
        Deny = 2, "Deny";
        /// Allows, unless a deny matches too.
        Allow = 3, "Allow";
    }
}

/// One ACL binding. Ordered so the image keeps a set of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    /// Resource kind.
    pub resource_type: AclResourceType,
    /// Literal name, prefix, or `*`.
    pub resource_name: String,
    /// How `resource_name` matches.
    pub pattern_type: AclPatternType,
    /// `User:NAME`, or `User:*` for every principal.
    pub principal: String,
    /// The client's IP address as text, or `*` for every host.
    pub host: String,
    /// What is allowed or denied.
    pub operation: AclOperation,
    /// Allowed or denied.
    pub permission: AclPermission,
}

impl AclBinding {
    /// Checks a binding a client asked to create: non-empty, bounded fields,
    /// a `Type:name` principal, the cluster named as Kafka names it.
    pub fn validate(&self) -> Result<(), String> {
        let bounded = |what: &str, value: &str, max: usize| {
            if value.is_empty() || value.len() > max {
                Err(format!("{what} must be 1 to {max} bytes, not {}", value.len()))
            } else {
                Ok(())
            }
        };
        bounded("principal", &self.principal, ACL_PRINCIPAL_LENGTH_MAX)?;
        bounded("host", &self.host, ACL_HOST_LENGTH_MAX)?;
        bounded("resource name", &self.resource_name, ACL_RESOURCE_NAME_LENGTH_MAX)?;
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(format!("principal {:?} is not TYPE:NAME", self.principal)),
        }
        if self.resource_type == AclResourceType::Cluster
            && (self.resource_name != CLUSTER_RESOURCE_NAME || self.pattern_type != AclPatternType::Literal)
        {
            return Err(format!(
                "the cluster resource is the literal name {CLUSTER_RESOURCE_NAME}"
            ));
        }
        Ok(())
    }
}

pub(crate) fn acl_to_fb(acl: &AclBinding) -> fb::Acl {
    fb::Acl {
        principal: Some(acl.principal.clone()),
        host: Some(acl.host.clone()),
        resource_type: acl.resource_type.code(),
        resource_name: Some(acl.resource_name.clone()),
        pattern_type: acl.pattern_type.code(),
        operation: acl.operation.code(),
        permission: acl.permission.code(),
    }
}

/// Decodes an ACL read from an untrusted buffer: every field present, every
/// code known, every bound kept (so the engine may rely on them).
pub(crate) fn acl_from_fb(acl: fb::Acl) -> Result<AclBinding, DecodeError> {
    fn code<T>(value: i8, from_code: fn(i8) -> Option<T>, field: &str) -> Result<T, DecodeError> {
        from_code(value).ok_or_else(|| DecodeError::new(format!("{field} has unknown code {value}")))
    }
    let binding = AclBinding {
        principal: acl.principal.ok_or_else(|| DecodeError::missing("Acl.principal"))?,
        host: acl.host.ok_or_else(|| DecodeError::missing("Acl.host"))?,
        resource_type: code(acl.resource_type, AclResourceType::from_code, "Acl.resource_type")?,
        resource_name: acl
            .resource_name
            .ok_or_else(|| DecodeError::missing("Acl.resource_name"))?,
        pattern_type: code(acl.pattern_type, AclPatternType::from_code, "Acl.pattern_type")?,
        operation: code(acl.operation, AclOperation::from_code, "Acl.operation")?,
        permission: code(acl.permission, AclPermission::from_code, "Acl.permission")?,
    };
    binding
        .validate()
        .map_err(|reason| DecodeError::new(format!("Acl: {reason}")))?;
    Ok(binding)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_acl(principal: &str, name: &str) -> AclBinding {
        AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: name.to_owned(),
            pattern_type: AclPatternType::Prefixed,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation: AclOperation::Write,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for value in AclOperation::ALL {
            assert_eq!(AclOperation::from_code(value.code()), Some(*value));
            assert_eq!(AclOperation::from_name(value.name()), Some(*value));
        }
        assert_eq!(
            AclOperation::from_name("cluster_action"),
            Some(AclOperation::ClusterAction)
        );
        assert_eq!(AclOperation::from_code(1), None, "ANY is a filter, not a binding");
        assert_eq!(AclResourceType::from_code(7), None, "User resources are not served");
        assert_eq!(AclPermission::from_name("ALLOW"), Some(AclPermission::Allow));
    }

    #[test]
    fn validation_refuses_what_kafka_refuses() {
        assert!(sample_acl("User:alice", "app-").validate().is_ok());
        assert!(sample_acl("alice", "app-").validate().is_err());
        assert!(sample_acl("User:", "app-").validate().is_err());
        assert!(sample_acl("User:alice", "").validate().is_err());
        let mut cluster = sample_acl("User:alice", "kafka-cluster");
        cluster.resource_type = AclResourceType::Cluster;
        assert!(cluster.validate().is_err(), "prefixed cluster");
        cluster.pattern_type = AclPatternType::Literal;
        assert!(cluster.validate().is_ok());
        cluster.resource_name = "other".into();
        assert!(cluster.validate().is_err());
    }

    #[test]
    fn fb_round_trip_and_unknown_codes() {
        let acl = sample_acl("User:bob", "orders");
        assert_eq!(acl_from_fb(acl_to_fb(&acl)).ok(), Some(acl.clone()));
        let mut bad = acl_to_fb(&acl);
        bad.operation = 99;
        assert!(acl_from_fb(bad).is_err());
        let mut missing = acl_to_fb(&acl);
        missing.host = None;
        assert!(acl_from_fb(missing).is_err());
    }
}
