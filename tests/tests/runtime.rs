//! Pod identity from a real container runtime, and the node agent scraped by a real
//! Prometheus. Root only; skips with a reason otherwise. Run with `--test-threads=1`.
#![allow(clippy::float_cmp, reason = "metric values compared are small counts, exact in f64")]
use std::{path::Path, sync::Arc, time::Duration};

use dad_trace::{
    kernel::BackendChoice,
    record::{RecordOptions, enrich::cri::SocketChoice},
    session::Outcome,
};
use integration_tests::{
    STOCK_DAD_NS,
    containerd::{self, Containerd},
    kernel_tests_allowed, manifests, skip, stock_dad_settings,
};
use tokio::sync::Notify;

const CNI_DIR: &str = "/usr/lib/cni";

/// Root, and containerd with runc and the CNI plugins installed; otherwise says why not.
fn containerd_tests_allowed(test: &str) -> bool {
    if !kernel_tests_allowed(test) {
        return false;
    }
    if let Some(why) = containerd::unavailable(Path::new(CNI_DIR)) {
        skip(test, &why);
        return false;
    }
    true
}

/// Pod sandboxes created through containerd's CRI with known names are reported by those
/// names, with their DAD delays.
#[test]
fn containerd_pods_are_named_with_their_delays() {
    const TEST: &str = "containerd_pods_are_named_with_their_delays";
    if !containerd_tests_allowed(TEST) {
        return;
    }
    let _sysctls = stock_dad_settings();
    let dir = tempfile::Builder::new()
        .prefix("dtc-")
        .tempdir_in("/tmp")
        .expect("tempdir");
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
                    .map(|(namespace, name, uid)| creator.run_pod(namespace, name, uid))
                    .collect::<anyhow::Result<Vec<String>>>()
            })
            .await;
            // Let the last addresses' events arrive before stopping.
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.notify_one();
            ids
        };
        // The recorder is polled first: it attaches before the first sandbox is created.
        let (session, ids) = tokio::join!(dad_trace::record::record(options), workload);
        (session.expect("record"), ids.expect("join").expect("sandboxes"))
    });
    print!("{}", dad_trace::report::render_text(&session, true));
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
    let per_pod = dad_trace::report::summarize(&session).pods;
    for (namespace, name, _) in pods {
        let label = format!("{namespace}/{name}");
        let pod = per_pod.iter().find(|pod| pod.pod == label).expect("pod in report");
        // A pod's addresses are created a CNI ADD apart at most (link-local at link up, the
        // IPAM address right after): its wait is one address's plus at most that.
        let window = *STOCK_DAD_NS.start()..=STOCK_DAD_NS.end() + 250_000_000;
        assert!(window.contains(&pod.delay_ns), "{label}: {} ns", pod.delay_ns);
    }
}

/// A Prometheus server started for one test, scraping `target` every second.
struct Prometheus {
    process: std::process::Child,
    address: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

fn free_loopback_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: dad-trace\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let address = free_loopback_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let process = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self {
            process,
            address,
            _dir: dir,
        }
    }

    /// The value of an instant query that returns one sample, if it does yet.
    fn query(&self, query: &str) -> Option<f64> {
        let body = ureq::get(format!("http://{}/api/v1/query", self.address))
            .query("query", query)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let results = json.pointer("/data/result")?.as_array()?;
        if results.len() != 1 {
            return None;
        }
        results[0].pointer("/value/1")?.as_str()?.parse().ok()
    }

    /// Polls until the query returns `expected` (or 60 s pass); returns the last value.
    fn wait_for(&self, query: &str, expected: f64) -> Option<f64> {
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        loop {
            let value = self.query(query);
            if value.is_some_and(|v| (v - expected).abs() < 1e-9) || std::time::Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn prometheus_installed() -> bool {
    std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `serve`'s histograms, scraped by a real Prometheus, count exactly the traced addresses.
#[test]
fn serve_metrics_scraped_by_prometheus_match_the_trace() {
    const TEST: &str = "serve_metrics_scraped_by_prometheus_match_the_trace";
    const PODS: usize = 8;
    if !kernel_tests_allowed(TEST) {
        return;
    }
    if !prometheus_installed() {
        skip(TEST, "prometheus is not installed (cargo xtask test installs it)");
        return;
    }
    let _sysctls = stock_dad_settings();
    let listen = free_loopback_port();
    let prometheus = Prometheus::start(listen);
    let stop = Arc::new(Notify::new());
    let options = RecordOptions {
        backend: BackendChoice::Auto,
        cri_socket: SocketChoice::Off,
        serve: Some(dad_trace::record::ServeOptions {
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
                let pods = dad_trace::node::synthetic::create_pods("dtm-", PODS).expect("synthetic pods");
                let scraped = (
                    prometheus.wait_for("sum(dad_trace_tentative_seconds_count)", expected),
                    prometheus.query(r#"sum(dad_trace_tentative_seconds_count{namespace="(host)"})"#),
                    prometheus.query("sum(dad_trace_tentative_seconds_sum)"),
                    prometheus.query("sum(dad_trace_lost_events_total)"),
                    prometheus.query("count(dad_trace_backend_info)"),
                    prometheus.query(r#"sum(dad_trace_addresses_total{outcome="settled"})"#),
                );
                drop(pods);
                scraped
            })
            .await
        };
        let recording = dad_trace::record::record(options);
        let (session, scraped) = tokio::join!(recording, async {
            let scraped = workload.await;
            stop.notify_one();
            scraped
        });
        (session.expect("record"), scraped.expect("workload"))
    });
    let (count, host, sum, lost, info, settled) = scraped;
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
fn grantable_capabilities(container: &k8s_openapi::api::core::v1::Container, test: &str) -> Vec<String> {
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
        println!("NOTE {test}: this machine cannot grant {missing:?}; the agent runs without them");
    }
    grantable
}

/// The image built by `cargo xtask image`, run by a real containerd exactly as the `DaemonSet`
/// says (host network and PID, its capabilities only, read-only mounts), names the pods the
/// runtime creates next to it in its metrics.
#[test]
fn the_daemonset_runs_in_containerd_and_names_pods() {
    const TEST: &str = "the_daemonset_runs_in_containerd_and_names_pods";
    if !containerd_tests_allowed(TEST) {
        return;
    }
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dad-trace-image.tar");
    if !archive.exists() {
        skip(
            TEST,
            &format!(
                "no image at {} (cargo xtask image builds it; cargo xtask test does first)",
                archive.display()
            ),
        );
        return;
    }
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
    let dir = tempfile::Builder::new()
        .prefix("dtd-")
        .tempdir_in("/tmp")
        .expect("tempdir");
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
    let grantable = grantable_capabilities(container, TEST);
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
    let count = r#"dad_trace_tentative_seconds_count{namespace="team-c"}"#;
    let metrics = poll_metrics(&get, |metrics| metrics_value(metrics, count) >= wanted);
    println!("{}", agent_log());
    assert_eq!(metrics_value(&metrics, count), wanted, "{metrics}");
    let slow = metrics_value(
        &metrics,
        r#"dad_trace_tentative_seconds_bucket{le="0.25",namespace="team-c"}"#,
    );
    assert_eq!(
        slow, 0.0,
        "with DAD on, no pod address settles within 250 ms:\n{metrics}"
    );
    assert_eq!(metrics_value(&metrics, "dad_trace_lost_events_total"), 0.0);
}
