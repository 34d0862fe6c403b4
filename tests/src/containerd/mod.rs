//! A real containerd (Debian 12's 1.6, or sid's 2.x unpacked in the cache, with its CRI
//! plugin, runc, the ptp CNI plugin on an IPv6 range) started for one test, in its own
//! directory, and everything it made removed on drop.
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
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};

pub use self::kubelet::container_config;

mod cleanup;
mod config;
mod kubelet;
pub mod sid;

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

/// A directory for one test's containerd and what it makes, under /tmp, removed when dropped.
#[must_use]
pub fn test_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// The image `cargo xtask image` builds, for the runtime to run; says why not when missing.
#[must_use]
pub fn image_archive() -> Option<PathBuf> {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dad-trace-image.tar");
    if archive.exists() {
        return Some(archive);
    }
    test_support::skip(format_args!(
        "no image at {} (cargo xtask image builds it; cargo xtask test does first)",
        archive.display()
    ));
    None
}

/// Which containerd a test runs.
pub enum Release {
    /// The machine's (Debian 12's 1.6), from `PATH`.
    Installed,
    /// sid's 2.x unpacked at `root` (see [`sid`]), sending its spans to `otlp_endpoint`.
    Sid { root: PathBuf, otlp_endpoint: String },
}

/// A running containerd; dropping it stops its pods and removes what it made.
pub struct Containerd {
    dir: PathBuf,
    process: Child,
    /// Where its `ctr` is: `PATH` when `None`.
    bin_dir: Option<PathBuf>,
    /// How long its spans may wait to be sent: it is stopped only after that (it drops the
    /// last batch on SIGTERM).
    export_delay: Option<Duration>,
    /// Host paths containerd writes outside its root, removed when they did not exist before.
    created_outside: Vec<PathBuf>,
    /// With the pods' namespaces in /run/netns: the names there before it started.
    node_netns: Option<std::collections::BTreeSet<std::ffi::OsString>>,
    runtime: tokio::runtime::Runtime,
}

/// The names in /run/netns now.
fn netns_names() -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir("/run/netns")
        .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
        .unwrap_or_default()
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
    /// Starts the machine's containerd in `dir` and imports the locally built pause image.
    pub fn start(dir: &Path, cni_dir: &Path) -> anyhow::Result<Self> {
        Self::start_release(dir, cni_dir, &Release::Installed)
    }

    /// As [`Containerd::start`], with the pods' namespaces where a node's containerd keeps
    /// them, in /run/netns (those it made are removed when dropped).
    pub fn start_with_node_netns(dir: &Path, cni_dir: &Path) -> anyhow::Result<Self> {
        let mut containerd = Self::start_inner(dir, cni_dir, &Release::Installed, true)?;
        containerd.node_netns = Some(netns_names());
        Ok(containerd)
    }

    /// Starts `release` in `dir` and imports the locally built pause image.
    pub fn start_release(dir: &Path, cni_dir: &Path, release: &Release) -> anyhow::Result<Self> {
        Self::start_inner(dir, cni_dir, release, false)
    }

    fn start_inner(dir: &Path, cni_dir: &Path, release: &Release, node_netns: bool) -> anyhow::Result<Self> {
        let created_outside = ["/run/containerd", "/var/lib/cni"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|path| !path.exists())
            .collect();
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::write(dir.join("net.d/10-dad-trace-test.conflist"), config::cni_config(dir))?;
        let snapshotter = config::snapshotter(dir);
        let (mut command, bin_dir, export_delay) = match release {
            Release::Installed => {
                std::fs::write(
                    dir.join("config.toml"),
                    config::config(dir, cni_dir, snapshotter, node_netns),
                )?;
                (Command::new("containerd"), None, None)
            }
            Release::Sid { root, otlp_endpoint } => {
                std::fs::write(dir.join("config.toml"), sid::config(dir, cni_dir, snapshotter))?;
                let (command, bin_dir) = sid::command(root, otlp_endpoint)?;
                (command, Some(bin_dir), Some(sid::EXPORT_DELAY))
            }
        };
        let log = File::create(dir.join("containerd.log"))?;
        let process = command
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {command:?}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let containerd = Self {
            dir: dir.into(),
            process,
            bin_dir,
            export_delay,
            created_outside,
            node_netns: None,
            runtime,
        };
        containerd.wait_ready()?;
        let image = dir.join("pause.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("containerd/build-pause-image.sh");
        run(Command::new("sh").arg(script).arg(&image).arg(PAUSE_IMAGE))?;
        containerd.import_image(&image)?;
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
                // 1.6 says "cni config uninitialized", 2.x "cni plugin not initialized".
                Err(status)
                    if ["cni config uninitialized", "cni plugin not initialized"]
                        .iter()
                        .any(|message| status.message().contains(message))
                        && Instant::now() < deadline =>
                {
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
        let ctr = self
            .bin_dir
            .as_ref()
            .map_or_else(|| "ctr".into(), |dir| dir.join("ctr"));
        run(Command::new(ctr)
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
        let mut sandbox_config = self.sandbox_config(namespace, name, uid, true);
        // The runtime allows a privileged container only in a privileged sandbox.
        let privileged = container
            .linux
            .as_ref()
            .and_then(|linux| linux.security_context.as_ref())
            .is_some_and(|security| security.privileged);
        if let Some(security) = sandbox_config
            .linux
            .as_mut()
            .and_then(|linux| linux.security_context.as_mut())
        {
            security.privileged = privileged;
        }
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
}
