//! Loads the embedded kernel programs, attaches a backend's hooks, and streams the ring
//! buffer: one reader task → bounded channel → consumer.
use std::time::Duration;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, KProbe, ProgramError, RawTracePoint},
};
use dad_trace_common::{
    CONFIG_GLOBAL, Config, EVENTS_MAP, LOST_MAP, PROC_CONFIG_GLOBAL, PROC_EVENTS_MAP, PROC_STATS_MAP, ProcConfig,
    ProcStat,
    sockets::{SOCKET_CONFIG_GLOBAL, SocketConfig},
};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{
    events::{self, Observation},
    memlock,
    probes::{HookDef, PROC_HOOKS, ProcHook, ProgramKind},
    procs::{self, ProcEvent},
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
    #[error("{probe}: the kernel's BTF has no type btf_trace_{target}")]
    NoBtfType { probe: String, target: &'static str },
}

/// Loads the object with `config` baked in (raising `RLIMIT_MEMLOCK` first, for kernels
/// that charge it; the CNI call and socket error programs get an empty configuration: see
/// [`load_all`]). Nothing is attached yet.
pub fn load(config: &Config, ring_bytes: u32, verbose: bool) -> Result<Ebpf, LoadError> {
    load_all(config, &Extras::default(), ring_bytes, verbose)
}

/// The configurations of the programs beside DAD's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extras {
    pub proc: ProcConfig,
    pub socket: SocketConfig,
}

/// Loads the object with every configuration baked in. Nothing is attached yet.
pub fn load_all(config: &Config, extras: &Extras, ring_bytes: u32, verbose: bool) -> Result<Ebpf, LoadError> {
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
        .override_global(PROC_CONFIG_GLOBAL, &extras.proc, true)
        .override_global(SOCKET_CONFIG_GLOBAL, &extras.socket, true)
        .override_global(aya_log::LEVEL, &log_level, false)
        .map_max_entries(EVENTS_MAP, ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| memlock::explain(&release, &e).map_or(LoadError::Ebpf(e), LoadError::Refused))?;
    Ok(ebpf)
}

fn probe_name(hook: &HookDef) -> String {
    Target::of(hook).probe()
}

/// A program and where it attaches: what loading and attaching need of a hook table's entry
/// (the DAD hooks', or the socket error program's).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub program: &'static str,
    pub kind: ProgramKind,
    pub target: &'static str,
}

impl Target {
    #[must_use]
    pub fn of(hook: &HookDef) -> Self {
        Self {
            program: hook.program,
            kind: hook.kind,
            target: hook.target,
        }
    }

    /// How `probes` and errors name it.
    #[must_use]
    pub fn probe(&self) -> String {
        let kind = match self.kind {
            ProgramKind::Kprobe => "kprobe",
            ProgramKind::Kretprobe => "kretprobe",
            ProgramKind::RawTracepoint => "raw_tracepoint",
            ProgramKind::BtfTracepoint => "tp_btf",
        };
        format!("{kind} {} (program {})", self.target, self.program)
    }
}

/// Runs the verifier on one program (no attach). `btf_id` is the kernel's BTF id of the
/// `btf_trace_<target>` typedef, which a `tp_btf` program is loaded against.
pub fn load_program(ebpf: &mut Ebpf, hook: &HookDef, btf_id: Option<u32>) -> Result<(), AttachError> {
    load_target(ebpf, Target::of(hook), btf_id)
}

/// [`load_program`] for any program.
pub fn load_target(ebpf: &mut Ebpf, target: Target, btf_id: Option<u32>) -> Result<(), AttachError> {
    let program = target.program;
    let wrap = |source| AttachError::Program {
        probe: target.probe(),
        source,
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or(AttachError::MissingProgram { program })?;
    match target.kind {
        ProgramKind::Kprobe | ProgramKind::Kretprobe => {
            let kprobe: &mut KProbe = prog.try_into().map_err(wrap)?;
            kprobe.load().map_err(wrap)
        }
        ProgramKind::RawTracepoint => {
            let tracepoint: &mut RawTracePoint = prog.try_into().map_err(wrap)?;
            tracepoint.load().map_err(wrap)
        }
        ProgramKind::BtfTracepoint => {
            let no_type = || AttachError::NoBtfType {
                probe: target.probe(),
                target: target.target,
            };
            let btf = placeholder_btf(&format!("btf_trace_{}", target.target), btf_id.ok_or_else(no_type)?)
                .ok_or_else(no_type)?;
            let tracepoint: &mut BtfTracePoint = prog.try_into().map_err(wrap)?;
            tracepoint.load(target.target, &btf).map_err(wrap)
        }
    }
}

/// An aya `Btf` holding only what `BtfTracePoint::load` looks up: the typedef `name` at type
/// id `id`, after `id - 1` pointers to void. aya finds the typedef there and hands the kernel
/// that id, which is the one the kernel's own BTF gives it. Parsing all of vmlinux BTF would
/// build the whole type graph for one lookup; this costs a few words per type id, dropped
/// after the load. (aya 0.14 has no load by id, and its typedef constructor is private.)
fn placeholder_btf(name: &str, id: u32) -> Option<Btf> {
    const RECORD: u32 = 12;
    const PTR: u32 = 2 << 24;
    const TYPEDEF: u32 = 8 << 24;
    // Far past any vmlinux's type count: an id this large is not one the kernel gave.
    const MAX_ID: u32 = 1 << 21;
    if id == 0 || id > MAX_ID {
        return None;
    }
    let strings: Vec<u8> = [0].into_iter().chain(name.bytes()).chain([0]).collect();
    let types_len = id * RECORD;
    let mut blob = Vec::with_capacity(24 + types_len as usize + strings.len());
    blob.extend(0xeb9f_u16.to_le_bytes());
    blob.extend([1, 0]); // version 1, no flags
    let strings_len = u32::try_from(strings.len()).ok()?;
    for word in [24, 0, types_len, types_len, strings_len] {
        blob.extend(word.to_le_bytes());
    }
    for _ in 1..id {
        blob.extend([0, PTR, 0].iter().flat_map(|word: &u32| word.to_le_bytes()));
    }
    blob.extend([1, TYPEDEF, 0].iter().flat_map(|word: &u32| word.to_le_bytes()));
    blob.extend(&strings);
    Btf::parse(&blob, aya::Endianness::Little).ok()
}

/// Loads and attaches every hook of `plan`; a hook that cannot be (a `tp_btf` the kernel
/// refuses) is replaced by its fallback. Links live as long as `ebpf`.
pub fn attach(ebpf: &mut Ebpf, plan: &Plan, btf_id: Option<u32>) -> Result<(), AttachError> {
    for &hook in &plan.hooks {
        match (load_and_attach(ebpf, hook, btf_id), hook.fallback()) {
            (Ok(()), _) => {}
            (Err(e), Some(fallback)) => {
                log::info!("{e:#}; using {} instead", probe_name(fallback));
                load_and_attach(ebpf, fallback, btf_id)?;
            }
            (Err(e), None) => return Err(e),
        }
    }
    Ok(())
}

/// Loads one hook's program and attaches it (no fallback); the link lives as long as `ebpf`.
pub fn load_and_attach(ebpf: &mut Ebpf, hook: &HookDef, btf_id: Option<u32>) -> Result<(), AttachError> {
    load_and_attach_target(ebpf, Target::of(hook), btf_id)
}

/// [`load_and_attach`] for any program.
pub fn load_and_attach_target(ebpf: &mut Ebpf, target: Target, btf_id: Option<u32>) -> Result<(), AttachError> {
    load_target(ebpf, target, btf_id)?;
    let wrap = |source| AttachError::Program {
        probe: target.probe(),
        source,
    };
    let prog = ebpf.program_mut(target.program).ok_or(AttachError::MissingProgram {
        program: target.program,
    })?;
    match target.kind {
        ProgramKind::Kprobe | ProgramKind::Kretprobe => {
            let kprobe: &mut KProbe = prog.try_into().map_err(wrap)?;
            kprobe.attach(target.target, 0).map_err(wrap)?;
        }
        ProgramKind::RawTracepoint => {
            let tracepoint: &mut RawTracePoint = prog.try_into().map_err(wrap)?;
            tracepoint.attach(target.target).map_err(wrap)?;
        }
        ProgramKind::BtfTracepoint => {
            let tracepoint: &mut BtfTracePoint = prog.try_into().map_err(wrap)?;
            tracepoint.attach().map_err(wrap)?;
        }
    }
    log::debug!("attached {}", target.probe());
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
        Ok(Self(PerCpuArray::try_from(map).map_err(|source| LoadError::Map {
            map: PROC_STATS_MAP,
            source,
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

/// How long a reader lets records gather after its ring buffer wakes it. The kernel wakes
/// a reader only when it has caught up, so under pod churn this turns a wake-up per record
/// (each handed between threads, costing more than the record) into one per window.
/// Timestamps come from the kernel: nothing measured moves. A shorter window lets wake-ups
/// dominate the tracer's CPU under churn (bench/RESULTS.md); a burst must fit the ring for
/// this long (the default ring holds thousands of records).
const GATHER: Duration = Duration::from_millis(50);

/// Spawns the one reader of the events ring buffer. It ends when the receiver is dropped.
pub fn spawn_reader(ebpf: &mut Ebpf, capacity: usize) -> Result<mpsc::Receiver<Vec<Reading>>, LoadError> {
    spawn_readers(ebpf, capacity, false)
}

/// Spawns the events reader and, with `procs`, the process ring's reader, both sending into
/// one channel (one consumer sees both). Everything a ring holds after a wake-up and
/// [`GATHER`] goes as one batch. Records of two rings arrive in no common order: the
/// consumer orders by timestamp where it matters.
pub fn spawn_readers(
    ebpf: &mut Ebpf,
    capacity: usize,
    with_procs: bool,
) -> Result<mpsc::Receiver<Vec<Reading>>, LoadError> {
    let (sender, receiver) = mpsc::channel(capacity);
    if with_procs {
        spawn_ring_reader(ebpf, PROC_EVENTS_MAP, sender.clone(), |item| {
            match procs::decode(item) {
                Ok(event) => Reading::Process(event),
                Err(e) => Reading::Undecodable(e),
            }
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
    sender: mpsc::Sender<Vec<Reading>>,
    decode: fn(&[u8]) -> Reading,
) -> Result<(), LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    let ring = RingBuf::try_from(map).map_err(|source| LoadError::Map { map: name, source })?;
    // SAFETY: the AsyncFd owns the ring buffer, which owns the fd: it outlives the registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| LoadError::Poll(e.into()))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = ring.readable_mut().await else {
                return;
            };
            tokio::time::sleep(GATHER).await;
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = ring.next() {
                batch.push(decode(&item));
            }
            guard.clear_ready();
            if !batch.is_empty() && sender.send(batch).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use dad_trace_common::{ExecRecord, ExitRecord, PathPrefix, RawEvent, Tracked, hooks::BENCH_PROGRAMS};
    use object::{Object as _, ObjectSection as _};

    use super::*;
    use crate::kernel::{
        btf::raw::{Btf, Kind},
        probes::HOOKS,
    };

    /// aya finds the typedef where the kernel's BTF has it, whatever the id.
    #[test]
    fn the_placeholder_btf_puts_the_typedef_at_the_kernels_id() {
        for id in [1, 2, 7345, 79_263] {
            let name = "btf_trace_workqueue_queue_work";
            let btf = placeholder_btf(name, id).expect("parses");
            assert_eq!(
                btf.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Typedef)
                    .expect("found"),
                id
            );
        }
        assert!(
            placeholder_btf("x", u32::MAX).is_none(),
            "an id past any BTF is refused"
        );
        assert!(placeholder_btf("x", 0).is_none(), "id 0 is void, never a typedef");
    }

    /// The types of the embedded kernel object's BTF; `None` (a printed skip) when the build
    /// skipped the object.
    fn object_types() -> Option<Btf> {
        if EBPF_OBJECT.is_empty() {
            test_support::skip("built with AYA_BUILD_SKIP: no kernel object");
            return None;
        }
        let file = object::File::parse(EBPF_OBJECT).expect("the object is ELF");
        let btf = file
            .section_by_name(".BTF")
            .expect(".BTF section")
            .data()
            .expect("BTF bytes");
        Some(Btf::parse(btf.to_vec()).expect("the object's BTF parses"))
    }

    /// `type_name` in the object's BTF has this size and these field offsets.
    fn check(types: &Btf, type_name: &str, fields: &[(&str, usize)], size: usize) {
        let id = *types
            .ids_of(&[type_name], Kind::Struct)
            .get(type_name)
            .unwrap_or_else(|| panic!("{type_name} in the object's BTF"));
        assert_eq!(types.size_of(id).expect("sized"), size, "size of {type_name}");
        for &(field, expected) in fields {
            let (offset, _) = types
                .offset_of(id, field)
                .unwrap_or_else(|| panic!("{type_name}.{field} missing from the object's BTF"));
            assert_eq!(offset as usize, expected, "{type_name}.{field}");
        }
    }

    /// The programs of the embedded object: (name, ELF section) of each function in a
    /// program section.
    fn object_programs(file: &object::File<'_>) -> Vec<(String, String)> {
        use object::ObjectSymbol as _;
        let kinds = [
            ProgramKind::Kprobe,
            ProgramKind::Kretprobe,
            ProgramKind::RawTracepoint,
            ProgramKind::BtfTracepoint,
        ];
        file.symbols()
            .filter(|symbol| symbol.kind() == object::SymbolKind::Text && symbol.is_global())
            .filter_map(|symbol| {
                let section = file.section_by_index(symbol.section_index()?).ok()?;
                let section = section.name().ok()?.to_string();
                let kind = section.split('/').next().unwrap_or_default();
                let program = kinds.iter().any(|known| known.section() == kind);
                program.then_some((symbol.name().ok()?.to_string(), section))
            })
            .collect()
    }

    /// The hook table and the kernel programs, checked against each other without loading
    /// anything: each entry has a program of its name in a section of its kind (naming its
    /// target when the section names one), and every program of the object is an entry, a
    /// CNI call program or a benchmark program. Renaming one side alone fails here.
    #[test]
    fn every_hook_has_its_program_and_every_program_its_hook() {
        if EBPF_OBJECT.is_empty() {
            test_support::skip("built with AYA_BUILD_SKIP: no kernel object");
            return;
        }
        let file = object::File::parse(EBPF_OBJECT).expect("the object is ELF");
        let programs = object_programs(&file);
        let section_of = |program: &str| {
            programs
                .iter()
                .find(|(name, _)| name == program)
                .map(|(_, section)| section.as_str())
        };
        let sockets = crate::kernel::sockets::SOCKET_HOOKS.map(|hook| hook.target);
        let expected = HOOKS
            .iter()
            .map(|def| (def.program, def.kind, def.target))
            .chain(
                PROC_HOOKS
                    .iter()
                    .map(|hook| (hook.program, ProgramKind::RawTracepoint, hook.target)),
            )
            .chain(
                sockets
                    .iter()
                    .map(|target| (target.program, target.kind, target.target)),
            );
        let mut problems = Vec::new();
        for (program, kind, target) in expected {
            match section_of(program) {
                None => problems.push(format!("{program}: in the table, not in the object")),
                Some(section) => {
                    let (found, named) = section.split_once('/').map_or((section, None), |(k, t)| (k, Some(t)));
                    if found != kind.section() {
                        problems.push(format!(
                            "{program}: the table says {kind:?} (section {}), the object has section {section}",
                            kind.section()
                        ));
                    }
                    if named.is_some_and(|named| named != target) {
                        problems.push(format!(
                            "{program}: the table attaches it to {target}, its section names {section}"
                        ));
                    }
                }
            }
        }
        for (program, section) in &programs {
            let known = HOOKS.iter().any(|def| def.program == program)
                || PROC_HOOKS.iter().any(|hook| hook.program == program)
                || sockets.iter().any(|target| target.program == program)
                || BENCH_PROGRAMS.contains(&program.as_str());
            if !known {
                problems.push(format!(
                    "{program} (section {section}): in the object, not in the table"
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(
            programs.len(),
            HOOKS.len() + PROC_HOOKS.len() + sockets.len() + BENCH_PROGRAMS.len(),
            "{programs:?}"
        );
    }

    /// The check above sees a program missing, an extra one and a wrong section.
    #[test]
    fn the_object_check_reads_names_and_sections() {
        if EBPF_OBJECT.is_empty() {
            test_support::skip("built with AYA_BUILD_SKIP: no kernel object");
            return;
        }
        let file = object::File::parse(EBPF_OBJECT).expect("the object is ELF");
        let programs = object_programs(&file);
        let has = |name: &str, section: &str| programs.iter().any(|(n, s)| n == name && s == section);
        assert!(has("dad_failure", "kprobe"), "{programs:?}");
        assert!(has("addr_added", "kretprobe"), "{programs:?}");
        assert!(
            has("dad_work_queued_btf", "tp_btf/workqueue_queue_work"),
            "{programs:?}"
        );
        assert!(has("dad_work_done", "raw_tp/workqueue_execute_end"), "{programs:?}");
        assert!(
            !programs.iter().any(|(name, _)| name == "emit" || name == "fill"),
            "helpers are not programs: {programs:?}"
        );
    }

    /// The layouts the kernel programs were compiled with, read from the embedded object's
    /// BTF, against the ones this binary decodes with: a mismatch (a field added on one side,
    /// a stale object) would garble every event.
    #[test]
    fn the_kernel_object_and_the_decoder_agree_on_the_layouts() {
        let Some(types) = object_types() else {
            return;
        };
        check(
            &types,
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
            &types,
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
    }

    /// The same for the CNI call programs' records and configuration.
    #[test]
    fn the_kernel_object_and_the_decoder_agree_on_the_process_layouts() {
        let Some(types) = object_types() else {
            return;
        };
        check(
            &types,
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
            &types,
            "PathPrefix",
            &[
                ("words", offset_of!(PathPrefix, words)),
                ("masks", offset_of!(PathPrefix, masks)),
                ("len", offset_of!(PathPrefix, len)),
            ],
            size_of::<PathPrefix>(),
        );
        check(
            &types,
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
            &types,
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
        check(
            &types,
            "Tracked",
            &[("exec_ns", offset_of!(Tracked, exec_ns))],
            size_of::<Tracked>(),
        );
    }

    /// The same for the socket error program's counts and configuration.
    #[test]
    fn the_kernel_object_and_the_decoder_agree_on_the_socket_layouts() {
        use dad_trace_common::sockets::{SocketConfig, SocketCount, SocketKey};
        let Some(types) = object_types() else {
            return;
        };
        check(
            &types,
            "SocketKey",
            &[
                ("netns_inum", offset_of!(SocketKey, netns_inum)),
                ("tgid", offset_of!(SocketKey, tgid)),
                ("syscall", offset_of!(SocketKey, syscall)),
                ("has_addr", offset_of!(SocketKey, has_addr)),
                ("addr", offset_of!(SocketKey, addr)),
            ],
            size_of::<SocketKey>(),
        );
        check(
            &types,
            "SocketCount",
            &[
                ("count", offset_of!(SocketCount, count)),
                ("first_ns", offset_of!(SocketCount, first_ns)),
                ("last_ns", offset_of!(SocketCount, last_ns)),
                ("cgroup_id", offset_of!(SocketCount, cgroup_id)),
                ("comm", offset_of!(SocketCount, comm)),
                ("tid", offset_of!(SocketCount, tid)),
            ],
            size_of::<SocketCount>(),
        );
        check(
            &types,
            "SocketConfig",
            &[
                ("numbers", offset_of!(SocketConfig, numbers)),
                ("regs_nr", offset_of!(SocketConfig, regs_nr)),
                ("regs_args", offset_of!(SocketConfig, regs_args)),
                ("task_nsproxy", offset_of!(SocketConfig, task_nsproxy)),
                ("nsproxy_net", offset_of!(SocketConfig, nsproxy_net)),
                ("net_ns_inum", offset_of!(SocketConfig, net_ns_inum)),
            ],
            size_of::<SocketConfig>(),
        );
    }
}
