//! The node's generation (incarnation number), persisted in the state directory.
//!
//! Peers tell a restart from a late datagram by the generation, and refuse datagrams of an
//! older one, so it must strictly increase across restarts, even when the wall clock was
//! stepped back: `max(stored + 1, wall-clock seconds)`. Using the wall clock as a floor
//! also keeps it increasing when the state directory was lost (a rebuilt server).
//! It is written to a temporary file, fsync'd, renamed and the directory fsync'd before
//! the first datagram is sent, so a crash cannot bring an old value back.
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name inside the state directory.
pub const FILE: &str = "membership.generation";

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a generation number ({content:?}); remove the file to start over")]
    Corrupt { path: PathBuf, content: String },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The generation to use after `stored` (None: first start) at wall-clock `wall_secs`.
pub fn next_generation(stored: Option<u64>, wall_secs: u64) -> u64 {
    stored
        .map_or(1, |s| s.saturating_add(1))
        .max(wall_secs)
        .max(1)
}

/// Reads the stored generation, computes the next one, persists it durably and returns it.
pub fn bump(state_dir: &Path, wall_secs: u64) -> Result<u64, GenerationError> {
    let path = state_dir.join(FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| GenerationError::Corrupt {
                    path: path.clone(),
                    content: s.chars().take(40).collect(),
                })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(GenerationError::Read { path, source }),
    };
    let next = next_generation(stored, wall_secs);
    let write = |source| GenerationError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(write)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(write)?;
    f.write_all(format!("{next}\n").as_bytes()).map_err(write)?;
    f.sync_all().map_err(write)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(write)?;
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(write)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_increases_even_when_the_clock_steps_back() {
        assert_eq!(next_generation(None, 1_700_000_000), 1_700_000_000);
        assert_eq!(
            next_generation(Some(1_700_000_000), 1_600_000_000),
            1_700_000_001
        );
        assert_eq!(next_generation(Some(5), 0), 6);
        assert_eq!(next_generation(None, 0), 1);
    }

    #[test]
    fn bump_persists_and_increases() {
        let d = tempfile::tempdir().unwrap();
        let a = bump(d.path(), 1000).unwrap();
        let b = bump(d.path(), 10).unwrap();
        let c = bump(d.path(), 5000).unwrap();
        assert_eq!((a, b, c), (1000, 1001, 5000));
        let on_disk = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert_eq!(on_disk.trim(), "5000");
    }

    #[test]
    fn corrupt_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        let e = bump(d.path(), 1).unwrap_err();
        assert!(e.to_string().contains("membership.generation"), "{e}");
    }
}
