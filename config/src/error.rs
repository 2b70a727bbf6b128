//! Configuration errors: each names the file, line and column (when known), the key path and
//! what would be valid, so an operator can fix the file without reading the source.
use std::fmt;
use std::path::PathBuf;

/// What sort of problem an error is. Callers use it to tell "not installed yet" (a key file
/// that does not exist) from "wrong" (a key file others can read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file cannot be read or is not YAML.
    Syntax,
    /// A key that is not part of the configuration contract.
    UnknownKey,
    /// A required key is absent.
    Missing,
    /// A value of the wrong type or outside what is valid.
    Invalid,
    /// Keys that contradict each other (timing, quorum, references between sections).
    Inconsistent,
    /// A secret file that does not exist.
    FileMissing,
    /// A secret file that exists but this user may not read (it belongs to a daemon's user).
    FileNoAccess,
    /// A secret file that exists but cannot be used (mode, size, unreadable).
    FileInvalid,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// The file the problem is in (the YAML file, or a key file).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Key path such as `nodes[1].addresses[0]`; empty for the document as a whole.
    pub path: String,
    pub message: String,
    /// What would be valid, e.g. `e.g. "10.17.0.28:694"`.
    pub expected: Option<String>,
}

impl fmt::Display for ConfigError {
    /// A value pasted into the wrong key may be a token: nothing that looks like one is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_plain(&mut s)?;
        f.write_str(&crate::secret::redact(&s))
    }
}

impl ConfigError {
    fn write_plain(&self, f: &mut String) -> fmt::Result {
        use fmt::Write as _;
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, " (expected {expected})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, in file order. `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
