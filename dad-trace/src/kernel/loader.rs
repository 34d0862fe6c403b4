//! Loads the embedded kernel programs, attaches a backend's hooks, and streams the ring
//! buffer: one reader task → bounded channel → consumer.
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{KProbe, ProgramError, RawTracePoint},
};
use dad_trace_common::{
    CONFIG_GLOBAL, Config, EVENTS_MAP, LOST_MAP, PROC_CONFIG_GLOBAL, PROC_EVENTS_MAP, PROC_STATS_MAP, ProcConfig,
    ProcStat,
};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{
    events::{self, Observation},
    probes::{HookSpec, PROC_HOOKS, ProcHook, ProgramKind},
    procs::{self, ProcEvent},
    support::Plan,
};

/// The kernel object, built by build.rs and embedded: one file to copy to a node.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dad-trace"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this dad-trace was built with AYA_BUILD_SKIP: it carries no kernel programs; rebuild without it")]
    NoObject,
    #[error("cannot load the kernel programs: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("map {0} missing from the kernel object")]
    MissingMap(&'static str),
    #[error("cannot poll the events ring buffer: {0}")]
    Poll(std::io::Error),
    #[error("map {map}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {program} missing from the kernel object")]
    MissingProgram { program: &'static str },
    #[error("{probe}")]
    Program { probe: String, source: ProgramError },
}

/// Loads the object with `config` baked in (the CNI call programs get an empty configuration:
/// see [`load_with_procs`]). Nothing is attached yet.
pub fn load(config: &Config, ring_bytes: u32, verbose: bool) -> Result<Ebpf, LoadError> {
    load_with_procs(config, &ProcConfig::default(), ring_bytes, verbose)
}

/// Loads the object with both configurations baked in. Nothing is attached yet.
pub fn load_with_procs(config: &Config, proc: &ProcConfig, ring_bytes: u32, verbose: bool) -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    // Kernel-side debug logs cost a ring buffer write each: only when asked for.
    let log_level = if verbose {
        aya_log::Level::Debug
    } else {
        aya_log::Level::Warn
    } as u8;
    let ebpf = EbpfLoader::new()
        // No CO-RE relocations to resolve (offsets come in `config`): parsing the kernel BTF
        // again would only cost memory.
        .btf(None)
        .override_global(CONFIG_GLOBAL, config, true)
        .override_global(PROC_CONFIG_GLOBAL, proc, true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .map_max_entries(EVENTS_MAP, ring_bytes)
        .load(EBPF_OBJECT)?;
    Ok(ebpf)
}

fn probe_name(hook: &HookSpec) -> String {
    let kind = match hook.kind {
        ProgramKind::Kprobe => "kprobe",
        ProgramKind::Kretprobe => "kretprobe",
        ProgramKind::RawTracepoint => "raw_tracepoint",
    };
    format!("{kind} {} (program {})", hook.target, hook.program)
}

/// Runs the verifier on one program (no attach).
pub fn load_program(ebpf: &mut Ebpf, hook: &HookSpec) -> Result<(), AttachError> {
    let program = hook.program;
    let wrap = |source| AttachError::Program {
        probe: probe_name(hook),
        source,
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or(AttachError::MissingProgram { program })?;
    match hook.kind {
        ProgramKind::Kprobe | ProgramKind::Kretprobe => {
            let kprobe: &mut KProbe = prog.try_into().map_err(wrap)?;
            kprobe.load().map_err(wrap)
        }
        ProgramKind::RawTracepoint => {
            let tracepoint: &mut RawTracePoint = prog.try_into().map_err(wrap)?;
            tracepoint.load().map_err(wrap)
        }
    }
}

/// Loads and attaches every hook of `plan`. Links live as long as `ebpf`.
pub fn attach(ebpf: &mut Ebpf, plan: &Plan) -> Result<(), AttachError> {
    for hook in &plan.hooks {
        load_program(ebpf, hook)?;
        let wrap = |source| AttachError::Program {
            probe: probe_name(hook),
            source,
        };
        let prog = ebpf
            .program_mut(hook.program)
            .ok_or(AttachError::MissingProgram { program: hook.program })?;
        match hook.kind {
            ProgramKind::Kprobe | ProgramKind::Kretprobe => {
                let kprobe: &mut KProbe = prog.try_into().map_err(wrap)?;
                kprobe.attach(hook.target, 0).map_err(wrap)?;
            }
            ProgramKind::RawTracepoint => {
                let tracepoint: &mut RawTracePoint = prog.try_into().map_err(wrap)?;
                tracepoint.attach(hook.target).map_err(wrap)?;
            }
        }
        log::debug!("attached {}", probe_name(hook));
    }
    Ok(())
}

/// Loads one of the CNI call programs through the verifier (no attach).
pub fn load_proc_program(ebpf: &mut Ebpf, hook: &ProcHook) -> Result<(), AttachError> {
    let program = hook.program;
    let wrap = |source| AttachError::Program {
        probe: format!("raw_tracepoint {} (program {program})", hook.target),
        source,
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or(AttachError::MissingProgram { program })?;
    let tracepoint: &mut RawTracePoint = prog.try_into().map_err(wrap)?;
    tracepoint.load().map_err(wrap)
}

/// Loads and attaches the exec and exit programs that follow CNI plugins.
pub fn attach_procs(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    for hook in &PROC_HOOKS {
        load_proc_program(ebpf, hook)?;
        let wrap = |source| AttachError::Program {
            probe: format!("raw_tracepoint {} (program {})", hook.target, hook.program),
            source,
        };
        let prog = ebpf
            .program_mut(hook.program)
            .ok_or(AttachError::MissingProgram { program: hook.program })?;
        let tracepoint: &mut RawTracePoint = prog.try_into().map_err(wrap)?;
        tracepoint.attach(hook.target).map_err(wrap)?;
        log::debug!("attached raw_tracepoint {}", hook.target);
    }
    Ok(())
}

/// Forwards kernel-side aya-log records to the `log` crate (shown with -v).
pub fn start_kernel_logs(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        // SAFETY: the AsyncFd owns the logger, which owns the fd: it outlives the registration.
        Ok(logger) => match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
            Ok(mut logger) => {
                tokio::spawn(async move {
                    while let Ok(mut guard) = logger.readable_mut().await {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(e) => log::debug!("kernel logs unavailable: {e}"),
        },
        Err(e) => log::debug!("kernel logs unavailable: {e}"),
    }
}

/// Reads the count of events the kernel dropped because the ring buffer was full.
pub struct LostCounter(PerCpuArray<MapData, u64>);

impl LostCounter {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let map = ebpf.take_map(LOST_MAP).ok_or(LoadError::MissingMap(LOST_MAP))?;
        Ok(Self(
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map { map: LOST_MAP, source })?,
        ))
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.get(&0, 0).map_or(0, |values| values.iter().sum())
    }
}

/// The counters of the CNI call programs ([`ProcStat`]).
pub struct ProcStats(PerCpuArray<MapData, u64>);

impl ProcStats {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let map = ebpf
            .take_map(PROC_STATS_MAP)
            .ok_or(LoadError::MissingMap(PROC_STATS_MAP))?;
        Ok(Self(PerCpuArray::try_from(map).map_err(|source| {
            LoadError::Map {
                map: PROC_STATS_MAP,
                source,
            }
        })?))
    }

    /// The sum over CPUs of one counter.
    #[must_use]
    pub fn get(&self, stat: ProcStat) -> u64 {
        self.0.get(&(stat as u32), 0).map_or(0, |values| values.iter().sum())
    }
}

/// What the reader tasks send: observations of addresses, process records, or a record they
/// could not decode.
#[derive(Clone, Debug)]
pub enum Reading {
    Observation(Observation),
    Process(ProcEvent),
    Undecodable(events::DecodeError),
}

/// Spawns the one reader of the events ring buffer. It ends when the receiver is dropped.
pub fn spawn_reader(ebpf: &mut Ebpf, capacity: usize) -> Result<mpsc::Receiver<Reading>, LoadError> {
    spawn_readers(ebpf, capacity, false)
}

/// Spawns the events reader and, with `procs`, the process ring's reader, both sending into
/// one channel (one consumer sees both). Records of two rings arrive in no common order: the
/// consumer orders by timestamp where it matters.
pub fn spawn_readers(
    ebpf: &mut Ebpf,
    capacity: usize,
    with_procs: bool,
) -> Result<mpsc::Receiver<Reading>, LoadError> {
    let (sender, receiver) = mpsc::channel(capacity);
    if with_procs {
        spawn_ring_reader(ebpf, PROC_EVENTS_MAP, sender.clone(), |item| match procs::decode(item) {
            Ok(event) => Reading::Process(event),
            Err(e) => Reading::Undecodable(e),
        })?;
    }
    spawn_ring_reader(ebpf, EVENTS_MAP, sender, |item| match events::decode(item) {
        Ok(obs) => Reading::Observation(obs),
        Err(e) => Reading::Undecodable(e),
    })?;
    Ok(receiver)
}

fn spawn_ring_reader(
    ebpf: &mut Ebpf,
    name: &'static str,
    sender: mpsc::Sender<Reading>,
    decode: fn(&[u8]) -> Reading,
) -> Result<(), LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    let ring = RingBuf::try_from(map).map_err(|source| LoadError::Map { map: name, source })?;
    // SAFETY: the AsyncFd owns the ring buffer, which owns the fd: it outlives the registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| LoadError::Poll(e.into()))?;
    tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            let Ok(mut guard) = ring.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                batch.push(decode(&item));
            }
            guard.clear_ready();
            for reading in batch.drain(..) {
                if sender.send(reading).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

/// The tests' rule for skipping (a skip fails under `DAD_TRACE_NO_SKIP`), shared with the
/// integration tests.
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
mod skip_rule;

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use btfparse::{Offset, TypeInformation};
    use dad_trace_common::{ExecRecord, ExitRecord, PathPrefix, RawEvent, Tracked};
    use object::{Object as _, ObjectSection as _};

    use super::{skip_rule as skip, *};
    use crate::kernel::btf::Bytes;

    /// The layouts the kernel programs were compiled with, read from the embedded object's
    /// BTF, against the ones this binary decodes with: a mismatch (a field added on one side,
    /// a stale object) would garble every event.
    #[test]
    fn the_kernel_object_and_the_decoder_agree_on_the_layouts() {
        if EBPF_OBJECT.is_empty() {
            skip::skip(
                "the_kernel_object_and_the_decoder_agree_on_the_layouts",
                "built with AYA_BUILD_SKIP: no kernel object",
            );
            return;
        }
        let file = object::File::parse(EBPF_OBJECT).expect("the object is ELF");
        let btf = file
            .section_by_name(".BTF")
            .expect(".BTF section")
            .data()
            .expect("BTF bytes");
        let types = TypeInformation::new(&Bytes(btf.to_vec())).expect("the object's BTF parses");
        let check = |type_name: &str, fields: &[(&str, usize)], size: usize| {
            let id = types
                .id_of(type_name)
                .unwrap_or_else(|| panic!("{type_name} in the object's BTF"));
            assert_eq!(types.size_of(id).expect("sized"), size, "size of {type_name}");
            for &(field, expected) in fields {
                let Ok((_, Offset::ByteOffset(offset))) = types.offset_of(id, field) else {
                    panic!("{type_name}.{field} missing from the object's BTF");
                };
                assert_eq!(offset as usize, expected, "{type_name}.{field}");
            }
        };
        check(
            "RawEvent",
            &[
                ("ts_ns", offset_of!(RawEvent, ts_ns)),
                ("ifa", offset_of!(RawEvent, ifa)),
                ("netns_cookie", offset_of!(RawEvent, netns_cookie)),
                ("addr", offset_of!(RawEvent, addr)),
                ("ifname", offset_of!(RawEvent, ifname)),
                ("netns_inum", offset_of!(RawEvent, netns_inum)),
                ("ifindex", offset_of!(RawEvent, ifindex)),
                ("flags", offset_of!(RawEvent, flags)),
                ("hook", offset_of!(RawEvent, hook)),
                ("state", offset_of!(RawEvent, state)),
                ("dad_probes", offset_of!(RawEvent, dad_probes)),
                ("work_pending", offset_of!(RawEvent, work_pending)),
                ("created", offset_of!(RawEvent, created)),
                ("reserved", offset_of!(RawEvent, reserved)),
            ],
            size_of::<RawEvent>(),
        );
        check(
            "Config",
            &[
                ("dad_work_fn", offset_of!(Config, dad_work_fn)),
                ("ifa_addr", offset_of!(Config, ifa_addr)),
                ("work_func", offset_of!(Config, work_func)),
                ("net_ns_inum", offset_of!(Config, net_ns_inum)),
                ("net_cookie", offset_of!(Config, net_cookie)),
            ],
            size_of::<Config>(),
        );
        check(
            "ProcConfig",
            &[
                ("task_mm", offset_of!(ProcConfig, task_mm)),
                ("task_start_time", offset_of!(ProcConfig, task_start_time)),
                ("signal_live", offset_of!(ProcConfig, signal_live)),
                ("mm_env_end", offset_of!(ProcConfig, mm_env_end)),
                ("bprm_filename", offset_of!(ProcConfig, bprm_filename)),
                ("prefixes", offset_of!(ProcConfig, prefixes)),
            ],
            size_of::<ProcConfig>(),
        );
        check(
            "PathPrefix",
            &[
                ("words", offset_of!(PathPrefix, words)),
                ("masks", offset_of!(PathPrefix, masks)),
                ("len", offset_of!(PathPrefix, len)),
            ],
            size_of::<PathPrefix>(),
        );
        check(
            "ExecRecord",
            &[
                ("kind", offset_of!(ExecRecord, kind)),
                ("flags", offset_of!(ExecRecord, flags)),
                ("ts_ns", offset_of!(ExecRecord, ts_ns)),
                ("forked_ns", offset_of!(ExecRecord, forked_ns)),
                ("tgid", offset_of!(ExecRecord, tgid)),
                ("tid", offset_of!(ExecRecord, tid)),
                ("ppid", offset_of!(ExecRecord, ppid)),
                ("env_total", offset_of!(ExecRecord, env_total)),
                ("env_copied", offset_of!(ExecRecord, env_copied)),
                ("path", offset_of!(ExecRecord, path)),
                ("env", offset_of!(ExecRecord, env)),
            ],
            size_of::<ExecRecord>(),
        );
        check(
            "ExitRecord",
            &[
                ("kind", offset_of!(ExitRecord, kind)),
                ("exit_code", offset_of!(ExitRecord, exit_code)),
                ("ts_ns", offset_of!(ExitRecord, ts_ns)),
                ("exec_ns", offset_of!(ExitRecord, exec_ns)),
                ("tgid", offset_of!(ExitRecord, tgid)),
                ("tid", offset_of!(ExitRecord, tid)),
            ],
            size_of::<ExitRecord>(),
        );
        check("Tracked", &[("exec_ns", offset_of!(Tracked, exec_ns))], size_of::<Tracked>());
    }
}
