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

/// Each settings finding is said exactly when its conditions hold: (inherit, `all.accept_dad`,
/// `default.accept_dad`, `default.dad_transmits`, `default.optimistic_dad`) → which findings
/// appear.
#[test]
fn each_settings_finding_appears_exactly_when_it_applies() {
    const ZERO_TRANSMITS: &str = "dad_transmits=0 does not skip DAD";
    const ALL_ALONE: &str = "all.accept_dad=0 alone does not turn DAD off";
    const ALL_OVERRIDES: &str = "overrides default.accept_dad";
    const OPTIMISTIC: &str = "optimistic_dad=1";
    // Never expected: the enhanced_dad sysctls are not set here.
    const ENHANCED: &str = "enhanced_dad does not change the wait";
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    );
    let cases: [Case; 9] = [
        // Stock: all=0, default=1 is the kernel's own default, not worth a word.
        ("0", "0", "1", "1", "0", &[]),
        ("1", "0", "1", "1", "0", &[ALL_ALONE]),
        ("1", "1", "1", "1", "0", &[]),
        ("1", "1", "0", "1", "0", &[ALL_OVERRIDES]),
        ("1", "0", "0", "1", "0", &[]),
        // DAD off: neither the transmit count nor optimistic DAD matters.
        ("1", "0", "0", "0", "0", &[]),
        ("1", "0", "0", "1", "1", &[]),
        ("1", "1", "1", "0", "0", &[ZERO_TRANSMITS]),
        ("1", "1", "1", "1", "1", &[OPTIMISTIC]),
    ];
    for (inherit, all, default, transmits, optimistic, expected) in cases {
        let settings = [
            ("net.core.devconf_inherit_init_net", inherit),
            ("net.ipv6.conf.all.accept_dad", all),
            ("net.ipv6.conf.default.accept_dad", default),
            ("net.ipv6.conf.default.dad_transmits", transmits),
            ("net.ipv6.conf.default.optimistic_dad", optimistic),
            ("net.ipv6.neigh.default.retrans_time_ms", "1000"),
        ];
        let findings = diagnose(&audit(&settings, vec![])).findings;
        let found: Vec<&str> = [ZERO_TRANSMITS, ALL_ALONE, ALL_OVERRIDES, OPTIMISTIC, ENHANCED]
            .into_iter()
            .filter(|finding| findings.iter().any(|f| f.contains(finding)))
            .collect();
        assert_eq!(
            found, expected,
            "inherit={inherit} all={all} default={default} transmits={transmits} optimistic={optimistic}: \
             {findings:#?}"
        );
    }
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
    assert!(
        !d.findings.iter().any(|f| f.contains("still run DAD")),
        "{:#?}",
        d.findings
    );
    // DAD on the interface, but the plugin's nodad address skipped it.
    let d = diagnose(&audit(DEFAULTS, vec![pod("cni-1", 1)]));
    let waits = &d.namespaces[0].interfaces[0].addresses;
    assert!(waits[0].1.dad && !waits[1].1.dad, "{waits:?}");
    assert!(
        d.findings
            .iter()
            .any(|f| f.contains("1 addresses in live pod namespaces were added with nodad"))
    );
    assert!(
        d.findings
            .iter()
            .any(|f| f.starts_with("1 of 1 live pod namespaces still run DAD")),
        "{:#?}",
        d.findings
    );
    assert!(!d.findings.iter().any(|f| f.contains("per-interface override")));
    // No nodad address, no override: neither is mentioned.
    let mut plain = pod("cni-2", 1);
    plain.addresses[1].flags = 0x80;
    let d = diagnose(&audit(DEFAULTS, vec![plain]));
    assert!(
        !d.findings
            .iter()
            .any(|f| f.contains("nodad (IFA_F_NODAD") || f.contains("per-interface override")),
        "{:#?}",
        d.findings
    );
}

/// A prediction admits a measurement within its bounds widened by the slack, and nothing
/// outside.
#[test]
fn a_wait_admits_what_lies_within_its_bounds_and_slack() {
    let wait = Wait {
        dad: true,
        low_ms: 1000,
        high_ms: 2000,
    };
    for (measured, slack, admitted) in [
        (1000.0, 0.0, true),
        (2000.0, 0.0, true),
        (999.0, 0.0, false),
        (2001.0, 0.0, false),
        (990.0, 10.0, true),
        (2010.0, 10.0, true),
        (989.0, 10.0, false),
        (2011.0, 10.0, false),
    ] {
        assert_eq!(wait.admits(measured, slack), admitted, "{measured} ms, slack {slack}");
    }
    let exact = Wait {
        low_ms: 1000,
        high_ms: 1000,
        ..wait
    };
    assert_eq!(
        [Wait::NONE.to_string(), exact.to_string(), wait.to_string()],
        ["no DAD, 0 ms", "DAD, 1000 ms", "DAD, 1000-2000 ms"]
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
    assert!(md.contains("## Diagnosis: new pods run DAD") && md.contains("| namespace | interface |"));
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

/// A session's socket errors bring the application-side fixes, each with its trade-off, in
/// every style; none when nothing failed.
#[test]
fn application_fixes_come_with_failures_seen() {
    use super::{
        Applications,
        render::{Style, render_as},
    };
    let a = audit(DEFAULTS, vec![pod("cni-1", 1)]);
    let mut d = diagnose(&a);
    assert!(!render(&a, &d).contains("Applications"));
    d.applications = Some(Applications {
        session: "before\x1b[2J.json".into(),
        during_dad: "12 failed binds in 3 pods".into(),
        failures: 12,
    });
    let text = render(&a, &d);
    assert!(text.contains("Applications:\n"), "{text}");
    assert!(text.contains("saw applications fail while their pod's address was tentative: 12 failed binds in 3 pods"));
    for fix in ["IPV6_FREEBIND", "use_optimistic=1", "Retry on EADDRNOTAVAIL"] {
        assert!(text.contains(fix), "{fix}: {text}");
    }
    assert_eq!(text.matches("Trades away").count(), 3, "{text}");
    assert!(!text.contains('\x1b'), "the file name is escaped: {text}");
    let html = render_as(&a, &d, Style::Html);
    assert!(html.contains("<h2>Applications</h2>"), "{html}");
    d.applications.as_mut().expect("set").failures = 0;
    assert!(!render(&a, &d).contains("Applications"));
}
