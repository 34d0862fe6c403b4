//! The session: what `record` saw, in a form `report` reads without root, and the only
//! thing recording and processing share. [`file`] reads and writes it.
//!
//! Mutation-tested (cargo xtask mutants), not pure: it re-exports [`file`]'s error and size
//! limit (that module reads and writes); the rest is the session's types and their logic.
use std::{collections::BTreeMap, net::Ipv6Addr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use self::{
    file::{MAX_FILE_BYTES, SessionError},
    pods::{CniCall, CniTracing, PodStart, Timeline},
    settings::PodSettings,
    sockets::{SocketError, SocketTracing},
};
pub use crate::kernel::Backend;

pub mod file;
pub mod pods;
pub mod settings;
pub mod sockets;
pub mod trace_context;

/// Marks a JSON document as a dad-trace session.
pub const FORMAT: &str = "dad-trace-session";
/// Bumped on incompatible changes; readers refuse other versions with a clear message.
pub const FORMAT_VERSION: u32 = 1;

/// How an address left the tentative state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Tentative flag cleared: the address is usable.
    Settled,
    /// A duplicate answered: the address is unusable.
    Failed,
    /// The address, its interface or its namespace went away while tentative.
    Aborted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Settled => "settled",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
        })
    }
}

/// Where the processes of a pod's network namespace say they belong.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Kubernetes namespace and pod name, from the container runtime (CRI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kubernetes pod UID, from the CRI or a kubepods cgroup path.
    pub uid: Option<String>,
    /// Container (sandbox) id, from the CRI or a kubepods cgroup path.
    pub container_id: Option<String>,
    /// A process living in the namespace, and its command name.
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// The other end of a veth pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub ifindex: u32,
    /// Known when the peer lives in the host namespace.
    pub ifname: Option<String>,
    /// For a host-side veth: the pod (its label) whose interface is the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// One IPv6 address that left the tentative state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddressEvent {
    /// When the address settled, failed or was aborted.
    pub time: DateTime<Utc>,
    pub netns_inode: u32,
    /// The namespace's cookie where the kernel has one (inodes are reused, cookies are not).
    pub netns_cookie: Option<u64>,
    /// Name under /run/netns (`ip netns`, containerd's `cni-<uuid>`).
    pub netns_name: Option<String>,
    /// The node's own namespace (host side of veth pairs, physical NICs).
    pub host_netns: bool,
    pub pod: Option<Pod>,
    pub ifname: String,
    pub ifindex: i32,
    pub peer: Option<Peer>,
    pub addr: Ipv6Addr,
    /// Created tentative → tentative cleared (or failed/aborted).
    pub tentative_ns: u64,
    /// DAD begin → completed; null when no DAD ran (e.g. `accept_dad=0`).
    pub dad_ns: Option<u64>,
    /// Why it waited, in phases that add up to `tentative_ns`: for the link (DAD begins only
    /// on a ready link), the random delay before the first probe, the probes. Null where the
    /// backend cannot see a boundary (the kprobe backend has no hook at the first probe) or
    /// the address was first seen mid-flight.
    #[serde(default)]
    pub link_wait_ns: Option<u64>,
    #[serde(default)]
    pub delay_ns: Option<u64>,
    #[serde(default)]
    pub probing_ns: Option<u64>,
    /// Usable while tentative (optimistic DAD).
    #[serde(default)]
    pub optimistic: bool,
    pub outcome: Outcome,
    /// First seen mid-flight: the delays are lower bounds.
    #[serde(default)]
    pub partial: bool,
    /// The node it was recorded on, set when sessions of several nodes are merged (namespace
    /// inodes are only unique per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// For a failed address: who on this node holds it (the other side of the duplicate).
    /// Empty when the answer came from outside the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_of: Vec<Holder>,
}

/// An interface that holds an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub netns_inode: u32,
    /// `namespace/pod`, the namespace name, `host`, or `netns:<inode>`.
    pub name: String,
    pub ifname: String,
}

impl AddressEvent {
    /// When the address was first seen tentative.
    #[must_use]
    pub fn started(&self) -> DateTime<Utc> {
        let tentative = chrono::Duration::nanoseconds(i64::try_from(self.tentative_ns).unwrap_or(i64::MAX));
        // A corrupt file may hold any number: never panic on it.
        self.time.checked_sub_signed(tentative).unwrap_or(self.time)
    }

    /// The label a person reads for this address's pod: netns name, pod UID, or inode.
    #[must_use]
    pub fn pod_label(&self) -> String {
        Self::label_of(
            self.host_netns,
            self.pod.as_ref(),
            self.netns_name.as_deref(),
            self.netns_inode,
        )
    }

    /// The label of a namespace: `host`, `namespace/pod`, its name, `pod:<uid>`, or
    /// `netns:<inode>`, the first that is known.
    #[must_use]
    pub fn label_of(host: bool, pod: Option<&Pod>, netns_name: Option<&str>, netns_inode: u32) -> String {
        if host {
            return "host".into();
        }
        if let Some((namespace, name)) = pod.and_then(|pod| Some((pod.namespace.as_ref()?, pod.name.as_ref()?))) {
            return format!("{namespace}/{name}");
        }
        if let Some(name) = netns_name {
            return name.to_string();
        }
        if let Some(uid) = pod.and_then(|pod| pod.uid.as_ref()) {
            return format!("pod:{uid}");
        }
        format!("netns:{netns_inode}")
    }
}

/// An address still tentative when recording stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfinished {
    pub netns_inode: u32,
    pub ifname: String,
    pub addr: Ipv6Addr,
    pub tentative_so_far_ns: u64,
}

/// Where a session's addresses go as they are read: kept one by one (`Vec`, the default), or
/// folded into a report's figures so that a big session is never held in memory.
pub trait Addresses: Default {
    fn add(&mut self, event: AddressEvent);
}

impl Addresses for Vec<AddressEvent> {
    fn add(&mut self, event: AddressEvent) {
        self.push(event);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session<E = Vec<AddressEvent>> {
    pub format: String,
    pub format_version: u32,
    pub tool_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub backend: Backend,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// Events the kernel could not queue (ring buffer full).
    pub lost_events: u64,
    pub events: E,
    #[serde(default)]
    pub unfinished: Vec<Unfinished>,
    /// Host-namespace DAD settings when recording started and ended (the sysctls that decide
    /// whether and how long DAD runs in new pods), so a report can say what changed between
    /// sessions.
    #[serde(default)]
    pub sysctls_start: BTreeMap<String, String>,
    #[serde(default)]
    pub sysctls_end: BTreeMap<String, String>,
    /// Pod start per pod namespace: CNI calls, timeline, DAD's share (see [`pods`]).
    #[serde(default)]
    pub pods: Vec<PodStart>,
    /// How CNI calls were followed; null when they were not (older sessions, or a kernel
    /// without the fields the programs read).
    #[serde(default)]
    pub cni: Option<CniTracing>,
    /// Application socket errors (`EADDRNOTAVAIL`), aggregated (see [`sockets`]).
    #[serde(default)]
    pub socket_errors: Vec<SocketError>,
    #[serde(default)]
    pub sockets: Option<SocketTracing>,
}

impl Session {
    /// The same session with its addresses folded into `E` (a report's figures).
    #[must_use]
    pub fn fold<E: Addresses>(self) -> Session<E> {
        self.map_events(|events| {
            let mut folded = E::default();
            for event in events {
                folded.add(event);
            }
            folded
        })
    }

    #[must_use]
    pub fn new(backend: Backend, kernel_release: String, hostname: String, started_at: DateTime<Utc>) -> Self {
        Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            hostname,
            kernel_release,
            backend,
            started_at,
            ended_at: started_at,
            lost_events: 0,
            events: Vec::new(),
            unfinished: Vec::new(),
            sysctls_start: BTreeMap::new(),
            sysctls_end: BTreeMap::new(),
            pods: Vec::new(),
            cni: None,
            socket_errors: Vec::new(),
            sockets: None,
        }
    }
}

impl<E> Session<E> {
    /// This session's header, settings, pods and CNI calls around its addresses made into
    /// something else.
    pub fn map_events<F>(self, f: impl FnOnce(E) -> F) -> Session<F> {
        Session {
            format: self.format,
            format_version: self.format_version,
            tool_version: self.tool_version,
            hostname: self.hostname,
            kernel_release: self.kernel_release,
            backend: self.backend,
            started_at: self.started_at,
            ended_at: self.ended_at,
            lost_events: self.lost_events,
            events: f(self.events),
            unfinished: self.unfinished,
            sysctls_start: self.sysctls_start,
            sysctls_end: self.sysctls_end,
            pods: self.pods,
            cni: self.cni,
            socket_errors: self.socket_errors,
            sockets: self.sockets,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Session {
        let start: DateTime<Utc> = "2026-11-25T20:00:00Z".parse().expect("literal time");
        let mut session = Session::new(Backend::Tracepoint, "6.18.44".into(), "node-a".into(), start);
        session.ended_at = start + chrono::Duration::seconds(5);
        session.lost_events = 2;
        session.events.push(AddressEvent {
            time: start + chrono::Duration::milliseconds(1500),
            netns_inode: 4_026_532_300,
            netns_cookie: Some(12),
            netns_name: Some("dt-pod-0".into()),
            host_netns: false,
            pod: Some(Pod {
                uid: Some("0c5b9d1e-aaaa-bbbb-cccc-0123456789ab".into()),
                ..Pod::default()
            }),
            ifname: "eth0".into(),
            ifindex: 2,
            peer: Some(Peer {
                ifindex: 17,
                ifname: Some("dt-h0".into()),
                pod: None,
            }),
            addr: "fd00:dad::1".parse().expect("literal address"),
            tentative_ns: 1_400_000_000,
            dad_ns: None,
            link_wait_ns: None,
            delay_ns: None,
            probing_ns: None,
            optimistic: false,
            outcome: Outcome::Settled,
            partial: false,
            node: None,
            duplicate_of: Vec::new(),
        });
        session
    }

    #[test]
    fn pod_label_prefers_names() {
        let mut event = sample().events.remove(0);
        if let Some(pod) = event.pod.as_mut() {
            pod.namespace = Some("team-a".into());
            pod.name = Some("web-1".into());
        }
        assert_eq!(event.pod_label(), "team-a/web-1");
        if let Some(pod) = event.pod.as_mut() {
            pod.name = None;
        }
        assert_eq!(event.pod_label(), "dt-pod-0");
        event.netns_name = None;
        assert_eq!(event.pod_label(), "pod:0c5b9d1e-aaaa-bbbb-cccc-0123456789ab");
        event.pod = None;
        assert_eq!(event.pod_label(), "netns:4026532300");
        event.host_netns = true;
        assert_eq!(event.pod_label(), "host");
    }
}
