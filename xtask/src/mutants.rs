//! `cargo xtask mutants`: mutation testing of the pure modules with the unit tests
//! (cargo-mutants), and the caught share per module, the measure of how much the unit tests
//! would notice a wrong change.
use std::{collections::BTreeMap, fmt::Write as _, process::Command};

use anyhow::Context as _;

use crate::{cargo, run, succeeds, workspace_root};

/// The modules whose logic the unit tests alone must pin down: (label, file glob).
pub const MODULES: &[(&str, &str)] = &[
    ("tracker", "dad-trace/src/record/track.rs"),
    ("hist", "dad-trace/src/hist.rs"),
    ("gate", "dad-trace/src/report/gate.rs"),
    ("compare", "dad-trace/src/report/compare.rs"),
    ("session", "dad-trace/src/session/*.rs"),
    ("doctor's diagnosis", "dad-trace/src/node/doctor/{findings,model}.rs"),
];
/// Where cargo-mutants writes `mutants.out` (its outcomes, logs, and the missed list).
const OUTPUT: &str = "target/mutants";
/// The share of viable mutants each module's tests must catch.
const GOAL_PERCENT: u64 = 95;

/// Runs cargo-mutants on `only` (labels of [`MODULES`]; all when empty) and prints the score
/// per module. Fails when a module misses the goal.
pub fn mutants(only: &[String], iterate: bool) -> anyhow::Result<()> {
    if !succeeds(Command::new("cargo").args(["mutants", "--version"])) {
        run(Command::new("cargo").args(["install", "cargo-mutants", "--locked"]))?;
    }
    let modules: Vec<_> = MODULES
        .iter()
        .filter(|(label, _)| only.is_empty() || only.iter().any(|o| o == label))
        .collect();
    anyhow::ensure!(
        !modules.is_empty(),
        "no module is called {only:?}; the modules: {MODULES:?}"
    );
    let mut command = cargo();
    command
        .args(["mutants", "--package", "dad-trace", "--no-shuffle"])
        // A copy of the sources with a target of its own: the tree is never mutated, and the
        // workspace's (large) target is not copied.
        .args(["--copy-target=false", "--profile", "mutants", "--output", OUTPUT])
        // Only the library's unit tests are built and run per mutant.
        .arg("--cargo-arg=--lib")
        // The unit tests need the parser and the logic, not the kernel programs.
        .env("AYA_BUILD_SKIP", "1");
    if iterate {
        // Skips what the last run caught: survivors only, after tests were added for them.
        command.arg("--iterate");
    }
    for (_, glob) in &modules {
        command.args(["--file", glob]);
    }
    // cargo-mutants exits non-zero when a mutant survives: the scores below say which.
    let status = command.status().context("run cargo mutants")?;
    let outcomes = workspace_root().join(OUTPUT).join("mutants.out/outcomes.json");
    let text = std::fs::read_to_string(&outcomes).with_context(|| format!("read {}", outcomes.display()))?;
    let scores = scores(&text)?;
    println!("{}", render(&scores));
    let missed: Vec<_> = scores
        .iter()
        .filter(|(_, score)| score.percent() < GOAL_PERCENT)
        .map(|(file, _)| file.as_str())
        .collect();
    anyhow::ensure!(
        missed.is_empty(),
        "below {GOAL_PERCENT}% caught: {missed:?} (cargo mutants: {status}; survivors in {OUTPUT}/mutants.out/missed.txt)"
    );
    Ok(())
}

/// What happened to one file's mutants.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Score {
    pub caught: u64,
    pub missed: u64,
    pub timeout: u64,
    pub unviable: u64,
}

impl Score {
    /// Caught (a timeout is caught: the mutant hung the tests) of viable, in whole percent.
    fn percent(&self) -> u64 {
        let viable = self.caught + self.timeout + self.missed;
        if viable == 0 {
            return 100;
        }
        (self.caught + self.timeout) * 100 / viable
    }
}

/// Scores per source file from cargo-mutants' outcomes.json.
fn scores(outcomes: &str) -> anyhow::Result<BTreeMap<String, Score>> {
    let value: serde_json::Value = serde_json::from_str(outcomes).context("outcomes.json is not JSON")?;
    let mut scores = BTreeMap::<String, Score>::new();
    for outcome in value["outcomes"]
        .as_array()
        .context("outcomes.json has no `outcomes`")?
    {
        // The baseline (the unmutated tree) is a scenario too; only mutants count.
        let Some(file) = outcome["scenario"]["Mutant"]["file"].as_str() else {
            continue;
        };
        let score = scores.entry(file.to_string()).or_default();
        match outcome["summary"].as_str() {
            Some("CaughtMutant") => score.caught += 1,
            Some("MissedMutant") => score.missed += 1,
            Some("Timeout") => score.timeout += 1,
            Some("Unviable") => score.unviable += 1,
            other => anyhow::bail!("{file}: an outcome cargo-mutants did not document: {other:?}"),
        }
    }
    Ok(scores)
}

fn render(scores: &BTreeMap<String, Score>) -> String {
    let mut out = format!(
        "\n  {:<40} {:>6} {:>6} {:>7} {:>8} {:>7}\n",
        "file", "caught", "missed", "timeout", "unviable", "score"
    );
    let mut total = Score::default();
    for (file, score) in scores {
        let _ = writeln!(
            out,
            "  {file:<40} {:>6} {:>6} {:>7} {:>8} {:>6}%",
            score.caught,
            score.missed,
            score.timeout,
            score.unviable,
            score.percent()
        );
        total.caught += score.caught;
        total.missed += score.missed;
        total.timeout += score.timeout;
        total.unviable += score.unviable;
    }
    let _ = writeln!(
        out,
        "  {:<40} {:>6} {:>6} {:>7} {:>8} {:>6}%",
        "all",
        total.caught,
        total.missed,
        total.timeout,
        total.unviable,
        total.percent()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_scored_per_file() {
        let outcomes = r#"{"outcomes": [
            {"scenario": "Baseline", "summary": "Success"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "CaughtMutant"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "MissedMutant"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "Timeout"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "Unviable"},
            {"scenario": {"Mutant": {"file": "b.rs"}}, "summary": "Unviable"}
        ]}"#;
        let scored = scores(outcomes).expect("scored");
        let a = &scored["a.rs"];
        assert_eq!(
            (a.caught, a.missed, a.timeout, a.unviable, a.percent()),
            (1, 1, 1, 1, 66)
        );
        assert_eq!(scored["b.rs"].percent(), 100, "nothing viable: nothing missed");
        let table = render(&scored);
        assert!(table.contains("a.rs") && table.contains("66%"), "{table}");
        assert!(scores(r#"{"outcomes": [{"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "Odd"}]}"#).is_err());
    }
}
