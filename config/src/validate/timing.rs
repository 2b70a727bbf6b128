//! The `timing:` section: the heartbeat interval and the deadlines built on it, each in bounds
//! and in order.
use std::time::Duration;

use serde_yaml::Value;

use super::Ctx;
use crate::limits::{self, Bounds};
use crate::locate::KeyPath;
use crate::raw::{RawTiming, Text};
use crate::types::Timing;

pub(super) fn timing(cx: &mut Ctx<'_>, path: &KeyPath, v: Option<&Value>) -> Timing {
    let d = Timing::default();
    let Some(v) = v else { return d };
    let Some(raw) = cx.raw::<RawTiming>(v, path) else {
        return d;
    };
    let mut dur = |key: &str, v: &Option<Text>, default: Duration, bounds: &Bounds| {
        cx.duration(&path.key(key), v, default, bounds)
    };
    let t = Timing {
        interval: dur("interval", &raw.interval, d.interval, &limits::INTERVAL),
        warn_after: dur(
            "warn_after",
            &raw.warn_after,
            d.warn_after,
            &limits::WARN_AFTER,
        ),
        dead_after: dur(
            "dead_after",
            &raw.dead_after,
            d.dead_after,
            &limits::DEAD_AFTER,
        ),
        init_dead: dur("init_dead", &raw.init_dead, d.init_dead, &limits::INIT_DEAD),
    };
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let mark = |set: bool| if set { "" } else { " (default)" };
    if t.dead_after <= t.interval {
        cx.inconsistent(
            &path.key("dead_after"),
            format!(
                "dead_after {}{} is not longer than interval {}{}: one late heartbeat would declare a peer dead",
                show(t.dead_after),
                mark(raw.dead_after.is_some()),
                show(t.interval),
                mark(raw.interval.is_some())
            ),
            "dead_after of several intervals, e.g. 10 x interval",
        );
    } else if t.dead_after < t.interval * limits::MIN_BEATS_PER_DEAD {
        cx.inconsistent(
            &path.key("dead_after"),
            format!(
                "dead_after {}{} holds fewer than {} intervals of {}{}: two heartbeats lost or late in a row would declare a live peer dead",
                show(t.dead_after),
                mark(raw.dead_after.is_some()),
                limits::MIN_BEATS_PER_DEAD,
                show(t.interval),
                mark(raw.interval.is_some())
            ),
            "dead_after of several intervals, e.g. 10 x interval",
        );
    }
    if t.warn_after >= t.dead_after {
        cx.inconsistent(
            &path.key("warn_after"),
            format!(
                "warn_after {}{} is not shorter than dead_after {}{}: a peer would be dead before it is late",
                show(t.warn_after),
                mark(raw.warn_after.is_some()),
                show(t.dead_after),
                mark(raw.dead_after.is_some())
            ),
            "interval < warn_after < dead_after",
        );
    }
    if t.warn_after <= t.interval {
        cx.inconsistent(
            &path.key("warn_after"),
            format!(
                "warn_after {}{} is not longer than interval {}{}: every heartbeat would be reported late",
                show(t.warn_after),
                mark(raw.warn_after.is_some()),
                show(t.interval),
                mark(raw.interval.is_some())
            ),
            "interval < warn_after < dead_after",
        );
    }
    if t.init_dead < t.dead_after {
        cx.inconsistent(
            &path.key("init_dead"),
            format!(
                "init_dead {}{} is shorter than dead_after {}{}: peers just booting would get less grace than running ones",
                show(t.init_dead),
                mark(raw.init_dead.is_some()),
                show(t.dead_after),
                mark(raw.dead_after.is_some())
            ),
            "init_dead >= dead_after",
        );
    }
    t
}
