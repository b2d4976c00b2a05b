//! SCRAM credentials as the metadata group stores them (RFC 5802 §3):
//! per user and mechanism the salt, the iteration count, StoredKey and
//! ServerKey — never the password, nor the salted password. The engine
//! checks SASL logins against them and computes the keys when a client
//! sends a salted password (AlterUserScramCredentials).
//!
//! ```text
//! table ScramCredential (image.fbs)
//!   user: string          1..=SCRAM_USER_LENGTH_MAX bytes
//!   mechanism: int8       Kafka's code: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512
//!   salt: [ubyte]         1..=SCRAM_SALT_BYTES_MAX bytes
//!   iterations: uint32    SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX
//!   stored_key: [ubyte]   the mechanism's digest length (32 or 64)
//!   server_key: [ubyte]   the same
//! ```

use crate::{codec::DecodeError, generated::shardline::meta as fb};

/// Most SCRAM credentials the image holds (a user has at most two).
pub const SCRAM_CREDENTIALS_MAX: usize = 10_000;

/// Longest user name, in bytes (the SASL exchange's own bound).
pub const SCRAM_USER_LENGTH_MAX: usize = 256;

/// Longest salt, in bytes (Kafka's admin client sends 32 or 64).
pub const SCRAM_SALT_BYTES_MAX: usize = 128;

/// Fewest PBKDF2 iterations accepted: RFC 7677's minimum, Kafka's too.
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;

/// Most PBKDF2 iterations accepted, as Kafka: each login costs them.
pub const SCRAM_ITERATIONS_MAX: u32 = 16_384;

/// A SCRAM mechanism, by Kafka's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (code 1).
    Sha256,
    /// SCRAM-SHA-512 (code 2).
    Sha512,
}

impl ScramMechanism {
    /// Both, in code order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's code.
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of Kafka's code `code`.
    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.code() == code)
    }

    /// The IANA name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Bytes of the mechanism's digest (StoredKey, ServerKey, salted password).
    pub fn digest_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// One user's credential for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// The user name.
    pub user: String,
    /// The mechanism.
    pub mechanism: ScramMechanism,
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    /// Keys are left out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Checks the bounds above.
    pub fn validate(&self) -> Result<(), String> {
        if self.user.is_empty() || self.user.len() > SCRAM_USER_LENGTH_MAX {
            return Err(format!("a user name is 1 to {SCRAM_USER_LENGTH_MAX} bytes"));
        }
        if self.salt.is_empty() || self.salt.len() > SCRAM_SALT_BYTES_MAX {
            return Err(format!("a salt is 1 to {SCRAM_SALT_BYTES_MAX} bytes"));
        }
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&self.iterations) {
            return Err(format!(
                "iterations must be {SCRAM_ITERATIONS_MIN} to {SCRAM_ITERATIONS_MAX}, not {}",
                self.iterations
            ));
        }
        let digest = self.mechanism.digest_bytes();
        if self.stored_key.len() != digest || self.server_key.len() != digest {
            return Err(format!("{} keys are {digest} bytes", self.mechanism.name()));
        }
        Ok(())
    }
}

pub(crate) fn credential_to_fb(credential: &ScramCredential) -> fb::ScramCredential {
    fb::ScramCredential {
        user: Some(credential.user.clone()),
        mechanism: credential.mechanism.code(),
        salt: Some(credential.salt.clone()),
        iterations: credential.iterations,
        stored_key: Some(credential.stored_key.clone()),
        server_key: Some(credential.server_key.clone()),
    }
}

/// Decodes a credential read from an untrusted buffer, bounds checked.
pub(crate) fn credential_from_fb(credential: fb::ScramCredential) -> Result<ScramCredential, DecodeError> {
    let decoded = ScramCredential {
        user: credential
            .user
            .ok_or_else(|| DecodeError::missing("ScramCredential.user"))?,
        mechanism: ScramMechanism::from_code(credential.mechanism).ok_or_else(|| {
            DecodeError::new(format!(
                "ScramCredential.mechanism has unknown code {}",
                credential.mechanism
            ))
        })?,
        salt: credential
            .salt
            .ok_or_else(|| DecodeError::missing("ScramCredential.salt"))?,
        iterations: credential.iterations,
        stored_key: credential
            .stored_key
            .ok_or_else(|| DecodeError::missing("ScramCredential.stored_key"))?,
        server_key: credential
            .server_key
            .ok_or_else(|| DecodeError::missing("ScramCredential.server_key"))?,
    };
    decoded
        .validate()
        .map_err(|reason| DecodeError::new(format!("ScramCredential: {reason}")))?;
    Ok(decoded)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_credential(user: &str, mechanism: ScramMechanism) -> ScramCredential {
        ScramCredential {
            user: user.to_owned(),
            mechanism,
            salt: vec![7; 32],
            iterations: 4096,
            stored_key: vec![1; mechanism.digest_bytes()],
            server_key: vec![2; mechanism.digest_bytes()],
        }
    }

    #[test]
    fn bounds_and_round_trip() {
        let good = sample_credential("carol", ScramMechanism::Sha512);
        assert!(good.validate().is_ok());
        assert_eq!(credential_from_fb(credential_to_fb(&good)).ok(), Some(good.clone()));
        let mut few = good.clone();
        few.iterations = 4095;
        assert!(few.validate().is_err());
        let mut short = good.clone();
        short.stored_key.pop();
        assert!(short.validate().is_err());
        let mut unknown = credential_to_fb(&good);
        unknown.mechanism = 3;
        assert!(credential_from_fb(unknown).is_err());
        assert!(!format!("{good:?}").contains("[1, 1"), "keys stay out of logs");
        assert_eq!(ScramMechanism::from_code(2), Some(ScramMechanism::Sha512));
    }
}
