//! What the socket error program needs to know of the machine it runs on (where the
//! syscall's number and arguments are saved, the watched syscalls' numbers) and what one of
//! its counts says. The comm and the address come from the failing process: bounded here,
//! escaped where printed.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::net::Ipv6Addr;

use dad_trace_common::sockets::{SocketCount, SocketKey, Syscall};

/// An architecture the socket error program knows the syscall ABI of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture named as Rust's `std::env::consts::ARCH` names it.
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The numbers of bind, connect, sendto, sendmsg (`arch/x86/entry/syscalls/syscall_64.tbl`,
    /// `include/uapi/asm-generic/unistd.h`).
    #[must_use]
    pub fn numbers(self) -> [u32; 4] {
        match self {
            Arch::X86_64 => [49, 42, 44, 46],
            Arch::Aarch64 => [200, 203, 206, 211],
        }
    }

    /// The `struct pt_regs` member that holds the syscall number at exit, and its size: the
    /// return value has replaced `ax`/`regs[0]` by then.
    #[must_use]
    pub fn number_register(self) -> (&'static str, usize) {
        match self {
            Arch::X86_64 => ("orig_ax", 8),
            Arch::Aarch64 => ("syscallno", 4),
        }
    }

    /// Where arguments 1, 2, 4 and 5 are saved: a `struct pt_regs` member, its size, and the
    /// offset inside it (arm64 keeps the registers in one array).
    #[must_use]
    pub fn argument_registers(self) -> [(&'static str, usize, u32); 4] {
        match self {
            // The syscall ABI: di, si, dx, r10, r8, r9.
            Arch::X86_64 => [("si", 8, 0), ("dx", 8, 0), ("r8", 8, 0), ("r9", 8, 0)],
            Arch::Aarch64 => [
                ("regs", 248, 8),
                ("regs", 248, 16),
                ("regs", 248, 32),
                ("regs", 248, 40),
            ],
        }
    }
}

/// One counted (namespace, process, syscall, address), as the kernel keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketFailure {
    pub netns_inode: u32,
    pub pid: u32,
    /// The thread that failed first.
    pub tid: u32,
    pub syscall: Syscall,
    pub addr: Option<Ipv6Addr>,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cgroup_id: u64,
    /// As the process set it (up to 15 bytes, any bytes): escape before printing.
    pub comm: String,
}

/// A count the loader could not make sense of: the object and the loader disagree.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("socket error count with an unknown syscall id {0}")]
pub struct UnknownSyscall(pub u8);

impl SocketFailure {
    /// The kernel's key and count.
    ///
    /// # Errors
    ///
    /// When the key names a syscall this loader does not know.
    pub fn decode(key: &SocketKey, value: &SocketCount) -> Result<Self, UnknownSyscall> {
        let syscall = Syscall::from_u8(key.syscall).ok_or(UnknownSyscall(key.syscall))?;
        let comm_len = value
            .comm
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(value.comm.len());
        Ok(Self {
            netns_inode: key.netns_inum,
            pid: key.tgid,
            tid: value.tid,
            syscall,
            addr: (key.has_addr != 0).then(|| Ipv6Addr::from(key.addr)),
            count: value.count,
            first_ns: value.first_ns,
            last_ns: value.last_ns.max(value.first_ns),
            cgroup_id: value.cgroup_id,
            comm: String::from_utf8_lossy(&value.comm[..comm_len]).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_are_named_as_rust_names_them() {
        assert_eq!(Arch::named("x86_64"), Some(Arch::X86_64));
        assert_eq!(Arch::named("aarch64"), Some(Arch::Aarch64));
        assert_eq!(Arch::named("riscv64"), None);
        assert_eq!(Arch::named("x86-64"), None, "Rust's spelling only");
    }

    /// The numbers from each architecture's syscall table, in `Syscall::ALL`'s order.
    #[test]
    fn syscall_numbers_follow_each_table() {
        assert_eq!(
            Syscall::ALL.map(Syscall::name),
            ["bind", "connect", "sendto", "sendmsg"]
        );
        assert_eq!(Arch::X86_64.numbers(), [49, 42, 44, 46]);
        assert_eq!(Arch::Aarch64.numbers(), [200, 203, 206, 211]);
        assert_eq!(Arch::X86_64.number_register(), ("orig_ax", 8));
        assert_eq!(Arch::Aarch64.number_register(), ("syscallno", 4));
        // Arguments 1, 2, 4, 5: x86-64 passes the fourth in r10, not rcx.
        assert_eq!(
            Arch::X86_64.argument_registers().map(|(name, _, _)| name),
            ["si", "dx", "r8", "r9"]
        );
        assert_eq!(Arch::Aarch64.argument_registers().map(|(_, _, at)| at), [8, 16, 32, 40]);
        assert!(
            Arch::Aarch64
                .argument_registers()
                .iter()
                .all(|&(name, size, _)| name == "regs" && size == 248)
        );
    }

    fn key(syscall: u8, has_addr: u8) -> SocketKey {
        SocketKey {
            netns_inum: 4_026_532_500,
            tgid: 4242,
            syscall,
            has_addr,
            reserved: 0,
            addr: "fd00:4d::1".parse::<Ipv6Addr>().expect("literal").octets(),
        }
    }

    fn count(comm: &[u8]) -> SocketCount {
        let mut value = SocketCount {
            count: 12,
            first_ns: 1_000,
            last_ns: 9_000,
            cgroup_id: 77,
            tid: 4243,
            ..SocketCount::default()
        };
        value.comm[..comm.len()].copy_from_slice(comm);
        value
    }

    #[test]
    fn a_count_decodes_with_its_address_and_process() {
        let failure = SocketFailure::decode(&key(1, 1), &count(b"server")).expect("known syscall");
        assert_eq!(
            failure,
            SocketFailure {
                netns_inode: 4_026_532_500,
                pid: 4242,
                tid: 4243,
                syscall: Syscall::Bind,
                addr: Some("fd00:4d::1".parse().expect("literal")),
                count: 12,
                first_ns: 1_000,
                last_ns: 9_000,
                cgroup_id: 77,
                comm: "server".into(),
            }
        );
    }

    #[test]
    fn hostile_or_odd_counts_decode_safely() {
        // No address named: none, whatever the bytes.
        let connected = SocketFailure::decode(&key(4, 0), &count(b"app")).expect("sendmsg");
        assert_eq!((connected.syscall, connected.addr), (Syscall::Sendmsg, None));
        // A comm of 16 bytes without a NUL, and bytes that are not UTF-8.
        let full = SocketFailure::decode(&key(2, 1), &count(b"0123456789abcdef")).expect("connect");
        assert_eq!(full.comm, "0123456789abcdef");
        let odd = SocketFailure::decode(&key(3, 1), &count(b"a\xffb\x1b[31m")).expect("sendto");
        assert_eq!(odd.comm, "a\u{fffd}b\u{1b}[31m");
        // A last failure before the first (a lost race between CPUs) is not a negative span.
        let mut raced = count(b"x");
        raced.last_ns = 10;
        assert_eq!(SocketFailure::decode(&key(1, 1), &raced).expect("bind").last_ns, 1_000);
        assert_eq!(SocketFailure::decode(&key(9, 1), &raced), Err(UnknownSyscall(9)));
        assert_eq!(SocketFailure::decode(&key(0, 1), &raced), Err(UnknownSyscall(0)));
    }
}
