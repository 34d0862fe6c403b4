//! The kernel test scenarios, shared by the host tier (this machine's kernel, tracepoint
//! backend) and the VM tier (qemu kernels, kprobe backend).
#![allow(
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    reason = "test helpers: panicking on a failed expectation is their job"
)]

pub mod containerd;
pub mod doctor;
pub mod faults;
pub mod limited;
pub mod manifests;
pub mod monitoring;
pub mod netns;
pub mod prometheus;
pub mod samples;
pub mod sockets;

use std::{collections::HashMap, net::Ipv6Addr, path::Path, time::Duration};

use dad_trace::{
    kernel::{self, BackendChoice, Kernel, VMLINUX_BTF, loader},
    node::sysctl::SysctlGuard,
    session::{AddressEvent, Outcome, Session},
    tracer::RecordOptions,
};

/// Synthetic pods per scenario: 20, or `DAD_TRACE_PODS` (the VM runner sets fewer where
/// emulation is slow).
#[must_use]
pub fn pods() -> usize {
    std::env::var("DAD_TRACE_PODS")
        .ok()
        .and_then(|pods| pods.parse().ok())
        .unwrap_or(20)
}

/// True when the test may touch the kernel; otherwise it skips, saying why (skips are
/// `test_support::skip`).
#[must_use]
pub fn needs_root() -> bool {
    test_support::needs_root(kernel::check_privileges())
}

#[must_use]
pub fn options(backend: BackendChoice, prefix: &str, pods: Option<usize>, duration: Duration) -> RecordOptions {
    RecordOptions {
        backend,
        duration: Some(duration),
        synthetic_pods: pods,
        synthetic_prefix: prefix.to_string(),
        lines: true,
        ..RecordOptions::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Records while [`pods`] synthetic pods come up, and returns the session.
pub fn record_synthetic(prefix: &str, backend: BackendChoice) -> Session {
    runtime()
        .block_on(dad_trace::tracer::record(options(
            backend,
            prefix,
            Some(pods()),
            Duration::from_secs(90),
        )))
        .expect("record")
}

/// Records the same synthetic pods with two backends at once.
pub fn record_both(prefix: &str) -> (Session, Session) {
    // Polled first, the tracepoint recorder attaches (synchronously) before the kprobe one
    // creates the pods; it stops once it has seen all of their addresses.
    let mut tracepoint_options = options(BackendChoice::Tracepoint, prefix, None, Duration::from_secs(90));
    tracepoint_options.count = Some(3 * pods());
    let kprobe_options = options(BackendChoice::Kprobe, prefix, Some(pods()), Duration::from_secs(90));
    runtime().block_on(async {
        let (tracepoint, kprobe) = tokio::join!(
            dad_trace::tracer::record(tracepoint_options),
            dad_trace::tracer::record(kprobe_options)
        );
        (
            kprobe.expect("kprobe recording"),
            tracepoint.expect("tracepoint recording"),
        )
    })
}

fn pod_address(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x0dad,
        0,
        0,
        0,
        0,
        0,
        u16::try_from(index + 1).expect("small index"),
    )
}

fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// Every synthetic pod's addresses appear exactly once, in the right namespace, with the
/// right peer; returns the pod-side events.
pub fn check_pods<'a>(session: &'a Session, prefix: &str) -> Vec<&'a AddressEvent> {
    let ours = |event: &&AddressEvent| event.netns_name.as_deref().is_some_and(|name| name.starts_with(prefix));
    let pod_events: Vec<&AddressEvent> = session.events.iter().filter(ours).collect();
    let mut seen: HashMap<(String, bool), usize> = HashMap::new();
    for event in &pod_events {
        *seen
            .entry((
                event.netns_name.clone().expect("filtered on name"),
                is_link_local(event.addr),
            ))
            .or_default() += 1;
    }
    // What was still tentative when recording stopped, and what the kernel dropped: the
    // first places to look when an address is missing.
    let unfinished: Vec<String> = session
        .unfinished
        .iter()
        .map(|u| {
            format!(
                "{} {} netns {} for {} ns",
                u.ifname, u.addr, u.netns_inode, u.tentative_so_far_ns
            )
        })
        .collect();
    for index in 0..pods() {
        let name = format!("{prefix}{index}");
        for link_local in [true, false] {
            assert_eq!(
                seen.get(&(name.clone(), link_local)),
                Some(&1),
                "{name} link-local={link_local}: {seen:?}; unfinished: {unfinished:?}; lost: {}",
                session.lost_events
            );
        }
        let global = pod_events
            .iter()
            .find(|event| event.netns_name.as_deref() == Some(name.as_str()) && !is_link_local(event.addr))
            .expect("global address seen");
        assert_eq!(global.addr, pod_address(index));
        assert_eq!(global.ifname, "eth0");
        assert!(!global.host_netns);
        assert_eq!(global.outcome, Outcome::Settled);
        let peer = global.peer.as_ref().expect("veth peer resolved");
        assert_eq!(
            peer.ifname.as_deref(),
            Some(format!("{prefix}h{index}").as_str()),
            "{global:?}"
        );
        // The host side of the pair is traced too, in the host namespace.
        let host_name = format!("{prefix}h{index}");
        let host_side: Vec<_> = session
            .events
            .iter()
            .filter(|e| e.host_netns && e.ifname == host_name)
            .collect();
        assert_eq!(host_side.len(), 1, "host veth {host_name}");
        assert_eq!(i64::from(peer.ifindex), i64::from(host_side[0].ifindex));
    }
    assert_eq!(session.lost_events, 0);
    let delays = dad_trace::report::pod_delays(&session.events);
    assert_eq!(delays.iter().filter(|pod| pod.pod.starts_with(prefix)).count(), pods());
    pod_events
}

/// DAD on in new namespaces, as on a stock node (the host side follows `default.*`);
/// restored when dropped.
#[must_use]
pub fn stock_dad_settings() -> SysctlGuard {
    let mut sysctls = SysctlGuard::default();
    sysctls.set("net.core.devconf_inherit_init_net", "0").expect("sysctl");
    sysctls.set("net.ipv6.conf.default.accept_dad", "1").expect("sysctl");
    sysctls.set("net.ipv6.conf.default.dad_transmits", "1").expect("sysctl");
    sysctls
}

/// The kernel's bounds on a pod address's tentative delay under stock DAD settings in a new
/// namespace (`dad_transmits=1`, `retrans_time_ms=1000`, `router_solicitation_delay=1`, as
/// every new namespace starts without `devconf_inherit_init_net`): `addrconf_dad_kick` waits
/// a random 0..1 s, the one probe then waits 1 s for an answer, so 1–2 s. Timers fire late,
/// never early: two timers of the wheel's granularity at these delays (up to 64 ms each)
/// plus workqueue scheduling make the upper end 2.25 s.
pub const STOCK_DAD_NS: std::ops::RangeInclusive<u64> = 1_000_000_000..=2_250_000_000;

/// Kernel defaults: every pod address waits for DAD, within [`STOCK_DAD_NS`].
pub fn default_sysctls_scenario(prefix: &str, backend: BackendChoice) -> Session {
    let _sysctls = stock_dad_settings();
    let session = record_synthetic(prefix, backend);
    for event in check_pods(&session, prefix) {
        assert!(
            STOCK_DAD_NS.contains(&event.tentative_ns),
            "{} tentative {} ns, outside the kernel's {STOCK_DAD_NS:?}",
            event.addr,
            event.tentative_ns
        );
        assert!(event.dad_ns.is_some_and(|dad| dad <= event.tentative_ns), "{event:?}");
        assert!(!event.partial);
    }
    session
}

/// `accept_dad=0` that reaches new namespaces: every address settles within 50 ms.
pub fn tuned_sysctls_scenario(prefix: &str, backend: BackendChoice) -> Session {
    let mut sysctls = SysctlGuard::default();
    for scope in ["all", "default"] {
        sysctls
            .set(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")
            .expect("sysctl");
    }
    sysctls.set("net.core.devconf_inherit_init_net", "1").expect("sysctl");
    let session = record_synthetic(prefix, backend);
    for event in check_pods(&session, prefix) {
        assert!(
            event.tentative_ns < 50_000_000,
            "{} tentative {} ns",
            event.addr,
            event.tentative_ns
        );
        assert_eq!(event.dad_ns, None, "no DAD ran for {}", event.addr);
    }
    session
}

/// The running kernel, as `record` discovers it.
#[must_use]
pub fn this_kernel() -> Kernel {
    Kernel::discover(Path::new(VMLINUX_BTF), None).expect("kernel BTF and kallsyms")
}

/// Loads every program of both backends through the verifier; returns how many loaded.
#[must_use]
pub fn load_every_program() -> usize {
    let verdicts = kernel::verify_programs(&this_kernel()).expect("object loads");
    for verdict in &verdicts {
        if let Err(e) = &verdict.result {
            panic!("{:?} {}: {e}", verdict.backend, verdict.program);
        }
    }
    verdicts.len()
}

/// Runs the CNI pod-start scenario and asserts every phase passes its gate; returns the
/// results for printing.
pub fn cni_scenario(
    plugin: dad_trace::scenario::plugin::Plugin,
    phases: &[&str],
    pods: usize,
    backend: BackendChoice,
    slack: dad_trace::scenario::gates::Slack,
) -> String {
    use dad_trace::scenario::{ScenarioOptions, phases, render, run};
    let opts = ScenarioOptions {
        plugin,
        cni_dir: "/usr/lib/cni".into(),
        pods,
        backend,
        phases: phases
            .iter()
            .map(|name| phases::by_name(name).expect("known phase"))
            .collect(),
        prefix: "dtc-".into(),
        slack,
        otlp: None,
    };
    let results = runtime().block_on(run(&opts)).expect("scenario runs");
    let table = render::table(&results);
    println!("{table}");
    assert_eq!(results.len(), phases.len());
    for result in &results {
        assert_eq!(result.pods.len(), pods, "{}", result.phase);
        assert!(result.problems.is_empty(), "{}: {:?}", result.phase, result.problems);
        assert_eq!(result.doctor, result.expected_doctor, "{}", result.phase);
    }
    table
}

/// One scenario phase of `pods` pods, its result unjudged (no gates: the caller looks).
#[must_use]
pub fn scenario_phase(
    plugin: dad_trace::scenario::plugin::Plugin,
    phase: &str,
    pods: usize,
) -> dad_trace::scenario::PhaseResult {
    use dad_trace::scenario::{ScenarioOptions, phases, run_phase};
    let phase = phases::by_name(phase).expect("known phase");
    let opts = ScenarioOptions {
        plugin,
        cni_dir: "/usr/lib/cni".into(),
        pods,
        backend: BackendChoice::Tracepoint,
        phases: vec![phase],
        prefix: "dtk-".into(),
        slack: dad_trace::scenario::gates::Slack::default(),
        otlp: None,
    };
    let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    runtime()
        .block_on(run_phase(phase, &opts, cancelled))
        .expect("the phase runs")
}

/// Maps of the kernel object that could hold per-address state (hash maps): there must be
/// none, so nothing in the kernel can grow or leak when addresses die unseen. The one hash
/// map is the CNI programs' followed processes: keyed by process, LRU and bounded, entries
/// removed on the process's last exit (checked here to be exactly that).
#[must_use]
pub fn per_address_kernel_maps() -> Vec<String> {
    let config = this_kernel().config().expect("kallsyms readable");
    let ebpf = loader::load(&config, 4096, false).expect("object loads");
    ebpf.maps()
        .filter(|(name, map)| match map {
            aya::maps::Map::RingBuf(_) | aya::maps::Map::PerCpuArray(_) | aya::maps::Map::Array(_) => false,
            // Bounded LRU maps of another kind: followed CNI processes, and socket error
            // counts per (namespace, process, syscall, address); neither is per DAD address.
            aya::maps::Map::LruHashMap(data) => {
                let bound = match *name {
                    dad_trace_common::TRACKED_MAP => dad_trace_common::TRACKED_MAX,
                    dad_trace_common::sockets::SOCKET_ERRORS_MAP => dad_trace_common::sockets::SOCKET_ERRORS_MAX,
                    _ => return true,
                };
                data.info().map(|info| info.max_entries()).ok() != Some(bound)
            }
            _ => true,
        })
        .map(|(name, map)| format!("{name}: {map:?}"))
        .collect()
}
