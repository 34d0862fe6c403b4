//! The socket error program ([`abi`] says what it reads and what its counts mean): attached
//! on `sys_exit` beside either backend, BTF-typed where the kernel's BTF has the tracepoint's
//! typedef, else raw. It is optional: a kernel that refuses it still traces DAD.
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
};
use dad_trace_common::sockets::{SOCKET_ERRORS_MAP, SOCKET_STATS_MAP, SocketCount, SocketKey, SocketStat};

use super::{
    btf::KernelFacts,
    loader::{AttachError, LoadError, Target, load_and_attach_target},
    probes::ProgramKind,
};

pub mod abi;

pub use abi::SocketFailure;

/// A socket error program and why it is there, for `dad-trace probes`.
#[derive(Clone, Copy, Debug)]
pub struct SocketHook {
    pub target: Target,
    pub why: &'static str,
}

/// The socket error programs, the preferred first: each is the same filter.
pub const SOCKET_HOOKS: [SocketHook; 2] = [
    SocketHook {
        target: Target {
            program: "socket_error_btf",
            kind: ProgramKind::BtfTracepoint,
            target: "sys_exit",
        },
        why: "a syscall returned: bind/connect/sendto/sendmsg failing with EADDRNOTAVAIL are counted",
    },
    SocketHook {
        target: Target {
            program: "socket_error",
            kind: ProgramKind::RawTracepoint,
            target: "sys_exit",
        },
        why: "the same, where the kernel's BTF lacks btf_trace_sys_exit",
    },
];

/// The socket error programs for `dad-trace probes`: which this kernel offers, and why not.
#[must_use]
pub fn render(facts: &KernelFacts) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("Application socket errors (both backends):\n");
    for (index, hook) in SOCKET_HOOKS.iter().enumerate() {
        let status = match (&facts.socket, hook.target.kind, facts.sys_exit_btf_id) {
            (Err(why), _, _) => format!("not available: {why}"),
            (Ok(_), ProgramKind::BtfTracepoint, None) => {
                "not in BTF (no sys_exit tracepoint without CONFIG_FTRACE_SYSCALLS)".to_string()
            }
            (Ok(_), _, _) => "available".to_string(),
        };
        let prefix = if index == 0 { "" } else { "or " };
        let kind = if hook.target.kind == ProgramKind::BtfTracepoint {
            "tp_btf"
        } else {
            "raw_tp"
        };
        let _ = writeln!(
            out,
            "     {:<26} {kind:<11} {status:<40} {}",
            format!("{prefix}{}", hook.target.target),
            hook.why
        );
    }
    out
}

/// Attaches the first socket error program the kernel takes; says which, or why none.
///
/// # Errors
///
/// The last program's refusal, when no program could be attached.
pub fn attach(ebpf: &mut Ebpf, sys_exit_btf_id: Option<u32>) -> Result<&'static SocketHook, AttachError> {
    let mut refusal = AttachError::MissingProgram {
        program: SOCKET_HOOKS[0].target.program,
    };
    for hook in &SOCKET_HOOKS {
        match load_and_attach_target(ebpf, hook.target, sys_exit_btf_id) {
            Ok(()) => return Ok(hook),
            Err(e) => {
                log::debug!("{e}; trying the next socket error program");
                refusal = e;
            }
        }
    }
    Err(refusal)
}

/// The counts of an attached socket error program.
pub struct SocketCounts {
    errors: HashMap<MapData, SocketKey, SocketCount>,
    stats: PerCpuArray<MapData, u64>,
}

impl SocketCounts {
    /// # Errors
    ///
    /// When the object lacks the maps (it was built without the program).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let errors = ebpf
            .take_map(SOCKET_ERRORS_MAP)
            .ok_or(LoadError::MissingMap(SOCKET_ERRORS_MAP))?;
        let stats = ebpf
            .take_map(SOCKET_STATS_MAP)
            .ok_or(LoadError::MissingMap(SOCKET_STATS_MAP))?;
        Ok(Self {
            errors: HashMap::try_from(errors).map_err(|source| LoadError::Map {
                map: SOCKET_ERRORS_MAP,
                source,
            })?,
            stats: PerCpuArray::try_from(stats).map_err(|source| LoadError::Map {
                map: SOCKET_STATS_MAP,
                source,
            })?,
        })
    }

    /// Every count now (at most the map's size), and how many keys could not be decoded.
    #[must_use]
    pub fn read(&self) -> (Vec<SocketFailure>, u64) {
        let mut undecodable = 0;
        let failures = self
            .errors
            .iter()
            // A key evicted between the walk's steps ends it early: read again next time.
            .map_while(Result::ok)
            .filter_map(|(key, value)| {
                SocketFailure::decode(&key, &value)
                    .inspect_err(|e| {
                        log::debug!("{e}");
                        undecodable += 1;
                    })
                    .ok()
            })
            .collect();
        (failures, undecodable)
    }

    /// One of the program's counters, summed over CPUs.
    #[must_use]
    pub fn stat(&self, stat: SocketStat) -> u64 {
        self.stats
            .get(&(stat as u32), 0)
            .map_or(0, |values| values.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn facts(socket: Result<dad_trace_common::sockets::SocketConfig, String>, btf_id: Option<u32>) -> KernelFacts {
        KernelFacts {
            config: dad_trace_common::Config::default(),
            functions: Vec::new(),
            queue_work_btf_id: None,
            proc: Err("not read".into()),
            socket,
            sys_exit_btf_id: btf_id,
            changed_prototypes: BTreeMap::new(),
        }
    }

    /// `probes` says what this kernel offers for socket errors, and why not: never a failed
    /// start, always a reason.
    #[test]
    fn probes_say_why_socket_errors_are_not_counted() {
        let everything = render(&facts(Ok(dad_trace_common::sockets::SocketConfig::default()), Some(7)));
        assert_eq!(everything.matches(" available ").count(), 2, "{everything}");
        let no_typedef = render(&facts(Ok(dad_trace_common::sockets::SocketConfig::default()), None));
        assert!(
            no_typedef.contains("tp_btf      not in BTF (no sys_exit tracepoint without CONFIG_FTRACE_SYSCALLS)"),
            "{no_typedef}"
        );
        assert!(
            no_typedef.contains("or sys_exit                raw_tp      available"),
            "{no_typedef}"
        );
        let other_arch = render(&facts(
            Err("socket errors are counted on x86_64 and aarch64, not on riscv64".into()),
            Some(7),
        ));
        assert_eq!(
            other_arch.matches("not available: socket errors are counted").count(),
            2,
            "{other_arch}"
        );
    }
}
