//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the
//! SCRAM credentials kept by the metadata group.
//!
//! The client sends a salt, an iteration count and the salted password
//! (PBKDF2 of the password, computed client-side as Kafka's admin client
//! does); the broker keeps only StoredKey and ServerKey derived from it
//! (RFC 5802 §3), never the password nor the salted password. Describing
//! needs Describe on the cluster and shows mechanisms and iterations only;
//! altering needs Alter on it. Every part for one user is refused or done
//! together; the valid users' changes go to the group as one command, and
//! the answer waits until every shard has applied it.
//!
//! Users of `--sasl-users-file` are not listed here and win over a stored
//! credential of the same name at login (`sasl::UserStore::credential`).

use std::{
    collections::{BTreeMap, HashMap},
    rc::Rc,
};

use kafka_protocol::messages::{
    alter_user_scram_credentials_response::AlterUserScramCredentialsResult,
    describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult},
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, ResponseKind,
};
use shardline_raft::{AclOperation, MetadataImage, ScramCredential, ScramMechanism};

use super::{str_bytes, wait_all_shards};
use crate::{
    acl::{Access, Resource},
    error::{kafka_code, CredentialError, EngineError},
    sasl::{Mechanism, ScramAlgorithms},
    shard::Shard,
};

fn refusal(error: CredentialError) -> EngineError {
    EngineError::Credential(error)
}

/// Every credential of `user` in `image`, in mechanism order.
fn credentials_of<'a>(image: &'a MetadataImage, user: &str) -> Vec<&'a ScramCredential> {
    ScramMechanism::ALL
        .iter()
        .filter_map(|mechanism| image.scram_credentials.get(&(user.to_owned(), *mechanism)))
        .collect()
}

fn described(user: &str, outcome: Result<Vec<&ScramCredential>, EngineError>) -> DescribeUserScramCredentialsResult {
    let mut result = DescribeUserScramCredentialsResult::default();
    result.user = str_bytes(user);
    match outcome {
        Ok(credentials) => {
            result.credential_infos = credentials
                .into_iter()
                .map(|credential| {
                    let mut info = CredentialInfo::default();
                    info.mechanism = credential.mechanism.code();
                    info.iterations = i32::try_from(credential.iterations).unwrap_or(i32::MAX);
                    info
                })
                .collect();
        }
        Err(e) => {
            result.error_code = kafka_code(&e);
            result.error_message = Some(str_bytes(&e.to_string()));
        }
    }
    result
}

pub(super) fn describe(
    shard: &Rc<Shard>,
    access: &Access,
    request: DescribeUserScramCredentialsRequest,
) -> ResponseKind {
    let mut response = DescribeUserScramCredentialsResponse::default();
    let image = shard.image();
    if let Err(refused) = access.check(&image, AclOperation::Describe, Resource::Cluster) {
        response.error_code = kafka_code(&refused);
        response.error_message = Some(str_bytes(&refused.to_string()));
        return ResponseKind::DescribeUserScramCredentials(response);
    }
    let named: Vec<String> = request
        .users
        .iter()
        .flatten()
        .map(|user| user.name.to_string())
        .collect();
    if named.is_empty() {
        let mut users: Vec<&str> = image.scram_credentials.keys().map(|(user, _)| user.as_str()).collect();
        users.dedup();
        response.results = users
            .into_iter()
            .map(|user| described(user, Ok(credentials_of(&image, user))))
            .collect();
        return ResponseKind::DescribeUserScramCredentials(response);
    }
    let mut times: HashMap<&str, usize> = HashMap::new();
    for user in &named {
        *times.entry(user.as_str()).or_default() += 1;
    }
    let mut answered = std::collections::HashSet::new();
    for user in &named {
        if !answered.insert(user.as_str()) {
            continue;
        }
        let credentials = credentials_of(&image, user);
        let outcome = if times.get(user.as_str()).copied().unwrap_or(0) > 1 {
            Err(refusal(CredentialError::Duplicate))
        } else if credentials.is_empty() {
            Err(refusal(CredentialError::NotFound))
        } else {
            Ok(credentials)
        };
        response.results.push(described(user, outcome));
    }
    ResponseKind::DescribeUserScramCredentials(response)
}

/// One user's changes, as asked.
#[derive(Default)]
struct UserChanges {
    upsertions: Vec<ScramCredential>,
    deletions: Vec<(String, ScramMechanism)>,
    /// The first thing wrong with them, if any.
    refused: Option<EngineError>,
}

impl UserChanges {
    fn refuse(&mut self, error: EngineError) {
        if self.refused.is_none() {
            self.refused = Some(error);
        }
    }

    /// Whether `mechanism` is already named for this user.
    fn names(&self, mechanism: ScramMechanism) -> bool {
        self.upsertions.iter().any(|c| c.mechanism == mechanism) || self.deletions.iter().any(|(_, m)| *m == mechanism)
    }
}

/// `user`'s changes, noting the order users are first named in.
fn entry<'a>(
    order: &mut Vec<String>,
    changes: &'a mut BTreeMap<String, UserChanges>,
    user: &str,
) -> &'a mut UserChanges {
    if !changes.contains_key(user) {
        order.push(user.to_owned());
    }
    changes.entry(user.to_owned()).or_default()
}

fn mechanism_of(code: i8) -> Result<ScramMechanism, EngineError> {
    ScramMechanism::from_code(code).ok_or(refusal(CredentialError::UnsupportedMechanism))
}

/// The credential an upsertion asks for, with StoredKey and ServerKey
/// derived from its salted password (which is then dropped).
fn credential_of(
    user: &str,
    mechanism: ScramMechanism,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<ScramCredential, EngineError> {
    let unacceptable = |why: String| refusal(CredentialError::Unacceptable(why));
    if salted_password.len() != mechanism.digest_bytes() {
        return Err(unacceptable(format!(
            "a {} salted password is {} bytes",
            mechanism.name(),
            mechanism.digest_bytes()
        )));
    }
    let iterations = u32::try_from(iterations).map_err(|_| unacceptable("negative iterations".into()))?;
    let algorithms = ScramAlgorithms::of(match mechanism {
        ScramMechanism::Sha256 => Mechanism::ScramSha256,
        ScramMechanism::Sha512 => Mechanism::ScramSha512,
    });
    let (stored_key, server_key) = algorithms.keys(salted_password);
    let credential = ScramCredential {
        user: user.to_owned(),
        mechanism,
        salt: salt.to_vec(),
        iterations,
        stored_key,
        server_key,
    };
    credential.validate().map_err(unacceptable)?;
    Ok(credential)
}

pub(super) async fn alter(
    shard: &Rc<Shard>,
    access: &Access,
    request: AlterUserScramCredentialsRequest,
) -> ResponseKind {
    let image = shard.image();
    let allowed = access.check(&image, AclOperation::Alter, Resource::Cluster);
    // Users in the order the request first names them.
    let mut order: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, UserChanges> = BTreeMap::new();
    for deletion in &request.deletions {
        let user = deletion.name.as_str();
        let changes = entry(&mut order, &mut changes, user);
        match mechanism_of(deletion.mechanism) {
            Err(e) => changes.refuse(e),
            Ok(mechanism) if changes.names(mechanism) => changes.refuse(refusal(CredentialError::Duplicate)),
            Ok(mechanism) if !image.scram_credentials.contains_key(&(user.to_owned(), mechanism)) => {
                changes.refuse(refusal(CredentialError::NotFound));
            }
            Ok(mechanism) => changes.deletions.push((user.to_owned(), mechanism)),
        }
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.as_str();
        let changes = entry(&mut order, &mut changes, user);
        let credential = mechanism_of(upsertion.mechanism).and_then(|mechanism| {
            if changes.names(mechanism) {
                return Err(refusal(CredentialError::Duplicate));
            }
            credential_of(
                user,
                mechanism,
                upsertion.iterations,
                &upsertion.salt,
                &upsertion.salted_password,
            )
        });
        match credential {
            Ok(credential) => changes.upsertions.push(credential),
            Err(e) => changes.refuse(e),
        }
    }
    drop(image);
    if let Err(refused) = &allowed {
        for changes in changes.values_mut() {
            changes.refused = Some(refusal_like(refused));
        }
    }
    let (mut upsertions, mut deletions) = (Vec::new(), Vec::new());
    for changes in changes.values_mut().filter(|c| c.refused.is_none()) {
        upsertions.append(&mut changes.upsertions);
        deletions.append(&mut changes.deletions);
    }
    let applied = if upsertions.is_empty() && deletions.is_empty() {
        Ok(())
    } else {
        let applied = shard
            .meta
            .alter_scram_credentials(upsertions, deletions)
            .await
            .map_err(EngineError::from);
        wait_all_shards(shard, shard.meta.image().epoch).await;
        applied
    };
    if let Err(e) = &applied {
        tracing::warn!(error = %e, "AlterUserScramCredentials failed");
    }
    let mut response = AlterUserScramCredentialsResponse::default();
    response.results = order
        .iter()
        .map(|user| {
            let mut result = AlterUserScramCredentialsResult::default();
            result.user = str_bytes(user);
            let refused = changes.get(user).and_then(|c| c.refused.as_ref());
            if let Some(e) = refused.or(applied.as_ref().err()) {
                result.error_code = kafka_code(e);
                result.error_message = Some(str_bytes(&e.to_string()));
            }
            result
        })
        .collect();
    ResponseKind::AlterUserScramCredentials(response)
}

/// The authorizer's refusal, once more for another user's answer.
fn refusal_like(refused: &EngineError) -> EngineError {
    match refused {
        EngineError::NotAuthorized(kind) => EngineError::NotAuthorized(*kind),
        other => unreachable!("Access::check refuses with NotAuthorized only, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn keys_come_from_the_salted_password_and_bounds_hold() {
        let salted = [9u8; 32];
        let credential = credential_of("carol", ScramMechanism::Sha256, 4096, b"salt", &salted).unwrap();
        let (stored_key, server_key) = ScramAlgorithms::of(Mechanism::ScramSha256).keys(&salted);
        assert_eq!((credential.stored_key, credential.server_key), (stored_key, server_key));
        let refused = |result: Result<ScramCredential, EngineError>| {
            matches!(result, Err(EngineError::Credential(CredentialError::Unacceptable(_))))
        };
        assert!(refused(credential_of(
            "carol",
            ScramMechanism::Sha512,
            4096,
            b"salt",
            &salted
        )));
        assert!(refused(credential_of(
            "carol",
            ScramMechanism::Sha256,
            100,
            b"salt",
            &salted
        )));
        assert!(refused(credential_of(
            "carol",
            ScramMechanism::Sha256,
            4096,
            b"",
            &salted
        )));
        assert!(refused(credential_of(
            "",
            ScramMechanism::Sha256,
            4096,
            b"salt",
            &salted
        )));
        assert!(matches!(
            mechanism_of(3),
            Err(EngineError::Credential(CredentialError::UnsupportedMechanism))
        ));
    }
}
