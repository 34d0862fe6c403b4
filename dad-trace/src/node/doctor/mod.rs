//! `dad-trace doctor`: why DAD still runs where it does, what it costs each pod, and the
//! fix (which `dad-trace tune` applies, see [`super::tune`]). The kernel's rules it applies
//! are in [`model`]; every verdict is checked against measured waits by the host-kernel
//! tests (`tests/tests/doctor.rs`).
use std::{
    collections::BTreeMap,
    net::Ipv6Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{netns::in_netns, sysctl};

mod findings;
pub mod model;
pub mod render;

pub use model::{AddressKind, Conf, PodEstimate, Wait};
pub use render::{render, render_fix};

/// DAD settings of one interface inside one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSettings {
    pub ifname: String,
    pub accept_dad: i64,
    pub dad_transmits: i64,
    pub optimistic_dad: i64,
    /// Seconds, as the sysctl says.
    pub router_solicitation_delay: i64,
    pub retrans_time_ms: i64,
}

/// The namespace-wide (`all`) values the kernel combines with each interface's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllSettings {
    pub accept_dad: i64,
    pub optimistic_dad: i64,
    pub forwarding: i64,
}

/// A live address and its flags (`IFA_F_*`, the low byte `/proc/net/if_inet6` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSettings {
    pub ifname: String,
    pub addr: Ipv6Addr,
    pub flags: u32,
}

impl AddressSettings {
    #[must_use]
    pub fn nodad(&self) -> bool {
        self.flags & dad_trace_common::IFA_F_NODAD != 0
    }

    #[must_use]
    pub fn kind(&self) -> AddressKind {
        if self.addr.segments()[0] & 0xffc0 == 0xfe80 && !self.nodad() {
            AddressKind::KernelLinkLocal
        } else {
            AddressKind::Added { nodad: self.nodad() }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSettings {
    pub name: String,
    #[serde(default)]
    pub all: AllSettings,
    pub interfaces: Vec<InterfaceSettings>,
    #[serde(default)]
    pub addresses: Vec<AddressSettings>,
}

impl NamespaceSettings {
    /// What decides DAD on `interface` of this namespace.
    #[must_use]
    pub fn conf(&self, interface: &InterfaceSettings) -> Conf {
        Conf {
            all_accept_dad: self.all.accept_dad,
            all_optimistic_dad: self.all.optimistic_dad,
            all_forwarding: self.all.forwarding,
            accept_dad: interface.accept_dad,
            dad_transmits: interface.dad_transmits,
            optimistic_dad: interface.optimistic_dad,
            rtr_solicit_delay_ms: u64::try_from(interface.router_solicitation_delay.max(0)).unwrap_or(0) * 1000,
            retrans_time_ms: u64::try_from(interface.retrans_time_ms.max(0)).unwrap_or(0),
        }
    }
}

/// What doctor read off the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub kernel_release: String,
    /// Host-namespace values of [`sysctl::DAD_SETTINGS`].
    pub host: BTreeMap<String, String>,
    pub namespaces: Vec<NamespaceSettings>,
    /// Pod namespaces the doctor could not look into, with why (say, not root).
    #[serde(default)]
    pub unreadable: Vec<(String, String)>,
}

fn read_int(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// Reads the calling thread's namespace (sysctls under `/proc/sys/net` are per-netns).
fn namespace_here(name: String) -> anyhow::Result<NamespaceSettings> {
    let sysctls = sysctl::root();
    let conf = &sysctls.join("net/ipv6/conf");
    let all = AllSettings {
        accept_dad: read_int(&conf.join("all/accept_dad")),
        optimistic_dad: read_int(&conf.join("all/optimistic_dad")),
        forwarding: read_int(&conf.join("all/forwarding")),
    };
    let mut interfaces = Vec::new();
    for entry in std::fs::read_dir(conf)? {
        let entry = entry?;
        let ifname = entry.file_name().to_string_lossy().into_owned();
        if ["all", "default", "lo"].contains(&ifname.as_str()) {
            continue;
        }
        let path = entry.path();
        interfaces.push(InterfaceSettings {
            accept_dad: read_int(&path.join("accept_dad")),
            dad_transmits: read_int(&path.join("dad_transmits")),
            optimistic_dad: read_int(&path.join("optimistic_dad")),
            router_solicitation_delay: read_int(&path.join("router_solicitation_delay")),
            retrans_time_ms: read_int(&sysctls.join("net/ipv6/neigh").join(&ifname).join("retrans_time_ms")),
            ifname,
        });
    }
    interfaces.sort_by(|a, b| a.ifname.cmp(&b.ifname));
    let addresses = super::netns::addresses_here()?
        .into_iter()
        .filter(|row| row.ifname != "lo")
        .map(|row| AddressSettings {
            ifname: row.ifname,
            addr: row.addr,
            flags: row.flags,
        })
        .collect();
    Ok(NamespaceSettings {
        name,
        all,
        interfaces,
        addresses,
    })
}

/// Audits the node: host settings and every named pod namespace (root).
pub fn audit(netns_dir: &Path) -> Audit {
    let mut namespaces = Vec::new();
    let mut unreadable = Vec::new();
    if let Ok(entries) = std::fs::read_dir(netns_dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            match in_netns(&path, {
                let name = name.clone();
                move || namespace_here(name)
            }) {
                Ok(namespace) => namespaces.push(namespace),
                Err(e) => unreadable.push((name, format!("{e:#}"))),
            }
        }
    }
    Audit {
        kernel_release: crate::kernel::release(),
        host: sysctl::snapshot(),
        namespaces,
        unreadable,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// New pod interfaces run DAD: defaults, or a tuning that does not skip it
    /// (`dad_transmits=0`, `optimistic_dad`, `all.accept_dad=0` alone).
    DadOn,
    /// The host namespace is tuned but new namespaces do not inherit it.
    NaiveTuningTrap,
    /// New pod namespaces skip DAD.
    Tuned,
}

/// In words, as people read it (the JSON keeps the variant's name).
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::DadOn => "new pods run DAD",
            Verdict::NaiveTuningTrap => "host tuned, new pods not",
            Verdict::Tuned => "tuned",
        })
    }
}

/// The estimate for one interface of a live namespace, and for its live addresses.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceEstimate {
    pub ifname: String,
    /// A new address a plugin adds here now.
    pub new_address: Wait,
    /// Each live address, as it was (or is being) settled under these settings.
    pub addresses: Vec<(Ipv6Addr, Wait)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NamespaceEstimate {
    pub name: String,
    pub interfaces: Vec<InterfaceEstimate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    /// Plain-words findings, most important first.
    pub findings: Vec<String>,
    /// What a new pod waits for its addresses, in ms (the slowest of them).
    pub estimated_wait_ms: (u64, u64),
    /// A new pod's addresses one by one.
    pub new_pod: PodEstimate,
    /// The host side of a new pod's veth (the host namespace's own settings).
    pub host_veth: Wait,
    /// Live pod namespaces whose interfaces still run DAD for new addresses.
    pub namespaces_running_dad: Vec<String>,
    pub namespaces: Vec<NamespaceEstimate>,
    /// What applications paid, from a recorded session (`doctor --session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applications: Option<Applications>,
}

/// Application socket errors a recorded session saw while addresses were tentative.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applications {
    /// The session file, as given.
    pub session: String,
    /// `12 failed binds in 3 pods`.
    pub during_dad: String,
    pub failures: u64,
}

fn estimate_namespace(namespace: &NamespaceSettings) -> NamespaceEstimate {
    let interfaces = namespace
        .interfaces
        .iter()
        .map(|interface| {
            let conf = namespace.conf(interface);
            InterfaceEstimate {
                ifname: interface.ifname.clone(),
                new_address: conf.wait(AddressKind::Added { nodad: false }),
                addresses: namespace
                    .addresses
                    .iter()
                    .filter(|address| address.ifname == interface.ifname)
                    .map(|address| (address.addr, conf.wait(address.kind())))
                    .collect(),
            }
        })
        .collect();
    NamespaceEstimate {
        name: namespace.name.clone(),
        interfaces,
    }
}

/// Pure decision logic: the audit in, the diagnosis out.
#[must_use]
pub fn diagnose(audit: &Audit) -> Diagnosis {
    let host = &audit.host;
    let inherit = model::inherits(host);
    let new_pod = model::pod_estimate(&model::new_pod_interface(host, inherit));
    // What new pods would pay if they copied the host: better means the host's tuning is
    // stuck in the host namespace.
    let if_inherited = model::pod_estimate(&model::new_pod_interface(host, true));
    let stuck_in_host = !inherit
        && ((new_pod.per_pod.dad && !if_inherited.per_pod.dad)
            || if_inherited.per_pod.high_ms < new_pod.per_pod.high_ms);
    let verdict = if !new_pod.per_pod.dad {
        Verdict::Tuned
    } else if stuck_in_host {
        Verdict::NaiveTuningTrap
    } else {
        Verdict::DadOn
    };
    let namespaces: Vec<NamespaceEstimate> = audit.namespaces.iter().map(estimate_namespace).collect();
    let namespaces_running_dad = namespaces
        .iter()
        .filter(|ns| ns.interfaces.iter().any(|i| i.new_address.dad))
        .map(|ns| ns.name.clone())
        .collect();
    let mut diagnosis = Diagnosis {
        verdict,
        findings: Vec::new(),
        estimated_wait_ms: (new_pod.per_pod.low_ms, new_pod.per_pod.high_ms),
        new_pod,
        host_veth: model::host_interface(host).wait(AddressKind::KernelLinkLocal),
        namespaces_running_dad,
        namespaces,
        applications: None,
    };
    diagnosis.findings = findings::findings(audit, &diagnosis, &if_inherited);
    diagnosis
}

#[cfg(test)]
mod tests;
