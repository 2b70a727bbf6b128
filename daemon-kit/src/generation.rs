//! A daemon's generation (incarnation number), persisted in its state directory.
//!
//! Peers tell a restart from a late message by the generation, and refuse messages of an
//! older one, so it must strictly increase across restarts, even when the wall clock was
//! stepped back: `max(stored + 1, wall-clock seconds)`. Using the wall clock as a floor
//! also keeps it increasing when the state directory was lost (a rebuilt server).
//! It is written to a temporary file, fsync'd, renamed and the directory fsync'd before
//! the daemon says anything to a peer, so a crash cannot bring an old value back.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a generation number ({content:?}); remove the file to start over")]
    Corrupt { path: PathBuf, content: String },
    #[error("{path}: the counter is exhausted; remove the file to start over")]
    Exhausted { path: PathBuf },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The generation to use after `stored` (None: first start) at wall-clock `wall_secs`;
/// `None` when `stored` is already the largest.
pub fn next_generation(stored: Option<u64>, wall_secs: u64) -> Option<u64> {
    let next = match stored {
        Some(s) => s.checked_add(1)?,
        None => 1,
    };
    Some(next.max(wall_secs))
}

/// Reads the generation stored in `state_dir/file`, computes the next one from the wall
/// clock, persists it durably and returns it.
pub fn bump(state_dir: &Path, file: &str) -> Result<u64, GenerationError> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    bump_at(state_dir, file, wall)
}

/// [`bump`] at wall-clock `wall_secs`.
pub fn bump_at(state_dir: &Path, file: &str, wall_secs: u64) -> Result<u64, GenerationError> {
    let path = state_dir.join(file);
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
    let next = next_generation(stored, wall_secs)
        .ok_or_else(|| GenerationError::Exhausted { path: path.clone() })?;
    let write = |source| GenerationError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(write)?;
    let tmp = state_dir.join(format!("{file}.tmp"));
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

    const FILE: &str = "test.generation";

    #[test]
    fn generation_increases_even_when_the_clock_steps_back() {
        assert_eq!(next_generation(None, 1_700_000_000), Some(1_700_000_000));
        assert_eq!(
            next_generation(Some(1_700_000_000), 1_600_000_000),
            Some(1_700_000_001)
        );
        assert_eq!(next_generation(Some(5), 0), Some(6));
        assert_eq!(next_generation(None, 0), Some(1));
        assert_eq!(next_generation(Some(u64::MAX), 0), None);
    }

    #[test]
    fn bump_persists_and_increases() {
        let d = tempfile::tempdir().unwrap();
        let a = bump_at(d.path(), FILE, 1000).unwrap();
        let b = bump_at(d.path(), FILE, 10).unwrap();
        let c = bump_at(d.path(), FILE, 5000).unwrap();
        assert_eq!((a, b, c), (1000, 1001, 5000));
        let on_disk = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert_eq!(on_disk.trim(), "5000");
        assert!(!d.path().join(format!("{FILE}.tmp")).exists());
        let now = bump(d.path(), FILE).unwrap();
        assert!(now > 1_700_000_000, "at least the wall clock: {now}");
    }

    #[test]
    fn a_missing_state_dir_is_created() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        assert_eq!(bump_at(&dir, FILE, 7).unwrap(), 7);
        assert_eq!(bump_at(&dir, FILE, 7).unwrap(), 8);
    }

    #[test]
    fn corrupt_or_exhausted_files_are_named_not_reset() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        let e = bump_at(d.path(), FILE, 1).unwrap_err();
        assert!(e.to_string().contains(FILE), "{e}");
        assert!(matches!(e, GenerationError::Corrupt { .. }), "{e}");
        std::fs::write(d.path().join(FILE), format!("{}\n", u64::MAX)).unwrap();
        let e = bump_at(d.path(), FILE, 1).unwrap_err();
        assert!(matches!(e, GenerationError::Exhausted { .. }), "{e}");
    }
}
