//! Types shared by the kernel programs (`dad-trace-ebpf`) and the loader (`dad-trace`).
//!
//! Everything here is `#[repr(C)]` and crosses the user/kernel boundary byte for byte:
//! [`Config`] goes into the programs as a read-only global, [`RawEvent`] comes back through
//! the ring buffer. The `user` feature adds what only userspace needs (`aya::Pod`).
#![no_std]

/// Name of the ring buffer map the programs write [`RawEvent`]s to.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array holding the count of events dropped because the ring buffer was full.
pub const LOST_MAP: &str = "LOST";
/// Name of the read-only global holding the [`Config`].
pub const CONFIG_GLOBAL: &str = "CONFIG";
/// Default ring buffer size in bytes (a power of two, as the kernel requires).
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;

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

/// Which kernel hook produced an event. The state machine in userspace turns these
/// observations into DAD phases; the kernel side stays stateless.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum Hook {
    /// tracepoint `workqueue_queue_work` for an `addrconf_dad_work` item.
    WorkQueued = 1,
    /// raw tracepoint `workqueue_execute_end` after `addrconf_dad_work` ran.
    WorkDone = 2,
    /// kretprobe `ipv6_add_addr`: the address exists (normally tentative).
    AddrAdded = 3,
    /// kprobe `addrconf_dad_start`.
    DadStart = 4,
    /// kprobe `addrconf_dad_begin`.
    DadBegin = 5,
    /// kprobe `addrconf_dad_kick`: the first probe is scheduled.
    DadKick = 6,
    /// kprobe `addrconf_dad_completed`: tentative cleared.
    DadCompleted = 7,
    /// kprobe `addrconf_dad_failure`: a duplicate answered.
    DadFailure = 8,
    /// kprobe `addrconf_dad_stop`.
    DadStop = 9,
    /// kprobe `ipv6_del_addr`.
    AddrDeleted = 10,
    /// kprobe `inet6_ifa_finish_destroy`: the address is freed.
    AddrDestroyed = 11,
}

impl Hook {
    pub const ALL: [Hook; 11] = [
        Hook::WorkQueued,
        Hook::WorkDone,
        Hook::AddrAdded,
        Hook::DadStart,
        Hook::DadBegin,
        Hook::DadKick,
        Hook::DadCompleted,
        Hook::DadFailure,
        Hook::DadStop,
        Hook::AddrDeleted,
        Hook::AddrDestroyed,
    ];

    #[must_use]
    pub fn from_u8(value: u8) -> Option<Hook> {
        Hook::ALL.into_iter().find(|hook| *hook as u8 == value)
    }
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
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are plain `#[repr(C)]` integers and byte arrays, valid for any bit pattern.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::RawEvent {}
}
