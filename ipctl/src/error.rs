//! How ipctl reports an error it cannot go on from: one line, each cause once, no secret.
//!
//! Library errors often print their source in their own message as well (`API token: X` whose
//! source is `X`), so anyhow's `{:#}` would say the same thing twice. Causes whose text the
//! line already holds are left out. No backtrace: these are expected errors with a message
//! that says what to do, whatever RUST_BACKTRACE says.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    tandem_config::redact(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read do-token: no such file")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("API token: {0}")]
    struct Outer(#[from] Inner);

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let e = anyhow::Error::new(Outer(Inner));
        assert_eq!(format!("{e:#}").matches("no such file").count(), 2);
        assert_eq!(
            one_line(&e),
            "API token: cannot read do-token: no such file"
        );
        let e = anyhow::Error::new(Inner).context("assigning 45.55.96.8");
        assert_eq!(
            one_line(&e),
            "assigning 45.55.96.8: cannot read do-token: no such file"
        );
    }
}
