//! Application socket errors a tentative address causes: `bind()` to it, or `connect()`,
//! `sendto()`, `sendmsg()` with no usable source, fail with `EADDRNOTAVAIL`. One program on
//! the `sys_exit` tracepoint sees every syscall's return: the common path is one compare of
//! the return value. A failure is counted in the kernel, per (namespace, process, syscall,
//! address), so an application spinning on `bind` fills neither a ring buffer nor the
//! session; userspace reads the counts once a second.

/// LRU hash of the counts: [`SocketKey`] → [`SocketCount`]. Bounded; an entry is never
/// removed while recording, so a key's count only grows.
pub const SOCKET_ERRORS_MAP: &str = "SOCKET_ERRORS";
/// Per-CPU counters of what the program saw and left out, indexed by [`SocketStat`].
pub const SOCKET_STATS_MAP: &str = "SOCKET_STATS";
/// Name of the read-only global holding the [`SocketConfig`].
pub const SOCKET_CONFIG_GLOBAL: &str = "SOCKET_CONFIG";
/// Keys at most: distinct failing (namespace, process, syscall, address) in one recording.
pub const SOCKET_ERRORS_MAX: u32 = 4096;

/// `-EADDRNOTAVAIL`, the return value the program counts.
pub const EADDRNOTAVAIL: i64 = 99;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// The syscalls watched, as [`SocketKey::syscall`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Syscall {
    Bind = 1,
    Connect = 2,
    Sendto = 3,
    Sendmsg = 4,
}

impl Syscall {
    pub const ALL: [Syscall; 4] = [Syscall::Bind, Syscall::Connect, Syscall::Sendto, Syscall::Sendmsg];

    /// The syscall's name, as the session and the metrics spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Bind => "bind",
            Syscall::Connect => "connect",
            Syscall::Sendto => "sendto",
            Syscall::Sendmsg => "sendmsg",
        }
    }

    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Syscall::Bind),
            2 => Some(Syscall::Connect),
            3 => Some(Syscall::Sendto),
            4 => Some(Syscall::Sendmsg),
            _ => None,
        }
    }
}

/// Indexes of [`SOCKET_STATS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketStat {
    /// Failures of a watched syscall whose address is not IPv6: not DAD's doing.
    OtherFamily = 0,
    /// Failures whose address could not be read (a bad pointer, or shorter than an IPv6
    /// socket address): counted here, not in the map.
    Unreadable = 1,
    /// Failures the map could not take (it is full of keys seen more recently).
    Lost = 2,
}

impl SocketStat {
    pub const COUNT: u32 = 3;
}

/// Where the program finds what it reads, from the running kernel's BTF and architecture.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct SocketConfig {
    /// This architecture's numbers of the watched syscalls, in [`Syscall::ALL`]'s order; 0
    /// turns the program off (nothing is configured).
    pub numbers: [u32; 4],
    /// `struct pt_regs`: the syscall number (`orig_ax` on x86-64, `syscallno` on arm64) and
    /// arguments 1, 2, 4 and 5 (argument 0 is overwritten by the return on arm64, and no
    /// watched syscall needs it).
    pub regs_nr: u32,
    pub regs_args: [u32; 4],
    /// `struct task_struct.nsproxy`, `struct nsproxy.net_ns`, `struct net.ns.inum`.
    pub task_nsproxy: u32,
    pub nsproxy_net: u32,
    pub net_ns_inum: u32,
}

impl SocketConfig {
    /// Index of argument `n` (1, 2, 4, 5) in [`SocketConfig::regs_args`].
    #[must_use]
    pub const fn arg_slot(n: usize) -> usize {
        match n {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => 3,
        }
    }
}

/// What a failure is counted under.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SocketKey {
    /// The failing process's network namespace (`ns.inum`).
    pub netns_inum: u32,
    pub tgid: u32,
    /// A [`Syscall`].
    pub syscall: u8,
    /// 1 when `addr` holds the address asked for (bind) or the destination; 0 when the call
    /// named none (`sendmsg` on a connected socket).
    pub has_addr: u8,
    pub reserved: u16,
    pub addr: [u8; 16],
}

/// A key's count and what the first failure said of its process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCount {
    pub count: u64,
    /// `bpf_ktime_get_ns()` of the first and the last failure (`CLOCK_MONOTONIC`).
    pub first_ns: u64,
    pub last_ns: u64,
    /// `bpf_get_current_cgroup_id()` at the first failure (cgroup v2; 0 elsewhere).
    pub cgroup_id: u64,
    /// The failing thread's `comm`, NUL-padded, as the process set it.
    pub comm: [u8; 16],
    pub tid: u32,
    pub reserved: u32,
}

const _: () = {
    assert!(size_of::<SocketKey>() == 28);
    assert!(size_of::<SocketCount>() == 56);
};
