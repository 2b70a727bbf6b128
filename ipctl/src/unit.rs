//! What the installed `tandem-resource-agent.service` hands the agent as credentials, so that
//! `ipctl check-config` can tell whether a relative `token_file` will be found at run time
//! (it is read from `$CREDENTIALS_DIRECTORY`, which systemd fills from `LoadCredential=`).
//!
//! Only `[Service]` assignments are read (credentials, ProtectHome=, PrivateTmp=), from the
//! unit file and its drop-ins, in systemd's order (systemd.unit(5), "Unit File Load Path").
use std::path::{Path, PathBuf};

/// The agent's unit, whose credentials hold the provider tokens.
pub const AGENT_UNIT: &str = "tandem-resource-agent.service";
/// The membership daemon's unit, which reads the cluster key.
pub const MEMBERSHIP_UNIT: &str = "tandem-membership.service";

/// systemd's unit search path for system units, highest priority first (systemd.unit(5)).
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Where systemd looks for a `LoadCredential=` source given as a relative path
/// (systemd.exec(5), "Credentials").
const CREDSTORE_DIRS: &[&str] = &["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];

/// One credential the unit provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    /// The file systemd copies it from (`LoadCredential=ID:PATH`), resolved against the
    /// credential store for a relative PATH; `None` when the value is inline
    /// (`SetCredential=`) or comes from systemd's own credentials (`LoadCredential=ID`).
    pub source: Option<PathBuf>,
    /// The unit line, for messages.
    pub line: String,
}

/// An installed unit's `[Service]` assignments, drop-ins applied.
#[derive(Debug, Clone)]
pub struct UnitFile {
    /// The unit file read.
    pub file: PathBuf,
    /// Every `[Service]` assignment in the order systemd applies them.
    service: Vec<(String, String)>,
}

/// The directories searched: `$SYSTEMD_UNIT_PATH` (colon-separated, as systemd honours it),
/// else systemd's default system unit path.
pub fn unit_dirs() -> Vec<PathBuf> {
    match std::env::var_os("SYSTEMD_UNIT_PATH") {
        Some(p) if !p.is_empty() => std::env::split_paths(&p)
            .filter(|d| !d.as_os_str().is_empty())
            .collect(),
        _ => UNIT_DIRS.iter().map(PathBuf::from).collect(),
    }
}

impl UnitFile {
    /// `unit` as installed on this machine, or `None` when it is not.
    pub fn load(unit: &str) -> Option<UnitFile> {
        let dirs = unit_dirs();
        let file = dirs.iter().map(|d| d.join(unit)).find(|f| f.is_file())?;
        // Drop-ins: by file name across all directories; a name in a higher-priority
        // directory hides the same name in a lower one.
        let mut dropins: Vec<PathBuf> = Vec::new();
        for d in &dirs {
            let Ok(entries) = std::fs::read_dir(d.join(format!("{unit}.d"))) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "conf")
                    && !dropins.iter().any(|q| q.file_name() == p.file_name())
                {
                    dropins.push(p);
                }
            }
        }
        dropins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut service = Vec::new();
        for f in std::iter::once(&file).chain(&dropins) {
            if let Ok(text) = std::fs::read_to_string(f) {
                service.extend(service_lines(&text));
            }
        }
        Some(UnitFile { file, service })
    }

    /// The value of `key` (the last assignment wins).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.service
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the service cannot see `path`: the directory that hides it and the setting
    /// that does (ProtectHome=, PrivateTmp=).
    pub fn hides(&self, path: &Path) -> Option<(&'static str, String)> {
        let setting = |key: &str, values: &[&str]| {
            self.value(key)
                .filter(|v| values.contains(v))
                .map(|v| format!("{key}={v}"))
        };
        let home = setting("ProtectHome", &["yes", "true", "tmpfs"]);
        let tmp = setting("PrivateTmp", &["yes", "true"]);
        [
            ("/home", &home),
            ("/root", &home),
            ("/run/user", &home),
            ("/tmp", &tmp),
            ("/var/tmp", &tmp),
        ]
        .into_iter()
        .find_map(|(d, s)| Some((d, s.clone()?)).filter(|_| path.starts_with(d)))
    }

    /// The credentials the service gets, in systemd's order.
    pub fn credentials(&self) -> Vec<Credential> {
        let mut out: Vec<Credential> = Vec::new();
        for (key, value) in &self.service {
            let inline = matches!(key.as_str(), "SetCredential" | "SetCredentialEncrypted");
            if !inline && !matches!(key.as_str(), "LoadCredential" | "LoadCredentialEncrypted") {
                continue;
            }
            if value.is_empty() {
                // An empty assignment resets the list (systemd.exec(5)).
                out.clear();
                continue;
            }
            let (id, path) = match value.split_once(':') {
                Some((id, p)) => (id, Some(p)),
                None => (value.as_str(), None),
            };
            let source = if inline {
                None
            } else {
                path.map(|p| resolve_source(Path::new(p)))
            };
            out.retain(|c| c.id != id);
            out.push(Credential {
                id: id.to_owned(),
                source,
                // An inline value may be the secret itself: never repeat it.
                line: if inline {
                    format!("{key}={id}:…")
                } else {
                    format!("{key}={value}")
                },
            });
        }
        out
    }
}

/// The `[Service]` assignments of one unit file, in order.
fn service_lines(text: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && !line.starts_with(';')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// A relative `LoadCredential=` source is looked up in the credential store directories.
fn resolve_source(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    CREDSTORE_DIRS
        .iter()
        .map(|d| Path::new(d).join(p))
        .find(|c| c.exists())
        .unwrap_or_else(|| Path::new(CREDSTORE_DIRS[0]).join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> UnitFile {
        UnitFile {
            file: PathBuf::from("x.service"),
            service: service_lines(text),
        }
    }

    #[test]
    fn credential_lines_of_the_service_section_in_order() {
        let u = unit(
            "[Unit]\nLoadCredential=not-here:/x\n[Service]\nUser=x\n# LoadCredential=c:/c\n\
             LoadCredential=do-token:/etc/tandem/do-token\nSetCredential=inline:s3cr3t\n",
        );
        let c = u.credentials();
        assert_eq!(
            c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["do-token", "inline"]
        );
        assert_eq!(
            c[0].source.as_deref(),
            Some(Path::new("/etc/tandem/do-token"))
        );
        assert_eq!(c[1].source, None);
        assert!(!c[1].line.contains("s3cr3t"));
        let c = unit("[Service]\nLoadCredential=a:/a\nLoadCredential=\nLoadCredential=hc\n")
            .credentials();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].id.as_str(), c[0].source.as_ref()), ("hc", None));
    }

    #[test]
    fn protect_home_and_private_tmp_hide_paths() {
        let u = unit("[Service]\nProtectHome=yes\nPrivateTmp=yes\n");
        assert_eq!(
            u.hides(Path::new("/root/authkey")),
            Some(("/root", "ProtectHome=yes".to_owned()))
        );
        assert_eq!(
            u.hides(Path::new("/tmp/k")),
            Some(("/tmp", "PrivateTmp=yes".to_owned()))
        );
        assert_eq!(u.hides(Path::new("/etc/tandem/authkey")), None);
        let u = unit("[Service]\nProtectHome=read-only\n");
        assert_eq!(u.hides(Path::new("/home/me/k")), None);
        assert_eq!(u.hides(Path::new("/tmp/k")), None);
    }
}
