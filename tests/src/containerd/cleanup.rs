//! Stopping containerd and removing what it made: its shims, mounts, cgroups and the files it
//! writes outside its directory.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::{CGROUP_PARENT, Containerd};

impl Containerd {
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.process.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.process.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Shims outlive containerd by design; ours are told apart by our socket on their command line.
    fn kill_shims(&self) {
        let socket = self.socket().display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Mounts under our directory (snapshots, netns bind mounts, shm), deepest first.
    fn unmount_all(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|path| Path::new(path).starts_with(&self.dir))
            .collect();
        ours.sort_unstable_by(|a, b| b.cmp(a));
        for path in ours {
            if nix::mount::umount(path).is_err() {
                let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    /// The pods' namespaces it left in /run/netns (when it ended before removing its pods).
    fn remove_node_netns(&self) {
        let Some(before) = &self.node_netns else {
            return;
        };
        for name in super::netns_names().difference(before) {
            let path = Path::new("/run/netns").join(name);
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        }
    }

    fn remove_cgroups() {
        let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for controller in controllers.flatten() {
            let parent = controller.path().join(CGROUP_PARENT.trim_start_matches('/'));
            remove_cgroup_tree(&parent);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup_tree(&child.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.remove_pods() {
            println!("containerd cleanup: removing pods: {e:#}");
        }
        if let Some(delay) = self.export_delay {
            // Its last spans go out first: on SIGTERM it drops the batch it holds.
            std::thread::sleep(2 * delay);
        }
        self.stop();
        self.kill_shims();
        std::thread::sleep(Duration::from_millis(300));
        self.unmount_all();
        self.remove_node_netns();
        Self::remove_cgroups();
        for path in &self.created_outside {
            let _ = std::fs::remove_dir_all(path);
        }
        // The CNI library caches each ADD's result under the network's name.
        if let Ok(results) = std::fs::read_dir("/var/lib/cni/results") {
            for result in results.flatten() {
                if result.file_name().to_string_lossy().starts_with("dad-trace-test-") {
                    let _ = std::fs::remove_file(result.path());
                }
            }
        }
    }
}
