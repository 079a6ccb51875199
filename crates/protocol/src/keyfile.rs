//! Secret keys in files (native nodes): read, and written readable by
//! their owner only, atomically. A missing file is created; an unreadable
//! or corrupt one is an error naming the file, never a silent new key.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

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
        /// What the file should hold.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// The identity kept in `path` ([`load_or_create_identity`]), or, without
/// a file, a new Ed25519 one for this run only.
pub fn identity(path: Option<&Path>) -> Result<Keypair, KeyError> {
    match path {
        Some(path) => load_or_create_identity(path),
        None => Ok(Keypair::generate_ed25519()),
    }
}

/// Loads the identity key (a protobuf-encoded libp2p keypair) from
/// `path`, creating it (Ed25519) when the file does not exist.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, KeyError> {
    match read_secret(path)? {
        Some(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::Corrupt {
            path: path.to_owned(),
            what: "identity key",
            reason: e.to_string(),
        }),
        None => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| KeyError::Corrupt {
                    path: path.to_owned(),
                    what: "identity key",
                    reason: e.to_string(),
                })?;
            write_secret(path, &bytes)?;
            tracing::info!(path = %path.display(), "created a new identity");
            Ok(keypair)
        }
    }
}

/// A file's bytes, or `None` when it does not exist.
pub fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
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
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
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

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("meshtalk-keyfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("identity.key")
    }

    #[test]
    fn an_identity_survives_reload_and_is_private() -> Result<(), KeyError> {
        let path = temp_file("identity");
        let first = load_or_create_identity(&path)?;
        let second = load_or_create_identity(&path)?;
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path)
                .map_err(|source| KeyError::Io {
                    path: path.clone(),
                    source,
                })?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn a_corrupt_identity_is_an_error_naming_the_file() -> Result<(), std::io::Error> {
        let path = temp_file("corrupt");
        fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        fs::write(&path, b"garbage")?;
        let e = load_or_create_identity(&path).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("identity.key") && e.contains("corrupt")));
        // Nothing was overwritten.
        assert_eq!(fs::read(&path)?, b"garbage");
        Ok(())
    }
}
