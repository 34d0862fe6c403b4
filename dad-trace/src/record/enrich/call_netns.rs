//! A CNI call's `CNI_NETNS` to the namespace it names. The path is the caller's: containerd's
//! `/var/run/netns/cni-…` on a node, a kind node's own `/run/netns` seen from the host, or any
//! string whoever ran the plugin chose. It is looked up through the plugin's and the caller's
//! root (`/proc/PID/root`, their mount namespace) while the call runs, then as it stands, and
//! only a namespace file (on nsfs) is believed: nothing is opened, only looked at.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

/// Longer paths are not looked up (`PATH_MAX`).
pub const MAX_NETNS_PATH: usize = 4096;

/// Where `path` may be for the processes `pids` (plugin first, then its caller): through
/// each one's root, then as it stands.
#[must_use]
pub fn candidates(proc_root: &Path, path: &str, pids: &[u32]) -> Vec<PathBuf> {
    let path = Path::new(path);
    if !path.is_absolute() || path.as_os_str().len() > MAX_NETNS_PATH {
        return Vec::new();
    }
    let relative: PathBuf = path
        .components()
        .filter(|component| !matches!(component, Component::RootDir))
        .collect();
    let mut candidates: Vec<PathBuf> = pids
        .iter()
        .filter(|&&pid| pid > 0)
        .map(|pid| proc_root.join(pid.to_string()).join("root").join(&relative))
        .collect();
    candidates.push(crate::node::host::path(path));
    candidates
}

/// The inode of the namespace `path` names for `pids`, when it is a namespace file (on the
/// device of `nsfs_device`, when known).
#[must_use]
pub fn resolve_netns(proc_root: &Path, path: &str, pids: &[u32], nsfs_device: Option<u64>) -> Option<u32> {
    candidates(proc_root, path, pids).into_iter().find_map(|candidate| {
        let meta = std::fs::metadata(&candidate).ok()?;
        let nsfs = nsfs_device.is_none_or(|device| device == meta.dev());
        (nsfs && meta.is_file()).then_some(meta.ino() as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_tried_through_each_processes_root_then_as_they_stand() {
        let found = candidates(Path::new("/proc"), "/var/run/netns/cni-1", &[42, 7]);
        assert_eq!(
            found,
            [
                PathBuf::from("/proc/42/root/var/run/netns/cni-1"),
                PathBuf::from("/proc/7/root/var/run/netns/cni-1"),
                PathBuf::from("/var/run/netns/cni-1"),
            ]
        );
        assert!(candidates(Path::new("/proc"), "relative/x", &[1]).is_empty());
        assert!(candidates(Path::new("/proc"), &format!("/{}", "a".repeat(5000)), &[1]).is_empty());
    }

    /// A path to something else than a namespace file names no namespace, whatever it is.
    #[test]
    fn only_namespace_files_are_believed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-netns");
        std::fs::write(&file, "").expect("write");
        let text = file.to_str().expect("utf-8");
        let this_netns = std::fs::metadata("/proc/self/ns/net").expect("own netns");
        assert_eq!(
            resolve_netns(Path::new("/proc"), text, &[], Some(this_netns.dev())),
            None
        );
        assert_eq!(
            resolve_netns(Path::new("/proc"), dir.path().to_str().expect("utf-8"), &[], None),
            None,
            "a directory"
        );
        assert_eq!(
            resolve_netns(Path::new("/proc"), "/proc/self/ns/net", &[], Some(this_netns.dev())),
            Some(this_netns.ino() as u32)
        );
    }
}
