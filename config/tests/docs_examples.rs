//! Every configuration shown to operators must be valid: each ```yaml block of README.md and
//! docs/CONFIGURATION.md, and every deploy/*.yaml. Fragments are written as ```text.
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (line of the opening fence, block text) of every ```yaml block.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```") && fence[3..].trim() == "yaml" => {
                current = Some((i + 1, String::new()));
            }
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unclosed ```yaml block");
    blocks
}

fn check_markdown(rel: &str, at_least: usize) {
    let path = repo().join(rel);
    let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks = yaml_blocks(&md);
    assert!(
        blocks.len() >= at_least,
        "{rel}: expected at least {at_least} yaml block(s)"
    );
    let mut failures = Vec::new();
    for (line, text) in blocks {
        let name = format!("{rel} (yaml block at line {line})");
        if let Err(e) = tandem_config::parse(&text, Path::new(&name)) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readme_yaml_blocks_are_valid_configs() {
    check_markdown("README.md", 1);
}

#[test]
fn configuration_reference_yaml_blocks_are_valid_configs() {
    check_markdown("docs/CONFIGURATION.md", 1);
}

#[test]
fn deploy_yaml_files_are_valid_configs() {
    let dir = repo().join("deploy");
    let mut seen = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            seen += 1;
            if let Err(e) = tandem_config::load(&path) {
                failures.push(e.to_string());
            }
        }
    }
    assert!(seen >= 1, "no deploy/*.yaml found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn block_extraction_reports_fence_lines() {
    let md = "text\n```yaml\na: 1\n```\n```text\nb: 2\n```\n```yaml\nc: 3\n```\n";
    let blocks = yaml_blocks(md);
    assert_eq!(
        blocks,
        vec![(2, "a: 1\n".to_owned()), (8, "c: 3\n".to_owned())]
    );
}

#[test]
fn a_broken_block_fails_with_its_line() {
    let text = "cluster: web\n";
    let e = tandem_config::parse(text, Path::new("README.md (yaml block at line 70)")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("README.md (yaml block at line 70)"),
        "{e}"
    );
}
