//! Everything that touches the running kernel: what it offers ([`Kernel::discover`]), which
//! hook observes which DAD phase ([`probes`]), the struct offsets from its BTF ([`btf`]),
//! loading and attaching the programs ([`loader`]) and decoding what they send ([`events`]).
//!
//! Nothing here knows about recording, sessions or reports.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use dad_trace_common::Config;

use crate::error::Refusal;

pub mod btf;
pub mod events;
pub mod loader;
pub mod memlock;
pub mod probes;
pub mod release;
pub mod support;

pub use btf::VMLINUX_BTF;
pub use probes::{Backend, BackendChoice};
pub use support::KernelSupport;

/// Kernel symbols and their addresses (zeros without `CAP_SYSLOG`).
pub const KALLSYMS: &str = "/proc/kallsyms";
/// Present when the kernel can attach kprobes through perf (`CONFIG_KPROBES`).
pub const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// Capabilities from include/uapi/linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The running kernel's release (`uname -r`).
#[must_use]
pub fn release() -> String {
    nix::sys::utsname::uname().map_or_else(|_| "unknown".into(), |u| u.release().to_string_lossy().into_owned())
}

/// Refuses early, with what to do, when the process cannot load tracing programs.
pub fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(Refusal::Privileges(
        "dad-trace needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8): \
         run it with sudo, or in a pod with those capabilities (see README, Privileges)"
            .into(),
    )
    .into())
}

/// What the running kernel offers, read once.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub release: String,
    /// Where its BTF was read.
    pub btf: PathBuf,
    /// Struct offsets (with `dad_work_fn` still 0) and the DAD functions BTF knows.
    pub facts: btf::KernelFacts,
    pub support: KernelSupport,
}

impl Kernel {
    /// Refuses kernels before 5.8 ([`release`]), then reads BTF (in a short-lived child
    /// when `helper` is this binary, see [`btf::kernel_facts`]), `/proc/kallsyms` and the
    /// kprobe PMU.
    pub fn discover(btf_path: &Path, helper: Option<&Path>) -> anyhow::Result<Self> {
        // First: an old kernel would otherwise fail later with a less useful message (no BTF).
        release::Description::running().check()?;
        let facts = btf::kernel_facts(btf_path, helper)?;
        let support = KernelSupport::read(Path::new(KALLSYMS), Path::new(KPROBE_PMU), facts.functions.clone())
            .with_context(|| format!("read {KALLSYMS}"))?;
        Ok(Self {
            release: release(),
            btf: btf_path.into(),
            facts,
            support,
        })
    }

    /// The programs' configuration: the BTF offsets and the address of the DAD work function.
    pub fn config(&self) -> Result<Config, Refusal> {
        let name = probes::DAD_WORK_FN;
        match self.support.symbols.get(name) {
            None => Err(Refusal::Kernel(format!(
                "{name} is not in {KALLSYMS}: is IPv6 built in or loaded (modprobe ipv6)?"
            ))),
            Some(0) => Err(Refusal::Privileges(format!(
                "{KALLSYMS} hides addresses from this process ({name} reads 0): dad-trace needs CAP_SYSLOG \
                 (root has it; in a pod, add it to the capabilities)"
            ))),
            Some(&address) => Ok(Config {
                dad_work_fn: address,
                ..self.facts.config
            }),
        }
    }
}

/// A loaded and attached backend: the programs stay attached while `ebpf` lives.
pub struct Attached {
    pub ebpf: aya::Ebpf,
    pub backend: Backend,
}

/// Loads the programs and attaches the first backend `choice` allows that works here; the
/// error lists why each one could not.
pub fn attach(kernel: &Kernel, choice: BackendChoice, ring_bytes: u32, verbose: bool) -> anyhow::Result<Attached> {
    let config = kernel.config()?;
    let mut failures = Vec::new();
    for &backend in choice.candidates() {
        let plan = kernel.support.plan(backend);
        if !plan.usable() {
            failures.push(format!(
                "{backend}: cannot observe {:?} on this kernel (see `dad-trace probes`)",
                plan.unobservable
            ));
            continue;
        }
        let mut ebpf = loader::load(&config, ring_bytes, verbose)?;
        match loader::attach(&mut ebpf, &plan) {
            Ok(()) => {
                for phase in &plan.unobservable {
                    log::warn!("{backend} backend cannot observe phase '{phase}' on this kernel");
                }
                return Ok(Attached { ebpf, backend });
            }
            Err(e) => {
                // Refused for the memory limit: no other backend would fare better.
                if let Some(refusal) = memlock::explain(&kernel.release, &e) {
                    return Err(refusal.into());
                }
                failures.push(format!("{backend}: {:#}", anyhow::Error::from(e)));
            }
        }
    }
    Err(Refusal::Kernel(format!(
        "no backend could attach:\n  {}\nRun `dad-trace probes` to see what this kernel offers",
        failures.join("\n  ")
    ))
    .into())
}

/// The verifier's verdict on one program.
pub struct Verdict {
    pub backend: Backend,
    pub program: &'static str,
    pub result: Result<(), loader::AttachError>,
}

/// Loads every program of both backends through the verifier (nothing is attached); a
/// program two backends share is loaded once.
pub fn verify_programs(kernel: &Kernel) -> anyhow::Result<Vec<Verdict>> {
    let config = kernel.config()?;
    let mut ebpf = loader::load(&config, dad_trace_common::DEFAULT_RING_BYTES, false)?;
    let mut verdicts = Vec::new();
    for backend in Backend::ALL {
        for spec in probes::table(backend) {
            for hook in spec.hooks {
                if verdicts.iter().any(|v: &Verdict| v.program == hook.program) {
                    continue;
                }
                verdicts.push(Verdict {
                    backend,
                    program: hook.program,
                    result: loader::load_program(&mut ebpf, hook),
                });
            }
        }
    }
    Ok(verdicts)
}
