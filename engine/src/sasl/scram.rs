//! SCRAM (RFC 5802; SHA-256 and SHA-512 per RFC 7677) as Kafka runs it
//! inside SaslAuthenticate: two rounds, no channel binding. The server side
//! serves SASL listeners; the client side ([`ScramClient`]) is how a
//! follower logs in to its leader's inter-broker listener.
//!
//! ```text
//! client-first   gs2-header client-first-bare
//!                gs2-header        = "n,," | "y,," | "n,a=NAME,"    (no "p=": no channel binding)
//!                client-first-bare = "n=" saslname ",r=" c-nonce ["," extensions]
//! server-first   "r=" c-nonce s-nonce ",s=" base64(salt) ",i=" iterations
//! client-final   "c=" base64(gs2-header) ",r=" c-nonce s-nonce ["," extensions] ",p=" base64(ClientProof)
//! server-final   "v=" base64(ServerSignature)
//!
//! AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
//! ClientSignature = HMAC(StoredKey, AuthMessage)
//! ClientKey       = ClientProof XOR ClientSignature        accepted iff H(ClientKey) == StoredKey
//! ServerSignature = HMAC(ServerKey, AuthMessage)
//! ```
//!
//! Every refusal is the same [`ScramRefused`] whatever went wrong, and an
//! unknown user goes through the whole exchange with a made-up salt (see
//! `users.rs`), so the client learns nothing about which part was wrong.
//! Messages are bounded by net (`AUTH_FRAME_BYTES_MAX`) and names by
//! [`CREDENTIAL_BYTES_MAX`].

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use ring::rand::SecureRandom;

use super::{
    users::{constant_time_eq, ScramAlgorithms, ScramCredential, UserStore, CREDENTIAL_BYTES_MAX},
    Mechanism,
};

/// Random bytes in the server's half of the nonce.
const SERVER_NONCE_BYTES: usize = 24;

/// Longest client nonce accepted.
const CLIENT_NONCE_BYTES_MAX: usize = 256;

/// Random bytes in the client's half of the nonce.
const CLIENT_NONCE_BYTES: usize = 24;

/// Most PBKDF2 iterations the client runs for a server (a server asking for
/// more could make every login burn a core; credentials stored by the
/// metadata group have at most this many).
const CLIENT_ITERATIONS_MAX: u32 = shardline_raft::SCRAM_ITERATIONS_MAX;

/// The exchange was refused; the reason is for the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScramRefused(pub(crate) &'static str);

/// Waiting for the client-final message.
pub(crate) struct ScramServer {
    mechanism: Mechanism,
    user: String,
    /// False for an unknown user: the exchange runs, and fails at the end.
    known: bool,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A saslname with `=2C` and `=3D` decoded; `None` if malformed.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(rest.get(..at)?);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = rest.get(at + 3..)?;
    }
    if rest.contains(',') {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

/// A saslname with `,` and `=` escaped (RFC 5802 §5.1).
fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// The client side, waiting for server-first.
pub(crate) struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
}

/// The client side, waiting for server-final: the signature it must carry.
pub(crate) struct ScramClientFinal {
    server_signature: Vec<u8>,
}

impl ScramClient {
    /// Returns the state waiting for server-first and the client-first
    /// message.
    pub(crate) fn start(
        mechanism: Mechanism,
        user: &str,
        password: &str,
    ) -> Result<(ScramClient, Vec<u8>), ScramRefused> {
        assert!(mechanism != Mechanism::Plain, "SCRAM mechanisms only");
        let mut nonce = [0u8; CLIENT_NONCE_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| ScramRefused("the system random source failed"))?;
        let client_nonce = BASE64.encode(nonce);
        let client_first_bare = format!("n={},r={client_nonce}", encode_saslname(user));
        let message = format!("n,,{client_first_bare}").into_bytes();
        let client = ScramClient {
            mechanism,
            password: password.to_owned(),
            client_first_bare,
            client_nonce,
        };
        Ok((client, message))
    }

    /// Reads server-first; returns the state waiting for server-final and
    /// the client-final message (with the proof).
    pub(crate) fn respond(self, server_first: &[u8]) -> Result<(ScramClientFinal, Vec<u8>), ScramRefused> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| ScramRefused("server-first is not UTF-8"))?;
        let mut fields = server_first.split(',');
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|nonce| nonce.len() > self.client_nonce.len() && nonce.starts_with(&self.client_nonce))
            .ok_or(ScramRefused("server-first does not extend the client nonce"))?;
        let salt = fields
            .next()
            .and_then(|f| f.strip_prefix("s="))
            .and_then(|salt| BASE64.decode(salt).ok())
            .filter(|salt| !salt.is_empty())
            .ok_or(ScramRefused("server-first has no salt"))?;
        let iterations = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| (1..=CLIENT_ITERATIONS_MAX).contains(i))
            .and_then(std::num::NonZeroU32::new)
            .ok_or(ScramRefused("server-first iterations missing or out of bounds"))?;
        let algorithms = ScramAlgorithms::of(self.mechanism);
        let mut salted = vec![0u8; algorithms.digest.output_len()];
        ring::pbkdf2::derive(
            algorithms.pbkdf2,
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let client_key = algorithms.hmac(&salted, b"Client Key");
        let stored_key = algorithms.hash(&client_key);
        let server_key = algorithms.hmac(&salted, b"Server Key");
        // "biws" is base64("n,,"): no channel binding, no authorization id.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = algorithms.hmac(&stored_key, auth_message.as_bytes());
        assert_eq!(signature.len(), client_key.len(), "one digest size per mechanism");
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_signature = algorithms.hmac(&server_key, auth_message.as_bytes());
        let message = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
        Ok((ScramClientFinal { server_signature }, message))
    }
}

impl ScramClientFinal {
    /// Checks server-final: the server proved it holds the credential.
    pub(crate) fn verify(self, server_final: &[u8]) -> Result<(), ScramRefused> {
        let signature = std::str::from_utf8(server_final)
            .ok()
            .and_then(|m| m.strip_prefix("v="))
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or(ScramRefused("server-final carries no signature"))?;
        if !constant_time_eq(&signature, &self.server_signature) {
            return Err(ScramRefused("the server's signature is wrong"));
        }
        Ok(())
    }
}

impl ScramServer {
    /// Reads client-first; returns the server-first message and the state
    /// waiting for client-final.
    pub(crate) fn start(
        mechanism: Mechanism,
        users: &UserStore,
        client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), ScramRefused> {
        let client_first = std::str::from_utf8(client_first).map_err(|_| ScramRefused("client-first is not UTF-8"))?;
        let (cbind_flag, rest) = client_first
            .split_once(',')
            .ok_or(ScramRefused("client-first has no gs2 header"))?;
        if cbind_flag != "n" && cbind_flag != "y" {
            return Err(ScramRefused("channel binding is not supported"));
        }
        let (authzid, client_first_bare) = rest
            .split_once(',')
            .ok_or(ScramRefused("client-first has no gs2 header"))?;
        let gs2_header = format!("{cbind_flag},{authzid},");
        let mut attributes = client_first_bare.split(',');
        let name = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .and_then(decode_saslname)
            .ok_or(ScramRefused("client-first has no user name"))?;
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramRefused("client-first has no nonce"))?;
        if attributes.any(|a| a.starts_with("m=")) {
            return Err(ScramRefused("mandatory extension not supported"));
        }
        if name.is_empty() || name.len() > CREDENTIAL_BYTES_MAX {
            return Err(ScramRefused("user name length"));
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_saslname(authzid).as_deref() != Some(name.as_str()) {
                return Err(ScramRefused("authorization id differs from the user name"));
            }
        } else if !authzid.is_empty() {
            return Err(ScramRefused("malformed authorization id"));
        }
        let printable = |c: char| c.is_ascii_graphic() && c != ',';
        if client_nonce.is_empty()
            || client_nonce.len() > CLIENT_NONCE_BYTES_MAX
            || !client_nonce.chars().all(printable)
        {
            return Err(ScramRefused("malformed client nonce"));
        }
        let mut server_nonce = [0u8; SERVER_NONCE_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut server_nonce)
            .map_err(|_| ScramRefused("the system random source failed"))?;
        let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
        let (known, credential) = match users.credential(&name, mechanism) {
            Some(credential) => (true, credential),
            None => (false, users.unknown_user_credential(&name, mechanism)),
        };
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let message = server_first.clone().into_bytes();
        Ok((
            ScramServer {
                mechanism,
                user: name,
                known,
                credential,
                gs2_header,
                client_first_bare: client_first_bare.to_owned(),
                server_first,
                nonce,
            },
            message,
        ))
    }

    /// The mechanism of this exchange.
    pub(crate) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Checks client-final; returns the user and the server-final message.
    pub(crate) fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramRefused> {
        let client_final = std::str::from_utf8(client_final).map_err(|_| ScramRefused("client-final is not UTF-8"))?;
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramRefused("client-final has no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramRefused("client-final has no channel binding"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramRefused("client-final has no nonce"))?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramRefused("channel binding differs from the gs2 header"));
        }
        if !constant_time_eq(nonce.as_bytes(), self.nonce.as_bytes()) {
            return Err(ScramRefused("nonce differs"));
        }
        let proof = BASE64.decode(proof).map_err(|_| ScramRefused("proof is not base64"))?;
        let algorithms = ScramAlgorithms::of(self.mechanism);
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let client_signature = algorithms.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramRefused("proof length"));
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let matches = constant_time_eq(&algorithms.hash(&client_key), &self.credential.stored_key);
        if !(matches && self.known) {
            return Err(ScramRefused("invalid credentials"));
        }
        let server_signature = algorithms.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok((self.user, format!("v={}", BASE64.encode(server_signature)).into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    /// The client side, written from RFC 5802 independently of the server.
    fn client_final(mechanism: Mechanism, password: &str, client_first_bare: &str, server_first: &str) -> String {
        let algorithms = ScramAlgorithms::of(mechanism);
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = BASE64
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
        let mut salted = vec![0u8; algorithms.digest.output_len()];
        ring::pbkdf2::derive(
            algorithms.pbkdf2,
            std::num::NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = algorithms.hmac(&salted, b"Client Key");
        let stored_key = algorithms.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = algorithms.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    fn exchange(mechanism: Mechanism, user: &str, password: &str) -> Result<String, ScramRefused> {
        let users = UserStore::from_passwords([("alice", "pencil"), ("b=ob", "x")]).unwrap();
        let bare = format!("n={},r=fyko+d2lbbFgONRv9qkxdawL", user.replace('=', "=3D"));
        let (server, server_first) = ScramServer::start(mechanism, &users, format!("n,,{bare}").as_bytes())?;
        let server_first = String::from_utf8(server_first).unwrap();
        let last = client_final(mechanism, password, &bare, &server_first);
        server.finish(last.as_bytes()).map(|(user, _)| user)
    }

    #[test]
    fn good_passwords_pass_and_everything_else_fails_alike() {
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            assert_eq!(exchange(mechanism, "alice", "pencil").unwrap(), "alice");
            assert_eq!(exchange(mechanism, "b=ob", "x").unwrap(), "b=ob", "escaped names");
            let wrong = exchange(mechanism, "alice", "pen").unwrap_err();
            let unknown = exchange(mechanism, "mallory", "pencil").unwrap_err();
            assert_eq!(wrong, unknown, "no hint which part was wrong");
        }
    }

    #[test]
    fn the_client_side_logs_in_and_checks_the_server() {
        let users = UserStore::from_passwords([("bro,ker", "secret")]).unwrap();
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            for (password, accepted) in [("secret", true), ("wrong", false)] {
                let (client, first) = ScramClient::start(mechanism, "bro,ker", password).unwrap();
                let (server, server_first) = ScramServer::start(mechanism, &users, &first).unwrap();
                let (client, last) = client.respond(&server_first).unwrap();
                match server.finish(&last) {
                    Ok((user, server_final)) => {
                        assert!(accepted);
                        assert_eq!(user, "bro,ker");
                        client.verify(&server_final).unwrap();
                        assert!(
                            ScramClient::start(mechanism, "bro,ker", password)
                                .and_then(|(c, _)| c.respond(&server_first))
                                .and_then(|(c, _)| c.verify(&server_final))
                                .is_err(),
                            "a server-final from another exchange"
                        );
                    }
                    Err(_) => assert!(!accepted),
                }
            }
        }
    }

    #[test]
    fn the_client_side_refuses_a_lying_server() {
        let (client, first) = ScramClient::start(Mechanism::ScramSha256, "alice", "pencil").unwrap();
        let nonce = std::str::from_utf8(&first)
            .unwrap()
            .rsplit_once("r=")
            .unwrap()
            .1
            .to_owned();
        for bad in [
            "r=other,s=c2FsdA==,i=4096".to_string(),
            format!("r={nonce},s=c2FsdA==,i=4096"),
            format!("r={nonce}x,s=,i=4096"),
            format!("r={nonce}x,s=c2FsdA==,i=0"),
            format!("r={nonce}x,s=c2FsdA==,i=100000000"),
            format!("r={nonce}x,s=c2FsdA=="),
            "\u{fffd}".to_string(),
        ] {
            let (again, _) = ScramClient::start(Mechanism::ScramSha256, "alice", "pencil").unwrap();
            let again = ScramClient {
                client_nonce: nonce.clone(),
                ..again
            };
            assert!(again.respond(bad.as_bytes()).is_err(), "{bad}");
        }
        drop(client);
    }

    #[test]
    fn malformed_messages_are_refused_not_panicked_on() {
        let users = UserStore::from_passwords([("alice", "pencil")]).unwrap();
        for bad in [
            &b""[..],
            b"n",
            b"p=tls-unique,,n=alice,r=abc",
            b"n,,r=abc",
            b"n,,n=alice",
            b"n,,n=al=ZZice,r=abc",
            b"n,a=bob,n=alice,r=abc",
            b"n,,n=alice,r=abc,m=ext",
            b"\xff\xfe",
        ] {
            assert!(
                ScramServer::start(Mechanism::ScramSha256, &users, bad).is_err(),
                "{bad:?}"
            );
        }
        let (server, _) = ScramServer::start(Mechanism::ScramSha256, &users, b"n,,n=alice,r=abc").unwrap();
        assert!(server.finish(b"c=biws,r=abc,p=!!!").is_err());
    }
}
