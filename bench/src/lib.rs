//! Benchmarks of codebox. This crate owns measurement only: it drives the
//! public APIs of other crates and prints numbers; it changes nothing in them
//! and asserts nothing about time (speed lives here, never in tests).

use std::time::Duration;

pub mod code;

/// p50/p99/mean/min/max of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// Summarises `samples` (nearest-rank percentiles); `None` when empty.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| {
        let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[index.clamp(1, sorted.len()) - 1]
    };
    let total: Duration = sorted.iter().sum();
    Some(Summary {
        count: sorted.len(),
        p50: rank(50.0),
        p99: rank(99.0),
        mean: total / sorted.len() as u32,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    })
}

/// Milliseconds with three decimals.
pub fn millis(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// One table row: name, then the summary in milliseconds, then the target.
pub fn row(name: &str, summary: &Summary, target: &str) -> String {
    format!(
        "{name:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}   {target}",
        summary.count,
        millis(summary.p50),
        millis(summary.p99),
        millis(summary.mean),
        millis(summary.min),
        millis(summary.max),
    )
}

/// The table header matching [`row`].
pub fn header() -> String {
    format!(
        "{:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}   {}",
        "operation (ms)", "n", "p50", "p99", "mean", "min", "max", "target (p50)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let summary = summarize(&samples).expect("samples");
        assert_eq!(summary.p50, Duration::from_millis(50));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.min, Duration::from_millis(1));
        assert_eq!(summary.max, Duration::from_millis(100));
        assert_eq!(summary.count, 100);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let summary = summarize(&[Duration::from_millis(7)]).expect("one");
        assert_eq!(summary.p50, summary.p99);
    }
}
