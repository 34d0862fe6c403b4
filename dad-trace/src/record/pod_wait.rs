//! Per-pod waits for the agent's histograms: a pod namespace's first address added → its
//! last address settled, and the part of that inside its CNI ADD, as a session's pods have
//! them, but live: a pod is done when none of its addresses is in flight or held for a
//! name, and a sweep passed without news (its addresses and its ADD may reach the sink a
//! little apart).
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::session::{AddressEvent, Outcome};

type Labels = Vec<(String, String)>;

struct Window {
    labels: Labels,
    cookie: Option<u64>,
    first_start_ns: Option<i64>,
    last_end_ns: Option<i64>,
    /// The pod's successful CNI ADD, start and end.
    add: Option<(i64, i64)>,
    /// News since the last sweep.
    fresh: bool,
}

impl Window {
    fn new(labels: Labels, cookie: Option<u64>) -> Self {
        Self {
            labels,
            cookie,
            first_start_ns: None,
            last_end_ns: None,
            add: None,
            fresh: true,
        }
    }

    fn done(&mut self) -> PodDone {
        let wait = self
            .first_start_ns
            .zip(self.last_end_ns)
            .map(|(first, last)| u64::try_from(last.saturating_sub(first)).unwrap_or(0));
        let in_add = self.add.map(|(add_start, add_end)| {
            match self.first_start_ns.zip(self.last_end_ns) {
                Some((first, last)) => u64::try_from(last.min(add_end).saturating_sub(first.max(add_start))).unwrap_or(0),
                // No address of it was tentative: the ADD waited for none.
                None => 0,
            }
        });
        PodDone {
            labels: std::mem::take(&mut self.labels),
            wait_ns: wait,
            dad_in_add_ns: in_add,
        }
    }
}

/// A pod whose start is over.
#[derive(Debug, PartialEq, Eq)]
pub struct PodDone {
    pub labels: Labels,
    /// First address tentative → last settled, when one settled.
    pub wait_ns: Option<u64>,
    /// The part of that inside its ADD, when an ADD was traced (0 when no address waited).
    pub dad_in_add_ns: Option<u64>,
}

/// Open windows by namespace inode (the CNI call knows the inode only; a new cookie under an
/// inode closes the window of the namespace that had it before).
#[derive(Default)]
pub struct PodWindows {
    open: Mutex<HashMap<u32, Window>>,
    /// Windows closed early by a reused inode, reported at the next sweep.
    closed: Mutex<Vec<PodDone>>,
}

impl PodWindows {
    fn window<T>(&self, inode: u32, cookie: Option<u64>, labels: Labels, change: impl FnOnce(&mut Window) -> T) -> T {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = open.get_mut(&inode)
            && cookie.is_some()
            && window.cookie.is_some()
            && window.cookie != cookie
        {
            let done = window.done();
            self.closed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(done);
            open.remove(&inode);
        }
        let window = open.entry(inode).or_insert_with(|| Window::new(labels, cookie));
        window.cookie = window.cookie.or(cookie);
        window.fresh = true;
        change(window)
    }

    pub fn see(&self, event: &AddressEvent, labels: Labels) {
        let Some(end_ns) = event.time.timestamp_nanos_opt() else {
            return;
        };
        let start_ns = end_ns.saturating_sub(i64::try_from(event.tentative_ns).unwrap_or(i64::MAX));
        let settled = (event.outcome == Outcome::Settled).then_some(end_ns);
        self.window(event.netns_inode, event.netns_cookie, labels, |window| {
            window.first_start_ns = Some(window.first_start_ns.map_or(start_ns, |first| first.min(start_ns)));
            window.last_end_ns = window.last_end_ns.max(settled);
        });
    }

    /// A pod's CNI ADD succeeded, from `start` to `end` (ns since the epoch). A pod set up by
    /// a chain of plugins has one ADD per plugin: the window spans them.
    pub fn see_add(&self, inode: u32, (start, end): (i64, i64), labels: Labels) {
        self.window(inode, None, labels, |window| {
            window.add = Some(window.add.map_or((start, end), |(first, last)| (first.min(start), last.max(end))));
        });
    }

    /// Removes the pods that are done and returns them. `busy` holds the namespaces with an
    /// address in flight or held back.
    pub fn finish(&self, busy: &HashSet<u32>) -> Vec<PodDone> {
        let mut done = std::mem::take(&mut *self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|inode, window| {
            if busy.contains(inode) || std::mem::take(&mut window.fresh) {
                return true;
            }
            done.push(window.done());
            false
        });
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

    #[test]
    fn a_pod_is_counted_once_its_addresses_are_done_and_quiet() {
        let windows = PodWindows::default();
        let labels = vec![("k8s_namespace_name".to_string(), "a".to_string())];
        // Link-local added at 0 ms, settled at 1500; the pod address added at 10, settled at 1900.
        windows.see(&event(7, 1500, 1500, Outcome::Settled), labels.clone());
        assert!(windows.finish(&HashSet::from([7])).is_empty(), "still in flight");
        windows.see(&event(7, 1900, 1890, Outcome::Settled), labels.clone());
        assert!(windows.finish(&HashSet::new()).is_empty(), "fresh: one more sweep");
        let done = PodDone {
            labels: labels.clone(),
            wait_ns: Some(1_900_000_000),
            dad_in_add_ns: None,
        };
        assert_eq!(windows.finish(&HashSet::new()), vec![done]);
        assert!(windows.finish(&HashSet::new()).is_empty(), "counted once");
        // Only aborted addresses: no wait to count.
        windows.see(&event(8, 100, 100, Outcome::Aborted), labels);
        windows.finish(&HashSet::new());
        let finished = windows.finish(&HashSet::new());
        assert!(finished.iter().all(|pod| pod.wait_ns.is_none()), "{finished:?}");
    }

    /// The ADD started 20 ms before the first address and ended 30 ms after the last settled:
    /// DAD's part of it is the addresses' window; an ADD with no address is no wait at all.
    #[test]
    fn the_wait_inside_the_add_and_a_reused_inode() {
        let windows = PodWindows::default();
        let labels = vec![("k8s_namespace_name".to_string(), "a".to_string())];
        windows.see(&event(7, 1500, 1480, Outcome::Settled), labels.clone());
        windows.see_add(7, (ms_since_base(0), ms_since_base(1530)), labels.clone());
        windows.see_add(9, (ms_since_base(0), ms_since_base(40)), labels.clone());
        windows.finish(&HashSet::new());
        let mut done = windows.finish(&HashSet::new());
        done.sort_by_key(|pod| pod.dad_in_add_ns);
        assert_eq!(
            done.iter().map(|pod| (pod.wait_ns, pod.dad_in_add_ns)).collect::<Vec<_>>(),
            [(None, Some(0)), (Some(1_480_000_000), Some(1_480_000_000))]
        );
        let mut first = event(5, 100, 50, Outcome::Settled);
        first.netns_cookie = Some(1);
        let mut second = event(5, 300, 50, Outcome::Settled);
        second.netns_cookie = Some(2);
        windows.see(&first, labels.clone());
        windows.see(&second, labels);
        assert_eq!(windows.finish(&HashSet::from([5])).len(), 1, "the first namespace is done");
    }
}
