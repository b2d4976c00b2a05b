//! TLS on Kafka listeners: rustls (TLS 1.2 and 1.3, the ring provider)
//! over glommio's TCP streams, through futures-rustls.
//!
//! ```text
//! PEM files ──load──► rustls ServerConfig ──Arc──► TlsAcceptor (shared by every shard)
//!                         ▲                              │ accept(tcp): handshake, bounded in time
//!   reload() (SIGHUP) ────┘ swaps the Arc                ▼
//!                                         TlsStream<TcpStream> + principal (client cert subject)
//! ```
//!
//! Who owns what: one [`TlsAcceptor`] per TLS listener, made on the main
//! thread and cloned into every shard (it is `Send + Sync`: the current
//! configuration sits behind an `RwLock` read once per accepted connection,
//! never per read or write). [`TlsAcceptor::reload`] reads the files again
//! and swaps the configuration: connections accepted afterwards get the new
//! certificate, established ones keep the one they negotiated. A reload that
//! fails (a missing file, a key that does not match) leaves the old
//! configuration serving and returns the error.
//!
//! The hot path: a TLS connection is served by the same generic loop as a
//! plaintext one (`serve_connection` is generic over [`Transport`]), so the
//! plaintext path is monomorphised on `TcpStream` and pays nothing for TLS:
//! no box, no enum.
//!
//! The principal of a connection that presented a client certificate is the
//! certificate's subject as an RFC 4514 string (`CN=alice,O=Example`), as
//! Kafka's default SSL principal builder names it.

use std::{
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};
use glommio::net::TcpStream;

/// Longest a TLS handshake may take before the connection is closed, so a
/// peer that connects and sends nothing cannot hold a connection slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificates one PEM file may hold (a chain or a CA bundle); a file with
/// more is refused rather than loaded whole.
const PEM_CERTIFICATES_MAX: usize = 1_000;

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A certificate is asked for and verified if sent; a client may send none.
    Requested,
    /// A client without a certificate signed by the client CA is refused.
    Required,
}

/// Where a TLS listener's certificate, key and client CA come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain, leaf first (PEM).
    pub cert_chain_pem: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
    /// CA certificates client certificates must chain to (PEM); needed
    /// unless `client_auth` is [`ClientAuth::None`].
    pub client_ca_pem: Option<PathBuf>,
    /// Whether clients are asked for a certificate.
    pub client_auth: ClientAuth,
}

/// Why TLS settings could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no valid PEM of the expected kind.
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        expected: &'static str,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds more certificates than [`PEM_CERTIFICATES_MAX`].
    TooManyCertificates {
        /// The file.
        path: PathBuf,
    },
    /// Client authentication was asked for without a client CA file.
    NoClientCa,
    /// rustls refused the configuration (a key that does not match the
    /// certificate, an unusable CA, ...).
    Rustls(rustls::Error),
    /// The client CA could not be made into a verifier.
    Verifier(rustls::server::VerifierBuilderError),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem { path, expected, source } => {
                write!(f, "reading {expected} from {}: {source}", path.display())
            }
            TlsError::TooManyCertificates { path } => write!(
                f,
                "{} holds more than {PEM_CERTIFICATES_MAX} certificates",
                path.display()
            ),
            TlsError::NoClientCa => write!(f, "client certificates are asked for but no client CA file is set"),
            TlsError::Rustls(source) => write!(f, "TLS configuration: {source}"),
            TlsError::Verifier(source) => write!(f, "client CA: {source}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Pem { source, .. } => Some(source),
            TlsError::Rustls(source) => Some(source),
            TlsError::Verifier(source) => Some(source),
            TlsError::TooManyCertificates { .. } | TlsError::NoClientCa => None,
        }
    }
}

/// A TLS listener's server side: the current configuration, reloadable.
#[derive(Clone)]
pub struct TlsAcceptor {
    settings: Arc<TlsSettings>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").field("settings", &self.settings).finish()
    }
}

impl TlsAcceptor {
    /// Loads the files named by `settings`.
    pub fn new(settings: TlsSettings) -> Result<TlsAcceptor, TlsError> {
        let config = load(&settings)?;
        Ok(TlsAcceptor {
            settings: Arc::new(settings),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; connections accepted from now on get the new
    /// configuration. On error the old one keeps serving.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.settings)?;
        // A poisoned lock only means a writer panicked mid-swap of an Arc,
        // which leaves a valid Arc behind: take it over.
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = config;
        Ok(())
    }

    /// The settings this acceptor loads.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    fn config(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// Runs the server handshake on `stream`, within
    /// [`TLS_HANDSHAKE_TIMEOUT`]; returns the TLS stream and the client
    /// certificate's subject if one was presented.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<(TlsStream, Option<String>)> {
        let acceptor = futures_rustls::TlsAcceptor::from(self.config());
        let stream = within_handshake_timeout(acceptor.accept(stream)).await?;
        let principal = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| subject_of(leaf));
        Ok((TlsStream(stream), principal))
    }
}

/// Where the client side of a TLS connection (a follower reaching its
/// leader's SSL or SASL_SSL listener) gets its trust and its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientSettings {
    /// CA certificates the server's certificate must chain to (PEM).
    pub ca_pem: PathBuf,
    /// The client's own certificate chain and key (PEM), presented when
    /// the server asks (mutual TLS); `None` presents nothing.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The client side of TLS: the current configuration, reloadable like
/// [`TlsAcceptor`]'s.
#[derive(Clone)]
pub struct TlsConnector {
    settings: Arc<TlsClientSettings>,
    current: Arc<RwLock<Arc<ClientConfig>>>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TlsConnector {
    /// Loads the files named by `settings`.
    pub fn new(settings: TlsClientSettings) -> Result<TlsConnector, TlsError> {
        let config = load_client(&settings)?;
        Ok(TlsConnector {
            settings: Arc::new(settings),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; connections made from now on use them. On
    /// error the old configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load_client(&self.settings)?;
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = config;
        Ok(())
    }

    /// Runs the client handshake on `stream` with the server named
    /// `server_name` (a DNS name or an IP address its certificate must
    /// cover), within [`TLS_HANDSHAKE_TIMEOUT`].
    pub async fn connect(&self, server_name: &str, stream: TcpStream) -> io::Result<TlsClientStream> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("server name {server_name}: {e}")))?;
        let config = {
            let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(&current)
        };
        let stream = within_handshake_timeout(futures_rustls::TlsConnector::from(config).connect(name, stream)).await?;
        Ok(TlsClientStream(stream))
    }
}

/// `handshake`, or a TimedOut error after [`TLS_HANDSHAKE_TIMEOUT`].
async fn within_handshake_timeout<T>(handshake: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    let timeout = async {
        glommio::timer::sleep(TLS_HANDSHAKE_TIMEOUT).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
    };
    futures_lite::future::or(handshake, timeout).await
}

/// The subject of a DER certificate as an RFC 4514 string.
fn subject_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// The crypto provider of both sides.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[expect(
        deprecated,
        reason = "ring offers no post-quantum key exchange; chosen over aws-lc-rs for its build (docs/dependencies.md)"
    )]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// A certificate chain and its private key, from PEM files.
fn identity(chain: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates(chain, "a certificate chain")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_path_buf(),
        expected: "a private key",
        source,
    })?;
    Ok((chain, key))
}

/// The CA certificates of `path` as a root store.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path, "CA certificates")? {
        roots.add(ca).map_err(TlsError::Rustls)?;
    }
    Ok(roots)
}

fn load_client(settings: &TlsClientSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?
        .with_root_certificates(roots(&settings.ca_pem)?);
    let config = match &settings.identity {
        Some((chain, key)) => {
            let (chain, key) = identity(chain, key)?;
            builder.with_client_auth_cert(chain, key).map_err(TlsError::Rustls)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn load(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = identity(&settings.cert_chain_pem, &settings.key_pem)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let ca_path = settings.client_ca_pem.as_ref().ok_or(TlsError::NoClientCa)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_path)?), provider);
            let verifier = if settings.client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(TlsError::Verifier)?)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(TlsError::Rustls)?;
    Ok(Arc::new(config))
}

fn certificates(path: &Path, expected: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        path: path.to_path_buf(),
        expected,
        source,
    };
    let mut out = Vec::new();
    for certificate in CertificateDer::pem_file_iter(path).map_err(pem_error)? {
        if out.len() == PEM_CERTIFICATES_MAX {
            return Err(TlsError::TooManyCertificates {
                path: path.to_path_buf(),
            });
        }
        out.push(certificate.map_err(pem_error)?);
    }
    if out.is_empty() {
        return Err(pem_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(out)
}

/// A server-side TLS connection over a glommio TCP stream.
pub struct TlsStream(futures_rustls::server::TlsStream<TcpStream>);

/// A client-side TLS connection over a glommio TCP stream.
pub struct TlsClientStream(futures_rustls::client::TlsStream<TcpStream>);

/// `AsyncRead` and `AsyncWrite` of a TLS stream newtype, passed through to
/// the futures-rustls stream it wraps.
macro_rules! forward_async_io {
    ($stream:ty) => {
        impl AsyncRead for $stream {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                context: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::pin::Pin::new(&mut self.0).poll_read(context, buf)
            }
        }

        impl AsyncWrite for $stream {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                context: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::pin::Pin::new(&mut self.0).poll_write(context, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                context: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::pin::Pin::new(&mut self.0).poll_flush(context)
            }

            fn poll_close(
                mut self: std::pin::Pin<&mut Self>,
                context: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::pin::Pin::new(&mut self.0).poll_close(context)
            }
        }
    };
}

forward_async_io!(TlsStream);
forward_async_io!(TlsClientStream);

/// A byte stream a Kafka connection is served over: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// The peer's address, if the socket still knows it.
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl Transport for TcpStream {
    fn peer_addr(&self) -> Option<SocketAddr> {
        TcpStream::peer_addr(self).ok()
    }
}

impl Transport for TlsStream {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.get_ref().0.peer_addr().ok()
    }
}
