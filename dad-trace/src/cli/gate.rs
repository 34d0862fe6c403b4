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
    dad-trace gate defaults.json inherit.json --before-min-cni-add-p50-ms 900 --after-max-cni-add-p99-ms 500\n    \
    dad-trace gate before.json after.json --after-max-p99-ms 10 --format json\n    \
    dad-trace gate before.json after.json --require-change   # and faster for real, not noise")]
pub struct Gate {
    /// The session recorded before tuning (or with DAD on).
    #[arg(value_name = "BEFORE")]
    before: PathBuf,
    /// The session recorded after tuning.
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
    /// Also gate on CNI ADD time: before tuning, pods' ADD p50 must be above this.
    #[arg(long, value_name = "MS")]
    before_min_cni_add_p50_ms: Option<u64>,
    /// Also gate on CNI ADD time: after tuning, pods' ADD p99 must be below this.
    #[arg(long, value_name = "MS")]
    after_max_cni_add_p99_ms: Option<u64>,
    /// With a CNI ADD gate, each side needs at least this many pods with a traced ADD.
    #[arg(long, default_value_t = POD_START.min_cni_adds, value_name = "N")]
    min_cni_adds: u64,
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
    fn gate(&self) -> BeforeAfter {
        BeforeAfter {
            before_min_p50_ms: self.before_min_p50_ms,
            after_max_p99_ms: self.after_max_p99_ms,
            min_pod_addresses: self.min_pod_addresses,
            require_change: self.require_change,
            before_min_cni_add_p50_ms: self.before_min_cni_add_p50_ms,
            after_max_cni_add_p99_ms: self.after_max_cni_add_p99_ms,
            min_cni_adds: self.min_cni_adds,
        }
    }

    pub fn run(self) -> anyhow::Result<()> {
        let gate = self.gate();
        let verdict = gate.check(&Session::load_as(&self.before)?, &Session::load_as(&self.after)?);
        match self.format {
            GateFormat::Json => super::out(&(crate::text::json(&verdict, true)? + "\n"))?,
            GateFormat::Text | GateFormat::Markdown => super::out(&verdict.render())?,
        }
        if verdict.passed() {
            Ok(())
        } else {
            anyhow::bail!("the before/after gate failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::{
        cli::{Cli, Command},
        report::gate::POD_START_WITH_CNI,
    };

    /// The flags `scenario --list` hands the kind job make the scenario's own CNI gate.
    #[test]
    fn the_listed_cni_flags_make_the_scenarios_gate() {
        let flags = crate::scenario::phases::listing().cni_gate_flags;
        let args = ["dad-trace", "gate", "a.json", "b.json"]
            .into_iter()
            .map(String::from)
            .chain(flags);
        let Command::Gate(gate) = Cli::try_parse_from(args).expect("parses").command else {
            panic!("gate")
        };
        assert_eq!(gate.gate(), POD_START_WITH_CNI);
    }
}
