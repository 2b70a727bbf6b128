//! The agent's state files: its incarnation counter and the standby flag.
use std::path::Path;

use super::DaemonError;

/// File names in the state dir.
const INCARNATION_FILE: &str = "agent-incarnation";
const STANDBY_FILE: &str = "standby";

/// The next agent incarnation, persisted so that it increases across restarts (even when
/// the clock steps back).
pub fn next_incarnation(state_dir: &Path) -> Result<u64, DaemonError> {
    let path = state_dir.join(INCARNATION_FILE);
    let err = |source| DaemonError::State {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(|source| DaemonError::State {
        path: state_dir.to_owned(),
        source,
    })?;
    let previous = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(err(e)),
    };
    // Seconds since the epoch when larger: a wiped state dir must not restart the count
    // below what the peers remember (they would ignore every announcement as old).
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let next = previous
        .checked_add(1)
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "counter exhausted",
            ))
        })?
        .max(wall);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{next}\n")).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(next)
}

pub fn read_standby(state_dir: &Path) -> bool {
    state_dir.join(STANDBY_FILE).exists()
}

pub(super) fn write_standby(state_dir: &Path, on: bool) -> std::io::Result<()> {
    let path = state_dir.join(STANDBY_FILE);
    if on {
        std::fs::write(path, "standby\n")
    } else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_increases_across_restarts_and_standby_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = next_incarnation(dir.path()).expect("first");
        assert!(
            first > 1_700_000_000,
            "at least the wall clock in seconds: {first}"
        );
        assert!(next_incarnation(dir.path()).expect("second") > first);
        // A counter ahead of the clock (the clock stepped back) still increases.
        std::fs::write(
            dir.path().join(INCARNATION_FILE),
            format!("{}\n", u64::MAX / 2),
        )
        .expect("write");
        assert_eq!(
            next_incarnation(dir.path()).expect("third"),
            u64::MAX / 2 + 1
        );
        assert!(!read_standby(dir.path()));
        write_standby(dir.path(), true).expect("write");
        assert!(read_standby(dir.path()));
        write_standby(dir.path(), false).expect("clear");
        write_standby(dir.path(), false).expect("clear twice");
        assert!(!read_standby(dir.path()));
        std::fs::write(dir.path().join(INCARNATION_FILE), "garbage").expect("write");
        assert!(
            next_incarnation(dir.path()).is_err(),
            "a corrupt counter is reported, not reset"
        );
    }
}
