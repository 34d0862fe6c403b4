//! What a guest's console says about its tests. A guest passes only when its tests ran:
//! libtest's own summary says ok, every test that started passed, and none skipped (in a
//! guest every test has what it needs; a skip there means the guest is broken).
use std::collections::BTreeSet;

/// The line the guest's init prints with the test binary's exit status.
pub const RESULT_MARK: &str = "DAD-TRACE-VM-RESULT:";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `test NAME ... ` lines: tests libtest started.
    pub started: usize,
    /// From libtest's `test result:` line, when it printed one.
    pub passed: Option<usize>,
    pub failed: Option<usize>,
    /// Tests that printed `SKIP NAME: reason`.
    pub skipped: BTreeSet<String>,
    /// What the init printed after the test binary exited.
    pub result: Option<String>,
}

impl Verdict {
    pub fn parse(console: &str) -> Self {
        let mut verdict = Verdict::default();
        for line in console.lines() {
            // With --nocapture a test's own output follows `... ` on the same line.
            if let Some(rest) = line.strip_prefix("test ")
                && !rest.starts_with("result:")
                && rest.contains(" ... ")
            {
                verdict.started += 1;
            }
            if let Some(summary) = line.split("test result: ").nth(1) {
                verdict.passed = count(summary, " passed");
                verdict.failed = count(summary, " failed");
            }
            if let Some(skip) = line.split("SKIP ").nth(1)
                && let Some((name, _reason)) = skip.split_once(':')
            {
                verdict.skipped.insert(name.trim().to_string());
            }
            if let Some(result) = line.split(RESULT_MARK).nth(1) {
                verdict.result = Some(result.trim().to_string());
            }
        }
        verdict
    }

    /// Tests that passed and did not skip.
    pub fn ran(&self) -> usize {
        self.passed.unwrap_or(0).saturating_sub(self.skipped.len())
    }

    /// PASS, or why not.
    pub fn status(&self) -> Result<(), String> {
        let Some(result) = &self.result else {
            return Err("no verdict (panic, crash or timeout?)".into());
        };
        let (Some(passed), Some(failed)) = (self.passed, self.failed) else {
            return Err(format!("no libtest summary; init said {result}"));
        };
        if result != "PASS" || failed > 0 {
            return Err(format!("{failed} failed; init said {result}"));
        }
        if !self.skipped.is_empty() {
            return Err(format!("skipped: {:?}", self.skipped));
        }
        if passed == 0 || passed != self.started {
            return Err(format!("{passed} passed of {} started", self.started));
        }
        Ok(())
    }
}

fn count(summary: &str, label: &str) -> Option<usize> {
    let end = summary.find(label)?;
    summary[..end].rsplit([' ', ';', '.']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAN: &str = "running 2 tests\n\
        test vm_a ... kernel 6.1\n\
        some output\n\
        ok\n\
        test vm_b ... ok\n\
        \n\
        test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.1s\n\
        DAD-TRACE-VM-RESULT: PASS\n";

    #[test]
    fn tests_that_ran_pass() {
        let verdict = Verdict::parse(RAN);
        assert_eq!(verdict.started, 2);
        assert_eq!((verdict.passed, verdict.failed), (Some(2), Some(0)));
        assert_eq!(verdict.ran(), 2);
        assert_eq!(verdict.status(), Ok(()));
    }

    #[test]
    fn skipped_tests_do_not_pass() {
        let console = RAN.replace("some output", "SKIP vm_a: runs inside guests only");
        let verdict = Verdict::parse(&console);
        assert_eq!(verdict.ran(), 1);
        assert!(verdict.status().is_err_and(|why| why.contains("vm_a")));
    }

    #[test]
    fn failures_crashes_and_missing_summaries_do_not_pass() {
        let failed = RAN
            .replace("test vm_b ... ok", "test vm_b ... FAILED")
            .replace("ok. 2 passed; 0 failed", "FAILED. 1 passed; 1 failed")
            .replace("RESULT: PASS", "RESULT: FAIL (tests exit 101)");
        assert!(
            Verdict::parse(&failed)
                .status()
                .is_err_and(|why| why.starts_with("1 failed"))
        );
        let crashed = RAN.split("test vm_b").next().unwrap_or_default();
        assert!(
            Verdict::parse(crashed)
                .status()
                .is_err_and(|why| why.starts_with("no verdict"))
        );
        let no_tests = "running 0 tests\ntest result: ok. 0 passed; 0 failed; 0 ignored\nDAD-TRACE-VM-RESULT: PASS\n";
        assert!(Verdict::parse(no_tests).status().is_err());
    }
}
