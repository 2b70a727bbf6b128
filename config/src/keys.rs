//! Cluster keys: the one that signs, and every one accepted when verifying (key rotation).
//!
//! A key's id is derived from its bytes (the first 4 bytes of their SHA-256, big-endian), so
//! every node computes the same id for the same key file without anyone numbering keys.
use std::path::Path;

use ring::rand::SecureRandom;

use crate::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::secret::{Secret, SecretError, credential_path, read_secret_file};
use crate::types::Auth;

/// Shortest accepted key, in bytes: HMAC-SHA256 keys much shorter than this are guessable.
pub const MIN_KEY_LEN: usize = 16;
/// Random bytes in a generated key (the HMAC-SHA256 block-size-independent recommended length).
pub const GENERATED_KEY_BYTES: usize = 32;

/// One cluster key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// First 4 bytes of SHA-256 of the key bytes, big-endian. Sent in every datagram so the
    /// receiver knows which key to verify with.
    pub id: u32,
    pub secret: Secret,
}

impl Key {
    pub fn new(secret: Secret) -> Self {
        Key {
            id: key_id(secret.expose()),
            secret,
        }
    }
}

/// The keys of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// Signs outgoing datagrams (`auth.key_file`).
    pub signing: Key,
    /// Accepted when verifying: the signing key first, then `auth.accept_key_files` in order
    /// (a file holding the same key as an earlier one is listed once).
    pub accepted: Vec<Key>,
}

impl KeySet {
    /// The accepted key with this id.
    pub fn by_id(&self, id: u32) -> Option<&Key> {
        self.accepted.iter().find(|k| k.id == id)
    }
}

/// The id of a key: first 4 bytes of SHA-256 of its bytes, big-endian.
pub fn key_id(bytes: &[u8]) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let b = d.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads every key file named in `auth`. Each file must be private (no group/other access),
/// non-empty and at least [`MIN_KEY_LEN`] bytes. A relative name is looked up in
/// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), like token files.
pub fn load_keys(auth: &Auth) -> Result<KeySet, ConfigErrors> {
    let mut errors = Vec::new();
    let mut accepted: Vec<Key> = Vec::new();
    let files = std::iter::once(("auth.key_file".to_owned(), &auth.key_file)).chain(
        auth.accept_key_files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("auth.accept_key_files[{i}]"), f)),
    );
    let mut signing = None;
    for (key_path, file) in files {
        let file = credential_path(file);
        match read_secret_file(&file, true, MIN_KEY_LEN) {
            Ok(secret) => {
                let key = Key::new(secret);
                match accepted.iter().find(|k| k.id == key.id) {
                    Some(k) if k.secret == key.secret => {}
                    Some(_) => errors.push(file_error(
                        &file,
                        &key_path,
                        ErrorKind::FileInvalid,
                        format!("key id {:08x} collides with an earlier key", key.id),
                        "a different key (generate one with `ipctl keygen`)",
                    )),
                    None => accepted.push(key.clone()),
                }
                if signing.is_none() && key_path == "auth.key_file" {
                    signing = Some(key);
                }
            }
            Err(e) => errors.push(secret_error(&file, &key_path, e)),
        }
    }
    match signing {
        Some(signing) if errors.is_empty() => Ok(KeySet { signing, accepted }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn file_error(
    file: &Path,
    key_path: &str,
    kind: ErrorKind,
    message: String,
    expected: &str,
) -> ConfigError {
    ConfigError {
        kind,
        file: file.to_owned(),
        line: None,
        column: None,
        path: key_path.to_owned(),
        message,
        expected: Some(expected.to_owned()),
    }
}

/// Turns a secret-file error into a config error naming the config key. The messages are
/// built here, not copied from `SecretError`, which starts with the path already shown.
pub(crate) fn secret_error(file: &Path, key_path: &str, e: SecretError) -> ConfigError {
    const KEYGEN: &str = "a key made with `ipctl keygen --out FILE` (mode 0600, 64 hex characters)";
    let (kind, message, expected) = match e {
        SecretError::Unreadable { reason, .. } => {
            let (kind, msg) = match std::fs::symlink_metadata(file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (ErrorKind::FileMissing, "key file does not exist".to_owned())
                }
                _ if std::fs::File::open(file)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) =>
                {
                    (
                        ErrorKind::FileNoAccess,
                        "key file exists but this user may not read it".to_owned(),
                    )
                }
                _ => (
                    ErrorKind::FileInvalid,
                    format!("cannot read key file: {reason}"),
                ),
            };
            (kind, msg, KEYGEN.to_owned())
        }
        SecretError::Empty { .. } => (
            ErrorKind::FileInvalid,
            "key file is empty".to_owned(),
            KEYGEN.to_owned(),
        ),
        SecretError::TooShort { len, min, .. } => (
            ErrorKind::FileInvalid,
            format!("key is too short ({len} bytes, at least {min} needed)"),
            KEYGEN.to_owned(),
        ),
        SecretError::TooOpen { mode, .. } => (
            ErrorKind::FileInvalid,
            format!(
                "key file is readable by group or others (mode {mode:04o}); the daemon refuses a shared key others can read"
            ),
            format!("mode 0600: run `chmod 600 {}`", file.display()),
        ),
    };
    file_error(file, key_path, kind, message, &expected)
}

/// A new random key: [`GENERATED_KEY_BYTES`] bytes from the system's CSPRNG, as lowercase hex.
/// (Text, so the file can be copied between nodes with any tool without mangling bytes.)
///
/// # Panics
/// Only if the operating system's random source fails (getrandom), where no safe key exists.
pub fn generate_key() -> String {
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn auth(key: PathBuf, accept: Vec<PathBuf>) -> Auth {
        Auth {
            key_file: key,
            accept_key_files: accept,
        }
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        // SHA-256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(key_id(b"abc"), 0xba7816bf);
    }

    #[test]
    fn generated_keys_are_64_hex_and_differ() {
        let a = generate_key();
        let b = generate_key();
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn signing_key_first_then_accepted_without_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let k1 = generate_key();
        let k2 = generate_key();
        let a = write(d.path(), "a", &format!("{k1}\n"), 0o600);
        let b = write(d.path(), "b", &k2, 0o600);
        let same = write(d.path(), "c", &k1, 0o400);
        let ks = load_keys(&auth(a, vec![b, same])).unwrap();
        assert_eq!(ks.signing.secret.expose(), k1.as_bytes());
        assert_eq!(ks.signing.id, key_id(k1.as_bytes()));
        let ids: Vec<u32> = ks.accepted.iter().map(|k| k.id).collect();
        assert_eq!(ids, vec![key_id(k1.as_bytes()), key_id(k2.as_bytes())]);
        assert!(ks.by_id(key_id(k2.as_bytes())).is_some());
    }

    #[test]
    fn bad_key_files_name_file_and_config_key() {
        let d = tempfile::tempdir().unwrap();
        let open = write(d.path(), "open", &generate_key(), 0o644);
        let short = write(d.path(), "short", "abc", 0o600);
        let empty = write(d.path(), "empty", "\n", 0o600);
        let missing = d.path().join("missing");
        let e = load_keys(&auth(
            open.clone(),
            vec![short.clone(), empty.clone(), missing.clone()],
        ))
        .unwrap_err();
        let lines: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 4, "{e}");
        let expected = [
            (
                &open,
                "auth.key_file: key file is readable by group or others (mode 0644)",
            ),
            (
                &short,
                "auth.accept_key_files[0]: key is too short (3 bytes",
            ),
            (&empty, "auth.accept_key_files[1]: key file is empty"),
            (
                &missing,
                "auth.accept_key_files[2]: key file does not exist",
            ),
        ];
        for (line, (file, text)) in lines.iter().zip(expected) {
            let want = format!("{}: {text}", file.display());
            assert!(line.starts_with(&want), "{line}\nwanted: {want}");
        }
        assert_eq!(e.errors()[3].kind, ErrorKind::FileMissing);
        assert_eq!(e.errors()[0].kind, ErrorKind::FileInvalid);
    }

    #[test]
    fn errors_never_contain_the_key() {
        let d = tempfile::tempdir().unwrap();
        let k = generate_key();
        let open = write(d.path(), "open", &k, 0o640);
        let e = load_keys(&auth(open, vec![])).unwrap_err().to_string();
        assert!(!e.contains(&k[..16]), "{e}");
        let ok = write(d.path(), "ok", &k, 0o600);
        let ks = load_keys(&auth(ok, vec![])).unwrap();
        assert!(!format!("{ks:?}").contains(&k[..16]));
    }
}
