//! This machine's kernel (tracepoint backend). Root only; skips with a reason otherwise.
//! Run with `--test-threads=1`: the scenarios share the kernel's sysctls.
use dad_trace::{
    kernel::{Backend, BackendChoice},
    scenario::{gates::Slack, plugin::Plugin},
};
use integration_tests::{
    cni_scenario, default_sysctls_scenario, load_every_program, needs_root, pods, tuned_sysctls_scenario,
};

#[test]
fn every_program_passes_the_verifier() {
    if needs_root() {
        // Every program of both backends (fallbacks too), the CNI exec and exit, and the
        // socket error programs.
        assert_eq!(
            load_every_program(),
            dad_trace::kernel::probes::programs().len()
                + dad_trace::kernel::probes::PROC_HOOKS.len()
                + dad_trace::kernel::sockets::SOCKET_HOOKS.len()
        );
    }
}

#[test]
fn default_sysctls_pods_wait_for_dad() {
    if needs_root() {
        let session = default_sysctls_scenario("dtt-d", BackendChoice::Tracepoint);
        assert_eq!(session.backend, Backend::Tracepoint);
    }
}

#[test]
fn tuning_that_reaches_new_namespaces_removes_the_wait() {
    if needs_root() {
        tuned_sysctls_scenario("dtt-t", BackendChoice::Tracepoint);
    }
}

/// The pod-start story with the component that waits: a real CNI plugin (ptp, as kind uses).
#[test]
fn cni_ptp_scenario_tells_the_story() {
    if !needs_root() {
        return;
    }
    if !Plugin::Ptp.available(std::path::Path::new("/usr/lib/cni")) {
        test_support::skip("containernetworking-plugins not installed");
        return;
    }
    cni_scenario(
        Plugin::Ptp,
        &["defaults", "naive-tuning", "inherit"],
        pods(),
        BackendChoice::Tracepoint,
        Slack::default(),
    );
}

/// Short CNI calls are not missed: 1,000 ptp ADDs with DAD off (tens of ms each, ptp
/// delegating to host-local), every one traced from the kernel with its pod namespace. The
/// issue asked for at least 99.9 %; all are required.
#[test]
fn a_thousand_fast_cni_adds_are_all_traced() {
    const ADDS: usize = 1000;
    if !needs_root() {
        return;
    }
    if !Plugin::Ptp.available(std::path::Path::new("/usr/lib/cni")) {
        test_support::skip("containernetworking-plugins not installed");
        return;
    }
    let result = integration_tests::scenario_phase(Plugin::Ptp, "inherit", ADDS);
    assert_eq!(result.pods.len(), ADDS);
    let untraced: Vec<&str> = result
        .pods
        .iter()
        .filter(|pod| pod.traced_cni_add_ns.is_none())
        .map(|pod| pod.name.as_str())
        .collect();
    assert!(
        untraced.is_empty(),
        "{} of {ADDS} ADDs not traced: {untraced:?}",
        untraced.len()
    );
    let agreement = result.add_agreement.expect("ADDs measured and traced");
    println!(
        "{ADDS} ADDs traced; traced vs measured: p50 {} p99 {} max {}",
        dad_trace::hist::human(agreement.p50_ns),
        dad_trace::hist::human(agreement.p99_ns),
        dad_trace::hist::human(agreement.max_ns)
    );
    // The same calls' delegates: ptp runs host-local for every ADD.
    let session_pods = result.session.pods.iter().filter(|pod| pod.cni_add_ns.is_some());
    let with_ipam = session_pods
        .filter(|pod| {
            pod.cni_calls
                .iter()
                .any(|call| call.delegates.iter().any(|d| d.plugin.ends_with("/host-local")))
        })
        .count();
    assert!(with_ipam >= ADDS, "host-local tied to {with_ipam} ADDs of {ADDS}");
}

/// The bridge plugin runs DAD on the pod side only with `"enableDad": true`.
#[test]
fn cni_bridge_enable_dad_waits_for_dad() {
    if !needs_root() {
        return;
    }
    if !Plugin::BridgeDad.available(std::path::Path::new("/usr/lib/cni")) {
        test_support::skip("containernetworking-plugins not installed");
        return;
    }
    cni_scenario(
        Plugin::BridgeDad,
        &["defaults"],
        5,
        BackendChoice::Tracepoint,
        Slack::default(),
    );
}

/// `tune --apply` changes exactly the recommended settings; `--revert` restores every one.
#[test]
fn tune_apply_then_revert_restores_every_setting() {
    if !needs_root() {
        return;
    }
    // Start from values that differ from every recommended one (the kernel defaults), so
    // apply and revert both have something to do; the guard puts the machine's values back.
    let mut guard = dad_trace::node::sysctl::SysctlGuard::default();
    for (name, recommended) in dad_trace::node::tune::RECOMMENDED {
        let differing = if *recommended == "0" { "1" } else { "0" };
        guard.set(name, differing).expect("sysctl");
    }
    let before = dad_trace::node::sysctl::snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory apply must create, as /var/lib/dad-trace is on a fresh node.
    let state = dir.path().join("state/tune-state.json");
    dad_trace::node::tune::apply(&state).expect("apply");
    for (name, value) in dad_trace::node::tune::RECOMMENDED {
        assert_eq!(dad_trace::node::sysctl::read(name).expect("readable"), *value, "{name}");
    }
    assert_ne!(dad_trace::node::sysctl::snapshot(), before, "apply changed the node");
    assert!(
        dad_trace::node::tune::apply(&state).is_err(),
        "a second apply must refuse"
    );
    dad_trace::node::tune::revert(&state).expect("revert");
    assert_eq!(dad_trace::node::sysctl::snapshot(), before);
    assert!(!state.exists());
    drop(guard);
}

/// The doctor's "pods created before a fix": a pod namespace made while DAD was on keeps its
/// settings after the node is tuned, and the doctor names it; one made after is not named.
#[test]
fn doctor_names_pods_created_before_the_fix() {
    if !needs_root() {
        return;
    }
    let _stock = integration_tests::stock_dad_settings();
    let before_fix = dad_trace::node::synthetic::SyntheticPod::create("dtdr-old-", 0).expect("pod");
    let mut tuned = dad_trace::node::sysctl::SysctlGuard::default();
    for (name, value) in dad_trace::node::tune::RECOMMENDED {
        tuned.set(name, value).expect("sysctl");
    }
    let after_fix = dad_trace::node::synthetic::SyntheticPod::create("dtdr-new-", 0).expect("pod");
    let audit = dad_trace::node::doctor::audit(std::path::Path::new(dad_trace::node::netns::NETNS_DIR));
    let diagnosis = dad_trace::node::doctor::diagnose(&audit);
    assert!(
        diagnosis.namespaces_running_dad.contains(&before_fix.name),
        "{:?}",
        diagnosis.namespaces_running_dad
    );
    assert!(
        !diagnosis.namespaces_running_dad.contains(&after_fix.name),
        "{:?}",
        diagnosis.namespaces_running_dad
    );
    assert!(
        diagnosis
            .findings
            .iter()
            .any(|finding| finding.contains("pods created before a fix keep them")),
        "{:#?}",
        diagnosis.findings
    );
}

/// `tune --revert` is all or nothing: a value the kernel refuses half-way (here
/// `devconf_inherit_init_net` accepts 0-3 only) puts back the one written before it.
#[test]
fn tune_revert_is_all_or_nothing() {
    if !needs_root() {
        return;
    }
    let mut guard = dad_trace::node::sysctl::SysctlGuard::default();
    guard.set("net.ipv6.conf.all.accept_dad", "0").expect("sysctl");
    let before = dad_trace::node::sysctl::snapshot();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("tune-state.json");
    std::fs::write(
        &state,
        r#"{"previous": [["net.ipv6.conf.all.accept_dad", "1"], ["net.core.devconf_inherit_init_net", "5"]]}"#,
    )
    .expect("write");
    let error = dad_trace::node::tune::revert(&state).expect_err("the kernel refuses 5");
    assert!(format!("{error:#}").contains("nothing was reverted"), "{error:#}");
    assert_eq!(dad_trace::node::sysctl::snapshot(), before, "accept_dad was put back");
    assert!(state.exists(), "the state file is kept");
}
