//! The terminal report of one session: counts, then bcc-style histograms of tentative, DAD
//! and per-pod delay, and optionally every pod's delay.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::Write as _;

use super::{figures::Figures, summary::summarize};
use crate::{
    hist::{Delays, Unit, human, render_log2, render_summary},
    session::Session,
    text::terminal,
};

fn section(out: &mut String, title: &str, values: &[u64], unit: Option<Unit>) {
    let _ = writeln!(out, "\n{title}");
    if values.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    out.push_str(&render_log2(values, unit.unwrap_or_else(|| Unit::for_values(values))));
    if let Some(summary) = Delays::from_values(values.iter().copied()).summary() {
        out.push_str(&render_summary(&summary));
    }
}

/// The terminal report: counts, then histograms of tentative, DAD and per-pod delay.
#[must_use]
pub fn render_text(session: &Session<Figures>, per_pod: bool) -> String {
    render_text_in(session, per_pod, None)
}

/// [`render_text`] with every histogram in `unit` (`record -m`); chosen per histogram
/// when `None`.
#[must_use]
pub fn render_text_in(session: &Session<Figures>, per_pod: bool, unit: Option<Unit>) -> String {
    let summary = summarize(session);
    let mut out = String::new();
    let seconds = (session.ended_at - session.started_at).num_milliseconds() as f64 / 1000.0;
    let _ = writeln!(
        out,
        "dad-trace session: {} backend, kernel {}, host {}, {:.1} s from {}",
        session.backend,
        terminal(&session.kernel_release),
        terminal(&session.hostname),
        seconds,
        session.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(
        out,
        "addresses: {} (settled {}, failed {}, aborted {}; partial {}); still tentative at end: {}; lost events: {}",
        summary.addresses,
        summary.settled,
        summary.failed,
        summary.aborted,
        summary.partial,
        summary.unfinished,
        summary.lost_events
    );
    if summary.lost_events > 0 {
        out.push_str("WARNING: the kernel dropped events (ring buffer full): raise --ring-bytes\n");
    }
    section(
        &mut out,
        "Tentative-state delay (address created -> tentative cleared), settled addresses:",
        &session.events.tentative(),
        unit,
    );
    section(
        &mut out,
        "DAD delay (DAD begin -> completed), settled addresses that ran DAD:",
        &session.events.dad(),
        unit,
    );
    let pod_values: Vec<u64> = summary.pods.iter().map(|pod| pod.delay_ns).collect();
    section(
        &mut out,
        &format!(
            "Per-pod delay (first tentative address -> last settled), {} pods:",
            summary.pods.len()
        ),
        &pod_values,
        unit,
    );
    out.push_str(&super::podstart::render_text(&summary.pod_start));
    if summary.socket_errors.traced {
        out.push_str(&super::socket_errors::render_text(&summary.socket_errors));
    }
    if per_pod && !summary.pods.is_empty() {
        let names: Vec<_> = summary.pods.iter().map(|pod| terminal(&pod.pod)).collect();
        let width = names.iter().map(|name| name.chars().count()).max().unwrap_or(3).max(3);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:>5}  {:>10}  {:>6}  {:>7}",
            "POD", "ADDRS", "DELAY", "FAILED", "ABORTED"
        );
        for (pod, name) in summary.pods.iter().zip(&names) {
            let _ = writeln!(
                out,
                "{:<width$}  {:>5}  {:>10}  {:>6}  {:>7}",
                name,
                pod.addresses,
                human(pod.delay_ns),
                pod.failed,
                pod.aborted
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        report::summary::tests::{event, session},
        session::Outcome,
    };

    #[test]
    fn text_report_has_histograms_and_pod_table() {
        let mut s = session(vec![
            event(10, 0, 1500, Some(1400), Outcome::Settled),
            event(11, 0, 1800, Some(1700), Outcome::Settled),
        ])
        .fold();
        s.lost_events = 3;
        let text = render_text(&s, true);
        assert!(text.contains("Tentative-state delay"), "{text}");
        assert!(text.contains("1024 -> 2047"), "{text}");
        assert!(text.contains("lost events: 3") && text.contains("WARNING"), "{text}");
        assert!(text.contains("POD") && text.contains("pod-11"), "{text}");
        assert!(text.contains("p99 1.80 s"), "{text}");
        assert_eq!(render_text_in(&s, true, None), text);
    }

    /// The head line's length of the session; no warning without lost events; the per-pod
    /// table only when asked for.
    #[test]
    fn the_head_and_what_is_left_out() {
        let s = session(vec![event(10, 0, 1500, Some(1400), Outcome::Settled)]).fold();
        let text = render_text(&s, false);
        assert!(
            text.starts_with("dad-trace session: tracepoint backend, kernel 6.18.44, host node-a, 10.0 s from 2026-11-25 20:00:00 UTC\n"),
            "{text}"
        );
        assert!(text.contains("lost events: 0\n") && !text.contains("WARNING"), "{text}");
        assert!(!text.contains("POD"), "no per-pod table unless asked: {text}");
        assert!(render_text(&s, true).contains("POD"));
    }

    /// `-m`: milliseconds, even where microseconds would be chosen.
    #[test]
    fn a_unit_can_be_forced() {
        let s = session(vec![event(10, 0, 3, Some(2), Outcome::Settled)]).fold();
        assert!(render_text(&s, false).contains("usecs"));
        let text = render_text_in(&s, false, Some(Unit::Msecs));
        assert!(text.contains("msecs") && !text.contains("usecs"), "{text}");
        assert_eq!(text.matches("msecs").count(), 3, "every histogram: {text}");
    }
}
