//! Debian sid's containerd 2.x, unpacked in the cache by `cargo xtask setup --test`
//! (xtask/src/sid.rs) and run from there: its binaries first on `PATH` (its shim, not the
//! machine's 1.6 one), configuration version 3, NRI off, its spans sent over OTLP/HTTP. Only
//! the environment turns its tracing on: 2.1 ignores the TOML's tracing sections.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;

use super::PAUSE_IMAGE;

/// The batch delay asked of its span exporter (`OTEL_BSP_SCHEDULE_DELAY`; 5 s by default).
pub const EXPORT_DELAY: Duration = Duration::from_millis(500);
/// setup's link to the unpacked package, in the cache.
const LINK: &str = "containerd-sid";

/// The cache as xtask's apt.rs picks it: `DAD_TRACE_CACHE`, else /var/cache/dad-trace for
/// root, else the user's cache.
#[must_use]
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DAD_TRACE_CACHE") {
        return dir.into();
    }
    if nix::unistd::geteuid().is_root() {
        return "/var/cache/dad-trace".into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home.join(".cache"), PathBuf::from)
        .join("dad-trace")
}

/// The unpacked package's root (its binaries in `usr/bin`), or why it cannot run here.
pub fn unpacked(cni_dir: &Path) -> Result<PathBuf, String> {
    let link = cache_dir().join(LINK);
    let root = std::fs::canonicalize(&link).map_err(|_| {
        format!(
            "sid's containerd is not in {} (cargo xtask setup --test fetches it)",
            link.display()
        )
    })?;
    for binary in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !root.join("usr/bin").join(binary).exists() {
            return Err(format!("{binary} missing in {}/usr/bin", root.display()));
        }
    }
    let runc =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("runc").exists()));
    if !runc {
        return Err("runc is not installed (apt-get install runc)".into());
    }
    // CRI sets up `lo` with the loopback plugin besides the pod network's.
    for plugin in ["ptp", "host-local", "loopback"] {
        if !cni_dir.join(plugin).exists() {
            return Err(format!("CNI plugin {plugin} missing in {}", cni_dir.display()));
        }
    }
    Ok(root)
}

/// What `containerd --version` says of the one at `root`.
pub fn version(root: &Path) -> anyhow::Result<String> {
    let output = Command::new(root.join("usr/bin/containerd"))
        .arg("--version")
        .output()
        .context("containerd --version")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// containerd at `root`, its own binaries first on `PATH`, its spans sent to `otlp_endpoint`;
/// and the directory of its binaries.
pub(super) fn command(root: &Path, otlp_endpoint: &str) -> anyhow::Result<(Command, PathBuf)> {
    let bin_dir = root.join("usr/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin_dir.clone()).chain(std::env::split_paths(&path)))?;
    let mut command = Command::new(bin_dir.join("containerd"));
    command
        .env("PATH", path)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", EXPORT_DELAY.as_millis().to_string());
    Ok((command, bin_dir))
}

/// The configuration (version 3) equivalent of the 1.6 one (config.rs), NRI off (else it
/// creates /var/run/nri/nri.sock).
pub(super) fn config(dir: &Path, cni_dir: &Path, snapshotter: &str) -> String {
    let dir = dir.display();
    let cni_dir = cni_dir.display();
    format!(
        r#"version = 3
root = "{dir}/root"
state = "{dir}/state"
oom_score = 0

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
  [plugins."io.containerd.nri.v1.nri"]
    disable = true
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "{snapshotter}"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "{PAUSE_IMAGE}"
  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_cdi = false
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["{cni_dir}"]
      conf_dir = "{dir}/net.d"
      max_conf_num = 1
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{dir}/runc"
  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"#
    )
}
