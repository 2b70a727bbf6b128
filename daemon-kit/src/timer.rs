//! A deadline timer on a Linux timerfd, for the daemons' main loops.
//!
//! Why not `tokio::time::sleep_until`: tokio's timer wheel keeps deadlines beyond 64 ms in
//! 64 ms slots, so such a sleep wakes the process once at the slot's start to move it to the
//! 1 ms level, and again when it is due; and moving a timer earlier writes the runtime's
//! eventfd to make it recompute its wait. For a heartbeat every 100 ms that was a third of an
//! idle daemon's wake-ups. A timerfd in the runtime's epoll set costs exactly one wake-up,
//! when it is due, and re-arming it is one syscall.
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The timerfd, as tokio's `AsyncFd` wants it (nix's type has `AsFd` only).
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One deadline at a time; [`Timer::wait`] resolves once it has passed.
pub struct Timer {
    fd: AsyncFd<Fd>,
    deadline: Option<Instant>,
}

impl Timer {
    /// A disarmed timer on `CLOCK_MONOTONIC`, the clock of `Instant`. Needs a tokio runtime.
    pub fn new() -> io::Result<Timer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // Deprecated as unsound for borrowed fds that may close while registered; this one is
        // owned by the AsyncFd, which deregisters before dropping it, and the replacement is
        // `unsafe`, which this workspace denies.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(Fd(fd), tokio::io::Interest::READABLE)?;
        Ok(Timer { fd, deadline: None })
    }

    /// The deadline set, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Replaces the deadline (`None` disarms). Setting the one already set does nothing.
    pub fn set(&mut self, at: Option<Instant>) -> io::Result<()> {
        if at == self.deadline {
            return Ok(());
        }
        match at {
            None => self.fd.get_ref().0.unset().map_err(io::Error::from)?,
            Some(at) => {
                // Relative to now: Instant does not expose its timespec. A deadline already
                // passed fires at once (a zero timespec would disarm instead).
                let after = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.fd
                    .get_ref()
                    .0
                    .set(
                        Expiration::OneShot(TimeSpec::from_duration(after)),
                        TimerSetTimeFlags::empty(),
                    )
                    .map_err(io::Error::from)?;
            }
        }
        self.deadline = at;
        Ok(())
    }

    /// Resolves when the deadline has passed, and disarms the timer; pending forever while it
    /// is disarmed. Cancel-safe: dropping the future loses no expiry.
    pub async fn wait(&mut self) -> io::Result<()> {
        loop {
            if self.deadline.is_none() {
                std::future::pending::<()>().await;
            }
            let mut guard = self.fd.readable().await?;
            // Re-arming resets the count, so a readiness left from an earlier deadline reads
            // EAGAIN here, which clears it, and the loop waits again.
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(Ok(())) => {
                    // One-shot and read: nothing more can come until the next set(), whose
                    // expiry raises a new edge. Saves a read that would find nothing.
                    guard.clear_ready();
                    self.deadline = None;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        rt().block_on(async {
            let mut t = Timer::new().unwrap();
            let start = Instant::now();
            t.set(Some(start + Duration::from_millis(30))).unwrap();
            t.wait().await.unwrap();
            assert!(start.elapsed() >= Duration::from_millis(30));
            assert_eq!(t.deadline(), None, "a fired timer is disarmed");
        });
    }

    #[test]
    fn moving_the_deadline_replaces_the_old_one() {
        rt().block_on(async {
            let mut t = Timer::new().unwrap();
            let start = Instant::now();
            t.set(Some(start + Duration::from_millis(5))).unwrap();
            // Let the first deadline pass unread, then move it later: only the new one counts.
            std::thread::sleep(Duration::from_millis(10));
            t.set(Some(start + Duration::from_millis(60))).unwrap();
            t.wait().await.unwrap();
            assert!(start.elapsed() >= Duration::from_millis(60));
        });
    }

    #[test]
    fn a_passed_deadline_fires_at_once_and_none_never_fires() {
        rt().block_on(async {
            let mut t = Timer::new().unwrap();
            t.set(Some(Instant::now() - Duration::from_millis(1)))
                .unwrap();
            tokio::time::timeout(Duration::from_secs(1), t.wait())
                .await
                .expect("a passed deadline fires")
                .unwrap();
            t.set(None).unwrap();
            let never = tokio::time::timeout(Duration::from_millis(30), t.wait()).await;
            assert!(never.is_err(), "a disarmed timer does not fire");
        });
    }
}
