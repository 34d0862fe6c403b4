//! Application socket errors, tied to the tentative address that caused them. The kernel
//! counts failures per (namespace, process, syscall, address); once a second the counts are
//! read and compared with what was read before: a key seen for the first time, or whose
//! count grew, is handed on. A failure is DAD's doing when an address of its namespace was
//! tentative at that moment: for bind, the address asked for; for the others (no usable
//! source address), any address of the namespace.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{
    collections::{BTreeMap, VecDeque},
    net::Ipv6Addr,
};

use dad_trace_common::sockets::Syscall;

use crate::kernel::sockets::SocketFailure;

/// One address's tentative period, `end_ns` none while it lasts (`CLOCK_MONOTONIC` ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub netns_inode: u32,
    pub addr: Ipv6Addr,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

impl Window {
    fn holds(&self, at_ns: u64) -> bool {
        self.start_ns <= at_ns && self.end_ns.is_none_or(|end| at_ns < end)
    }
}

/// The tentative period that explains a failure at its first occurrence, the longest one
/// when several do.
#[must_use]
pub fn cause(windows: &[Window], failure: &SocketFailure) -> Option<Window> {
    windows
        .iter()
        .filter(|window| window.netns_inode == failure.netns_inode && window.holds(failure.first_ns))
        .filter(|window| failure.syscall != Syscall::Bind || failure.addr.is_none_or(|addr| addr == window.addr))
        .min_by_key(|window| window.start_ns)
        .copied()
}

/// What a key is kept under here.
pub type Key = (u32, u32, Syscall, Option<Ipv6Addr>);

fn key_of(failure: &SocketFailure) -> Key {
    (failure.netns_inode, failure.pid, failure.syscall, failure.addr)
}

/// One key's failures so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// The first read of it; counts and times below are over every read.
    pub first: SocketFailure,
    pub count: u64,
    pub last_ns: u64,
    /// The tentative period that caused it, when one did.
    pub cause: Option<Window>,
    /// Failures of earlier lives of the kernel's key (evicted from its LRU map, then made
    /// again with a count from 1).
    carried: u64,
    /// The kernel's count as last read, and the first failure of that life.
    kernel_count: u64,
    kernel_first_ns: u64,
}

/// A key new or grown at a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: Key,
    pub new: bool,
    /// Failures since the last read.
    pub added: u64,
}

/// How long a failure with no cause is matched again: the address's first event may reach
/// userspace after the count (both travel a second at most).
const REMATCH_NS: u64 = 5_000_000_000;

/// Keys kept at most: twice what the kernel's map holds, so there is always room to forget
/// a key the kernel has forgotten too (an agent runs for months; processes come and go).
pub const KEPT_MAX: usize = 2 * dad_trace_common::sockets::SOCKET_ERRORS_MAX as usize;

pub struct SocketErrors {
    tallies: BTreeMap<Key, Tally>,
    /// Tentative periods that ended, kept for failures read after them; oldest first.
    ended: VecDeque<Window>,
    bound: usize,
    /// Keys forgotten to stay within `bound`, not yet taken by [`SocketErrors::take_forgotten`].
    forgotten: Vec<Key>,
}

impl Default for SocketErrors {
    fn default() -> Self {
        Self::with_bound(KEPT_MAX)
    }
}

impl SocketErrors {
    /// Keeps at most `bound` keys: past it, those the kernel no longer counts (absent from
    /// the last read) go, the least recently failing first.
    #[must_use]
    pub fn with_bound(bound: usize) -> Self {
        Self {
            tallies: BTreeMap::new(),
            ended: VecDeque::new(),
            bound,
            forgotten: Vec::new(),
        }
    }

    /// The keys forgotten since the last call.
    pub fn take_forgotten(&mut self) -> Vec<Key> {
        std::mem::take(&mut self.forgotten)
    }

    /// Forgets keys past the bound among those `read` did not name, least recent first.
    fn forget_past_bound(&mut self, read: &std::collections::HashSet<Key>) {
        let excess = self.tallies.len().saturating_sub(self.bound);
        if excess == 0 {
            return;
        }
        let mut idle: Vec<(u64, Key)> = self
            .tallies
            .iter()
            .filter(|(key, _)| !read.contains(*key))
            .map(|(key, tally)| (tally.last_ns, *key))
            .collect();
        idle.sort_unstable();
        for (_, key) in idle.into_iter().take(excess) {
            self.tallies.remove(&key);
            self.forgotten.push(key);
        }
    }

    /// An address stopped being tentative.
    pub fn ended(&mut self, window: Window) {
        self.ended.push_back(window);
    }

    /// Forgets periods that ended before `before_ns`.
    pub fn prune(&mut self, before_ns: u64) {
        while self
            .ended
            .front()
            .is_some_and(|window| window.end_ns.is_some_and(|end| end < before_ns))
        {
            self.ended.pop_front();
        }
    }

    /// One read of the kernel's counts, with the addresses tentative now (`in_flight`) at
    /// `now_ns`: the keys new or grown since the last read, in key order.
    pub fn update(&mut self, read: Vec<SocketFailure>, in_flight: &[Window], now_ns: u64) -> Vec<Change> {
        let windows: Vec<Window> = in_flight.iter().chain(&self.ended).copied().collect();
        let named: std::collections::HashSet<Key> = read.iter().map(key_of).collect();
        let mut changes = Vec::new();
        for failure in read {
            let key = key_of(&failure);
            let change = if let Some(tally) = self.tallies.get_mut(&key) {
                tally.read_again(&failure)
            } else {
                let cause = cause(&windows, &failure);
                let tally = Tally::first(failure, cause);
                let change = Change {
                    key,
                    new: true,
                    added: tally.count,
                };
                self.tallies.insert(key, tally);
                Some(change)
            };
            changes.extend(change);
        }
        for tally in self.tallies.values_mut() {
            if tally.cause.is_none() && now_ns.saturating_sub(tally.first.first_ns) < REMATCH_NS {
                tally.cause = cause(&windows, &tally.first);
            }
        }
        self.forget_past_bound(&named);
        changes.sort_by_key(|change| change.key);
        changes
    }

    #[must_use]
    pub fn get(&self, key: &Key) -> Option<&Tally> {
        self.tallies.get(key)
    }

    /// Every key's tally, in key order.
    pub fn tallies(&self) -> impl Iterator<Item = (&Key, &Tally)> {
        self.tallies.iter()
    }
}

impl Tally {
    fn first(failure: SocketFailure, cause: Option<Window>) -> Self {
        Self {
            cause,
            count: failure.count,
            last_ns: failure.last_ns,
            carried: 0,
            kernel_count: failure.count,
            kernel_first_ns: failure.first_ns,
            first: failure,
        }
    }

    /// The kernel's key read again: what it added, if anything.
    fn read_again(&mut self, failure: &SocketFailure) -> Option<Change> {
        if failure.first_ns != self.kernel_first_ns {
            // A new life of the key: what the old one counted stays.
            self.carried += self.kernel_count;
            self.kernel_first_ns = failure.first_ns;
            self.kernel_count = 0;
        }
        let added = failure.count.saturating_sub(self.kernel_count);
        self.kernel_count = self.kernel_count.max(failure.count);
        self.count = self.carried + self.kernel_count;
        self.last_ns = self.last_ns.max(failure.last_ns);
        (added > 0).then_some(Change {
            key: key_of(failure),
            new: false,
            added,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: u32 = 4_026_532_500;
    const OTHER: u32 = 4_026_532_600;
    const MS: u64 = 1_000_000;

    fn addr(text: &str) -> Ipv6Addr {
        text.parse().expect("literal address")
    }

    fn failure(syscall: Syscall, asked: Option<&str>, count: u64, first_ms: u64) -> SocketFailure {
        SocketFailure {
            netns_inode: POD,
            pid: 40,
            tid: 41,
            syscall,
            addr: asked.map(addr),
            count,
            first_ns: first_ms * MS,
            last_ns: (first_ms + 50 * count) * MS,
            cgroup_id: 0,
            comm: "server".into(),
        }
    }

    fn window(netns_inode: u32, address: &str, start_ms: u64, end_ms: Option<u64>) -> Window {
        Window {
            netns_inode,
            addr: addr(address),
            start_ns: start_ms * MS,
            end_ns: end_ms.map(|end| end * MS),
        }
    }

    #[test]
    fn a_bind_is_caused_by_the_address_it_asked_for_while_tentative() {
        let windows = [
            window(POD, "fd00::2", 0, None),
            window(POD, "fd00::1", 100, Some(1_000)),
            window(OTHER, "fd00::1", 0, None),
        ];
        let bind = failure(Syscall::Bind, Some("fd00::1"), 1, 400);
        assert_eq!(cause(&windows, &bind), Some(windows[1]));
        // The period starts at its first instant and ends before its last.
        assert_eq!(
            cause(&windows, &failure(Syscall::Bind, Some("fd00::1"), 1, 100)),
            Some(windows[1])
        );
        assert_eq!(cause(&windows, &failure(Syscall::Bind, Some("fd00::1"), 1, 99)), None);
        assert_eq!(
            cause(&windows, &failure(Syscall::Bind, Some("fd00::1"), 1, 1_000)),
            None
        );
        // Another address of the namespace tentative then is not the cause of a bind.
        assert_eq!(cause(&windows, &failure(Syscall::Bind, Some("fd00::3"), 1, 400)), None);
    }

    #[test]
    fn a_connect_is_caused_by_any_address_of_its_namespace_the_longest_tentative() {
        let windows = [
            window(POD, "fd00::2", 300, None),
            window(POD, "fd00::1", 100, None),
            window(OTHER, "fd00::9", 0, None),
        ];
        for syscall in [Syscall::Connect, Syscall::Sendto, Syscall::Sendmsg] {
            let sent = failure(syscall, Some("2001:db8::53"), 1, 400);
            assert_eq!(cause(&windows, &sent), Some(windows[1]), "{syscall:?}");
        }
        assert_eq!(
            cause(&windows, &failure(Syscall::Sendmsg, None, 1, 400)),
            Some(windows[1])
        );
        // A bind that named no address (none read) matches like the others.
        assert_eq!(cause(&windows, &failure(Syscall::Bind, None, 1, 400)), Some(windows[1]));
        // Before any address of the namespace was tentative: not DAD's doing.
        assert_eq!(
            cause(&windows, &failure(Syscall::Connect, Some("2001:db8::53"), 1, 50)),
            None
        );
    }

    #[test]
    fn reads_hand_on_what_is_new_or_grew_once() {
        let mut errors = SocketErrors::default();
        let in_flight = [window(POD, "fd00::1", 0, None)];
        let bind = failure(Syscall::Bind, Some("fd00::1"), 4, 300);
        let key = key_of(&bind);
        let first = errors.update(vec![bind.clone()], &in_flight, 500 * MS);
        assert_eq!(
            first,
            [Change {
                key,
                new: true,
                added: 4
            }]
        );
        let tally = errors.get(&key).expect("kept");
        assert_eq!((tally.count, tally.cause), (4, Some(in_flight[0])));
        // The same count again: nothing to hand on.
        assert!(errors.update(vec![bind.clone()], &[], 1_500 * MS).is_empty());
        let grown = SocketFailure {
            count: 10,
            last_ns: 900 * MS,
            ..bind.clone()
        };
        let second = errors.update(vec![grown], &[], 2_500 * MS);
        assert_eq!(
            second,
            [Change {
                key,
                new: false,
                added: 6
            }]
        );
        let tally = errors.get(&key).expect("kept");
        assert_eq!((tally.count, tally.last_ns), (10, 900 * MS));
        assert_eq!(errors.tallies().count(), 1);
    }

    /// The kernel's LRU map may evict a key and make it again from 1: what it counted before
    /// stays counted.
    #[test]
    fn a_key_evicted_and_made_again_keeps_its_earlier_count() {
        let mut errors = SocketErrors::default();
        let bind = failure(Syscall::Bind, Some("fd00::1"), 7, 300);
        let key = key_of(&bind);
        errors.update(vec![bind.clone()], &[], 400 * MS);
        let again = SocketFailure {
            count: 2,
            first_ns: 5_000 * MS,
            last_ns: 5_050 * MS,
            ..bind.clone()
        };
        let changes = errors.update(vec![again.clone()], &[], 5_100 * MS);
        assert_eq!(changes[0].added, 2);
        let tally = errors.get(&key).expect("kept");
        assert_eq!((tally.count, tally.first.first_ns), (9, 300 * MS));
        let grown = SocketFailure { count: 5, ..again };
        assert_eq!(errors.update(vec![grown], &[], 5_200 * MS)[0].added, 3);
        assert_eq!(errors.get(&key).expect("kept").count, 12);
    }

    #[test]
    fn a_cause_read_late_is_matched_for_a_while_and_ended_periods_are_pruned() {
        let mut errors = SocketErrors::default();
        let bind = failure(Syscall::Bind, Some("fd00::1"), 1, 300);
        let key = key_of(&bind);
        errors.update(vec![bind.clone()], &[], 400 * MS);
        assert_eq!(errors.get(&key).expect("kept").cause, None);
        // The address's period reaches userspace after the count did.
        errors.ended(window(POD, "fd00::1", 100, Some(1_500)));
        errors.update(Vec::new(), &[], 2_000 * MS);
        assert!(errors.get(&key).expect("kept").cause.is_some());

        let mut late = SocketErrors::default();
        late.update(vec![bind.clone()], &[], 400 * MS);
        late.ended(window(POD, "fd00::1", 100, Some(1_500)));
        // Past the rematch window, a failure stays without a cause.
        late.update(Vec::new(), &[], 300 * MS + REMATCH_NS);
        assert_eq!(late.get(&key).expect("kept").cause, None);

        let mut pruned = SocketErrors::default();
        pruned.ended(window(POD, "fd00::1", 100, Some(1_500)));
        pruned.ended(window(POD, "fd00::2", 100, Some(3_000)));
        pruned.prune(1_500 * MS);
        assert_eq!(pruned.ended.len(), 2, "ended at the bound: kept");
        pruned.prune(1_501 * MS);
        assert_eq!(pruned.ended.len(), 1);
        pruned.update(vec![failure(Syscall::Bind, Some("fd00::1"), 1, 1_000)], &[], 2_000 * MS);
        assert_eq!(
            pruned.tallies().next().expect("kept").1.cause,
            None,
            "its period was forgotten"
        );
    }

    /// A long-lived agent keeps a bounded number of keys: past the bound, keys the kernel no
    /// longer counts go, least recently failing first; keys it still counts stay.
    #[test]
    fn keys_past_the_bound_are_forgotten_least_recent_first() {
        let mut errors = SocketErrors::with_bound(2);
        let at = |pid, last_ms| SocketFailure {
            pid,
            last_ns: last_ms * MS,
            ..failure(Syscall::Bind, Some("fd00::1"), 1, 100)
        };
        errors.update(vec![at(1, 300), at(2, 200), at(3, 400)], &[], 500 * MS);
        assert_eq!(errors.tallies().count(), 3, "all three are in the kernel's read");
        assert!(errors.take_forgotten().is_empty());
        // pid 1 and 2 left the kernel's map; 3 is still there, with a new key 4.
        errors.update(vec![at(3, 400), at(4, 450)], &[], 1_500 * MS);
        let kept: Vec<u32> = errors.tallies().map(|(key, _)| key.1).collect();
        assert_eq!(kept, [3, 4], "the kernel's keys stay, the idle ones go");
        assert_eq!(
            errors.take_forgotten().iter().map(|key| key.1).collect::<Vec<_>>(),
            [2, 1]
        );
        assert!(errors.take_forgotten().is_empty(), "taken once");
    }
}
