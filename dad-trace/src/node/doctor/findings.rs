//! The doctor's findings in plain words, most important first.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use super::{Audit, Diagnosis, PodEstimate, Verdict, model::Sysctls as _};

fn int(audit: &Audit, name: &str) -> Option<i64> {
    audit.host.int(name)
}

pub(super) fn findings(audit: &Audit, diagnosis: &Diagnosis, if_inherited: &PodEstimate) -> Vec<String> {
    let mut out = Vec::new();
    let inherit = int(audit, "net.core.devconf_inherit_init_net");
    let wait = diagnosis.new_pod.per_pod;
    match diagnosis.verdict {
        Verdict::DadOn => out.push(format!(
            "DAD is on for new pods: their addresses stay tentative until Duplicate Address Detection ends \
             ({wait} per pod), and CNI plugins that wait for it (ptp, the AWS VPC CNI) hold pod start that long."
        )),
        Verdict::NaiveTuningTrap => out.push(format!(
            "The host namespace is tuned, but net.core.devconf_inherit_init_net is {}, so every new pod namespace \
             starts from kernel defaults (accept_dad=1, dad_transmits=1) and runs DAD anyway ({wait} per pod; \
             inherited, it would be {}). Set it to 1 so new namespaces inherit the host's settings.",
            inherit.map_or_else(|| "missing".into(), |v| v.to_string()),
            if_inherited.per_pod
        )),
        Verdict::Tuned => out.push(
            "New pod namespaces skip DAD (accept_dad below 1 on both `all` and the interface): pods do not wait \
             for it."
                .into(),
        ),
    }
    settings(audit, diagnosis, &mut out);
    live(audit, diagnosis, &mut out);
    out
}

/// What the host's settings do to new pods, setting by setting.
fn settings(audit: &Audit, diagnosis: &Diagnosis, out: &mut Vec<String>) {
    let inherit = int(audit, "net.core.devconf_inherit_init_net");
    let pod = super::model::new_pod_interface(&audit.host, super::model::inherits(&audit.host));
    if pod.accepts_dad() && pod.dad_transmits <= 0 {
        out.push(format!(
            "dad_transmits=0 does not skip DAD: with accept_dad on the kernel still starts it and waits a random \
             0..router_solicitation_delay ({} ms) before the probe-less DAD ends and the tentative flag clears. \
             Only accept_dad=0 (on `all` and the interface) or nodad addresses skip it.",
            pod.rtr_solicit_delay_ms
        ));
    }
    // On a stock node (nothing inherited) all=0, default=1 is the kernel's own default: only
    // worth saying when someone made new pods inherit a tuning that left `default` on.
    if super::model::inherits(&audit.host) && pod.accepts_dad() && pod.all_accept_dad < 1 && pod.accept_dad >= 1 {
        out.push(
            "net.ipv6.conf.all.accept_dad=0 alone does not turn DAD off: the kernel runs DAD when either `all` or \
             the interface's accept_dad is 1 or more, and new interfaces take `default`'s (1). Set default too."
                .into(),
        );
    }
    if pod.all_accept_dad >= 1 && pod.accept_dad < 1 {
        out.push(format!(
            "net.ipv6.conf.all.accept_dad={} overrides default.accept_dad={}: the kernel runs DAD when either is 1 \
             or more. Set all to 0 too.",
            pod.all_accept_dad, pod.accept_dad
        ));
    }
    if pod.accepts_dad() && (pod.optimistic_dad >= 1 || pod.all_optimistic_dad >= 1) {
        out.push(if pod.all_forwarding == 0 {
            format!(
                "optimistic_dad=1 does not end the wait: it only spares kernel-made link-local addresses the random \
                 start delay ({} instead of {}); they stay flagged tentative, addresses a CNI plugin adds are not \
                 optimistic, and plugins wait for the tentative flag.",
                diagnosis.new_pod.link_local, diagnosis.new_pod.added_address
            )
        } else {
            "optimistic_dad=1 has no effect in new pods: all.forwarding=1 there turns it off.".into()
        });
    }
    if int(audit, "net.ipv6.conf.default.enhanced_dad") == Some(0)
        || int(audit, "net.ipv6.conf.all.enhanced_dad") == Some(0)
    {
        out.push(
            "enhanced_dad does not change the wait: it only adds a nonce to DAD probes so that looped-back \
             probes are not taken for duplicates."
                .into(),
        );
    }
    match inherit {
        None => out.push(
            "This kernel has no net.core.devconf_inherit_init_net (added in 5.1): host settings cannot reach new \
             namespaces; disable DAD per pod instead (CNI tuning plugin sysctls) or upgrade the kernel."
                .into(),
        ),
        Some(3) => out.push(
            "devconf_inherit_init_net=3: new namespaces copy the namespace of the process creating them (the \
             container runtime's, usually the host's)."
                .into(),
        ),
        Some(_) => out.push(
            "This kernel has net.core.devconf_inherit_init_net: setting it to 1 makes new namespaces inherit the \
             host's IPv6 settings."
                .into(),
        ),
    }
}

/// What the live pod namespaces show.
fn live(audit: &Audit, diagnosis: &Diagnosis, out: &mut Vec<String>) {
    let pod = super::model::new_pod_interface(&audit.host, super::model::inherits(&audit.host));
    if !diagnosis.namespaces_running_dad.is_empty() {
        out.push(format!(
            "{} of {} live pod namespaces still run DAD for new addresses on their interfaces (settings are fixed \
             when a namespace is created: pods created before a fix keep them).",
            diagnosis.namespaces_running_dad.len(),
            audit.namespaces.len()
        ));
    }
    let overridden = audit
        .namespaces
        .iter()
        .filter(|ns| {
            ns.interfaces
                .iter()
                .any(|i| ns.conf(i).accepts_dad() != pod.accepts_dad())
        })
        .count();
    if overridden > 0 {
        out.push(format!(
            "{overridden} live pod namespaces have an interface whose DAD setting differs from what a new pod \
             gets (a per-interface override, e.g. the bridge plugin sets accept_dad=0 on the pod side unless \
             \"enableDad\": true, or a namespace created under other settings)."
        ));
    }
    let nodad = audit
        .namespaces
        .iter()
        .flat_map(|ns| &ns.addresses)
        .filter(|address| address.nodad())
        .count();
    if nodad > 0 {
        out.push(format!(
            "{nodad} addresses in live pod namespaces were added with nodad (IFA_F_NODAD, the plugin's choice): \
             they skipped DAD whatever the sysctls."
        ));
    }
}
