//! Turns observations into per-address outcomes: the DAD phase state machine, shared by
//! both backends. Kernel programs stay stateless; in-flight state lives here, bounded by the
//! number of addresses that are tentative right now.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::collections::{HashMap, hash_map::Entry};

use dad_trace_common::{Hook, IFA_F_OPTIMISTIC, hooks::Ends};

use crate::{
    kernel::events::{IfaState, Observation},
    session::Outcome,
};

/// An address that left the tentative state one way or another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The last observation (for settled: the one that saw the flag cleared).
    pub last: Observation,
    /// When the address was first seen tentative (`CLOCK_MONOTONIC` ns).
    pub start_ns: u64,
    pub end_ns: u64,
    /// When DAD probing began, if it did: its last kick (a link that came back restarts it).
    pub dad_begin_ns: Option<u64>,
    /// When the first probe after that kick went out (the tracepoint backend sees each DAD
    /// step; the kprobe backend has no hook there).
    pub first_probe_ns: Option<u64>,
    /// Whether the kick itself was seen, not only its delay's expiry (a kick outside a DAD
    /// work item, when a link comes up, shows on the workqueue only once its delay expired).
    pub kick_seen: bool,
    pub outcome: Outcome,
    /// First seen mid-flight (the tracer started during DAD): the delays are lower bounds.
    pub partial: bool,
    /// Usable while tentative (`IFA_F_OPTIMISTIC` when first seen).
    pub optimistic: bool,
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

    /// Tentative before DAD began: waiting for the link (DAD starts only on a ready link).
    /// Unknown for an address first seen mid-flight.
    #[must_use]
    pub fn link_wait_ns(&self) -> Option<u64> {
        let begin = self.dad_begin_ns.filter(|_| !self.partial)?;
        Some(begin.saturating_sub(self.start_ns))
    }

    /// DAD began → its first probe: the random delay before probing (unknown when the kick
    /// was seen only at its delay's expiry: then `link_wait_ns` holds the delay).
    #[must_use]
    pub fn delay_ns(&self) -> Option<u64> {
        let begin = self.dad_begin_ns.filter(|_| self.kick_seen)?;
        Some(self.first_probe_ns?.saturating_sub(begin))
    }

    /// The first probe → the end: `dad_transmits` × `retrans_time`, give or take.
    #[must_use]
    pub fn probing_ns(&self) -> Option<u64> {
        self.first_probe_ns.map(|probe| self.end_ns.saturating_sub(probe))
    }
}

#[derive(Clone, Debug)]
pub struct InFlight {
    pub first: Observation,
    pub start_ns: u64,
    pub last_seen_ns: u64,
    pub dad_begin_ns: Option<u64>,
    /// The probes the last kick set (`dad_probes` then), and when the first went out.
    kick_probes: Option<u8>,
    first_probe_ns: Option<u64>,
    kick_seen: bool,
    pub partial: bool,
}

impl InFlight {
    fn finish(self, last: Observation, end_ns: u64, outcome: Outcome) -> Finished {
        Finished {
            optimistic: self.first.flags & IFA_F_OPTIMISTIC != 0,
            last,
            start_ns: self.start_ns,
            end_ns,
            dad_begin_ns: self.dad_begin_ns,
            first_probe_ns: self.first_probe_ns.filter(|_| self.dad_begin_ns.is_some()),
            kick_seen: self.kick_seen,
            outcome,
            partial: self.partial,
        }
    }
}

/// What an observation ends, if anything: as its hook's entry in the hook table says.
fn terminal(obs: &Observation) -> Option<Outcome> {
    match obs.hook.ends() {
        Ends::Never => None,
        Ends::Settled => Some(Outcome::Settled),
        Ends::Failed => Some(Outcome::Failed),
        Ends::Aborted => Some(Outcome::Aborted),
        Ends::ByState {
            errdad_fails,
            cleared_settles,
        } => match obs.state {
            IfaState::Dead => Some(Outcome::Aborted),
            IfaState::ErrDad if errdad_fails => Some(Outcome::Failed),
            _ if cleared_settles && !obs.tentative() && !obs.dad_failed() => Some(Outcome::Settled),
            _ => None,
        },
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
    /// Addresses that died (aborted, failed), by kernel address: events about them may still
    /// be on their way (queued before userspace noticed) and must not bring them back.
    dead: HashMap<u64, Dead>,
    /// When the programs were attached (`CLOCK_MONOTONIC` ns): an address whose end is the
    /// first thing seen of it was tentative since before then.
    attached_ns: u64,
}

/// What identifies a dead address object, and when it died (`CLOCK_MONOTONIC` ns).
struct Dead {
    created: u32,
    addr: std::net::Ipv6Addr,
    at_ns: u64,
}

impl Tracker {
    /// A tracker for programs attached at `attached_ns`.
    #[must_use]
    pub fn attached_at(attached_ns: u64) -> Self {
        Self {
            attached_ns,
            ..Self::default()
        }
    }

    /// Feeds one observation; returns the address it finished, if any.
    pub fn observe(&mut self, obs: &Observation) -> Option<Finished> {
        let finished = self.step(obs);
        finished.map(|finished| self.bury(finished))
    }

    fn step(&mut self, obs: &Observation) -> Option<Finished> {
        // The kernel freed the old address unseen (a removal the backend cannot see) and a new
        // one reuses its memory: the old one was aborted when last seen.
        let reused = match self.in_flight.entry(obs.ifa) {
            Entry::Occupied(occupied) if !occupied.get().first.same_address(obs) => {
                let old = occupied.remove();
                let (last, end_ns) = (old.first.clone(), old.last_seen_ns);
                Some(old.finish(last, end_ns, Outcome::Aborted))
            }
            _ => None,
        };
        // Asked only of an address not in flight: most events are of one that is.
        let late = |tracker: &Self| {
            tracker
                .dead
                .get(&obs.ifa)
                .is_some_and(|dead| dead.created == obs.created && dead.addr == obs.addr)
        };
        if let Some(outcome) = terminal(obs) {
            let Some(entry) = self.in_flight.remove(&obs.ifa) else {
                if reused.is_some() || late(self) {
                    return reused;
                }
                return self.unseen_end(obs, outcome);
            };
            return Some(entry.finish(obs.clone(), obs.ts_ns, outcome));
        }
        let mut superseded = None;
        if !self.in_flight.contains_key(&obs.ifa) {
            if !obs.tentative() || obs.dad_failed() || late(self) {
                return reused;
            }
            if reused.is_none() {
                superseded = self.supersede(obs);
            }
            self.in_flight.insert(obs.ifa, InFlight::new(obs, !fresh_start(obs)));
        }
        let Some(entry) = self.in_flight.get_mut(&obs.ifa) else {
            return reused.or(superseded);
        };
        entry.last_seen_ns = obs.ts_ns;
        let probing = obs.state == IfaState::Dad && obs.tentative();
        match obs.hook {
            // Each kick probes from scratch (`addrconf_dad_kick` resets the probe count): a
            // DAD restarted when the link came back is timed from the restart.
            Hook::DadBegin | Hook::DadKick => entry.kicked(obs),
            // Queued before DAD begins (PREDAD): created, or restarted from scratch after the
            // link went down and up (`addrconf_dad_run`).
            Hook::WorkQueued if obs.state == IfaState::PreDad => entry.stopped(),
            Hook::WorkQueued if probing && entry.dad_begin_ns.is_none() => entry.kicked(obs),
            // After a DAD step the work is re-armed; when it is not, DAD stopped (link not
            // ready) and restarts from scratch later, so its clock restarts too. A step that
            // spent a probe (the count below what the kick set) sent one.
            Hook::WorkDone if probing && obs.work_pending => {
                if entry.dad_begin_ns.is_none() {
                    entry.kicked(obs);
                } else if entry.kick_probes.is_some_and(|probes| obs.dad_probes < probes) {
                    entry.first_probe_ns.get_or_insert(obs.ts_ns);
                }
            }
            Hook::WorkDone if probing => entry.stopped(),
            Hook::DadStop => entry.stopped(),
            _ => {}
        }
        reused.or(superseded)
    }

    /// The end of an address never seen tentative. The kprobe backend has no hook between
    /// `addrconf_dad_kick` and the end of DAD, so an address kicked before the programs were
    /// attached shows up first at its end: it was tentative (and probing, for a completion or
    /// a failure) since before the attach. Partial, timed from the attach: lower bounds.
    /// The tracepoint backend sees such addresses at their next DAD work item instead.
    fn unseen_end(&self, obs: &Observation, outcome: Outcome) -> Option<Finished> {
        let probing = match obs.hook {
            Hook::DadCompleted | Hook::DadFailure => true,
            // A deleted address that was still tentative (not one that failed long ago).
            Hook::AddrDeleted if obs.tentative() && !obs.dad_failed() => false,
            _ => return None,
        };
        (obs.ts_ns >= self.attached_ns).then(|| Finished {
            last: obs.clone(),
            start_ns: self.attached_ns,
            end_ns: obs.ts_ns,
            dad_begin_ns: probing.then_some(self.attached_ns),
            first_probe_ns: None,
            kick_seen: false,
            outcome,
            partial: true,
            optimistic: obs.flags & IFA_F_OPTIMISTIC != 0,
        })
    }

    /// A new address object took the place of an in-flight one with the same address on the
    /// same interface (removed and added again, unseen): the old one was aborted when last seen.
    fn supersede(&mut self, obs: &Observation) -> Option<Finished> {
        let old = self
            .in_flight
            .iter()
            .find(|(ifa, entry)| **ifa != obs.ifa && entry.first.same_interface_and_address(obs))
            .map(|(ifa, _)| *ifa)?;
        let entry = self.in_flight.remove(&old)?;
        let (last, end_ns) = (entry.first.clone(), entry.last_seen_ns);
        Some(entry.finish(last, end_ns, Outcome::Aborted))
    }

    /// Remembers an address that died, so late events about it are recognised.
    fn bury(&mut self, finished: Finished) -> Finished {
        if finished.outcome != Outcome::Settled {
            self.dead.insert(
                finished.last.ifa,
                Dead {
                    created: finished.last.created,
                    addr: finished.last.addr,
                    at_ns: finished.end_ns,
                },
            );
        }
        finished
    }

    /// Forgets dead addresses older than `before_ns`: no event about them is still queued.
    pub fn prune(&mut self, before_ns: u64) {
        self.dead.retain(|_, dead| dead.at_ns >= before_ns);
    }

    /// Addresses seen tentative and not finished yet.
    pub fn in_flight(&self) -> impl Iterator<Item = &InFlight> {
        self.in_flight.values()
    }

    /// The in-flight address at kernel address `ifa`, if any.
    #[must_use]
    pub fn get(&self, ifa: u64) -> Option<&InFlight> {
        self.in_flight.get(&ifa)
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
        Some(self.bury(entry.finish(last, at_ns, Outcome::Aborted)))
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
            kick_probes: None,
            first_probe_ns: None,
            kick_seen: false,
            partial,
        }
    }

    /// DAD (re)started: probing is timed from here.
    fn kicked(&mut self, obs: &Observation) {
        self.dad_begin_ns = Some(obs.ts_ns);
        self.kick_probes = Some(obs.dad_probes);
        self.first_probe_ns = None;
        // A queued work item in state DAD is a delayed kick whose delay just expired.
        self.kick_seen = obs.hook != Hook::WorkQueued;
    }

    /// DAD stopped: it restarts from scratch.
    fn stopped(&mut self) {
        self.dad_begin_ns = None;
        self.kick_probes = None;
        self.first_probe_ns = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::events::NetnsId;

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
            created: 7,
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
            assert_eq!(tracker.observe(&step), None);
        }
        tracker.observe(&obs(1402, Hook::WorkDone, IfaState::PostDad, 0x80, false))
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
            tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true)),
            None
        );
        let done = tracker
            .observe(&obs(0, Hook::WorkDone, IfaState::Dad, 0x80, false))
            .expect("settled");
        assert_eq!(done.dad_ns(), None);
        assert_eq!(done.tentative_ns(), 0);
    }

    #[test]
    fn kprobe_sequence_settles() {
        let mut tracker = Tracker::default();
        assert_eq!(
            tracker.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false)),
            None
        );
        assert_eq!(
            tracker.observe(&obs(2, Hook::DadKick, IfaState::Dad, 0xc0, false)),
            None
        );
        let done = tracker
            .observe(&obs(1900, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (1900 * MS, Some(1898 * MS)));
    }

    /// DAD stopped (link down: `addrconf_dad_stop`) and kicked again later: DAD is timed
    /// from the second kick.
    #[test]
    fn kprobe_dad_stopped_restarts_its_clock() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false));
        tracker.observe(&obs(2, Hook::DadKick, IfaState::Dad, 0xc0, false));
        assert_eq!(
            tracker.observe(&obs(10, Hook::DadStop, IfaState::PreDad, 0xc0, false)),
            None
        );
        tracker.observe(&obs(5000, Hook::DadKick, IfaState::Dad, 0xc0, false));
        let done = tracker
            .observe(&obs(6000, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (6000 * MS, Some(1000 * MS)));
    }

    /// The kprobe backend started while an address probed: its completion is the first
    /// thing seen of it. Reported partial, timed from the attach (lower bounds).
    #[test]
    fn kprobe_end_of_an_address_kicked_before_the_attach_is_partial() {
        let mut tracker = Tracker::attached_at(100 * MS);
        let done = tracker
            .observe(&obs(1900, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(
            (done.outcome, done.partial, done.tentative_ns(), done.dad_ns()),
            (Outcome::Settled, true, 1800 * MS, Some(1800 * MS))
        );
        let mut failing = obs(2000, Hook::DadFailure, IfaState::Dad, 0xc0, false);
        failing.ifa += 0x200;
        let failed = tracker.observe(&failing).expect("failed");
        assert_eq!((failed.outcome, failed.partial), (Outcome::Failed, true));
        // Its removal later is no second address.
        let mut removed = obs(2500, Hook::AddrDeleted, IfaState::Dead, 0xc8, false);
        removed.ifa = failing.ifa;
        assert_eq!(tracker.observe(&removed), None);
        // A tentative address removed unseen: aborted, and no DAD known to have run.
        let mut deleted = obs(3000, Hook::AddrDeleted, IfaState::Dead, 0xc0, false);
        deleted.ifa += 0x400;
        let aborted = tracker.observe(&deleted).expect("aborted");
        assert_eq!(
            (
                aborted.outcome,
                aborted.partial,
                aborted.tentative_ns(),
                aborted.dad_ns()
            ),
            (Outcome::Aborted, true, 2900 * MS, None)
        );
        assert_eq!(tracker.in_flight_len(), 0);
    }

    /// What is not the end of a tentative period seen late is nothing: a settled address
    /// removed, a failed one removed, a freed one, an event stamped before the attach.
    #[test]
    fn unseen_ends_that_are_not_tentative_periods_are_ignored() {
        let mut tracker = Tracker::attached_at(100 * MS);
        for step in [
            obs(200, Hook::AddrDeleted, IfaState::Dead, 0x80, false),
            obs(200, Hook::AddrDeleted, IfaState::Dead, 0xc8, false),
            obs(200, Hook::AddrDestroyed, IfaState::Dead, 0xc0, false),
            obs(50, Hook::DadCompleted, IfaState::PostDad, 0x80, false),
            obs(200, Hook::WorkDone, IfaState::PostDad, 0x80, false),
        ] {
            assert_eq!(tracker.observe(&step), None, "{step}");
        }
    }

    #[test]
    fn failure_is_reported_once() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        let failed = tracker
            .observe(&obs(300, Hook::WorkQueued, IfaState::ErrDad, 0xc0, true))
            .expect("failed");
        assert_eq!(failed.outcome, Outcome::Failed);
        assert_eq!(failed.dad_ns(), Some(299 * MS));
        // The abort step that follows marks the address DADFAILED|TENTATIVE: not a new period.
        assert_eq!(
            tracker.observe(&obs(301, Hook::WorkDone, IfaState::PostDad, 0xc8, false)),
            None
        );
        assert_eq!(tracker.in_flight_len(), 0);
    }

    #[test]
    fn deletion_aborts_and_destroy_after_is_ignored() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false));
        let aborted = tracker
            .observe(&obs(50, Hook::AddrDeleted, IfaState::Dead, 0xc0, false))
            .expect("aborted");
        assert_eq!(aborted.outcome, Outcome::Aborted);
        assert_eq!(
            tracker.observe(&obs(60, Hook::AddrDestroyed, IfaState::Dead, 0xc0, false)),
            None
        );
    }

    #[test]
    fn stopped_dad_restarts_its_clock() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        // Link not ready at the probe: DAD stops, nothing re-armed.
        tracker.observe(&obs(400, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        tracker.observe(&obs(401, Hook::WorkDone, IfaState::Dad, 0xc0, false));
        // Link up 5 s later: kicked in state DAD, the timer fires and probing runs.
        tracker.observe(&obs(5000, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        tracker.observe(&obs(5001, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        let done = tracker
            .observe(&obs(6001, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (6001 * MS, Some(1001 * MS)));
    }

    /// The link went down mid-DAD (the work cancelled, unseen) and came back: DAD restarts
    /// from PREDAD and is timed from there; tentative counts from creation.
    #[test]
    fn dad_restarted_after_the_link_came_back_is_timed_from_the_restart() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        tracker.observe(&obs(400, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        tracker.observe(&obs(5000, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(5001, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        tracker.observe(&obs(6001, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        let done = tracker
            .observe(&obs(6002, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (6002 * MS, Some(1001 * MS)));
        // The kprobe backend sees the restart as a second kick.
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false));
        tracker.observe(&obs(2, Hook::DadKick, IfaState::Dad, 0xc0, false));
        tracker.observe(&obs(3000, Hook::DadKick, IfaState::PreDad, 0xc0, false));
        let done = tracker
            .observe(&obs(4000, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(done.dad_ns(), Some(1000 * MS));
        // Where `addrconf_dad_begin` is the hook (not inlined), a restart that goes straight
        // to the kick is unseen: after a stop, DAD's start is unknown, not the first one's.
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false));
        tracker.observe(&obs(2, Hook::DadBegin, IfaState::Dad, 0xc0, false));
        tracker.observe(&obs(10, Hook::DadStop, IfaState::Dad, 0xc0, false));
        let done = tracker
            .observe(&obs(6000, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.tentative_ns(), done.dad_ns()), (6000 * MS, None));
    }

    /// Only probing work moves DAD's clock: a step on an address that is not probing (not in
    /// the DAD state) neither starts nor stops it.
    #[test]
    fn work_on_an_address_not_probing_leaves_the_dad_clock_alone() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        tracker.observe(&obs(2, Hook::WorkDone, IfaState::PostDad, 0xc0, false));
        tracker.observe(&obs(3, Hook::WorkQueued, IfaState::PostDad, 0xc0, true));
        let done = tracker
            .observe(&obs(1001, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(done.dad_ns(), Some(1000 * MS));
        // Never probing at all: no DAD.
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(1, Hook::WorkQueued, IfaState::PostDad, 0xc0, true));
        tracker.observe(&obs(2, Hook::WorkDone, IfaState::PostDad, 0xc0, true));
        let done = tracker
            .observe(&obs(3, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(done.dad_ns(), None);
    }

    #[test]
    fn mid_flight_start_is_partial() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(10, Hook::WorkQueued, IfaState::Dad, 0xc0, true));
        let done = tracker
            .observe(&obs(20, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert!(done.partial);
    }

    #[test]
    fn non_tentative_activity_is_ignored() {
        let mut tracker = Tracker::default();
        assert_eq!(
            tracker.observe(&obs(0, Hook::WorkDone, IfaState::PostDad, 0x80, false)),
            None
        );
        assert_eq!(
            tracker.observe(&obs(0, Hook::AddrDestroyed, IfaState::Dead, 0x80, false)),
            None
        );
        // Still flagged tentative, but its DAD failed long ago: no new tentative period.
        assert_eq!(
            tracker.observe(&obs(0, Hook::WorkDone, IfaState::PostDad, 0xc8, false)),
            None
        );
        assert_eq!(tracker.in_flight_len(), 0);
    }

    #[test]
    fn reused_memory_aborts_the_old_address() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        let mut newer = obs(900, Hook::WorkQueued, IfaState::PreDad, 0xc0, true);
        newer.addr = "fe80::2".parse().expect("literal address");
        let old = tracker.observe(&newer).expect("old aborted");
        assert_eq!(old.outcome, Outcome::Aborted);
        assert_eq!(old.last.addr, "fe80::1".parse::<std::net::Ipv6Addr>().expect("literal"));
        assert_eq!(tracker.in_flight_len(), 1);
    }

    /// The same address removed mid-DAD and added again, its new `inet6_ifaddr` in the old
    /// one's memory: two addresses, the second timed from its own creation.
    #[test]
    fn removed_and_readded_address_is_a_new_one() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        let mut again = obs(300, Hook::WorkQueued, IfaState::PreDad, 0xc0, true);
        again.created = 8;
        let old = tracker.observe(&again).expect("old aborted");
        assert_eq!((old.outcome, old.tentative_ns()), (Outcome::Aborted, MS));
        let mut settled = obs(1800, Hook::WorkDone, IfaState::PostDad, 0x80, false);
        settled.created = 8;
        let new = tracker.observe(&settled).expect("new settled");
        assert_eq!(
            (new.outcome, new.tentative_ns(), new.partial),
            (Outcome::Settled, 1500 * MS, false)
        );
    }

    /// Events the kernel queued before userspace noticed an address was gone must not bring
    /// it back as a new, partial address.
    #[test]
    fn late_events_of_an_aborted_address_are_ignored() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.abort(0xffff_0000_0000_1000, 1500 * MS).expect("in flight");
        assert_eq!(
            tracker.observe(&obs(990, Hook::WorkQueued, IfaState::Dad, 0xc0, true)),
            None
        );
        assert_eq!(tracker.in_flight_len(), 0);
        // Once forgotten, the same memory may hold a new address again.
        tracker.prune(2000 * MS);
        tracker.observe(&obs(3000, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        assert_eq!(tracker.in_flight_len(), 1);
    }

    /// A removal and re-add in another memory slot: the new address supersedes the old one.
    #[test]
    fn a_new_object_for_the_same_address_supersedes_the_old() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        let mut new = obs(400, Hook::WorkQueued, IfaState::PreDad, 0xc0, true);
        new.ifa += 0x200;
        new.created = 9;
        let old = tracker.observe(&new).expect("old superseded");
        assert_eq!((old.outcome, old.last.ifa), (Outcome::Aborted, 0xffff_0000_0000_1000));
        assert_eq!(tracker.in_flight_len(), 1);
    }

    #[test]
    fn sweeper_abort_and_drain() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        assert_eq!(tracker.abort(1, 5), None);
        let aborted = tracker.abort(0xffff_0000_0000_1000, 7 * MS).expect("in flight");
        assert_eq!(aborted.tentative_ns(), 7 * MS);
        let mut next = obs(10, Hook::WorkQueued, IfaState::PreDad, 0xc0, true);
        next.created += 1;
        tracker.observe(&next);
        assert_eq!(tracker.drain().len(), 1);
        assert_eq!(tracker.in_flight_len(), 0);
    }

    fn probes(mut obs: Observation, dad_probes: u8) -> Observation {
        obs.dad_probes = dad_probes;
        obs
    }

    /// The tracepoint backend sees each DAD step: the begin step (the kick inside it), the
    /// first probe (one probe spent), the end. The phases add up to the tentative time.
    #[test]
    fn tracepoint_phases_split_the_wait() {
        let mut tracker = Tracker::default();
        let steps = [
            probes(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true), 0),
            probes(obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true), 1),
            probes(obs(400, Hook::WorkQueued, IfaState::Dad, 0xc0, true), 1),
            probes(obs(401, Hook::WorkDone, IfaState::Dad, 0xc0, true), 0),
            probes(obs(1401, Hook::WorkQueued, IfaState::Dad, 0xc0, true), 0),
        ];
        for step in &steps {
            assert_eq!(tracker.observe(step), None);
        }
        let done = tracker
            .observe(&obs(1402, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        let phases = (done.link_wait_ns(), done.delay_ns(), done.probing_ns());
        assert_eq!(phases, (Some(MS), Some(400 * MS), Some(1001 * MS)));
        assert_eq!(MS + 400 * MS + 1001 * MS, done.tentative_ns());
        assert!(!done.optimistic);
    }

    /// A link left down: the begin step stops DAD (not re-armed); the link coming up kicks it
    /// outside any work item, seen when its delay expired. The wait for the link holds that
    /// delay; the delay itself is unknown.
    #[test]
    fn tracepoint_link_wait_is_until_dad_restarts() {
        let mut tracker = Tracker::default();
        let steps = [
            probes(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true), 0),
            probes(obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, false), 0),
            probes(obs(3300, Hook::WorkQueued, IfaState::Dad, 0xc0, true), 1),
            probes(obs(3301, Hook::WorkDone, IfaState::Dad, 0xc0, true), 0),
        ];
        for step in &steps {
            assert_eq!(tracker.observe(step), None);
        }
        let done = tracker
            .observe(&obs(4301, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(
            (done.link_wait_ns(), done.delay_ns(), done.probing_ns()),
            (Some(3300 * MS), None, Some(1000 * MS))
        );
        assert_eq!(done.dad_ns(), Some(1001 * MS));
    }

    /// The kprobe backend sees the kick itself but no probe: the wait for the link only.
    /// An optimistic address says so; a partial one has no known wait for the link.
    #[test]
    fn kprobe_phases_and_optimistic_and_partial_addresses() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc4, false));
        tracker.observe(&probes(obs(2, Hook::DadKick, IfaState::Dad, 0xc4, false), 1));
        let done = tracker
            .observe(&obs(1900, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(
            (done.link_wait_ns(), done.delay_ns(), done.probing_ns()),
            (Some(2 * MS), None, None)
        );
        assert!(done.optimistic, "0x04 when first seen");
        let mut late = Tracker::attached_at(100 * MS);
        let partial = late
            .observe(&obs(1900, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((partial.link_wait_ns(), partial.delay_ns()), (None, None));
        // Stopped and kicked again by the hook: the kick is seen, the clock restarts.
        let mut restarted = Tracker::default();
        restarted.observe(&obs(0, Hook::AddrAdded, IfaState::PreDad, 0xc0, false));
        restarted.observe(&probes(obs(2, Hook::DadKick, IfaState::Dad, 0xc0, false), 1));
        restarted.observe(&obs(10, Hook::DadStop, IfaState::PreDad, 0xc0, false));
        restarted.observe(&probes(obs(3000, Hook::DadKick, IfaState::Dad, 0xc0, false), 1));
        let done = restarted
            .observe(&obs(4000, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!(done.link_wait_ns(), Some(3000 * MS));
    }

    /// The workqueue hooks end an address by the state read with them, as the hook table
    /// says: DEAD aborts (removed while its work was queued); ERRDAD fails when the failure
    /// queues the work, and is no end of its own after a step.
    #[test]
    fn workqueue_states_end_an_address_as_the_table_says() {
        let mut tracker = Tracker::default();
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        let aborted = tracker
            .observe(&obs(5, Hook::WorkDone, IfaState::Dead, 0xc0, false))
            .expect("ended");
        assert_eq!(aborted.outcome, Outcome::Aborted);
        let mut failing = Tracker::default();
        failing.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        assert_eq!(
            failing.observe(&obs(5, Hook::WorkDone, IfaState::ErrDad, 0xc8, false)),
            None
        );
        let failed = failing
            .observe(&obs(6, Hook::WorkQueued, IfaState::ErrDad, 0xc8, true))
            .expect("failed");
        assert_eq!(failed.outcome, Outcome::Failed);
    }

    /// A DAD step that could not take the RTNL lock re-arms itself without probing
    /// (`addrconf_dad_work` retries a jiffy later): it is no probe; the step that spends
    /// one is.
    #[test]
    fn a_step_that_spends_no_probe_is_not_the_first_probe() {
        let mut tracker = Tracker::default();
        let steps = [
            probes(obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true), 0),
            probes(obs(1, Hook::WorkDone, IfaState::Dad, 0xc0, true), 1),
            probes(obs(200, Hook::WorkDone, IfaState::Dad, 0xc0, true), 1),
            probes(obs(401, Hook::WorkDone, IfaState::Dad, 0xc0, true), 0),
        ];
        for step in &steps {
            assert_eq!(tracker.observe(step), None);
        }
        let done = tracker
            .observe(&obs(1402, Hook::WorkDone, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert_eq!((done.delay_ns(), done.probing_ns()), (Some(400 * MS), Some(1001 * MS)));
    }

    /// An address first seen at its end says whether it was optimistic, from that one look.
    #[test]
    fn an_unseen_end_says_whether_it_was_optimistic() {
        let mut tracker = Tracker::attached_at(0);
        let plain = tracker
            .observe(&obs(10, Hook::DadCompleted, IfaState::PostDad, 0x80, false))
            .expect("settled");
        assert!(plain.partial && !plain.optimistic);
        let mut optimistic = obs(20, Hook::DadCompleted, IfaState::PostDad, 0x84, false);
        optimistic.ifa += 0x100;
        let done = tracker.observe(&optimistic).expect("settled");
        assert!(done.partial && done.optimistic);
    }

    /// The end of a new address object in the memory of an in-flight one (freed unseen):
    /// the old one is what ends, aborted when last seen; the new one's end, never seen
    /// tentative, is no address of its own.
    #[test]
    fn an_end_in_reused_memory_aborts_the_old_address() {
        let mut tracker = Tracker::attached_at(0);
        tracker.observe(&obs(0, Hook::WorkQueued, IfaState::PreDad, 0xc0, true));
        tracker.observe(&obs(5, Hook::WorkDone, IfaState::Dad, 0xc0, true));
        let mut reused = obs(900, Hook::DadCompleted, IfaState::PostDad, 0x80, false);
        reused.created = 8;
        let ended = tracker.observe(&reused).expect("the old address ends");
        assert_eq!(
            (ended.outcome, ended.end_ns, ended.last.created),
            (Outcome::Aborted, 5 * MS, 7)
        );
        assert_eq!(tracker.in_flight_len(), 0);
    }
}
