//! The tiers of `cargo xtask test`, counted: every test binary's passed, skipped and failed
//! tests (read off libtest's output as it streams by), and the summary printed at the end, so
//! a tier that did not run cannot hide in a green run.
use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// What one tier did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    /// `test: reason`, from the tests' SKIP lines.
    pub skipped: Vec<String>,
    /// `test at file:line: message`, from libtest's panic lines, so CI's tail names them.
    pub failures: Vec<String>,
    pub seconds: u64,
    /// Why the tier as a whole did not run, if it did not.
    pub not_run: Option<String>,
}

impl Tier {
    /// A tier that did not run at all, and why.
    #[must_use]
    pub fn not_run(name: &str, why: &str) -> Self {
        Self {
            name: name.into(),
            not_run: Some(why.into()),
            ..Self::default()
        }
    }

    /// Tests that ran: passed, minus those that passed by skipping.
    #[must_use]
    pub fn ran(&self) -> usize {
        self.passed.saturating_sub(self.skipped.len())
    }
}

/// Longest panic message kept per failure: the summary is a table, the log has the rest.
const MESSAGE_CHARS: usize = 300;

/// Reads libtest output: `Running <target>` lines (cargo's) start a tier, `test result:`
/// lines count, `SKIP <test>: <reason>` lines are skips, `thread '<test>' panicked at
/// <place>:` and the line after it are a failure.
#[derive(Default)]
pub struct Counter {
    tiers: Vec<Tier>,
    /// When the current tier started.
    started: Option<Instant>,
    /// A panic whose message is on the next line: `test at place`.
    panicked: Option<String>,
}

impl Counter {
    pub fn line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(panic) = self.panicked.take()
            && let Some(tier) = self.tiers.last_mut()
        {
            let message: String = line.chars().take(MESSAGE_CHARS).collect();
            tier.failures.push(format!("{panic}: {message}"));
        }
        if let Some(target) = line.strip_prefix("Running ") {
            self.end_tier();
            let name = target.split(" (").next().unwrap_or(target);
            self.tiers.push(Tier {
                name: name.to_string(),
                ..Tier::default()
            });
            self.started = Some(Instant::now());
        } else if let Some(rest) = line.split("thread '").nth(1)
            && let Some((test, place)) = rest.split_once("' panicked at ")
        {
            self.panicked = Some(format!("{test} at {}", place.trim_end_matches(':')));
        } else if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result
                    .split(';')
                    .find_map(|part| part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            if let Some(tier) = self.tiers.last_mut() {
                tier.passed += count("passed");
                tier.failed += count("failed");
            }
        } else if let Some(skip) = line.split("SKIP ").nth(1)
            && let Some(tier) = self.tiers.last_mut()
        {
            tier.skipped.push(skip.to_string());
        }
    }

    /// Gives the current tier its time.
    fn end_tier(&mut self) {
        if let (Some(started), Some(tier)) = (self.started.take(), self.tiers.last_mut()) {
            tier.seconds = started.elapsed().as_secs();
        }
    }

    /// The tiers that had tests (cargo also runs empty harnesses: lib, bins, doc tests).
    #[must_use]
    pub fn tiers(mut self) -> Vec<Tier> {
        self.end_tier();
        self.tiers
            .into_iter()
            .filter(|tier| tier.passed + tier.failed > 0)
            .collect()
    }
}

/// Runs `command` with its output (both streams, in order) shown as it comes and handed to
/// `each_line`; fails when the command does.
fn stream(command: &mut Command, mut each_line: impl FnMut(&str)) -> anyhow::Result<()> {
    eprintln!("+ {command:?}");
    // One pipe for both streams keeps cargo's `Running` lines in order with the output.
    let (reader, writer) = std::io::pipe().context("pipe")?;
    let mut child = command
        .stdout(writer.try_clone().context("pipe")?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    // The command holds the writers until told otherwise: the pipe must end with the child.
    command
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    for line in BufReader::new(reader).lines() {
        let line = line.context("read the command's output")?;
        println!("{line}");
        each_line(&line);
    }
    let status = child.wait().context("wait")?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// Runs `command` as [`stream`] does and returns its output.
pub fn run_streamed(command: &mut Command) -> anyhow::Result<String> {
    let mut output = String::new();
    stream(command, |line| {
        output.push_str(line);
        output.push('\n');
    })?;
    Ok(output)
}

/// Runs `command` with its output shown as it comes, counting its test binaries. The
/// command's failure is returned after the counts, which are kept either way.
pub fn run_counted(command: &mut Command) -> (Vec<Tier>, anyhow::Result<()>) {
    let mut counter = Counter::default();
    let result = stream(command, |line| counter.line(line));
    (counter.tiers(), result)
}

/// A tier that is one step of `cargo xtask test` (not a test binary), timed.
#[must_use]
pub fn step(name: &str, passed: usize, took: Duration) -> Tier {
    Tier {
        name: name.into(),
        passed,
        seconds: took.as_secs(),
        ..Tier::default()
    }
}

/// The table printed at the end of `cargo xtask test`, with the whole command's time.
#[must_use]
pub fn summary(tiers: &[Tier], total: Duration) -> String {
    let mut out = String::from("\nTest tiers:\n");
    let _ = writeln!(
        out,
        "  {:<34} {:>5} {:>7} {:>6} {:>6}  verdict",
        "tier", "ran", "skipped", "failed", "secs"
    );
    for tier in tiers {
        let verdict = match (&tier.not_run, tier.failed) {
            (Some(why), _) => format!("NOT RUN: {why}"),
            (None, 0) if tier.skipped.is_empty() => "ran".to_string(),
            (None, 0) => "ran, with skips".to_string(),
            (None, _) => "FAILED".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<34} {:>5} {:>7} {:>6} {:>6}  {verdict}",
            tier.name,
            tier.ran(),
            tier.skipped.len(),
            tier.failed,
            tier.seconds
        );
        for skip in &tier.skipped {
            let _ = writeln!(out, "      skipped {skip}");
        }
        for failure in &tier.failures {
            let _ = writeln!(out, "      failed {failure}");
        }
    }
    let _ = writeln!(
        out,
        "  total (builds included; tiers run behind the host tests overlap): {} s",
        total.as_secs()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_output_is_counted_per_binary() {
        let output = "   Compiling x\n\
             \x20    Running unittests src/lib.rs (target/debug/deps/x-1)\n\
             running 0 tests\n\
             test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
             \x20    Running tests/faults.rs (target/debug/deps/faults-2)\n\
             test a ... SKIP a: needs root (no)\n\
             ok\n\
             test b ... ok\n\
             test c ... thread 'c' panicked at tests/faults.rs:280:5:\n\
             4.2s of CPU for 500 failures\n\
             FAILED\n\
             test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let mut counter = Counter::default();
        for line in output.lines() {
            counter.line(line);
        }
        let tiers = counter.tiers();
        assert_eq!(tiers.len(), 1, "the empty harness is left out");
        assert_eq!(
            (tiers[0].name.as_str(), tiers[0].passed, tiers[0].failed, tiers[0].ran()),
            ("tests/faults.rs", 2, 1, 1)
        );
        assert_eq!(tiers[0].skipped, ["a: needs root (no)"]);
        let table = summary(&tiers, Duration::from_secs(61));
        assert!(table.contains("tests/faults.rs") && table.contains("FAILED"), "{table}");
        assert!(table.contains("skipped a: needs root (no)"), "{table}");
        assert!(
            table.contains("total (builds included; tiers run behind the host tests overlap): 61 s"),
            "{table}"
        );
        assert!(
            table.contains("failed c at tests/faults.rs:280:5: 4.2s of CPU for 500 failures"),
            "{table}"
        );
    }
}
