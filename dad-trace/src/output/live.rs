//! What `record` shows while it runs, after bcc's tools (runqlat, tcpconnlat): a line per
//! finished address under a header row, the histograms of every interval (`--interval`),
//! or one JSON object per finished address, per finished pod and per interval
//! (`--format jsonl`) for `jq`.
//!
//! Times are the node's local time, as `date`, journalctl and bcc show them, and the zone
//! is always printed with them (a header row, an interval's stamp); JSON carries RFC 3339
//! times in UTC, as the session file does.
use std::{collections::HashSet, io::Write};

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;

use super::{
    display::{
        Interval, Zone, call_line_in, header_row, line_in, local_zone, render_interval, socket_line_in, stuck_line_in,
    },
    pod_wait::{DonePod, PodWindows},
};
use crate::{
    hist::{Delays, Summary, Unit},
    record::{cni::TracedCall, recorder::Stuck},
    session::{AddressEvent, CniCall, Outcome, SocketError},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LiveFormat {
    /// Lines and histograms for people.
    #[default]
    Text,
    /// One JSON object per line.
    Jsonl,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveOptions {
    pub format: LiveFormat,
    /// Text: a line per finished address.
    pub lines: bool,
    /// Histograms (text) or a summary object (JSON lines) at every [`Live::tick`].
    pub intervals: bool,
    /// The histograms' unit; `None` chooses per histogram.
    pub unit: Option<Unit>,
}

pub struct Live {
    out: Option<Box<dyn Write + Send>>,
    options: LiveOptions,
    zone: Zone,
    /// The zone the last header row named (printed again when the zone changes).
    header_zone: Option<FixedOffset>,
    pods: PodWindows<String>,
    interval: Interval,
    ticks: usize,
}

impl Live {
    /// Writes to `out`, in the node's local zone.
    #[must_use]
    pub fn new(out: Box<dyn Write + Send>, options: LiveOptions) -> Self {
        Self::in_zone(out, options, local_zone)
    }

    /// Writes to `out`, times in `zone`; the header row of the lines comes first.
    #[must_use]
    pub fn in_zone(out: Box<dyn Write + Send>, options: LiveOptions, zone: Zone) -> Self {
        let mut live = Self {
            out: Some(out),
            options,
            zone,
            header_zone: None,
            pods: PodWindows::default(),
            interval: Interval::default(),
            ticks: 0,
        };
        if live.text_lines() {
            live.header((zone)(Utc::now()));
        }
        live
    }

    fn text_lines(&self) -> bool {
        self.options.format == LiveFormat::Text && self.options.lines
    }

    /// Intervals shown so far.
    #[must_use]
    pub fn intervals(&self) -> usize {
        self.ticks
    }

    fn write(&mut self, text: &str) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        {
            // A closed terminal or pipe ends the live view, not the recording.
            log::debug!("live output stopped: {e}");
            self.out = None;
        }
    }

    fn header(&mut self, zone: FixedOffset) {
        self.header_zone = Some(zone);
        let text = format!("{}\n", header_row(zone));
        self.write(&text);
    }

    fn json(&mut self, record: &Record<'_>) {
        match crate::text::json(record, false) {
            Ok(line) => self.write(&(line + "\n")),
            Err(e) => log::warn!("live JSON: {e}"),
        }
    }

    /// A finished address the filter admitted.
    pub fn address(&mut self, event: &AddressEvent) {
        if !event.host_netns {
            self.pods.see(event, || event.pod_label());
        }
        match event.outcome {
            Outcome::Settled => {
                self.interval.settled += 1;
                self.interval.tentative.push(event.tentative_ns);
            }
            Outcome::Failed => self.interval.failed += 1,
            Outcome::Aborted => self.interval.aborted += 1,
        }
        match self.options.format {
            LiveFormat::Text if self.options.lines => {
                let zone = (self.zone)(event.time);
                if self.header_zone != Some(zone) {
                    self.header(zone);
                }
                let line = format!("{}\n", line_in(event, zone));
                self.write(&line);
            }
            LiveFormat::Text => {}
            LiveFormat::Jsonl => self.json(&Record::Address {
                label: event.pod_label(),
                event,
            }),
        }
    }

    /// A finished top-level CNI call the filter admitted: a line under the addresses' header,
    /// or an object of its own.
    pub fn call(&mut self, traced: &TracedCall) {
        match self.options.format {
            LiveFormat::Text if self.options.lines => {
                let zone = (self.zone)(traced.call.end().unwrap_or(traced.call.start));
                if self.header_zone != Some(zone) {
                    self.header(zone);
                }
                let line = format!("{}\n", call_line_in(traced, zone));
                self.write(&line);
            }
            LiveFormat::Text => {}
            LiveFormat::Jsonl => self.json(&Record::CniCall {
                label: traced.label(),
                netns_inode: traced.netns_inode,
                call: &traced.call,
            }),
        }
    }

    /// A socket error: a line when first seen (its count then), an object each time it grew.
    pub fn socket_error(&mut self, error: &SocketError, new: bool) {
        match self.options.format {
            LiveFormat::Text if self.options.lines && new => {
                let zone = (self.zone)(error.time);
                if self.header_zone != Some(zone) {
                    self.header(zone);
                }
                let line = format!("{}\n", socket_line_in(error, zone));
                self.write(&line);
            }
            LiveFormat::Text => {}
            LiveFormat::Jsonl => self.json(&Record::SocketError {
                label: error.label(),
                error,
            }),
        }
    }

    /// An address tentative too long: a line (or an object) once, while it lasts.
    pub fn stuck(&mut self, stuck: &Stuck) {
        match self.options.format {
            LiveFormat::Text if self.options.lines => {
                let zone = (self.zone)(stuck.since);
                if self.header_zone != Some(zone) {
                    self.header(zone);
                }
                let line = format!("{}\n", stuck_line_in(stuck, zone));
                self.write(&line);
            }
            LiveFormat::Text => {}
            LiveFormat::Jsonl => self.json(&Record::Stuck {
                label: stuck.label(),
                netns_inode: stuck.netns_inode,
                ifname: &stuck.ifname,
                addr: stuck.addr,
                since: stuck.since,
                tentative_ns: stuck.tentative_ns,
            }),
        }
    }

    /// Pods with no address in flight (`busy` holds the namespaces that have one) and none
    /// finished since the last sweep are done; with `all`, every pod seen (the end).
    pub fn sweep(&mut self, busy: &HashSet<u32>, all: bool) {
        for pod in self.pods.finish(busy, all) {
            self.interval.pods.push(pod.delay_ns());
            if self.options.format == LiveFormat::Jsonl {
                self.json(&Record::Pod(PodLine::from(pod)));
            }
        }
    }

    /// An interval ended at `now`: its histograms, then a fresh interval.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        if !self.options.intervals {
            return;
        }
        self.ticks += 1;
        let interval = std::mem::take(&mut self.interval);
        match self.options.format {
            LiveFormat::Text => {
                let text = render_interval(&interval, now, (self.zone)(now), self.options.unit);
                self.write(&text);
            }
            LiveFormat::Jsonl => self.json(&Record::Interval {
                time: now,
                index: self.ticks,
                addresses: interval.addresses(),
                settled: interval.settled,
                failed: interval.failed,
                aborted: interval.aborted,
                pods: interval.pods.len(),
                tentative: Delays::from_values(interval.tentative.iter().copied()).summary(),
                pod: Delays::from_values(interval.pods.iter().copied()).summary(),
            }),
        }
    }

    /// The recording ended at `now`: every pod still open is done, and the last, partial
    /// interval is shown when `last_interval` and anything happened in it.
    pub fn close(&mut self, now: DateTime<Utc>, last_interval: bool) {
        self.sweep(&HashSet::new(), true);
        let empty = self.interval.addresses() == 0 && self.interval.pods.is_empty();
        if last_interval && !empty {
            self.tick(now);
        }
    }
}

/// One line of `--format jsonl`; `type` tells which.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record<'a> {
    /// A finished address: the session file's event, plus the label a person reads.
    Address {
        label: String,
        #[serde(flatten)]
        event: &'a AddressEvent,
    },
    /// A finished pod: the fields of `report --format json`'s `pods[]`.
    Pod(PodLine),
    /// A finished top-level CNI call: the session's `cni_calls` entry, its pod's label and
    /// namespace.
    CniCall {
        label: String,
        netns_inode: Option<u32>,
        #[serde(flatten)]
        call: &'a CniCall,
    },
    /// A socket error first seen, or grown: the session's `socket_errors` entry as it
    /// stands, and its pod's label.
    SocketError {
        label: String,
        #[serde(flatten)]
        error: &'a SocketError,
    },
    /// An address still tentative past `--stuck-after`, said once while it lasts.
    Stuck {
        label: String,
        netns_inode: u32,
        ifname: &'a str,
        addr: std::net::Ipv6Addr,
        since: DateTime<Utc>,
        tentative_ns: u64,
    },
    /// The summary of an interval (`--interval`).
    Interval {
        time: DateTime<Utc>,
        index: usize,
        addresses: usize,
        settled: usize,
        failed: usize,
        aborted: usize,
        pods: usize,
        tentative: Option<Summary>,
        pod: Option<Summary>,
    },
}

#[derive(Serialize)]
struct PodLine {
    pod: String,
    netns_inode: u32,
    addresses: usize,
    failed: usize,
    aborted: usize,
    first_tentative: DateTime<Utc>,
    last_settled: DateTime<Utc>,
    delay_ns: u64,
}

impl From<DonePod<String>> for PodLine {
    fn from(pod: DonePod<String>) -> Self {
        Self {
            delay_ns: pod.delay_ns(),
            netns_inode: pod.netns_inode,
            addresses: pod.addresses,
            failed: pod.failed,
            aborted: pod.aborted,
            // The live view sees addresses only: every pod of it has a window.
            first_tentative: DateTime::from_timestamp_nanos(pod.addresses_ns.map_or(0, |(first, _)| first)),
            last_settled: DateTime::from_timestamp_nanos(pod.addresses_ns.map_or(0, |(_, last)| last)),
            pod: pod.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::session::tests::sample;

    /// Output the test can read.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("screen").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("screen").clone()).expect("UTF-8")
        }
    }

    fn utc(_: DateTime<Utc>) -> FixedOffset {
        FixedOffset::east_opt(0).expect("UTC")
    }

    fn live(options: LiveOptions) -> (Live, Screen) {
        let screen = Screen::default();
        (Live::in_zone(Box::new(screen.clone()), options, utc), screen)
    }

    /// Two pods of two addresses and a host address, finishing over 1.9 s.
    fn events() -> Vec<AddressEvent> {
        let template = sample().events.remove(0);
        let at = |inode: u32, end_ms: i64, tentative_ms: u64, outcome: Outcome| AddressEvent {
            netns_inode: inode,
            netns_name: Some(format!("pod-{inode}")),
            host_netns: inode == 1,
            time: template.time + chrono::Duration::milliseconds(end_ms),
            tentative_ns: tentative_ms * 1_000_000,
            outcome,
            ..template.clone()
        };
        vec![
            at(10, 0, 1000, Outcome::Settled),
            at(11, 100, 1500, Outcome::Settled),
            at(1, 200, 1200, Outcome::Settled),
            at(10, 400, 1300, Outcome::Failed),
            at(11, 900, 1900, Outcome::Aborted),
        ]
    }

    #[test]
    fn lines_come_under_a_header_row() {
        let (mut live, screen) = live(LiveOptions {
            lines: true,
            ..LiveOptions::default()
        });
        for event in events() {
            live.address(&event);
        }
        live.sweep(&HashSet::new(), false);
        live.tick(Utc::now());
        live.close(Utc::now(), true);
        let text = screen.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "a header and five lines, no interval: {text}");
        assert!(lines[0].starts_with("TIME(UTC)") && lines[0].contains("TENTATIVE"));
        assert!(
            lines[1].starts_with("20:00:01.500  pod-10") && lines[5].contains("aborted"),
            "{text}"
        );
        assert_eq!(live.intervals(), 0, "no intervals asked for");
    }

    /// The zone can change under a long recording (daylight saving): the header row says so.
    #[test]
    fn a_new_zone_gets_a_new_header() {
        fn shifting(time: DateTime<Utc>) -> FixedOffset {
            let cut: DateTime<Utc> = "2026-11-25T20:00:01.700Z".parse().expect("literal time");
            FixedOffset::east_opt(if time < cut { 3600 } else { 7200 }).expect("offset")
        }
        let screen = Screen::default();
        let options = LiveOptions {
            lines: true,
            ..LiveOptions::default()
        };
        let mut live = Live::in_zone(Box::new(screen.clone()), options, shifting);
        for event in events() {
            live.address(&event);
        }
        let text = screen.text();
        let headers: Vec<&str> = text.lines().filter(|line| line.starts_with("TIME(")).collect();
        // The one at start (in the zone of now), then one per zone the lines are in.
        assert_eq!(headers.len(), 3, "{text}");
        assert!(headers[1].starts_with("TIME(UTC+1)") && headers[2].starts_with("TIME(UTC+2)"));
        assert!(text.contains("TIME(UTC+1)   POD"), "{text}");
        assert!(text.lines().any(|line| line.starts_with("21:00:01.500  ")), "{text}");
        assert!(text.lines().any(|line| line.starts_with("22:00:01.900  ")), "{text}");
    }

    #[test]
    fn intervals_show_what_finished_in_them_and_count_pods_once_done() {
        let (mut live, screen) = live(LiveOptions {
            intervals: true,
            ..LiveOptions::default()
        });
        assert_eq!(screen.text(), "", "no header row without lines");
        let events = events();
        let now: DateTime<Utc> = "2026-11-25T20:00:05Z".parse().expect("literal time");
        for event in &events[..3] {
            live.address(event);
        }
        // Pod 11 still has an address in flight; pod 10 was just seen: neither is done.
        live.sweep(&HashSet::from([11]), false);
        live.tick(now);
        for event in &events[3..] {
            live.address(event);
        }
        live.sweep(&HashSet::new(), false);
        live.sweep(&HashSet::new(), false);
        live.tick(now + chrono::Duration::seconds(1));
        live.tick(now + chrono::Duration::seconds(2));
        assert_eq!(live.intervals(), 3);
        live.close(now + chrono::Duration::seconds(3), true);
        assert_eq!(live.intervals(), 3, "nothing happened since: no last interval");
        let text = screen.text();
        let stamps: Vec<&str> = text.lines().filter(|line| line.contains(" UTC: ")).collect();
        assert_eq!(
            stamps,
            [
                "20:00:05 UTC: 3 addresses finished (3 settled), 0 pods done",
                "20:00:06 UTC: 2 addresses finished (1 failed, 1 aborted), 2 pods done",
                "20:00:07 UTC: 0 addresses finished, 0 pods done",
            ],
            "{text}"
        );
        // Pod 10: started 0.5 s, last finished 1.9 s; pod 11: 0.1 s to 2.4 s (times of day
        // past 20:00:00).
        assert!(text.contains("  count 2   p50 1.40 s   p90 2.30 s"), "{text}");
    }

    /// Stopped before an interval ended: the pods still open and the partial interval are
    /// shown, unless the count of intervals was reached.
    #[test]
    fn the_end_shows_the_partial_interval_when_asked() {
        for last in [true, false] {
            let (mut live, screen) = live(LiveOptions {
                intervals: true,
                unit: Some(Unit::Msecs),
                ..LiveOptions::default()
            });
            live.address(&events()[0]);
            live.close("2026-11-25T20:00:05Z".parse().expect("literal time"), last);
            let text = screen.text();
            assert_eq!(live.intervals(), usize::from(last));
            assert_eq!(
                text.contains("20:00:05 UTC: 1 addresses finished (1 settled), 1 pods done"),
                last,
                "{text}"
            );
        }
    }

    #[test]
    fn json_lines_are_addresses_pods_and_intervals() {
        let (mut live, screen) = live(LiveOptions {
            format: LiveFormat::Jsonl,
            lines: true,
            intervals: true,
            unit: None,
        });
        let events = events();
        for event in &events {
            live.address(event);
        }
        live.sweep(&HashSet::from([10]), false);
        live.sweep(&HashSet::from([10]), false);
        let now: DateTime<Utc> = "2026-11-25T20:00:05Z".parse().expect("literal time");
        live.tick(now);
        live.close(now, true);
        let records: Vec<serde_json::Value> = screen
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect();
        let of = |kind: &str| -> Vec<&serde_json::Value> { records.iter().filter(|r| r["type"] == kind).collect() };
        let addresses = of("address");
        assert_eq!(addresses.len(), 5);
        // The session file's fields, plus the label, and nothing lost on the way.
        let first: AddressEvent = serde_json::from_value((*addresses[0]).clone()).expect("an event");
        assert_eq!(first, events[0]);
        assert_eq!(addresses[2]["label"], "host");
        assert_eq!(addresses[0]["label"], "pod-10");
        let pods = of("pod");
        assert_eq!(pods.len(), 2, "the host is no pod");
        // Pod 11 was done at the second sweep, pod 10 only at the end (in flight until then).
        assert_eq!(
            (pods[0]["pod"].as_str(), pods[0]["delay_ns"].as_u64()),
            (Some("pod-11"), Some(2_300_000_000))
        );
        assert_eq!(
            (pods[0]["addresses"].as_u64(), pods[0]["aborted"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(pods[0]["first_tentative"], "2026-11-25T20:00:00.100Z");
        assert_eq!(pods[0]["last_settled"], "2026-11-25T20:00:02.400Z");
        assert_eq!(
            (pods[1]["pod"].as_str(), pods[1]["failed"].as_u64()),
            (Some("pod-10"), Some(1))
        );
        assert_eq!(pods[1]["netns_inode"], 10);
        let intervals = of("interval");
        assert_eq!(intervals.len(), 2, "a tick and the partial last");
        assert_eq!(intervals[0]["index"], 1);
        assert_eq!(intervals[0]["time"], "2026-11-25T20:00:05Z");
        assert_eq!(
            (intervals[0]["addresses"].as_u64(), intervals[0]["settled"].as_u64()),
            (Some(5), Some(3))
        );
        assert_eq!(
            (intervals[0]["failed"].as_u64(), intervals[0]["aborted"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(intervals[0]["pods"], 1);
        assert_eq!(intervals[0]["tentative"]["count"], 3);
        assert_eq!(intervals[0]["pod"]["count"], 1);
        assert_eq!(
            (intervals[1]["index"].as_u64(), intervals[1]["pods"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(intervals[1]["tentative"], serde_json::Value::Null);
        assert!(!screen.text().contains("TIME("), "no header row in JSON");
    }
}
