//! Skipping a test that cannot run on this machine: said with the reason, never silent.
//! Under `DAD_TRACE_NO_SKIP=1` (set by .ci/run) a skip is a failure: CI has everything, so
//! a test that cannot run there is a broken setup, not a pass.
use std::fmt::Display;

/// The switch that turns every skip into a failure.
pub const NO_SKIP: &str = "DAD_TRACE_NO_SKIP";

/// The running test's name: libtest runs each test on a thread named after it
/// (`module::tests::name`); the last segment is the function's name. Outside a test (an
/// unnamed thread) it says so.
pub fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<a thread that is not a test>");
    name.rsplit("::").next().unwrap_or(name).to_string()
}

/// Says that the running test does not run here, and why, as `SKIP <test>: <why>` on
/// standard output (`cargo xtask test` and `vm-test` count these lines); fails the test
/// under [`NO_SKIP`]. The caller returns after it.
pub fn skip(why: impl Display) {
    let test = test_name();
    assert!(
        std::env::var_os(NO_SKIP).is_none_or(|value| value == "0"),
        "{test} cannot run here ({why}), and {NO_SKIP} says every test must run"
    );
    println!("SKIP {test}: {why}");
}

/// True when the test may trace the kernel; otherwise skips, saying it needs root and why.
/// `privileges` is dad-trace's own verdict (`dad_trace::kernel::check_privileges()`), so a
/// test skips exactly where the tool would refuse.
pub fn needs_root(privileges: Result<(), impl Display>) -> bool {
    match privileges {
        Ok(()) => true,
        Err(e) => {
            skip(format_args!("needs root ({e:#})"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_names_the_test() {
        assert_eq!(test_name(), "the_harness_names_the_test");
    }

    #[test]
    fn a_thread_of_its_own_is_no_test() {
        let name = std::thread::spawn(test_name).join().expect("the thread ends");
        assert_eq!(name, "<a thread that is not a test>");
    }
}
