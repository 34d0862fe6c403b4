//! Tests on this machine's kernel (tracepoint backend). Root only; they skip with a reason
//! otherwise. Run with `--test-threads=1`: they share the kernel's sysctls.
use std::{collections::HashMap, net::Ipv6Addr, path::Path};

use dad_trace::{
    loader,
    offsets::{KernelTypes, VMLINUX_BTF},
    probes::{self, Backend, DAD_WORK_FN, KernelSupport},
    record::BackendChoice,
    session::{AddressEvent, Session},
    sysctl::SysctlGuard,
    track::Outcome,
};
use integration_tests::{kernel_tests_allowed, record_synthetic};

const PODS: usize = 20;

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
fn check_pods<'a>(session: &'a Session, prefix: &str) -> Vec<&'a AddressEvent> {
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
    for index in 0..PODS {
        let name = format!("{prefix}{index}");
        for link_local in [true, false] {
            assert_eq!(
                seen.get(&(name.clone(), link_local)),
                Some(&1),
                "{name} link-local={link_local}: {seen:?}"
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
        let host_side: Vec<_> = session
            .events
            .iter()
            .filter(|e| e.host_netns && e.ifname == format!("{prefix}h{index}"))
            .collect();
        assert_eq!(host_side.len(), 1, "host veth {prefix}h{index}");
        assert_eq!(i64::from(peer.ifindex), i64::from(host_side[0].ifindex));
    }
    assert_eq!(session.lost_events, 0);
    assert_eq!(
        dad_trace::report::pod_delays(&session.events)
            .iter()
            .filter(|pod| pod.pod.starts_with(prefix))
            .count(),
        PODS
    );
    pod_events
}

#[test]
fn every_program_passes_the_verifier() {
    if !kernel_tests_allowed("every_program_passes_the_verifier") {
        return;
    }
    let types = KernelTypes::load(Path::new(VMLINUX_BTF)).expect("kernel BTF");
    let support =
        KernelSupport::read(Path::new("/proc/kallsyms"), Path::new("/nonexistent"), Some(&types)).expect("kallsyms");
    let config = types.config(support.symbols[DAD_WORK_FN]).expect("offsets from BTF");
    let mut ebpf = loader::load(&config, 4096, false).expect("object loads");
    let mut loaded = 0;
    for backend in [Backend::Kprobe, Backend::Tracepoint] {
        for spec in probes::table(backend) {
            for hook in spec.hooks {
                match loader::load_program(&mut ebpf, hook) {
                    Ok(()) => loaded += 1,
                    Err(loader::AttachError::Program {
                        source: aya::programs::ProgramError::AlreadyLoaded,
                        ..
                    }) => {}
                    Err(e) => panic!("{backend} {}: {e}", hook.program),
                }
            }
        }
    }
    // 9 kprobe programs (one per hook) + 2 raw tracepoints.
    assert_eq!(loaded, 11);
}

#[test]
fn default_sysctls_pods_wait_for_dad() {
    if !kernel_tests_allowed("default_sysctls_pods_wait_for_dad") {
        return;
    }
    let mut sysctls = SysctlGuard::default();
    // New namespaces get kernel defaults (DAD on); the host side follows default.*.
    sysctls.set("net.core.devconf_inherit_init_net", "0").expect("sysctl");
    sysctls.set("net.ipv6.conf.default.accept_dad", "1").expect("sysctl");
    sysctls.set("net.ipv6.conf.default.dad_transmits", "1").expect("sysctl");
    let session = record_synthetic("dtt-d", PODS, BackendChoice::Tracepoint).expect("record");
    assert_eq!(session.backend, Backend::Tracepoint);
    for event in check_pods(&session, "dtt-d") {
        let seconds = event.tentative_ns as f64 / 1e9;
        assert!((0.2..=4.0).contains(&seconds), "{} tentative {seconds} s", event.addr);
        assert!(event.dad_ns.is_some_and(|dad| dad <= event.tentative_ns), "{event:?}");
        assert!(!event.partial);
    }
}

#[test]
fn tuning_that_reaches_new_namespaces_removes_the_wait() {
    if !kernel_tests_allowed("tuning_that_reaches_new_namespaces_removes_the_wait") {
        return;
    }
    let mut sysctls = SysctlGuard::default();
    for scope in ["all", "default"] {
        sysctls
            .set(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")
            .expect("sysctl");
    }
    sysctls.set("net.core.devconf_inherit_init_net", "1").expect("sysctl");
    let session = record_synthetic("dtt-t", PODS, BackendChoice::Tracepoint).expect("record");
    for event in check_pods(&session, "dtt-t") {
        assert!(
            event.tentative_ns < 50_000_000,
            "{} tentative {} ns",
            event.addr,
            event.tentative_ns
        );
        assert_eq!(event.dad_ns, None, "no DAD ran for {}", event.addr);
    }
}
