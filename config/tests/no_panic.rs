//! Bad input never panics: whatever an operator (or a broken editor) leaves in the file, the
//! answer is a list of errors, each with a message.
use std::path::Path;

use proptest::prelude::*;

const GOOD: &str = include_str!("../../deploy/cluster.yaml");

/// Text pieces that stress the parser: YAML structure, wrong types, odd values.
const PIECES: &[&str] = &[
    "\n",
    ":",
    " ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "!tag ",
    "<<: ",
    "0",
    "-1",
    "99999999999999999999",
    "1e400",
    "0s",
    "2",
    "x",
    "~",
    "null",
    "true",
    "ip",
    "nodes",
    "agents",
    "reserved-ip",
    "lsb",
    "ocf",
    "exec",
    "tcp",
    "http",
    "::",
    "[::1]:0",
    "\t",
    "\u{feff}",
    "é",
    "\\",
    "|\n  ",
    ">\n  ",
    "---\n",
    "...\n",
];

fn check(text: &str) {
    if let Err(errors) = tandem_config::parse(text, Path::new("fuzz.yaml")) {
        assert!(!errors.is_empty());
        for e in errors.iter() {
            assert!(!e.message.is_empty());
            let _ = e.to_string();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn mutated_configs_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..PIECES.len(), 0usize..4), 1..6)
    ) {
        let mut text = GOOD.to_owned();
        for (at, piece, cut) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut end = (i + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(i..end, PIECES[piece]);
        }
        check(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        check(&text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("cluster: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    check(&deep);
}
