//! The two architectures dad-trace ships for, and the static builds for each: glibc linked
//! statically (static-pie), so one file runs in an empty image, a node or a VM guest.
//!
//! aarch64 is cross-built with Debian's rustc (rustup's toolchains here have no aarch64
//! standard library), its standard library unpacked from `libstd-rust-web-dev:arm64` into a
//! sysroot in the cache, and Debian's cross gcc as the linker. The kernel programs follow the
//! target: aya-build passes the build script's `CARGO_CFG_TARGET_ARCH` to the eBPF build as
//! `bpf_target_arch`, which picks the `pt_regs` layout kprobes read arguments from.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{
    apt::{self, Apt, Deb},
    cargo,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The machine's own (the kind cluster's nodes run on it).
    pub fn host() -> Arch {
        if std::env::consts::ARCH == "aarch64" {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// Debian's and the OCI image spec's name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The kernel's name (`uname -m`), as release files are named.
    pub fn uname(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// `cargo <args>` building statically for this architecture.
    pub fn cargo(self) -> anyhow::Result<Command> {
        let mut command = cargo();
        // With --target, rustflags reach the target's crates but not build scripts or proc
        // macros, which run here.
        command.env_remove("RUSTFLAGS");
        let flags = format!("-C target-feature=+crt-static {}", remapped_paths());
        match self {
            Arch::Amd64 => {
                command.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", flags);
            }
            Arch::Arm64 => {
                let sysroot = aarch64_sysroot()?;
                command
                    .env("RUSTC", "/usr/bin/rustc")
                    .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc")
                    .env("CC_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-gcc")
                    .env(
                        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                        format!("--sysroot={} {flags}", sysroot.display()),
                    );
            }
        }
        Ok(command)
    }

    /// Builds with `args` (a cargo subcommand and its options) for this target and returns
    /// the executables cargo reports for `target_name`.
    pub fn build(self, args: &[&str], target_name: &str) -> anyhow::Result<PathBuf> {
        self.build_logged(args, target_name, None)
    }

    /// [`Arch::build`] with cargo's messages in `log` instead of on standard error.
    pub fn build_logged(self, args: &[&str], target_name: &str, log: Option<&fs::File>) -> anyhow::Result<PathBuf> {
        let stderr = match log {
            Some(file) => Stdio::from(file.try_clone().context("log file")?),
            None => Stdio::inherit(),
        };
        let output = self
            .cargo()?
            .args(args)
            .args(["--release", "--target", self.rust_target(), "--message-format=json"])
            .stderr(stderr)
            .output()
            .with_context(|| format!("cargo {args:?} for {}", self.rust_target()))?;
        if !output.status.success() {
            bail!("cargo {args:?} for {} failed", self.rust_target());
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["target"]["name"] == target_name)
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo did not report the {target_name} executable"))
    }
}

/// Where the sources were built from, out of the binaries (panic locations name source
/// files), so the userspace code names neither the checkout nor cargo's home. The kernel
/// programs' BTF line info still names the checkout: aya-build sets that nested build's
/// flags itself. Not for paths with white space, which these space-separated flags cannot
/// carry.
fn remapped_paths() -> String {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_default();
    [(crate::workspace_root(), "/dad-trace"), (cargo_home, "/cargo")]
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .filter(|flag| !flag.contains(char::is_whitespace))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sysroot holding Debian's aarch64 standard library, of the same version as the
/// installed rustc (`rustc-web`); the host's libraries are linked in for proc macros.
fn aarch64_sysroot() -> anyhow::Result<PathBuf> {
    let version = apt::installed_version("rustc-web")?;
    let sysroot = apt::cache_dir().join(format!("sysroot-aarch64-{version}"));
    let rustlib = sysroot.join("lib/rustlib");
    if rustlib.join("aarch64-unknown-linux-gnu").exists() {
        return Ok(sysroot);
    }
    let unpacked = Apt::local()?.unpacked(&Deb {
        name: "libstd-rust-web-dev",
        arch: "arm64",
        version: Some(&version),
    })?;
    let std = unpacked.join("usr/lib/rustlib/aarch64-unknown-linux-gnu");
    if !std.exists() {
        bail!("{} has no aarch64 standard library", unpacked.display());
    }
    // A half-made sysroot (interrupted) is made again.
    if sysroot.exists() {
        fs::remove_dir_all(&sysroot)?;
    }
    fs::create_dir_all(&rustlib)?;
    let host = Path::new("/usr/lib/rustlib/x86_64-unknown-linux-gnu");
    std::os::unix::fs::symlink(host, rustlib.join("x86_64-unknown-linux-gnu"))
        .with_context(|| format!("link {}", host.display()))?;
    std::os::unix::fs::symlink(&std, rustlib.join("aarch64-unknown-linux-gnu"))
        .with_context(|| format!("link {}", std.display()))?;
    Ok(sysroot)
}
