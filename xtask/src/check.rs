//! `cargo xtask test`, `lint` and `fuzz`: the checks CI runs.
use std::{path::Path, process::Command, time::Instant};

use anyhow::Context as _;

use crate::{
    cargo, dist, image, is_root, run,
    setup::{self, Need},
    succeeds,
    tiers::{self, Tier},
    vm, workspace_root,
};

/// Set by .ci/run: every skipped test or tier is a failure (the tests read it too).
const NO_SKIP: &str = "DAD_TRACE_NO_SKIP";
/// Where sysctl guards note what to restore (dad-trace's `node::sysctl::JOURNAL_ENV`).
const SYSCTL_JOURNAL_ENV: &str = "DAD_TRACE_SYSCTL_JOURNAL";

fn no_skip() -> bool {
    std::env::var_os(NO_SKIP).is_some_and(|value| value != "0")
}

/// `cargo xtask test`: every tier, each timed, then the summary. The host kernel tests mostly
/// wait for DAD's timers, so the VM guests' builds and the fuzz tier (niced, their output in
/// target/ci-logs) run behind them; the guests then boot two at a time.
pub fn test() -> anyhow::Result<()> {
    let started = Instant::now();
    setup::ensure(Need::Test)?;
    let journal = workspace_root().join("target/sysctl-journal.json");
    restore_interrupted_sysctls(&journal)?;
    let mut tiers = Vec::new();
    let mut failures = Vec::new();
    let mut counted = |command: &mut Command, tiers: &mut Vec<Tier>| {
        let (found, result) = tiers::run_counted(command.env(SYSCTL_JOURNAL_ENV, &journal));
        tiers.extend(found);
        if let Err(e) = result {
            failures.push(format!("{e:#}"));
        }
    };
    // Unit tests (no privileges) and the binary's own tests (root: signals, exit codes).
    // Kernel tests share the kernel's sysctls: one at a time.
    counted(
        cargo()
            .args([
                "test",
                // Every test binary runs though one fails: the summary shows all failures.
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                "integration-tests",
                "--exclude",
                "dad-trace-ebpf",
                // Built by `cargo xtask bench`; lint checks it.
                "--exclude",
                "dad-trace-bench",
            ])
            .args(SERIAL),
        &mut tiers,
    );
    // The runtime tests run this image in containerd as the DaemonSet does.
    let built = Instant::now();
    image()?;
    // The release files, packed twice: the same binaries must give the same bytes.
    let first = std::fs::read_to_string(dist()?.join("SHA256SUMS"))?;
    let again = std::fs::read_to_string(dist()?.join("SHA256SUMS"))?;
    anyhow::ensure!(
        first == again,
        "cargo xtask dist packed the same binaries into different bytes:\n{first}\n{again}"
    );
    // Built first, so that the background below competes with tests, not with this build.
    run(integration_tests().arg("--no-run"))?;
    tiers.push(tiers::step(
        "build: image, dist twice, integration tests",
        1,
        built.elapsed(),
    ));
    let (prepared_tx, prepared_rx) = std::sync::mpsc::channel();
    let background = std::thread::spawn(move || in_the_background(&prepared_tx));
    counted(integration_tests().args(SERIAL), &mut tiers);
    // VM kernels (kprobes): root only, as kernels are fetched into /var/cache/dad-trace.
    let guests = prepared_rx
        .recv()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the guests' preparation stopped")));
    let vm_started = Instant::now();
    let vm_result = guests.and_then(|prepared| match prepared {
        Some(prepared) => vm::run(prepared).map(|()| true),
        None => Ok(false),
    });
    tiers.push(match vm_result {
        Ok(true) => tiers::step("vm-test (per kernel above)", 1, vm_started.elapsed()),
        Ok(false) => Tier::not_run("vm-test", "needs root to fetch kernels into the cache"),
        Err(e) => {
            failures.push(format!("vm-test: {e:#}"));
            let mut tier = tiers::step("vm-test (per kernel above)", 0, vm_started.elapsed());
            tier.failed = 1;
            tier
        }
    });
    let fuzz_tier = background
        .join()
        .unwrap_or_else(|_| Tier::not_run("fuzz (60 s)", "its thread panicked"));
    if let Some(why) = &fuzz_tier.not_run {
        failures.push(format!("{}: {why}", fuzz_tier.name));
    }
    tiers.push(fuzz_tier);
    eprintln!("{}", tiers::summary(&tiers, started.elapsed()));
    // Named again last: CI's log may keep only its tail.
    for tier in &tiers {
        failures.extend(tier.failures.iter().map(|failure| format!("{}: {failure}", tier.name)));
    }
    if no_skip() {
        for tier in &tiers {
            if let Some(why) = &tier.not_run {
                failures.push(format!("{} did not run ({why}) under {NO_SKIP}", tier.name));
            }
            for skip in &tier.skipped {
                failures.push(format!("{}: skipped {skip} under {NO_SKIP}", tier.name));
            }
        }
    }
    anyhow::ensure!(failures.is_empty(), "failed:\n  {}", failures.join("\n  "));
    Ok(())
}

/// The host kernel tests.
fn integration_tests() -> Command {
    let mut command = cargo();
    command.args(["test", "--no-fail-fast", "--package", "integration-tests", "--lib"]);
    for target in HOST_TESTS {
        command.args(["--test", target]);
    }
    command
}

/// What runs behind the tests that mostly wait (the host kernel tests, then the guests),
/// niced so that they keep the CPU when they need it: the guests' builds (root only; the
/// result is sent as soon as it is known) and the fuzz tier. Output goes to target/ci-logs;
/// on failure its tail is shown.
fn in_the_background(prepared: &std::sync::mpsc::Sender<anyhow::Result<Option<vm::Prepared>>>) -> Tier {
    // Linux keeps a nice value per thread, and children inherit the spawning thread's.
    // SAFETY: setpriority on the calling thread (who = 0) touches no memory.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
    let logs = workspace_root().join("target/ci-logs");
    let vm_log = logs.join("vm-builds.log");
    let guests = if is_root() {
        log_file(&vm_log).and_then(|file| vm::prepare(&[], Some(&file)).map(Some))
    } else {
        Ok(None)
    };
    if guests.is_err() {
        show_tail(&vm_log);
    }
    // The receiver is gone only when the main thread already failed.
    let _ = prepared.send(guests);
    let fuzz_log = logs.join("fuzz.log");
    fuzz_logged(FuzzFor::Inputs(CI_FUZZ_INPUTS), Some(&fuzz_log)).unwrap_or_else(|e| {
        show_tail(&fuzz_log);
        Tier::not_run(&FuzzFor::Inputs(CI_FUZZ_INPUTS).to_string(), &format!("{e:#}"))
    })
}

/// A new log file, its directory made.
fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path).with_context(|| format!("create {}", path.display()))
}

/// The last lines of a background step's log, for a failure's context.
fn show_tail(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- last lines of {} ---", path.display());
    for line in &lines[lines.len().saturating_sub(40)..] {
        eprintln!("{line}");
    }
}

/// The integration test binaries that run on this machine (`vm_kernel` runs in the guests).
const HOST_TESTS: &[&str] = &[
    "host_kernel",
    "faults",
    "socket_errors",
    "runtime",
    "runtime_otlp",
    "deploy",
    "doctor",
    "monitoring",
    "debug_node",
    "docs_samples",
    "dist",
];
/// Kernel tests share the kernel's sysctls and namespaces: one at a time, output shown (the
/// tiers are counted from it).
const SERIAL: &[&str] = &["--", "--test-threads=1", "--nocapture"];

/// Puts back sysctls that an earlier run changed and could not restore (killed mid-test):
/// the journal holds their original values.
fn restore_interrupted_sysctls(journal: &Path) -> anyhow::Result<()> {
    let Ok(bytes) = std::fs::read(journal) else {
        return Ok(());
    };
    let entries: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", journal.display()))?;
    for (name, value) in &entries {
        // Only dotted kernel names (never a path) and one-line values are written back.
        let valid = !name.is_empty()
            && name.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        anyhow::ensure!(
            valid && !value.contains('\n'),
            "{}: bad entry {name:?}",
            journal.display()
        );
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        std::fs::write(&path, value).with_context(|| format!("restore {name}={value}"))?;
        eprintln!("restored {name}={value}, left changed by an interrupted test run");
    }
    std::fs::remove_file(journal).with_context(|| format!("remove {}", journal.display()))
}

/// The fuzz target's hand-picked seeds, tracked in git.
const FUZZ_SEEDS: &str = "fuzz/seeds/session_parse";
/// Where the corpus grows, ignored by git (a CI cache may keep it between runs).
const FUZZ_CORPUS: &str = "fuzz/corpus/session_parse";

/// How many inputs CI's fuzz tier tries: a count, not a time, so a run sharing the machine
/// with the tests is as thorough as one alone.
const CI_FUZZ_INPUTS: u64 = 50_000;

/// How long a fuzz run lasts.
#[derive(Clone, Copy)]
pub enum FuzzFor {
    Seconds(u64),
    Inputs(u64),
}

impl std::fmt::Display for FuzzFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FuzzFor::Seconds(seconds) => write!(f, "fuzz ({seconds} s)"),
            FuzzFor::Inputs(inputs) => write!(f, "fuzz ({inputs} inputs)"),
        }
    }
}

/// Runs the session fuzzer, from the seeds and the corpus grown so far.
pub fn fuzz(length: FuzzFor) -> anyhow::Result<Tier> {
    fuzz_logged(length, None)
}

/// [`fuzz`], its output in `log` when given.
fn fuzz_logged(length: FuzzFor, log: Option<&Path>) -> anyhow::Result<Tier> {
    let name = length.to_string();
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        let why = "cargo fuzz needs a nightly toolchain, and this machine has none";
        eprintln!("SKIP fuzz: {why}");
        return Ok(Tier::not_run(&name, why));
    }
    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let started = Instant::now();
    let root = workspace_root();
    std::fs::create_dir_all(root.join(FUZZ_CORPUS)).context("create the fuzz corpus directory")?;
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz", "run", "session_parse", FUZZ_CORPUS, FUZZ_SEEDS])
        // The target is safe Rust: AddressSanitizer would find nothing the language does not
        // rule out, and costs the build and every input.
        .args(["--sanitizer", "none"])
        .arg("--")
        .arg(match length {
            FuzzFor::Seconds(seconds) => format!("-max_total_time={seconds}"),
            FuzzFor::Inputs(inputs) => format!("-runs={inputs}"),
        })
        .current_dir(&root)
        // The fuzzer needs the parser, not the kernel programs.
        .env("AYA_BUILD_SKIP", "1");
    let output = match log {
        Some(path) => {
            let file = log_file(path)?;
            let status = command
                .stdout(file.try_clone()?)
                .stderr(file)
                .status()
                .context("run cargo fuzz")?;
            anyhow::ensure!(status.success(), "cargo fuzz failed: {status}");
            std::fs::read_to_string(path)?
        }
        None => tiers::run_streamed(&mut command)?,
    };
    // libFuzzer ends with `Done N runs in S second(s)`.
    let runs = output
        .lines()
        .find_map(|line| line.split("Done ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .context("libFuzzer printed no `Done N runs` line")?;
    Ok(tiers::step(&format!("{name}: {runs} run"), 1, started.elapsed()))
}

pub fn lint() -> anyhow::Result<()> {
    setup::ensure(Need::Lint)?;
    // The import grouping in rustfmt.toml needs nightly rustfmt; stable ignores those options.
    let toolchain = if succeeds(Command::new("rustup").args(["run", "nightly", "rustfmt", "--version"])) {
        "+nightly"
    } else {
        "+stable"
    };
    run(Command::new("cargo")
        .args([toolchain, "fmt", "--all", "--check"])
        .current_dir(workspace_root()))?;
    run(Command::new("cargo")
        .args([toolchain, "fmt", "--check"])
        .current_dir(workspace_root().join("dad-trace-ebpf")))?;
    // The eBPF crate is linted for its own target below: here, workspace feature unification
    // would link std into it.
    run(cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "dad-trace-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("AYA_BUILD_SKIP", "1"))?;
    run(Command::new("rustup")
        .args([
            "run",
            &setup::ebpf_toolchain()?,
            "cargo",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--", "-D", "warnings"])
        .current_dir(workspace_root().join("dad-trace-ebpf"))
        .env("RUSTC_BOOTSTRAP", "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test file added under tests/tests must be run by `cargo xtask test` (only the VM
    /// guests' runs the kernel matrix, in the guests).
    #[test]
    fn every_integration_test_file_runs_on_the_host_or_in_the_guests() {
        let dir = workspace_root().join("tests/tests");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("tests/tests")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".rs").map(String::from))
            .collect();
        files.sort();
        let mut run: Vec<String> = HOST_TESTS.iter().map(ToString::to_string).collect();
        run.push("vm_kernel".into());
        run.sort();
        assert_eq!(files, run);
    }
}
