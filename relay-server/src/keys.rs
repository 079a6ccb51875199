//! The relay's long-lived secrets, kept in the data directory: the identity
//! key (the peer id) and the WebRTC certificate (the certhash in browsers'
//! addresses). A missing file is created; an unreadable or corrupt one is an
//! error naming the file, never a silent new identity.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use meshtalk_protocol::{
    arch::{Certificate, new_certificate},
    libp2p::identity::Keypair,
};

/// File name of the identity key (protobuf-encoded libp2p keypair).
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the WebRTC certificate (PEM).
pub const CERTIFICATE_FILE: &str = "webrtc-cert.pem";

/// A key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists but cannot be read, or cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's contents are not a valid key.
    #[error("{path}: corrupt {what} ({reason}); move it away to create a new one")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Identity key or certificate.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Loads the identity key from `dir`, creating it on first start.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair, KeyError> {
    let path = dir.join(IDENTITY_FILE);
    match read(&path)? {
        Some(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::Corrupt {
            path,
            what: "identity key",
            reason: e.to_string(),
        }),
        None => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| KeyError::Corrupt {
                    path: path.clone(),
                    what: "identity key",
                    reason: e.to_string(),
                })?;
            write_private(&path, &bytes)?;
            tracing::info!(path = %path.display(), "created a new identity");
            Ok(keypair)
        }
    }
}

/// Loads the WebRTC certificate from `dir`, creating it on first start.
pub fn load_or_create_certificate(dir: &Path) -> Result<Certificate, KeyError> {
    let path = dir.join(CERTIFICATE_FILE);
    match read(&path)? {
        Some(bytes) => {
            let corrupt = |reason: String| KeyError::Corrupt {
                path: path.clone(),
                what: "WebRTC certificate",
                reason,
            };
            let text = String::from_utf8(bytes).map_err(|_| corrupt("not text".into()))?;
            Certificate::from_pem(&text).map_err(|e| corrupt(e.to_string()))
        }
        None => {
            let certificate = new_certificate();
            write_private(&path, certificate.serialize_pem().as_bytes())?;
            tracing::info!(path = %path.display(), "created a new WebRTC certificate");
            Ok(certificate)
        }
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a secret readable by its owner only, atomically (a crash leaves
/// no half-written key behind).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshtalk-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn identity_survives_reload() -> Result<(), KeyError> {
        let dir = temp_dir("identity");
        let first = load_or_create_identity(&dir)?;
        let second = load_or_create_identity(&dir)?;
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        Ok(())
    }

    #[test]
    fn certificate_survives_reload() -> Result<(), KeyError> {
        let dir = temp_dir("cert");
        let first = load_or_create_certificate(&dir)?;
        let second = load_or_create_certificate(&dir)?;
        assert_eq!(first.fingerprint(), second.fingerprint());
        Ok(())
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() -> Result<(), std::io::Error> {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(IDENTITY_FILE), b"garbage")?;
        fs::write(dir.join(CERTIFICATE_FILE), b"garbage")?;
        let e = load_or_create_identity(&dir).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains(IDENTITY_FILE) && e.contains("corrupt")));
        let e = load_or_create_certificate(&dir)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains(CERTIFICATE_FILE) && e.contains("corrupt")));
        // Nothing was overwritten.
        assert_eq!(fs::read(dir.join(IDENTITY_FILE))?, b"garbage");
        Ok(())
    }
}
