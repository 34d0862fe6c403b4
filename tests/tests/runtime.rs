//! Pod identity from a real container runtime, and the node agent scraped by a real
//! Prometheus. Root only; skips with a reason otherwise. Run with `--test-threads=1`.
use std::{path::Path, sync::Arc, time::Duration};

use dad_trace::{
    cri::SocketChoice,
    record::{BackendChoice, RecordOptions},
    sysctl::SysctlGuard,
    track::Outcome,
};
use integration_tests::{
    containerd::{self, Containerd},
    kernel_tests_allowed,
};
use tokio::sync::Notify;

const CNI_DIR: &str = "/usr/lib/cni";

/// DAD on in new namespaces, as on a stock node.
fn stock_dad_settings() -> SysctlGuard {
    let mut sysctls = SysctlGuard::default();
    sysctls.set("net.core.devconf_inherit_init_net", "0").expect("sysctl");
    sysctls.set("net.ipv6.conf.default.accept_dad", "1").expect("sysctl");
    sysctls.set("net.ipv6.conf.default.dad_transmits", "1").expect("sysctl");
    sysctls
}

/// Pod sandboxes created through containerd's CRI with known names are reported by those
/// names, with their DAD delays.
#[test]
fn containerd_pods_are_named_with_their_delays() {
    const TEST: &str = "containerd_pods_are_named_with_their_delays";
    if !kernel_tests_allowed(TEST) {
        return;
    }
    if let Some(why) = containerd::unavailable(Path::new(CNI_DIR)) {
        println!("SKIP {TEST}: {why}");
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
            let seconds = event.tentative_ns as f64 / 1e9;
            assert!((0.2..=4.0).contains(&seconds), "{name} {}: {seconds} s", event.addr);
            assert!(event.netns_cookie.is_some(), "the kernel's netns cookie is recorded");
        }
    }
    let per_pod = dad_trace::report::summarize(&session).pods;
    for (namespace, name, _) in pods {
        let label = format!("{namespace}/{name}");
        let pod = per_pod.iter().find(|pod| pod.pod == label).expect("pod in report");
        assert!(pod.delay_ns > 200_000_000, "{label}: {}", pod.delay_ns);
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
        println!("SKIP {TEST}: prometheus is not installed (apt-get install prometheus)");
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
                let pods = dad_trace::synthetic::create_pods("dtm-", PODS).expect("synthetic pods");
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
    assert!(
        (sum - traced_sum).abs() < 1e-3,
        "scraped sum {sum} s vs traced {traced_sum} s"
    );
    assert_eq!(lost, Some(0.0));
    assert_eq!(info, Some(1.0));
}
