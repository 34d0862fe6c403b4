//! Everything that touches the running kernel: what it offers ([`Kernel::discover`]), which
//! hook observes which DAD phase ([`probes`]), the struct offsets from its BTF ([`btf`]),
//! loading and attaching the programs ([`loader`]) and decoding what they send ([`events`]).
//!
//! Nothing here knows about recording, sessions or reports.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use dad_trace_common::{Config, PathPrefix, ProcConfig};

use crate::error::Refusal;

pub mod btf;
pub mod events;
pub mod loader;
pub mod memlock;
pub mod probes;
pub mod procs;
pub mod release;
pub mod sockets;
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
         run it with sudo, or in a pod with those capabilities (see SECURITY.md, Privileges)"
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
        let support = KernelSupport::read(Path::new(KALLSYMS), Path::new(KPROBE_PMU), &facts)
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

    /// The CNI call programs' configuration: BTF offsets and the plugin directories whose
    /// execs are followed (at most [`dad_trace_common::PREFIXES`], each shorter than
    /// [`dad_trace_common::PREFIX_BYTES`], ending in `/`). Why not, when this kernel's
    /// layout lacks a field or a directory does not fit.
    pub fn proc_config(&self, dirs: &[String]) -> Result<ProcConfig, String> {
        let mut config = self.facts.proc.clone()?;
        if dirs.len() > config.prefixes.len() {
            return Err(format!(
                "{} CNI plugin directories given, dad-trace follows at most {}",
                dirs.len(),
                config.prefixes.len()
            ));
        }
        for (slot, dir) in config.prefixes.iter_mut().zip(dirs) {
            *slot = PathPrefix::new(dir.as_bytes()).ok_or_else(|| {
                format!(
                    "CNI plugin directory {dir:?} is longer than the {} bytes dad-trace compares",
                    dad_trace_common::PREFIX_BYTES - 1
                )
            })?;
        }
        Ok(config)
    }
}

/// The directories to follow, each as a path prefix ending in `/` (so `/opt/cni/bin` does not
/// also follow `/opt/cni/binaries`): the defaults, then `extra`, without repeats.
#[must_use]
pub fn cni_bin_dirs(extra: &[PathBuf]) -> Vec<String> {
    let mut dirs: Vec<String> = probes::DEFAULT_CNI_BIN_DIRS.iter().map(ToString::to_string).collect();
    for dir in extra {
        let mut text = dir.to_string_lossy().into_owned();
        if !text.ends_with('/') {
            text.push('/');
        }
        if !dirs.contains(&text) {
            dirs.push(text);
        }
    }
    dirs
}

/// A loaded and attached backend: the programs stay attached while `ebpf` lives.
pub struct Attached {
    pub ebpf: aya::Ebpf,
    pub backend: Backend,
    /// Whether CNI calls are followed too, or why not.
    pub procs: Result<(), String>,
    /// The socket error program attached, or why not.
    pub sockets: Result<&'static sockets::SocketHook, String>,
}

/// Loads the programs and attaches the first backend `choice` allows that works here; the
/// error lists why each one could not. With `procs`, the CNI call programs are attached as
/// well (both backends have them); their failure leaves DAD traced and says why.
pub fn attach(
    kernel: &Kernel,
    choice: BackendChoice,
    ring_bytes: u32,
    verbose: bool,
    procs: Result<ProcConfig, String>,
) -> anyhow::Result<Attached> {
    let config = kernel.config()?;
    let extras = loader::Extras {
        proc: procs.clone().unwrap_or_default(),
        socket: kernel.facts.socket.clone().unwrap_or_default(),
    };
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
        let mut ebpf = loader::load_all(&config, &extras, ring_bytes, verbose)?;
        match loader::attach(&mut ebpf, &plan, kernel.support.queue_work_btf_id) {
            Ok(()) => {
                for phase in &plan.unobservable {
                    log::warn!("{backend} backend cannot observe phase '{phase}' on this kernel");
                }
                let procs = procs
                    .and_then(|_| loader::attach_procs(&mut ebpf).map_err(|e| format!("{:#}", anyhow::Error::from(e))));
                let sockets = kernel.facts.socket.clone().and_then(|_| {
                    sockets::attach(&mut ebpf, kernel.facts.sys_exit_btf_id)
                        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
                });
                return Ok(Attached {
                    ebpf,
                    backend,
                    procs,
                    sockets,
                });
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
pub struct ProgramCheck {
    /// The backend that uses it, or `None` for the CNI call programs both use.
    pub backend: Option<Backend>,
    pub program: &'static str,
    pub result: Result<(), loader::AttachError>,
}

/// Loads every program either backend may use, fallbacks included, and the CNI call
/// programs, through the verifier (nothing is attached).
pub fn verify_programs(kernel: &Kernel) -> anyhow::Result<Vec<ProgramCheck>> {
    let config = kernel.config()?;
    let proc = kernel
        .proc_config(&cni_bin_dirs(&[]))
        .map_err(|why| Refusal::Kernel(format!("the CNI call programs cannot run here: {why}")))?;
    let extras = loader::Extras {
        proc,
        socket: kernel.facts.socket.clone().unwrap_or_default(),
    };
    let mut ebpf = loader::load_all(&config, &extras, dad_trace_common::DEFAULT_RING_BYTES, false)?;
    let mut verdicts: Vec<ProgramCheck> = probes::programs()
        .into_iter()
        .map(|(backend, hook)| ProgramCheck {
            backend: Some(backend),
            program: hook.program,
            result: loader::load_program(&mut ebpf, hook, kernel.support.queue_work_btf_id),
        })
        .collect();
    verdicts.extend(probes::PROC_HOOKS.iter().map(|hook| ProgramCheck {
        backend: None,
        program: hook.program,
        result: loader::load_proc_program(&mut ebpf, hook),
    }));
    verdicts.extend(sockets::SOCKET_HOOKS.iter().map(|hook| ProgramCheck {
        backend: None,
        program: hook.target.program,
        result: loader::load_target(&mut ebpf, hook.target, kernel.facts.sys_exit_btf_id),
    }));
    Ok(verdicts)
}
