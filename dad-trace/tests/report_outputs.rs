//! Reports from sessions recorded on a real kernel (6.18, tracepoint backend, 20 synthetic
//! pods before and after tuning): markdown, JSON, and the HTML page rendered in headless
//! Chromium, whose screenshot is kept in target/ as an artifact.
use std::{path::PathBuf, process::Command};

use dad_trace::{
    hist::human,
    report::{compare, html, markdown},
    session::Session,
};
use test_support::skip;

fn fixture(name: &str) -> Session {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Session::load(&path).expect("fixture session loads")
}

fn before_after() -> compare::Comparison {
    compare::compare(&[
        ("before".into(), fixture("default-20-pods.json").fold()),
        ("after".into(), fixture("tuned-20-pods.json").fold()),
    ])
}

/// Per-pod delays computed here from the raw events, independently of the report code:
/// per namespace, the last address's end minus the first address's start.
fn pod_delays_by_hand(session: &Session) -> Vec<u64> {
    let mut spans: std::collections::BTreeMap<u32, (i64, i64)> = std::collections::BTreeMap::new();
    for event in session.events.iter().filter(|event| !event.host_netns) {
        let end = event.time.timestamp_nanos_opt().expect("in range");
        let start = end - i64::try_from(event.tentative_ns).expect("fits");
        let span = spans.entry(event.netns_inode).or_insert((start, end));
        *span = (span.0.min(start), span.1.max(end));
    }
    let mut delays: Vec<u64> = spans
        .values()
        .map(|(start, end)| u64::try_from(end - start).expect("ends after it starts"))
        .collect();
    delays.sort_unstable();
    delays
}

#[test]
fn markdown_and_json_carry_the_before_after_story() {
    let comparison = before_after();
    let markdown = markdown::render_markdown(&comparison);
    // The p50 of 20 values is their 10th (HDR rounds within 0.1%).
    let p50 = |name: &str| {
        let delays = pod_delays_by_hand(&fixture(name));
        assert_eq!(delays.len(), 20);
        delays[9]
    };
    let (before, after) = (p50("default-20-pods.json"), p50("tuned-20-pods.json"));
    let row = format!("| per-pod p50 | {} | {} |", human(before), human(after));
    assert!(markdown.contains(&row), "{row} not in\n{markdown}");
    assert!(
        before > 1_000_000_000 && after < 1_000_000,
        "the fixtures tell the story"
    );
    // Twenty pods a side, DAD against none: a real change, and said so.
    assert!(
        markdown.contains("per-pod delay before -> after: a real change: faster (Kolmogorov–Smirnov D 1.00, p "),
        "{markdown}"
    );
    let json: serde_json::Value = serde_json::to_value(&comparison).expect("json");
    assert_eq!(json["change"]["significant"], true);
    assert_eq!(
        (
            json["change"]["before_count"].as_u64(),
            json["change"]["after_count"].as_u64()
        ),
        (Some(20), Some(20))
    );
    assert_eq!(
        json["sessions"][0]["summary"]["pods"].as_array().map(Vec::len),
        Some(20)
    );
    assert_eq!(
        json["sessions"][1]["summary"]["dad"],
        serde_json::Value::Null,
        "no DAD ran after tuning"
    );
}

#[test]
fn html_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    }) else {
        skip("Debian's chromium is not installed (cargo xtask test installs it)");
        return;
    };
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let page = out_dir.join("report.html");
    std::fs::write(&page, html::render(&before_after())).expect("write page");
    let screenshot = out_dir.join("report-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile = tempfile::tempdir().expect("profile dir");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let url = format!("file://{}", page.display());
    let dom = Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &url])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    // Chromium parsed the page and kept both charts: one CDF line per session, a bar per pod.
    assert_eq!(dom.matches("class=\"cdf-line\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("class=\"pod-bar\"").count(), 40);
    assert!(
        dom.contains("<p class=\"change\">per-pod delay before -&gt; after: a real change: faster"),
        "{dom}"
    );
    let status = Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .args(["--window-size=1000,1400", &url])
        .status()
        .expect("run chromium");
    assert!(status.success());
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
    println!("screenshot: {}", screenshot.display());
}
