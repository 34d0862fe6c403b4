//! Where finished, enriched addresses go: the live view on the terminal (lines, intervals,
//! JSON lines), the Prometheus metrics of `serve`, the synthetic pods' progress, and the
//! session's event list.
use std::{collections::HashSet, net::Ipv6Addr, sync::Arc};

use chrono::{DateTime, Utc};

pub use super::display::{call_line, event_line};
use super::{filter::Filter, live::Live, metrics::Metrics, otlp::Otlp};
use crate::{
    kernel::events::NetnsId,
    node::synthetic::SyntheticPod,
    record::{
        cni::TracedCall,
        recorder::{Kept, Output, Stuck, Sweep},
    },
    session::{AddressEvent, PodSettings, SocketError},
};

/// Every consumer of finished addresses; each one is optional.
#[derive(Default)]
pub struct Sinks {
    filter: Filter,
    live: Option<Live>,
    metrics: Option<Arc<Metrics>>,
    /// Spans for a collector; gone once the recording closed (its queue then drains).
    otlp: Option<Otlp>,
    progress: Option<SyntheticProgress>,
    kept: Option<Vec<AddressEvent>>,
    kept_calls: Option<Vec<TracedCall>>,
    kept_settings: Option<Vec<(NetnsId, PodSettings)>>,
    finished: usize,
    calls: usize,
}

impl Sinks {
    /// Keeps every event for the session file when `keep` (a long-running agent without a
    /// file does not, so its memory stays flat).
    #[must_use]
    pub fn new(keep: bool) -> Self {
        Self {
            kept: keep.then(Vec::new),
            kept_calls: keep.then(Vec::new),
            kept_settings: keep.then(Vec::new),
            ..Self::default()
        }
    }

    /// Only addresses `filter` admits are shown, counted and kept.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Shows finished addresses, pods and intervals as they come.
    #[must_use]
    pub fn with_live(mut self, live: Live) -> Self {
        self.live = Some(live);
        self
    }

    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sends what it sees as spans.
    #[must_use]
    pub fn with_otlp(mut self, otlp: Option<Otlp>) -> Self {
        self.otlp = otlp;
        self
    }

    /// Follows the addresses of these synthetic pods (see [`Sinks::synthetic_done`]).
    #[must_use]
    pub fn with_progress(mut self, pods: &[SyntheticPod]) -> Self {
        self.progress = (!pods.is_empty()).then(|| SyntheticProgress::new(pods));
        self
    }

    /// Intervals the live view showed.
    #[must_use]
    pub fn intervals(&self) -> usize {
        self.live.as_ref().map_or(0, Live::intervals)
    }

    /// Finished top-level CNI calls the filter admitted.
    #[must_use]
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Finished addresses the filter admitted, whether or not kept.
    #[must_use]
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// Whether synthetic pods are followed.
    #[must_use]
    pub fn follows_synthetic(&self) -> bool {
        self.progress.is_some()
    }

    /// Whether every synthetic pod's addresses have finished.
    #[must_use]
    pub fn synthetic_done(&self) -> bool {
        self.progress.as_ref().is_some_and(SyntheticProgress::done)
    }

    /// The kept events.
    #[must_use]
    pub fn into_events(self) -> Vec<AddressEvent> {
        self.kept.unwrap_or_default()
    }
}

impl Output for Sinks {
    fn address(&mut self, event: AddressEvent) {
        // Synthetic pods end the run once done, whatever the filter shows (`--netns 'dt-*'`
        // leaves out their host-side veths, which still have to finish).
        if let Some(progress) = self.progress.as_mut() {
            progress.see(&event);
        }
        if !self.filter.admits(&event) {
            return;
        }
        self.finished += 1;
        if let Some(metrics) = &self.metrics {
            metrics.observe(&event);
        }
        if let Some(live) = self.live.as_mut() {
            live.address(&event);
        }
        if let Some(otlp) = self.otlp.as_mut() {
            otlp.address(&event);
        }
        if let Some(kept) = self.kept.as_mut() {
            kept.push(event);
        }
    }

    /// A finished top-level CNI call: counted in the metrics, shown, kept for the session's
    /// pods.
    fn call(&mut self, traced: TracedCall) {
        if !self.filter.admits_call(&traced) {
            return;
        }
        self.calls += 1;
        if let Some(metrics) = &self.metrics {
            metrics.observe_call(&traced);
        }
        if let Some(live) = self.live.as_mut() {
            live.call(&traced);
        }
        if let Some(otlp) = self.otlp.as_mut() {
            otlp.call(&traced);
        }
        if let Some(kept) = self.kept_calls.as_mut() {
            kept.push(traced);
        }
    }

    /// A socket error: counted in the metrics, shown. The session keeps it (the recorder
    /// does: it is one entry however often it grows).
    fn socket_error(&mut self, error: &SocketError, new: bool, added: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_socket_error(error, added);
        }
        if let Some(live) = self.live.as_mut() {
            live.socket_error(error, new);
        }
        if let Some(otlp) = self.otlp.as_mut() {
            otlp.socket_error(error);
        }
    }

    /// An address tentative too long: shown (the gauges come with the sweep).
    fn stuck(&mut self, stuck: &Stuck) {
        if let Some(live) = self.live.as_mut() {
            live.stuck(stuck);
        }
    }

    fn follows_pods(&self) -> bool {
        self.metrics.is_some() || self.live.is_some()
    }

    /// Pods with no address in flight (`busy` holds the namespaces that have one) and none
    /// finished since the last sweep are done; the gauges are set.
    fn sweep(&mut self, sweep: &Sweep) {
        if let Some(otlp) = self.otlp.as_mut() {
            otlp.sweep(Utc::now());
        }
        if let Some(metrics) = &self.metrics {
            if let Some(otlp) = &self.otlp {
                metrics.set_otlp(otlp.stats());
            }
            metrics.set_lost(sweep.lost_events);
            metrics.set_in_flight(sweep.in_flight);
            metrics.set_stuck(sweep.oldest_ns, sweep.stuck);
            // Cheap (a dozen small files) and a tuning applied while the agent runs shows.
            metrics.set_sysctls(&crate::node::sysctl::snapshot());
            metrics.sweep_pods(&sweep.busy);
        }
        if let Some(live) = self.live.as_mut() {
            live.sweep(&sweep.busy, false);
        }
    }

    fn tick(&mut self, now: DateTime<Utc>) {
        if let Some(live) = self.live.as_mut() {
            live.tick(now);
        }
    }

    fn close(&mut self, now: DateTime<Utc>, last_interval: bool) {
        if let Some(live) = self.live.as_mut() {
            live.close(now, last_interval);
        }
        if let Some(mut otlp) = self.otlp.take() {
            otlp.close();
        }
    }

    /// Counted in the metrics, kept for the session's pods. Every pod namespace counts,
    /// whatever the filter: its name may not be known yet when its first address comes.
    fn settings(&mut self, netns: NetnsId, settings: PodSettings) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_settings(&settings);
        }
        if let Some(kept) = self.kept_settings.as_mut() {
            kept.push((netns, settings));
        }
    }

    fn into_kept(self) -> Kept {
        Kept {
            events: self.kept.unwrap_or_default(),
            calls: self.kept_calls.unwrap_or_default(),
            settings: self.kept_settings.unwrap_or_default(),
        }
    }
}

fn link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// When synthetic pods are traced, the run is done once every pod's link-local and global
/// address and every host-side veth's link-local address has finished.
struct SyntheticProgress {
    pending: HashSet<(String, bool)>,
}

impl SyntheticProgress {
    fn new(pods: &[SyntheticPod]) -> Self {
        Self::of(pods.iter().map(|pod| (pod.name.as_str(), pod.host_veth.as_str())))
    }

    /// Pods by namespace name and host-side veth name.
    fn of<'a>(pods: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut pending = HashSet::new();
        for (name, host_veth) in pods {
            pending.insert((name.to_string(), true));
            pending.insert((name.to_string(), false));
            pending.insert((host_veth.to_string(), true));
        }
        Self { pending }
    }

    fn see(&mut self, event: &AddressEvent) {
        let owner = if event.host_netns {
            Some(&event.ifname)
        } else {
            event.netns_name.as_ref()
        };
        if let Some(owner) = owner {
            self.pending.remove(&(owner.clone(), link_local(event.addr)));
        }
    }

    fn done(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::output::live::{LiveFormat, LiveOptions};

    /// The agent without `-o` keeps nothing per address: its memory does not grow with pods.
    #[test]
    fn without_a_session_file_nothing_is_kept() {
        let mut sinks = Sinks::new(false);
        let event = crate::session::tests::sample().events.remove(0);
        for inode in 0..1000 {
            sinks.address(event.clone());
            sinks.settings(NetnsId { inode, cookie: 0 }, PodSettings::unread("gone"));
        }
        assert_eq!(sinks.finished(), 1000);
        let kept = sinks.into_kept();
        assert!(kept.events.is_empty() && kept.settings.is_empty());
    }

    #[test]
    fn a_closed_output_stops_the_live_view_not_the_sinks() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for format in [LiveFormat::Text, LiveFormat::Jsonl] {
            let options = LiveOptions {
                format,
                lines: true,
                intervals: true,
                unit: None,
            };
            let mut sinks = Sinks::new(true).with_live(Live::new(Box::new(Closed), options));
            let event = crate::session::tests::sample().events.remove(0);
            sinks.address(event.clone());
            sinks.sweep(&Sweep {
                busy: HashSet::new(),
                in_flight: 0,
                lost_events: 0,
                oldest_ns: None,
                stuck: 0,
            });
            sinks.tick(event.time);
            sinks.address(event);
            sinks.close(Utc::now(), true);
            assert_eq!(sinks.finished(), 2);
            assert_eq!(
                sinks.intervals(),
                2,
                "intervals still count: a tick and the partial last"
            );
            assert_eq!(sinks.into_events().len(), 2);
        }
    }

    /// A synthetic pod is done when its two addresses and its host veth's link-local are;
    /// the filter does not hide them from that count (the host veth is not in the pod's
    /// namespace), only from the output.
    #[test]
    fn synthetic_pods_are_followed_past_the_filter() {
        let template = crate::session::tests::sample().events.remove(0);
        let address = |netns: Option<&str>, host: bool, ifname: &str, addr: &str| AddressEvent {
            netns_name: netns.map(str::to_string),
            host_netns: host,
            ifname: ifname.into(),
            addr: addr.parse().expect("literal"),
            ..template.clone()
        };
        let filter = Filter {
            netns: glob::Pattern::new("dt-*").ok(),
            ..Filter::default()
        };
        let mut sinks = Sinks::new(true).with_filter(filter);
        sinks.progress = Some(SyntheticProgress::of(
            [("dt-0", "dt-h0"), ("dt-1", "dt-h1")].into_iter(),
        ));
        assert!(sinks.follows_synthetic() && !sinks.synthetic_done());
        for event in [
            address(Some("dt-0"), false, "eth0", "fe80::1"),
            address(Some("dt-0"), false, "eth0", "fd00:dad::1"),
            address(None, true, "dt-h0", "fe80::2"),
            address(Some("dt-1"), false, "eth0", "fe80::3"),
            address(None, true, "dt-h1", "fe80::4"),
            address(Some("other"), false, "eth0", "fd00:dad::2"),
        ] {
            sinks.address(event);
            assert!(!sinks.synthetic_done(), "dt-1's global address is missing");
        }
        sinks.address(address(Some("dt-1"), false, "eth0", "fd00:dad::2"));
        assert!(sinks.synthetic_done());
        assert_eq!(sinks.finished(), 4, "the host veths and `other` are not shown");
        assert!(!Sinks::new(true).follows_synthetic() && !Sinks::new(true).synthetic_done());
    }

    /// Only admitted addresses reach the live view and the count; sinks without a live view
    /// or metrics need no busy namespaces.
    #[test]
    fn the_filter_comes_first() {
        let event = crate::session::tests::sample().events.remove(0);
        let filter = Filter {
            ifname: glob::Pattern::new("veth*").ok(),
            ..Default::default()
        };
        let mut sinks = Sinks::new(true).with_filter(filter);
        assert!(!sinks.follows_pods());
        sinks.address(event);
        assert_eq!(sinks.finished(), 0);
        assert_eq!(sinks.intervals(), 0);
        assert!(sinks.into_events().is_empty());
    }
}
