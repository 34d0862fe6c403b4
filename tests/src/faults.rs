//! Fault scenarios against the real kernel, for either backend: the host tier runs them with
//! the tracepoint backend (`tests/faults.rs`), the VM guests with the kprobe backend
//! (`tests/vm_kernel.rs`), which sees the failure paths through their own kernel functions
//! (`addrconf_dad_failure`, `ipv6_del_addr`, `inet6_ifa_finish_destroy`,
//! `addrconf_dad_stop`). Each scenario asserts what holds for both backends and returns what
//! a backend-specific test looks at further: the session, timings seen from userspace, and
//! how often each kernel program ran while it recorded.
use std::{
    collections::BTreeMap,
    net::Ipv6Addr,
    time::{Duration, Instant},
};

use dad_trace::{
    kernel::BackendChoice,
    record::enrich::cri::SocketChoice,
    session::{AddressEvent, Outcome, Session},
    tracer::RecordOptions,
};

use crate::netns::{TestNetns, events_of, record_during_then};

/// Recording options for a fault scenario with `backend`.
#[must_use]
pub fn options(backend: BackendChoice) -> RecordOptions {
    RecordOptions {
        backend,
        cri_socket: SocketChoice::Off,
        stale_after: match backend {
            // Cancelled DAD is invisible to the tracepoint backend: check silent addresses soon.
            BackendChoice::Tracepoint | BackendChoice::Auto => Duration::from_millis(500),
            // The kprobe backend sees removals, frees and failures themselves: the sweeper
            // never gets to end an address within a scenario, so every outcome is a hook's.
            BackendChoice::Kprobe => Duration::from_mins(10),
        },
        ..RecordOptions::default()
    }
}

fn addr(text: &str) -> Ipv6Addr {
    text.parse().expect("address")
}

/// How many times each loaded BPF program ran (by program name) while a scenario recorded:
/// the kernel's own count (`BPF_ENABLE_STATS`), independent of dad-trace's tracker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProgramRuns(pub BTreeMap<String, u64>);

impl ProgramRuns {
    /// Runs of the program called `name` (0 when it did not run or is not loaded).
    #[must_use]
    pub fn of(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    fn read() -> Self {
        let mut runs = BTreeMap::new();
        for info in aya::programs::loaded_programs() {
            let info = info.expect("program info");
            if let Some(name) = info.name_as_str() {
                *runs.entry(name.to_string()).or_default() += info.run_count();
            }
        }
        Self(runs)
    }
}

/// Records while `workload` runs and for `after` more; returns the session, what the
/// workload returned and, for the kprobe backend, how often each program ran, counted just
/// before the recorder stopped (its programs still loaded). The tracepoint backend's
/// programs run for every work item of the machine: their counts say nothing, and are not
/// taken (empty).
pub fn record_counting<T: Send + 'static>(
    options: RecordOptions,
    after: Duration,
    workload: impl FnOnce() -> T + Send + 'static,
) -> (Session, T, ProgramRuns) {
    let counting = options.backend == BackendChoice::Kprobe;
    // Counting lasts as long as this descriptor is open.
    let _stats = counting.then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS"));
    record_during_then(options, after, workload, move || {
        if counting {
            ProgramRuns::read()
        } else {
            ProgramRuns::default()
        }
    })
}

/// Histograms only hold settled addresses with sane delays.
pub fn assert_sane(session: &Session) {
    for event in &session.events {
        assert!(event.tentative_ns < 10_000_000_000, "{event:?}");
        if let Some(dad) = event.dad_ns {
            assert!(dad <= event.tentative_ns, "{event:?}");
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).expect("fits")
}

/// What a scenario leaves for backend-specific checks.
pub struct Outcomes {
    pub session: Session,
    pub runs: ProgramRuns,
    /// The scenario's address events of interest, in order.
    pub events: Vec<AddressEvent>,
    /// Bounds on the first event's tentative time seen from userspace, where the scenario
    /// knows them: from the end of the `ip` call that added it to the start of the one that
    /// removed it, and from the start of the one to the end of the other.
    pub lifetime: Option<(u64, u64)>,
}

/// Runs `add` then, `hold` later, `remove`, timing both `ip` calls: the bounds of the
/// address's life from userspace (see [`Outcomes::lifetime`]).
fn timed_life(add: impl FnOnce(), hold: Duration, remove: impl FnOnce()) -> (u64, u64) {
    let add_started = Instant::now();
    add();
    let added = Instant::now();
    std::thread::sleep(hold);
    let remove_started = Instant::now();
    remove();
    let removed = Instant::now();
    (nanos(remove_started - added), nanos(removed - add_started))
}

/// A namespace deleted while its address is tentative: the address is aborted, once.
pub fn netns_deleted_while_tentative(backend: BackendChoice) -> Outcomes {
    let address = addr("fd00:dad:f1::1");
    let (session, lifetime, runs) = record_counting(options(backend), Duration::from_secs(3), move || {
        let netns = TestNetns::new("dtf-gone");
        netns.veth("dtf-gone-h", None);
        netns.ip(&["addr", "add", "fd00:dad:f1::1/64", "dev", "eth0"]);
        let added = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let removing = Instant::now();
        netns.delete();
        // The namespace's devices go in the kernel's cleanup work, after `ip` returns: only
        // the lower bound is known here.
        nanos(removing - added)
    });
    let events = events_of(&session, "dtf-gone", address);
    assert_eq!(events.len(), 1, "{:#?}", session.events);
    assert_eq!(events[0].outcome, Outcome::Aborted);
    assert!(session.unfinished.iter().all(|u| u.addr != address));
    assert_sane(&session);
    let events = events.into_iter().cloned().collect();
    Outcomes {
        session,
        runs,
        events,
        lifetime: Some((lifetime, u64::MAX)),
    }
}

/// An interface deleted mid-DAD: its address is aborted.
pub fn interface_deleted_mid_dad(backend: BackendChoice) -> Outcomes {
    let address = addr("fd00:dad:f2::1");
    let (session, (_netns, lifetime), runs) = record_counting(options(backend), Duration::from_secs(3), move || {
        let netns = TestNetns::new("dtf-ifdel");
        netns.veth("dtf-ifdel-h", None);
        let lifetime = timed_life(
            || netns.ip(&["addr", "add", "fd00:dad:f2::1/64", "dev", "eth0"]),
            Duration::from_millis(300),
            || netns.ip(&["link", "del", "eth0"]),
        );
        (netns, lifetime)
    });
    let events = events_of(&session, "dtf-ifdel", address);
    assert_eq!(events.len(), 1, "{:#?}", session.events);
    assert_eq!(events[0].outcome, Outcome::Aborted);
    assert_sane(&session);
    let events = events.into_iter().cloned().collect();
    Outcomes {
        session,
        runs,
        events,
        lifetime: Some(lifetime),
    }
}

/// An address removed mid-DAD and added again: two addresses, aborted then settled, the
/// second timed from its own creation.
pub fn address_removed_and_readded(backend: BackendChoice) -> Outcomes {
    let address = addr("fd00:dad:f3::1");
    let (session, (_netns, lifetime, readd_to_settled), runs) =
        record_counting(options(backend), Duration::from_secs(1), move || {
            let netns = TestNetns::new("dtf-readd");
            netns.veth("dtf-readd-h", None);
            let lifetime = timed_life(
                || netns.ip(&["addr", "add", "fd00:dad:f3::1/64", "dev", "eth0"]),
                Duration::from_millis(300),
                || netns.ip(&["addr", "del", "fd00:dad:f3::1/64", "dev", "eth0"]),
            );
            std::thread::sleep(Duration::from_millis(100));
            let readded = Instant::now();
            netns.ip(&["addr", "add", "fd00:dad:f3::1/64", "dev", "eth0"]);
            netns.wait_settled(address);
            (netns, lifetime, readded.elapsed())
        });
    let events = events_of(&session, "dtf-readd", address);
    let outcomes: Vec<Outcome> = events.iter().map(|event| event.outcome).collect();
    assert_eq!(outcomes, [Outcome::Aborted, Outcome::Settled], "{events:#?}");
    // The second address is timed from its own creation, not the first one's.
    let settled = events[1].tentative_ns;
    let observed = nanos(readd_to_settled);
    assert!(
        settled <= observed + 20_000_000 && settled > 200_000_000,
        "tentative {settled} ns vs {observed} ns observed from the re-add"
    );
    assert_sane(&session);
    let events = events.into_iter().cloned().collect();
    Outcomes {
        session,
        runs,
        events,
        lifetime: Some(lifetime),
    }
}

/// Two namespaces on one bridge with the same address: the second fails DAD, and the
/// report names the first as the holder. Events: the holder's, then the failed one.
pub fn duplicate_on_a_bridge(backend: BackendChoice) -> Outcomes {
    let address = addr("fd00:dad:f4::1");
    let (session, _namespaces, runs) = record_counting(options(backend), Duration::from_secs(1), move || {
        let bridge = TestNetns::new("dtf-br");
        bridge.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        bridge.ip(&["link", "set", "br0", "up"]);
        let first = TestNetns::new("dtf-dup-a");
        let second = TestNetns::new("dtf-dup-b");
        for (netns, port) in [(&first, "porta"), (&second, "portb")] {
            netns.veth(port, Some("dtf-br"));
            bridge.ip(&["link", "set", port, "master", "br0"]);
        }
        first.ip(&["addr", "add", "fd00:dad:f4::1/64", "dev", "eth0"]);
        first.wait_settled(address);
        second.ip(&["addr", "add", "fd00:dad:f4::1/64", "dev", "eth0"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while second
            .flags(address)
            .is_none_or(|flags| flags & dad_trace_common::IFA_F_DADFAILED == 0)
        {
            assert!(Instant::now() < deadline, "the duplicate was never detected");
            std::thread::sleep(Duration::from_millis(20));
        }
        (bridge, first, second)
    });
    let holder = events_of(&session, "dtf-dup-a", address);
    assert_eq!(holder.len(), 1);
    assert_eq!(holder[0].outcome, Outcome::Settled);
    let failed = events_of(&session, "dtf-dup-b", address);
    assert_eq!(failed.len(), 1, "{:#?}", session.events);
    assert_eq!(failed[0].outcome, Outcome::Failed);
    let sides: Vec<(&str, &str)> = failed[0]
        .duplicate_of
        .iter()
        .map(|h| (h.name.as_str(), h.ifname.as_str()))
        .collect();
    assert_eq!(sides, [("dtf-dup-a", "eth0")]);
    let line = dad_trace::output::sinks::event_line(failed[0]);
    assert!(
        line.contains("failed") && line.contains("duplicate of dtf-dup-a eth0"),
        "{line}"
    );
    let report = dad_trace::report::render_text(&session.clone().fold(), false);
    assert!(report.contains("failed 1"), "{report}");
    assert_sane(&session);
    let events = holder.into_iter().chain(failed).cloned().collect();
    Outcomes {
        session,
        runs,
        events,
        lifetime: None,
    }
}

/// Addresses that were tentative before the tracer started are marked partial (their delays
/// are lower bounds), never reported as if complete.
pub fn tracer_started_mid_dad(backend: BackendChoice) -> Outcomes {
    let address = addr("fd00:dad:f6::1");
    let netns = TestNetns::new("dtf-late");
    // Five probes (~5 s of DAD): the tracer surely starts in the middle.
    let sysctl = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            "dtf-late",
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.dad_transmits=5",
        ])
        .status()
        .expect("sysctl");
    assert!(sysctl.success());
    netns.veth("dtf-late-h", None);
    netns.ip(&["addr", "add", "fd00:dad:f6::1/64", "dev", "eth0"]);
    let added = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let (session, _netns, runs) = record_counting(options(backend), Duration::from_millis(200), move || {
        netns.wait_settled(address);
        netns
    });
    let events = events_of(&session, "dtf-late", address);
    assert_eq!(events.len(), 1, "{:#?}", session.events);
    assert!(events[0].partial, "{:?}", events[0]);
    let true_wait = nanos(added.elapsed());
    assert!(events[0].tentative_ns < true_wait);
    assert_sane(&session);
    let events = events.into_iter().cloned().collect();
    Outcomes {
        session,
        runs,
        events,
        lifetime: None,
    }
}
