//! Per-pod waits, live: a pod namespace's first address added → its last address finished,
//! as `report` computes it from a session. A pod is done when none of its addresses is in
//! flight and a sweep passed without a new one (its addresses may reach the sinks a little
//! apart, after the runtime named the pod). The agent's histogram and the live views of
//! `record` (intervals, JSON lines) each keep their own windows, with what they need of the
//! pod as the payload.
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::session::{AddressEvent, Outcome};

struct Window<T> {
    payload: T,
    first_start_ns: i64,
    last_end_ns: i64,
    last_settled_ns: Option<i64>,
    addresses: usize,
    failed: usize,
    aborted: usize,
    /// An address arrived since the last sweep.
    fresh: bool,
}

/// A pod whose addresses are all done: wall-clock nanoseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DonePod<T> {
    pub payload: T,
    pub netns_inode: u32,
    pub first_start_ns: i64,
    /// Its last address finished, whatever the outcome (as `report`'s per-pod delay).
    pub last_end_ns: i64,
    /// Its last address settled, if one did (the agent's wait: what a CNI plugin pays).
    pub last_settled_ns: Option<i64>,
    pub addresses: usize,
    pub failed: usize,
    pub aborted: usize,
}

impl<T> DonePod<T> {
    /// First address added → last address finished.
    #[must_use]
    pub fn delay_ns(&self) -> u64 {
        u64::try_from(self.last_end_ns.saturating_sub(self.first_start_ns)).unwrap_or(0)
    }

    /// First address added → last address settled; `None` when none settled.
    #[must_use]
    pub fn wait_ns(&self) -> Option<u64> {
        self.last_settled_ns
            .map(|end| u64::try_from(end.saturating_sub(self.first_start_ns)).unwrap_or(0))
    }
}

type Key = (u32, Option<u64>);

pub struct PodWindows<T> {
    open: Mutex<HashMap<Key, Window<T>>>,
}

impl<T> Default for PodWindows<T> {
    fn default() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> PodWindows<T> {
    /// Adds a finished address to its pod; `payload` is made for the pod's first one.
    pub fn see(&self, event: &AddressEvent, payload: impl FnOnce() -> T) {
        let Some(end_ns) = event.time.timestamp_nanos_opt() else {
            return;
        };
        let start_ns = end_ns.saturating_sub(i64::try_from(event.tentative_ns).unwrap_or(i64::MAX));
        let settled = (event.outcome == Outcome::Settled).then_some(end_ns);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = open
            .entry((event.netns_inode, event.netns_cookie))
            .or_insert_with(|| Window {
                payload: payload(),
                first_start_ns: start_ns,
                last_end_ns: end_ns,
                last_settled_ns: None,
                addresses: 0,
                failed: 0,
                aborted: 0,
                fresh: true,
            });
        window.first_start_ns = window.first_start_ns.min(start_ns);
        window.last_end_ns = window.last_end_ns.max(end_ns);
        window.last_settled_ns = window.last_settled_ns.max(settled);
        window.addresses += 1;
        window.failed += usize::from(event.outcome == Outcome::Failed);
        window.aborted += usize::from(event.outcome == Outcome::Aborted);
        window.fresh = true;
    }

    /// Removes the pods that are done (`in_flight` holds the namespaces with an address in
    /// flight) and returns them; with `all`, every pod still open (the recording ends).
    pub fn finish(&self, in_flight: &HashSet<u32>, all: bool) -> Vec<DonePod<T>> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let done_keys: Vec<Key> = open
            .iter_mut()
            .filter_map(|(key, window)| {
                // Freshness is spent only on a sweep that finds the pod idle.
                let busy = in_flight.contains(&key.0) || std::mem::take(&mut window.fresh);
                (all || !busy).then_some(*key)
            })
            .collect();
        let mut done: Vec<DonePod<T>> = done_keys
            .into_iter()
            .filter_map(|key| {
                let window = open.remove(&key)?;
                Some(DonePod {
                    payload: window.payload,
                    netns_inode: key.0,
                    first_start_ns: window.first_start_ns,
                    last_end_ns: window.last_end_ns,
                    last_settled_ns: window.last_settled_ns,
                    addresses: window.addresses,
                    failed: window.failed,
                    aborted: window.aborted,
                })
            })
            .collect();
        // In the order they started, as `report` lists pods.
        done.sort_by_key(|pod| (pod.first_start_ns, pod.netns_inode));
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
}
