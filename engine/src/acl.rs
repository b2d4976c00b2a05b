//! Who is asking, and what they may do: the principal of each connection
//! and the one authorization decision every API asks for.
//!
//! ```text
//! connection ──► Session { principal, host }      (one per connection, on its shard)
//!                  principal: User:<SASL user>           after SASL
//!                             User:<certificate subject> after mTLS, no SASL
//!                             User:ANONYMOUS             otherwise
//! handler ──► Access::check(image, operation, resource)
//!               └─► Authorizer::authorize ── super user? ── ACLs of the image (raft) ──► Ok | NotAuthorized
//! ```
//!
//! Kafka's model (`kafka.security.authorizer.AclAuthorizer` semantics, our
//! own code): the ACLs that apply to a resource are those of its type whose
//! pattern matches its name (a literal name, the literal `*`, or a prefix).
//! A deny for the principal (or `User:*`) from the host (or `*`) for the
//! operation (or `All`) wins; otherwise an allow for it grants, where an
//! allow of Read, Write, Delete or Alter also grants Describe and an allow of
//! AlterConfigs also grants DescribeConfigs. A resource no ACL applies to
//! is refused unless `--allow-everyone-if-no-acl-found`. Super users
//! (`--super-user`) may do everything; with `--authorizer none` (the
//! default) everyone may, as Kafka without an authorizer.
//!
//! The ACLs live in the metadata image (`shardline_raft::AclBinding`), so
//! every shard decides from its own read-only copy; a decision scans at
//! most `ACLS_MAX` bindings.

use std::{cell::RefCell, collections::BTreeSet, fmt, net::IpAddr};

use shardline_raft::{AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType, MetadataImage};

use crate::error::EngineError;

/// Longest principal a connection may carry, in bytes (a certificate
/// subject can be long; ACLs cannot name a longer one anyway).
pub(crate) const PRINCIPAL_LENGTH_MAX: usize = shardline_raft::ACL_PRINCIPAL_LENGTH_MAX;

/// Who a connection is: `User:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Principal(String);

impl Principal {
    /// The principal of a connection that proved nothing.
    pub(crate) fn anonymous() -> Principal {
        Principal("User:ANONYMOUS".to_owned())
    }

    /// `User:name`, cut to [`PRINCIPAL_LENGTH_MAX`] bytes (at a character
    /// boundary) so no connection carries an unbounded string.
    pub(crate) fn user(name: &str) -> Principal {
        let mut principal = format!("User:{name}");
        if principal.len() > PRINCIPAL_LENGTH_MAX {
            let mut end = PRINCIPAL_LENGTH_MAX;
            while !principal.is_char_boundary(end) {
                end -= 1;
            }
            principal.truncate(end);
        }
        assert!(principal.len() <= PRINCIPAL_LENGTH_MAX);
        Principal(principal)
    }

    /// A principal as written on the command line or sent by the SASL
    /// exchange (`User:alice`).
    pub(crate) fn parse(text: &str) -> Result<Principal, String> {
        match text.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() && text.len() <= PRINCIPAL_LENGTH_MAX => {
                Ok(Principal(text.to_owned()))
            }
            _ => Err(format!("principal {text:?} is not TYPE:NAME (e.g. User:admin)")),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One connection's identity: its principal (set once authentication is
/// over) and the client's IP address. Lives on the connection's shard.
#[derive(Debug)]
pub(crate) struct Session {
    principal: RefCell<Principal>,
    /// The peer's IP address as text (`*` matches it in ACLs); empty when
    /// the socket had none.
    host: String,
}

impl Session {
    /// A session for a connection from `peer`, with the certificate subject
    /// its TLS handshake proved, if any.
    pub(crate) fn new(peer: Option<IpAddr>, tls_subject: Option<&str>) -> Session {
        Session {
            principal: RefCell::new(tls_subject.map_or_else(Principal::anonymous, Principal::user)),
            host: peer.map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }

    /// The SASL exchange proved `principal`: it replaces the certificate's.
    pub(crate) fn authenticated(&self, principal: Principal) {
        *self.principal.borrow_mut() = principal;
    }

    pub(crate) fn principal(&self) -> Principal {
        self.principal.borrow().clone()
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

/// What an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
    TransactionalId(&'a str),
}

impl Resource<'_> {
    fn kind(self) -> AclResourceType {
        match self {
            Resource::Topic(_) => AclResourceType::Topic,
            Resource::Group(_) => AclResourceType::Group,
            Resource::Cluster => AclResourceType::Cluster,
            Resource::TransactionalId(_) => AclResourceType::TransactionalId,
        }
    }

    fn name(&self) -> &str {
        match self {
            Resource::Topic(name) | Resource::Group(name) | Resource::TransactionalId(name) => name,
            Resource::Cluster => shardline_raft::CLUSTER_RESOURCE_NAME,
        }
    }
}

/// What the ACLs say about one request of one principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed,
    Denied,
    /// No ACL applies to the resource at all.
    NoAclFound,
}

/// Whether `binding`'s pattern covers `resource`.
fn pattern_matches(binding: &AclBinding, kind: AclResourceType, name: &str) -> bool {
    binding.resource_type == kind
        && match binding.pattern_type {
            AclPatternType::Literal => binding.resource_name == "*" || binding.resource_name == name,
            AclPatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
        }
}

/// The operations whose allow grants `operation` (Kafka's implied
/// operations), `All` included.
fn granting(operation: AclOperation) -> &'static [AclOperation] {
    use AclOperation::{All, Alter, AlterConfigs, Delete, Describe, DescribeConfigs, Read, Write};
    match operation {
        Describe => &[All, Describe, Read, Write, Delete, Alter],
        DescribeConfigs => &[All, DescribeConfigs, AlterConfigs],
        Read => &[All, Read],
        Write => &[All, Write],
        Delete => &[All, Delete],
        Alter => &[All, Alter],
        AlterConfigs => &[All, AlterConfigs],
        AclOperation::Create => &[All, AclOperation::Create],
        AclOperation::ClusterAction => &[All, AclOperation::ClusterAction],
        AclOperation::IdempotentWrite => &[All, AclOperation::IdempotentWrite],
        All => &[All],
    }
}

/// Kafka's decision for `principal` at `host` doing `operation` on
/// `resource`, from `acls`: deny wins, then allow (with implied
/// operations), else [`Decision::Denied`] or, when no ACL applies to the
/// resource, [`Decision::NoAclFound`]. Pure: the unit of the proptests.
pub(crate) fn decide<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding>,
    principal: &str,
    host: &str,
    operation: AclOperation,
    resource: Resource<'_>,
) -> Decision {
    let kind = resource.kind();
    let name = resource.name();
    let mut any = false;
    let mut allowed = false;
    for binding in acls.into_iter().filter(|b| pattern_matches(b, kind, name)) {
        any = true;
        let who = binding.principal == principal || binding.principal == "User:*";
        let from = binding.host == "*" || binding.host == host;
        if !(who && from) {
            continue;
        }
        match binding.permission {
            AclPermission::Deny if binding.operation == operation || binding.operation == AclOperation::All => {
                return Decision::Denied;
            }
            AclPermission::Deny => {}
            AclPermission::Allow => allowed |= granting(operation).contains(&binding.operation),
        }
    }
    match (allowed, any) {
        (true, _) => Decision::Allowed,
        (false, true) => Decision::Denied,
        (false, false) => Decision::NoAclFound,
    }
}

/// `--authorizer`, `--super-user`, `--allow-everyone-if-no-acl-found`:
/// made once at start, shared read-only by every shard's connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authorizer {
    /// `--authorizer acl`; off, everyone may do everything.
    enabled: bool,
    super_users: BTreeSet<Principal>,
    allow_if_no_acl: bool,
}

impl Authorizer {
    pub(crate) fn new(enabled: bool, super_users: impl IntoIterator<Item = Principal>, allow_if_no_acl: bool) -> Self {
        Authorizer {
            enabled,
            super_users: super_users.into_iter().collect(),
            allow_if_no_acl,
        }
    }

    /// The one authorization decision: `Ok` when `session` may do
    /// `operation` on `resource` under `image`'s ACLs, else
    /// [`EngineError::NotAuthorized`] naming the resource kind (which
    /// `error::kafka_code` turns into TOPIC_, GROUP_, CLUSTER_ or
    /// TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
    pub(crate) fn authorize(
        &self,
        image: &MetadataImage,
        session: &Session,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> Result<(), EngineError> {
        if !self.enabled {
            return Ok(());
        }
        let principal = session.principal();
        if self.super_users.contains(&principal) {
            return Ok(());
        }
        let decision = decide(&image.acls, principal.as_str(), session.host(), operation, resource);
        let allowed = match decision {
            Decision::Allowed => true,
            Decision::Denied => false,
            Decision::NoAclFound => self.allow_if_no_acl,
        };
        if allowed {
            Ok(())
        } else {
            tracing::debug!(%principal, host = session.host(), ?operation, ?resource, ?decision, "not authorized");
            Err(EngineError::NotAuthorized(resource.kind()))
        }
    }

    /// Kafka's `authorizeByResourceType`, simplified: whether `session` may
    /// do `operation` on some resource of `kind` — a super user, no
    /// authorizer, or an allow binding for it that no deny on every name
    /// (`*` literal) takes back. InitProducerId of an idempotent producer
    /// asks this for Write on topics.
    pub(crate) fn allows_any(
        &self,
        image: &MetadataImage,
        session: &Session,
        operation: AclOperation,
        kind: AclResourceType,
    ) -> bool {
        if !self.enabled {
            return true;
        }
        let principal = session.principal();
        if self.super_users.contains(&principal) {
            return true;
        }
        let applies = |binding: &&AclBinding| {
            binding.resource_type == kind
                && (binding.principal == principal.as_str() || binding.principal == "User:*")
                && (binding.host == "*" || binding.host == session.host())
        };
        let mut bindings = image.acls.iter().filter(applies);
        let denied_everywhere = bindings.clone().any(|b| {
            b.permission == AclPermission::Deny
                && b.pattern_type == AclPatternType::Literal
                && b.resource_name == "*"
                && (b.operation == operation || b.operation == AclOperation::All)
        });
        !denied_everywhere
            && bindings.any(|b| b.permission == AclPermission::Allow && granting(operation).contains(&b.operation))
    }
}

/// What one connection's handlers check with: its session and the
/// broker's authorizer.
#[derive(Debug)]
pub(crate) struct Access {
    pub(crate) authorizer: std::rc::Rc<Authorizer>,
    pub(crate) session: std::rc::Rc<Session>,
}

impl Access {
    /// [`Authorizer::authorize`] for this connection.
    pub(crate) fn check(
        &self,
        image: &MetadataImage,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> Result<(), EngineError> {
        self.authorizer.authorize(image, &self.session, operation, resource)
    }

    /// Whether [`Access::check`] would pass.
    pub(crate) fn allows(&self, image: &MetadataImage, operation: AclOperation, resource: Resource<'_>) -> bool {
        self.check(image, operation, resource).is_ok()
    }

    /// May this connection create `topic` (Create on the cluster or on the
    /// topic, as Kafka asks for CreateTopics and auto-creation)?
    pub(crate) fn may_create_topic(&self, image: &MetadataImage, topic: &str) -> Result<(), EngineError> {
        self.check(image, AclOperation::Create, Resource::Cluster)
            .or_else(|_| self.check(image, AclOperation::Create, Resource::Topic(topic)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use proptest::prelude::*;

    use super::*;

    fn binding(
        principal: &str,
        kind: AclResourceType,
        name: &str,
        pattern: AclPatternType,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.to_owned(),
            pattern_type: pattern,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation,
            permission,
        }
    }

    fn allow_topic(principal: &str, name: &str, pattern: AclPatternType, operation: AclOperation) -> AclBinding {
        binding(
            principal,
            AclResourceType::Topic,
            name,
            pattern,
            operation,
            AclPermission::Allow,
        )
    }

    use AclOperation::{All, Alter, AlterConfigs, Describe, DescribeConfigs, Read, Write};
    use AclPatternType::{Literal, Prefixed};

    #[test]
    fn literal_prefix_and_wildcard_patterns() {
        let acls = [
            allow_topic("User:alice", "app-", Prefixed, Write),
            allow_topic("User:bob", "orders", Literal, Read),
            allow_topic("User:carol", "*", Literal, Read),
        ];
        let decide = |who, op, topic| decide(&acls, who, "127.0.0.1", op, Resource::Topic(topic));
        assert_eq!(decide("User:alice", Write, "app-1"), Decision::Allowed);
        assert_eq!(
            decide("User:alice", Write, "app"),
            Decision::Denied,
            "carol's * applies to every topic"
        );
        assert_eq!(
            super::decide(&acls[..2], "User:alice", "h", Write, Resource::Topic("zzz")),
            Decision::NoAclFound,
            "without the * binding nothing applies to zzz"
        );
        assert_eq!(decide("User:alice", Write, "orders"), Decision::Denied);
        assert_eq!(decide("User:alice", Read, "app-1"), Decision::Denied);
        assert_eq!(decide("User:bob", Read, "orders"), Decision::Allowed);
        assert_eq!(decide("User:bob", Read, "orders2"), Decision::Denied);
        assert_eq!(decide("User:carol", Read, "anything"), Decision::Allowed);
        assert_eq!(
            super::decide(&acls, "User:alice", "h", Write, Resource::Group("app-1")),
            Decision::NoAclFound,
            "a topic pattern says nothing about groups"
        );
    }

    #[test]
    fn implied_operations_are_kafkas() {
        for granting in [Read, Write, AclOperation::Delete, Alter, All] {
            let acls = [allow_topic("User:a", "t", Literal, granting)];
            assert_eq!(
                decide(&acls, "User:a", "h", Describe, Resource::Topic("t")),
                Decision::Allowed
            );
        }
        let acls = [allow_topic("User:a", "t", Literal, AlterConfigs)];
        assert_eq!(
            decide(&acls, "User:a", "h", DescribeConfigs, Resource::Topic("t")),
            Decision::Allowed
        );
        let acls = [allow_topic("User:a", "t", Literal, Describe)];
        assert_eq!(
            decide(&acls, "User:a", "h", Read, Resource::Topic("t")),
            Decision::Denied
        );
    }

    #[test]
    fn hosts_and_wildcard_principals() {
        let mut acl = allow_topic("User:*", "t", Literal, Read);
        acl.host = "10.0.0.1".into();
        let acls = [acl];
        assert_eq!(
            decide(&acls, "User:x", "10.0.0.1", Read, Resource::Topic("t")),
            Decision::Allowed
        );
        assert_eq!(
            decide(&acls, "User:x", "10.0.0.2", Read, Resource::Topic("t")),
            Decision::Denied
        );
    }

    #[test]
    fn the_authorizer_honours_super_users_and_the_no_acl_flag() {
        let image = MetadataImage::empty();
        let session = Session::new(None, None);
        session.authenticated(Principal::user("admin"));
        let check = |authorizer: &Authorizer| {
            authorizer
                .authorize(&image, &session, Write, Resource::Topic("t"))
                .is_ok()
        };
        assert!(check(&Authorizer::default()), "no authorizer allows everything");
        assert!(!check(&Authorizer::new(true, [], false)));
        assert!(check(&Authorizer::new(true, [], true)));
        assert!(check(&Authorizer::new(true, [Principal::user("admin")], false)));
        let denied = Authorizer::new(true, [], false)
            .authorize(&image, &session, Write, Resource::Group("g"))
            .unwrap_err();
        assert!(matches!(denied, EngineError::NotAuthorized(AclResourceType::Group)));
    }

    #[test]
    fn principals_are_bounded_and_parsed() {
        assert_eq!(Principal::user("x").as_str(), "User:x");
        assert!(Principal::user(&"é".repeat(2000)).as_str().len() <= PRINCIPAL_LENGTH_MAX);
        assert!(Principal::parse("User:admin").is_ok());
        assert!(Principal::parse("admin").is_err());
        assert!(Principal::parse("User:").is_err());
    }

    fn operation() -> impl Strategy<Value = AclOperation> {
        prop::sample::select(AclOperation::ALL.to_vec())
    }

    fn any_binding() -> impl Strategy<Value = AclBinding> {
        (
            prop::sample::select(vec!["User:a", "User:b", "User:*"]),
            prop::sample::select(vec!["*", "h1", "h2"]),
            prop::sample::select(vec!["t", "t-1", "u", "*", "t-"]),
            prop::sample::select(vec![Literal, Prefixed]),
            operation(),
            prop::sample::select(vec![AclPermission::Allow, AclPermission::Deny]),
        )
            .prop_map(|(principal, host, name, pattern, operation, permission)| AclBinding {
                resource_type: AclResourceType::Topic,
                resource_name: name.to_owned(),
                pattern_type: pattern,
                principal: principal.to_owned(),
                host: host.to_owned(),
                operation,
                permission,
            })
    }

    proptest! {
        /// Whatever else is there, a matching deny for the operation (or
        /// All) refuses, and adding an allow never undoes it.
        #[test]
        fn deny_always_wins(
            mut acls in prop::collection::vec(any_binding(), 0..12),
            operation in operation(),
            deny_all in any::<bool>(),
            topic in prop::sample::select(vec!["t", "t-1", "u"]),
        ) {
            let denied = if deny_all { All } else { operation };
            acls.push(binding("User:a", AclResourceType::Topic, topic, Literal, denied, AclPermission::Deny));
            acls.push(allow_topic("User:a", topic, Literal, All));
            prop_assert_eq!(decide(&acls, "User:a", "h1", operation, Resource::Topic(topic)), Decision::Denied);
        }

        /// An allow of exactly the operation for exactly the resource, with
        /// no deny at all, always allows.
        #[test]
        fn a_matching_allow_without_denies_allows(
            acls in prop::collection::vec(any_binding(), 0..12),
            operation in operation(),
        ) {
            let mut acls: Vec<AclBinding> =
                acls.into_iter().filter(|b| b.permission == AclPermission::Allow).collect();
            acls.push(allow_topic("User:b", "t-", Prefixed, operation));
            prop_assert_eq!(decide(&acls, "User:b", "h2", operation, Resource::Topic("t-9")), Decision::Allowed);
        }
    }
}
