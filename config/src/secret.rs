//! Secrets (cluster keys, provider tokens): kept out of every log line, error and Debug output.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` and `Display` print nothing of it, so it cannot leak through
/// `{:?}` in a log line or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }
    /// The secret bytes; call only where the secret is used (signing, an Authorization header).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The secret as UTF-8 text (API tokens), if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret file could not be used. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: cannot read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}: is empty")]
    Empty { path: PathBuf },
    #[error("{path}: too short ({len} bytes; at least {min} needed)")]
    TooShort {
        path: PathBuf,
        len: usize,
        min: usize,
    },
    #[error(
        "{path}: readable by group or others (mode {mode:04o}); run `chmod 600 {path}` \
         (the daemon refuses a shared secret others can read)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// Reads a secret file, trimming trailing whitespace (editors add a newline).
///
/// With `private`, a file that group or others may read is refused, as Heartbeat refuses
/// such an `authkeys`. `min_len` is the shortest acceptable secret in bytes.
pub fn read_secret_file(path: &Path, private: bool, min_len: usize) -> Result<Secret, SecretError> {
    let unreadable = |e: std::io::Error| SecretError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(SecretError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = std::fs::read(path).map_err(unreadable)?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    if bytes.len() < min_len {
        return Err(SecretError::TooShort {
            path: path.to_owned(),
            len: bytes.len(),
            min: min_len,
        });
    }
    Ok(Secret(bytes))
}

/// Resolves a token file name: an absolute path as is; a relative one inside
/// `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`) when that is set.
pub fn credential_path(name: &Path) -> PathBuf {
    if name.is_absolute() {
        return name.to_owned();
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Path::new(&dir).join(name),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new(b"hunter2-hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn private_file_is_read_and_trimmed() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "k", b"0123456789abcdef0123\n", 0o600);
        let s = read_secret_file(&p, true, 16).unwrap();
        assert_eq!(s.expose(), b"0123456789abcdef0123");
    }

    #[test]
    fn group_readable_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "k", b"0123456789abcdef0123", 0o640);
        let e = read_secret_file(&p, true, 16).unwrap_err();
        assert!(e.to_string().contains("mode 0640"), "{e}");
        assert!(!e.to_string().contains("0123456789"), "{e}");
    }

    #[test]
    fn empty_short_and_missing_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let empty = write(d.path(), "e", b"\n", 0o600);
        assert!(matches!(
            read_secret_file(&empty, true, 16),
            Err(SecretError::Empty { .. })
        ));
        let short = write(d.path(), "s", b"abc", 0o600);
        assert!(matches!(
            read_secret_file(&short, true, 16),
            Err(SecretError::TooShort { len: 3, .. })
        ));
        assert!(matches!(
            read_secret_file(&d.path().join("nope"), true, 16),
            Err(SecretError::Unreadable { .. })
        ));
    }
}
