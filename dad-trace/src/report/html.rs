//! `report --format html`: one self-contained offline page with SVG charts (a CDF overlay
//! of per-pod delay across sessions, and per-pod bars), no scripts, no external assets.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::fmt::Write as _;

use super::compare::{Comparison, change_line, render_settings, rows};
use crate::hist::{human, human_ms};

const COLORS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const MARGIN: f64 = 50.0;
/// The CDF's x axis: 10 us to 10 s, log scale: DAD-free and DAD-bound pods both fit.
const X_MIN_NS: f64 = 1e4;
const X_MAX_NS: f64 = 1e10;

/// HTML-escaped, with control characters shown (see [`crate::text::html`]).
fn escape(text: &str) -> String {
    crate::text::html(text)
}

fn x_of(ns: u64) -> f64 {
    let clamped = (ns as f64).clamp(X_MIN_NS, X_MAX_NS);
    MARGIN + (clamped.log10() - X_MIN_NS.log10()) / (X_MAX_NS.log10() - X_MIN_NS.log10()) * (WIDTH - 2.0 * MARGIN)
}

fn y_of(fraction: f64) -> f64 {
    HEIGHT - MARGIN - fraction * (HEIGHT - 2.0 * MARGIN)
}

/// Cumulative distribution of per-pod delay, one line per session.
fn cdf(comparison: &Comparison) -> String {
    let mut svg = format!(
        "<svg id=\"cdf\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"CDF of per-pod delay\">\n"
    );
    let (left, bottom) = (MARGIN, HEIGHT - MARGIN);
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333\"/>",
        WIDTH - MARGIN
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{MARGIN}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"#333\"/>"
    );
    for (ns, label) in [
        (10_000, "10 us"),
        (100_000, "100 us"),
        (1_000_000, "1 ms"),
        (10_000_000, "10 ms"),
        (100_000_000, "100 ms"),
        (1_000_000_000, "1 s"),
        (10_000_000_000_u64, "10 s"),
    ] {
        let x = x_of(ns);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{MARGIN}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            bottom + 16.0
        );
    }
    for fraction in [0.0, 0.5, 0.9, 1.0] {
        let y = y_of(fraction);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{:.0}%</text>",
            left - 6.0,
            y + 4.0,
            fraction * 100.0
        );
    }
    for (index, column) in comparison.sessions.iter().enumerate() {
        let mut delays: Vec<u64> = column.summary.pods.iter().map(|pod| pod.delay_ns).collect();
        delays.sort_unstable();
        let color = COLORS[index % COLORS.len()];
        let count = delays.len() as f64;
        let mut points = String::new();
        for (i, delay) in delays.iter().enumerate() {
            let _ = write!(
                points,
                "{:.1},{:.1} {:.1},{:.1} ",
                x_of(*delay),
                y_of(i as f64 / count),
                x_of(*delay),
                y_of((i + 1) as f64 / count)
            );
        }
        let _ = writeln!(
            svg,
            "<polyline class=\"cdf-line\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.trim_end()
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{color}\">{} ({} pods)</text>",
            left + 10.0,
            MARGIN + 14.0 * (index as f64 + 1.0),
            escape(&column.label),
            delays.len()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One bar per pod and session, length on the same log scale as the CDF.
fn bars(comparison: &Comparison) -> String {
    let rows: usize = comparison.sessions.iter().map(|c| c.summary.pods.len()).sum();
    let row_height = 14.0;
    let height = MARGIN + row_height * rows as f64 + 10.0;
    let mut svg = format!(
        "<svg id=\"pods\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" role=\"img\" \
         aria-label=\"per-pod delay\">\n"
    );
    let mut row = 0.0;
    for (index, column) in comparison.sessions.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        for pod in &column.summary.pods {
            let y = 20.0 + row * row_height;
            let width = (x_of(pod.delay_ns) - MARGIN).max(1.0);
            let _ = writeln!(
                svg,
                "<rect class=\"pod-bar\" x=\"{MARGIN}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{color}\">\
                 <title>{}: {} ({})</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{} {}</text>",
                row_height - 3.0,
                escape(&pod.pod),
                human(pod.delay_ns),
                escape(&column.label),
                MARGIN + width + 4.0,
                y + row_height - 4.0,
                escape(&pod.pod),
                human(pod.delay_ns)
            );
            row += 1.0;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Each session's slowest pods, one row per pod on a linear time axis from its first known
/// moment: the pod start (sandbox created → first container), the CNI ADD, DAD (first
/// address tentative → last settled).
fn timelines(comparison: &Comparison) -> String {
    let mut html = String::new();
    for (index, column) in comparison.sessions.iter().enumerate() {
        let pods = &column.summary.pod_start.slowest;
        let span_ms = pods
            .iter()
            .flat_map(|pod| pod.timeline.iter().map(|(_, ms)| *ms))
            .fold(0.0_f64, f64::max)
            .max(1.0);
        if pods.iter().all(|pod| pod.timeline.is_empty()) {
            continue;
        }
        let row_height = 34.0;
        let height = 30.0 + row_height * pods.len() as f64 + 20.0;
        let x = |ms: f64| MARGIN + 150.0 + ms / span_ms * (WIDTH - 2.0 * MARGIN - 150.0);
        let _ = writeln!(
            html,
            "<h3>{}</h3>\n<svg class=\"timeline\" id=\"timeline-{index}\" xmlns=\"http://www.w3.org/2000/svg\" \
             width=\"{WIDTH}\" height=\"{height:.0}\" role=\"img\" aria-label=\"pod start timelines\">",
            escape(&column.label)
        );
        for (tick, label) in [(0.0, "0".to_string()), (span_ms, human_ms(span_ms))] {
            let _ = writeln!(
                html,
                "<text x=\"{:.1}\" y=\"16\" font-size=\"10\" text-anchor=\"middle\">{label}</text>",
                x(tick)
            );
        }
        for (row, pod) in pods.iter().enumerate() {
            let y = 26.0 + row_height * row as f64;
            let at = |what: &str| pod.timeline.iter().find(|(name, _)| *name == what).map(|(_, ms)| *ms);
            let _ = writeln!(
                html,
                "<text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
                y + 14.0,
                escape(&pod.pod)
            );
            let bars = [
                (
                    "start-bar",
                    "#bbbbbb",
                    "pod start",
                    at("sandbox created"),
                    at("container started"),
                    0.0,
                ),
                ("add-bar", "#1f77b4", "CNI ADD", at("ADD start"), at("ADD end"), 8.0),
                (
                    "dad-bar",
                    "#d62728",
                    "DAD",
                    at("first tentative"),
                    at("last settled"),
                    16.0,
                ),
            ];
            for (class, color, what, from, to, offset) in bars {
                let (Some(from), Some(to)) = (from, to) else {
                    continue;
                };
                let _ = writeln!(
                    html,
                    "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"7\" fill=\"{color}\">\
                     <title>{}: {what} {}</title></rect>",
                    x(from),
                    y + offset,
                    (x(to) - x(from)).max(1.0),
                    escape(&pod.pod),
                    human_ms(to - from)
                );
            }
        }
        html.push_str("</svg>\n");
    }
    if !html.is_empty() {
        html.insert_str(
            0,
            "<h2>Slowest pod starts</h2>\n<p>Grey: sandbox created → first container started; blue: CNI ADD; \
             red: DAD (first address tentative → last settled).</p>\n",
        );
    }
    html
}

/// The comparison table, from the same rows as the text and markdown tables.
fn table(comparison: &Comparison) -> String {
    let multi = comparison.sessions.len() > 1;
    let mut html = String::from("<table>\n<tr><th>metric</th>");
    for column in &comparison.sessions {
        let _ = write!(html, "<th>{}</th>", escape(&column.label));
    }
    html.push_str(if multi { "<th>last/first</th></tr>\n" } else { "</tr>\n" });
    for row in rows(comparison) {
        let _ = write!(html, "<tr><td>{}</td>", escape(&row.metric));
        for cell in &row.cells {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        }
        if multi {
            let _ = write!(html, "<td>{}</td>", escape(row.ratio.as_deref().unwrap_or("")));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

#[must_use]
pub fn render(comparison: &Comparison) -> String {
    let title = comparison
        .sessions
        .iter()
        .map(|c| c.label.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dad-trace: {title}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}</style>\
         </head><body>\n<h1>IPv6 DAD delay: {title}</h1>\n",
        title = escape(&title)
    );
    html.push_str("<h2>Per-pod delay, cumulative (first tentative address → last settled)</h2>\n");
    html.push_str(&cdf(comparison));
    html.push_str("<h2>Summary</h2>\n");
    html.push_str(&table(comparison));
    if let Some(line) = change_line(comparison, str::to_string) {
        let _ = writeln!(html, "<p class=\"change\">{}</p>", escape(&line));
    }
    if !comparison.setting_changes.is_empty() {
        html.push_str("<h2>Settings that changed</h2>\n<ul>\n");
        render_settings(&mut html, comparison, |name, values| {
            format!(
                "<li><code>{}</code>: {}</li>\n",
                escape(name),
                escape(&values.join(" → "))
            )
        });
        html.push_str("</ul>\n");
    }
    html.push_str(&timelines(comparison));
    html.push_str("<h2>Pods</h2>\n");
    html.push_str(&bars(comparison));
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::compare::tests::compare_kept;

    /// Each slow pod's start drawn to scale: the ADD inside the pod start, DAD inside the
    /// ADD; a hostile pod name stays text.
    #[test]
    fn slow_pods_have_their_timeline_drawn() {
        let mut before = crate::report::compare::tests::session("node-a", &[1500, 1800], "0");
        before.pods = vec![
            crate::report::podstart::tests::pod(1, 1950, 1900),
            crate::report::podstart::tests::pod(2, 1500, 1400),
        ];
        before.pods[1].netns_name = Some("<script>".into());
        before.pods[1].pod = None;
        let mut after = crate::report::compare::tests::session("node-a", &[1, 2], "1");
        after.pods = vec![crate::report::podstart::tests::pod(3, 40, 0)];
        let page = render(&compare_kept(&[("before".into(), before), ("after".into(), after)]));
        assert!(page.contains("<h2>Slowest pod starts</h2>"));
        assert_eq!(page.matches("class=\"timeline\"").count(), 2);
        // The second pod's row lies one row below the first.
        assert!(
            page.split("class=\"start-bar\"").skip(1).any(|bar| bar
                .split('>')
                .next()
                .is_some_and(|attributes| attributes.contains("y=\"60.0\""))),
            "{page}"
        );
        // A timeline is as tall as its pods: two rows here.
        assert!(
            page.contains("id=\"timeline-0\" xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"118\""),
            "{page}"
        );
        assert_eq!(page.matches("class=\"add-bar\"").count(), 3);
        assert_eq!(page.matches("class=\"start-bar\"").count(), 3);
        assert_eq!(
            page.matches("class=\"dad-bar\"").count(),
            3,
            "a 0 ms DAD is drawn 1 px wide"
        );
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        // The ADD bar of web-1 (10 ms → 1960 ms of a 2010 ms start) lies inside its start bar.
        let bar = |class: &str| {
            let at = page.find(&format!("class=\"{class}\" x=\"")).expect("bar") + class.len() + 12;
            page[at..].split('"').next().expect("x").parse::<f64>().expect("number")
        };
        assert!(bar("start-bar") < bar("add-bar") && bar("add-bar") < bar("dad-bar"));
        assert!(page.contains("<td>CNI ADD p50</td>") && page.contains("<td>DAD share of ADD p50</td>"));
    }

    #[test]
    fn page_is_self_contained_with_both_charts() {
        let comparison = compare_kept(&[
            (
                "before<1>".into(),
                crate::report::compare::tests::session("node-a", &[1500, 1800, 2000], "0"),
            ),
            (
                "after".into(),
                crate::report::compare::tests::session("node-a", &[1, 2], "1"),
            ),
        ]);
        let page = render(&comparison);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("class=\"cdf-line\"").count(), 2);
        assert_eq!(page.matches("class=\"pod-bar\"").count(), 5);
        // Two sessions: the table ends with their ratio; one session has no such column.
        assert!(page.contains("<th>last/first</th>"), "{page}");
        let alone = render(&compare_kept(&[(
            "alone".into(),
            crate::report::compare::tests::session("node-a", &[1, 2], "1"),
        )]));
        assert!(!alone.contains("last/first"));
        // Each session in its own color, in both charts.
        for (color, lines, bars) in [(COLORS[0], 1, 3), (COLORS[1], 1, 2)] {
            assert_eq!(
                page.matches(&format!("stroke=\"{color}\" stroke-width=\"2\" points"))
                    .count(),
                lines
            );
            assert_eq!(page.matches(&format!("fill=\"{color}\"><title>")).count(), bars);
        }
        assert!(page.contains("before&lt;1&gt;") && !page.contains("before<1>"));
        assert!(page.contains("<td>tentative p50</td>"));
        // The verdict on the change, labels escaped (3 vs 2 pods cannot be told from noise).
        assert!(
            page.contains("<p class=\"change\">per-pod delay before&lt;1&gt; -&gt; after: no real change: "),
            "{page}"
        );
        // Offline and inert: no scripts, no handlers, nothing fetched. The SVG namespace is an
        // identifier, not a fetch: it is the one URL allowed.
        let without_namespace = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        let lower = without_namespace.to_lowercase();
        for forbidden in [
            "<script",
            "javascript:",
            "http://",
            "https://",
            "src=",
            "href=",
            "@import",
            "url(",
        ] {
            assert!(!lower.contains(forbidden), "{forbidden} in the page");
        }
        // No event handler attribute (` onload=`, ` onclick=`, ...).
        let handler = lower.split(" on").skip(1).find(|rest| {
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(handler.is_none(), "an event handler in the page: on{handler:?}");
        assert!(page.contains("devconf_inherit_init_net</code>: 0 → 1"));
        assert!(!page.contains("Slowest pod starts"), "no pods[]: no timelines");
        let rows = page.matches("<tr>").count();
        // A hostile host name (a `|`, a newline, an escape) changes no row or column.
        let mut hostile = crate::report::compare::tests::session("a|b\nc\u{1b}[2J", &[1500], "0");
        hostile.events[0].netns_name = Some("x|y".into());
        let page = render(&compare_kept(&[
            ("before".into(), hostile),
            (
                "after".into(),
                crate::report::compare::tests::session("node-a", &[1, 2], "1"),
            ),
        ]));
        assert_eq!(page.matches("<tr>").count(), rows);
        assert!(page.contains("<td>a|b\\x0ac\\x1b[2J</td>"), "{page}");
        assert!(!page.chars().any(|c| c.is_control() && c != '\n'));
    }

    /// The log axis: 10 us at the left margin, 10 s at the right, 10 ms half way; the y axis
    /// from 0 at the bottom margin to 1 at the top one.
    #[test]
    fn the_axes_map_to_the_plot() {
        for (ns, x) in [
            (1, 50.0),
            (10_000, 50.0),
            (10_000_000, 380.0),
            (1_000_000_000, 600.0),
            (10_000_000_000, 710.0),
            (u64::MAX, 710.0),
        ] {
            assert!((x_of(ns) - x).abs() < 1e-9, "x_of({ns}) = {}, not {x}", x_of(ns));
        }
        for (fraction, y) in [(0.0, 250.0), (0.5, 150.0), (1.0, 50.0)] {
            assert!(
                (y_of(fraction) - y).abs() < 1e-9,
                "y_of({fraction}) = {}",
                y_of(fraction)
            );
        }
    }

    /// Pods of 0, 10 ms and 1 s: every step of the CDF, the legend, the ticks, and the bars
    /// (at least 1 px wide) at their coordinates.
    #[test]
    fn the_charts_are_drawn_to_scale() {
        let page = render(&compare_kept(&[(
            "before".into(),
            crate::report::compare::tests::session("node-a", &[0, 10, 1000], "0"),
        )]));
        for drawn in [
            "<line x1=\"50\" y1=\"250\" x2=\"710\" y2=\"250\" stroke=\"#333\"/>",
            "<line x1=\"50\" y1=\"50\" x2=\"50\" y2=\"250\" stroke=\"#333\"/>",
            "<line x1=\"270.0\" y1=\"50\" x2=\"270.0\" y2=\"250\" stroke=\"#ddd\"/><text x=\"270.0\" y=\"266.0\" \
             font-size=\"11\" text-anchor=\"middle\">1 ms</text>",
            "<text x=\"44.0\" y=\"74.0\" font-size=\"11\" text-anchor=\"end\">90%</text>",
            "points=\"50.0,250.0 50.0,183.3 380.0,183.3 380.0,116.7 600.0,116.7 600.0,50.0\"",
            "<text x=\"60.0\" y=\"64.0\" font-size=\"12\" fill=\"#d62728\">before (3 pods)</text>",
            "<svg id=\"pods\" xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"102\"",
            "<rect class=\"pod-bar\" x=\"50\" y=\"20.0\" width=\"1.0\" height=\"11.0\" fill=\"#d62728\">\
             <title>node-a-pod0: 0 us (before)</title></rect><text x=\"55.0\" y=\"30.0\" font-size=\"10\">node-a-pod0 0 us</text>",
            "<rect class=\"pod-bar\" x=\"50\" y=\"34.0\" width=\"330.0\"",
            "<text x=\"604.0\" y=\"58.0\" font-size=\"10\">node-a-pod2 1.00 s</text>",
        ] {
            assert!(page.contains(drawn), "{drawn} not in {page}");
        }
        assert!(!page.contains("<th>last/first</th>"), "one session: no ratio column");
    }

    /// web-1: sandbox at 0, ADD 10 → 1960 ms, DAD 15 → 1915 ms, container at 2010 ms: the
    /// axis spans 2010 ms over 510 px from x = 200.
    #[test]
    fn a_timeline_is_drawn_to_scale() {
        let mut session = crate::report::compare::tests::session("node-a", &[1500], "0");
        session.pods = vec![crate::report::podstart::tests::pod(1, 1950, 1900)];
        let page = render(&compare_kept(&[("before".into(), session)]));
        for drawn in [
            "<h3>before</h3>\n<svg class=\"timeline\" id=\"timeline-0\" xmlns=\"http://www.w3.org/2000/svg\" \
             width=\"760\" height=\"84\"",
            "<text x=\"200.0\" y=\"16\" font-size=\"10\" text-anchor=\"middle\">0</text>",
            "<text x=\"710.0\" y=\"16\" font-size=\"10\" text-anchor=\"middle\">2.01 s</text>",
            "<text x=\"50\" y=\"40.0\" font-size=\"11\">team-a/web-1</text>",
            "<rect class=\"start-bar\" x=\"200.0\" y=\"26.0\" width=\"510.0\" height=\"7\" fill=\"#bbbbbb\">\
             <title>team-a/web-1: pod start 2.01 s</title></rect>",
            "<rect class=\"add-bar\" x=\"202.5\" y=\"34.0\" width=\"494.8\"",
            "<rect class=\"dad-bar\" x=\"203.8\" y=\"42.0\" width=\"482.1\"",
        ] {
            assert!(page.contains(drawn), "{drawn} not in {page}");
        }
    }
}
