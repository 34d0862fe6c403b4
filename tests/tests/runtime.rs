//! Pod identity from a real container runtime, and the node agent scraped by a real
//! Prometheus. Root only; skips with a reason otherwise. Run with `--test-threads=1`.
#![allow(clippy::float_cmp, reason = "metric values compared are small counts, exact in f64")]
use std::{path::Path, sync::Arc, time::Duration};

use dad_trace::{kernel::BackendChoice, record::enrich::cri::SocketChoice, session::Outcome, tracer::RecordOptions};
use integration_tests::{
    STOCK_DAD_NS,
    containerd::{self, Containerd},
    manifests, monitoring, needs_root,
    prometheus::{Prometheus, free_loopback_port, prometheus_installed},
    stock_dad_settings,
};
use test_support::skip;
use tokio::sync::Notify;

const CNI_DIR: &str = "/usr/lib/cni";

/// Root, and containerd with runc and the CNI plugins installed; otherwise says why not.
fn containerd_tests_allowed() -> bool {
    if !needs_root() {
        return false;
    }
    if let Some(why) = containerd::unavailable(Path::new(CNI_DIR)) {
        skip(why);
        return false;
    }
    true
}

/// Pods started through containerd's CRI with known names (a sandbox, then a container in
/// it) are reported by those names, with their DAD delays and their start's timeline:
/// sandbox created → CNI ADD (with the DAD wait inside it) → container started.
#[test]
fn containerd_pods_are_named_with_their_delays() {
    if !containerd_tests_allowed() {
        return;
    }
    let _sysctls = stock_dad_settings();
    let dir = containerd::test_dir("dtc-");
    let containerd = Arc::new(Containerd::start(dir.path(), Path::new(CNI_DIR)).expect("containerd starts"));
    let pods = [
        ("team-a", "web-0", "6a1c3c1e-0000-4000-8000-000000000001"),
        ("team-a", "web-1", "6a1c3c1e-0000-4000-8000-000000000002"),
        ("team-b", "db-0", "6a1c3c1e-0000-4000-8000-000000000003"),
    ];
    let stop = Arc::new(Notify::new());
    let options = RecordOptions {
        backend: BackendChoice::Auto,
        cri_socket: SocketChoice::Path(containerd.socket()),
        stop: Some(stop.clone()),
        lines: true,
        ..RecordOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (session, sandbox_ids) = runtime.block_on(async {
        let creator = containerd.clone();
        let workload = async move {
            let ids = tokio::task::spawn_blocking(move || {
                pods.iter()
                    .map(|(namespace, name, uid)| creator.run_pod_with_container(namespace, name, uid))
                    .collect::<anyhow::Result<Vec<String>>>()
            })
            .await;
            // Let the last addresses' events arrive before stopping.
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.notify_one();
            ids
        };
        // The recorder is polled first: it attaches before the first sandbox is created.
        let (session, ids) = tokio::join!(dad_trace::tracer::record(options), workload);
        (session.expect("record"), ids.expect("join").expect("sandboxes"))
    });
    print!("{}", dad_trace::report::render_text(&session.clone().fold(), true));
    for ((namespace, name, uid), sandbox_id) in pods.iter().zip(&sandbox_ids) {
        let events: Vec<_> = session
            .events
            .iter()
            .filter(|event| event.pod.as_ref().and_then(|pod| pod.name.as_deref()) == Some(*name))
            .collect();
        // eth0's link-local and its address from the pod range, each once.
        assert_eq!(events.len(), 2, "{namespace}/{name}: {events:#?}");
        for event in events {
            let pod = event.pod.as_ref().expect("pod");
            assert_eq!(pod.namespace.as_deref(), Some(*namespace));
            assert_eq!(pod.uid.as_deref(), Some(*uid));
            assert_eq!(pod.container_id.as_deref(), Some(sandbox_id.as_str()));
            assert_eq!(event.pod_label(), format!("{namespace}/{name}"));
            assert_eq!(event.ifname, "eth0");
            assert_eq!(event.outcome, Outcome::Settled);
            assert!(
                STOCK_DAD_NS.contains(&event.tentative_ns),
                "{name} {}: {} ns, outside the kernel's {STOCK_DAD_NS:?}",
                event.addr,
                event.tentative_ns
            );
            assert!(event.netns_cookie.is_some(), "the kernel's netns cookie is recorded");
        }
    }
    let per_pod = dad_trace::report::summarize(&session.clone().fold()).pods;
    for (namespace, name, _) in pods {
        let label = format!("{namespace}/{name}");
        let pod = per_pod.iter().find(|pod| pod.pod == label).expect("pod in report");
        // A pod's addresses are created a CNI ADD apart at most (link-local at link up, the
        // IPAM address right after): its wait is one address's plus at most that.
        let window = *STOCK_DAD_NS.start()..=STOCK_DAD_NS.end() + 250_000_000;
        assert!(window.contains(&pod.delay_ns), "{label}: {} ns", pod.delay_ns);
    }
    check_pod_starts(&session, &pods.map(|(namespace, name, _)| (namespace, name)));
}

/// Each pod's start in the order the kubelet drives it, with the DAD wait inside its ADD.
fn check_pod_starts(session: &dad_trace::session::Session, pods: &[(&str, &str)]) {
    for (namespace, name) in pods {
        let start = session
            .pods
            .iter()
            .find(|start| start.pod.as_ref().and_then(|pod| pod.name.as_deref()) == Some(*name))
            .unwrap_or_else(|| panic!("{namespace}/{name} not in pods[]: {:#?}", session.pods));
        let timeline = &start.timeline;
        let steps = [
            ("sandbox created", timeline.sandbox_created),
            ("ADD start", timeline.add_start),
            ("first tentative", timeline.first_tentative),
            ("last settled", timeline.last_settled),
            ("ADD end", timeline.add_end),
            ("container started", timeline.container_started),
        ];
        println!("{namespace}/{name}: {steps:?}");
        for pair in steps.windows(2) {
            let ((before, at), (after, then)) = (pair[0], pair[1]);
            let (at, then) = (
                at.unwrap_or_else(|| panic!("{name}: no {before}")),
                then.unwrap_or_else(|| panic!("{name}: no {after}")),
            );
            assert!(at <= then, "{name}: {before} {at} after {after} {then}");
        }
        // The ADD waited for DAD (stock settings), and nearly all of it was that wait.
        let add = start.cni_add_ns.expect("ADD traced");
        let wait = start.dad_wait_ns.expect("DAD wait");
        // Two addresses, created a moment apart (as the per-pod delay above).
        let window = *STOCK_DAD_NS.start()..=STOCK_DAD_NS.end() + 250_000_000;
        assert!(window.contains(&wait), "{name}: DAD wait {wait} ns");
        assert!(
            add >= wait && add - wait < 500_000_000,
            "{name}: ADD {add} ns, DAD wait {wait} ns"
        );
        let pod_start = start.pod_start_ns.expect("the runtime gave both ends");
        assert!(pod_start >= add, "{name}: pod start {pod_start} ns < ADD {add} ns");
    }
}

/// `serve`'s histograms, scraped by a real Prometheus, count exactly the traced addresses,
/// and every query of the dashboard in deploy/ returns data from it.
#[test]
fn serve_metrics_scraped_by_prometheus_match_the_trace() {
    const PODS: usize = 8;
    if !needs_root() {
        return;
    }
    if !prometheus_installed() {
        skip("prometheus is not installed (cargo xtask test installs it)");
        return;
    }
    let _sysctls = stock_dad_settings();
    let listen = free_loopback_port();
    let prometheus = Prometheus::start(listen);
    let stop = Arc::new(Notify::new());
    let options = RecordOptions {
        backend: BackendChoice::Auto,
        cri_socket: SocketChoice::Off,
        serve: Some(dad_trace::output::ServeOptions {
            listen,
            per_pod_labels: false,
        }),
        stop: Some(stop.clone()),
        ..RecordOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Each pod: eth0's link-local and global address, and the host-side veth's link-local.
    let expected = (3 * PODS) as f64;
    let (session, scraped) = runtime.block_on(async {
        let workload = async move {
            tokio::task::spawn_blocking(move || {
                // As on a node, the agent is scraped before pods come: rate() needs a sample of
                // every series from before the pods' addresses count.
                assert_eq!(
                    prometheus.wait_for("sum(up)", 1.0),
                    Some(1.0),
                    "Prometheus never scraped serve"
                );
                std::thread::sleep(Duration::from_secs(1));
                let pods = dad_trace::node::synthetic::create_pods("dtm-", PODS).expect("synthetic pods");
                let scraped = (
                    prometheus.wait_for("sum(dad_trace_tentative_seconds_count)", expected),
                    prometheus.query(r#"sum(dad_trace_tentative_seconds_count{k8s_namespace_name="(host)"})"#),
                    prometheus.query("sum(dad_trace_tentative_seconds_sum)"),
                    prometheus.query("sum(dad_trace_lost_events_total)"),
                    prometheus.query("count(dad_trace_backend_info)"),
                    prometheus.query(r#"sum(dad_trace_addresses_total{outcome="settled"})"#),
                    // A pod is counted once its addresses are done and a sweep passed quietly.
                    prometheus.wait_for("sum(dad_trace_pod_wait_seconds_count)", PODS as f64),
                );
                let dashboard = monitoring::evaluate_dashboard(&prometheus).expect("dashboard");
                drop(pods);
                (scraped, dashboard)
            })
            .await
        };
        let recording = dad_trace::tracer::record(options);
        let (session, scraped) = tokio::join!(recording, async {
            let scraped = workload.await;
            stop.notify_one();
            scraped
        });
        (session.expect("record"), scraped.expect("workload"))
    });
    let ((count, host, sum, lost, info, settled, pods), dashboard) = scraped;
    let traced: Vec<_> = session
        .events
        .iter()
        .filter(|event| event.outcome == Outcome::Settled)
        .collect();
    println!(
        "prometheus: count {count:?} host {host:?} sum {sum:?} lost {lost:?}; traced {}",
        traced.len()
    );
    assert_eq!(count, Some(expected), "Prometheus's count of tentative delays");
    assert_eq!(traced.len(), 3 * PODS, "the session saw the same addresses");
    assert_eq!(host, Some(PODS as f64), "one host-side veth per pod");
    assert_eq!(settled, Some(expected));
    let traced_sum: f64 = traced.iter().map(|event| event.tentative_ns as f64 / 1e9).sum();
    let sum = sum.expect("sum scraped");
    // Each delay is exported as seconds with nanosecond resolution: the sums agree to the
    // microsecond (f64 keeps ~15 digits; 24 delays of ~2 s lose nothing near 1 us).
    assert!(
        (sum - traced_sum).abs() < 1e-6,
        "scraped sum {sum} s vs traced {traced_sum} s"
    );
    assert_eq!(lost, Some(0.0));
    assert_eq!(info, Some(1.0));
    assert_eq!(pods, Some(PODS as f64), "one per-pod wait per pod");
    check_dashboard(&dashboard, &session);
}

/// Every dashboard query answers with data (all of them have some on one node running DAD:
/// the failure and tuned-node panels fall back to an explicit 0), and the wait panels show
/// DAD's wait. Writes what stands in for a screenshot: target/dashboard-preview.md
/// (deploy/dashboard-preview.md too with `DAD_TRACE_UPDATE_PREVIEW=1`).
fn check_dashboard(
    dashboard: &[(
        monitoring::PanelQuery,
        Result<Vec<integration_tests::prometheus::Sample>, String>,
    )],
    session: &dad_trace::session::Session,
) {
    let note = format!(
        "Produced by `serve_metrics_scraped_by_prometheus_match_the_trace` (tests/tests/runtime.rs): one node \
         (kernel {}, {} backend), 8 synthetic pods with kernel-default DAD, scraped every second by Prometheus 2.42.",
        session.kernel_release, session.backend
    );
    let preview = monitoring::render_preview(dashboard, &note);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-preview.md");
    std::fs::write(&target, &preview).expect("write the preview");
    if std::env::var_os("DAD_TRACE_UPDATE_PREVIEW").is_some() {
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dashboard-preview.md"),
            &preview,
        )
        .expect("write deploy/dashboard-preview.md");
    }
    println!("{preview}");
    for (query, result) in dashboard {
        let samples = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: Prometheus refused {}: {e}", query.panel, query.expr));
        assert!(!samples.is_empty(), "{}: no data for {}", query.panel, query.expr);
        assert!(
            samples.iter().all(|sample| sample.value.is_finite()),
            "{}: {} gave {samples:?}",
            query.panel,
            query.expr
        );
        if query.panel.starts_with("Pod DAD wait") {
            // Kernel defaults: every pod waits 1-2 s for DAD.
            assert!(
                samples.iter().all(|sample| (0.5..=3.0).contains(&sample.value)),
                "{}: {samples:?}",
                query.panel
            );
        }
    }
}

/// Capability numbers (include/uapi/linux/capability.h) of the names a manifest may add.
const CAPABILITY_BITS: &[(&str, u32)] = &[
    ("SYS_PTRACE", 19),
    ("SYS_ADMIN", 21),
    ("SYS_RESOURCE", 24),
    ("SYSLOG", 34),
    ("PERFMON", 38),
    ("BPF", 39),
];

fn capability_bit(name: &str) -> u64 {
    let bit = CAPABILITY_BITS
        .iter()
        .find(|(known, _)| *known == name)
        .unwrap_or_else(|| panic!("unknown capability {name}"))
        .1;
    1 << bit
}

fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|line| line.strip_prefix("CapBnd:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// The effective capabilities of the process serving on `port`, found through /proc.
fn agent_capabilities(port: u16) -> Option<u64> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("/dad-trace serve") && cmdline.contains(&format!(":{port}")) {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
            return u64::from_str_radix(hex.trim(), 16).ok();
        }
    }
    None
}

/// The metrics text once `done` says so, or after a minute.
fn poll_metrics(get: &dyn Fn(&str) -> Option<String>, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    loop {
        let metrics = get("/metrics").unwrap_or_default();
        if done(&metrics) || std::time::Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn metrics_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The container's added capabilities that this machine can grant. A runtime cannot grant
/// what it does not hold itself (some CI sandboxes lack `CAP_SYS_RESOURCE`, which only kernels
/// before 5.11 need): the rest are asked for, and the test says so.
fn grantable_capabilities(container: &k8s_openapi::api::core::v1::Container) -> Vec<String> {
    let bounding = own_bounding_set();
    let (grantable, missing): (Vec<String>, Vec<String>) = container
        .security_context
        .as_ref()
        .and_then(|security| security.capabilities.as_ref())
        .and_then(|capabilities| capabilities.add.clone())
        .unwrap_or_default()
        .into_iter()
        .partition(|name| bounding & capability_bit(name) != 0);
    if !missing.is_empty() {
        let test = test_support::test_name();
        println!("NOTE {test}: this machine cannot grant {missing:?}; the agent runs without them");
    }
    grantable
}

/// The image built by `cargo xtask image`, run by a real containerd exactly as the `DaemonSet`
/// says (host network and PID, its capabilities only, read-only mounts), names the pods the
/// runtime creates next to it in its metrics.
#[test]
fn the_daemonset_runs_in_containerd_and_names_pods() {
    if !containerd_tests_allowed() {
        return;
    }
    let Some(archive) = containerd::image_archive() else {
        return;
    };
    let daemonset = manifests::daemonset().expect("daemonset.yaml");
    let spec = daemonset.spec.expect("spec").template.spec.expect("pod spec");
    let container = &spec.containers[0];
    let port = container.ports.iter().flatten().next().expect("port").container_port;
    let port = u16::try_from(port).expect("port");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is taken on this machine: the agent could not listen"
    );
    let _sysctls = stock_dad_settings();
    let dir = containerd::test_dir("dtd-");
    let containerd = Containerd::start(dir.path(), Path::new(CNI_DIR)).expect("containerd starts");
    containerd.import_image(&archive).expect("import the dad-trace image");

    // The node's paths, where this test's runtime keeps them.
    let run_netns = containerd.shared_dir("host-run-netns").expect("shared mount");
    let host_path = |path: &str| -> String {
        match path {
            "/run/netns" => run_netns.display().to_string(),
            "/run/containerd/containerd.sock" => containerd.socket().display().to_string(),
            other => other.to_string(),
        }
    };
    let grantable = grantable_capabilities(container);
    let config = containerd::container_config(&spec, &host_path, &[("NODE_IP", "127.0.0.1")], &grantable)
        .expect("the DaemonSet's container as the kubelet passes it");
    let log = containerd
        .run_host_pod(
            "dad-trace",
            "dad-trace-agent",
            "6a1c3c1e-0000-4000-8000-0000000000aa",
            config,
        )
        .expect("agent container starts");
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| -> Option<String> {
        ureq::get(format!("{base}{path}"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get("/healthz").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never became ready:\n{}",
            agent_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Exactly the DaemonSet's capabilities, nothing more.
    let expected: u64 = grantable.iter().map(|name| capability_bit(name)).sum();
    assert_eq!(agent_capabilities(port), Some(expected), "agent's CapEff");

    let pods = [
        ("team-c", "api-0", "6a1c3c1e-0000-4000-8000-0000000000c0"),
        ("team-c", "api-1", "6a1c3c1e-0000-4000-8000-0000000000c1"),
    ];
    for (namespace, name, uid) in pods {
        containerd.run_pod(namespace, name, uid).expect("pod sandbox");
    }
    // eth0's link-local and global address per pod, labelled with the pod's namespace.
    let wanted = (2 * pods.len()) as f64;
    let count = r#"dad_trace_tentative_seconds_count{k8s_namespace_name="team-c"}"#;
    let metrics = poll_metrics(&get, |metrics| metrics_value(metrics, count) >= wanted);
    println!("{}", agent_log());
    assert_eq!(metrics_value(&metrics, count), wanted, "{metrics}");
    let slow = metrics_value(
        &metrics,
        r#"dad_trace_tentative_seconds_bucket{le="0.25",k8s_namespace_name="team-c"}"#,
    );
    assert_eq!(
        slow, 0.0,
        "with DAD on, no pod address settles within 250 ms:\n{metrics}"
    );
    assert_eq!(metrics_value(&metrics, "dad_trace_lost_events_total"), 0.0);
}
