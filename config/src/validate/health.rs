//! The `health:` list: tcp, http and exec checks, and the address checks they share with the
//! providers' URLs.
use std::net::IpAddr;
use std::time::Duration;

use serde_yaml::Value;

use super::Ctx;
use crate::error::ErrorKind;
use crate::limits;
use crate::locate::KeyPath;
use crate::raw::RawHealth;
use crate::types::{HealthCheck, HealthProbe};

pub(super) fn health_check(cx: &mut Ctx<'_>, path: &KeyPath, v: &Value) -> Option<HealthCheck> {
    const KINDS: &str =
        "one of `tcp: \"host:port\"`, `http: \"http://...\"` or `exec: \"command\"`";
    let raw = cx.raw::<RawHealth>(v, path)?;
    let given: Vec<&str> = [
        raw.tcp.as_ref().map(|_| "tcp"),
        raw.http.as_ref().map(|_| "http"),
        raw.exec.as_ref().map(|_| "exec"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let interval = cx.duration(
        &path.key("interval"),
        &raw.interval,
        Duration::from_secs(2),
        &limits::CHECKS,
    );
    let timeout = cx.duration(
        &path.key("timeout"),
        &raw.timeout,
        Duration::from_secs(1),
        &limits::CHECKS,
    );
    if timeout >= interval {
        cx.inconsistent(
            &path.key("timeout"),
            format!(
                "timeout {} is not shorter than interval {}: checks would overlap",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
            "timeout < interval",
        );
    }
    let fall = raw.fall.unwrap_or(3);
    if fall == 0 {
        cx.invalid(
            &path.key("fall"),
            "is 0",
            "consecutive failures before unhealthy, at least 1",
        );
    }
    let rise = raw.rise.unwrap_or(2);
    if rise == 0 {
        cx.invalid(
            &path.key("rise"),
            "is 0",
            "consecutive successes before healthy, at least 1",
        );
    }
    if raw.expect.is_some() && raw.http.is_none() {
        cx.invalid(
            &path.key("expect"),
            "applies to `http` checks only",
            "`expect` beside `http:`",
        );
    }
    let probe = match given.as_slice() {
        [] => {
            cx.push(
                ErrorKind::Missing,
                path,
                false,
                "has no check",
                Some(KINDS.into()),
            );
            return None;
        }
        [_, _, ..] => {
            cx.invalid(
                path,
                format!("has several checks ({})", given.join(", ")),
                format!("{KINDS}, one per list item"),
            );
            return None;
        }
        ["tcp"] => {
            let s = raw
                .tcp
                .as_ref()
                .map(|t| t.0.trim().to_owned())
                .unwrap_or_default();
            if let Err(m) = check_host_port(&s) {
                cx.invalid(&path.key("tcp"), m, "host:port, e.g. \"10.17.0.1:53\"");
                return None;
            }
            HealthProbe::Tcp(s)
        }
        ["http"] => {
            let url = raw
                .http
                .as_ref()
                .map(|t| t.0.trim().to_owned())
                .unwrap_or_default();
            if let Err(m) = check_url(&url) {
                cx.invalid(&path.key("http"), m, "e.g. \"http://127.0.0.1/health\"");
                return None;
            }
            let expect = raw.expect.unwrap_or(200);
            if !(100..=599).contains(&expect) {
                cx.invalid(
                    &path.key("expect"),
                    format!("{expect} is not an HTTP status"),
                    "100-599, e.g. 200",
                );
            }
            HealthProbe::Http { url, expect }
        }
        _ => {
            let cmd = raw
                .exec
                .as_ref()
                .map(|t| t.0.trim().to_owned())
                .unwrap_or_default();
            if cmd.is_empty() {
                cx.invalid(&path.key("exec"), "is empty", "a command; exit 0 = healthy");
                return None;
            }
            HealthProbe::Exec(cmd)
        }
    };
    Some(HealthCheck {
        probe,
        interval,
        timeout,
        fall,
        rise,
    })
}

/// `host:port` where host is an IP, `[v6]` or a name resolved at check time.
fn check_host_port(s: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port"));
    };
    match port.parse::<u16>() {
        Ok(0) => return Err(format!("{s:?} has port 0")),
        Ok(_) => {}
        Err(_) => return Err(format!("{s:?} has no valid port")),
    }
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!("{s:?} has an invalid IPv6 address in brackets")),
        };
    }
    if host.contains(':') {
        return Err(format!(
            "{s:?}: an IPv6 address needs brackets, e.g. \"[::1]:53\""
        ));
    }
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        Ok(())
    } else {
        Err(format!("{s:?} has an invalid host name"))
    }
}

/// An http(s) URL with a host. (A full URL parser is not needed to catch what operators get wrong.)
pub(crate) fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{s:?} contains a space"));
    }
    let (h, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(format!("{s:?} has an unclosed '['"));
        };
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("{s:?} has text after ']'")),
            },
        }
    } else if host.matches(':').count() > 1 {
        return Err(format!(
            "{s:?}: an IPv6 host needs brackets, e.g. http://[::1]/"
        ));
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if h.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{s:?} has an invalid port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1/").is_ok());
        assert!(check_url("https://api.digitalocean.com").is_ok());
        assert!(check_url("http://[::1]:8080/x").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http:///x").is_err());
        assert!(check_url("http://host:0/").is_err());
        assert!(check_url("http://host:http/").is_err());
    }

    #[test]
    fn host_port() {
        assert!(check_host_port("10.17.0.1:53").is_ok());
        assert!(check_host_port("gateway.internal:53").is_ok());
        assert!(check_host_port("[::1]:53").is_ok());
        assert!(check_host_port("10.17.0.1").is_err());
        assert!(check_host_port("10.17.0.1:0").is_err());
        assert!(check_host_port("::1:53").is_err());
    }
}
