//! `dad-trace report`.
use std::path::{Path, PathBuf};

use super::Format;
use crate::{
    report::{Figures, compare, html, markdown, render_text, summarize},
    session::Session,
};

/// Summarize saved sessions (no root needed).
///
/// One file: its histograms. Several: side by side (before/after, or nodes), with the
/// ratio last/first and the host settings that changed. `--merge` makes one of several.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    dad-trace report before.json --per-pod                          # histograms, every pod\n    \
    dad-trace report before.json after.json                         # side by side\n    \
    dad-trace report before.json after.json --format html -o r.html # offline page with charts\n    \
    dad-trace report node-*.json --merge                            # one report from several nodes")]
pub struct Report {
    /// Session files (`record -o`); two or more are compared side by side, first as before.
    #[arg(value_name = "SESSION", required = true)]
    files: Vec<PathBuf>,
    /// Also every pod's delay (text of one session, or of sessions merged).
    #[arg(short = 'P', long)]
    per_pod: bool,
    /// Merge the sessions (e.g. one per node) into one before reporting.
    #[arg(long)]
    merge: bool,
    /// text for a terminal; json for machines; markdown for a ticket; html for one offline
    /// page with charts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

impl Report {
    /// `--per-pod` shows in the text of one session (or of several merged) only: refused
    /// elsewhere (exit code 2), never ignored.
    pub fn check(&self) -> Result<(), (clap::error::ErrorKind, String)> {
        let one = self.merge || self.files.len() == 1;
        if self.per_pod && (self.format != Format::Text || !one) {
            return Err((
                clap::error::ErrorKind::ArgumentConflict,
                "--per-pod applies to the text report of one session (or of several merged with --merge); \
                 json already has every pod (`pods`)"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn run(self) -> anyhow::Result<()> {
        let text = self.render()?;
        super::write_output(self.output.as_deref(), &text)
    }

    fn render(&self) -> anyhow::Result<String> {
        let mut sessions = Vec::new();
        for file in &self.files {
            sessions.push((label(file), Session::<Figures>::load_as(file)?));
        }
        if self.merge || sessions.len() == 1 {
            let label = sessions
                .iter()
                .map(|(label, _)| label.as_str())
                .collect::<Vec<_>>()
                .join("+");
            let session = compare::merge(sessions.into_iter().map(|(_, session)| session).collect())?;
            return Ok(match self.format {
                Format::Text => render_text(&session, self.per_pod),
                Format::Markdown => markdown::render_markdown(&compare::compare(&[(label, session)])),
                Format::Html => html::render(&compare::compare(&[(label, session)])),
                Format::Json => crate::text::json(&summarize(&session), true)? + "\n",
            });
        }
        let comparison = compare::compare(&sessions);
        Ok(match self.format {
            Format::Text => compare::render_text(&comparison),
            Format::Markdown => markdown::render_markdown(&comparison),
            Format::Html => html::render(&comparison),
            Format::Json => crate::text::json(&comparison, true)? + "\n",
        })
    }
}

/// A session's column label: its file name without the extension.
fn label(file: &Path) -> String {
    file.file_stem()
        .map_or_else(|| file.display().to_string(), |s| s.to_string_lossy().into_owned())
}
