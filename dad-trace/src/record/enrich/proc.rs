//! What /proc says about network namespaces: which processes live in which, and the pod
//! those processes belong to (kubelet's cgroup paths).
use std::path::Path;

use crate::session::Pod;

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

/// One process living in a namespace other than the host's.
pub struct NetnsProcess {
    pub netns_inode: u32,
    /// `/proc/PID/ns/net`: opens the namespace while the process lives.
    pub handle: std::path::PathBuf,
    pub pid: u32,
}

/// Every process of `proc_root` whose network namespace is not `host_inode`.
#[must_use]
pub fn processes_outside(proc_root: &Path, host_inode: u32) -> Vec<NetnsProcess> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let handle = entry.path().join("ns/net");
            let inode = parse_ns_link(&std::fs::read_link(&handle).ok()?.to_string_lossy())?;
            (inode != host_inode).then_some(NetnsProcess {
                netns_inode: inode,
                handle,
                pid,
            })
        })
        .collect()
}

/// The pod a process belongs to, from its cgroup path and command name.
#[must_use]
pub fn pod_of(proc_root: &Path, pid: u32) -> Pod {
    let dir = proc_root.join(pid.to_string());
    let kube = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|text| parse_kubepods_cgroup(&text));
    let comm = std::fs::read_to_string(dir.join("comm"))
        .ok()
        .map(|comm| comm.trim().to_string());
    let (uid, container_id) = kube.map_or((None, None), |(uid, id)| (Some(uid), id));
    Pod {
        uid,
        container_id,
        pid: Some(pid),
        comm,
        ..Pod::default()
    }
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
}
