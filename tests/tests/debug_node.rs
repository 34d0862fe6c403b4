//! `kubectl debug node` for real: the image built by `cargo xtask image`, run by a real
//! containerd in the pod kubectl's node debugger makes (`--profile=sysadmin`: the node's root
//! at /host, host PID, network and IPC, privileged), with `--host-root /host`. It must find
//! the node's runtime socket, namespaces and sysctls under /host, and name the pods the
//! runtime starts. Root only; skips with a reason otherwise.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use dad_trace::{node::netns::NamedNetns, session::Session};
use integration_tests::{STOCK_DAD_NS, containerd, containerd::Containerd, manifests, needs_root, stock_dad_settings};
use test_support::skip;

const CNI_DIR: &str = "/usr/lib/cni";
/// The manifests' image, as `cargo xtask image` names it.
const IMAGE: &str = "dad-trace:latest";

/// The image archive, when root, containerd and the image are all here; otherwise says why not.
fn image_archive() -> Option<PathBuf> {
    if !needs_root() {
        return None;
    }
    if let Some(why) = containerd::unavailable(Path::new(CNI_DIR)) {
        skip(why);
        return None;
    }
    containerd::image_archive()
}

/// Runs `command` in a node debugger pod; returns its log file.
fn debug_pod(containerd: &Containerd, name: &str, uid: &str, command: &[&str]) -> PathBuf {
    let spec = manifests::debug_node_pod(IMAGE, command).expect("debugger pod");
    // kubectl's node debugger mounts the node's / itself: no path is mapped.
    let config = containerd::container_config(&spec, &ToString::to_string, &[], &[]).expect("container config");
    containerd
        .run_host_pod("default", name, uid, config)
        .expect("debugger pod starts")
}

/// What the container wrote, without the CRI log's `TIME STREAM TAG ` prefix.
fn container_output(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3))
        .fold(String::new(), |text, line| text + line + "\n")
}

fn wait_for(what: &str, log: &Path, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; the container said:\n{}",
            container_output(log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `record --host-root /host` in the debugger pod finds the runtime's socket under /host
/// (the image has no /run of its own) and names the pods the runtime starts, with their
/// delays; `doctor --host-root /host` reads the node's named namespaces under /host.
#[test]
fn a_node_debug_pod_with_host_root_names_the_runtime_pods() {
    let Some(archive) = image_archive() else {
        return;
    };
    let _sysctls = stock_dad_settings();
    let dir = containerd::test_dir("dtn-");
    let containerd = Containerd::start(dir.path(), Path::new(CNI_DIR)).expect("containerd starts");
    containerd.import_image(&archive).expect("import the dad-trace image");

    // The node's paths as the node names them: /host is prefixed by dad-trace, not by us,
    // except for the output file, which is the container's own path.
    let socket = containerd.socket().display().to_string();
    let session_path = dir.path().join("session.json");
    let output = format!("/host{}", session_path.display());
    let record = [
        "/dad-trace",
        "record",
        "--host-root",
        "/host",
        "--cri-socket",
        &socket,
        "--duration",
        "20",
        "-o",
        &output,
    ];
    let log = debug_pod(
        &containerd,
        "node-debugger-record",
        "6a1c3c1e-0000-4000-8000-0000000000d0",
        &record,
    );
    wait_for("Tracing line", &log, Duration::from_secs(30), || {
        container_output(&log).contains("Tracing")
    });
    let pods = [
        ("team-d", "dbg-0", "6a1c3c1e-0000-4000-8000-0000000000d1"),
        ("team-d", "dbg-1", "6a1c3c1e-0000-4000-8000-0000000000d2"),
    ];
    for (namespace, name, uid) in pods {
        containerd.run_pod(namespace, name, uid).expect("pod sandbox");
    }
    wait_for("session file", &log, Duration::from_mins(1), || session_path.exists());
    println!("{}", container_output(&log));
    let session = Session::load(&session_path).expect("the session the debugger pod wrote");
    for (namespace, name, uid) in pods {
        let events: Vec<_> = session
            .events
            .iter()
            .filter(|event| event.pod_label() == format!("{namespace}/{name}"))
            .collect();
        assert_eq!(events.len(), 2, "{namespace}/{name}: {events:#?}");
        for event in events {
            let pod = event.pod.as_ref().expect("pod");
            assert_eq!(pod.uid.as_deref(), Some(uid), "named through the runtime: {pod:?}");
            assert!(
                STOCK_DAD_NS.contains(&event.tentative_ns),
                "{name}: {} ns outside {STOCK_DAD_NS:?}",
                event.tentative_ns
            );
        }
    }

    // A namespace named the way `ip netns add` names one, made before the debugger starts
    // (kubectl's /host mount is private: it holds the mounts of the moment it was made).
    let doctor_netns = NamedNetns::create(Path::new("/run/netns"), "dtn-doctor").expect("named netns");
    let doctor = ["/dad-trace", "doctor", "--host-root", "/host", "--format", "json"];
    let log = debug_pod(
        &containerd,
        "node-debugger-doctor",
        "6a1c3c1e-0000-4000-8000-0000000000d3",
        &doctor,
    );
    wait_for("doctor report", &log, Duration::from_secs(30), || {
        serde_json::from_str::<serde_json::Value>(&container_output(&log)).is_ok()
    });
    let report: serde_json::Value = serde_json::from_str(&container_output(&log)).expect("doctor JSON");
    let names: Vec<&str> = report[0]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|namespace| namespace["name"].as_str())
        .collect();
    assert!(names.contains(&"dtn-doctor"), "doctor read /host/run/netns: {names:?}");
    assert_eq!(
        report[0]["host"]["net.ipv6.conf.default.accept_dad"].as_str(),
        Some("1"),
        "doctor read the node's sysctls: {}",
        report[0]["host"]
    );
    drop(doctor_netns);
}
