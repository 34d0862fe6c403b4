//! containerd 1.6's configuration (format version 2) and the pods' CNI network, in the
//! test's directory; the snapshotter this file system allows.
use std::path::Path;

use super::{PAUSE_IMAGE, POD_SUBNET};

/// `node_netns`: the pods' namespaces in /run/netns, as on a node; else in the test's state.
pub(super) fn config(dir: &Path, cni_dir: &Path, snapshotter: &str, node_netns: bool) -> String {
    let under_state_dir = !node_netns;
    let dir = dir.display();
    let cni_dir = cni_dir.display();
    // restrict_oom_score_adj: runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which
    // sandboxes such as CI runners may lack ("failed to update /proc/self/oom_score_adj").
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
oom_score = 0

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = {under_state_dir}
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "{snapshotter}"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{dir}/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni_dir}"
      conf_dir = "{dir}/net.d"
      max_conf_num = 1
"#
    )
}

pub(super) fn cni_config(dir: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "dad-trace-test",
  "plugins": [
    {{
      "type": "ptp",
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{POD_SUBNET}" }}]],
        "routes": [{{ "dst": "::/0" }}],
        "dataDir": "{}/cni-ipam"
      }}
    }}
  ]
}}
"#,
        dir.display()
    )
}

/// overlayfs when it mounts here (not on every file system), else the slower native copy.
pub(super) fn snapshotter(dir: &Path) -> &'static str {
    let probe = dir.join("overlay-probe");
    let [lower, upper, work, merged] = ["l", "u", "w", "m"].map(|name| probe.join(name));
    for path in [&lower, &upper, &work, &merged] {
        if std::fs::create_dir_all(path).is_err() {
            return "native";
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mounted = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .is_ok();
    if mounted {
        let _ = nix::mount::umount(&merged);
    }
    let _ = std::fs::remove_dir_all(&probe);
    if mounted { "overlayfs" } else { "native" }
}
