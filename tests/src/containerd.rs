//! A real containerd (Debian's 1.6 with its CRI plugin, runc, the ptp CNI plugin on an IPv6
//! range) started for one test, in its own directory, and everything it made removed on drop.
//!
//! No registry is reachable: the sandbox (pause) image is built locally
//! (`containerd/build-pause-image.sh`) and imported with `ctr`.
use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dad_trace::record::enrich::cri::CriClient;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, Mount, MountPropagation, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, SecurityProfile, StartContainerRequest,
    StopPodSandboxRequest, security_profile::ProfileType,
};
use k8s_openapi::api::core::v1::PodSpec;

pub const PAUSE_IMAGE: &str = "localhost/dad-trace-pause:1";
/// The pods' IPv6 range (ULA, only inside namespaces this test makes).
pub const POD_SUBNET: &str = "fd00:dad:c1::/64";
/// cgroup parent of the pods, so the cgroups can be found and removed.
const CGROUP_PARENT: &str = "/dad-trace-test";
const BINARIES: &[&str] = &["containerd", "ctr", "runc", "containerd-shim-runc-v2"];

/// Why containerd cannot be started here, if it cannot.
#[must_use]
pub fn unavailable(cni_dir: &Path) -> Option<String> {
    for binary in BINARIES {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).exists()));
        if !found {
            return Some(format!("{binary} is not installed (apt-get install containerd runc)"));
        }
    }
    for plugin in ["ptp", "host-local"] {
        if !cni_dir.join(plugin).exists() {
            return Some(format!("CNI plugin {plugin} missing in {}", cni_dir.display()));
        }
    }
    None
}

/// A pod spec's only container as the kubelet hands it to the runtime: `$(VAR)` expanded,
/// host paths of volumes mapped by `host_path` (the test's stand-ins for the node's), the
/// security context translated, capabilities limited to `capabilities`.
pub fn container_config(
    spec: &PodSpec,
    host_path: &dyn Fn(&str) -> String,
    env: &[(&str, &str)],
    capabilities: &[String],
) -> anyhow::Result<ContainerConfig> {
    let container = spec.containers.first().context("no container")?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|volume| volume.name == mount.name)
            .with_context(|| format!("no volume {}", mount.name))?;
        let path = &volume.host_path.as_ref().context("only hostPath volumes")?.path;
        mounts.push(Mount {
            container_path: mount.mount_path.clone(),
            host_path: host_path(path),
            readonly: mount.read_only == Some(true),
            propagation: match mount.mount_propagation.as_deref() {
                Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                _ => MountPropagation::PropagationPrivate,
            }
            .into(),
            ..Mount::default()
        });
    }
    let security = container.security_context.clone().unwrap_or_default();
    let drop = security
        .capabilities
        .as_ref()
        .and_then(|capabilities| capabilities.drop.clone())
        .unwrap_or_default();
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: container.image.clone().context("no image")?,
            ..ImageSpec::default()
        }),
        // The kubelet expands $(VAR) before the runtime sees the arguments.
        args: crate::manifests::expanded_args(container, env)?,
        envs: env
            .iter()
            .map(|(key, value)| KeyValue {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        mounts,
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: capabilities.to_vec(),
                    drop_capabilities: drop,
                    ..Capability::default()
                }),
                privileged: security.privileged == Some(true),
                run_as_user: security.run_as_user.map(|value| Int64Value { value }),
                readonly_rootfs: security.read_only_root_filesystem == Some(true),
                no_new_privs: security.allow_privilege_escalation == Some(false),
                seccomp: security.seccomp_profile.as_ref().map(|profile| SecurityProfile {
                    profile_type: if profile.type_ == "RuntimeDefault" {
                        ProfileType::RuntimeDefault
                    } else {
                        ProfileType::Unconfined
                    }
                    .into(),
                    ..SecurityProfile::default()
                }),
                ..LinuxContainerSecurityContext::default()
            }),
            ..LinuxContainerConfig::default()
        }),
        ..ContainerConfig::default()
    })
}

/// A running containerd; dropping it stops its pods and removes what it made.
pub struct Containerd {
    dir: PathBuf,
    process: Child,
    /// Host paths containerd 1.6 writes outside its root, removed when they did not exist before.
    created_outside: Vec<PathBuf>,
    runtime: tokio::runtime::Runtime,
}

fn config(dir: &Path, cni_dir: &Path, snapshotter: &str) -> String {
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
    netns_mounts_under_state_dir = true
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

fn cni_config(dir: &Path) -> String {
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
fn snapshotter(dir: &Path) -> &'static str {
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

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl Containerd {
    /// Starts containerd in `dir` and imports the locally built pause image.
    pub fn start(dir: &Path, cni_dir: &Path) -> anyhow::Result<Self> {
        let created_outside = ["/run/containerd", "/var/lib/cni"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|path| !path.exists())
            .collect();
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::write(dir.join("net.d/10-dad-trace-test.conflist"), cni_config(dir))?;
        let snapshotter = snapshotter(dir);
        std::fs::write(dir.join("config.toml"), config(dir, cni_dir, snapshotter))?;
        let log = File::create(dir.join("containerd.log"))?;
        let process = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start containerd")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let containerd = Self {
            dir: dir.into(),
            process,
            created_outside,
            runtime,
        };
        containerd.wait_ready()?;
        let image = dir.join("pause.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("containerd/build-pause-image.sh");
        run(Command::new("sh").arg(script).arg(&image).arg(PAUSE_IMAGE))?;
        run(Command::new("ctr")
            .arg("-a")
            .arg(containerd.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&image))?;
        println!("containerd up in {} ({snapshotter} snapshotter)", dir.display());
        Ok(containerd)
    }

    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn client(&self) -> anyhow::Result<CriClient> {
        Ok(self.runtime.block_on(CriClient::connect(&self.socket()))?)
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = self.socket().exists()
                && self
                    .client()
                    .and_then(|mut client| {
                        Ok(self.runtime.block_on(
                            client
                                .service()
                                .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
                        )?)
                    })
                    .is_ok();
            if listed {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 30 s: see {}",
                    self.dir.join("containerd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn sandbox_config(&self, namespace: &str, name: &str, uid: &str, host: bool) -> PodSandboxConfig {
        let (network, pid) = if host {
            (NamespaceMode::Node, NamespaceMode::Node)
        } else {
            (NamespaceMode::Pod, NamespaceMode::Container)
        };
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // With the node's network, the pod has the node's name too (as the kubelet does).
            hostname: if host { String::new() } else { name.into() },
            log_directory: self.log_directory(uid).display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: CGROUP_PARENT.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network.into(),
                        pid: pid.into(),
                        ipc: NamespaceMode::Pod.into(),
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    fn log_directory(&self, uid: &str) -> PathBuf {
        self.dir.join("pod-logs").join(uid)
    }

    /// Creates a pod sandbox (its CNI ADD runs DAD); returns its id. Retries while the CRI
    /// plugin has not loaded the CNI config yet.
    pub fn run_pod(&self, namespace: &str, name: &str, uid: &str) -> anyhow::Result<String> {
        self.run_sandbox(&self.sandbox_config(namespace, name, uid, false))
    }

    /// A pod as the kubelet starts one: its sandbox (network set up by the CNI plugin), then
    /// one container in it (the pause image's `sleep`); returns the sandbox id.
    pub fn run_pod_with_container(&self, namespace: &str, name: &str, uid: &str) -> anyhow::Result<String> {
        let sandbox_config = self.sandbox_config(namespace, name, uid, false);
        let sandbox = self.run_sandbox(&sandbox_config)?;
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: PAUSE_IMAGE.into(),
                ..ImageSpec::default()
            }),
            log_path: "app.log".into(),
            ..ContainerConfig::default()
        };
        let mut client = self.client()?;
        let created = self
            .runtime
            .block_on(client.service().create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(container),
                sandbox_config: Some(sandbox_config),
            }))
            .with_context(|| format!("CreateContainer in {namespace}/{name}"))?
            .into_inner()
            .container_id;
        self.runtime
            .block_on(
                client
                    .service()
                    .start_container(StartContainerRequest { container_id: created }),
            )
            .with_context(|| format!("StartContainer in {namespace}/{name}"))?;
        Ok(sandbox)
    }

    fn run_sandbox(&self, config: &PodSandboxConfig) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut client = self.client()?;
            let request = RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            };
            match self.runtime.block_on(client.service().run_pod_sandbox(request)) {
                Ok(response) => return Ok(response.into_inner().pod_sandbox_id),
                Err(status) if status.message().contains("cni config uninitialized") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(status) => bail!(
                    "RunPodSandbox {:?}: {status} (see {})",
                    config.metadata,
                    self.dir.join("containerd.log").display()
                ),
            }
        }
    }

    /// Imports an OCI archive into the CRI's image namespace.
    pub fn import_image(&self, archive: &Path) -> anyhow::Result<()> {
        run(Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive))
    }

    /// Runs one container in a pod with the node's network and PID namespaces (as
    /// `hostNetwork`/`hostPID` do); returns the file its output is logged to.
    pub fn run_host_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        mut container: ContainerConfig,
    ) -> anyhow::Result<PathBuf> {
        let sandbox_config = self.sandbox_config(namespace, name, uid, true);
        let sandbox = self.run_sandbox(&sandbox_config)?;
        container.log_path = format!("{name}.log");
        let mut client = self.client()?;
        let created = self
            .runtime
            .block_on(client.service().create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox,
                config: Some(container),
                sandbox_config: Some(sandbox_config),
            }))?
            .into_inner()
            .container_id;
        self.runtime.block_on(
            client
                .service()
                .start_container(StartContainerRequest { container_id: created }),
        )?;
        Ok(self.log_directory(uid).join(format!("{name}.log")))
    }

    /// A directory that is a shared mount point, so `HostToContainer` propagation can be
    /// asked for (containerd refuses it on a private mount, and this machine's / is private).
    pub fn shared_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(
            Some(&path),
            &path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )?;
        nix::mount::mount(
            None::<&str>,
            &path,
            None::<&str>,
            nix::mount::MsFlags::MS_SHARED,
            None::<&str>,
        )?;
        Ok(path)
    }

    /// Stops and removes every sandbox (the CNI DEL removes veths and addresses).
    pub fn remove_pods(&self) -> anyhow::Result<()> {
        let mut client = self.client()?;
        let sandboxes = self
            .runtime
            .block_on(
                client
                    .service()
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )?
            .into_inner()
            .items;
        for sandbox in sandboxes {
            let id = sandbox.id;
            self.runtime
                .block_on(client.service().stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))?;
            self.runtime.block_on(
                client
                    .service()
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
            )?;
        }
        Ok(())
    }

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
        self.stop();
        self.kill_shims();
        std::thread::sleep(Duration::from_millis(300));
        self.unmount_all();
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
