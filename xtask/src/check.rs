//! `cargo xtask test`, `lint` and `fuzz`: the checks CI runs.
use std::process::Command;

use crate::{
    cargo, image, is_root, run,
    setup::{self, Need},
    succeeds, vm, workspace_root,
};

pub fn test() -> anyhow::Result<()> {
    setup::ensure(Need::Test)?;
    // Unit tests: no privileges needed.
    run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "integration-tests",
        "--exclude",
        "dad-trace-ebpf",
    ]))?;
    // The runtime tests run this image in containerd as the DaemonSet does.
    image()?;
    // Kernel tests: they print why they skip when not root.
    run(cargo().args([
        "test",
        "--package",
        "integration-tests",
        "--",
        "--test-threads=1",
        "--nocapture",
    ]))?;
    // A short fuzz run: the parser must survive whatever a file holds.
    fuzz(60)?;
    // VM kernels (kprobes): root only, as kernels are fetched into /var/cache/dad-trace.
    if is_root() {
        vm::vm_test(&[])?;
    } else {
        eprintln!("SKIP vm-test: needs root to fetch kernels into the cache");
    }
    Ok(())
}

/// Runs the session fuzzer for `seconds`; the corpus in fuzz/corpus grows and is kept.
pub fn fuzz(seconds: u64) -> anyhow::Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        eprintln!("SKIP fuzz: cargo fuzz needs a nightly toolchain, and this machine has none");
        return Ok(());
    }
    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    run(Command::new("cargo")
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
        .env("AYA_BUILD_SKIP", "1"))
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
