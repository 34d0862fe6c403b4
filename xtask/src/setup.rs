//! What each task installs: building needs the eBPF toolchain; the main job (`demo`,
//! `run`) adds the CNI plugins; only `test` (and `bench`) install the test stack, which
//! includes services (containerd, Prometheus) a user's machine should not get by surprise,
//! and unpacks sid's containerd 2.x into the cache (sid.rs).
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{is_root, run, succeeds, workspace_root};

pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// What building needs on a Debian 12 machine.
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    // CRI bindings are generated from the CRI protobuf at build time.
    "protobuf-compiler",
];
/// What running the demo needs besides: the CNI plugins it calls and `ip`.
const RUN_PACKAGES: &[&str] = &["iproute2", "containernetworking-plugins"];
/// What linting needs besides: clippy for Debian's toolchain (the eBPF crate).
const LINT_PACKAGES: &[&str] = &["rust-web-clippy"];
/// What building for aarch64 needs besides (`image`, and `test` through it): Debian's cross
/// linker and C library. The aarch64 Rust standard library is unpacked into the cache, not
/// installed (see arch.rs).
const CROSS_PACKAGES: &[&str] = &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];
/// What testing needs besides (never installed by `demo` or `run`).
const TEST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    // The arm64 guests; their busybox, CNI plugins and kernels are unpacked into the cache.
    "qemu-system-arm",
    "busybox-static",
    "cpio",
    "xz-utils",
    "chromium",
    // The runtime test's containerd, and the metrics test's Prometheus.
    "containerd",
    "runc",
    "prometheus",
    // The benchmark's comparison point.
    "bpftrace",
];

/// What a task needs installed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    Build,
    Run,
    Lint,
    Test,
}

/// Installs what `need` requires (and everything it builds on), idempotently.
pub fn ensure(need: Need) -> anyhow::Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if need >= Need::Run {
        packages.extend(RUN_PACKAGES);
    }
    if need >= Need::Lint {
        packages.extend(LINT_PACKAGES);
    }
    if need >= Need::Test {
        packages.extend(TEST_PACKAGES);
        // The image (which the runtime tests run) and the arm64 guests are cross-built.
        packages.extend(CROSS_PACKAGES);
    }
    install_packages(&packages)?;
    if need >= Need::Test {
        // The OTLP runtime test's containerd 2.x, unpacked beside the installed 1.6.
        crate::sid::ensure_containerd()?;
    }
    ebpf_toolchain_ready()
}

/// What building for aarch64 needs, on top of [`Need::Build`].
pub fn ensure_cross() -> anyhow::Result<()> {
    install_packages(CROSS_PACKAGES)
}

/// Installs the Debian packages that are missing.
fn install_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            // dpkg-query also answers for known-but-removed packages: read the status.
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .is_ok_and(|output| output.stdout == b"install ok installed")
        })
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!("missing Debian packages {missing:?}: run this task with sudo, or install them");
        }
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// bpf-linker and the rustup link to Debian's rustc that builds the kernel programs.
fn ebpf_toolchain_ready() -> anyhow::Result<()> {
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        run(Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    let toolchain = ebpf_toolchain()?;
    if !succeeds(Command::new("rustup").args(["run", &toolchain, "rustc", "--version"])) {
        run(Command::new("rustup").args(["toolchain", "link", &toolchain, "/usr"]))?;
    }
    eprintln!("setup: Debian rustc, rust-src, bpf-linker {BPF_LINKER_VERSION} and toolchain `{toolchain}` ready");
    Ok(())
}

/// The rustup toolchain that builds the kernel programs, as the workspace Cargo.toml names it
/// (`[workspace.metadata.dad-trace] ebpf-toolchain`, which dad-trace/build.rs reads too).
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .context("cargo metadata")?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).context("cargo metadata output")?;
    metadata["metadata"]["dad-trace"]["ebpf-toolchain"]
        .as_str()
        .map(str::to_string)
        .context("[workspace.metadata.dad-trace] ebpf-toolchain missing from Cargo.toml")
}
