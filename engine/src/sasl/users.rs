//! The SASL users: salted SCRAM credentials, read from `--sasl-users-file`
//! and from the metadata group.
//!
//! ```text
//! users file:  one user per line, `NAME:PASSWORD` (the first `:` splits);
//!              blank lines and lines starting with `#` are skipped
//! kept in memory, per user and SCRAM mechanism (RFC 5802 §3):
//!   salt           SALT_BYTES random bytes
//!   iterations     SCRAM_ITERATIONS
//!   stored_key     H(HMAC(SaltedPassword, "Client Key"))
//!   server_key     HMAC(SaltedPassword, "Server Key")
//!   SaltedPassword = PBKDF2(HMAC-H, password, salt, iterations)
//! ```
//!
//! The password itself is dropped once salted: what the engine keeps cannot
//! be replayed as a password, only checked against one. PLAIN logins are
//! checked against the SCRAM-SHA-256 credential (one PBKDF2 per login).
//! The store is read once at start and shared read-only by every shard
//! (`Arc`). Users the file does not name are looked up in the metadata
//! group's latest image (credentials stored with AlterUserScramCredentials,
//! `kafka/credentials.rs`): the file's users are the bootstrap ones.

use std::{collections::HashMap, fmt, num::NonZeroU32, path::Path};

use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

use super::Mechanism;

/// Users one file may name: each costs two PBKDF2 runs at start (a few ms).
pub(crate) const USERS_MAX: usize = 1_000;

/// Largest users file read.
const USERS_FILE_BYTES_MAX: u64 = 1 << 20;

/// Longest user name or password accepted, in the file and on the wire.
pub(crate) const CREDENTIAL_BYTES_MAX: usize = 256;

/// PBKDF2 iterations of every stored credential: RFC 7677's minimum, and
/// Kafka's default.
pub(crate) const SCRAM_ITERATIONS: u32 = 4096;

/// Bytes of random salt per credential.
const SALT_BYTES: usize = 32;

/// One user's credential for one SCRAM mechanism.
#[derive(Clone)]
pub(crate) struct ScramCredential {
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: NonZeroU32,
    pub(crate) stored_key: Vec<u8>,
    pub(crate) server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The algorithms of one SCRAM mechanism.
pub(crate) struct ScramAlgorithms {
    pub(crate) pbkdf2: pbkdf2::Algorithm,
    pub(crate) hmac: hmac::Algorithm,
    pub(crate) digest: &'static digest::Algorithm,
}

impl ScramAlgorithms {
    pub(crate) fn of(mechanism: Mechanism) -> ScramAlgorithms {
        match mechanism {
            Mechanism::ScramSha512 => ScramAlgorithms {
                pbkdf2: pbkdf2::PBKDF2_HMAC_SHA512,
                hmac: hmac::HMAC_SHA512,
                digest: &digest::SHA512,
            },
            // PLAIN is checked against the SHA-256 credential.
            Mechanism::ScramSha256 | Mechanism::Plain => ScramAlgorithms {
                pbkdf2: pbkdf2::PBKDF2_HMAC_SHA256,
                hmac: hmac::HMAC_SHA256,
                digest: &digest::SHA256,
            },
        }
    }

    pub(crate) fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac, key), data).as_ref().to_vec()
    }

    pub(crate) fn hash(&self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest, data).as_ref().to_vec()
    }

    /// The stored key a password gives with `salt` and `iterations`.
    pub(crate) fn stored_key(&self, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> (Vec<u8>, Vec<u8>) {
        let mut salted = vec![0u8; self.digest.output_len()];
        pbkdf2::derive(self.pbkdf2, iterations, salt, password, &mut salted);
        self.keys(&salted)
    }

    /// (StoredKey, ServerKey) of a salted password (what Kafka's admin
    /// client sends in AlterUserScramCredentials).
    pub(crate) fn keys(&self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted_password, b"Client Key");
        let server_key = self.hmac(salted_password, b"Server Key");
        (self.hash(&client_key), server_key)
    }
}

/// Equality in time independent of where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the users file could not be used.
#[derive(Debug)]
pub(crate) enum UsersError {
    Io(std::io::Error),
    TooLarge,
    TooMany,
    BadLine { line: usize, reason: &'static str },
    Random,
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Io(e) => write!(f, "{e}"),
            UsersError::TooLarge => write!(f, "larger than {USERS_FILE_BYTES_MAX} bytes"),
            UsersError::TooMany => write!(f, "more than {USERS_MAX} users"),
            UsersError::BadLine { line, reason } => write!(f, "line {line}: {reason}"),
            UsersError::Random => write!(f, "the system random source failed"),
        }
    }
}

/// The `(name, password)` lines of a users file, checked and bounded.
pub(crate) fn read_users_file(path: &Path) -> Result<Vec<(String, String)>, UsersError> {
    let size = std::fs::metadata(path).map_err(UsersError::Io)?.len();
    if size > USERS_FILE_BYTES_MAX {
        return Err(UsersError::TooLarge);
    }
    let text = std::fs::read_to_string(path).map_err(UsersError::Io)?;
    let mut users = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = line.trim_end_matches('\r');
        if trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let bad = |reason| UsersError::BadLine {
            line: line_number,
            reason,
        };
        let (name, password) = trimmed.split_once(':').ok_or(bad("not NAME:PASSWORD"))?;
        let name = name.trim();
        if name.is_empty() || name.len() > CREDENTIAL_BYTES_MAX || name.contains(['\0', ',', '=']) {
            return Err(bad("a user name is 1 to 256 bytes without NUL, `,` or `=`"));
        }
        if password.is_empty() || password.len() > CREDENTIAL_BYTES_MAX || password.contains('\0') {
            return Err(bad("a password is 1 to 256 bytes without NUL"));
        }
        if users.len() == USERS_MAX {
            return Err(UsersError::TooMany);
        }
        users.push((name.to_owned(), password.to_owned()));
    }
    assert!(users.len() <= USERS_MAX, "the file's users are bounded");
    Ok(users)
}

/// Every user's SCRAM credentials, by name: the file's, then the metadata
/// group's (AlterUserScramCredentials), looked up in that order.
pub(crate) struct UserStore {
    users: HashMap<String, [ScramCredential; 2]>,
    /// Where the credentials stored through Raft are read (the latest
    /// image), once the group is running.
    metadata: Option<shardline_raft::MetadataGroup>,
    /// Key for the salts shown for unknown users, so a SCRAM client cannot
    /// tell an unknown user from a wrong password by the exchange.
    unknown_salt_key: Vec<u8>,
}

impl fmt::Debug for UserStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserStore").field("users", &self.users.len()).finish()
    }
}

impl UserStore {
    /// Reads and salts the users of `path`.
    pub(crate) fn load(path: &Path) -> Result<UserStore, UsersError> {
        let users = read_users_file(path)?;
        UserStore::from_passwords(users.iter().map(|(name, password)| (name.as_str(), password.as_str())))
    }

    /// Salts each `(name, password)`; a name given twice keeps the last.
    pub(crate) fn from_passwords<'a>(
        users: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<UserStore, UsersError> {
        let random = ring::rand::SystemRandom::new();
        let mut unknown_salt_key = vec![0u8; SALT_BYTES];
        random.fill(&mut unknown_salt_key).map_err(|_| UsersError::Random)?;
        let mut store = UserStore {
            users: HashMap::new(),
            unknown_salt_key,
            metadata: None,
        };
        let iterations = NonZeroU32::new(SCRAM_ITERATIONS).ok_or(UsersError::Random)?;
        for (name, password) in users {
            let credential = |mechanism| -> Result<ScramCredential, UsersError> {
                let mut salt = vec![0u8; SALT_BYTES];
                random.fill(&mut salt).map_err(|_| UsersError::Random)?;
                let (stored_key, server_key) =
                    ScramAlgorithms::of(mechanism).stored_key(password.as_bytes(), &salt, iterations);
                Ok(ScramCredential {
                    salt,
                    iterations,
                    stored_key,
                    server_key,
                })
            };
            let credentials = [credential(Mechanism::ScramSha256)?, credential(Mechanism::ScramSha512)?];
            store.users.insert(name.to_owned(), credentials);
            assert!(store.users.len() <= USERS_MAX, "the user table is bounded");
        }
        Ok(store)
    }

    /// Users known.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Also looks users up in `metadata`'s credentials (after the file's).
    pub(crate) fn with_metadata(mut self, metadata: shardline_raft::MetadataGroup) -> UserStore {
        self.metadata = Some(metadata);
        self
    }

    /// `name`'s credential for `mechanism` (SCRAM-SHA-256's for PLAIN), or
    /// `None` for an unknown user: the file's if it names the user, else
    /// the one stored through the metadata group.
    pub(crate) fn credential(&self, name: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        if let Some([sha256, sha512]) = self.users.get(name) {
            return Some(match mechanism {
                Mechanism::ScramSha512 => sha512.clone(),
                Mechanism::ScramSha256 | Mechanism::Plain => sha256.clone(),
            });
        }
        let stored_mechanism = match mechanism {
            Mechanism::ScramSha512 => shardline_raft::ScramMechanism::Sha512,
            Mechanism::ScramSha256 | Mechanism::Plain => shardline_raft::ScramMechanism::Sha256,
        };
        let image = self.metadata.as_ref()?.image();
        let stored = image.scram_credentials.get(&(name.to_owned(), stored_mechanism))?;
        Some(ScramCredential {
            salt: stored.salt.clone(),
            iterations: NonZeroU32::new(stored.iterations)?,
            stored_key: stored.stored_key.clone(),
            server_key: stored.server_key.clone(),
        })
    }

    /// A credential no password matches, with a salt that depends only on
    /// the name and mechanism (the same every time it is asked for), for an
    /// unknown user: the exchange then looks like a wrong password's.
    pub(crate) fn unknown_user_credential(&self, name: &str, mechanism: Mechanism) -> ScramCredential {
        let algorithms = ScramAlgorithms::of(mechanism);
        let mut seed = mechanism.name().as_bytes().to_vec();
        seed.push(0);
        seed.extend_from_slice(name.as_bytes());
        let mut salt = algorithms.hmac(&self.unknown_salt_key, &seed);
        salt.truncate(SALT_BYTES);
        // An empty stored key matches no hash (every hash has the full length).
        ScramCredential {
            salt,
            iterations: NonZeroU32::MIN.saturating_add(SCRAM_ITERATIONS - 1),
            stored_key: Vec::new(),
            server_key: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn files_are_read_and_passwords_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# users\nalice:s3cret:with:colons\n\nbob:pw\n").unwrap();
        let store = UserStore::load(&path).unwrap();
        assert_eq!(store.len(), 2);
        let credential = store.credential("alice", Mechanism::ScramSha256).unwrap();
        let algorithms = ScramAlgorithms::of(Mechanism::ScramSha256);
        let (stored, _) = algorithms.stored_key(b"s3cret:with:colons", &credential.salt, credential.iterations);
        assert!(constant_time_eq(&stored, &credential.stored_key));
        let (wrong, _) = algorithms.stored_key(b"s3cret", &credential.salt, credential.iterations);
        assert!(!constant_time_eq(&wrong, &credential.stored_key));
        assert_eq!(
            store
                .credential("bob", Mechanism::ScramSha512)
                .unwrap()
                .stored_key
                .len(),
            64
        );
        assert!(store.credential("carol", Mechanism::Plain).is_none());
        std::fs::write(&path, "alice\n").unwrap();
        assert!(matches!(
            UserStore::load(&path),
            Err(UsersError::BadLine { line: 1, .. })
        ));
        std::fs::write(&path, "a,b:pw\n").unwrap();
        assert!(UserStore::load(&path).is_err(), "SCRAM names cannot hold `,`");
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_a_credential_nothing_matches() {
        let store = UserStore::from_passwords([("alice", "pw")]).unwrap();
        let first = store.unknown_user_credential("mallory", Mechanism::ScramSha512);
        let again = store.unknown_user_credential("mallory", Mechanism::ScramSha512);
        assert_eq!(first.salt, again.salt);
        assert_eq!(first.salt.len(), SALT_BYTES);
        assert_ne!(
            first.salt,
            store.unknown_user_credential("eve", Mechanism::ScramSha512).salt
        );
        assert!(first.stored_key.is_empty());
        assert_eq!(first.iterations.get(), SCRAM_ITERATIONS);
    }
}
