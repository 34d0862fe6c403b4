//! The consumer side of a recording: kernel readings → the phase tracker → enrichment →
//! an [`Output`], and the session at the end. Nothing here touches the kernel: readings
//! arrive as values and enrichment and output are traits, so unit tests drive it with a fake
//! feed. Enrichment
//! may block (netlink, files): on an async runtime, call in `block_in_place`.
use std::{collections::HashSet, net::Ipv6Addr};

use chrono::{DateTime, Utc};

use super::{
    clock::Clock,
    cni::{CallTracker, TracedCall},
    identity::{SandboxIdentity, merge_identity},
    podstart,
    sockets::{self, SocketErrors, Window},
    track::{Finished, Tracker},
};
use crate::{
    kernel::{
        events::{NetnsId, Observation},
        loader::Reading,
        procs::{Exec, ProcEvent},
        sockets::SocketFailure,
    },
    node::netns::Inet6Row,
    session::{AddressEvent, CniTracing, Pod, PodSettings, Session, SocketError, Unfinished},
};

/// What the recorder needs from enrichment (on a node, the `Enricher` of `record::enrich`).
pub trait Enrich {
    /// An address of this namespace was seen: resolve the namespace while it still exists
    /// (it may be gone by the time its addresses finish). The first time, a pod namespace's
    /// DAD settings are read and returned (or why they could not be).
    fn note(&mut self, netns: NetnsId) -> Option<PodSettings>;
    /// A finished address as the kernel described it: add what is known about it. It may be
    /// held back while its pod has no name yet.
    fn finish(&mut self, event: AddressEvent);
    /// Finished addresses ready for the sinks; every one still held when `all`.
    fn ready(&mut self, all: bool) -> Vec<AddressEvent>;
    /// Names learnt since these events went to the sinks (the runtime may list a sandbox
    /// only after its CNI ADD), applied to the saved session.
    fn name_late(&mut self, events: &mut [AddressEvent]);
    /// The addresses in a namespace now; `None` when it is gone.
    fn addresses(&mut self, netns: NetnsId) -> Option<Vec<Inet6Row>>;
    /// A CNI call started: the namespace its `CNI_NETNS` names, asked while it surely exists.
    fn call_netns(&mut self, exec: &Exec) -> Option<u32>;
    /// What the runtime says of the sandbox with this namespace (or this id, the calls'
    /// `CNI_CONTAINERID`): who it is, when it and its first container started.
    fn sandbox_of(&mut self, inode: Option<u32>, sandbox_id: Option<&str>) -> Option<SandboxIdentity>;
    /// Namespaces with finished addresses held back for a name (their pods are not done).
    fn held_netns(&self) -> Vec<u32>;
    /// The node's own namespace (no pod's).
    fn host_inode(&self) -> u32;
    /// Once a second: forget what is no longer needed.
    fn tick(&mut self);
    /// Who a namespace is (its name, pod), and with `pid` the container of that process.
    fn whose(&mut self, netns_inode: u32, pid: Option<u32>) -> Whose;
}

/// A process as a socket error names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Whose {
    pub host_netns: bool,
    pub netns_name: Option<String>,
    pub pod: Option<Pod>,
    pub container_id: Option<String>,
}

/// Where the recorder hands what finished (on a node, [`crate::output::sinks::Sinks`]: the
/// live view, metrics, the session's events). Each address and each top-level CNI call is
/// handed over exactly once.
pub trait Output {
    fn address(&mut self, event: AddressEvent);
    fn call(&mut self, traced: TracedCall);
    /// A socket error seen for the first time (`new`), or `added` more failures of it.
    fn socket_error(&mut self, error: &SocketError, new: bool, added: u64);
    /// An address has been tentative longer than the recording's `stuck_after`: said once,
    /// while it lasts.
    fn stuck(&mut self, stuck: &Stuck);
    /// Whether the output follows pods, so sweeps must say which namespaces are busy.
    fn follows_pods(&self) -> bool;
    /// Once a second: `busy` holds the namespaces with an address in flight or held for a
    /// name (empty unless [`Output::follows_pods`]).
    fn sweep(&mut self, sweep: &Sweep);
    /// An interval of the live view ended.
    fn tick(&mut self, now: DateTime<Utc>);
    /// The recording ended; with `last_interval`, a partial last interval is shown.
    fn close(&mut self, now: DateTime<Utc>, last_interval: bool);
    /// A pod namespace's DAD settings, read when its first address was seen.
    fn settings(&mut self, netns: NetnsId, settings: PodSettings);
    /// What was kept for the session file.
    fn into_kept(self) -> Kept;
}

/// What an [`Output`] kept for the session file.
#[derive(Default)]
pub struct Kept {
    pub events: Vec<AddressEvent>,
    pub calls: Vec<TracedCall>,
    /// Pod namespaces' settings, in the order they were read.
    pub settings: Vec<(NetnsId, PodSettings)>,
}

/// What a sweep tells the outputs.
pub struct Sweep {
    pub busy: HashSet<u32>,
    pub in_flight: usize,
    pub lost_events: u64,
    /// How long the oldest address in flight has been tentative, and how many have been
    /// longer than `stuck_after`.
    pub oldest_ns: Option<u64>,
    pub stuck: usize,
}

/// An address tentative for longer than it should be: DAD waits for a link that is down, or
/// nothing ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    pub whose: Whose,
    pub netns_inode: u32,
    pub ifname: String,
    pub addr: Ipv6Addr,
    /// Since when (wall clock), and how long so far.
    pub since: DateTime<Utc>,
    pub tentative_ns: u64,
}

/// Whether an address still sits in its namespace, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Tentative,
    Settled,
    Gone,
}

/// Whether an address is in `rows` (a namespace's addresses; `None`: the namespace is gone).
#[must_use]
pub fn presence(rows: Option<&[Inet6Row]>, ifindex: i32, addr: Ipv6Addr) -> Presence {
    rows.into_iter()
        .flatten()
        .find(|row| row.addr == addr && i64::from(row.ifindex) == i64::from(ifindex))
        .map_or(Presence::Gone, |row| {
            if row.tentative() {
                Presence::Tentative
            } else {
                Presence::Settled
            }
        })
}

impl Stuck {
    /// The namespace as addresses are labelled.
    #[must_use]
    pub fn label(&self) -> String {
        AddressEvent::label_of(
            self.whose.host_netns,
            self.whose.pod.as_ref(),
            self.whose.netns_name.as_deref(),
            self.netns_inode,
        )
    }
}

/// A finished address as the kernel saw it; enrichment adds names, pod, peer and holders.
#[must_use]
pub fn kernel_event(finished: &Finished, clock: Clock) -> AddressEvent {
    let obs = &finished.last;
    AddressEvent {
        time: clock.wall(finished.end_ns),
        netns_inode: obs.netns.inode,
        netns_cookie: (obs.netns.cookie != 0).then_some(obs.netns.cookie),
        netns_name: None,
        host_netns: false,
        pod: None,
        ifname: obs.ifname.clone(),
        ifindex: obs.ifindex,
        peer: None,
        addr: obs.addr,
        tentative_ns: finished.tentative_ns(),
        dad_ns: finished.dad_ns(),
        link_wait_ns: finished.link_wait_ns(),
        delay_ns: finished.delay_ns(),
        probing_ns: finished.probing_ns(),
        optimistic: finished.optimistic,
        outcome: finished.outcome,
        partial: finished.partial,
        node: None,
        duplicate_of: Vec::new(),
    }
}

/// A socket error as the session keeps it, from its first read and who the process is.
fn socket_error(tally: &sockets::Tally, whose: Whose, clock: Clock) -> SocketError {
    let first = &tally.first;
    let mut error = SocketError {
        syscall: first.syscall.name().into(),
        errno: "EADDRNOTAVAIL".into(),
        comm: first.comm.clone(),
        pid: first.pid,
        container_id: whose.container_id,
        netns_inode: first.netns_inode,
        netns_name: whose.netns_name,
        host_netns: whose.host_netns,
        pod: whose.pod,
        addr: first.addr,
        count: tally.count,
        time: clock.wall(first.first_ns),
        first_ns: first.first_ns,
        last_ns: tally.last_ns,
        tentative_for_ns: None,
        tentative_addr: None,
    };
    set_cause(&mut error, tally.cause);
    error
}

fn set_cause(error: &mut SocketError, cause: Option<Window>) {
    error.tentative_for_ns = cause.map(|window| error.first_ns.saturating_sub(window.start_ns));
    error.tentative_addr = cause.map(|window| window.addr);
}

/// How long a dead address is remembered: events queued before its death was noticed
/// arrive within moments.
const DEAD_MEMORY_NS: u64 = 60_000_000_000;

/// What a sweep found for a silent address: acted on at the next sweep, and only if no event
/// about the address arrived meanwhile. The namespace is read now, but the kernel may have
/// sent the address's last events just before, still on their way through the ring buffer:
/// acting at once would abort an address that settled (or drop one whose settle event is
/// queued).
struct Look {
    first: Observation,
    looked_ns: u64,
    presence: Presence,
}

pub struct Recorder<E, O> {
    tracker: Tracker,
    calls: CallTracker,
    /// Whether CNI calls are followed, and how (the session's `cni`).
    cni: Option<CniTracing>,
    enricher: E,
    output: O,
    clock: Clock,
    /// The session's header; events come from the output at the end.
    session: Session,
    undecodable: u64,
    looks: Vec<Look>,
    sockets: SocketErrors,
    /// In flight this long, an address is stuck; those said so, by kernel address.
    stuck_ns: u64,
    said_stuck: HashSet<u64>,
    socket_keys_forgotten: u64,
    /// The socket errors as the session keeps them, named at first sight.
    socket_errors: std::collections::BTreeMap<sockets::Key, SocketError>,
}

impl<E: Enrich, O: Output> Recorder<E, O> {
    #[must_use]
    pub fn new(enricher: E, output: O, clock: Clock, session: Session) -> Self {
        Self {
            tracker: Tracker::default(),
            calls: CallTracker::default(),
            cni: None,
            enricher,
            output,
            clock,
            session,
            undecodable: 0,
            looks: Vec::new(),
            sockets: SocketErrors::default(),
            stuck_ns: u64::MAX,
            said_stuck: HashSet::new(),
            socket_keys_forgotten: 0,
            socket_errors: std::collections::BTreeMap::new(),
        }
    }

    /// The programs were attached at `attached_ns` (`CLOCK_MONOTONIC`): an address first
    /// seen at its end is timed from there.
    #[must_use]
    pub fn attached_at(mut self, attached_ns: u64) -> Self {
        self.tracker = Tracker::attached_at(attached_ns);
        self
    }

    /// Says an address is stuck once it has been tentative for `stuck_ns`.
    #[must_use]
    pub fn stuck_after(mut self, stuck_ns: u64) -> Self {
        self.stuck_ns = stuck_ns;
        self
    }

    /// Follows CNI calls too: the kernel sends their records, from these plugin directories.
    #[must_use]
    pub fn with_cni(mut self, bin_dirs: Vec<String>) -> Self {
        self.cni = Some(CniTracing {
            bin_dirs,
            ..CniTracing::default()
        });
        self
    }

    #[must_use]
    pub fn output(&self) -> &O {
        &self.output
    }

    pub fn on_reading(&mut self, reading: Reading) {
        match reading {
            Reading::Observation(obs) => {
                log::trace!("{obs}");
                if let Some(settings) = self.enricher.note(obs.netns) {
                    self.output.settings(obs.netns, settings);
                }
                if let Some(finished) = self.tracker.observe(&obs) {
                    self.finish(&finished);
                }
            }
            Reading::Process(event) => self.on_process(event),
            Reading::Undecodable(e) => {
                self.undecodable += 1;
                log::warn!("{e}");
            }
        }
    }

    fn on_process(&mut self, event: ProcEvent) {
        log::trace!("{event:?}");
        let (calls, enricher, clock) = (&mut self.calls, &mut self.enricher, self.clock);
        let finished = calls.on_event(event, clock, |exec: &Exec| enricher.call_netns(exec));
        if let Some(mut traced) = finished {
            let sandbox = self
                .enricher
                .sandbox_of(traced.netns_inode, traced.call.container_id.as_deref());
            if let Some(identity) = sandbox {
                merge_identity(&mut traced.pod, identity);
            }
            self.output.call(traced);
        }
    }

    fn finish(&mut self, finished: &Finished) {
        self.sockets.ended(Window {
            netns_inode: finished.last.netns.inode,
            addr: finished.last.addr,
            start_ns: finished.start_ns,
            end_ns: Some(finished.end_ns),
        });
        let event = kernel_event(finished, self.clock);
        self.enricher.finish(event);
        self.flush(false);
    }

    fn flush(&mut self, all: bool) {
        for event in self.enricher.ready(all) {
            self.output.address(event);
        }
    }

    /// Once a second: releases held addresses, updates the gauges, and checks addresses
    /// silent for `stale_ns` in their namespace — the tracepoint backend cannot see a DAD work
    /// item cancelled (address, interface or namespace deleted). What a check finds is acted
    /// on at the next sweep (see [`Look`]).
    pub fn sweep(&mut self, now_ns: u64, stale_ns: u64, lost_events: u64) {
        self.flush(false);
        // A pod is not done while an address of it is in flight or held for a name.
        let busy = if self.output.follows_pods() {
            self.tracker
                .in_flight()
                .map(|entry| entry.first.netns.inode)
                .chain(self.enricher.held_netns())
                .collect()
        } else {
            HashSet::new()
        };
        let oldest_ns = self
            .tracker
            .in_flight()
            .map(|entry| now_ns.saturating_sub(entry.start_ns))
            .max();
        let stuck = self.say_stuck(now_ns);
        self.output.sweep(&Sweep {
            busy,
            in_flight: self.tracker.in_flight_len(),
            lost_events,
            oldest_ns,
            stuck,
        });
        self.tracker.prune(now_ns.saturating_sub(DEAD_MEMORY_NS));
        self.sockets.prune(now_ns.saturating_sub(DEAD_MEMORY_NS));
        self.enricher.tick();
        self.act_on_looks(lost_events);
        self.look_at_silent(now_ns, stale_ns);
    }

    /// Says each address newly past `stuck_ns`; returns how many are past it now.
    fn say_stuck(&mut self, now_ns: u64) -> usize {
        let stuck: Vec<_> = self
            .tracker
            .in_flight()
            .filter(|entry| now_ns.saturating_sub(entry.start_ns) >= self.stuck_ns)
            .map(|entry| (entry.first.clone(), entry.start_ns))
            .collect();
        let current: HashSet<u64> = stuck.iter().map(|(first, _)| first.ifa).collect();
        // An address that ended (or was found gone) can be stuck again if it comes back.
        self.said_stuck.retain(|ifa| current.contains(ifa));
        for (first, start_ns) in &stuck {
            if self.said_stuck.insert(first.ifa) {
                let whose = self.enricher.whose(first.netns.inode, None);
                self.output.stuck(&Stuck {
                    whose,
                    netns_inode: first.netns.inode,
                    ifname: first.ifname.clone(),
                    addr: first.addr,
                    since: self.clock.wall(*start_ns),
                    tentative_ns: now_ns.saturating_sub(*start_ns),
                });
            }
        }
        stuck.len()
    }

    fn act_on_looks(&mut self, lost_events: u64) {
        for look in std::mem::take(&mut self.looks) {
            let first = &look.first;
            let unchanged = self
                .tracker
                .get(first.ifa)
                .is_some_and(|entry| entry.first.same_address(first) && entry.last_seen_ns <= look.looked_ns);
            if !unchanged {
                continue;
            }
            match look.presence {
                Presence::Tentative => {}
                Presence::Gone => {
                    if let Some(finished) = self.tracker.abort(first.ifa, look.looked_ns) {
                        self.finish(&finished);
                    }
                }
                Presence::Settled => {
                    log::warn!(
                        "{} on {} settled unseen ({lost_events} events lost): its delay is unknown",
                        first.addr,
                        first.ifname
                    );
                    self.tracker.abort(first.ifa, look.looked_ns);
                }
            }
        }
    }

    fn look_at_silent(&mut self, now_ns: u64, stale_ns: u64) {
        let mut stale: Vec<_> = self
            .tracker
            .in_flight()
            .filter(|entry| now_ns.saturating_sub(entry.last_seen_ns) > stale_ns)
            .map(|entry| entry.first.clone())
            .collect();
        // One look per namespace, however many of its addresses went silent.
        stale.sort_by_key(|first| first.netns);
        let mut looked: Option<(NetnsId, Option<Vec<Inet6Row>>)> = None;
        for first in stale {
            if looked.as_ref().is_none_or(|(netns, _)| *netns != first.netns) {
                let rows = self.enricher.addresses(first.netns);
                looked = Some((first.netns, rows));
            }
            let rows = looked.as_ref().and_then(|(_, rows)| rows.as_deref());
            let presence = presence(rows, first.ifindex, first.addr);
            if presence != Presence::Tentative {
                self.looks.push(Look {
                    first,
                    looked_ns: now_ns,
                    presence,
                });
            }
        }
    }

    /// A read of the kernel's socket error counts at `now_ns`: what is new or grew goes to
    /// the output, each tied to the tentative address that caused it, if one did.
    pub fn socket_counts(&mut self, read: Vec<SocketFailure>, now_ns: u64) {
        let in_flight: Vec<Window> = self
            .tracker
            .in_flight()
            .map(|entry| Window {
                netns_inode: entry.first.netns.inode,
                addr: entry.first.addr,
                start_ns: entry.start_ns,
                end_ns: None,
            })
            .collect();
        let changes = self.sockets.update(read, &in_flight, now_ns);
        for key in self.sockets.take_forgotten() {
            self.socket_errors.remove(&key);
            self.socket_keys_forgotten += 1;
        }
        for change in changes {
            let Some(tally) = self.sockets.get(&change.key) else {
                continue;
            };
            let error = match self.socket_errors.entry(change.key) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let whose = self.enricher.whose(tally.first.netns_inode, Some(tally.first.pid));
                    entry.insert(socket_error(tally, whose, self.clock))
                }
            };
            error.count = tally.count;
            error.last_ns = tally.last_ns;
            set_cause(error, tally.cause);
            self.output.socket_error(error, change.new, change.added);
        }
    }

    /// Socket error keys forgotten to stay within the bound (see `record::sockets`).
    #[must_use]
    pub fn socket_keys_forgotten(&self) -> u64 {
        self.socket_keys_forgotten
    }

    /// An interval of the live view ended at `now_ns` (monotonic).
    pub fn tick(&mut self, now_ns: u64) {
        self.output.tick(self.clock.wall(now_ns));
    }

    /// The recording stopped at `now_ns`: held addresses go to the output, and the live view
    /// shows its last pods and, with `last_interval`, its partial last interval.
    pub fn close_live(&mut self, now_ns: u64, last_interval: bool) {
        self.flush(true);
        self.output.close(self.clock.wall(now_ns), last_interval);
    }

    /// Ends the session: every held address is committed, addresses still tentative are
    /// listed, not lost.
    #[must_use]
    pub fn into_session(mut self, lost_events: u64, now_ns: u64) -> Session {
        self.flush(true);
        if self.undecodable > 0 {
            log::warn!("{} ring buffer records could not be decoded", self.undecodable);
        }
        let mut session = self.session;
        let Kept {
            events,
            mut calls,
            settings,
        } = self.output.into_kept();
        session.events = events;
        self.enricher.name_late(&mut session.events);
        if let Some(mut cni) = self.cni {
            // Calls still running: listed without an end.
            calls.extend(self.calls.drain());
            let enricher = &mut self.enricher;
            let host = enricher.host_inode();
            let (pods, without_pod) = podstart::build(&session.events, calls, host, &mut |inode, id| {
                enricher.sandbox_of(inode, id)
            });
            session.pods = pods;
            podstart::attach_settings(&mut session.pods, settings);
            cni.calls_without_pod = without_pod;
            session.cni = Some(cni);
        }
        for (key, error) in &mut self.socket_errors {
            if let Some(tally) = self.sockets.get(key) {
                set_cause(error, tally.cause);
            }
        }
        session.socket_errors = self.socket_errors.into_values().collect();
        session.ended_at = self.clock.wall(now_ns).max(session.started_at);
        session.lost_events = lost_events;
        session.unfinished = self
            .tracker
            .drain()
            .into_iter()
            .map(|entry| Unfinished {
                netns_inode: entry.first.netns.inode,
                ifname: entry.first.ifname.clone(),
                addr: entry.first.addr,
                tentative_so_far_ns: now_ns.saturating_sub(entry.start_ns),
            })
            .collect();
        session
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{HashMap, HashSet},
        sync::{Arc, Mutex},
    };

    use chrono::{DateTime, Utc};
    use dad_trace_common::Hook;

    use super::*;
    use crate::{
        kernel::{
            Backend,
            events::{DecodeError, IfaState, Observation},
        },
        output::{
            live::{Live, LiveOptions},
            sinks::Sinks,
        },
        session::{Outcome, Pod},
    };

    const MS: u64 = 1_000_000;
    const POD: NetnsId = NetnsId {
        inode: 4_026_532_500,
        cookie: 77,
    };
    const HOST: NetnsId = NetnsId {
        inode: 4_026_531_840,
        cookie: 1,
    };

    /// Enrichment from tables: names by inode, namespaces that are gone, addresses present.
    #[derive(Default)]
    struct FakeEnricher {
        names: HashMap<u32, String>,
        /// Held until the end, as an unnamed pod's addresses are.
        hold: bool,
        held: Vec<AddressEvent>,
        ready: Vec<AddressEvent>,
        noted: HashSet<u32>,
        present: HashMap<NetnsId, Vec<Inet6Row>>,
        late: HashMap<u32, String>,
        ticks: usize,
    }

    impl Enrich for FakeEnricher {
        fn note(&mut self, netns: NetnsId) -> Option<PodSettings> {
            let first = self.noted.insert(netns.inode);
            (first && netns != HOST).then(|| PodSettings::unread("fake"))
        }

        fn finish(&mut self, mut event: AddressEvent) {
            event.host_netns = event.netns_inode == HOST.inode;
            event.netns_name = self.names.get(&event.netns_inode).cloned();
            if self.hold {
                self.held.push(event);
            } else {
                self.ready.push(event);
            }
        }

        fn ready(&mut self, all: bool) -> Vec<AddressEvent> {
            if all {
                self.ready.append(&mut self.held);
            }
            std::mem::take(&mut self.ready)
        }

        fn name_late(&mut self, events: &mut [AddressEvent]) {
            for event in events {
                if let Some(name) = self.late.get(&event.netns_inode) {
                    event.pod = Some(Pod {
                        namespace: Some("team-a".into()),
                        name: Some(name.clone()),
                        ..Pod::default()
                    });
                }
            }
        }

        fn addresses(&mut self, netns: NetnsId) -> Option<Vec<Inet6Row>> {
            self.present.get(&netns).cloned()
        }

        fn call_netns(&mut self, exec: &Exec) -> Option<u32> {
            exec.env.netns.as_ref().map(|_| POD.inode)
        }

        fn sandbox_of(&mut self, _: Option<u32>, _: Option<&str>) -> Option<SandboxIdentity> {
            None
        }

        fn held_netns(&self) -> Vec<u32> {
            self.held.iter().map(|event| event.netns_inode).collect()
        }

        fn host_inode(&self) -> u32 {
            HOST.inode
        }

        fn tick(&mut self) {
            self.ticks += 1;
        }

        fn whose(&mut self, netns_inode: u32, pid: Option<u32>) -> Whose {
            Whose {
                host_netns: netns_inode == HOST.inode,
                netns_name: self.names.get(&netns_inode).cloned(),
                pod: None,
                container_id: pid.map(|pid| format!("c{pid}")),
            }
        }
    }

    fn observation(ts_ms: u64, hook: Hook, state: IfaState, flags: u32, ifa: u64, addr: &str) -> Reading {
        Reading::Observation(Observation {
            ts_ns: ts_ms * MS,
            hook,
            ifa,
            netns: POD,
            ifindex: 2,
            ifname: "eth0".into(),
            addr: addr.parse().expect("literal address"),
            state,
            flags,
            dad_probes: 0,
            work_pending: state != IfaState::PostDad,
            created: 5,
        })
    }

    /// The workqueue sequence of one address: queued tentative at `start`, settled 1.5 s later.
    fn dad(start_ms: u64, ifa: u64, addr: &str) -> Vec<Reading> {
        vec![
            observation(start_ms, Hook::WorkQueued, IfaState::PreDad, 0xc0, ifa, addr),
            observation(start_ms + 1, Hook::WorkDone, IfaState::Dad, 0xc0, ifa, addr),
            observation(start_ms + 1500, Hook::WorkDone, IfaState::PostDad, 0x80, ifa, addr),
        ]
    }

    fn epoch() -> DateTime<Utc> {
        "2026-11-27T10:00:00Z".parse().expect("literal time")
    }

    /// Lines go to a buffer the test can read.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn recorder(enricher: FakeEnricher, lines: &Lines) -> Recorder<FakeEnricher, Sinks> {
        recorder_with(
            enricher,
            lines,
            LiveOptions {
                lines: true,
                ..LiveOptions::default()
            },
        )
    }

    fn recorder_with(enricher: FakeEnricher, lines: &Lines, options: LiveOptions) -> Recorder<FakeEnricher, Sinks> {
        let session = Session::new(Backend::Tracepoint, "6.18".into(), "node-a".into(), epoch());
        let utc = |_| chrono::FixedOffset::east_opt(0).expect("UTC");
        Recorder::new(
            enricher,
            Sinks::new(true).with_live(Live::in_zone(Box::new(lines.clone()), options, utc)),
            Clock::at(epoch()),
            session,
        )
    }

    #[test]
    fn a_fake_feed_becomes_named_events_lines_and_a_session() {
        let enricher = FakeEnricher {
            names: HashMap::from([(POD.inode, "cni-1".to_string())]),
            ..FakeEnricher::default()
        };
        let lines = Lines::default();
        let mut recorder = recorder(enricher, &lines);
        for reading in dad(0, 0x1000, "fe80::1").into_iter().chain(dad(10, 0x2000, "fd00::5")) {
            recorder.on_reading(reading);
        }
        recorder.on_reading(Reading::Undecodable(DecodeError::Hook(99)));
        assert_eq!(recorder.output().finished(), 2);
        let session = recorder.into_session(3, 2000 * MS);
        assert_eq!(session.events.len(), 2);
        assert!(
            session
                .events
                .iter()
                .all(|e| e.outcome == Outcome::Settled && e.pod_label() == "cni-1")
        );
        assert_eq!(session.events[1].tentative_ns, 1500 * MS);
        assert_eq!(session.events[1].time, epoch() + chrono::Duration::milliseconds(1510));
        assert_eq!(session.lost_events, 3);
        assert_eq!(session.ended_at, epoch() + chrono::Duration::seconds(2));
        let printed = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let printed: Vec<&str> = printed.lines().collect();
        assert_eq!(printed.len(), 3, "a header row, then a line per address: {printed:?}");
        assert!(printed[0].starts_with("TIME(UTC)") && printed[0].ends_with("OUTCOME"));
        assert!(
            printed[2].starts_with("10:00:01.510") && printed[2].contains("cni-1") && printed[2].contains("fd00::5")
        );
    }

    /// A socket error read while its pod's address is tentative: a line at first sight, the
    /// count grown at the next read, and one entry in the session with the address's age.
    #[test]
    fn socket_counts_become_one_entry_tied_to_the_tentative_address() {
        use dad_trace_common::sockets::Syscall;
        let enricher = FakeEnricher {
            names: HashMap::from([(POD.inode, "cni-1".to_string())]),
            ..FakeEnricher::default()
        };
        let lines = Lines::default();
        let mut recorder = recorder(enricher, &lines);
        let [queued, ..] = <[Reading; 3]>::try_from(dad(0, 0x1000, "fd00::5")).expect("three");
        recorder.on_reading(queued);
        let failure = SocketFailure {
            netns_inode: POD.inode,
            pid: 77,
            tid: 78,
            syscall: Syscall::Bind,
            addr: Some("fd00::5".parse().expect("literal")),
            count: 3,
            first_ns: 200 * MS,
            last_ns: 300 * MS,
            cgroup_id: 0,
            comm: "server".into(),
        };
        recorder.socket_counts(vec![failure.clone()], 400 * MS);
        recorder.socket_counts(vec![failure.clone()], 1_400 * MS);
        let grown = SocketFailure {
            count: 9,
            last_ns: 900 * MS,
            ..failure
        };
        recorder.socket_counts(vec![grown], 2_400 * MS);
        let session = recorder.into_session(0, 3_000 * MS);
        assert_eq!(session.socket_errors.len(), 1, "{:#?}", session.socket_errors);
        let error = &session.socket_errors[0];
        assert_eq!((error.count, error.last_ns, error.pid), (9, 900 * MS, 77));
        assert_eq!(error.tentative_for_ns, Some(200 * MS));
        assert_eq!(error.netns_name.as_deref(), Some("cni-1"));
        assert_eq!(error.container_id.as_deref(), Some("c77"));
        assert_eq!(error.time, epoch() + chrono::Duration::milliseconds(200));
        let printed = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let socket_lines: Vec<&str> = printed.lines().filter(|line| line.contains("EADDRNOTAVAIL")).collect();
        assert_eq!(socket_lines.len(), 1, "a line at first sight only: {printed}");
        assert!(
            socket_lines[0].starts_with("10:00:00.200  cni-1")
                && socket_lines[0].contains("bind       fd00::5")
                && socket_lines[0].ends_with("EADDRNOTAVAIL 3 times by server[77], during DAD"),
            "{printed}"
        );
    }

    /// An address tentative past `stuck_after` is said once while it lasts, with how long so
    /// far; it counts as stuck in every sweep until it ends.
    #[test]
    fn an_address_tentative_too_long_is_said_stuck_once() {
        let enricher = FakeEnricher {
            names: HashMap::from([(POD.inode, "cni-1".to_string())]),
            present: HashMap::from([(
                POD,
                vec![Inet6Row {
                    addr: "fd00::5".parse().expect("literal"),
                    ifindex: 2,
                    flags: 0xc0,
                    ifname: "eth0".into(),
                }],
            )]),
            ..FakeEnricher::default()
        };
        let lines = Lines::default();
        let mut recorder = recorder(enricher, &lines).stuck_after(10_000 * MS);
        let [queued, ..] = <[Reading; 3]>::try_from(dad(0, 0x1000, "fd00::5")).expect("three");
        recorder.on_reading(queued);
        let stuck_lines = || {
            let printed = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
            printed
                .lines()
                .filter(|line| line.contains("STILL TENTATIVE"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        for now_ms in [5_000, 9_999] {
            recorder.sweep(now_ms * MS, u64::MAX, 0);
        }
        assert!(stuck_lines().is_empty(), "not stuck before 10 s");
        for now_ms in [10_000, 11_000, 30_000] {
            recorder.sweep(now_ms * MS, u64::MAX, 0);
        }
        let said = stuck_lines();
        assert_eq!(said.len(), 1, "said once: {said:?}");
        assert!(
            said[0].starts_with("10:00:00.000  cni-1            eth0       fd00::5 ") && said[0].contains("10.00 s"),
            "{said:?}"
        );
        assert_eq!(recorder.say_stuck(31_000 * MS), 1, "still stuck");
        let session = recorder.into_session(0, 32_000 * MS);
        assert_eq!(session.unfinished.len(), 1);
        assert_eq!(session.unfinished[0].tentative_so_far_ns, 32_000 * MS);
    }

    /// A pod namespace's settings, read when its first address came, end on its pod.
    #[test]
    fn settings_read_on_arrival_end_on_the_pod() {
        let mut recorder = recorder(FakeEnricher::default(), &Lines::default()).with_cni(Vec::new());
        for reading in dad(0, 0x1000, "fe80::1").into_iter().chain(dad(10, 0x2000, "fd00::5")) {
            recorder.on_reading(reading);
        }
        let session = recorder.into_session(0, 2000 * MS);
        assert_eq!(session.pods.len(), 1);
        assert_eq!(session.pods[0].settings, Some(PodSettings::unread("fake")));
    }

    #[test]
    fn namespaces_are_noted_on_arrival_and_held_events_commit_at_the_end() {
        let enricher = FakeEnricher {
            hold: true,
            late: HashMap::from([(POD.inode, "web-0".to_string())]),
            ..FakeEnricher::default()
        };
        let mut recorder = recorder(enricher, &Lines::default());
        recorder.on_reading(dad(0, 0x1000, "fe80::1").remove(0));
        assert!(recorder.enricher.noted.contains(&POD.inode), "resolved while it exists");
        for reading in dad(0, 0x1000, "fe80::1").into_iter().skip(1) {
            recorder.on_reading(reading);
        }
        assert_eq!(recorder.output().finished(), 0, "held for a name");
        let session = recorder.into_session(0, 3000 * MS);
        assert_eq!(session.events.len(), 1);
        assert_eq!(session.events[0].pod_label(), "team-a/web-0", "named late");
    }

    #[test]
    fn sweep_aborts_the_gone_keeps_the_tentative_and_drops_the_settled_unseen() {
        let tentative = Inet6Row {
            addr: "fe80::1".parse().expect("literal"),
            ifindex: 2,
            flags: 0xc0,
            ifname: "eth0".into(),
        };
        let settled = Inet6Row {
            addr: "fe80::2".parse().expect("literal"),
            flags: 0x80,
            ..tentative.clone()
        };
        let enricher = FakeEnricher {
            present: HashMap::from([(POD, vec![tentative, settled])]),
            ..FakeEnricher::default()
        };
        let mut recorder = recorder(enricher, &Lines::default());
        for (ifa, addr) in [(0x1000, "fe80::1"), (0x2000, "fe80::2"), (0x3000, "fe80::3")] {
            recorder.on_reading(observation(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, ifa, addr));
        }
        // Not silent long enough: nothing happens.
        recorder.sweep(2000 * MS, 3000 * MS, 0);
        assert_eq!(recorder.tracker.in_flight_len(), 3);
        // Looked at, acted on one sweep later.
        recorder.sweep(4000 * MS, 3000 * MS, 0);
        assert_eq!(recorder.tracker.in_flight_len(), 3, "looks wait a sweep");
        recorder.sweep(5000 * MS, 3000 * MS, 0);
        assert_eq!(recorder.tracker.in_flight_len(), 1, "fe80::1 is still tentative");
        let session = recorder.into_session(0, 5000 * MS);
        assert_eq!(
            session.events.len(),
            1,
            "settled unseen is not reported: {:?}",
            session.events
        );
        assert_eq!(
            (session.events[0].addr.to_string(), session.events[0].outcome),
            ("fe80::3".to_string(), Outcome::Aborted)
        );
        assert_eq!(session.events[0].tentative_ns, 4000 * MS, "aborted when found gone");
        assert_eq!(session.unfinished.len(), 1);
        assert_eq!(session.unfinished[0].tentative_so_far_ns, 5000 * MS);
    }

    #[test]
    fn a_gone_namespace_aborts_all_its_silent_addresses_in_one_look() {
        let mut recorder = recorder(FakeEnricher::default(), &Lines::default());
        for (ifa, addr) in [(0x1000, "fe80::1"), (0x2000, "fd00::1")] {
            recorder.on_reading(observation(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, ifa, addr));
        }
        recorder.sweep(10_000 * MS, 3000 * MS, 0);
        recorder.sweep(11_000 * MS, 3000 * MS, 0);
        assert_eq!(recorder.enricher.ticks, 2, "enrichment forgets on every sweep");
        let session = recorder.into_session(0, 11_000 * MS);
        assert_eq!(session.events.len(), 2);
        assert!(
            session
                .events
                .iter()
                .all(|e| e.outcome == Outcome::Aborted && e.tentative_ns == 10_000 * MS)
        );
        assert!(session.unfinished.is_empty());
    }

    /// The namespace is read while the address's settle event is still on its way: the event
    /// wins, and the address is settled once, not aborted (a churn test lost addresses so).
    #[test]
    fn an_event_after_the_look_overrules_what_the_look_found() {
        let mut recorder = recorder(FakeEnricher::default(), &Lines::default());
        let dad = dad(0, 0x1000, "fe80::1");
        recorder.on_reading(dad[0].clone());
        recorder.on_reading(dad[1].clone());
        // Found gone (the namespace was just deleted), the events not yet read.
        recorder.sweep(1600 * MS, 500 * MS, 0);
        recorder.on_reading(dad[2].clone());
        recorder.sweep(2600 * MS, 500 * MS, 0);
        let session = recorder.into_session(0, 3000 * MS);
        let outcomes: Vec<Outcome> = session.events.iter().map(|e| e.outcome).collect();
        assert_eq!(outcomes, [Outcome::Settled]);
        assert_eq!(session.events[0].tentative_ns, 1500 * MS);
    }

    #[test]
    fn presence_reads_rows() {
        let row = Inet6Row {
            addr: "fe80::1".parse().expect("literal"),
            ifindex: 2,
            flags: 0xc0,
            ifname: "eth0".into(),
        };
        let addr = row.addr;
        assert_eq!(presence(Some(std::slice::from_ref(&row)), 2, addr), Presence::Tentative);
        assert_eq!(
            presence(Some(std::slice::from_ref(&row)), 3, addr),
            Presence::Gone,
            "other interface"
        );
        assert_eq!(presence(None, 2, addr), Presence::Gone);
        let settled = Inet6Row { flags: 0x80, ..row };
        assert_eq!(presence(Some(&[settled]), 2, addr), Presence::Settled);
    }
}
