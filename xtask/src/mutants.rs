//! `cargo xtask mutants`: mutation testing of the pure modules with the unit tests
//! (cargo-mutants), and the caught share per module, the measure of how much the unit tests
//! would notice a wrong change.
//!
//! Which modules: those that say so, by a line of their doc comment ([`MARKERS`]), found by
//! reading `dad-trace/src`; no list here to forget a module in. `dad-trace/tests/layers.rs`
//! keeps the markers honest: a module marked pure names no I/O, and a module that names
//! none is marked (mutation-tested, or `Pure, not mutation-tested: <why>`).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{cargo, run, succeeds, workspace_root};

/// A doc-comment line (`//! ...` at the top of the file) that puts a module in the run: pure,
/// or mutation-tested with the I/O it does said after the colon.
pub const MARKERS: &[&str] = &[
    "//! Pure: mutation-tested (cargo xtask mutants).",
    "//! Mutation-tested (cargo xtask mutants), not pure:",
];
/// Where the modules are looked for, from the workspace root.
const SOURCES: &str = "dad-trace/src";
/// Where cargo-mutants writes `mutants.out` (its outcomes, logs, and the missed list).
const OUTPUT: &str = "target/mutants";
/// The share of viable mutants each module's tests must catch.
const GOAL_PERCENT: u64 = 95;

/// A module that asked to be mutation-tested.
#[derive(Debug, PartialEq, Eq)]
pub struct Module {
    /// Its module path in the crate (`record::track`, `session` for `session/mod.rs`).
    pub path: String,
    /// Its file, from the workspace root, as cargo-mutants names it.
    pub file: String,
}

impl Module {
    /// Whether `--only LABEL` picks it: its module path (a parent picks its children:
    /// `session` is `session/*.rs`), or its file's stem (`track`, `podstart` for both).
    fn is(&self, label: &str) -> bool {
        let stem = Path::new(&self.file)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .filter(|stem| *stem != "mod");
        self.path == label || self.path.starts_with(&format!("{label}::")) || stem == Some(label)
    }
}

/// Whether a source file's doc comment carries one of [`MARKERS`].
fn marked(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .take_while(|line| line.starts_with("//!"))
        .any(|line| MARKERS.iter().any(|marker| line.starts_with(marker)))
}

/// The marked modules under `root`/[`SOURCES`], by file.
pub fn modules(root: &Path) -> anyhow::Result<Vec<Module>> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
        Ok(())
    }
    let sources = root.join(SOURCES);
    let mut files = Vec::new();
    walk(&sources, &mut files)?;
    let mut modules = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        if !marked(&text) {
            continue;
        }
        let relative = file.strip_prefix(&sources).context("a file under the sources")?;
        let mut path: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|component| component.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|last| last == "mod") {
            path.pop();
        }
        modules.push(Module {
            path: path.join("::"),
            file: format!("{SOURCES}/{}", relative.display()),
        });
    }
    modules.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(modules)
}

/// Runs cargo-mutants on the marked modules `only` picks (by [`Module::is`]; all when empty)
/// and prints the score per module. Fails when a module misses the goal.
pub fn mutants(only: &[String], iterate: bool) -> anyhow::Result<()> {
    if !succeeds(Command::new("cargo").args(["mutants", "--version"])) {
        run(Command::new("cargo").args(["install", "cargo-mutants", "--locked"]))?;
    }
    let all = modules(&workspace_root())?;
    let modules: Vec<_> = all
        .iter()
        .filter(|module| only.is_empty() || only.iter().any(|label| module.is(label)))
        .collect();
    let paths: Vec<_> = all.iter().map(|module| module.path.as_str()).collect();
    anyhow::ensure!(
        !modules.is_empty(),
        "no marked module is called {only:?}; the modules: {paths:?}"
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
    for module in &modules {
        command.args(["--file", &module.file]);
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

    #[test]
    fn modules_are_found_by_their_marker() {
        let root = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        let write = |file: &str, text: &str| {
            let path = root.join(SOURCES).join(file);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        write(
            "hist.rs",
            "//! Delays.\n//!\n//! Pure: mutation-tested (cargo xtask mutants).\nfn f() {}\n",
        );
        write(
            "session/mod.rs",
            "//! Sessions.\n//! Mutation-tested (cargo xtask mutants), not pure: temp files.\n",
        );
        write(
            "session/pods.rs",
            "//! Pods.\n//! Pure: mutation-tested (cargo xtask mutants).\n",
        );
        write(
            "record/podstart.rs",
            "//! Pure: mutation-tested (cargo xtask mutants).\n",
        );
        write(
            "report/podstart.rs",
            "//! Pure: mutation-tested (cargo xtask mutants).\n",
        );
        write("files.rs", "//! Files.\nuse std::fs;\n");
        write(
            "text.rs",
            "//! Text.\n//! Pure, not mutation-tested: declarations.\n// Pure: mutation-tested (cargo xtask mutants).\n",
        );
        write(
            "late.rs",
            "//! Late.\nuse x;\n//! Pure: mutation-tested (cargo xtask mutants).\n",
        );
        let found = modules(&root);
        std::fs::remove_dir_all(&root).expect("clean up");
        let found = found.expect("modules");
        let paths: Vec<_> = found.iter().map(|module| module.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "hist",
                "record::podstart",
                "report::podstart",
                "session",
                "session::pods"
            ],
            "only markers in the doc comment count"
        );
        assert_eq!(found[3].file, "dad-trace/src/session/mod.rs");
        let picked = |label: &str| {
            found
                .iter()
                .filter(|module| module.is(label))
                .map(|module| module.path.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            picked("session"),
            ["session", "session::pods"],
            "a parent picks its children"
        );
        assert_eq!(picked("podstart"), ["record::podstart", "report::podstart"], "by stem");
        assert_eq!(picked("report::podstart"), ["report::podstart"]);
        assert_eq!(picked("pods"), ["session::pods"]);
        assert!(picked("mod").is_empty() && picked("sess").is_empty());
    }

    /// The real tree: the modules the 95% goal was set on are in.
    #[test]
    fn the_tree_marks_the_pure_modules() {
        let found = modules(&workspace_root()).expect("modules");
        let files: Vec<_> = found.iter().map(|module| module.file.as_str()).collect();
        for file in [
            "dad-trace/src/record/track.rs",
            "dad-trace/src/hist.rs",
            "dad-trace/src/report/gate.rs",
            "dad-trace/src/report/compare.rs",
            "dad-trace/src/session/file.rs",
            "dad-trace/src/node/doctor/model.rs",
        ] {
            assert!(files.contains(&file), "{file} not marked: {files:?}");
        }
    }
}
