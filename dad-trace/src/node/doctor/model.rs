//! What the kernel does with one new IPv6 address, as `net/ipv6/addrconf.c` decides it (6.x):
//!
//! - `addrconf_dad_begin` skips DAD — the address is usable at once — when the device is
//!   NOARP or loopback, the address carries `IFA_F_NODAD`, or **both** the namespace's
//!   `all.accept_dad` and the interface's `accept_dad` are below 1. Nothing else skips it:
//!   `dad_transmits=0` does not.
//! - Otherwise `addrconf_dad_kick` waits a random `0 .. rtr_solicit_delay` (none for an
//!   address flagged optimistic), and then each of `dad_transmits` probes waits
//!   `max(retrans_time, 10 ms)`; the DAD work that finds no probe left clears the tentative
//!   flag. So `dad_transmits=0` still leaves an address tentative for up to 1 s.
//! - A kernel-made link-local address is flagged optimistic when `all.optimistic_dad` or the
//!   interface's `optimistic_dad` is set and `all.forwarding` is 0; an address a CNI plugin
//!   adds over netlink is not (unless the plugin asks for it).
//! - A new interface copies its namespace's `default.*`; a new namespace copies the
//!   initial namespace's `all`/`default` when `net.core.devconf_inherit_init_net` is 1 (3:
//!   the creating process's namespace, 0 and 2: compiled defaults). `retrans_time` comes from
//!   the neighbour table's one `default`, which only the initial namespace shows.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use serde::{Deserialize, Serialize};

/// Compiled defaults of a namespace that inherits nothing (`ipv6_devconf`,
/// `ipv6_devconf_dflt`).
pub const COMPILED: Conf = Conf {
    all_accept_dad: 0,
    all_optimistic_dad: 0,
    all_forwarding: 0,
    accept_dad: 1,
    dad_transmits: 1,
    optimistic_dad: 0,
    rtr_solicit_delay_ms: 1000,
    retrans_time_ms: 1000,
};

/// The values that decide DAD for an address on one interface of one namespace: the
/// namespace's `all` ones and the interface's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conf {
    pub all_accept_dad: i64,
    pub all_optimistic_dad: i64,
    pub all_forwarding: i64,
    pub accept_dad: i64,
    pub dad_transmits: i64,
    pub optimistic_dad: i64,
    /// `router_solicitation_delay` (the sysctl is in seconds).
    pub rtr_solicit_delay_ms: u64,
    /// The interface's neighbour `retrans_time_ms`.
    pub retrans_time_ms: u64,
}

/// How long an address stays tentative, in ms, ignoring scheduling latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    /// Whether the DAD state machine runs at all.
    pub dad: bool,
    pub low_ms: u64,
    pub high_ms: u64,
}

impl Wait {
    pub const NONE: Wait = Wait {
        dad: false,
        low_ms: 0,
        high_ms: 0,
    };

    /// What a plugin that waits for all of a pod's addresses pays: the slowest of them.
    #[must_use]
    pub fn slowest(waits: &[Wait]) -> Wait {
        waits.iter().fold(Wait::NONE, |acc, w| Wait {
            dad: acc.dad || w.dad,
            low_ms: acc.low_ms.max(w.low_ms),
            high_ms: acc.high_ms.max(w.high_ms),
        })
    }

    /// Whether `measured_ms` fits, with `slack_ms` for the work's scheduling and timer slop.
    #[must_use]
    pub fn admits(&self, measured_ms: f64, slack_ms: f64) -> bool {
        measured_ms >= self.low_ms as f64 - slack_ms && measured_ms <= self.high_ms as f64 + slack_ms
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.dad {
            write!(f, "no DAD, 0 ms")
        } else if self.low_ms == self.high_ms {
            write!(f, "DAD, {} ms", self.low_ms)
        } else {
            write!(f, "DAD, {}-{} ms", self.low_ms, self.high_ms)
        }
    }
}

/// Which address: its kind decides the optimistic flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// Made by the kernel when the interface comes up (optimistic when configured).
    KernelLinkLocal,
    /// Added over netlink, as CNI IPAM adds pod addresses.
    Added { nodad: bool },
}

impl Conf {
    /// Whether `addrconf_dad_begin` runs DAD for a tentative address here.
    #[must_use]
    pub fn accepts_dad(&self) -> bool {
        self.all_accept_dad >= 1 || self.accept_dad >= 1
    }

    #[must_use]
    pub fn optimistic_link_local(&self) -> bool {
        (self.all_optimistic_dad >= 1 || self.optimistic_dad >= 1) && self.all_forwarding == 0
    }

    /// The tentative wait of a new address of `kind` on this interface.
    #[must_use]
    pub fn wait(&self, kind: AddressKind) -> Wait {
        let optimistic = match kind {
            AddressKind::KernelLinkLocal => self.optimistic_link_local(),
            AddressKind::Added { nodad: true } => return Wait::NONE,
            AddressKind::Added { nodad: false } => false,
        };
        if !self.accepts_dad() {
            return Wait::NONE;
        }
        let probes = u64::try_from(self.dad_transmits.max(0)).unwrap_or(0) * self.retrans_time_ms.max(10);
        // A random number of jiffies below the delay: never the whole delay.
        let random = if optimistic { 0 } else { self.rtr_solicit_delay_ms };
        Wait {
            dad: true,
            low_ms: probes,
            high_ms: probes + random,
        }
    }
}

/// The host namespace's settings, by sysctl name, as the doctor reads them.
pub trait Sysctls {
    fn int(&self, name: &str) -> Option<i64>;
}

impl Sysctls for std::collections::BTreeMap<String, String> {
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }
}

fn ms(seconds: Option<i64>, default_ms: u64) -> u64 {
    seconds.map_or(default_ms, |s| u64::try_from(s.max(0)).unwrap_or(0) * 1000)
}

/// The host namespace's own new interfaces (host-side veths): its `all` and `default`.
#[must_use]
pub fn host_interface(host: &impl Sysctls) -> Conf {
    let get = |name: &str, compiled: i64| host.int(name).unwrap_or(compiled);
    Conf {
        all_accept_dad: get("net.ipv6.conf.all.accept_dad", COMPILED.all_accept_dad),
        all_optimistic_dad: get("net.ipv6.conf.all.optimistic_dad", COMPILED.all_optimistic_dad),
        all_forwarding: get("net.ipv6.conf.all.forwarding", COMPILED.all_forwarding),
        accept_dad: get("net.ipv6.conf.default.accept_dad", COMPILED.accept_dad),
        dad_transmits: get("net.ipv6.conf.default.dad_transmits", COMPILED.dad_transmits),
        optimistic_dad: get("net.ipv6.conf.default.optimistic_dad", COMPILED.optimistic_dad),
        rtr_solicit_delay_ms: ms(
            host.int("net.ipv6.conf.default.router_solicitation_delay"),
            COMPILED.rtr_solicit_delay_ms,
        ),
        retrans_time_ms: retrans_time_ms(host),
    }
}

fn retrans_time_ms(host: &impl Sysctls) -> u64 {
    host.int("net.ipv6.neigh.default.retrans_time_ms")
        .map_or(COMPILED.retrans_time_ms, |v| u64::try_from(v.max(0)).unwrap_or(0))
}

/// Whether new namespaces copy the host's settings (`devconf_inherit_init_net` 1, or 3 when
/// the runtime creates them from the host namespace, as container runtimes do).
#[must_use]
pub fn inherits(host: &impl Sysctls) -> bool {
    matches!(host.int("net.core.devconf_inherit_init_net"), Some(1 | 3))
}

/// A new pod's interface (`eth0`), in a namespace created now.
#[must_use]
pub fn new_pod_interface(host: &impl Sysctls, inherit: bool) -> Conf {
    let retrans_time_ms = retrans_time_ms(host);
    if inherit {
        host_interface(host)
    } else {
        Conf {
            retrans_time_ms,
            ..COMPILED
        }
    }
}

/// What a new pod pays: its kernel link-local address, the address its CNI plugin adds,
/// and the slowest of the two (what a plugin waiting for both pays).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PodEstimate {
    pub link_local: Wait,
    pub added_address: Wait,
    pub per_pod: Wait,
}

#[must_use]
pub fn pod_estimate(conf: &Conf) -> PodEstimate {
    let link_local = conf.wait(AddressKind::KernelLinkLocal);
    let added_address = conf.wait(AddressKind::Added { nodad: false });
    PodEstimate {
        link_local,
        added_address,
        per_pod: Wait::slowest(&[link_local, added_address]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(dad: bool, low_ms: u64, high_ms: u64) -> Wait {
        Wait { dad, low_ms, high_ms }
    }

    #[test]
    fn compiled_defaults_wait_one_probe_plus_the_random_delay() {
        assert_eq!(COMPILED.wait(AddressKind::KernelLinkLocal), wait(true, 1000, 2000));
        assert_eq!(pod_estimate(&COMPILED).per_pod, wait(true, 1000, 2000));
    }

    /// `router_solicitation_delay` is in seconds, the model in milliseconds.
    #[test]
    fn the_random_delay_is_read_in_seconds() {
        let host: std::collections::BTreeMap<String, String> = [
            ("net.ipv6.conf.default.router_solicitation_delay", "2"),
            ("net.ipv6.neigh.default.retrans_time_ms", "500"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        let conf = host_interface(&host);
        assert_eq!((conf.rtr_solicit_delay_ms, conf.retrans_time_ms), (2000, 500));
        assert_eq!(conf.wait(AddressKind::KernelLinkLocal), wait(true, 500, 2500));
    }

    #[test]
    fn zero_transmits_still_waits_the_random_delay() {
        let conf = Conf {
            dad_transmits: 0,
            ..COMPILED
        };
        assert_eq!(conf.wait(AddressKind::Added { nodad: false }), wait(true, 0, 1000));
    }

    #[test]
    fn accept_dad_is_the_max_of_all_and_the_interface() {
        let all_only = Conf {
            all_accept_dad: 0,
            accept_dad: 1,
            ..COMPILED
        };
        assert!(all_only.accepts_dad());
        let all_overrides = Conf {
            all_accept_dad: 1,
            accept_dad: 0,
            ..COMPILED
        };
        assert!(all_overrides.accepts_dad());
        let both_off = Conf {
            all_accept_dad: 0,
            accept_dad: 0,
            ..COMPILED
        };
        assert_eq!(both_off.wait(AddressKind::KernelLinkLocal), Wait::NONE);
        // -1 is what the kernel sets on NOARP and loopback devices.
        assert!(
            !Conf {
                accept_dad: -1,
                ..both_off
            }
            .accepts_dad()
        );
    }

    #[test]
    fn optimistic_removes_only_the_random_delay_of_link_local_addresses() {
        let conf = Conf {
            optimistic_dad: 1,
            ..COMPILED
        };
        let estimate = pod_estimate(&conf);
        assert_eq!(estimate.link_local, wait(true, 1000, 1000));
        assert_eq!(estimate.added_address, wait(true, 1000, 2000));
        let forwarding = Conf {
            all_forwarding: 1,
            ..conf
        };
        assert_eq!(forwarding.wait(AddressKind::KernelLinkLocal), wait(true, 1000, 2000));
    }

    #[test]
    fn nodad_addresses_skip_whatever_the_sysctls() {
        assert_eq!(COMPILED.wait(AddressKind::Added { nodad: true }), Wait::NONE);
    }

    #[test]
    fn new_namespaces_copy_the_host_only_when_inheriting() {
        let host: std::collections::BTreeMap<String, String> = [
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.default.dad_transmits", "3"),
            ("net.ipv6.neigh.default.retrans_time_ms", "500"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        let fresh = new_pod_interface(&host, false);
        assert_eq!((fresh.accept_dad, fresh.retrans_time_ms), (1, 500));
        assert_eq!(fresh.wait(AddressKind::KernelLinkLocal), wait(true, 500, 1500));
        let inherited = new_pod_interface(&host, true);
        assert_eq!((inherited.accept_dad, inherited.dad_transmits), (0, 3));
        assert_eq!(inherited.wait(AddressKind::KernelLinkLocal), Wait::NONE);
    }
}
