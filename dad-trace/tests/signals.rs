//! Ctrl-C and SIGTERM end a recording with a complete session file. Needs root (it traces
//! the kernel and creates synthetic pods); skips with a reason otherwise.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use dad_trace::session::Session;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

fn interrupted_recording_saves(signal: Signal, prefix: &str) {
    if let Err(e) = dad_trace::record::check_privileges() {
        println!("SKIP {signal} test: needs root ({e:#})");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dad-trace"))
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
    // Pods settle after ~1-2 s: interrupt while their addresses are still tentative.
    std::thread::sleep(Duration::from_millis(800));
    kill(Pid::from_raw(i32::try_from(child.id()).expect("pid fits")), signal).expect("signal");
    let started = Instant::now();
    let status = child.wait().expect("wait");
    assert!(status.success(), "dad-trace exited with {status} after {signal}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let session = Session::load(&path).expect("a complete, valid session file");
    assert!(session.ended_at >= session.started_at);
    // Whatever was still tentative is listed, not lost.
    assert!(session.events.len() + session.unfinished.len() >= 1, "{session:?}");
    assert!(
        !std::path::Path::new(&format!("/run/netns/{prefix}0")).exists(),
        "synthetic pods removed"
    );
}

#[test]
fn sigint_saves_the_session() {
    interrupted_recording_saves(Signal::SIGINT, "dts-i");
}

#[test]
fn sigterm_saves_the_session() {
    interrupted_recording_saves(Signal::SIGTERM, "dts-t");
}
