//! Pod start as OpenTelemetry traces, received by a real OTLP/HTTP receiver on loopback that
//! decodes with the official protobuf definitions: a CNI ADD run by a real plugin with a
//! runtime's `TRACEPARENT` lands in that trace with its addresses under it, timed as the
//! session says; a collector that is down, busy or hung costs counted spans, never the
//! session or the exit. Needs root (it traces the kernel); skips with a reason otherwise.
use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use dad_trace::{
    node::sysctl::SysctlGuard,
    scenario::plugin::Plugin,
    session::{Session, trace_context::hex_string},
};
use nix::sys::signal::Signal;
use otlp_receiver::{Answer, Received, Receiver, attribute, hex};

mod common;

use common::{dad_trace, needs_root};
use test_support::{Running, skip, spawn_record};

const CNI_DIR: &str = "/usr/lib/cni";
const LOOPBACK: &str = "127.0.0.1:0";

fn listen() -> SocketAddr {
    LOOPBACK.parse().expect("literal")
}

/// A namespace for one pod, deleted on drop.
struct PodNetns(String);

impl PodNetns {
    fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let status = Command::new("ip").args(["netns", "add", name]).status().expect("ip");
        assert!(status.success(), "ip netns add {name}");
        Self(name.into())
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Runs ptp as a runtime would for pod `netns`, with `env` added; panics when it fails.
fn ptp(command: &str, netns: &str, ipam_dir: &Path, env: &[(&str, &str)]) {
    let config = Plugin::Ptp.config(ipam_dir).expect("ptp has a config");
    let mut child = Command::new(Path::new(CNI_DIR).join("ptp"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("sandbox-{netns}"))
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_DIR)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME={netns};K8S_POD_UID=uid-{netns}"),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ptp");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), config.as_bytes()).expect("config");
    let output = child.wait_with_output().expect("ptp");
    assert!(
        output.status.success(),
        "ptp {command}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn ptp_installed() -> bool {
    if Plugin::Ptp.available(Path::new(CNI_DIR)) {
        return true;
    }
    skip(format!(
        "ptp and host-local are not in {CNI_DIR} (apt-get install containernetworking-plugins)"
    ));
    false
}

fn spans_named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|r| r.span.name == name).collect()
}

fn duration_ns(received: &Received) -> u64 {
    received.span.end_time_unix_nano - received.span.start_time_unix_nano
}

/// The runtime's trace (`TRACEPARENT`) is the parent of `cni.add`, whose children are the
/// pod's addresses; a malformed one starts a trace of our own. Durations agree with the
/// session's to the nanosecond (the spans are made from the same numbers), well within 1 ms.
#[test]
fn a_cni_add_joins_the_runtime_s_trace_with_its_addresses_under_it() {
    if !needs_root() || !ptp_installed() {
        return;
    }
    let mut sysctls = SysctlGuard::default();
    sysctls.set("net.core.devconf_inherit_init_net", "0").expect("sysctl");
    let receiver = Receiver::start(listen(), Answer::Accept).expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let session_path = dir.path().join("session.json");
    let recording = spawn_record(
        dad_trace()
            .args([
                "record",
                "--backend",
                "tracepoint",
                "--quiet",
                "--cri-socket",
                "none",
                "--netns",
                "dto-*",
            ])
            .args(["--otlp-endpoint", &receiver.endpoint(), "-o"])
            .arg(&session_path),
    );
    let (joined, fresh) = (PodNetns::new("dto-joined"), PodNetns::new("dto-fresh"));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    ptp(
        "ADD",
        &joined.0,
        dir.path(),
        &[("TRACEPARENT", &traceparent), ("TRACESTATE", "rt=1")],
    );
    // All-zero trace id: invalid, so not trusted.
    ptp(
        "ADD",
        &fresh.0,
        dir.path(),
        &[("TRACEPARENT", &format!("00-{}-{parent_id}-01", "0".repeat(32)))],
    );
    ptp("DEL", &joined.0, dir.path(), &[("TRACEPARENT", &traceparent)]);
    ptp("DEL", &fresh.0, dir.path(), &[]);
    let output = recording.stop(Signal::SIGINT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let session = Session::load(&session_path).expect("session");
    let spans = receiver.wait_for(Duration::from_secs(10), |spans| {
        spans_named(spans, "cni.del").len() >= 2
    });
    println!("{}", otlp_receiver::render_trees(&spans));
    assert!(stderr.contains(&format!("Spans: {} sent to", spans.len())), "{stderr}");

    let adds = spans_named(&spans, "cni.add");
    assert_eq!(adds.len(), 2, "one cni.add per ADD");
    let in_trace: Vec<_> = adds.iter().filter(|r| hex(&r.span.trace_id) == trace_id).collect();
    let [add] = in_trace.as_slice() else {
        panic!("exactly one cni.add in the runtime's trace: {adds:?}")
    };
    assert_eq!(hex(&add.span.parent_span_id), parent_id);
    assert_eq!(add.span.trace_state, "rt=1");
    let call = session
        .pods
        .iter()
        .flat_map(|pod| &pod.cni_calls)
        .find(|c| c.is("ADD") && c.netns.as_deref() == Some("/run/netns/dto-joined"))
        .expect("the ADD in the session");
    assert_eq!(
        call.trace_parent.map(|p| hex_string(&p.trace_id)).as_deref(),
        Some(trace_id)
    );
    assert_eq!(duration_ns(add), call.duration_ns.expect("finished"));
    for (key, expected) in [
        ("container.id", "sandbox-dto-joined"),
        ("k8s.pod.name", "dto-joined"),
        ("k8s.namespace.name", "team-a"),
        ("k8s.pod.uid", "uid-dto-joined"),
        ("network.interface.name", "eth0"),
        ("cni.plugin", "ptp"),
        ("process.exit.code", "0"),
    ] {
        assert_eq!(attribute(&add.span.attributes, key).as_deref(), Some(expected), "{key}");
    }
    check_children(&session, &spans, add);
    // The malformed context: a trace of our own, no parent.
    let own = adds
        .iter()
        .find(|r| hex(&r.span.trace_id) != trace_id)
        .expect("the other ADD");
    assert!(own.span.parent_span_id.is_empty());
    let dels = spans_named(&spans, "cni.del");
    assert!(
        dels.iter()
            .any(|r| hex(&r.span.trace_id) == trace_id && hex(&r.span.parent_span_id) == parent_id)
    );
    check_resource(&add.resource.attributes);
}

/// Every address the session has of the pod is a child of `add`, timed as the session says.
fn check_children(session: &Session, spans: &[Received], add: &Received) {
    let pod_events: Vec<_> = session
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref() == Some("dto-joined"))
        .collect();
    assert_eq!(pod_events.len(), 2, "eth0's link-local and its pod address");
    let children: Vec<_> = spans_named(spans, "ipv6.dad")
        .into_iter()
        .filter(|r| r.span.parent_span_id == add.span.span_id)
        .collect();
    assert_eq!(children.len(), pod_events.len());
    for event in pod_events {
        let child = children
            .iter()
            .find(|r| attribute(&r.span.attributes, "ipv6.address") == Some(event.addr.to_string()))
            .unwrap_or_else(|| panic!("{} not under cni.add", event.addr));
        assert_eq!(child.span.trace_id, add.span.trace_id);
        assert!(duration_ns(child).abs_diff(event.tentative_ns) < 1_000_000, "{event:?}");
        assert!(child.span.start_time_unix_nano >= add.span.start_time_unix_nano);
    }
}

/// The resource says who sent the spans.
fn check_resource(resource: &[otlp_receiver::KeyValue]) {
    assert_eq!(attribute(resource, "service.name").as_deref(), Some("dad-trace"));
    assert_eq!(
        attribute(resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    for key in ["host.name", "host.arch", "k8s.node.name"] {
        assert!(attribute(resource, key).is_some_and(|v| !v.is_empty()), "{key}");
    }
}

/// One recording of two synthetic pods sending to `endpoint` (with `env`): its session and
/// standard error.
fn record_against(endpoint: &str, env: &[(&str, &str)], prefix: &str) -> (Session, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let started = Instant::now();
    let output = Running::spawn(
        dad_trace()
            .args(["record", "--backend", "tracepoint", "--quiet", "--synthetic-pods", "2"])
            .args(["--synthetic-prefix", prefix, "-o"])
            .arg(&path)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .envs(env.iter().copied()),
    )
    .finish();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    // The pods settle within about 2 s; the exporter may add its deadline, not more.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}: {stderr}",
        started.elapsed()
    );
    (Session::load(&path).expect("the session is complete"), stderr)
}

/// `(sent, dropped)` from the end line.
fn span_counts(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("Spans: "))
        .unwrap_or_else(|| panic!("no Spans line: {stderr}"));
    let numbers: Vec<usize> = line
        .split(' ')
        .filter_map(|word| word.trim_end_matches([',', '.']).parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Down, busy (503 then 429, with and without `Retry-After`), hung: every span is counted as
/// sent or dropped, the session is whole, the recorder exits on time.
#[test]
fn a_collector_down_busy_or_hung_costs_counted_spans_not_the_session() {
    if !needs_root() {
        return;
    }
    // Down: a port nobody listens on (bound, then freed).
    let free = std::net::TcpListener::bind(LOOPBACK)
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (session, stderr) = record_against(&format!("http://{free}"), &[], "dto-d");
    let synthetic = session
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref().is_some_and(|n| n.starts_with("dto-d")) || e.ifname.starts_with("dto-d"))
        .count();
    assert_eq!(synthetic, 6, "both pods' addresses and their host veths");
    let (sent, dropped) = span_counts(&stderr);
    assert_eq!((sent, dropped), (0, session.events.len()), "{stderr}");
    assert!(stderr.contains("dropped (last: "), "{stderr}");

    for (answer, prefix) in [
        (Answer::Status(503, Some(1)), "dto-b"),
        (Answer::Status(429, None), "dto-r"),
    ] {
        let receiver = Receiver::start(listen(), answer).expect("receiver");
        let (session, stderr) = record_against(&receiver.endpoint(), &[], prefix);
        let (sent, dropped) = span_counts(&stderr);
        assert_eq!((sent, dropped), (0, session.events.len()), "{answer:?}: {stderr}");
        assert!(
            receiver.requests() >= 2,
            "{answer:?}: retried ({} requests)",
            receiver.requests()
        );
        assert!(
            stderr.contains(&format!("answered {}", answer_code(answer))),
            "{stderr}"
        );
    }

    // Busy once, then fine: the retry delivers everything.
    let receiver = Receiver::start(listen(), Answer::Status(503, Some(1))).expect("receiver");
    let endpoint = receiver.endpoint();
    let recording = std::thread::spawn(move || record_against(&endpoint, &[], "dto-o"));
    while receiver.requests() == 0 && !recording.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    receiver.set_answer(Answer::Accept);
    let (session, stderr) = recording.join().expect("recording");
    assert_eq!(span_counts(&stderr), (session.events.len(), 0), "{stderr}");
    assert_eq!(receiver.spans().len(), session.events.len());

    // Hung: reads the request, never answers; the timeout bounds each attempt.
    let receiver = Receiver::start(listen(), Answer::Never).expect("receiver");
    let (session, stderr) = record_against(&receiver.endpoint(), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "1500")], "dto-h");
    assert_eq!(span_counts(&stderr), (0, session.events.len()), "{stderr}");
    assert!(stderr.contains("no answer within"), "{stderr}");
}

fn answer_code(answer: Answer) -> u16 {
    match answer {
        Answer::Status(code, _) => code,
        Answer::Accept | Answer::Never => 200,
    }
}

/// The collector goes away mid-run: what it accepted stays sent, the rest is dropped and
/// counted, the session is whole.
#[test]
fn a_collector_killed_mid_run_costs_only_what_came_after() {
    if !needs_root() {
        return;
    }
    let receiver = Receiver::start(listen(), Answer::Accept).expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let recording = spawn_record(
        dad_trace()
            .args(["record", "--backend", "tracepoint", "--quiet", "--cri-socket", "none"])
            .args(["--otlp-endpoint", &receiver.endpoint(), "-o"])
            .arg(&path),
    );
    let first = dad_trace::node::synthetic::create_pods("dto-ka", 2).expect("pods");
    // The host sides' spans go at once (a pod's own wait for a CNI call that never comes).
    receiver.wait_for(Duration::from_secs(20), |spans| spans.len() >= 2);
    let before = receiver.stop().len();
    assert!(before >= 2, "the collector got {before} spans while it lived");
    let second = dad_trace::node::synthetic::create_pods("dto-kb", 2).expect("pods");
    std::thread::sleep(Duration::from_secs(3));
    let output = recording.stop(Signal::SIGINT);
    drop((first, second));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let session = Session::load(&path).expect("session");
    let (sent, dropped) = span_counts(&stderr);
    assert_eq!(sent, before, "{stderr}");
    assert_eq!(sent + dropped, session.events.len(), "{stderr}");
    assert!(dropped > 0, "{stderr}");
}

/// https: a collector whose certificate the system does not trust gets nothing (every span
/// counted as dropped, the reason said); given its CA with `--otlp-ca-file`, everything.
#[test]
fn https_trusts_the_system_roots_and_the_given_ca_only() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str| dir.path().join(name);
    std::fs::write(
        file("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write");
    // A private CA, and the collector's certificate signed by it.
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<std::ffi::OsString>; 3] = [
        [
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=dad-trace test CA",
            "-keyout",
        ]
        .iter()
        .map(Into::into)
        .chain([file("ca.key").into(), "-out".into(), file("ca.pem").into()])
        .chain(ec.iter().map(Into::into))
        .collect(),
        ["req", "-subj", "/CN=dad-trace test collector", "-keyout"]
            .iter()
            .map(Into::into)
            .chain([file("key.pem").into(), "-out".into(), file("leaf.csr").into()])
            .chain(ec.iter().map(Into::into))
            .collect(),
        ["x509", "-req", "-days", "1", "-in"]
            .iter()
            .map(Into::into)
            .chain([
                file("leaf.csr").into(),
                "-CA".into(),
                file("ca.pem").into(),
                "-CAkey".into(),
            ])
            .chain([
                file("ca.key").into(),
                "-CAcreateserial".into(),
                "-out".into(),
                file("cert.pem").into(),
            ])
            .chain(["-extfile".into(), file("leaf.ext").into()])
            .collect(),
    ];
    for step in steps {
        let made = Command::new("openssl").args(&step).output();
        if !made.as_ref().is_ok_and(|out| out.status.success()) {
            skip(format!("openssl cannot make a test certificate: {made:?}"));
            return;
        }
    }
    let (cert, key) = (file("cert.pem"), file("key.pem"));
    let read = |path: &Path| std::fs::read(path).expect("read");
    let receiver = Receiver::start_tls(listen(), Answer::Accept, &read(&cert), &read(&key)).expect("receiver");
    let (session, stderr) = record_against(&receiver.endpoint_tls(), &[], "dto-s");
    assert_eq!(span_counts(&stderr), (0, session.events.len()), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    let ca = file("ca.pem");
    let ca_path = ca.to_str().expect("utf-8");
    let (session, stderr) = record_against(
        &receiver.endpoint_tls(),
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_path)],
        "dto-t",
    );
    assert_eq!(span_counts(&stderr), (session.events.len(), 0), "{stderr}");
    assert_eq!(receiver.spans().len(), session.events.len());
}
