//! This machine's kernel (tracepoint backend). Root only; skips with a reason otherwise.
//! Run with `--test-threads=1`: the scenarios share the kernel's sysctls.
use dad_trace::{
    kernel::{Backend, BackendChoice},
    scenario::{cni::Plugin, gates::Slack},
};
use integration_tests::{
    cni_scenario, default_sysctls_scenario, kernel_tests_allowed, load_every_program, pods, tuned_sysctls_scenario,
};

#[test]
fn every_program_passes_the_verifier() {
    if kernel_tests_allowed("every_program_passes_the_verifier") {
        // 9 kprobe programs (one per hook) + 2 raw tracepoints.
        assert_eq!(load_every_program(), 11);
    }
}

#[test]
fn default_sysctls_pods_wait_for_dad() {
    if kernel_tests_allowed("default_sysctls_pods_wait_for_dad") {
        let session = default_sysctls_scenario("dtt-d", BackendChoice::Tracepoint);
        assert_eq!(session.backend, Backend::Tracepoint);
    }
}

#[test]
fn tuning_that_reaches_new_namespaces_removes_the_wait() {
    if kernel_tests_allowed("tuning_that_reaches_new_namespaces_removes_the_wait") {
        tuned_sysctls_scenario("dtt-t", BackendChoice::Tracepoint);
    }
}

/// The pod-start story with the component that waits: a real CNI plugin (ptp, as kind uses).
#[test]
fn cni_ptp_scenario_tells_the_story() {
    if !kernel_tests_allowed("cni_ptp_scenario_tells_the_story") {
        return;
    }
    if !Plugin::Ptp.available(std::path::Path::new("/usr/lib/cni")) {
        println!("SKIP cni_ptp_scenario_tells_the_story: containernetworking-plugins not installed");
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

/// The bridge plugin runs DAD on the pod side only with `"enableDad": true`.
#[test]
fn cni_bridge_enable_dad_waits_for_dad() {
    if !kernel_tests_allowed("cni_bridge_enable_dad_waits_for_dad") {
        return;
    }
    if !Plugin::BridgeDad.available(std::path::Path::new("/usr/lib/cni")) {
        println!("SKIP cni_bridge_enable_dad_waits_for_dad: containernetworking-plugins not installed");
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
    if !kernel_tests_allowed("tune_apply_then_revert_restores_every_setting") {
        return;
    }
    // Belt and braces: whatever happens below, the guard puts the values back.
    let mut guard = dad_trace::node::sysctl::SysctlGuard::default();
    for (name, _) in dad_trace::node::tune::RECOMMENDED {
        let current = dad_trace::node::sysctl::read(name).expect("readable sysctl");
        guard.set(name, &current).expect("sysctl");
    }
    let before = dad_trace::node::sysctl::snapshot();
    let dir = std::env::temp_dir().join(format!("dad-trace-tune-{}", std::process::id()));
    let state = dir.join("state.json");
    dad_trace::node::tune::apply(&state).expect("apply");
    for (name, value) in dad_trace::node::tune::RECOMMENDED {
        assert_eq!(dad_trace::node::sysctl::read(name).expect("readable"), *value, "{name}");
    }
    assert!(
        dad_trace::node::tune::apply(&state).is_err(),
        "a second apply must refuse"
    );
    dad_trace::node::tune::revert(&state).expect("revert");
    assert_eq!(dad_trace::node::sysctl::snapshot(), before);
    assert!(!state.exists());
    let _ = std::fs::remove_dir_all(dir);
}
