//! Prometheus metrics of `dad-trace serve`, in the `OpenMetrics` text format.
//!
//! Labels are the Kubernetes namespace by default; the pod name is opt-in because a node
//! churns through many pods and every label value is a new time series.
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

use crate::session::{AddressEvent, Outcome};

/// Bucket bounds in seconds: 0.5 ms .. 10 ms resolves tuned nodes, 0.5 s .. 5 s the DAD
/// wait (1 s per probe with the default `dad_transmits=1`, plus the random start delay).
pub const BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0,
    5.0, 10.0,
];

/// The label for addresses of the host namespace, and for pods nobody could name.
pub const HOST_LABEL: &str = "(host)";
pub const UNKNOWN_LABEL: &str = "(unknown)";

type Labels = Vec<(String, String)>;

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().copied())
}

pub struct Metrics {
    registry: Registry,
    per_pod_labels: bool,
    tentative: Family<Labels, Histogram, fn() -> Histogram>,
    dad: Family<Labels, Histogram, fn() -> Histogram>,
    addresses: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    aborted: Family<Labels, Counter>,
    lost: Counter,
    in_flight: Gauge,
}

impl Metrics {
    #[must_use]
    pub fn new(backend: &str, kernel: &str, per_pod_labels: bool) -> Self {
        let mut registry = Registry::with_prefix("dad_trace");
        let tentative = Family::new_with_constructor(new_histogram as fn() -> Histogram);
        let dad = Family::new_with_constructor(new_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "tentative",
            "How long each IPv6 address stayed tentative (added -> usable)",
            Unit::Seconds,
            tentative.clone(),
        );
        registry.register_with_unit(
            "dad",
            "How long Duplicate Address Detection ran for each address that ran it",
            Unit::Seconds,
            dad.clone(),
        );
        let addresses = Family::default();
        registry.register("addresses", "Addresses that finished, by outcome", addresses.clone());
        let failures = Family::default();
        registry.register(
            "dad_failures",
            "Addresses that DAD found duplicated (dadfailed)",
            failures.clone(),
        );
        let aborted = Family::default();
        registry.register(
            "aborted_addresses",
            "Addresses removed (or whose interface or namespace was) while tentative",
            aborted.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Kernel events dropped because the ring buffer was full",
            lost.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_addresses",
            "Addresses tentative right now",
            in_flight.clone(),
        );
        registry.register(
            "backend",
            "The probe backend and kernel in use",
            Info::new(vec![
                ("backend".to_string(), backend.to_string()),
                ("kernel".to_string(), kernel.to_string()),
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        Self {
            registry,
            per_pod_labels,
            tentative,
            dad,
            addresses,
            failures,
            aborted,
            lost,
            in_flight,
        }
    }

    fn labels(&self, event: &AddressEvent) -> Labels {
        let namespace = if event.host_netns {
            HOST_LABEL.to_string()
        } else {
            event
                .pod
                .as_ref()
                .and_then(|pod| pod.namespace.clone())
                .unwrap_or_else(|| UNKNOWN_LABEL.to_string())
        };
        let mut labels = vec![("namespace".to_string(), namespace)];
        if self.per_pod_labels {
            let pod = event
                .pod
                .as_ref()
                .and_then(|pod| pod.name.clone())
                .unwrap_or_else(|| event.pod_label());
            labels.push(("pod".to_string(), pod));
        }
        labels
    }

    /// Counts one finished address.
    pub fn observe(&self, event: &AddressEvent) {
        let labels = self.labels(event);
        let outcome = match event.outcome {
            Outcome::Settled => "settled",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
        };
        let mut with_outcome = labels.clone();
        with_outcome.push(("outcome".to_string(), outcome.to_string()));
        self.addresses.get_or_create(&with_outcome).inc();
        match event.outcome {
            Outcome::Settled => {
                self.tentative
                    .get_or_create(&labels)
                    .observe(event.tentative_ns as f64 / 1e9);
                if let Some(dad_ns) = event.dad_ns {
                    self.dad.get_or_create(&labels).observe(dad_ns as f64 / 1e9);
                }
            }
            Outcome::Failed => {
                self.failures.get_or_create(&labels).inc();
            }
            Outcome::Aborted => {
                self.aborted.get_or_create(&labels).inc();
            }
        }
    }

    /// Brings the lost-events counter up to the kernel's running total.
    pub fn set_lost(&self, total: u64) {
        let seen = self.lost.get();
        if total > seen {
            self.lost.inc_by(total - seen);
        }
    }

    pub fn set_in_flight(&self, count: usize) {
        self.in_flight.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The exposition text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp, reason = "counts are small integers, exact in f64")]
mod tests {
    use super::*;
    use crate::session::Session;

    fn fixture() -> Session {
        Session::parse(
            std::path::Path::new("default-20-pods.json"),
            include_bytes!("../../tests/fixtures/default-20-pods.json"),
        )
        .expect("fixture parses")
    }

    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .map(|line| {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .sum()
    }

    #[test]
    fn histogram_counts_match_the_settled_addresses() {
        let session = fixture();
        let metrics = Metrics::new("tracepoint", "6.18", false);
        for event in &session.events {
            metrics.observe(event);
        }
        let text = metrics.render();
        let settled = session.events.iter().filter(|e| e.outcome == Outcome::Settled).count();
        assert!(settled > 0);
        assert_eq!(value(&text, "dad_trace_tentative_seconds_count{"), settled as f64);
        let ran_dad = session.events.iter().filter(|e| e.dad_ns.is_some()).count();
        assert_eq!(value(&text, "dad_trace_dad_seconds_count{"), ran_dad as f64);
        // Seconds, not nanoseconds: the sum is the fixture's total wait.
        let total: f64 = session
            .events
            .iter()
            .filter(|e| e.outcome == Outcome::Settled)
            .map(|e| e.tentative_ns as f64 / 1e9)
            .sum();
        assert!((value(&text, "dad_trace_tentative_seconds_sum{") - total).abs() < 1e-6);
        assert!(text.contains(r#"dad_trace_backend_info{backend="tracepoint",kernel="6.18""#));
        assert!(text.contains(r#"namespace="(host)""#));
        assert!(!text.contains("pod=\""), "pod labels are opt-in");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn per_pod_labels_and_lost_events() {
        let session = fixture();
        let metrics = Metrics::new("kprobe", "6.1", true);
        for event in &session.events {
            metrics.observe(event);
        }
        metrics.set_lost(5);
        metrics.set_lost(3);
        let text = metrics.render();
        assert!(text.contains(r#"pod="dt-pod-0""#));
        assert_eq!(value(&text, "dad_trace_lost_events_total"), 5.0);
    }

    #[test]
    fn buckets_resolve_a_millisecond_and_three_seconds() {
        assert!(BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(BUCKETS.iter().any(|&b| (b - 0.001).abs() < f64::EPSILON));
        assert!(BUCKETS.iter().filter(|&&b| (1.0..=3.0).contains(&b)).count() >= 5);
    }
}
