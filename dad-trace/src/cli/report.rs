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
    #[arg(value_name = "SESSION", required = true)]
    files: Vec<PathBuf>,
    #[arg(long)]
    per_pod: bool,
    /// Merge the sessions (e.g. one per node) into one before reporting.
    #[arg(long)]
    merge: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

impl Report {
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
