//! `dad-trace doctor` and `dad-trace tune`.
use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context as _;

use super::Format;
use crate::{
    node::{
        doctor::{
            self,
            render::{Style, render_as},
        },
        host,
        netns::NETNS_DIR,
        tune,
    },
    report::socket_errors,
    session::Session,
};

/// Audit this node's DAD settings: why DAD still runs where it does, what each pod pays,
/// and the fix (Bottlerocket TOML, sysctl.d, kind). Root to look inside pod namespaces.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    sudo dad-trace doctor                # diagnosis and the fix\n    \
    sudo dad-trace doctor --format json  # for machines\n    \
    sudo dad-trace doctor --format markdown > doctor.md   # a ticket or pull request\n    \
    sudo dad-trace doctor --format html -o doctor.html    # one offline page\n    \
    sudo dad-trace doctor --session before.json  # + what applications paid (socket errors)")]
pub struct Doctor {
    #[command(flatten)]
    host: super::HostRootArg,
    /// text for a terminal; json for machines; markdown for a ticket; html for one offline page.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// A recorded session: the socket errors applications had during DAD, and their fixes.
    #[arg(long, value_name = "FILE")]
    session: Option<PathBuf>,
    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

impl Doctor {
    pub fn run(self) -> anyhow::Result<()> {
        self.host.apply()?;
        let audit = doctor::audit(&host::path(NETNS_DIR));
        let mut diagnosis = doctor::diagnose(&audit);
        if let Some(path) = &self.session {
            let session = Session::load(path).with_context(|| format!("read the session {}", path.display()))?;
            let summary = socket_errors::summarize(&session.socket_errors, session.sockets.is_some());
            diagnosis.applications = Some(doctor::Applications {
                session: path.display().to_string(),
                during_dad: summary.during_dad_line(),
                failures: summary.during_dad.values().sum(),
            });
        }
        let style = match self.format {
            Format::Json => None,
            Format::Text => Some(Style::Text),
            Format::Markdown => Some(Style::Markdown),
            Format::Html => Some(Style::Html),
        };
        let text = match style {
            Some(style) => render_as(&audit, &diagnosis, style),
            None => crate::text::json(&(&audit, &diagnosis), true)? + "\n",
        };
        super::write_output(self.output.as_deref(), &text)
    }
}

/// Apply the doctor's fix to the running node (needs --yes), or revert it exactly.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    sudo dad-trace tune --apply --yes  # all/default accept_dad=0, devconf_inherit_init_net=1\n    \
    sudo dad-trace tune --revert       # put back what --apply saved")]
#[command(group = clap::ArgGroup::new("action").required(true))]
pub struct Tune {
    /// Apply: all/default `accept_dad=0` and `net.core.devconf_inherit_init_net=1`.
    #[arg(long, conflicts_with = "revert", requires = "yes", group = "action")]
    apply: bool,
    /// Put back the values saved by --apply.
    #[arg(long, group = "action")]
    revert: bool,
    /// Confirms --apply: DAD protects against duplicate addresses; only disable it in
    /// networks you control.
    #[arg(long)]
    yes: bool,
    /// Where --apply saves the values it replaces, and --revert reads them back
    /// [default: /var/lib/dad-trace/tune-state.json, under --host-root].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    #[command(flatten)]
    host: super::HostRootArg,
}

impl Tune {
    pub fn run(self) -> anyhow::Result<()> {
        self.host.apply()?;
        let path = self.state.unwrap_or_else(|| host::path(tune::TUNE_STATE));
        let (verb, state) = if self.apply {
            ("applied; previous values saved in", tune::apply(&path)?)
        } else {
            // The parser requires one of the two.
            ("reverted from", tune::revert(&path)?)
        };
        let mut text = String::new();
        for (name, value) in &state.previous {
            let _ = writeln!(text, "{name}: was {value}");
        }
        let _ = writeln!(text, "{verb} {}", path.display());
        super::out(&text)
    }
}
