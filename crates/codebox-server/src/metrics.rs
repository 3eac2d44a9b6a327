//! HTTP metrics in the Prometheus registry the server owns.
//!
//! `route` is always the matched route template (`/api/v1/sandboxes/{id}`) or
//! `unmatched`, and `method` one of the standard methods or `OTHER`: a client
//! can never create a new time series by choosing a path or a method name.

use std::fmt;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `route` label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Content type of the text exposition (OpenMetrics, which Prometheus reads).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds: API calls are milliseconds, commands run up to
/// minutes.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    method: &'static str,
    route: String,
}

type HistogramFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// `http_requests_total{method,route,status}` and
/// `http_request_duration_seconds{method,route}`.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
}

impl HttpMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(new_duration_histogram);
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in seconds by method and route template",
            duration.clone(),
        );
        Self { requests, duration }
    }

    /// Records one finished request.
    pub fn observe(&self, method: &Method, route: &str, status: StatusCode, elapsed: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status: status.as_str().to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

fn new_duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The standard methods by name; anything else is `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("OTHER")
}

/// A counter whose value lives elsewhere (for instance `RedisHealth`'s atomic
/// failure count), read at scrape time.
pub struct ExternalCounter<F> {
    name: &'static str,
    help: &'static str,
    read: F,
}

impl<F> ExternalCounter<F>
where
    F: Fn() -> u64 + Send + Sync + 'static,
{
    /// `name` without the `_total` suffix, which the encoder adds.
    pub fn new(name: &'static str, help: &'static str, read: F) -> Self {
        Self { name, help, read }
    }
}

impl<F> fmt::Debug for ExternalCounter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalCounter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F> Collector for ExternalCounter<F>
where
    F: Fn() -> u64 + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counter = ConstCounter::new((self.read)());
        let metric =
            encoder.encode_descriptor(self.name, self.help, None, counter.metric_type())?;
        counter.encode(metric)
    }
}

/// The registry in the text exposition format.
pub fn encode_registry(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn records_requests_by_route_template() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        metrics.observe(
            &Method::GET,
            "/api/v1/sandboxes/{id}",
            StatusCode::NOT_FOUND,
            Duration::from_millis(3),
        );
        let text = encode_registry(&registry).expect("encodes");
        assert!(text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/sandboxes/{id}",status="404"} 1"#
        ));
        assert!(text.contains("http_request_duration_seconds_bucket"));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let method = Method::from_bytes(b"BREW").expect("valid token");
        assert_eq!(method_label(&method), "OTHER");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }

    #[test]
    fn external_counter_reads_at_scrape_time() {
        let failures = Arc::new(AtomicU64::new(0));
        let mut registry = Registry::default();
        let source = Arc::clone(&failures);
        registry.register_collector(Box::new(ExternalCounter::new(
            "redis_failures",
            "Redis operations that failed",
            move || source.load(Ordering::Relaxed),
        )));
        failures.store(7, Ordering::Relaxed);
        let text = encode_registry(&registry).expect("encodes");
        assert!(text.contains("redis_failures_total 7"), "{text}");
    }
}
