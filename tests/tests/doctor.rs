//! Every verdict of `dad-trace doctor` against this machine's kernel: pods created under one
//! setting, traced by the real tracer (tracepoint backend), and each measured tentative delay
//! compared with the doctor's estimate for that address. Root only; skips with a reason
//! otherwise. Run with `--test-threads=1`: the cases share the kernel's sysctls (each is
//! restored afterwards, also on failure).
use dad_trace::node::doctor::Verdict;
use integration_tests::{
    doctor::{Case, Measured, PodSetup, measure},
    needs_root,
};

const PODS: usize = 8;

fn plain(_: usize) -> PodSetup {
    PodSetup::Plain
}

fn run(case: &Case, verdict: Verdict) -> Option<Measured> {
    if !needs_root() {
        return None;
    }
    let measured = measure(case);
    measured.check(verdict);
    Some(measured)
}

/// The doctor used to call this tuned with a 0 ms wait: DAD still starts, and the zero-probe
/// work clears the flag after a random 0..1 s.
#[test]
fn zero_dad_transmits_alone_still_waits_up_to_a_second() {
    const CASE: Case = Case {
        tag: "z",
        host_sysctls: &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.dad_transmits", "0"),
            ("net.ipv6.conf.default.dad_transmits", "0"),
        ],
        pods: PODS,
        setup: plain,
    };
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        assert_eq!(measured.diagnosis.estimated_wait_ms, (0, 1000));
        // Somewhere in the random delay, not all near 0: a "0 ms" estimate would fail here.
        let (_, max) = measured.range(|c| !c.what.starts_with("host") && !c.what.ends_with("per pod"));
        assert!(max > 50.0, "no pod address waited: max {max} ms");
    }
}

/// `all.accept_dad=0` alone: new interfaces take `default`'s 1, and the kernel runs DAD when
/// either is on.
#[test]
fn accept_dad_off_on_all_only_keeps_dad() {
    const CASE: Case = Case {
        tag: "a",
        host_sysctls: &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
        ],
        pods: PODS,
        setup: plain,
    };
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        assert_eq!(measured.diagnosis.estimated_wait_ms, (1000, 2000));
    }
}

/// `default.accept_dad=0` with `all` at its 0: new interfaces skip DAD.
#[test]
fn accept_dad_off_on_default_only_skips_dad() {
    const CASE: Case = Case {
        tag: "d",
        host_sysctls: &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ],
        pods: PODS,
        setup: plain,
    };
    if let Some(measured) = run(&CASE, Verdict::Tuned) {
        assert_eq!(measured.diagnosis.estimated_wait_ms, (0, 0));
    }
}

/// `default.accept_dad=0` but `all.accept_dad=1`: `all` wins, DAD runs.
#[test]
fn accept_dad_on_all_overrides_default_off() {
    const CASE: Case = Case {
        tag: "o",
        host_sysctls: &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.accept_dad", "1"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ],
        pods: PODS,
        setup: plain,
    };
    run(&CASE, Verdict::DadOn);
}

/// Half the pods get `eth0 accept_dad=0` in their namespace (as the bridge plugin sets it):
/// the doctor's per-namespace estimate says which of them skip DAD.
#[test]
fn per_interface_override_in_a_pod_namespace() {
    fn setup(index: usize) -> PodSetup {
        if index.is_multiple_of(2) {
            PodSetup::InterfaceAcceptDadOff
        } else {
            PodSetup::Plain
        }
    }
    const CASE: Case = Case {
        tag: "i",
        host_sysctls: &[],
        pods: PODS,
        setup,
    };
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        let overridden = |c: &integration_tests::doctor::Compared| {
            c.what.starts_with("dtdoc-i-")
                && c.what
                    .split([' ', '-'])
                    .nth(2)
                    .is_some_and(|i| i.parse::<usize>().is_ok_and(|i| i.is_multiple_of(2)))
        };
        let (_, max) = measured.range(|c| overridden(c) && !c.what.ends_with("per pod"));
        assert!(max < 50.0, "overridden interfaces waited {max} ms");
        assert_eq!(
            measured
                .diagnosis
                .namespaces_running_dad
                .iter()
                .filter(|n| n.starts_with("dtdoc-i-"))
                .count(),
            PODS / 2
        );
    }
}

/// The real CNI bridge plugin without `"enableDad": true` turns DAD off on the pod's `eth0`
/// (a per-interface `accept_dad=0`, not `nodad`): the doctor reads it from the namespace.
#[test]
fn bridge_plugin_without_enable_dad_skips_dad_per_interface() {
    fn setup(_: usize) -> PodSetup {
        PodSetup::BridgePlugin
    }
    const CASE: Case = Case {
        tag: "b",
        host_sysctls: &[],
        pods: 4,
        setup,
    };
    if !integration_tests::doctor::bridge_plugin_installed() {
        test_support::skip("the CNI bridge plugin is not installed (containernetworking-plugins)");
        return;
    }
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        let (_, max) = measured.range(|c| c.what.starts_with("dtdoc-b-"));
        assert!(max < 50.0, "bridge pods waited {max} ms");
        assert!(
            measured
                .diagnosis
                .findings
                .iter()
                .any(|f| f.contains("per-interface override"))
        );
    }
}

/// `optimistic_dad=1` reaching new pods: the link-local address skips the random start delay
/// only where `all.forwarding` is 0; the added address waits in full either way.
#[test]
fn optimistic_dad_keeps_the_tentative_wait() {
    fn setup(index: usize) -> PodSetup {
        if index.is_multiple_of(2) {
            PodSetup::NamespaceOptimistic
        } else {
            PodSetup::Plain
        }
    }
    const CASE: Case = Case {
        tag: "p",
        host_sysctls: &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.optimistic_dad", "1"),
            ("net.ipv6.conf.default.optimistic_dad", "1"),
        ],
        pods: PODS,
        setup,
    };
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        // Optimistic link-local addresses wait exactly one probe: 1000 ms.
        let (min, max) = measured.range(|c| c.estimate.dad && c.estimate.low_ms == c.estimate.high_ms);
        assert!(
            (990.0..1250.0).contains(&min) && max < 1250.0,
            "optimistic link-local {min}..{max} ms"
        );
        assert!(measured.diagnosis.findings.iter().any(|f| f.contains("optimistic_dad")));
    }
}

/// `enhanced_dad=0` changes the probes (no nonce), not the wait.
#[test]
fn enhanced_dad_does_not_change_the_wait() {
    const CASE: Case = Case {
        tag: "e",
        host_sysctls: &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.enhanced_dad", "0"),
            ("net.ipv6.conf.default.enhanced_dad", "0"),
        ],
        pods: PODS,
        setup: plain,
    };
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        assert_eq!(measured.diagnosis.estimated_wait_ms, (1000, 2000));
    }
}

/// A plugin that adds the pod address with `nodad`: that address skips DAD whatever the
/// sysctls; the kernel's link-local address still runs it.
#[test]
fn nodad_addresses_skip_dad() {
    fn setup(_: usize) -> PodSetup {
        PodSetup::NodadAddress
    }
    const CASE: Case = Case {
        tag: "n",
        host_sysctls: &[],
        pods: PODS,
        setup,
    };
    if let Some(measured) = run(&CASE, Verdict::DadOn) {
        let (_, max) = measured.range(|c| c.what.contains("fd00:dad:d0c::"));
        assert!(max < 50.0, "nodad addresses waited {max} ms");
        let (min, _) = measured.range(|c| c.what.contains(" fe80::"));
        assert!(min > 900.0, "link-local addresses still run DAD: min {min} ms");
        assert!(measured.diagnosis.findings.iter().any(|f| f.contains("nodad")));
    }
}
