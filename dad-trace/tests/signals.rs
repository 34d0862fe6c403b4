//! The binary under faults: Ctrl-C/SIGTERM at any moment end in a complete session file,
//! SIGKILL leaves the previous file intact, two tracers run at once, and missing privileges
//! or kernel support exit with their documented codes. Needs root (it traces the kernel and
//! creates synthetic pods); skips with a reason otherwise.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use dad_trace::{error, session::Session};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

fn allowed(test: &str) -> bool {
    if let Err(e) = dad_trace::kernel::check_privileges() {
        println!("SKIP {test}: needs root ({e:#})");
        return false;
    }
    true
}

fn dad_trace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dad-trace"));
    command.env("RUST_BACKTRACE", "0");
    command
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).expect("pid fits")), signal).expect("signal");
}

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
    let child = dad_trace()
        .args([
            "record",
            "--backend",
            "tracepoint",
            "--quiet",
            "--synthetic-prefix",
            prefix,
        ])
        .args(["--synthetic-pods", "3", "-o"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dad-trace");
    std::thread::sleep(after);
    signal(&child, signal_kind);
    let started = Instant::now();
    let output = child.wait_with_output().expect("wait");
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
}

/// From the first milliseconds of start-up (before the kernel programs are attached) to
/// after the pods settled.
#[test]
fn sigint_at_any_moment_saves_the_session() {
    if allowed("sigint_at_any_moment_saves_the_session") {
        for ms in [30, 150, 800, 2500] {
            interrupted_recording_saves(Signal::SIGINT, "dts-i", Duration::from_millis(ms));
        }
    }
}

#[test]
fn sigterm_at_any_moment_saves_the_session() {
    if allowed("sigterm_at_any_moment_saves_the_session") {
        for ms in [30, 400, 1500] {
            interrupted_recording_saves(Signal::SIGTERM, "dts-t", Duration::from_millis(ms));
        }
    }
}

/// The session is written to a temporary file and renamed: a recorder killed outright never
/// leaves a torn file, and the one it would have replaced survives.
#[test]
fn sigkill_leaves_the_previous_session_intact() {
    if !allowed("sigkill_leaves_the_previous_session_intact") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let previous = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default-20-pods.json"))
        .expect("fixture");
    std::fs::write(&path, &previous).expect("write");
    let mut child = dad_trace()
        .args([
            "record",
            "--backend",
            "tracepoint",
            "--quiet",
            "--synthetic-prefix",
            "dts-k",
        ])
        .args(["--synthetic-pods", "3", "-o"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dad-trace");
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, Signal::SIGKILL);
    child.wait().expect("wait");
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
    if !allowed("two_processes_trace_at_once") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spawn = |name: &str| {
        let mut child = dad_trace()
            .args(["record", "--backend", "tracepoint", "--quiet", "--cri-socket", "none"])
            .args(["--count", "9", "--duration", "30", "-o"])
            .arg(dir.path().join(name))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dad-trace");
        // Attached once it says so.
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        while !line.starts_with("Tracing") {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut stderr, &mut line).expect("read") > 0,
                "no start"
            );
        }
        (child, stderr)
    };
    let (first, _first_err) = spawn("first.json");
    let (second, _second_err) = spawn("second.json");
    let pods = dad_trace::node::synthetic::create_pods("dts-2", 3).expect("pods");
    for child in [first, second] {
        let status = child.wait_with_output().expect("wait").status;
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

fn exit_of(command: &mut Command) -> (Option<i32>, String) {
    let output = command.stdout(Stdio::null()).output().expect("run dad-trace");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// No privileges, a missing capability, no BTF: a message saying what to do, and the exit
/// code the README documents.
#[test]
fn missing_privileges_and_kernel_support_have_exit_codes() {
    if !allowed("missing_privileges_and_kernel_support_have_exit_codes") {
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
    // Root without CAP_SYSLOG, where the kernel hides symbol addresses from such processes.
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
    let restrict = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict").unwrap_or_default();
    if paranoid.trim().parse::<i32>().unwrap_or(2) >= 2 || restrict.trim() != "0" {
        let (code, stderr) = exit_of(
            Command::new("setpriv")
                .args(["--inh-caps=-syslog", "--bounding-set=-syslog", binary])
                .args(["record", "--duration", "1", "--cri-socket", "none"]),
        );
        assert_eq!(code, Some(i32::from(error::EXIT_PRIVILEGES)), "{stderr}");
        assert!(stderr.contains("CAP_SYSLOG"), "{stderr}");
    } else {
        println!("SKIP CAP_SYSLOG case: this kernel shows symbol addresses to everyone");
    }
    // No BTF.
    let (code, stderr) = exit_of(dad_trace().args(["record", "--duration", "1", "--btf", "/nonexistent/vmlinux"]));
    assert_eq!(code, Some(i32::from(error::EXIT_KERNEL)), "{stderr}");
    assert!(stderr.contains("--btf") && stderr.contains("No such file"), "{stderr}");
    // A command line that does not parse.
    let (code, _) = exit_of(dad_trace().args(["record", "--ring-bytes", "1000"]));
    assert_eq!(code, Some(i32::from(error::EXIT_USAGE)));
}
