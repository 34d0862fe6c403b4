//! The scenario's results for people: each phase's report, the before/after comparison
//! and the phase table; and the files `-o DIR` leaves.
use std::{fmt::Write as _, io::Write as _, path::Path};

use anyhow::Context as _;

use super::{PhaseResult, gates::add_baseline_ns, phases};
use crate::{
    files::write_atomically,
    hist::{Summary, human},
    report::{self, Figures, compare, html, markdown},
    session::Session,
};

/// Everything the scenario prints: each phase's report, the phases side by side (the
/// before/after view `report` gives of saved sessions), then the phase table.
#[must_use]
pub fn report(results: &[PhaseResult]) -> String {
    let mut out = String::new();
    for result in results {
        let _ = write!(
            out,
            "\n== {} ({})\n{}",
            result.phase,
            result.plugin_label(),
            report::render_text(&result.session.clone().fold(), false)
        );
    }
    let _ = write!(out, "\n== before/after\n{}", compare::render_text(&comparison(results)));
    out.push_str(&table(results));
    out
}

fn comparison(results: &[PhaseResult]) -> compare::Comparison {
    let phases: Vec<(String, Session<Figures>)> = results
        .iter()
        .map(|result| (result.phase.to_string(), result.session.clone().fold()))
        .collect();
    compare::compare(&phases)
}

/// Saves each phase's session (PHASE.json), the results (scenario.json) and the
/// before/after report (report.md, report.html) in `dir`.
pub fn write_outputs(results: &[PhaseResult], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for result in results {
        result.session.save(&dir.join(format!("{}.json", result.phase)))?;
    }
    let comparison = comparison(results);
    let files = [
        ("scenario.json", serde_json::to_string_pretty(results)?),
        ("report.md", markdown::render_markdown(&comparison)),
        ("report.html", html::render(&comparison)),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        write_atomically(&path, |file| file.write_all(text.as_bytes()))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The phase table: ADD times beside the traced delays, the doctor's verdict, the gate.
#[must_use]
pub fn table(results: &[PhaseResult]) -> String {
    let mut out = String::from(
        "\nphase          plugin      pods   ADD p50    ADD p99   traced p50  traced p99  doctor                   gate\n",
    );
    let cell =
        |summary: Option<Summary>, pick: fn(&Summary) -> u64| summary.as_ref().map_or("-".into(), |s| human(pick(s)));
    for result in results {
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:>5} {:>9} {:>9} {:>11} {:>11}  {:<24} {}",
            result.phase,
            result.plugin_label(),
            result.pods.len(),
            cell(result.add, |s| s.p50_ns),
            cell(result.add, |s| s.p99_ns),
            cell(result.traced, |s| s.p50_ns),
            cell(result.traced, |s| s.p99_ns),
            result.doctor.to_string(),
            if result.problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED ({})", result.problems.len())
            }
        );
    }
    for result in results {
        if let Some(agreement) = result.add_agreement {
            let _ = writeln!(
                out,
                "{}: traced vs measured CNI ADD, {} pods: difference p50 {}, max {}",
                result.phase,
                agreement.count,
                human(agreement.p50_ns),
                human(agreement.max_ns)
            );
        }
    }
    for result in results {
        let apps: Vec<u64> = result.pods.iter().filter_map(|pod| pod.app_failures).collect();
        if !apps.is_empty() {
            let failed = apps.iter().filter(|failures| **failures > 0).count();
            let _ = writeln!(
                out,
                "{}: pod applications (bind at once, retry every 50 ms) failed {} binds in {failed} of {} pods; \
                 dad-trace counted {}",
                result.phase,
                apps.iter().sum::<u64>(),
                apps.len(),
                result.pods.iter().map(|pod| pod.traced_app_failures).sum::<u64>()
            );
        }
    }
    let baseline = add_baseline_ns(results);
    if baseline > 0 {
        let _ = writeln!(
            out,
            "ADD cost without DAD (median ADD of the DAD-free phase): {}",
            human(baseline)
        );
    }
    for verdict in results.iter().filter_map(|result| result.before_after.as_ref()) {
        let _ = write!(
            out,
            "\nBefore/after gate ({} vs {}, as in the kind CI job):\n{}",
            phases::BEFORE,
            phases::AFTER,
            verdict.render()
        );
    }
    for result in results {
        for problem in &result.problems {
            let _ = writeln!(out, "  {}: {problem}", result.phase);
        }
    }
    out
}
