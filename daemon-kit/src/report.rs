//! Errors for people: a chain of causes as one plain line, each cause said once.
//!
//! Error types often print their source in their own message (`cannot bind …: {source}`)
//! and also return it from `source()`; printing the whole chain then repeats the text
//! (`… (os error 98): … (os error 98)`), and anyhow's `Debug` adds numbered "Caused by"
//! lines and, with `RUST_BACKTRACE` set, a backtrace. An expected error (bad config, a
//! taken port) needs none of that: one line that says what is wrong.
use std::error::Error;
use std::process::ExitCode;

/// `err` and its causes joined by ": ", leaving out every cause whose text is already said.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// The end of a daemon's `main`: on error, `program: <chain>` on stderr and exit status 1.
/// A multi-line message (the configuration's list of problems, one per line) keeps its lines.
pub fn exit<E>(program: &str, result: Result<(), E>) -> ExitCode
where
    E: AsRef<dyn Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind UDP 127.0.0.1:9 (link 0): {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting")]
    struct Context {
        source: Bind,
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let e = Bind {
            source: std::io::Error::from_raw_os_error(98),
        };
        let line = chain(&e);
        assert_eq!(line.matches("os error 98").count(), 1, "{line}");
        assert!(
            line.starts_with("cannot bind UDP 127.0.0.1:9 (link 0): "),
            "{line}"
        );
    }

    #[test]
    fn a_cause_not_yet_said_is_appended() {
        let e = Context {
            source: Bind {
                source: std::io::Error::from_raw_os_error(98),
            },
        };
        let line = chain(&e);
        assert!(line.starts_with("starting: cannot bind UDP"), "{line}");
        assert_eq!(line.matches("os error 98").count(), 1, "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
