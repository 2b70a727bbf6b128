//! The API token's `Authorization` header, re-read when its file changes.
//!
//! An operator who writes a new token (the old one revoked, or rotated) must not have to
//! restart the agent: before each request the token file is looked at (one `stat`), and
//! when it is another file or was written since (inode, size, modification time), it is
//! read again with the same checks as at start-up (private mode, long enough). A new token
//! that reads well is used from that request on: one log line, and the counter
//! `tandem_agent_token_reloads{outcome="ok"}`. One that does not (mode too open, too short,
//! unreadable) is refused with one log line and `outcome="refused"`, and the previous
//! token stays in use. A file that disappeared is not a change (a systemd credential
//! directory goes away when the unit stops; the agent keeps the token it has).
//!
//! Under systemd the token is a credential: `LoadCredential=` copies it into
//! `$CREDENTIALS_DIRECTORY` when the unit starts, so a new `/etc/tandem/do-token` reaches the
//! agent only through `systemctl restart tandem-resource-agent` (docs/CONFIGURATION.md).
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use reqwest::header::HeaderValue;
use tandem_config::Secret;
use tracing::{info, warn};

use super::ProviderError;

/// Token files re-read and used since the process started (all providers).
static RELOADED: AtomicU64 = AtomicU64::new(0);
/// Token files that changed but could not be used.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// (reloaded, refused) since the process started, for the metrics.
pub fn reload_counts() -> (u64, u64) {
    (
        RELOADED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    )
}

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// The bearer header for `token`; never printed (`set_sensitive`).
pub(crate) fn header(provider: &str, token: &Secret) -> Result<HeaderValue, ProviderError> {
    let token = token.expose_str().ok_or_else(|| {
        ProviderError::Config(format!("{provider}: the API token is not UTF-8 text"))
    })?;
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ProviderError::Config(format!(
            "{provider}: the API token holds characters an HTTP header cannot carry"
        ))
    })?;
    // Keeps it out of HTTP/2 header tables and reqwest's Debug output.
    auth.set_sensitive(true);
    Ok(auth)
}

struct Current {
    header: HeaderValue,
    /// The file's version `header` came from (or the last one refused).
    seen: Option<Stamp>,
}

/// The header of one client, and the file it is re-read from (none: a token given
/// directly, e.g. `ipctl assign` from `$DO_TOKEN`).
pub(crate) struct Auth {
    provider: &'static str,
    file: Option<PathBuf>,
    current: Mutex<Current>,
}

impl Auth {
    pub fn new(
        provider: &'static str,
        token: &Secret,
        file: Option<PathBuf>,
    ) -> Result<Auth, ProviderError> {
        let seen = file.as_deref().and_then(stamp);
        Ok(Auth {
            provider,
            current: Mutex::new(Current {
                header: header(provider, token)?,
                seen,
            }),
            file,
        })
    }

    /// The header for the next request, after reading the file again if it changed.
    pub fn header(&self) -> HeaderValue {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.file
            && let Some(now) = stamp(path)
            && cur.seen.as_ref() != Some(&now)
        {
            cur.seen = Some(now);
            match super::load_token(path).and_then(|t| header(self.provider, &t)) {
                Ok(h) => {
                    RELOADED.fetch_add(1, Ordering::Relaxed);
                    info!(provider = self.provider, file = %path.display(),
                        "the API token file changed: the new token is used from now on");
                    cur.header = h;
                }
                Err(e) => {
                    REFUSED.fetch_add(1, Ordering::Relaxed);
                    warn!(provider = self.provider, file = %path.display(), error = %e,
                        "the API token file changed but cannot be used; the previous token stays in use until it is fixed");
                }
            }
        }
        cur.header.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &std::path::Path, text: &str, mode: u32) {
        // A new file each time (as editors and `install` do): a new inode.
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn bearer(a: &Auth) -> String {
        a.header().to_str().unwrap().to_owned()
    }

    #[test]
    fn a_new_token_file_is_used_and_a_bad_one_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("do-token");
        write(&path, "first-token-0001", 0o600);
        let first = super::super::load_token(&path).unwrap();
        let a = Auth::new("digitalocean", &first, Some(path.clone())).unwrap();
        assert_eq!(bearer(&a), "Bearer first-token-0001");
        write(&path, "second-token-002", 0o600);
        assert_eq!(bearer(&a), "Bearer second-token-002");
        // Readable by others: refused, the previous token stays.
        write(&path, "third-token-0003", 0o644);
        assert_eq!(bearer(&a), "Bearer second-token-002");
        // Gone (a credential directory after the unit stopped): nothing changes.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bearer(&a), "Bearer second-token-002");
        write(&path, "fourth-token-004", 0o400);
        assert_eq!(bearer(&a), "Bearer fourth-token-004");
    }

    #[test]
    fn a_token_given_directly_never_changes() {
        let t = Secret::new(b"direct-token-001".to_vec());
        let a = Auth::new("hetzner", &t, None).unwrap();
        assert_eq!(bearer(&a), "Bearer direct-token-001");
        assert!(a.header().is_sensitive());
    }
}
