//! The dashboard and alerts in deploy/: their queries, as a test evaluates them, and promtool.
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::manifests::deploy_dir;

/// One query of one dashboard panel.
#[derive(Clone, Debug)]
pub struct PanelQuery {
    pub panel: String,
    pub legend: String,
    /// Tables are instant queries; the rest ranges over time.
    pub table: bool,
    /// The expression with Grafana's variables replaced as a test evaluates it.
    pub expr: String,
}

/// Grafana's variables as a test sets them: every node and namespace, and windows long
/// enough for a short test's samples.
pub const VARIABLES: &[(&str, &str)] = &[("$__rate_interval", "5m"), ("$namespace", ".*"), ("$node", ".*")];

pub fn dashboard() -> anyhow::Result<serde_json::Value> {
    let path = deploy_dir().join("grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Every query of every panel.
pub fn dashboard_queries() -> anyhow::Result<Vec<PanelQuery>> {
    let dashboard = dashboard()?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        let title = panel["title"].as_str().context("panel title")?;
        for target in panel["targets"].as_array().context("targets")? {
            let mut expr = target["expr"].as_str().context("expr")?.to_string();
            for (name, value) in VARIABLES {
                expr = expr.replace(name, value);
            }
            if expr.contains('$') {
                bail!("{title}: a variable the test does not set in {expr}");
            }
            queries.push(PanelQuery {
                panel: title.to_string(),
                legend: target["legendFormat"].as_str().unwrap_or_default().to_string(),
                table: panel["type"] == "table",
                expr,
            });
        }
    }
    Ok(queries)
}

/// promtool's path, or why it cannot run.
pub fn promtool() -> Result<&'static str, String> {
    match Command::new("promtool").arg("--version").output() {
        Ok(output) if output.status.success() => Ok("promtool"),
        _ => Err("promtool is not installed (apt-get install prometheus ships it)".into()),
    }
}

/// Runs promtool with `args` in `dir`; its output on failure.
pub fn run_promtool(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("promtool {args:?} failed:\n{text}");
    }
    Ok(text)
}

/// A query and what Prometheus answered (its series, or its refusal).
pub type Answer = (PanelQuery, Result<Vec<crate::prometheus::Sample>, String>);

/// Every dashboard query evaluated now by `prometheus` (instant queries).
pub fn evaluate_dashboard(prometheus: &crate::prometheus::Prometheus) -> anyhow::Result<Vec<Answer>> {
    Ok(dashboard_queries()?
        .into_iter()
        .map(|query| {
            let result = prometheus.query_all(&query.expr);
            (query, result)
        })
        .collect())
}

fn legend(template: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    if template.is_empty() {
        return labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    let mut text = template.to_string();
    for (name, value) in labels {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    text
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('<', "&lt;")
}

/// The dashboard's panels with what the real Prometheus answered, as Markdown: what stands in
/// for a Grafana screenshot (no Grafana here).
#[must_use]
pub fn render_preview(results: &[(PanelQuery, Result<Vec<crate::prometheus::Sample>, String>)], note: &str) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "# The dad-trace dashboard, evaluated\n\n{note}\n\nEach panel of `deploy/grafana-dashboard.json` with its \
         queries (Grafana's variables set to all nodes and namespaces, `$__rate_interval` = 5m) and what the real \
         Prometheus answered at the end of the run.\n"
    );
    let mut last_panel = "";
    for (query, result) in results {
        if query.panel != last_panel {
            let _ = write!(out, "\n## {}\n\n", query.panel);
            last_panel = &query.panel;
        }
        let _ = writeln!(out, "`{}`\n", query.expr);
        match result {
            Ok(samples) if samples.is_empty() => out.push_str("(no data)\n\n"),
            Ok(samples) => {
                out.push_str("| series | value |\n| --- | --- |\n");
                for sample in samples {
                    let value = if sample.value.is_finite() && sample.value.fract() != 0.0 {
                        format!("{:.4}", sample.value)
                    } else {
                        format!("{}", sample.value)
                    };
                    let _ = writeln!(out, "| {} | {value} |", cell(&legend(&query.legend, &sample.labels)));
                }
                out.push('\n');
            }
            Err(e) => {
                let _ = writeln!(out, "error: {}\n", cell(e));
            }
        }
    }
    out
}
