//! Application socket errors in the session: who failed to bind or connect, how often, and
//! whether a tentative address of its namespace was the cause. Sessions from before it have
//! none (`socket_errors: []`).
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::net::Ipv6Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Pod;

/// One (namespace, process, syscall, address) whose calls failed with `EADDRNOTAVAIL`, with
/// every failure counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketError {
    /// `bind`, `connect`, `sendto` or `sendmsg`.
    pub syscall: String,
    pub errno: String,
    /// The failing thread's command name and its process, as the process set them.
    pub comm: String,
    pub pid: u32,
    /// The container the process runs in, from its cgroup where the runtime names it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub netns_inode: u32,
    pub netns_name: Option<String>,
    #[serde(default)]
    pub host_netns: bool,
    pub pod: Option<Pod>,
    /// The address asked for (bind) or the destination (the others); null when the call
    /// named none (sendmsg on a connected socket).
    pub addr: Option<Ipv6Addr>,
    pub count: u64,
    /// When the first failure happened; `first_ns`/`last_ns` on the kernel's clock
    /// (`CLOCK_MONOTONIC`), as the address timings are.
    pub time: DateTime<Utc>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// How long the matching address of the namespace had been tentative at the first
    /// failure; null when none was: then it was not DAD's doing.
    pub tentative_for_ns: Option<u64>,
    /// That address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tentative_addr: Option<Ipv6Addr>,
}

impl SocketError {
    /// Its pod (or namespace), as addresses are labelled.
    #[must_use]
    pub fn label(&self) -> String {
        super::AddressEvent::label_of(
            self.host_netns,
            self.pod.as_ref(),
            self.netns_name.as_deref(),
            self.netns_inode,
        )
    }

    /// Whether a tentative address caused it.
    #[must_use]
    pub fn during_dad(&self) -> bool {
        self.tentative_for_ns.is_some()
    }
}

/// How socket errors were traced: the program, and what it left out. Null in a session when
/// they were not (older sessions, or a kernel that refused the program).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketTracing {
    /// The program that counted them (`socket_error_btf` or `socket_error`).
    pub program: String,
    /// Failures whose address was not IPv6 (not DAD's doing).
    pub other_family: u64,
    /// Failures whose address could not be read, and failures the kernel's map had no room
    /// for: not in `socket_errors`.
    pub unreadable: u64,
    pub lost: u64,
    /// Keys dad-trace stopped keeping (past 8,192 at once, the least recently failing that
    /// the kernel no longer counted): their entries are not in `socket_errors`.
    #[serde(default)]
    pub forgotten: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_is_dad_s_doing_when_a_tentative_address_explains_it() {
        let mut error = crate::report::socket_errors::tests::error("ns-a", "bind", 1, Some(3));
        assert_eq!(error.label(), "ns-a");
        error.host_netns = true;
        assert_eq!(error.label(), "host");
        assert!(error.during_dad());
        error.tentative_for_ns = None;
        assert!(!error.during_dad());
    }
}
