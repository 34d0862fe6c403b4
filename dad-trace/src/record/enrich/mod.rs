//! Enrichment, with one owner: the [`Enricher`] turns what the kernel said about an address
//! (namespace inode and cookie, ifindex) into what a person knows (namespace name, pod, veth
//! peer, who holds a duplicate), holding an address back a little while its pod has no name
//! yet. At a pod namespace's first address it reads the namespace's own DAD settings
//! ([`settings`]: the one step that enters a namespace, once per pod, bounded in time).
//!
//! Sources, first that answers: the container runtime ([`cri`]), processes in the
//! namespace and their kubepods cgroup ([`proc`]), the name under /run/netns ([`netns`]).
//! Veth peers come from the host's links, followed through netlink ([`netlink`]): no lookup
//! enters a namespace, starts a thread or opens a socket.
use std::{
    collections::VecDeque,
    net::Ipv6Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use self::{
    cri::Identities,
    holders::HolderIndex,
    namespaces::{NetnsBook, NetnsInfo},
    netlink::{HostLinks, Requests},
};
use super::{
    identity::{SandboxIdentity, merge_identity},
    recorder::{Enrich, Whose},
};
use crate::{
    kernel::{events::NetnsId, procs::Exec},
    node::netns::{Inet6Row, addresses_in},
    session::{AddressEvent, Outcome, Peer, PodSettings},
};

pub mod call_netns;
pub mod cri;
pub mod cri_starts;
pub mod holders;
pub mod namespaces;
pub mod netlink;
pub mod proc;
pub mod settings;

pub struct Enricher {
    proc_root: PathBuf,
    /// The host's namespace, as this process sees it.
    host_handle: PathBuf,
    host_inode: u32,
    book: NetnsBook,
    requests: Requests,
    links: HostLinks,
    cri: Option<Identities>,
    /// Finished addresses of pods the runtime has not named yet, since when.
    held: VecDeque<(Instant, AddressEvent)>,
    /// Finished addresses ready for the sinks.
    ready: Vec<AddressEvent>,
    resolve_wait: Duration,
    holders: Option<HolderIndex>,
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
        let mut requests = Requests::open().context("route netlink (veth peers)")?;
        let links = HostLinks::follow(&mut requests).context("follow the host's links")?;
        Ok(Self {
            proc_root: proc_root.into(),
            book: NetnsBook::new(proc_root, netns_dir, host_inode),
            host_handle,
            host_inode,
            requests,
            links,
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

    /// The runtime's identity for a pod namespace first seen at `first_seen`; asks for a
    /// refresh when it has none yet.
    fn sandbox(&self, inode: u32, first_seen: Instant) -> Option<SandboxIdentity> {
        let cri = self.cri.as_ref()?;
        if self.is_host(inode) {
            return None;
        }
        let found = cri.get(inode, first_seen);
        if found.is_none() {
            cri.refresh_soon();
        }
        found
    }

    /// Everything known about a namespace, resolving it on a miss.
    fn netns(&mut self, inode: u32) -> NetnsInfo {
        let mut info = self.book.lookup(inode);
        if self.is_host(inode) {
            info.handle = Some(self.host_handle.clone());
            return info;
        }
        if let Some(identity) = self.sandbox(inode, info.first_seen) {
            // The runtime's path opens a namespace kept outside /run/netns, or whose pause
            // process the scans have not met yet.
            if info.handle.is_none() {
                info.handle = identity.netns_path.clone().filter(|path| path.exists());
            }
            merge_identity(&mut info.pod, identity);
        }
        info
    }

    /// The label of a namespace, as its addresses are labelled.
    fn label(&mut self, inode: u32) -> String {
        let info = self.netns(inode);
        AddressEvent::label_of(self.is_host(inode), info.pod.as_ref(), info.name.as_deref(), inode)
    }

    /// The id the host gives a pod namespace, asked once while the namespace can be opened.
    fn nsid(&mut self, inode: u32) -> Option<i32> {
        let info = self.netns(inode);
        if info.nsid.is_some() {
            return info.nsid;
        }
        let asked = self
            .requests
            .nsid(info.handle.as_deref()?)
            .inspect_err(|e| log::debug!("nsid of netns {inode}: {e:#}"));
        let Ok(Some(nsid)) = asked else {
            self.book.nsid_refused(inode);
            return None;
        };
        self.book.set_nsid(inode, nsid);
        Some(nsid)
    }

    /// The namespace the host calls `nsid`, among those seen: a host-side veth may finish
    /// before any address of its pod did (held for a name), so ids not asked yet are asked.
    fn inode_of_nsid(&mut self, nsid: i32) -> Option<u32> {
        if let Some((inode, _)) = self.book.by_nsid(nsid) {
            return Some(inode);
        }
        let unasked: Vec<u32> = self
            .book
            .without_nsid()
            .into_iter()
            .filter(|inode| !self.is_host(*inode))
            .collect();
        unasked.into_iter().find(|inode| self.nsid(*inode) == Some(nsid))
    }

    /// The other end of a veth: for a pod's interface, the host-side veth (by name); for a
    /// host-side veth, the pod it serves.
    fn peer(&mut self, netns: NetnsId, ifindex: i32) -> Option<Peer> {
        let index = u32::try_from(ifindex).ok()?;
        if let Err(e) = self.links.catch_up(&mut self.requests) {
            log::debug!("host links: {e:#}");
        }
        if self.is_host(netns.inode) {
            let link = self.links.get(index)?.clone();
            let peer = link.veth_peer?;
            let pod = link
                .peer_nsid
                .and_then(|nsid| self.inode_of_nsid(nsid))
                .map(|inode| self.label(inode));
            return Some(Peer {
                ifindex: peer,
                ifname: None,
                pod,
            });
        }
        let Some(nsid) = self.nsid(netns.inode) else {
            log::debug!("netns {} has no id in the host: no veth peer there", netns.inode);
            return None;
        };
        if self.links.peer_of(nsid, index).is_none() && self.links.reread(&mut self.requests).unwrap_or(false) {
            log::debug!("read the host's links again for the peer of {index} in nsid {nsid}");
        }
        let Some((host_index, link)) = self.links.peer_of(nsid, index) else {
            log::debug!("no host link is the peer of {index} in nsid {nsid}");
            return None;
        };
        Some(Peer {
            ifindex: host_index,
            ifname: Some(link.name.clone()),
            pod: None,
        })
    }

    /// Who else on this node holds `addr`: the other side of a DAD failure that began at
    /// `started`, when it is here.
    fn holders(
        &mut self,
        addr: Ipv6Addr,
        except_inode: u32,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Vec<crate::session::Holder> {
        if !self.holders.as_ref().is_some_and(|index| index.answers(started)) {
            let mut namespaces = self.book.openable();
            namespaces.push((self.host_inode, self.host_handle.clone()));
            let index = HolderIndex::look(namespaces, |inode| self.label(inode));
            self.holders = Some(index);
        }
        self.holders
            .as_ref()
            .map(|index| index.of(addr, except_inode))
            .unwrap_or_default()
    }

    /// Gives held addresses the names the runtime knows by now; past `resolve_wait` (or at
    /// the end, `all`) they go on unnamed.
    fn release_held(&mut self, all: bool) {
        let mut waiting = VecDeque::new();
        while let Some((since, mut event)) = self.held.pop_front() {
            let first_seen = self.book.lookup(event.netns_inode).first_seen;
            if let Some(identity) = self.sandbox(event.netns_inode, first_seen) {
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

    /// Resolves a namespace seen now, while it surely lives.
    fn resolve(&mut self, netns: NetnsId) {
        self.book.touch(netns);
        if !self.is_host(netns.inode) && !self.book.is_resolved(netns.inode) {
            self.netns(netns.inode);
            // Asked now, while the namespace surely lives: its host-side veth needs it.
            self.nsid(netns.inode);
        }
    }
}

impl Enrich for Enricher {
    /// Reads a pod namespace's settings at its first address, not at its CNI call: by then
    /// the plugin has made the interface the address is on.
    fn note(&mut self, netns: NetnsId) -> Option<PodSettings> {
        self.resolve(netns);
        if self.is_host(netns.inode) || !self.book.settings_due(netns.inode) {
            return None;
        }
        let handle = self.netns(netns.inode).handle;
        Some(settings::read(handle.as_deref(), netns.inode, settings::READ_WAIT))
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
            let first_seen = self.book.lookup(event.netns_inode).first_seen;
            if let Some(identity) = self.sandbox(event.netns_inode, first_seen) {
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

    fn call_netns(&mut self, exec: &Exec) -> Option<u32> {
        let path = exec.env.netns.as_deref()?;
        let inode = call_netns::resolve_netns(&self.proc_root, path, &[exec.tgid, exec.ppid], self.book.nsfs_device())?;
        if !self.is_host(inode) {
            // Resolved now, while the plugin sets it up: its name outlives a quick pod.
            self.resolve(NetnsId { inode, cookie: 0 });
        }
        Some(inode)
    }

    fn sandbox_of(&mut self, inode: Option<u32>, sandbox_id: Option<&str>) -> Option<SandboxIdentity> {
        let cri = self.cri.as_ref()?;
        let by_inode = inode
            .filter(|inode| !self.is_host(*inode))
            .and_then(|inode| cri.get(inode, self.book.lookup(inode).first_seen));
        by_inode.or_else(|| cri.by_sandbox_id(sandbox_id?))
    }

    fn host_inode(&self) -> u32 {
        self.host_inode
    }

    fn held_netns(&self) -> Vec<u32> {
        self.held.iter().map(|(_, event)| event.netns_inode).collect()
    }

    fn tick(&mut self) {
        self.book.forget_unused(Instant::now());
        log::trace!("{} namespaces remembered", self.book.remembered());
    }

    fn whose(&mut self, netns_inode: u32, pid: Option<u32>) -> Whose {
        let info = self.netns(netns_inode);
        // Read while the process may still live; gone, it names no container.
        let container_id = pid.and_then(|pid| proc::pod_of(&self.proc_root, pid).container_id);
        Whose {
            host_netns: self.is_host(netns_inode),
            netns_name: info.name,
            pod: info.pod,
            container_id,
        }
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

        let mut book = NetnsBook::new(&proc_root, &netns_dir, 1);
        for inode in [named_inode, 777, 778] {
            book.touch(NetnsId { inode, cookie: 0 });
        }
        assert_eq!(book.lookup(named_inode).name.as_deref(), Some("cni-1234"));
        let pod = book.lookup(777).pod.expect("pod found via /proc");
        assert_eq!(pod.uid.as_deref(), Some("3f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"));
        assert_eq!((pod.pid, pod.comm.as_deref()), (Some(4242), Some("pause")));
        let unknown = book.lookup(778);
        assert_eq!((unknown.name, unknown.pod, unknown.handle), (None, None, None));
    }
}
