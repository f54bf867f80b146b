//! TLS for the listeners: certificate loading, the SNI resolver, self-signed certificates and
//! hot reload. Each listener owns a [`ListenerCerts`] resolver whose table is swapped whole on
//! reload, so handshakes in progress and established connections keep the certificate they
//! started with while the next handshake gets the new one. A reload that fails (half-written
//! file, key not matching) keeps the last good table and is logged.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertSource, ListenerConfig, ListenerTls};

/// Errors loading certificates; each names the config key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("key `{key}`: {path}: {reason}")]
    Load {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot create the self-signed certificate {path}: {reason}")]
    SelfSigned { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the upstream host {0} cannot be checked against a TLS certificate")]
    UpstreamName(String),
}

/// The one crypto provider of the whole process (aws-lc-rs).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process default; harmless when called again.
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The certificates of one listener, chosen by SNI.
pub struct ListenerCerts {
    table: RwLock<Arc<SniTable>>,
}

struct SniTable {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl fmt::Debug for ListenerCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.current();
        f.debug_struct("ListenerCerts")
            .field("exact", &table.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &table.wildcard.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ListenerCerts {
    fn current(&self) -> Arc<SniTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, table: SniTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let table = self.current();
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return table.default.clone();
        };
        if let Some(ck) = table.exact.get(&name) {
            return ck.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| table.wildcard.get(parent))
            .unwrap_or(&table.default)
            .clone()
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(hello.server_name()))
    }
}

/// Loads and reloads the certificates of every TLS listener.
pub struct CertLoader {
    provider: Arc<CryptoProvider>,
    data_dir: PathBuf,
}

impl CertLoader {
    pub fn new(provider: Arc<CryptoProvider>, data_dir: &Path) -> Self {
        CertLoader {
            provider,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Builds the resolver for a listener, generating its self-signed certificate if asked.
    pub fn load(
        &self,
        listener: &ListenerConfig,
        tls: &ListenerTls,
    ) -> Result<Arc<ListenerCerts>, TlsError> {
        let table = self.table(listener, tls)?;
        Ok(Arc::new(ListenerCerts {
            table: RwLock::new(Arc::new(table)),
        }))
    }

    /// Re-reads a listener's files into `certs`; on error the old table stays.
    pub fn reload(
        &self,
        listener: &ListenerConfig,
        tls: &ListenerTls,
        certs: &ListenerCerts,
    ) -> Result<(), TlsError> {
        let table = self.table(listener, tls)?;
        certs.replace(table);
        Ok(())
    }

    fn table(&self, listener: &ListenerConfig, tls: &ListenerTls) -> Result<SniTable, TlsError> {
        let default = self.certified_key(listener, &tls.default)?;
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for entry in &tls.sni {
            let ck = self.certified_key(listener, &entry.source)?;
            for name in &entry.server_names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_string(), ck.clone()),
                    None => exact.insert(name.clone(), ck.clone()),
                };
            }
        }
        Ok(SniTable {
            default,
            exact,
            wildcard,
        })
    }

    fn certified_key(
        &self,
        listener: &ListenerConfig,
        source: &CertSource,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let (cert, key, key_name) = match source {
            CertSource::Files {
                cert,
                key,
                key_name,
            } => (cert.clone(), key.clone(), key_name.clone()),
            CertSource::SelfSigned => {
                let (cert, key) = self.self_signed_paths(listener);
                ensure_self_signed(listener, &cert, &key)?;
                (cert, key, format!("listener[{}].tls_cert", listener.index))
            }
        };
        load_certified_key(&self.provider, &cert, &key, &key_name).map(Arc::new)
    }

    /// Where the generated certificate of a listener lives.
    pub fn self_signed_paths(&self, listener: &ListenerConfig) -> (PathBuf, PathBuf) {
        let dir = self.data_dir.join("tls");
        let stem = format!("{}-{}", listener.kind, listener.index);
        (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        )
    }

    /// Every certificate and key file a listener reads (for change detection).
    pub fn watched_files(&self, listener: &ListenerConfig, tls: &ListenerTls) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for source in std::iter::once(&tls.default).chain(tls.sni.iter().map(|s| &s.source)) {
            match source {
                CertSource::Files { cert, key, .. } => files.extend([cert.clone(), key.clone()]),
                CertSource::SelfSigned => {
                    let (c, k) = self.self_signed_paths(listener);
                    files.extend([c, k]);
                }
            }
        }
        files
    }
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_certified_key(
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
    key_name: &str,
) -> Result<CertifiedKey, TlsError> {
    let err = |path: &Path, reason: String| TlsError::Load {
        key: key_name.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert, "no CERTIFICATE block in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("no usable private key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| err(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        err(
            key,
            format!("does not match the certificate in {}: {e}", cert.display()),
        )
    })?;
    Ok(ck)
}

/// Creates the self-signed certificate once; later starts reuse it so browsers' exceptions hold.
fn ensure_self_signed(listener: &ListenerConfig, cert: &Path, key: &Path) -> Result<(), TlsError> {
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let fail = |reason: String| TlsError::SelfSigned {
        path: cert.to_path_buf(),
        reason,
    };
    let host = listener.public_host();
    let mut names = vec![
        host.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    names.sort();
    names.dedup();
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| fail(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| fail(e.to_string()))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("ms365-gateway {} ({host})", listener.kind),
    );
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| fail(e.to_string()))?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    crate::fsutil::write_private(key, key_pair.serialize_pem().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(cert, certificate.pem()).map_err(|e| fail(e.to_string()))?;
    tracing::info!(path = %cert.display(), listener = %listener.name(), "generated a self-signed certificate");
    Ok(())
}

/// A content hash of each file (`None` when unreadable). Timestamps are too coarse: a
/// certificate replaced within the same clock tick, with the same length, must still count.
pub fn fingerprint(files: &[PathBuf]) -> Vec<Option<u64>> {
    use std::hash::{Hash, Hasher};
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).ok()?;
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            Some(hasher.finish())
        })
        .collect()
}

/// The rustls server configuration of a listener: TLS 1.2 + 1.3, ALPN h2 then http/1.1.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    certs: Arc<ListenerCerts>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
