//! `cargo xtask test`, `lint` and `fuzz`: the checks CI runs.
use std::{path::Path, process::Command, time::Instant};

use anyhow::Context as _;

use crate::{
    cargo, image, is_root, run,
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

pub fn test() -> anyhow::Result<()> {
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
            ])
            .args(SERIAL),
        &mut tiers,
    );
    // The runtime tests run this image in containerd as the DaemonSet does.
    image()?;
    let mut integration = cargo();
    integration.args(["test", "--no-fail-fast", "--package", "integration-tests"]);
    for target in HOST_TESTS {
        integration.args(["--test", target]);
    }
    counted(integration.args(SERIAL), &mut tiers);
    // A short fuzz run: the parser must survive whatever a file holds.
    tiers.push(match fuzz(60) {
        Ok(tier) => tier,
        Err(e) => {
            failures.push(format!("fuzz: {e:#}"));
            Tier::not_run("fuzz (60 s)", &format!("{e:#}"))
        }
    });
    // VM kernels (kprobes): root only, as kernels are fetched into /var/cache/dad-trace.
    if is_root() {
        let started = Instant::now();
        let result = vm::vm_test(&[]);
        let mut tier = tiers::step("vm-test (per kernel above)", 1, started.elapsed());
        if let Err(e) = result {
            failures.push(format!("vm-test: {e:#}"));
            tier.passed = 0;
            tier.failed = 1;
        }
        tiers.push(tier);
    } else {
        tiers.push(Tier::not_run("vm-test", "needs root to fetch kernels into the cache"));
    }
    eprintln!("{}", tiers::summary(&tiers));
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

/// The integration test binaries that run on this machine (`vm_kernel` runs in the guests).
const HOST_TESTS: &[&str] = &["host_kernel", "faults", "runtime", "deploy", "doctor", "monitoring"];
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

/// Runs the session fuzzer for `seconds`; the corpus in fuzz/corpus grows and is kept.
pub fn fuzz(seconds: u64) -> anyhow::Result<Tier> {
    let name = format!("fuzz ({seconds} s)");
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        let why = "cargo fuzz needs a nightly toolchain, and this machine has none";
        eprintln!("SKIP fuzz: {why}");
        return Ok(Tier::not_run(&name, why));
    }
    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let started = Instant::now();
    let mut command = Command::new("cargo");
    command
        .args([
            "+nightly",
            "fuzz",
            "run",
            "session_parse",
            "--",
            &format!("-max_total_time={seconds}"),
        ])
        .current_dir(workspace_root())
        // The fuzzer needs the parser, not the kernel programs.
        .env("AYA_BUILD_SKIP", "1");
    let output = tiers::run_streamed(&mut command)?;
    // libFuzzer ends with `Done N runs in S second(s)`.
    let runs = output
        .lines()
        .find_map(|line| line.split("Done ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .context("libFuzzer printed no `Done N runs` line")?;
    Ok(tiers::step(&format!("{name}: {runs} inputs"), 1, started.elapsed()))
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
