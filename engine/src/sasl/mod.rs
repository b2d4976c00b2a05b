//! SASL authentication on SASL_PLAINTEXT and SASL_SSL listeners: PLAIN and
//! SCRAM-SHA-256/512, as Kafka clients speak them (KIP-43 SaslHandshake,
//! KIP-152 SaslAuthenticate).
//!
//! ```text
//! client                                  SaslSession (one per connection)
//!   ApiVersions ───────────────────────►  the broker's versions          (any number of times, bounded by net)
//!   SaslHandshake{mechanism} ──────────►  mechanisms offered; UNSUPPORTED_SASL_MECHANISM closes
//!   SaslAuthenticate{PLAIN token} ─────►  Authenticated | SASL_AUTHENTICATION_FAILED and close
//!   SaslAuthenticate{client-first} ────►  server-first                   (SCRAM, scram.rs)
//!   SaslAuthenticate{client-final} ────►  server-final: Authenticated | SASL_AUTHENTICATION_FAILED and close
//!   anything else before that ─────────►  connection closed, no answer
//! ```
//!
//! Who owns what: [`SaslSettings`] (the users and mechanisms) is made once at
//! start and shared read-only by every shard; a [`SaslSession`] lives inside
//! its connection's task, on the shard that accepted it, and is dropped once
//! the connection is authenticated. net runs the exchange before any other
//! request is served (`net::serve_authenticated`): one request at a time,
//! each frame at most `AUTH_FRAME_BYTES_MAX`, at most `AUTH_ROUNDS_MAX`
//! requests, within `AUTH_TIMEOUT`.
//!
//! Failures: every refused credential gets the same answer
//! (SASL_AUTHENTICATION_FAILED, the same message) after
//! [`FAILED_AUTHENTICATION_DELAY`], and the connection is closed: the client
//! cannot tell an unknown user from a wrong password. Codes come from
//! `error::kafka_code`, like every other answer.
//!
//! Re-authentication (KIP-368): with `--sasl-session-lifetime-ms` the last
//! SaslAuthenticate answer carries `session_lifetime_ms`, the session stays
//! with the connection (`State::Done`), and a client re-authenticates on the
//! served connection with a SaslHandshake for the same mechanism and the
//! same principal; net closes a connection whose lifetime ran out at its
//! next other request. Without the flag sessions do not expire
//! (`session_lifetime_ms` = 0) and clients never re-authenticate.
//!
//! The principal of an authenticated connection is `User:NAME`: the
//! exchange sets it in the connection's `acl::Session`, which every handler
//! of the connection checks its ACLs with.

mod scram;
mod users;

use std::{rc::Rc, sync::Arc, time::Duration};

use bytes::Bytes;
use kafka_protocol::messages::{ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use shardline_net::{AuthStep, Authenticator, Request, RequestBody, ResponseBody};

pub(crate) use scram::{ScramClient, ScramServer};
pub(crate) use users::{read_users_file, ScramAlgorithms, UserStore};

use self::users::{constant_time_eq, CREDENTIAL_BYTES_MAX};
use crate::{
    acl::{Principal, Session},
    error::{kafka_code, EngineError, SaslError},
};

/// How long a refused login waits for its answer (Kafka's
/// `connection.failed.authentication.delay.ms` default), so guessing
/// passwords on one connection after another is slow.
pub(crate) const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

/// The message every refused login gets, whatever was wrong.
const AUTHENTICATION_FAILED_MESSAGE: &str = "Authentication failed: invalid credentials";

/// A SASL mechanism the engine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: user and password in the clear (use it over TLS only).
    Plain,
    /// RFC 5802 / 7677 with SHA-256.
    ScramSha256,
    /// RFC 5802 with SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// The mechanism's IANA name, as clients send it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism named `name` (case as clients send it: upper).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512]
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
    }
}

/// What the SASL listeners of this engine check logins against.
#[derive(Debug)]
pub(crate) struct SaslSettings {
    /// Who may log in.
    pub(crate) users: UserStore,
    /// Mechanisms offered, in the order SaslHandshake lists them.
    pub(crate) mechanisms: Vec<Mechanism>,
    /// How long a login holds before the client must re-authenticate
    /// (KIP-368, `--sasl-session-lifetime-ms`); `None`: for the life of
    /// the connection.
    pub(crate) session_lifetime: Option<Duration>,
}

/// Where one connection's exchange stands.
#[derive(Debug)]
enum State {
    /// No SaslHandshake yet.
    Start,
    /// A mechanism is chosen; its first SaslAuthenticate is next.
    Chosen(Mechanism),
    /// SCRAM: server-first was sent; client-final is next.
    ScramFinal(Box<ScramServer>),
    /// Authenticated with this mechanism; a re-authentication (KIP-368)
    /// may start with a SaslHandshake for the same mechanism.
    Done(Mechanism),
    /// The exchange is over (refused); nothing more is accepted.
    Over,
}

/// One connection's SASL exchange.
#[derive(Debug)]
pub(crate) struct SaslSession {
    settings: Arc<SaslSettings>,
    /// The connection's session: its principal is the TLS client
    /// certificate's subject, if one was presented, until the SASL user
    /// replaces it here.
    session: Rc<Session>,
    state: State,
    /// The principal of the first login: a re-authentication must prove
    /// the same one.
    established: Option<Principal>,
}

impl SaslSession {
    pub(crate) fn new(settings: Arc<SaslSettings>, session: Rc<Session>) -> SaslSession {
        SaslSession {
            settings,
            session,
            state: State::Start,
            established: None,
        }
    }

    fn mechanism_names(&self) -> Vec<kafka_protocol::protocol::StrBytes> {
        self.settings
            .mechanisms
            .iter()
            .map(|mechanism| crate::kafka::str_bytes(mechanism.name()))
            .collect()
    }

    fn handshake(&mut self, mechanism: &str) -> AuthStep {
        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = self.mechanism_names();
        let reauthenticating = match self.state {
            State::Start => None,
            State::Done(previous) => Some(previous),
            _ => {
                self.state = State::Over;
                response.error_code = code(SaslError::IllegalState);
                return refused(ResponseKind::SaslHandshake(response), "a second SaslHandshake");
            }
        };
        if reauthenticating.is_some_and(|previous| previous.name() != mechanism) {
            self.state = State::Over;
            response.error_code = code(SaslError::IllegalState);
            return refused(
                ResponseKind::SaslHandshake(response),
                "re-authentication with another mechanism",
            );
        }
        let offered = Mechanism::from_name(mechanism).filter(|m| self.settings.mechanisms.contains(m));
        let Some(chosen) = offered else {
            self.state = State::Over;
            response.error_code = code(SaslError::UnsupportedMechanism);
            return refused(ResponseKind::SaslHandshake(response), "a mechanism not offered");
        };
        self.state = State::Chosen(chosen);
        AuthStep::Continue(ResponseBody::Kafka(ResponseKind::SaslHandshake(response)))
    }

    async fn authenticate(&mut self, auth_bytes: &[u8]) -> AuthStep {
        let state = std::mem::replace(&mut self.state, State::Over);
        let mechanism = match &state {
            State::Chosen(mechanism) => Some(*mechanism),
            State::ScramFinal(server) => Some(server.mechanism()),
            _ => None,
        };
        let outcome = match state {
            State::Start | State::Over | State::Done(_) => {
                let mut response = SaslAuthenticateResponse::default();
                response.error_code = code(SaslError::IllegalState);
                return refused(
                    ResponseKind::SaslAuthenticate(response),
                    "SaslAuthenticate without a SaslHandshake",
                );
            }
            State::Chosen(Mechanism::Plain) => check_plain(&self.settings.users, auth_bytes).map(|user| (user, None)),
            State::Chosen(mechanism) => match ScramServer::start(mechanism, &self.settings.users, auth_bytes) {
                Ok((server, server_first)) => {
                    self.state = State::ScramFinal(Box::new(server));
                    return AuthStep::Continue(authenticate_response(server_first));
                }
                Err(refusal) => Err(refusal.0),
            },
            State::ScramFinal(server) => server
                .finish(auth_bytes)
                .map(|(user, server_final)| (user, Some(server_final)))
                .map_err(|refusal| refusal.0),
        };
        let outcome = outcome.and_then(|(user, last_message)| {
            let principal = Principal::user(&user);
            match &self.established {
                Some(first) if *first != principal => Err("re-authentication as another principal"),
                _ => Ok((principal, last_message)),
            }
        });
        match outcome {
            Ok((principal, last_message)) => {
                if self.established.is_some() {
                    tracing::debug!(%principal, "SASL re-authentication");
                } else {
                    tracing::debug!(%principal, before = %self.session.principal(), "SASL login");
                }
                self.session.authenticated(principal.clone());
                self.established = Some(principal.clone());
                if let Some(mechanism) = mechanism {
                    self.state = State::Done(mechanism);
                }
                let mut response = authenticate_response(last_message.unwrap_or_default());
                if let (Some(lifetime), ResponseBody::Kafka(ResponseKind::SaslAuthenticate(answer))) =
                    (self.settings.session_lifetime, &mut response)
                {
                    answer.session_lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
                }
                AuthStep::Authenticated {
                    response,
                    principal: principal.to_string(),
                }
            }
            Err(reason) => {
                glommio::timer::sleep(FAILED_AUTHENTICATION_DELAY).await;
                let mut response = SaslAuthenticateResponse::default();
                response.error_code = code(SaslError::AuthenticationFailed);
                response.error_message = Some(crate::kafka::str_bytes(AUTHENTICATION_FAILED_MESSAGE));
                refused(ResponseKind::SaslAuthenticate(response), reason)
            }
        }
    }
}

impl Authenticator for SaslSession {
    /// One request of the exchange, run under its API so a refusal's code
    /// is counted under SaslHandshake or SaslAuthenticate in `/metrics`.
    async fn step(&mut self, request: Request) -> AuthStep {
        let api = crate::metrics::probe::api_slot(request.header.api_key);
        crate::metrics::with_api(api, self.answer(request)).await
    }

    fn session_lifetime(&self) -> Option<Duration> {
        self.settings.session_lifetime
    }
}

impl SaslSession {
    async fn answer(&mut self, request: Request) -> AuthStep {
        match request.body {
            RequestBody::ApiVersions(_) => {
                AuthStep::Continue(ResponseBody::Kafka(crate::kafka::cluster::api_versions()))
            }
            RequestBody::SaslHandshake(handshake) => self.handshake(handshake.mechanism.as_str()),
            RequestBody::SaslAuthenticate(authenticate) => self.authenticate(&authenticate.auth_bytes).await,
            _ => AuthStep::Refused {
                response: None,
                reason: format!("API key {} before authenticating", request.header.api_key),
            },
        }
    }
}

fn code(error: SaslError) -> i16 {
    kafka_code(&EngineError::Sasl(error))
}

fn refused(response: ResponseKind, reason: &str) -> AuthStep {
    AuthStep::Refused {
        response: Some(ResponseBody::Kafka(response)),
        reason: reason.to_owned(),
    }
}

fn authenticate_response(auth_bytes: Vec<u8>) -> ResponseBody {
    let mut response = SaslAuthenticateResponse::default();
    response.auth_bytes = Bytes::from(auth_bytes);
    ResponseBody::Kafka(ResponseKind::SaslAuthenticate(response))
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, checked against the
/// user's SCRAM-SHA-256 credential (an unknown user costs the same PBKDF2).
fn check_plain(users: &UserStore, token: &[u8]) -> Result<String, &'static str> {
    let mut parts = token.split(|byte| *byte == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("PLAIN token is not authzid NUL user NUL password");
    };
    let user = std::str::from_utf8(user).map_err(|_| "PLAIN user is not UTF-8")?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err("PLAIN authorization id differs from the user");
    }
    check_password(users, user, password)
}

/// Checks `password` against `user`'s SCRAM-SHA-256 credential (an
/// unknown user costs the same PBKDF2): PLAIN logins and MQTT CONNECTs
/// (`--mqtt-auth password`). Returns the user.
pub(crate) fn check_password(users: &UserStore, user: &str, password: &[u8]) -> Result<String, &'static str> {
    if user.is_empty() || user.len() > CREDENTIAL_BYTES_MAX || password.len() > CREDENTIAL_BYTES_MAX {
        return Err("user or password length");
    }
    let known = users.credential(user, Mechanism::Plain);
    let credential = match &known {
        Some(credential) => credential.clone(),
        None => users.unknown_user_credential(user, Mechanism::Plain),
    };
    let algorithms = ScramAlgorithms::of(Mechanism::Plain);
    let (stored_key, _) = algorithms.stored_key(password, &credential.salt, credential.iterations);
    if known.is_some() && constant_time_eq(&stored_key, &credential.stored_key) {
        Ok(user.to_owned())
    } else {
        Err("invalid credentials")
    }
}

/// The answer to a SaslHandshake on a connection that is not authenticating
/// (already authenticated, or on a listener without SASL).
pub(crate) fn handshake_out_of_turn() -> ResponseKind {
    let mut response = SaslHandshakeResponse::default();
    response.error_code = code(SaslError::IllegalState);
    ResponseKind::SaslHandshake(response)
}

/// The answer to a SaslAuthenticate on a connection that is not
/// authenticating.
pub(crate) fn authenticate_out_of_turn() -> ResponseKind {
    let mut response = SaslAuthenticateResponse::default();
    response.error_code = code(SaslError::IllegalState);
    ResponseKind::SaslAuthenticate(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn plain_tokens_are_checked_without_saying_what_was_wrong() {
        let users = UserStore::from_passwords([("alice", "pencil")]).unwrap();
        assert_eq!(check_plain(&users, b"\0alice\0pencil").unwrap(), "alice");
        assert_eq!(check_plain(&users, b"alice\0alice\0pencil").unwrap(), "alice");
        let wrong = check_plain(&users, b"\0alice\0pen").unwrap_err();
        let unknown = check_plain(&users, b"\0mallory\0pencil").unwrap_err();
        assert_eq!(wrong, unknown);
        for malformed in [&b""[..], b"alice", b"\0alice", b"\0alice\0pw\0x", b"bob\0alice\0pencil"] {
            assert!(check_plain(&users, malformed).is_err());
        }
    }

    #[test]
    fn mechanisms_have_their_iana_names() {
        for mechanism in [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512] {
            assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
        }
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
    }
}
