//! Kernel programs of dad-trace. Stateless by design: each program reads one
//! `struct inet6_ifaddr` and emits a [`RawEvent`]; phases are derived in userspace,
//! so no in-flight map can leak when an address dies unseen.
#![no_std]
#![no_main]
#![allow(
    clippy::inline_always,
    reason = "keep each program one function: simpler for the verifier on old kernels"
)]
#![allow(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context by value"
)]

use core::ptr::read_volatile;

mod procs;
mod sockets;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::{btf_tracepoint, kprobe, kretprobe, map, raw_tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use aya_log_ebpf::debug;
use dad_trace_common::{
    BRACKET_BUCKETS, BRACKET_NS, Config, DEFAULT_RING_BYTES, Hook, RawEvent,
    hooks::{HookDef, ProgramKind},
};

/// Filled in by the loader from the running kernel's BTF and kallsyms.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    dad_work_fn: 0,
    ifa_addr: 0,
    ifa_state: 0,
    ifa_flags: 0,
    ifa_dad_probes: 0,
    ifa_idev: 0,
    ifa_cstamp: 0,
    ifa_dad_work: 0,
    work_data: 0,
    work_func: 0,
    idev_dev: 0,
    dev_name: 0,
    dev_ifindex: 0,
    dev_nd_net: 0,
    net_ns_inum: 0,
    net_cookie: Config::ABSENT,
    reserved: 0,
};

/// Not read by anything: it puts `RawEvent` into this object's BTF, so a userspace test can
/// check the record layout the programs were built with against its own.
#[unsafe(no_mangle)]
#[used]
static RAW_EVENT_LAYOUT: RawEvent = RawEvent::ZERO;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a valid static; the volatile read keeps the compiler from
    // constant-folding the zeros above (the loader rewrites them at load time).
    unsafe { read_volatile(&raw const CONFIG) }
}

/// The two fields the hot path needs, read alone: the tracepoint programs run on every
/// workqueue item of the node and must not copy the whole config for each.
#[inline(always)]
fn dad_work_fn() -> u64 {
    // SAFETY: as in `config`, one field of the same static.
    unsafe { read_volatile(&raw const CONFIG.dad_work_fn) }
}

#[inline(always)]
fn work_func_offset() -> u32 {
    // SAFETY: as in `config`, one field of the same static.
    unsafe { read_volatile(&raw const CONFIG.work_func) }
}

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

/// Reads the address and its device, then emits one event. Any read failure drops the event
/// quietly (logged at debug level): a half-read address would only mislead the state machine.
#[inline(always)]
fn emit<C: EbpfContext>(ctx: &C, cfg: &Config, hook: Hook, ifa: u64) {
    if let Err(code) = try_emit(cfg, hook, ifa) {
        debug!(ctx, "dad-trace: hook {} could not read ifa: {}", hook as u8, code);
    }
}

#[inline(always)]
fn try_emit(cfg: &Config, hook: Hook, ifa: u64) -> Result<(), i32> {
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *lost += 1 };
        }
        return Ok(());
    };
    match fill(cfg, hook, ifa) {
        Ok(event) => {
            entry.write(event);
            entry.submit(0);
            Ok(())
        }
        Err(code) => {
            entry.discard(0);
            Err(code)
        }
    }
}

#[inline(always)]
fn fill(cfg: &Config, hook: Hook, ifa: u64) -> Result<RawEvent, i32> {
    let mut event = RawEvent {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ifa,
        hook: hook as u8,
        ..RawEvent::default()
    };
    event.addr = read(ifa, cfg.ifa_addr)?;
    event.state = read::<u32>(ifa, cfg.ifa_state)? as u8;
    event.flags = read(ifa, cfg.ifa_flags)?;
    event.dad_probes = read(ifa, cfg.ifa_dad_probes)?;
    event.created = read(ifa, cfg.ifa_cstamp)?;
    let work_data: u64 = read(ifa, cfg.ifa_dad_work + cfg.work_data)?;
    // WORK_STRUCT_PENDING_BIT is bit 0 of work_struct.data.
    event.work_pending = (work_data & 1) as u8;

    let idev: u64 = read(ifa, cfg.ifa_idev)?;
    let dev: u64 = read(idev, cfg.idev_dev)?;
    // SAFETY: see `read`; the destination is a local buffer of the right size.
    unsafe {
        bpf_probe_read_kernel_buf((dev + u64::from(cfg.dev_name)) as *const u8, &mut event.ifname)?;
    }
    event.ifindex = read(dev, cfg.dev_ifindex)?;
    let net: u64 = read(dev, cfg.dev_nd_net)?;
    event.netns_inum = read(net, cfg.net_ns_inum)?;
    if cfg.net_cookie != Config::ABSENT {
        event.netns_cookie = read(net, cfg.net_cookie)?;
    }
    Ok(event)
}

/// `workqueue_queue_work(int req_cpu, struct pool_workqueue *pwq, struct work_struct *work)`.
/// Runs for every work item on the node: the filter (one read, one compare) comes first.
#[raw_tracepoint(tracepoint = "workqueue_queue_work")]
pub fn dad_work_queued(ctx: RawTracePointContext) -> i32 {
    const WORK: usize = HookDef::work_arg("dad_work_queued", ProgramKind::RawTracepoint);
    const HOOK: Hook = HookDef::hook_of("dad_work_queued");
    let work: u64 = ctx.arg(WORK);
    match read::<u64>(work, work_func_offset()) {
        Ok(func) if func == dad_work_fn() => {
            let cfg = config();
            emit(&ctx, &cfg, HOOK, work - u64::from(cfg.ifa_dad_work));
        }
        _ => {}
    }
    0
}

/// The same filter as a BTF-typed tracepoint, where the kernel supports one (5.5+ with BTF):
/// `work` is a typed kernel pointer, so `work->func` is one direct load, no helper call; the
/// offset comes from the read-only config, which the verifier folds and checks against
/// `struct work_struct` (a wrong offset is refused at load, never read).
#[btf_tracepoint(function = "workqueue_queue_work")]
pub fn dad_work_queued_btf(ctx: BtfTracePointContext) -> i32 {
    const WORK: usize = HookDef::work_arg("dad_work_queued_btf", ProgramKind::BtfTracepoint);
    const HOOK: Hook = HookDef::hook_of("dad_work_queued_btf");
    let work: *const u8 = ctx.arg(WORK);
    // SAFETY: a typed load the verifier allows only inside `struct work_struct`; a fault-safe
    // PROBE_MEM load once JITed. `func` is a pointer: 8-aligned in any `work_struct`.
    #[allow(clippy::cast_ptr_alignment)]
    let func = unsafe { read_volatile(work.add(work_func_offset() as usize).cast::<u64>()) };
    if func == dad_work_fn() {
        let cfg = config();
        emit(&ctx, &cfg, HOOK, (work as u64) - u64::from(cfg.ifa_dad_work));
    }
    0
}

/// `workqueue_execute_end(struct work_struct *work, work_func_t function)`: the function
/// comes as an argument, so the filter needs no read at all.
#[raw_tracepoint(tracepoint = "workqueue_execute_end")]
pub fn dad_work_done(ctx: RawTracePointContext) -> i32 {
    const WORK: usize = HookDef::work_arg("dad_work_done", ProgramKind::RawTracepoint);
    const HOOK: Hook = HookDef::hook_of("dad_work_done");
    let function: u64 = ctx.arg(1);
    if function == dad_work_fn() {
        let cfg = config();
        let work: u64 = ctx.arg(WORK);
        emit(&ctx, &cfg, HOOK, work - u64::from(cfg.ifa_dad_work));
    }
    0
}

/// The benchmark's yardstick (`cargo xtask bench`): what a raw tracepoint program that does
/// nothing costs per event, attached beside the two above. `record` never attaches it.
#[raw_tracepoint]
pub fn baseline_empty(_ctx: RawTracePointContext) -> i32 {
    0
}

/// When `bracket_open` ran on this CPU, for the `bracket_close` after it.
#[map]
static BRACKET_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events by the time from `bracket_open` to `bracket_close`. Shared by the CPUs: an
/// increment lost to a race moves a median by nothing measurable.
#[map]
static BRACKET: Array<u64> = Array::with_max_entries(BRACKET_BUCKETS, 0);

/// The benchmark's whole path (`cargo xtask bench`): attached first on a tracepoint, so it
/// runs before the programs measured; `bracket_close`, attached last, runs after them. What
/// lies between includes what `bpf_stats` leaves out: each program's dispatch, and the
/// trace record a classic tracepoint fills before its program runs.
#[raw_tracepoint]
pub fn bracket_open(_ctx: RawTracePointContext) -> i32 {
    if let Some(start) = BRACKET_START.get_ptr_mut(0) {
        // SAFETY: a helper without arguments, and a valid slot of this CPU's array (a
        // tracepoint runs without preemption).
        unsafe { *start = bpf_ktime_get_ns() };
    }
    0
}

#[raw_tracepoint]
pub fn bracket_close(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(start) = BRACKET_START.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: as in `bracket_open`.
    let opened = unsafe { core::mem::replace(&mut *start, 0) };
    if opened == 0 || now < opened {
        return 0;
    }
    let bucket = ((now - opened) / BRACKET_NS).min(u64::from(BRACKET_BUCKETS - 1)) as u32;
    if let Some(count) = BRACKET.get_ptr_mut(bucket) {
        // SAFETY: a valid slot of the array.
        unsafe { *count += 1 };
    }
    0
}

/// One kprobe program per entry of `dad_trace_common::hooks::HOOKS`, named as its entry: the
/// argument index and the hook id are constants from the table (a name or kind that
/// disagrees with the table does not compile), so each program stays tiny.
macro_rules! ifa_kprobe {
    ($name:ident) => {
        #[kprobe]
        pub fn $name(ctx: ProbeContext) -> u32 {
            const ARG: usize = HookDef::kprobe_arg(stringify!($name));
            const HOOK: Hook = HookDef::hook_of(stringify!($name));
            let cfg = config();
            if let Some(ifa) = ctx.arg::<u64>(ARG) {
                emit(&ctx, &cfg, HOOK, ifa);
            }
            0
        }
    };
}

ifa_kprobe!(dad_start);
ifa_kprobe!(dad_begin);
ifa_kprobe!(dad_kick);
ifa_kprobe!(dad_completed);
ifa_kprobe!(dad_failure);
ifa_kprobe!(dad_stop);
ifa_kprobe!(addr_deleted);
ifa_kprobe!(addr_destroyed);

/// `ipv6_add_addr` returns the new address or an `ERR_PTR`.
#[kretprobe]
pub fn addr_added(ctx: RetProbeContext) -> u32 {
    const HOOK: Hook = HookDef::kretprobe_hook("addr_added");
    let cfg = config();
    let ifa: u64 = ctx.ret();
    // ERR_PTR values are the top MAX_ERRNO (4095) addresses.
    if ifa != 0 && ifa < 0u64.wrapping_sub(4095) {
        emit(&ctx, &cfg, HOOK, ifa);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
