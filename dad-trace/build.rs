//! Builds the kernel programs (`dad-trace-ebpf`) for the BPF target and leaves the object in
//! `OUT_DIR`, where `main.rs` embeds it. Set `AYA_BUILD_SKIP=1` to skip (e.g. for clippy).
//!
//! Plain `cargo build` works once `cargo xtask setup` has run: the BPF target has no
//! prebuilt `core`, so the nested build needs `-Z build-std=core`, which aya-build passes
//! when `RUSTC_BOOTSTRAP=1` — set here for that nested build only, not for the workspace.
//! Without the toolchain the build stops with one line saying to run the setup.
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    // The toolchain that has `rust-src` for `-Z build-std=core` (see the workspace Cargo.toml).
    let toolchain = metadata.workspace_metadata["dad-trace"]["ebpf-toolchain"]
        .as_str()
        .ok_or_else(|| anyhow!("[workspace.metadata.dad-trace] ebpf-toolchain missing from Cargo.toml"))?
        .to_string();
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "dad-trace-ebpf")
        .ok_or_else(|| anyhow!("dad-trace-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("dad-trace-ebpf manifest has no parent directory"))?;
    let package = Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    let skip = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !skip {
        toolchain_ready(&toolchain)?;
        // SAFETY: the build script is single-threaded here; the variable reaches the nested
        // `cargo build` of the eBPF crate, which aya-build spawns next.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))?;
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // Leave an empty object so that clippy and docs build; the loader refuses to run it.
        let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?;
        let object = std::path::Path::new(&out_dir).join("dad-trace");
        if !object.exists() {
            std::fs::write(&object, []).context("write placeholder eBPF object")?;
        }
    }
    Ok(())
}

/// What `cargo xtask setup` installs: the linked toolchain with `core`'s source, bpf-linker.
fn toolchain_ready(toolchain: &str) -> anyhow::Result<()> {
    const SETUP: &str = "run `cargo xtask setup` first (or set AYA_BUILD_SKIP=1 to build without the kernel programs)";
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let Some(sysroot) = sysroot else {
        bail!("the eBPF toolchain `{toolchain}` is not set up: {SETUP}");
    };
    if !std::path::Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        bail!("toolchain `{toolchain}` ({sysroot}) has no rust-src for the BPF target's core: {SETUP}");
    }
    if Command::new("bpf-linker").arg("--version").output().is_err() {
        bail!("bpf-linker is not installed: {SETUP}");
    }
    Ok(())
}
