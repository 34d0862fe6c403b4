//! Ties kernel events to what a person knows: namespace names, pods, veth peers.
//! Resolution is cached; a /proc scan happens only on a cache miss, at most once a second.
use std::{
    collections::HashMap,
    fs::File,
    net::Ipv6Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};

use crate::{
    cri::{Identities, SandboxIdentity},
    events::NetnsId,
    session::{Holder, Peer, Pod},
};

/// How often a cache miss may trigger a full /proc scan.
const PROC_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// What is known about one network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsInfo {
    pub name: Option<String>,
    pub pod: Option<Pod>,
    /// A path that opens this namespace (for setns), while it lives.
    pub handle: Option<PathBuf>,
}

/// Whether an address still sits in its namespace, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Tentative,
    Settled,
    Gone,
}

pub struct Enricher {
    proc_root: PathBuf,
    netns_dir: PathBuf,
    host_inode: u32,
    cache: HashMap<u32, NetnsInfo>,
    peers: HashMap<(NetnsId, i32), Option<Peer>>,
    last_proc_scan: Option<Instant>,
    /// Names under `netns_dir` already looked at, and their inodes: a node with a thousand
    /// pods must not stat a thousand files for each new namespace.
    named: HashMap<std::ffi::OsString, u32>,
    last_full_name_scan: Option<Instant>,
    cri: Option<Identities>,
}

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

/// The inode in a `/proc/PID/ns/net` link target such as `net:[4026531840]`.
#[must_use]
pub fn parse_ns_link(target: &str) -> Option<u32> {
    target.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Pod UID and container id from a process's /proc/PID/cgroup, for kubelet's systemd
/// (`kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<id>.scope`) and cgroupfs
/// (`/kubepods/besteffort/pod<uid>/<id>`) layouts.
#[must_use]
pub fn parse_kubepods_cgroup(text: &str) -> Option<(String, Option<String>)> {
    let path = text
        .lines()
        .find(|line| line.contains("kubepods"))?
        .splitn(3, ':')
        .nth(2)?;
    let mut uid = None;
    let mut container = None;
    for segment in path.split('/') {
        let stem = segment
            .strip_suffix(".slice")
            .or_else(|| segment.strip_suffix(".scope"))
            .unwrap_or(segment);
        if let Some(index) = stem.rfind("pod") {
            let candidate = stem[index + 3..].replace('_', "-");
            if candidate.len() == 36 && candidate.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                uid = Some(candidate);
                continue;
            }
        }
        let id = stem.rsplit('-').next().unwrap_or(stem);
        if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
            container = Some(id.to_string());
        }
    }
    Some((uid?, container))
}

/// One row of `/proc/net/if_inet6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inet6Row {
    pub addr: Ipv6Addr,
    pub ifindex: u32,
    pub flags: u32,
    pub ifname: String,
}

#[must_use]
pub fn parse_if_inet6(text: &str) -> Vec<Inet6Row> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = u128::from_str_radix(fields.next()?, 16).ok()?;
            let ifindex = u32::from_str_radix(fields.next()?, 16).ok()?;
            let _prefix = fields.next()?;
            let _scope = fields.next()?;
            let flags = u32::from_str_radix(fields.next()?, 16).ok()?;
            let ifname = fields.next()?.to_string();
            Some(Inet6Row {
                addr: Ipv6Addr::from(addr),
                ifindex,
                flags,
                ifname,
            })
        })
        .collect()
}

/// The addresses of the namespace at `handle`.
fn addresses_in(handle: &Path) -> anyhow::Result<Vec<Inet6Row>> {
    in_netns(handle, || {
        Ok(parse_if_inet6(&std::fs::read_to_string(
            "/proc/thread-self/net/if_inet6",
        )?))
    })
}

/// Runs `job` on a fresh thread that has joined the namespace at `handle`; the thread ends
/// with the job, so no other code ever runs in the wrong namespace.
pub fn in_netns<T: Send + 'static>(
    handle: &Path,
    job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let file = File::open(handle).with_context(|| format!("open {}", handle.display()))?;
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        job()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace worker panicked"))?
}

/// The veth peer index of `ifindex` in the calling thread's namespace, if it is a veth.
fn veth_peer_here(ifindex: u32) -> anyhow::Result<Option<(u32, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(async move {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let mut links = handle.link().get().match_index(ifindex).execute();
        let Some(link) = links.try_next().await? else {
            return Ok(None);
        };
        let mut peer = None;
        let mut veth = false;
        let mut name = String::new();
        for attribute in link.attributes {
            match attribute {
                LinkAttribute::Link(index) => peer = Some(index),
                LinkAttribute::IfName(ifname) => name = ifname,
                LinkAttribute::LinkInfo(infos) => {
                    veth = infos.iter().any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        Ok(peer.filter(|_| veth).map(|peer| (peer, name)))
    })
}

impl Enricher {
    pub fn new(proc_root: &Path, netns_dir: &Path) -> anyhow::Result<Self> {
        let host = proc_root.join("self/ns/net");
        let host_inode = std::fs::metadata(&host)
            .with_context(|| format!("stat {} (dad-trace needs the host's /proc)", host.display()))?
            .ino() as u32;
        Ok(Self {
            proc_root: proc_root.into(),
            netns_dir: netns_dir.into(),
            host_inode,
            cache: HashMap::new(),
            peers: HashMap::new(),
            last_proc_scan: None,
            named: HashMap::new(),
            last_full_name_scan: None,
            cri: None,
        })
    }

    /// Names pods through the container runtime too (see [`crate::cri`]).
    #[must_use]
    pub fn with_cri(mut self, identities: Identities) -> Self {
        self.cri = Some(identities);
        self
    }

    /// The runtime's identity for a pod namespace; asks for a refresh when it has none yet.
    #[must_use]
    pub fn sandbox(&self, inode: u32) -> Option<SandboxIdentity> {
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

    /// Whether pods are named through the runtime.
    #[must_use]
    pub fn uses_cri(&self) -> bool {
        self.cri.is_some()
    }

    #[must_use]
    pub fn is_host(&self, inode: u32) -> bool {
        inode == self.host_inode
    }

    /// Everything known about a namespace, resolving it on a miss.
    pub fn netns(&mut self, inode: u32) -> NetnsInfo {
        if inode == self.host_inode {
            return NetnsInfo {
                handle: Some(self.proc_root.join("self/ns/net")),
                ..NetnsInfo::default()
            };
        }
        let unknown = |me: &Self| me.cache.get(&inode).is_none_or(|info| info.handle.is_none());
        if unknown(self) {
            self.scan_names(false);
        }
        // A name reused for a new namespace keeps its old inode until looked at again.
        if unknown(self)
            && self
                .last_full_name_scan
                .is_none_or(|at| at.elapsed() >= PROC_SCAN_INTERVAL)
        {
            self.scan_names(true);
        }
        let scan_due = self.last_proc_scan.is_none_or(|at| at.elapsed() >= PROC_SCAN_INTERVAL);
        if scan_due
            && !self
                .cache
                .get(&inode)
                .is_some_and(|info| info.pod.is_some() || info.name.is_some())
        {
            self.scan_processes();
        }
        let mut info = self.cache.get(&inode).cloned().unwrap_or_default();
        if let Some(identity) = self.sandbox(inode) {
            merge_identity(&mut info.pod, identity);
        }
        info
    }

    /// Resolves a namespace the first time it is seen, while it still exists: its addresses
    /// may only finish once it is gone (deleted mid-DAD), and then it keeps these names.
    pub fn note(&mut self, inode: u32) {
        if !self.is_host(inode) && !self.cache.contains_key(&inode) {
            self.netns(inode);
        }
    }

    /// Named namespaces under /run/netns (what `ip netns` and containerd's `cni-*` use): new
    /// names only, or every name when `full`.
    fn scan_names(&mut self, full: bool) {
        let Ok(entries) = std::fs::read_dir(&self.netns_dir) else {
            return;
        };
        if full {
            self.last_full_name_scan = Some(Instant::now());
        }
        let mut present = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let (false, Some(&inode)) = (full, self.named.get(&name)) {
                present.insert(name, inode);
                continue;
            }
            let path = entry.path();
            if let Ok(meta) = std::fs::metadata(&path) {
                let inode = meta.ino() as u32;
                let info = self.cache.entry(inode).or_default();
                info.name = Some(name.to_string_lossy().into_owned());
                info.handle = Some(path);
                present.insert(name, inode);
            }
        }
        self.named = present;
    }

    /// Processes and their cgroups: the pod sandbox (pause) process lives in the pod's netns.
    fn scan_processes(&mut self) {
        self.last_proc_scan = Some(Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let dir = entry.path();
            let Some(inode) = std::fs::read_link(dir.join("ns/net"))
                .ok()
                .and_then(|target| parse_ns_link(&target.to_string_lossy()))
            else {
                continue;
            };
            if inode == self.host_inode {
                continue;
            }
            let info = self.cache.entry(inode).or_default();
            if info.handle.is_none() {
                info.handle = Some(dir.join("ns/net"));
            }
            if info.pod.as_ref().is_some_and(|pod| pod.uid.is_some()) {
                continue;
            }
            let kube = std::fs::read_to_string(dir.join("cgroup"))
                .ok()
                .and_then(|text| parse_kubepods_cgroup(&text));
            let comm = std::fs::read_to_string(dir.join("comm"))
                .ok()
                .map(|comm| comm.trim().to_string());
            let (uid, container_id) = kube.map_or((None, None), |(uid, id)| (Some(uid), id));
            info.pod = Some(Pod {
                uid,
                container_id,
                pid: Some(pid),
                comm,
                ..Pod::default()
            });
        }
    }

    /// The veth peer of an interface: for a pod's interface, the host-side veth.
    pub fn peer(&mut self, netns: NetnsId, ifindex: i32) -> Option<Peer> {
        if let Some(known) = self.peers.get(&(netns, ifindex)) {
            return known.clone();
        }
        let info = self.netns(netns.inode);
        let index = u32::try_from(ifindex).ok()?;
        let peer = info
            .handle
            .and_then(|handle| match in_netns(&handle, move || veth_peer_here(index)) {
                Ok(found) => found.map(|(peer_index, _)| peer_index),
                Err(e) => {
                    log::debug!("veth peer of {ifindex} in netns {}: {e:#}", netns.inode);
                    None
                }
            })?;
        // A pod's peer normally lives in the host namespace; confirm it points back at us.
        let host = self.proc_root.join("self/ns/net");
        let ifname = if self.is_host(netns.inode) {
            None
        } else {
            in_netns(&host, move || veth_peer_here(peer))
                .ok()
                .flatten()
                .filter(|(back, _)| *back == index)
                .map(|(_, name)| name)
        };
        let found = Some(Peer { ifindex: peer, ifname });
        self.peers.insert((netns, ifindex), found.clone());
        found
    }

    /// Who else on this node holds `addr` (settled, not itself a failed copy): the other side
    /// of a DAD failure, when it is here. Every namespace dad-trace knows is looked in.
    pub fn holders(&mut self, addr: Ipv6Addr, except_inode: u32) -> Vec<Holder> {
        self.scan_names(false);
        self.scan_processes();
        let mut namespaces: Vec<(u32, PathBuf)> = self
            .cache
            .iter()
            .filter_map(|(inode, info)| Some((*inode, info.handle.clone()?)))
            .collect();
        namespaces.push((self.host_inode, self.proc_root.join("self/ns/net")));
        let mut holders = Vec::new();
        for (inode, handle) in namespaces {
            if inode == except_inode {
                continue;
            }
            let Ok(rows) = addresses_in(&handle) else {
                continue;
            };
            for row in rows {
                if row.addr == addr && row.flags & dad_trace_common::IFA_F_DADFAILED == 0 {
                    let info = self.netns(inode);
                    let name = if self.is_host(inode) {
                        "host".to_string()
                    } else {
                        info.pod
                            .as_ref()
                            .and_then(|pod| Some(format!("{}/{}", pod.namespace.as_ref()?, pod.name.as_ref()?)))
                            .or(info.name)
                            .unwrap_or_else(|| format!("netns:{inode}"))
                    };
                    holders.push(Holder {
                        netns_inode: inode,
                        name,
                        ifname: row.ifname,
                    });
                }
            }
        }
        holders
    }

    /// The addresses in a namespace now, `None` when it is gone (for backends that cannot see
    /// a cancelled DAD: an in-flight address missing here was removed).
    pub fn addresses(&mut self, netns: NetnsId) -> Option<Vec<Inet6Row>> {
        let info = self.netns(netns.inode);
        let handle = info.handle?;
        match std::fs::metadata(&handle) {
            Ok(meta) if meta.ino() as u32 == netns.inode => {}
            _ => {
                // Gone: it cannot be entered any more, but keeps the names it had.
                if let Some(info) = self.cache.get_mut(&netns.inode) {
                    info.handle = None;
                }
                return None;
            }
        }
        addresses_in(&handle)
            .inspect_err(|e| log::debug!("address check in netns {}: {e:#}", netns.inode))
            .ok()
    }
}

/// Whether an address is in `rows` (a namespace's addresses; `None`: the namespace is gone).
#[must_use]
pub fn presence(rows: Option<&[Inet6Row]>, ifindex: i32, addr: Ipv6Addr) -> Presence {
    rows.into_iter()
        .flatten()
        .find(|row| row.addr == addr && i64::from(row.ifindex) == i64::from(ifindex))
        .map_or(Presence::Gone, |row| {
            if row.flags & dad_trace_common::IFA_F_TENTATIVE != 0 {
                Presence::Tentative
            } else {
                Presence::Settled
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_link() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
    }

    #[test]
    fn kubepods_systemd_and_cgroupfs() {
        let id = "a".repeat(64);
        let systemd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f1a2b3c_4d5e_6f70_8192_a3b4c5d6e7f8.slice/cri-containerd-{id}.scope\n"
        );
        assert_eq!(
            parse_kubepods_cgroup(&systemd),
            Some(("3f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8".into(), Some(id.clone())))
        );
        let cgroupfs = format!("12:memory:/kubepods/burstable/pod3f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8/{id}\n");
        assert_eq!(
            parse_kubepods_cgroup(&cgroupfs),
            Some(("3f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8".into(), Some(id)))
        );
        assert_eq!(parse_kubepods_cgroup("0::/user.slice/session-1.scope\n"), None);
    }

    #[test]
    fn if_inet6_rows() {
        let text = "fe80000000000000b0c1fffffe2a0b01 02 40 20 c0     eth0\n\
                    fd000dad000000000000000000000001 02 40 00 80     eth0\n";
        let rows = parse_if_inet6(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].addr, "fd00:dad::1".parse::<Ipv6Addr>().expect("address"));
        assert_eq!(
            (rows[1].ifindex, rows[1].flags, rows[1].ifname.as_str()),
            (2, 0x80, "eth0")
        );
        assert_eq!(
            rows[0].addr,
            "fe80::b0c1:ffff:fe2a:b01".parse::<Ipv6Addr>().expect("literal")
        );
        assert_eq!((rows[0].ifindex, rows[0].flags), (2, 0xc0));
    }

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
