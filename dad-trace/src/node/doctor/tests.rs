use super::{
    render::{Style, render_as},
    *,
};

fn audit(settings: &[(&str, &str)], namespaces: Vec<NamespaceSettings>) -> Audit {
    Audit {
        kernel_release: "6.18.44".into(),
        host: settings
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        namespaces,
        unreadable: Vec::new(),
    }
}

fn pod(name: &str, accept_dad: i64) -> NamespaceSettings {
    NamespaceSettings {
        name: name.into(),
        all: AllSettings::default(),
        interfaces: vec![InterfaceSettings {
            ifname: "eth0".into(),
            accept_dad,
            dad_transmits: 1,
            optimistic_dad: 0,
            router_solicitation_delay: 1,
            retrans_time_ms: 1000,
        }],
        addresses: vec![
            AddressSettings {
                ifname: "eth0".into(),
                addr: "fe80::1".parse().expect("address"),
                flags: 0x80,
            },
            AddressSettings {
                ifname: "eth0".into(),
                addr: "fd00:dad::1".parse().expect("address"),
                flags: 0x82,
            },
        ],
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

fn with(
    base: &[(&'static str, &'static str)],
    changes: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut settings: Vec<_> = base
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .copied()
        .collect();
    settings.extend_from_slice(changes);
    settings
}

#[test]
fn three_phases_three_verdicts() {
    let d = diagnose(&audit(DEFAULTS, vec![pod("cni-1", 1)]));
    assert_eq!(d.verdict, Verdict::DadOn);
    assert_eq!(d.estimated_wait_ms, (1000, 2000));
    assert_eq!(d.namespaces_running_dad, ["cni-1"]);

    let d = diagnose(&audit(NAIVE, vec![pod("cni-1", 1), pod("cni-2", 1)]));
    assert_eq!(d.verdict, Verdict::NaiveTuningTrap);
    assert!(
        d.findings[0].contains("devconf_inherit_init_net is 0"),
        "{:?}",
        d.findings
    );

    let tuned = with(NAIVE, &[("net.core.devconf_inherit_init_net", "1")]);
    let d = diagnose(&audit(&tuned, vec![pod("cni-3", 0)]));
    assert_eq!((d.verdict, d.estimated_wait_ms), (Verdict::Tuned, (0, 0)));
    assert!(d.namespaces_running_dad.is_empty());
}

#[test]
fn zero_transmits_alone_is_not_tuned() {
    let settings = with(
        DEFAULTS,
        &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.default.dad_transmits", "0"),
        ],
    );
    let d = diagnose(&audit(&settings, vec![]));
    assert_eq!(d.verdict, Verdict::DadOn);
    assert_eq!(d.estimated_wait_ms, (0, 1000));
    assert!(
        d.findings
            .iter()
            .any(|f| f.contains("dad_transmits=0 does not skip DAD"))
    );
    // Not inherited, it is the trap: new pods would gain from it.
    let trap = with(DEFAULTS, &[("net.ipv6.conf.default.dad_transmits", "0")]);
    assert_eq!(diagnose(&audit(&trap, vec![])).verdict, Verdict::NaiveTuningTrap);
}

#[test]
fn accept_dad_on_all_only_or_default_only() {
    let all_only = with(
        DEFAULTS,
        &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
        ],
    );
    let d = diagnose(&audit(&all_only, vec![]));
    assert_eq!((d.verdict, d.estimated_wait_ms), (Verdict::DadOn, (1000, 2000)));
    assert!(d.findings.iter().any(|f| f.contains("all.accept_dad=0 alone")));

    let default_only = with(
        DEFAULTS,
        &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ],
    );
    assert_eq!(diagnose(&audit(&default_only, vec![])).verdict, Verdict::Tuned);

    let all_overrides = with(&default_only, &[("net.ipv6.conf.all.accept_dad", "1")]);
    let d = diagnose(&audit(&all_overrides, vec![]));
    assert_eq!(d.verdict, Verdict::DadOn);
    assert!(d.findings.iter().any(|f| f.contains("overrides default.accept_dad=0")));
}

#[test]
fn optimistic_and_enhanced_dad_keep_the_wait() {
    let optimistic = with(
        DEFAULTS,
        &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.default.optimistic_dad", "1"),
        ],
    );
    let d = diagnose(&audit(&optimistic, vec![]));
    assert_eq!(d.verdict, Verdict::DadOn);
    assert_eq!(
        (d.new_pod.link_local.low_ms, d.new_pod.link_local.high_ms),
        (1000, 1000)
    );
    assert_eq!(d.estimated_wait_ms, (1000, 2000));
    assert!(
        d.findings
            .iter()
            .any(|f| f.contains("optimistic_dad=1 does not end the wait"))
    );

    let enhanced = with(
        DEFAULTS,
        &[
            ("net.core.devconf_inherit_init_net", "1"),
            ("net.ipv6.conf.default.enhanced_dad", "0"),
        ],
    );
    let d = diagnose(&audit(&enhanced, vec![]));
    assert_eq!((d.verdict, d.estimated_wait_ms), (Verdict::DadOn, (1000, 2000)));
    assert!(
        d.findings
            .iter()
            .any(|f| f.contains("enhanced_dad does not change the wait"))
    );
}

#[test]
fn live_namespaces_per_interface_and_nodad() {
    let d = diagnose(&audit(DEFAULTS, vec![pod("bridge-1", 0)]));
    assert!(d.namespaces_running_dad.is_empty());
    let eth0 = &d.namespaces[0].interfaces[0];
    assert_eq!(eth0.new_address, Wait::NONE);
    assert!(eth0.addresses.iter().all(|(_, wait)| !wait.dad));
    assert!(d.findings.iter().any(|f| f.contains("per-interface override")));
    // DAD on the interface, but the plugin's nodad address skipped it.
    let d = diagnose(&audit(DEFAULTS, vec![pod("cni-1", 1)]));
    let waits = &d.namespaces[0].interfaces[0].addresses;
    assert!(waits[0].1.dad && !waits[1].1.dad, "{waits:?}");
    assert!(
        d.findings
            .iter()
            .any(|f| f.contains("1 addresses in live pod namespaces were added with nodad"))
    );
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

#[test]
fn every_style_escapes_names_from_the_node() {
    let evil = "<b>x</b>|`\u{1b}[31m";
    let mut ns = pod(evil, 1);
    ns.interfaces[0].ifname = evil.into();
    let audit = audit(DEFAULTS, vec![ns]);
    let d = diagnose(&audit);
    let text = render_as(&audit, &d, Style::Text);
    assert!(!text.contains('\u{1b}') && text.contains("\\x1b"), "{text}");
    let md = render_as(&audit, &d, Style::Markdown);
    assert!(md.contains("&lt;b&gt;x&lt;/b&gt;\\|\\`") && !md.contains("<b>"), "{md}");
    assert!(md.contains("## Diagnosis (DadOn)") && md.contains("| namespace | interface |"));
    let page = render_as(&audit, &d, Style::Html);
    assert!(
        page.contains("&lt;b&gt;x&lt;/b&gt;|`") && !page.contains("<b>"),
        "{page}"
    );
    assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</body></html>\n"));
    assert!(page.contains("<h2>Fix</h2>"));
}

/// A doctor run without the rights to enter pod namespaces says so instead of reporting none.
#[test]
fn namespaces_it_could_not_enter_are_said() {
    let mut audit = audit(DEFAULTS, vec![]);
    audit.unreadable = vec![
        ("cni-1".into(), "setns: Operation not permitted".into()),
        ("cni-2".into(), "setns: Operation not permitted".into()),
    ];
    let d = diagnose(&audit);
    let text = render_as(&audit, &d, Style::Text);
    assert!(
        text.contains("Could not look into 2 pod namespaces (setns: Operation not permitted): run the doctor as root"),
        "{text}"
    );
}
