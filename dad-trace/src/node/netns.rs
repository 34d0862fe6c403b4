//! Network namespaces: entering one for a job, creating named ones, and reading the IPv6
//! addresses that live in one.
use std::{
    fs::File,
    net::Ipv6Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

/// Where named network namespaces live (`ip netns`, CNI runtimes).
pub const NETNS_DIR: &str = "/run/netns";
/// This process's own namespace: "the host" for everything dad-trace reports.
pub const SELF_NETNS: &str = "/proc/self/ns/net";
/// The calling thread's view of its namespace's addresses.
const IF_INET6: &str = "/proc/thread-self/net/if_inet6";

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

/// A named network namespace, bind-mounted like `ip netns add` does; removed on drop.
pub struct NamedNetns {
    path: PathBuf,
}

impl NamedNetns {
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(name);
        File::create_new(&path)
            .with_context(|| format!("create {} (a namespace of that name exists?)", path.display()))?;
        let netns = Self { path: path.clone() };
        // unshare() changes only the calling thread: do it on a thread that then ends.
        std::thread::spawn(move || -> anyhow::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mount the new namespace on {}", path.display()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace creator panicked"))??;
        Ok(netns)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        // Unmounting drops the last reference: the kernel then removes its interfaces.
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One row of `/proc/net/if_inet6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inet6Row {
    pub addr: Ipv6Addr,
    pub ifindex: u32,
    pub flags: u32,
    pub ifname: String,
}

impl Inet6Row {
    #[must_use]
    pub fn tentative(&self) -> bool {
        self.flags & dad_trace_common::IFA_F_TENTATIVE != 0
    }
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

/// The addresses of the calling thread's namespace (run it inside [`in_netns`]).
pub fn addresses_here() -> anyhow::Result<Vec<Inet6Row>> {
    Ok(parse_if_inet6(
        &std::fs::read_to_string(IF_INET6).with_context(|| format!("read {IF_INET6}"))?,
    ))
}

/// The addresses of the namespace at `handle`.
pub fn addresses_in(handle: &Path) -> anyhow::Result<Vec<Inet6Row>> {
    in_netns(handle, addresses_here)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!rows[1].tentative());
        assert_eq!(
            rows[0].addr,
            "fe80::b0c1:ffff:fe2a:b01".parse::<Ipv6Addr>().expect("literal")
        );
        assert_eq!((rows[0].ifindex, rows[0].flags), (2, 0xc0));
        assert!(rows[0].tentative());
    }
}
