//! CPU time, wake-ups and memory of processes, from `/proc`, for the benchmarks' idle rows.
//!
//! `/proc/PID/task/TID/schedstat` holds three numbers per thread: nanoseconds on a CPU,
//! nanoseconds waiting on a run queue, and the number of timeslices run. The nanoseconds
//! resolve the few microseconds an idle daemon spends per wake-up, where utime + stime in
//! `/proc/PID/stat` count 10 ms clock ticks (over 5 s, steps of 0.2 % of a core, so a daemon
//! that wakes a few times a second reads 0.00 %). Every timeslice begins with the thread being
//! put on a CPU, so at idle the count of timeslices is the count of wake-ups.
//!
//! A thread that exits takes its counters with it: [`CpuMeter`] is meant to be sampled every
//! second or so, so at most the last interval of an exiting thread is lost, and a process or
//! thread first seen after the first sample is counted from zero (it started inside the
//! window).
use std::collections::HashMap;
use std::io;
use std::time::Duration;

/// Counters of one thread (or a sum of them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Time on a CPU, nanoseconds.
    pub cpu_ns: u64,
    /// Timeslices run: wake-ups, at idle.
    pub slices: u64,
}

/// `on_cpu_ns run_queue_ns timeslices` as the kernel writes it.
pub fn parse_schedstat(text: &str) -> Option<Counters> {
    let mut f = text.split_whitespace().map(str::parse::<u64>);
    let cpu_ns = f.next()?.ok()?;
    let _queued = f.next()?.ok()?;
    let slices = f.next()?.ok()?;
    Some(Counters { cpu_ns, slices })
}

/// Whether this kernel has per-thread scheduler statistics (`CONFIG_SCHED_INFO`); an error
/// says what is missing.
pub fn available() -> Result<(), String> {
    let path = "/proc/self/schedstat";
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    parse_schedstat(&text)
        .map(|_| ())
        .ok_or_else(|| format!("{path}: unexpected content {text:?}"))
}

/// Counters of every thread of `pid`, by thread id. A process that is gone has no threads.
pub fn threads(pid: u32) -> io::Result<Vec<(u32, Counters)>> {
    let dir = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path().join("schedstat");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // The thread exited between the listing and the read.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let c = parse_schedstat(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: unexpected content {text:?}", path.display()),
            )
        })?;
        out.push((tid, c));
    }
    Ok(out)
}

/// Accumulates CPU time and wake-ups of a set of processes (all their threads) between the
/// first sample and the last.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: HashMap<(u32, u32), Counters>,
    total: Counters,
    samples: usize,
    pids: Vec<u32>,
}

impl CpuMeter {
    pub fn new() -> CpuMeter {
        CpuMeter::default()
    }

    /// Reads every thread of `pids`. The first sample is the baseline; after it, a thread
    /// already seen adds what it ran since, and a thread not seen before adds all it ran (it
    /// was created after the previous sample).
    pub fn sample(&mut self, pids: &[u32]) -> io::Result<()> {
        let mut now = HashMap::new();
        for &pid in pids {
            for (tid, c) in threads(pid)? {
                now.insert((pid, tid), c);
            }
            if !self.pids.contains(&pid) {
                self.pids.push(pid);
            }
        }
        if self.samples > 0 {
            for (key, c) in &now {
                let before = self.last.get(key).copied().unwrap_or_default();
                self.total.cpu_ns += c.cpu_ns.saturating_sub(before.cpu_ns);
                self.total.slices += c.slices.saturating_sub(before.slices);
            }
        }
        self.last = now;
        self.samples += 1;
        Ok(())
    }

    /// What ran between the first and the last sample.
    pub fn total(&self) -> Counters {
        self.total
    }

    /// Every process sampled at least once.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// CPU as a percentage of one core and wake-ups per second over `wall`, the time between
    /// the first and the last sample.
    pub fn usage(&self, wall: Duration) -> Usage {
        let s = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        Usage {
            cpu_percent: self.total.cpu_ns as f64 / 1e9 / s * 100.0,
            wakeups_per_sec: self.total.slices as f64 / s,
        }
    }
}

/// Rates over a window.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Percent of one core.
    pub cpu_percent: f64,
    pub wakeups_per_sec: f64,
}

/// Memory of one process, KiB.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mem {
    /// `VmRSS` of `/proc/PID/status`.
    pub rss: u64,
    /// Private_Clean + Private_Dirty of `/proc/PID/smaps_rollup`.
    pub private: u64,
    /// Shared_Clean + Shared_Dirty of `/proc/PID/smaps_rollup`.
    pub shared: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, o: Mem) {
        self.rss += o.rss;
        self.private += o.private;
        self.shared += o.shared;
    }
}

/// The number after `key` in a `/proc` file of `key: value [kB]` lines (0 when absent).
pub fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn memory(pid: u32) -> io::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(Mem {
        rss: field(&status, "VmRSS:"),
        private: field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:"),
        shared: field(&rollup, "Shared_Clean:") + field(&rollup, "Shared_Dirty:"),
    })
}

/// The process's command line as `ps` shows it (daemons such as Heartbeat rewrite it to say
/// what each process does); its `comm` when the command line is empty.
pub fn command(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !text.trim().is_empty() {
        return text.trim().to_owned();
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_is_cpu_ns_queue_ns_and_timeslices() {
        assert_eq!(
            parse_schedstat("123456 789 42\n"),
            Some(Counters {
                cpu_ns: 123_456,
                slices: 42
            })
        );
        assert_eq!(parse_schedstat("1 2"), None);
        assert_eq!(parse_schedstat("x 2 3"), None);
    }

    #[test]
    fn a_thread_born_inside_the_window_counts_from_zero() {
        available().expect("schedstat");
        let me = std::process::id();
        let mut m = CpuMeter::new();
        m.sample(&[me]).expect("first sample");
        assert_eq!(m.total(), Counters::default());
        // A thread created after the baseline spins, reports its own counters, and stays
        // alive across the second sample.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            let own = std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| parse_schedstat(&s));
            let _ = done_tx.send(own);
            let _ = exit_rx.recv();
            x
        });
        let own = done_rx
            .recv()
            .expect("thread report")
            .expect("own schedstat");
        m.sample(&[me]).expect("second sample");
        drop(exit_tx);
        let _ = t.join();
        let total = m.total();
        assert!(own.cpu_ns > 0 && own.slices > 0, "{own:?}");
        assert!(total.cpu_ns >= own.cpu_ns, "{total:?} < {own:?}");
        assert!(total.slices >= own.slices, "{total:?} < {own:?}");
        assert_eq!(m.pids(), &[me]);
        let u = m.usage(Duration::from_secs(2));
        assert!((u.cpu_percent - total.cpu_ns as f64 / 2e9 * 100.0).abs() < 1e-9);
        assert!((u.wakeups_per_sec - total.slices as f64 / 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_gone_process_has_no_threads() {
        // Pid numbers above pid_max (at most 2^22) are never used.
        assert!(threads(u32::MAX - 1).expect("read").is_empty());
    }

    #[test]
    fn memory_and_command_of_this_process() {
        let me = std::process::id();
        let m = memory(me).expect("memory");
        assert!(m.rss > 0 && m.private > 0, "{m:?}");
        assert!(!command(me).is_empty());
    }
}
