//! What the docs promise about the binary (docs/scenario.md, docs/usage.md, docs/kernels.md),
//! run for real (root): the scenario restores sysctls when interrupted and when a phase fails,
//! `--btf FILE` is used, `probes --verify` loads every program, and a kernel no backend
//! attaches to exits 4.
use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::{Duration, Instant},
};

use dad_trace::{
    error,
    kernel::{KPROBE_PMU, VMLINUX_BTF, probes},
    node::sysctl,
};
use nix::sys::signal::Signal;

mod common;

use common::{dad_trace, needs_root};
use test_support::{Running, exit_of};

/// Named namespaces the scenario made (its prefix is `dts-`).
fn scenario_namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("dts-"))
        .collect()
}

/// The scenario tests take turns: each compares the node's sysctls with a snapshot taken
/// before it ran, and one taken while the other's phase had tuned them would be restored to
/// the tuned values (this left a node tuned once).
static SCENARIO_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Ctrl-C during a phase: the phase's sysctls are put back and its pods removed.
#[test]
fn scenario_restores_sysctls_on_ctrl_c() {
    if !needs_root() {
        return;
    }
    let _turn = SCENARIO_TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = sysctl::snapshot();
    let scenario = Running::spawn(dad_trace().args([
        "scenario",
        "--plugin",
        "veth",
        "--pods",
        "20",
        "--phases",
        "naive-tuning",
    ]));
    // The phase sets its sysctls first (optimistic_dad=1 among them, which differs from any
    // stock node); wait until they are in effect, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sysctl::snapshot() == before {
        assert!(Instant::now() < deadline, "the phase never set its sysctls");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let output = scenario.stop(Signal::SIGINT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(i32::from(error::EXIT_FAILURE)), "{stderr}");
    assert!(
        stderr.contains("interrupted; sysctls restored and pods removed"),
        "{stderr}"
    );
    assert_eq!(sysctl::snapshot(), before, "every sysctl back as it was");
    assert!(scenario_namespaces().is_empty(), "{:?}", scenario_namespaces());
}

/// A CNI plugin that fails: the scenario stops with its error, and still puts back the
/// phase's sysctls. The plugin is a script standing in for a broken installation.
#[test]
fn scenario_restores_sysctls_when_a_phase_fails() {
    if !needs_root() {
        return;
    }
    let _turn = SCENARIO_TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cni = tempfile::tempdir().expect("tempdir");
    for plugin in ["ptp", "host-local"] {
        let path = cni.path().join(plugin);
        std::fs::write(
            &path,
            "#!/bin/sh\necho '{\"cniVersion\":\"0.4.0\",\"code\":11,\"msg\":\"broken plugin\"}'\nexit 1\n",
        )
        .expect("write plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let before = sysctl::snapshot();
    let (code, stderr) = exit_of(
        dad_trace()
            .args([
                "scenario",
                "--plugin",
                "ptp",
                "--pods",
                "2",
                "--phases",
                "naive-tuning",
                "--cni-bin-dir",
            ])
            .arg(cni.path()),
    );
    assert_eq!(code, Some(i32::from(error::EXIT_FAILURE)), "{stderr}");
    assert!(stderr.contains("broken plugin"), "{stderr}");
    assert_eq!(sysctl::snapshot(), before, "every sysctl back as it was");
    assert!(scenario_namespaces().is_empty(), "{:?}", scenario_namespaces());
}

/// `--backend kprobe` on a kernel without kprobes: no backend attaches, exit code 4 with the
/// reason. (Where kprobes exist the same command traces: exit 0.)
#[test]
fn a_backend_that_cannot_attach_exits_4() {
    if !needs_root() {
        return;
    }
    let (code, stderr) = exit_of(dad_trace().args([
        "record",
        "--backend",
        "kprobe",
        "--duration",
        "1",
        "--cri-socket",
        "none",
    ]));
    if Path::new(KPROBE_PMU).exists() {
        assert_eq!(code, Some(0), "kprobes exist here: {stderr}");
    } else {
        assert_eq!(code, Some(i32::from(error::EXIT_KERNEL)), "{stderr}");
        assert!(
            stderr.contains("no backend could attach") && stderr.contains("dad-trace probes"),
            "{stderr}"
        );
    }
}

/// A BTF file given with `--btf` is the one read (a copy of the kernel's, elsewhere).
#[test]
fn btf_from_a_file() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("vmlinux.btf");
    std::fs::copy(VMLINUX_BTF, &copy).expect("copy BTF");
    let output = dad_trace()
        .arg("probes")
        .arg("--btf")
        .arg(&copy)
        .output()
        .expect("probes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("BTF {}", copy.display())), "{stdout}");
    let (code, stderr) = exit_of(
        dad_trace()
            .args([
                "record",
                "--backend",
                "tracepoint",
                "--duration",
                "1",
                "--cri-socket",
                "none",
                "--btf",
            ])
            .arg(&copy),
    );
    assert_eq!(code, Some(0), "{stderr}");
    // A file that is not BTF is refused as a kernel problem, naming the file.
    let bogus = dir.path().join("not-btf");
    std::fs::write(&bogus, b"nonsense").expect("write");
    let (code, stderr) = exit_of(dad_trace().args(["record", "--duration", "1", "--btf"]).arg(&bogus));
    assert_eq!(code, Some(i32::from(error::EXIT_KERNEL)), "{stderr}");
    assert!(stderr.contains("not-btf"), "{stderr}");
}

/// `probes --verify` loads every program of both backends, and the CNI call programs,
/// through the verifier.
#[test]
fn probes_verify_loads_every_program() {
    if !needs_root() {
        return;
    }
    let output = dad_trace().args(["probes", "--verify"]).output().expect("probes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let programs: BTreeSet<&str> = probes::programs()
        .iter()
        .map(|(_, hook)| hook.program)
        .chain(probes::PROC_HOOKS.iter().map(|hook| hook.program))
        .chain(
            dad_trace::kernel::sockets::SOCKET_HOOKS
                .iter()
                .map(|hook| hook.target.program),
        )
        .collect();
    for program in &programs {
        let line = stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(program))
            .unwrap_or_else(|| panic!("{program} not verified:\n{stdout}"));
        assert!(line.ends_with("verifier OK"), "{line}");
    }
    assert_eq!(stdout.matches("verifier OK").count(), programs.len(), "{stdout}");
}

/// A reader that goes away (`| head`): report-like commands end quietly with 0, never a
/// "Broken pipe" panic.
#[test]
fn a_closed_stdout_ends_a_report_quietly() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default-20-pods.json");
    for args in [
        vec!["report".to_string(), fixture.display().to_string(), "--per-pod".into()],
        vec!["probes".into()],
        vec!["scenario".into(), "--list".into()],
    ] {
        let output = Running::spawn_with_stdout_closed(dad_trace().args(&args)).finish();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}

/// `record` with its terminal gone still saves the whole session.
#[test]
fn a_closed_stdout_does_not_cost_the_session() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let output = Running::spawn_with_stdout_closed(
        dad_trace()
            .args([
                "record",
                "--backend",
                "tracepoint",
                "--synthetic-prefix",
                "dtp-",
                "--synthetic-pods",
                "2",
                "-o",
            ])
            .arg(&path),
    )
    .finish();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let session = dad_trace::session::Session::load(&path).expect("the session was saved");
    let ours = session
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref().is_some_and(|name| name.starts_with("dtp-")))
        .count();
    assert_eq!(ours, 4, "both pods' addresses, though nobody read the lines");
}

/// Sessions are saved readable by others: a user without privileges reports one that root
/// recorded, as SECURITY.md says (Hostile input).
#[test]
fn another_user_reports_a_session_root_saved() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("before.json");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/default-20-pods.json");
    dad_trace::session::Session::load(&fixture)
        .expect("fixture")
        .save(&path)
        .expect("save as root");
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_dad-trace"),
            "report",
        ])
        .arg(&path)
        .output()
        .expect("run as nobody");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Per-pod delay"), "{stdout}");
}

/// The doctor run by a user who cannot enter pod namespaces says it could not look, and why
/// (it used to print "Pod namespaces (0)" as if there were none).
#[test]
fn doctor_without_rights_says_it_could_not_look() {
    if !needs_root() {
        return;
    }
    let netns = dad_trace::node::netns::NamedNetns::create(Path::new(dad_trace::node::netns::NETNS_DIR), "dtp-doctor")
        .expect("a pod namespace");
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_dad-trace"),
            "doctor",
        ])
        .output()
        .expect("run as nobody");
    drop(netns);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("Could not look into") && stdout.contains("run the doctor as root"),
        "{stdout}"
    );
}
