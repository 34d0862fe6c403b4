//! `dad-trace gate`.
use std::path::PathBuf;

use crate::{
    report::gate::{BeforeAfter, POD_START},
    session::Session,
};

/// Pass or fail a before/after pair of sessions (no root needed): the gate of the kind CI
/// job and of the scenario. Exit code 1 when it fails.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    dad-trace gate defaults.json inherit.json                # the kind job's gate\n    \
    dad-trace gate before.json after.json --after-max-p99-ms 10 --format json\n    \
    dad-trace gate before.json after.json --require-change   # and faster for real, not noise")]
pub struct Gate {
    #[arg(value_name = "BEFORE")]
    before: PathBuf,
    #[arg(value_name = "AFTER")]
    after: PathBuf,
    /// Before tuning, pod addresses' tentative p50 must be above this.
    #[arg(long, default_value_t = POD_START.before_min_p50_ms, value_name = "MS")]
    before_min_p50_ms: u64,
    /// After tuning, pod addresses' tentative p99 must be below this.
    #[arg(long, default_value_t = POD_START.after_max_p99_ms, value_name = "MS")]
    after_max_p99_ms: u64,
    /// Each side needs at least this many settled pod addresses.
    #[arg(long, default_value_t = POD_START.min_pod_addresses, value_name = "N")]
    min_pod_addresses: u64,
    /// Also require the per-pod delay to be shorter after, and the difference real: a
    /// Kolmogorov–Smirnov test with p below 0.01 (always shown; off, the thresholds decide).
    #[arg(long)]
    require_change: bool,
    /// text and markdown are the same table (a Markdown table reads as text too).
    #[arg(long, value_enum, default_value_t = GateFormat::Text)]
    format: GateFormat,
}

/// The gate is a verdict and a small table: no HTML page (`report --format html` draws the
/// sessions), so `--format html` is refused rather than printed as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum GateFormat {
    Text,
    Markdown,
    Json,
}

impl Gate {
    pub fn run(self) -> anyhow::Result<()> {
        let gate = BeforeAfter {
            before_min_p50_ms: self.before_min_p50_ms,
            after_max_p99_ms: self.after_max_p99_ms,
            min_pod_addresses: self.min_pod_addresses,
            require_change: self.require_change,
        };
        let verdict = gate.check(&Session::load(&self.before)?, &Session::load(&self.after)?);
        match self.format {
            GateFormat::Json => super::out(&(serde_json::to_string_pretty(&verdict)? + "\n"))?,
            GateFormat::Text | GateFormat::Markdown => super::out(&verdict.render())?,
        }
        if verdict.passed() {
            Ok(())
        } else {
            anyhow::bail!("the before/after gate failed")
        }
    }
}
