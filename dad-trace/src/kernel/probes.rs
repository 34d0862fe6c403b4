//! Which kernel hook observes which DAD phase, per backend, with fallbacks and the reason
//! for each choice: built from the hook table of `dad_trace_common::hooks`, the one place a
//! hook is declared. `dad-trace probes` prints this resolved against the running kernel.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{fmt, sync::LazyLock};

pub use dad_trace_common::hooks::{Ends, HOOKS, HookDef, Phase, ProgramKind, Source, def};
use serde::Serialize;

/// The DAD work function: the tracepoint backend filters workqueue events on its address.
pub const DAD_WORK_FN: &str = "addrconf_dad_work";

/// The kernel functions dad-trace looks up in /proc/kallsyms and BTF (anything else there is
/// ignored): the DAD work function and every kprobe target of [`HOOKS`].
pub static KERNEL_FUNCTIONS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut names = vec![DAD_WORK_FN];
    for def in HOOKS.iter().filter(|def| def.kind.is_probe()) {
        if !names.contains(&def.target) {
            names.push(def.target);
        }
    }
    names
});

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Kprobe,
    Tracepoint,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Kprobe, Backend::Tracepoint];

    /// The backend that attaches programs of this kind.
    #[must_use]
    pub fn of(kind: ProgramKind) -> Backend {
        if kind.is_probe() {
            Backend::Kprobe
        } else {
            Backend::Tracepoint
        }
    }

    /// How many of a phase's hooks this backend attaches. kprobes: the first that exists
    /// (later ones are fallbacks: a function inlined on one kernel is found on another),
    /// except that every way for an address to die is watched. Tracepoints: all, each sees
    /// the address in the state its DAD step left.
    #[must_use]
    pub fn pick(self, phase: Phase) -> Pick {
        match (self, phase) {
            (Backend::Kprobe, Phase::Aborted) | (Backend::Tracepoint, _) => Pick::All,
            (Backend::Kprobe, _) => Pick::First,
        }
    }
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
    /// In the order of [`HOOKS`]; fallbacks are reached through [`HookDef::fallback`].
    pub hooks: Vec<&'static HookDef>,
}

/// One backend's phases and the hooks that observe each, from [`HOOKS`].
fn build_table(backend: Backend) -> Vec<PhaseSpec> {
    Phase::ALL
        .into_iter()
        .map(|phase| PhaseSpec {
            phase,
            pick: backend.pick(phase),
            hooks: HOOKS
                .iter()
                .filter(|def| Backend::of(def.kind) == backend && def.phases.contains(&phase))
                .collect(),
        })
        .collect()
}

static KPROBE_TABLE: LazyLock<Vec<PhaseSpec>> = LazyLock::new(|| build_table(Backend::Kprobe));
static TRACEPOINT_TABLE: LazyLock<Vec<PhaseSpec>> = LazyLock::new(|| build_table(Backend::Tracepoint));

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

/// Every program either backend may load, fallbacks included, each once.
#[must_use]
pub fn programs() -> Vec<(Backend, &'static HookDef)> {
    HOOKS.iter().map(|def| (Backend::of(def.kind), def)).collect()
}

/// The phases a backend reports and the hooks that observe each.
#[must_use]
pub fn table(backend: Backend) -> &'static [PhaseSpec] {
    match backend {
        Backend::Kprobe => &KPROBE_TABLE,
        Backend::Tracepoint => &TRACEPOINT_TABLE,
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

    /// The phase tables built from the hook table: every phase of each backend, holding the
    /// entries of that backend and phase in the table's order.
    #[test]
    fn the_phase_tables_come_from_the_hook_table() {
        for backend in Backend::ALL {
            let phases: Vec<Phase> = table(backend).iter().map(|spec| spec.phase).collect();
            assert_eq!(phases, Phase::ALL);
            for spec in table(backend) {
                let expected: Vec<&str> = HOOKS
                    .iter()
                    .filter(|def| Backend::of(def.kind) == backend && def.phases.contains(&spec.phase))
                    .map(|def| def.program)
                    .collect();
                let programs: Vec<&str> = spec.hooks.iter().map(|def| def.program).collect();
                assert_eq!(programs, expected, "{backend} {}", spec.phase);
                assert_eq!(spec.pick, backend.pick(spec.phase));
            }
        }
    }

    /// The choices the table's order makes today: the kprobe backend's first choice for each
    /// phase, and the tracepoint backend's typed queue filter with its raw fallback.
    #[test]
    fn the_preferred_hooks_come_first() {
        let first = |backend, phase| {
            table(backend)
                .iter()
                .find(|spec| spec.phase == phase)
                .and_then(|spec| spec.hooks.first())
                .map(|def| def.program)
        };
        assert_eq!(first(Backend::Kprobe, Phase::TentativeStart), Some("addr_added"));
        assert_eq!(first(Backend::Kprobe, Phase::DadBegin), Some("dad_begin"));
        assert_eq!(first(Backend::Kprobe, Phase::Completed), Some("dad_completed"));
        assert_eq!(first(Backend::Kprobe, Phase::Failed), Some("dad_failure"));
        assert_eq!(
            first(Backend::Tracepoint, Phase::TentativeStart),
            Some("dad_work_queued_btf")
        );
        assert_eq!(
            def("dad_work_queued_btf")
                .and_then(HookDef::fallback)
                .map(|def| def.program),
            Some("dad_work_queued")
        );
    }

    /// Every entry is attached for some phase, or is the fallback of one that is: an entry
    /// nothing reaches would be a program loaded for nothing.
    #[test]
    fn every_hook_is_reachable_from_a_phase() {
        let reached: Vec<&str> = Backend::ALL
            .iter()
            .flat_map(|&backend| table(backend))
            .flat_map(|spec| &spec.hooks)
            .flat_map(|def| std::iter::once(*def).chain(def.fallback()))
            .map(|def| def.program)
            .collect();
        for def in HOOKS {
            assert!(reached.contains(&def.program), "{} is in no phase", def.program);
        }
        assert_eq!(programs().len(), HOOKS.len());
    }

    /// The kernel functions looked up: the DAD work function and each kprobe target, once;
    /// no tracepoint.
    #[test]
    fn kernel_functions_come_from_the_hook_table() {
        assert_eq!(KERNEL_FUNCTIONS.first(), Some(&DAD_WORK_FN));
        for def in HOOKS {
            let count = KERNEL_FUNCTIONS.iter().filter(|name| **name == def.target).count();
            assert_eq!(count, usize::from(def.kind.is_probe()), "{}", def.target);
        }
        assert!(KERNEL_FUNCTIONS.contains(&"addrconf_dad_failure"));
    }

    /// Each hook id decodes, and the entries that share one (a fallback) agree on what it
    /// ends.
    #[test]
    fn hook_ids_decode_through_the_table() {
        for def in HOOKS {
            assert_eq!(dad_trace_common::Hook::from_u8(def.hook as u8), Some(def.hook));
            assert_eq!(def.hook.ends(), def.ends, "{}", def.program);
        }
        assert_eq!(dad_trace_common::Hook::from_u8(0), None);
        assert_eq!(dad_trace_common::Hook::from_u8(u8::MAX), None);
    }
}
