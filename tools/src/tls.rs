//! TLS for shardctl's connections: with `SHARDCTL_TLS_CA` set, every
//! connection is TLS (1.2 or 1.3, rustls with the ring provider, as the
//! engine), trusting the CA certificates of that PEM file; with
//! `SHARDCTL_TLS_CERT` and `SHARDCTL_TLS_KEY` as well, shardctl presents that
//! certificate (mutual TLS: the principal is its subject). Blocking I/O, one
//! request at a time, like the rest of the tool.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
};

/// The CA file that turns TLS on.
const CA_VARIABLE: &str = "SHARDCTL_TLS_CA";
/// The client certificate chain (PEM), for mutual TLS.
const CERT_VARIABLE: &str = "SHARDCTL_TLS_CERT";
/// Its private key (PEM).
const KEY_VARIABLE: &str = "SHARDCTL_TLS_KEY";

/// A connection to a broker: plain TCP or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// `socket` as is, or TLS with `host` when `SHARDCTL_TLS_CA` is set. The
/// handshake runs on the first write, bounded by the socket's timeouts.
pub(crate) fn open(socket: TcpStream, host: &str) -> Result<Stream, String> {
    let Ok(ca) = std::env::var(CA_VARIABLE) else {
        return Ok(Stream::Plain(socket));
    };
    let config = client_config(Path::new(&ca))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("TLS server name {host}: {e}"))?;
    let session = ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
    Ok(Stream::Tls(Box::new(StreamOwned::new(session, socket))))
}

fn client_config(ca: &Path) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{CA_VARIABLE} {}: {e}", ca.display()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| format!("{CA_VARIABLE} {}: {e}", ca.display()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("{CA_VARIABLE} {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{CA_VARIABLE} {}: no certificate in the file", ca.display()));
    }
    #[expect(
        deprecated,
        reason = "ring offers no post-quantum key exchange; the engine's TLS uses it too (docs/dependencies.md)"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match (std::env::var(CERT_VARIABLE), std::env::var(KEY_VARIABLE)) {
        (Ok(cert), Ok(key)) => {
            let chain = CertificateDer::pem_file_iter(&cert)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{CERT_VARIABLE} {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{KEY_VARIABLE} {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("TLS client certificate: {e}"))
        }
        (Err(_), Err(_)) => Ok(builder.with_no_client_auth()),
        _ => Err(format!("{CERT_VARIABLE} and {KEY_VARIABLE} go together")),
    }
}
