//! HTTPS served by Karen itself: rustls with the aws-lc-rs provider, a PEM
//! certificate chain and key read from files, and a resolver that swaps in the
//! new pair when the files change (checked every `reload_interval_secs`), so
//! a renewed certificate is served without a restart. A pair that does not
//! load (half-written files, a key that does not match the certificate) is
//! logged and the previous pair stays in service.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::ServerTlsConfig;

/// Connections whose handshake finished, waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// The certificate and key files, and how often to look at them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub reload_interval: Duration,
    pub handshake_timeout: Duration,
}

impl TlsFiles {
    /// The files of `[server.tls]`, or `None` when TLS is off.
    pub fn from_config(config: &ServerTlsConfig) -> Option<Self> {
        Some(Self {
            cert_file: config.cert_file.clone()?,
            key_file: config.key_file.clone()?,
            reload_interval: Duration::from_secs(config.reload_interval_secs.max(1)),
            handshake_timeout: Duration::from_secs(config.handshake_timeout_secs.max(1)),
        })
    }
}

/// A certificate pair as loaded, with a fingerprint of the file contents it came from.
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: u64,
}

/// Hands rustls the current certificate pair; [`watch`](Self::watch) replaces it.
pub struct ReloadingCertResolver {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

impl std::fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert_file", &self.files.cert_file)
            .field("key_file", &self.files.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(current) => Some(current.key.clone()),
            // A writer panicked mid-swap (it cannot: the swap is one assignment).
            Err(poisoned) => Some(poisoned.into_inner().key.clone()),
        }
    }
}

impl ReloadingCertResolver {
    /// Loads the pair once; a problem here stops the server from starting.
    pub async fn load(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let loaded = load_pair(&files).await?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(loaded),
        }))
    }

    /// Re-reads the files when their contents changed; returns whether a new
    /// pair is now served.
    pub async fn reload_if_changed(&self) -> bool {
        let fingerprint = match fingerprint_files(&self.files).await {
            Ok((fingerprint, _, _)) => fingerprint,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot read the TLS certificate files; serving the previous certificate");
                return false;
            }
        };
        if self.fingerprint() == fingerprint {
            return false;
        }
        match load_pair(&self.files).await {
            Ok(loaded) => {
                match self.current.write() {
                    Ok(mut current) => *current = loaded,
                    Err(poisoned) => *poisoned.into_inner() = loaded,
                }
                tracing::info!(cert_file = %self.files.cert_file.display(), "tls certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "the changed TLS certificate files do not load; serving the previous certificate");
                false
            }
        }
    }

    fn fingerprint(&self) -> u64 {
        match self.current.read() {
            Ok(current) => current.fingerprint,
            Err(poisoned) => poisoned.into_inner().fingerprint,
        }
    }

    /// Checks the files every `reload_interval` until the task is aborted.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let resolver = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(resolver.files.reload_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                resolver.reload_if_changed().await;
            }
        })
    }

    /// The rustls server configuration: TLS 1.2 and 1.3 (aws-lc-rs), HTTP/2
    /// and HTTP/1.1 by ALPN, certificates from this resolver.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("server.tls: the TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

async fn read(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .with_context(|| format!("{key}: cannot read {}", path.display()))
}

async fn fingerprint_files(files: &TlsFiles) -> anyhow::Result<(u64, Vec<u8>, Vec<u8>)> {
    let cert = read(&files.cert_file, "server.tls.cert_file").await?;
    let key = read(&files.key_file, "server.tls.key_file").await?;
    let mut hasher = DefaultHasher::new();
    cert.hash(&mut hasher);
    key.hash(&mut hasher);
    Ok((hasher.finish(), cert, key))
}

async fn load_pair(files: &TlsFiles) -> anyhow::Result<Loaded> {
    let (fingerprint, cert_pem, key_pem) = fingerprint_files(files).await?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "server.tls.cert_file: {} is not a PEM certificate chain",
                files.cert_file.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "server.tls.cert_file: {} holds no certificate",
        files.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        // The parser's message could quote the file; say only where to look.
        anyhow::anyhow!(
            "server.tls.key_file: {} is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key_file.display()
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|error| {
        anyhow::anyhow!(
            "server.tls: the key in {} does not fit the certificate in {}: {error}",
            files.key_file.display(),
            files.cert_file.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        fingerprint,
    })
}

/// A listener that hands axum TLS streams: TCP connections are accepted and
/// their handshakes run in tasks of their own (a slow or silent client delays
/// nobody else), bounded by the handshake timeout.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Wraps `listener`; connections are served with `config`.
    pub fn new(
        listener: TcpListener,
        config: rustls::ServerConfig,
        handshake_timeout: Duration,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor_task =
            tokio::spawn(accept_loop(listener, acceptor, sender, handshake_timeout));
        Ok(Self {
            accepted,
            local_addr,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    handshake_timeout: Duration,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // As axum's own listener: per-connection errors are retried at
                // once, others (e.g. too many open files) after a pause.
                if !matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        // Small writes (SSE events, short answers) must not wait for Nagle's algorithm.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop never ends on its own; if it is gone, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
