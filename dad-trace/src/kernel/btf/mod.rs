//! Struct field offsets from the running kernel's BTF, handed to the kernel programs in
//! [`Config`]. Nothing is hard-coded for one kernel.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use dad_trace_common::{Config, ProcConfig, sockets::SocketConfig};

use self::{
    prototype::Prototype,
    raw::{Btf, Kind},
};
use super::probes::{HOOKS, HookDef, KERNEL_FUNCTIONS};
use crate::error::Refusal;

/// Where the kernel publishes its own type information.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path} (dad-trace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y, \
         as most distribution kernels since 5.4 are, or a BTF file for this kernel given with --btf)"
    )]
    Missing { path: PathBuf, source: std::io::Error },
    #[error("cannot parse kernel BTF at {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("kernel BTF has no `{path}` in struct {type_name}: this kernel's layout is not supported")]
    Field {
        type_name: &'static str,
        path: &'static str,
    },
    #[error("socket errors are counted on x86_64 and aarch64, not on {0}")]
    Arch(&'static str),
    #[error("struct {type_name}.{path} is {actual} bytes here, dad-trace reads {expected}")]
    Size {
        type_name: &'static str,
        path: &'static str,
        expected: usize,
        actual: usize,
    },
}

pub mod prototype;
pub mod raw;

/// What dad-trace needs from the kernel's BTF: struct offsets (`dad_work_fn` left 0) and
/// which of the DAD functions the kernel has.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelFacts {
    pub config: Config,
    pub functions: Vec<String>,
    /// The id of the typedef `btf_trace_workqueue_queue_work`: what a BTF-typed tracepoint
    /// program on that tracepoint is loaded against (absent: the raw tracepoint is used).
    #[serde(default)]
    pub queue_work_btf_id: Option<u32>,
    /// Offsets of the CNI call programs (path prefixes left empty), or why this kernel's
    /// layout does not have them: DAD is traced either way.
    pub proc: Result<ProcConfig, String>,
    /// Offsets of the socket error program, or why it cannot run here (DAD is traced either
    /// way).
    #[serde(default = "socket_unknown")]
    pub socket: Result<SocketConfig, String>,
    /// The id of `btf_trace_sys_exit` (absent: the socket error program is a raw tracepoint).
    #[serde(default)]
    pub sys_exit_btf_id: Option<u32>,
    /// Programs whose target's prototype changed (see [`prototype`]), and how: the loader
    /// refuses them.
    #[serde(default)]
    pub changed_prototypes: BTreeMap<String, String>,
}

fn socket_unknown() -> Result<SocketConfig, String> {
    Err("kernel facts from an older helper".into())
}

/// The kernel facts, parsed by `helper` (this binary, `kernel-facts`) in a child process
/// when given: parsing the whole kernel BTF costs far more memory than the agent needs
/// afterwards, and in a child that peak goes when the child exits. Without a helper
/// (library callers), parsed here.
pub fn kernel_facts(btf: &Path, helper: Option<&Path>) -> anyhow::Result<KernelFacts> {
    use anyhow::Context as _;
    let Some(helper) = helper else {
        return Ok(read_facts(btf)?);
    };
    let output = std::process::Command::new(helper)
        .arg("kernel-facts")
        .arg("--btf")
        .arg(btf)
        .output()
        .with_context(|| format!("run {} kernel-facts", helper.display()))?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stderr);
        return Err(Refusal::Kernel(message.trim().trim_start_matches("dad-trace: ").to_string()).into());
    }
    serde_json::from_slice(&output.stdout).context("kernel-facts output")
}

/// Parses the BTF at `path` for what dad-trace needs; any failure is a kernel refusal (exit
/// code 4) that says what is missing.
pub fn read_facts(path: &Path) -> Result<KernelFacts, Refusal> {
    let facts = KernelTypes::load(path).and_then(|types| types.facts());
    facts.map_err(|e| Refusal::Kernel(format!("{:#}", anyhow::Error::from(e))))
}

/// The typedef a BTF-typed program on `workqueue_queue_work` is loaded against.
pub const QUEUE_WORK_TYPEDEF: &str = "btf_trace_workqueue_queue_work";
/// The typedef the socket error program on `sys_exit` is loaded against.
pub const SYS_EXIT_TYPEDEF: &str = "btf_trace_sys_exit";

/// The structs whose members the programs read.
const STRUCTS: &[&str] = &[
    "inet6_ifaddr",
    "work_struct",
    "inet6_dev",
    "net_device",
    "net",
    "task_struct",
    "signal_struct",
    "mm_struct",
    "linux_binprm",
    "nsproxy",
    "pt_regs",
];

/// Read BTF of one kernel, with the ids of the structs and functions dad-trace looks at.
pub struct KernelTypes {
    path: PathBuf,
    btf: Btf,
    structs: std::collections::HashMap<String, u32>,
    functions: std::collections::HashMap<String, u32>,
    typedefs: std::collections::HashMap<String, u32>,
}

impl KernelTypes {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Missing {
            path: path.into(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Reads BTF `bytes`, said to come from `path`.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, BtfError> {
        let btf = Btf::parse(bytes).map_err(|e| BtfError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        // The typedefs of the hooked tracepoints: their prototypes, and what `tp_btf` loads
        // against.
        let typedefs: Vec<String> = HOOKS
            .iter()
            .filter(|def| !def.kind.is_probe())
            .map(|def| prototype::btf_name(def).0)
            .chain([QUEUE_WORK_TYPEDEF.to_string(), SYS_EXIT_TYPEDEF.to_string()])
            .collect();
        let typedefs: Vec<&str> = typedefs.iter().map(String::as_str).collect();
        Ok(Self {
            path: path.into(),
            structs: btf.ids_of(STRUCTS, Kind::Struct),
            functions: btf.ids_of(&KERNEL_FUNCTIONS, Kind::Func),
            typedefs: btf.ids_of(&typedefs, Kind::Typedef),
            btf,
        })
    }

    /// What this kernel's BTF says of each hook's prototype, in the order of [`HOOKS`].
    #[must_use]
    pub fn prototypes(&self) -> Vec<(&'static HookDef, Prototype)> {
        HOOKS
            .iter()
            .map(|def| {
                let (name, kind) = prototype::btf_name(def);
                let ids = if kind == Kind::Func {
                    &self.functions
                } else {
                    &self.typedefs
                };
                (def, prototype::check(&self.btf, def, ids.get(&name).copied()))
            })
            .collect()
    }

    /// Whether BTF knows a function of that name (BTF keeps static functions that were
    /// inlined everywhere only on some kernels, so absence proves little).
    #[must_use]
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything [`KernelFacts`] holds.
    pub fn facts(&self) -> Result<KernelFacts, BtfError> {
        Ok(KernelFacts {
            config: self.config(0)?,
            proc: self.proc_config().map_err(|e| e.to_string()),
            functions: KERNEL_FUNCTIONS
                .iter()
                .filter(|name| self.has_function(name))
                .map(ToString::to_string)
                .collect(),
            queue_work_btf_id: self.typedefs.get(QUEUE_WORK_TYPEDEF).copied(),
            socket: self.socket_config().map_err(|e| e.to_string()),
            sys_exit_btf_id: self.typedefs.get(SYS_EXIT_TYPEDEF).copied(),
            changed_prototypes: self
                .prototypes()
                .into_iter()
                .filter_map(|(def, verdict)| match verdict {
                    Prototype::Changed(how) => Some((def.program.to_string(), how)),
                    Prototype::Matches | Prototype::Unknown(_) => None,
                })
                .collect(),
        })
    }

    /// Byte offset and size of `path` (dotted, e.g. `nd_net.net`) in `struct type_name`.
    fn field(&self, type_name: &'static str, path: &'static str) -> Result<(u32, usize), BtfError> {
        let missing = || BtfError::Field { type_name, path };
        let id = *self.structs.get(type_name).ok_or_else(missing)?;
        let (offset, member) = self.btf.offset_of(id, path).ok_or_else(missing)?;
        let size = self.btf.size_of(member).ok_or_else(missing)?;
        Ok((offset, size))
    }

    fn sized(&self, type_name: &'static str, path: &'static str, expected: usize) -> Result<u32, BtfError> {
        let (offset, actual) = self.field(type_name, path)?;
        if actual == expected {
            Ok(offset)
        } else {
            Err(BtfError::Size {
                type_name,
                path,
                expected,
                actual,
            })
        }
    }

    /// Everything the programs read, checked for the sizes they read it with.
    pub fn config(&self, dad_work_fn: u64) -> Result<Config, BtfError> {
        let pointer = size_of::<u64>();
        let dad_work = self.sized("inet6_ifaddr", "dad_work.work", 32)?;
        Ok(Config {
            dad_work_fn,
            ifa_addr: self.sized("inet6_ifaddr", "addr", 16)?,
            ifa_state: self.sized("inet6_ifaddr", "state", 4)?,
            ifa_flags: self.sized("inet6_ifaddr", "flags", 4)?,
            ifa_dad_probes: self.sized("inet6_ifaddr", "dad_probes", 1)?,
            ifa_idev: self.sized("inet6_ifaddr", "idev", pointer)?,
            ifa_cstamp: self.sized("inet6_ifaddr", "cstamp", pointer)?,
            ifa_dad_work: dad_work,
            work_data: self.sized("work_struct", "data", 8)?,
            work_func: self.sized("work_struct", "func", pointer)?,
            idev_dev: self.sized("inet6_dev", "dev", pointer)?,
            dev_name: self.sized("net_device", "name", 16)?,
            dev_ifindex: self.sized("net_device", "ifindex", 4)?,
            dev_nd_net: self.sized("net_device", "nd_net.net", pointer)?,
            net_ns_inum: self.sized("net", "ns.inum", 4)?,
            net_cookie: self.sized("net", "net_cookie", 8).unwrap_or(Config::ABSENT),
            reserved: 0,
        })
    }

    /// What the exec and exit programs read. `mm_struct`'s fields sit in an anonymous struct
    /// on 6.x kernels: the resolver walks into anonymous members.
    pub fn proc_config(&self) -> Result<ProcConfig, BtfError> {
        let pointer = size_of::<u64>();
        Ok(ProcConfig {
            task_mm: self.sized("task_struct", "mm", pointer)?,
            task_real_parent: self.sized("task_struct", "real_parent", pointer)?,
            task_tgid: self.sized("task_struct", "tgid", 4)?,
            task_exit_code: self.sized("task_struct", "exit_code", 4)?,
            task_signal: self.sized("task_struct", "signal", pointer)?,
            task_start_time: self.sized("task_struct", "start_time", 8)?,
            signal_live: self.sized("signal_struct", "live", 4)?,
            mm_env_start: self.sized("mm_struct", "env_start", 8)?,
            mm_env_end: self.sized("mm_struct", "env_end", 8)?,
            bprm_filename: self.sized("linux_binprm", "filename", pointer)?,
            ..ProcConfig::default()
        })
    }

    /// What the socket error program reads: the syscall's number and arguments where this
    /// architecture saves them, and the failing task's namespace.
    pub fn socket_config(&self) -> Result<SocketConfig, BtfError> {
        let pointer = size_of::<u64>();
        let arch =
            super::sockets::abi::Arch::named(std::env::consts::ARCH).ok_or(BtfError::Arch(std::env::consts::ARCH))?;
        let mut regs_args = [0; 4];
        for (slot, (path, size, within)) in regs_args.iter_mut().zip(arch.argument_registers()) {
            *slot = self.sized("pt_regs", path, size)? + within;
        }
        let (nr_path, nr_size) = arch.number_register();
        Ok(SocketConfig {
            numbers: arch.numbers(),
            regs_nr: self.sized("pt_regs", nr_path, nr_size)?,
            regs_args,
            task_nsproxy: self.sized("task_struct", "nsproxy", pointer)?,
            nsproxy_net: self.sized("nsproxy", "net_ns", pointer)?,
            net_ns_inum: self.sized("net", "ns.inum", 4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel hands every hook what its program reads, where BTF can tell
    /// (the same check `vm-test` makes in each guest, and the loader before attaching).
    #[test]
    fn the_running_kernels_prototypes_match_the_hook_table() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            test_support::skip("no kernel BTF here");
            return;
        }
        let types = KernelTypes::load(path).expect("kernel BTF parses");
        let verdicts = types.prototypes();
        assert_eq!(verdicts.len(), HOOKS.len());
        for (def, verdict) in &verdicts {
            println!("{} ({}): {verdict:?}", def.target, def.program);
            assert!(!matches!(verdict, Prototype::Changed(_)), "{verdict:?}");
        }
        // A function BTF does not know was inlined everywhere: kallsyms has no symbol to
        // attach to either. The tracepoints' typedefs are in every BTF kernel from 5.5.
        let symbols = std::fs::read_to_string(crate::kernel::KALLSYMS)
            .map(|text| crate::kernel::support::parse_kallsyms(&text))
            .unwrap_or_default();
        for (def, verdict) in &verdicts {
            if let Prototype::Unknown(why) = verdict {
                assert!(def.kind.is_probe(), "{why}");
                assert!(!symbols.contains_key(def.target), "attachable but unchecked: {why}");
            }
        }
        assert!(types.facts().expect("facts").changed_prototypes.is_empty());
    }

    /// The offsets the CNI programs read, from this machine's BTF: `mm_struct.env_*` live in an
    /// anonymous struct there, which a resolver that stops at named members misses.
    #[test]
    fn process_offsets_resolve_through_anonymous_members() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            test_support::skip("no kernel BTF here");
            return;
        }
        let types = KernelTypes::load(path).expect("kernel BTF parses");
        let proc = types.proc_config().expect("every field found");
        assert_eq!(proc.mm_env_end, proc.mm_env_start + 8, "env_end follows env_start");
        assert_eq!(proc.signal_live, 4, "signal_struct.live follows sigcnt");
        assert!(proc.task_mm > 0 && proc.task_real_parent > proc.task_mm, "{proc:?}");
        assert!(proc.bprm_filename > 0);
    }
}
