//! The live views of `record` on this machine's kernel, read back as a user's script would:
//! the header row over the lines, each interval's histograms and pods (every address and
//! pod of the saved session in exactly one interval), bcc's count of intervals, and
//! `--format jsonl` parsed line by line and matched against the session. Needs root (it
//! traces the kernel and creates synthetic pods); skips with a reason otherwise.
use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use dad_trace::{
    output::display::{local_zone, zone_name},
    report::pod_delays,
    session::{AddressEvent, Outcome, Session},
};

mod common;

use common::{dad_trace, needs_root};
use nix::sys::signal::Signal;
use test_support::{exit_of, spawn_record};

/// Runs `record` with `args` (bounded to a minute), saving the session in `dir`.
fn record(dir: &Path, args: &[&str]) -> (Output, Session) {
    let path = dir.join("session.json");
    let output = dad_trace()
        .args([
            "record",
            "--backend",
            "tracepoint",
            "--cri-socket",
            "none",
            "--duration",
            "60",
            "-o",
        ])
        .arg(&path)
        .args(args)
        .output()
        .expect("run dad-trace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {}\n{stderr}", output.status);
    (output, Session::load(&path).expect("the session was saved"))
}

/// The zone the stamps must name: this machine's now.
fn zone_now() -> String {
    zone_name(local_zone(chrono::Utc::now()))
}

/// One interval as printed: its stamp's zone, counts, and the histograms' rows.
#[derive(Debug, Default)]
struct Block {
    zone: String,
    addresses: usize,
    settled: usize,
    pods: usize,
    /// Per histogram: its unit and the sum of its rows' counts.
    histograms: Vec<(String, String, u64)>,
}

/// Splits interval output into blocks: `HH:MM:SS ZONE: N addresses finished (...), M pods done`,
/// then titled bcc histograms.
fn blocks(stdout: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut title = String::new();
    for line in stdout.lines() {
        if let Some((stamp, rest)) = line
            .split_once(": ")
            .filter(|(stamp, _)| stamp.len() > 9 && stamp.as_bytes()[2] == b':')
            && rest.contains(" addresses finished")
        {
            let number = |text: &str| {
                text.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a count")
            };
            let (finished, pods) = rest
                .split_once("), ")
                .or_else(|| rest.split_once(", "))
                .expect("two parts");
            let settled = finished
                .split(['(', ','])
                .find_map(|part| part.trim().strip_suffix(" settled"))
                .map_or(0, |n| n.trim().parse().expect("a count"));
            assert!(pods.ends_with(" pods done"), "{line}");
            blocks.push(Block {
                zone: stamp[9..].to_string(),
                addresses: number(finished),
                settled,
                pods: number(pods),
                histograms: Vec::new(),
            });
        } else if line.ends_with(':') && !line.starts_with(' ') {
            title = line.to_string();
        } else if line.contains(": count    distribution") {
            let unit = line.split_whitespace().next().expect("a unit").to_string();
            blocks
                .last_mut()
                .expect("a stamp first")
                .histograms
                .push((title.clone(), unit, 0));
        } else if let Some((_, rest)) = line.split_once(" : ")
            && line.contains(" -> ")
        {
            let count: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a row count");
            let block = blocks.last_mut().expect("a stamp first");
            block.histograms.last_mut().expect("a histogram").2 += count;
        }
    }
    blocks
}

/// Every address and every pod of the session in exactly one interval, histograms in
/// milliseconds (`-m`), stamps in this machine's zone.
#[test]
fn intervals_account_for_every_address_and_pod() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (output, session) = record(
        dir.path(),
        &[
            "--synthetic-pods",
            "4",
            "--synthetic-prefix",
            "dtl-i",
            "--interval",
            "0.5",
            "-m",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let blocks = blocks(&stdout);
    assert!(
        blocks.len() >= 2,
        "DAD takes over a second: several intervals\n{stdout}"
    );
    assert!(blocks.iter().all(|block| block.zone == zone_now()), "{stdout}");
    let addresses: usize = blocks.iter().map(|block| block.addresses).sum();
    assert_eq!(addresses, session.events.len(), "{stdout}");
    let settled = session.events.iter().filter(|e| e.outcome == Outcome::Settled).count();
    assert_eq!(blocks.iter().map(|block| block.settled).sum::<usize>(), settled);
    let pods: usize = blocks.iter().map(|block| block.pods).sum();
    assert_eq!(pods, pod_delays(&session.events).len(), "{stdout}");
    assert!(pods >= 4, "at least our four pods: {stdout}");
    for block in &blocks {
        for (title, unit, count) in &block.histograms {
            assert_eq!(unit, "msecs", "-m: {stdout}");
            let expected = if title.starts_with("Tentative") {
                block.settled
            } else {
                block.pods
            };
            assert_eq!(*count, expected as u64, "{title} in {block:?}\n{stdout}");
        }
        let titles = block.histograms.len();
        assert_eq!(
            titles,
            usize::from(block.settled > 0) + usize::from(block.pods > 0),
            "{block:?}"
        );
    }
    assert!(!stdout.contains("TIME("), "no lines under --interval: {stdout}");
    assert!(!stdout.contains("dad-trace session:"), "no end-of-run report: {stdout}");
}

/// bcc's `record INTERVAL COUNT` and `--interval S --count N`: exactly N intervals, then it
/// stops on its own.
#[test]
fn a_count_of_intervals_stops_the_recording() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, count) in [(&["0.5", "3"][..], 3), (&["--interval", "0.4", "--count", "2"][..], 2)] {
        let started = Instant::now();
        let (output, _) = record(dir.path(), args);
        let elapsed = started.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stamps: Vec<&str> = stdout
            .lines()
            .filter(|line| line.contains(" addresses finished"))
            .collect();
        assert_eq!(stamps.len(), count, "{args:?}: {stdout}");
        let period: f64 = args
            .iter()
            .find_map(|arg| arg.parse().ok().filter(|p| *p < 1.0))
            .expect("a period");
        assert!(elapsed >= period * count as f64, "{args:?} stopped after {elapsed} s");
        assert!(elapsed < 20.0, "{args:?} did not stop on its own: {elapsed} s");
    }
}

/// `--format jsonl`: every line of standard output is a JSON object; the addresses are the
/// session's events and the pods `report`'s per-pod delays.
#[test]
fn json_lines_are_the_session_as_it_happens() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (output, session) = record(
        dir.path(),
        &[
            "--synthetic-pods",
            "3",
            "--synthetic-prefix",
            "dtl-j",
            "--format",
            "jsonl",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let of = |kind: &'static str| records.iter().filter(move |r| r["type"] == kind);
    assert_eq!(records.len(), of("address").count() + of("pod").count(), "{stdout}");
    let addresses: Vec<AddressEvent> = of("address")
        .map(|r| serde_json::from_value(r.clone()).expect("an address event"))
        .collect();
    assert_eq!(addresses, session.events, "the stream is the session, in order");
    for (record, event) in of("address").zip(&session.events) {
        assert_eq!(record["label"], event.pod_label());
    }
    let mut streamed: Vec<(String, u64)> = of("pod")
        .map(|r| {
            (
                r["pod"].as_str().expect("a label").to_string(),
                r["delay_ns"].as_u64().expect("ns"),
            )
        })
        .collect();
    let mut reported: Vec<(String, u64)> = pod_delays(&session.events)
        .into_iter()
        .map(|pod| (pod.pod, pod.delay_ns))
        .collect();
    streamed.sort();
    reported.sort();
    assert_eq!(streamed, reported);
    let ours = streamed.iter().filter(|(pod, _)| pod.starts_with("dtl-j")).count();
    assert_eq!(ours, 3, "{streamed:?}");
}

/// The lines come under a header row naming the zone; the columns line up with it.
#[test]
fn lines_come_under_a_header_with_the_zone() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (output, session) = record(dir.path(), &["--synthetic-pods", "2", "--synthetic-prefix", "dtl-l"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let header = lines.next().expect("a header row");
    assert!(header.starts_with(&format!("TIME({})", zone_now())), "{stdout}");
    let address = header.find("ADDRESS").expect("an address column");
    let rows: Vec<&str> = lines.take_while(|line| !line.is_empty()).collect();
    assert_eq!(rows.len(), session.events.len(), "{stdout}");
    for (row, event) in rows.iter().zip(&session.events) {
        assert_eq!(
            row[address..].split_whitespace().next(),
            Some(event.addr.to_string().as_str()),
            "{row}"
        );
    }
    assert!(
        stdout.contains("\n\ndad-trace session:"),
        "the report follows a blank line: {stdout}"
    );
}

/// Ctrl-C in interval mode, as with bcc's tools: the interval so far is shown, then the
/// recording ends and saves.
#[test]
fn ctrl_c_shows_the_interval_so_far() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let recording = spawn_record(
        dad_trace()
            .args([
                "record",
                "--backend",
                "tracepoint",
                "--cri-socket",
                "none",
                "--interval",
                "60",
                "-o",
            ])
            .arg(&path),
    );
    let pods = dad_trace::node::synthetic::create_pods("dtl-s", 2).expect("pods");
    // Default DAD settles within 2.25 s (CONTRIBUTING.md, Bounds the tests assert).
    std::thread::sleep(Duration::from_millis(2500));
    let output = recording.stop(Signal::SIGINT);
    drop(pods);
    assert!(output.status.success(), "{}", output.status);
    let session = Session::load(&path).expect("saved");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let blocks = blocks(&stdout);
    assert_eq!(blocks.len(), 1, "one interval, cut short: {stdout}");
    assert_eq!(blocks[0].addresses, session.events.len(), "{stdout}");
    assert_eq!(blocks[0].pods, pod_delays(&session.events).len(), "{stdout}");
    let ours = session
        .events
        .iter()
        .filter(|e| e.netns_name.as_deref().is_some_and(|name| name.starts_with("dtl-s")))
        .count();
    assert_eq!(ours, 4, "both pods' two addresses: {stdout}");
}

/// Flags that do nothing together are refused before anything runs (no root needed).
#[test]
fn flags_that_do_nothing_together_exit_2() {
    for (args, says) in [
        (&["--format", "jsonl", "-m"][..], "-m does nothing with --format jsonl"),
        (
            &["--format", "jsonl", "--per-pod"][..],
            "--per-pod does nothing with --format jsonl",
        ),
        (&["--interval", "1", "--quiet"][..], "cannot be used with"),
        (&["0"][..], "invalid value '0' for '[INTERVAL]': at least 0.001 seconds"),
    ] {
        let (code, stderr) = exit_of(dad_trace().arg("record").args(args));
        assert_eq!(
            code,
            Some(i32::from(dad_trace::error::EXIT_USAGE)),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        if says.contains("with") {
            assert!(
                stderr.contains("Usage: dad-trace record"),
                "the subcommand's usage: {stderr}"
            );
        }
    }
}

/// Each pod's own DAD settings are read in its namespace at its first address and saved on
/// its pod: values as integers, its `eth0` among the interfaces, a verdict.
#[test]
fn each_pod_is_saved_with_its_own_settings() {
    if !needs_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, session) = record(dir.path(), &["--synthetic-pods", "2", "--synthetic-prefix", "dtl-g"]);
    let ours: Vec<_> = session
        .pods
        .iter()
        .filter(|pod| pod.netns_name.as_deref().is_some_and(|name| name.starts_with("dtl-g")))
        .collect();
    assert_eq!(ours.len(), 2, "{:?}", session.pods);
    for pod in ours {
        let settings = pod.settings.as_ref().expect("settings read");
        assert_eq!(settings.unread, None, "{settings:?}");
        assert!(settings.all.accept_dad.is_some() && settings.default.dad_transmits.is_some());
        let eth0 = settings
            .interfaces
            .iter()
            .find(|interface| interface.name == "eth0")
            .expect("eth0 read");
        assert!(eth0.values.accept_dad.is_some() && eth0.dad.is_some(), "{settings:?}");
        assert!(settings.dad().is_some());
    }
}

/// A namespace of this test, deleted on drop (also when the test fails).
struct Netns(&'static str);

impl Netns {
    fn ip(&self, args: &[&str]) {
        let status = std::process::Command::new("ip")
            .args(["-n", self.0])
            .args(args)
            .status()
            .expect("run ip");
        assert!(status.success(), "ip -n {} {args:?}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", self.0]).output();
    }
}

/// A pod whose veth peer is left down (aws/amazon-vpc-cni-k8s#3764): DAD waits for a carrier
/// that never comes, so the address stays tentative. Past `--stuck-after` it is said, once,
/// while it lasts; the session lists it as still tentative at the end.
#[test]
fn an_address_on_a_link_left_down_is_said_stuck() {
    if !needs_root() {
        return;
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", "dtl-stuck"])
        .status();
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", "dtl-stuck"])
            .status()
            .expect("ip")
            .success()
    );
    let netns = Netns("dtl-stuck");
    netns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    // eth0 up, its peer left down: no carrier.
    netns.ip(&["link", "set", "eth0", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("session.json");
    let recording = spawn_record(
        dad_trace()
            .args(["record", "--backend", "tracepoint", "--cri-socket", "none"])
            .args(["--stuck-after", "2", "--duration", "6", "-o"])
            .arg(&path),
    );
    netns.ip(&["-6", "addr", "add", "fd00:5e::1/64", "dev", "eth0"]);
    let output = recording.finish();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Addresses of other tests may be stuck too while their pods go: this pod's only.
    let said: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("STILL TENTATIVE") && line.contains("dtl-stuck"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{stdout}");
    assert!(
        said[0].contains("dtl-stuck") && said[0].contains("fd00:5e::1"),
        "{stdout}"
    );
    let session = Session::load(&path).expect("the session was saved");
    let stuck = session
        .unfinished
        .iter()
        .find(|address| address.addr == "fd00:5e::1".parse::<std::net::Ipv6Addr>().expect("literal"))
        .unwrap_or_else(|| panic!("still tentative at the end: {:#?}", session.unfinished));
    assert!(stuck.tentative_so_far_ns >= 2_000_000_000, "{stuck:?}");
    drop(netns);
}
