//! CNI calls from the kernel's process records: each followed exec opens a process, its last
//! exit closes it. A process whose caller is followed is a delegate (IPAM, or a tool the
//! plugin ran) and belongs to its caller's top-level call; a top-level call is finished when
//! its own process exits, with whatever delegates it had.
//!
//! Everything here is bounded: a tenant can run plugins (or anything under a plugin
//! directory) as often and as deep as it likes.
use std::collections::HashMap;

use super::clock::Clock;
use crate::{
    kernel::procs::{Exec, Exit, ProcEvent},
    session::{
        AddressEvent, CniCall, Pod,
        trace_context::{self, TraceParent},
    },
};

/// Processes followed at once; past it the oldest is given up (its exit, if it comes, is
/// ignored). The kernel follows at most `TRACKED_MAX` (8192).
pub const MAX_OPEN: usize = 4096;
/// Delegates kept per top-level call; more are counted, not kept.
pub const MAX_DELEGATES: usize = 64;

/// A finished (or, at the end, unfinished) top-level call and what it is tied to.
#[derive(Clone, Debug, PartialEq)]
pub struct TracedCall {
    pub call: CniCall,
    /// The inode of `CNI_NETNS`, resolved when the call started.
    pub netns_inode: Option<u32>,
    /// The pod the runtime named in `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub pod: Option<Pod>,
}

impl TracedCall {
    /// The file name of `CNI_NETNS` (containerd's `cni-<uuid>`, the scenario's pod name).
    #[must_use]
    pub fn netns_name(&self) -> Option<&str> {
        self.call
            .netns
            .as_deref()
            .and_then(|path| path.rsplit('/').next())
            .filter(|name| !name.is_empty())
    }

    /// How a person names the call's pod (see [`AddressEvent::label_of`]).
    #[must_use]
    pub fn label(&self) -> String {
        AddressEvent::label_of(
            false,
            self.pod.as_ref(),
            self.netns_name(),
            self.netns_inode.unwrap_or(0),
        )
    }
}

struct Open {
    call: CniCall,
    /// The tgid of the top-level call this process belongs to; itself for a top-level one.
    top: u32,
    netns_inode: Option<u32>,
    /// For a top-level call: the pod `CNI_ARGS` names.
    pod: Option<Pod>,
    /// For a top-level call: its delegates' pids, open or finished.
    delegates: Vec<u32>,
    finished_delegates: Vec<CniCall>,
    dropped_delegates: usize,
    opened: u64,
}

/// Follows process records into calls.
#[derive(Default)]
pub struct CallTracker {
    open: HashMap<u32, Open>,
    serial: u64,
    /// Processes given up because [`MAX_OPEN`] were followed at once.
    pub given_up: u64,
    /// Exits of processes not followed (the exec was missed or given up).
    pub unknown_exits: u64,
}

/// The pod a runtime names in `CNI_ARGS`, as Kubernetes runtimes pass it.
#[must_use]
pub fn pod_from_args(exec: &Exec) -> Option<Pod> {
    let env = &exec.env;
    let name = env.arg("K8S_POD_NAME")?;
    Some(Pod {
        namespace: env.arg("K8S_POD_NAMESPACE").map(str::to_string),
        name: Some(name.to_string()),
        uid: env.arg("K8S_POD_UID").map(str::to_string),
        container_id: env
            .arg("K8S_POD_INFRA_CONTAINER_ID")
            .map(str::to_string)
            .or_else(|| env.container_id.clone()),
        pid: None,
        comm: None,
    })
}

impl CallTracker {
    /// Feeds one record. `resolve` is asked, while the call runs, for the inode of a new
    /// top-level call's `CNI_NETNS`. Returns the top-level call this record finished.
    pub fn on_event(
        &mut self,
        event: ProcEvent,
        clock: Clock,
        resolve: impl FnOnce(&Exec) -> Option<u32>,
    ) -> Option<TracedCall> {
        match event {
            ProcEvent::Exec(exec) => {
                self.exec(&exec, clock, resolve);
                None
            }
            ProcEvent::Exit(exit) => self.exit(&exit, clock),
        }
    }

    fn exec(&mut self, exec: &Exec, clock: Clock, resolve: impl FnOnce(&Exec) -> Option<u32>) {
        let call = CniCall {
            command: exec.env.command.clone(),
            plugin: exec.path.clone(),
            container_id: exec.env.container_id.clone(),
            netns: exec.env.netns.clone(),
            ifname: exec.env.ifname.clone(),
            pid: exec.tgid,
            ppid: exec.ppid,
            start: clock.wall(exec.forked_ns),
            duration_ns: None,
            exit_status: None,
            exit_signal: None,
            env_truncated: exec.env_truncated,
            trace_parent: exec.env.traceparent.as_deref().and_then(TraceParent::parse),
            trace_state: exec.env.tracestate.as_deref().and_then(trace_context::trace_state),
            delegates: Vec::new(),
        };
        if let Some(open) = self.open.get_mut(&exec.tgid) {
            // A re-exec (a wrapper that execs the real plugin): the same call, now this binary.
            let start = open.call.start;
            open.call = CniCall { start, ..call };
            return;
        }
        let parent_top = self.open.get(&exec.ppid).map(|parent| parent.top);
        let top = parent_top.unwrap_or(exec.tgid);
        if let Some(parent) = parent_top.and_then(|top| self.open.get_mut(&top)) {
            if parent.delegates.len() < MAX_DELEGATES {
                parent.delegates.push(exec.tgid);
            } else {
                parent.dropped_delegates += 1;
                return;
            }
        }
        let netns_inode = if parent_top.is_none() && call.netns.is_some() {
            resolve(exec)
        } else {
            None
        };
        if self.open.len() >= MAX_OPEN {
            self.give_up_oldest();
        }
        self.serial += 1;
        self.open.insert(
            exec.tgid,
            Open {
                call,
                top,
                netns_inode,
                pod: parent_top.is_none().then(|| pod_from_args(exec)).flatten(),
                delegates: Vec::new(),
                finished_delegates: Vec::new(),
                dropped_delegates: 0,
                opened: self.serial,
            },
        );
    }

    fn give_up_oldest(&mut self) {
        if let Some(oldest) = self
            .open
            .iter()
            .min_by_key(|(_, open)| open.opened)
            .map(|(tgid, _)| *tgid)
        {
            self.open.remove(&oldest);
            self.given_up += 1;
        }
    }

    fn exit(&mut self, exit: &Exit, clock: Clock) -> Option<TracedCall> {
        let Some(mut open) = self.open.remove(&exit.tgid) else {
            self.unknown_exits += 1;
            return None;
        };
        let end = clock.wall(exit.ts_ns);
        open.call.duration_ns = (end - open.call.start)
            .num_nanoseconds()
            .and_then(|ns| u64::try_from(ns).ok());
        open.call.exit_status = exit.status();
        open.call.exit_signal = exit.signal();
        if open.top != exit.tgid {
            if let Some(top) = self.open.get_mut(&open.top) {
                top.finished_delegates.push(open.call);
            }
            return None;
        }
        Some(self.finish(exit.tgid, open))
    }

    /// A top-level call with its delegates; those still running are listed unfinished.
    fn finish(&mut self, tgid: u32, mut open: Open) -> TracedCall {
        let mut delegates = std::mem::take(&mut open.finished_delegates);
        for pid in &open.delegates {
            if let Some(running) = self.open.remove(pid) {
                delegates.push(running.call);
            }
        }
        delegates.sort_by_key(|call| call.start);
        if open.dropped_delegates > 0 {
            log::debug!(
                "CNI call {} (pid {tgid}) ran {} more processes than the {MAX_DELEGATES} kept",
                open.call.plugin,
                open.dropped_delegates
            );
        }
        open.call.delegates = delegates;
        TracedCall {
            call: open.call,
            netns_inode: open.netns_inode,
            pod: open.pod,
        }
    }

    /// The top-level calls still running (recording stops): listed without an end.
    pub fn drain(&mut self) -> Vec<TracedCall> {
        let tops: Vec<u32> = self
            .open
            .iter()
            .filter(|(tgid, open)| open.top == **tgid)
            .map(|(tgid, _)| *tgid)
            .collect();
        let mut calls: Vec<TracedCall> = tops
            .into_iter()
            .filter_map(|tgid| {
                let open = self.open.remove(&tgid)?;
                Some(self.finish(tgid, open))
            })
            .collect();
        self.open.clear();
        calls.sort_by_key(|traced| traced.call.start);
        calls
    }

    #[must_use]
    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use dad_trace_common::{EXEC_BY_PARENT, EXEC_BY_PREFIX, EXEC_BY_SELF};

    use super::*;
    use crate::kernel::procs::{bytes_of, decode, exec_record};

    const MS: u64 = 1_000_000;

    fn epoch() -> DateTime<Utc> {
        "2026-11-27T10:00:00Z".parse().expect("literal")
    }

    fn exec(ts_ms: u64, tgid: u32, ppid: u32, path: &str, command: &str, flags: u32) -> ProcEvent {
        let command = format!("CNI_COMMAND={command}");
        let env = [
            command.as_str(),
            "CNI_CONTAINERID=sandbox-1",
            "CNI_NETNS=/run/netns/cni-1",
            "CNI_IFNAME=eth0",
            "CNI_ARGS=K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0",
        ];
        decode(&bytes_of(&*exec_record(ts_ms * MS, tgid, ppid, path, &env, flags))).expect("decodes")
    }

    fn exit(ts_ms: u64, tgid: u32, wait_status: u32) -> ProcEvent {
        ProcEvent::Exit(Exit {
            ts_ns: ts_ms * MS,
            exec_ns: 0,
            tgid,
            tid: tgid + 3,
            wait_status,
        })
    }

    fn feed(tracker: &mut CallTracker, events: Vec<ProcEvent>) -> Vec<TracedCall> {
        let clock = Clock::at(epoch());
        events
            .into_iter()
            .filter_map(|event| tracker.on_event(event, clock, |_| Some(4_026_532_777)))
            .collect()
    }

    /// ptp delegates IPAM to host-local, which exits first; ptp waits for DAD and exits last.
    #[test]
    fn a_delegated_plugin_belongs_to_its_callers_call() {
        let mut tracker = CallTracker::default();
        let calls = feed(
            &mut tracker,
            vec![
                exec(100, 50, 10, "/usr/lib/cni/ptp", "ADD", EXEC_BY_PREFIX),
                exec(
                    104,
                    55,
                    50,
                    "/usr/lib/cni/host-local",
                    "ADD",
                    EXEC_BY_PREFIX | EXEC_BY_PARENT,
                ),
                exit(113, 55, 0),
                exit(2050, 50, 0),
            ],
        );
        assert_eq!(calls.len(), 1, "one top-level call");
        let traced = &calls[0];
        assert_eq!(traced.netns_inode, Some(4_026_532_777));
        assert_eq!(traced.call.command.as_deref(), Some("ADD"));
        assert_eq!(traced.call.plugin_name(), "ptp");
        // Started at the fork (1 ms before the exec in the fixture), ended at the last exit.
        assert_eq!(traced.call.start, epoch() + chrono::Duration::milliseconds(99));
        assert_eq!(traced.call.duration_ns, Some(1951 * MS));
        assert_eq!((traced.call.exit_status, traced.call.exit_signal), (Some(0), None));
        assert_eq!(traced.call.delegates.len(), 1);
        let ipam = &traced.call.delegates[0];
        assert_eq!(
            (ipam.plugin_name(), ipam.ppid, ipam.duration_ns),
            ("host-local", 50, Some(10 * MS))
        );
        let pod = traced.pod.as_ref().expect("named in CNI_ARGS");
        assert_eq!(
            (pod.namespace.as_deref(), pod.name.as_deref()),
            (Some("team-a"), Some("web-0"))
        );
        assert_eq!(pod.container_id.as_deref(), Some("sandbox-1"));
        assert_eq!(tracker.open_len(), 0);
    }

    #[test]
    fn failures_signals_reexecs_and_unknown_exits() {
        let mut tracker = CallTracker::default();
        let calls = feed(
            &mut tracker,
            vec![
                exec(10, 60, 10, "/opt/cni/bin/wrapper", "DEL", EXEC_BY_PREFIX),
                // The wrapper execs the real plugin: the same process, the same call.
                exec(13, 60, 10, "/opt/cni/bin/real", "DEL", EXEC_BY_SELF),
                exit(30, 60, 0x100),
                exec(30, 61, 10, "/opt/cni/bin/ptp", "ADD", EXEC_BY_PREFIX),
                exit(35, 61, 0x9),
                exit(40, 99, 0),
            ],
        );
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].call.plugin, "/opt/cni/bin/real");
        assert_eq!(calls[0].call.duration_ns, Some(21 * MS), "from the first fork");
        assert_eq!(calls[0].call.exit_status, Some(1));
        assert_eq!((calls[1].call.exit_status, calls[1].call.exit_signal), (None, Some(9)));
        assert_eq!(tracker.unknown_exits, 1);
    }

    #[test]
    fn running_calls_are_drained_unfinished_and_delegates_are_bounded() {
        let mut tracker = CallTracker::default();
        let mut events = vec![exec(0, 70, 10, "/opt/cni/bin/ptp", "ADD", EXEC_BY_PREFIX)];
        for child in 0..(MAX_DELEGATES as u32 + 10) {
            events.push(exec(1, 1000 + child, 70, "/usr/sbin/iptables", "ADD", EXEC_BY_PARENT));
        }
        assert!(feed(&mut tracker, events).is_empty());
        let drained = tracker.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0].call.duration_ns, None);
        assert_eq!(drained[0].call.delegates.len(), MAX_DELEGATES);
        assert!(drained[0].call.delegates.iter().all(|call| call.duration_ns.is_none()));
        assert_eq!(tracker.open_len(), 0);
    }

    #[test]
    fn the_oldest_is_given_up_past_the_bound() {
        let mut tracker = CallTracker::default();
        let events: Vec<ProcEvent> = (0..MAX_OPEN as u32 + 5)
            .map(|tgid| {
                exec(
                    u64::from(tgid),
                    tgid + 100,
                    1,
                    "/opt/cni/bin/x",
                    "VERSION",
                    EXEC_BY_PREFIX,
                )
            })
            .collect();
        feed(&mut tracker, events);
        assert_eq!((tracker.open_len(), tracker.given_up), (MAX_OPEN, 5));
    }
}
