//! Decodes ring buffer records into typed observations.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{fmt, net::Ipv6Addr};

use dad_trace_common::{Hook, IFA_F_DADFAILED, IFA_F_TENTATIVE, RawEvent};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record is {actual} bytes, expected {expected}: kernel object and loader disagree")]
    Size { expected: usize, actual: usize },
    #[error("unknown hook id {0}")]
    Hook(u8),
    #[error("unknown process record kind {0}")]
    ProcKind(u32),
}

/// `inet6_ifaddr.state` (`enum { INET6_IFADDR_STATE_* }` in `include/net/if_inet6.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaState {
    PreDad,
    Dad,
    PostDad,
    ErrDad,
    Dead,
    Unknown(u8),
}

/// The kernel's values, the one place they are stated (both directions use it).
const STATES: [(u8, IfaState); 5] = [
    (0, IfaState::PreDad),
    (1, IfaState::Dad),
    (2, IfaState::PostDad),
    (3, IfaState::ErrDad),
    (4, IfaState::Dead),
];

impl From<u8> for IfaState {
    fn from(value: u8) -> Self {
        STATES
            .iter()
            .find(|(raw, _)| *raw == value)
            .map_or(IfaState::Unknown(value), |&(_, state)| state)
    }
}

impl From<IfaState> for u8 {
    fn from(state: IfaState) -> Self {
        match state {
            IfaState::Unknown(raw) => raw,
            known => STATES
                .iter()
                .find(|(_, s)| *s == known)
                .map_or(u8::MAX, |&(raw, _)| raw),
        }
    }
}

/// Identity of a network namespace: the inode names it while it lives, the cookie forever
/// (inodes are reused after a namespace dies). Cookie 0 means the kernel has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub inode: u32,
    pub cookie: u64,
}

/// One look at an IPv6 address by one kernel hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    pub hook: Hook,
    /// Kernel address of the `inet6_ifaddr`.
    pub ifa: u64,
    pub netns: NetnsId,
    pub ifindex: i32,
    pub ifname: String,
    pub addr: Ipv6Addr,
    pub state: IfaState,
    pub flags: u32,
    pub dad_probes: u8,
    pub work_pending: bool,
    /// Creation stamp (jiffies, low 32 bits) of the `inet6_ifaddr`.
    pub created: u32,
}

impl Observation {
    #[must_use]
    pub fn tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    #[must_use]
    pub fn dad_failed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }

    /// Whether two observations are of the same address on the same interface, whichever
    /// object holds it.
    #[must_use]
    pub fn same_interface_and_address(&self, other: &Observation) -> bool {
        self.netns == other.netns && self.ifindex == other.ifindex && self.addr == other.addr
    }

    /// Whether two observations are of the same address object: same address on the same
    /// interface, created at the same moment (not removed and added again in between).
    #[must_use]
    pub fn same_address(&self, other: &Observation) -> bool {
        self.same_interface_and_address(other) && self.created == other.created
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} ifa={:#x} netns={} {}#{} {} state={:?} flags={:#x} probes={} pending={}",
            self.ts_ns,
            self.hook,
            self.ifa,
            self.netns.inode,
            self.ifname,
            self.ifindex,
            self.addr,
            self.state,
            self.flags,
            self.dad_probes,
            self.work_pending
        )
    }
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Observation, DecodeError> {
    let expected = size_of::<RawEvent>();
    if bytes.len() != expected {
        return Err(DecodeError::Size {
            expected,
            actual: bytes.len(),
        });
    }
    // SAFETY: the length matches and RawEvent is plain integers, valid for any bit pattern.
    let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    from_raw(&raw)
}

pub fn from_raw(raw: &RawEvent) -> Result<Observation, DecodeError> {
    let hook = Hook::from_u8(raw.hook).ok_or(DecodeError::Hook(raw.hook))?;
    let name_len = raw.ifname.iter().position(|&b| b == 0).unwrap_or(raw.ifname.len());
    Ok(Observation {
        ts_ns: raw.ts_ns,
        hook,
        ifa: raw.ifa,
        netns: NetnsId {
            inode: raw.netns_inum,
            cookie: raw.netns_cookie,
        },
        ifindex: raw.ifindex,
        ifname: String::from_utf8_lossy(&raw.ifname[..name_len]).into_owned(),
        addr: Ipv6Addr::from(raw.addr),
        state: IfaState::from(raw.state),
        flags: raw.flags,
        dad_probes: raw.dad_probes,
        work_pending: raw.work_pending != 0,
        created: raw.created,
    })
}

/// Encodes an observation back into the kernel's record layout (fixtures and replay).
#[must_use]
pub fn to_raw(obs: &Observation) -> RawEvent {
    let mut ifname = [0u8; 16];
    let name = obs.ifname.as_bytes();
    let len = name.len().min(15);
    ifname[..len].copy_from_slice(&name[..len]);
    RawEvent {
        ts_ns: obs.ts_ns,
        ifa: obs.ifa,
        netns_cookie: obs.netns.cookie,
        addr: obs.addr.octets(),
        ifname,
        netns_inum: obs.netns.inode,
        ifindex: obs.ifindex,
        flags: obs.flags,
        hook: obs.hook as u8,
        state: obs.state.into(),
        dad_probes: obs.dad_probes,
        work_pending: u8::from(obs.work_pending),
        created: obs.created,
        reserved: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Observation {
        Observation {
            ts_ns: 42,
            hook: Hook::WorkQueued,
            ifa: 0xffff_8880_1234_5600,
            netns: NetnsId {
                inode: 4_026_532_000,
                cookie: 7,
            },
            ifindex: 2,
            ifname: "eth0".into(),
            addr: "fd00:dad::5".parse().expect("literal address"),
            state: IfaState::PreDad,
            flags: 0xc0,
            dad_probes: 0,
            work_pending: true,
            created: 4_294_000_000,
        }
    }

    #[test]
    fn round_trips_through_kernel_layout() {
        let obs = sample();
        let raw = to_raw(&obs);
        // SAFETY: RawEvent is repr(C) plain data; viewing it as bytes is what the ring buffer does.
        let bytes = unsafe { std::slice::from_raw_parts(std::ptr::from_ref(&raw).cast::<u8>(), size_of::<RawEvent>()) };
        assert_eq!(decode(bytes), Ok(obs.clone()));
        assert!(obs.tentative());
        assert!(!obs.dad_failed());
    }

    #[test]
    fn rejects_wrong_size_and_unknown_hook() {
        assert_eq!(
            decode(&[0u8; 3]),
            Err(DecodeError::Size {
                expected: size_of::<RawEvent>(),
                actual: 3
            })
        );
        let mut raw = to_raw(&sample());
        raw.hook = 99;
        assert_eq!(from_raw(&raw), Err(DecodeError::Hook(99)));
    }

    #[test]
    fn ifname_stops_at_nul_and_state_maps() {
        let mut raw = to_raw(&sample());
        raw.ifname = *b"veth1\0garbage\0\0\0";
        raw.state = 9;
        let obs = from_raw(&raw).expect("valid hook");
        assert_eq!(obs.ifname, "veth1");
        assert_eq!(obs.state, IfaState::Unknown(9));
    }

    /// The debug line `--debug` prints per observation.
    #[test]
    fn an_observation_prints_every_field() {
        assert_eq!(
            sample().to_string(),
            "42 WorkQueued ifa=0xffff888012345600 netns=4026532000 eth0#2 fd00:dad::5 state=PreDad \
             flags=0xc0 probes=0 pending=true"
        );
    }

    /// The kernel's `enum if_state` both ways: every byte comes back as it went.
    #[test]
    fn states_round_trip() {
        assert_eq!(IfaState::from(1), IfaState::Dad);
        assert_eq!(IfaState::from(4), IfaState::Dead);
        assert_eq!(u8::from(IfaState::PostDad), 2);
        assert_eq!(u8::from(IfaState::ErrDad), 3);
        assert_eq!(u8::from(IfaState::Unknown(200)), 200);
        for raw in 0..=u8::MAX {
            assert_eq!(u8::from(IfaState::from(raw)), raw);
        }
    }
}
