//! Run inside the qemu guests of `cargo xtask vm-test` (kernels with kprobes). Elsewhere
//! they skip with a reason: they need a throwaway kernel.
use std::collections::HashMap;

use dad_trace::{probes::Backend, record::BackendChoice, track::Outcome};
use integration_tests::{
    PODS, check_pods, default_sysctls_scenario, kernel_tests_allowed, load_every_program, record_both,
    tuned_sysctls_scenario,
};

fn in_vm(test: &str) -> bool {
    if std::env::var_os("DAD_TRACE_VM").is_none() {
        println!("SKIP {test}: runs inside `cargo xtask vm-test` guests only");
        return false;
    }
    kernel_tests_allowed(test)
}

#[test]
fn vm_every_program_passes_the_verifier() {
    if in_vm("vm_every_program_passes_the_verifier") {
        let types = dad_trace::offsets::KernelTypes::load(std::path::Path::new(dad_trace::offsets::VMLINUX_BTF))
            .expect("kernel BTF");
        let support = dad_trace::probes::KernelSupport::read(
            std::path::Path::new("/proc/kallsyms"),
            std::path::Path::new("/sys/bus/event_source/devices/kprobe"),
            Some(&types),
        )
        .expect("kallsyms");
        println!("{}", dad_trace::probes::render(&support));
        assert!(
            support.plan(Backend::Kprobe).usable(),
            "kprobes must attach in the VM kernels"
        );
        assert_eq!(load_every_program(), 11);
    }
}

#[test]
fn vm_kprobe_backend_default_sysctls() {
    if in_vm("vm_kprobe_backend_default_sysctls") {
        let session = default_sysctls_scenario("dtv-d", BackendChoice::Kprobe);
        assert_eq!(session.backend, Backend::Kprobe);
    }
}

#[test]
fn vm_kprobe_backend_tuned_sysctls() {
    if in_vm("vm_kprobe_backend_tuned_sysctls") {
        tuned_sysctls_scenario("dtv-t", BackendChoice::Kprobe);
    }
}

#[test]
fn vm_backends_agree_on_the_same_addresses() {
    if !in_vm("vm_backends_agree_on_the_same_addresses") {
        return;
    }
    let (kprobe, tracepoint) = record_both("dtv-b");
    assert_eq!(
        (kprobe.backend, tracepoint.backend),
        (Backend::Kprobe, Backend::Tracepoint)
    );
    let kprobe_events = check_pods(&kprobe, "dtv-b");
    let tracepoint_events = check_pods(&tracepoint, "dtv-b");
    assert_eq!(kprobe_events.len(), 2 * PODS);
    let by_address: HashMap<_, _> = tracepoint_events
        .iter()
        .map(|event| ((event.netns_name.clone(), event.addr), *event))
        .collect();
    let mut differences: Vec<u64> = kprobe_events
        .iter()
        .map(|event| {
            let other = by_address[&(event.netns_name.clone(), event.addr)];
            assert_eq!(
                (event.outcome, other.outcome),
                (Outcome::Settled, Outcome::Settled),
                "{}",
                event.addr
            );
            event.tentative_ns.abs_diff(other.tentative_ns)
        })
        .collect();
    differences.sort_unstable();
    let (median, worst) = (differences[differences.len() / 2], differences[differences.len() - 1]);
    println!(
        "backends agree: tentative-delay difference median {median} ns, worst {worst} ns over {} addresses",
        differences.len()
    );
    // The backends stamp the end of DAD at two points of the last DAD step (kprobe: entry of
    // addrconf_dad_completed; tracepoint: the work's return, after the NA/RS it sends).
    // Under TCG emulation that step takes a few ms; on hardware, microseconds.
    assert!(median <= 2_000_000, "median difference {median} ns");
    assert!(worst <= 10_000_000, "worst difference {worst} ns");
}

#[test]
fn vm_cni_ptp_scenario_with_kprobes() {
    if in_vm("vm_cni_ptp_scenario_with_kprobes") {
        integration_tests::cni_scenario(
            dad_trace::scenario::Plugin::Ptp,
            &["defaults", "naive-tuning", "inherit"],
            PODS,
            BackendChoice::Kprobe,
            // TCG emulation: ADD times jitter by a few hundred ms (plugin start-up at
            // emulated speed); DAD still stands out at 1-2 s.
            400,
        );
    }
}
