//! authkeys: whether the old cluster key must be replaced.
use super::{Ctx, lines};

/// The cluster key: sha1/md5 keys are replaced by a new key (Tandem uses HMAC-SHA256 with its
/// own key, and the old one has been in a file next to the config for years); crc is no
/// authentication at all.
pub(super) fn parse_authkeys(cx: &mut Ctx<'_>) -> bool {
    const F: &str = "authkeys";
    let Some(text) = cx.input.authkeys.as_deref() else {
        cx.note(format!(
            "{}: not found: generate a cluster key with `ipctl keygen --out /etc/tandem/authkey`",
            cx.input.dir.join(F).display()
        ));
        return true;
    };
    let ls = lines(text);
    let selected = ls
        .iter()
        .find(|l| l.words[0] == "auth")
        .and_then(|l| l.words.get(1).cloned());
    let Some(selected) = selected else {
        cx.at(
            F,
            1,
            "no `auth N` line: Heartbeat would refuse this file; a new key is needed",
        );
        return true;
    };
    let Some(key_line) = ls.iter().find(|l| l.words[0] == selected) else {
        cx.at(
            F,
            1,
            format!("auth {selected}: no key numbered {selected}; a new key is needed"),
        );
        return true;
    };
    let method = key_line
        .words
        .get(1)
        .map(|m| m.to_ascii_lowercase())
        .unwrap_or_default();
    match method.as_str() {
        "crc" => cx.at(
            F,
            key_line.no,
            "crc: this is no authentication at all (anyone who can send a UDP packet could \
             speak for a node); Tandem always signs with HMAC-SHA256: a new key is needed",
        ),
        "sha1" | "md5" => cx.at(
            F,
            key_line.no,
            format!(
                "{method}: not reused: Tandem signs with HMAC-SHA256 under a new random key{}",
                if cx.input.key_file.is_some() {
                    " (written to --key-out)"
                } else {
                    "; pass --key-out FILE, or run `ipctl keygen --out /etc/tandem/authkey`"
                }
            ),
        ),
        other => cx.at(
            F,
            key_line.no,
            format!("{other:?}: unknown method; a new key is needed"),
        ),
    }
    true
}
