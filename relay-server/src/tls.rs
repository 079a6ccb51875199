//! TLS for a relay on the internet (`--tls-cert`, `--tls-key`): the page and
//! the API over HTTPS, and secure WebSocket (`/tls/ws`) for browsers, which
//! may not open a plain `ws://` connection from a page served over https.
//!
//! One certificate chain and key serve both. They are read once, at start;
//! a renewed certificate takes a restart.

use std::{path::Path, sync::Arc};

use meshtalk_protocol::arch::WebsocketTls;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{self, PemObject},
};

/// A certificate chain and its key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: String,
    },
    /// The key file holds no PEM private key, or a broken one.
    #[error("{path}: no usable private key: {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// What the PEM reader said.
        reason: String,
    },
    /// The PEM text is broken.
    #[error("{path}: {reason}")]
    BadPem {
        /// The file.
        path: String,
        /// What the PEM reader said.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("{cert} and {key} do not make a usable TLS identity: {reason}")]
    Refused {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        reason: String,
    },
}

/// The relay's TLS identity, ready for both of its uses.
pub struct Tls {
    /// For the HTTP side.
    pub http: Arc<rustls::ServerConfig>,
    /// For the `/tls/ws` listener.
    pub websocket: WebsocketTls,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// What is wrong with a PEM file, in words (the reader's own messages show
/// raw bytes).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM section has no end line ({})",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "a PEM section starts with a malformed line ({})",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(why) => format!("a PEM section is not valid base64 ({why})"),
        pem::Error::NoItemsFound => "no PEM private key in it".to_owned(),
        pem::Error::SectionTooLarge => "a PEM section is too large".to_owned(),
        other => other.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl Tls {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadPem {
                path: cert_path.display().to_string(),
                reason: pem_reason(&e),
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert_path.display().to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
            path: key_path.display().to_string(),
            reason: pem_reason(&e),
        })?;
        let refused = |reason: String| TlsError::Refused {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
            reason,
        };

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut http = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| refused(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| refused(e.to_string()))?;
        // The HTTP side speaks HTTP/1.1 only.
        http.alpn_protocols = vec![b"http/1.1".to_vec()];

        use meshtalk_protocol::libp2p::websocket::tls::{Certificate, PrivateKey};
        let websocket = WebsocketTls::new(
            PrivateKey::new(key.secret_der().to_vec()),
            certs.iter().map(|c| Certificate::new(c.to_vec())),
        )
        .map_err(|e| refused(e.to_string()))?;
        Ok(Self {
            http: Arc::new(http),
            websocket,
        })
    }
}
