//! Reports from sessions recorded on a real kernel (6.18, tracepoint backend, 20 synthetic
//! pods before and after tuning): markdown, JSON, and the HTML page rendered in headless
//! Chromium, whose screenshot is kept in target/ as an artifact.
use std::{path::PathBuf, process::Command};

use dad_trace::{
    report::{compare, html},
    session::Session,
};

fn fixture(name: &str) -> Session {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Session::load(&path).expect("fixture session loads")
}

fn before_after() -> compare::Comparison {
    compare::compare(&[
        ("before".into(), fixture("default-20-pods.json")),
        ("after".into(), fixture("tuned-20-pods.json")),
    ])
}

#[test]
fn markdown_and_json_carry_the_before_after_story() {
    let comparison = before_after();
    let markdown = compare::render_markdown(&comparison);
    assert!(markdown.contains("| per-pod p50 | 1.76 s | 318 us |"), "{markdown}");
    let json: serde_json::Value = serde_json::to_value(&comparison).expect("json");
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
        println!("SKIP html_renders_in_headless_chromium: Debian's chromium is not installed");
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
