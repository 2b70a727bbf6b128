//! A daemon's Prometheus endpoint, scraped over real HTTP from a [`Cluster`] launched with
//! `Spec::metrics`, read with `prometheus-parse` (the text format is not parsed by hand).
use prometheus_parse::{Scrape, Value};

use crate::cluster::{Cluster, Daemon};

/// One scrape.
pub struct Metrics(Scrape);

/// Scrapes daemon `d` of node `i`; `None` if it does not answer or the text does not parse.
pub async fn scrape(c: &Cluster, i: usize, d: Daemon) -> Option<Metrics> {
    let text = c.scrape(i, d).await?;
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .ok()
        .map(Metrics)
}

impl Metrics {
    /// The sum of every sample named `name` (as exposed: `…_total`, `…_count`) whose labels
    /// include all of `labels`; `None` if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
            .reduce(|a, b| a + b)
    }

    /// [`Metrics::value`], 0 where no sample matches (a counter never incremented is absent).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}
