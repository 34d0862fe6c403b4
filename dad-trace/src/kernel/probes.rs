//! Which kernel hook observes which DAD phase, per backend, with fallbacks and the reason
//! for each choice. `dad-trace probes` prints this table resolved against the running kernel.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt;

use dad_trace_common::Hook;
use serde::Serialize;

/// The kernel functions dad-trace may hook; anything else in /proc/kallsyms is ignored.
pub const KERNEL_FUNCTIONS: &[&str] = &[
    "addrconf_dad_work",
    "ipv6_add_addr",
    "addrconf_dad_start",
    "addrconf_dad_begin",
    "addrconf_dad_kick",
    "addrconf_dad_completed",
    "addrconf_dad_failure",
    "addrconf_dad_stop",
    "ipv6_del_addr",
    "inet6_ifa_finish_destroy",
];

/// The DAD work function: the tracepoint backend filters workqueue events on its address.
pub const DAD_WORK_FN: &str = "addrconf_dad_work";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Kprobe, Backend::Tracepoint];
}

/// Which backend to use: one of them, or the best that attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// kprobe when it attaches, else tracepoint.
    Auto,
    Kprobe,
    Tracepoint,
}

impl BackendChoice {
    /// The backends to try, in order.
    #[must_use]
    pub fn candidates(self) -> &'static [Backend] {
        match self {
            BackendChoice::Auto => &Backend::ALL,
            BackendChoice::Kprobe => &[Backend::Kprobe],
            BackendChoice::Tracepoint => &[Backend::Tracepoint],
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    TentativeStart,
    DadBegin,
    Completed,
    Failed,
    Aborted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::TentativeStart => "tentative start",
            Phase::DadBegin => "DAD begin",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Kprobe,
    Kretprobe,
    RawTracepoint,
    /// A BTF-typed tracepoint (`tp_btf`): typed arguments, direct loads.
    BtfTracepoint,
}

/// One kernel program and where it attaches.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    /// Program name in the eBPF object.
    pub program: &'static str,
    pub kind: ProgramKind,
    /// Kernel function or tracepoint name.
    pub target: &'static str,
    pub hook: Hook,
    pub why: &'static str,
    /// What to attach instead where this one cannot be (kernel, BTF or verifier).
    pub fallback: Option<&'static HookSpec>,
}

/// How many of a phase's hooks to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The first that exists: later entries are fallbacks.
    First,
    /// Every one that exists: each sees a different way for the phase to happen.
    All,
}

pub struct PhaseSpec {
    pub phase: Phase,
    pub pick: Pick,
    pub hooks: &'static [HookSpec],
}

const fn kprobe(program: &'static str, target: &'static str, hook: Hook, why: &'static str) -> HookSpec {
    HookSpec {
        program,
        kind: ProgramKind::Kprobe,
        target,
        hook,
        why,
        fallback: None,
    }
}

/// Where `tp_btf` is not available (no BTF typedef, kernel before 5.5): the same filter
/// reading `work->func` through a helper call, two to three times the cost.
pub const QUEUED_RAW: HookSpec = HookSpec {
    program: "dad_work_queued",
    kind: ProgramKind::RawTracepoint,
    target: "workqueue_queue_work",
    hook: Hook::WorkQueued,
    why: "dad_work queued: the address state at each DAD step",
    fallback: None,
};
pub const QUEUED: HookSpec = HookSpec {
    program: "dad_work_queued_btf",
    kind: ProgramKind::BtfTracepoint,
    target: "workqueue_queue_work",
    hook: Hook::WorkQueued,
    why: "dad_work queued (BTF-typed: work->func is a direct load)",
    fallback: Some(&QUEUED_RAW),
};
pub const DONE: HookSpec = HookSpec {
    program: "dad_work_done",
    kind: ProgramKind::RawTracepoint,
    target: "workqueue_execute_end",
    hook: Hook::WorkDone,
    why: "addrconf_dad_work returned: flags and state after each DAD step",
    fallback: None,
};

pub const KPROBE_TABLE: &[PhaseSpec] = &[
    PhaseSpec {
        phase: Phase::TentativeStart,
        pick: Pick::First,
        hooks: &[
            HookSpec {
                program: "addr_added",
                kind: ProgramKind::Kretprobe,
                target: "ipv6_add_addr",
                hook: Hook::AddrAdded,
                why: "returns the new inet6_ifaddr, tentative from birth",
                fallback: None,
            },
            // Second choice only: Debian's 6.1 and 6.12 inline it into the link-local path
            // and keep an out-of-line copy for the rest, so a kprobe there misses addresses.
            kprobe(
                "dad_start",
                "addrconf_dad_start",
                Hook::DadStart,
                "DAD armed (may be partly inlined)",
            ),
        ],
    },
    PhaseSpec {
        phase: Phase::DadBegin,
        pick: Pick::First,
        hooks: &[
            kprobe(
                "dad_begin",
                "addrconf_dad_begin",
                Hook::DadBegin,
                "the DAD state machine starts",
            ),
            kprobe(
                "dad_kick",
                "addrconf_dad_kick",
                Hook::DadKick,
                "schedules the first neighbour solicitation",
            ),
        ],
    },
    PhaseSpec {
        phase: Phase::Completed,
        pick: Pick::First,
        hooks: &[kprobe(
            "dad_completed",
            "addrconf_dad_completed",
            Hook::DadCompleted,
            "tentative flag cleared",
        )],
    },
    PhaseSpec {
        phase: Phase::Failed,
        pick: Pick::First,
        hooks: &[kprobe(
            "dad_failure",
            "addrconf_dad_failure",
            Hook::DadFailure,
            "a neighbour claimed the address",
        )],
    },
    PhaseSpec {
        phase: Phase::Aborted,
        pick: Pick::All,
        hooks: &[
            kprobe(
                "addr_deleted",
                "ipv6_del_addr",
                Hook::AddrDeleted,
                "address removed by a user or the stack",
            ),
            kprobe(
                "addr_destroyed",
                "inet6_ifa_finish_destroy",
                Hook::AddrDestroyed,
                "address freed (interface or netns gone)",
            ),
            kprobe(
                "dad_stop",
                "addrconf_dad_stop",
                Hook::DadStop,
                "DAD stopped (link not ready): it restarts later",
            ),
        ],
    },
];

pub const TRACEPOINT_TABLE: &[PhaseSpec] = &[
    PhaseSpec {
        phase: Phase::TentativeStart,
        pick: Pick::All,
        hooks: &[QUEUED],
    },
    PhaseSpec {
        phase: Phase::DadBegin,
        pick: Pick::All,
        hooks: &[DONE, QUEUED],
    },
    PhaseSpec {
        phase: Phase::Completed,
        pick: Pick::All,
        hooks: &[DONE],
    },
    PhaseSpec {
        phase: Phase::Failed,
        pick: Pick::All,
        hooks: &[QUEUED],
    },
    PhaseSpec {
        phase: Phase::Aborted,
        pick: Pick::All,
        hooks: &[QUEUED, DONE],
    },
];

/// A program of the CNI call tracing: a raw tracepoint of the scheduler, the same for both
/// backends (no kprobe needed, so every kernel of the matrix has it).
#[derive(Clone, Copy, Debug)]
pub struct ProcHook {
    pub program: &'static str,
    pub target: &'static str,
    pub why: &'static str,
}

pub const PROC_HOOKS: [ProcHook; 2] = [
    ProcHook {
        program: "cni_exec",
        target: "sched_process_exec",
        why: "a CNI plugin (or a process it ran) started: path, CNI_* variables, caller",
    },
    ProcHook {
        program: "cni_exit",
        target: "sched_process_exit",
        why: "the last thread of a followed process exited: end and exit status",
    },
];

/// The directories whose plugins are followed unless `--cni-bin-dir` adds others: where
/// kubelet-era runtimes and Debian's `containernetworking-plugins` put them.
pub const DEFAULT_CNI_BIN_DIRS: [&str; 2] = ["/opt/cni/bin/", "/usr/lib/cni/"];

#[must_use]
/// Every program either backend may load, fallbacks included, each once.
pub fn programs() -> Vec<(Backend, &'static HookSpec)> {
    let mut all: Vec<(Backend, &'static HookSpec)> = Vec::new();
    for backend in Backend::ALL {
        for hook in table(backend).iter().flat_map(|phase| phase.hooks) {
            for form in std::iter::once(hook).chain(hook.fallback) {
                if !all.iter().any(|(_, known)| known.program == form.program) {
                    all.push((backend, form));
                }
            }
        }
    }
    all
}

#[must_use]
pub fn table(backend: Backend) -> &'static [PhaseSpec] {
    match backend {
        Backend::Kprobe => KPROBE_TABLE,
        Backend::Tracepoint => TRACEPOINT_TABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_and_names() {
        assert_eq!(BackendChoice::Auto.candidates(), [Backend::Kprobe, Backend::Tracepoint]);
        assert_eq!(BackendChoice::Kprobe.candidates(), [Backend::Kprobe]);
        assert_eq!(BackendChoice::Tracepoint.candidates(), [Backend::Tracepoint]);
        assert_eq!(
            Backend::ALL.map(|backend| backend.to_string()),
            ["kprobe", "tracepoint"]
        );
        assert_eq!(
            [
                Phase::TentativeStart,
                Phase::DadBegin,
                Phase::Completed,
                Phase::Failed,
                Phase::Aborted
            ]
            .map(|phase| phase.to_string()),
            ["tentative start", "DAD begin", "completed", "failed", "aborted"]
        );
    }

    /// Every hook of both tables and every fallback, each program once, with the first
    /// backend that names it.
    #[test]
    fn programs_are_every_hook_and_fallback_once() {
        let programs = programs();
        let names: Vec<&str> = programs.iter().map(|(_, spec)| spec.program).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each once: {names:?}");
        for backend in Backend::ALL {
            for hook in table(backend).iter().flat_map(|phase| phase.hooks) {
                for form in std::iter::once(hook).chain(hook.fallback) {
                    assert!(names.contains(&form.program), "{} missing", form.program);
                }
            }
        }
        let first = programs
            .iter()
            .find(|(_, spec)| spec.program == KPROBE_TABLE[0].hooks[0].program)
            .expect("the kprobe table's first hook");
        assert_eq!(first.0, Backend::Kprobe);
        assert!(
            programs.iter().any(|(backend, _)| *backend == Backend::Tracepoint),
            "the tracepoint table has programs of its own"
        );
    }
}
