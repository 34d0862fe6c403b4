//! A real containerd with its OTLP tracing on and dad-trace sending to the same receiver: each
//! pod sandbox's span from the runtime and dad-trace's `cni.add` meet there, by the sandbox id,
//! one inside the other in time. containerd is Debian sid's 2.x (1.6 has no OTLP export of its
//! CRI calls), unpacked in the cache by `cargo xtask setup --test`. Root only; skips with a
//! reason otherwise. Run with `--test-threads=1`.
use std::{
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use dad_trace::{
    kernel::BackendChoice,
    output::otlp::{OtlpFlags, config::resolve},
    record::enrich::cri::SocketChoice,
    session::Session,
    tracer::RecordOptions,
};
use integration_tests::{
    containerd::{self, Containerd, Release, sid},
    needs_root, stock_dad_settings,
};
use otlp_receiver::{Answer, Received, Receiver, attribute};
use test_support::skip;
use tokio::sync::Notify;

const CNI_DIR: &str = "/usr/lib/cni";
/// The runtime's span of a pod sandbox's creation (otelgrpc names server spans by method).
const RUN_POD_SANDBOX: &str = "runtime.v1.RuntimeService/RunPodSandbox";
/// Two clocks are read (the runtime's, and the kernel's for the plugin's fork and exit): each
/// edge of `cni.add` may stick out of the sandbox's span by this much.
const SKEW_NS: u64 = 5_000_000;

/// For each pod sandbox: exactly one `RunPodSandbox` span of the runtime with its
/// `sandbox.id`, exactly one `cni.add` of dad-trace per plugin with `container.id` = that id,
/// inside it in time, and the pod's addresses (`ipv6.dad`) under the pod network's `cni.add`.
/// The runtime passes plugins no `TRACEPARENT`, so `cni.add` has no parent: the session says
/// so too, and the test fails the day it does (then the parentage is to be asserted).
#[test]
fn containerd_s_sandbox_span_holds_dad_trace_s_cni_add() {
    if !needs_root() {
        return;
    }
    let root = match sid::unpacked(Path::new(CNI_DIR)) {
        Ok(root) => root,
        Err(why) => {
            skip(why);
            return;
        }
    };
    let started = Instant::now();
    let version = sid::version(&root).expect("containerd --version");
    let _sysctls = stock_dad_settings();
    let receiver = Receiver::start("127.0.0.1:0".parse().expect("literal"), Answer::Accept).expect("receiver");
    let dir = containerd::test_dir("dto2-");
    let release = Release::Sid {
        root,
        otlp_endpoint: receiver.endpoint(),
    };
    let containerd =
        Arc::new(Containerd::start_release(dir.path(), Path::new(CNI_DIR), &release).expect("containerd starts"));
    let flags = OtlpFlags {
        endpoint: Some(receiver.endpoint()),
        ca_file: None,
    };
    let stop = Arc::new(Notify::new());
    let options = RecordOptions {
        backend: BackendChoice::Auto,
        cri_socket: SocketChoice::Path(containerd.socket()),
        stop: Some(stop.clone()),
        otlp: resolve(&flags, &|_| None).expect("OTLP config"),
        ..RecordOptions::default()
    };
    let pods = [
        ("team-o", "traced-0", "6a1c3c1e-0000-4000-8000-0000000000d0"),
        ("team-o", "traced-1", "6a1c3c1e-0000-4000-8000-0000000000d1"),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (session, ids) = runtime.block_on(async {
        let creator = Arc::clone(&containerd);
        let workload = async move {
            let ids = tokio::task::spawn_blocking(move || {
                pods.iter()
                    .map(|(namespace, name, uid)| creator.run_pod(namespace, name, uid))
                    .collect::<anyhow::Result<Vec<String>>>()
            })
            .await;
            // The last addresses' events arrive, and the ADDs' exits, before stopping.
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.notify_one();
            ids
        };
        // The recorder is polled first: it attaches before the first sandbox is created.
        let (session, ids) = tokio::join!(dad_trace::tracer::record(options), workload);
        (session.expect("record"), ids.expect("join").expect("sandboxes"))
    });
    // containerd sends a batch every EXPORT_DELAY; dad-trace sent its last ones as it stopped.
    let spans = receiver.wait_for(Duration::from_secs(15), |spans| {
        ids.iter()
            .all(|id| !sandbox_spans(spans, id).is_empty() && !cni_adds(spans, id).is_empty())
    });
    // Stopped (its pods removed, then SIGTERM) only after its export delay has passed again.
    drop(containerd);
    println!("{version}; {} spans received", spans.len());
    for id in &ids {
        check_sandbox(&spans, &session, id);
    }
    check_no_trace_parent(&session, &ids, &version);
    println!("test took {:.1} s", started.elapsed().as_secs_f64());
}

fn sandbox_spans<'a>(spans: &'a [Received], id: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|r| {
            r.span.name == RUN_POD_SANDBOX && attribute(&r.span.attributes, "sandbox.id").as_deref() == Some(id)
        })
        .collect()
}

fn cni_adds<'a>(spans: &'a [Received], id: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|r| r.span.name == "cni.add" && attribute(&r.span.attributes, "container.id").as_deref() == Some(id))
        .collect()
}

fn ms(received: &Received) -> f64 {
    received
        .span
        .end_time_unix_nano
        .saturating_sub(received.span.start_time_unix_nano) as f64
        / 1e6
}

/// One sandbox: its span, its ADDs inside it, and the addresses under the pod network's ADD.
fn check_sandbox(spans: &[Received], session: &Session, id: &str) {
    let sandboxes = sandbox_spans(spans, id);
    let [sandbox] = sandboxes.as_slice() else {
        panic!("{id}: {} {RUN_POD_SANDBOX} spans: {sandboxes:#?}", sandboxes.len())
    };
    assert_eq!(
        attribute(&sandbox.resource.attributes, "service.name").as_deref(),
        Some("containerd")
    );
    let adds = cni_adds(spans, id);
    let mut plugins: Vec<String> = adds
        .iter()
        .filter_map(|add| attribute(&add.span.attributes, "cni.plugin"))
        .collect();
    plugins.sort();
    // CRI sets up `lo` (loopback) and the pod network (ptp): one ADD each.
    assert_eq!(plugins, ["loopback", "ptp"], "{id}: {adds:#?}");
    let (outer_start, outer_end) = (sandbox.span.start_time_unix_nano, sandbox.span.end_time_unix_nano);
    let mut summary = format!("sandbox {}: {RUN_POD_SANDBOX} {:.1} ms", &id[..12], ms(sandbox));
    for add in &adds {
        let plugin = attribute(&add.span.attributes, "cni.plugin").unwrap_or_default();
        let (start, end) = (add.span.start_time_unix_nano, add.span.end_time_unix_nano);
        assert!(
            start + SKEW_NS >= outer_start && end <= outer_end + SKEW_NS,
            "{id}: cni.add ({plugin}) [{start}, {end}] outside {RUN_POD_SANDBOX} [{outer_start}, {outer_end}]"
        );
        assert!(
            add.span.parent_span_id.is_empty(),
            "{id}: cni.add ({plugin}) has a parent, yet the session saw no TRACEPARENT"
        );
        assert_ne!(add.span.trace_id, sandbox.span.trace_id, "{id}: a trace of its own");
        let offset = start.saturating_sub(outer_start) as f64 / 1e6;
        let _ = write!(summary, ", cni.add ({plugin}) {:.1} ms at +{offset:.1} ms", ms(add));
    }
    let ptp = adds
        .iter()
        .find(|add| attribute(&add.span.attributes, "cni.plugin").as_deref() == Some("ptp"))
        .expect("ptp's ADD");
    let children: Vec<&Received> = spans
        .iter()
        .filter(|r| r.span.name == "ipv6.dad" && r.span.parent_span_id == ptp.span.span_id)
        .collect();
    let events = session
        .events
        .iter()
        .filter(|event| event.pod.as_ref().and_then(|pod| pod.container_id.as_deref()) == Some(id))
        .count();
    // eth0's link-local and its address from the pod range.
    assert_eq!(children.len(), 2, "{id}: ipv6.dad under ptp's cni.add: {children:#?}");
    assert_eq!(
        children.len(),
        events,
        "{id}: as many as the session's addresses of the pod"
    );
    for child in &children {
        assert_eq!(child.span.trace_id, ptp.span.trace_id);
        let address = attribute(&child.span.attributes, "ipv6.address").unwrap_or_default();
        let _ = write!(summary, ", ipv6.dad {address} {:.1} ms", ms(child));
    }
    println!("{summary}");
}

/// The runtime passed its plugins no trace context; the day it does, `cni.add` joins the
/// sandbox's trace and this test is to assert that parentage instead.
fn check_no_trace_parent(session: &Session, ids: &[String], version: &str) {
    let calls: Vec<_> = session
        .pods
        .iter()
        .flat_map(|pod| &pod.cni_calls)
        .filter(|call| call.container_id.as_ref().is_some_and(|id| ids.contains(id)))
        .collect();
    assert!(
        calls.iter().filter(|call| call.is("ADD")).count() >= ids.len(),
        "the sandboxes' ADDs in the session: {calls:#?}"
    );
    for call in &calls {
        assert_eq!(
            call.trace_parent, None,
            "{version} now passes TRACEPARENT to {} ({:?}): assert that cni.add is a child of {RUN_POD_SANDBOX}",
            call.plugin, call.command
        );
    }
    println!(
        "NOTE: {version} passes CNI plugins no TRACEPARENT ({} calls seen): cni.add is a root span, joined to \
         {RUN_POD_SANDBOX} by the sandbox id and time only",
        calls.len()
    );
}
