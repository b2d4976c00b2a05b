//! CreateAcls, DescribeAcls, DeleteAcls: the ACL bindings of the metadata
//! image, read here and changed through the metadata group.
//!
//! Creating and deleting need Alter on the cluster, describing needs
//! Describe on it, as in Kafka. DescribeAcls and DeleteAcls take Kafka's
//! filters: every field may be ANY (or null); the pattern filter may also be
//! MATCH, which finds the bindings that would apply to the named resource
//! (its literal name, the literal `*`, and every prefix of it). DeleteAcls
//! resolves its filters against this shard's image and proposes the exact
//! bindings found; the answer waits until every shard has applied the
//! change, so the next request anywhere sees it.

use std::{collections::BTreeMap, rc::Rc};

use kafka_protocol::messages::{
    create_acls_request::AclCreation,
    create_acls_response::AclCreationResult,
    delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl},
    describe_acls_response::{AclDescription, DescribeAclsResource},
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, ResponseKind,
};
use shardline_raft::{AclBinding, AclOperation, AclPatternType, AclPermission, AclResourceType};

use super::{str_bytes, wait_all_shards};
use crate::{
    acl::{Access, Resource},
    error::{kafka_code, EngineError},
    shard::Shard,
};

/// Kafka's code for "any value" in every enum of a filter.
const ANY: i8 = 1;
/// Kafka's pattern-type filter MATCH.
const PATTERN_MATCH: i8 = 2;

/// How a filter matches a binding's pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternFilter {
    /// Any pattern type; with a name, the binding's name must equal it.
    Any,
    /// The bindings that apply to the named resource.
    Match,
    /// This pattern type; with a name, the binding's name must equal it.
    Exactly(AclPatternType),
}

/// One DescribeAcls or DeleteAcls filter, decoded: `None` is "any".
#[derive(Debug, Clone)]
struct AclFilter {
    resource_type: Option<AclResourceType>,
    resource_name: Option<String>,
    pattern: PatternFilter,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<AclOperation>,
    permission: Option<AclPermission>,
}

/// The wire fields of a filter (the same in both requests).
struct FilterFields<'a> {
    resource_type: i8,
    resource_name: Option<&'a str>,
    pattern_type: i8,
    principal: Option<&'a str>,
    host: Option<&'a str>,
    operation: i8,
    permission: i8,
}

fn enum_filter<T>(code: i8, from_code: fn(i8) -> Option<T>, field: &str) -> Result<Option<T>, EngineError> {
    if code == ANY {
        return Ok(None);
    }
    from_code(code)
        .map(Some)
        .ok_or_else(|| EngineError::InvalidRequest(format!("unknown {field} code {code}")))
}

impl AclFilter {
    fn decode(fields: FilterFields<'_>) -> Result<AclFilter, EngineError> {
        let pattern = match fields.pattern_type {
            ANY => PatternFilter::Any,
            PATTERN_MATCH => PatternFilter::Match,
            code => PatternFilter::Exactly(
                AclPatternType::from_code(code)
                    .ok_or_else(|| EngineError::InvalidRequest(format!("unknown pattern type code {code}")))?,
            ),
        };
        Ok(AclFilter {
            resource_type: enum_filter(fields.resource_type, AclResourceType::from_code, "resource type")?,
            resource_name: fields.resource_name.map(str::to_owned),
            pattern,
            principal: fields.principal.map(str::to_owned),
            host: fields.host.map(str::to_owned),
            operation: enum_filter(fields.operation, AclOperation::from_code, "operation")?,
            permission: enum_filter(fields.permission, AclPermission::from_code, "permission")?,
        })
    }

    fn matches(&self, binding: &AclBinding) -> bool {
        let equal = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|wanted| wanted == value);
        let name_matches = match (self.pattern, self.resource_name.as_deref()) {
            (_, None) => true,
            (PatternFilter::Any | PatternFilter::Exactly(_), Some(name)) => binding.resource_name == name,
            (PatternFilter::Match, Some(name)) => match binding.pattern_type {
                AclPatternType::Literal => binding.resource_name == name || binding.resource_name == "*",
                AclPatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
            },
        };
        let pattern_matches = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Exactly(pattern) => binding.pattern_type == pattern,
        };
        self.resource_type.is_none_or(|kind| kind == binding.resource_type)
            && name_matches
            && pattern_matches
            && equal(&self.principal, &binding.principal)
            && equal(&self.host, &binding.host)
            && self.operation.is_none_or(|operation| operation == binding.operation)
            && self
                .permission
                .is_none_or(|permission| permission == binding.permission)
    }
}

/// A binding a client asked to create, checked as the metadata group
/// will check it.
fn binding_of(creation: &AclCreation) -> Result<AclBinding, EngineError> {
    let code = |value: i8, field: &str| EngineError::InvalidRequest(format!("invalid {field} code {value}"));
    let binding = AclBinding {
        resource_type: AclResourceType::from_code(creation.resource_type)
            .ok_or_else(|| code(creation.resource_type, "resource type"))?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: AclPatternType::from_code(creation.resource_pattern_type)
            .ok_or_else(|| code(creation.resource_pattern_type, "pattern type"))?,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: AclOperation::from_code(creation.operation).ok_or_else(|| code(creation.operation, "operation"))?,
        permission: AclPermission::from_code(creation.permission_type)
            .ok_or_else(|| code(creation.permission_type, "permission"))?,
    };
    binding.validate().map_err(EngineError::InvalidRequest)?;
    Ok(binding)
}

pub(super) async fn create(shard: &Rc<Shard>, access: &Access, request: CreateAclsRequest) -> ResponseKind {
    let mut response = CreateAclsResponse::default();
    let allowed = access.check(&shard.image(), AclOperation::Alter, Resource::Cluster);
    let outcomes: Vec<Result<AclBinding, EngineError>> = request
        .creations
        .iter()
        .map(|creation| match &allowed {
            Ok(()) => binding_of(creation),
            Err(_) => Err(EngineError::NotAuthorized(AclResourceType::Cluster)),
        })
        .collect();
    let valid: Vec<AclBinding> = outcomes.iter().filter_map(|o| o.as_ref().ok().cloned()).collect();
    // The valid ones are created together, all or none.
    let created = if valid.is_empty() {
        Ok(())
    } else {
        let created = shard.meta.create_acls(valid).await.map_err(EngineError::from);
        wait_all_shards(shard, shard.meta.image().epoch).await;
        created
    };
    if let Err(e) = &created {
        tracing::warn!(error = %e, "CreateAcls failed");
    }
    response.results = outcomes
        .iter()
        .map(|outcome| {
            let mut result = AclCreationResult::default();
            if let Err(e) = outcome.as_ref().map(|_| ()).and(created.as_ref().map(|_| ())) {
                result.error_code = kafka_code(e);
                result.error_message = Some(str_bytes(&e.to_string()));
            }
            result
        })
        .collect();
    ResponseKind::CreateAcls(response)
}

/// The image's bindings grouped by resource pattern, as DescribeAcls
/// answers them.
fn by_resource<'a>(
    bindings: impl Iterator<Item = &'a AclBinding>,
) -> BTreeMap<(AclResourceType, &'a str, AclPatternType), Vec<&'a AclBinding>> {
    let mut grouped: BTreeMap<_, Vec<&AclBinding>> = BTreeMap::new();
    for binding in bindings {
        grouped
            .entry((
                binding.resource_type,
                binding.resource_name.as_str(),
                binding.pattern_type,
            ))
            .or_default()
            .push(binding);
    }
    grouped
}

pub(super) fn describe(shard: &Rc<Shard>, access: &Access, request: DescribeAclsRequest) -> ResponseKind {
    let mut response = DescribeAclsResponse::default();
    let image = shard.image();
    let filter = access
        .check(&image, AclOperation::Describe, Resource::Cluster)
        .and_then(|()| {
            AclFilter::decode(FilterFields {
                resource_type: request.resource_type_filter,
                resource_name: request.resource_name_filter.as_deref(),
                pattern_type: request.pattern_type_filter,
                principal: request.principal_filter.as_deref(),
                host: request.host_filter.as_deref(),
                operation: request.operation,
                permission: request.permission_type,
            })
        });
    let filter = match filter {
        Ok(filter) => filter,
        Err(e) => {
            response.error_code = kafka_code(&e);
            response.error_message = Some(str_bytes(&e.to_string()));
            return ResponseKind::DescribeAcls(response);
        }
    };
    response.resources = by_resource(image.acls.iter().filter(|binding| filter.matches(binding)))
        .into_iter()
        .map(|((kind, name, pattern), bindings)| {
            let mut resource = DescribeAclsResource::default();
            resource.resource_type = kind.code();
            resource.resource_name = str_bytes(name);
            resource.pattern_type = pattern.code();
            resource.acls = bindings
                .into_iter()
                .map(|binding| {
                    let mut acl = AclDescription::default();
                    acl.principal = str_bytes(&binding.principal);
                    acl.host = str_bytes(&binding.host);
                    acl.operation = binding.operation.code();
                    acl.permission_type = binding.permission.code();
                    acl
                })
                .collect();
            resource
        })
        .collect();
    ResponseKind::DescribeAcls(response)
}

fn matching_acl(binding: &AclBinding) -> DeleteAclsMatchingAcl {
    let mut acl = DeleteAclsMatchingAcl::default();
    acl.resource_type = binding.resource_type.code();
    acl.resource_name = str_bytes(&binding.resource_name);
    acl.pattern_type = binding.pattern_type.code();
    acl.principal = str_bytes(&binding.principal);
    acl.host = str_bytes(&binding.host);
    acl.operation = binding.operation.code();
    acl.permission_type = binding.permission.code();
    acl
}

fn filter_error(result: &mut DeleteAclsFilterResult, error: &EngineError) {
    result.error_code = kafka_code(error);
    result.error_message = Some(str_bytes(&error.to_string()));
    result.matching_acls.clear();
}

pub(super) async fn delete(shard: &Rc<Shard>, access: &Access, request: DeleteAclsRequest) -> ResponseKind {
    let mut response = DeleteAclsResponse::default();
    let image = shard.image();
    let allowed = access.check(&image, AclOperation::Alter, Resource::Cluster);
    let mut doomed = std::collections::BTreeSet::new();
    let mut results = Vec::with_capacity(request.filters.len());
    for wire in &request.filters {
        let mut result = DeleteAclsFilterResult::default();
        let filter = allowed
            .as_ref()
            .map_err(|_| EngineError::NotAuthorized(AclResourceType::Cluster))
            .and_then(|()| {
                AclFilter::decode(FilterFields {
                    resource_type: wire.resource_type_filter,
                    resource_name: wire.resource_name_filter.as_deref(),
                    pattern_type: wire.pattern_type_filter,
                    principal: wire.principal_filter.as_deref(),
                    host: wire.host_filter.as_deref(),
                    operation: wire.operation,
                    permission: wire.permission_type,
                })
            });
        match filter {
            Ok(filter) => {
                for binding in image.acls.iter().filter(|binding| filter.matches(binding)) {
                    result.matching_acls.push(matching_acl(binding));
                    doomed.insert(binding.clone());
                }
            }
            Err(e) => filter_error(&mut result, &e),
        }
        results.push(result);
    }
    if !doomed.is_empty() {
        match shard.meta.delete_acls(doomed.into_iter().collect()).await {
            Ok(()) => wait_all_shards(shard, shard.meta.image().epoch).await,
            Err(e) => {
                tracing::warn!(error = %e, "DeleteAcls failed");
                let e = EngineError::from(e);
                for result in results.iter_mut().filter(|r| r.error_code == 0) {
                    filter_error(result, &e);
                }
            }
        }
    }
    response.filter_results = results;
    ResponseKind::DeleteAcls(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn binding(name: &str, pattern: AclPatternType, principal: &str) -> AclBinding {
        AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    fn filter(name: Option<&str>, pattern_type: i8, principal: Option<&str>) -> AclFilter {
        AclFilter::decode(FilterFields {
            resource_type: ANY,
            resource_name: name,
            pattern_type,
            principal,
            host: None,
            operation: ANY,
            permission: ANY,
        })
        .unwrap()
    }

    #[test]
    fn filters_match_as_kafkas_do() {
        use AclPatternType::{Literal, Prefixed};
        let bindings = [
            binding("app-orders", Literal, "User:a"),
            binding("app-", Prefixed, "User:a"),
            binding("*", Literal, "User:b"),
            binding("other", Literal, "User:b"),
        ];
        let count = |filter: AclFilter| bindings.iter().filter(|b| filter.matches(b)).count();
        assert_eq!(count(filter(None, ANY, None)), 4);
        assert_eq!(count(filter(None, ANY, Some("User:a"))), 2);
        assert_eq!(count(filter(Some("app-orders"), ANY, None)), 1, "ANY: the exact name");
        assert_eq!(
            count(filter(Some("app-orders"), PATTERN_MATCH, None)),
            3,
            "literal, prefix, *"
        );
        assert_eq!(count(filter(Some("app-"), Prefixed.code(), None)), 1);
        assert_eq!(count(filter(Some("app-"), Literal.code(), None)), 0);
        assert_eq!(count(filter(None, Literal.code(), None)), 3);
    }

    #[test]
    fn unknown_codes_are_invalid_requests() {
        let fields = |pattern_type| FilterFields {
            resource_type: ANY,
            resource_name: None,
            pattern_type,
            principal: None,
            host: None,
            operation: 0,
            permission: ANY,
        };
        assert!(AclFilter::decode(fields(ANY)).is_err(), "UNKNOWN operation");
        let mut creation = AclCreation::default();
        creation.resource_type = AclResourceType::Topic.code();
        creation.resource_name = str_bytes("t");
        creation.resource_pattern_type = PATTERN_MATCH;
        creation.principal = str_bytes("User:a");
        creation.host = str_bytes("*");
        creation.operation = AclOperation::Read.code();
        creation.permission_type = AclPermission::Allow.code();
        assert!(binding_of(&creation).is_err(), "MATCH is a filter, not a pattern");
        creation.resource_pattern_type = AclPatternType::Literal.code();
        assert!(binding_of(&creation).is_ok());
    }
}
