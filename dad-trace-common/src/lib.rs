//! Types shared by the kernel programs (`dad-trace-ebpf`) and the loader (`dad-trace`).
//!
//! Everything here is `#[repr(C)]` and crosses the user/kernel boundary byte for byte:
//! [`Config`] goes into the programs as a read-only global, [`RawEvent`] comes back through
//! the ring buffer. The `user` feature adds what only userspace needs (`aya::Pod`).
#![no_std]

pub mod hooks;
pub mod sockets;

pub use hooks::Hook;

/// Name of the ring buffer map the programs write [`RawEvent`]s to.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array holding the count of events dropped because the ring buffer was full.
pub const LOST_MAP: &str = "LOST";
/// Name of the read-only global holding the [`Config`].
pub const CONFIG_GLOBAL: &str = "CONFIG";
/// Default ring buffer size in bytes (a power of two, as the kernel requires).
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;

/// The benchmark's whole-path measure (`cargo xtask bench`): time from `bracket_open` to
/// `bracket_close` per tracepoint event, in buckets of [`BRACKET_NS`] (the last one holds
/// everything longer). `record` never attaches the two programs.
pub const BRACKET_MAP: &str = "BRACKET";
pub const BRACKET_NS: u64 = 4;
pub const BRACKET_BUCKETS: u32 = 512;

/// `IFA_F_TENTATIVE` from `include/uapi/linux/if_addr.h`.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_DADFAILED`.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_OPTIMISTIC`.
pub const IFA_F_OPTIMISTIC: u32 = 0x04;
/// `IFA_F_NODAD`.
pub const IFA_F_NODAD: u32 = 0x02;

/// Where the kernel programs find what they read. Offsets come from the running kernel's BTF,
/// so one object works across kernels (aya-ebpf has no CO-RE for Rust programs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Config {
    /// Address of `addrconf_dad_work`, the work function that drives DAD (from /proc/kallsyms).
    pub dad_work_fn: u64,
    /// `struct inet6_ifaddr`: offsets of `addr`, `state`, `flags`, `dad_probes`, `idev`,
    /// `cstamp`.
    pub ifa_addr: u32,
    pub ifa_state: u32,
    pub ifa_flags: u32,
    pub ifa_dad_probes: u32,
    pub ifa_idev: u32,
    pub ifa_cstamp: u32,
    /// Offset of `dad_work.work` (a `struct work_struct`) inside `struct inet6_ifaddr`.
    pub ifa_dad_work: u32,
    /// `struct work_struct`: offsets of `data` (holds the pending bit) and `func`.
    pub work_data: u32,
    pub work_func: u32,
    /// `struct inet6_dev.dev`.
    pub idev_dev: u32,
    /// `struct net_device`: `name`, `ifindex`, `nd_net.net`.
    pub dev_name: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    /// `struct net`: `ns.inum`, and `net_cookie` ([`Config::ABSENT`] on kernels without it).
    pub net_ns_inum: u32,
    pub net_cookie: u32,
    /// Always 0: names the padding to a multiple of 8, so aya copies no unnamed bytes.
    pub reserved: u32,
}

impl Config {
    /// Marks an optional field the running kernel does not have.
    pub const ABSENT: u32 = u32::MAX;
}

/// One observation of a `struct inet6_ifaddr`, read by a kernel program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC`.
    pub ts_ns: u64,
    /// Kernel address of the `inet6_ifaddr`: identifies the address while it lives.
    pub ifa: u64,
    /// `net->net_cookie`, 0 where the kernel has none.
    pub netns_cookie: u64,
    pub addr: [u8; 16],
    pub ifname: [u8; 16],
    pub netns_inum: u32,
    pub ifindex: i32,
    pub flags: u32,
    /// A [`Hook`] discriminant.
    pub hook: u8,
    /// `inet6_ifaddr.state` (decoded by userspace as `IfaState`).
    pub state: u8,
    pub dad_probes: u8,
    /// 1 when `dad_work` is still pending (another DAD step is scheduled).
    pub work_pending: u8,
    /// Low 32 bits of `inet6_ifaddr.cstamp` (jiffies at creation): tells a new address
    /// apart from a freed one whose memory it reuses.
    pub created: u32,
    /// Always 0. Named so the struct has no padding: every byte the kernel writes into the
    /// ring buffer and userspace reads is a field.
    pub reserved: u32,
}

impl RawEvent {
    /// All zeros, usable in constants (the kernel object anchors the layout in its BTF).
    pub const ZERO: RawEvent = RawEvent {
        ts_ns: 0,
        ifa: 0,
        netns_cookie: 0,
        addr: [0; 16],
        ifname: [0; 16],
        netns_inum: 0,
        ifindex: 0,
        flags: 0,
        hook: 0,
        state: 0,
        dad_probes: 0,
        work_pending: 0,
        created: 0,
        reserved: 0,
    };
}

/// The layouts both sides compile against, checked when each side compiles this crate (for
/// the BPF target and for the host): contiguous fields, no padding anywhere.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(RawEvent, ts_ns) == 0);
    assert!(offset_of!(RawEvent, ifa) == 8);
    assert!(offset_of!(RawEvent, netns_cookie) == 16);
    assert!(offset_of!(RawEvent, addr) == 24);
    assert!(offset_of!(RawEvent, ifname) == 40);
    assert!(offset_of!(RawEvent, netns_inum) == 56);
    assert!(offset_of!(RawEvent, ifindex) == 60);
    assert!(offset_of!(RawEvent, flags) == 64);
    assert!(offset_of!(RawEvent, hook) == 68);
    assert!(offset_of!(RawEvent, state) == 69);
    assert!(offset_of!(RawEvent, dad_probes) == 70);
    assert!(offset_of!(RawEvent, work_pending) == 71);
    assert!(offset_of!(RawEvent, created) == 72);
    assert!(offset_of!(RawEvent, reserved) == 76);
    assert!(size_of::<RawEvent>() == 80);
    // Config: one u64, then fifteen u32 offsets and the reserved word.
    assert!(offset_of!(Config, ifa_addr) == 8);
    assert!(offset_of!(Config, net_cookie) == 8 + 14 * 4);
    assert!(offset_of!(Config, reserved) == 8 + 15 * 4);
    assert!(size_of::<Config>() == 8 + 16 * 4);
    // PathPrefix: 8 words, 8 masks, len, reserved; ProcConfig: ten u32, then the prefixes.
    assert!(offset_of!(PathPrefix, masks) == 64);
    assert!(offset_of!(PathPrefix, len) == 128);
    assert!(size_of::<PathPrefix>() == 136);
    assert!(offset_of!(ProcConfig, bprm_filename) == 36);
    assert!(offset_of!(ProcConfig, prefixes) == 40);
    assert!(size_of::<ProcConfig>() == 40 + PREFIXES * 136);
    // ExecRecord: a 48-byte header, the path, the environment.
    assert!(offset_of!(ExecRecord, ts_ns) == 8);
    assert!(offset_of!(ExecRecord, forked_ns) == 16);
    assert!(offset_of!(ExecRecord, tgid) == 24);
    assert!(offset_of!(ExecRecord, ppid) == 32);
    assert!(offset_of!(ExecRecord, env_copied) == 40);
    assert!(offset_of!(ExecRecord, path) == 48);
    assert!(offset_of!(ExecRecord, env) == 48 + PATH_MAX);
    assert!(size_of::<ExecRecord>() == 48 + PATH_MAX + ENV_MAX);
    assert!(offset_of!(ExitRecord, ts_ns) == 8);
    assert!(offset_of!(ExitRecord, exec_ns) == 16);
    assert!(offset_of!(ExitRecord, tid) == 28);
    assert!(size_of::<ExitRecord>() == 32);
    assert!(size_of::<Tracked>() == 8);
};

/// Process records (CNI plugin exec and exit) travel through their own ring buffer, so a burst
/// of 16 KiB exec records never crowds out DAD events (and the DAD record layout is untouched).
pub const PROC_EVENTS_MAP: &str = "PROC_EVENTS";
/// Per-CPU counters of the process programs, indexed by [`ProcStat`].
pub const PROC_STATS_MAP: &str = "PROC_STATS";
/// LRU hash of tracked processes: tgid → [`Tracked`]. Bounded, and an entry leaves on the
/// process's last exit; the LRU keeps a missed exit from filling it.
pub const TRACKED_MAP: &str = "TRACKED";
/// Name of the read-only global holding the [`ProcConfig`].
pub const PROC_CONFIG_GLOBAL: &str = "PROC_CONFIG";
/// Default size of the process ring buffer: 60 exec records in flight.
pub const DEFAULT_PROC_RING_BYTES: u32 = 1024 * 1024;
/// Tracked processes at most (plugins and their children alive at once).
pub const TRACKED_MAX: u32 = 8192;
/// Bytes of the environment copied per exec: about ten times what a runtime passes (the
/// CNI_* variables sit anywhere in it: libcni builds it from a Go map, in random order).
pub const ENV_MAX: usize = 16 * 1024;
/// Bytes of the executed path kept.
pub const PATH_MAX: usize = 256;
/// Path prefixes the exec filter compares, and the bytes of the path it compares them with.
pub const PREFIXES: usize = 4;
pub const PREFIX_BYTES: usize = 64;
pub const PREFIX_WORDS: usize = PREFIX_BYTES / 8;

/// Indexes of [`PROC_STATS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcStat {
    /// Exec records the ring buffer had no room for (the process is then not tracked).
    Lost = 0,
    /// Exec records whose environment was longer than [`ENV_MAX`].
    EnvTruncated = 1,
    /// Tracked processes the LRU map could not take (`TRACKED_MAX` alive at once).
    TrackFailed = 2,
    /// Exit records the ring buffer had no room for.
    ExitLost = 3,
}

impl ProcStat {
    pub const COUNT: u32 = 4;
}

/// One path prefix, compared 8 bytes at a time without a loop: `(path ^ bytes) & mask == 0`
/// for every word, so the program is straight-line code on every kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct PathPrefix {
    pub words: [u64; PREFIX_WORDS],
    pub masks: [u64; PREFIX_WORDS],
    /// 0 for an unused slot.
    pub len: u32,
    pub reserved: u32,
}

impl PathPrefix {
    /// The prefix `text` (shorter than [`PREFIX_BYTES`]: the kernel reads that many bytes of
    /// the path as a string, its last one the NUL; else `None`), little-endian words as the
    /// program loads them.
    #[must_use]
    pub fn new(text: &[u8]) -> Option<Self> {
        if text.is_empty() || text.len() >= PREFIX_BYTES {
            return None;
        }
        let mut prefix = Self {
            len: text.len() as u32,
            ..Self::default()
        };
        for (index, &byte) in text.iter().enumerate() {
            let (word, shift) = (index / 8, (index % 8) * 8);
            prefix.words[word] |= u64::from(byte) << shift;
            prefix.masks[word] |= 0xff << shift;
        }
        Some(prefix)
    }

    /// Whether `path` (its first [`PREFIX_BYTES`] bytes, zero-padded) starts with the prefix:
    /// the same test the kernel program makes.
    #[must_use]
    pub fn matches(&self, path: &[u64; PREFIX_WORDS]) -> bool {
        self.len != 0
            && path
                .iter()
                .zip(self.words.iter().zip(&self.masks))
                .all(|(word, (bytes, mask))| (word ^ bytes) & mask == 0)
    }
}

/// What the process programs read, from the running kernel's BTF, and which paths they follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct ProcConfig {
    /// `struct task_struct`: `mm`, `real_parent`, `tgid`, `exit_code`, `signal`, `start_time`.
    pub task_mm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub task_start_time: u32,
    /// `struct signal_struct.live` (an `atomic_t`: its counter is at +0).
    pub signal_live: u32,
    /// `struct mm_struct`: `env_start`, `env_end` (inside an anonymous struct on 6.x).
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// `struct linux_binprm.filename`.
    pub bprm_filename: u32,
    pub prefixes: [PathPrefix; PREFIXES],
}

/// [`ExecRecord::flags`]: why the process is followed, and what could not be copied.
pub const EXEC_BY_PREFIX: u32 = 1;
pub const EXEC_BY_PARENT: u32 = 2;
pub const EXEC_BY_SELF: u32 = 4;
pub const EXEC_ENV_TRUNCATED: u32 = 8;
pub const EXEC_ENV_UNREAD: u32 = 16;

/// [`ExecRecord::kind`] and [`ExitRecord::kind`].
pub const PROC_EXEC: u32 = 1;
pub const PROC_EXIT: u32 = 2;

/// A followed exec: a CNI plugin, a process it started, or a re-exec of either.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    /// [`PROC_EXEC`].
    pub kind: u32,
    pub flags: u32,
    /// `bpf_ktime_get_ns()` at the exec tracepoint (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
    /// `task->start_time`: when the process was forked, on the same clock. The caller's view
    /// of a call starts there, a few ms before the exec.
    pub forked_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// `real_parent->tgid`: the caller (a runtime, or the plugin that delegated).
    pub ppid: u32,
    /// Bytes between `env_start` and `env_end`, and how many were copied into `env`.
    pub env_total: u32,
    pub env_copied: u32,
    pub reserved: u32,
    /// The path given to execve, NUL-terminated unless [`PATH_MAX`] long.
    pub path: [u8; PATH_MAX],
    /// `K=V\0` strings as the kernel laid them out.
    pub env: [u8; ENV_MAX],
}

/// The last thread of a followed process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// [`PROC_EXIT`].
    pub kind: u32,
    /// `task->exit_code`, a wait status: exit status `>> 8 & 0xff`, signal `& 0x7f`.
    pub exit_code: u32,
    pub ts_ns: u64,
    /// The exec that started the following, from the tracked map.
    pub exec_ns: u64,
    pub tgid: u32,
    /// The thread that exited last.
    pub tid: u32,
}

/// Value of [`TRACKED_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    pub exec_ns: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are plain `#[repr(C)]` integers and byte arrays, valid for any bit pattern.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::RawEvent {}
    unsafe impl aya::Pod for super::ProcConfig {}
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::ExitRecord {}
    unsafe impl aya::Pod for super::Tracked {}
    unsafe impl aya::Pod for super::sockets::SocketConfig {}
    unsafe impl aya::Pod for super::sockets::SocketKey {}
    unsafe impl aya::Pod for super::sockets::SocketCount {}
}
