//! Application socket errors (`EADDRNOTAVAIL` from bind, connect, sendto, sendmsg), seen at
//! `sys_exit` on every syscall of the node: the common path is one compare of the return
//! value; a failure is counted in place, per (namespace, process, syscall, address).
use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use dad_trace_common::sockets::{
    AF_INET6, EADDRNOTAVAIL, SOCKET_ERRORS_MAX, SocketConfig, SocketCount, SocketKey, SocketStat, Syscall,
};

/// Filled in by the loader from the running kernel's BTF and architecture.
#[unsafe(no_mangle)]
static SOCKET_CONFIG: SocketConfig = SocketConfig {
    numbers: [0; 4],
    regs_nr: 0,
    regs_args: [0; 4],
    task_nsproxy: 0,
    nsproxy_net: 0,
    net_ns_inum: 0,
};

/// Not read by anything: puts the key and value layouts into the object's BTF for the
/// loader's layout test.
#[unsafe(no_mangle)]
#[used]
static SOCKET_LAYOUTS: (SocketKey, SocketCount) = (
    SocketKey {
        netns_inum: 0,
        tgid: 0,
        syscall: 0,
        has_addr: 0,
        reserved: 0,
        addr: [0; 16],
    },
    SocketCount {
        count: 0,
        first_ns: 0,
        last_ns: 0,
        cgroup_id: 0,
        comm: [0; 16],
        tid: 0,
        reserved: 0,
    },
);

#[map]
static SOCKET_ERRORS: LruHashMap<SocketKey, SocketCount> = LruHashMap::with_max_entries(SOCKET_ERRORS_MAX, 0);

#[map]
static SOCKET_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SocketStat::COUNT, 0);

/// `sys_exit(struct pt_regs *regs, long ret)`, BTF-typed (5.5+).
#[btf_tracepoint(function = "sys_exit")]
pub fn socket_error_btf(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    if ret == -EADDRNOTAVAIL {
        let regs: u64 = ctx.arg(0);
        on_failure(regs);
    }
    0
}

/// The same as a raw tracepoint, for kernels whose BTF lacks `btf_trace_sys_exit`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn socket_error(ctx: RawTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    if ret == -EADDRNOTAVAIL {
        let regs: u64 = ctx.arg(0);
        on_failure(regs);
    }
    0
}

#[inline(always)]
fn count(stat: SocketStat) {
    if let Some(slot) = SOCKET_STATS.get_ptr_mut(stat as u32) {
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
fn read_user<T>(address: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_user copes with any address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_user(address as *const T) }
}

/// One field of the config, read alone (the whole struct is not needed on any path).
macro_rules! field {
    ($($path:tt)+) => {
        // SAFETY: SOCKET_CONFIG is a valid static; volatile keeps the loader's values from being
        // folded into the zeros above.
        unsafe { read_volatile(&raw const SOCKET_CONFIG.$($path)+) }
    };
}

#[inline(always)]
fn arg(regs: u64, n: usize) -> Result<u64, i32> {
    read(regs, field!(regs_args[SocketConfig::arg_slot(n)]))
}

/// Which watched syscall returned, from its number in the saved registers.
#[inline(always)]
fn syscall(regs: u64) -> Option<Syscall> {
    // `orig_ax` is 8 bytes, `syscallno` 4: the low 4 bytes are the number either way
    // (both architectures are little-endian).
    let nr: u32 = read(regs, field!(regs_nr)).ok()?;
    if nr == 0 {
        return None;
    }
    if nr == field!(numbers[0]) {
        Some(Syscall::Bind)
    } else if nr == field!(numbers[1]) {
        Some(Syscall::Connect)
    } else if nr == field!(numbers[2]) {
        Some(Syscall::Sendto)
    } else if nr == field!(numbers[3]) {
        Some(Syscall::Sendmsg)
    } else {
        None
    }
}

/// The user's socket address and its length: bind and connect pass them as arguments 1 and
/// 2, sendto as 4 and 5, sendmsg inside its `struct msghdr` (`msg_name`, `msg_namelen`).
#[inline(always)]
fn user_address(regs: u64, syscall: Syscall) -> Result<(u64, u64), i32> {
    match syscall {
        Syscall::Bind | Syscall::Connect => Ok((arg(regs, 1)?, arg(regs, 2)?)),
        Syscall::Sendto => Ok((arg(regs, 4)?, arg(regs, 5)?)),
        Syscall::Sendmsg => {
            let msg = arg(regs, 1)?;
            let name: u64 = read_user(msg)?;
            let len: u32 = read_user(msg + 8)?;
            Ok((name, u64::from(len)))
        }
    }
}

/// The first 24 bytes of a `sockaddr_in6`: family, port, flow info, address.
#[repr(C)]
struct Sockaddr6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u8; 16],
}

#[inline(always)]
fn on_failure(regs: u64) {
    let Some(syscall) = syscall(regs) else {
        return;
    };
    let mut key = SocketKey {
        syscall: syscall as u8,
        ..SocketKey::default()
    };
    let Ok((address, len)) = user_address(regs, syscall) else {
        count(SocketStat::Unreadable);
        return;
    };
    if address != 0 {
        if len < 2 {
            count(SocketStat::Unreadable);
            return;
        }
        let Ok(family) = read_user::<u16>(address) else {
            count(SocketStat::Unreadable);
            return;
        };
        if family != AF_INET6 {
            count(SocketStat::OtherFamily);
            return;
        }
        if len < size_of::<Sockaddr6>() as u64 {
            count(SocketStat::Unreadable);
            return;
        }
        let Ok(sockaddr) = read_user::<Sockaddr6>(address) else {
            count(SocketStat::Unreadable);
            return;
        };
        key.addr = sockaddr.addr;
        key.has_addr = 1;
    }
    // SAFETY: helpers without preconditions.
    let (task, pid_tgid, now) = unsafe { (bpf_get_current_task(), bpf_get_current_pid_tgid(), bpf_ktime_get_ns()) };
    key.tgid = (pid_tgid >> 32) as u32;
    key.netns_inum = netns(task).unwrap_or(0);
    tally(&key, pid_tgid as u32, now);
}

#[inline(always)]
fn netns(task: u64) -> Result<u32, i32> {
    let nsproxy: u64 = read(task, field!(task_nsproxy))?;
    let net: u64 = read(nsproxy, field!(nsproxy_net))?;
    read(net, field!(net_ns_inum))
}

/// Adds one failure to the key's count, creating it with what the first failure says. Two
/// CPUs may race on one key's count; only threads of one process failing at the same instant
/// do, and such a race loses an increment, nothing else.
#[inline(always)]
fn tally(key: &SocketKey, tid: u32, now: u64) {
    if let Some(entry) = SOCKET_ERRORS.get_ptr_mut(key) {
        // SAFETY: a valid value slot of the map, held for this program's run.
        unsafe {
            (*entry).count += 1;
            (*entry).last_ns = now;
        }
        return;
    }
    let first = SocketCount {
        count: 1,
        first_ns: now,
        last_ns: now,
        // SAFETY: helpers without preconditions (comm fails only on a bad buffer).
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
        tid,
        reserved: 0,
    };
    // BPF_NOEXIST: another CPU may have created the key meanwhile; then count on it.
    if SOCKET_ERRORS.insert(key, first, 1).is_ok() {
        return;
    }
    match SOCKET_ERRORS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(entry) => unsafe { (*entry).count += 1 },
        None => count(SocketStat::Lost),
    }
}
