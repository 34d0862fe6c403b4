//! `dad-trace record`.
use std::path::PathBuf;

use super::{TraceArgs, seconds};
use crate::{
    record::{self, RecordOptions},
    report,
};

/// Trace DAD on this node (root); print each address as it settles and histograms at the end.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    sudo dad-trace record                           # until Ctrl-C\n    \
    sudo dad-trace record --duration 300 --per-pod  # five minutes, then every pod's delay\n    \
    sudo dad-trace record -o before.json --quiet    # save the session for `report`\n    \
    sudo dad-trace record --synthetic-pods 20       # make 20 pods (netns + veth) and trace them")]
pub struct Record {
    #[command(flatten)]
    trace: TraceArgs,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Stop after this many addresses finished.
    #[arg(long, value_name = "N")]
    count: Option<usize>,
    /// Save the session as JSON (atomically; also on Ctrl-C).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also print a table of every pod's delay.
    #[arg(long)]
    per_pod: bool,
    /// Create N synthetic pods (netns + veth + IPv6 address) while tracing, stop when they
    /// settled, and remove them.
    #[arg(long, value_name = "N")]
    synthetic_pods: Option<usize>,
    /// Name prefix of synthetic pod namespaces.
    #[arg(long, default_value = "dt-pod-", value_name = "PREFIX")]
    synthetic_prefix: String,
    /// Do not print a line per address.
    #[arg(short, long)]
    quiet: bool,
}

impl Record {
    /// The tracing options alone (tests).
    #[cfg(test)]
    pub(crate) fn trace_options(&self) -> anyhow::Result<RecordOptions> {
        self.trace.options(false)
    }

    pub async fn run(self, verbose: bool) -> anyhow::Result<()> {
        if let Some(path) = &self.output {
            super::warn_if_format_name(path);
        }
        let opts = RecordOptions {
            duration: self.duration.map(|d| seconds(d, "--duration")).transpose()?,
            count: self.count,
            output: self.output,
            synthetic_pods: self.synthetic_pods,
            synthetic_prefix: self.synthetic_prefix,
            lines: !self.quiet,
            ..self.trace.options(verbose)?
        };
        let session = record::record(opts).await?;
        // Saved already: a closed terminal now loses nothing.
        super::out(&report::render_text(&session, self.per_pod))
    }
}
