//! Turns observations into per-address outcomes: the DAD phase state machine, shared by
//! both backends. Kernel programs stay stateless; in-flight state lives here, bounded by the
//! number of addresses that are tentative right now.
use std::collections::{HashMap, hash_map::Entry};

use dad_trace_common::Hook;
use serde::{Deserialize, Serialize};

use crate::events::{IfaState, Observation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Tentative flag cleared: the address is usable.
    Settled,
    /// A duplicate answered: the address is unusable.
    Failed,
    /// The address, its interface or its namespace went away while tentative.
    Aborted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Settled => "settled",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
        })
    }
}

/// An address that left the tentative state one way or another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The last observation (for settled: the one that saw the flag cleared).
    pub last: Observation,
    /// When the address was first seen tentative (`CLOCK_MONOTONIC` ns).
    pub start_ns: u64,
    pub end_ns: u64,
    /// When DAD probing began, if it did.
    pub dad_begin_ns: Option<u64>,
    pub outcome: Outcome,
    /// First seen mid-flight (the tracer started during DAD): the delays are lower bounds.
    pub partial: bool,
}

impl Finished {
    #[must_use]
    pub fn tentative_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    #[must_use]
    pub fn dad_ns(&self) -> Option<u64> {
        self.dad_begin_ns.map(|begin| self.end_ns.saturating_sub(begin))
    }
}

#[derive(Clone, Debug)]
pub struct InFlight {
    pub first: Observation,
    pub start_ns: u64,
    pub last_seen_ns: u64,
    pub dad_begin_ns: Option<u64>,
    pub partial: bool,
}

impl InFlight {
    fn finish(self, last: Observation, end_ns: u64, outcome: Outcome) -> Finished {
        Finished {
            last,
            start_ns: self.start_ns,
            end_ns,
            dad_begin_ns: self.dad_begin_ns,
            outcome,
            partial: self.partial,
        }
    }
}

/// What an observation ends, if anything.
fn terminal(obs: &Observation) -> Option<Outcome> {
    match (obs.hook, obs.state) {
        (Hook::DadCompleted, _) => Some(Outcome::Settled),
        (Hook::DadFailure, _) | (Hook::WorkQueued, IfaState::ErrDad) => Some(Outcome::Failed),
        (Hook::AddrDeleted | Hook::AddrDestroyed, _) | (Hook::WorkQueued | Hook::WorkDone, IfaState::Dead) => {
            Some(Outcome::Aborted)
        }
        (Hook::WorkDone, _) if !obs.tentative() && !obs.dad_failed() => Some(Outcome::Settled),
        _ => None,
    }
}

/// Whether the observation is the birth of a tentative period, not a look at one under way.
fn fresh_start(obs: &Observation) -> bool {
    matches!(obs.hook, Hook::AddrAdded | Hook::DadStart)
        || (obs.hook == Hook::WorkQueued && obs.state == IfaState::PreDad)
}

#[derive(Default)]
pub struct Tracker {
    in_flight: HashMap<u64, InFlight>,
}

impl Tracker {
    /// Feeds one observation; returns the address it finished, if any.
    pub fn observe(&mut self, obs: Observation) -> Option<Finished> {
        if let Some(outcome) = terminal(&obs) {
            let entry = self.in_flight.remove(&obs.ifa)?;
            let end_ns = obs.ts_ns;
            return Some(entry.finish(obs, end_ns, outcome));
        }
        let mut reused = None;
        let entry = match self.in_flight.entry(obs.ifa) {
            Entry::Occupied(occupied) if occupied.get().first.same_address(&obs) || !fresh_start(&obs) => {
                occupied.into_mut()
            }
            Entry::Occupied(mut occupied) => {
                // The kernel freed the old address unseen and reused its memory for a new one.
                let old = std::mem::replace(occupied.get_mut(), InFlight::new(&obs, false));
                let end_ns = old.last_seen_ns;
                let last = old.first.clone();
                reused = Some(old.finish(last, end_ns, Outcome::Aborted));
                occupied.into_mut()
            }
            Entry::Vacant(vacant) => {
                if !obs.tentative() || obs.dad_failed() {
                    return None;
                }
                vacant.insert(InFlight::new(&obs, !fresh_start(&obs)))
            }
        };
        entry.last_seen_ns = obs.ts_ns;
        let probing = obs.state == IfaState::Dad && obs.tentative();
        match obs.hook {
            Hook::DadBegin | Hook::DadKick => {
                entry.dad_begin_ns.get_or_insert(obs.ts_ns);
            }
            Hook::WorkQueued if probing => {
                entry.dad_begin_ns.get_or_insert(obs.ts_ns);
            }
            // After a DAD step the work is re-armed; when it is not, DAD stopped (link not
            // ready) and restarts from scratch later, so its clock restarts too.
            Hook::WorkDone if probing && obs.work_pending => {
                entry.dad_begin_ns.get_or_insert(obs.ts_ns);
            }
            Hook::WorkDone if probing => entry.dad_begin_ns = None,
            Hook::DadStop => entry.dad_begin_ns = None,
            _ => {}
        }
        reused
    }

    /// Addresses seen tentative and not finished yet.
    pub fn in_flight(&self) -> impl Iterator<Item = &InFlight> {
        self.in_flight.values()
    }

    #[must_use]
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// Ends an in-flight address that userspace found gone (the tracepoint backend cannot see
    /// a cancelled DAD work item).
    pub fn abort(&mut self, ifa: u64, at_ns: u64) -> Option<Finished> {
        let entry = self.in_flight.remove(&ifa)?;
        let last = entry.first.clone();
        Some(entry.finish(last, at_ns, Outcome::Aborted))
    }

    /// Everything still tentative, e.g. when recording stops.
    pub fn drain(&mut self) -> Vec<InFlight> {
        self.in_flight.drain().map(|(_, entry)| entry).collect()
    }
}

impl InFlight {
    fn new(obs: &Observation, partial: bool) -> Self {
        Self {
            first: obs.clone(),
            start_ns: obs.ts_ns,
            last_seen_ns: obs.ts_ns,
            dad_begin_ns: None,
            partial,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::NetnsId;

    const MS: u64 = 1_000_000;

    fn obs(ts_ms: u64, hook: Hook, state: IfaState, flags: u32, pending: bool) -> Observation {
        Observation {
            ts_ns: ts_ms * MS,
            hook,
            ifa: 0xffff_0000_0000_1000,
            netns: NetnsId {
                inode: 4_026_532_100,
                cookie: 9,
            },
            ifindex: 2,
            ifname: "eth0".into(),
            addr: "fe80::1".parse().expect("literal address"),
            state,
            flags,
            dad_probes: 0,
            work_pending: pending,
        }
    }

    /// Workqueue tracepoint sequence recorded on 6.18 for a fresh veth, default sysctls.
    fn tracepoint_dad(tracker: &mut Tracker) -> Option<Finished> {
        let steps = [
            obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true),
            obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true),
            obs(400, Hook::WorkQueued, IfaState::Dad, 0xc0, true),
            obs(401, Hook::WorkDone, IfaState::Dad, 0xc0, true),
            obs(1401, Hook::WorkQueued, IfaState::Dad, 0xc0, true),
        ];
        for step in steps {
            assert_eq!(tracker.observe(step), None);
        }
        tracker.observe(obs(1402, Hook::WorkDone, IfaState::PostDad, 0x80, false))
    }

    #[test]
    fn tracepoint_sequence_settles() {
        let mut tracker = Tracker::default();
        let done = tracepoint_dad(&mut tracker).expect("settled");
        assert_eq!(done.outcome, Outcome::Settled);
        assert_eq!(done.tentative_ns(), 1402 * MS);
        assert_eq!(done.dad_ns(), Some(1401 * MS));
        assert!(!done.partial);
        assert_eq!(tracker.in_flight_len(), 0);
    }

    #[test]
    fn accept_dad_zero_settles_without_dad() {
        let mut tracker = Tracker::default();
        assert_eq!(
            tracker.observe(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true)),
            None
        );
        let done = tracker
            .observe(obs(0, Hook::WorkDone, IfaState::Dad, 0x80, false))
            .expect("settled");
        assert_eq!(done.dad_ns(), None);
        assert_eq!(done.tentative_ns(), 0);
    }

    #[test]
    fn kprobe_sequence_settles() {
        let mut tracker = Tracker::default();
        assert_eq!(
            tracker.observe(obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false)),
            None
        );
        assert_eq!(tracker.observe(obs(2, Hook::DadKick, IfaState::Dad, 0xc0, false)), None);
        let done = tracker
            .observe(obs(1900, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (1900 * MS, Some(1898 * MS)));
    }

    #[test]
    fn failure_is_reported_once() {
        let mut tracker = Tracker::default();
        tracker.observe(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        let failed = tracker
            .observe(obs(300, Hook::WorkQueued, IfaState::ErrDad, 0xc0, true))
            .expect("failed");
        assert_eq!(failed.outcome, Outcome::Failed);
        assert_eq!(failed.dad_ns(), Some(299 * MS));
        // The abort step that follows marks the address DADFAILED|TENTATIVE: not a new period.
        assert_eq!(
            tracker.observe(obs(301, Hook::WorkDone, IfaState::PostDad, 0xc8, false)),
            None
        );
        assert_eq!(tracker.in_flight_len(), 0);
    }

    #[test]
    fn deletion_aborts_and_destroy_after_is_ignored() {
        let mut tracker = Tracker::default();
        tracker.observe(obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false));
        let aborted = tracker
            .observe(obs(50, Hook::AddrDeleted, IfaState::Dead, 0xc0, false))
            .expect("aborted");
        assert_eq!(aborted.outcome, Outcome::Aborted);
        assert_eq!(
            tracker.observe(obs(60, Hook::AddrDestroyed, IfaState::Dead, 0xc0, false)),
            None
        );
    }

    #[test]
    fn stopped_dad_restarts_its_clock() {
        let mut tracker = Tracker::default();
        tracker.observe(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        // Link not ready: DAD stops, nothing re-armed.
        tracker.observe(obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, false));
        // Link up 5 s later: kicked, the timer fires and probing runs.
        tracker.observe(obs(5000, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        tracker.observe(obs(5001, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        let done = tracker
            .observe(obs(6001, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (6001 * MS, Some(1001 * MS)));
    }

    #[test]
    fn mid_flight_start_is_partial() {
        let mut tracker = Tracker::default();
        tracker.observe(obs(10, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        let done = tracker
            .observe(obs(20, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert!(done.partial);
    }

    #[test]
    fn non_tentative_activity_is_ignored() {
        let mut tracker = Tracker::default();
        assert_eq!(
            tracker.observe(obs(0, Hook::WorkDone, IfaState::PostDad, 0x80, false)),
            None
        );
        assert_eq!(
            tracker.observe(obs(0, Hook::AddrDestroyed, IfaState::Dead, 0x80, false)),
            None
        );
        assert_eq!(tracker.in_flight_len(), 0);
    }

    #[test]
    fn reused_memory_aborts_the_old_address() {
        let mut tracker = Tracker::default();
        tracker.observe(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        let mut newer = obs(900, Hook::WorkQueued, IfaState::PreDad, 0xc0, true);
        newer.addr = "fe80::2".parse().expect("literal address");
        let old = tracker.observe(newer).expect("old aborted");
        assert_eq!(old.outcome, Outcome::Aborted);
        assert_eq!(old.last.addr, "fe80::1".parse::<std::net::Ipv6Addr>().expect("literal"));
        assert_eq!(tracker.in_flight_len(), 1);
    }

    #[test]
    fn sweeper_abort_and_drain() {
        let mut tracker = Tracker::default();
        tracker.observe(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        assert_eq!(tracker.abort(1, 5), None);
        let aborted = tracker.abort(0xffff_0000_0000_1000, 7 * MS).expect("in flight");
        assert_eq!(aborted.tentative_ns(), 7 * MS);
        tracker.observe(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        assert_eq!(tracker.drain().len(), 1);
        assert_eq!(tracker.in_flight_len(), 0);
    }
}
