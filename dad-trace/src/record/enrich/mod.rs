//! Enrichment, with one owner: the [`Enricher`] turns what the kernel said about an address
//! (namespace inode, ifindex) into what a person knows (namespace name, pod, veth peer, who
//! holds a duplicate), holding an address back a little while its pod has no name yet.
//!
//! Sources, first that answers: the container runtime ([`cri`]), processes in the
//! namespace and their kubepods cgroup ([`proc`]), the name under /run/netns ([`netns`]).
use std::{
    collections::{HashMap, VecDeque},
    net::Ipv6Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use self::{
    cri::{Identities, SandboxIdentity},
    netns::{NetnsBook, NetnsInfo},
};
use super::recorder::Enrich;
use crate::{
    kernel::events::NetnsId,
    node::netns::{Inet6Row, addresses_in, in_netns},
    session::{AddressEvent, Holder, Outcome, Peer, Pod},
};

pub mod cri;
pub mod netns;
pub mod proc;
pub mod veth;

pub struct Enricher {
    /// The host's namespace, as this process sees it.
    host_handle: PathBuf,
    host_inode: u32,
    book: NetnsBook,
    peers: HashMap<(NetnsId, i32), Option<Peer>>,
    cri: Option<Identities>,
    /// Finished addresses of pods the runtime has not named yet, since when.
    held: VecDeque<(Instant, AddressEvent)>,
    /// Finished addresses ready for the sinks.
    ready: Vec<AddressEvent>,
    resolve_wait: Duration,
    holders: Option<HolderIndex>,
}

/// Every settled address of every namespace dad-trace can enter, by address: one look
/// answers every DAD failure that started before it. A flood of failures (anyone on the link
/// can answer DAD) costs at most one look per [`HOLDER_LOOK_INTERVAL`], not one per failure.
struct HolderIndex {
    built: chrono::DateTime<chrono::Utc>,
    at: Instant,
    holders: HashMap<Ipv6Addr, Vec<Holder>>,
}

/// The least time between two looks for holders.
const HOLDER_LOOK_INTERVAL: Duration = Duration::from_millis(200);

/// Puts what the runtime says about a sandbox into an event's pod (it outranks cgroup paths).
pub fn merge_identity(pod: &mut Option<Pod>, identity: SandboxIdentity) {
    let pod = pod.get_or_insert_with(Pod::default);
    pod.namespace = Some(identity.namespace);
    pod.name = Some(identity.name);
    pod.uid = Some(identity.uid);
    pod.container_id = Some(identity.sandbox_id);
    if pod.pid.is_none() {
        pod.pid = identity.pid;
    }
}

fn unnamed(event: &AddressEvent) -> bool {
    !event.host_netns && event.pod.as_ref().is_none_or(|pod| pod.name.is_none())
}

impl Enricher {
    /// `proc_root` is the host's /proc, `netns_dir` where named namespaces live.
    pub fn new(proc_root: &Path, netns_dir: &Path) -> anyhow::Result<Self> {
        let host_handle = proc_root.join("self/ns/net");
        let host_inode = std::fs::metadata(&host_handle)
            .with_context(|| format!("stat {} (dad-trace needs the host's /proc)", host_handle.display()))?
            .ino() as u32;
        Ok(Self {
            book: NetnsBook::new(proc_root, netns_dir, host_inode),
            host_handle,
            host_inode,
            peers: HashMap::new(),
            cri: None,
            held: VecDeque::new(),
            ready: Vec::new(),
            resolve_wait: Duration::ZERO,
            holders: None,
        })
    }

    /// Names pods through the container runtime too, waiting up to `resolve_wait` for a name.
    #[must_use]
    pub fn with_cri(mut self, identities: Identities, resolve_wait: Duration) -> Self {
        self.cri = Some(identities);
        self.resolve_wait = resolve_wait;
        self
    }

    #[must_use]
    pub fn is_host(&self, inode: u32) -> bool {
        inode == self.host_inode
    }

    /// The runtime's identity for a pod namespace; asks for a refresh when it has none yet.
    fn sandbox(&self, inode: u32) -> Option<SandboxIdentity> {
        let cri = self.cri.as_ref()?;
        if self.is_host(inode) {
            return None;
        }
        let found = cri.get(inode);
        if found.is_none() {
            cri.refresh_soon();
        }
        found
    }

    /// Everything known about a namespace, resolving it on a miss.
    fn netns(&mut self, inode: u32) -> NetnsInfo {
        if self.is_host(inode) {
            return NetnsInfo {
                handle: Some(self.host_handle.clone()),
                ..NetnsInfo::default()
            };
        }
        let mut info = self.book.lookup(inode);
        if let Some(identity) = self.sandbox(inode) {
            merge_identity(&mut info.pod, identity);
        }
        info
    }

    /// The veth peer of an interface: for a pod's interface, the host-side veth.
    fn peer(&mut self, netns: NetnsId, ifindex: i32) -> Option<Peer> {
        if let Some(known) = self.peers.get(&(netns, ifindex)) {
            return known.clone();
        }
        let info = self.netns(netns.inode);
        let index = u32::try_from(ifindex).ok()?;
        let peer = info
            .handle
            .and_then(|handle| match in_netns(&handle, move || veth::veth_peer_here(index)) {
                Ok(found) => found.map(|(peer_index, _)| peer_index),
                Err(e) => {
                    log::debug!("veth peer of {ifindex} in netns {}: {e:#}", netns.inode);
                    None
                }
            })?;
        // A pod's peer normally lives in the host namespace; confirm it points back at us.
        let ifname = if self.is_host(netns.inode) {
            None
        } else {
            in_netns(&self.host_handle, move || veth::veth_peer_here(peer))
                .ok()
                .flatten()
                .filter(|(back, _)| *back == index)
                .map(|(_, name)| name)
        };
        let found = Some(Peer { ifindex: peer, ifname });
        self.peers.insert((netns, ifindex), found.clone());
        found
    }

    /// Who else on this node holds `addr` (not itself a failed copy): the other side of a
    /// DAD failure that began at `started`, when it is here. Every namespace dad-trace can
    /// enter is looked in, through the [`HolderIndex`].
    fn holders(&mut self, addr: Ipv6Addr, except_inode: u32, started: chrono::DateTime<chrono::Utc>) -> Vec<Holder> {
        // The holder had the address before the failed copy began DAD: an index built since
        // then knows it. Otherwise look again, but not more often than the interval.
        let fresh = self
            .holders
            .as_ref()
            .is_some_and(|index| index.built >= started || index.at.elapsed() < HOLDER_LOOK_INTERVAL);
        if !fresh {
            self.holders = Some(self.look_for_holders());
        }
        self.holders
            .as_ref()
            .and_then(|index| index.holders.get(&addr))
            .map(|holders| {
                holders
                    .iter()
                    .filter(|holder| holder.netns_inode != except_inode)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn look_for_holders(&mut self) -> HolderIndex {
        let built = chrono::Utc::now();
        let at = Instant::now();
        let mut namespaces = self.book.openable();
        namespaces.push((self.host_inode, self.host_handle.clone()));
        let mut holders: HashMap<Ipv6Addr, Vec<Holder>> = HashMap::new();
        for (inode, handle) in namespaces {
            let Ok(rows) = addresses_in(&handle) else {
                continue;
            };
            let mut name = None;
            for row in rows {
                if row.flags & dad_trace_common::IFA_F_DADFAILED == 0 {
                    let name = name.get_or_insert_with(|| self.holder_name(inode)).clone();
                    holders.entry(row.addr).or_default().push(Holder {
                        netns_inode: inode,
                        name,
                        ifname: row.ifname,
                    });
                }
            }
        }
        log::debug!(
            "looked for address holders in every namespace ({} addresses)",
            holders.len()
        );
        HolderIndex { built, at, holders }
    }

    /// A holder is named the way its own addresses are (see [`AddressEvent::pod_label`]).
    fn holder_name(&mut self, inode: u32) -> String {
        let info = self.netns(inode);
        AddressEvent::label_of(self.is_host(inode), info.pod.as_ref(), info.name.as_deref(), inode)
    }

    /// Gives held addresses the names the runtime knows by now; past `resolve_wait` (or at
    /// the end, `all`) they go on unnamed.
    fn release_held(&mut self, all: bool) {
        let mut waiting = VecDeque::new();
        while let Some((since, mut event)) = self.held.pop_front() {
            if let Some(identity) = self.sandbox(event.netns_inode) {
                merge_identity(&mut event.pod, identity);
                self.ready.push(event);
            } else if all || since.elapsed() >= self.resolve_wait {
                self.ready.push(event);
            } else {
                waiting.push_back((since, event));
            }
        }
        self.held = waiting;
    }
}

impl Enrich for Enricher {
    fn note(&mut self, netns: NetnsId) {
        if !self.is_host(netns.inode) && !self.book.is_known(netns.inode) {
            self.netns(netns.inode);
        }
    }

    fn finish(&mut self, mut event: AddressEvent) {
        let netns = NetnsId {
            inode: event.netns_inode,
            cookie: event.netns_cookie.unwrap_or(0),
        };
        let info = self.netns(netns.inode);
        event.host_netns = self.is_host(netns.inode);
        event.netns_name = info.name;
        event.pod = info.pod;
        if event.outcome != Outcome::Aborted {
            event.peer = self.peer(netns, event.ifindex);
        }
        if event.outcome == Outcome::Failed {
            let started = event.started();
            event.duplicate_of = self.holders(event.addr, netns.inode, started);
        }
        if self.cri.is_some() && unnamed(&event) {
            self.held.push_back((Instant::now(), event));
        } else {
            self.ready.push(event);
        }
    }

    fn ready(&mut self, all: bool) -> Vec<AddressEvent> {
        self.release_held(all);
        std::mem::take(&mut self.ready)
    }

    fn name_late(&mut self, events: &mut [AddressEvent]) {
        for event in events.iter_mut().filter(|event| unnamed(event)) {
            if let Some(identity) = self.sandbox(event.netns_inode) {
                merge_identity(&mut event.pod, identity);
            }
        }
    }

    fn addresses(&mut self, netns: NetnsId) -> Option<Vec<Inet6Row>> {
        let handle = self.netns(netns.inode).handle?;
        match std::fs::metadata(&handle) {
            Ok(meta) if meta.ino() as u32 == netns.inode => {}
            _ => {
                self.book.closed(netns.inode);
                return None;
            }
        }
        addresses_in(&handle)
            .inspect_err(|e| log::debug!("address check in netns {}: {e:#}", netns.inode))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_proc_resolves_named_and_kubepods_namespaces() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = root.path().join("proc");
        let netns_dir = root.path().join("netns");
        std::fs::create_dir_all(proc_root.join("self/ns")).expect("mkdir");
        std::fs::create_dir_all(&netns_dir).expect("mkdir");
        // Host namespace: a regular file stands in for the nsfs inode.
        std::fs::write(proc_root.join("self/ns/net"), "").expect("write");
        let named = netns_dir.join("cni-1234");
        std::fs::write(&named, "").expect("write");
        let named_inode = std::fs::metadata(&named).expect("stat").ino() as u32;

        let pod_dir = proc_root.join("4242");
        std::fs::create_dir_all(pod_dir.join("ns")).expect("mkdir");
        std::os::unix::fs::symlink("net:[777]", pod_dir.join("ns/net")).expect("symlink");
        std::fs::write(pod_dir.join("comm"), "pause\n").expect("write");
        std::fs::write(
            pod_dir.join("cgroup"),
            "0::/kubepods/besteffort/pod3f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8/x\n",
        )
        .expect("write");

        let mut enricher = Enricher::new(&proc_root, &netns_dir).expect("enricher");
        assert_eq!(enricher.netns(named_inode).name.as_deref(), Some("cni-1234"));
        let pod = enricher.netns(777).pod.expect("pod found via /proc");
        assert_eq!(pod.uid.as_deref(), Some("3f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"));
        assert_eq!((pod.pid, pod.comm.as_deref()), (Some(4242), Some("pause")));
        assert_eq!(enricher.netns(778), NetnsInfo::default());
    }
}
