//! The tutorial's `curl` loop: GET the reserved IP every period and record every answer, to
//! measure the longest time without service.
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Limit of one request; longer counts as no service.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// One request of the loop.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was sent (so a slow answer does not stretch a gap: the gap is bounded
    /// by the outage plus one period on each side, whatever the latency).
    pub at: Instant,
    pub wall: SystemTime,
    /// HTTP status, `None` when there was no answer.
    pub status: Option<u16>,
    pub body: String,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

/// What the loop saw.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub samples: Vec<Sample>,
    /// Longest time between two consecutive successful answers (from the first success).
    pub longest_gap: Duration,
    pub failures: usize,
}

impl ProbeReport {
    pub fn from_samples(samples: Vec<Sample>) -> ProbeReport {
        let mut longest_gap = Duration::ZERO;
        let mut last_ok: Option<Instant> = None;
        for s in &samples {
            if s.ok() {
                if let Some(prev) = last_ok {
                    longest_gap = longest_gap.max(s.at.duration_since(prev));
                }
                last_ok = Some(s.at);
            }
        }
        // Still failing at the end: the gap runs to the last sample.
        if let (Some(prev), Some(end)) = (last_ok, samples.last())
            && !end.ok()
        {
            longest_gap = longest_gap.max(end.at.duration_since(prev));
        }
        let failures = samples.iter().filter(|s| !s.ok()).count();
        ProbeReport {
            samples,
            longest_gap,
            failures,
        }
    }

    /// Bodies of the successful answers, consecutive duplicates removed: who served, in order.
    pub fn served_by(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.samples.iter().filter(|s| s.ok()) {
            let b = s.body.trim().to_owned();
            if out.last() != Some(&b) {
                out.push(b);
            }
        }
        out
    }
}

/// A running loop; [`Prober::finish`] stops it and returns the report.
pub struct Prober {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
}

impl Prober {
    pub fn start(url: String, period: Duration) -> Prober {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (at, wall) = (Instant::now(), SystemTime::now());
                let (status, body) = match client.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (Some(status), r.text().await.unwrap_or_default())
                    }
                    Err(e) => (None, e.to_string()),
                };
                let s = Sample {
                    at,
                    wall,
                    status,
                    body,
                };
                out.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        });
        Prober { samples, task }
    }

    /// Samples from index `from` on (for printing them live).
    pub fn since(&self, from: usize) -> Vec<Sample> {
        let g = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        g.get(from..).map(<[Sample]>::to_vec).unwrap_or_default()
    }

    /// Waits (bounded) until a successful answer contains `needle`; returns it.
    pub async fn wait_served_by(&self, needle: &str, limit: Duration) -> Option<Sample> {
        let start = self.samples.lock().unwrap_or_else(|p| p.into_inner()).len();
        super::wait_for(limit, || async {
            self.since(start)
                .into_iter()
                .find(|s| s.ok() && s.body.contains(needle))
        })
        .await
    }

    pub fn report(&self) -> ProbeReport {
        ProbeReport::from_samples(self.since(0))
    }

    pub fn finish(self) -> ProbeReport {
        self.task.abort();
        self.report()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}
