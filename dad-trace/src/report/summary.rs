//! What a session says, as numbers: per-pod delays and the summary every report and the
//! JSON output start from.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::figures::Figures;
pub use super::figures::PodDelay;
use crate::{
    hist::{Delays, Summary},
    session::{AddressEvent, Session},
};

/// Groups the addresses of pod namespaces (not the host's) by namespace.
#[must_use]
pub fn pod_delays(events: &[AddressEvent]) -> Vec<PodDelay> {
    events.iter().collect::<Figures>().pod_delays()
}

/// The machine-readable summary of one session.
#[derive(Debug, Serialize)]
pub struct SessionSummary {
    pub backend: crate::session::Backend,
    pub kernel_release: String,
    pub hostname: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub addresses: usize,
    pub settled: usize,
    pub failed: usize,
    pub aborted: usize,
    pub partial: usize,
    pub unfinished: usize,
    pub lost_events: u64,
    pub tentative: Option<Summary>,
    pub dad: Option<Summary>,
    pub pod: Option<Summary>,
    pub pods: Vec<PodDelay>,
    /// CNI ADD, DAD wait inside it, pod start and DAD's share, from the session's `pods[]`.
    pub pod_start: super::podstart::PodStartSummary,
    /// Application socket errors, per pod and by cause.
    pub socket_errors: super::socket_errors::SocketSummary,
}

#[must_use]
pub fn summarize(session: &Session<Figures>) -> SessionSummary {
    let figures = &session.events;
    let pods = figures.pod_delays();
    SessionSummary {
        backend: session.backend,
        kernel_release: session.kernel_release.clone(),
        hostname: session.hostname.clone(),
        started_at: session.started_at,
        ended_at: session.ended_at,
        addresses: figures.addresses,
        settled: figures.settled,
        failed: figures.failed,
        aborted: figures.aborted,
        partial: figures.partial,
        unfinished: session.unfinished.len(),
        lost_events: session.lost_events,
        tentative: Delays::from_values(figures.tentative()).summary(),
        dad: Delays::from_values(figures.dad()).summary(),
        pod: Delays::from_values(pods.iter().map(|pod| pod.delay_ns)).summary(),
        pods,
        pod_start: super::podstart::summarize(session),
        socket_errors: super::socket_errors::summarize(&session.socket_errors, session.sockets.is_some()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::{Backend, Outcome};

    pub(crate) fn event(
        netns: u32,
        start_ms: i64,
        tentative_ms: u64,
        dad_ms: Option<u64>,
        outcome: Outcome,
    ) -> AddressEvent {
        let base: DateTime<Utc> = "2026-11-25T20:00:00Z".parse().expect("literal time");
        AddressEvent {
            time: base + chrono::Duration::milliseconds(start_ms + i64::try_from(tentative_ms).expect("small")),
            netns_inode: netns,
            netns_cookie: None,
            netns_name: Some(format!("pod-{netns}")),
            host_netns: netns == 1,
            pod: None,
            ifname: "eth0".into(),
            ifindex: 2,
            peer: None,
            addr: "fe80::1".parse().expect("literal address"),
            tentative_ns: tentative_ms * 1_000_000,
            dad_ns: dad_ms.map(|ms| ms * 1_000_000),
            link_wait_ns: None,
            delay_ns: None,
            probing_ns: None,
            optimistic: false,
            outcome,
            partial: false,
            node: None,
            duplicate_of: Vec::new(),
        }
    }

    pub(crate) fn session(events: Vec<AddressEvent>) -> Session {
        let base: DateTime<Utc> = "2026-11-25T20:00:00Z".parse().expect("literal time");
        let mut session = Session::new(Backend::Tracepoint, "6.18.44".into(), "node-a".into(), base);
        session.ended_at = base + chrono::Duration::seconds(10);
        session.events = events;
        session
    }

    #[test]
    fn pod_delay_spans_first_start_to_last_end() {
        let events = vec![
            event(10, 0, 1500, Some(1400), Outcome::Settled),
            event(10, 100, 2000, Some(1900), Outcome::Settled),
            event(11, 50, 1000, None, Outcome::Settled),
            event(1, 0, 3000, Some(2900), Outcome::Settled),
        ];
        let pods = pod_delays(&events);
        assert_eq!(pods.len(), 2, "host namespace is not a pod");
        assert_eq!(
            (pods[0].pod.as_str(), pods[0].addresses, pods[0].delay_ns),
            ("pod-10", 2, 2_100_000_000)
        );
        assert_eq!((pods[1].pod.as_str(), pods[1].delay_ns), ("pod-11", 1_000_000_000));
    }

    #[test]
    fn summary_counts_outcomes_and_ignores_unsettled_delays() {
        let summary = summarize(
            &session(vec![
                event(10, 0, 1500, Some(1400), Outcome::Settled),
                event(11, 0, 300, Some(200), Outcome::Failed),
                event(12, 0, 10, None, Outcome::Aborted),
            ])
            .fold(),
        );
        assert_eq!(
            (summary.addresses, summary.settled, summary.failed, summary.aborted),
            (3, 1, 1, 1)
        );
        assert_eq!(summary.tentative.expect("one settled").count, 1);
        assert_eq!(summary.dad.expect("one ran DAD").count, 1);
        assert_eq!(summary.pod.expect("three pods").count, 3);
    }
}
