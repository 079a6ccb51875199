//! The relay's long-lived secrets, kept in the data directory: the identity
//! key (the peer id) and the WebRTC certificate (the certhash in browsers'
//! addresses). A missing file is created; an unreadable or corrupt one is an
//! error naming the file, never a silent new identity.

use std::path::Path;

use meshtalk_protocol::{
    arch::{Certificate, new_certificate},
    keyfile::{self, KeyError, read_secret, write_secret},
    libp2p::identity::Keypair,
};

/// File name of the identity key (protobuf-encoded libp2p keypair).
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the WebRTC certificate (PEM).
pub const CERTIFICATE_FILE: &str = "webrtc-cert.pem";

/// Loads the identity key from `dir`, creating it on first start.
pub fn load_or_create_identity(dir: &Path) -> Result<Keypair, KeyError> {
    keyfile::load_or_create_identity(&dir.join(IDENTITY_FILE))
}

/// Loads the WebRTC certificate from `dir`, creating it on first start.
pub fn load_or_create_certificate(dir: &Path) -> Result<Certificate, KeyError> {
    let path = dir.join(CERTIFICATE_FILE);
    match read_secret(&path)? {
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
            write_secret(&path, certificate.serialize_pem().as_bytes())?;
            tracing::info!(path = %path.display(), "created a new WebRTC certificate");
            Ok(certificate)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

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
