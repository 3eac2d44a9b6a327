//! The core's Prometheus families. The HTTP layer owns the registry and serves
//! `/metrics`; the core only registers and updates these.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of `sandbox_creation_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// One of [`FAILURE_REASONS`].
    pub reason: String,
}

/// Reasons counted by `sandbox_creation_failures_total`: server-side failures
/// only. Client errors (validation, quota) are not creation failures: they
/// must not page anyone.
pub const FAILURE_REASONS: [&str; 3] = ["runtime", "capacity", "database"];

/// Sandbox lifecycle metrics.
#[derive(Debug, Clone)]
pub struct CoreMetrics {
    pub creation_failures: Family<FailureLabels, Counter>,
    pub sandboxes_active: Gauge,
    pub create_duration: Histogram,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoreMetrics {
    pub fn new() -> Self {
        // Creates take tens of milliseconds warm and seconds cold.
        let buckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let metrics = Self {
            creation_failures: Family::default(),
            sandboxes_active: Gauge::default(),
            create_duration: Histogram::new(buckets),
        };
        // Export every reason at 0 from the start, so `rate()` in the alert
        // rules sees a series before the first failure.
        for reason in FAILURE_REASONS {
            let _ = metrics.creation_failures.get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            });
        }
        metrics
    }

    /// Adds the families to `registry` (names as in the alert rules).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sandbox_creation_failures",
            "Sandbox creates that failed, by reason",
            self.creation_failures.clone(),
        );
        registry.register(
            "sandboxes_active",
            "Sandboxes currently live (creating or running)",
            self.sandboxes_active.clone(),
        );
        registry.register(
            "sandbox_create_duration_seconds",
            "Time to create a sandbox, from request to running",
            self.create_duration.clone(),
        );
    }

    pub(crate) fn creation_failed(&self, reason: &str) {
        self.creation_failures
            .get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The failures counted for `reason` so far.
    pub fn creation_failures_for(&self, reason: &str) -> u64 {
        self.creation_failures
            .get_or_create(&FailureLabels {
                reason: reason.to_owned(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_with_their_names() {
        let metrics = CoreMetrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.creation_failed("runtime");
        metrics.sandboxes_active.set(3);
        metrics.create_duration.observe(0.2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("sandbox_creation_failures_total{reason=\"runtime\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sandbox_creation_failures_total{reason=\"database\"} 0"),
            "every reason is exported from the start: {text}"
        );
        assert!(text.contains("sandboxes_active 3"), "{text}");
        assert!(
            text.contains("sandbox_create_duration_seconds_count 1"),
            "{text}"
        );
    }
}
