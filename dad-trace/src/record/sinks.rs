//! Where finished, enriched addresses go: the live line on the terminal, the Prometheus
//! metrics of `serve`, the synthetic pods' progress, and the session's event list.
use std::{collections::HashSet, io::Write, net::Ipv6Addr, sync::Arc};

use super::{cni::TracedCall, filter::Filter, metrics::Metrics};
use crate::{
    hist::human,
    node::synthetic::SyntheticPod,
    session::{AddressEvent, Outcome},
    text::terminal,
};

/// Every consumer of finished addresses; each one is optional.
#[derive(Default)]
pub struct Sinks {
    filter: Filter,
    lines: Option<Box<dyn Write + Send>>,
    metrics: Option<Arc<Metrics>>,
    progress: Option<SyntheticProgress>,
    kept: Option<Vec<AddressEvent>>,
    kept_calls: Option<Vec<TracedCall>>,
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
            ..Self::default()
        }
    }

    /// Only addresses `filter` admits are shown, counted and kept.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Prints one line per address to `out`.
    #[must_use]
    pub fn with_lines(mut self, out: Box<dyn Write + Send>) -> Self {
        self.lines = Some(out);
        self
    }

    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Follows the addresses of these synthetic pods (see [`Sinks::synthetic_done`]).
    #[must_use]
    pub fn with_progress(mut self, pods: &[SyntheticPod]) -> Self {
        self.progress = (!pods.is_empty()).then(|| SyntheticProgress::new(pods));
        self
    }

    pub fn accept(&mut self, event: AddressEvent) {
        if !self.filter.admits(&event) {
            return;
        }
        self.finished += 1;
        if let Some(metrics) = &self.metrics {
            metrics.observe(&event);
        }
        if let Some(out) = self.lines.as_mut()
            && let Err(e) = writeln!(out, "{}", event_line(&event))
        {
            // A closed terminal or pipe ends the lines, not the recording.
            log::debug!("live lines stopped: {e}");
            self.lines = None;
        }
        if let Some(progress) = self.progress.as_mut() {
            progress.see(&event);
        }
        if let Some(kept) = self.kept.as_mut() {
            kept.push(event);
        }
    }

    /// A finished top-level CNI call: counted in the metrics, shown, kept for the session's
    /// pods.
    pub fn accept_call(&mut self, traced: TracedCall) {
        if !self.filter.admits_call(&traced) {
            return;
        }
        self.calls += 1;
        if let Some(metrics) = &self.metrics {
            metrics.observe_call(&traced);
        }
        if let Some(out) = self.lines.as_mut()
            && let Err(e) = writeln!(out, "{}", call_line(&traced))
        {
            log::debug!("live lines stopped: {e}");
            self.lines = None;
        }
        if let Some(kept) = self.kept_calls.as_mut() {
            kept.push(traced);
        }
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

    #[must_use]
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
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

    /// The kept events and calls.
    #[must_use]
    pub fn into_kept(self) -> (Vec<AddressEvent>, Vec<TracedCall>) {
        (self.kept.unwrap_or_default(), self.kept_calls.unwrap_or_default())
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
        let mut pending = HashSet::new();
        for pod in pods {
            pending.insert((pod.name.clone(), true));
            pending.insert((pod.name.clone(), false));
            pending.insert((pod.host_veth.clone(), true));
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

/// One line per finished top-level CNI call, as `record` prints them while it runs: when it
/// ended, its pod (or namespace), command, plugin (and delegates), time and outcome.
#[must_use]
pub fn call_line(traced: &TracedCall) -> String {
    let call = &traced.call;
    let label = traced.label();
    let delegates: Vec<&str> = call.delegates.iter().map(crate::session::CniCall::plugin_name).collect();
    let plugin = if delegates.is_empty() {
        call.plugin_name().to_string()
    } else {
        format!("{} (+{})", call.plugin_name(), delegates.join(", "))
    };
    let outcome = match (call.exit_status, call.exit_signal) {
        (Some(0), _) => "ok".to_string(),
        (Some(status), _) => format!("exit {status}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "running".to_string(),
    };
    format!(
        "{}  {:<16} CNI {:<6} {:<28} {:>9}  {outcome}",
        call.end().unwrap_or(call.start).format("%H:%M:%S%.3f"),
        terminal(&label),
        terminal(call.command.as_deref().unwrap_or("-")),
        terminal(&plugin),
        call.duration_ns.map_or_else(|| "-".to_string(), human),
    )
}

/// One line per finished address, as `record` prints them while it runs.
#[must_use]
pub fn event_line(event: &AddressEvent) -> String {
    let dad = event.dad_ns.map_or_else(|| "-".to_string(), human);
    let peer = event
        .peer
        .as_ref()
        .map(|peer| match (&peer.ifname, &peer.pod) {
            (_, Some(pod)) => format!(" serves {}", terminal(pod)),
            (Some(name), None) => format!(" peer {}", terminal(name)),
            (None, None) => format!(" peer #{}", peer.ifindex),
        })
        .unwrap_or_default();
    let partial = if event.partial { " (partial)" } else { "" };
    let duplicate = if event.outcome == Outcome::Failed {
        if event.duplicate_of.is_empty() {
            " duplicate answered from off this node".to_string()
        } else {
            let holders: Vec<String> = event
                .duplicate_of
                .iter()
                .map(|holder| format!("{} {}", terminal(&holder.name), terminal(&holder.ifname)))
                .collect();
            format!(" duplicate of {}", holders.join(", "))
        }
    } else {
        String::new()
    };
    format!(
        "{}  {:<16} {:<10} {:<28} tentative {:>9}  DAD {:>9}  {}{partial}{peer}{duplicate}",
        event.time.format("%H:%M:%S%.3f"),
        terminal(&event.pod_label()),
        terminal(&event.ifname),
        event.addr,
        human(event.tentative_ns),
        dad,
        event.outcome,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_line_shows_dad_dash_when_no_dad() {
        let mut event = crate::session::tests::sample().events.remove(0);
        event.dad_ns = None;
        let line = event_line(&event);
        assert!(
            line.contains("dt-pod-0") && line.contains("DAD         -") && line.ends_with("settled peer dt-h0"),
            "{line}"
        );
    }

    /// The agent without `-o` keeps nothing per address: its memory does not grow with pods.
    #[test]
    fn without_a_session_file_nothing_is_kept() {
        let mut sinks = Sinks::new(false);
        let event = crate::session::tests::sample().events.remove(0);
        for _ in 0..1000 {
            sinks.accept(event.clone());
        }
        assert_eq!(sinks.finished(), 1000);
        assert!(sinks.into_events().is_empty());
    }

    /// A tenant names its interface with a terminal escape: the line shows it, not obeys it.
    #[test]
    fn names_cannot_drive_the_terminal() {
        let mut event = crate::session::tests::sample().events.remove(0);
        event.ifname = "e\u{1b}[2J".into();
        event.netns_name = Some("cni-\u{1b}]0;owned\u{7}".into());
        let line = event_line(&event);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("e\\x1b[2J") && line.contains("cni-\\x1b]0;owned\\x07"),
            "{line}"
        );
    }

    #[test]
    fn a_closed_output_stops_the_lines_not_the_sinks() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut sinks = Sinks::new(true).with_lines(Box::new(Closed));
        let event = crate::session::tests::sample().events.remove(0);
        sinks.accept(event.clone());
        sinks.accept(event);
        assert_eq!(sinks.finished(), 2);
        assert_eq!(sinks.into_events().len(), 2);
    }
}
