//! CNI plugin calls, seen from the scheduler's tracepoints on every kernel of the matrix (no
//! kprobes): an exec of a file under a plugin directory (or by a followed process) is copied
//! out with its environment, where the runtime put `CNI_COMMAND` and the rest; the process's
//! last thread exiting ends it. Runs for every exec and exit of the node: the common path is
//! one string read and a few compares (exec), or one hash lookup (exit).
use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user},
    },
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use dad_trace_common::{
    DEFAULT_PROC_RING_BYTES, ENV_MAX, EXEC_BY_PARENT, EXEC_BY_PREFIX, EXEC_BY_SELF, EXEC_ENV_TRUNCATED,
    EXEC_ENV_UNREAD, ExecRecord, ExitRecord, PATH_MAX, PREFIX_BYTES, PREFIX_WORDS, PREFIXES, PROC_EXEC, PROC_EXIT,
    PathPrefix, ProcConfig, ProcStat, TRACKED_MAX, Tracked,
};

const EMPTY_PREFIX: PathPrefix = PathPrefix {
    words: [0; PREFIX_WORDS],
    masks: [0; PREFIX_WORDS],
    len: 0,
    reserved: 0,
};

/// Filled in by the loader: offsets from the running kernel's BTF and the plugin directories.
#[unsafe(no_mangle)]
static PROC_CONFIG: ProcConfig = ProcConfig {
    task_mm: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_exit_code: 0,
    task_signal: 0,
    task_start_time: 0,
    signal_live: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    bprm_filename: 0,
    prefixes: [EMPTY_PREFIX; PREFIXES],
};

/// Not read by anything: puts the record and map value layouts into the object's BTF for the
/// loader's layout test. The exec record is there whole (16 KiB of zeros in the read-only
/// data): a reference to it left only a forward declaration in the BTF, which checks nothing.
#[unsafe(no_mangle)]
#[used]
static PROC_LAYOUTS: (ExitRecord, Tracked, ExecRecord) = (
    ExitRecord {
        kind: 0,
        exit_code: 0,
        ts_ns: 0,
        exec_ns: 0,
        tgid: 0,
        tid: 0,
    },
    Tracked { exec_ns: 0 },
    ExecRecord {
        kind: 0,
        flags: 0,
        ts_ns: 0,
        forked_ns: 0,
        tgid: 0,
        tid: 0,
        ppid: 0,
        env_total: 0,
        env_copied: 0,
        reserved: 0,
        path: [0; PATH_MAX],
        env: [0; ENV_MAX],
    },
);

#[map]
static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_PROC_RING_BYTES, 0);

#[map]
static TRACKED: LruHashMap<u32, Tracked> = LruHashMap::with_max_entries(TRACKED_MAX, 0);

#[map]
static PROC_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProcStat::COUNT, 0);

/// One field of the config, read alone: the whole struct would not fit the 512-byte stack.
macro_rules! field {
    ($($path:tt)+) => {
        // SAFETY: PROC_CONFIG is a valid static; volatile keeps the loader's values from being
        // folded into the zeros above.
        unsafe { read_volatile(&raw const PROC_CONFIG.$($path)+) }
    };
}

#[inline(always)]
fn count(stat: ProcStat) {
    if let Some(slot) = PROC_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

#[inline(always)]
fn tracked(tgid: u32) -> bool {
    // SAFETY: the value is copied out at once; the LRU may drop the entry afterwards.
    unsafe { TRACKED.get(tgid) }.is_some()
}

/// Whether the first bytes of the executed path start with one of the configured prefixes.
#[inline(always)]
fn under_a_prefix(filename: u64) -> bool {
    let mut head = [0u64; PREFIX_WORDS];
    // SAFETY: the destination is the local buffer, its size given; the helper stops at the
    // NUL and never writes past the size.
    let read = unsafe {
        bpf_probe_read_kernel_str(
            head.as_mut_ptr().cast::<c_void>(),
            PREFIX_BYTES as u32,
            filename as *const c_void,
        )
    };
    if read <= 0 {
        return false;
    }
    let mut matched = false;
    for slot in 0..PREFIXES {
        let len = field!(prefixes[slot].len);
        let mut same = len != 0;
        // One index into three arrays, two of them read through `field!` (volatile).
        #[allow(clippy::needless_range_loop)]
        for word in 0..PREFIX_WORDS {
            let bytes = field!(prefixes[slot].words[word]);
            let mask = field!(prefixes[slot].masks[word]);
            same &= (head[word] ^ bytes) & mask == 0;
        }
        matched |= same;
    }
    matched
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`, at
/// the end of a successful execve: `current->mm` is the new image, its environment in place.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn cni_exec(ctx: RawTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

#[inline(always)]
fn try_exec(ctx: &RawTracePointContext) -> Result<(), i32> {
    let task: u64 = ctx.arg(0);
    let bprm: u64 = ctx.arg(2);
    let filename: u64 = read(bprm, field!(bprm_filename))?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let parent: u64 = read(task, field!(task_real_parent))?;
    let ppid: u32 = read(parent, field!(task_tgid))?;
    let mut flags = 0;
    if tracked(ppid) {
        flags |= EXEC_BY_PARENT;
    }
    if tracked(tgid) {
        flags |= EXEC_BY_SELF;
    }
    if flags == 0 {
        if !under_a_prefix(filename) {
            return Ok(());
        }
        flags |= EXEC_BY_PREFIX;
    }
    let Some(mut entry) = PROC_EVENTS.reserve::<ExecRecord>(0) else {
        // Not followed at all: an exit without its exec would only mislead.
        count(ProcStat::Lost);
        return Ok(());
    };
    let record: *mut ExecRecord = entry.as_mut_ptr();
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let forked_ns: u64 = read(task, field!(task_start_time)).unwrap_or(ts_ns);
    let (env_total, env_copied) = copy_env(task, record, &mut flags);
    // SAFETY: `record` points at the reserved entry, sized for an ExecRecord; every field is
    // written through the raw pointer before the entry is submitted.
    unsafe {
        if bpf_probe_read_kernel_str(
            (*record).path.as_mut_ptr().cast::<c_void>(),
            PATH_MAX as u32,
            filename as *const c_void,
        ) <= 0
        {
            (*record).path[0] = 0;
        }
        (*record).kind = PROC_EXEC;
        (*record).flags = flags;
        (*record).ts_ns = ts_ns;
        (*record).forked_ns = forked_ns;
        (*record).tgid = tgid;
        (*record).tid = pid_tgid as u32;
        (*record).ppid = ppid;
        (*record).env_total = env_total;
        (*record).env_copied = env_copied;
        (*record).reserved = 0;
    }
    // After the reservation: the exit of this process is reserved after its exec, so the ring
    // buffer delivers them in that order.
    if TRACKED.insert(tgid, Tracked { exec_ns: ts_ns }, 0).is_err() {
        count(ProcStat::TrackFailed);
    }
    entry.submit(0);
    Ok(())
}

/// Copies exactly `min(env_end - env_start, ENV_MAX)` bytes: a fixed-size read would cross the
/// top of the stack, and the helper then fails whole.
#[inline(always)]
fn copy_env(task: u64, record: *mut ExecRecord, flags: &mut u32) -> (u32, u32) {
    let Ok(mm) = read::<u64>(task, field!(task_mm)) else {
        *flags |= EXEC_ENV_UNREAD;
        return (0, 0);
    };
    let (Ok(start), Ok(end)) = (
        read::<u64>(mm, field!(mm_env_start)),
        read::<u64>(mm, field!(mm_env_end)),
    ) else {
        *flags |= EXEC_ENV_UNREAD;
        return (0, 0);
    };
    let total = end.saturating_sub(start);
    let mut len = total;
    if len > ENV_MAX as u64 {
        len = ENV_MAX as u64;
        *flags |= EXEC_ENV_TRUNCATED;
        count(ProcStat::EnvTruncated);
    }
    // SAFETY: the destination is the record's env array, ENV_MAX bytes, and `len` is at most
    // that (the verifier checks the bound too).
    let copied = unsafe {
        bpf_probe_read_user(
            (*record).env.as_mut_ptr().cast::<c_void>(),
            len as u32,
            start as *const c_void,
        )
    };
    let total = u32::try_from(total).unwrap_or(u32::MAX);
    if copied == 0 {
        (total, len as u32)
    } else {
        *flags |= EXEC_ENV_UNREAD;
        (total, 0)
    }
}

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`: every thread's exit. Only
/// the last thread of a followed process emits (`signal->live` already 0), and only the one
/// that removes it from the map, should two see 0.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn cni_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

#[inline(always)]
fn try_exit(ctx: &RawTracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let Some(exec_ns) = (unsafe { TRACKED.get(tgid) }).map(|tracked| tracked.exec_ns) else {
        return Ok(());
    };
    let task: u64 = ctx.arg(0);
    let signal: u64 = read(task, field!(task_signal))?;
    let live: i32 = read(signal, field!(signal_live))?;
    if live != 0 || TRACKED.remove(tgid).is_err() {
        return Ok(());
    }
    let exit_code: u32 = read(task, field!(task_exit_code)).unwrap_or(0);
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = PROC_EVENTS.reserve::<ExitRecord>(0) else {
        count(ProcStat::ExitLost);
        return Ok(());
    };
    entry.write(ExitRecord {
        kind: PROC_EXIT,
        exit_code,
        ts_ns,
        exec_ns,
        tgid,
        tid: pid_tgid as u32,
    });
    entry.submit(0);
    Ok(())
}
