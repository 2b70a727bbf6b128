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
        reason: match credential_hint(path) {
            Some(hint) if e.kind() == std::io::ErrorKind::NotFound => format!("{e}; {hint}"),
            _ => e.to_string(),
        },
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

/// Prefixes of DigitalOcean's tokens (personal access, OAuth, refresh): `dop_v1_` + 64 hex.
const TOKEN_PREFIXES: &[&str] = &["dop_v1_", "doo_v1_", "dor_v1_"];
/// The shortest run of letters and digits taken for a credential. Provider tokens are longer
/// (Vultr 36, Hetzner 64, DigitalOcean 64 hex, a cluster key 64 hex); names and words are
/// shorter, and host names break into shorter runs at '-' and '.'.
const CREDENTIAL_MIN_LEN: usize = 32;

/// Whether `word` looks like a credential: a known token prefix, or a run of at least
/// [`CREDENTIAL_MIN_LEN`] ASCII letters and digits holding both (an API token, a cluster key).
pub fn looks_like_credential(word: &str) -> bool {
    let word = word.trim();
    let body = TOKEN_PREFIXES
        .iter()
        .find_map(|p| word.strip_prefix(p))
        .unwrap_or(word);
    if body.len() != word.len() && !body.is_empty() {
        return true;
    }
    body.len() >= CREDENTIAL_MIN_LEN
        && body.chars().all(|c| c.is_ascii_alphanumeric())
        && body.chars().any(|c| c.is_ascii_digit())
        && body.chars().any(|c| c.is_ascii_alphabetic())
}

/// What replaces a credential in text shown to people.
pub const REDACTED: &str = "<redacted: looks like a credential>";

/// `text` with every word that [`looks_like_credential`] replaced by [`REDACTED`]. Everything
/// Tandem prints that may carry a value from a file or a command line (configuration errors,
/// summaries, ipctl's errors and status) goes through this: a token pasted in the wrong place
/// must not be echoed to a terminal, a log or a CI transcript.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if !text.split(|c: char| !is_word(c)).any(looks_like_credential) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_word(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        out.push_str(if looks_like_credential(word) {
            REDACTED
        } else {
            word
        });
        rest = &tail[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Where a missing credential should have come from, for a relative name (read from
/// `$CREDENTIALS_DIRECTORY`, or unresolved because it is not set).
fn credential_hint(resolved: &Path) -> Option<String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let name = match &dir {
        Some(d) => resolved.strip_prefix(d).ok()?,
        None if resolved.is_relative() => resolved,
        None => return None,
    };
    let n = name.display();
    let load = format!("LoadCredential={n}:/etc/tandem/{n}");
    Some(match dir {
        Some(d) => format!(
            "$CREDENTIALS_DIRECTORY ({}) holds no {n}: systemd puts it there from the unit's \
             {load} (tandem-resource-agent.service loads do-token so; add a line with \
             `systemctl edit tandem-resource-agent`)",
            d.display()
        ),
        None => format!(
            "a relative name is read from $CREDENTIALS_DIRECTORY, which is not set: systemd \
             sets it for a unit that loads the file with {load} (tandem-resource-agent.service \
             loads do-token so); outside systemd give an absolute path"
        ),
    })
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

    #[test]
    fn credentials_are_recognised_and_names_are_not() {
        let do_token = format!("dop_v1_{}", "0123456789abcdef".repeat(4));
        for secret in [
            do_token.as_str(),
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", // cluster key
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",                             // Vultr
            "jEheVytlAoFl7F8MqUQ7jAo2hOXASztX5a0gq7wUOmTJavdvjavk5v4wxhY1aR3d", // Hetzner
        ] {
            assert!(looks_like_credential(secret), "{secret}");
            let shown = redact(&format!("cannot read {secret}: no such file")).into_owned();
            assert_eq!(shown, format!("cannot read {REDACTED}: no such file"));
        }
        for plain in [
            "do-token",
            "/etc/tandem/do-token",
            "ip-10-17-0-28-nyc3-01-production-web.example.com",
            "3164444",
            "0123456789012345678901234567890123456789",
            "resources[0].agents[0].reserved-ip.token_file",
            "abcdefghijklmnopqrstuvwxyzabcdefghij",
        ] {
            assert!(!looks_like_credential(plain), "{plain}");
            assert_eq!(redact(plain), plain);
        }
    }
}
