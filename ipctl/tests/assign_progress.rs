//! `ipctl assign`'s progress as an operator watches it, against the provider emulator (in this
//! process) and the real binary: the clock on the progress line runs in real time while an
//! action is polled, and the result gives a rounded duration.
use std::process::Stdio;
use std::time::Duration;

use tandem_emulator::Emulator;
use tandem_emulator::testkit::{IP, SECONDARY, TOKEN, fixture, ip};

/// The provider's action takes this long: several clock ticks of the progress line.
const ACTION: Duration = Duration::from_millis(1500);

/// `ipctl assign` of the fixture's IP to the secondary, directly or through `wrapper`
/// (`script`); (exit status, stdout, stderr).
async fn assign_under(
    wrapper: Option<&str>,
    emu: &Emulator,
    timeout: &str,
) -> (Option<i32>, String, String) {
    let ipctl = env!("CARGO_BIN_EXE_ipctl");
    let args = [
        "assign",
        IP,
        "--api-url",
        &emu.addresses.api,
        "--droplet",
        &SECONDARY.to_string(),
        "--timeout",
        timeout,
    ];
    let mut cmd = match wrapper {
        // util-linux `script` gives ipctl a pseudo-terminal (stdout and stderr both go to it)
        Some(script) => {
            let line: Vec<String> = std::iter::once(ipctl)
                .chain(args.iter().copied())
                .map(|a| format!("'{a}'"))
                .collect();
            let mut c = tokio::process::Command::new(script);
            c.args(["-qefc", &line.join(" "), "/dev/null"]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(ipctl);
            c.args(args);
            c
        }
    };
    // an expected error never shows a backtrace, whatever the environment asks for
    cmd.env("DO_TOKEN", TOKEN)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("ipctl assign finished in time")
        .expect("ipctl ran");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `[  1.2s]` stamps of the progress lines or redraws in `out`, in order.
fn stamps(out: &str) -> Vec<f64> {
    out.split('[')
        .skip(1)
        .filter_map(|s| s.split_once("s]"))
        .filter_map(|(t, _)| t.trim().parse().ok())
        .collect()
}

/// The duration after "took " in the result line, as printed.
fn took(out: &str) -> String {
    let rest = out.split("took ").nth(1).expect("a took line");
    rest.split(',').next().unwrap().to_owned()
}

#[tokio::test]
async fn assign_progress_runs_in_real_time_and_the_result_is_rounded() {
    let emu = Emulator::start(fixture(ACTION)).await.unwrap();
    let (code, out, err) = assign_under(None, &emu, "30s").await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(emu.holder(ip()), Some(SECONDARY));
    // Not a terminal: one line per change, stamped with the time since the start.
    let t = stamps(&err);
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "{err}");
    assert!(t.len() >= 3, "{err}");
    let d = took(&out);
    // one decimal at most ("1.5s", not "1.503217s" or "1.50s")
    assert!(
        d.ends_with('s')
            && d.split('.')
                .nth(1)
                .is_none_or(|f| f == format!("{}s", &f[..1])),
        "rounded: {d:?} in {out}"
    );
    assert!(
        d.starts_with("1.") || d.starts_with("2."),
        "the action takes 1.5 s: {out}"
    );

    let Some(script) = tandem_emulator::testkit::find_program("script") else {
        tandem_emulator::testkit::skip(
            "the terminal half only: util-linux `script` is not installed (apt-get install -y bsdutils)",
        );
        return;
    };
    // a fresh emulator: the IP is on the primary again
    let emu = Emulator::start(fixture(ACTION)).await.unwrap();
    let (code, out, _) =
        assign_under(Some(script.to_str().expect("a UTF-8 path")), &emu, "30s").await;
    assert_eq!(code, Some(0), "{out}");
    // While the action runs the line is redrawn with a running clock: many distinct stamps
    // over the 1.5 s, not one per provider event.
    let t = stamps(&out);
    let mut distinct = t.clone();
    distinct.dedup();
    assert!(distinct.len() >= 6, "the clock stood still: {t:?}\n{out:?}");
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    assert!(t.last().copied().unwrap_or(0.0) >= 1.4, "{t:?}");
}

#[tokio::test]
async fn a_give_up_says_once_that_the_ip_may_have_moved() {
    // the action outlasts --timeout: ipctl gives up while it is still running
    let emu = Emulator::start(fixture(Duration::from_secs(30)))
        .await
        .unwrap();
    let (code, _, err) = assign_under(None, &emu, "1500ms").await;
    assert_eq!(code, Some(1), "{err}");
    let last: Vec<&str> = err.lines().filter(|l| l.starts_with("ipctl: ")).collect();
    assert_eq!(last.len(), 1, "one error line: {err}");
    let e = last[0];
    assert!(e.contains("gave up on"), "{e}");
    assert_eq!(e.matches("may have moved").count(), 1, "said twice: {e}");
    // the time is rounded: "after 1.5s", not "after 1.500212345s"
    let after = e.split(" after ").nth(1).unwrap_or_default();
    let secs = after.split('s').next().unwrap_or_default();
    assert!(
        secs.split('.').nth(1).is_some_and(|f| f.len() == 1),
        "rounded: {e}"
    );
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
}
