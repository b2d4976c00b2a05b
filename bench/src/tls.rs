//! TLS to the brokers (`--tls-ca`), so the bench measures an SSL listener as a client sees it.
//!
//! rustls (TLS 1.2 and 1.3, the ring provider) over the same blocking `TcpStream` as plaintext.
//! A [`Transport`] is a socket, plain or TLS; a TLS transport shares one rustls session between
//! the writer and the reader half of a split connection (producers pipeline requests: one thread
//! writes, another reads). Each half holds the session's lock only while moving bytes between
//! rustls and its own buffers, never across a blocking socket call, so the reader waiting for a
//! response never stops the writer:
//! - writing: encrypt under the lock into a buffer, then write the buffer to the socket;
//! - reading: take decrypted bytes if rustls has some; otherwise read the socket into the
//!   half's own buffer without the lock, then feed rustls under the lock.
//!
//! Only the writer half sends TLS records (alerts and key updates rustls queues while reading
//! leave with the next write), so records leave in the order rustls made them.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    path::Path,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore,
};

use crate::error::BenchError;

/// Bytes read from the socket at a time by a reader half.
const SOCKET_READ_BYTES: usize = 64 * 1024;

/// The TLS settings of this process: set once by `--tls-ca`, read by every connection.
static CLIENT_CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Makes every later connection use TLS, trusting the certificate authorities in the PEM file
/// `ca_pem`.
pub fn trust(ca_pem: &Path) -> Result<(), BenchError> {
    let usage = |detail: String| BenchError::Usage(format!("--tls-ca {}: {detail}", ca_pem.display()));
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca_pem).map_err(|e| usage(e.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| usage(e.to_string()))?;
        roots.add(certificate).map_err(|e| usage(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(usage("no certificate in the file".to_string()));
    }
    #[expect(
        deprecated,
        reason = "ring offers no post-quantum key exchange; the engine's TLS uses it too (docs/dependencies.md)"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| usage(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    CLIENT_CONFIG
        .set(Arc::new(config))
        .map_err(|_| BenchError::Internal("TLS configured twice".to_string()))
}

/// A connected socket, plain or TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls {
        socket: TcpStream,
        session: Arc<Mutex<ClientConnection>>,
        /// Received TLS bytes not yet given to rustls (reader half).
        received: Vec<u8>,
    },
}

impl Transport {
    /// `socket` as is, or after a TLS handshake with `host` when `--tls-ca` was given.
    pub fn open(mut socket: TcpStream, host: &str) -> io::Result<Transport> {
        let Some(config) = CLIENT_CONFIG.get() else {
            return Ok(Transport::Plain(socket));
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {host}: {e}")))?;
        let mut session = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
        // Whole requests are encrypted at once (the writer drains them right after).
        session.set_buffer_limit(None);
        while session.is_handshaking() {
            session.complete_io(&mut socket)?;
        }
        Ok(Transport::Tls {
            socket,
            session: Arc::new(Mutex::new(session)),
            received: Vec::new(),
        })
    }

    /// A second handle on the same connection (the reader half of a split).
    pub fn try_clone(&self) -> io::Result<Transport> {
        Ok(match self {
            Transport::Plain(socket) => Transport::Plain(socket.try_clone()?),
            Transport::Tls { socket, session, .. } => Transport::Tls {
                socket: socket.try_clone()?,
                session: Arc::clone(session),
                received: Vec::new(),
            },
        })
    }

    /// The socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) | Transport::Tls { socket, .. } => socket,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (socket, session, received) = match self {
            Transport::Plain(socket) => return socket.read(buf),
            Transport::Tls {
                socket,
                session,
                received,
            } => (socket, session, received),
        };
        loop {
            {
                let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
                match session.reader().read(buf) {
                    Ok(read) => return Ok(read),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
                if !received.is_empty() {
                    let mut pending = &received[..];
                    let taken = session.read_tls(&mut pending)?;
                    session.process_new_packets().map_err(io::Error::other)?;
                    received.drain(..taken);
                    continue;
                }
            }
            let start = received.len();
            received.resize(start + SOCKET_READ_BYTES, 0);
            let read = socket.read(received.get_mut(start..).unwrap_or_default());
            received.truncate(start + *read.as_ref().unwrap_or(&0));
            if read? == 0 {
                return Ok(0);
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (socket, session) = match self {
            Transport::Plain(socket) => return socket.write_all(buf),
            Transport::Tls { socket, session, .. } => (socket, session),
        };
        let mut records = Vec::with_capacity(buf.len() + 64);
        {
            let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
            session.writer().write_all(buf)?;
            while session.wants_write() {
                session.write_tls(&mut records)?;
            }
        }
        socket.write_all(&records)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(socket) | Transport::Tls { socket, .. } => socket.flush(),
        }
    }
}
