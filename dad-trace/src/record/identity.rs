//! Who a pod is, as the container runtime tells it: what enrichment finds and the recorder
//! and the pods' timelines use (here so that neither depends on enrichment for it).
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::session::Pod;

/// A pod sandbox as the runtime names it, and when it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxIdentity {
    pub sandbox_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub netns_path: Option<PathBuf>,
    pub pid: Option<u32>,
    /// When the runtime created the sandbox (before its CNI ADD).
    pub created_at: Option<DateTime<Utc>>,
    /// When the first of its containers started, once one has (from the runtime's container list).
    pub first_container_started: Option<DateTime<Utc>>,
}

/// Puts what the runtime says about a sandbox into an event's pod (it outranks cgroup paths).
pub fn merge_identity(pod: &mut Option<Pod>, identity: SandboxIdentity) {
    let pod = pod.get_or_insert_with(Pod::default);
    pod.namespace = Some(identity.namespace);
    pod.name = Some(identity.name);
    pod.uid = Some(identity.uid);
    pod.container_id = Some(identity.sandbox_id);
    if pod.pid.is_none() {
        pod.pid = identity.pid;
    }
}
