//! `shardctl user ...`: SCRAM users kept by a running broker's metadata
//! group, over the Kafka protocol (AlterUserScramCredentials,
//! DescribeUserScramCredentials), as `kafka-configs --alter --add-config
//! SCRAM-SHA-512=...` does it.
//!
//! - `add NAME [--mechanism SCRAM-SHA-256|SCRAM-SHA-512]... [--iterations N]`:
//!   the password is read from `SHARDCTL_NEW_PASSWORD`, else from the first
//!   line of standard input, never from the command line. As Kafka's admin
//!   client does, the tool picks a random salt and sends only the salted
//!   password (PBKDF2); the broker keeps StoredKey and ServerKey.
//! - `list [NAME]...`: users and their mechanisms and iteration counts.
//! - `delete NAME [--mechanism M]...` (default: every mechanism it has).

use std::{io::BufRead, num::NonZeroU32};

use clap::{Args, Subcommand};
use kafka_protocol::messages::{
    alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion},
    describe_user_scram_credentials_request::UserName,
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use ring::{pbkdf2, rand::SecureRandom};
use shardline_raft::{ScramMechanism, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN};

use crate::{
    error::ToolError,
    kafka_client::{refused, text, BrokerArgs, Client},
    report::{Report, Verdict},
};

/// Both APIs exist at version 0 only.
const SCRAM_API_VERSION: i16 = 0;
/// Bytes of random salt per credential (as the broker's own file users).
const SALT_BYTES: usize = 32;
/// Where `add` reads the new password from, before standard input.
const PASSWORD_VARIABLE: &str = "SHARDCTL_NEW_PASSWORD";
/// Longest password accepted (the broker's SASL bound).
const PASSWORD_BYTES_MAX: usize = 256;

/// The `shardctl user` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add a SCRAM user, or change its password.
    Add(AddArgs),
    /// List users with their mechanisms and iteration counts.
    List(ListArgs),
    /// Delete a user's credentials.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The user.
    user: String,
    /// Mechanisms to store a credential for (repeatable; default both).
    #[arg(long = "mechanism", value_parser = parse_mechanism)]
    mechanisms: Vec<ScramMechanism>,
    /// PBKDF2 iterations (4096 to 16384).
    #[arg(long, default_value_t = SCRAM_ITERATIONS_MIN)]
    iterations: u32,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only these users (default: every one).
    users: Vec<String>,
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The user.
    user: String,
    /// Mechanisms to delete (repeatable; default every one it has).
    #[arg(long = "mechanism", value_parser = parse_mechanism)]
    mechanisms: Vec<ScramMechanism>,
    #[command(flatten)]
    broker: BrokerArgs,
}

fn parse_mechanism(s: &str) -> Result<ScramMechanism, String> {
    ScramMechanism::ALL
        .into_iter()
        .find(|mechanism| mechanism.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown mechanism `{s}`: use SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// Runs a `shardctl user` subcommand.
pub(crate) fn run(command: &UserCommand, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    match command {
        UserCommand::Add(args) => add(args, report),
        UserCommand::List(args) => list(args, report),
        UserCommand::Delete(args) => delete(args, report),
    }
}

/// The new password: the environment's, else standard input's first line.
fn new_password() -> Result<String, ToolError> {
    let password = match std::env::var(PASSWORD_VARIABLE) {
        Ok(password) => password,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| ToolError::Refused(format!("reading the password from standard input: {e}")))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX || password.contains('\0') {
        return Err(ToolError::Refused(format!(
            "a password is 1 to {PASSWORD_BYTES_MAX} bytes without NUL (set {PASSWORD_VARIABLE} or give it on stdin)"
        )));
    }
    Ok(password)
}

/// PBKDF2 of `password` with `salt` for `mechanism`: the SaltedPassword of
/// RFC 5802, what AlterUserScramCredentials carries.
fn salted_password(mechanism: ScramMechanism, password: &str, salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
    let algorithm = match mechanism {
        ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
    };
    let mut salted = vec![0u8; mechanism.digest_bytes()];
    pbkdf2::derive(algorithm, iterations, salt, password.as_bytes(), &mut salted);
    salted
}

fn all_or(mechanisms: &[ScramMechanism]) -> Vec<ScramMechanism> {
    if mechanisms.is_empty() {
        ScramMechanism::ALL.to_vec()
    } else {
        mechanisms.to_vec()
    }
}

fn alter(
    broker: &BrokerArgs,
    user: &str,
    request: &AlterUserScramCredentialsRequest,
    what: &str,
) -> Result<(), ToolError> {
    let mut client = Client::connect(&broker.bootstrap)?;
    let response = client.call("AlterUserScramCredentials", SCRAM_API_VERSION, request)?;
    let Some(result) = response.results.iter().find(|r| r.user.as_str() == user) else {
        return Err(ToolError::Refused(format!(
            "AlterUserScramCredentials: the broker's answer does not name {user}"
        )));
    };
    if result.error_code != 0 {
        return Err(refused(
            &format!("{what} {user}"),
            result.error_code,
            result.error_message.as_ref(),
        ));
    }
    Ok(())
}

fn add(args: &AddArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&args.iterations) {
        return Err(ToolError::Refused(format!(
            "--iterations must be {SCRAM_ITERATIONS_MIN} to {SCRAM_ITERATIONS_MAX}"
        )));
    }
    let iterations =
        NonZeroU32::new(args.iterations).ok_or_else(|| ToolError::Refused("--iterations must not be 0".into()))?;
    let password = new_password()?;
    let random = ring::rand::SystemRandom::new();
    let mut request = AlterUserScramCredentialsRequest::default();
    for mechanism in all_or(&args.mechanisms) {
        let mut salt = vec![0u8; SALT_BYTES];
        random
            .fill(&mut salt)
            .map_err(|_| ToolError::Refused("the system random source failed".into()))?;
        let mut upsertion = ScramCredentialUpsertion::default();
        upsertion.name = text(&args.user);
        upsertion.mechanism = mechanism.code();
        upsertion.iterations = i32::try_from(args.iterations).unwrap_or(i32::MAX);
        upsertion.salted_password = salted_password(mechanism, &password, &salt, iterations).into();
        upsertion.salt = salt.into();
        request.upsertions.push(upsertion);
    }
    alter(&args.broker, &args.user, &request, "adding")?;
    let names: Vec<&str> = all_or(&args.mechanisms).iter().map(|m| m.name()).collect();
    report.line(format_args!(
        "stored {} credentials for {} ({} iterations)",
        names.join(", "),
        args.user,
        args.iterations
    ))?;
    Ok(Verdict::Healthy)
}

fn describe(broker: &BrokerArgs, users: &[String]) -> Result<DescribeUserScramCredentialsResponse, ToolError> {
    let mut request = DescribeUserScramCredentialsRequest::default();
    request.users = (!users.is_empty()).then(|| {
        users
            .iter()
            .map(|user| {
                let mut name = UserName::default();
                name.name = text(user);
                name
            })
            .collect()
    });
    let mut client = Client::connect(&broker.bootstrap)?;
    let response = client.call("DescribeUserScramCredentials", SCRAM_API_VERSION, &request)?;
    if response.error_code != 0 {
        return Err(refused(
            "listing users",
            response.error_code,
            response.error_message.as_ref(),
        ));
    }
    Ok(response)
}

fn list(args: &ListArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let response = describe(&args.broker, &args.users)?;
    report.line(format_args!("{:<32} {:<14} ITERATIONS", "USER", "MECHANISM"))?;
    for result in &response.results {
        if result.error_code != 0 {
            return Err(refused(
                &format!("describing {}", result.user.as_str()),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        for info in &result.credential_infos {
            let mechanism = ScramMechanism::from_code(info.mechanism)
                .map_or_else(|| format!("code {}", info.mechanism), |m| m.name().to_owned());
            report.line(format_args!(
                "{:<32} {mechanism:<14} {}",
                result.user.as_str(),
                info.iterations
            ))?;
        }
    }
    Ok(Verdict::Healthy)
}

fn delete(args: &DeleteArgs, report: &mut Report<'_>) -> Result<Verdict, ToolError> {
    let mechanisms = if args.mechanisms.is_empty() {
        let response = describe(&args.broker, std::slice::from_ref(&args.user))?;
        let result = response.results.first();
        if let Some(result) = result.filter(|r| r.error_code != 0) {
            return Err(refused(
                &format!("deleting {}", args.user),
                result.error_code,
                result.error_message.as_ref(),
            ));
        }
        result
            .iter()
            .flat_map(|r| r.credential_infos.iter())
            .filter_map(|info| ScramMechanism::from_code(info.mechanism))
            .collect()
    } else {
        args.mechanisms.clone()
    };
    let mut request = AlterUserScramCredentialsRequest::default();
    request.deletions = mechanisms
        .iter()
        .map(|mechanism| {
            let mut deletion = ScramCredentialDeletion::default();
            deletion.name = text(&args.user);
            deletion.mechanism = mechanism.code();
            deletion
        })
        .collect();
    alter(&args.broker, &args.user, &request, "deleting")?;
    let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
    report.line(format_args!(
        "deleted {} credentials of {}",
        names.join(", "),
        args.user
    ))?;
    Ok(Verdict::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_passwords_have_the_digest_length_and_depend_on_the_password() {
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81,
        ];
        let iterations = NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN);
        let salted = salted_password(ScramMechanism::Sha256, "pencil", &salt, iterations);
        assert_eq!(salted.len(), 32);
        assert_eq!(
            salted_password(ScramMechanism::Sha512, "pencil", &salt, iterations).len(),
            64
        );
        assert_ne!(
            salted,
            salted_password(ScramMechanism::Sha256, "pencil!", &salt, iterations)
        );
        assert_eq!(parse_mechanism("scram-sha-512"), Ok(ScramMechanism::Sha512));
        assert!(parse_mechanism("PLAIN").is_err());
    }
}
