//! This machine's kernel (tracepoint backend). Root only; skips with a reason otherwise.
//! Run with `--test-threads=1`: the scenarios share the kernel's sysctls.
use dad_trace::{probes::Backend, record::BackendChoice};
use integration_tests::{default_sysctls_scenario, kernel_tests_allowed, load_every_program, tuned_sysctls_scenario};

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
