//! Per-pod waits for the agent's histogram: a pod namespace's first address added → its
//! last address settled, as `report` computes it from a session, but live: a pod is done
//! when none of its addresses is in flight and a sweep passed without a new one (its
//! addresses may reach the sink a little apart, after the runtime named the pod).
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use crate::session::{AddressEvent, Outcome};

type Labels = Vec<(String, String)>;

struct Window {
    labels: Labels,
    first_start_ns: i64,
    last_end_ns: Option<i64>,
    /// An address arrived since the last sweep.
    fresh: bool,
}

#[derive(Default)]
pub struct PodWindows {
    open: Mutex<HashMap<(u32, Option<u64>), Window>>,
}

impl PodWindows {
    pub fn see(&self, event: &AddressEvent, labels: Labels) {
        let Some(end_ns) = event.time.timestamp_nanos_opt() else {
            return;
        };
        let start_ns = end_ns.saturating_sub(i64::try_from(event.tentative_ns).unwrap_or(i64::MAX));
        let settled = (event.outcome == Outcome::Settled).then_some(end_ns);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = open
            .entry((event.netns_inode, event.netns_cookie))
            .or_insert_with(|| Window {
                labels,
                first_start_ns: start_ns,
                last_end_ns: None,
                fresh: true,
            });
        window.first_start_ns = window.first_start_ns.min(start_ns);
        window.last_end_ns = window.last_end_ns.max(settled);
        window.fresh = true;
    }

    /// Removes the pods that are done and returns their labels and waits.
    pub fn finish(&self, in_flight: &HashSet<u32>) -> Vec<(Labels, u64)> {
        let mut done = Vec::new();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|(inode, _), window| {
            if in_flight.contains(inode) || std::mem::take(&mut window.fresh) {
                return true;
            }
            if let Some(end) = window.last_end_ns {
                let wait = u64::try_from(end.saturating_sub(window.first_start_ns)).unwrap_or(0);
                done.push((std::mem::take(&mut window.labels), wait));
            }
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

    #[test]
    fn a_pod_is_counted_once_its_addresses_are_done_and_quiet() {
        let windows = PodWindows::default();
        let labels = vec![("k8s_namespace_name".to_string(), "a".to_string())];
        // Link-local added at 0 ms, settled at 1500; the pod address added at 10, settled at 1900.
        windows.see(&event(7, 1500, 1500, Outcome::Settled), labels.clone());
        assert!(windows.finish(&HashSet::from([7])).is_empty(), "still in flight");
        windows.see(&event(7, 1900, 1890, Outcome::Settled), labels.clone());
        assert!(windows.finish(&HashSet::new()).is_empty(), "fresh: one more sweep");
        assert_eq!(windows.finish(&HashSet::new()), vec![(labels.clone(), 1_900_000_000)]);
        assert!(windows.finish(&HashSet::new()).is_empty(), "counted once");
        // Only aborted addresses: no wait to count.
        windows.see(&event(8, 100, 100, Outcome::Aborted), labels);
        windows.finish(&HashSet::new());
        assert!(windows.finish(&HashSet::new()).is_empty());
    }
}
