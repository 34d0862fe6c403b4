//! Running the dad-trace binary under test, as root.
use std::process::{Child, Command, Stdio};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

#[path = "skip.rs"]
pub mod skip;

/// True when the test may trace the kernel; otherwise says why it skips.
pub fn allowed(test: &str) -> bool {
    if let Err(e) = dad_trace::kernel::check_privileges() {
        skip::skip(test, &format!("needs root ({e:#})"));
        return false;
    }
    true
}

pub fn dad_trace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dad-trace"));
    command.env("RUST_BACKTRACE", "0");
    command
}

pub fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).expect("pid fits")), signal).expect("signal");
}

/// Exit code and standard error of a command whose standard output is not needed.
pub fn exit_of(command: &mut Command) -> (Option<i32>, String) {
    let output = command.stdout(Stdio::null()).output().expect("run dad-trace");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
