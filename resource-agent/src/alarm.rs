//! A deadline for a task's loop, on a timerfd.
use tandem_daemon_kit::timer::Timer;
use tokio::time::Instant;
use tracing::warn;

/// A deadline for a task's loop: [`Timer`] (a timerfd: one wake-up per deadline, where
/// tokio's wheel wakes twice or more for any sleep past 64 ms), or tokio's timer should the
/// timerfd fail (never seen; the daemon keeps its deadlines either way).
pub struct Alarm {
    timer: Option<Timer>,
    at: Option<Instant>,
    name: &'static str,
}

impl Alarm {
    pub fn new(name: &'static str) -> Alarm {
        let timer = Timer::new()
            .inspect_err(|e| warn!(task = name, error = %e, "no timerfd; using tokio's timer"))
            .ok();
        Alarm {
            timer,
            at: None,
            name,
        }
    }

    /// Replaces the deadline (`None`: never); the same deadline again costs nothing.
    pub fn set(&mut self, at: Option<Instant>) {
        self.at = at;
        if let Some(t) = &mut self.timer
            && let Err(e) = t.set(at)
        {
            warn!(task = self.name, error = %e, "timerfd failed; using tokio's timer");
            self.timer = None;
        }
    }

    /// Resolves once the deadline has passed (and disarms); cancel-safe.
    pub async fn wait(&mut self) {
        if let Some(t) = &mut self.timer {
            match t.wait().await {
                Ok(()) => {
                    self.at = None;
                    return;
                }
                Err(e) => {
                    warn!(task = self.name, error = %e, "timerfd failed; using tokio's timer");
                    self.timer = None;
                }
            }
        }
        match self.at {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_at_its_deadline_and_again_when_set_again() {
        let mut a = Alarm::new("test");
        let start = Instant::now();
        a.set(Some(start + Duration::from_millis(20)));
        a.wait().await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        // The same instant again, once passed: fires at once rather than never.
        a.set(Some(start + Duration::from_millis(20)));
        tokio::time::timeout(Duration::from_secs(1), a.wait())
            .await
            .expect("a passed deadline fires");
        a.set(None);
        let never = tokio::time::timeout(Duration::from_millis(30), a.wait()).await;
        assert!(never.is_err(), "no deadline: never fires");
    }
}
