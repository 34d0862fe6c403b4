//! Pod start in the session: per pod namespace, the CNI calls that set it up and the timeline
//! from the runtime's sandbox to its first container, with DAD's wait inside. Recorded by
//! `record`/`serve`; `report` reads it. Sessions from before it have none (`pods: []`).
//!
//! Pure: mutation-tested (cargo xtask mutants).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AddressEvent, Pod, PodSettings};

/// One exec of a CNI plugin, start to exit, as the kernel saw it. `command`, `container_id`,
/// `netns` and `ifname` are the `CNI_*` variables, as given (whoever runs a plugin sets them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniCall {
    /// `ADD`, `DEL`, `CHECK`, `VERSION`, ... (`CNI_COMMAND`).
    pub command: Option<String>,
    /// The path the caller executed.
    pub plugin: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub pid: u32,
    /// The caller: a runtime for a top-level call, the delegating plugin for a delegate.
    pub ppid: u32,
    /// When the caller forked the plugin's process (a few ms before its exec).
    pub start: DateTime<Utc>,
    /// Start → the plugin's last thread exited; null when it still ran as recording stopped.
    pub duration_ns: Option<u64>,
    /// Exit status, or the signal that killed it; both null while it runs.
    pub exit_status: Option<i32>,
    pub exit_signal: Option<i32>,
    /// The environment was longer than dad-trace copies: variables past 16 KiB are unseen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub env_truncated: bool,
    /// The W3C trace context the caller passed (`TRACEPARENT`, `TRACESTATE`), when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<super::trace_context::TraceParent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<String>,
    /// Plugins this one ran (IPAM such as host-local, or tools), and theirs: a flat list in
    /// start order, the tree by `ppid`. Always empty on a delegate itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<CniCall>,
}

impl CniCall {
    #[must_use]
    pub fn end(&self) -> Option<DateTime<Utc>> {
        let duration = chrono::Duration::nanoseconds(i64::try_from(self.duration_ns?).ok()?);
        self.start.checked_add_signed(duration)
    }

    #[must_use]
    pub fn is(&self, command: &str) -> bool {
        self.command.as_deref() == Some(command)
    }

    /// The plugin's file name (`ptp` of `/opt/cni/bin/ptp`).
    #[must_use]
    pub fn plugin_name(&self) -> &str {
        self.plugin.rsplit('/').next().unwrap_or(&self.plugin)
    }
}

/// The moments of one pod's start, each when known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The runtime created the sandbox (CRI `PodSandboxStatus.created_at`).
    pub sandbox_created: Option<DateTime<Utc>>,
    /// First CNI ADD started, last one ended (a chain of plugins is one ADD each).
    pub add_start: Option<DateTime<Utc>>,
    pub add_end: Option<DateTime<Utc>>,
    /// First address of the pod's namespace tentative, last one settled.
    pub first_tentative: Option<DateTime<Utc>>,
    pub last_settled: Option<DateTime<Utc>>,
    /// The pod's first container started (CRI `ContainerStatus.started_at`).
    pub container_started: Option<DateTime<Utc>>,
}

/// One pod network namespace: how long its start took and how much of it was DAD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStart {
    pub netns_inode: u32,
    pub netns_cookie: Option<u64>,
    pub netns_name: Option<String>,
    pub pod: Option<Pod>,
    /// The node, on merged sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// First CNI ADD start → last ADD end; null when no ADD was traced.
    pub cni_add_ns: Option<u64>,
    /// The pod's tentative wait (first address tentative → last settled) inside the ADD when
    /// an ADD was traced, else the whole wait; null when no address of it was traced.
    pub dad_wait_ns: Option<u64>,
    /// With optimistic addresses: how long the ADD kept waiting for DAD to end although every
    /// address was already usable (the plugin's wait, not the kernel's); null without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_while_usable_ns: Option<u64>,
    /// Sandbox created → first container started, where the runtime says both.
    pub pod_start_ns: Option<u64>,
    pub timeline: Timeline,
    /// Top-level calls for this namespace (ADD, CHECK, DEL), in start order.
    pub cni_calls: Vec<CniCall>,
    /// The namespace's own DAD settings, read when its first address appeared; null when
    /// no address of it was seen, or in sessions from before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<PodSettings>,
}

impl PodStart {
    /// How a person names the pod (see [`AddressEvent::label_of`]).
    #[must_use]
    pub fn label(&self) -> String {
        AddressEvent::label_of(false, self.pod.as_ref(), self.netns_name.as_deref(), self.netns_inode)
    }

    /// DAD's wait as a fraction of the ADD, and of the pod's start.
    #[must_use]
    pub fn dad_share_of_add(&self) -> Option<f64> {
        share(self.dad_wait_ns?, self.cni_add_ns?)
    }

    #[must_use]
    pub fn dad_share_of_start(&self) -> Option<f64> {
        share(self.dad_wait_ns?, self.pod_start_ns?)
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64).min(1.0))
}

/// Whether and how CNI calls were followed in a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniTracing {
    /// Plugin directories whose execs were followed.
    pub bin_dirs: Vec<String>,
    /// Exec or exit records the kernel could not queue, and processes it could not follow:
    /// calls may be missing or unfinished when this is not 0.
    pub lost_records: u64,
    /// Execs whose environment was longer than dad-trace copies.
    pub env_truncated: u64,
    /// Top-level calls tied to no pod namespace (no `CNI_NETNS`, one that could not be found,
    /// `VERSION`), in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls_without_pod: Vec<CniCall>,
}

/// The length of `[start, end]` inside `[within_start, within_end]`, 0 when they do not meet.
#[must_use]
pub fn overlap_ns(
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    (within_start, within_end): (DateTime<Utc>, DateTime<Utc>),
) -> u64 {
    let from = start.max(within_start);
    let to = end.min(within_end);
    (to - from)
        .num_nanoseconds()
        .and_then(|ns| u64::try_from(ns).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        "2026-11-27T10:00:00Z".parse::<DateTime<Utc>>().expect("literal") + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn overlap_clips_to_the_window() {
        assert_eq!(overlap_ns((at(10), at(1900)), (at(0), at(2000))), 1_890_000_000);
        assert_eq!(overlap_ns((at(10), at(2500)), (at(0), at(2000))), 1_990_000_000);
        assert_eq!(overlap_ns((at(3000), at(3500)), (at(0), at(2000))), 0, "after the ADD");
    }

    #[test]
    fn shares_are_fractions_capped_at_one() {
        let pod = PodStart {
            netns_inode: 1,
            netns_cookie: None,
            netns_name: Some("cni-1".into()),
            pod: None,
            node: None,
            cni_add_ns: Some(2_000_000_000),
            dad_wait_ns: Some(1_900_000_000),
            waited_while_usable_ns: None,
            pod_start_ns: Some(4_000_000_000),
            timeline: Timeline::default(),
            cni_calls: Vec::new(),
            settings: None,
        };
        assert_eq!(pod.dad_share_of_add(), Some(0.95));
        assert_eq!(pod.dad_share_of_start(), Some(0.475));
        assert_eq!(pod.label(), "cni-1");
        let unknown = PodStart {
            pod_start_ns: None,
            cni_add_ns: Some(0),
            ..pod
        };
        assert_eq!((unknown.dad_share_of_add(), unknown.dad_share_of_start()), (None, None));
    }
}
