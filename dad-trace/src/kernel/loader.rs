//! Loads the embedded kernel programs, attaches a backend's hooks, and streams the ring
//! buffer: one reader task → bounded channel → consumer.
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{KProbe, ProgramError, RawTracePoint},
};
use dad_trace_common::{CONFIG_GLOBAL, Config, EVENTS_MAP, LOST_MAP};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{
    events::{self, Observation},
    memlock,
    probes::{HookSpec, ProgramKind},
    support::Plan,
};
use crate::error::Refusal;

/// The kernel object, built by build.rs and embedded: one file to copy to a node.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dad-trace"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this dad-trace was built with AYA_BUILD_SKIP: it carries no kernel programs; rebuild without it")]
    NoObject,
    #[error("cannot load the kernel programs: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("cannot load the kernel programs")]
    Refused(#[source] Refusal),
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

/// Loads the object with `config` baked in (raising `RLIMIT_MEMLOCK` first, for kernels
/// that charge it). Nothing is attached yet.
pub fn load(config: &Config, ring_bytes: u32, verbose: bool) -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let release = super::release();
    memlock::raise(&release);
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
        .override_global(aya_log::LEVEL, &log_level, false)
        .map_max_entries(EVENTS_MAP, ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| memlock::explain(&release, &e).map_or(LoadError::Ebpf(e), LoadError::Refused))?;
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

/// What the reader task sends: observations, or a record it could not decode.
#[derive(Debug)]
pub enum Reading {
    Observation(Observation),
    Undecodable(events::DecodeError),
}

/// Spawns the one reader of the events ring buffer. It ends when the receiver is dropped.
pub fn spawn_reader(ebpf: &mut Ebpf, capacity: usize) -> Result<mpsc::Receiver<Reading>, LoadError> {
    let map = ebpf.take_map(EVENTS_MAP).ok_or(LoadError::MissingMap(EVENTS_MAP))?;
    let ring = RingBuf::try_from(map).map_err(|source| LoadError::Map {
        map: EVENTS_MAP,
        source,
    })?;
    // SAFETY: the AsyncFd owns the ring buffer, which owns the fd: it outlives the registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| LoadError::Poll(e.into()))?;
    let (sender, receiver) = mpsc::channel(capacity);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            let Ok(mut guard) = ring.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                batch.push(match events::decode(&item) {
                    Ok(obs) => Reading::Observation(obs),
                    Err(e) => Reading::Undecodable(e),
                });
            }
            guard.clear_ready();
            for reading in batch.drain(..) {
                if sender.send(reading).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(receiver)
}
