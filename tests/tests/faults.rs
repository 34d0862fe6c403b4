//! Faults and bad input against the real kernel (tracepoint backend; the VM guests run the
//! scenarios of `integration_tests::faults` with the kprobe backend). Root only; skips with
//! a reason otherwise. Run with `--test-threads=1`: the tests share the kernel's sysctls.
use std::{
    fmt::Write as _,
    net::Ipv6Addr,
    time::{Duration, Instant},
};

use dad_trace::{kernel::BackendChoice, session::Outcome, tracer::RecordOptions};
use integration_tests::{
    faults::{self, assert_sane},
    needs_root,
    netns::{TestNetns, events_of, record_during},
    stock_dad_settings,
};

/// This tier's backend: the only one this machine's kernel attaches (no kprobes).
const BACKEND: BackendChoice = BackendChoice::Tracepoint;

fn options() -> RecordOptions {
    faults::options(BACKEND)
}

fn addr(text: &str) -> Ipv6Addr {
    text.parse().expect("address")
}

// The scenarios shared with the VM guests' kprobe runs (tests/vm_kernel.rs) live in
// integration_tests::faults, with what both backends must show; this tier runs them with
// the tracepoint backend.

#[test]
fn netns_deleted_while_tentative_is_aborted() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        faults::netns_deleted_while_tentative(BACKEND);
    }
}

#[test]
fn interface_deleted_mid_dad_is_aborted() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        faults::interface_deleted_mid_dad(BACKEND);
    }
}

#[test]
fn address_removed_and_readded_is_two_addresses() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        faults::address_removed_and_readded(BACKEND);
    }
}

/// Two namespaces on one bridge with the same address: the second fails DAD, and the
/// report names the first as the holder.
#[test]
fn duplicate_address_on_a_bridge_fails_with_both_sides() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        faults::duplicate_on_a_bridge(BACKEND);
    }
}

/// A namespace bind-mounted outside /run/netns with no process in it: the kernel has it,
/// dad-trace cannot see it. Unmounted on drop.
struct HiddenNetns {
    _dir: tempfile::TempDir,
    mount: std::path::PathBuf,
}

impl HiddenNetns {
    /// Hides `netns`: a second bind mount keeps it alive, then its /run/netns name goes.
    fn hide(netns: TestNetns) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("ns");
        std::fs::write(&mount, b"").expect("mount point");
        let source = format!("/run/netns/{}", netns.name);
        let status = std::process::Command::new("mount")
            .args(["--bind", &source])
            .arg(&mount)
            .status()
            .expect("mount");
        assert!(status.success(), "bind-mount {source}");
        netns.delete();
        Self { _dir: dir, mount }
    }
}

impl Drop for HiddenNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
    }
}

/// The holder of a duplicate is out of dad-trace's sight (another host on the link, here a
/// namespace with no name and no process): the failure says the answer came from off this
/// node, and names no holder.
#[test]
fn duplicate_from_out_of_sight_is_said_to_come_from_off_this_node() {
    if !needs_root() {
        return;
    }
    let _sysctls = stock_dad_settings();
    let address = addr("fd00:dad:f8::1");
    let bridge = TestNetns::new("dtf-obr");
    bridge.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    bridge.ip(&["link", "set", "br0", "up"]);
    let holder = TestNetns::new("dtf-hide");
    holder.veth("porth", Some("dtf-obr"));
    bridge.ip(&["link", "set", "porth", "master", "br0"]);
    holder.ip(&["addr", "add", "fd00:dad:f8::1/64", "dev", "eth0"]);
    holder.wait_settled(address);
    let hidden = HiddenNetns::hide(holder);
    let (session, _namespaces) = record_during(options(), Duration::from_secs(1), move || {
        let seen = TestNetns::new("dtf-seen");
        seen.veth("ports", Some("dtf-obr"));
        bridge.ip(&["link", "set", "ports", "master", "br0"]);
        seen.ip(&["addr", "add", "fd00:dad:f8::1/64", "dev", "eth0"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen
            .flags(address)
            .is_none_or(|flags| flags & dad_trace_common::IFA_F_DADFAILED == 0)
        {
            assert!(Instant::now() < deadline, "the duplicate was never detected");
            std::thread::sleep(Duration::from_millis(20));
        }
        (bridge, seen)
    });
    drop(hidden);
    let failed = events_of(&session, "dtf-seen", address);
    assert_eq!(failed.len(), 1, "{:#?}", session.events);
    assert_eq!(failed[0].outcome, Outcome::Failed);
    assert!(failed[0].duplicate_of.is_empty(), "{:?}", failed[0].duplicate_of);
    let line = dad_trace::output::sinks::event_line(failed[0]);
    assert!(
        line.contains(" failed") && line.ends_with("duplicate answered from off this node"),
        "{line}"
    );
    assert_sane(&session);
}

/// A tenant names its pod's interface with a terminal escape sequence (Linux allows any
/// byte but `/`, `:` and whitespace), or with a right-to-left override that would reorder
/// what follows it on a terminal ("Trojan Source"), and its namespace too: the session keeps
/// the names as they are, every printed form shows them escaped (live line, text, Markdown
/// and HTML reports, JSON, metrics labels).
#[test]
fn names_with_escape_sequences_or_bidi_overrides_are_shown_not_obeyed() {
    if !needs_root() {
        return;
    }
    let _sysctls = stock_dad_settings();
    for (netns_name, hostile, escaped) in [
        ("dtf-esc", "e\u{1b}[2J\u{7}x", "e\\x1b[2J\\x07x"),
        ("dtf-bidi\u{202e}gnp", "ab\u{202e}oc", "ab\\u{202e}oc"),
    ] {
        let (session, _netns) = record_during(options(), Duration::from_millis(500), move || {
            let netns = TestNetns::new(netns_name);
            integration_tests::netns::ip(&[
                "link",
                "add",
                "dtf-esc-h",
                "type",
                "veth",
                "peer",
                "name",
                hostile,
                "netns",
                netns_name,
            ]);
            integration_tests::netns::ip(&["link", "set", "dtf-esc-h", "up"]);
            netns.ip(&["link", "set", hostile, "up"]);
            netns.ip(&["addr", "add", "fd00:dad:f9::1/64", "dev", hostile]);
            netns.wait_settled(addr("fd00:dad:f9::1"));
            netns
        });
        let events = events_of(&session, netns_name, addr("fd00:dad:f9::1"));
        assert_eq!(events.len(), 1, "{:#?}", session.events);
        assert_eq!(
            events[0].ifname, hostile,
            "the session keeps the name as the kernel has it"
        );
        let line = dad_trace::output::sinks::event_line(events[0]);
        let comparison = dad_trace::report::compare::compare(&[("before".into(), session.clone().fold())]);
        let metrics = dad_trace::output::metrics::Metrics::new("tracepoint", "test", true);
        metrics.observe(events[0]);
        let printed = [
            line.clone(),
            dad_trace::report::render_text(&session.clone().fold(), true),
            dad_trace::report::markdown::render_markdown(&comparison),
            dad_trace::report::html::render(&comparison),
            dad_trace::text::json(events[0], false).expect("json"),
            metrics.render(),
        ];
        for text in &printed {
            assert!(
                !text
                    .chars()
                    .any(|c| (c.is_control() && c != '\n') || dad_trace::text::is_format(c)),
                "{text:?}"
            );
        }
        assert!(line.contains(escaped), "{line}");
        let json: serde_json::Value = serde_json::from_str(&printed[4]).expect("JSON");
        assert_eq!(json["ifname"], hostile, "JSON escapes, a parser reads the name back");
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dtf-esc-h"])
            .output();
    }
}

/// CPU time this process has used so far (user + system, from /proc/self/stat).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    // Fields after the command name (which may hold spaces): utime and stime are 12th and 13th.
    let fields: Vec<u64> = stat
        .rsplit(')')
        .next()
        .expect("fields")
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse().expect("ticks"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("positive");
    Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks_per_second)
}

/// 500 DAD failures at once (anyone on the link can answer DAD for any address): each is
/// named with its holder, and finding them costs a few looks through the node's namespaces,
/// not one per failure. On a loaded machine the bridge drops a probe or an answer now and
/// then, and that address settles: every address the kernel says failed must be traced as
/// failed, and nearly all must fail for the flood to be one.
#[test]
fn five_hundred_duplicates_at_once_cost_a_few_looks() {
    const COUNT: u16 = 500;
    if !needs_root() {
        return;
    }
    let _sysctls = stock_dad_settings();
    let bridge = TestNetns::new("dtf-fbr");
    bridge.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    bridge.ip(&["link", "set", "br0", "up"]);
    let batch = |dev: &str| {
        let mut text = String::new();
        for i in 1..=COUNT {
            let _ = writeln!(text, "addr add fd00:dad:fa::{i:x}/64 dev {dev}");
        }
        text
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("addresses.batch");
    std::fs::write(&file, batch("eth0")).expect("batch");
    let holder = TestNetns::new("dtf-fh");
    holder.veth("portfh", Some("dtf-fbr"));
    bridge.ip(&["link", "set", "portfh", "master", "br0"]);
    holder.ip(&["-batch", file.to_str().expect("path")]);
    holder.wait_settled(Ipv6Addr::new(0xfd00, 0x0dad, 0xfa, 0, 0, 0, 0, COUNT));
    let cpu_before = cpu_time();
    let (session, namespaces) = record_during(options(), Duration::from_secs(1), move || {
        let copier = TestNetns::new("dtf-fc");
        copier.veth("portfc", Some("dtf-fbr"));
        bridge.ip(&["link", "set", "portfc", "master", "br0"]);
        copier.ip(&["-batch", file.to_str().expect("path")]);
        // One read of the namespace's addresses per look (cheap: this process's CPU is what
        // the test measures).
        let deadline = Instant::now() + Duration::from_secs(20);
        let handle = std::path::Path::new("/run/netns/dtf-fc");
        let kernel_failed = loop {
            let rows = dad_trace::node::netns::addresses_in(handle).expect("addresses");
            let ours: Vec<_> = rows.iter().filter(|row| row.addr.segments()[2] == 0xfa).collect();
            let failed = ours
                .iter()
                .filter(|row| row.flags & dad_trace_common::IFA_F_DADFAILED != 0)
                .count();
            // A failed address keeps its tentative flag; any other tentative one is in DAD.
            let in_dad = ours
                .iter()
                .filter(|row| {
                    row.flags & dad_trace_common::IFA_F_TENTATIVE != 0
                        && row.flags & dad_trace_common::IFA_F_DADFAILED == 0
                })
                .count();
            if ours.len() == usize::from(COUNT) && in_dad == 0 {
                break failed;
            }
            assert!(
                Instant::now() < deadline,
                "{failed} of {COUNT} failed, {in_dad} still in DAD"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        (bridge, holder, copier, kernel_failed)
    });
    let kernel_failed = namespaces.3;
    let cpu = cpu_time().saturating_sub(cpu_before);
    let failed: Vec<_> = session
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref() == Some("dtf-fc") && e.outcome == Outcome::Failed)
        .collect();
    println!(
        "{} failures traced of {kernel_failed} the kernel reports; this process used {cpu:?} of CPU meanwhile",
        failed.len()
    );
    assert!(
        kernel_failed >= usize::from(COUNT) * 9 / 10,
        "only {kernel_failed} of {COUNT} failed"
    );
    assert_eq!(failed.len(), kernel_failed);
    for event in &failed {
        let sides: Vec<(&str, &str)> = event
            .duplicate_of
            .iter()
            .map(|h| (h.name.as_str(), h.ifname.as_str()))
            .collect();
        assert_eq!(sides, [("dtf-fh", "eth0")], "{}", event.addr);
    }
    // One look per failure (a /proc scan and a read of every namespace's addresses each)
    // costs several times what the index does, most of which is tracing the addresses and
    // this test's own work: the bound sits between the two.
    assert!(cpu < Duration::from_secs(3), "{cpu:?} of CPU for {COUNT} failures");
    assert_sane(&session);
}

/// A ring buffer too small for a burst: the kernel counts what it drops, the report shows
/// it, and what arrived is still right.
#[test]
fn tiny_ring_buffer_counts_lost_events() {
    if !needs_root() {
        return;
    }
    let _sysctls = stock_dad_settings();
    let options = RecordOptions {
        ring_bytes: 4096,
        ..options()
    };
    let (session, _netns) = record_during(options, Duration::from_secs(3), move || {
        let netns = TestNetns::new("dtf-ring");
        netns.veth("dtf-ring-h", None);
        let mut batch = String::new();
        for i in 1..=3000 {
            let _ = writeln!(batch, "addr add fd00:dad:f5::{i:x}/64 dev eth0");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ring.batch");
        std::fs::write(&file, batch).expect("batch");
        netns.ip(&["-batch", file.to_str().expect("path")]);
        std::thread::sleep(Duration::from_secs(3));
        netns
    });
    println!(
        "{} events, {} lost, {} unfinished",
        session.events.len(),
        session.lost_events,
        session.unfinished.len()
    );
    assert!(session.lost_events > 0, "a 4 KiB ring must overflow on 3000 addresses");
    let report = dad_trace::report::render_text(&session.clone().fold(), false);
    assert!(
        report.contains(&format!("lost events: {}", session.lost_events))
            && report.contains("WARNING: the kernel dropped events"),
        "{report}"
    );
    assert_sane(&session);
}

/// Addresses that were tentative before the tracer started are marked partial (their delays
/// are lower bounds), never reported as if complete.
#[test]
fn tracer_started_mid_dad_reports_partial() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        faults::tracer_started_mid_dad(BACKEND);
    }
}

/// 10,000 addresses added and removed mid-DAD: nothing stays in flight, and the kernel side
/// keeps no per-address state at all.
#[test]
fn churn_of_ten_thousand_addresses_leaves_nothing_in_flight() {
    if !needs_root() {
        return;
    }
    assert!(
        integration_tests::per_address_kernel_maps().is_empty(),
        "no kernel map may hold per-address state"
    );
    let _sysctls = stock_dad_settings();
    let options = RecordOptions {
        ring_bytes: 16 << 20,
        ..options()
    };
    let (session, ()) = record_during(options, Duration::from_secs(4), move || {
        let netns = TestNetns::new("dtf-churn");
        netns.veth("dtf-churn-h", None);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("churn.batch");
        for round in 0..10 {
            let mut add = String::new();
            for i in 1..=1000 {
                let _ = writeln!(add, "addr add fd00:dad:f7:{round:x}::{i:x}/64 dev eth0");
            }
            let del = add.replace("addr add", "addr del");
            std::fs::write(&file, add + &del).expect("batch");
            netns.ip(&["-batch", file.to_str().expect("path")]);
        }
        netns.delete();
    });
    let churned = session
        .events
        .iter()
        .filter(|event| event.netns_name.as_deref() == Some("dtf-churn"))
        .filter(|event| event.addr.segments()[2] == 0xf7)
        .count();
    println!(
        "{churned} churned addresses finished, {} lost events, {} unfinished",
        session.lost_events,
        session.unfinished.len()
    );
    let mut by_addr: std::collections::HashMap<Ipv6Addr, Vec<String>> = std::collections::HashMap::new();
    for event in session.events.iter().filter(|e| e.addr.segments()[2] == 0xf7) {
        by_addr.entry(event.addr).or_default().push(format!(
            "{} {} partial={} {}",
            event.outcome,
            event.tentative_ns,
            event.partial,
            event.time.format("%H:%M:%S%.6f")
        ));
    }
    for (addr, seen) in by_addr.iter().filter(|(_, seen)| seen.len() > 1).take(5) {
        println!("{addr}: {seen:?}");
    }
    println!("distinct: {}", by_addr.len());
    assert_eq!(session.lost_events, 0);
    assert_eq!(churned, by_addr.len(), "no churned address ends twice");
    // Every one of them, named if not: an address settling just before the sweeper looked
    // used to be dropped as "settled unseen" while its settle event was still queued.
    let missing: Vec<String> = (0..10_u16)
        .flat_map(|round| (1..=1000_u16).map(move |i| Ipv6Addr::new(0xfd00, 0x0dad, 0xf7, round, 0, 0, 0, i)))
        .filter(|addr| !by_addr.contains_key(addr))
        .map(|addr| addr.to_string())
        .collect();
    assert!(missing.is_empty(), "never seen: {missing:?}");
    assert_eq!(churned, 10_000);
    // Each was removed before or after it settled: settled or aborted, complete, never failed.
    for event in session.events.iter().filter(|e| e.addr.segments()[2] == 0xf7) {
        assert!(
            matches!(event.outcome, Outcome::Settled | Outcome::Aborted) && !event.partial,
            "{event:?}"
        );
    }
    assert!(session.unfinished.is_empty(), "{:?}", session.unfinished.first());
    assert_sane(&session);
}

/// A pod whose host-side veth is held down for 3 s after its address is added
/// (aws/amazon-vpc-cni-k8s#3764): DAD starts only on a ready link, so the wait is mostly the
/// link's, and the phases add up to the tentative time.
#[test]
fn a_host_veth_held_down_is_a_wait_for_the_link() {
    if needs_root() {
        let _sysctls = stock_dad_settings();
        let pod = TestNetns::new("dtp-link");
        // The pair made here, the pod's end up and the host's not yet: the pod's eth0 has
        // never had a carrier, so the kernel holds DAD until it has one. (A carrier lost later
        // would not: the interface stays ready.) Deleting the namespace deletes the pair.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dtp-link-h"])
            .output();
        integration_tests::netns::ip(&[
            "link",
            "add",
            "dtp-link-h",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            "dtp-link",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        let name = pod.name.clone();
        // After the link comes up: a random delay of up to 1 s, then 1 s of probing.
        let (session, ()) = record_during(options(), Duration::from_millis(3500), move || {
            integration_tests::netns::ip(&["-n", &name, "-6", "addr", "add", "fd00:5f::1/64", "dev", "eth0"]);
            std::thread::sleep(Duration::from_secs(3));
            integration_tests::netns::ip(&["link", "set", "dtp-link-h", "up"]);
        });
        pod.wait_settled(addr("fd00:5f::1"));
        let events = events_of(&session, "dtp-link", addr("fd00:5f::1"));
        assert_eq!(events.len(), 1, "{:#?}", session.events);
        let event = events[0];
        println!(
            "tentative {} ns: link wait {:?}, delay {:?}, probing {:?}",
            event.tentative_ns, event.link_wait_ns, event.delay_ns, event.probing_ns
        );
        assert_eq!(event.outcome, Outcome::Settled);
        let link_wait = event.link_wait_ns.expect("the wait for the link is seen");
        assert!(link_wait >= 2_500_000_000, "{event:#?}");
        let probing = event.probing_ns.expect("the first probe is seen");
        let parts = link_wait + event.delay_ns.unwrap_or(0) + probing;
        assert!(
            parts.abs_diff(event.tentative_ns) <= 1_000_000,
            "phases {parts} ns vs tentative {} ns",
            event.tentative_ns
        );
        assert!(!event.optimistic);
    }
}
