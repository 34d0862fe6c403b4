//! Per-pod waits, live: a pod namespace's first address added → its last address finished,
//! as `report` computes it from a session, and the part of it inside the pod's CNI ADD. A
//! pod is done when none of its addresses is in flight or held for a name and a sweep passed
//! without news (its addresses and its ADD may reach the sinks a little apart, after the
//! runtime named the pod). The agent's histograms and the live views of `record` (intervals,
//! JSON lines) each keep their own windows, with what they need of the pod as the payload.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::session::{AddressEvent, Outcome};

struct Window<T> {
    payload: T,
    cookie: Option<u64>,
    /// First address added and last finished (any outcome), when an address came.
    addresses_ns: Option<(i64, i64)>,
    last_settled_ns: Option<i64>,
    addresses: usize,
    failed: usize,
    aborted: usize,
    /// The pod's successful CNI ADD, start and end.
    add: Option<(i64, i64)>,
    /// News since the last sweep.
    fresh: bool,
}

impl<T> Window<T> {
    fn new(payload: T, cookie: Option<u64>) -> Self {
        Self {
            payload,
            cookie,
            addresses_ns: None,
            last_settled_ns: None,
            addresses: 0,
            failed: 0,
            aborted: 0,
            add: None,
            fresh: true,
        }
    }

    fn done(self, netns_inode: u32) -> DonePod<T> {
        DonePod {
            payload: self.payload,
            netns_inode,
            addresses_ns: self.addresses_ns,
            last_settled_ns: self.last_settled_ns,
            addresses: self.addresses,
            failed: self.failed,
            aborted: self.aborted,
            add: self.add,
        }
    }
}

/// A pod whose start is over: wall-clock nanoseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DonePod<T> {
    pub payload: T,
    pub netns_inode: u32,
    /// Its first address added and last address finished, whatever the outcome (as
    /// `report`'s per-pod delay); `None` for a pod seen only by its ADD.
    pub addresses_ns: Option<(i64, i64)>,
    /// Its last address settled, if one did (the agent's wait: what a CNI plugin pays).
    pub last_settled_ns: Option<i64>,
    pub addresses: usize,
    pub failed: usize,
    pub aborted: usize,
    /// Its successful CNI ADD (the span of a chain's ADDs), when one was traced.
    pub add: Option<(i64, i64)>,
}

impl<T> DonePod<T> {
    /// First address added → last address finished (0 without addresses).
    #[must_use]
    pub fn delay_ns(&self) -> u64 {
        self.addresses_ns.map_or(0, |(first, last)| {
            u64::try_from(last.saturating_sub(first)).unwrap_or(0)
        })
    }

    /// First address added → last address settled; `None` when none settled.
    #[must_use]
    pub fn wait_ns(&self) -> Option<u64> {
        let (first, _) = self.addresses_ns?;
        self.last_settled_ns
            .map(|end| u64::try_from(end.saturating_sub(first)).unwrap_or(0))
    }

    /// The part of the wait inside the pod's ADD, when an ADD was traced (0 when no address
    /// of it waited).
    #[must_use]
    pub fn dad_in_add_ns(&self) -> Option<u64> {
        let (add_start, add_end) = self.add?;
        Some(match self.addresses_ns.zip(self.last_settled_ns) {
            Some(((first, _), settled)) => {
                u64::try_from(settled.min(add_end).saturating_sub(first.max(add_start))).unwrap_or(0)
            }
            None => 0,
        })
    }

    fn start_ns(&self) -> i64 {
        self.addresses_ns
            .map(|(first, _)| first)
            .or(self.add.map(|(start, _)| start))
            .unwrap_or(i64::MAX)
    }
}

/// Open windows by namespace inode (a CNI call knows the inode only; a new cookie under an
/// inode closes the window of the namespace that had it before).
pub struct PodWindows<T> {
    open: Mutex<HashMap<u32, Window<T>>>,
    /// Windows closed early by a reused inode, returned at the next sweep.
    closed: Mutex<Vec<DonePod<T>>>,
}

impl<T> Default for PodWindows<T> {
    fn default() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            closed: Mutex::new(Vec::new()),
        }
    }
}

impl<T> PodWindows<T> {
    fn window<R>(
        &self,
        inode: u32,
        cookie: Option<u64>,
        payload: impl FnOnce() -> T,
        change: impl FnOnce(&mut Window<T>) -> R,
    ) -> R {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = open.get(&inode)
            && cookie.is_some()
            && window.cookie.is_some()
            && window.cookie != cookie
            && let Some(window) = open.remove(&inode)
        {
            self.closed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(window.done(inode));
        }
        let window = open.entry(inode).or_insert_with(|| Window::new(payload(), cookie));
        window.cookie = window.cookie.or(cookie);
        window.fresh = true;
        change(window)
    }

    /// Adds a finished address to its pod; `payload` is made for the pod's first news.
    pub fn see(&self, event: &AddressEvent, payload: impl FnOnce() -> T) {
        let Some(end_ns) = event.time.timestamp_nanos_opt() else {
            return;
        };
        let start_ns = end_ns.saturating_sub(i64::try_from(event.tentative_ns).unwrap_or(i64::MAX));
        let settled = (event.outcome == Outcome::Settled).then_some(end_ns);
        self.window(event.netns_inode, event.netns_cookie, payload, |window| {
            window.addresses_ns = Some(window.addresses_ns.map_or((start_ns, end_ns), |(first, last)| {
                (first.min(start_ns), last.max(end_ns))
            }));
            window.last_settled_ns = window.last_settled_ns.max(settled);
            window.addresses += 1;
            window.failed += usize::from(event.outcome == Outcome::Failed);
            window.aborted += usize::from(event.outcome == Outcome::Aborted);
        });
    }

    /// A pod's CNI ADD succeeded, from `start` to `end` (ns since the epoch). A pod set up by
    /// a chain of plugins has one ADD per plugin: the window spans them.
    pub fn see_add(&self, inode: u32, (start, end): (i64, i64), payload: impl FnOnce() -> T) {
        self.window(inode, None, payload, |window| {
            window.add = Some(
                window
                    .add
                    .map_or((start, end), |(first, last)| (first.min(start), last.max(end))),
            );
        });
    }

    /// Removes the pods that are done (`busy` holds the namespaces with an address in flight
    /// or held back) and returns them in the order they started; with `all`, every pod still
    /// open (the recording ends).
    pub fn finish(&self, busy: &HashSet<u32>, all: bool) -> Vec<DonePod<T>> {
        let mut done = std::mem::take(&mut *self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let done_inodes: Vec<u32> = open
            .iter_mut()
            .filter_map(|(inode, window)| {
                // Freshness is spent only on a sweep that finds the pod idle.
                let busy = busy.contains(inode) || std::mem::take(&mut window.fresh);
                (all || !busy).then_some(*inode)
            })
            .collect();
        done.extend(
            done_inodes
                .into_iter()
                .filter_map(|inode| Some(open.remove(&inode)?.done(inode))),
        );
        done.sort_by_key(|pod| (pod.start_ns(), pod.netns_inode));
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(inode: u32, at_ms: i64, tentative_ms: u64, outcome: Outcome) -> AddressEvent {
        let mut event: AddressEvent = serde_json::from_value(serde_json::json!({
            "time": "2026-11-27T10:00:00Z", "netns_inode": inode, "host_netns": false, "ifname": "eth0",
            "ifindex": 2, "addr": "fd00::1", "tentative_ns": 0, "outcome": "settled", "partial": false,
        }))
        .expect("event");
        event.time += chrono::Duration::milliseconds(at_ms);
        event.tentative_ns = tentative_ms * 1_000_000;
        event.outcome = outcome;
        event
    }

    fn ms_since_base(ms: i64) -> i64 {
        event(0, ms, 0, Outcome::Settled)
            .time
            .timestamp_nanos_opt()
            .expect("representable")
    }

    fn waits(done: &[DonePod<&'static str>]) -> Vec<(&'static str, Option<u64>)> {
        done.iter().map(|pod| (pod.payload, pod.wait_ns())).collect()
    }

    #[test]
    fn a_pod_is_done_once_its_addresses_are_done_and_quiet() {
        let windows = PodWindows::default();
        // Link-local added at 0 ms, settled at 1500; the pod address added at 10, settled at 1900.
        windows.see(&event(7, 1500, 1500, Outcome::Settled), || "a");
        assert!(windows.finish(&HashSet::from([7]), false).is_empty(), "still in flight");
        windows.see(&event(7, 1900, 1890, Outcome::Settled), || "not made twice");
        assert!(
            windows.finish(&HashSet::new(), false).is_empty(),
            "fresh: one more sweep"
        );
        let done = windows.finish(&HashSet::new(), false);
        assert_eq!(waits(&done), [("a", Some(1_900_000_000))]);
        assert_eq!((done[0].addresses, done[0].failed, done[0].aborted), (2, 0, 0));
        assert_eq!(done[0].delay_ns(), 1_900_000_000);
        assert_eq!(done[0].dad_in_add_ns(), None, "no ADD traced");
        assert!(windows.finish(&HashSet::new(), false).is_empty(), "counted once");
    }

    /// The agent's wait ends at the last *settled* address; `report`'s per-pod delay at the
    /// last address of any outcome. Only aborted addresses: no wait, but a delay.
    #[test]
    fn outcomes_are_counted_and_end_the_delay_not_the_wait() {
        let windows = PodWindows::default();
        windows.see(&event(8, 100, 100, Outcome::Aborted), || "b");
        windows.see(&event(9, 1000, 1000, Outcome::Settled), || "c");
        windows.see(&event(9, 1200, 1100, Outcome::Failed), || "c");
        windows.see(&event(9, 1300, 1300, Outcome::Aborted), || "c");
        windows.finish(&HashSet::new(), false);
        let done = windows.finish(&HashSet::new(), false);
        assert_eq!(
            waits(&done),
            [("b", None), ("c", Some(1_000_000_000))],
            "in start order"
        );
        assert_eq!(done[0].delay_ns(), 100_000_000);
        assert_eq!(done[1].delay_ns(), 1_300_000_000);
        assert_eq!((done[1].addresses, done[1].failed, done[1].aborted), (3, 1, 1));
        assert_eq!(done[1].netns_inode, 9);
    }

    /// Done pods come in the order they started (first address, else the ADD), not by inode.
    #[test]
    fn done_pods_are_in_start_order() {
        let windows = PodWindows::default();
        windows.see(&event(10, 1000, 500, Outcome::Settled), || "second");
        windows.see(&event(20, 1000, 1000, Outcome::Settled), || "first");
        windows.see_add(30, (ms_since_base(700), ms_since_base(800)), || "third, ADD only");
        let done = windows.finish(&HashSet::new(), true);
        let order: Vec<_> = done.iter().map(|pod| pod.payload).collect();
        assert_eq!(order, ["first", "second", "third, ADD only"]);
        assert_eq!(done[2].delay_ns(), 0, "no address");
        assert_eq!(done[2].dad_in_add_ns(), Some(0));
    }

    #[test]
    fn at_the_end_every_open_pod_is_done() {
        let windows = PodWindows::default();
        windows.see(&event(7, 1500, 1500, Outcome::Settled), || "a");
        assert_eq!(
            waits(&windows.finish(&HashSet::from([7]), true)),
            [("a", Some(1_500_000_000))]
        );
        assert!(windows.finish(&HashSet::new(), true).is_empty());
    }

    /// The ADD started 20 ms before the first address and ended 30 ms after the last settled:
    /// DAD's part of it is the addresses' window; an ADD with no address is no wait at all.
    #[test]
    fn the_wait_inside_the_add_and_a_reused_inode() {
        let windows = PodWindows::default();
        windows.see(&event(7, 1500, 1480, Outcome::Settled), || "a");
        windows.see_add(7, (ms_since_base(0), ms_since_base(1530)), || "a");
        windows.see_add(9, (ms_since_base(0), ms_since_base(40)), || "b");
        windows.finish(&HashSet::new(), false);
        let mut done = windows.finish(&HashSet::new(), false);
        done.sort_by_key(DonePod::dad_in_add_ns);
        assert_eq!(
            done.iter()
                .map(|pod| (pod.wait_ns(), pod.dad_in_add_ns()))
                .collect::<Vec<_>>(),
            [(None, Some(0)), (Some(1_480_000_000), Some(1_480_000_000))]
        );
        let mut first = event(5, 100, 50, Outcome::Settled);
        first.netns_cookie = Some(1);
        let mut second = event(5, 300, 50, Outcome::Settled);
        second.netns_cookie = Some(2);
        windows.see(&first, || "first");
        windows.see(&second, || "second");
        let done = windows.finish(&HashSet::from([5]), false);
        assert_eq!(
            waits(&done),
            [("first", Some(50_000_000))],
            "the first namespace is done"
        );
    }
}
