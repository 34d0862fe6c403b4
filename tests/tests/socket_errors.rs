//! Application socket errors against the real kernel (tracepoint backend; the VM guests run
//! the same scenarios with the kprobe backend): the count dad-trace keeps equals the
//! application's own. Root only; skips with a reason otherwise. Run with
//! `--test-threads=1`: the tests share the kernel.
use std::time::Duration;

use dad_trace::kernel::BackendChoice;
use integration_tests::{
    needs_root,
    sockets::{Attempt, ODD_CHILD_BINDS, ODD_IPV4_BINDS, PodDad, assert_counted_exactly, errors_of, scenario},
    stock_dad_settings,
};

const BACKEND: BackendChoice = BackendChoice::Tracepoint;
const PAUSE: Duration = Duration::from_millis(50);

#[test]
fn binds_during_dad_are_counted_exactly() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        let (session, seen) = scenario(BACKEND, "dts-bind", PodDad::Stock, Attempt::Bind { pause: PAUSE });
        println!(
            "the application failed {} binds, then bound: {}",
            seen.failures, seen.succeeded
        );
        assert!(seen.succeeded);
        assert_counted_exactly(&session, "dts-bind", "bind", seen);
        let error = errors_of(&session, "dts-bind")[0];
        assert_eq!(
            error.addr,
            Some(integration_tests::sockets::POD_ADDR.parse().expect("literal"))
        );
        assert!(!error.comm.is_empty());
    }
}

#[test]
fn connects_without_a_usable_source_are_counted_exactly() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        let (session, seen) = scenario(BACKEND, "dts-conn", PodDad::Stock, Attempt::Connect { pause: PAUSE });
        println!(
            "the application failed {} connects, then connected: {}",
            seen.failures, seen.succeeded
        );
        assert!(seen.succeeded);
        assert_counted_exactly(&session, "dts-conn", "connect", seen);
        // The destination, not the pod's address.
        assert_eq!(
            errors_of(&session, "dts-conn")[0].addr,
            Some("fd00:5d::99".parse().expect("literal"))
        );
    }
}

/// An application spinning on bind for a whole DAD: one entry with every failure, nothing
/// lost.
#[test]
fn a_spinning_application_is_one_entry_with_every_failure() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        let (session, seen) = scenario(BACKEND, "dts-spin", PodDad::Long, Attempt::SpinBind { tries: 100_000 });
        println!("the application failed {} binds in a row", seen.failures);
        assert_eq!(seen.failures, 100_000, "DAD ended before 100,000 binds: {seen:?}");
        assert_counted_exactly(&session, "dts-spin", "bind", seen);
    }
}

/// What removes the errors: the application's (`IPV6_FREEBIND`), or the pod's settings (no
/// DAD, or optimistic DAD): the application binds at once, nothing is counted.
#[test]
fn freebind_no_dad_and_optimistic_dad_bind_at_once() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        for (name, dad, attempt) in [
            ("dts-free", PodDad::Stock, Attempt::FreeBind),
            ("dts-nodad", PodDad::Off, Attempt::Bind { pause: PAUSE }),
            ("dts-opt", PodDad::Optimistic, Attempt::Bind { pause: PAUSE }),
        ] {
            let (session, seen) = scenario(BACKEND, name, dad, attempt);
            assert!(seen.succeeded && seen.failures == 0, "{name}: {seen:?}");
            if dad == PodDad::Optimistic {
                // The address was usable while DAD ran, and the session says so.
                let pod_addr: std::net::Ipv6Addr = integration_tests::sockets::POD_ADDR.parse().expect("literal");
                let event = session
                    .events
                    .iter()
                    .find(|event| event.netns_name.as_deref() == Some(name) && event.addr == pod_addr)
                    .unwrap_or_else(|| panic!("{name}: its address finished: {:#?}", session.events));
                assert!(event.optimistic && event.dad_ns.is_some(), "{event:#?}");
            }
            assert!(
                errors_of(&session, name).is_empty(),
                "{name}: {:#?}",
                session.socket_errors
            );
            assert!(session.sockets.is_some(), "{name}: socket errors were traced");
        }
    }
}

/// Input that is not a pod's IPv6 failure: an IPv4 address, a short IPv6 address, and a
/// process gone before its count is read. The IPv4 failures are counted apart, the short
/// address is no failure of interest, the gone process keeps its count and its name.
#[test]
fn other_families_short_addresses_and_gone_processes() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        let (session, seen) = scenario(BACKEND, "dts-odd", PodDad::Long, Attempt::OddInputs);
        assert_eq!(seen.failures, ODD_CHILD_BINDS, "the child failed every bind: {seen:?}");
        let tracing = session.sockets.as_ref().expect("socket errors were traced");
        assert!(tracing.other_family >= ODD_IPV4_BINDS, "{tracing:?}");
        let ours: Vec<_> = session
            .socket_errors
            .iter()
            .filter(|error| error.netns_name.as_deref() == Some("dts-odd"))
            .collect();
        assert_eq!(ours.len(), 1, "the child's binds only: {ours:#?}");
        let child = ours[0];
        assert_ne!(child.pid, std::process::id());
        assert_eq!(child.count, ODD_CHILD_BINDS);
        assert_eq!(
            child.addr,
            Some(integration_tests::sockets::POD_ADDR.parse().expect("literal"))
        );
        assert!(child.tentative_for_ns.is_some(), "{child:#?}");
        assert!(!child.comm.is_empty());
        assert!(errors_of(&session, "dts-odd").is_empty(), "nothing of this process");
    }
}
