//! Pod identity from the container runtime (CRI API: containerd, CRI-O). A pod sandbox owns
//! the network namespace whose interfaces run DAD; its verbose status names that namespace.
//!
//! DAD runs while the CNI plugin sets the sandbox up, before the runtime lists it, so
//! identities are refreshed in the background and looked up again later (see `record`).
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{ListPodSandboxRequest, PodSandboxStatusRequest, runtime_service_client::RuntimeServiceClient};
use tokio::{net::UnixStream, sync::Notify};
use tonic::transport::{Channel, Endpoint, Uri};

use super::cri_starts::{first_starts, time_of};
use crate::{node::host, record::identity::SandboxIdentity};

/// Where containerd and CRI-O listen by default.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
];

/// How often identities are refreshed without being asked.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// A sandbox the runtime stopped listing is forgotten after this long (its namespace is long
/// gone by then); until then late events still find their pod.
const FORGET_AFTER: Duration = Duration::from_hours(1);
/// One CRI call must not hold up the refresher.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI call {call} on {path} failed")]
    Call {
        call: &'static str,
        path: PathBuf,
        #[source]
        source: tonic::Status,
    },
}

/// Which runtime socket to ask, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketChoice {
    /// The first of [`DEFAULT_SOCKETS`] that exists.
    Auto,
    Path(PathBuf),
    Off,
}

impl SocketChoice {
    /// `auto`, `none`, or a path.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        match text {
            "auto" => Self::Auto,
            "none" | "off" => Self::Off,
            path => Self::Path(path.into()),
        }
    }

    /// The socket to use, or why there is none.
    pub fn resolve(&self) -> Result<Option<PathBuf>, String> {
        match self {
            Self::Off => Ok(None),
            Self::Path(path) => {
                let path = host::path(path);
                if path.exists() {
                    Ok(Some(path))
                } else {
                    Err(format!(
                        "CRI socket {} does not exist: give the runtime's socket with --cri-socket, or --cri-socket none",
                        path.display()
                    ))
                }
            }
            Self::Auto => Ok(DEFAULT_SOCKETS.iter().map(host::path).find(|path| path.exists())),
        }
    }
}

/// The network namespace path and sandbox process from a verbose `PodSandboxStatus` info
/// map: containerd and CRI-O put the OCI runtime spec under `info`, whose
/// `linux.namespaces` entry of type `network` has the path, and the pause process's `pid`.
#[must_use]
pub fn netns_from_info<S: std::hash::BuildHasher>(info: &HashMap<String, String, S>) -> (Option<PathBuf>, Option<u32>) {
    let Some(json) = info
        .get("info")
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
    else {
        return (None, None);
    };
    let pid = json
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0);
    let path = json
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(serde_json::Value::as_array)
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns.get("type").and_then(serde_json::Value::as_str) == Some("network"))
        })
        .and_then(|ns| ns.get("path").and_then(serde_json::Value::as_str))
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    (path, pid)
}

/// A connected CRI runtime service client.
pub struct CriClient {
    client: RuntimeServiceClient<Channel>,
    path: PathBuf,
}

impl CriClient {
    pub async fn connect(path: &Path) -> Result<Self, CriError> {
        let socket = path.to_path_buf();
        // The URI is required by tonic and ignored by the connector.
        let channel = Endpoint::from_static("http://[::1]:50051")
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
            }))
            .await
            .map_err(|source| CriError::Connect {
                path: path.into(),
                source,
            })?;
        Ok(Self {
            client: RuntimeServiceClient::new(channel),
            path: path.into(),
        })
    }

    /// The raw CRI runtime service, for callers that drive the runtime (tests, tools).
    pub fn service(&mut self) -> &mut RuntimeServiceClient<Channel> {
        &mut self.client
    }

    /// Every sandbox the runtime lists (ready or not), with its namespace where known.
    pub async fn sandboxes(
        &mut self,
        known: &HashMap<String, SandboxIdentity>,
    ) -> Result<Vec<SandboxIdentity>, CriError> {
        let listed = self
            .client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(|source| self.call_error("ListPodSandbox", source))?
            .into_inner()
            .items;
        let mut identities = Vec::with_capacity(listed.len());
        for sandbox in listed {
            if let Some(identity) = known.get(&sandbox.id).filter(|identity| identity.netns_path.is_some()) {
                identities.push(identity.clone());
                continue;
            }
            let metadata = sandbox.metadata.unwrap_or_default();
            let status = self
                .client
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                    verbose: true,
                })
                .await;
            let (netns_path, pid) = match status {
                Ok(response) => netns_from_info(&response.into_inner().info),
                // Removed between the two calls: nothing to learn.
                Err(status) if status.code() == tonic::Code::NotFound => continue,
                Err(source) => return Err(self.call_error("PodSandboxStatus", source)),
            };
            identities.push(SandboxIdentity {
                sandbox_id: sandbox.id,
                namespace: metadata.namespace,
                name: metadata.name,
                uid: metadata.uid,
                netns_path,
                pid,
                created_at: time_of(sandbox.created_at),
                first_container_started: None,
            });
        }
        let waiting: HashSet<String> = identities
            .iter()
            .filter(|identity| identity.first_container_started.is_none())
            .map(|identity| identity.sandbox_id.clone())
            .collect();
        let firsts = first_starts(&mut self.client, &waiting)
            .await
            .map_err(|source| self.call_error("ListContainers/ContainerStatus", source))?;
        for identity in &mut identities {
            if let Some(started) = firsts.get(&identity.sandbox_id) {
                identity.first_container_started = Some(*started);
            }
        }
        Ok(identities)
    }

    fn call_error(&self, call: &'static str, source: tonic::Status) -> CriError {
        CriError::Call {
            call,
            path: self.path.clone(),
            source,
        }
    }
}

/// The inode of a sandbox's network namespace, through its path or its process. `proc_root`
/// is the host's /proc (the sandbox process is only visible with the host PID namespace).
/// Only a namespace file is believed: seen from a container whose mount of the node is
/// private (a `kubectl debug` pod's /host), the path is the empty file under the mount.
fn netns_inode(identity: &SandboxIdentity, proc_root: &Path) -> Option<u32> {
    let nsfs = std::fs::metadata(proc_root.join("self/ns/net"))
        .ok()
        .map(|meta| meta.dev());
    let by_path = identity
        .netns_path
        .as_ref()
        .and_then(|path| std::fs::metadata(host::path(path)).ok())
        .filter(|meta| nsfs.is_none_or(|device| meta.dev() == device));
    let by_pid = || {
        identity
            .pid
            .and_then(|pid| std::fs::metadata(proc_root.join(format!("{pid}/ns/net"))).ok())
    };
    by_path.or_else(by_pid).map(|meta| meta.ino() as u32)
}

#[derive(Default)]
struct Table {
    by_inode: HashMap<u32, SandboxIdentity>,
    by_id: HashMap<String, SandboxIdentity>,
    last_listed: HashMap<String, Instant>,
    /// When the latest listing was merged: a sandbox listed then is current.
    latest: Option<Instant>,
    last_error: Option<String>,
}

/// Sandbox identities by network namespace inode, shared between the background refresher
/// and the recorder.
#[derive(Clone, Default)]
pub struct Identities {
    table: Arc<Mutex<Table>>,
    wake: Arc<Notify>,
}

impl Identities {
    /// The sandbox whose network namespace has this inode, for a namespace dad-trace first
    /// saw at `first_seen`: a sandbox the runtime still lists, or one it listed after that
    /// moment. A sandbox gone before the namespace appeared had an older namespace under the
    /// same inode (inodes are reused), and is not this one.
    #[must_use]
    pub fn get(&self, inode: u32, first_seen: Instant) -> Option<SandboxIdentity> {
        let table = self.lock();
        let identity = table.by_inode.get(&inode)?;
        let listed = table.last_listed.get(&identity.sandbox_id)?;
        (Some(*listed) == table.latest || *listed >= first_seen).then(|| identity.clone())
    }

    /// The sandbox the runtime gave this id (the `CNI_CONTAINERID` of its CNI calls).
    #[must_use]
    pub fn by_sandbox_id(&self, id: &str) -> Option<SandboxIdentity> {
        self.lock().by_id.get(id).cloned()
    }

    /// Lists sandboxes and their containers' starts now, on a connection of its own (the end
    /// of a recording: containers started since the last refresh count).
    pub async fn refresh_now(&self, socket: &Path, proc_root: &Path) -> Result<(), CriError> {
        self.refresh_once(&mut None, socket, proc_root).await
    }

    /// Asks the refresher to list sandboxes now (a namespace was seen that it does not know).
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merges one listing. Identities of namespaces that vanished are kept for a while, so a
    /// late lookup still names the pod.
    fn update(&self, listed: Vec<SandboxIdentity>, proc_root: &Path) {
        let now = Instant::now();
        let mut table = self.lock();
        table.latest = Some(now);
        for identity in listed {
            table.last_listed.insert(identity.sandbox_id.clone(), now);
            if let Some(inode) = netns_inode(&identity, proc_root) {
                table.by_inode.insert(inode, identity.clone());
            }
            table.by_id.insert(identity.sandbox_id.clone(), identity);
        }
        let forgotten: Vec<String> = table
            .last_listed
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > FORGET_AFTER)
            .map(|(id, _)| id.clone())
            .collect();
        for id in forgotten {
            table.last_listed.remove(&id);
            table.by_id.remove(&id);
            table.by_inode.retain(|_, identity| identity.sandbox_id != id);
        }
        table.last_error = None;
    }

    /// Lists sandboxes every few seconds, or sooner when asked, until the task is dropped.
    /// Errors are logged once per change and retried: the runtime may restart.
    #[must_use]
    pub fn spawn_refresher(&self, socket: PathBuf, proc_root: PathBuf) -> tokio::task::JoinHandle<()> {
        let identities = self.clone();
        tokio::spawn(async move {
            let mut client = None;
            loop {
                if let Err(e) = identities.refresh_once(&mut client, &socket, &proc_root).await {
                    client = None;
                    let text = format!("{e}");
                    let mut table = identities.lock();
                    if table.last_error.as_deref() != Some(text.as_str()) {
                        log::warn!("pod identity from the runtime: {text} (retrying)");
                        table.last_error = Some(text);
                    }
                }
                tokio::select! {
                    () = identities.wake.notified() => {
                        // Sandboxes appear right after their CNI ADD: a short pause batches the wake-ups.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    () = tokio::time::sleep(REFRESH_INTERVAL) => {}
                }
            }
        })
    }

    async fn refresh_once(
        &self,
        client: &mut Option<CriClient>,
        socket: &Path,
        proc_root: &Path,
    ) -> Result<(), CriError> {
        if client.is_none() {
            *client = Some(CriClient::connect(socket).await?);
        }
        let Some(connected) = client.as_mut() else {
            return Ok(());
        };
        let known = self.lock().by_id.clone();
        let listed = connected.sandboxes(&known).await?;
        self.update(listed, proc_root);
        Ok(())
    }

    /// Connects once and lists, so `record` can fail early with a clear message.
    pub async fn check(socket: &Path) -> Result<usize, CriError> {
        let mut client = CriClient::connect(socket).await?;
        Ok(client.sandboxes(&HashMap::new()).await?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from containerd 1.6.20's `PodSandboxStatus` (verbose), trimmed to the keys
    /// around the ones read.
    const CONTAINERD_INFO: &str = include_str!("../../../tests/fixtures/containerd-1.6-sandbox-info.json");

    #[test]
    fn finds_the_netns_path_and_pid_in_containerd_info() {
        let info = HashMap::from([("info".to_string(), CONTAINERD_INFO.to_string())]);
        let (path, pid) = netns_from_info(&info);
        assert_eq!(
            path.as_deref(),
            Some(Path::new(
                "/tmp/cri-lab/state/io.containerd.grpc.v1.cri/netns/cni-fe0bad74-928f-0050-84b2-3287209eb2a0"
            ))
        );
        assert_eq!(pid, Some(5062));
    }

    #[test]
    fn missing_or_broken_info_yields_nothing() {
        assert_eq!(netns_from_info(&HashMap::new()), (None, None));
        let broken = HashMap::from([("info".to_string(), "{not json".to_string())]);
        assert_eq!(netns_from_info(&broken), (None, None));
        // A sandbox with host networking has a network entry without a path.
        let host = HashMap::from([(
            "info".to_string(),
            r#"{"pid":0,"runtimeSpec":{"linux":{"namespaces":[{"type":"network"}]}}}"#.to_string(),
        )]);
        assert_eq!(netns_from_info(&host), (None, None));
    }

    #[test]
    fn socket_choice() {
        assert_eq!(SocketChoice::parse("none").resolve(), Ok(None));
        let missing = SocketChoice::parse("/nonexistent/cri.sock").resolve();
        assert!(missing.is_err_and(|e| e.contains("--cri-socket")));
    }

    #[test]
    fn a_path_that_is_not_a_namespace_file_yields_to_the_process() {
        // What a container with a private mount of the node sees: the empty file a namespace
        // was mounted on.
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join("cni-stale");
        std::fs::write(&stale, "").expect("write");
        let identity = SandboxIdentity {
            sandbox_id: "abc".into(),
            namespace: "team-a".into(),
            name: "web-1".into(),
            uid: "uid-1".into(),
            netns_path: Some(stale),
            pid: Some(std::process::id()),
            created_at: None,
            first_container_started: None,
        };
        let own = std::fs::metadata("/proc/self/ns/net").expect("own netns").ino() as u32;
        assert_eq!(netns_inode(&identity, Path::new("/proc")), Some(own));
    }

    #[test]
    fn identities_survive_their_namespace_and_are_found_by_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let netns = dir.path().join("cni-test");
        std::fs::write(&netns, "").expect("write");
        let inode = std::fs::metadata(&netns).expect("stat").ino() as u32;
        let identity = SandboxIdentity {
            sandbox_id: "abc".into(),
            namespace: "team-a".into(),
            name: "web-1".into(),
            uid: "uid-1".into(),
            netns_path: Some(netns.clone()),
            pid: None,
            created_at: None,
            first_container_started: None,
        };
        let seen = Instant::now();
        let identities = Identities::default();
        identities.update(vec![identity.clone()], dir.path());
        assert_eq!(identities.get(inode, seen), Some(identity.clone()));
        assert_eq!(identities.by_sandbox_id("abc"), Some(identity));
        // The runtime stops listing the sandbox and its namespace is gone: still known, for
        // the namespace dad-trace saw while the sandbox was listed.
        std::fs::remove_file(&netns).expect("remove");
        identities.update(Vec::new(), dir.path());
        assert_eq!(identities.get(inode, seen).map(|i| i.name), Some("web-1".to_string()));
        // A namespace first seen after the sandbox was last listed reuses the inode: not it.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(identities.get(inode, Instant::now()), None);
    }
}
