//! What only dad-trace's own tests can say, binding test-support to this package: the path of
//! the binary under test (cargo gives it to this package's tests alone) and the tool's own
//! privilege check. Everything else the tests share is in test-support.
use std::process::Command;

/// The dad-trace binary under test, without backtraces in what it prints.
pub fn dad_trace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dad-trace"));
    command.env("RUST_BACKTRACE", "0");
    command
}

/// True when the test may trace the kernel; otherwise it skips, saying why.
pub fn needs_root() -> bool {
    test_support::needs_root(dad_trace::kernel::check_privileges())
}
