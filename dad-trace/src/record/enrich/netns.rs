//! What is known about each network namespace dad-trace has seen: its name under
//! /run/netns, the pod its processes belong to, and a path that opens it while it lives.
use std::{
    collections::HashMap,
    ffi::OsString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::proc;
use crate::session::Pod;

/// How often a cache miss may trigger a full scan of /proc or of the names.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// What is known about one network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsInfo {
    pub name: Option<String>,
    pub pod: Option<Pod>,
    /// A path that opens this namespace (for setns), while it lives.
    pub handle: Option<PathBuf>,
}

/// Namespaces by inode, resolved on a miss; scans are rate-limited.
pub struct NetnsBook {
    proc_root: PathBuf,
    netns_dir: PathBuf,
    host_inode: u32,
    known: HashMap<u32, NetnsInfo>,
    /// Names under `netns_dir` already looked at, and their inodes: a node with a thousand
    /// pods must not stat a thousand files for each new namespace.
    named: HashMap<OsString, u32>,
    last_full_name_scan: Option<Instant>,
    last_proc_scan: Option<Instant>,
}

impl NetnsBook {
    #[must_use]
    pub fn new(proc_root: &Path, netns_dir: &Path, host_inode: u32) -> Self {
        Self {
            proc_root: proc_root.into(),
            netns_dir: netns_dir.into(),
            host_inode,
            known: HashMap::new(),
            named: HashMap::new(),
            last_full_name_scan: None,
            last_proc_scan: None,
        }
    }

    #[must_use]
    pub fn is_known(&self, inode: u32) -> bool {
        self.known.contains_key(&inode)
    }

    /// Everything known about a namespace other than the host's, resolving it on a miss.
    pub fn lookup(&mut self, inode: u32) -> NetnsInfo {
        let unknown = |me: &Self| me.known.get(&inode).is_none_or(|info| info.handle.is_none());
        if unknown(self) {
            self.scan_names(false);
        }
        // A name reused for a new namespace keeps its old inode until looked at again.
        if unknown(self) && self.last_full_name_scan.is_none_or(|at| at.elapsed() >= SCAN_INTERVAL) {
            self.scan_names(true);
        }
        let scan_due = self.last_proc_scan.is_none_or(|at| at.elapsed() >= SCAN_INTERVAL);
        if scan_due
            && !self
                .known
                .get(&inode)
                .is_some_and(|info| info.pod.is_some() || info.name.is_some())
        {
            self.scan_processes();
        }
        self.known.get(&inode).cloned().unwrap_or_default()
    }

    /// Every namespace with a path that opens it, after looking for new ones.
    pub fn openable(&mut self) -> Vec<(u32, PathBuf)> {
        self.scan_names(false);
        self.scan_processes();
        self.known
            .iter()
            .filter_map(|(inode, info)| Some((*inode, info.handle.clone()?)))
            .collect()
    }

    /// The namespace is gone: it cannot be entered any more, but keeps the names it had.
    pub fn closed(&mut self, inode: u32) {
        if let Some(info) = self.known.get_mut(&inode) {
            info.handle = None;
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
                let info = self.known.entry(inode).or_default();
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
        for process in proc::processes_outside(&self.proc_root, self.host_inode) {
            let info = self.known.entry(process.netns_inode).or_default();
            if info.handle.is_none() {
                info.handle = Some(process.handle);
            }
            if info.pod.as_ref().is_some_and(|pod| pod.uid.is_some()) {
                continue;
            }
            info.pod = Some(proc::pod_of(&self.proc_root, process.pid));
        }
    }
}
