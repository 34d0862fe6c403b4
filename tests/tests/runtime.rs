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
