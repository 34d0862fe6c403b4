//! What is known about each network namespace dad-trace has seen: its name under
//! /run/netns, the pod its processes belong to, a path that opens it while it lives, and the
//! id the host gives it. Entries are keyed by inode but carry the kernel's cookie (inodes are
//! reused once a namespace dies; a new cookie under an old inode starts a new entry), and are
//! forgotten [`FORGET_AFTER`] after their last use, so a long-running agent holds only the
//! namespaces of recent pods.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::proc;
use crate::{kernel::events::NetnsId, session::Pod};

/// How often a cache miss may trigger a full scan of /proc or of the names.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// An entry unused this long is forgotten. Addresses of a namespace keep using it while
/// tentative; a minute after the last one finished nothing needs its names any more (and a
/// namespace that comes back to life is resolved again).
pub const FORGET_AFTER: Duration = Duration::from_mins(1);

/// What is known about one network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsInfo {
    pub name: Option<String>,
    pub pod: Option<Pod>,
    /// A path that opens this namespace (for setns), while it lives.
    pub handle: Option<PathBuf>,
    /// The kernel's cookie, once an event carried it (0: not known).
    pub cookie: u64,
    /// The id the host gives this namespace (`ip netns list-id`), once asked.
    pub nsid: Option<i32>,
    /// Asked for its id and the host had none: not asked again on behalf of other
    /// namespaces' veths (each host-side veth of an unknown peer would ask them all).
    nsid_refused: bool,
    /// Its DAD settings were read (or tried).
    settings_read: bool,
    /// When dad-trace first saw it.
    pub first_seen: Instant,
    last_used: Instant,
}

impl NetnsInfo {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            name: None,
            pod: None,
            handle: None,
            cookie: 0,
            nsid: None,
            nsid_refused: false,
            settings_read: false,
            first_seen: now,
            last_used: now,
        }
    }
}

/// Names of namespace files and their inodes, looked up either way.
#[derive(Default)]
struct Names {
    inodes: HashMap<OsString, u32>,
    /// The last name given to each inode.
    names: HashMap<u32, OsString>,
}

impl Names {
    fn insert(&mut self, name: OsString, inode: u32) {
        self.remove(&name);
        self.names.insert(inode, name.clone());
        self.inodes.insert(name, inode);
    }

    fn remove(&mut self, name: &std::ffi::OsStr) {
        if let Some(inode) = self.inodes.remove(name)
            && self.names.get(&inode).is_some_and(|last| last == name)
        {
            self.names.remove(&inode);
        }
    }

    fn get(&self, name: &std::ffi::OsStr) -> Option<u32> {
        self.inodes.get(name).copied()
    }

    fn name_of(&self, inode: u32) -> Option<&OsString> {
        self.names.get(&inode)
    }
}

/// Namespaces by inode, resolved on a miss; scans are rate-limited.
pub struct NetnsBook {
    proc_root: PathBuf,
    netns_dir: PathBuf,
    host_inode: u32,
    /// The device of namespace files (nsfs): a name whose file is on another device is not
    /// bind-mounted yet (`ip netns add` creates the file, then mounts over it).
    nsfs_device: Option<u64>,
    known: HashMap<u32, NetnsInfo>,
    /// Names under `netns_dir` already looked at, and their inodes: a node with a thousand
    /// pods must not stat a thousand files, or go through a thousand names, for each new
    /// namespace.
    named: Names,
    /// Names created but not bind-mounted yet when last looked at.
    unmounted: HashSet<OsString>,
    /// Told when names come and go, so a new namespace costs no listing of the directory
    /// (one listing per new pod made enrichment quadratic in the pods present).
    watch: Option<Inotify>,
    /// Directory listings made so far.
    listings: u64,
    last_full_name_scan: Option<Instant>,
    last_proc_scan: Option<Instant>,
}

impl NetnsBook {
    #[must_use]
    pub fn new(proc_root: &Path, netns_dir: &Path, host_inode: u32) -> Self {
        Self {
            nsfs_device: std::fs::metadata(proc_root.join("self/ns/net"))
                .ok()
                .map(|meta| meta.dev()),
            proc_root: proc_root.into(),
            netns_dir: netns_dir.into(),
            host_inode,
            known: HashMap::new(),
            named: Names::default(),
            unmounted: HashSet::new(),
            watch: None,
            listings: 0,
            last_full_name_scan: None,
            last_proc_scan: None,
        }
    }

    /// Notes an event of namespace `netns`: a cookie other than the one on record means
    /// the inode now names another namespace, and the old entry goes.
    pub fn touch(&mut self, netns: NetnsId) {
        if let Some(info) = self.known.get_mut(&netns.inode) {
            if netns.cookie != 0 && info.cookie != 0 && info.cookie != netns.cookie {
                log::debug!("netns inode {} reused: a new namespace", netns.inode);
                self.known.remove(&netns.inode);
            } else {
                info.last_used = Instant::now();
                if info.cookie == 0 {
                    info.cookie = netns.cookie;
                }
                return;
            }
        }
        let mut info = NetnsInfo::new();
        info.cookie = netns.cookie;
        self.known.insert(netns.inode, info);
    }

    #[must_use]
    pub fn nsfs_device(&self) -> Option<u64> {
        self.nsfs_device
    }

    #[must_use]
    pub fn is_resolved(&self, inode: u32) -> bool {
        self.known
            .get(&inode)
            .is_some_and(|info| info.handle.is_some() || info.name.is_some() || info.pod.is_some())
    }

    /// Everything known about a namespace, resolving one other than the host's on a miss.
    pub fn lookup(&mut self, inode: u32) -> NetnsInfo {
        // The entry first: the scans fill only entries that exist.
        let info = self.known.entry(inode).or_insert_with(NetnsInfo::new);
        if inode == self.host_inode {
            // Nothing to find: the host has no name or pod, and scanning for it on every
            // host-side address cost more than all the rest of enrichment.
            info.last_used = Instant::now();
            return info.clone();
        }
        let unknown = |me: &Self| me.known.get(&inode).is_none_or(|info| info.handle.is_none());
        if unknown(self) {
            self.scan_names(false, inode);
        }
        // A name reused for a new namespace keeps its old inode until looked at again.
        if unknown(self) && self.last_full_name_scan.is_none_or(|at| at.elapsed() >= SCAN_INTERVAL) {
            self.scan_names(true, inode);
        }
        let scan_due = self.last_proc_scan.is_none_or(|at| at.elapsed() >= SCAN_INTERVAL);
        if scan_due && !self.is_resolved(inode) {
            self.scan_processes();
        }
        let info = self.known.entry(inode).or_insert_with(NetnsInfo::new);
        info.last_used = Instant::now();
        info.clone()
    }

    /// Records the id the host gives a namespace.
    pub fn set_nsid(&mut self, inode: u32, nsid: i32) {
        if let Some(info) = self.known.get_mut(&inode) {
            info.nsid = Some(nsid);
        }
    }

    /// The namespace the host calls `nsid`, among those known.
    #[must_use]
    pub fn by_nsid(&self, nsid: i32) -> Option<(u32, &NetnsInfo)> {
        self.known
            .iter()
            .find(|(_, info)| info.nsid == Some(nsid))
            .map(|(inode, info)| (*inode, info))
    }

    /// Whether the namespace's DAD settings are still to be read: true once per namespace
    /// remembered (one forgotten and seen again is read again).
    pub fn settings_due(&mut self, inode: u32) -> bool {
        self.known
            .get_mut(&inode)
            .is_some_and(|info| !std::mem::replace(&mut info.settings_read, true))
    }

    /// The host had no id for the namespace when asked.
    pub fn nsid_refused(&mut self, inode: u32) {
        if let Some(info) = self.known.get_mut(&inode) {
            info.nsid_refused = true;
        }
    }

    /// Remembered namespaces whose host id was not asked yet (those the host had none for
    /// are left out).
    #[must_use]
    pub fn without_nsid(&self) -> Vec<u32> {
        self.known
            .iter()
            .filter(|(_, info)| info.nsid.is_none() && !info.nsid_refused)
            .map(|(inode, _)| *inode)
            .collect()
    }

    /// Every namespace on the node with a path that opens it now (named, or where a process
    /// lives), whether or not dad-trace saw events of it; nothing is remembered.
    #[must_use]
    pub fn openable(&self) -> Vec<(u32, PathBuf)> {
        let mut found: HashMap<u32, PathBuf> = HashMap::new();
        for entry in std::fs::read_dir(&self.netns_dir).into_iter().flatten().flatten() {
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                found.entry(meta.ino() as u32).or_insert_with(|| entry.path());
            }
        }
        for process in proc::processes_outside(&self.proc_root, self.host_inode) {
            found.entry(process.netns_inode).or_insert(process.handle);
        }
        found.into_iter().collect()
    }

    /// The namespace is gone: it cannot be entered any more, but keeps the names it had.
    pub fn closed(&mut self, inode: u32) {
        if let Some(info) = self.known.get_mut(&inode) {
            info.handle = None;
            info.nsid = None;
        }
    }

    /// Forgets the entries unused for [`FORGET_AFTER`] (as of `now`).
    pub fn forget_unused(&mut self, now: Instant) {
        self.known
            .retain(|_, info| now.saturating_duration_since(info.last_used) < FORGET_AFTER);
    }

    /// How many namespaces are remembered.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.known.len()
    }

    /// How many times the names directory was listed.
    #[must_use]
    pub fn listings(&self) -> u64 {
        self.listings
    }

    /// Named namespaces under /run/netns (what `ip netns` and containerd's `cni-*` use): the
    /// names that changed since last time (told by inotify), or a listing of every name when
    /// `full` or when the directory cannot be watched; then the name of `inode`, if it has one.
    fn scan_names(&mut self, full: bool, inode: u32) {
        if full || !self.read_name_changes() {
            self.list_names(full);
        }
        let mut mounted = Vec::new();
        for name in &self.unmounted {
            if let Some(inode) = self.nsfs_inode(&self.netns_dir.join(name)) {
                mounted.push((name.clone(), inode));
            }
        }
        for (name, inode) in mounted {
            self.unmounted.remove(&name);
            self.named.insert(name, inode);
        }
        // Only namespaces dad-trace has seen events of are remembered: a node with
        // thousands of idle pods is not copied into memory.
        if let (Some(name), Some(info)) = (self.named.name_of(inode), self.known.get_mut(&inode))
            && info.handle.is_none()
        {
            info.name = Some(name.to_string_lossy().into_owned());
            info.handle = Some(self.netns_dir.join(name));
        }
    }

    /// The inode of a namespace file, if it is one (bind-mounted nsfs).
    fn nsfs_inode(&self, path: &Path) -> Option<u32> {
        match std::fs::metadata(path) {
            Ok(meta) if self.nsfs_device.is_none_or(|nsfs| nsfs == meta.dev()) => Some(meta.ino() as u32),
            // Not mounted yet (or gone): looked at again next time.
            _ => None,
        }
    }

    /// Applies what inotify told since last time; false when it cannot tell (no watch yet,
    /// or events were lost), and a listing is needed. A listing made with a new watch in
    /// place misses nothing after it.
    fn read_name_changes(&mut self) -> bool {
        let Some(watch) = &self.watch else {
            self.watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .and_then(|watch| {
                    let changes = AddWatchFlags::IN_CREATE
                        | AddWatchFlags::IN_MOVED_TO
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_MOVED_FROM
                        | AddWatchFlags::IN_ONLYDIR;
                    watch.add_watch(&self.netns_dir, changes).map(|_| watch)
                })
                .ok();
            return false;
        };
        let mut intact = true;
        // Non-blocking: EAGAIN once nothing is left.
        while let Ok(events) = watch.read_events() {
            for event in events {
                if event
                    .mask
                    .intersects(AddWatchFlags::IN_Q_OVERFLOW | AddWatchFlags::IN_IGNORED)
                {
                    intact = false;
                    continue;
                }
                let Some(name) = event.name else { continue };
                if event
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                {
                    self.named.remove(&name);
                    self.unmounted.insert(name);
                } else {
                    self.named.remove(&name);
                    self.unmounted.remove(&name);
                }
            }
        }
        if !intact {
            // Lost track (queue overflow, or the directory went): start over.
            self.watch = None;
        }
        intact
    }

    /// Lists the directory: every name is looked at when `full`, new names only otherwise.
    fn list_names(&mut self, full: bool) {
        self.listings += 1;
        let Ok(entries) = std::fs::read_dir(&self.netns_dir) else {
            return;
        };
        if full {
            self.last_full_name_scan = Some(Instant::now());
        }
        let mut present = Names::default();
        let mut unmounted = HashSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let inode = match (full, self.named.get(&name)) {
                (false, Some(inode)) => Some(inode),
                _ => self.nsfs_inode(&entry.path()),
            };
            match inode {
                Some(inode) => present.insert(name, inode),
                None => {
                    unmounted.insert(name);
                }
            }
        }
        self.named = present;
        self.unmounted = unmounted;
    }

    /// Processes and their cgroups: the pod sandbox (pause) process lives in the pod's netns.
    fn scan_processes(&mut self) {
        self.last_proc_scan = Some(Instant::now());
        for process in proc::processes_outside(&self.proc_root, self.host_inode) {
            let Some(info) = self.known.get_mut(&process.netns_inode) else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn book_with(dir: &Path) -> (NetnsBook, u32) {
        let netns_dir = dir.join("netns");
        std::fs::create_dir_all(&netns_dir).expect("mkdir");
        std::fs::create_dir_all(dir.join("proc")).expect("mkdir");
        let named = netns_dir.join("cni-1");
        std::fs::write(&named, "").expect("write");
        let inode = std::fs::metadata(&named).expect("stat").ino() as u32;
        (NetnsBook::new(&dir.join("proc"), &netns_dir, 1), inode)
    }

    /// The host's namespace is never searched for: it has no name or pod to find.
    #[test]
    fn the_host_namespace_costs_no_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut book, named) = book_with(dir.path());
        book.touch(NetnsId { inode: 1, cookie: 1 });
        for _ in 0..3 {
            assert_eq!(book.lookup(1).name, None);
        }
        assert_eq!((book.last_full_name_scan, book.last_proc_scan), (None, None));
        assert!(book.named.inodes.is_empty(), "the names were not read");
        book.touch(NetnsId {
            inode: named,
            cookie: 2,
        });
        assert_eq!(book.lookup(named).name.as_deref(), Some("cni-1"));
    }

    #[test]
    fn a_new_cookie_under_an_old_inode_is_a_new_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut book, inode) = book_with(dir.path());
        book.touch(NetnsId { inode, cookie: 7 });
        assert_eq!(book.lookup(inode).name.as_deref(), Some("cni-1"));
        book.set_nsid(inode, 3);
        assert!(book.by_nsid(3).is_some());
        assert!(book.without_nsid().is_empty());
        // The namespace died and its inode came back for another one.
        book.touch(NetnsId { inode, cookie: 8 });
        assert_eq!(book.known[&inode].cookie, 8);
        assert!(book.by_nsid(3).is_none(), "nothing of the dead namespace is kept");
        // The same cookie again is the same namespace.
        book.touch(NetnsId { inode, cookie: 8 });
        assert_eq!(book.remembered(), 1);
    }

    #[test]
    fn a_namespace_without_an_id_is_asked_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut book, inode) = book_with(dir.path());
        book.touch(NetnsId { inode, cookie: 7 });
        assert_eq!(book.without_nsid(), [inode]);
        book.nsid_refused(inode);
        assert!(book.without_nsid().is_empty());
        // Its inode reused by a new namespace: that one is asked.
        book.touch(NetnsId { inode, cookie: 8 });
        assert_eq!(book.without_nsid(), [inode]);
    }

    #[test]
    fn unused_entries_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut book, inode) = book_with(dir.path());
        book.touch(NetnsId { inode, cookie: 7 });
        book.forget_unused(Instant::now());
        assert_eq!(book.remembered(), 1, "just used");
        book.forget_unused(Instant::now() + FORGET_AFTER);
        assert_eq!(book.remembered(), 0);
    }

    /// New namespaces are found from inotify's word, without listing the directory again;
    /// a name created before its namespace is mounted on it is looked at again.
    #[test]
    fn new_names_come_from_notifications_not_listings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut book, first) = book_with(dir.path());
        book.touch(NetnsId {
            inode: first,
            cookie: 1,
        });
        assert_eq!(book.lookup(first).name.as_deref(), Some("cni-1"));
        let listings = book.listings();
        let netns_dir = dir.path().join("netns");
        let mut inodes = Vec::new();
        for index in 2..=20 {
            let path = netns_dir.join(format!("cni-{index}"));
            std::fs::write(&path, "").expect("write");
            let inode = std::fs::metadata(&path).expect("stat").ino() as u32;
            book.touch(NetnsId { inode, cookie: 1 });
            assert_eq!(book.lookup(inode).name, Some(format!("cni-{index}")));
            inodes.push(inode);
        }
        assert_eq!(book.listings(), listings, "19 new namespaces, no listing");
        // Gone names go: a new file under an old name is looked at afresh.
        std::fs::remove_file(netns_dir.join("cni-2")).expect("rm");
        book.scan_names(false, inodes[0]);
        assert_eq!(book.named.get(std::ffi::OsStr::new("cni-2")), None);
        assert_eq!(book.named.name_of(inodes[0]), None);
        assert_eq!((book.named.inodes.len(), book.named.names.len()), (19, 19));
    }

    /// Each way of looking names up agrees with the other as names come, go and move.
    #[test]
    fn names_are_found_both_ways() {
        let mut names = Names::default();
        let name = |text: &str| OsString::from(text);
        names.insert(name("a"), 1);
        names.insert(name("b"), 1);
        assert_eq!(names.name_of(1), Some(&name("b")), "the last name given");
        names.remove(&name("a"));
        assert_eq!(names.name_of(1), Some(&name("b")), "another name's going keeps it");
        names.remove(&name("b"));
        assert_eq!(names.name_of(1), None);
        names.insert(name("a"), 1);
        names.insert(name("a"), 2);
        assert_eq!((names.name_of(1), names.name_of(2)), (None, Some(&name("a"))));
        assert_eq!(names.get(&name("a")), Some(2));
    }

    #[test]
    fn namespaces_without_events_are_openable_but_not_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (book, inode) = book_with(dir.path());
        let openable = book.openable();
        assert_eq!(openable.len(), 1);
        assert_eq!(openable[0].0, inode);
        assert_eq!(book.remembered(), 0, "a name alone is not an entry");
    }
}
