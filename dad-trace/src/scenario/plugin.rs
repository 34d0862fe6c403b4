//! Pods set up by a real CNI plugin, called the way a container runtime calls it.
use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::node::netns::NETNS_DIR;

/// How pods get their network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Plugin {
    /// CNI ptp with host-local IPv6 IPAM (kind's default CNI uses ptp).
    Ptp,
    /// CNI bridge with `"enableDad": true`.
    BridgeDad,
    /// No CNI: a veth pair and an address, then wait for it to settle as ptp does.
    Veth,
}

/// Bridge created by the bridge plugin; removed after the scenario.
const BRIDGE: &str = "dtbr0";

impl Plugin {
    #[must_use]
    pub fn config(self, ipam_dir: &Path) -> Option<String> {
        let ipam = serde_json::json!({
            "type": "host-local",
            "ranges": [[{ "subnet": "fd00:dad:cafe::/64" }]],
            "dataDir": ipam_dir,
        });
        let config = match self {
            Plugin::Ptp => serde_json::json!({
                "cniVersion": "0.4.0", "name": "dad-trace-ptp", "type": "ptp", "ipMasq": false, "ipam": ipam,
            }),
            Plugin::BridgeDad => serde_json::json!({
                "cniVersion": "0.4.0", "name": "dad-trace-bridge", "type": "bridge", "bridge": BRIDGE,
                "isGateway": true, "ipMasq": false, "enableDad": true, "ipam": ipam,
            }),
            Plugin::Veth => return None,
        };
        Some(config.to_string())
    }

    #[must_use]
    pub fn binary(self) -> Option<&'static str> {
        match self {
            Plugin::Ptp => Some("ptp"),
            Plugin::BridgeDad => Some("bridge"),
            Plugin::Veth => None,
        }
    }

    /// Whether the plugin and host-local are installed in `cni_dir`.
    #[must_use]
    pub fn available(self, cni_dir: &Path) -> bool {
        self.binary()
            .is_none_or(|binary| cni_dir.join(binary).exists() && cni_dir.join("host-local").exists())
    }
}

/// Runs one CNI call as a runtime does and returns its wall time, measured as a runtime sees
/// it: from just before the plugin is spawned to its exit reaped.
pub fn cni(plugin: Plugin, command: &str, cni_dir: &Path, config: &str, name: &str) -> anyhow::Result<u64> {
    let binary = plugin.binary().context("not a CNI plugin")?;
    let started = std::time::Instant::now();
    let mut child = Command::new(cni_dir.join(binary))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", name)
        .env("CNI_NETNS", Path::new(NETNS_DIR).join(name))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run CNI plugin {binary}"))?;
    let written = child.stdin.take().context("plugin stdin")?.write_all(config.as_bytes());
    // A plugin that exits without reading its configuration (a broken one) still says why
    // in its output: the exit below reports it.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let output = child.wait_with_output()?;
    let wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if !output.status.success() {
        bail!(
            "CNI {command} {name} with {binary} failed: {} {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(wall_ns)
}

pub async fn remove_bridge() {
    let removed = async {
        use futures::TryStreamExt as _;
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let link = handle.link().get().match_name(BRIDGE.into()).execute().try_next().await;
        if let Ok(Some(link)) = link {
            handle.link().del(link.header.index).execute().await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = removed.await {
        log::warn!("could not remove bridge {BRIDGE}: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_configs_are_cni_json() {
        let config: serde_json::Value =
            serde_json::from_str(&Plugin::BridgeDad.config(Path::new("/tmp/x")).expect("cni")).expect("json");
        assert_eq!(
            (config["type"].as_str(), config["enableDad"].as_bool()),
            (Some("bridge"), Some(true))
        );
        assert_eq!(config["ipam"]["ranges"][0][0]["subnet"], "fd00:dad:cafe::/64");
        assert!(Plugin::Veth.config(Path::new("/tmp/x")).is_none());
        assert!(Plugin::Veth.available(Path::new("/nonexistent")));
        assert!(!Plugin::Ptp.available(Path::new("/nonexistent")));
    }
}
