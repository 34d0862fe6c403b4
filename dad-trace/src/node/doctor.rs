//! `dad-trace doctor`: why DAD still runs where it does, what it costs each pod, and the
//! fix (which `dad-trace tune` applies, see [`super::tune`]).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{netns::in_netns, sysctl, tune::RECOMMENDED};

/// DAD settings of one interface inside one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSettings {
    pub ifname: String,
    pub accept_dad: i64,
    pub dad_transmits: i64,
    pub optimistic_dad: i64,
}

impl InterfaceSettings {
    /// Whether a new address here waits for DAD.
    #[must_use]
    pub fn runs_dad(&self) -> bool {
        self.accept_dad >= 1 && self.dad_transmits >= 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSettings {
    pub name: String,
    pub interfaces: Vec<InterfaceSettings>,
}

/// What doctor read off the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub kernel_release: String,
    /// Host-namespace values of [`sysctl::DAD_SETTINGS`].
    pub host: BTreeMap<String, String>,
    pub namespaces: Vec<NamespaceSettings>,
}

/// Reads `/proc/sys/net/ipv6/conf/*` of the calling thread's namespace (it is per-netns).
fn interfaces_here() -> anyhow::Result<Vec<InterfaceSettings>> {
    let mut interfaces = Vec::new();
    for entry in std::fs::read_dir("/proc/sys/net/ipv6/conf")? {
        let entry = entry?;
        let ifname = entry.file_name().to_string_lossy().into_owned();
        if ["all", "default", "lo"].contains(&ifname.as_str()) {
            continue;
        }
        let read = |knob: &str| -> i64 {
            std::fs::read_to_string(entry.path().join(knob))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(-1)
        };
        interfaces.push(InterfaceSettings {
            accept_dad: read("accept_dad"),
            dad_transmits: read("dad_transmits"),
            optimistic_dad: read("optimistic_dad"),
            ifname,
        });
    }
    interfaces.sort_by(|a, b| a.ifname.cmp(&b.ifname));
    Ok(interfaces)
}

/// Audits the node: host settings and every named pod namespace (root).
pub fn audit(netns_dir: &Path) -> Audit {
    let mut namespaces = Vec::new();
    if let Ok(entries) = std::fs::read_dir(netns_dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            match in_netns(&path, interfaces_here) {
                Ok(interfaces) => namespaces.push(NamespaceSettings {
                    name: path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    interfaces,
                }),
                Err(e) => log::debug!("{}: {e:#}", path.display()),
            }
        }
    }
    Audit {
        kernel_release: crate::kernel::release(),
        host: sysctl::snapshot(),
        namespaces,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Kernel defaults: every new pod interface runs DAD.
    DadOn,
    /// DAD turned off in the host namespace only: new namespaces do not inherit it.
    NaiveTuningTrap,
    /// New namespaces inherit DAD off.
    Tuned,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    /// Plain-words findings, most important first.
    pub findings: Vec<String>,
    /// What a new pod interface waits, in ms (0 when DAD is off for new namespaces).
    pub estimated_wait_ms: (u64, u64),
    /// Live pod namespaces whose interfaces still run DAD.
    pub namespaces_running_dad: Vec<String>,
}

fn value(audit: &Audit, name: &str) -> Option<i64> {
    audit.host.get(name).and_then(|v| v.parse().ok())
}

/// Pure decision logic: the audit in, the diagnosis out.
#[must_use]
pub fn diagnose(audit: &Audit) -> Diagnosis {
    let mut findings = Vec::new();
    let inherit = value(audit, "net.core.devconf_inherit_init_net");
    let off_in_host = |knob: &str| {
        value(audit, &format!("net.ipv6.conf.default.{knob}")).is_some_and(|v| v == 0)
            || (knob == "accept_dad" && value(audit, "net.ipv6.conf.all.accept_dad").is_some_and(|v| v < 0))
    };
    let host_tuned = off_in_host("accept_dad") || off_in_host("dad_transmits");
    let inherits = inherit == Some(1);
    let verdict = match (host_tuned, inherits) {
        (true, true) => Verdict::Tuned,
        (true, false) => Verdict::NaiveTuningTrap,
        (false, _) => Verdict::DadOn,
    };
    match verdict {
        Verdict::DadOn => findings.push(
            "DAD is on: every new pod interface stays tentative until Duplicate Address Detection ends, \
             and CNI plugins that wait for it (ptp, the AWS VPC CNI) hold pod start that long."
                .into(),
        ),
        Verdict::NaiveTuningTrap => findings.push(format!(
            "DAD is turned off in the host namespace only: net.core.devconf_inherit_init_net is {}, so every \
             new pod namespace starts from kernel defaults (accept_dad=1, dad_transmits=1) and runs DAD anyway. \
             Set it to 1 so new namespaces inherit the host's settings.",
            inherit.map_or_else(|| "missing".into(), |v| v.to_string())
        )),
        Verdict::Tuned => findings.push(
            "New pod namespaces inherit DAD off (devconf_inherit_init_net=1 with accept_dad=0 or dad_transmits=0): \
             pods do not wait for DAD."
                .into(),
        ),
    }
    match inherit {
        None => findings.push(
            "This kernel has no net.core.devconf_inherit_init_net (added in 5.1): host settings cannot reach new \
             namespaces; disable DAD per pod instead (CNI tuning plugin sysctls) or upgrade the kernel."
                .into(),
        ),
        Some(_) => findings.push(
            "This kernel has net.core.devconf_inherit_init_net: setting it to 1 makes new namespaces inherit \
             the host's IPv6 settings."
                .into(),
        ),
    }
    if value(audit, "net.ipv6.conf.default.optimistic_dad") == Some(1) {
        findings.push(
            "optimistic_dad=1 does not shorten the wait: optimistic addresses are still flagged tentative, and \
             plugins wait for that flag to clear."
                .into(),
        );
    }
    let namespaces_running_dad: Vec<String> = audit
        .namespaces
        .iter()
        .filter(|ns| ns.interfaces.iter().any(InterfaceSettings::runs_dad))
        .map(|ns| ns.name.clone())
        .collect();
    if !namespaces_running_dad.is_empty() {
        findings.push(format!(
            "{} of {} live pod namespaces still run DAD on their interfaces (settings are fixed when a namespace \
             is created: pods created before a fix keep them). Bridge-based plugins disable DAD on the pod side \
             unless \"enableDad\": true.",
            namespaces_running_dad.len(),
            audit.namespaces.len()
        ));
    }
    // rtr_solicit_delay (random 0..1 s) before the first probe, then dad_transmits × retrans_time.
    let transmits = u64::try_from(value(audit, "net.ipv6.conf.default.dad_transmits").unwrap_or(1).max(0)).unwrap_or(1);
    let retrans = u64::try_from(
        value(audit, "net.ipv6.neigh.default.retrans_time_ms")
            .unwrap_or(1000)
            .max(0),
    )
    .unwrap_or(1000);
    let estimated_wait_ms = if verdict == Verdict::Tuned {
        (0, 0)
    } else {
        (transmits.max(1) * retrans, transmits.max(1) * retrans + 1000)
    };
    Diagnosis {
        verdict,
        findings,
        estimated_wait_ms,
        namespaces_running_dad,
    }
}

/// The fix in the forms a platform team applies it, with the caveats.
#[must_use]
pub fn render_fix() -> String {
    let mut out = String::from("Fix (Bottlerocket settings, e.g. in user data):\n\n[settings.kernel.sysctl]\n");
    for (name, value) in RECOMMENDED {
        let _ = writeln!(out, "\"{name}\" = \"{value}\"");
    }
    out.push_str("\nFix (any node: /etc/sysctl.d/90-ipv6-no-dad.conf, then `sysctl --system`):\n\n");
    for (name, value) in RECOMMENDED {
        let _ = writeln!(out, "{name} = {value}");
    }
    // devconf_inherit_init_net exists only in the initial namespace, and new namespaces copy
    // that namespace's settings: a kind node (a container) can set neither for its pods.
    out.push_str(
        "\nFix (kind: the nodes are containers on one kernel, and new pod namespaces copy the initial \
         namespace, so set it on the machine running kind):\n\n",
    );
    let args: Vec<String> = RECOMMENDED
        .iter()
        .map(|(name, value)| format!("-w {name}={value}"))
        .collect();
    let _ = writeln!(out, "sudo sysctl {}", args.join(" "));
    out.push_str(
        "\nCaveats: only in networks you control — DAD is what protects against duplicate addresses. Pods \
         created before the change keep DAD until recreated. For application start, rely on readiness probes \
         rather than network readiness.\n",
    );
    out
}

#[must_use]
pub fn render(audit: &Audit, diagnosis: &Diagnosis) -> String {
    let mut out = format!("dad-trace doctor: kernel {}\n\nHost namespace:\n", audit.kernel_release);
    for (name, value) in &audit.host {
        let _ = writeln!(out, "  {name} = {value}");
    }
    let _ = writeln!(out, "\nPod namespaces ({}):", audit.namespaces.len());
    for ns in &audit.namespaces {
        let interfaces: Vec<String> = ns
            .interfaces
            .iter()
            .map(|i| {
                format!(
                    "{} accept_dad={} dad_transmits={} optimistic_dad={}",
                    i.ifname, i.accept_dad, i.dad_transmits, i.optimistic_dad
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  {}: {}",
            ns.name,
            if interfaces.is_empty() {
                "no interfaces".into()
            } else {
                interfaces.join("; ")
            }
        );
    }
    let _ = writeln!(out, "\nDiagnosis: {:?}", diagnosis.verdict);
    for finding in &diagnosis.findings {
        let _ = writeln!(out, "  - {finding}");
    }
    let (low, high) = diagnosis.estimated_wait_ms;
    let _ = writeln!(out, "  Estimated wait per new pod interface: {low}-{high} ms\n");
    if diagnosis.verdict != Verdict::Tuned {
        out.push_str(&render_fix());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(settings: &[(&str, &str)], namespaces: Vec<NamespaceSettings>) -> Audit {
        Audit {
            kernel_release: "6.18.44".into(),
            host: settings
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            namespaces,
        }
    }

    fn pod(name: &str, accept_dad: i64) -> NamespaceSettings {
        NamespaceSettings {
            name: name.into(),
            interfaces: vec![InterfaceSettings {
                ifname: "eth0".into(),
                accept_dad,
                dad_transmits: 1,
                optimistic_dad: 0,
            }],
        }
    }

    const DEFAULTS: &[(&str, &str)] = &[
        ("net.core.devconf_inherit_init_net", "0"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "1"),
        ("net.ipv6.conf.default.dad_transmits", "1"),
        ("net.ipv6.neigh.default.retrans_time_ms", "1000"),
    ];
    const NAIVE: &[(&str, &str)] = &[
        ("net.core.devconf_inherit_init_net", "0"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.default.dad_transmits", "0"),
        ("net.ipv6.conf.default.optimistic_dad", "1"),
    ];

    #[test]
    fn three_phases_three_verdicts() {
        let d = diagnose(&audit(DEFAULTS, vec![pod("cni-1", 1)]));
        assert_eq!(d.verdict, Verdict::DadOn);
        assert_eq!(d.estimated_wait_ms, (1000, 2000));
        assert_eq!(d.namespaces_running_dad, ["cni-1"]);

        let d = diagnose(&audit(NAIVE, vec![pod("cni-1", 1), pod("cni-2", 1)]));
        assert_eq!(d.verdict, Verdict::NaiveTuningTrap);
        assert!(
            d.findings[0].contains("host namespace only") && d.findings[0].contains("devconf_inherit_init_net is 0")
        );
        assert!(d.findings.iter().any(|f| f.contains("optimistic_dad=1 does not")));

        let mut tuned: Vec<(&str, &str)> = NAIVE.to_vec();
        tuned[0] = ("net.core.devconf_inherit_init_net", "1");
        let d = diagnose(&audit(&tuned, vec![pod("cni-3", 0)]));
        assert_eq!((d.verdict, d.estimated_wait_ms), (Verdict::Tuned, (0, 0)));
        assert!(d.namespaces_running_dad.is_empty());
    }

    #[test]
    fn old_kernel_without_inherit_is_explained() {
        let d = diagnose(&audit(&[("net.ipv6.conf.default.accept_dad", "0")], vec![]));
        assert_eq!(d.verdict, Verdict::NaiveTuningTrap);
        assert!(
            d.findings
                .iter()
                .any(|f| f.contains("has no net.core.devconf_inherit_init_net"))
        );
    }

    #[test]
    fn fix_has_toml_sysctl_d_kind_and_caveats() {
        let fix = render_fix();
        assert!(fix.contains("[settings.kernel.sysctl]\n\"net.ipv6.conf.all.accept_dad\" = \"0\""));
        assert!(fix.contains("net.core.devconf_inherit_init_net = 1"));
        assert!(fix.contains("sudo sysctl -w net.ipv6.conf.all.accept_dad=0"));
        assert!(fix.contains("networks you control") && fix.contains("readiness probes"));
    }
}
