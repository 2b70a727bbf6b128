//! The agent's state file: the standby flag. (Its incarnation counter is
//! [`tandem_daemon_kit::generation`], in [`super::INCARNATION_FILE`].)
use std::path::Path;

/// File name in the state dir.
const STANDBY_FILE: &str = "standby";

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
    fn standby_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!read_standby(dir.path()));
        write_standby(dir.path(), true).expect("write");
        assert!(read_standby(dir.path()));
        write_standby(dir.path(), false).expect("clear");
        write_standby(dir.path(), false).expect("clear twice");
        assert!(!read_standby(dir.path()));
    }
}
