//! Prometheus metrics of `dad-trace serve`, in the `OpenMetrics` text format.
//!
//! Labels are the Kubernetes namespace by default; the pod name is opt-in because a node
//! churns through many pods and every label value is a new time series. They are called
//! `k8s_namespace_name` and `k8s_pod_name` (OpenTelemetry's `k8s.namespace.name`,
//! `k8s.pod.name`), not `namespace`/`pod`: the usual `kubernetes-pods` scrape job sets
//! `namespace` and `pod` to the *scraped* pod's (the agent's), and without `honor_labels`
//! Prometheus would rename ours to `exported_namespace`/`exported_pod`.
use std::collections::BTreeMap;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

use super::pod_wait::PodWindows;
use crate::{
    node::{doctor::model, sysctl},
    record::cni::TracedCall,
    session::{AddressEvent, Outcome, Pod, PodSettings, SocketError},
};

/// Label names, as the dashboards and alerts in deploy/ use them.
pub const NAMESPACE_LABEL: &str = "k8s_namespace_name";
pub const POD_LABEL: &str = "k8s_pod_name";

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

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// A histogram family in seconds, registered as `dad_trace_<name>_seconds`.
fn seconds_histogram(registry: &mut Registry, name: &str, help: &str) -> Histograms {
    let family = Histograms::new_with_constructor(new_histogram);
    registry.register_with_unit(name, help, Unit::Seconds, family.clone());
    family
}

/// A counter family, registered as `dad_trace_<name>_total`.
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::default();
    registry.register(name, help, family.clone());
    family
}

pub struct Metrics {
    registry: Registry,
    per_pod_labels: bool,
    tentative: Histograms,
    dad: Histograms,
    pod_wait: Histograms,
    cni_add: Histograms,
    pod_dad_wait: Histograms,
    pods: PodWindows<Labels>,
    addresses: Family<Labels, Counter>,
    socket_errors: Family<Labels, Counter>,
    lost: Counter,
    otlp_exported: Counter,
    otlp_dropped: Counter,
    in_flight: Gauge,
    oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    stuck: Gauge,
    sysctls: Family<Labels, Gauge>,
    new_pod_dad: Gauge,
    pods_by_dad: Family<Labels, Counter>,
}

/// `dad_trace_backend_info`: always 1.
fn register_backend(registry: &mut Registry, backend: &str, kernel: &str) {
    registry.register(
        "backend",
        "The probe backend, kernel and node in use",
        Info::new(vec![
            ("backend".to_string(), backend.to_string()),
            ("kernel".to_string(), kernel.to_string()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ("k8s_node_name".to_string(), crate::node::hostname()),
        ]),
    );
}

/// `dad_trace_oldest_tentative_seconds` and `dad_trace_stuck_addresses`.
fn stuck_gauges(registry: &mut Registry) -> (Gauge<f64, std::sync::atomic::AtomicU64>, Gauge) {
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register_with_unit(
        "oldest_tentative",
        "How long the oldest address tentative right now has been (0 when none is)",
        Unit::Seconds,
        oldest.clone(),
    );
    let stuck = Gauge::default();
    registry.register(
        "stuck_addresses",
        "Addresses tentative right now for longer than --stuck-after (DAD waiting for a link that is down, or never ending)",
        stuck.clone(),
    );
    (oldest, stuck)
}

/// `dad_trace_otlp_spans_exported_total` and `..._dropped_total` (`--otlp-endpoint`).
fn otlp_counters(registry: &mut Registry) -> (Counter, Counter) {
    let exported = Counter::default();
    registry.register(
        "otlp_spans_exported",
        "Spans a collector accepted (--otlp-endpoint)",
        exported.clone(),
    );
    let dropped = Counter::default();
    registry.register(
        "otlp_spans_dropped",
        "Spans given up: the queue was full, the collector refused them or did not answer in time",
        dropped.clone(),
    );
    (exported, dropped)
}

/// `dad_trace_pods_total`: beside `node_new_pods_run_dad` (what the host's settings promise),
/// what pods got. Its three series exist from the first scrape.
fn pods_by_dad(registry: &mut Registry) -> Family<Labels, Counter> {
    let family = Family::default();
    registry.register(
        "pods",
        "Pod namespaces whose own DAD settings were read when their first address appeared, by whether DAD runs there (unknown: gone before read, or a value unreadable)",
        family.clone(),
    );
    for dad in ["on", "off", "unknown"] {
        drop(family.get_or_create(&vec![("dad".to_string(), dad.to_string())]));
    }
    family
}

/// The `dad` label of `dad_trace_pods_total`: three values, whatever the pods.
fn dad_label(settings: &PodSettings) -> &'static str {
    match settings.dad() {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

impl Metrics {
    #[must_use]
    pub fn new(backend: &str, kernel: &str, per_pod_labels: bool) -> Self {
        let mut registry = Registry::with_prefix("dad_trace");
        let tentative = seconds_histogram(
            &mut registry,
            "tentative",
            "How long each IPv6 address stayed tentative (added -> usable)",
        );
        let dad = seconds_histogram(
            &mut registry,
            "dad",
            "How long Duplicate Address Detection ran for each address that ran it",
        );
        let pod_wait = seconds_histogram(
            &mut registry,
            "pod_wait",
            "Per pod: its first address added -> its last settled (what a CNI plugin waiting for them pays)",
        );
        let cni_add = seconds_histogram(
            &mut registry,
            "cni_add",
            "Per successful top-level CNI ADD: the runtime forked the plugin -> its last thread exited",
        );
        let pod_dad_wait = seconds_histogram(
            &mut registry,
            "pod_dad_wait",
            "Per pod with a traced CNI ADD: how long its addresses were tentative inside that ADD (0 when none was)",
        );
        // One counter for every outcome: failures (duplicates) and aborted addresses are
        // `outcome="failed"` and `outcome="aborted"` here, not counters of their own.
        let addresses = counters(
            &mut registry,
            "addresses",
            "Addresses that finished, by outcome: settled, failed (a duplicate answered), aborted (removed while tentative)",
        );
        let socket_errors = counters(
            &mut registry,
            "socket_errors",
            "Application bind/connect/sendto/sendmsg calls that failed with EADDRNOTAVAIL, by syscall and \
             whether an address of the pod was tentative then (during_dad)",
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Kernel events dropped because the ring buffer was full",
            lost.clone(),
        );
        let (otlp_exported, otlp_dropped) = otlp_counters(&mut registry);
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_addresses",
            "Addresses tentative right now",
            in_flight.clone(),
        );
        let (oldest, stuck) = stuck_gauges(&mut registry);
        let sysctls = Family::default();
        registry.register(
            "node_sysctl",
            "The node's DAD settings (host namespace), by sysctl name",
            sysctls.clone(),
        );
        let new_pod_dad = Gauge::default();
        registry.register(
            "node_new_pods_run_dad",
            "1 when a pod created now runs DAD (the doctor's reading of node_sysctl), 0 when the node is tuned",
            new_pod_dad.clone(),
        );
        let pods_by_dad = pods_by_dad(&mut registry);
        register_backend(&mut registry, backend, kernel);
        let metrics = Self {
            registry,
            per_pod_labels,
            tentative,
            dad,
            pod_wait,
            cni_add,
            pod_dad_wait,
            pods: PodWindows::default(),
            addresses,
            socket_errors,
            lost,
            otlp_exported,
            otlp_dropped,
            in_flight,
            oldest,
            stuck,
            sysctls,
            new_pod_dad,
            pods_by_dad,
        };
        metrics.set_sysctls(&sysctl::snapshot());
        if !per_pod_labels {
            metrics.start_at_zero();
        }
        metrics
    }

    /// Series that exist from the first scrape at 0: Prometheus's `rate()` and `increase()`
    /// count nothing of a series' first sample, so a series born at its first burst (every
    /// host veth at once) would show no rate at all.
    fn start_at_zero(&self) {
        for namespace in [HOST_LABEL, UNKNOWN_LABEL] {
            let labels = vec![(NAMESPACE_LABEL.to_string(), namespace.to_string())];
            drop(self.tentative.get_or_create(&labels));
            drop(self.dad.get_or_create(&labels));
            for outcome in ["settled", "failed", "aborted"] {
                let mut with_outcome = labels.clone();
                with_outcome.push(("outcome".to_string(), outcome.to_string()));
                drop(self.addresses.get_or_create(&with_outcome));
            }
            if namespace != HOST_LABEL {
                drop(self.pod_wait.get_or_create(&labels));
                drop(self.cni_add.get_or_create(&labels));
                drop(self.pod_dad_wait.get_or_create(&labels));
            }
        }
    }

    fn labels(&self, event: &AddressEvent) -> Labels {
        if event.host_netns {
            let mut labels = vec![(NAMESPACE_LABEL.to_string(), HOST_LABEL.to_string())];
            if self.per_pod_labels {
                labels.push((
                    POD_LABEL.to_string(),
                    crate::text::terminal(&event.pod_label()).into_owned(),
                ));
            }
            return labels;
        }
        self.pod_labels(event.pod.as_ref(), || event.pod_label())
    }

    /// A pod's labels: its Kubernetes namespace (or `(unknown)`), and with per-pod labels its
    /// name (or `label`, what else names it).
    fn pod_labels(&self, pod: Option<&Pod>, label: impl FnOnce() -> String) -> Labels {
        // Label values are shown by dashboards and terminals: escaped as every name is.
        let namespace = pod.and_then(|pod| pod.namespace.as_deref()).map_or_else(
            || UNKNOWN_LABEL.to_string(),
            |name| crate::text::terminal(name).into_owned(),
        );
        let mut labels = vec![(NAMESPACE_LABEL.to_string(), namespace)];
        if self.per_pod_labels {
            let name = pod.and_then(|pod| pod.name.clone()).unwrap_or_else(label);
            labels.push((POD_LABEL.to_string(), crate::text::terminal(&name).into_owned()));
        }
        labels
    }

    /// Counts one finished top-level CNI call: a successful ADD's time, and its window for
    /// the pod's DAD wait.
    pub fn observe_call(&self, traced: &TracedCall) {
        let call = &traced.call;
        let (Some(duration_ns), Some(end)) = (call.duration_ns, call.end()) else {
            return;
        };
        if !call.is("ADD") || call.exit_status != Some(0) {
            return;
        }
        let labels = self.pod_labels(traced.pod.as_ref(), || traced.label());
        self.cni_add.get_or_create(&labels).observe(duration_ns as f64 / 1e9);
        if let (Some(inode), Some(start), Some(end)) = (
            traced.netns_inode,
            call.start.timestamp_nanos_opt(),
            end.timestamp_nanos_opt(),
        ) {
            self.pods.see_add(inode, (start, end), || labels);
        }
    }

    /// Counts `added` more failures of a socket error.
    pub fn observe_socket_error(&self, error: &SocketError, added: u64) {
        let mut labels = if error.host_netns {
            vec![(NAMESPACE_LABEL.to_string(), HOST_LABEL.to_string())]
        } else {
            let label = || error.label();
            self.pod_labels(error.pod.as_ref(), label)
        };
        labels.push(("syscall".to_string(), error.syscall.clone()));
        labels.push(("during_dad".to_string(), error.during_dad().to_string()));
        self.socket_errors.get_or_create(&labels).inc_by(added);
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
        if event.outcome == Outcome::Settled {
            self.tentative
                .get_or_create(&labels)
                .observe(event.tentative_ns as f64 / 1e9);
            if let Some(dad_ns) = event.dad_ns {
                self.dad.get_or_create(&labels).observe(dad_ns as f64 / 1e9);
            }
        }
        if !event.host_netns {
            self.pods.see(event, || labels);
        }
    }

    /// Once a second: pods with no address in flight or held back (`busy` holds the
    /// namespaces that have one) and no news since the last sweep are done; their waits
    /// are counted.
    pub fn sweep_pods(&self, busy: &std::collections::HashSet<u32>) {
        for pod in self.pods.finish(busy, false) {
            if let Some(wait_ns) = pod.wait_ns() {
                self.pod_wait.get_or_create(&pod.payload).observe(wait_ns as f64 / 1e9);
            }
            if let Some(in_add_ns) = pod.dad_in_add_ns() {
                self.pod_dad_wait
                    .get_or_create(&pod.payload)
                    .observe(in_add_ns as f64 / 1e9);
            }
        }
    }

    /// The node's DAD sysctls, and whether a new pod runs DAD under them.
    pub fn set_sysctls(&self, host: &BTreeMap<String, String>) {
        for (name, value) in host {
            if let Ok(value) = value.trim().parse::<i64>() {
                self.sysctls
                    .get_or_create(&vec![("sysctl".to_string(), name.clone())])
                    .set(value);
            }
        }
        let pod = model::pod_estimate(&model::new_pod_interface(host, model::inherits(host)));
        self.new_pod_dad.set(i64::from(pod.per_pod.dad));
    }

    /// Counts one pod namespace whose settings were read (or could not be).
    pub fn observe_settings(&self, settings: &PodSettings) {
        self.pods_by_dad
            .get_or_create(&vec![("dad".to_string(), dad_label(settings).to_string())])
            .inc();
    }

    /// Brings the lost-events counter up to the kernel's running total.
    pub fn set_lost(&self, total: u64) {
        let seen = self.lost.get();
        if total > seen {
            self.lost.inc_by(total - seen);
        }
    }

    /// Brings the OTLP counters up to the exporter's running totals.
    pub fn set_otlp(&self, stats: &crate::output::otlp::export::ExportStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (counter, total) in [
            (&self.otlp_exported, stats.exported.load(Relaxed)),
            (&self.otlp_dropped, stats.dropped.load(Relaxed)),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    pub fn set_in_flight(&self, count: usize) {
        self.in_flight.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The oldest address in flight's age (0 when none is), and how many are stuck.
    pub fn set_stuck(&self, oldest_ns: Option<u64>, stuck: usize) {
        self.oldest.set(oldest_ns.unwrap_or(0) as f64 / 1e9);
        self.stuck.set(i64::try_from(stuck).unwrap_or(i64::MAX));
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

    /// Every metric the agent exposes is in the docs' table, so the docs cannot fall behind.
    #[test]
    fn every_metric_is_documented() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kubernetes.md"))
            .expect("docs/kubernetes.md");
        let text = Metrics::new("tracepoint", "6.18", false).render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert!(names.len() > 10, "{text}");
        for name in names {
            assert!(
                docs.contains(&format!("| `{name}")),
                "{name} is not in docs/kubernetes.md's table"
            );
        }
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
        assert!(text.contains(r#"k8s_namespace_name="(host)""#));
        assert!(!text.contains("k8s_pod_name="), "pod labels are opt-in");
        assert!(
            !text.contains("namespace=\"") && !text.contains(" pod=\""),
            "labels a scrape job sets itself"
        );
        // Every pod once its addresses are done and a sweep passed quietly.
        metrics.sweep_pods(&std::collections::HashSet::new());
        metrics.sweep_pods(&std::collections::HashSet::new());
        let text = metrics.render();
        let pods: std::collections::HashSet<_> = session
            .events
            .iter()
            .filter(|e| !e.host_netns && e.outcome == Outcome::Settled)
            .map(|e| e.netns_inode)
            .collect();
        let pods = pods.len();
        assert!(pods > 0);
        assert_eq!(value(&text, "dad_trace_pod_wait_seconds_count{"), pods as f64);
        assert!(text.ends_with("# EOF\n"));
    }

    /// A pod's successful ADD is one CNI ADD time; once its addresses are done and a sweep
    /// passed quietly, its DAD wait inside the ADD is one more (a failed ADD is neither).
    #[test]
    fn cni_adds_and_the_dad_wait_inside_them() {
        use crate::{record::cni::TracedCall, session::CniCall};
        let session = fixture();
        let pod_event = session
            .events
            .iter()
            .find(|event| !event.host_netns && event.outcome == Outcome::Settled)
            .expect("a pod address")
            .clone();
        let metrics = Metrics::new("tracepoint", "6.18", false);
        let add = |exit_status| TracedCall {
            call: CniCall {
                command: Some("ADD".into()),
                plugin: "/opt/cni/bin/ptp".into(),
                container_id: Some("sandbox".into()),
                netns: Some("/run/netns/cni-1".into()),
                ifname: Some("eth0".into()),
                pid: 10,
                ppid: 1,
                start: pod_event.started() - chrono::Duration::milliseconds(20),
                duration_ns: Some(pod_event.tentative_ns + 50_000_000),
                exit_status: Some(exit_status),
                exit_signal: None,
                env_truncated: false,
                trace_parent: None,
                trace_state: None,
                delegates: Vec::new(),
            },
            netns_inode: Some(pod_event.netns_inode),
            pod: Some(Pod {
                namespace: Some("team-a".into()),
                ..Pod::default()
            }),
        };
        metrics.observe_call(&add(1));
        metrics.observe(&pod_event);
        metrics.observe_call(&add(0));
        let text = metrics.render();
        assert_eq!(value(&text, "dad_trace_cni_add_seconds_count{"), 1.0, "{text}");
        let expected = (pod_event.tentative_ns + 50_000_000) as f64 / 1e9;
        assert!(
            (value(&text, r#"dad_trace_cni_add_seconds_sum{k8s_namespace_name="team-a"}"#) - expected).abs() < 1e-6
        );
        let busy = std::collections::HashSet::from([pod_event.netns_inode]);
        metrics.sweep_pods(&busy);
        assert_eq!(
            value(&metrics.render(), "dad_trace_pod_dad_wait_seconds_count{"),
            0.0,
            "held back: not done"
        );
        // News since the last quiet sweep: one more sweep without any.
        metrics.sweep_pods(&std::collections::HashSet::new());
        assert_eq!(
            value(&metrics.render(), "dad_trace_pod_dad_wait_seconds_count{"),
            0.0,
            "fresh"
        );
        metrics.sweep_pods(&std::collections::HashSet::new());
        let text = metrics.render();
        assert_eq!(value(&text, "dad_trace_pod_dad_wait_seconds_count{"), 1.0, "{text}");
        let wait = pod_event.tentative_ns as f64 / 1e9;
        assert!(
            (value(&text, "dad_trace_pod_dad_wait_seconds_sum{") - wait).abs() < 1e-6,
            "{text}"
        );
    }

    /// The oldest address in flight and the stuck ones, as the sweep says them.
    #[test]
    fn stuck_addresses_and_the_oldest_age() {
        let metrics = Metrics::new("tracepoint", "6.18", false);
        metrics.set_stuck(Some(12_500_000_000), 2);
        let text = metrics.render();
        assert!(text.contains("dad_trace_oldest_tentative_seconds 12.5\n"), "{text}");
        assert!(text.contains("dad_trace_stuck_addresses 2\n"), "{text}");
        metrics.set_stuck(None, 0);
        let text = metrics.render();
        assert!(text.contains("dad_trace_oldest_tentative_seconds 0.0\n"), "{text}");
        assert!(text.contains("dad_trace_stuck_addresses 0\n"), "{text}");
    }

    /// Socket errors count up by what each read added, labelled by syscall and cause.
    #[test]
    fn socket_errors_count_by_syscall_and_cause() {
        let metrics = Metrics::new("tracepoint", "6.18", false);
        let mut error = crate::report::socket_errors::tests::error("ns-a", "bind", 3, Some(200));
        metrics.observe_socket_error(&error, 3);
        error.count = 10;
        metrics.observe_socket_error(&error, 7);
        error.tentative_for_ns = None;
        error.syscall = "connect".into();
        metrics.observe_socket_error(&error, 2);
        let text = metrics.render();
        assert!(
            text.contains("dad_trace_socket_errors_total{k8s_namespace_name=\"(unknown)\",syscall=\"bind\",during_dad=\"true\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("dad_trace_socket_errors_total{k8s_namespace_name=\"(unknown)\",syscall=\"connect\",during_dad=\"false\"} 2\n"),
            "{text}"
        );
        error.host_netns = true;
        metrics.observe_socket_error(&error, 1);
        assert!(
            metrics
                .render()
                .contains("{k8s_namespace_name=\"(host)\",syscall=\"connect\",during_dad=\"false\"} 1\n")
        );
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
        assert!(text.contains(r#"k8s_pod_name="dt-pod-0""#));
        assert_eq!(value(&text, "dad_trace_lost_events_total"), 5.0);
    }

    #[test]
    fn node_sysctls_and_whether_new_pods_run_dad() {
        let metrics = Metrics::new("tracepoint", "6.18", false);
        let host = |inherit: &str| -> BTreeMap<String, String> {
            [
                ("net.core.devconf_inherit_init_net", inherit),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
        };
        metrics.set_sysctls(&host("0"));
        let text = metrics.render();
        assert!(
            text.contains("dad_trace_node_sysctl{sysctl=\"net.ipv6.conf.default.accept_dad\"} 0"),
            "{text}"
        );
        assert_eq!(value(&text, "dad_trace_node_new_pods_run_dad"), 1.0);
        metrics.set_sysctls(&host("1"));
        assert_eq!(value(&metrics.render(), "dad_trace_node_new_pods_run_dad"), 0.0);
    }

    /// Pods are counted by the DAD their own settings give, in three series from the start.
    #[test]
    fn pods_by_whether_their_settings_run_dad() {
        let metrics = Metrics::new("tracepoint", "6.18", true);
        let text = metrics.render();
        for dad in ["on", "off", "unknown"] {
            assert!(
                text.contains(&format!("dad_trace_pods_total{{dad=\"{dad}\"}} 0")),
                "{text}"
            );
        }
        let accept = |accept_dad: i64| crate::session::settings::ConfValues {
            accept_dad: Some(accept_dad),
            ..Default::default()
        };
        let fresh = PodSettings {
            all: accept(0),
            default: accept(1),
            ..PodSettings::default()
        };
        let tuned = PodSettings {
            default: accept(0),
            ..fresh.clone()
        };
        for settings in [&fresh, &fresh, &tuned, &PodSettings::unread("gone")] {
            metrics.observe_settings(settings);
        }
        let text = metrics.render();
        assert_eq!(value(&text, "dad_trace_pods_total{dad=\"on\"}"), 2.0);
        assert_eq!(value(&text, "dad_trace_pods_total{dad=\"off\"}"), 1.0);
        assert_eq!(value(&text, "dad_trace_pods_total{dad=\"unknown\"}"), 1.0);
        assert!(text.contains("# TYPE dad_trace_pods counter"), "{text}");
    }

    #[test]
    fn buckets_resolve_a_millisecond_and_three_seconds() {
        assert!(BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(BUCKETS.iter().any(|&b| (b - 0.001).abs() < f64::EPSILON));
        assert!(BUCKETS.iter().filter(|&&b| (1.0..=3.0).contains(&b)).count() >= 5);
    }
}
