//! What the tests of every package share (dad-trace's own `tests/*.rs` and unit tests, and
//! the `integration-tests` package):
//!
//! - [`skip`]: the one rule for a test that cannot run here. The harness names the test; the
//!   call site says only why.
//! - [`needs_root`]: a skip unless the process may trace the kernel.
//! - [`spawn_record`] and [`Running`]: a `dad-trace` run as a child of the test, waited on
//!   until it traces, signalled, and its output and exit collected.
//! - [`exit_of`]: the exit code and standard error of a command run to its end.
#![allow(
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    reason = "test helpers: panicking on a failed expectation is their job"
)]

mod child;
mod skip;

pub use child::{Running, exit_of, spawn_record};
pub use skip::{NO_SKIP, needs_root, skip, test_name};
