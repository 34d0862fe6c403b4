//! Skipping a test that cannot run on this machine: said with the reason, never silent.
//! Under `DAD_TRACE_NO_SKIP=1` (set by .ci/run) a skip is a failure: CI has everything, so
//! a test that cannot run there is a broken setup, not a pass.

/// The switch that turns every skip into a failure.
pub const NO_SKIP: &str = "DAD_TRACE_NO_SKIP";

/// Reports that `test` does not run here, and why; panics under [`NO_SKIP`].
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os(NO_SKIP).is_none_or(|value| value == "0"),
        "{test} cannot run here ({why}), and {NO_SKIP} says every test must run"
    );
    println!("SKIP {test}: {why}");
}
