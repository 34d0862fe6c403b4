//! The binary under faults: Ctrl-C/SIGTERM at any moment end in a complete session file,
//! SIGKILL leaves the previous file intact, two tracers run at once, and missing privileges
//! or kernel support exit with their documented codes. Needs root (it traces the kernel and
//! creates synthetic pods); skips with a reason otherwise.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use dad_trace::{error, node::sysctl::SysctlGuard, session::Session};
use nix::sys::signal::Signal;

mod common;

use common::{dad_trace, needs_root};
use test_support::{Running, exit_of, spawn_record};

/// Removes what a killed recorder could not (its synthetic pods' namespaces).
fn remove_leftover_pods(prefix: &str) {
    for index in 0..3 {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{prefix}{index}")])
            .output();
    }
}

fn interrupted_recording_saves(signal_kind: Signal, prefix: &str, after: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    // Not waited on until it traces: the signal may come before. Only until its `main` runs:
    // no process can handle a signal before then.
    let recording = Running::spawn(
        dad_trace()
            .args([
                "record",
                "--backend",
                "tracepoint",
                "--quiet",
                "--synthetic-prefix",
                prefix,
            ])
            .args(["--synthetic-pods", "3", "-o"])
            .arg(&path),
    );
    recording.until_handling_stop_signals();
    std::thread::sleep(after);
    // The pods' namespaces as they are when the signal goes: other tests' pods have the same
    // addresses (fd00:dad::N), so the session's pods are found by namespace inode.
    let pods: Vec<Option<u32>> = (0..3)
        .map(|index| {
            std::fs::metadata(format!("/run/netns/{prefix}{index}"))
                .ok()
                .and_then(|meta| u32::try_from(std::os::unix::fs::MetadataExt::ino(&meta)).ok())
        })
        .collect();
    recording.signal(signal_kind);
    let started = Instant::now();
    let output = recording.finish();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{signal_kind} after {after:?}: exit {}: {stderr}",
        output.status
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let session = Session::load(&path)
        .unwrap_or_else(|e| panic!("{signal_kind} after {after:?}: no valid session: {e:#}\n{stderr}"));
    assert!(session.ended_at >= session.started_at);
    assert!(
        !Path::new(&format!("/run/netns/{prefix}0")).exists(),
        "synthetic pods removed"
    );
    // Complete: every address of the pods is finished or listed as still tentative. The pod
    // addresses exist once the pods do (the recorder creates them before it stops); the
    // link-locals come with carrier, which the kernel's linkwatch may deliver up to a second
    // after the pods exist, so a recording stopped sooner may end before they exist.
    let missing = missing_addresses(&session, prefix, &pods, after >= Duration::from_millis(1500));
    assert!(
        missing.is_empty(),
        "{signal_kind} after {after:?}: {missing:?} neither finished nor unfinished"
    );
}

/// The addresses of synthetic pods `prefix0..` (namespace inodes `pods`, `None` for a pod not
/// yet created when the signal went) that the session neither finished nor lists as unfinished: each pod's
/// `fd00:dad::N` and, when `link_locals`, its eth0 and host veth link-locals.
fn missing_addresses(session: &Session, prefix: &str, pods: &[Option<u32>], link_locals: bool) -> Vec<String> {
    // (netns inode, interface, address) of everything the session knows about.
    let known: Vec<(u32, &str, std::net::Ipv6Addr)> = session
        .events
        .iter()
        .map(|e| (e.netns_inode, e.ifname.as_str(), e.addr))
        .chain(
            session
                .unfinished
                .iter()
                .map(|u| (u.netns_inode, u.ifname.as_str(), u.addr)),
        )
        .collect();
    let link_local = |addr: &std::net::Ipv6Addr| addr.segments()[0] == 0xfe80;
    let mut missing = Vec::new();
    for (index, pod) in pods.iter().enumerate() {
        let global = std::net::Ipv6Addr::new(0xfd00, 0x0dad, 0, 0, 0, 0, 0, u16::try_from(index + 1).expect("small"));
        // A pod created after the signal still is before the recorder stops: its address is
        // there, in a namespace the test never saw.
        let Some(&(pod_inode, _, _)) = known
            .iter()
            .find(|(inode, _, addr)| *addr == global && pod.is_none_or(|pod| pod == *inode))
        else {
            missing.push(format!("{prefix}{index} {global}"));
            continue;
        };
        if !link_locals {
            continue;
        }
        if !known
            .iter()
            .any(|(inode, ifname, addr)| *inode == pod_inode && *ifname == "eth0" && link_local(addr))
        {
            missing.push(format!("{prefix}{index} eth0 link-local"));
        }
        let host_veth = format!("{prefix}h{index}");
        if !known
            .iter()
            .any(|(_, ifname, addr)| *ifname == host_veth && link_local(addr))
        {
            missing.push(format!("{host_veth} link-local"));
        }
    }
    missing
}

/// From the first milliseconds of start-up (before the kernel programs are attached) to
/// after the pods settled.
#[test]
fn sigint_at_any_moment_saves_the_session() {
    if needs_root() {
        for ms in [30, 150, 800, 2500] {
            interrupted_recording_saves(Signal::SIGINT, "dts-i", Duration::from_millis(ms));
        }
    }
}

#[test]
fn sigterm_at_any_moment_saves_the_session() {
    if needs_root() {
        for ms in [30, 400, 1500] {
            interrupted_recording_saves(Signal::SIGTERM, "dts-t", Duration::from_millis(ms));
        }
    }
}

/// The session is written to a temporary file and renamed: a recorder killed outright never
/// leaves a torn file, and the one it would have replaced survives.
#[test]
fn sigkill_leaves_the_previous_session_intact() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let previous = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default-20-pods.json"))
        .expect("fixture");
    std::fs::write(&path, &previous).expect("write");
    let recording = Running::spawn(
        dad_trace()
            .args([
                "record",
                "--backend",
                "tracepoint",
                "--quiet",
                "--synthetic-prefix",
                "dts-k",
            ])
            .args(["--synthetic-pods", "3", "-o"])
            .arg(&path),
    );
    std::thread::sleep(Duration::from_millis(1500));
    recording.stop(Signal::SIGKILL);
    remove_leftover_pods("dts-k");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        previous,
        "the previous file is untouched"
    );
    Session::load(&path).expect("still a valid session");
}

/// Two recorders at once (say, an agent and an engineer's ad-hoc run) both see every address,
/// with the same delays.
#[test]
fn two_processes_trace_at_once() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spawn = |name: &str| {
        spawn_record(
            dad_trace()
                .args(["record", "--backend", "tracepoint", "--quiet", "--cri-socket", "none"])
                // Only this test's pods count (the pod side: 2 addresses each).
                .args(["--netns", "dts-2*", "--count", "6", "--duration", "30", "-o"])
                .arg(dir.path().join(name)),
        )
    };
    let first = spawn("first.json");
    let second = spawn("second.json");
    let pods = dad_trace::node::synthetic::create_pods("dts-2", 3).expect("pods");
    for recording in [first, second] {
        let status = recording.finish().status;
        assert!(status.success());
    }
    drop(pods);
    let first = Session::load(&dir.path().join("first.json")).expect("first");
    let second = Session::load(&dir.path().join("second.json")).expect("second");
    for event in first
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref().is_some_and(|n| n.starts_with("dts-2")))
    {
        let twin = second
            .events
            .iter()
            .find(|other| other.addr == event.addr && other.netns_name == event.netns_name)
            .unwrap_or_else(|| panic!("{} missing from the second recorder", event.addr));
        assert!(
            twin.tentative_ns.abs_diff(event.tentative_ns) < 2_000_000,
            "{event:?} vs {twin:?}"
        );
    }
    assert_eq!(
        first
            .events
            .iter()
            .filter(|e| e.netns_name.as_deref().is_some_and(|n| n.starts_with("dts-2")))
            .count(),
        6
    );
}

/// No privileges, a missing capability, no BTF: a message saying what to do, and the exit
/// code SECURITY.md documents (Exit codes).
#[test]
fn missing_privileges_and_kernel_support_have_exit_codes() {
    if !needs_root() {
        return;
    }
    let binary = env!("CARGO_BIN_EXE_dad-trace");
    // Another user: not allowed to trace at all.
    let (code, stderr) = exit_of(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", binary])
            .args(["record", "--duration", "1"]),
    );
    assert_eq!(code, Some(i32::from(error::EXIT_PRIVILEGES)), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    // Root without CAP_SYSLOG, where the kernel hides symbol addresses from such processes
    // (kptr_restrict=1 does for every kernel; it is put back after).
    let mut sysctls = SysctlGuard::default();
    if dad_trace::node::sysctl::read("kernel.kptr_restrict").expect("readable") == "0" {
        sysctls.set("kernel.kptr_restrict", "1").expect("sysctl");
    }
    let (code, stderr) = exit_of(
        Command::new("setpriv")
            .args(["--inh-caps=-syslog", "--bounding-set=-syslog", binary])
            .args(["record", "--duration", "1", "--cri-socket", "none"]),
    );
    drop(sysctls);
    assert_eq!(code, Some(i32::from(error::EXIT_PRIVILEGES)), "{stderr}");
    assert!(stderr.contains("CAP_SYSLOG"), "{stderr}");
    // No BTF.
    let (code, stderr) = exit_of(dad_trace().args(["record", "--duration", "1", "--btf", "/nonexistent/vmlinux"]));
    assert_eq!(code, Some(i32::from(error::EXIT_KERNEL)), "{stderr}");
    assert!(stderr.contains("--btf") && stderr.contains("No such file"), "{stderr}");
    // A command line that does not parse.
    let (code, _) = exit_of(dad_trace().args(["record", "--ring-bytes", "1000"]));
    assert_eq!(code, Some(i32::from(error::EXIT_USAGE)));
}
