//! What the running kernel offers (/proc/kallsyms, the kprobe PMU, BTF's function list), and
//! the plan each backend follows here: the hooks of [`super::probes`] that exist.
use std::{collections::HashMap, fmt, path::Path};

use serde::Serialize;

use super::{
    btf::KernelFacts,
    probes::{Backend, HookDef, KERNEL_FUNCTIONS, Phase, Pick, ProgramKind, table},
};

/// What the running kernel offers, read once at start.
#[derive(Clone, Debug, Default)]
pub struct KernelSupport {
    /// Addresses of [`KERNEL_FUNCTIONS`] found in /proc/kallsyms.
    pub symbols: HashMap<String, u64>,
    /// A kprobe PMU exists (`CONFIG_KPROBES` with perf support).
    pub kprobes: bool,
    /// Functions BTF knows; a function there but not in kallsyms was inlined.
    pub btf_functions: Vec<String>,
    /// The BTF id of `btf_trace_workqueue_queue_work`, which a `tp_btf` program loads against.
    pub queue_work_btf_id: Option<u32>,
    /// Programs whose target's prototype in BTF differs from what they read, and how
    /// (`btf::prototype`): they are refused rather than left to read garbage.
    pub changed_prototypes: HashMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum HookStatus {
    Available,
    Inlined,
    Missing,
    Refused(String),
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookStatus::Available => f.write_str("available"),
            HookStatus::Inlined => f.write_str("inlined (in BTF, not in /proc/kallsyms)"),
            HookStatus::Missing => f.write_str("not in /proc/kallsyms (inlined?)"),
            HookStatus::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl KernelSupport {
    /// Reads kallsyms and the kprobe PMU; the rest comes from the kernel's BTF: the DAD
    /// functions it knows, the typedef `tp_btf` needs, the prototypes that changed.
    pub fn read(kallsyms: &Path, kprobe_pmu: &Path, facts: &KernelFacts) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(kallsyms)?;
        Ok(Self {
            symbols: parse_kallsyms(&text),
            kprobes: kprobe_pmu.exists(),
            btf_functions: facts.functions.clone(),
            queue_work_btf_id: facts.queue_work_btf_id,
            changed_prototypes: facts.changed_prototypes.clone().into_iter().collect(),
        })
    }

    #[must_use]
    pub fn status(&self, spec: &HookDef) -> HookStatus {
        if let Some(how) = self.changed_prototypes.get(spec.program) {
            return HookStatus::Refused(format!("prototype changed: {how}"));
        }
        match spec.kind {
            ProgramKind::RawTracepoint => HookStatus::Available,
            ProgramKind::BtfTracepoint if self.queue_work_btf_id.is_some() => HookStatus::Available,
            ProgramKind::BtfTracepoint => HookStatus::Refused(format!(
                "no BTF type btf_trace_{} (kernel before 5.5, or built without it)",
                spec.target
            )),
            ProgramKind::Kprobe | ProgramKind::Kretprobe => {
                if self.symbols.contains_key(spec.target) {
                    if self.kprobes {
                        HookStatus::Available
                    } else {
                        HookStatus::Refused("no kprobe PMU (CONFIG_KPROBES off or locked down)".into())
                    }
                } else if self.btf_functions.iter().any(|f| f == spec.target) {
                    HookStatus::Inlined
                } else {
                    HookStatus::Missing
                }
            }
        }
    }

    /// The hook itself when it is available here, else its fallback when that is.
    #[must_use]
    pub fn usable_form(&self, hook: &'static HookDef) -> Option<&'static HookDef> {
        let available = |spec: &HookDef| self.status(spec) == HookStatus::Available;
        if available(hook) {
            Some(hook)
        } else {
            hook.fallback().filter(|fallback| available(fallback))
        }
    }

    /// The hooks a backend attaches on this kernel, with phases it cannot observe.
    #[must_use]
    pub fn plan(&self, backend: Backend) -> Plan {
        let mut plan = Plan::default();
        for spec in table(backend) {
            let usable: Vec<&'static HookDef> = spec.hooks.iter().filter_map(|hook| self.usable_form(hook)).collect();
            let chosen: Vec<&'static HookDef> = match spec.pick {
                Pick::First => usable.into_iter().take(1).collect(),
                Pick::All => usable,
            };
            if chosen.is_empty() {
                plan.unobservable.push(spec.phase);
            }
            for hook in chosen {
                if !plan.hooks.iter().any(|h| h.program == hook.program) {
                    plan.hooks.push(hook);
                }
            }
        }
        plan
    }
}

/// The programs to attach for one backend.
#[derive(Debug, Default)]
pub struct Plan {
    pub hooks: Vec<&'static HookDef>,
    pub unobservable: Vec<Phase>,
}

impl Plan {
    /// A backend is usable when it sees an address appear and settle.
    #[must_use]
    pub fn usable(&self) -> bool {
        !self.unobservable.contains(&Phase::TentativeStart) && !self.unobservable.contains(&Phase::Completed)
    }
}

/// Picks the addresses of the functions dad-trace cares about, built in or in a module
/// (`addrconf_dad_work\t[ipv6]` where IPv6 is a module); `.cold` parts never match.
/// Addresses read as 0 without `CAP_SYSLOG` (`kptr_restrict`).
#[must_use]
pub fn parse_kallsyms(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _kind = fields.next()?;
            let name = fields.next()?;
            let module_or_nothing = fields
                .next()
                .is_none_or(|module| module.starts_with('[') && module.ends_with(']'));
            (module_or_nothing && fields.next().is_none() && KERNEL_FUNCTIONS.contains(&name))
                .then(|| (name.to_string(), address))
        })
        .collect()
}

/// Renders the per-phase table for `dad-trace probes`.
#[must_use]
pub fn render(support: &KernelSupport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for backend in Backend::ALL {
        let plan = support.plan(backend);
        let verdict = if plan.usable() {
            "usable"
        } else {
            "NOT usable on this kernel"
        };
        let _ = writeln!(out, "{backend} backend: {verdict}");
        for spec in table(backend) {
            let _ = writeln!(out, "  {}:", spec.phase);
            for hook in &spec.hooks {
                render_hook(&mut out, support, &plan, hook, "");
                if let Some(fallback) = hook.fallback() {
                    render_hook(&mut out, support, &plan, fallback, "or ");
                }
            }
        }
    }
    out.push_str("CNI calls (both backends):\n");
    for hook in super::probes::PROC_HOOKS {
        let _ = writeln!(
            out,
            "   * {:<26} {:<11} {:<40} {}",
            hook.target, "raw_tp", "available", hook.why
        );
    }
    out.push_str("(* = attached by that backend on this kernel)\n");
    out.push_str(PHASE_BOUNDARIES);
    out
}

/// Which boundaries of an address's wait each backend sees (the session's `link_wait_ns`,
/// `delay_ns`, `probing_ns`; null where not seen).
const PHASE_BOUNDARIES: &str = "Why an address waited (link_wait_ns, delay_ns, probing_ns):\n\
    \x20 tracepoint: all three when DAD starts inside a DAD work item; when a link comes up the kick is seen only \
    once its random delay expired, so that delay is in link_wait_ns and delay_ns is null\n\
    \x20 kprobe: link_wait_ns (the kick is hooked); no hook at the first probe, so delay_ns and probing_ns are null \
    (dad_ns holds both)\n";

fn render_hook(out: &mut String, support: &KernelSupport, plan: &Plan, hook: &HookDef, prefix: &str) {
    use std::fmt::Write as _;
    let chosen = plan.hooks.iter().any(|h| h.program == hook.program);
    let mark = if chosen { "*" } else { " " };
    let kind = match hook.kind {
        ProgramKind::Kprobe => "kprobe",
        ProgramKind::Kretprobe => "kretprobe",
        ProgramKind::RawTracepoint => "raw_tp",
        ProgramKind::BtfTracepoint => "tp_btf",
    };
    let _ = writeln!(
        out,
        "   {mark} {:<26} {:<11} {:<40} {}",
        format!("{prefix}{}", hook.target),
        kind,
        support.status(hook).to_string(),
        hook.why
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "ffffffff8124493a t addrconf_dad_work.cold\n\
        ffffffff820dd960 t ipv6_add_addr\n\
        ffffffff820dfca0 t addrconf_dad_kick\n\
        ffffffff820e2e10 t addrconf_dad_completed\n\
        ffffffff820e3200 t addrconf_dad_work\n\
        ffffffffc0001000 t veth_open\t[veth]\n";

    #[test]
    fn kallsyms_keeps_exact_names_only() {
        let symbols = parse_kallsyms(KALLSYMS);
        assert_eq!(symbols.get("addrconf_dad_work"), Some(&0xffff_ffff_820e_3200));
        assert_eq!(symbols.len(), 4);
    }

    /// A kernel with IPv6 built as a module lists its symbols with the module's name.
    #[test]
    fn ipv6_as_a_module_is_traced() {
        let module = "ffffffffc0a1b000 t addrconf_dad_work\t[ipv6]\n\
                      ffffffffc0a1c000 t addrconf_dad_completed\t[ipv6]\n\
                      ffffffffc0a1d000 t ipv6_add_addr\t[ipv6]\n\
                      ffffffffc0a1e000 t addrconf_dad_kick [ipv6] extra\n";
        let symbols = parse_kallsyms(module);
        assert_eq!(symbols.get("addrconf_dad_work"), Some(&0xffff_ffff_c0a1_b000));
        assert_eq!(
            symbols.len(),
            3,
            "a line with more than a module after the name is not a symbol line"
        );
        let support = KernelSupport {
            symbols,
            kprobes: false,
            btf_functions: vec![],
            queue_work_btf_id: None,
            changed_prototypes: HashMap::new(),
        };
        assert!(support.plan(Backend::Tracepoint).usable());
    }

    #[test]
    fn kprobe_plan_falls_back_when_begin_is_inlined() {
        let support = KernelSupport {
            symbols: parse_kallsyms(KALLSYMS),
            kprobes: true,
            btf_functions: vec!["addrconf_dad_begin".into()],
            queue_work_btf_id: None,
            changed_prototypes: HashMap::new(),
        };
        let plan = support.plan(Backend::Kprobe);
        let targets: Vec<_> = plan.hooks.iter().map(|h| h.target).collect();
        assert_eq!(
            targets,
            ["ipv6_add_addr", "addrconf_dad_kick", "addrconf_dad_completed"]
        );
        assert_eq!(plan.unobservable, [Phase::Failed, Phase::Aborted]);
        assert!(plan.usable());
        assert_eq!(support.status(table(Backend::Kprobe)[1].hooks[0]), HookStatus::Inlined);
    }

    /// The typed tracepoint where BTF names its typedef, the raw one where it does not.
    #[test]
    fn the_queue_filter_takes_tp_btf_where_the_kernel_has_its_type() {
        let queued = |btf_id| {
            let support = KernelSupport {
                symbols: parse_kallsyms(KALLSYMS),
                kprobes: false,
                btf_functions: vec![],
                queue_work_btf_id: btf_id,
                changed_prototypes: HashMap::new(),
            };
            let plan = support.plan(Backend::Tracepoint);
            assert!(plan.usable());
            plan.hooks
                .iter()
                .find(|hook| hook.target == "workqueue_queue_work")
                .map(|hook| hook.program)
        };
        assert_eq!(queued(Some(7345)), Some("dad_work_queued_btf"));
        assert_eq!(queued(None), Some("dad_work_queued"));
        let shown = render(&KernelSupport {
            symbols: parse_kallsyms(KALLSYMS),
            kprobes: false,
            btf_functions: vec![],
            queue_work_btf_id: None,
            changed_prototypes: HashMap::new(),
        });
        assert!(
            shown
                .lines()
                .any(|line| line.contains("tp_btf") && line.contains("no BTF type")),
            "{shown}"
        );
        assert!(
            shown
                .lines()
                .any(|line| line.starts_with("   * or workqueue_queue_work") && line.contains("raw_tp")),
            "{shown}"
        );
    }

    /// A kernel whose BTF says three hooked functions changed their prototypes (a fake
    /// one): each is refused, saying how, and its phase goes unobserved rather than read
    /// through the wrong argument; the functions that kept theirs are used.
    #[test]
    fn hooks_whose_prototype_changed_are_refused_with_how() {
        let types = crate::kernel::btf::KernelTypes::parse(
            Path::new("fake"),
            crate::kernel::btf::prototype::tests::changed_kernel_bytes(),
        )
        .expect("parses");
        let changed: HashMap<String, String> = types
            .prototypes()
            .into_iter()
            .filter_map(|(def, verdict)| match verdict {
                crate::kernel::btf::prototype::Prototype::Changed(how) => Some((def.program.to_string(), how)),
                _ => None,
            })
            .collect();
        let mut names: Vec<&str> = changed.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["addr_added", "dad_completed", "dad_failure"]);
        let mut symbols = parse_kallsyms(KALLSYMS);
        symbols.insert("addrconf_dad_failure".into(), 0xffff_ffff_820e_3000);
        let support = KernelSupport {
            symbols,
            kprobes: true,
            btf_functions: vec![],
            queue_work_btf_id: Some(19),
            changed_prototypes: changed,
        };
        let failure = table(Backend::Kprobe)[3].hooks[0];
        assert_eq!(failure.program, "dad_failure");
        assert_eq!(
            support.status(failure),
            HookStatus::Refused(
                "prototype changed: addrconf_dad_failure: argument 1 is `struct sk_buff *`, dad_failure reads a \
                 `struct inet6_ifaddr *` there"
                    .into()
            )
        );
        let plan = support.plan(Backend::Kprobe);
        let targets: Vec<_> = plan.hooks.iter().map(|h| h.target).collect();
        assert_eq!(targets, ["addrconf_dad_kick"]);
        assert_eq!(
            plan.unobservable,
            [Phase::TentativeStart, Phase::Completed, Phase::Failed, Phase::Aborted]
        );
        assert!(!plan.usable());
        assert!(support.plan(Backend::Tracepoint).usable());
        let shown = render(&support);
        assert!(
            shown.lines().any(|line| line.contains("addrconf_dad_failure")
                && line.contains("refused: prototype changed: addrconf_dad_failure: argument 1")),
            "{shown}"
        );
    }

    #[test]
    fn kprobes_refused_without_pmu() {
        let support = KernelSupport {
            symbols: parse_kallsyms(KALLSYMS),
            kprobes: false,
            btf_functions: vec![],
            queue_work_btf_id: None,
            changed_prototypes: HashMap::new(),
        };
        assert!(!support.plan(Backend::Kprobe).usable());
        assert!(support.plan(Backend::Tracepoint).usable());
        assert!(matches!(
            support.status(table(Backend::Kprobe)[0].hooks[0]),
            HookStatus::Refused(_)
        ));
    }
}
