//! The kernel hooks of dad-trace, one [`HookDef`] each in [`HOOKS`]: the program, where it
//! attaches, where it finds the address it reads, the DAD phases it observes, its fallback,
//! and whether its event ends an address's tentative period.
//!
//! Everything reads this table: the kernel programs take their argument index from it (and
//! fail to compile when their name or kind disagrees with their entry), the loader derives
//! the kernel functions it looks up and the per-phase plan, the tracker its endings, and
//! `dad-trace probes` what it prints. A unit test of the loader checks the built object
//! against it (every entry has its program, every program an entry); `vm-test` checks each
//! target's prototype against the guest kernel's BTF, and the loader refuses a hook whose
//! prototype changed.
//!
//! Adding a hook: a [`Hook`] variant when the event is a new kind of observation, an entry
//! in [`HOOKS`], and the program (`ifa_kprobe!(name)` in the eBPF crate for a kprobe).

/// Which kernel hook produced an event. The state machine in userspace turns these
/// observations into DAD phases; the kernel side stays stateless. What each one is attached
/// to is in [`HOOKS`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Hook {
    /// A DAD work item queued (`workqueue_queue_work`).
    WorkQueued = 1,
    /// `addrconf_dad_work` ran (`workqueue_execute_end`).
    WorkDone = 2,
    /// The address exists (normally tentative).
    AddrAdded = 3,
    /// DAD armed.
    DadStart = 4,
    /// The DAD state machine starts.
    DadBegin = 5,
    /// The first probe is scheduled.
    DadKick = 6,
    /// Tentative cleared.
    DadCompleted = 7,
    /// A duplicate answered.
    DadFailure = 8,
    /// DAD stopped (it restarts later).
    DadStop = 9,
    /// The address is removed.
    AddrDeleted = 10,
    /// The address is freed.
    AddrDestroyed = 11,
}

impl Hook {
    /// The hook whose discriminant `value` is, if a program of [`HOOKS`] reports it.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Hook> {
        HOOKS.iter().map(|def| def.hook).find(|hook| *hook as u8 == value)
    }

    /// The first entry of [`HOOKS`] reporting this hook (entries sharing a hook agree on
    /// everything but the program, checked at compile time).
    #[must_use]
    pub const fn def(self) -> Option<&'static HookDef> {
        let mut index = 0;
        while index < HOOKS.len() {
            if HOOKS[index].hook as u8 == self as u8 {
                return Some(&HOOKS[index]);
            }
            index += 1;
        }
        None
    }

    /// What an event of this hook ends ([`Ends::Never`] for a hook no program reports).
    #[must_use]
    pub const fn ends(self) -> Ends {
        match self.def() {
            Some(def) => def.ends,
            None => Ends::Never,
        }
    }
}

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Kprobe,
    Kretprobe,
    RawTracepoint,
    /// A BTF-typed tracepoint (`tp_btf`): typed arguments, direct loads.
    BtfTracepoint,
}

impl ProgramKind {
    /// The ELF section aya-ebpf's macros put such a program in (`tp_btf/<target>` when the
    /// macro names its target).
    #[must_use]
    pub const fn section(self) -> &'static str {
        match self {
            ProgramKind::Kprobe => "kprobe",
            ProgramKind::Kretprobe => "kretprobe",
            ProgramKind::RawTracepoint => "raw_tp",
            ProgramKind::BtfTracepoint => "tp_btf",
        }
    }

    /// Whether it attaches to a kernel function (and so needs the kprobe PMU).
    #[must_use]
    pub const fn is_probe(self) -> bool {
        matches!(self, ProgramKind::Kprobe | ProgramKind::Kretprobe)
    }
}

/// Where a program finds the address it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Argument `n` (from 0) of the function is the `struct inet6_ifaddr *`.
    Arg(u8),
    /// The function returns the `struct inet6_ifaddr *` (or an `ERR_PTR`, skipped).
    Return,
    /// Argument `n` (from 0) of the tracepoint is a `struct work_struct *`: the address's
    /// `dad_work.work` when the work's function is `addrconf_dad_work`.
    DadWork(u8),
}

impl Source {
    /// The kernel struct the argument (or return value) points to.
    #[must_use]
    pub const fn pointee(self) -> &'static str {
        match self {
            Source::Arg(_) | Source::Return => "inet6_ifaddr",
            Source::DadWork(_) => "work_struct",
        }
    }
}

/// The phases of an address's DAD that a backend reports, each observed by some hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Phase {
    TentativeStart,
    DadBegin,
    Completed,
    Failed,
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::TentativeStart,
        Phase::DadBegin,
        Phase::Completed,
        Phase::Failed,
        Phase::Aborted,
    ];
}

impl core::fmt::Display for Phase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Phase::TentativeStart => "tentative start",
            Phase::DadBegin => "DAD begin",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        })
    }
}

/// What an event says about the tentative period of the address it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ends {
    /// Nothing: the address is still tentative, or DAD will run again.
    Never,
    /// DAD succeeded.
    Settled,
    /// A duplicate was found.
    Failed,
    /// The address went away before DAD ended.
    Aborted,
    /// What the state the program read says: `DEAD` aborts; `ERRDAD` fails with
    /// `errdad_fails`; both `tentative` and `dadfailed` clear settles with `cleared_settles`.
    ByState { errdad_fails: bool, cleared_settles: bool },
}

/// One kernel program and what it means.
#[derive(Clone, Copy, Debug)]
pub struct HookDef {
    /// The program's name in the eBPF object (its function's name).
    pub program: &'static str,
    pub kind: ProgramKind,
    /// Kernel function or tracepoint name.
    pub target: &'static str,
    pub source: Source,
    /// The id its events carry.
    pub hook: Hook,
    /// The phases its backend observes with it. In the kprobe backend, where only the first
    /// hook of a phase that exists is attached, earlier entries of [`HOOKS`] come first. A
    /// hook used only as another's fallback has none.
    pub phases: &'static [Phase],
    pub ends: Ends,
    /// The program to attach instead where this one cannot be (kernel, BTF or verifier).
    pub fallback: Option<&'static str>,
    /// Why it is hooked, for `dad-trace probes`.
    pub why: &'static str,
}

impl HookDef {
    /// The entry this one falls back to.
    #[must_use]
    pub fn fallback(&self) -> Option<&'static HookDef> {
        self.fallback.and_then(def)
    }

    /// Argument index of the `struct inet6_ifaddr *` of kprobe `program`.
    ///
    /// # Panics
    ///
    /// When `program` has no entry, or its entry is not a kprobe reading an argument. The
    /// kernel programs evaluate it in a `const`: a program whose name or kind disagrees
    /// with its entry does not build.
    #[must_use]
    pub const fn kprobe_arg(program: &str) -> usize {
        match lookup(program) {
            Some(HookDef {
                kind: ProgramKind::Kprobe,
                source: Source::Arg(n),
                ..
            }) => *n as usize,
            Some(_) => panic!("this program's HOOKS entry is not a kprobe reading an argument"),
            None => panic!("no HOOKS entry has this program's name"),
        }
    }

    /// Argument index of the `struct work_struct *` of tracepoint `program` of `kind`.
    ///
    /// # Panics
    ///
    /// When its entry is missing or says otherwise (a compile-time check, as
    /// [`HookDef::kprobe_arg`]).
    #[must_use]
    pub const fn work_arg(program: &str, kind: ProgramKind) -> usize {
        match lookup(program) {
            Some(def) => match def.source {
                Source::DadWork(n) if def.kind as u8 == kind as u8 => n as usize,
                _ => panic!("this program's HOOKS entry is not a tracepoint of that kind reading a work item"),
            },
            None => panic!("no HOOKS entry has this program's name"),
        }
    }

    /// The hook of kretprobe `program`, whose entry reads the return value.
    ///
    /// # Panics
    ///
    /// When its entry is missing or says otherwise (a compile-time check, as
    /// [`HookDef::kprobe_arg`]).
    #[must_use]
    pub const fn kretprobe_hook(program: &str) -> Hook {
        match lookup(program) {
            Some(HookDef {
                kind: ProgramKind::Kretprobe,
                source: Source::Return,
                hook,
                ..
            }) => *hook,
            Some(_) => panic!("this program's HOOKS entry is not a kretprobe reading the return value"),
            None => panic!("no HOOKS entry has this program's name"),
        }
    }

    /// The hook `program` reports.
    ///
    /// # Panics
    ///
    /// When `program` has no entry (a compile-time check, as [`HookDef::kprobe_arg`]).
    #[must_use]
    pub const fn hook_of(program: &str) -> Hook {
        match lookup(program) {
            Some(def) => def.hook,
            None => panic!("no HOOKS entry has this program's name"),
        }
    }
}

const WORK_QUEUED_ENDS: Ends = Ends::ByState {
    errdad_fails: true,
    cleared_settles: false,
};

/// Every DAD hook of dad-trace. The CNI call programs (scheduler tracepoints) and the
/// benchmark's are not DAD hooks: see `dad-trace`'s `PROC_HOOKS` and [`BENCH_PROGRAMS`].
pub const HOOKS: &[HookDef] = &[
    HookDef {
        program: "addr_added",
        kind: ProgramKind::Kretprobe,
        target: "ipv6_add_addr",
        source: Source::Return,
        hook: Hook::AddrAdded,
        phases: &[Phase::TentativeStart],
        ends: Ends::Never,
        fallback: None,
        why: "returns the new inet6_ifaddr, tentative from birth",
    },
    // Second choice only: Debian's 6.1 and 6.12 inline it into the link-local path and keep
    // an out-of-line copy for the rest, so a kprobe there misses addresses.
    HookDef {
        program: "dad_start",
        kind: ProgramKind::Kprobe,
        target: "addrconf_dad_start",
        source: Source::Arg(0),
        hook: Hook::DadStart,
        phases: &[Phase::TentativeStart],
        ends: Ends::Never,
        fallback: None,
        why: "DAD armed (may be partly inlined)",
    },
    HookDef {
        program: "dad_begin",
        kind: ProgramKind::Kprobe,
        target: "addrconf_dad_begin",
        source: Source::Arg(0),
        hook: Hook::DadBegin,
        phases: &[Phase::DadBegin],
        ends: Ends::Never,
        fallback: None,
        why: "the DAD state machine starts",
    },
    HookDef {
        program: "dad_kick",
        kind: ProgramKind::Kprobe,
        target: "addrconf_dad_kick",
        source: Source::Arg(0),
        hook: Hook::DadKick,
        phases: &[Phase::DadBegin],
        ends: Ends::Never,
        fallback: None,
        why: "schedules the first neighbour solicitation",
    },
    HookDef {
        program: "dad_completed",
        kind: ProgramKind::Kprobe,
        target: "addrconf_dad_completed",
        source: Source::Arg(0),
        hook: Hook::DadCompleted,
        phases: &[Phase::Completed],
        ends: Ends::Settled,
        fallback: None,
        why: "tentative flag cleared",
    },
    // addrconf_dad_failure(struct sk_buff *skb, struct inet6_ifaddr *ifp)
    HookDef {
        program: "dad_failure",
        kind: ProgramKind::Kprobe,
        target: "addrconf_dad_failure",
        source: Source::Arg(1),
        hook: Hook::DadFailure,
        phases: &[Phase::Failed],
        ends: Ends::Failed,
        fallback: None,
        why: "a neighbour claimed the address",
    },
    HookDef {
        program: "addr_deleted",
        kind: ProgramKind::Kprobe,
        target: "ipv6_del_addr",
        source: Source::Arg(0),
        hook: Hook::AddrDeleted,
        phases: &[Phase::Aborted],
        ends: Ends::Aborted,
        fallback: None,
        why: "address removed by a user or the stack",
    },
    HookDef {
        program: "addr_destroyed",
        kind: ProgramKind::Kprobe,
        target: "inet6_ifa_finish_destroy",
        source: Source::Arg(0),
        hook: Hook::AddrDestroyed,
        phases: &[Phase::Aborted],
        ends: Ends::Aborted,
        fallback: None,
        why: "address freed (interface or netns gone)",
    },
    HookDef {
        program: "dad_stop",
        kind: ProgramKind::Kprobe,
        target: "addrconf_dad_stop",
        source: Source::Arg(0),
        hook: Hook::DadStop,
        phases: &[Phase::Aborted],
        ends: Ends::Never,
        fallback: None,
        why: "DAD stopped (link not ready): it restarts later",
    },
    // workqueue_queue_work(int req_cpu, struct pool_workqueue *pwq, struct work_struct *work)
    HookDef {
        program: "dad_work_queued_btf",
        kind: ProgramKind::BtfTracepoint,
        target: "workqueue_queue_work",
        source: Source::DadWork(2),
        hook: Hook::WorkQueued,
        phases: &[Phase::TentativeStart, Phase::DadBegin, Phase::Failed, Phase::Aborted],
        ends: WORK_QUEUED_ENDS,
        fallback: Some("dad_work_queued"),
        why: "dad_work queued (BTF-typed: work->func is a direct load)",
    },
    // Where `tp_btf` is not available (no BTF typedef, kernel before 5.5): the same filter
    // reading `work->func` through a helper call instead of a direct load: costlier, so
    // only the fallback.
    HookDef {
        program: "dad_work_queued",
        kind: ProgramKind::RawTracepoint,
        target: "workqueue_queue_work",
        source: Source::DadWork(2),
        hook: Hook::WorkQueued,
        phases: &[],
        ends: WORK_QUEUED_ENDS,
        fallback: None,
        why: "dad_work queued: the address state at each DAD step",
    },
    // workqueue_execute_end(struct work_struct *work, work_func_t function)
    HookDef {
        program: "dad_work_done",
        kind: ProgramKind::RawTracepoint,
        target: "workqueue_execute_end",
        source: Source::DadWork(0),
        hook: Hook::WorkDone,
        phases: &[Phase::DadBegin, Phase::Completed, Phase::Aborted],
        ends: Ends::ByState {
            errdad_fails: false,
            cleared_settles: true,
        },
        fallback: None,
        why: "addrconf_dad_work returned: flags and state after each DAD step",
    },
];

/// The benchmark's programs (`cargo xtask bench`), in the object beside the hooks; `record`
/// never attaches them.
pub const BENCH_PROGRAMS: [&str; 3] = ["baseline_empty", "bracket_open", "bracket_close"];

/// The entry of `program`.
#[must_use]
pub fn def(program: &str) -> Option<&'static HookDef> {
    lookup(program)
}

const fn lookup(program: &str) -> Option<&'static HookDef> {
    let mut index = 0;
    while index < HOOKS.len() {
        if same(HOOKS[index].program, program) {
            return Some(&HOOKS[index]);
        }
        index += 1;
    }
    None
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

const fn same_ends(a: Ends, b: Ends) -> bool {
    match (a, b) {
        (Ends::Never, Ends::Never)
        | (Ends::Settled, Ends::Settled)
        | (Ends::Failed, Ends::Failed)
        | (Ends::Aborted, Ends::Aborted) => true,
        (
            Ends::ByState {
                errdad_fails: a_fails,
                cleared_settles: a_settles,
            },
            Ends::ByState {
                errdad_fails: b_fails,
                cleared_settles: b_settles,
            },
        ) => a_fails == b_fails && a_settles == b_settles,
        _ => false,
    }
}

/// The table's own rules, checked when either side compiles this crate.
const fn check(hooks: &[HookDef]) {
    let mut index = 0;
    while index < hooks.len() {
        let def = &hooks[index];
        let source_fits = match def.source {
            Source::Arg(_) => matches!(def.kind, ProgramKind::Kprobe),
            Source::Return => matches!(def.kind, ProgramKind::Kretprobe),
            Source::DadWork(_) => matches!(def.kind, ProgramKind::RawTracepoint | ProgramKind::BtfTracepoint),
        };
        assert!(source_fits, "a HOOKS entry's source does not fit its kind");
        let mut other = 0;
        while other < hooks.len() {
            let them = &hooks[other];
            if other != index {
                assert!(!same(def.program, them.program), "two HOOKS entries name one program");
                if def.hook as u8 == them.hook as u8 {
                    assert!(
                        same_ends(def.ends, them.ends),
                        "HOOKS entries of one hook disagree on what it ends"
                    );
                }
            }
            other += 1;
        }
        if let Some(fallback) = def.fallback {
            match lookup(fallback) {
                Some(them) => assert!(
                    them.hook as u8 == def.hook as u8 && same(them.target, def.target) && them.fallback.is_none(),
                    "a fallback must report the same hook on the same target, and have none itself"
                ),
                None => panic!("a HOOKS fallback names no entry"),
            }
        }
        index += 1;
    }
}

const _: () = check(HOOKS);
