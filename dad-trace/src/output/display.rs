//! How finished addresses and intervals look on a terminal: the live lines under their
//! header row, an interval's histograms, and the zone every time is shown with.
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, Local, Offset as _, Utc};

use crate::{
    hist::{Delays, Unit, human, render_log2, render_summary},
    record::{cni::TracedCall, recorder::Stuck},
    session::{AddressEvent, Outcome, SocketError},
    text::terminal,
};

/// The zone a wall-clock time is shown in (the node's local zone; fixed in tests).
pub type Zone = fn(DateTime<Utc>) -> FixedOffset;

/// The node's local zone at `time` (follows `TZ` and /etc/localtime; daylight saving too).
#[must_use]
pub fn local_zone(time: DateTime<Utc>) -> FixedOffset {
    time.with_timezone(&Local).offset().fix()
}

/// `UTC`, `UTC+1`, `UTC-3:30`.
#[must_use]
pub fn zone_name(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let (sign, seconds) = if seconds < 0 { ('-', -seconds) } else { ('+', seconds) };
    match (seconds / 3600, seconds % 3600 / 60) {
        (0, 0) => "UTC".into(),
        (hours, 0) => format!("UTC{sign}{hours}"),
        (hours, minutes) => format!("UTC{sign}{hours}:{minutes:02}"),
    }
}

/// Delays of the current interval.
#[derive(Default)]
pub(super) struct Interval {
    pub settled: usize,
    pub failed: usize,
    pub aborted: usize,
    pub tentative: Vec<u64>,
    pub pods: Vec<u64>,
}

impl Interval {
    pub fn addresses(&self) -> usize {
        self.settled + self.failed + self.aborted
    }
}

/// Column widths of the live lines, shared by the header row; the time column widens for a
/// zone name longer than the time (`TIME(UTC+5:30)`).
const TIME: usize = 12;
const POD: usize = 16;
const IFACE: usize = 10;
const ADDRESS: usize = 28;
const DELAY: usize = 9;

/// The header row over the live lines; the time column names its zone.
#[must_use]
pub fn header_row(zone: FixedOffset) -> String {
    let width = time_width(zone);
    let time = format!("TIME({})", zone_name(zone));
    format!(
        "{time:<width$}  {:<POD$} {:<IFACE$} {:<ADDRESS$} {:>DELAY$}  {:>DELAY$}  OUTCOME",
        "POD", "IFACE", "ADDRESS", "TENTATIVE", "DAD"
    )
}

fn time_width(zone: FixedOffset) -> usize {
    TIME.max("TIME()".len() + zone_name(zone).len())
}

/// One line per finished address, in the node's local zone.
#[must_use]
pub fn event_line(event: &AddressEvent) -> String {
    line_in(event, local_zone(event.time))
}

/// One line per finished address, its time in `zone` (named by the header row).
#[must_use]
pub fn line_in(event: &AddressEvent, zone: FixedOffset) -> String {
    let width = time_width(zone);
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
        "{:<width$}  {:<POD$} {:<IFACE$} {:<ADDRESS$} {:>DELAY$}  {:>DELAY$}  {}{partial}{peer}{duplicate}",
        event.time.with_timezone(&zone).format("%H:%M:%S%.3f").to_string(),
        terminal(&event.pod_label()),
        terminal(&event.ifname),
        event.addr.to_string(),
        human(event.tentative_ns),
        dad,
        event.outcome,
    )
}

/// One line per finished top-level CNI call, in the live lines' columns: when it ended, its
/// pod (or namespace), `CNI` and the command where the interface goes, the plugin (and its
/// delegates), the call's time, and how it ended.
#[must_use]
pub fn call_line(traced: &TracedCall) -> String {
    call_line_in(traced, local_zone(traced.call.end().unwrap_or(traced.call.start)))
}

/// [`call_line`] with its time in `zone`.
#[must_use]
pub fn call_line_in(traced: &TracedCall, zone: FixedOffset) -> String {
    let width = time_width(zone);
    let call = &traced.call;
    let delegates: Vec<&str> = call
        .delegates
        .iter()
        .map(crate::session::CniCall::plugin_name)
        .collect();
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
    let command = format!("CNI {}", call.command.as_deref().unwrap_or("-"));
    format!(
        "{:<width$}  {:<POD$} {:<IFACE$} {:<ADDRESS$} {:>DELAY$}  {:>DELAY$}  {outcome}",
        call.end()
            .unwrap_or(call.start)
            .with_timezone(&zone)
            .format("%H:%M:%S%.3f")
            .to_string(),
        terminal(&traced.label()),
        terminal(&command),
        terminal(&plugin),
        call.duration_ns.map_or_else(|| "-".to_string(), human),
        "",
    )
}

/// One line per socket error, in the live lines' columns: when it first failed, its pod (or
/// namespace), the syscall where the interface goes, the address, how long it had been
/// tentative then, and who failed how often.
#[must_use]
pub fn socket_line_in(error: &SocketError, zone: FixedOffset) -> String {
    let width = time_width(zone);
    let label = error.label();
    let cause = if error.during_dad() {
        "during DAD"
    } else {
        "no tentative address: not DAD"
    };
    let times = if error.count == 1 { "time" } else { "times" };
    format!(
        "{:<width$}  {:<POD$} {:<IFACE$} {:<ADDRESS$} {:>DELAY$}  {:>DELAY$}  {} {} {times} by {}[{}], {cause}",
        error.time.with_timezone(&zone).format("%H:%M:%S%.3f").to_string(),
        terminal(&label),
        error.syscall,
        error.addr.map_or_else(|| "-".to_string(), |addr| addr.to_string()),
        error.tentative_for_ns.map_or_else(|| "-".to_string(), human),
        "",
        error.errno,
        error.count,
        terminal(&error.comm),
        error.pid,
    )
}

/// One line for an address tentative too long, in the live lines' columns: when it became
/// tentative, its pod, interface and address, and for how long so far.
#[must_use]
pub fn stuck_line_in(stuck: &Stuck, zone: FixedOffset) -> String {
    let width = time_width(zone);
    format!(
        "{:<width$}  {:<POD$} {:<IFACE$} {:<ADDRESS$} {:>DELAY$}  {:>DELAY$}  STILL TENTATIVE: DAD has not ended \
         (a link down?)",
        stuck.since.with_timezone(&zone).format("%H:%M:%S%.3f").to_string(),
        terminal(&stuck.label()),
        terminal(&stuck.ifname),
        stuck.addr.to_string(),
        human(stuck.tentative_ns),
        "-",
    )
}

fn histogram(out: &mut String, title: &str, values: &[u64], unit: Option<Unit>) {
    let _ = writeln!(out, "{title}");
    out.push_str(&render_log2(values, unit.unwrap_or_else(|| Unit::for_values(values))));
    if let Some(summary) = Delays::from_values(values.iter().copied()).summary() {
        out.push_str(&render_summary(&summary));
    }
}

/// An interval for people: its end with the zone, what finished, then the histograms.
pub(super) fn render_interval(
    interval: &Interval,
    now: DateTime<Utc>,
    zone: FixedOffset,
    unit: Option<Unit>,
) -> String {
    let mut outcomes = Vec::new();
    for (count, name) in [
        (interval.settled, "settled"),
        (interval.failed, "failed"),
        (interval.aborted, "aborted"),
    ] {
        if count > 0 {
            outcomes.push(format!("{count} {name}"));
        }
    }
    let mut out = format!(
        "\n{} {}: {} addresses finished{}, {} pods done\n",
        now.with_timezone(&zone).format("%H:%M:%S"),
        zone_name(zone),
        interval.addresses(),
        if outcomes.is_empty() {
            String::new()
        } else {
            format!(" ({})", outcomes.join(", "))
        },
        interval.pods.len()
    );
    if !interval.tentative.is_empty() {
        histogram(
            &mut out,
            "Tentative-state delay, settled addresses:",
            &interval.tentative,
            unit,
        );
    }
    if !interval.pods.is_empty() {
        histogram(
            &mut out,
            "Per-pod delay (first tentative address -> last finished):",
            &interval.pods,
            unit,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Holder;

    fn offset(seconds: i32) -> FixedOffset {
        FixedOffset::east_opt(seconds).expect("valid offset")
    }

    fn sample() -> AddressEvent {
        crate::session::tests::sample().events.remove(0)
    }

    #[test]
    fn zones_are_named() {
        assert_eq!(zone_name(offset(0)), "UTC");
        assert_eq!(zone_name(offset(3600)), "UTC+1");
        assert_eq!(zone_name(offset(-8 * 3600)), "UTC-8");
        assert_eq!(zone_name(offset(5 * 3600 + 1800)), "UTC+5:30");
        assert_eq!(zone_name(offset(-(3 * 3600 + 1800))), "UTC-3:30");
        assert_eq!(zone_name(offset(-1800)), "UTC-0:30");
    }

    /// The header names the columns the lines fill: every header word starts where its
    /// column starts, in any zone.
    #[test]
    fn the_header_row_sits_over_the_columns() {
        for zone in [offset(0), offset(5 * 3600 + 1800)] {
            let header = header_row(zone);
            let line = line_in(&sample(), zone);
            assert!(header.starts_with(&format!("TIME({}) ", zone_name(zone))), "{header}");
            let column = |word: &str| header.find(word).expect("a header word");
            assert_eq!(
                line[column("POD")..].split_whitespace().next(),
                Some("dt-pod-0"),
                "{header}\n{line}"
            );
            assert_eq!(line[column("IFACE")..].split_whitespace().next(), Some("eth0"));
            assert_eq!(line[column("ADDRESS")..].split_whitespace().next(), Some("fd00:dad::1"));
            // Delays are right-aligned: they end where their header ends.
            let end = |word: &str| column(word) + word.len();
            assert_eq!(&line[end("TENTATIVE") - 6..end("TENTATIVE")], "1.40 s");
            assert_eq!(&line[end("DAD") - 1..end("DAD")], "-", "no DAD ran");
            assert_eq!(line[column("OUTCOME")..].split_whitespace().next(), Some("settled"));
        }
    }

    #[test]
    fn lines_carry_their_zone_and_the_story_of_the_address() {
        let mut event = sample();
        // 20:00:01.500 UTC.
        assert!(line_in(&event, offset(0)).starts_with("20:00:01.500  "));
        assert!(line_in(&event, offset(5 * 3600 + 1800)).starts_with("01:30:01.500    "));
        assert!(line_in(&event, offset(0)).ends_with("settled peer dt-h0"));
        event.dad_ns = Some(1_200_000_000);
        event.partial = true;
        event.peer = None;
        let line = line_in(&event, offset(0));
        assert!(line.contains("1.40 s     1.20 s  settled (partial)"), "{line}");
        event.outcome = Outcome::Failed;
        event.partial = false;
        assert!(line_in(&event, offset(0)).ends_with("failed duplicate answered from off this node"));
        event.duplicate_of = vec![
            Holder {
                netns_inode: 1,
                name: "team-a/web-0".into(),
                ifname: "eth0".into(),
            },
            Holder {
                netns_inode: 2,
                name: "host".into(),
                ifname: "br0".into(),
            },
        ];
        assert!(line_in(&event, offset(0)).ends_with("failed duplicate of team-a/web-0 eth0, host br0"));
        event.outcome = Outcome::Aborted;
        assert!(line_in(&event, offset(0)).ends_with("  aborted"));
        event.peer = Some(crate::session::Peer {
            ifindex: 9,
            ifname: None,
            pod: None,
        });
        assert!(line_in(&event, offset(0)).ends_with("aborted peer #9"));
        event.peer = Some(crate::session::Peer {
            ifindex: 9,
            ifname: Some("eth0".into()),
            pod: Some("team-a/web-0".into()),
        });
        assert!(line_in(&event, offset(0)).ends_with("aborted serves team-a/web-0"));
    }

    /// A tenant names its interface with a terminal escape: the line shows it, not obeys it.
    #[test]
    fn names_cannot_drive_the_terminal() {
        let mut event = sample();
        event.ifname = "e\u{1b}[2J".into();
        event.netns_name = Some("cni-\u{1b}]0;owned\u{7}".into());
        event.outcome = Outcome::Failed;
        event.duplicate_of = vec![Holder {
            netns_inode: 1,
            name: "x\u{1b}[1m".into(),
            ifname: "y\u{7}".into(),
        }];
        event.peer = Some(crate::session::Peer {
            ifindex: 9,
            ifname: Some("p\u{1b}".into()),
            pod: None,
        });
        let line = event_line(&event);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        for shown in ["e\\x1b[2J", "cni-\\x1b]0;owned\\x07", "x\\x1b[1m y\\x07", "peer p\\x1b"] {
            assert!(line.contains(shown), "{shown} in {line}");
        }
        event.peer.as_mut().expect("set above").pod = Some("a\u{1b}".into());
        assert!(event_line(&event).contains("serves a\\x1b"));
    }

    #[test]
    fn an_interval_says_what_finished_then_draws_it() {
        let ms = 1_000_000;
        let interval = Interval {
            settled: 3,
            failed: 1,
            aborted: 0,
            tentative: vec![1200 * ms, 1500 * ms, 1900 * ms],
            pods: vec![1900 * ms, 2000 * ms],
        };
        let now: DateTime<Utc> = "2026-11-27T10:00:05Z".parse().expect("literal time");
        let text = render_interval(&interval, now, offset(3600), None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "", "a blank line between intervals");
        assert_eq!(
            lines[1],
            "11:00:05 UTC+1: 4 addresses finished (3 settled, 1 failed), 2 pods done"
        );
        assert_eq!(lines[2], "Tentative-state delay, settled addresses:");
        assert!(lines[3].contains("msecs"), "{text}");
        assert!(text.contains("1024 -> 2047       : 3 "), "{text}");
        assert!(text.contains("  count 3   p50 1.50 s"), "{text}");
        assert!(
            text.contains("Per-pod delay (first tentative address -> last finished):\n"),
            "{text}"
        );
        assert!(text.contains("  count 2   p50 1.90 s"), "{text}");
        // A forced unit; microseconds are what would be chosen for these.
        let small = Interval {
            settled: 1,
            tentative: vec![300_000],
            pods: vec![400_000],
            ..Interval::default()
        };
        assert_eq!(
            render_interval(&small, now, offset(0), None).matches("usecs").count(),
            2
        );
        let forced = render_interval(&small, now, offset(0), Some(Unit::Msecs));
        assert_eq!(forced.matches("msecs").count(), 2, "{forced}");
        assert!(forced.contains("10:00:05 UTC: 1 addresses finished (1 settled), 1 pods done"));
        // Nothing finished: the stamp alone.
        let empty = render_interval(&Interval::default(), now, offset(0), None);
        assert_eq!(empty, "\n10:00:05 UTC: 0 addresses finished, 0 pods done\n");
        let aborted = Interval {
            aborted: 2,
            ..Interval::default()
        };
        assert!(
            render_interval(&aborted, now, offset(0), None)
                .ends_with("2 addresses finished (2 aborted), 0 pods done\n")
        );
    }
}
